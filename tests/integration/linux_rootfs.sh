#!/usr/bin/env bash
# A real Debian 12 system under vmm (issue 14), in the emulated KVM host of ARCH: the root file
# system of images/build-rootfs ARCH (systemd, udev, networkd) on a virtIO disk, booted with
# Debian's own kernel and initramfs-tools initrd; nothing about virtio on the command line
# (x86_64: ACPI; aarch64: the device tree).
#   Boot 1: the serial console (ttyS0 / ttyAMA0) reaches the login prompt and root's automatic
#     login; then `systemctl is-system-running --wait` is running (else each failed unit is
#     named), a file is written, systemd-networkd has given the NIC its address and it pings the
#     host end of its TAP (x86_64: in a network namespace this test creates; the emulated host
#     is a network of its own anyway), the hwrng is virtio_rng, the guest's clock is the host's,
#     Debian's qemu-guest-agent, which udev starts when the console's named port
#     org.qemu.guest_agent.0 appears, answers guest-sync and guest-info on that port (a pty);
#     x86_64: `systemctl poweroff` ends vmm with status 0;
#     aarch64: SIGTERM to vmm presses the power key (PL061 + gpio-keys), systemd-logind powers
#     off (PSCI SYSTEM_OFF), status 0 (one boot: the emulated arm64 host is slower).
#   Boot 2 (x86_64): SIGTERM to vmm presses the ACPI power button, systemd-logind powers off,
#     status 0.
# examples/debian/debian.system is checked (vmm check) against the same files, not booted (its
# RAM was once a memfd without THP, too slow under the emulated host's TCG; it is backed as the
# flags' is now, but one boot per architecture keeps the suite within its time).
# After each x86_64 boot `e2fsck -fn` finds the file system clean and the file is there (in the
# emulated host; the arm64 one has busybox only); on both architectures again on this machine
# after the emulated host's run.
# The image is the emulated host's own virtIO disk (emuhost --disk), a sparse copy of the cached
# one, passed through to the guest as /dev/vda.
# Usage: linux_rootfs.sh x86_64 VMM | linux_rootfs.sh aarch64 CROSS_BUILD_DIR
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: linux_rootfs.sh x86_64 VMM | aarch64 CROSS_BUILD_DIR" >&2; exit 2; }
arch=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
case $arch in
  x86_64) vmm=$2 ;;
  aarch64) cross_build "$2" vmm; vmm=$2/tools/vmm/vmm ;;
  *) echo "linux_rootfs.sh: unknown architecture $arch" >&2; exit 2 ;;
esac

