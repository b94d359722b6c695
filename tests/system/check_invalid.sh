#!/usr/bin/env bash
# Runs `vmm check` (or, for run_*.system, `vmm run`) on one invalid description and asserts exit
# status 2, nothing started, and every "<!-- expect: MESSAGE -->" of the file on stderr. A
# "<!-- args: ARGS -->" line adds arguments (e.g. --arch aarch64).
# Usage: check_invalid.sh VMM TEST_GUEST FILE.system
set -uo pipefail
vmm=$1 file=$3
export LIBVMM_TEST_GUEST=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command=check
case $(basename "$file") in run_*) command=run ;; esac
read -r -a args < <(sed -n 's/^<!-- args: \(.*\) -->$/\1/p' "$file")
(cd "$work" && timeout 60 "$vmm" "$command" "$file" "${args[@]}" </dev/null >"$work/out" 2>"$work/err")
status=$?
fail() { echo "FAIL ($file): $*"; echo "--- stdout"; cat "$work/out"; echo "--- stderr"; cat "$work/err"; exit 1; }
[ "$status" -eq 2 ] || fail "vmm $command exited $status, expected 2"
[ -s "$work/out" ] && fail "vmm $command printed on stdout (started something?)"
expected=0
while IFS= read -r message; do
  expected=$((expected + 1))
  grep -qF -- "$message" "$work/err" || fail "stderr lacks: $message"
done < <(sed -n 's/^<!-- expect: \(.*\) -->$/\1/p' "$file")
[ "$expected" -gt 0 ] || fail "the file has no <!-- expect: ... --> line"
[ "$(wc -l <"$work/err")" -eq "$expected" ] || fail "stderr has other lines than the expected ones"
echo "PASS ($(basename "$file"))"
