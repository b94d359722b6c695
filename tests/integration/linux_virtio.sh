#!/usr/bin/env bash
# Boots the guest with two virtIO disks (one read-only) and a virtIO console inside the emulated
# KVM host, and checks, with the real Linux drivers: the disks appear without any
# virtio_mmio.device= from the user, the guest reads what the host wrote, the host finds what
# the guest wrote after vmm exits, writes to the read-only disk fail, and hvc0 carries text both
# ways.
# Usage: linux_virtio.sh VMM
set -euo pipefail
vmm=$1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

payload=$work/payload
mkdir -p "$payload"
cp "$("$repo/images/build-kernel" x86_64)" "$payload/bzImage"
cp "$("$repo/images/build-initramfs" x86_64)" "$payload/initramfs.cpio.gz"
"$repo/tools/emuhost/copy-binary" "$vmm" "$payload"

cat >"$payload/run.sh" <<'EOS'
#!/bin/sh
passed=0 failed=0
check() {
  name=$1; shift
  if "$@"; then echo "PASS: $name"; passed=$((passed + 1)); else echo "FAIL: $name"; failed=$((failed + 1)); fi
}
# vda: 4 MiB, a pattern in sector 0, served through io_uring; vdb: 1 MiB, read-only, sync.
dd if=/dev/zero of=/tmp/vda.img bs=1M count=4 2>/dev/null
printf 'LIBVMM-HOST-WROTE-THIS!!' | dd of=/tmp/vda.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/vdb.img bs=1M count=1 2>/dev/null

wait_for() {  # wait_for FILE TEXT SECONDS
  i=0
  while [ $i -lt $(($3 * 10)) ]; do grep -qF -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; i=$((i + 1)); done
  return 1
}
# The virtIO console is on vmm's stdin/stdout (a FIFO here); the serial console goes to a file.
mkfifo /tmp/hvc0.in
./vmm --kernel bzImage --initrd initramfs.cpio.gz --memory 256M \
  --cmdline "console=ttyS0 quiet libvmm.test=virtio" \
  --disk /tmp/vda.img,io=io_uring --disk /tmp/vdb.img,readonly --console stdio --serial file:/tmp/out \
  <>/tmp/hvc0.in >/tmp/hvc0.out 2>/tmp/err &
pid=$!
check "hvc0 output reached vmm's stdout" wait_for /tmp/hvc0.out "LIBVMM-GUEST: hello over hvc0" 120
echo "ping-from-host" >/tmp/hvc0.in
check "host input reached the guest over hvc0" wait_for /tmp/hvc0.out "hvc0 got: ping-from-host" 60
wait $pid
status=$?
check "exit status 0 (got $status)" [ "$status" -eq 0 ]
check "the guest sees vda and vdb" grep -qF "block devices: vda vdb" /tmp/out
check "the guest reads the host's pattern" grep -qF "vda starts with: LIBVMM-HOST-WROTE-THIS!!" /tmp/out
check "vdb is read-only in the guest" grep -qF "vdb read-only flag: 1" /tmp/out
check "writing vdb fails in the guest" grep -qF "vdb write refused" /tmp/out
check "the guest's write to vda is in the image" \
  sh -c 'dd if=/tmp/vda.img bs=512 skip=8 count=1 2>/dev/null | grep -qF guest-wrote-this-sector'
check "vdb is unchanged" sh -c '[ -z "$(tr -d "\000" </tmp/vdb.img | head -c 1)" ]'
[ $failed -eq 0 ] || { echo "---- serial"; tail -n 40 /tmp/out; echo "---- hvc0"; tail -n 20 /tmp/hvc0.out; echo "---- stderr"; tail -n 20 /tmp/err; }
echo "linux_virtio: $passed passed, $failed failed"
[ $failed -eq 0 ]
EOS
chmod +x "$payload/run.sh"
"$repo/tools/emuhost/emuhost" --timeout 600 "$payload"