# build-rootfs runs as root (mmdebstrap --mode=root); its cache stays this user's.
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo -n env "LIBVMM_CACHE=${LIBVMM_CACHE:-$HOME/.cache/libvmm}")
mapfile -t rootfs < <("${sudo[@]}" "$repo/images/build-rootfs" "$arch")
[ ${#rootfs[@]} -eq 3 ] || { echo "$prog: images/build-rootfs $arch failed" >&2; exit 1; }
cp --sparse=always "${rootfs[0]}" "$work/rootfs.img"

payload_new "$arch"
payload_binary "$vmm"
cp "${rootfs[1]}" "$payload/vmlinuz"
cp "${rootfs[2]}" "$payload/initrd.img"
if [ "$arch" = x86_64 ]; then
  # This machine's ip (network namespaces), e2fsck and debugfs; the arm64 host has busybox only.
  payload_binary "$(command -v ip)" "$(command -v e2fsck)" "$(command -v debugfs)"
  cp "$repo/examples/debian/debian.system" "$payload/"
fi

payload_script run.sh <<'EOS'
[ -x ./ip ] || exec ./rootfs.sh
./ip netns add libvmm-rootfs || { echo "cannot create a network namespace"; exit 1; }
./ip netns exec libvmm-rootfs ./rootfs.sh
status=$?
./ip netns delete libvmm-rootfs
exit $status
EOS
payload_script rootfs.sh <<'EOS'
if [ -x ./ip ]; then
  ./ip tuntap add tap0 mode tap
  ip() { ./ip "$@"; }
else
  tunctl -t tap0 >/dev/null
fi
ip link set lo up
ip addr add 10.0.0.1/24 dev tap0
ip link set tap0 up
[ -b /dev/vda ] || { echo "no /dev/vda in the emulated host"; exit 1; }

# The guest's answers: "LIBVMM-<what>: <value>" lines on the serial console (after bash's
# bracketed-paste escapes). The commands typed build the marker from two words, so their echo
# never matches.
answer() { tr -d '\r' <"/tmp/$1.out" | sed -n "s/.*LIBVMM-$2: //p" | tail -n 1; }
# ask BOOT WHAT COMMAND: types `echo LIBVMM-WHAT: $(COMMAND)` and waits (up to 600 s) for its
# answer before the next question. Typed ahead, a command is echoed by the guest's terminal
# while the one before it still prints, and its echo can land inside that answer's line (CI
# once read "running" as "runningecho LIBVMM-BLAME: ..."). The wait is for a second line,
# LIBVMM-WHAT-END, echoed after the answer: seeing the answer's marker alone is not enough, as
# its value and newline may still be on their way (CI read "okecho LIBVMM-NET: ...").
ask() {
  send "$1" "echo LIBVMM\"\"-$2: \$($3); echo LIBVMM\"\"-$2-END" || return 1
  wait_vmm "/tmp/$1.out" "LIBVMM-$2-END" 600 || echo "boot $1: no answer to $2"
}
# systemd.default_timeout_start_sec: on a busy machine the emulated host's TCG gives this guest
# a fraction of a CPU, udev's coldplug can take longer than systemd's 90 s wait for
# /dev/ttyS0 (systemd 252's device jobs time out after DefaultTimeoutStartSec), and then the
# serial getty (the login prompt) is never started.
# systemd.mask: two units of Debian's that nothing here needs and that were among the slowest
# (systemd-analyze blame, emulated host): e2scrub_reap (LVM snapshots of e2scrub; 45 s, and
# multi-user.target waits for it) and loading the drm module (25 s; no display).
cmdline="root=/dev/vda ro console=$console quiet systemd.default_timeout_start_sec=900"
cmdline="$cmdline systemd.mask=e2scrub_reap.service systemd.mask=modprobe@drm.service"
debian() {
  name=$1; shift
  started=$(date +%s)
  start "$name" ./vmm --kernel vmlinuz --initrd initrd.img --memory 512M --cmdline "$cmdline" \
    --disk /dev/vda --net tap=tap0 --rng "$@"
}
# wait_for, but false at once when vmm ($pid) has exited.
wait_vmm() {
  i=0
  while [ $i -lt $(($3 * 10)) ]; do
    grep -qF -- "$2" "$1" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "vmm exited while waiting for '$2'"; return 1; }
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}
# What vmm says when the guest has powered off.
case $console in
  ttyAMA0) powered_off='guest stopped (power off)' ;;  # PSCI SYSTEM_OFF
  *) powered_off='the guest powered off (ACPI S5)' ;;
esac
fsck_clean() {
  ./e2fsck -fn /dev/vda >"/tmp/fsck.$1" 2>&1
}
file_there() {
  ./debugfs -R "cat /root/libvmm-test" /dev/vda 2>/dev/null | grep -qx "written by $1"
}

