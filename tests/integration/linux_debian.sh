#!/usr/bin/env bash
# Debian guests under vmm, in the emulated x86_64 KVM host (issue 14).
#   1. Debian's stock amd64 kernel (the emulated host's own: virtio_mmio as a module, without
#      CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES) with a busybox initramfs holding its virtio modules
#      (images/build-initramfs --debian-kernel) finds the disk, network, console and entropy
#      devices (transport=mmio: LNRO0005 nodes) through the DSDT alone, and a second disk over
#      virtio-pci, nothing about virtio on its command line; COM1 is the
#      PNP0501 node's; the guest's clock is the host's (CMOS RTC); eth0 pings the host end of
#      its TAP in a network namespace this test creates.
#   2. Graceful shutdown: SIGTERM to vmm presses the ACPI power button; a guest that powers off
#      on the power key (as systemd-logind does) ends vmm with status 0; a guest that ignores
#      it is stopped after --shutdown-timeout with a message. Ctrl-A s on vmm's terminal (a pty
#      from script(1)) presses the power button as the first signal does; a second request
#      (SIGTERM) then stops at once.
# Usage: linux_debian.sh VMM
set -euo pipefail
vmm=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
payload_new x86_64  # the guests here boot Debian's kernel, not images/build-kernel's
payload_binary "$vmm"
cp "$("$emuhost" --arch x86_64 --print-kernel)" "$payload/debian-vmlinuz"
cp "$("$repo/images/build-initramfs" --debian-kernel x86_64)" "$payload/initramfs-debian.cpio.gz"
payload_binary "$(command -v ip)"  # busybox ip has no netns
payload_binary "$(command -v script)"  # a terminal for vmm's console keys (Ctrl-A s)

payload_script run.sh <<'EOS'
./ip netns add libvmm-debian || { echo "cannot create a network namespace"; exit 1; }
./ip netns exec libvmm-debian ./debian.sh
status=$?
./ip netns delete libvmm-debian
exit $status
EOS
payload_script debian.sh <<'EOS'
field() { sed -n "s/.*LIBVMM-GUEST: $2: //p" "$1" | tr -d '\r' | head -n 1; }
./ip link set lo up
./ip tuntap add tap0 mode tap
./ip addr add 10.0.0.1/24 dev tap0
./ip link set tap0 up
dd if=/dev/zero of=/tmp/vda.img bs=1M count=4 2>/dev/null
printf 'LIBVMM-DISK-DATA' | dd of=/tmp/vda.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/vdb.img bs=1M count=1 2>/dev/null

./vmm --kernel debian-vmlinuz --initrd initramfs-debian.cpio.gz --memory 256M \
  --cmdline "console=ttyS0 quiet libvmm.test=debian_acpi" --disk /tmp/vda.img,transport=mmio --net tap=tap0,transport=mmio \
  --console file:/tmp/hvc0.out,transport=mmio --rng transport=mmio --disk /tmp/vdb.img,transport=pci \
  --serial file:/tmp/acpi.out </dev/null 2>/tmp/acpi.err
status=$?
host_clock=$(date +%s)
check "Debian kernel: vmm exit status 0 (got $status)" [ "$status" -eq 0 ]
check "Debian kernel: the init ran its test" grep -qF "test debian_acpi exit status" /tmp/acpi.out
check "Debian kernel: nothing about virtio on the command line" \
  sh -c "! grep -q 'cmdline: .*\(virtio\|pci=\)' /tmp/acpi.out"
check "Debian kernel: one LNRO0005 ACPI node per device (4)" \
  [ "$(field /tmp/acpi.out 'LNRO0005 nodes')" = 4 ]
ids=$(field /tmp/acpi.out 'virtio device ids')
for id in 0x0001 0x0002 0x0003 0x0004; do
  check "Debian kernel: virtIO device $id bound (ids: $ids)" sh -c "echo '$ids' | grep -q $id"
done
check "Debian kernel: vda reads the host's data" grep -qF "vda starts with: LIBVMM-DISK-DATA" /tmp/acpi.out
check "Debian kernel: hvc0 carries text" grep -qF "hello over hvc0" /tmp/hvc0.out
check "Debian kernel: the hwrng is virtio_rng" grep -qF "hwrng: virtio_rng.0" /tmp/acpi.out
check "Debian kernel: COM1 is the PNP0501 node" grep -qF "PNP0501" /tmp/acpi.out
check "Debian kernel: the PCI host bridge is the DSDT's PNP0A08 node" \
  [ "$(field /tmp/acpi.out 'PNP0A08 nodes')" = 1 ]
check "Debian kernel: ECAM from the MCFG table" \
  sh -c "grep 'LIBVMM-GUEST: MMCONFIG: ' /tmp/acpi.out | grep -qF 'MMCONFIG at [mem 0xe0000000-0xe00fffff] reserved in ACPI motherboard resources'"
check "Debian kernel: virtio_pci binds the PCI disk (1af4:1042) with MSI-X" \
  grep -qE "pci 0000:00:01.0 0x1af4:0x1042 driver=virtio-pci msix_vectors=[1-9]" /tmp/acpi.out
