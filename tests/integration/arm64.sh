#!/usr/bin/env bash
# arm64 Linux guests: cross-builds vmm for arm64, then boots Debian's stock arm64 kernel (the
# one the emulated host runs) with our initramfs inside the emulated arm64 KVM host
# (tools/emuhost/emuhost --arch aarch64) and checks what a user sees:
#   GICv3 host: 2 vCPUs through PSCI, the arch timer, the PL011 console both ways, the vGICv3,
#               PSCI SYSTEM_OFF and SYSTEM_RESET ending vmm with status 0, virtIO block,
#               console and network with the guest's own (module) drivers (a second NIC with
#               vhost=on over virtio-pci, its irqfds on MSI-X vectors through the ITS), a disk, the
#               console and the rng over virtio-pci (pci-host-ecam-generic, MSI-X through the
#               vGICv3 ITS; refused with a user's --dtb), the wall clock at boot from the PL031, the power key (PL061 +
#               gpio-keys) on SIGTERM;
#   GICv2 host: the manual's example system (examples/simple/simple-aarch64.system) checked
#               and booted on its vGICv2, with a virtio-pci disk added (INTx: no ITS); the default --gic picks the vGICv2; Microkit
#               descriptions as written (tests/system/microkit): the manual's form with images
#               from the flags (the initramfs shell on the PL011), the simple form with our DTB
#               and its <dtb_overlay>, the smp form with 4 vCPUs up, --dtb and --dtb-overlay.
#   GICv3 host, VFIO: the host's NVMe controller (QEMU virt's emulated SMMUv3, emuhost --nvme)
#               passed through to a guest whose nvme driver uses it with MSI-X through the
#               ITS: the host's pattern read, 4 MiB written and read back (and found in the
#               image by this machine afterwards), BAR 0 in a memory slot that follows the
#               guest's moves, only the MSI-X table and PBA trapped;
#   GICv3 host, sound: the libvmm arm64 guest kernel (images/build-kernel aarch64: Debian's has
#               no SND_VIRTIO) with Debian's arm64 aplay plays a 2 s 440 Hz stereo S16_LE
#               48 kHz tone through --sound wav:, checked as linux.sound does on x86_64.
#   GICv3 host, virtio-fs: Debian's arm64 virtiofsd (tools/install-deps-arm64) shares a folder
#               over vhost-user (--fs) with a guest whose Debian kernel mounts it (fuse and
#               virtiofs modules) as a virtio-pci function: the checks of linux.vhost
#               (virtiofs_checks), its 64 MiB
#               copy too.
# Usage: arm64.sh CROSS_BUILD_DIR [gicv3|gicv2]...   (both by default)
set -euo pipefail
build=$1
shift
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(gicv3 gicv2)
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"

cross_build "$build" vmm devices_in_code

extra=$work/extra
mkdir -p "$extra/tests"
cp "$repo/tests/integration/arm64/info" "$extra/tests/arm64info"
cp "$repo/tests/integration/lib/guest-net" "$extra/tests/arm64net"
payload_new aarch64 "$build/tools/vmm/vmm" --extra "$extra"
payload_binary "$build/examples/devices_in_code"
aarch64-linux-gnu-as "$repo/tests/integration/arm64/fault.S" -o "$work/fault.o"
aarch64-linux-gnu-objcopy -O binary "$work/fault.o" "$payload/fault.Image"
dtc -q -I dts -O dtb -o "$payload/user.dtb" "$repo/tests/integration/arm64/user.dts"
cp "$repo/examples/simple/simple-aarch64.system" "$repo/examples/simple/simple.system" "$payload/"
mkdir -p "$payload/microkit"
cp "$repo"/tests/system/microkit/{manual,simple,smp}.system "$payload/microkit/"
dtc -q -@ -I dts -O dtb -o "$payload/microkit/linux.dtb" "$repo/tests/system/microkit/linux.dts"
dtc -q -@ -I dts -O dtb -o "$payload/microkit/overlay.dtbo" "$repo/tests/system/microkit/overlay.dts"

