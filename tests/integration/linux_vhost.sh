#!/usr/bin/env bash
# vhost-user front-end with real back-ends, in the emulated KVM host. One VM shares a folder
# through Debian's virtiofsd (--fs): the guest mounts the tag, reads a file the host put there,
# writes one the host then reads, lists, renames, unlinks, and copies 64 MiB with the checksum
# verified on the host; then virtiofsd is killed and vmm logs it while the guest goes on.
# A second VM gets its disk from qemu-storage-daemon (--vhost-user blk, a virtio-pci function):
# it reads the host's pattern, writes and flushes its own, which the host finds in the image.
# Its second disk comes from trixie's qemu-storage-daemon (QEMU 10, tools/emuhost/trixie-qsd):
# the host grows it through that daemon's QMP monitor (block_resize), and the guest sees the
# new size (the daemon's CONFIG_CHANGE_MSG on its own channel, then the config interrupt;
# Debian 12's 7.2 sends none).
# Also the refusals that need no guest (no socket, refused connection).
# With VMM_DEVICE (x86_64), a third VM gets its disk from our own vmm-device (--vhost-user
# blk): the host's pattern read, the guest's written and flushed and found in the image while
# vmm-device still serves; the image grown on the host, SIGUSR1 to vmm-device, and the guest
# sees the new size (our CONFIG_CHANGE_MSG to vmm); then vmm-device is killed: vmm logs it, the
# guest sees its device in DEVICE_NEEDS_RESET and goes on. And QEMU is the front-end to our
# vmm-device (-M microvm with its RAM in a shared memfd, -device vhost-user-blk): its guest
# reads the host's pattern and writes and flushes its own, which the host finds in the image,
# and sees the disk grow the same way (QEMU's front-end taking our CONFIG_CHANGE_MSG).
# The same two VMs also get a network device from a vmm-device --net on a TAP inside a network
# namespace this test creates (the VMM outside it: only the back-end touches the network): each
# guest's eth0 has the MAC the back-end gives, pings the host and moves 1 MiB over TCP each
# way, checksums compared. The one vmm-device serves our vmm, then QEMU (-netdev vhost-user),
# with two queue pairs on a multiqueue TAP: our vmm's guest has 2 vCPUs and uses both (vmm
# serves the control queue and enables the second pair's rings in vmm-device), QEMU's has one
# and keeps the second pair's rings disabled. Behind our vmm, the TAP set down and up again:
# vmm-device tells vmm (CONFIG_CHANGE_MSG) and the guest's carrier follows.
# The vmm-device VM's hvc0 is a third vmm-device (--console stdio, with a named port on a pty:
# MULTIPORT through vhost-user, a line each way there too): the guest's line reaches
# its stdout, and a line typed on its stdin reaches the guest. That stdio is a terminal: hvc0
# has its size, and a new one when it is resized (a RESIZE message from vmm-device, F_SIZE).
# Usage: linux_vhost.sh VMM [ARCH [VMM_DEVICE]]
set -euo pipefail
vmm=$1
arch=${2:-x86_64}
vmm_device=${3:-}
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
payload_new "$arch" "$vmm"
payload_binary /usr/lib/qemu/virtiofsd
if [ "$arch" = x86_64 ]; then
  payload_binary "$(command -v qemu-storage-daemon)"
  cp -r "$("$repo/tools/emuhost/trixie-qsd")" "$payload/qsd10"
fi
if [ -n "$vmm_device" ]; then
  payload_binary "$vmm_device" /usr/bin/qemu-system-x86_64
  payload_binary "$(command -v ip)" "$(command -v nsenter)"  # busybox ip has no netns
  payload_binary "$(command -v script)"  # a terminal for vmm-device's console
  mkdir -p "$payload/qemu-data"
  cp /usr/share/qemu/{bios-microvm.bin,qboot.rom,linuxboot_dma.bin,pvh.bin} "$payload/qemu-data/"
fi

payload_script run.sh <<'EOS'
# Refusals before any guest: one line naming the device and the socket, exit status 2.
./vmm --kernel $kernel --fs tag=t,socket=/tmp/none.sock 2>/tmp/none.err
status=$?
check "no socket: exit status 2" [ $status -eq 2 ]
check "no socket: the line names device and socket" \
  grep -q "virtio-fs backend at /tmp/none.sock: No such file or directory" /tmp/none.err
cat /tmp/none.err

if ! FS_OPTIONS=,transport=mmio virtiofs_checks 64; then
  finish linux_vhost /tmp/fs.out /tmp/fs.err /tmp/vfsd.err
  exit 1
