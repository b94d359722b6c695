#!/usr/bin/env bash
# Runs examples/custom_vmm with the freestanding test guest: the shared page handshake with the
# program, and three interrupts the program raises through its eventfd.
# Usage: custom_vmm.sh CUSTOM_VMM TEST_GUEST
set -uo pipefail
custom=$1 guest=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
fail() { echo "FAIL: $*"; cat "$out"; exit 1; }
# shellcheck source=tests/guests/need_kvm.sh
. "$(dirname "$0")/../guests/need_kvm.sh"
need_kvm custom_vmm
timeout 60 "$custom" "$guest" "mem 0xc0000000" </dev/null >"$out" 2>&1 || fail "mem: exit status $?"
grep -qF 'custom_vmm: the guest wrote "GUEST-WROTE-THIS"' "$out" || fail "the program did not see the guest's write"
grep -qF "TEST-GUEST: host answered: HELLO-FROM-CUSTOM-VMM" "$out" || fail "the guest did not see the answer"
timeout 60 "$custom" "$guest" "irq 20" </dev/null >"$out" 2>&1 || fail "irq: exit status $?"
grep -qF "TEST-GUEST: three interrupts" "$out" || fail "the guest did not count three interrupts"
echo PASS
