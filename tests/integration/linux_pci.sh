#!/usr/bin/env bash
# virtIO over PCI in the emulated KVM host: the guest's disks, console, entropy source and
# network card (on a TAP in a namespace the test creates) are virtio-pci functions (transport=pci) behind libvmm's PCI host bridge, found by Linux's
# virtio_pci driver with MSI-X; and the same checks as linux.virtio (the pattern the host wrote,
# the guest's write in the image, the read-only disk refusing writes, hvc0 both ways, hvc0's
# size from vmm's terminal through the config space, and a resize), vda's registers through
# its VIRTIO_PCI_CAP_PCI_CFG window (configuration accesses only, from sysfs), a ping
# and a TCP download over eth0, and the bridge as ACPI describes it (PCI0 in the DSDT; this
# kernel has no PCI_MMCONFIG, so it keeps 0xCF8/0xCFC: linux.debian checks the MCFG's ECAM). One
# boot, with --halt guest: the guest's HLTs stay in it (KVM counts no halt exits), and MSI-X
# vectors still reach its idle vCPU.
# A second boot: examples/devices_in_code, a program on libvmm::Vm that adds a disk as a PCI
# function and an entropy source on the board's default transport (virtio-pci here) in code.
# Usage: linux_pci.sh VMM DEVICES_IN_CODE
set -euo pipefail
vmm=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
payload_new x86_64 "$vmm"
payload_binary "$2"

payload_binary "$(command -v ip)"  # busybox ip has no netns
payload_binary "$(command -v script)"  # vmm on a terminal: the console's size

payload_script run.sh <<'EOS'
./ip netns add libvmm-pci || { echo "cannot create a network namespace"; exit 1; }
./ip netns exec libvmm-pci ./pci.sh
status=$?
./ip netns delete libvmm-pci
exit $status
EOS
payload_script pci.sh <<'EOS'
# eth0 (virtio-net over PCI) on tap0 in this namespace: 10.0.0.2 in the guest, 10.0.0.1 here.
./ip link set lo up
./ip tuntap add tap0 mode tap
./ip addr add 10.0.0.1/24 dev tap0
./ip link set tap0 up
mkdir -p /www
dd if=/dev/urandom of=/www/to-guest bs=64k count=16 2>/dev/null
to_guest=$(sha256sum </www/to-guest | cut -d' ' -f1)
httpd -p 10.0.0.1:8080 -h /www
dd if=/dev/zero of=/tmp/vda.img bs=1M count=4 2>/dev/null
printf 'LIBVMM-HOST-WROTE-THIS!!' | dd of=/tmp/vda.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/vdb.img bs=1M count=1 2>/dev/null

# KVM's halt exits (debugfs: the sum over this host's VMs, of which emuhost's kvm-hold never runs).
mount -t debugfs none /sys/kernel/debug 2>/dev/null
halts_before=$(cat /sys/kernel/debug/kvm/halt_exits 2>/dev/null || echo none)
start_on_terminal hvc0 100 30 guest --memory 256M --cmdline "console=ttyS0 libvmm.test=pci" --halt guest \
  --disk /tmp/vda.img,transport=pci --disk /tmp/vdb.img,readonly,transport=pci \
  --console stdio,transport=pci --rng transport=pci --net tap=tap0,transport=pci \
  --serial file:/tmp/out
check "hvc0 output reached vmm's stdout" wait_for /tmp/hvc0.out "LIBVMM-GUEST: hello over hvc0" 180
send hvc0 "ping-from-host"
check "host input reached the guest over hvc0" wait_for /tmp/hvc0.out "hvc0 got: ping-from-host" 60
# vmm runs on a terminal of 100 x 30: without MULTIPORT, its size is in the console's config
# space, and a config interrupt (an MSI-X vector here) tells the driver of a new one.
terminal_size_checks hvc0 /tmp/out vmm
stop
halts_after=$(cat /sys/kernel/debug/kvm/halt_exits 2>/dev/null || echo none)
tr -d '\r' </tmp/out >/tmp/pci.out
check "exit status 0 (got $status)" [ "$status" -eq 0 ]
check "--halt guest: no halt exits (KVM's counter: $halts_before before, $halts_after after)" \
  sh -c "[ '$halts_before' != none ] && [ '$halts_after' = '$halts_before' ]"