fi

# A socket nobody listens on any more: connection refused.
./vmm --kernel $kernel --fs tag=t,socket=/tmp/vfs.sock 2>/tmp/refused.err
check "refused: one line naming device and socket" \
  grep -q "virtio-fs backend at /tmp/vfs.sock: Connection refused" /tmp/refused.err

# A disk from qemu-storage-daemon's vhost-user-blk export.
if [ -x ./qemu-storage-daemon ]; then
  dd if=/dev/urandom of=/tmp/host-pattern bs=1M count=1 2>/dev/null
  dd if=/dev/zero of=/tmp/blk.img bs=1M count=8 2>/dev/null
  dd if=/tmp/host-pattern of=/tmp/blk.img conv=notrunc 2>/dev/null
  ./qemu-storage-daemon --blockdev driver=file,node-name=disk,filename=/tmp/blk.img \
    --export type=vhost-user-blk,id=exp,node-name=disk,addr.type=unix,addr.path=/tmp/qsd.sock,writable=on \
    2>/tmp/qsd.err &
  qsd=$!
  # vdb: 8 MiB from QEMU 10's daemon, its QMP monitor on two FIFOs (the pipe chardev opens
  # them blocking: a reader of .out and a writer of .in first).
  dd if=/dev/zero of=/tmp/grow.img bs=1M count=8 2>/dev/null
  mkfifo /tmp/qsdqmp.in /tmp/qsdqmp.out
  exec 5<>/tmp/qsdqmp.in
  cat /tmp/qsdqmp.out >/tmp/qmp.log &
  ./qsd10/qemu-storage-daemon --blockdev driver=file,node-name=grow,filename=/tmp/grow.img \
    --export type=vhost-user-blk,id=exp,node-name=grow,addr.type=unix,addr.path=/tmp/qsd10.sock,writable=on \
    --chardev pipe,id=qmp,path=/tmp/qsdqmp --monitor chardev=qmp 2>/tmp/qsd10.err &
  qsd10=$!
  i=0
  while { [ ! -S /tmp/qsd.sock ] || [ ! -S /tmp/qsd10.sock ]; } && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  # Grows vdb from 8 to 16 MiB once the guest waits for it.
  (wait_for /tmp/blk.out "waiting for vdb to grow" 300 && printf '%s\n' \
    '{"execute":"qmp_capabilities"}' \
    '{"execute":"block_resize","arguments":{"node-name":"grow","size":16777216}}' >&5) &
  resizer=$!
  # Over virtio-pci: the daemon's interrupts relayed to the queue's MSI-X vector.
  boot blk "quiet libvmm.test=vhost_blk libvmm.resize=vdb" -v \
    --vhost-user blk,socket=/tmp/qsd.sock,transport=pci \
    --vhost-user blk,socket=/tmp/qsd10.sock,transport=pci
  kill $resizer 2>/dev/null
  check "blk: vmm exit status 0" [ $status -eq 0 ]
  check "blk: the disk is a virtio-pci function" grep -q "vhost-user-blk0 at PCI 00:" /tmp/blk.err
  check "blk: the daemon signals the queue's MSI-X vector itself (an irqfd)" \
    grep -q "vhost-user-blk0: queue 0 interrupts go straight to MSI-X vector" /tmp/blk.err
  check "blk: the disk has 8 MiB" grep -q "vda sectors: 16384" /tmp/blk.out
  check "blk: FLUSH is offered (write back)" grep -q "vda write cache: write back" /tmp/blk.out
  check "blk: the guest reads the host's pattern" \
    grep -q "read md5 $(md5sum </tmp/host-pattern | cut -d' ' -f1)" /tmp/blk.out
  check "blk: written and flushed" grep -q "written and flushed" /tmp/blk.out
  check "blk: vdb grown to 16 MiB under QEMU 10's daemon, the guest sees it (CONFIG_CHANGE_MSG)" \
    grep -q "vdb sectors now: 32768" /tmp/blk.out
  check "blk: vmm heard that daemon's config change" \
    grep -q "vhost-user-blk1 backend at /tmp/qsd10.sock: its config space changed" /tmp/blk.err
  want=$(sed -n 's/.*LIBVMM-GUEST: pattern md5 //p' /tmp/blk.out | tr -d '\r')
  kill $qsd $qsd10
  await $qsd qsd 30
  await $qsd10 qsd10 30
  exec 5>&-
  cat /tmp/qmp.log
  got=$(dd if=/tmp/blk.img bs=1M skip=1 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
  check "blk: the host finds the guest's pattern in the image" [ -n "$want" -a "$got" = "$want" ]
fi

# A network device from our own vmm-device, on a TAP in a namespace of its own (10.0.0.1 there;
# the guests are 10.0.0.2), for the vmm-device VM and then the QEMU one.
net_mac=52:54:00:12:34:57
netns() { ./nsenter --net=/run/netns/libvmm-vhost "$@"; }
tap0_link() { netns ./ip link set tap0 "$1"; }
# Checks of tests/vhost_net, whose output is in $1: ping, 1 MiB each way over TCP; behind vmm, the
# guest's link following the TAP (link_checks).
net_checks() {
  out=$1 who=$2
  check "$who net: eth0 has the MAC vmm-device gave" wait_for $out "net eth0 address: $net_mac" 240
  check "$who net: the guest pings the host" wait_for $out "net ping host ok" 60
  check "$who net: host to guest, 1 MiB intact" wait_for $out "net to-guest sha256: $to_guest" 120
  # All 64 digits: the guest's serial line may still be arriving when its start is seen (ci81's
  # "corrupted" transfer was a hash read half-written).
  if wait_for_match $out "net from-guest sha256: [0-9a-f]{64}" 60; then
    want=$(sed -n 's/.*LIBVMM-GUEST: net from-guest sha256: \([0-9a-f]\{64\}\).*/\1/p' $out | head -n 1)
    rm -f /tmp/from-guest
    for try in 1 2 3; do
      netns timeout 60 wget -q -O /tmp/from-guest http://10.0.0.2:8080/from-guest && break
      sleep 2
    done
    got=$(sha256sum </tmp/from-guest | cut -d' ' -f1)
    [ "$got" = "$want" ] ||
      echo "$who net: fetched $(wc -c </tmp/from-guest 2>/dev/null || echo no) bytes, sha256 $got, the guest's $want"
    check "$who net: guest to host, 1 MiB intact" [ "$got" = "$want" ]
  else
    check "$who net: the guest offered its file" false
  fi
  # vmm-device follows its TAP and says so to vmm (CONFIG_CHANGE_MSG), which tells the guest;
  # QEMU's front-end keeps a link state of its own.
  [ "$who" != vmm ] || link_checks tap0_link $out /tmp/net-device.err "vmm-device net"
  touch /www/net-done
  check "$who net: the guest is done" wait_for $out "net done" 60
  rm -f /www/net-done
  netns ./ip neigh flush dev tap0  # the next guest is 10.0.0.2 too
}
netdev=
if [ -x ./vmm-device ] && ./ip netns add libvmm-vhost; then
  netns ./ip link set lo up
  netns ./ip tuntap add tap0 mode tap multi_queue
  netns ./ip addr add 10.0.0.1/24 dev tap0
  netns ./ip link set tap0 up
  mkdir -p /www
  head -c 1048576 /dev/urandom >/www/to-guest
  to_guest=$(sha256sum </www/to-guest | cut -d' ' -f1)
  # Not through the function, and nsenter execs (ip netns exec forks): $! is the program's pid.
  ./nsenter --net=/run/netns/libvmm-vhost httpd -f -p 10.0.0.1:8080 -h /www &
  httpd=$!
  ./nsenter --net=/run/netns/libvmm-vhost ./vmm-device --socket /tmp/net.sock -v \
    --net tap=tap0,mac=$net_mac,num_queues=2 2>/tmp/net-device.err &
  netdev=$!
  i=0
  while [ ! -S /tmp/net.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  check "vmm-device --net listens" [ -S /tmp/net.sock ]
fi

# A disk from our own vmm-device (its seccomp filters in kill mode: a call off a list ends it),
# its network device and its console from two more.
if [ -x ./vmm-device ]; then
  # The console's stdio is a terminal of 100 x 30: its size crosses vhost-user (F_SIZE).
  start_on_terminal con 100 30 ./vmm-device --socket /tmp/con.sock \
    --console stdio,port1=org.libvmm.test=pty
  condev=$pid
  i=0
  while [ ! -S /tmp/con.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  dd if=/dev/urandom of=/tmp/dev-pattern bs=1M count=1 2>/dev/null
  dd if=/dev/zero of=/tmp/dev.img bs=1M count=8 2>/dev/null
  dd if=/tmp/dev-pattern of=/tmp/dev.img conv=notrunc 2>/dev/null
  ./vmm-device --socket /tmp/dev.sock --disk /tmp/dev.img 2>/tmp/vmm-device.err &
  dev=$!
  i=0
  while [ ! -S /tmp/dev.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  start dev ./vmm --kernel $kernel --initrd initramfs.cpio.gz --memory 256M ${netdev:+--vcpus 2 -v} \
    --cmdline "console=$console quiet libvmm.test=vmm_device" --vhost-user blk,socket=/tmp/dev.sock \
    ${netdev:+--vhost-user net,socket=/tmp/net.sock,num_queues=2} --vhost-user console,socket=/tmp/con.sock
  check "vmm-device: the guest reads the host's pattern" \
    wait_for /tmp/dev.out "read md5 $(md5sum </tmp/dev-pattern | cut -d' ' -f1)" 240
  check "vmm-device: the disk has 8 MiB" grep -q "vda sectors: 16384" /tmp/dev.out
  check "vmm-device: FLUSH is offered (write back)" grep -q "vda write cache: write back" /tmp/dev.out
  check "vmm-device: written and flushed" wait_for /tmp/dev.out "written and flushed" 60
  want=$(sed -n 's/.*LIBVMM-GUEST: pattern md5 //p' /tmp/dev.out | tr -d '\r')
  got=$(dd if=/tmp/dev.img bs=1M skip=1 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
  check "vmm-device: the image has the guest's pattern while it serves" [ -n "$want" -a "$got" = "$want" ]
  # Grown to 16 MiB on the host (a marker at the old end); SIGUSR1 has vmm-device read the new
  # size and send CONFIG_CHANGE_MSG; vmm fetches the config again and interrupts the driver.
  check "vmm-device: the guest waits for vda to grow" \
    wait_for /tmp/dev.out "waiting for vda to grow from 16384 sectors" 60
  grow_image /tmp/dev.img 8 16
  kill -USR1 $dev
  check "vmm-device: SIGUSR1 reads the image's new size" \
    wait_for /tmp/vmm-device.err "looked at the device's backing again; it changed" 30
  check "vmm-device grown: the guest sees 16 MiB (CONFIG_CHANGE_MSG)" \
    wait_for /tmp/dev.out "vda sectors now: 32768" 60
  check "vmm-device grown: the guest reads past the old end" \
    wait_for /tmp/dev.out "vda past its old end: LIBVMM-GREW-PAST-THE-END" 30
  if [ -n "$netdev" ]; then
    net_checks /tmp/dev.out vmm
    check "vmm net: the driver's VQ_PAIRS_SET 2, served by vmm" \
      grep -q "vhost-user-net1: 2 of 2 queue pairs in use" /tmp/dev.err
    check "vmm net: vmm-device runs both pairs (the second's rings enabled)" \
      grep -q "virtio-net: 2 of 2 queue pairs in use" /tmp/net-device.err
    check "vmm-device --net: two queue pairs on the multiqueue TAP" \
      grep -q "virtio-net on tap tap0 (MAC $net_mac, MTU 1500, 2 queue pairs)" /tmp/net-device.err
  fi
  check "vmm-device --console: the guest's hvc0 line reaches its stdout" \
    wait_for /tmp/con.out "hello over vhost-user hvc0" 60
  send con "typed-into-vmm-device"
  check "vmm-device --console: its stdin reaches the guest" \
    wait_for /tmp/dev.out "hvc0 got: typed-into-vmm-device" 60
  named_port_checks /tmp/con.err /tmp/dev.out "vmm-device --console"
  # MULTIPORT: a RESIZE message from vmm-device, through vmm's front-end, to the guest's hvc0.
  terminal_size_checks con /tmp/dev.out "vmm-device --console"
  check "vmm-device: still serving" kill -0 $dev
  kill -9 $dev
  check "vmm-device killed: vmm logs the hang-up" \
    wait_for /tmp/dev.err "vhost-user-blk0: backend at /tmp/dev.sock closed the connection" 30
  check "vmm-device killed: the guest sees DEVICE_NEEDS_RESET" wait_for /tmp/dev.out "device needs reset" 60
  last=$(grep -c "LIBVMM-GUEST: alive" /tmp/dev.out)
  check "vmm-device killed: the guest goes on" wait_for /tmp/dev.out "alive $((last + 3)) " 60
  check "vmm-device killed: vmm still runs" kill -0 $pid
  kill $pid
  await $pid dev 60
  check "vmm-device --console: goes on when the front-end leaves" kill -0 $condev
  kill $condev
  await $condev con 30
  cstatus=$status
  check "vmm-device --console: exit status 0 on SIGTERM" [ $cstatus -eq 0 ]
fi

# QEMU as the front-end to our vmm-device (--once: it exits 0 when QEMU leaves in order).
if [ -x ./vmm-device ] && [ -x ./qemu-system-x86_64 ]; then
  dd if=/dev/urandom of=/tmp/q-pattern bs=1M count=1 2>/dev/null
  dd if=/dev/zero of=/tmp/q.img bs=1M count=8 2>/dev/null
  dd if=/tmp/q-pattern of=/tmp/q.img conv=notrunc 2>/dev/null
  ./vmm-device --socket /tmp/q.sock --disk /tmp/q.img --once 2>/tmp/qdev.err &
  qdev=$!
  i=0
  while [ ! -S /tmp/q.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  started=$(date +%s)
  # microvm restarts the guest on its reboot (-no-reboot or not): stop QEMU once the test ends.
  ./qemu-system-x86_64 -L qemu-data -M microvm,acpi=off,memory-backend=mem \
    -accel kvm -cpu host -m 256M -smp 1 -object memory-backend-memfd,id=mem,size=256M,share=on \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -global virtio-mmio.force-legacy=false -chardev socket,id=vu,path=/tmp/q.sock \
    -device vhost-user-blk,chardev=vu,num-queues=1 \
    ${netdev:+-chardev socket,id=vn,path=/tmp/net.sock -netdev vhost-user,id=n0,chardev=vn,queues=2} \
    ${netdev:+-device virtio-net-device,netdev=n0,mac=$net_mac,mq=on} \
    -kernel $kernel -initrd initramfs.cpio.gz \
    -append "console=ttyS0 quiet libvmm.test=vhost_blk libvmm.resize=vda" \
    </dev/null >/tmp/qemu.out 2>/tmp/qemu.err &
  qemu=$!
  # Grown to 16 MiB while QEMU's guest waits: QEMU's front-end takes our CONFIG_CHANGE_MSG.
  if wait_for /tmp/qemu.out "waiting for vda to grow from 16384 sectors" 240; then
    grow_image /tmp/q.img 8 16
    kill -USR1 $qdev
  fi
  [ -z "$netdev" ] || net_checks /tmp/qemu.out QEMU
  wait_for /tmp/qemu.out "test vhost_blk exit status" 240
  kill $qemu 2>/dev/null
  await $qemu qemu 30
  echo "qemu with vmm-device took $(($(date +%s) - started)) s"
  check "QEMU front-end: the guest reads the host's pattern from vmm-device" \
    grep -q "read md5 $(md5sum </tmp/q-pattern | cut -d' ' -f1)" /tmp/qemu.out
  check "QEMU front-end: the disk has 8 MiB" grep -q "vda sectors: 16384" /tmp/qemu.out
  check "QEMU front-end: written and flushed" grep -q "written and flushed" /tmp/qemu.out
  check "QEMU front-end: vda grown under vmm-device, the guest sees 16 MiB (CONFIG_CHANGE_MSG)" \
    grep -q "vda sectors now: 32768" /tmp/qemu.out
  want=$(sed -n 's/.*LIBVMM-GUEST: pattern md5 //p' /tmp/qemu.out | tr -d '\r' | head -n 1)
  got=$(dd if=/tmp/q.img bs=1M skip=1 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
  check "QEMU front-end: the image has the guest's pattern" [ -n "$want" -a "$got" = "$want" ]
  await $qdev qdev 60
  qstatus=$status
  check "QEMU front-end: vmm-device --once exits 0 when QEMU leaves" [ $qstatus -eq 0 ]
fi
if [ -n "$netdev" ]; then
  check "vmm-device --net: served both front-ends, still serving" kill -0 $netdev
  kill $netdev
  await $netdev net-device 30
  nstatus=$status
  check "vmm-device --net: exit status 0 on SIGTERM" [ $nstatus -eq 0 ]
  kill $httpd 2>/dev/null
  ./ip netns delete libvmm-vhost
fi
finish linux_vhost /tmp/fs.out /tmp/fs.err /tmp/vfsd.err /tmp/blk.out /tmp/blk.err /tmp/qsd.err /tmp/qsd10.err \
  /tmp/dev.out /tmp/dev.err /tmp/vmm-device.err /tmp/qemu.out /tmp/qemu.err /tmp/qdev.err /tmp/net-device.err /tmp/con.out /tmp/con.err
EOS
run_payload --timeout 900
