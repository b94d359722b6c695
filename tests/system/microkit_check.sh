#!/usr/bin/env bash
# Microkit descriptions as written (tests/system/microkit), checked on this machine whatever its
# architecture: `vmm check --arch aarch64` of the manual's, simple and smp forms (our DTB and
# overlay compiled by dtc), `--arch x86_64` of the x86 form, and run's image flags on a file.
# Usage: microkit_check.sh VMM
set -uo pipefail
vmm=$1
src=$(cd "$(dirname "$0")/microkit" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
check() {
  local name=$1
  shift
  if "$@"; then echo "PASS: $name"; else echo "FAIL: $name"; failed=1; fi
}
has() { grep -qF -- "$2" "$work/$1"; }

cp "$src"/*.system "$work/"
dtc -q -@ -I dts -O dtb -o "$work/linux.dtb" "$src/linux.dts" || { echo "FAIL: dtc linux.dts"; exit 1; }
dtc -q -@ -I dts -O dtb -o "$work/overlay.dtbo" "$src/overlay.dts" || { echo "FAIL: dtc overlay.dts"; exit 1; }
cd "$work" || exit 1

"$vmm" check manual.system --arch aarch64 >manual.out 2>&1
check "manual: vmm check --arch aarch64 accepts it" [ $? -eq 0 ]
check "manual: program_image noted" has manual.out "program_image vmm.elf: not loaded (the VMM is this vmm process)"
check "manual: RAM at 0x4000_0000" has manual.out "RAM      [0x0040000000, 0x0050000000) 'guest_ram' rwx"
check "manual: the uart map is the emulated PL011" has manual.out "board    'uart' at 0x9000000: the PL011 UART -> the emulated PL011 (ttyAMA0)"
check "manual: the gic_vcpu map is the vGICv2's" has manual.out "board    'gic_vcpu' at 0x8010000: the GICv2 virtual CPU interface -> KVM's vGICv2 CPU interface"
check "manual: console on stdio" has manual.out "serial   PL011 (ttyAMA0) -> stdio"
check "manual: GICv2 chosen" has manual.out "gic      v2"
check "manual: the kernel is for the flags" has manual.out "kernel   (none: give it with vmm run FILE --kernel IMAGE)"

"$vmm" check simple.system --arch aarch64 --dtb linux.dtb >simple.out 2>&1
check "simple: vmm check --arch aarch64 --dtb accepts it" [ $? -eq 0 ]
check "simple: the PL011's interrupt" has simple.out "-> the emulated PL011 (ttyAMA0), IRQ 33"
check "simple: the overlay" has simple.out "overlay.dtbo (applied)"
check "simple: the DTB from --dtb" has simple.out "dtb      linux.dtb (patched)"

"$vmm" check smp.system --arch aarch64 --dtb-overlay overlay.dtbo >smp.out 2>&1
check "smp: vmm check --arch aarch64 accepts it" [ $? -eq 0 ]
check "smp: 4 vCPUs" has smp.out "virtual machine 'linux' (id 0): 4 aarch64 vCPUs"
check "smp: vCPU 3 pinned" has smp.out "vcpu 3   on host CPU 3"
check "smp: the VMM pinned" has smp.out "runs on host CPU 0"

"$vmm" check x86_simple.system --arch x86_64 >x86.out 2>&1
check "x86: vmm check --arch x86_64 accepts it" [ $? -eq 0 ]
check "x86: COM1 from its I/O ports, with pin 4" has x86.out "board    'ioport 0x3f8' at 0x3f8: COM1 -> the emulated 16550A (ttyS0), IRQ 4"

"$vmm" check manual.system --arch x86_64 >wrong.out 2>&1
check "manual on x86_64: refused" [ $? -eq 2 ]
check "manual on x86_64: ... RAM's place named" has wrong.out "must be mapped at 0x0 on x86_64"

"$vmm" check manual.system --arch sparc64 >sparc.out 2>&1
check "--arch sparc64: refused" [ $? -eq 2 ]
check "--arch sparc64: ... in one line" has sparc.out "--arch sparc64: unknown architecture (known: x86_64, aarch64, riscv64)"

"$vmm" check manual.system --arch aarch64 --kernel /nonexistent/Image >flag.out 2>&1
check "--kernel for a file: checked by its flag" has flag.out "--kernel: kernel /nonexistent/Image: No such file or directory"
printf 'x' >Image
"$vmm" check manual.system --arch aarch64 --kernel Image --cmdline "console=ttyAMA0" >flags.out 2>&1
check "--kernel, --cmdline for a file: accepted" has flags.out "cmdline  \"console=ttyAMA0\""

sed 's|<virtual_machine name="linux" id="0">|<virtual_machine name="linux" id="0"><kernel path="Image" />|' manual.system >own.system
"$vmm" check own.system --arch aarch64 --kernel Image >own.out 2>&1
check "--kernel for a VM that has one: refused" has own.out "--kernel: virtual machine 'linux' has one already ("
sed 's|</protection_domain>|<virtual_machine name="other" id="1"><map mr="guest_ram" vaddr="0x40000000" /></virtual_machine></protection_domain>|' manual.system >two.system
"$vmm" check two.system --arch aarch64 --kernel Image >two.out 2>&1
check "--kernel with two VMs: asks for --vm" has two.out "--kernel: two.system has 2 virtual machines (linux, other); choose one with --vm NAME"
"$vmm" check two.system --arch aarch64 --kernel Image --vm nobody >vm.out 2>&1
check "--vm of no VM: named" has vm.out "--vm nobody: two.system has no virtual machine of that name (it has: linux, other)"
[ $failed -eq 0 ] || { for f in *.out; do echo "---- $f"; cat "$f"; done; }
exit $failed
