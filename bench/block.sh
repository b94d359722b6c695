#!/usr/bin/env bash
# virtio-blk throughput: our vmm against QEMU (-M microvm; -M q35 for virtio-pci) and against the
# host itself, side by side in one emulated KVM host run, on the same 256 MiB raw image file.
# Each of them runs the same four jobs with the same tool (bench/blkio.c):
#   seqwrite   sequential 1 MiB writes, O_DIRECT, over the first 128 MiB, SECONDS long
#   seqread    sequential 1 MiB reads, likewise
#   randread   4 KiB reads at random 4 KiB-aligned offsets in the first 128 MiB, likewise
#   randread4  four randread processes at once (queue depth 4); their IOPS summed
# "host" runs them on the image file in the emulated host; the others run them in the guest on
# /dev/vda backed by that file: "vmm" (--disk PATH,direct,io=sync,iothread=off: host I/O inside
# the queue notification, on the event loop, every request with preadv/pwritev), "vmm-iot"
# (io=sync,iothread=on: on the device's I/O thread, which polls the queue adaptively, poll_us=32
# by default), "vmm-nopoll" (the same, poll_us=0), "vmm-auto" (io=auto, the default since
# session 41: through io_uring, each request started as it comes and completed as it finishes
# since session 42; in session 41 a round's requests submitted together and awaited whole, a
# lone one with preadv/pwritev), "vmm-uring" (io=io_uring: the same since session 42),
# "vmm-pci" (the default: iothread=on, io=auto, over virtio-pci with MSI-X instead of
# virtio-mmio: x86_64's default since session 35; the others named vmm* here are
# transport=mmio, as the default was when their figures were recorded; vmm-pci was io=sync
# until session 41),
# "vmm-pci-hg" (as vmm-pci, with --halt guest: the idle vCPU halts without a VM exit),
# "vmm-pci-memfd" (as vmm-pci, guest RAM a memfd as it must be for vhost-user: whether the
# guest splits its 1 MiB requests as often; only in the per-round lines),
# "qemu" (cache=none,aio=threads), "qemu-iot" (QEMU's like of vmm-auto: its virtio-blk on an
# iothread, aio=io_uring; the iothread's adaptive polling at QEMU's default poll-max-ns, 32 µs
# as our poll_us) and "qemu-pci" (the same over virtio-pci with MSI-X, -M q35: the like of
# vmm-pci). QEMU's virtio-mmio is modern (-global virtio-mmio.force-legacy=false, 7.2's default
# being legacy), as ours.
# The guest polling its completions instead of waiting for interrupts (2 vCPUs, 2 queues and
# virtio_blk.poll_queues=1: one of the queues has no interrupt; every job through an io_uring
# with IORING_SETUP_IOPOLL, blkio's "polled"): "vmm-gpoll" (as vmm-pci), "vmm-bpoll" (both
# poll: the same with poll_us=1000, so the device's I/O thread also waits long enough for the
# guest's next request to come without a notification), "qemu-bpoll" (the same for QEMU: its
# virtio-blk on an iothread with poll-max-ns=1000000, QEMU's adaptive polling; virtio-mmio) and
# "qemu-bpoll-pci" (the same over virtio-pci, as vmm-bpoll is: its like); a table of their own.
# Devices in other processes (vhost-user; a second table): "vmm-dev" (our vmm with our
# vmm-device serving the image, iothread=on), "vmm-qsd" (our vmm with qemu-storage-daemon's
# vhost-user-blk export, aio=threads, O_DIRECT as the others) and "qemu-qsd" (QEMU -M microvm,
# its RAM a shared memfd, modern virtio-mmio, with the same qemu-storage-daemon export); and
# "vmm-fs" (virtio-fs: the guest runs the same jobs on the same image file, reached as a file
# in the folder that Debian's virtiofsd shares, cache=none with O_DIRECT passed through: a host
# file through virtio-fs against the same file as a virtio-blk disk).
# For each job it also counts VM exits (KVM's debugfs counter) and the VMM's CPU time between
# marks the guest prints around the job (it idles a second after each, so the sampler reads
# its counters outside the job), per request (a second table, QEMU's alike; CPU with and
# without the vCPUs' time in the guest, the latter the VMM's own work; see payload.sh's
# sample_marks).
# The image lives on ext2 (mounted by the ext4 driver) on a loop device, so O_DIRECT works on the
# host side; if that cannot be set up it falls back to tmpfs and buffered I/O (and says so).
# fio is not used: it needs SysV shared memory, which the minimal guest kernel leaves out.
# They run ROUNDS times, interleaved (vmm and vmm-iot swap places every other round); the table
# shows medians, then each figure's spread (min..max over the rounds).
# --arch aarch64 (also bench/block-arm64.sh): the same in the emulated arm64 KVM host (vGICv3),
# for the candidates that exist there (cross_configs below): host, vmm-auto (arm64's default disk:
# io=auto on the I/O thread over virtio-mmio), vmm-pci (the same over virtio-pci, MSI-X through
# the ITS), qemu (QEMU -M virt, virtio-blk-device, cache=none,aio=threads), qemu-iot and
# qemu-pci (as on x86_64, qemu-pci on -M virt's PCIe: the likes of vmm-auto and vmm-pci); vmm
# cross-built in $LIBVMM_ARM64_BUILD (default build/arm64-bench), Debian's arm64 QEMU and
# kernel, and with a delay its arm64 dmsetup (tools/install-deps-arm64 --bench); the vhost-user
# candidates (vmm-dev, vmm-qsd, qemu-qsd, vmm-fs, with Debian's arm64 qemu-storage-daemon and
# virtiofsd; on riscv64 vmm-dev) when BLOCK_BENCH_ONLY names them, their table against
# vmm-auto. --arch riscv64 (also bench/block-riscv64.sh): the same in the emulated riscv64 KVM
# host (KVM's AIA; QEMU -M virt,aia=aplic-imsic) with trixie's riscv64 QEMU, kernel and dmsetup
# (tools/install-deps-riscv64 --bench; $LIBVMM_RISCV64_BUILD, default build/riscv64-bench).
# Usage: bench/block.sh [--arch x86_64|aarch64|riscv64] [SECONDS [ROUNDS]]   (default 5 and 3;
# about 35 minutes for x86_64's 20 configurations on a quiet machine). Prints a table and ratios; see docs/PERFORMANCE.md.
# A guest's timeout grows with SECONDS (its four jobs of SECONDS each).
# BLOCK_BENCH_ONLY="vmm vmm-iot" runs only those (of all_configs below), for more rounds in the same time. The load average is
# printed before and after.
# BENCH_EXIT_REASONS=1 also counts each job's VM exits by reason and its MSR exits by MSR, per
# request ("exits_by_reason_per_op" and "msr_exits_per_op" lines; payload.sh's sample_marks;
# on riscv64, whose kernel has no hist triggers, from the trace buffer, and KVM's own counters
# as "kvm_stats_per_op").
# BLOCK_BENCH_DELAY_MS=N puts the file system holding the image on a device-mapper "delay"
# target over the loop device: every read and write reaches the RAM behind it N ms late, for the
# host as for the guests. A disk with latency of its own (an SSD, a network volume), where what
# matters is whether requests in flight overlap (io=auto and io=io_uring against io=sync).
set -euo pipefail
all_configs="host vmm vmm-iot vmm-nopoll vmm-auto vmm-uring vmm-pci vmm-pci-hg vmm-pci-memfd vmm-gpoll vmm-bpoll qemu
  qemu-iot qemu-pci qemu-bpoll qemu-bpoll-pci vmm-dev vmm-qsd qemu-qsd vmm-fs"
