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

finish system /tmp/simple.out /tmp/simple.err /tmp/virtio.out /tmp/virtio.err
EOS
run_payload --timeout 600
