#!/usr/bin/env bash
# VFIO passthrough in the emulated KVM host (tools/emuhost/emuhost --nvme: q35 with an emulated
# Intel IOMMU and an NVMe controller on an image of ours). In one host boot: the refusals that
# need a real host (no such device; the controller not yet bound to vfio-pci), then the
# controller handed to vfio-pci with driver_override and passed through to a Linux guest, whose
# nvme driver finds the namespace with MSI-X, reads the host's pattern, writes 4 MiB and reads
# them back; vmm's -v log shows the fast paths were used (BAR 0's registers in a KVM memory
# slot, the vectors as irqfds, nothing but the MSI-X table and PBA trapped). Two more boots on
# INTx, one of them in a jail (--jail). After the host is
# gone, the image must hold what the guest wrote. Then MSI without MSI-X: an AHCI controller
# (QEMU's ich9-ahci) passed through to Debian's kernel, whose ahci driver takes its one MSI
# vector; the guest reads the host's pattern and writes 1 MiB the host finds in the image.
# Usage: linux_vfio.sh VMM
set -euo pipefail
vmm=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
payload_new x86_64 "$vmm"
cp "$("$emuhost" --arch x86_64 --print-kernel)" "$payload/debian-vmlinuz"
cp "$("$repo/images/build-initramfs" --debian-kernel x86_64)" "$payload/initramfs-debian.cpio.gz"

image=$work/nvme.img
truncate -s 64M "$image"
printf 'LIBVMM-HOST-NVME-PATTERN' | dd of="$image" conv=notrunc 2>/dev/null
ahci_image=$work/ahci.img
truncate -s 16M "$ahci_image"
printf 'LIBVMM-HOST-AHCI-PATTERN' | dd of="$ahci_image" conv=notrunc 2>/dev/null

payload_script run.sh <<'EOS'
nvme=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/class")" = 0x010802 ] && nvme=$(basename "$d")
done
check "the host has an NVMe controller ($nvme) in an IOMMU group" [ -e "/sys/bus/pci/devices/$nvme/iommu_group" ]

missing="vmm: error: --vfio 0000:00:1f.7: no such PCI device on this host (/sys/bus/pci/devices/0000:00:1f.7 is missing; lspci -D lists the host's devices)"
./vmm --kernel "$kernel" --vfio 0000:00:1f.7 >/tmp/e1.out 2>&1; e1=$?
check "a missing device: exit 2 (got $e1)" [ "$e1" -eq 2 ]
check "a missing device: one line naming it" \
  grep -qxF "$missing" /tmp/e1.out
mkdir -p /tmp/vfio-jail
./vmm --jail /tmp/vfio-jail --jail-uid 1000 --kernel "$kernel" --vfio 0000:00:1f.7 >/tmp/e1j.out 2>&1; e1j=$?
check "a missing device under --jail: exit 2 (got $e1j)" [ "$e1j" -eq 2 ]
check "a missing device under --jail: the same line, found before the jail is built" \
  grep -qxF "$missing" /tmp/e1j.out
./vmm --kernel "$kernel" --vfio "$nvme" >/tmp/e2.out 2>&1; e2=$?
check "not bound to vfio-pci: exit 2 (got $e2)" [ "$e2" -eq 2 ]
check "not bound to vfio-pci: the driver_override commands" \
  grep -qF "vmm: error: --vfio $nvme: the device is bound to no driver, not to vfio-pci; hand it to vfio-pci (as root): echo vfio-pci > /sys/bus/pci/devices/$nvme/driver_override; echo $nvme > /sys/bus/pci/drivers_probe" /tmp/e2.out

vfio_bind "$nvme"
group=$(basename "$(readlink "/sys/bus/pci/devices/$nvme/iommu_group")")
check "bound to vfio-pci, /dev/vfio/$group present" [ -c "/dev/vfio/$group" ]