all_configs=$(echo $all_configs)  # one line, single spaces
arch=x86_64
if [ "${1:-}" = --arch ]; then arch=${2:-}; shift 2 || true; fi
# What exists on arm64 and riscv64 (no microvm; the io=sync and polling variants were x86_64's
# questions), with QEMU's likes of vmm-auto and vmm-pci (-M virt has virtio-mmio and PCIe).
cross_configs="host vmm-auto vmm-pci qemu qemu-iot qemu-pci"
# Also when BLOCK_BENCH_ONLY names them: devices in other processes, on arm64 all (Debian's
# arm64 QEMU package has qemu-storage-daemon and virtiofsd), on riscv64 our own vmm-device.
arm64_named="vmm-dev vmm-qsd qemu-qsd vmm-fs"
riscv64_named="vmm-dev"
secs=${1:-5}
rounds=${2:-3}
delay_ms=${BLOCK_BENCH_DELAY_MS:-0}
[[ $delay_ms =~ ^[0-9]+$ ]] \
  || { echo "BLOCK_BENCH_DELAY_MS: '$delay_ms' is not a whole number of milliseconds" >&2; exit 2; }
[[ $arch =~ ^(x86_64|aarch64|riscv64)$ && $secs =~ ^[0-9]+$ && $rounds =~ ^[0-9]+$ ]] \
  && [ "$secs" -gt 0 ] && [ "$rounds" -gt 0 ] || {
  echo "usage: bench/block.sh [--arch x86_64|aarch64|riscv64] [SECONDS [ROUNDS]]" \
    "(positive integers)" >&2
  exit 2
}
only=${BLOCK_BENCH_ONLY:-}
known=$all_configs
[ "$arch" = x86_64 ] || known=$cross_configs
[ "$arch" != aarch64 ] || known="$known $arm64_named"
[ "$arch" != riscv64 ] || known="$known $riscv64_named"
for c in $only; do
  case " $known " in
    *" $c "*) ;;
    *) echo "BLOCK_BENCH_ONLY: '$c' is not measured on $arch (one of: $known)" >&2; exit 2 ;;
  esac
