#!/usr/bin/env bash
# riscv64 Linux guests: cross-builds vmm for riscv64, then boots trixie's stock riscv64 kernel
# (the one the emulated host runs) with our initramfs inside the emulated riscv64 KVM host
# (tools/emuhost/emuhost --arch riscv64: an AIA host, whose KVM has its in-kernel AIA), in one
# boot:
#   net and boot facts: 2 harts (SBI HSM), the 16550A console, KVM's AIA chosen by default (the
#               guest's interrupts through the APLIC and IMSICs), virtIO network in a network
#               namespace (ping, 1 MiB over TCP; a second NIC with vhost=on over virtio-pci,
#               its irqfds on MSI-X vectors to the IMSICs), SBI SRST shutdown ending vmm with
#               status 0;
#   console:    --irqchip plic: the initramfs shell on the 16550A both ways through the PLIC vmm
#               emulates, a disk whose I/O thread interrupts through it, a virtio-pci rng on
#               an INTx line of it (the PLIC has no MSIs), a disk served by vmm-device in
#               another process (vhost-user: its call eventfd relayed to the PLIC by vmm's
#               loop); `reboot` (SRST reset) ends vmm with 0; every thread under its seccomp
#               filter;
#   virtio:     block (the guest's write checked from the host after exit), console, rng, all
#               virtio-pci functions whose MSI-X vectors KVM's AIA delivers to the IMSICs;
#               sound: trixie's aplay plays a tone into --sound wav:, whose file is measured
#               (format, length, pitch, pace);
#   in code:    examples/devices_in_code: its disk a virtio-pci function, its rng virtio-mmio;
#   system:     examples/simple/simple-riscv64.system as written (AIA, disk, TAP, rng) checked,
#               then run with its shell on the console: APLIC and IMSIC, vda, eth0, poweroff;
#   faults:     a tiny Image reading unmapped memory (reported), making 64 SBI calls of one
#               extension vmm does not implement (reported once, each answered
#               SBI_ERR_NOT_SUPPORTED) and calls of 40 more (32 extensions reported), then SRST.
# then a second, short boot of a PLIC host (emuhost --irqchip plic, whose KVM has no AIA):
#   --irqchip aia refused in one line; the default falls back to the PLIC vmm emulates.
# Usage: riscv64.sh CROSS_BUILD_DIR
set -euo pipefail
build=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"

cross_build "$build" --arch riscv64 vmm vmm-device devices_in_code

extra=$work/extra
mkdir -p "$extra/tests"
cp "$repo/tests/integration/riscv64/info" "$extra/tests/riscv64info"
cp "$repo/tests/integration/lib/guest-net" "$extra/tests/riscv64net"
# The sound guest: trixie's riscv64 aplay with its library and ALSA's configuration, the tones,
# the script (tests/integration/sound/aplay-tone); wavtool measures the host's WAV file.
alsa=${LIBVMM_CACHE:-$HOME/.cache/libvmm}/riscv64-alsa  # tools/install-deps-riscv64
mkdir -p "$extra/usr/share/alsa" "$extra/sound"
COPY_BINARY_LIBDIRS=$alsa/usr/lib/riscv64-linux-gnu extra_binary "$extra" "$alsa/usr/bin/aplay" bin/aplay
cp -r "$alsa/usr/share/alsa/." "$extra/usr/share/alsa/"
cc -O2 -o "$work/wavtool" "$repo/tests/integration/sound/wavtool.c" -lm
"$work/wavtool" gen "$extra/sound/tone48k.wav" 48000 2 s16 440 2
"$work/wavtool" gen "$extra/sound/blip48k.wav" 48000 2 s16 440 0.01
cp "$repo/tests/integration/sound/aplay-tone" "$extra/tests/sound"
payload_new riscv64 "$build/tools/vmm/vmm" --extra "$extra"
payload_binary "$build/examples/devices_in_code" "$build/tools/vmm-device/vmm-device"
riscv64-linux-gnu-gcc -O2 -static -o "$payload/wavtool" "$repo/tests/integration/sound/wavtool.c" -lm
riscv64-linux-gnu-as "$repo/tests/integration/riscv64/fault.S" -o "$work/fault.o"
riscv64-linux-gnu-objcopy -O binary "$work/fault.o" "$payload/fault.Image"
cp "$repo/examples/simple/simple-riscv64.system" "$payload/simple.system"