started=$(date +%s)
start nvme guest --memory 256M --cmdline "console=ttyS0 libvmm.test=nvme" --vfio "$nvme" -v
i=0
while [ $i -lt 120 ] && kill -0 "$pid" 2>/dev/null && ! grep -q 'LIBVMM-GUEST: pci' /tmp/nvme.out; do sleep 1; i=$((i + 1)); done
check "every vmm thread runs under its seccomp filter" sandboxed
stop
echo "guest with the NVMe passed through took $(($(date +%s) - started)) s"
tr -d '\r' </tmp/nvme.out >/tmp/vfio.out
check "exit status 0 (got $status)" [ "$status" -eq 0 ]
check "the guest sees the controller (class 010802) bound to nvme with MSI-X" \
  grep -qE "pci 0000:00:0[1-9].0 0x010802 0x1b36:0x0010 driver=nvme msix_vectors=[1-9]" /tmp/vfio.out
check "the namespace is 64 MiB" grep -qF "nvme0n1 size: 131072 sectors" /tmp/vfio.out
check "the guest reads the host's pattern" grep -qF "nvme0n1 starts with: LIBVMM-HOST-NVME-PATTERN" /tmp/vfio.out
written=$(sed -n 's/.*LIBVMM-GUEST: pattern md5 //p' /tmp/vfio.out)
read_back=$(sed -n 's/.*LIBVMM-GUEST: read back md5 //p' /tmp/vfio.out)
check "the guest reads back the 4 MiB it wrote ($written)" [ -n "$written" -a "$written" = "$read_back" ]
check "the controller's MSI-X vectors fired" grep -qE "nvme MSI-X interrupts taken: [1-9]" /tmp/vfio.out
check "vmm logged no guest error" sh -c '! grep -q "warning" /tmp/nvme.err'
cp /tmp/nvme.err /tmp/msix.err
# The fast paths (vmm -v): the controller's registers and doorbells (BAR 0 below the MSI-X
# table's page) in a KVM memory slot, every vector an irqfd; only the MSI-X table and PBA trap.
check "BAR 0's register pages went into the guest as a memory slot" \
  grep -qE "vfio $nvme: BAR 0 \[0x0, 0x2000\) in the guest at \[0x[0-9a-f]+, 0x[0-9a-f]+\) \(memory slot [0-9]+\)" /tmp/nvme.err
check "every MSI-X vector is a KVM irqfd" \
  grep -qE "vfio $nvme: MSI-X vectors 0-[0-9]+ signalled as KVM irqfds, 0 through the event loop" /tmp/nvme.err
counts=$(vfio_slow_paths "$nvme" /tmp/nvme.err)
echo "trapped BAR accesses, of them MSI-X, interrupts through the loop: $counts"
set -- $counts
trapped=${1:-none} trapped_msix=${2:-} loop_irqs=${3:-}
check "only MSI-X table and PBA accesses trapped ($trapped, $trapped_msix)" [ "$trapped" = "$trapped_msix" ]
check "no interrupt went through the event loop ($loop_irqs)" [ "$loop_irqs" = 0 ]
# Unbound, moved up 1 MiB and back with memory decoding off around each move, bound again: the
# slot left the guest and came back at each place, and the driver read the namespace again
# (its vectors masked and unmasked on the way: irqfds deassigned and assigned again).
moved=$(sed -n 's/.*LIBVMM-GUEST: BAR 0 moved to //p' /tmp/vfio.out)
check "the guest moved BAR 0 ($moved)" [ -n "$moved" ]
check "the slot left the guest when decoding went off" \
  grep -qE "vfio $nvme: BAR 0 \[0x0, 0x2000\) out of the guest" /tmp/nvme.err
check "the slot followed BAR 0 to $moved" \
  grep -qE "vfio $nvme: BAR 0 \[0x0, 0x2000\) in the guest at \[$moved," /tmp/nvme.err
check "the nvme driver bound again reads the namespace through the slot" \
  grep -qE "after the BAR moves, nvme[0-9]n1 starts with: LIBVMM-HOST-NVME-PATTERN" /tmp/vfio.out
check "the device was reset when vmm let it go" grep -qF "vfio $nvme: reset, back to the host" /tmp/nvme.err

