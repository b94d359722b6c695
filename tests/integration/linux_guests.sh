#!/usr/bin/env bash
# The freestanding-guest tests (tests/guests: run_case.sh, system_case.sh, sound_flood.sh) inside
# the emulated KVM host, for a machine without a usable /dev/kvm of its own, where guest.* and
# system.* skip: their scenarios still run, on the emulated host's KVM. On a machine with one
# they ran there, and this test skips. So do the unit tests that build VMs on KVM (SystemPlan.*,
# MsiRoutesKvm.*), which skip without it too. Not here: the jail cases (linux.jail runs --jail
# in the emulated host) and the installed-library example (it needs the build tree).
# LIBVMM_GUESTS_IN_EMUHOST=1 runs it on a machine with /dev/kvm as well (to check this script).
# Usage: linux_guests.sh VMM TEST_GUEST SOUND_FLOOD_GUEST MINIMAL_VMM SYSTEM_TESTS VM_TESTS
set -euo pipefail
vmm=$1 guest=$2 flood=$3 minimal=$4 system_tests=$5 vm_tests=$6
if [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ -z "${LIBVMM_GUESTS_IN_EMUHOST:-}" ]; then
  echo "SKIP: this machine has /dev/kvm: guest.* and system.* ran on it"
  exit 77
fi
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
payload_new x86_64
# The scripts' tools where busybox's lack an option they use (dd oflag=nonblock, setpriv
# --reuid, install), and coreutils' timeout, which finds setpriv on PATH (busybox's would run
# its own applet).
payload_binary "$vmm" "$minimal" "$(command -v bash)" "$(command -v dd)" "$(command -v install)" \
  "$(command -v setpriv)" "$(command -v timeout)"
cp "$guest" "$payload/test-guest.bzImage"
cp "$flood" "$payload/sound-flood.bzImage"
mkdir -p "$payload/guests" "$payload/system/microkit"
cp "$repo"/tests/guests/{run_case,system_case,sound_flood,need_kvm}.sh "$payload/guests/"
cp "$repo/tests/system/microkit/x86_simple.system" "$payload/system/microkit/"
payload_binary "$system_tests" "$vm_tests"
# SystemPlan.* builds every example system of this architecture (src/examples/...).
mkdir -p "$payload/src"
(cd "$repo" && find examples -name '*.system' -exec cp --parents {} "$payload/src/" \;)

payload_script run.sh <<'EOS'
export PATH=/payload:$PATH  # the tools above before busybox's
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd  # output_stuck writes to /dev/fd/3
# case NAME SCRIPT ARGS...: one scenario; its output is shown when it fails, a skip is said.
case_() {
  name=$1; shift
  ./bash "$@" >"/tmp/$name.log" 2>&1; s=$?
  if [ $s -eq 77 ]; then echo "SKIP: $name: $(tail -n 1 "/tmp/$name.log")"; return; fi
  check "$name" [ $s -eq 0 ]
  [ $s -eq 0 ] || tail -n 30 "/tmp/$name.log"
}
for c in hello fault fault_strict echo triple output_stuck bad_inputs seccomp_kill seccomp_modes; do
  case_ "guest.$c" guests/run_case.sh ./vmm test-guest.bzImage "$c"
done
for c in shared_file shared_shm readonly irq_fifo irq_socket two_guests hugepages microkit_x86; do
  case_ "system.$c" guests/system_case.sh ./vmm test-guest.bzImage "$c"
done
case_ guest.sound_flood guests/sound_flood.sh ./vmm sound-flood.bzImage
check "example.minimal_vmm" sh -c "./minimal_vmm test-guest.bzImage 'hello from the example' \
  </dev/null | grep -qF 'TEST-GUEST: hello, command line: hello from the example'"
# unit NAME FILTER: the KVM tests of a unit-test program; each must run, none skip.
unit() {
  LIBVMM_SOURCE_DIR=/payload/src "./$1" --gtest_filter="$2" >"/tmp/$1.log" 2>&1; s=$?
  check "unit: $1 $2 (VMs on KVM)" sh -c "[ $s -eq 0 ] && ! grep -q 'SKIPPED' /tmp/$1.log &&
    grep -qE 'PASSED  \] [1-9][0-9]* test' /tmp/$1.log"
  [ $s -eq 0 ] || tail -n 30 "/tmp/$1.log"
}
unit system_tests 'SystemPlan.*'
unit vm_tests 'MsiRoutesKvm.*'
finish linux_guests
EOS
run_payload --timeout 900
