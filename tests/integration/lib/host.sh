# Host side of the Linux tests, the benchmarks and tools/run-example: sourced by bash scripts
# (set -euo pipefail) that assemble a payload, run it in the emulated KVM host
# (tools/emuhost/emuhost) and read what it printed. The payload's own scripts source
# tests/integration/lib/payload.sh.
#
#   $repo, $emuhost                 the repository; tools/emuhost/emuhost
#   $work                           a new temporary directory, removed when the script exits
#   payload_new ARCH [VMM [--extra DIR]]
#                                   starts a new $payload ($work/payload) for ARCH (x86_64 or
#                                   aarch64 or riscv64) holding payload.sh; with VMM, also the
#                                   guest kernel (x86_64: images/build-kernel's bzImage; aarch64,
#                                   riscv64: Debian's kernel, the emulated host's own, as Image), the
#                                   initramfs (images/build-initramfs [--extra DIR] ARCH) as
#                                   initramfs.cpio.gz, and VMM with its shared libraries
#   payload_binary SRC...           copies executables into it with their shared libraries
#                                   (tools/emuhost/copy-binary)
#   extra_binary DIR SRC PATH       for a guest initramfs's --extra DIR: the executable SRC as
#                                   DIR/PATH, its shared libraries at their own paths below DIR
#   payload_script NAME [VAR=VALUE...] <<'EOS'
#                                   writes the executable $payload/NAME: #!/bin/sh, `. ./payload.sh`,
#                                   the VAR=VALUE assignments (values from here, quoted), then
#                                   the script text from stdin
#   run_payload [EMUHOST-ARGS...]   runs $payload/run.sh in the emulated host for ARCH; its status
#   collect REGEX [EMUHOST-ARGS...] run_payload with its console in $work/log and the lines that
#                                   match REGEX (grep -E) in $work/results
#   need_results REGEX              exits 1, showing what the payload's finish printed of its
#                                   files (or the end of $work/log) and its STUCK lines, unless a
#                                   line of $work/results matches REGEX
#   result NAME WORDS...            the median of the values of NAME=VALUE on the lines of
#                                   $work/results that start with WORDS
#   median                          the median of the numbers on stdin
#   ratio A B                       A / B with two decimals, or - if either is not positive
#   spread NAME WORDS...            "min..max" of the values of NAME=VALUE on those lines, no
#                                   decimals (- if none); spread1 with one decimal
#   spread_of FORMAT DIVISOR NAME WORDS...
#                                   the same, each value divided by DIVISOR, printed with FORMAT
#   per_op_rows ITEMS CONFIGS       a table of the sampler's figures (payload.sh: sample_marks)
#                                   per ITEM (a job) and CONFIG: exits, CPU and the VMM's own
#                                   CPU per operation, medians and min..max, and the count
#   native_build                    installs what is missing and builds build/gcc
#                                   (tools/install-deps, tools/build)
#   cross_build DIR [--arch riscv64] TARGETS...
#                                   cross-builds TARGETS for arm64 (or riscv64) in DIR
#                                   (tools/cross-build); on failure shows the end of the build
#                                   log and exits 1
# shellcheck shell=bash

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
emuhost=$repo/tools/emuhost/emuhost
prog=$(basename "$0")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
payload=$work/payload
payload_arch=x86_64

payload_new() {
  local extra_args=()
  [ $# -eq 1 ] || [ $# -eq 2 ] || { [ $# -eq 4 ] && [ "$3" = --extra ]; } \
    || { echo "usage: payload_new ARCH [VMM [--extra DIR]]" >&2; exit 2; }
  payload_arch=$1
  case $payload_arch in
    x86_64|aarch64|riscv64) ;;
    *) echo "payload_new: unknown architecture $payload_arch" >&2; exit 2 ;;
  esac
  rm -rf "$payload"
  mkdir -p "$payload"
  cp "$repo/tests/integration/lib/payload.sh" "$payload/"
  [ $# -ge 2 ] || return 0
  case $payload_arch in
    x86_64) cp "$("$repo/images/build-kernel" x86_64)" "$payload/bzImage" ;;
    aarch64|riscv64) cp "$("$emuhost" --arch "$payload_arch" --print-kernel)" "$payload/Image" ;;
  esac
  [ $# -eq 2 ] || extra_args=(--extra "$4")
  cp "$("$repo/images/build-initramfs" "${extra_args[@]}" "$payload_arch")" "$payload/initramfs.cpio.gz"
  payload_binary "$2"
}

payload_binary() {
  local src
  for src in "$@"; do "$repo/tools/emuhost/copy-binary" "$src" "$payload"; done
}

extra_binary() {
  local files
  files=$(mktemp -d "$work/binary.XXXXXX")
  "$repo/tools/emuhost/copy-binary" "$2" "$files"
  mkdir -p "$(dirname "$1/$3")"
  cp "$files/$(basename "$2")" "$1/$3"
  [ ! -d "$files/rootfs" ] || cp -a "$files/rootfs/." "$1/"
}