done
[ "$arch" = x86_64 ] || only=${only:-$cross_configs}
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
cd "$repo"
if [ "$arch" = x86_64 ]; then
  native_build
  vmm_bin=build/gcc/tools/vmm/vmm cc=gcc
  dmsetup=$(PATH=$PATH:/usr/sbin:/sbin command -v dmsetup || true)  # wanted with a delay only
else
  # shellcheck source=bench/boot-setup.sh
  . bench/boot-setup.sh
  cross_bench_setup "$arch"
  vmm_bin=$bench_vmm cc=$arch-linux-gnu-gcc dmsetup=$(bench_tool dmsetup 2>/dev/null || true)
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# blkio MODE PATH SECONDS [buffered|polled]: one job (bench/blkio.c).
"$cc" -O2 -static -Wall -Wextra -o "$work/blkio" bench/blkio.c

# Guest side: /usr/bin/blkio and /tests/blkbench (run by /init for libvmm.test=blkbench).
extra=$work/guest-extra
mkdir -p "$extra/usr/bin" "$extra/tests"
cp "$work/blkio" "$extra/usr/bin/blkio"
cat >"$extra/tests/blkbench" <<EOS
#!/bin/sh
# The jobs run on /dev/vda, or (libvmm.fsbench) on vda.img in the virtio-fs folder "bench".
target=/dev/vda
if grep -q libvmm.fsbench /proc/cmdline; then
  mkdir -p /mnt/fs
  mount -t virtiofs bench /mnt/fs || echo "LIBVMM-GUEST: BENCH mount failed"
  target=/mnt/fs/vda.img
fi
# libvmm.blkpoll (with virtio_blk.poll_queues=1 and a second vCPU, so the driver has a poll
# queue): every job through a polling io_uring, no interrupts (blkio's "polled").
poll=; grep -q libvmm.blkpoll /proc/cmdline && poll=polled
# MARK lines bracket each job for the host's exit and CPU sampler (payload.sh: sample_marks),
# which reads its counters while the guest idles for a second after each mark.
mark() { echo "LIBVMM-GUEST: MARK \$*"; sleep 1; }
# The requests the disk's driver completed (reads + writes): how many virtIO requests a job's
# one request became (a 1 MiB pread the block layer splits counts twice).
vreqs() { [ -r /sys/block/vda/stat ] && awk '{ print \$1 + \$5 }' /sys/block/vda/stat || echo 0; }
[ -r /sys/block/vda/queue/max_segments ] && echo "LIBVMM-GUEST: BENCH queue" \
  "max_segments=\$(cat /sys/block/vda/queue/max_segments)" \
  "max_sectors_kb=\$(cat /sys/block/vda/queue/max_sectors_kb)" \
  "io_poll=\$(cat /sys/block/vda/queue/io_poll 2>/dev/null)"
for job in seqwrite seqread randread; do
  mark begin \$job
  before=\$(vreqs)
  r=\$(blkio \$job \$target $secs \$poll 2>&1)
  echo "LIBVMM-GUEST: BENCH \$r vreqs=\$((\$(vreqs) - before))"
  mark end \$job ops=\$(echo "\$r" | sed -n 's/.* ops=\\([0-9]*\\).*/\\1/p')
done
mark begin randread4
for i in 1 2 3 4; do blkio randread \$target $secs \$poll >/tmp/rr.\$i 2>&1 & done
wait
sum() { sed -n "s/.*\$1=\\([0-9]*\\).*/\\1/p" /tmp/rr.* | awk '{s+=\$1} END {print s}'; }
ops=\$(sum ops)
echo "LIBVMM-GUEST: BENCH randread4 iops=\$(sum iops) ops=\$ops"
mark end randread4 ops=\$ops
mark done
EOS
chmod +x "$extra/tests/blkbench"

payload_new "$arch" "$vmm_bin" --extra "$extra"
cp "$work/blkio" "$payload/"
[ "$delay_ms" = 0 ] || payload_binary "$dmsetup"
mkdir -p "$payload/modules"
# What differs between the architectures in run.sh: the guest kernel and console, vmm's
# interrupt controller, QEMU's command and machines (virtio-mmio; virtio-pci: on x86_64 q35, as
# bench/net.sh's qemu-vhost-pci), its name in /proc (the sampler's) and how long a guest may
# take: its four jobs of SECONDS (randread4's four processes run at once), and for its boot and
# its nine marks (a second each) 220 s on x86_64, 580 s elsewhere (under TCG): at the default
# 5 s the 240 and 600 s in all that were fixed before, never less.
# QEMU's virtio-mmio devices modern (version 2), as ours: 7.2's default is legacy.
modern_mmio="-global virtio-mmio.force-legacy=false"
if [ "$arch" = x86_64 ]; then
  payload_binary /usr/bin/qemu-system-x86_64 build/gcc/tools/vmm-device/vmm-device \
    "$(command -v qemu-storage-daemon)" /usr/lib/qemu/virtiofsd
  mkdir -p "$payload/qemu-data"
  cp /usr/share/qemu/{bios-microvm.bin,qboot.rom,linuxboot_dma.bin,pvh.bin,kvmvapic.bin} \
    /usr/share/seabios/bios-256k.bin "$payload/qemu-data/"
  guest_timeout=$((secs * 4 + 220))
  [ $guest_timeout -ge 240 ] || guest_timeout=240
  set -- kernel=bzImage console=ttyS0 vmm_machine= qemu_comm=qemu-system-x86 \
    guest_timeout=$guest_timeout \
    qemu_mmio="./qemu-system-x86_64 -L qemu-data -M microvm,acpi=off -accel kvm -cpu host $modern_mmio" \
    qemu_pci="./qemu-system-x86_64 -L qemu-data -M q35 -accel kvm -cpu host"
  # A guest's four jobs and up to 120 s of boot and marks, per configuration and round.
  timeout=$((600 + rounds * $(echo ${only:-$all_configs} | wc -w) * (secs * 4 + 120)))
