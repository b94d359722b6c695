#!/usr/bin/env bash
# Boot-time and memory benchmark: our vmm against QEMU (-M microvm) side by side, in the same
# emulated KVM host run, booting the same kernel and initramfs with the same memory and command
# line. QEMU runs microvm with acpi=off (MP table, as ours): its ACPI tables expect PCI, which
# the minimal guest kernel leaves out, and without working interrupt routing /init never prints.
# For each VMM, RUNS boots (interleaved) measure, with bench/bootmark:
#   marker_ms   wall time from starting the VMM to the guest's /init printing its first line
#   maxrss_kib  the VMM process's peak resident memory until then (guest RAM it touched included)
# Usage: bench/boot.sh [RUNS]   (default 5). Prints a table of medians; see docs/PERFORMANCE.md.
set -euo pipefail
runs=${1:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
tools/install-deps
tools/build build/gcc
kernel=$(images/build-kernel x86_64)
initrd=$(images/build-initramfs x86_64)

payload=$(mktemp -d)
trap 'rm -rf "$payload"' EXIT
cp "$kernel" "$payload/bzImage"
cp "$initrd" "$payload/initramfs.cpio.gz"
tools/emuhost/copy-binary build/gcc/tools/vmm/vmm "$payload"
tools/emuhost/copy-binary build/gcc/bench/bootmark "$payload"
tools/emuhost/copy-binary /usr/bin/qemu-system-x86_64 "$payload"
mkdir -p "$payload/qemu-data"
cp /usr/share/qemu/{bios-microvm.bin,qboot.rom,linuxboot_dma.bin,pvh.bin} "$payload/qemu-data/"

cat >"$payload/run.sh" <<EOS
#!/bin/sh
cmdline="console=ttyS0 quiet"
marker="LIBVMM-GUEST: init started"
i=0
while [ \$i -lt $runs ]; do
  echo "vmm \$(./bootmark "\$marker" ./vmm --kernel bzImage --initrd initramfs.cpio.gz --memory 256M --cmdline "\$cmdline" --quiet)"
  echo "qemu \$(./bootmark "\$marker" ./qemu-system-x86_64 -L qemu-data -M microvm,acpi=off -accel kvm -cpu host -m 256M -smp 1 \
      -nodefaults -no-user-config -display none -serial stdio -no-reboot \
      -kernel bzImage -initrd initramfs.cpio.gz -append "\$cmdline")"
  i=\$((i + 1))
done
EOS
chmod +x "$payload/run.sh"
tools/emuhost/emuhost --timeout 1200 "$payload" | tee "$payload/log" | grep -E '^(vmm|qemu) marker_ms=' >"$payload/results" || true

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
field() { grep "^$1 " "$payload/results" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2 | median; }
[ -s "$payload/results" ] || { echo "boot.sh: no results; emulated host output:"; tail -30 "$payload/log"; exit 1; }
printf '%-6s %12s %14s  (median of %s runs, emulated KVM host, 256 MiB, 1 vCPU)\n' VMM "to /init ms" "peak RSS KiB" "$runs"
for v in vmm qemu; do
  printf '%-6s %12s %14s\n' "$v" "$(field $v marker_ms)" "$(field $v maxrss_kib)"
done
grep -F 'marker_ms=-1' "$payload/results" && echo "boot.sh: warning: some runs never reached /init" || true