# intx_boot NAME LABEL ARGS [VMM-FLAGS...]: a guest booted with pci=nomsi ARGS, so that its nvme
# driver takes INTA#; it must find the previous boot's 4 MiB ($written) and write its own, which
# become $written (the host checks the last boot's in the image).
intx_boot() {
  which=$1 label=$2 args=$3  # not $name: check() sets it
  shift 3
  started=$(date +%s)
  start "$which" guest --memory 256M --cmdline "console=ttyS0 libvmm.test=nvme pci=nomsi $args" --vfio "$nvme" -v "$@"
  stop_within 240
  echo "guest with the NVMe's INTx ($label) took $(($(date +%s) - started)) s"
  tr -d '\r' <"/tmp/$which.out" >"/tmp/$which.txt"
  check "$label: exit status 0 (got $status)" [ "$status" -eq 0 ]
  check "$label: the guest's nvme driver has the controller without MSI-X" \
    grep -qE "pci 0000:00:0[1-9].0 0x010802 0x1b36:0x0010 driver=nvme msix_vectors=0" "/tmp/$which.txt"
  found=$(sed -n 's/.*LIBVMM-GUEST: found md5 //p' "/tmp/$which.txt")
  check "$label: the guest finds the previous boot's 4 MiB ($found)" [ -n "$found" -a "$found" = "$written" ]
  written=$(sed -n 's/.*LIBVMM-GUEST: pattern md5 //p' "/tmp/$which.txt")
  read_back=$(sed -n 's/.*LIBVMM-GUEST: read back md5 //p' "/tmp/$which.txt")
  check "$label: the guest reads back the 4 MiB it wrote ($written)" [ -n "$written" -a "$written" = "$read_back" ]
  check "$label: the controller's interrupts fired" grep -qE "nvme MSI-X interrupts taken: [1-9]" "/tmp/$which.txt"
  check "$label: the driver bound again after the BAR moves reads the namespace" \
    grep -qE "after the BAR moves, nvme[0-9]n1 starts with: LIBVMM-HOST-NVME-PATTERN" "/tmp/$which.txt"
  check "$label: vmm logged no guest error" sh -c "! grep -q warning /tmp/$which.err"
}

# INTx with ACPI: vmm gives INTA# a line in the _PRT and a level-triggered irqfd whose resample
# eventfd unmasks the device's line in VFIO. This VM runs in a jail (--jail, as user 1000 with
# no capabilities): the jail holds /dev/vfio/vfio and the group's node, and its user may pin the
# guest's 256 MiB for DMA.
intx_boot intx INTx "" --jail /tmp/vfio-jail --jail-uid 1000
check "INTx: vmm gave INTA# a line and an irqfd with a resample eventfd" \
  sh -c "grep -qE 'vfio $nvme: INTA# on interrupt line [0-9]+' /tmp/intx.err && grep -qF 'vfio $nvme: INTx signalled as a KVM irqfd with a resample eventfd' /tmp/intx.err"
check "jail: the VM ran in it as user 1000" grep -qE "jail: the VM runs as pid [0-9]+ .*uid 1000" /tmp/intx.err
check "jail: its user may pin the guest's RAM for VFIO" \
  grep -qF "jail: RLIMIT_MEMLOCK raised to 268435456 bytes for the memory VFIO pins" /tmp/intx.err
check "jail: its directory is empty again" sh -c '[ -z "$(ls -A /tmp/vfio-jail)" ]'

# INTx without ACPI (acpi=off): the guest finds the PCI bus through the 0xCF8 ports and INTA#'s
# IOAPIC pin in the MP table's PCI entries, not the _PRT.
intx_boot mptable "no ACPI" acpi=off
echo "GUEST-WROTE-MD5=$written"
check "the device is still vfio-pci's after the VM" \
  [ "$(basename "$(readlink "/sys/bus/pci/devices/$nvme/driver")")" = vfio-pci ]

