#!/usr/bin/env bash
# Boots the guest (2 vCPUs) with four virtio-mmio disks (transport=mmio, x86_64's default being
# virtio-pci: linux.pci covers that; one read-only; multiqueue; io_uring, sync
# and io=auto, each counted by vmm -v; one the guest rebinds with a poll queue and reads
# through a polling io_uring; one grown on the host, which SIGUSR1 makes vmm see), a virtIO console and a virtio-rng inside the emulated
# KVM host, and checks, with the real Linux drivers: the disks appear without any
# virtio_mmio.device= from the user, the guest reads what the host wrote, the host finds what
# the guest wrote after vmm exits, writes to the read-only disk fail, hvc0 and a named port
# of the same console (MULTIPORT, on a pty: closed for the guest until a program opens the pty)
# carry text both ways, a second named port on a
# socket holds the guest's line until a client connects and gives the guest an end of file when
# it leaves (PORT_OPEN), and hvc0 has the size of the terminal vmm runs on, before and after it
# is resized.
# Usage: linux_virtio.sh VMM
set -euo pipefail
vmm=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
# The guest's polled reads use the block benchmark's blkio (bench/blkio.c).
extra=$work/guest-extra
mkdir -p "$extra/usr/bin"
gcc -O2 -static -Wall -Wextra -o "$extra/usr/bin/blkio" "$repo/bench/blkio.c"
# The emulated host's client of a named port's socket.
gcc -O2 -static -Wall -Wextra -o "$work/sockline" "$repo/tests/integration/lib/sockline.c"
payload_new x86_64 "$vmm" --extra "$extra"
payload_binary "$(command -v strace)" "$(command -v script)"
cp "$work/sockline" "$payload/"

payload_script run.sh <<'EOS'
# vda: 4 MiB, a pattern in sector 0, served through io_uring (requests kept in flight on the
# I/O thread); vdb: 1 MiB, read-only, sync; vdc: 1 MiB, io=auto without the I/O thread (in
# batches: the guest's probe reads come one at a time, with preadv).
dd if=/dev/zero of=/tmp/vda.img bs=1M count=4 2>/dev/null
printf 'LIBVMM-HOST-WROTE-THIS!!' | dd of=/tmp/vda.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/vdb.img bs=1M count=1 2>/dev/null
dd if=/dev/zero of=/tmp/vdc.img bs=1M count=1 2>/dev/null
# vdd: 1 MiB, a pattern in sector 0; the guest rebinds its driver with a poll queue.
dd if=/dev/zero of=/tmp/vdd.img bs=1M count=1 2>/dev/null
printf 'LIBVMM-POLLED-QUEUE-DISK' | dd of=/tmp/vdd.img conv=notrunc 2>/dev/null

# The virtIO console is on vmm's stdin/stdout, a terminal of 100 x 30 (its input from a FIFO);
# the serial console goes to a file. Two vCPUs: vda gets a queue per vCPU (the default), vdb one
# (num_queues=1).
start_on_terminal hvc0 100 30 guest --memory 256M --vcpus 2 --cmdline "console=ttyS0 quiet libvmm.test=virtio" \
  --disk /tmp/vda.img,io=io_uring,transport=mmio --disk /tmp/vdb.img,readonly,num_queues=1,transport=mmio \
  --disk /tmp/vdc.img,io=auto,iothread=off,transport=mmio --disk /tmp/vdd.img,transport=mmio \
  --console stdio,port1=org.libvmm.test=pty,port2=org.libvmm.socket=socket:/tmp/port2.sock,transport=mmio \
  --rng transport=mmio --serial file:/tmp/out -v
check "hvc0 output reached vmm's stdout" wait_for /tmp/hvc0.out "LIBVMM-GUEST: hello over hvc0" 120
send hvc0 "ping-from-host"
check "host input reached the guest over hvc0" wait_for /tmp/hvc0.out "hvc0 got: ping-from-host" 60
named_port_checks /tmp/hvc0.err /tmp/out vmm
# port2 is a socket nobody is connected to yet: PORT_OPEN 0, and the guest's line waits in the
# guest (before, it went to the backend and was dropped for want of a client).
check "the guest finds the socket's port and writes to it" \
  wait_for /tmp/out "named port org.libvmm.socket: /dev/vport" 60
sleep 2
./sockline /tmp/port2.sock ping-over-the-socket >/tmp/port2.out 2>&1 &
sockline=$!
check "the line written before a client connected reaches the client (PORT_OPEN 0, then 1)" \
  wait_for /tmp/port2.out "hello over the named port" 60
check "the client's line reaches the guest" \
  wait_for /tmp/out "named port got: ping-over-the-socket" 60
kill $sockline
check "the client leaving is the port's end of file in the guest (PORT_OPEN 0)" \
  wait_for /tmp/out "named port org.libvmm.socket: the host end closed" 60
# The terminal's size reaches hvc0 (F_SIZE; with MULTIPORT, in a RESIZE message), and so does a
# new one, which the kernel tells vmm with SIGWINCH.
terminal_size_checks hvc0 /tmp/out vmm
# vdc grows from 1 to 2 MiB on the host (a marker at the old end) while the guest waits; SIGUSR1
# has vmm look at its disks' images again, and the driver hears of it (a config interrupt).
check "the guest waits for vdc to grow" \
  wait_for /tmp/hvc0.out "waiting for vdc to grow from 2048 sectors" 60
grow_image /tmp/vdc.img 1 2
vmm_pid=$(pidof vmm) && kill -USR1 "$vmm_pid"
check "SIGUSR1: vmm reads vdc's new size" \
  wait_for /tmp/hvc0.err "virtio-blk /tmp/vdc.img: 4096 sectors now (2048 before)" 30