# The sound guest of gicv3.sh (6.): its own kernel and an initramfs with Debian's arm64 aplay,
# its libraries, ALSA's configuration (data, the same on every architecture) and the tones;
# wavtool (tests/integration/sound) measures the host's WAV file in the emulated host.
if [[ " ${suites[*]} " == *" gicv3 "* ]]; then
  alsa=${LIBVMM_CACHE:-$HOME/.cache/libvmm}/arm64-alsa  # tools/install-deps-arm64
  sound=$work/sound-extra
  mkdir -p "$sound/tests" "$sound/usr/share/alsa" "$sound/sound" "$payload/sound"
  COPY_BINARY_LIBDIRS=$alsa/usr/lib/aarch64-linux-gnu extra_binary "$sound" "$alsa/usr/bin/aplay" bin/aplay
  cp /usr/share/alsa/alsa.conf "$sound/usr/share/alsa/"
  cp -r /usr/share/alsa/cards /usr/share/alsa/pcm "$sound/usr/share/alsa/"
  cc -O2 -o "$work/wavtool" "$repo/tests/integration/sound/wavtool.c" -lm
  "$work/wavtool" gen "$sound/sound/tone48k.wav" 48000 2 s16 440 2
  "$work/wavtool" gen "$sound/sound/blip48k.wav" 48000 2 s16 440 0.01
  cp "$repo/tests/integration/sound/aplay-tone" "$sound/tests/sound"
  aarch64-linux-gnu-gcc -O2 -static -o "$payload/wavtool" "$repo/tests/integration/sound/wavtool.c" -lm
  cp "$("$repo/images/build-kernel" aarch64)" "$payload/sound/Image"
  cp "$("$repo/images/build-initramfs" --extra "$sound" aarch64)" "$payload/sound/initramfs.cpio.gz"
fi

# The virtio-fs back-end of gicv3.sh (8.): Debian's arm64 virtiofsd with its libraries.
if [[ " ${suites[*]} " == *" gicv3 "* ]]; then
  vfsd=${LIBVMM_CACHE:-$HOME/.cache/libvmm}/arm64-virtiofsd  # tools/install-deps-arm64
  COPY_BINARY_LIBDIRS=$vfsd/usr/lib/aarch64-linux-gnu:$vfsd/lib/aarch64-linux-gnu \
    payload_binary "$vfsd/usr/lib/qemu/virtiofsd"
fi

payload_script gicv3.sh <<'EOS'
# All of it in a network namespace of its own: the TAP, its address and the web server live
# there, and no traffic leaves it.
[ -n "$IN_TEST_NETNS" ] || IN_TEST_NETNS=1 exec unshare -n "$0"
# 1. Two vCPUs, the timer, the PL011, the vGICv3; virtIO network on a TAP made beforehand:
#    the NIC with the MAC given with --net pings the TAP's host side (10.0.0.1) and fetches
#    1 MiB from the host's web server intact; a second NIC (52:54:00:12:34:57) does the same on
#    tap1 (10.0.1.1) with its frames moved by the host kernel's vhost-net (vhost=on, two queue
#    pairs, the control queue served by vmm) as a virtio-pci function, whose queues' MSI-X
#    vectors the kernel signals through their irqfds (the vGICv3 ITS); then PSCI SYSTEM_OFF
#    ends vmm.
ip link set lo up
two_nic_boot arm64net "irqfds through the ITS" --vcpus 2 -v
check "boot: /init ran" grep -qF "LIBVMM-GUEST: init started" /tmp/info.out
check "boot: 2 vCPUs came up (PSCI CPU_ON)" grep -qF "smp: Brought up 1 node, 2 CPUs" /tmp/info.out
check "boot: the arch timer is the clocksource" grep -qF "Switched to clocksource arch_sys_counter" /tmp/info.out
check "boot: the console is a PL011" grep -qE "ttyAMA0 at MMIO 0x9000000 .*is a PL011" /tmp/info.out
check "boot: the guest runs on a GICv3 (default --gic)" grep -qF "irqchip: GICv3" /tmp/info.out
check "poweroff: exit status 0" [ "$status" -eq 0 ]
check "poweroff: vmm saw PSCI SYSTEM_OFF" grep -qF "guest stopped (power off)" /tmp/info.err