else
  payload_binary "$bench_qemu"
  if [[ " $only " == *" vmm-dev "* ]]; then
    cross_build "$bench_build" --arch "$arch" vmm-device
    payload_binary "$bench_build/tools/vmm-device/vmm-device"
  fi
  if [[ " $only " =~ " "(vmm-qsd|qemu-qsd|vmm-fs)" " ]]; then
    payload_binary "$bench_qemu_root/usr/bin/qemu-storage-daemon" \
      "$bench_qemu_root/usr/lib/qemu/virtiofsd"
  fi
  guest_timeout=$((secs * 4 + 580))
  [ $guest_timeout -ge 600 ] || guest_timeout=600
  set -- kernel=Image console=$bench_console vmm_machine="$bench_vmm_machine" \
    qemu_comm=$bench_qemu_comm guest_timeout=$guest_timeout \
    qemu_mmio="./qemu-system-$arch -M $bench_qemu_machine -accel kvm -cpu host $modern_mmio" \
    qemu_pci="./qemu-system-$arch -M $bench_qemu_machine -accel kvm -cpu host"
  # A guest's four jobs, and up to 300 s of boot and marks under TCG, per configuration.
  timeout=$((900 + rounds * $(echo $only | wc -w) * (secs * 4 + 300)))
fi

# The emulated host's kernel modules for a loop-mounted ext2 (by the ext4 driver), and with a
# delay its device-mapper target, each after what it needs; crc32c_generic named itself (ext4
# asks the crypto API for it, not for a symbol).
wanted="loop crc32c_generic ext4"
[ "$delay_ms" = 0 ] || wanted="$wanted dm_delay"
# shellcheck disable=SC2086 # $wanted: one word per module
"$emuhost" --arch "$arch" --pack-modules "$payload/modules" $wanted

payload_script run.sh secs="$secs" rounds="$rounds" only="$only" delay_ms="$delay_ms" \
  sample_reasons="${BENCH_EXIT_REASONS:-0}" "$@" <<'EOS'
# $qemu_mmio, $qemu_pci, $vmm_machine: a command or options, unquoted where used so that they
# split.
# want NAME: whether this run measures NAME (all unless BLOCK_BENCH_ONLY named some).
want() { [ -z "$only" ] || case " $only " in *" $1 "*) true ;; *) false ;; esac; }
cmdline="console=$console quiet libvmm.test=blkbench"
# vmm with the guest and memory every configuration gives it.
vmm="./vmm $vmm_machine --kernel $kernel --initrd initramfs.cpio.gz --memory 256M"
# Image on ext2 on a loop device (O_DIRECT works), else on tmpfs (buffered).
dir=/tmp direct=1
if [ -f modules/load-order ]; then
  while read -r ko; do insmod "modules/$ko" 2>/dev/null; done <modules/load-order
  fs_mib=320
  dd if=/dev/zero of=/tmp/fs.img bs=1M count=$fs_mib 2>/dev/null
  dev=/dev/loop0
  losetup $dev /tmp/fs.img || dev=
  if [ -n "$dev" ] && [ "$delay_ms" != 0 ]; then
    # All of it (in 512-byte sectors), each read and write delay_ms late. No udev here: dmsetup
    # makes the node itself.
    DM_DISABLE_UDEV=1 ./dmsetup --noudevsync create slow \
      --table "0 $((fs_mib * 2048)) delay $dev 0 $delay_ms" >/dev/null 2>&1 \
      && dev=/dev/mapper/slow || dev=
  fi
  # busybox mke2fs wants a block device.
  [ -n "$dev" ] && mke2fs -q $dev >/dev/null 2>&1 && mkdir -p /mnt/fs \
    && mount -t ext4 $dev /mnt/fs && dir=/mnt/fs
