#!/usr/bin/env bash
# RISC-V descriptions checked on this machine whatever its architecture (vmm check --arch
# riscv64): the example system's layout on the riscv64 board (RAM at 0x8000_0000, the 16550A,
# the interrupt controller, virtio-mmio from 0x1000_1000 with sources 32..63, a virtio-pci disk
# on the PCI host bridge), and the refusals
# in one line each: RAM elsewhere, --irqchip of another kind, a source the controller lacks, a
# RISC-V option on another architecture.
# Usage: riscv64_check.sh VMM
set -uo pipefail
vmm=$1
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
check() {
  local name=$1
  shift
  if "$@"; then echo "PASS: $name"; else echo "FAIL: $name"; failed=1; fi
}
has() { grep -qF -- "$2" "$work/$1"; }
lines() { [ "$(wc -l <"$work/$1")" -eq "$2" ]; }

cd "$work" || exit 1
for f in Image initramfs.cpio.gz vda.img; do printf 'x' >"$f"; done
export LIBVMM_GUEST=$work
cp "$repo/examples/simple/simple-riscv64.system" simple.system

"$vmm" check simple.system --arch riscv64 >simple.out 2>&1
check "simple: vmm check --arch riscv64 accepts it" [ $? -eq 0 ]
check "simple: 2 harts" has simple.out "virtual machine 'linux' (id 0): 2 riscv64 vCPUs"
check "simple: RAM at 0x8000_0000" has simple.out "RAM      [0x0080000000, 0x0090000000) 'guest_ram' rwx"
check "simple: the 16550A on stdio" has simple.out "serial   16550A (ttyS0) -> stdio"
check "simple: the AIA" has simple.out "irqchip  aia (KVM's APLIC + IMSIC)"
check "simple: the disk in the first slot, source 32" has simple.out "virtio   [0x0010001000, 0x0010001200) IRQ 32 virtio-blk vda"
check "simple: the rng in the third slot, source 34" has simple.out "virtio   [0x0010003000, 0x0010003200) IRQ 34 virtio-rng"

# The disk over PCI: a function on the host bridge's bus 0, not a virtio-mmio slot.
sed 's|<virtio_block path="${LIBVMM_GUEST}/vda.img" />|<virtio_block path="${LIBVMM_GUEST}/vda.img" transport="pci" />|' \
  simple.system >pci.system
"$vmm" check pci.system --arch riscv64 >pci.out 2>&1
check "pci: vmm check --arch riscv64 accepts a virtio-pci disk" [ $? -eq 0 ]
check "pci: ... the disk is PCI 00:01.0" has pci.out "virtio   PCI 00:01.0 MSI-X              virtio-blk vda"
check "pci: ... the network card takes the first virtio-mmio slot" has pci.out "virtio   [0x0010001000, 0x0010001200) IRQ 32 virtio-net eth0"

sed 's|<irqchip kind="aia" />|<irqchip kind="plic" />|' pci.system >pci-plic.system
"$vmm" check pci-plic.system --arch riscv64 >pci-plic.out 2>&1
check "pci on the plic: the disk interrupts through INTx, on the line after the virtio-mmio devices'" \
  has pci-plic.out "virtio   PCI 00:01.0 INTx on IRQ 34 (the PLIC has no MSIs) virtio-blk vda"

"$vmm" check simple.system --arch riscv64 --irqchip plic >plic.out 2>&1
check "--irqchip plic on a file that says aia: refused" [ $? -eq 2 ]
sed 's|<irqchip kind="aia" />|<irqchip kind="plic" />|' simple.system >plic.system
"$vmm" check plic.system --arch riscv64 >plic.out 2>&1
check "plic: accepted" has plic.out "irqchip  plic (emulated by vmm)"

sed 's|<irqchip kind="aia" />|<irqchip kind="apic" />|' simple.system >apic.system
"$vmm" check apic.system --arch riscv64 >apic.out 2>&1
check "irqchip kind=apic: refused" [ $? -eq 2 ]
check "irqchip kind=apic: in one line naming the element" has apic.out 'apic.system:31: <irqchip>: kind="apic": expected aia or plic'
check "irqchip kind=apic: one line" lines apic.out 1

"$vmm" check simple.system --arch x86_64 >x86.out 2>&1
check "on x86_64: refused" [ $? -eq 2 ]
check "on x86_64: the irqchip is RISC-V's" has x86.out "<irqchip>: only RISC-V machines choose between an AIA and a PLIC; this vmm runs x86_64 guests"

sed 's|vaddr="0x80000000" perms="rwx"|vaddr="0x40000000" perms="rwx"|' simple.system >ram.system
"$vmm" check ram.system --arch riscv64 >ram.out 2>&1
check "RAM at 0x4000_0000: refused" [ $? -eq 2 ]
check "RAM at 0x4000_0000: the place named" has ram.out "must be mapped at 0x80000000 on riscv64"

sed 's|<virtio_rng />|<virtio_rng /><irq irq="0" fifo="irq.fifo" />|' simple.system >irq0.system
"$vmm" check irq0.system --arch riscv64 >irq0.out 2>&1
check "IRQ 0: refused in one line" lines irq0.out 1
check "IRQ 0: refused" has irq0.out "IRQ 0 is not an interrupt source: the PLIC and the APLIC number sources from 1"

# The manual's Microkit form moved to the riscv64 board: its UART map is the emulated 16550A.
sed -e 's|0x9000000|0x10000000|g' -e 's|0x40000000|0x80000000|g' -e '/gic_vcpu/d' \
  "$repo/tests/system/microkit/manual.system" >manual.system
"$vmm" check manual.system --arch riscv64 >manual.out 2>&1
check "manual on riscv64: accepted" [ $? -eq 0 ]
check "manual on riscv64: the uart map is the 16550A" has manual.out "board    'uart' at 0x10000000: the 16550A UART -> the emulated 16550A (ttyS0)"

"$vmm" check simple.system --arch sparc64 >arch.out 2>&1
check "--arch sparc64: refused, riscv64 known" has arch.out "--arch sparc64: unknown architecture (known: x86_64, aarch64, riscv64)"

[ $failed -eq 0 ] || { for f in *.out; do echo "---- $f"; cat "$f"; done; }
exit $failed
