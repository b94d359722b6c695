#!/usr/bin/env bash
# virtIO network with Linux's own driver, inside the emulated KVM host and there inside a network
# namespace this test creates (the TAPs, the bridge and every address live in it; no traffic
# leaves it). Two VMs on bridge br0 (host address 10.0.0.1): VM A (10.0.0.2) on a TAP made
# beforehand with a given MAC, transmitting on the device's own thread (iothread=on), a
# virtio-pci function (x86_64's default transport), VM B (10.0.0.3) on a TAP vmm creates itself, default MAC, over
# virtio-mmio (transport=mmio), with
# 2 vCPUs and 2 queue pairs (num_queues=2: a multiqueue TAP, VIRTIO_NET_F_MQ), VM C (10.0.0.4)
# on a TAP vmm creates, with 2 vCPUs and 2 queue pairs whose frames the host kernel's vhost-net
# moves (vhost=on: a vhost device per pair; its worker polling drained rings for 20 µs,
# poll_us=20; the control queue served by vmm), a virtio-pci function whose interrupts the
# kernel signals on its MSI-X vectors' irqfds.
# Checks: A's eth0 has the MAC it was given, A pings the host, 4 MiB go over TCP each way with
# the checksum verified at the receiving end, A's transmit thread ran, A pings B across the bridge, B's driver uses
# both queue pairs and tap1 has two queues; the host's tap0 set down and up again, A's link
# follows; C pings the host and B, moves 4 MiB each way intact, its link follows tap2's,
# and its rings ran in the kernel (vmm handed them over, a vhost worker exists for it), its
# driver chose both pairs on the control queue and tap2 has two queues.
# Usage: linux_net.sh VMM
set -euo pipefail
vmm=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
payload_new x86_64 "$vmm"
payload_binary "$(command -v ip)"  # busybox ip has no netns
payload_binary "$(command -v setpriv)"  # busybox's has no --reuid

payload_script run.sh <<'EOS'
./ip netns add libvmm-net || { echo "cannot create a network namespace"; exit 1; }
./ip netns exec libvmm-net ./net.sh
status=$?
./ip netns delete libvmm-net
exit $status
EOS
payload_script net.sh <<'EOS'
# Runs inside the namespace.
field() { sed -n "s/.*LIBVMM-GUEST: $2: //p" "$1" | tr -d '\r' | head -n 1; }
ip=./ip
$ip link set lo up
$ip link add br0 type bridge
$ip addr add 10.0.0.1/24 dev br0
$ip link set br0 up
$ip tuntap add tap0 mode tap
$ip link set tap0 master br0
$ip link set tap0 up

mkdir -p /www
dd if=/dev/urandom of=/www/to-guest bs=64k count=64 2>/dev/null
to_guest=$(sha256sum </www/to-guest | cut -d' ' -f1)
httpd -p 10.0.0.1:8080 -h /www

guest --memory 160M --serial file:/tmp/a.out \
  --cmdline "console=ttyS0 quiet libvmm.test=net" --net tap=tap0,mac=52:54:00:12:34:56,iothread=on \
  2>/tmp/a.err &
a=$!
guest --memory 160M --vcpus 2 --serial file:/tmp/b.out \
  --cmdline "console=ttyS0 quiet libvmm.test=net_peer" --net tap=tap1,num_queues=2,transport=mmio 2>/tmp/b.err &
b=$!
guest --memory 160M --vcpus 2 --serial file:/tmp/c.out -v \
  --cmdline "console=ttyS0 quiet libvmm.test=net libvmm.addr=10.0.0.4" \
  --net tap=tap2,mac=52:54:00:12:34:58,vhost=on,num_queues=2,transport=pci,poll_us=20 \
  2>/tmp/c.err &
