#!/usr/bin/env bash
# vmm built with ASan + UBSan (LIBVMM_SANITIZE=ON) booting Linux in the emulated x86_64 KVM host,
# once per device configuration: every device brought up by Linux's own drivers (DRIVER_OK),
# the guest powering off, and vmm tearing everything down. The unit tests run each part under
# the sanitizers; this is the whole program's life with real guests, a real vhost-net and a
# real vhost-user back-end (virtiofsd), where teardown-order bugs hide (a use after free at exit
# of every device served elsewhere over virtio-pci did, until an arm64 run's heap check caught
# it). Each run must end with status 0 and no sanitizer report.
# Everything runs in a network namespace of its own (the TAP lives there; no traffic leaves it).
# Usage: linux_sanitized.sh SANITIZED_VMM
set -euo pipefail
vmm=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
payload_new x86_64 "$vmm"
payload_binary /usr/lib/qemu/virtiofsd

payload_script run.sh <<'EOS'
[ -n "$IN_TEST_NETNS" ] || IN_TEST_NETNS=1 exec unshare -n "$0"
ip link set lo up
ip tuntap add tap0 mode tap 2>/dev/null || tunctl -t tap0 >/dev/null
ip link set tap0 up
dd if=/dev/zero of=/tmp/a.img bs=1M count=4 2>/dev/null
dd if=/dev/zero of=/tmp/b.img bs=1M count=1 2>/dev/null
mkdir -p /tmp/share
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# sanitized LABEL VMM-ARGS...: boots the powering-off guest with VMM-ARGS (a sanitized vmm's
# seccomp filters log instead of killing: the sanitizers' own calls are on no list).
sanitized() {
  label=$1; shift
  started=$(date +%s)
  guest --memory 128M --cmdline "console=ttyS0 quiet libvmm.test=poweroff" -v \
    "$@" </dev/null >/tmp/s.out 2>/tmp/s.err &
  pid=$!
  await $pid sanitized 300
  wait $pid; status=$?
  echo "$label: $(($(date +%s) - started)) s, status $status"
  check "$label: the guest powered off" grep -qF "LIBVMM-GUEST: powering off" /tmp/s.out
  check "$label: exit status 0" [ $status -eq 0 ]
  if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" /tmp/s.err; then
    check "$label: no sanitizer report" false
    grep -A40 -E "ERROR: (Address|Leak)Sanitizer|runtime error:" /tmp/s.err | head -60
  else
    check "$label: no sanitizer report" true
  fi
  [ $status -eq 0 ] || tail -n 30 /tmp/s.err
}
sanitized "vhost-net over virtio-pci" --net tap=tap0,vhost=on,transport=pci,poll_us=20
# Two pairs (a multiqueue TAP vmm creates): the driver's VQ_PAIRS_SET on the control queue.
sanitized "vhost-net over virtio-mmio, 2 queue pairs" --vcpus 2 --net tap=tapmq,vhost=on,num_queues=2,transport=mmio
check "vhost-net, 2 queue pairs: the driver asked for both on the control queue" \
  grep -q "vhost-net0: 2 of 2 queue pairs in use" /tmp/s.err
sanitized "virtio-pci disk, network and rng" \
  --disk /tmp/a.img,transport=pci --net tap=tap0,transport=pci --rng transport=pci
sanitized "virtio-mmio devices on their threads" --vcpus 2 \
  --disk /tmp/a.img,num_queues=2,transport=mmio --disk /tmp/b.img,readonly,iothread=off,transport=mmio \
  --net tap=tap0,iothread=on,transport=mmio --rng transport=mmio
./virtiofsd --socket-path=/tmp/vfs.sock -o source=/tmp/share -o sandbox=chroot 2>/tmp/vfsd.err &
vfsd=$!
i=0
while [ ! -S /tmp/vfs.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
sanitized "virtio-fs over virtio-pci (virtiofsd)" --fs tag=share,socket=/tmp/vfs.sock,transport=pci
kill $vfsd 2>/dev/null
finish linux_sanitized /tmp/s.out /tmp/s.err /tmp/vfsd.err
EOS
run_payload