# Boot 1: login, checks, systemctl poweroff; a virtIO console whose only use is its named port
# for the guest agent.
debian boot1 --console none,port1=org.qemu.guest_agent.0=pty
wait_vmm /tmp/boot1.out "root@debian" 1200
echo "boot 1: shell prompt after $(($(date +%s) - started)) s"
check "boot 1: the login prompt on $console" grep -q "debian login: root (automatic login)" /tmp/boot1.out
check "boot 1: root's shell prompt" grep -q "root@debian" /tmp/boot1.out
ask boot1 STATE 'systemctl is-system-running --wait'
ask boot1 FAILED 'systemctl --failed --plain --no-legend'
ask boot1 WRITTEN 'echo "written by boot1" >/root/libvmm-test; sync; echo ok'
ask boot1 PING 'ping -c 1 -w 60 10.0.0.1 >/dev/null && echo ok'
# networkd may still say "configuring" a moment after the address works (a fast boot): wait up
# to 60 s for it to settle before reading its state.
ask boot1 NET 'for i in $(seq 60); do networkctl list --no-legend | grep -q "routable *configured" && break; sleep 1; done; networkctl list --no-legend | grep -v loopback'
ask boot1 ADDR 'ip -4 -o addr show scope global'
ask boot1 RNG 'cat /sys/class/misc/hw_random/rng_current'
ask boot1 QGA 'systemctl is-active qemu-guest-agent'
ask boot1 ANALYZE 'systemd-analyze time | head -n 1'
ask boot1 BLAME 'systemd-analyze blame | head -n 6'
ask boot1 DONE 'date +%s'
echo "boot 1: checks done after $(($(date +%s) - started)) s"
state=$(answer boot1 STATE)
failed_units=$(answer boot1 FAILED)
echo "systemctl is-system-running: $state; failed units: ${failed_units:-none}"
echo "systemd-analyze: $(answer boot1 ANALYZE)"
echo "systemd-analyze blame (slowest units): $(answer boot1 BLAME)"
check "boot 1: systemctl is-system-running is running (got '$state'; failed: ${failed_units:-none})" \
  [ "$state" = running ]
check "boot 1: networkd configured the NIC ($(answer boot1 NET))" \
  sh -c "echo '$(answer boot1 NET)' | grep -q 'ether.*routable.*configured'"
check "boot 1: the NIC has 10.0.0.2/24 ($(answer boot1 ADDR))" \
  sh -c "echo '$(answer boot1 ADDR)' | grep -q '10.0.0.2/24'"
check "boot 1: the guest pings the host end of its TAP" [ "$(answer boot1 PING)" = ok ]
check "boot 1: the hwrng is virtio_rng ($(answer boot1 RNG))" \
  sh -c "echo '$(answer boot1 RNG)' | grep -q '^virtio_rng'"
check "boot 1: udev started qemu-guest-agent for the named port ($(answer boot1 QGA))" \
  [ "$(answer boot1 QGA)" = active ]
# The guest agent, a real peer of the console's MULTIPORT: vmm names the named port's pty.
pts=$(sed -n 's|^.*--console port1: console on \(/dev/pts/[0-9]*\)$|\1|p' /tmp/boot1.err | head -n 1)
check "boot 1: the guest agent's port is on a pty ($pts)" [ -c "$pts" ]
if [ -c "$pts" ]; then
  cat "$pts" >/tmp/qga.out 2>/dev/null &
  qga_reader=$!
  printf '{"execute":"guest-sync","arguments":{"id":4242}}\n' >"$pts"
  check "boot 1: the guest agent answers guest-sync" wait_for /tmp/qga.out '"return": 4242' 120
  printf '{"execute":"guest-info"}\n' >"$pts"
  check "boot 1: the guest agent answers guest-info" wait_for /tmp/qga.out '"version"' 60
  kill $qga_reader 2>/dev/null
  echo "guest agent: $(head -c 300 /tmp/qga.out)"
fi
guest_clock=$(answer boot1 DONE)
host_clock=$(date +%s)
check "boot 1: the guest's clock is the host's (guest $guest_clock, host $host_clock)" \
  sh -c "[ -n '$guest_clock' ] && [ $((host_clock - ${guest_clock:-0})) -ge 0 ] && [ $((host_clock - ${guest_clock:-0})) -lt 120 ]"
sent=$(date +%s)
send boot1 'systemctl poweroff'
stop
echo "boot 1: systemctl poweroff took $(($(date +%s) - sent)) s"
check "boot 1: systemctl poweroff ends vmm with status 0 (got $status)" \
  sh -c "[ $status -eq 0 ] && grep -qF '$powered_off' /tmp/boot1.err"
if [ -x ./e2fsck ]; then
  check "boot 1: e2fsck -fn finds the file system clean" fsck_clean boot1
  check "boot 1: the file written in the guest is there" file_there boot1
fi