check "Debian kernel: eth0 pings the host end" grep -qF "ping host ok" /tmp/acpi.out
rtc_irq=$(field /tmp/acpi.out 'rtc0 irq')
check "Debian kernel: the CMOS RTC's alarm interrupted on IRQ 8 ($rtc_irq)" \
  sh -c "echo '$rtc_irq' | grep -qE '^ ?8: [1-9][0-9]* .*rtc0'"
# The guest read the clock within its first seconds; the host reads it after vmm exits.
guest_clock=$(field /tmp/acpi.out clock)
echo "guest clock at boot: $guest_clock, host clock after exit: $host_clock"
check "Debian kernel: the guest's clock is the host's (CMOS RTC)" \
  sh -c "[ -n '$guest_clock' ] && [ $((host_clock - ${guest_clock:-0})) -ge 0 ] && [ $((host_clock - ${guest_clock:-0})) -lt 120 ]"

# 2. The power button. Each run: the Debian kernel, waiting in its test, then SIGTERM.
debian() {
  ./vmm --kernel debian-vmlinuz --initrd initramfs-debian.cpio.gz --memory 192M "$@" </dev/null &
  pid=$!
}
# boot_to NAME TEXT ARGS...: boots it (debian ARGS, serial in /tmp/NAME.out, stderr in
# /tmp/NAME.err) until its console shows TEXT. Now and then (twice in CI, once in session 52's
# runs) the guest resets itself before its first console line: a triple fault under the
# emulated host's nested SVM, not reproduced in 17 boots of the same command. Shown, then booted
# once more; the checks are on the second boot.
boot_to() {
  local name=$1 text=$2
  shift 2
  debian "$@" --serial "file:/tmp/$name.out" 2>"/tmp/$name.err"
  wait_for "/tmp/$name.out" "$text" 180 $pid && return 0
  echo "$name: the guest did not reach its test; booting it again. vmm said:"
  cat "/tmp/$name.err"
  await $pid "$name" 120
  debian "$@" --serial "file:/tmp/$name.out" 2>"/tmp/$name.err"
  wait_for "/tmp/$name.out" "$text" 180 $pid
}
boot_to pk "waiting for the power button" --cmdline "console=ttyS0 quiet libvmm.test=powerkey"
kill -TERM $pid
await $pid pk 120
check "power button: the guest saw it (ACPI button driver, KEY_POWER)" \
  grep -qF "power button pressed" /tmp/pk.out
check "power button: vmm says it pressed it" grep -qF "pressed the guest's power button" /tmp/pk.err
check "power button: the guest powered off (ACPI S5), status 0 (got $status)" \
  sh -c "[ $status -eq 0 ] && grep -qF 'the guest powered off (ACPI S5)' /tmp/pk.err"

boot_to idle "LIBVMM-GUEST: idle" --cmdline "console=ttyS0 quiet libvmm.test=idle" \
  --shutdown-timeout 3
sent=$(date +%s)
kill -TERM $pid
await $pid idle 120
took=$(($(date +%s) - sent))
check "ignored power button: stopped after the 3 s timeout (took $took s), status 0 (got $status)" \
  sh -c "[ $status -eq 0 ] && [ $took -ge 3 ] && [ $took -lt 30 ]"
check "ignored power button: vmm says so" grep -qF "did not power off within 3 s" /tmp/idle.err

# On a terminal (script(1): vmm's stdin and stdout are a pty; its own stdin a FIFO we write to),
# the serial console and vmm's messages both in /tmp/twice.out.
rm -f /tmp/twice.in
mkfifo /tmp/twice.in
./script -qfec "./vmm --kernel debian-vmlinuz --initrd initramfs-debian.cpio.gz --memory 192M \
  --cmdline 'console=ttyS0 quiet libvmm.test=idle'" /dev/null <>/tmp/twice.in >/tmp/twice.out 2>&1 &
pid=$!
check "on a terminal: the guest reaches its idle loop" wait_for /tmp/twice.out "LIBVMM-GUEST: idle" 180
sent=$(date +%s)
# Through the FIFO only while script(1) reads it: a write to a FIFO nobody reads would block
# until the emulated host's timeout, and /tmp/twice.out (printed below) would say nothing.
if kill -0 $pid 2>/dev/null; then printf '\001s' >/tmp/twice.in; fi
check "Ctrl-A s: vmm presses the guest's power button" \
  wait_for /tmp/twice.out "Ctrl-A s: pressed the guest's power button" 30
vmm_pid=$(pidof vmm) && kill -TERM "$vmm_pid"
await $pid twice 120
took=$(($(date +%s) - sent))
check "second request (SIGTERM after Ctrl-A s): stops at once (took $took s of the default 30), status 0 (got $status)" \
  sh -c "[ $status -eq 0 ] && [ $took -lt 15 ] && grep -qF 'stopped by signal 15' /tmp/twice.out"

finish linux_debian /tmp/acpi.out /tmp/acpi.err /tmp/hvc0.out /tmp/pk.out /tmp/pk.err /tmp/idle.err /tmp/twice.out
EOS

run_payload