payload_script run.sh <<'EOS'
# All of it in a network namespace of its own: the TAP, its address and the web server live
# there, and no traffic leaves it.
[ -n "$IN_TEST_NETNS" ] || IN_TEST_NETNS=1 exec unshare -n "$0"
# 1. Two harts, the 16550A, the PLIC; virtIO network on a TAP made beforehand: the NIC with
#    the MAC given with --net pings the TAP's host side (10.0.0.1) and fetches 1 MiB from the
#    host's web server intact; a second NIC (52:54:00:12:34:57) does the same on tap1
#    (10.0.1.1) with its frames moved by the host kernel's vhost-net (vhost=on, two queue
#    pairs, the control queue served by vmm), a virtio-pci function whose queues' MSI-X vectors
#    the kernel signals through their irqfds (KVM's AIA: to the IMSICs); then SBI SRST shutdown
#    ends vmm.
ip link set lo up
two_nic_boot riscv64net "irqfds to the IMSICs" -v --vcpus 2
cat /tmp/info.out
check "boot: /init ran" grep -qF "LIBVMM-GUEST: init started" /tmp/info.out
check "boot: 2 harts came up (SBI HSM)" grep -qF "smp: Brought up 1 node, 2 CPUs" /tmp/info.out
check "boot: the console is the 16550A" grep -qE "ttyS0 at MMIO 0x10000000 .*is a 16550A" /tmp/info.out
check "aia: vmm chose KVM's in-kernel AIA (the default on this host)" \
  grep -qF "interrupt controller: KVM's AIA" /tmp/info.err
check "aia: the guest's device interrupts go through the APLIC" grep -qE "irqchip: .*APLIC" /tmp/info.out
check "aia: ... which sends them as MSIs" grep -qE "dmesg: riscv-aplic .*forwarded to MSI" /tmp/info.out
check "aia: ... to the harts' IMSICs" grep -qE "dmesg: riscv-imsic: .*per-CPU IDs" /tmp/info.out
check "aia: no PLIC in the guest" sh -c '! grep -qE "irqchip: .*PLIC( |$)" /tmp/info.out'
check "boot: the harts' ISA is KVM's (riscv,isa)" grep -qE "LIBVMM-GUEST: isa: rv64imafdc" /tmp/info.out
check "poweroff: exit status 0" [ "$status" -eq 0 ]
check "poweroff: vmm saw SBI SRST shutdown" grep -qF "guest stopped (power off)" /tmp/info.err

# 2. The PLIC vmm emulates (--irqchip plic on an AIA host), and the 16550A both ways: an
#    interactive shell fed through a FIFO (interrupt-driven input through the PLIC); `reboot`
#    (SBI SRST reset) ends vmm too.
#    A disk too: its I/O thread raises a hart's interrupt through the PLIC (KVM_INTERRUPT on
#    the harts' descriptors only, its filter loaded once the vCPUs exist). And a second disk
#    (vdb) served by vmm-device over vhost-user: the back-end signals its call eventfd, which
#    vmm's event loop reads and turns into a PLIC line (no irqfds without KVM's controller).
dd if=/dev/zero of=/tmp/plic.img bs=1M count=2 2>/dev/null
printf 'PLIC-DISK-PATTERN!' | dd of=/tmp/plic.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/vu.img bs=1M count=1 2>/dev/null
printf 'VHOST-USER-PATTERN!' | dd of=/tmp/vu.img conv=notrunc 2>/dev/null
./vmm-device --socket /tmp/vu.sock --disk /tmp/vu.img --once 2>/tmp/vudev.err &
vudev=$!
wait_for /tmp/vudev.err "serving virtio-blk" 60 $vudev
start console guest --memory 256M --vcpus 2 --irqchip plic --cmdline "console=ttyS0 quiet" \
  --disk /tmp/plic.img --rng transport=pci --vhost-user blk,socket=/tmp/vu.sock
check "console: the shell prompt appeared" wait_for /tmp/console.out "guest# " 240
check "seccomp: every thread of vmm is sandboxed (the default, kill)" sandboxed
send console 'echo marker-$((6*7))'
check "console: input reached the guest and ran" wait_for /tmp/console.out "marker-42" 60
send console 'head -c 18 /dev/vda; echo; echo guest-wrote-plic | dd of=/dev/vda bs=512 seek=8 conv=fsync 2>/dev/null; echo pl""ic-blk-$?'
check "plic: the disk's I/O thread completed the guest's requests" \
  wait_for /tmp/console.out "plic-blk-0" 60