fi
if [ "$delay_ms" != 0 ] && [ "$dir" != /mnt/fs ]; then
  echo "BENCH-WARNING: no delay target for BLOCK_BENCH_DELAY_MS=$delay_ms (dm-delay); stopping"
  exit 1
fi
img=$dir/vda.img
dd if=/dev/zero of=$img bs=1M count=256 2>/dev/null
if ! ./blkio seqread $img 0.01 >/dev/null 2>&1; then direct=0; fi
echo "BENCH-SETUP image=$img direct=$direct delay_ms=$delay_ms"
vmm_disk=$img qemu_cache=writeback qsd_direct=
if [ $direct = 1 ]; then vmm_disk=$img,direct qemu_cache=none qsd_direct=,cache.direct=on; fi
wait_socket() {
  i=0
  while [ ! -S "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
}

buffered=; [ $direct = 1 ] || buffered=buffered
round=0
while [ $round -lt $rounds ]; do
  if want host; then
    for job in seqwrite seqread randread; do
      echo "host $(./blkio $job $img $secs $buffered 2>&1)"
    done
    for i in 1 2 3 4; do ./blkio randread $img $secs $buffered >/tmp/rr.$i 2>&1 & done
    wait
    echo "host randread4 iops=$(cat /tmp/rr.* | sed -n 's/.*iops=//p' | awk '{s+=$1} END {print s}')"
  fi
  # vmm and vmm-iot alternate which goes first, so neither always follows the host jobs.
  if [ $((round % 2)) = 0 ]; then order="off on"; else order="on off"; fi
  for t in $order; do
    name=vmm; [ $t = on ] && name=vmm-iot
    want $name || continue
    bench_sampled $name blkbench $guest_timeout vmm $vmm \
      --cmdline "$cmdline" --disk $vmm_disk,io=sync,iothread=$t,transport=mmio --quiet
  done
  want vmm-nopoll && bench_sampled vmm-nopoll blkbench $guest_timeout vmm $vmm \
    --cmdline "$cmdline" --disk $vmm_disk,io=sync,iothread=on,poll_us=0,transport=mmio --quiet
  want vmm-auto && bench_sampled vmm-auto blkbench $guest_timeout vmm $vmm \
    --cmdline "$cmdline" --disk $vmm_disk,io=auto,iothread=on,transport=mmio --quiet
  want vmm-uring && bench_sampled vmm-uring blkbench $guest_timeout vmm $vmm \
    --cmdline "$cmdline" --disk $vmm_disk,io=io_uring,iothread=on,transport=mmio --quiet
  want vmm-pci && bench_sampled vmm-pci blkbench $guest_timeout vmm $vmm \
    --cmdline "$cmdline" --disk $vmm_disk,iothread=on,transport=pci --quiet
  want vmm-pci-hg && bench_sampled vmm-pci-hg blkbench $guest_timeout vmm $vmm \
    --cmdline "$cmdline" --disk $vmm_disk,iothread=on,transport=pci --halt guest --quiet
  want vmm-pci-memfd && bench_sampled vmm-pci-memfd blkbench $guest_timeout vmm $vmm \
    --memory-backing memfd --cmdline "$cmdline" \
    --disk $vmm_disk,iothread=on,transport=pci --quiet
  # The guest polls for its completions (libvmm.blkpoll above). Two vCPUs: the driver uses at
  # most a queue per CPU and keeps one of them interrupt-driven, so one CPU gets no poll queue.
  for c in vmm-gpoll:32 vmm-bpoll:1000; do
    want ${c%:*} && bench_sampled ${c%:*} blkbench $guest_timeout vmm $vmm --vcpus 2 \
      --cmdline "$cmdline virtio_blk.poll_queues=1 libvmm.blkpoll" \
      --disk $vmm_disk,iothread=on,transport=pci,num_queues=2,poll_us=${c#*:} --quiet
  done
  want qemu-bpoll && bench_sampled qemu-bpoll blkbench $guest_timeout $qemu_comm $qemu_mmio \
    -m 256M -smp 2 -nodefaults \
    -no-user-config -display none -serial stdio -no-reboot \
    -object iothread,id=io0,poll-max-ns=1000000 \
    -drive id=d0,file=$img,format=raw,if=none,cache=$qemu_cache,aio=threads \
    -device virtio-blk-device,drive=d0,num-queues=2,iothread=io0 -kernel $kernel \
    -initrd initramfs.cpio.gz -append "$cmdline virtio_blk.poll_queues=1 libvmm.blkpoll"
  # The same over virtio-pci (MSI-X), as vmm-bpoll is.
  want qemu-bpoll-pci && bench_sampled qemu-bpoll-pci blkbench $guest_timeout $qemu_comm \
    $qemu_pci -m 256M -smp 2 -nodefaults \
    -no-user-config -display none -serial stdio -no-reboot \
    -object iothread,id=io0,poll-max-ns=1000000 \
    -drive id=d0,file=$img,format=raw,if=none,cache=$qemu_cache,aio=threads \
    -device virtio-blk-pci,drive=d0,num-queues=2,iothread=io0 -kernel $kernel \
    -initrd initramfs.cpio.gz -append "$cmdline virtio_blk.poll_queues=1 libvmm.blkpoll"
  want qemu && bench_sampled qemu blkbench $guest_timeout $qemu_comm $qemu_mmio \
    -m 256M -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -drive id=d0,file=$img,format=raw,if=none,cache=$qemu_cache,aio=threads \
    -device virtio-blk-device,drive=d0 -kernel $kernel -initrd initramfs.cpio.gz -append "$cmdline"
  # QEMU's likes of vmm-auto (virtio-mmio) and vmm-pci (virtio-pci with MSI-X): the disk on an
  # iothread (QEMU's default adaptive polling), its I/O through io_uring; one queue (1 vCPU), as
  # ours.
  want qemu-iot && bench_sampled qemu-iot blkbench $guest_timeout $qemu_comm $qemu_mmio \
    -m 256M -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -object iothread,id=io0 \
    -drive id=d0,file=$img,format=raw,if=none,cache=$qemu_cache,aio=io_uring \
    -device virtio-blk-device,drive=d0,iothread=io0 -kernel $kernel -initrd initramfs.cpio.gz \
    -append "$cmdline"
  want qemu-pci && bench_sampled qemu-pci blkbench $guest_timeout $qemu_comm $qemu_pci \
    -m 256M -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -object iothread,id=io0 \
    -drive id=d0,file=$img,format=raw,if=none,cache=$qemu_cache,aio=io_uring \
    -device virtio-blk-pci,drive=d0,iothread=io0 -kernel $kernel \
    -initrd initramfs.cpio.gz -append "$cmdline"
  # vhost-user: the same image served by another process (each back-end started for its run).
  if want vmm-dev; then
    rm -f /tmp/dev.sock  # a stale one (a killed back-end) would end wait_socket at once
    ./vmm-device --socket /tmp/dev.sock --disk $vmm_disk --quiet 2>>/tmp/vmm-device.err &
    back=$!
    wait_socket /tmp/dev.sock
    bench_sampled vmm-dev blkbench $guest_timeout 'vmm vmm-device' $vmm \
      --cmdline "$cmdline" --vhost-user blk,socket=/tmp/dev.sock,transport=mmio --quiet
    stop_process $back vmm-device
  fi
  for c in vmm-qsd qemu-qsd; do
    want $c || continue
    ./qemu-storage-daemon --blockdev driver=file,node-name=d,filename=$img,aio=threads$qsd_direct \
      --export type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=/tmp/qsd.sock,writable=on \
      2>>/tmp/qsd.err &
    back=$!
    wait_socket /tmp/qsd.sock
    if [ $c = vmm-qsd ]; then
      bench_sampled vmm-qsd blkbench $guest_timeout 'vmm qemu-storage-da' $vmm \
        --cmdline "$cmdline" --vhost-user blk,socket=/tmp/qsd.sock,transport=mmio --quiet
    else
      # $qemu_mmio's modern virtio-mmio: qemu-storage-daemon (libvhost-user) refuses legacy
      # devices, which QEMU 7.2's virtio-mmio is by default.
      bench_sampled qemu-qsd blkbench $guest_timeout "$qemu_comm qemu-storage-da" \
        $qemu_mmio -machine memory-backend=mem -m 256M -smp 1 \
        -object memory-backend-memfd,id=mem,size=256M,share=on -nodefaults -no-user-config \
        -display none -serial stdio -no-reboot -chardev socket,id=vu,path=/tmp/qsd.sock \
        -device vhost-user-blk,chardev=vu,num-queues=1 -kernel $kernel \
        -initrd initramfs.cpio.gz -append "$cmdline"
    fi
    stop_process $back qemu-storage-daemon
    rm -f /tmp/qsd.sock
  done
  if want vmm-fs; then
    ./virtiofsd --socket-path=/tmp/fs.sock -o source=$dir -o cache=none -o allow_direct_io \
      -o sandbox=chroot 2>>/tmp/virtiofsd.err &
    back=$!
    wait_socket /tmp/fs.sock
    bench_sampled vmm-fs blkbench $guest_timeout 'vmm virtiofsd' $vmm \
      --cmdline "$cmdline libvmm.fsbench" \
      --fs tag=bench,socket=/tmp/fs.sock --quiet
    stop_process $back virtiofsd
    rm -f /tmp/fs.sock
  fi
  round=$((round + 1))
done
EOS
collect "^((${all_configs// /|}) (seqwrite|seqread|randread|randread4|mount|queue) |BENCH-SETUP|BENCH-WARNING)" \
  --timeout $timeout
need_results '^(host|vmm|qemu)'
grep '^BENCH-SETUP' "$work/results"
grep '^BENCH-WARNING' "$work/results" || true
echo "per round:"
grep -v '^BENCH-' "$work/results" | sed 's/^/  /'
# spread FIELD WORDS...: "min..max" of a figure over the rounds (MiB/s for kib_s).
spread() {
  local divisor=1
  [ "$1" != kib_s ] || divisor=1024
  spread_of %.0f $divisor "$@"
}
conv() { # MiB/s from KiB/s, or the figure as it is
  if [ "$1" = kib_s ]; then
    awk -v x="$2" 'BEGIN { if (x != "") printf "%.1f", x / 1024; else print "-" }'
  else
    echo "${2:--}"
  fi
}
configs="host vmm vmm-iot vmm-nopoll vmm-auto vmm-uring vmm-pci vmm-pci-hg qemu qemu-iot qemu-pci"
[ "$arch" = x86_64 ] || configs=$cross_configs
echo "median of $rounds rounds, ${secs} s per job, 1 vCPU, 256 MiB guest, emulated $arch KVM host$(
  [ "$delay_ms" = 0 ] || echo ", every disk access $delay_ms ms late (dm-delay)")"
printf '%-10s %6s' job unit
for c in $configs; do printf ' %10s' $c; done
echo
for job in seqwrite seqread randread randread4; do
  case $job in randread*) f=iops unit=IOPS ;; *) f=kib_s unit=MiB/s ;; esac
  printf '%-10s %6s' $job $unit
  for c in $configs; do printf ' %10s' "$(conv $f "$(result $f $c $job)")"; done
  echo
