#!/usr/bin/env bash
# Boots the real guest kernel and initramfs (images/) with our vmm inside the emulated KVM host
# (tools/emuhost) and checks what a user sees:
#   boot      /init runs, 2 vCPUs come up, `reboot` inside the guest ends vmm with status 0;
#   poweroff  `poweroff` inside the guest (ACPI S5) ends vmm with status 0;
#   console   input typed on vmm's stdin reaches the guest shell, which runs it and echoes;
#             every thread of vmm runs under its seccomp filter (the default --seccomp=kill);
#   vmlinux   the same kernel as an uncompressed ELF vmlinux (images/extract-vmlinux) boots
#             with 2 vCPUs through its own entry point, without the decompressor;
# Usage: linux_boot.sh VMM
set -euo pipefail
vmm=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"
payload_new x86_64 "$vmm"
"$repo/images/extract-vmlinux" "$payload/bzImage" "$payload/vmlinux"

payload_script run.sh <<'EOS'
# Runs inside the emulated host (busybox sh). Prints one PASS/FAIL line per check.

# 1. Boot with 2 vCPUs to /init's test, which reboots (not quiet: the 16550A line is info).
boot boot "libvmm.test=hello" --vcpus 2
check "boot: /init ran" grep -qF "LIBVMM-GUEST: init started" /tmp/boot.out
check "boot: the test ran" grep -qF "LIBVMM-GUEST: hello" /tmp/boot.out
check "boot: 2 vCPUs came up" grep -qF "smp: Brought up 1 node, 2 CPUs" /tmp/boot.out
check "boot: the serial port is a 16550A" grep -qE "ttyS0 at I/O 0x3f8 \(irq = 4.*is a 16550A" /tmp/boot.out
check "boot: exit status 0 after the guest rebooted" [ "$status" -eq 0 ]
check "boot: vmm said why it stopped" grep -qF "guest stopped (reset)" /tmp/boot.err

# 2. Power off through ACPI (S5) instead of rebooting.
boot off "quiet libvmm.test=poweroff"
check "poweroff: the guest asked" grep -qF "LIBVMM-GUEST: powering off" /tmp/off.out
check "poweroff: exit status 0" [ "$status" -eq 0 ]
check "poweroff: vmm saw an ACPI power-off" grep -qF "guest stopped (power off)" /tmp/off.err

# 3. Interactive console: feed the shell through a FIFO once its prompt shows.
start console guest --memory 256M --cmdline "console=ttyS0 quiet"
check "console: the shell prompt appeared" wait_for /tmp/console.out "guest# " 120
check "seccomp: every thread of vmm is sandboxed (the default, kill)" sandboxed
send console 'echo marker-$((6*7))'
check "console: input reached the guest and ran" wait_for /tmp/console.out "marker-42" 60
check "console: the guest echoed the typed line" grep -qF 'echo marker-$((6*7))' /tmp/console.out
send console 'reboot -f'
stop
check "console: exit status 0 after reboot" [ "$status" -eq 0 ]

# 4. The uncompressed vmlinux of the same kernel, loaded segment by segment.
kernel=vmlinux
boot elf "libvmm.test=hello" --vcpus 2 -v
kernel=bzImage
check "vmlinux: /init ran" grep -qF "LIBVMM-GUEST: init started" /tmp/elf.out
check "vmlinux: 2 vCPUs came up" grep -qF "smp: Brought up 1 node, 2 CPUs" /tmp/elf.out
check "vmlinux: loaded at its physical address, entered at it" \
  grep -qE "kernel at \[0x1000000, .*entry 0x1000000" /tmp/elf.err
check "vmlinux: exit status 0 after the guest rebooted" [ "$status" -eq 0 ]

finish linux_boot /tmp/elf.out /tmp/elf.err /tmp/boot.out /tmp/boot.err /tmp/off.out /tmp/off.err /tmp/console.out /tmp/console.err
EOS
run_payload --timeout 600