# 2. The PL011 both ways: an interactive shell fed through a FIFO (interrupt-driven input);
#    `reboot` (PSCI SYSTEM_RESET) ends vmm too.
start console guest --memory 256M --gic v3 --cmdline "console=ttyAMA0 quiet"
check "console: the shell prompt appeared" wait_for /tmp/console.out "guest# " 120
check "seccomp: every thread of vmm is sandboxed (the default, kill)" sandboxed
send console 'echo marker-$((6*7))'
check "console: input reached the guest and ran" wait_for /tmp/console.out "marker-42" 60
send console 'reboot -f'
stop
check "reset: exit status 0 after reboot" [ "$status" -eq 0 ]
check "reset: vmm saw PSCI SYSTEM_RESET" grep -qF "guest stopped (reset)" /tmp/console.err

# 3. virtIO block and console, with Debian's module drivers loaded by /init; vdb, the console
#    and the rng are virtio-pci functions (pci-host-ecam-generic), their MSI-X vectors
#    translated by the vGICv3 ITS.
dd if=/dev/zero of=/tmp/vda.img bs=1M count=4 2>/dev/null
printf 'LIBVMM-HOST-WROTE-THIS!!' | dd of=/tmp/vda.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/vdb.img bs=1M count=1 2>/dev/null
start hvc0 guest --memory 256M --cmdline "console=ttyAMA0 quiet libvmm.test=pci" \
  --disk /tmp/vda.img --disk /tmp/vdb.img,readonly,transport=pci --console stdio,transport=pci \
  --rng transport=pci --serial file:/tmp/virtio.out
check "virtio: hvc0 output reached vmm's stdout" wait_for /tmp/hvc0.out "LIBVMM-GUEST: hello over hvc0" 120
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
check "pci: the guest found the host bridge at 00:00.0" grep -qF "pci 0000:00:00.0 0x1b36:0x0008" /tmp/virtio.out
check "pci: vdb is a virtio-pci function (1af4:1042) with MSI-X vectors" \
  grep -qE "pci 0000:00:01.0 0x1af4:0x1042 driver=virtio-pci msix_vectors=[1-9]" /tmp/virtio.out
check "pci: the console is a virtio-pci function (1af4:1043) with MSI-X vectors" \
  grep -qE "pci 0000:00:02.0 0x1af4:0x1043 driver=virtio-pci msix_vectors=[1-9]" /tmp/virtio.out
check "pci: the rng is a virtio-pci function (1af4:1044) with MSI-X vectors" \
  grep -qE "pci 0000:00:03.0 0x1af4:0x1044 driver=virtio-pci msix_vectors=[1-9]" /tmp/virtio.out
check "pci: their MSI-X vectors fired (through the ITS)" grep -qE "MSI-X interrupts taken: [1-9]" /tmp/virtio.out
check "pci: the ITS is the guest's MSI controller" grep -qF "MSI controller: ITS-MSI" /tmp/virtio.out
check "virtio: the guest's write is in the image" \
  sh -c 'dd if=/tmp/vda.img bs=512 skip=8 count=1 2>/dev/null | grep -qF guest-wrote-this-sector'