# examples/debian/debian.system describes this machine.
if [ -f debian.system ]; then
  mkdir -p /tmp/debian
  ln -s /payload/vmlinuz /payload/initrd.img /tmp/debian/
  ln -s /dev/vda /tmp/debian/rootfs.img
  check "examples/debian/debian.system: vmm check accepts it" \
    sh -c "LIBVMM_DEBIAN=/tmp/debian ./vmm check debian.system >/tmp/check.out 2>&1 && grep -q 'virtio-blk vda' /tmp/check.out && grep -q 'virtio-rng' /tmp/check.out"
fi

# Boot 2: SIGTERM -> the power button (x86_64: ACPI; aarch64: the PL061 power key) ->
# systemd-logind powers off. First what boot 1 left: its file, and (where the emulated host has
# no e2fsck) no journal recovery, neither by the kernel's mount nor by the initrd's fsck: boot
# 1 unmounted it cleanly.
# --shutdown-timeout 180: under a loaded emulated host, systemd-shutdown was seen waiting 30 s
# and more for udev workers still busy from the boot (its own limit is 90 s).
debian boot2 --shutdown-timeout 180
wait_vmm /tmp/boot2.out "root@debian" 900
echo "boot 2: shell prompt after $(($(date +%s) - started)) s"
ask boot2 BOOT1 'echo $(cat /root/libvmm-test), recoveries $(dmesg | grep -c "EXT4-fs (vda): recovery complete") $(cat /run/initramfs/fsck.log 2>/dev/null | grep -c "recovering journal")'
ask boot2 WRITTEN 'echo "written by boot2" >/root/libvmm-test; sync; echo ok'
ask boot2 STATE 'systemctl is-system-running --wait'
# "running" does not mean udev has handled every device: on a loaded emulated host logind was
# once not yet watching the power button (arm64: the PL061's gpio-keys) when the key came, and
# the guest never powered off. Press it once logind says it watches the buttons (up to 300 s).
ask boot2 BUTTONS 'for i in $(seq 300); do journalctl -b -u systemd-logind --no-pager | grep -q "Watching system buttons" && break; sleep 1; done; journalctl -b -u systemd-logind --no-pager | grep "Watching system buttons" | sed "s/.*Watching/Watching/" | tr "\n" ";"'
echo "boot 2: logind: $(answer boot2 BUTTONS)"
sent=$(date +%s)
kill -TERM "$pid"
stop
echo "boot 2: power button to exit took $(($(date +%s) - sent)) s"
check "boot 2: boot 1's file, and no journal recovery ($(answer boot2 BOOT1))" \
  [ "$(answer boot2 BOOT1)" = "written by boot1, recoveries 0 0" ]
check "boot 2: vmm pressed the guest's power button" grep -qF "pressed the guest's power button" /tmp/boot2.err
check "boot 2: the guest powered off with status 0 (got $status)" \
  sh -c "[ $status -eq 0 ] && grep -qF '$powered_off' /tmp/boot2.err"
if [ -x ./e2fsck ]; then
  check "boot 2: e2fsck -fn finds the file system clean" fsck_clean boot2
  check "boot 2: the file written in the guest is there" file_there boot2
fi

finish linux_rootfs /tmp/check.out /tmp/boot1.out /tmp/boot1.err /tmp/fsck.boot1 /tmp/boot2.out /tmp/boot2.err /tmp/fsck.boot2
EOS

started=$(date +%s)
status=0
run_payload --disk "$work/rootfs.img" --timeout 2400 || status=$?
echo "emulated host run took $(($(date +%s) - started)) s"
[ "$status" -eq 0 ] || exit "$status"
# And on this machine, after the emulated host closed the image.
if e2fsck -fn "$work/rootfs.img" >"$work/fsck" 2>&1; then
  echo "PASS: e2fsck -fn on the host finds the image clean"
else
  cat "$work/fsck"
  echo "FAIL: e2fsck -fn on the host finds the image clean"
  exit 1
fi
written=$(debugfs -R "cat /root/libvmm-test" "$work/rootfs.img" 2>/dev/null) || true
if [ "$written" = "written by boot2" ]; then
  echo "PASS: the file the guest wrote last is in the image"
else
  echo "FAIL: the file the guest wrote last is in the image (got '$written')"
  exit 1
fi