check "plic: ... the guest read the host's pattern" grep -qF "PLIC-DISK-PATTERN!" /tmp/console.out
send console 'head -c 19 /dev/vdb; echo; echo guest-wrote-vhost-user | dd of=/dev/vdb bs=512 seek=8 conv=fsync 2>/dev/null; echo vh""ost-blk-$?'
check "vhost-user: vmm-device completed the guest's requests (interrupts relayed to the PLIC)" \
  wait_for /tmp/console.out "vhost-blk-0" 60
check "vhost-user: ... the guest read vmm-device's image" grep -qF "VHOST-USER-PATTERN!" /tmp/console.out
# (The quotes keep the echoed command line from matching what it prints.)
send console 'echo pl""ic-chk-$(grep -c PLIC /proc/interrupts)-ap""lic-$(grep -c APLIC /proc/interrupts)'
wait_for /tmp/console.out "plic-chk-" 60
check "plic: --irqchip plic: the guest's interrupts go through the PLIC" \
  grep -qE "plic-chk-[1-9][0-9]*-aplic-0" /tmp/console.out
# The rng is a virtio-pci function: no MSIs on the PLIC, so its INTA# is a PLIC source.
send console 'echo pci""-rng-$(head -c 4096 /dev/hwrng | wc -c)-irq-$(cat /sys/bus/pci/devices/0000:00:01.0/irq)-msi-$(ls /sys/bus/pci/devices/0000:00:01.0/msi_irqs 2>/dev/null | wc -l)'
check "plic pci: the guest read 4 KiB from the virtio-pci rng" wait_for /tmp/console.out "pci-rng-4096-" 60
check "plic pci: ... through its INTx line, no MSIs" grep -qE "pci-rng-4096-irq-[1-9][0-9]*-msi-0" /tmp/console.out
check "plic pci: vmm says PCI devices get INTx on the PLIC" \
  grep -qF "PCI: the PLIC has no MSIs, so PCI devices interrupt through INTx lines" /tmp/console.err
send console 'reboot -f'
stop
check "reset: exit status 0 after reboot" [ "$status" -eq 0 ]
check "reset: vmm saw SBI SRST reset" grep -qF "guest stopped (reset)" /tmp/console.err
check "plic: the guest's write is in the image" \
  sh -c 'dd if=/tmp/plic.img bs=512 skip=8 count=1 2>/dev/null | grep -qF guest-wrote-plic'
vustatus=0
wait $vudev || vustatus=$?
cat /tmp/vudev.err
check "vhost-user: vmm-device served vmm and exited 0 when it left (got $vustatus)" \
  sh -c "[ $vustatus -eq 0 ] && grep -qF 'front-end on /tmp/vu.sock: connected' /tmp/vudev.err"
check "vhost-user: the guest's write is in vmm-device's image" \
  sh -c 'dd if=/tmp/vu.img bs=512 skip=8 count=1 2>/dev/null | grep -qF guest-wrote-vhost-user'

# 3. virtIO block, console and rng over PCI (pci-host-ecam-generic), with the kernel's module
#    drivers loaded by /init: their MSI-X vectors are MSIs that KVM's AIA delivers to the harts'
#    IMSIC files (GSI routes and irqfds). virtio-mmio devices are in steps 1, 2 and 4.
dd if=/dev/zero of=/tmp/vda.img bs=1M count=4 2>/dev/null
printf 'LIBVMM-HOST-WROTE-THIS!!' | dd of=/tmp/vda.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/vdb.img bs=1M count=1 2>/dev/null
start hvc0 guest -v --memory 256M --vcpus 2 --cmdline "console=ttyS0 quiet libvmm.test=pci" \
  --disk /tmp/vda.img,transport=pci --disk /tmp/vdb.img,readonly,transport=pci \
  --console stdio,transport=pci --rng transport=pci --serial file:/tmp/virtio.out