check "the guest found the host bridge at 00:00.0" grep -qF "pci 0000:00:00.0 0x1b36:0x0008" /tmp/pci.out
check "no pci= parameter on the kernel's command line" \
  sh -c '! grep "Kernel command line:" /tmp/pci.out | grep -q "pci="'
check "the PCI root is the DSDT's PCI0 (PNP0A08)" \
  grep -qF "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00])" /tmp/pci.out
check "its windows come from PCI0's _CRS" \
  grep -qF "pci_bus 0000:00: root bus resource [mem 0xc0000000-0xcfffffff window]" /tmp/pci.out
check "virtio-blk is a virtio-pci function (1af4:1042) bound to virtio-pci" \
  grep -qE "pci 0000:00:0[1-5].0 0x1af4:0x1042 driver=virtio-pci msix_vectors=[1-9]" /tmp/pci.out
check "virtio-console is 1af4:1043 with MSI-X" \
  grep -qE "pci 0000:00:0[1-5].0 0x1af4:0x1043 driver=virtio-pci msix_vectors=[1-9]" /tmp/pci.out
check "virtio-rng is 1af4:1044 with MSI-X" \
  grep -qE "pci 0000:00:0[1-5].0 0x1af4:0x1044 driver=virtio-pci msix_vectors=[1-9]" /tmp/pci.out
check "MSI-X vectors fired" grep -qE "MSI-X interrupts taken: [1-9]" /tmp/pci.out
check "vda's PCI_CFG window reads num_queues as many as blk-mq's queues" \
  grep -qE "pci-cfg window: num_queues=([1-9][0-9]*), blk-mq queues=\1\$" /tmp/pci.out
check "written through the window, device_feature_select 1 shows VIRTIO_F_VERSION_1" \
  grep -qE "pci-cfg window: device_feature\[63:32\]=[0-9]*[13579]\$" /tmp/pci.out
check "the guest sees vda and vdb" grep -qF "block devices: vda vdb" /tmp/pci.out
check "the guest reads the host's pattern" grep -qF "vda starts with: LIBVMM-HOST-WROTE-THIS!!" /tmp/pci.out
check "vdb is read-only in the guest" grep -qF "vdb read-only flag: 1" /tmp/pci.out
check "writing vdb fails in the guest" grep -qF "vdb write refused" /tmp/pci.out
check "/dev/hwrng reads 64 KiB" grep -qF "hwrng 64 KiB: 65536 bytes" /tmp/pci.out
check "the guest's write to vda is in the image" \
  sh -c 'dd if=/tmp/vda.img bs=512 skip=8 count=1 2>/dev/null | grep -qF guest-wrote-this-sector'
check "virtio-net is 1af4:1041 with MSI-X" \
  grep -qE "pci 0000:00:0[1-5].0 0x1af4:0x1041 driver=virtio-pci msix_vectors=[1-9]" /tmp/pci.out
check "eth0 over virtio-pci pings the host" grep -qF "ping host ok" /tmp/pci.out
check "1 MiB over TCP from the host, intact" grep -qF "to-guest sha256: $to_guest" /tmp/pci.out
check "vmm logged no guest error" sh -c '! grep -q "warning" /tmp/hvc0.err'

# Devices a program adds in code (Vm::add_virtio_device with a transport).
in_code_boot "console=ttyS0"
check "in code: the disk added with Transport::pci is a virtio-pci function with MSI-X" \
  grep -qE "pci 0000:00:0[1-2].0 0x1af4:0x1042 driver=virtio-pci msix_vectors=[1-9]" /tmp/in_code.out
check "in code: the rng on the board's default transport is a PCI function on x86_64" \
  grep -qE "pci 0000:00:0[1-2].0 0x1af4:0x1044 driver=virtio-pci msix_vectors=[1-9]" /tmp/in_code.out

finish linux_pci /tmp/pci.out /tmp/hvc0.err /tmp/in_code.out /tmp/code.err
EOS
run_payload --timeout 900
