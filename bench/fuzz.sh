#!/usr/bin/env bash
# A libFuzzer campaign over every fuzz target (fuzz/*_fuzzer.cpp), with figures.
#
# Usage: bench/fuzz.sh [SECONDS_PER_TARGET [BUILD_DIR]]   (default 120 and build/clang)
#   LIBVMM_FUZZ_JOBS=N     targets run N at a time (default 2: one per core of a 2-core machine)
#   LIBVMM_FUZZ_TARGETS="a b"  only these targets (names without _fuzzer); the table keeps the
#                          other targets' rows from the last campaign, marked with *
#   LIBVMM_FUZZ_NO_DOCS=1  leave docs/SECURITY.md and fuzz/corpus alone (a trial run)
#
# 1. Builds the clang fuzz build in BUILD_DIR (configures it if needed; `ninja fuzzers`, -j2).
# 2. Runs each target for SECONDS from its persistent corpus, $LIBVMM_CACHE/fuzz/NAME (default
#    ~/.cache/libvmm/fuzz/NAME), which grows from run to run, plus the seeds kept in the
#    repository (fuzz/corpus/NAME). A crash, leak, timeout (-timeout=10: a hang is a bug) or
#    out-of-memory stops that target and keeps the input in $LIBVMM_CACHE/fuzz/crashes.
# 3. Minimizes the persistent corpus with the seeds into fuzz/corpus/NAME (-merge=1 on edges
#    only, -use_counters=0: inputs that cover every edge reached, not every hit count), capped
#    at 200 files and 200 KB per target (the smallest inputs of that set first; seeds named by
#    hand, not by their SHA-1, are always kept and count against the 200 files), so that CI's
#    short runs (tools/run-tests) start from them.
# 4. Writes the table (executions, executions per second, coverage in edges and features,
#    corpus size, seeds kept, crashes) into docs/SECURITY.md between <!-- fuzz-table --> and
#    <!-- /fuzz-table --> in its "## Fuzzing" section (created at the end if missing).
# Exits 1 if any target crashed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-120}
build=${2:-build/clang}
jobs=${LIBVMM_FUZZ_JOBS:-2}
[[ $secs =~ ^[0-9]+$ && $jobs =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] && [ "$jobs" -gt 0 ] ||
  { echo "usage: bench/fuzz.sh [SECONDS_PER_TARGET [BUILD_DIR]] (SECONDS a positive integer)" >&2; exit 2; }
cache=${LIBVMM_CACHE:-$HOME/.cache/libvmm}/fuzz
max_files=200
max_bytes=$((200 * 1024))

# --- 1. build
if [ ! -f "$build/build.ninja" ] || ! grep -q "LIBVMM_FUZZ:BOOL=ON" "$build/CMakeCache.txt"; then
  mkdir -p "$build"
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DLIBVMM_FUZZ=ON -DLIBVMM_WERROR=ON \
    >"$build/cmake.log" 2>&1 || { cat "$build/cmake.log" >&2; echo "fuzz.sh: cmake failed" >&2; exit 1; }
fi
ninja -C "$build" -j2 --quiet fuzzers >&2

targets=()
for f in "$build"/fuzz/*_fuzzer; do
  name=$(basename "$f" _fuzzer)
  if [ -n "${LIBVMM_FUZZ_TARGETS:-}" ] && [[ " $LIBVMM_FUZZ_TARGETS " != *" $name "* ]]; then continue; fi
  targets+=("$name")
done
[ ${#targets[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets in $build/fuzz" >&2; exit 1; }

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
mkdir -p "$cache/crashes"
touch "$logs/start"

# --- 2. run, JOBS at a time
run_target() {
  local name=$1 corpus=$cache/$1 seeds=fuzz/corpus/$1
  mkdir -p "$corpus"
  [ -d "$seeds" ] || seeds=
  local rc=0
  # shellcheck disable=SC2086 # no seeds: no second directory
  "$build/fuzz/${name}_fuzzer" -max_total_time="$secs" -print_final_stats=1 -timeout=10 \
    -artifact_prefix="$cache/crashes/$name-" "$corpus" $seeds >"$logs/$name.log" 2>&1 || rc=$?
  echo $rc >"$logs/$name.rc"
}
echo "fuzz.sh: ${#targets[@]} targets, $secs s each, $jobs at a time" >&2
running=0
for name in "${targets[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$name" &
  running=$((running + 1))
done
wait || true
load=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 3. minimized seeds (before the table, which counts them)
if [ -z "${LIBVMM_FUZZ_NO_DOCS:-}" ]; then
  for name in "${targets[@]}"; do
    seeds=fuzz/corpus/$name
    # The merge is made under $logs (removed on exit), the new seeds beside the corpus (the same
    # file system), in a directory of their own that takes the old one's place at the end: an
    # interrupted run leaves the corpus whole (and at most a .NAME.new the next run removes).
    merged=$logs/$name.merged fresh=fuzz/corpus/.$name.new
    rm -rf "$fresh"
    mkdir -p "$merged" "$fresh"
    # shellcheck disable=SC2046
    "$build/fuzz/${name}_fuzzer" -merge=1 -use_counters=0 -timeout=10 "$merged" "$cache/$name" \
      $([ -d "$seeds" ] && echo "$seeds") >"$logs/$name.merge.log" 2>&1 ||
      { tail -n 20 "$logs/$name.merge.log" >&2; echo "fuzz.sh: merging $name failed" >&2; continue; }
    # Seeds named by hand (not libFuzzer's SHA-1 names) stay whatever their size: each reaches
    # a mode of its target on purpose.
    [ ! -d "$seeds" ] || find "$seeds" -maxdepth 1 -type f ! -regex '.*/[0-9a-f]\{40\}' \
      -exec cp {} "$fresh/" \;
    count=$(find "$fresh" -type f | wc -l) bytes=0
    while read -r size file; do
      [ $count -lt $max_files ] && [ $((bytes + size)) -le $max_bytes ] || break
      cp "$merged/$file" "$fresh/"
      count=$((count + 1)) bytes=$((bytes + size))
    done < <(find "$merged" -type f -printf '%s %f\n' | sort -n)
    rm -rf "$seeds"
    mv "$fresh" "$seeds"
    echo "$count" >"$logs/$name.kept"
    echo "fuzz.sh: $name: $(find "$merged" -type f | wc -l) inputs cover its edges, $count kept ($((bytes / 1024)) KB)" >&2
  done
fi

# --- 4. the table
final_stat() { sed -n "s/^stat::$2: *//p" "$logs/$1.log" | tail -n 1; }
# The last status line's "cov: N ft: M" (libFuzzer's edges and features).
last_status() { grep -E '^#[0-9]+' "$logs/$1.log" | tail -n 1 || true; }
table=$logs/table.md
crashed=0
{
  echo "| target | executions | exec/s | edges (cov) | features (ft) | corpus files | corpus KB | seeds kept | crashes | 10 M executions take |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"
  for name in "${targets[@]}"; do
    execs=$(final_stat "$name" number_of_executed_units)
    rate=$(final_stat "$name" average_exec_per_sec)
    status=$(last_status "$name")
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
    files=$(find "$cache/$name" -type f | wc -l)
    kb=$(( $(du -sb "$cache/$name" | cut -f1) / 1024 ))
    rc=$(cat "$logs/$name.rc")
    artifacts=$(find "$cache/crashes" -name "$name-*" -newer "$logs/start" 2>/dev/null | wc -l)
    if [ "$rc" != 0 ] || [ "$artifacts" -gt 0 ]; then
      crashed=1
      input=$(sed -n 's/.*Test unit written to //p' "$logs/$name.log" | head -n 1)
      crash="**yes** (exit $rc; \`${input:-no input kept}\`)"
      tail -n 30 "$logs/$name.log" >&2
    else
      crash=0
    fi
    if [ "${rate:-0}" -gt 0 ]; then
      eta="$(( (10000000 / rate + 59) / 60 )) min"
    else
      eta="-"
    fi
    kept=$(cat "$logs/$name.kept" 2>/dev/null || echo -)
    echo "| $name | ${execs:-0} | ${rate:-0} | ${cov:--} | ${ft:--} | $files | $kb | $kept | $crash | $eta |"
  done
} >"$table"
cat "$table"
# A run of some targets keeps the other targets' rows from the last table, marked as older.
doc=docs/SECURITY.md
earlier=
if [ -n "${LIBVMM_FUZZ_TARGETS:-}" ] && grep -q '^<!-- fuzz-table -->' "$doc"; then
  earlier=$(sed -n '/^<!-- fuzz-table -->/,/^<!-- \/fuzz-table -->/p' "$doc" |
    grep -E '^\| [a-z0-9_]+\*? \|' | grep -v '^| target |' |
    while read -r row; do
      name=$(cut -d'|' -f2 <<<"$row" | tr -d ' *')
      [[ " ${targets[*]} " == *" $name "* ]] || sed "s/^| $name\*\? |/| $name* |/" <<<"$row"
    done || true)
fi

if [ -z "${LIBVMM_FUZZ_NO_DOCS:-}" ]; then
  cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
  {
    echo "<!-- fuzz-table -->"
    echo "Last campaign: $(date -u '+%Y-%m-%d %H:%M UTC'), \`bench/fuzz.sh $secs\` ($secs s per target, $jobs at a time)"
    echo "on $(nproc) cores ($cpu), $(( $(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo) / 1024 / 1024 )) GiB,"
    echo "shared with other work (load average at the end: $load);"
    echo "clang $(clang --version | sed -n 's/.*clang version \([0-9.]*\).*/\1/p' | head -n 1), ASan + UBSan, corpus grown in \`~/.cache/libvmm/fuzz\`."
    echo
    head -n 2 "$table"
    { tail -n +3 "$table"; [ -z "$earlier" ] || echo "$earlier"; } | sort -t'|' -k2,2
    if [ -n "$earlier" ]; then
      echo
      echo "\* from an earlier campaign: this one ran ${targets[*]} only."
    fi
    echo "<!-- /fuzz-table -->"
  } >"$logs/block.md"
  if ! grep -q '^<!-- fuzz-table -->' "$doc"; then
    cat >>"$doc" <<'EOD'

## Fuzzing

Every parser a guest or a file can feed has a libFuzzer target (`fuzz/*_fuzzer.cpp`; each
file's header says what it drives, what its input bytes mean and which invariants it checks).
Build them with clang (`-DLIBVMM_FUZZ=ON`, ASan and UBSan; see `fuzz/CMakeLists.txt`) and run a
campaign with `bench/fuzz.sh [SECONDS_PER_TARGET [BUILD_DIR]]`: each target runs from its
persistent corpus (`~/.cache/libvmm/fuzz/NAME`) and the seeds in `fuzz/corpus/NAME`, two at a
time (`LIBVMM_FUZZ_JOBS`), then the table below is rewritten and the corpus is minimized
(`-merge=1`) back into `fuzz/corpus/NAME`, at most 200 files and 200 KB per target (the
smallest inputs of the merged set), which `tools/run-tests` runs each target from for
`LIBVMM_FUZZ_SECONDS` (10 s), with the same persistent corpus so that its short runs on one
machine add up (past 2 000 inputs that corpus is merged down first). A crash stops that target
and keeps its input in `~/.cache/libvmm/fuzz/crashes`; rerun it with
`build/clang/fuzz/NAME_fuzzer FILE`.

The goal is 10 million executions per target without a crash; the last column says how long
that takes at the measured rate (run `bench/fuzz.sh SECONDS` with that many seconds).

<!-- fuzz-table -->
<!-- /fuzz-table -->
EOD
  fi
  awk -v block="$logs/block.md" '
    /^<!-- fuzz-table -->/ { while ((getline line < block) > 0) print line; skip = 1; next }
    /^<!-- \/fuzz-table -->/ { skip = 0; next }
    !skip { print }' "$doc" >"$logs/doc.md"
  cp "$logs/doc.md" "$doc"
  echo "fuzz.sh: table written to $doc" >&2

fi
exit $crashed
