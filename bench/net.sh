#!/usr/bin/env bash
# virtio-net throughput and latency: our vmm against QEMU's virtio-net (-M microvm, userspace
# TAP backend, vhost=off) on the same TAP setup, and against the emulated host's own veth pair
# as the ceiling, side by side in one emulated KVM host run. Everything runs in network
# namespaces created there; no traffic leaves them.
#   g2h   TCP guest -> host: iperf3 -c in the guest, iperf3 -s on the host side of the TAP
#   h2g   TCP host -> guest: the same with -R
#   rtt   ping from the guest to the host side, 20 x 0.2 s, average round trip in ms
# "host" runs the same iperf3/ping between two namespaces joined by a veth pair.
# "vmm-tx" is our vmm with its transmit thread (--net ...,iothread=on: frames sent from the
# device's own thread, which polls the emptied transmit ring for up to 32 µs).
# Multiqueue (--net ...,num_queues=N): "vmm-2q1" is our vmm with 2 vCPUs and one queue pair,
# "vmm-2q2" with 2 vCPUs and 2 queue pairs (VIRTIO_NET_F_MQ, on a multiqueue TAP); both run
# iperf3 with 2 parallel streams (-P 2), so that two flows can go over two queues.
# vhost-net (the data path in the emulated host's kernel): "vmm-vhost" is our vmm with
# --net ...,vhost=on, "qemu-vhost" QEMU with -netdev tap,...,vhost=on; the CPU per packet of
# both leaves out the kernel's vhost worker where it is a kernel thread (before Linux 6.4).
# Over virtio-pci: "vmm-pci" (--net ...,transport=pci), "vmm-vhost-pci" (and vhost=on),
# "qemu-vhost-pci" (-M q35, -device virtio-net-pci, vhost=on: microvm's pcie=on brought no
# network up in this guest).
# The kernel worker's polling of drained rings (VHOST_SET_VRING_BUSYLOOP_TIMEOUT): "vmm-vhost-poll"
# (--net ...,vhost=on,transport=pci,poll_us=N) and "qemu-vhost-poll" (q35, -netdev
# tap,...,vhost=on,poll-us=N), N from NET_BENCH_POLL_US (default 50).
# vhost-net with several queue pairs, over virtio-pci, 2 vCPUs and iperf3 -P 2 on the multiqueue
# TAP: "vmm-vhost-2q1" (one pair), "vmm-vhost-2q2" (--net ...,vhost=on,num_queues=2: a vhost
# device per pair) and "qemu-vhost-2q2" (q35, -netdev tap,...,vhost=on,queues=2, mq=on).
# vhost-user with the same back-end for both front-ends: our vmm-device --net on the multiqueue
# TAP with 2 pairs (in namespace mq, the VMM outside it), "vmm-vu-2q2" (--vhost-user
# net,num_queues=2,transport=pci, 2 vCPUs) and "qemu-vu-2q2" (q35, RAM in a shared memfd,
# -netdev vhost-user,queues=2, mq=on, 2 vCPUs), iperf3 -P 2; their CPU per packet counts
# vmm-device's with the front-end's (it moves the frames for both).
# The vmm configurations without "pci" in their name are transport=mmio (the default when their
# figures in docs/PERFORMANCE.md were recorded; x86_64's default is virtio-pci since session 35).
# iperf3 (Debian's package) is copied with its libraries into the guest and the emulated host.
# Each VMM runs ROUNDS times, interleaved: in odd rounds the order of even ones reversed, so
# that of each pair compared either goes first every other round; the table shows medians.
# QEMU's virtio-mmio is modern (-global virtio-mmio.force-legacy=false; 7.2's default is legacy)
# as ours. A guest's timeout grows with SECONDS (two iperf3 runs of it). A second table gives VM
# exits and CPU time per packet for g2h and h2g (payload.sh's sample_marks: KVM's exit counter
# and the VMM's CPU, with and without its vCPUs' guest time, between marks the guest prints).
# --arch aarch64 (also bench/net-arm64.sh): the same in the emulated arm64 KVM host (vGICv3), for
# the candidates that exist there: host, vmm, vmm-pci, vmm-vhost, vmm-vhost-pci (vmm cross-built
# in $LIBVMM_ARM64_BUILD, default build/arm64-bench), and qemu, qemu-vhost (QEMU -M virt with
# virtio-net-device) and qemu-vhost-pci (-M virt with virtio-net-pci): Debian's arm64 QEMU,
# iperf3 and ip (tools/install-deps-arm64 --bench), Debian's arm64 kernel in the guests.
# --arch riscv64 (also bench/net-riscv64.sh): the same in the emulated riscv64 KVM host (KVM's
# AIA; QEMU -M virt,aia=aplic-imsic), with trixie's riscv64 QEMU, iperf3, ip and kernel
# (tools/install-deps-riscv64 --bench; $LIBVMM_RISCV64_BUILD, default build/riscv64-bench).
# On both, vmm-vhost-poll and qemu-vhost-poll run when NET_BENCH_ONLY names them.
# Usage: bench/net.sh [--arch x86_64|aarch64|riscv64] [SECONDS [ROUNDS]]   (default 5 and 3;
# about 30 minutes on x86_64, every configuration). Prints tables and ratios; see docs/PERFORMANCE.md.
# NET_BENCH_ONLY="vmm vmm-tx qemu" runs only those (of host,
# vmm, vmm-tx, qemu, vmm-2q1, vmm-2q2, vmm-vhost, qemu-vhost, vmm-pci, vmm-vhost-pci,
# qemu-vhost-pci, vmm-vhost-poll, qemu-vhost-poll, vmm-vhost-2q1, vmm-vhost-2q2, qemu-vhost-2q2,
# vmm-vu-2q2, qemu-vu-2q2).
# BENCH_EXIT_REASONS=1 also counts each direction's VM exits by reason and its MSR exits by MSR,
# per packet ("exits_by_reason_per_op" and "msr_exits_per_op" lines; payload.sh's sample_marks).
set -euo pipefail
arch=x86_64
if [ "${1:-}" = --arch ]; then arch=${2:-}; shift 2 || true; fi
secs=${1:-5}
rounds=${2:-3}
poll_us=${NET_BENCH_POLL_US:-50}
[[ $arch =~ ^(x86_64|aarch64|riscv64)$ && $secs =~ ^[0-9]+$ && $rounds =~ ^[0-9]+$ ]] \
  && [ "$secs" -gt 0 ] && [ "$rounds" -gt 0 ] || {
  echo "usage: bench/net.sh [--arch x86_64|aarch64|riscv64] [SECONDS [ROUNDS]]" \
    "(positive integers)" >&2
  exit 2
}
[[ $poll_us =~ ^[0-9]+$ ]] || { echo "NET_BENCH_POLL_US: a number of µs" >&2; exit 2; }
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
cd "$repo"
only=${NET_BENCH_ONLY:-}
# What runs on arm64 and riscv64: QEMU's virt machine for both transports (no microvm or q35);
# the transmit thread, multiqueue and vhost-user candidates stay x86_64's (the last two want
# more CPUs than the emulated host has to spare).
cross_candidates="host vmm vmm-pci vmm-vhost vmm-vhost-pci qemu qemu-vhost qemu-vhost-pci"
# Measured there only when NET_BENCH_ONLY names them: the vhost worker's polling.
cross_named="vmm-vhost-poll qemu-vhost-poll"
if [ "$arch" != x86_64 ]; then
  for c in $only; do
    case " $cross_candidates $cross_named " in
      *" $c "*) ;;
      *)
        echo "NET_BENCH_ONLY: '$c' is not measured on $arch (only $cross_candidates $cross_named)" >&2
        exit 2
        ;;
    esac
  done
  only=${only:-$cross_candidates}
