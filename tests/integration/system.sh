#!/usr/bin/env bash
# Boots the two example descriptions, unchanged, with `vmm run` inside the emulated KVM host:
# examples/simple/simple.system (serial console) and examples/virtio/virtio.system (virtIO
# console and disks). Each boots to the guest's shell, which is then given a few commands on
# the console the description connects to stdio, ending with a power-off.
# Usage: system.sh VMM
set -euo pipefail
vmm=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
payload_new x86_64 "$vmm"
cp "$repo/examples/simple/simple.system" "$repo/examples/virtio/virtio.system" "$payload/"

payload_script run.sh <<'EOS'
# run_system NAME COMMANDS: runs NAME.system with its console on /tmp/NAME.in (a FIFO) and
# /tmp/NAME.out, types COMMANDS at the shell prompt, and waits for vmm to exit.
run_system() {
  start "$1" env LIBVMM_GUEST="$PWD" ./vmm run "$1.system"
  check "$1: the shell prompt appears" wait_for "/tmp/$1.out" "guest# " 120
  send "$1" "$2"
  stop
  check "$1: exit status 0" [ "$status" -eq 0 ]
}

run_system simple 'echo "uname: $(uname -s)"; poweroff -f'
check "simple: commands ran on the serial console" grep -qF "uname: Linux" /tmp/simple.out
check "simple: it was ttyS0" grep -qF "console [ttyS0] enabled" /tmp/simple.out

dd if=/dev/zero of=vda.img bs=1M count=4 2>/dev/null
printf 'LIBVMM-VDA' | dd of=vda.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=vdb.img bs=1M count=1 2>/dev/null
run_system virtio 'echo "disks: $(ls /sys/block | tr "\n" " ")ro=$(cat /sys/block/vdb/ro) vda=$(head -c 10 /dev/vda) tty=$(tty)"; poweroff -f'
check "virtio: both disks, vdb read-only, vda's data, on hvc0" \
  grep -qF "disks: vda vdb ro=1 vda=LIBVMM-VDA tty=/dev/hvc0" /tmp/virtio.out

# Two guests in one description, each with a virtIO device (MSI-X irqfds on its own VM): each
# VM runs on a thread of its own, and the signals on a control loop that outlives a VM ending
# first. Guest a powers off by itself; b goes on until SIGTERM stops it; vmm exits 0. (Each VM
# on the first VM's thread instead: tearing b down there was a system call its filter refuses
# (the process killed, 159), and the SIGTERM after a's power-off was never read.)

# vm_element NAME ID SERIAL: one guest of our images with its own RAM region and a virtio-rng.
vm_element() {
  cat <<EOX
    <virtual_machine name="$1" id="$2" ram="ram_$1">
      <map mr="ram_$1" vaddr="0x0" />
      <kernel path="$PWD/bzImage" />
      <initrd path="$PWD/initramfs.cpio.gz" />
      <cmdline>console=ttyS0</cmdline>
      <serial backend="$3" />
      <virtio_rng />
    </virtual_machine>
EOX
}
{
  printf '<system>\n  <memory_region name="ram_a" size="128M" />\n'
  printf '  <memory_region name="ram_b" size="128M" />\n  <protection_domain name="vmm">\n'
  vm_element a 0 stdio
  vm_element b 1 file:/tmp/two_b.out
  printf '  </protection_domain>\n</system>\n'
} >two.system
start two ./vmm --shutdown-timeout 5 run two.system
check "two: guest a's shell prompt appears" wait_for /tmp/two.out "guest# " 180
check "two: guest b boots beside it" wait_for /tmp/two_b.out "guest# " 180
send two 'echo "a: $(cat /sys/class/misc/hw_random/rng_current)"; poweroff -f'
check "two: guest a ran its commands and powered off" wait_for /tmp/two.out "a: virtio_rng" 60
sleep 2
kill -TERM "$pid"
stop
check "two: SIGTERM after a's power-off stops b; exit status 0" [ "$status" -eq 0 ]
check "two: nothing refused by a seccomp filter" sh -c "! grep -q seccomp /tmp/two.err"

finish system /tmp/simple.out /tmp/simple.err /tmp/virtio.out /tmp/virtio.err /tmp/two.out \
  /tmp/two.err /tmp/two_b.out
EOS
run_payload --timeout 900
