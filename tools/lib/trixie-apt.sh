# shellcheck shell=bash
# Sourced by the scripts that fetch Debian 13 (trixie) packages onto this Debian 12 host
# (tools/install-deps-riscv64, tools/emuhost/trixie-qsd): a private apt configuration per
# architecture, with its own sources, lists, status and cache, for `apt-get download` and
# unpacking; nothing is installed, the host's apt and dpkg never see trixie.
#
#   trixie_apt ARCH DIR     sets up DIR for trixie's ARCH packages and the array trixie_opts
#                           (options for apt-get and apt-cache); also writes DIR/apt.conf, the
#                           same configuration as a file for APT_CONFIG=DIR/apt.conf
#   trixie_apt_refresh      apt-get update, unless the lists are less than a day old; returns
#                           its status (one refresh at a time per DIR)
#   trixie_candidates PKG...  "PKG=VERSION ..." of each candidate: a stamp for a cache
#   trixie_unpack DEST PKG...  downloads the packages and unpacks them into DEST; returns
#                           non-zero if a download failed

trixie_apt() {
  local arch=$1 i
  trixie_dir=$2
  mkdir -p "$trixie_dir/lists/partial" "$trixie_dir/archives/partial" \
    "$trixie_dir/etc/preferences.d"
  echo "deb [arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]" \
    "http://deb.debian.org/debian trixie main" >"$trixie_dir/etc/sources.list"
  [ -f "$trixie_dir/status" ] || : >"$trixie_dir/status"
  trixie_opts=(-o "Dir::Etc::SourceList=$trixie_dir/etc/sources.list" -o "Dir::Etc::SourceParts=-"
    -o "Dir::Etc::Preferences=-" -o "Dir::Etc::PreferencesParts=$trixie_dir/etc/preferences.d"
    -o "Dir::State::Lists=$trixie_dir/lists" -o "Dir::State::status=$trixie_dir/status"
    -o "Dir::Cache=$trixie_dir" -o "Dir::Cache::archives=$trixie_dir/archives"
    -o "APT::Architecture=$arch" -o "APT::Architectures=$arch" -o "Debug::NoLocking=1")
  [ "$(id -u)" -ne 0 ] || trixie_opts+=(-o APT::Sandbox::User=root)
  for ((i = 1; i < ${#trixie_opts[@]}; i += 2)); do
    printf '%s "%s";\n' "${trixie_opts[i]%%=*}" "${trixie_opts[i]#*=}"
  done >"$trixie_dir/apt.conf.new"
  mv "$trixie_dir/apt.conf.new" "$trixie_dir/apt.conf"  # whole: an emulated host may read it
}

trixie_apt_refresh() {
  (
    flock 8  # Debug::NoLocking: apt's own lock is off, this one stands for it
    # Once a day, by a stamp of our own: apt dates the lists by the archive's Last-Modified,
    # which may be older than a day right after an update.
    [ -z "$(find "$trixie_dir/.refreshed" -mtime -1 2>/dev/null)" ] || exit 0
    # (Called in conditions, where set -e is off: the stamp only after a good update.)
    apt-get "${trixie_opts[@]}" update -qq >/dev/null && touch "$trixie_dir/.refreshed"
  ) 8>"$trixie_dir/.lock"
}

trixie_candidates() {
  # One apt-cache for all of them (one each took ~0.7 s, 11 s for the riscv64 sysroot's list):
  # a section per package, its name ("NAME:") unindented, then its candidate.
  apt-cache "${trixie_opts[@]}" policy "$@" 2>/dev/null |
    awk '/^[^ ]/ { p = $1; sub(/:$/, "", p) } /^  Candidate:/ { printf "%s=%s ", p, $2 }'
}

trixie_unpack() {
  local dest=$1 deb
  shift
  mkdir -p "$dest/.dl"
  (cd "$dest/.dl" && apt-get "${trixie_opts[@]}" download -qq "$@" >/dev/null) || return 1
  for deb in "$dest"/.dl/*.deb; do dpkg-deb -x "$deb" "$dest"; done
  rm -rf "$dest/.dl"
}
