#!/usr/bin/env bash
# Boots the two example descriptions, unchanged, with `vmm run` inside the emulated KVM host:
# examples/simple/simple.system (serial console) and examples/virtio/virtio.system (virtIO
# console and disks). Each boots to the guest's shell, which is then given a few commands on
# the console the description connects to stdio, ending with a power-off.
# Usage: system.sh VMM
set -euo pipefail
vmm=$1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

payload=$work/payload
mkdir -p "$payload"
cp "$("$repo/images/build-kernel" x86_64)" "$payload/bzImage"
cp "$("$repo/images/build-initramfs" x86_64)" "$payload/initramfs.cpio.gz"
cp "$repo/examples/simple/simple.system" "$repo/examples/virtio/virtio.system" "$payload/"
"$repo/tools/emuhost/copy-binary" "$vmm" "$payload"

cat >"$payload/run.sh" <<'EOS'
#!/bin/sh
passed=0 failed=0
check() {
  name=$1; shift
  if "$@"; then echo "PASS: $name"; passed=$((passed + 1)); else echo "FAIL: $name"; failed=$((failed + 1)); fi
}
wait_for() {  # wait_for FILE TEXT SECONDS
  i=0
  while [ $i -lt $(($3 * 10)) ]; do grep -qF -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; i=$((i + 1)); done
  return 1
}
# boot NAME COMMANDS: runs NAME.system with its console on a FIFO (in) and a file (out), types
# COMMANDS at the shell prompt, and waits for vmm to exit.
boot() {
  rm -f /tmp/in; mkfifo /tmp/in
  LIBVMM_GUEST=$PWD ./vmm run "$1.system" <>/tmp/in >"/tmp/$1.out" 2>"/tmp/$1.err" &
  pid=$!
  check "$1: the shell prompt appears" wait_for "/tmp/$1.out" "guest# " 120
  echo "$2" >/tmp/in
  wait $pid
  status=$?
  check "$1: exit status 0" [ "$status" -eq 0 ]
}

boot simple 'echo "uname: $(uname -s)"; poweroff -f'
check "simple: commands ran on the serial console" grep -qF "uname: Linux" /tmp/simple.out
check "simple: it was ttyS0" grep -qF "console [ttyS0] enabled" /tmp/simple.out

dd if=/dev/zero of=vda.img bs=1M count=4 2>/dev/null
printf 'LIBVMM-VDA' | dd of=vda.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=vdb.img bs=1M count=1 2>/dev/null
boot virtio 'echo "disks: $(ls /sys/block | tr "\n" " ")ro=$(cat /sys/block/vdb/ro) vda=$(head -c 10 /dev/vda) tty=$(tty)"; poweroff -f'
check "virtio: both disks, vdb read-only, vda's data, on hvc0" \
  grep -qF "disks: vda vdb ro=1 vda=LIBVMM-VDA tty=/dev/hvc0" /tmp/virtio.out

[ $failed -eq 0 ] || for f in /tmp/simple.out /tmp/simple.err /tmp/virtio.out /tmp/virtio.err; do echo "---- $f"; tail -n 30 "$f"; done
echo "system: $passed passed, $failed failed"
[ $failed -eq 0 ]
EOS
chmod +x "$payload/run.sh"
"$repo/tools/emuhost/emuhost" --timeout 600 "$payload"