payload_script() {
  local file=$payload/$1 assignment
  shift
  {
    echo '#!/bin/sh'
    echo '. ./payload.sh'
    for assignment in "$@"; do
      printf "%s='%s'\n" "${assignment%%=*}" "$(printf '%s' "${assignment#*=}" | sed "s/'/'\\\\''/g")"
    done
    cat
  } >"$file"
  chmod +x "$file"
}

run_payload() {
  "$emuhost" --arch "$payload_arch" "$@" "$payload"
}

collect() {
  local regex=$1 kept
  shift
  local status=0
  if run_payload "$@" | tee "$work/log" | grep -E "$regex" >"$work/results"; then :; else
    status=${PIPESTATUS[0]}
  fi
  # Cut off by its timeout: the figures are of fewer rounds than the tables will say.
  if [ "$status" -eq 124 ]; then
    echo "$prog: warning: the emulated host ran out of time; results are of the runs it finished" >&2
  fi
  # A VMM that did not finish left a STUCK report (payload.sh: stuck_report), which the results
  # leave out: the whole output is kept past $work's removal, for whoever reads the warning.
  if grep -q '^STUCK' "$work/log"; then
    kept=${TMPDIR:-/tmp}/$prog.$(date +%Y%m%d-%H%M%S).log
    cp "$work/log" "$kept"
    echo "$prog: a VMM did not finish; its STUCK report and the emulated host's output: $kept" >&2
  fi
}

need_results() {
  grep -qE "$1" "$work/results" && return 0
  # What the payload's finish showed of its files on a failure (from its first "---- FILE"
  # line), else the end of the output; and any STUCK report (payload.sh: stuck_report).
  echo "$prog: no results; emulated host output:"
  if grep -q '^---- ' "$work/log"; then
    sed -n '/^---- /,$p' "$work/log" | grep -v '^STUCK' | head -n 240
  else
    tail -n 30 "$work/log"
  fi
  grep '^STUCK' "$work/log" | head -n 120 || true
  exit 1
}

# result NAME WORDS...: the median of NAME= over the result lines starting with WORDS (from
# $results_file where set, else $work/results).
result() {
  local name=$1
  shift
  awk -v words="$*" -v name="$name" 'index($0, words " ") == 1 {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name && kv[2] != "") print kv[2] } }' \
    "${results_file:-$work/results}" | median
}

median() {
  sort -n | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'
}

spread_of() {
  local format=$1 divisor=$2 name=$3
  shift 3
  awk -v words="$*" -v name="$name" -v d="$divisor" -v f="$format" 'index($0, words " ") == 1 {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name && kv[2] ~ /^-?[0-9.]+$/) {
      v = kv[2] / d; if (n == 0 || v < lo) lo = v; if (n == 0 || v > hi) hi = v; n++ } } }
    END { if (n) printf f ".." f, lo, hi; else print "-" }' "$work/results"
}
spread() { spread_of %.0f 1 "$@"; }
spread1() { spread_of %.1f 1 "$@"; }

per_op_rows() {
  local item c x unsampled
  printf '%-10s %-14s %9s %12s %9s %14s %9s %14s %9s %3s\n' "" config exits/op "(min..max)" \
    cpu_us "(min..max)" own_us "(min..max)" hpoll_us n
  for item in $1; do
    for c in $2; do
      x=$(result exits_per_op "$c" "$item")
      [ -n "$x" ] || continue
      printf '%-10s %-14s %9s %12s %9s %14s %9s %14s %9s %3s\n' "$item" "$c" "$x" \
        "$(spread1 exits_per_op "$c" "$item")" "$(result cpu_us_per_op "$c" "$item")" \
        "$(spread1 cpu_us_per_op "$c" "$item")" "$(result vmm_cpu_us_per_op "$c" "$item")" \
        "$(spread1 vmm_cpu_us_per_op "$c" "$item")" \
        "$(result halt_poll_us_per_op "$c" "$item")" "$(grep -c "^$c $item exits=" "$work/results")"
    done
  done
  unsampled=$(grep -c ' unsampled$' "$work/results" || true)
  [ "$unsampled" = 0 ] || echo "$unsampled windows unsampled (the VM had ended at the end mark)"
}

ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "-" }'
}

native_build() {
  (cd "$repo" && tools/install-deps && tools/build build/gcc)
  # tools/build configures a new tree RelWithDebInfo but keeps an existing tree's type: a tree
  # someone configured Debug makes a benchmark's figures meaningless (session 35's first block
  # runs: 5x the CPU per request). Said once, on stderr.
  local type
  type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$repo/build/gcc/CMakeCache.txt" 2>/dev/null) || true
  case $type in
    Release | RelWithDebInfo) ;;
    *) echo "$prog: warning: build/gcc is a '${type:-unknown}' build, not an optimised one;" \
      "benchmark figures from it are not comparable (tools/build build/gcc" \
      "-DCMAKE_BUILD_TYPE=RelWithDebInfo)" >&2 ;;
  esac
}

cross_build() {
  local dir=$1 arch=aarch64
  shift
  if [ "${1:-}" = --arch ]; then
    arch=$2
    shift 2
  fi
  "$repo/tools/cross-build" "$arch" "$dir" "$@" ||
    { echo "$prog: cross-building $* for $arch failed" >&2; exit 1; }
}