c=$!
started=$(date +%s)
# How long each stage took, in the log (a passing run has been seen taking 150 s, not 18).
stage() { echo "linux_net: $1 after $(($(date +%s) - started)) s"; }
# vmm creates tap1; put it on the bridge as soon as it exists.
i=0
while [ ! -e /sys/class/net/tap1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "vmm created tap1" [ -e /sys/class/net/tap1 ]
$ip link set tap1 master br0
$ip link set tap1 up
while [ ! -e /sys/class/net/tap2 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
check "vmm created tap2" [ -e /sys/class/net/tap2 ]
$ip link set tap2 master br0
$ip link set tap2 up

check "eth0 has the MAC it was given" wait_for /tmp/a.out "eth0 address: 52:54:00:12:34:56" 180
check "the guest pings the host" wait_for /tmp/a.out "ping host ok" 60
stage "VM A up and pinging"
if [ $failed -ne 0 ]; then  # nothing else can work: say why now
  $ip -s link
  finish linux_net /tmp/a.out /tmp/a.err
  exit 1
fi
check "host to guest: 4 MiB arrive intact" wait_for /tmp/a.out "to-guest sha256: $to_guest" 120
if wait_for_match /tmp/a.out "from-guest sha256: [0-9a-f]{64}" 120; then
  want=$(field /tmp/a.out "from-guest sha256")
  timeout 60 wget -q -O /tmp/from-guest http://10.0.0.2:8080/from-guest || true
  got=$(sha256sum </tmp/from-guest | cut -d' ' -f1)
  check "guest to host: 4 MiB arrive intact" [ "$got" = "$want" ]
else
  check "guest to host: the guest offered its file" false
fi
stage "4 MiB each way"
# Only VM A's vmm has a thread of that name (its first device's transmit thread).
check "VM A's frames went out on its transmit thread (net-tx0)" \
  sh -c 'cat /proc/[0-9]*/task/*/comm 2>/dev/null | grep -qx net-tx0'
check "VM A pings VM B across the bridge" wait_for /tmp/a.out "ping peer ok" 200
stage "VM A pinged VM B"
tap0_link() { $ip link set tap0 "$1"; }
link_checks tap0_link /tmp/a.out /tmp/a.err "VM A"
# VM C, vhost=on: the same traffic, moved by the kernel.
check "vhost=on: VM C's eth0 has the MAC it was given" \
  wait_for /tmp/c.out "eth0 address: 52:54:00:12:34:58" 60
check "vhost=on: VM C pings the host" wait_for /tmp/c.out "ping host ok" 60
check "vhost=on: host to guest, 4 MiB arrive intact" wait_for /tmp/c.out "to-guest sha256: $to_guest" 120
if wait_for_match /tmp/c.out "from-guest sha256: [0-9a-f]{64}" 120; then
  want=$(field /tmp/c.out "from-guest sha256")
  rm -f /tmp/from-guest
  timeout 60 wget -q -O /tmp/from-guest http://10.0.0.4:8080/from-guest || true
  got=$(sha256sum </tmp/from-guest | cut -d' ' -f1)
  check "vhost=on: guest to host, 4 MiB arrive intact" [ "$got" = "$want" ]
else
  check "vhost=on: guest to host: the guest offered its file" false
fi
check "vhost=on: VM C pings VM B" wait_for /tmp/c.out "ping peer ok" 200
tap2_link() { $ip link set tap2 "$1"; }
link_checks tap2_link /tmp/c.out /tmp/c.err "vhost=on: VM C"
check "vhost=on: vmm handed both rings to the kernel at DRIVER_OK" \
  grep -q "vhost-net0: started in the host kernel" /tmp/c.err
check "vhost=on: the device is a PCI function" grep -q "vhost-net0 at PCI 00:" /tmp/c.err
check "vhost=on: the kernel worker polls drained rings (poll_us=20)" \
  grep -q "its worker polling drained rings up to 20 µs" /tmp/c.err
# Pair 0's transmit queue (1) and pair 1's (3).
direct_vectors() {
  grep -q "vhost-net0: queue 1 interrupts go straight to MSI-X vector" /tmp/c.err &&
    grep -q "vhost-net0: queue 3 interrupts go straight to MSI-X vector" /tmp/c.err
}
check "vhost=on: the kernel signals both pairs' MSI-X vectors itself (irqfds)" direct_vectors
# The kernel's worker for C's rings: a thread named vhost-PID, PID that of the vmm (C's only).
vhost_worker() {
  for f in /proc/[0-9]*/task/*/comm; do
    n=$(cat "$f" 2>/dev/null) || continue
    case $n in vhost-[0-9]*) grep -q "vhost=on" "/proc/${n#vhost-}/cmdline" && return 0 ;; esac
  done
  return 1
}
check "vhost=on: a vhost worker runs for VM C's vmm" vhost_worker
check "vhost=on: vmm handed 2 queue pairs to the kernel (num_queues=2)" \
  grep -q "vhost-net0: started in the host kernel, features .*, 2 queue pairs" /tmp/c.err
check "vhost=on: the driver asked for both pairs on the control queue vmm serves" \
  grep -q "vhost-net0: 2 of 2 queue pairs in use" /tmp/c.err
# tap_queues TAP: how many queues a TAP has.
tap_queues() { ls -d "/sys/class/net/$1/queues/"rx-* | wc -l; }
check "vhost=on: tap2 is a TAP with 2 queues" [ "$(tap_queues tap2)" -eq 2 ]
stage "VM C checked"
check "VM B has a locally administered unicast default MAC" \
  grep -qE "peer eth0 address: [0-9a-f][26ae]:" /tmp/b.out
check "VM B's driver uses 2 queue pairs (num_queues=2)" \
  grep -q "peer eth0 queues: rx-0 rx-1 tx-0 tx-1" /tmp/b.out
check "tap1 is a TAP with 2 queues" [ "$(tap_queues tap1)" -eq 2 ]
check "vmm B said the TAP it made starts down, and how to set it up" \
  grep -qF "TAP device 'tap1' is down, and so is the guest's link until it is up: ip link set tap1 up" /tmp/b.err
check "... and saw it come up" grep -qF "TAP device 'tap1' is up, and so is the guest's link" /tmp/b.err
touch /www/done
wait $a; sa=$?
wait $b; sb=$?
wait $c; sc=$?
stage "the VMs exited"
check "vmm A exit status 0" [ "$sa" -eq 0 ]
check "vmm B exit status 0" [ "$sb" -eq 0 ]
check "vmm C exit status 0" [ "$sc" -eq 0 ]
# Bad --net input that needs a TAP to exist or permissions to be missing: one line, exit 2,
# before any guest starts. As nobody, with /dev/kvm opened up (this host is ours).
bad() {  # bad "message fragment" ARGS...
  msg=$1; shift
  rm -f /tmp/bad.out
  "$@" --kernel bzImage --serial file:/tmp/bad.out </dev/null >/dev/null 2>/tmp/bad.err
  st=$?
  [ "$st" -eq 2 ] && [ "$(wc -l </tmp/bad.err)" -eq 1 ] && grep -qF -- "$msg" /tmp/bad.err \
    && [ ! -s /tmp/bad.out ] || { echo "exit $st: $(cat /tmp/bad.err)"; return 1; }
}
nobody() { ./setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
kvm_mode=$(stat -c %a /dev/kvm) tun_mode=$(stat -c %a /dev/net/tun)
chmod 666 /dev/kvm /dev/net/tun
check "--net on an interface that is not a TAP" bad "--net tap=br0: TAP device 'br0': exists but is not a TAP" ./vmm --net tap=br0
check "--net num_queues=2 on a TAP made without multi_queue" \
  bad "--net tap=tap0,num_queues=2: TAP device 'tap0': num_queues=2 needs a multiqueue TAP" \
  ./vmm --net tap=tap0,num_queues=2
check "--net on a missing TAP without the right to create it" \
  bad "--net tap=nosuchtap: TAP device 'nosuchtap': no such TAP device, and creating one needs CAP_NET_ADMIN" \
  nobody ./vmm --net tap=nosuchtap
chmod 600 /dev/net/tun
check "--net without permission on /dev/net/tun" \
  bad "--net tap=tap0: TAP device 'tap0': no permission to open /dev/net/tun" nobody ./vmm --net tap=tap0
chmod 666 /dev/net/tun
$ip tuntap add tap3 mode tap user 65534  # one nobody may attach to
vhost_mode=$(stat -c %a /dev/vhost-net)
chmod 600 /dev/vhost-net
check "--net vhost=on without permission on /dev/vhost-net" \
  bad "--net tap=tap3,vhost=on: no permission to open /dev/vhost-net" nobody ./vmm --net tap=tap3,vhost=on
chmod "$vhost_mode" /dev/vhost-net
chmod "$tun_mode" /dev/net/tun
chmod "$kvm_mode" /dev/kvm
finish linux_net /tmp/a.out /tmp/a.err /tmp/b.out /tmp/b.err /tmp/c.out /tmp/c.err
EOS
run_payload --timeout 600