done
if [ "$arch" != x86_64 ]; then
  echo "ratios of the medians (auto: vmm-auto, $arch's default disk over virtio-mmio; pci: vmm-pci;"
  echo "qemu-iot, qemu-pci: QEMU's likes of the two)"
  printf '%-10s %9s %9s %9s %9s %9s %9s %13s %12s\n' job auto/host auto/qemu pci/host pci/qemu \
    pci/auto qemu/host auto/qemu-iot pci/qemu-pci
  for job in seqwrite seqread randread randread4; do
    case $job in randread*) f=iops ;; *) f=kib_s ;; esac
    h=$(result $f host $job) a=$(result $f vmm-auto $job) p=$(result $f vmm-pci $job)
    q=$(result $f qemu $job) qi=$(result $f qemu-iot $job) qp=$(result $f qemu-pci $job)
    printf '%-10s %9s %9s %9s %9s %9s %9s %13s %12s\n' $job "$(ratio "$a" "$h")" \
      "$(ratio "$a" "$q")" "$(ratio "$p" "$h")" "$(ratio "$p" "$q")" "$(ratio "$p" "$a")" "$(ratio "$q" "$h")" \
      "$(ratio "$a" "$qi")" "$(ratio "$p" "$qp")"
  done
else
  echo "ratios of the medians (iot: vmm-iot, io=sync on its I/O thread over virtio-mmio; pci: vmm-pci,"
  echo "the default; auto: vmm-auto; qemu-iot, qemu-pci: QEMU's likes of vmm-auto and vmm-pci)"
  printf '%-10s %9s %9s %9s %11s %9s %11s %9s %9s %9s %13s %12s\n' job iot/host iot/qemu vmm/qemu \
    nopoll/iot auto/iot uring/iot pci/iot hg/pci qemu/host auto/qemu-iot pci/qemu-pci
  for job in seqwrite seqread randread randread4; do
    case $job in randread*) f=iops ;; *) f=kib_s ;; esac
    h=$(result $f host $job) v=$(result $f vmm $job) i=$(result $f vmm-iot $job)
    n=$(result $f vmm-nopoll $job) u=$(result $f vmm-uring $job) q=$(result $f qemu $job)
    p=$(result $f vmm-pci $job) g=$(result $f vmm-pci-hg $job) a=$(result $f vmm-auto $job)
    qi=$(result $f qemu-iot $job) qp=$(result $f qemu-pci $job)
    printf '%-10s %9s %9s %9s %11s %9s %11s %9s %9s %9s %13s %12s\n' $job "$(ratio "$i" "$h")" \
      "$(ratio "$i" "$q")" "$(ratio "$v" "$q")" "$(ratio "$n" "$i")" "$(ratio "$a" "$i")" \
      "$(ratio "$u" "$i")" "$(ratio "$p" "$i")" "$(ratio "$g" "$p")" "$(ratio "$q" "$h")" \
      "$(ratio "$a" "$qi")" "$(ratio "$p" "$qp")"
  done
