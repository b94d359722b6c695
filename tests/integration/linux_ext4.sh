#!/usr/bin/env bash
# Makes an ext4 file system on a virtIO disk with the real Linux drivers, inside the emulated KVM
# host, and checks it survives our block device:
#   boot 1 (vda read-write): the guest runs Debian's mkfs.ext4, mounts, writes files (one of
#     1 MiB of random data), syncs, unmounts and prints the files' md5 sums;
#   on the host: e2fsck -fn finds the image clean and debugfs reads back the same contents;
#   boot 2 (vda ,readonly): the guest mounts read-only and prints the same sums, remounting rw,
#     writing a file and writing the raw device all fail, and the image is byte-for-byte unchanged.
# Usage: linux_ext4.sh VMM
set -euo pipefail
vmm=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"

for tool in /sbin/mke2fs /sbin/debugfs /sbin/e2fsck; do
  [ -x "$tool" ] || { echo "linux_ext4: missing $tool (apt-get install e2fsprogs)" >&2; exit 1; }
done

# Guest initramfs extras: mke2fs as /usr/sbin/mkfs.ext4 (its name selects ext4; busybox already
# owns /sbin/mke2fs, and overlaying a file onto that symlink would overwrite busybox itself),
# its shared libraries at their absolute paths, and Debian's mke2fs.conf for the usual defaults.
extra=$work/guest-extra
extra_binary "$extra" /sbin/mke2fs usr/sbin/mkfs.ext4
mkdir -p "$extra/etc"
[ ! -f /etc/mke2fs.conf ] || cp /etc/mke2fs.conf "$extra/etc/"

payload_new x86_64 "$vmm" --extra "$extra"
payload_binary /sbin/debugfs /sbin/e2fsck

payload_script run.sh <<'EOS'
# Runs the guest with $1 as libvmm.ext4= and vda from $2; console to /tmp/out.$1 (CRs stripped).
ext4_boot() {
  boot "$1" "quiet libvmm.test=ext4 libvmm.ext4=$1" --disk "$2"
  tr -d '\r' <"/tmp/$1.out" >"/tmp/out.$1"
  return "$status"
}
has() { grep -qxF "LIBVMM-GUEST: $2" "/tmp/out.$1"; }
# md5 sum the guest printed for file $2 in boot $1 (empty if none).
guest_md5() { sed -n "s|^LIBVMM-GUEST: $2 md5 \([0-9a-f]\{32\}\)$|\1|p" "/tmp/out.$1"; }
# md5 sum of file $1 in the image, read by debugfs on the host.
debugfs_md5() { ./debugfs -R "cat /$1" /tmp/vda.img 2>/dev/null | md5sum | cut -d' ' -f1; }
same() { [ -n "$1" ] && [ "$1" = "$2" ]; }

dd if=/dev/zero of=/tmp/vda.img bs=1M count=64 2>/dev/null
files="hello.txt dir/nested.txt big.bin"

# Boot 1: mkfs, write, unmount.
ext4_boot create /tmp/vda.img; status=$?
check "boot 1 (create) exits with status 0" [ "$status" -eq 0 ]
check "mkfs.ext4 succeeds in the guest" has create "mkfs ok"
check "the guest mounts the new file system" has create "mount rw ok"
check "the guest unmounts cleanly" has create "umount ok"
check "the image is a clean ext4 file system (e2fsck -fn)" \
  sh -c './e2fsck -fn /tmp/vda.img >/tmp/e2fsck.out 2>&1'
check "the file system has ext4's journal and extents" \
  sh -c './debugfs -R stats /tmp/vda.img 2>/dev/null | grep "^Filesystem features:" \
    | grep -w has_journal | grep -qw extent'
check "debugfs reads hello.txt's contents" \
  sh -c '[ "$(./debugfs -R "cat /hello.txt" /tmp/vda.img 2>/dev/null)" = "hello from the guest" ]'
check "big.bin is 1 MiB" \
  sh -c './debugfs -R "stat /big.bin" /tmp/vda.img 2>/dev/null | grep -q "Size: 1048576$"'
for f in $files; do
  check "debugfs finds $f with the guest's md5" same "$(guest_md5 create $f)" "$(debugfs_md5 $f)"
done
before=$(md5sum </tmp/vda.img)

# Boot 2: the same image, read-only.
ext4_boot verify /tmp/vda.img,readonly; status=$?
check "boot 2 (verify) exits with status 0" [ "$status" -eq 0 ]
check "vda is read-only in the guest" has verify "vda read-only flag: 1"
check "the guest mounts the file system read-only" has verify "mount ro ok"
for f in $files; do
  check "boot 2 reads $f with boot 1's md5" same "$(guest_md5 create $f)" "$(guest_md5 verify $f)"
done
check "remount rw leaves the mount read-only" has verify "mounted as: ro"
check "writing a file fails" has verify "file write refused"
check "writing the raw device fails" has verify "raw write refused"
check "the read-only boot leaves the image unchanged" [ "$(md5sum </tmp/vda.img)" = "$before" ]

finish linux_ext4 /tmp/out.create /tmp/create.err /tmp/out.verify /tmp/verify.err /tmp/e2fsck.out
EOS
run_payload --timeout 600