fi
for c in $only; do
  case $c in
    host | vmm | vmm-tx | qemu | vmm-2q1 | vmm-2q2 | vmm-vhost | qemu-vhost | vmm-pci) ;;
    vmm-vhost-pci | qemu-vhost-pci | vmm-vhost-poll | qemu-vhost-poll) ;;
    vmm-vhost-2q1 | vmm-vhost-2q2 | qemu-vhost-2q2 | vmm-vu-2q2 | qemu-vu-2q2) ;;
    *)
      echo "NET_BENCH_ONLY: unknown '$c' (host, vmm, vmm-tx, qemu, vmm-2q1, vmm-2q2, vmm-vhost," \
        "qemu-vhost, vmm-pci, vmm-vhost-pci, qemu-vhost-pci, vmm-vhost-poll, qemu-vhost-poll," \
        "vmm-vhost-2q1, vmm-vhost-2q2, qemu-vhost-2q2, vmm-vu-2q2, qemu-vu-2q2)" >&2
      exit 2
      ;;
  esac
done
if [ "$arch" = x86_64 ]; then
  native_build
  vmm_bin=build/gcc/tools/vmm/vmm iperf3=/usr/bin/iperf3
else
  # shellcheck source=bench/boot-setup.sh
  . bench/boot-setup.sh
  cross_bench_setup "$arch"
  vmm_bin=$bench_vmm iperf3=$(bench_tool iperf3)
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Guest side: iperf3 with its libraries, and /tests/netbench (run by /init).
extra=$work/guest-extra
extra_binary "$extra" "$iperf3" usr/bin/iperf3
mkdir -p "$extra/tests"
cat >"$extra/tests/netbench" <<EOS
#!/bin/sh
ip link set lo up
ip link set eth0 up && ip addr add 10.0.0.2/24 dev eth0
ping -c 3 -W 5 10.0.0.1 >/dev/null 2>&1  # ARP, and the host side is up
rtt=\$(ping -c 20 -i 0.2 10.0.0.1 | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
# netbench.streams=N on the kernel command line: iperf3 -P N (the last receiver line: the sum).
streams=\$(sed -n 's/.*netbench.streams=\([0-9]*\).*/\1/p' /proc/cmdline)
# MARK lines bracket each direction for the host's exit and CPU sampler (payload.sh:
# sample_marks), with the packets eth0 sent and received meanwhile (a TSO/GRO packet is one
# virtqueue buffer: the unit of the device's work), then a second of idling.
mark() { echo "LIBVMM-GUEST: MARK \$*"; sleep 1; }
packets() { echo \$((\$(cat /sys/class/net/eth0/statistics/rx_packets) + \$(cat /sys/class/net/eth0/statistics/tx_packets))); }
mark begin g2h
p=\$(packets)
g2h=\$(iperf3 -c 10.0.0.1 -t $secs -f m -P \${streams:-1} 2>&1 | awk '/receiver/ { v = \$(NF - 2) } END { print v }')
mark end g2h ops=\$((\$(packets) - p))
mark begin h2g
p=\$(packets)
h2g=\$(iperf3 -c 10.0.0.1 -t $secs -f m -P \${streams:-1} -R 2>&1 | awk '/receiver/ { v = \$(NF - 2) } END { print v }')
mark end h2g ops=\$((\$(packets) - p))
mark done
echo "LIBVMM-GUEST: BENCH g2h=\$g2h h2g=\$h2g rtt=\$rtt"
EOS
chmod +x "$extra/tests/netbench"

payload_new "$arch" "$vmm_bin" --extra "$extra"
# What differs between the architectures in run.sh: the guest kernel and console, vmm's
# interrupt controller, QEMU's command and machines (virtio-mmio; virtio-pci), its name in
# /proc (the sampler's) and how long a guest may take: its two iperf3 runs of SECONDS, and for
# its boot, pings and marks 290 s on x86_64, 890 s elsewhere (under TCG): at the default 5 s
# the 300 and 900 s in all that were fixed before.
# QEMU's virtio-mmio devices modern (version 2), as ours: 7.2's default is legacy.
modern_mmio="-global virtio-mmio.force-legacy=false"
if [ "$arch" = x86_64 ]; then
  payload_binary /usr/bin/qemu-system-x86_64 /usr/bin/iperf3 "$(command -v ip)" \
    build/gcc/tools/vmm-device/vmm-device
  mkdir -p "$payload/qemu-data"
  cp /usr/share/qemu/{bios-microvm.bin,qboot.rom,linuxboot_dma.bin,pvh.bin,kvmvapic.bin} \
    /usr/share/seabios/bios-256k.bin "$payload/qemu-data/"
  set -- kernel=bzImage console=ttyS0 vmm_machine= qemu_comm=qemu-system-x86 \
    guest_timeout=$((2 * secs + 290)) \
    qemu_mmio="./qemu-system-x86_64 -L qemu-data -M microvm,acpi=off -accel kvm -cpu host $modern_mmio" \
    qemu_pci="./qemu-system-x86_64 -L qemu-data -M q35 -accel kvm -cpu host" multi_stream=1
  # Per round: the host both ways, with 1 and 2 streams, and 17 guests, each both ways and a boot.
  timeout=$((600 + rounds * (secs * 2 * 19 + 17 * 60)))
else
  payload_binary "$bench_qemu" "$iperf3" "$(bench_tool ip)"
  set -- kernel=Image console=$bench_console vmm_machine="$bench_vmm_machine" \
    qemu_comm=$bench_qemu_comm guest_timeout=$((2 * secs + 890)) \
    qemu_mmio="./qemu-system-$arch -M $bench_qemu_machine -accel kvm -cpu host $modern_mmio" \
    qemu_pci="./qemu-system-$arch -M $bench_qemu_machine -accel kvm -cpu host"
  timeout=$((900 + rounds * (secs * 2 * 8 + 8 * 300)))
fi

payload_script run.sh secs="$secs" rounds="$rounds" only="$only" poll_us="$poll_us" \
  sample_reasons="${BENCH_EXIT_REASONS:-0}" "$@" <<'EOS'
# $qemu_mmio, $qemu_pci, $vmm_machine: a command or options, unquoted where used so that they split.
# want NAME: whether this run measures NAME (all unless NET_BENCH_ONLY named some).
want() { [ -z "$only" ] || case " $only " in *" $1 "*) true ;; *) false ;; esac; }
export PATH=/payload:$PATH  # for the commands "ip netns exec" runs (busybox ip has no netns)
./ip netns add nb || { echo "BENCH-SETUP no network namespaces"; exit 1; }
./ip netns add peer
./ip netns exec nb ip link set lo up
./ip netns exec peer ip link set lo up
# The VMs' side: tap0 at 10.0.0.1, with an iperf3 server.
./ip netns exec nb ip tuntap add tap0 mode tap
./ip netns exec nb ip addr add 10.0.0.1/24 dev tap0
./ip netns exec nb ip link set tap0 up
./ip netns exec nb iperf3 -s -D -B 10.0.0.1
# The ceiling: a veth pair between namespaces nb (10.0.1.1) and peer (10.0.1.2).
./ip netns exec nb ip link add veth0 type veth peer name veth1 netns peer
./ip netns exec nb ip addr add 10.0.1.1/24 dev veth0
./ip netns exec nb ip link set veth0 up
./ip netns exec peer ip addr add 10.0.1.2/24 dev veth1
./ip netns exec peer ip link set veth1 up
./ip netns exec peer iperf3 -s -D -B 10.0.1.2
# Multiqueue runs: namespace mq, the same addresses on a multiqueue TAP.
./ip netns add mq
./ip netns exec mq ip link set lo up
./ip netns exec mq ip tuntap add tap0 mode tap multi_queue
./ip netns exec mq ip addr add 10.0.0.1/24 dev tap0
./ip netns exec mq ip link set tap0 up
./ip netns exec mq iperf3 -s -D -B 10.0.0.1
sleep 1
cmdline="console=$console quiet libvmm.test=netbench"
# vu_device: a vmm-device serving 2 pairs on mq's TAP at /tmp/vu.sock, for one front-end
# (--once); its pid in $vu.
vu_device() {
  rm -f /tmp/vu.sock
  ./ip netns exec mq ./vmm-device --socket /tmp/vu.sock --net tap=tap0,num_queues=2 --once \
    --quiet &
  vu=$!
  i=0
  while [ ! -S /tmp/vu.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
}
vu_done() { kill $vu 2>/dev/null; wait $vu 2>/dev/null || true; }

# iperf3 over the host's own path: the Mbit/s received (with several streams, their sum).
host_iperf() {
  ./ip netns exec nb iperf3 -c 10.0.1.2 -t $secs -f m "$@" 2>&1 |
    awk '/receiver/ { v = $(NF - 2) } END { print v }'
}
host_round() {
  ./ip netns exec nb ping -c 3 -W 5 10.0.1.2 >/dev/null 2>&1
  rtt=$(./ip netns exec nb ping -c 20 -i 0.2 10.0.1.2 | sed -n 's|.*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
  echo "host g2h=$(host_iperf) h2g=$(host_iperf -R) rtt=$rtt"
  # The ceiling of the two-stream configurations is the host's with two streams too.
  if [ "${multi_stream:-0}" = 1 ] && { want vmm-vhost-2q2 || want qemu-vhost-2q2 ||
    want vmm-vu-2q2 || want qemu-vu-2q2; }; then
    echo "host-p2 g2h=$(host_iperf -P 2) h2g=$(host_iperf -P 2 -R) rtt=$rtt"
  fi
}
# candidate NAME: one configuration's run (host: the host's figures of the round), each VMM in
# namespace nb (the multiqueue ones in mq).
candidate() {
  case $1 in
    host) host_round ;;
    vmm)
      bench_sampled vmm netbench $guest_timeout vmm ./ip netns exec nb ./vmm $vmm_machine \
        --kernel $kernel --initrd initramfs.cpio.gz --memory 256M --cmdline "$cmdline" \
        --net tap=tap0,transport=mmio --quiet ;;
    vmm-tx)
      bench_sampled vmm-tx netbench $guest_timeout vmm ./ip netns exec nb ./vmm \
        $vmm_machine --kernel $kernel --initrd initramfs.cpio.gz --memory 256M --cmdline "$cmdline" \
        --net tap=tap0,iothread=on,transport=mmio --quiet ;;
    qemu | qemu-vhost)
      vhost=off; [ $1 = qemu-vhost ] && vhost=on
      bench_sampled $1 netbench $guest_timeout $qemu_comm ./ip netns exec nb $qemu_mmio \
        -m 256M -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=$vhost \
        -device virtio-net-device,netdev=n0 -kernel $kernel -initrd initramfs.cpio.gz \
        -append "$cmdline" ;;
    vmm-vhost)
      bench_sampled vmm-vhost netbench $guest_timeout vmm ./ip netns exec nb ./vmm \
        $vmm_machine --kernel $kernel --initrd initramfs.cpio.gz --memory 256M --cmdline "$cmdline" \
        --net tap=tap0,vhost=on,transport=mmio --quiet ;;
    vmm-pci)
      bench_sampled vmm-pci netbench $guest_timeout vmm ./ip netns exec nb ./vmm \
        $vmm_machine --kernel $kernel --initrd initramfs.cpio.gz --memory 256M --cmdline "$cmdline" \
        --net tap=tap0,transport=pci --quiet ;;
    vmm-vhost-pci)
      bench_sampled vmm-vhost-pci netbench $guest_timeout vmm \
        ./ip netns exec nb ./vmm \
        $vmm_machine --kernel $kernel --initrd initramfs.cpio.gz --memory 256M --cmdline "$cmdline" \
        --net tap=tap0,vhost=on,transport=pci --quiet ;;
    qemu-vhost-pci)
      bench_sampled qemu-vhost-pci netbench $guest_timeout $qemu_comm \
        ./ip netns exec nb $qemu_pci -m 256M -smp 1 \
        -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=on \
        -device virtio-net-pci,netdev=n0,romfile= -kernel $kernel -initrd initramfs.cpio.gz \
        -append "$cmdline" ;;
    vmm-vhost-poll)
      bench_sampled vmm-vhost-poll netbench $guest_timeout vmm \
        ./ip netns exec nb ./vmm \
        $vmm_machine --kernel $kernel --initrd initramfs.cpio.gz --memory 256M --cmdline "$cmdline" \
        --net tap=tap0,vhost=on,transport=pci,poll_us=$poll_us --quiet ;;
    qemu-vhost-poll)
      bench_sampled qemu-vhost-poll netbench $guest_timeout $qemu_comm \
        ./ip netns exec nb $qemu_pci -m 256M -smp 1 \
        -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=on,poll-us=$poll_us \
        -device virtio-net-pci,netdev=n0,romfile= -kernel $kernel -initrd initramfs.cpio.gz \
        -append "$cmdline" ;;
    vmm-2q1 | vmm-2q2)
      bench_sampled $1 netbench $guest_timeout vmm ./ip netns exec mq ./vmm $vmm_machine \
        --kernel $kernel --initrd initramfs.cpio.gz --memory 256M --vcpus 2 \
        --cmdline "$cmdline netbench.streams=2" \
        --net tap=tap0,num_queues=${1#vmm-2q},transport=mmio --quiet ;;
    vmm-vhost-2q1 | vmm-vhost-2q2)
      bench_sampled $1 netbench $guest_timeout vmm ./ip netns exec mq ./vmm $vmm_machine \
        --kernel $kernel --initrd initramfs.cpio.gz --memory 256M --vcpus 2 \
        --cmdline "$cmdline netbench.streams=2" \
        --net tap=tap0,vhost=on,transport=pci,num_queues=${1#vmm-vhost-2q} --quiet ;;
    qemu-vhost-2q2)
      bench_sampled qemu-vhost-2q2 netbench $guest_timeout $qemu_comm \
        ./ip netns exec mq $qemu_pci -m 256M -smp 2 \
        -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=on,queues=2 \
        -device virtio-net-pci,netdev=n0,mq=on,vectors=6,romfile= -kernel $kernel \
        -initrd initramfs.cpio.gz -append "$cmdline netbench.streams=2" ;;
    vmm-vu-2q2)
      vu_device
      bench_sampled vmm-vu-2q2 netbench $guest_timeout "vmm vmm-device" ./vmm $vmm_machine \
        --kernel $kernel --initrd initramfs.cpio.gz --memory 256M --vcpus 2 \
        --cmdline "$cmdline netbench.streams=2" \
        --vhost-user net,socket=/tmp/vu.sock,num_queues=2,transport=pci --quiet
      vu_done ;;
    qemu-vu-2q2)
      vu_device
      bench_sampled qemu-vu-2q2 netbench $guest_timeout "$qemu_comm vmm-device" ./qemu-system-x86_64 \
        -L qemu-data -M q35,memory-backend=mem -accel kvm -cpu host -m 256M -smp 2 \
        -object memory-backend-memfd,id=mem,size=256M,share=on \
        -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -chardev socket,id=vn,path=/tmp/vu.sock -netdev vhost-user,id=n0,chardev=vn,queues=2 \
        -device virtio-net-pci,netdev=n0,mq=on,vectors=6,romfile= -kernel $kernel \
        -initrd initramfs.cpio.gz -append "$cmdline netbench.streams=2"
      vu_done ;;
  esac
}
# The order alternates: this one in even rounds, reversed in odd ones, so that of each pair
# compared (vmm against its QEMU peer, a variant against its base) each goes first every other
# round, and a configuration early in one round is late in the next. (Not bench/boot.sh's
# rotation by one: with this many configurations and a few rounds it would move most of them
# only a place or two, each pair keeping its order.)
order="host vmm vmm-tx qemu qemu-vhost vmm-vhost vmm-pci vmm-vhost-pci qemu-vhost-pci vmm-vhost-poll
  qemu-vhost-poll vmm-2q1 vmm-vhost-2q1 vmm-2q2 vmm-vhost-2q2 qemu-vhost-2q2 vmm-vu-2q2 qemu-vu-2q2"