fi
echo "spread (min..max over the rounds)"
for job in seqwrite seqread randread randread4; do
  case $job in randread*) f=iops ;; *) f=kib_s ;; esac
  printf '%-10s %6s' $job ""
  for c in $configs; do printf ' %10s' "$(spread $f $c $job)"; done
  echo
done
# The guest polling its completions (two vCPUs, a poll queue, io_uring's IOPOLL).
if grep -qE '^(vmm-gpoll|vmm-bpoll|qemu-bpoll|qemu-bpoll-pci) ' "$work/results"; then
  echo "the guest polling: median of $rounds rounds (g: vmm-gpoll, the guest alone; b: vmm-bpoll,"
  echo "both; qb: qemu-bpoll, both, over virtio-mmio; qb-pci: qemu-bpoll-pci, both, over virtio-pci"
  echo "as vmm-bpoll; pci: vmm-pci, interrupts)"
  printf '%-10s %6s %10s %10s %10s %14s %7s %7s %7s %7s %7s %8s\n' job unit vmm-gpoll vmm-bpoll \
    qemu-bpoll qemu-bpoll-pci g/pci b/pci b/host qb/host b/qb b/qb-pci
  for job in seqwrite seqread randread randread4; do
    case $job in randread*) f=iops unit=IOPS ;; *) f=kib_s unit=MiB/s ;; esac
    g=$(result $f vmm-gpoll $job) b=$(result $f vmm-bpoll $job) qb=$(result $f qemu-bpoll $job)
    h=$(result $f host $job) p=$(result $f vmm-pci $job) qbp=$(result $f qemu-bpoll-pci $job)
    printf '%-10s %6s %10s %10s %10s %14s %7s %7s %7s %7s %7s %8s\n' $job $unit "$(conv $f "$g")" \
      "$(conv $f "$b")" "$(conv $f "$qb")" "$(conv $f "$qbp")" "$(ratio "$g" "$p")" \
      "$(ratio "$b" "$p")" "$(ratio "$b" "$h")" "$(ratio "$qb" "$h")" "$(ratio "$b" "$qb")" \
      "$(ratio "$b" "$qbp")"
  done
  for job in seqwrite seqread randread randread4; do
    case $job in randread*) f=iops ;; *) f=kib_s ;; esac
    printf '%-10s %6s %10s %10s %10s %14s\n' $job spread "$(spread $f vmm-gpoll $job)" \
      "$(spread $f vmm-bpoll $job)" "$(spread $f qemu-bpoll $job)" \
      "$(spread $f qemu-bpoll-pci $job)"
  done
  # io_poll=1: the guest's driver did set up a poll queue.
  grep -E '^(vmm-gpoll|vmm-bpoll|qemu-bpoll|qemu-bpoll-pci) queue ' "$work/results" | sort \
    | uniq -c | sed 's/^/  /'