check "virtio: the PL031 is the guest's rtc0" grep -q "rtc0: .*pl031" /tmp/virtio.out
guest_clock=$(sed -n 's/.*LIBVMM-GUEST: clock: \([0-9]*\).*/\1/p' /tmp/virtio.out | head -n 1)
host_clock=$(date +%s)
echo "guest clock at boot: $guest_clock, host clock after the run: $host_clock"
check "virtio: the guest's clock at boot is the host's (PL031)" \
  sh -c "[ -n '$guest_clock' ] && [ $((host_clock - ${guest_clock:-0})) -ge 0 ] && [ $((host_clock - ${guest_clock:-0})) -lt 300 ]"

# 3b. The power key (as QEMU virt's): SIGTERM to vmm presses line 3 of the PL061, which the
#    generated tree's gpio-keys node reports as KEY_POWER; the guest powers off on it (as
#    systemd-logind does): PSCI SYSTEM_OFF, status 0.
./vmm --kernel "$kernel" --initrd initramfs.cpio.gz --memory 256M \
  --cmdline "console=ttyAMA0 quiet libvmm.test=powerkey" </dev/null >/tmp/pk.out 2>/tmp/pk.err &
pid=$!
wait_for /tmp/pk.out "waiting for the power button" 180 $pid
kill -TERM $pid
stop
check "power key: the guest has the gpio-keys input device" \
  grep -q "power button input: /dev/input/event" /tmp/pk.out
check "power key: vmm pressed it on SIGTERM" grep -qF "pressed the guest's power button" /tmp/pk.err
check "power key: the guest saw KEY_POWER" grep -qF "power button pressed" /tmp/pk.out
check "power key: the guest powered off, status 0 (got $status)" \
  sh -c "[ $status -eq 0 ] && grep -qF 'guest stopped (power off)' /tmp/pk.err"

# 3c. Devices a program adds in code (examples/devices_in_code, on libvmm::Vm): the disk with
#    Transport::pci a virtio-pci function (MSI-X through the ITS), the rng on the board's default
#    transport, virtio-mmio on AArch64.
in_code_boot "console=ttyAMA0 quiet"
check "in code: the disk added with Transport::pci is a virtio-pci function with MSI-X" \
  grep -qE "pci 0000:00:01.0 0x1af4:0x1042 driver=virtio-pci msix_vectors=[1-9]" /tmp/in_code.out
check "in code: the rng on the board's default transport is virtio-mmio on AArch64" \
  sh -c '! grep -qF "0x1af4:0x1044" /tmp/in_code.out && grep -qF "(virtio-mmio)" /tmp/code.err'

# 4. A user's device tree (--dtb): vmm patches in memory, cpus, chosen and the virtIO disk.
boot dtb "quiet libvmm.test=arm64info" --vcpus 2 --dtb user.dtb --disk /tmp/vdb.img,readonly
check "dtb: the guest booted with the user's tree" grep -qF "model: libvmm user dtb test board" /tmp/dtb.out
check "dtb: 2 vCPUs patched in" grep -qF "smp: Brought up 1 node, 2 CPUs" /tmp/dtb.out
check "dtb: the virtIO disk patched in" grep -qF "block devices: vda" /tmp/dtb.out
check "dtb: exit status 0" [ "$status" -eq 0 ]
./vmm --kernel "$kernel" --memory 64M --dtb user.dtb --disk /tmp/vdb.img,readonly,transport=pci \
  </dev/null >/dev/null 2>/tmp/dtb-pci.err
status=$?
check "dtb: with a PCI device it is refused, status 2 (got $status)" [ "$status" -eq 2 ]
check "dtb: ... saying PCI needs the generated tree" \
  grep -qF "PCI devices (transport=pci, --vfio) need the generated device tree" /tmp/dtb-pci.err

# 5. Faults: a read where nothing is mapped (reported, all-ones) and a load pair from the PL011
#    (no valid syndrome: reported, the VM stops with status 1).
./vmm --kernel fault.Image --memory 64M </dev/null >/tmp/fault.out 2>/tmp/fault.err
status=$?
check "faults: unmapped read reported" \
  grep -qF "guest fault: vCPU 0 read 4 bytes at guest-physical 0xc000000" /tmp/fault.err