reversed=
for c in $order; do reversed="$c $reversed"; done
round=0
while [ $round -lt $rounds ]; do
  this=$order; [ $((round % 2)) = 0 ] || this=$reversed
  for c in $this; do want $c && candidate $c; done
  round=$((round + 1))
done
EOS
collect '^((host|host-p2|vmm|vmm-tx|qemu|vmm-2q1|vmm-2q2|vmm-vhost|qemu-vhost|vmm-pci|vmm-vhost-pci|qemu-vhost-pci|vmm-vhost-poll|qemu-vhost-poll|vmm-vhost-2q1|vmm-vhost-2q2|qemu-vhost-2q2|vmm-vu-2q2|qemu-vu-2q2) (g2h=|g2h |h2g )|BENCH-SETUP|BENCH-WARNING)' --timeout $timeout
need_results '^(vmm|qemu)[a-z0-9-]* '
echo "per round:"
sed 's/^/  /' "$work/results"
echo "median of $rounds rounds, iperf3 ${secs} s per direction, 1 vCPU, 256 MiB guest," \
  "emulated $arch KVM host"
printf '%-6s %6s %10s %10s %10s %10s %9s %9s %9s\n' what unit host vmm vmm-tx qemu vmm/qemu \
  vmm-tx/qemu vmm/host