check "virtio: hvc0 output reached vmm's stdout" wait_for /tmp/hvc0.out "LIBVMM-GUEST: hello over hvc0" 240
send hvc0 "ping-from-host"
check "virtio: host input reached the guest over hvc0" wait_for /tmp/hvc0.out "hvc0 got: ping-from-host" 60
stop
check "virtio: exit status 0" [ "$status" -eq 0 ]
check "virtio: virtio_rng is the guest's hwrng" grep -qF "hwrng: virtio_rng.0" /tmp/virtio.out
check "virtio: /dev/hwrng gives random bytes" grep -qF "hwrng gives random bytes" /tmp/virtio.out
check "virtio: /dev/hwrng reads 64 KiB" grep -qF "hwrng 64 KiB: 65536 bytes" /tmp/virtio.out
check "virtio: the guest sees vda and vdb" grep -qF "block devices: vda vdb" /tmp/virtio.out
check "virtio: the guest reads the host's pattern" grep -qF "vda starts with: LIBVMM-HOST-WROTE-THIS!!" /tmp/virtio.out
check "virtio: vdb is read-only in the guest" grep -qF "vdb write refused" /tmp/virtio.out
check "virtio: the guest's write is in the image" \
  sh -c 'dd if=/tmp/vda.img bs=512 skip=8 count=1 2>/dev/null | grep -qF guest-wrote-this-sector'
check "pci: the guest found the host bridge at 00:00.0" grep -qF "pci 0000:00:00.0 0x1b36:0x0008" /tmp/virtio.out
check "pci: vda and vdb are virtio-pci functions (1af4:1042) with MSI-X vectors" \
  sh -c 'grep -qE "pci 0000:00:01.0 0x1af4:0x1042 driver=virtio-pci msix_vectors=[1-9]" /tmp/virtio.out &&
    grep -qE "pci 0000:00:02.0 0x1af4:0x1042 driver=virtio-pci msix_vectors=[1-9]" /tmp/virtio.out'
check "pci: the console is a virtio-pci function (1af4:1043) with MSI-X vectors" \
  grep -qE "pci 0000:00:03.0 0x1af4:0x1043 driver=virtio-pci msix_vectors=[1-9]" /tmp/virtio.out
check "pci: the rng is a virtio-pci function (1af4:1044) with MSI-X vectors" \
  grep -qE "pci 0000:00:04.0 0x1af4:0x1044 driver=virtio-pci msix_vectors=[1-9]" /tmp/virtio.out
check "pci: their MSI-X vectors fired (through the IMSICs)" grep -qE "MSI-X interrupts taken: [1-9]" /tmp/virtio.out
check "pci: vmm routes them to the harts' IMSIC files" grep -qF "PCI: MSIs to the harts' IMSIC files" /tmp/hvc0.err

# 3b. virtio-snd (trixie's virtio_snd module): the guest's aplay plays the 2 s 440 Hz tone
#    through --sound wav:, measured in the host's file (payload.sh's tone_checks).
boot sound "quiet libvmm.test=sound" --sound wav:/tmp/riscv64.wav
check "sound: exit status 0 (got $status)" [ "$status" -eq 0 ]
tone_checks /tmp/riscv64.wav /tmp/sound.out /tmp/sound.err

# 3c. Devices a program adds in code (examples/devices_in_code, on libvmm::Vm): the disk with
#    Transport::pci a virtio-pci function (MSI-X vectors to the IMSICs), the rng on the board's
#    default transport, virtio-mmio on RISC-V.
in_code_boot "console=ttyS0 quiet"
check "in code: the disk added with Transport::pci is a virtio-pci function with MSI-X" \
  grep -qE "pci 0000:00:01.0 0x1af4:0x1042 driver=virtio-pci msix_vectors=[1-9]" /tmp/in_code.out
check "in code: the rng on the board's default transport is virtio-mmio on RISC-V" \
  sh -c '! grep -qF "0x1af4:0x1044" /tmp/in_code.out && grep -qF "(virtio-mmio)" /tmp/code.err'

# 4. The example system as written (KVM's AIA, 2 harts, its disk, the TAP of step 1, rng):
#    checked, then run with its shell on the console (stdio), powered off from there.
export LIBVMM_GUEST=$PWD
cp /tmp/vdb.img vda.img
./vmm check simple.system >/tmp/check.out 2>&1
check "system: vmm check accepts the example" [ $? -eq 0 ]
check "system: ... RAM at 0x8000_0000" \
  grep -qF "RAM      [0x0080000000, 0x0090000000) 'guest_ram' rwx" /tmp/check.out
check "system: ... KVM's AIA" grep -qF "irqchip  aia (KVM's APLIC + IMSIC)" /tmp/check.out
start system ./vmm run simple.system
check "system: the shell prompt appeared" wait_for /tmp/system.out "guest# " 300
send system 'echo sys-ap""lic-$(grep -c APLIC /proc/interrupts)-plic-$(grep -c " PLIC" /proc/interrupts)-imsic-$(dmesg | grep -c riscv-imsic)-$(ls /sys/block | tr "\n" _)-$(cat /sys/class/net/eth0/address)'
check "system: the guest's interrupts go through the APLIC and IMSICs" \
  wait_for /tmp/system.out "sys-aplic-" 60