fi
# Devices in other processes (vhost-user), beside the in-process device on its I/O thread
# (x86_64: vmm-iot, io=sync as vmm-device's disk was when the table began; elsewhere the default
# disk, vmm-auto).
base=vmm-iot
[ "$arch" = x86_64 ] || base=vmm-auto
b=${base#vmm-}
vconfigs="$base vmm-dev vmm-qsd qemu-qsd vmm-fs"
if grep -qE '^(vmm-dev|vmm-qsd|qemu-qsd|vmm-fs) ' "$work/results"; then
  echo "vhost-user: median of $rounds rounds (dev/$b: vmm-device against the in-process device;"
  echo "qsd/$b: qemu-storage-daemon against it; vmm/qemu: both with qemu-storage-daemon; fs/$b:"
  echo "the image as a file through virtio-fs against it as a virtio-blk disk)"
  printf '%-10s %6s %9s %9s %9s %9s %9s %8s %8s %8s %8s\n' job unit $vconfigs dev/$b qsd/$b \
    vmm/qemu fs/$b
  for job in seqwrite seqread randread randread4; do
    case $job in randread*) f=iops unit=IOPS ;; *) f=kib_s unit=MiB/s ;; esac
    i=$(result $f $base $job) d=$(result $f vmm-dev $job)
    vq=$(result $f vmm-qsd $job) qq=$(result $f qemu-qsd $job) fs=$(result $f vmm-fs $job)
    printf '%-10s %6s %9s %9s %9s %9s %9s %8s %8s %8s %8s\n' $job $unit "$(conv $f "$i")" \
      "$(conv $f "$d")" "$(conv $f "$vq")" "$(conv $f "$qq")" "$(conv $f "$fs")" \
      "$(ratio "$d" "$i")" "$(ratio "$vq" "$i")" "$(ratio "$vq" "$qq")" "$(ratio "$fs" "$i")"
  done
  echo "spread (min..max over the rounds)"
  for job in seqwrite seqread randread randread4; do
    case $job in randread*) f=iops ;; *) f=kib_s ;; esac
    printf '%-10s %6s' $job ""
    for c in $vconfigs; do printf ' %9s' "$(spread $f $c $job)"; done
    echo
  done
fi
echo "VM exits and CPU per request, medians over the rounds (job windows from the guest's marks;"
echo "exits of every kind; cpu: all the VMM's threads (and its back-end's, for the vhost-user"
echo "and virtio-fs configurations), guest time included; own: without the guest time)"
per_op_rows "seqwrite seqread randread randread4" "${all_configs#host }"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