# MSI (no MSI-X): the second AHCI controller (not q35's own at 00:1f.2, which shares its group
# with the LPC bridge), to Debian's kernel.
ahci=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/class")" = 0x010601 ] && [ "$(basename "$d")" != 0000:00:1f.2 ] && ahci=$(basename "$d")
done
check "the host has an AHCI controller ($ahci) of its own group" [ -e "/sys/bus/pci/devices/$ahci/iommu_group" ]
vfio_bind "$ahci"
started=$(date +%s)
start ahci ./vmm --kernel debian-vmlinuz --initrd initramfs-debian.cpio.gz --memory 256M \
  --cmdline "console=ttyS0 quiet libvmm.test=ahci" --vfio "$ahci" -v
stop_within 300
echo "guest with the AHCI controller passed through took $(($(date +%s) - started)) s"
tr -d '\r' </tmp/ahci.out >/tmp/ahci.txt
check "MSI: exit status 0 (got $status)" [ "$status" -eq 0 ]
check "MSI: vmm offers the controller's MSI capability (no MSI-X)" \
  grep -qE "vfio $ahci: 8086:2922 class 010601, [0-9]+ MSI vectors" /tmp/ahci.err
check "MSI: its vectors are KVM irqfds" grep -qE "vfio $ahci: [0-9]+ MSI vectors, [1-9][0-9]* of them as KVM irqfds" /tmp/ahci.err
check "MSI: the guest's ahci driver has the controller with an MSI vector" \
  grep -qE "pci 0000:00:0[1-9].0 0x010601 0x8086:0x2922 driver=ahci msi_vectors=[1-9]" /tmp/ahci.txt
check "MSI: the guest reads the host's pattern from sda" grep -qF "sda starts with: LIBVMM-HOST-AHCI-PATTERN" /tmp/ahci.txt
ahci_written=$(sed -n 's/.*LIBVMM-GUEST: ahci pattern md5 //p' /tmp/ahci.txt)
ahci_read=$(sed -n 's/.*LIBVMM-GUEST: ahci read back md5 //p' /tmp/ahci.txt)
check "MSI: the guest reads back the 1 MiB it wrote ($ahci_written)" [ -n "$ahci_written" -a "$ahci_written" = "$ahci_read" ]
check "MSI: the controller's interrupts arrived as MSIs" grep -qE "ahci interrupts: [1-9][0-9]* on [A-Z-]*PCI-MSI" /tmp/ahci.txt
check "MSI: vmm logged no guest error" sh -c '! grep -q warning /tmp/ahci.err'
echo "GUEST-AHCI-MD5=$ahci_written"

finish linux_vfio /tmp/vfio.out /tmp/msix.err /tmp/intx.txt /tmp/intx.err /tmp/mptable.txt /tmp/mptable.err \
  /tmp/ahci.txt /tmp/ahci.err
EOS
collect 'PASS|FAIL|GUEST-WROTE-MD5|GUEST-AHCI-MD5|took|trapped|linux_vfio:' --timeout 1200 --nvme "$image" \
  --ahci "$ahci_image" || true
cat "$work/results"
written=$(sed -n 's/^GUEST-WROTE-MD5=//p' "$work/results")
on_image=$(dd if="$image" bs=1M skip=1 count=4 2>/dev/null | md5sum | cut -d' ' -f1)
if [ -z "$written" ] || [ "$written" != "$on_image" ]; then
  echo "FAIL: the image holds the guest's 4 MiB (guest $written, image $on_image)"
  tail -n 40 "$work/log"
  exit 1
fi
echo "PASS: the image holds the guest's 4 MiB ($on_image)"
ahci_written=$(sed -n 's/^GUEST-AHCI-MD5=//p' "$work/results")
ahci_on_image=$(dd if="$ahci_image" bs=1M skip=1 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
if [ -z "$ahci_written" ] || [ "$ahci_written" != "$ahci_on_image" ]; then
  echo "FAIL: the AHCI disk's image holds the guest's 1 MiB (guest $ahci_written, image $ahci_on_image)"
  exit 1
fi
echo "PASS: the AHCI disk's image holds the guest's 1 MiB ($ahci_on_image)"
need_results '^linux_vfio: [0-9]+ passed, 0 failed'