check "faults: undecodable load pair reported" grep -qE \
  "vCPU 0 read at guest-physical 0x9000000 .*instruction KVM cannot decode" /tmp/fault.err
check "faults: ... naming the device" grep -qF "device 'pl011' at [0x9000000, 0x9001000)" /tmp/fault.err
check "faults: exit status 1" [ "$status" -eq 1 ]
# 6. virtio-snd: the libvmm arm64 kernel's virtio-snd driver and Debian's arm64 aplay play the
#    2 s 440 Hz stereo S16_LE 48 kHz tone through --sound wav: the file has that format, 2 s
#    within one period, 440 Hz within 1 %; aplay took 1.6-4 s beyond its start-up (paced).
started=$(date +%s)
./vmm --kernel sound/Image --initrd sound/initramfs.cpio.gz --memory 256M \
  --cmdline "console=ttyAMA0 quiet libvmm.test=sound" --sound wav:/tmp/arm64.wav \
  </dev/null >/tmp/sound.out 2>/tmp/sound.err
status=$?
echo "boot sound took $(($(date +%s) - started)) s"
check "sound: exit status 0 (got $status)" [ "$status" -eq 0 ]
tone_checks /tmp/arm64.wav /tmp/sound.out /tmp/sound.err

# 7. VFIO: the emulated host's NVMe controller, behind QEMU virt's SMMUv3, to vfio-pci and into
#    a guest (images/tests/nvme, as linux.vfio does on x86_64).
nvme=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/class")" = 0x010802 ] && nvme=$(basename "$d")
done
# (Arm's SMMU driver puts a device in its IOMMU group when a driver binds it.)
vfio_bind "$nvme"
group=$(basename "$(readlink "/sys/bus/pci/devices/$nvme/iommu_group")")
check "vfio: the host's NVMe controller ($nvme), bound to vfio-pci, is in IOMMU group $group (SMMUv3)" \
  [ -c "/dev/vfio/$group" ]
started=$(date +%s)
./vmm -v --kernel "$kernel" --initrd initramfs.cpio.gz --memory 256M \
  --cmdline "console=ttyAMA0 quiet libvmm.test=nvme" --vfio "$nvme" </dev/null >/tmp/nvme.out 2>/tmp/nvme.err
status=$?
echo "boot vfio took $(($(date +%s) - started)) s"
check "vfio: exit status 0 (got $status)" [ "$status" -eq 0 ]
check "vfio: the guest's nvme driver has the controller with MSI-X" \
  grep -qE "pci 0000:00:01.0 0x010802 0x1b36:0x0010 driver=nvme msix_vectors=[1-9]" /tmp/nvme.out
check "vfio: the guest reads the host's pattern" grep -qF "nvme0n1 starts with: LIBVMM-HOST-NVME-PATTERN" /tmp/nvme.out
written=$(sed -n 's/.*LIBVMM-GUEST: pattern md5 //p' /tmp/nvme.out)
read_back=$(sed -n 's/.*LIBVMM-GUEST: read back md5 //p' /tmp/nvme.out)
check "vfio: the guest reads back the 4 MiB it wrote ($written)" [ -n "$written" -a "$written" = "$read_back" ]
check "vfio: the controller's MSI-X vectors fired (through the ITS)" grep -qE "nvme MSI-X interrupts taken: [1-9]" /tmp/nvme.out
check "vfio: every MSI-X vector is a KVM irqfd" \
  grep -qE "vfio $nvme: MSI-X vectors 0-[0-9]+ signalled as KVM irqfds, 0 through the event loop" /tmp/nvme.err
check "vfio: BAR 0 followed the guest's moves as a memory slot" \
  grep -qE "vfio $nvme: BAR 0 \[0x0, 0x2000\) in the guest at \[0x8000100000," /tmp/nvme.err
