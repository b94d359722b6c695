#!/usr/bin/env bash
# tests/integration/emuhost_smoke.sh
#
# Smoke test of the emulated KVM host (tools/emuhost/emuhost); builds nothing.
#  1. a payload whose run.sh checks /dev/kvm and prints "kvm ok" exits 0 and
#     its output reaches our stdout;
#  2. a payload whose run.sh exits 3 makes emuhost exit 3;
#  3. a host taken for livelocked (its CPUs where emuhost's watcher looks for the int3
#     livelock: here faked with the idle loop) is stopped and booted again, and the second boot,
#     which sees emuhost.boot=2 on its command line, finishes the payload.
# Prints "emuhost_smoke: PASS" (and a closing "3 passed, 0 failed") on success.
set -euo pipefail
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
prog=emuhost_smoke

fail() {
  echo "$prog: FAIL: $*" >&2
  [ ! -f "$work/out" ] || { echo "---- emuhost output ----" >&2; tail -n 30 "$work/out" >&2; }
  exit 1
}

# 1. /dev/kvm works inside the emulated host.
payload_new x86_64
payload_script run.sh <<'EOS'
[ -c /dev/kvm ] || { echo "no /dev/kvm"; exit 1; }
echo "kvm ok"
EOS
start=$(date +%s%N)
status=0
run_payload --timeout 300 --log "$work/log" >"$work/out" 2>"$work/err" || status=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
[ "$status" -eq 0 ] || fail "kvm payload: emuhost exited $status ($(tail -n 1 "$work/err"))"
grep -qx 'kvm ok' "$work/out" || fail "kvm payload: 'kvm ok' missing from stdout"
grep -qx 'kvm ok' "$work/log" || fail "kvm payload: 'kvm ok' missing from --log file"
echo "$prog: kvm payload ok (${elapsed_ms} ms)" >&2

# 2. The payload's exit status is propagated.
payload_new x86_64
payload_script run.sh <<'EOS'
echo "exiting 3"
exit 3
EOS
status=0
run_payload --timeout 300 >"$work/out" 2>"$work/err" || status=$?
[ "$status" -eq 3 ] || fail "exit-3 payload: emuhost exited $status, expected 3 ($(tail -n 1 "$work/err"))"
grep -qx 'exiting 3' "$work/out" || fail "exit-3 payload: its output is missing"

# 3. The livelock watcher: idle CPUs stand in for CPUs looping in the int3 handler.
payload_new x86_64
payload_script run.sh <<'EOS'
if grep -qw emuhost.boot=2 /proc/cmdline; then echo "second boot"; exit 0; fi
sleep 300
echo "the first boot was not stopped"
exit 1
EOS
status=0
EMUHOST_FAKE_LOOP='idle|halt' EMUHOST_LOOP_EVERY=2 \
  run_payload --timeout 300 >"$work/out" 2>"$work/err" || status=$?
[ "$status" -eq 0 ] || fail "livelock: emuhost exited $status ($(tail -n 1 "$work/err"))"
grep -q 'livelocked.*booting it again' "$work/err" || fail "livelock: no line saying so on stderr"
grep -qx 'second boot' "$work/out" || fail "livelock: the second boot did not finish the payload"
echo "$prog: livelock watcher ok" >&2

echo "$prog: PASS"
echo "3 passed, 0 failed"
