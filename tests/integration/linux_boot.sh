#!/usr/bin/env bash
# Boots the real guest kernel and initramfs (images/) with our vmm inside the emulated KVM host
# (tools/emuhost) and checks what a user sees:
#   boot      /init runs, 2 vCPUs come up, `reboot` inside the guest ends vmm with status 0;
#   poweroff  `poweroff` inside the guest (ACPI S5) ends vmm with status 0;
#   console   input typed on vmm's stdin reaches the guest shell, which runs it and echoes;
# Usage: linux_boot.sh VMM
set -euo pipefail
vmm=$1
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

kernel=$("$repo/images/build-kernel" x86_64)
initrd=$("$repo/images/build-initramfs" x86_64)
payload=$work/payload
mkdir -p "$payload"
cp "$kernel" "$payload/bzImage"
cp "$initrd" "$payload/initramfs.cpio.gz"
"$repo/tools/emuhost/copy-binary" "$vmm" "$payload"

cat >"$payload/run.sh" <<'EOS'
#!/bin/sh
# Runs inside the emulated host (busybox sh). Prints one PASS/FAIL line per check.
passed=0 failed=0
check() {  # check NAME CONDITION-COMMAND...
  name=$1; shift
  if "$@"; then echo "PASS: $name"; passed=$((passed + 1)); else echo "FAIL: $name"; failed=$((failed + 1)); fi
}
wait_for() {  # wait_for FILE TEXT SECONDS
  i=0
  while [ $i -lt $(($3 * 10)) ]; do grep -qF -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; i=$((i + 1)); done
  return 1
}

# 1. Boot with 2 vCPUs to /init's test, which reboots.
./vmm --kernel bzImage --initrd initramfs.cpio.gz --memory 256M --vcpus 2 \
  --cmdline "console=ttyS0 libvmm.test=hello" </dev/null >/tmp/boot.out 2>/tmp/boot.err
status=$?
check "boot: /init ran" grep -qF "LIBVMM-GUEST: init started" /tmp/boot.out
check "boot: the test ran" grep -qF "LIBVMM-GUEST: hello" /tmp/boot.out
check "boot: 2 vCPUs came up" grep -qF "smp: Brought up 1 node, 2 CPUs" /tmp/boot.out
check "boot: the serial port is a 16550A" grep -qE "ttyS0 at I/O 0x3f8 \(irq = 4.*is a 16550A" /tmp/boot.out
check "boot: exit status 0 after the guest rebooted" [ "$status" -eq 0 ]
check "boot: vmm said why it stopped" grep -qF "guest stopped (reset)" /tmp/boot.err

# 2. Power off through ACPI (S5) instead of rebooting.
./vmm --kernel bzImage --initrd initramfs.cpio.gz --memory 256M \
  --cmdline "console=ttyS0 quiet libvmm.test=poweroff" </dev/null >/tmp/off.out 2>/tmp/off.err
status=$?
check "poweroff: the guest asked" grep -qF "LIBVMM-GUEST: powering off" /tmp/off.out
check "poweroff: exit status 0" [ "$status" -eq 0 ]
check "poweroff: vmm saw an ACPI power-off" grep -qF "guest stopped (power off)" /tmp/off.err

# 3. Interactive console: feed the shell through a FIFO once its prompt shows.
mkfifo /tmp/console.in
./vmm --kernel bzImage --initrd initramfs.cpio.gz --memory 256M \
  --cmdline "console=ttyS0 quiet" <>/tmp/console.in >/tmp/console.out 2>/tmp/console.err &
pid=$!
check "console: the shell prompt appeared" wait_for /tmp/console.out "guest# " 120
echo 'echo marker-$((6*7))' >/tmp/console.in
check "console: input reached the guest and ran" wait_for /tmp/console.out "marker-42" 60
check "console: the guest echoed the typed line" grep -qF 'echo marker-$((6*7))' /tmp/console.out
echo 'reboot -f' >/tmp/console.in
wait $pid
status=$?
check "console: exit status 0 after reboot" [ "$status" -eq 0 ]

for f in /tmp/boot.out /tmp/boot.err /tmp/off.out /tmp/off.err /tmp/console.out /tmp/console.err; do
  [ $failed -eq 0 ] || { echo "---- $f"; tail -n 40 "$f"; }
done
echo "linux_boot: $passed passed, $failed failed"
[ $failed -eq 0 ]
EOS
chmod +x "$payload/run.sh"
"$repo/tools/emuhost/emuhost" --timeout 600 "$payload"