counts=$(vfio_slow_paths "$nvme" /tmp/nvme.err)
echo "vfio: trapped BAR accesses, of them MSI-X, interrupts through the loop: $counts"
check "vfio: only the MSI-X table and PBA trapped, no interrupt through the loop ($counts)" \
  sh -c "set -- $counts; [ -n \"\$1\" ] && [ \"\$1\" = \"\$2\" ] && [ \"\$3\" = 0 ]"
check "vfio: the device was reset when vmm let it go" grep -qF "vfio $nvme: reset, back to the host" /tmp/nvme.err
echo "GUEST-WROTE-MD5=$written"

# 8. virtio-fs: a folder shared by Debian's arm64 virtiofsd over vhost-user, the device a
#    virtio-pci function whose MSI-X vectors virtiofsd signals itself (irqfds through the ITS).
FS_OPTIONS=,transport=pci virtiofs_checks 64 -v || true
check "virtio-fs: a virtio-pci function" grep -qE "at PCI 00:[0-9a-f]+\.0" /tmp/fs.err
check "virtio-fs: virtiofsd signals the queues' MSI-X vectors itself" \
  grep -qE "queue [0-9]+ interrupts go straight to MSI-X vector" /tmp/fs.err

finish arm64-gicv3 /tmp/in_code.out /tmp/code.err /tmp/fs.out /tmp/fs.err /tmp/vfsd.err /tmp/nvme.out /tmp/nvme.err /tmp/dtb-pci.err /tmp/pk.out /tmp/pk.err /tmp/tone.guest /tmp/sound.err /tmp/fault.err /tmp/dtb.out /tmp/dtb.err /tmp/info.out /tmp/info.err /tmp/console.out /tmp/console.err \
  /tmp/virtio.out /tmp/hvc0.err /tmp/hvc0.out
EOS

payload_script gicv2.sh <<'EOS'
# 1. The manual's example system: `vmm check` prints its AArch64 layout; the x86_64 example
#    and an INTID below 32 are explained.
export LIBVMM_GUEST=$PWD
./vmm check simple-aarch64.system >/tmp/check.out 2>&1
check "system: vmm check accepts the example" [ $? -eq 0 ]
cat /tmp/check.out
check "system: ... RAM at 0x4000_0000" \
  grep -qF "RAM      [0x0040000000, 0x0050000000) 'guest_ram' rwx" /tmp/check.out
check "system: ... 2 aarch64 vCPUs" grep -qF "virtual machine 'linux' (id 0): 2 aarch64 vCPUs" /tmp/check.out
check "system: ... the PL011 on stdio" grep -qF "serial   PL011 (ttyAMA0) -> stdio" /tmp/check.out
check "system: ... GICv2" grep -qF "gic      v2" /tmp/check.out
./vmm check simple.system >/tmp/x86.out 2>&1
check "system: RAM at 0 (the x86_64 example) is refused" \
  grep -qF "its RAM 'guest_ram' must be mapped at 0x40000000 on aarch64" /tmp/x86.out
sed 's|<gic version="2" />|<irq irq="17" fifo="/tmp/irq.fifo" />|' simple-aarch64.system >/tmp/spi.system
./vmm check /tmp/spi.system >/tmp/spi.out 2>&1
check "system: an INTID below 32 gets the SPI hint, status 2" [ $? -eq 2 ]
check "system: ... naming the INTID to use" grep -qF "IRQ 17 is not a shared interrupt (SPI)" /tmp/spi.out
check "system: ... and the device-tree number" grep -qF "<0 17 4> is irq=\"49\"" /tmp/spi.out