for f in g2h h2g rtt; do
  unit=Mbit/s; [ $f = rtt ] && unit=ms
  h=$(result $f host) v=$(result $f vmm) t=$(result $f vmm-tx) q=$(result $f qemu)
  printf '%-6s %6s %10s %10s %10s %10s %9s %9s %9s\n' $f $unit "${h:--}" "${v:--}" "${t:--}" \
    "${q:--}" "$(ratio "$v" "$q")" "$(ratio "$t" "$q")" "$(ratio "$v" "$h")"
done
echo "spread (min..max over the rounds)"
for f in g2h h2g rtt; do
  printf '%-6s %13s %13s %13s %13s\n' $f "$(spread1 $f host)" "$(spread1 $f vmm)" \
    "$(spread1 $f vmm-tx)" "$(spread1 $f qemu)"
done
# Candidates measured on x86_64 only (elsewhere: cross_candidates above).
if [ "$arch" = x86_64 ]; then
  echo "multiqueue: 2 vCPUs, iperf3 -P 2 (median of $rounds rounds)"
  printf '%-6s %6s %10s %10s %9s\n' what unit vmm-2q1 vmm-2q2 2q2/2q1
  for f in g2h h2g rtt; do
    unit=Mbit/s; [ $f = rtt ] && unit=ms
    a=$(result $f vmm-2q1) b=$(result $f vmm-2q2)
    printf '%-6s %6s %10s %10s %9s\n' $f $unit "${a:--}" "${b:--}" "$(ratio "$b" "$a")"
  done