check "SIGUSR1: vmm says how many disks changed" \
  grep -qF "looked at the disks' images again; 1 changed size" /tmp/hvc0.err
check "the guest sees vdc grown to 2 MiB" wait_for /tmp/hvc0.out "vdc sectors now: 4096" 60
check "the guest reads vdc past its old end" \
  wait_for /tmp/hvc0.out "vdc past its old end: LIBVMM-GREW-PAST-THE-END" 30
stop
check "exit status 0 (got $status)" [ "$status" -eq 0 ]
check "virtio_rng is the guest's hwrng" grep -qF "hwrng: virtio_rng.0" /tmp/out
check "/dev/hwrng gives random bytes" grep -qF "hwrng gives random bytes" /tmp/out
check "/dev/hwrng reads 64 KiB" grep -qF "hwrng 64 KiB: 65536 bytes" /tmp/out
check "the guest sees vda, vdb, vdc and vdd" grep -qF "block devices: vda vdb vdc vdd" /tmp/out
check "io=io_uring: every vda request kept in flight through the ring" \
  grep -qE "virtio-blk /tmp/vda.img: [1-9][0-9]* requests kept in flight through io_uring, 0 with preadv/pwritev" \
  /tmp/hvc0.err
check "io=auto,iothread=off: vdc's lone requests with preadv" \
  grep -qE "virtio-blk /tmp/vdc.img: 0 requests kept in flight through io_uring, [1-9][0-9]* with preadv/pwritev" \
  /tmp/hvc0.err
check "the guest reads the host's pattern" grep -qF "vda starts with: LIBVMM-HOST-WROTE-THIS!!" /tmp/out
check "vdb is read-only in the guest" grep -qF "vdb read-only flag: 1" /tmp/out
check "multiqueue: vda has a queue per vCPU (2), vdb the 1 asked for" \
  grep -qF "vda queues: 2, vdb queues: 1" /tmp/out
check "writing vdb fails in the guest" grep -qF "vdb write refused" /tmp/out
check "vdd rebound with a poll queue (virtio_blk.poll_queues=1)" grep -qF "vdd io_poll: 1" /tmp/out
check "a polled read (io_uring IOPOLL, no interrupt) returns the host's pattern" \
  grep -qF "vdd polled read: LIBVMM-POLLED-QUEUE-DISK" /tmp/out
check "vdd's interrupt-driven queue still reads it" \
  grep -qF "vdd read: LIBVMM-POLLED-QUEUE-DISK" /tmp/out
check "the guest's write to vda is in the image" \
  sh -c 'dd if=/tmp/vda.img bs=512 skip=8 count=1 2>/dev/null | grep -qF guest-wrote-this-sector'
check "vdb is unchanged" sh -c '[ -z "$(tr -d "\000" </tmp/vdb.img | head -c 1)" ]'

# Durability: SIGKILL right after the guest's flush completed.
dd if=/dev/zero of=/tmp/flush.img bs=1M count=8 2>/dev/null
./strace -f -qq -o /tmp/strace.log -e trace=pwritev,pwrite64,io_uring_enter,fdatasync,fsync \
  ./vmm --kernel "$kernel" --initrd initramfs.cpio.gz --memory 256M --serial file:/tmp/flush.out \
  --cmdline "console=ttyS0 quiet libvmm.test=flush" --disk /tmp/flush.img </dev/null \
  2>/tmp/flush.err &
tracer=$!
if wait_for /tmp/flush.out "LIBVMM-GUEST: flushed" 240; then flushed=yes; else flushed=no; fi
# strace's child is vmm; with no flush seen, strace goes too (a detached vmm would run on).
vmm_pid=$(cat "/proc/$tracer/task/$tracer/children")
kill -9 $vmm_pid
[ $flushed = yes ] || kill -9 "$tracer"
wait "$tracer"
status=$?
tr -d '\r' </tmp/flush.out >/tmp/out.flush
want=$(sed -n 's/^LIBVMM-GUEST: pattern md5 \([0-9a-f]\{32\}\)$/\1/p' /tmp/out.flush)
got=$(head -c 1048576 /tmp/flush.img | md5sum | cut -d' ' -f1)
check "the guest sees a write-back cache (FLUSH negotiated)" \
  grep -qxF "LIBVMM-GUEST: vda write cache: write back" /tmp/out.flush
check "the guest's O_DIRECT write and fsync complete" [ "$flushed" = yes ]
check "vmm ended by SIGKILL (status $status)" [ "$status" -eq 137 ]
check "the flushed 1 MiB is in the image after SIGKILL" sh -c "[ -n '$want' ] && [ '$want' = '$got' ]"
# The last fdatasync() of the image that succeeded comes after the last write to it. The disk
# keeps its requests in flight through io_uring (io=auto): a write is an io_uring_enter() that
# submits (its second argument, to_submit, above 0); the guest does no I/O after its fsync.
echo "strace: $(grep -cE 'pwrite|io_uring_enter\([0-9]+, [1-9]' /tmp/strace.log) submissions," \
  "$(grep -c fdatasync /tmp/strace.log) fdatasync"
check "the guest's FLUSH reached the host as fdatasync() after the last write" awk '
  /pwrite/ || /io_uring_enter\([0-9]+, [1-9]/ { last_write = NR }
  /fdatasync\(.*= 0$/ { last_sync = NR }
  END { exit !(last_write > 0 && last_sync > last_write) }' /tmp/strace.log
finish linux_virtio /tmp/out /tmp/hvc0.out /tmp/hvc0.err /tmp/out.flush /tmp/flush.err /tmp/strace.log
EOS
run_payload --timeout 600