# 2. `vmm run` boots it (with the test's command line): 2 vCPUs on the vGICv2 it names.
#    With a virtio-pci disk: a GICv2 has no ITS, so it interrupts through INTx (interrupt-map).
dd if=/dev/zero of=/tmp/pci.img bs=1M count=1 2>/dev/null
printf 'LIBVMM-HOST-WROTE-THIS!!' | dd of=/tmp/pci.img conv=notrunc 2>/dev/null
sed -e 's|<cmdline>console=ttyAMA0</cmdline>|<cmdline>console=ttyAMA0 quiet libvmm.test=arm64info</cmdline>|' \
  -e 's|<gic version="2" />|<gic version="2" /><virtio_block path="/tmp/pci.img" transport="pci" />|' \
  simple-aarch64.system >/tmp/simple.system
./vmm check /tmp/simple.system >/tmp/pci-check.out 2>&1
check "pci: vmm check says the disk interrupts through INTx on this GICv2" \
  grep -qF "virtio   PCI 00:01.0 INTx on IRQ 48 (a GICv2 has no ITS) virtio-blk vda" /tmp/pci-check.out
started=$(date +%s)
./vmm run /tmp/simple.system </dev/null >/tmp/info.out 2>/tmp/info.err
status=$?
echo "vmm run took $(($(date +%s) - started)) s"
check "system: 2 vCPUs came up" grep -qF "smp: Brought up 1 node, 2 CPUs" /tmp/info.out
check "system: the guest runs on a GICv2" grep -qF "irqchip: GIC-0" /tmp/info.out
check "system: exit status 0 after PSCI SYSTEM_OFF" [ "$status" -eq 0 ]
check "pci: vmm says PCI devices get INTx on a GICv2" grep -qF "a GICv2 has no ITS" /tmp/info.err
check "pci: the disk is a virtio-pci function without MSIs" \
  grep -qF "pci 0000:00:01.0 0x1af4:0x1042 driver=virtio-pci msi_vectors=0" /tmp/info.out
check "pci: the guest reads the host's pattern from it" grep -qF "vda starts with: LIBVMM-HOST-WROTE-THIS!!" /tmp/info.out
check "pci: its INTx interrupts arrived" grep -qE "virtio INTx interrupts: [1-9]" /tmp/info.out

# 3. The default --gic on this host is the vGICv2 (a tiny kernel suffices to see it chosen).
./vmm -v --kernel fault.Image --memory 64M </dev/null >/dev/null 2>/tmp/default.err
check "gicv2: the default --gic is the vGICv2 on this host" grep -qF "vGICv2, undecodable" /tmp/default.err
./vmm --kernel Image --gic v3 --memory 256M >/tmp/v3.out 2>/tmp/v3.err
status=$?
check "gicv2: --gic v3 is refused with status 2" [ "$status" -eq 2 ]
check "gicv2: ... naming the flag" grep -qF -- "--gic v3: this host's KVM offers no vGICv3" /tmp/v3.err
./vmm --kernel fault.Image --memory 64M --vcpus 9 </dev/null >/dev/null 2>/tmp/v2max.err
status=$?
# (KVM on a GICv2 host allows 8 vCPUs and says so first; a host with both GICs refuses
# --gic v2 --vcpus 9 by the GIC's own limit.)
check "gicv2: 9 vCPUs on the host's GICv2 refused with status 2, naming the limit of 8" sh -c \
  "[ $status -eq 2 ] && grep -qE 'GICv2 serves at most 8 vCPUs|KVM allows \(8\)' /tmp/v2max.err"

# 4. Microkit descriptions as written. The manual's form, images from the flags: the PL011 map
#    is the console (the initramfs shell both ways), the GIC vCPU interface map the vGICv2.
start manual ./vmm run microkit/manual.system --kernel Image --initrd initramfs.cpio.gz \
  --cmdline "console=ttyAMA0 quiet"
check "microkit manual: the shell prompt on the PL011" wait_for /tmp/manual.out "guest# " 180
send manual 'echo mk-$((6*7)) $(grep -m1 -oE "GICv3|GIC-0" /proc/interrupts)'
check "microkit manual: input reached the shell, on a GICv2" wait_for /tmp/manual.out "mk-42 GIC-0" 60
send manual 'reboot -f'
stop
check "microkit manual: exit status 0 after reboot" [ "$status" -eq 0 ]