fi
echo "vhost-net: the data path in the host kernel, and virtio-pci (median of $rounds rounds)"
printf '%-6s %6s %9s %9s %9s %9s %9s %9s %9s %9s\n' what unit vmm-vhost qemu-vhost vmm-pci \
  vhost-pci qemu-v-pci vhost/qemu v-pci/qemu v-pci/host
for f in g2h h2g rtt; do
  unit=Mbit/s; [ $f = rtt ] && unit=ms
  a=$(result $f vmm-vhost) b=$(result $f qemu-vhost) h=$(result $f host)
  p=$(result $f vmm-pci) vp=$(result $f vmm-vhost-pci) qp=$(result $f qemu-vhost-pci)
  printf '%-6s %6s %9s %9s %9s %9s %9s %9s %9s %9s\n' $f $unit "${a:--}" "${b:--}" "${p:--}" \
    "${vp:--}" "${qp:--}" "$(ratio "$a" "$b")" "$(ratio "$vp" "$qp")" "$(ratio "$vp" "$h")"
done
# On x86_64, and elsewhere when NET_BENCH_ONLY named a polling candidate.
if [ "$arch" = x86_64 ] || [ -n "$(result g2h vmm-vhost-poll)$(result g2h qemu-vhost-poll)" ]; then
  echo "vhost-net over virtio-pci, the kernel worker polling drained rings up to $poll_us µs"
  printf '%-6s %6s %9s %9s %9s %9s %9s\n' what unit vhost-pci v-poll qemu-poll poll/qemu poll/host
  for f in g2h h2g rtt; do
    unit=Mbit/s; [ $f = rtt ] && unit=ms
    vp=$(result $f vmm-vhost-pci) a=$(result $f vmm-vhost-poll) b=$(result $f qemu-vhost-poll)
    h=$(result $f host)
    printf '%-6s %6s %9s %9s %9s %9s %9s\n' $f $unit "${vp:--}" "${a:--}" "${b:--}" \
      "$(ratio "$a" "$b")" "$(ratio "$a" "$h")"
  done