check "system: ... (APLIC lines, no PLIC, IMSIC)" grep -qE "sys-aplic-[1-9][0-9]*-plic-0-imsic-[1-9]" /tmp/system.out
check "system: ... its disk and the TAP's network card" \
  grep -qE "sys-aplic-.*-vda_-[0-9a-f]{2}(:[0-9a-f]{2}){5}" /tmp/system.out
send system 'poweroff -f'
stop
check "system: 2 harts came up" grep -qF "smp: Brought up 1 node, 2 CPUs" /tmp/system.out
check "system: exit status 0 after SBI SRST shutdown" [ "$status" -eq 0 ]

# 5. Faults and SBI: an unmapped read is reported (all-ones) and the run goes on; an SBI call
#    KVM leaves to vmm is reported once and answered SBI_ERR_NOT_SUPPORTED (else the Image
#    writes to 0x20001000); SRST shutdown: status 0.
./vmm --kernel fault.Image --memory 64M </dev/null >/tmp/fault.out 2>/tmp/fault.err
status=$?
check "faults: unmapped read reported" \
  grep -qF "guest fault: vCPU 0 read 4 bytes at guest-physical 0x20000000" /tmp/fault.err
check "faults: the unimplemented SBI call reported" \
  grep -qF "the guest called SBI extension 0x8000000 function 0" /tmp/fault.err
check "faults: ... and answered SBI_ERR_NOT_SUPPORTED" sh -c '! grep -qF 0x20001000 /tmp/fault.err'
check "faults: 64 calls of one extension reported once" \
  [ "$(grep -cF "SBI extension 0x8000000 " /tmp/fault.err)" -eq 1 ]
check "faults: 41 extensions called, 32 reported, the last said so" \
  sh -c '[ "$(grep -c "which vmm does not implement" /tmp/fault.err)" -eq 32 ] &&
         [ "$(grep -c "this is the last extension reported" /tmp/fault.err)" -eq 1 ]'
check "faults: exit status 0 after SRST" [ "$status" -eq 0 ]
finish riscv64 /tmp/in_code.out /tmp/code.err /tmp/tone.guest /tmp/sound.err /tmp/info.out /tmp/info.err /tmp/console.out /tmp/console.err /tmp/virtio.out \
  /tmp/hvc0.out /tmp/hvc0.err /tmp/check.out /tmp/system.out /tmp/system.err /tmp/fault.err
EOS

# The PLIC host: its KVM has no AIA. The tiny fault Image is enough to see the choice (it makes
# an SBI call vmm reports, then SRST shutdown).
payload_script plic.sh <<'EOS'
./vmm --kernel fault.Image --irqchip aia --memory 64M </dev/null >/tmp/aia.out 2>/tmp/aia.err
status=$?
check "no aia: --irqchip aia refused with status 2" [ "$status" -eq 2 ]
check "no aia: ... in one line naming the flag and the host's KVM" sh -c \
  '[ "$(wc -l </tmp/aia.err)" -eq 1 ] && grep -qF -- "--irqchip aia: this host'"'"'s KVM has no in-kernel AIA" /tmp/aia.err'
./vmm -v --kernel fault.Image --memory 64M </dev/null >/tmp/auto.out 2>/tmp/auto.err
status=$?
check "no aia: the default falls back to the PLIC vmm emulates" \
  grep -qF "interrupt controller: PLIC emulated by vmm (63 sources, 1 contexts) (this host's KVM has no AIA)" /tmp/auto.err
check "no aia: ... and the guest runs to its SRST shutdown" [ "$status" -eq 0 ]
finish riscv64-plic-host /tmp/aia.err /tmp/auto.err
EOS
started=$(date +%s)
status=0
run_payload --timeout 1500 || status=$?
echo "$prog: the emulated riscv64 AIA host took $(($(date +%s) - started)) s"
started=$(date +%s)
mv "$payload/plic.sh" "$payload/run.sh"
rm -f "$payload/Image" "$payload/initramfs.cpio.gz"  # a smaller payload boots faster
plic_status=0
run_payload --irqchip plic --timeout 300 || plic_status=$?
echo "$prog: the emulated riscv64 PLIC host took $(($(date +%s) - started)) s"
[ "$status" -eq 0 ] && [ "$plic_status" -eq 0 ]