# 5. The simple form: our own DTB (dtc) with the file's <dtb_overlay> applied, 1 vCPU.
./vmm run microkit/simple.system --kernel Image --initrd initramfs.cpio.gz --dtb microkit/linux.dtb \
  --cmdline "console=ttyAMA0 quiet libvmm.test=arm64info" </dev/null >/tmp/mk-simple.out 2>/tmp/mk-simple.err
status=$?
check "microkit simple: exit status 0 (PSCI SYSTEM_OFF)" [ "$status" -eq 0 ]
check "microkit simple: the guest booted with our DTB" grep -qF "model: libvmm microkit test board" /tmp/mk-simple.out
check "microkit simple: ... and the overlay applied" grep -qF "overlay: libvmm,test-overlay" /tmp/mk-simple.out
check "microkit simple: 1 vCPU" grep -qF "smp: Brought up 1 node, 1 CPU" /tmp/mk-simple.out

# 6. The smp form: 4 vCPUs, all up (pinned where this 2-CPU host has the CPU), with --dtb and
#    --dtb-overlay; its shell on the PL011.
start smp ./vmm run microkit/smp.system --kernel Image --initrd initramfs.cpio.gz \
  --dtb microkit/linux.dtb --dtb-overlay microkit/overlay.dtbo --cmdline "console=ttyAMA0 quiet"
check "microkit smp: the shell prompt on the PL011" wait_for /tmp/smp.out "guest# " 240
send smp 'echo cpus-$(grep -c ^processor /proc/cpuinfo) $(cat /proc/device-tree/libvmm-overlay/compatible)'
check "microkit smp: 4 vCPUs up, the overlay applied" wait_for /tmp/smp.out "cpus-4 libvmm,test-overlay" 60
send smp 'reboot -f'
stop
check "microkit smp: exit status 0 after reboot" [ "$status" -eq 0 ]
check "microkit smp: a CPU this host lacks is reported" \
  grep -qF "vCPU 3: cannot run on host CPU 3 (this host has no such CPU)" /tmp/smp.err
finish arm64-gicv2 /tmp/pci-check.out /tmp/check.out /tmp/x86.out /tmp/spi.out /tmp/info.out /tmp/info.err \
  /tmp/default.err /tmp/v3.err /tmp/v2max.err /tmp/manual.out /tmp/manual.err /tmp/mk-simple.out \
  /tmp/mk-simple.err /tmp/smp.out /tmp/smp.err
EOS
# The GICv3 host has an NVMe controller for VFIO (7.), on an image this machine checks after.
image=$work/nvme.img
truncate -s 64M "$image"
printf 'LIBVMM-HOST-NVME-PATTERN' | dd of="$image" conv=notrunc 2>/dev/null
status=0
for suite in "${suites[@]}"; do
  ln -sf "$suite.sh" "$payload/run.sh"
  case $suite in
    gicv3)
      run_payload --gic 3 --nvme "$image" --timeout 720 | tee "$work/gicv3.log" || status=1
      written=$(sed -n 's/^GUEST-WROTE-MD5=//p' "$work/gicv3.log" | tr -d '\r')
      on_image=$(dd if="$image" bs=1M skip=1 count=4 2>/dev/null | md5sum | cut -d' ' -f1)
      if [ -n "$written" ] && [ "$written" = "$on_image" ]; then
        echo "PASS: vfio: the image holds the guest's 4 MiB ($on_image)"
      else
        echo "FAIL: vfio: the image holds the guest's 4 MiB (guest $written, image $on_image)"
        status=1
      fi ;;
    gicv2) run_payload --gic 2 --timeout 600 || status=1 ;;
    *) echo "arm64.sh: unknown suite $suite" >&2; exit 2 ;;
  esac
done
exit $status