fi
# x86_64 only, as the multiqueue table.
if [ "$arch" = x86_64 ]; then
  echo "vhost-net, 2 vCPUs, iperf3 -P 2, over virtio-pci (median of $rounds rounds; host: -P 2)"
  printf '%-6s %6s %9s %9s %9s %9s %9s %9s %9s\n' what unit host v-2q1 v-2q2 qemu-v-2q2 2q2/2q1 \
    2q2/qemu 2q2/host
  for f in g2h h2g rtt; do
    unit=Mbit/s; [ $f = rtt ] && unit=ms
    h=$(result $f host-p2) a=$(result $f vmm-vhost-2q1) b=$(result $f vmm-vhost-2q2)
    q=$(result $f qemu-vhost-2q2)
    printf '%-6s %6s %9s %9s %9s %9s %9s %9s %9s\n' $f $unit "${h:--}" "${a:--}" "${b:--}" \
      "${q:--}" "$(ratio "$b" "$a")" "$(ratio "$b" "$q")" "$(ratio "$b" "$h")"
  done
  echo "vhost-user, vmm-device's 2 pairs for both front-ends, 2 vCPUs, iperf3 -P 2, virtio-pci"
  printf '%-6s %6s %9s %9s %9s %9s %9s\n' what unit host vmm-vu qemu-vu vu/qemu vu/host
  for f in g2h h2g rtt; do
    unit=Mbit/s; [ $f = rtt ] && unit=ms
    h=$(result $f host-p2) a=$(result $f vmm-vu-2q2) b=$(result $f qemu-vu-2q2)
    printf '%-6s %6s %9s %9s %9s %9s %9s\n' $f $unit "${h:--}" "${a:--}" "${b:--}" \
      "$(ratio "$a" "$b")" "$(ratio "$a" "$h")"
  done
fi
echo "VM exits and CPU per packet (eth0's packets both ways in the guest, a TSO/GRO packet"
echo "counting once), medians over the rounds; cpu: all the VMM's threads, guest time"
echo "included; own: without the guest time"
per_op_rows "g2h h2g" "vmm vmm-tx qemu vmm-2q1 vmm-2q2 vmm-vhost qemu-vhost vmm-pci vmm-vhost-pci qemu-vhost-pci vmm-vhost-poll qemu-vhost-poll vmm-vhost-2q1 vmm-vhost-2q2 qemu-vhost-2q2 vmm-vu-2q2 qemu-vu-2q2"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
