#!/usr/bin/env bash
# virtio-blk over virtio-mmio against virtio-pci on AArch64 and RISC-V: the measurement the
# README's default transport is chosen by, as bench/block.sh's "vmm-pci" is on x86_64.
#   --arch aarch64 (default; also bench/transport-arm64.sh): the emulated arm64 KVM host, vGICv3;
#     virtio-pci's MSI-X through the ITS, virtio-mmio's interrupt an SPI through an irqfd.
#   --arch riscv64: the emulated riscv64 KVM host, KVM's AIA; virtio-pci's MSI-X straight to the
#     harts' IMSIC files (irqfds), virtio-mmio's interrupt an APLIC source (KVM_IRQ_LINE from the
#     event loop).
# One guest has two disks, one virtio-mmio and one virtio-pci, each backed by its own copy of the
# same random file in the emulated host's tmpfs (so the host side is the same page cache for
# both), and reads each in turn, alternating which goes first, ROUNDS times:
#   seqread   busybox dd bs=1M iflag=direct over the whole disk (timed with randread --clock)
#   randread  READS 4 KiB O_DIRECT pread()s at random 4 KiB-aligned offsets (bench/randread.c)
# Prints the medians, min..max and the pci/mmio ratios.
# Usage: bench/transport.sh [--arch aarch64|riscv64] [ROUNDS [READS]]   (default 5 and 4000; a
# few minutes). LIBVMM_ARM64_BUILD / LIBVMM_RISCV64_BUILD: the cross-build directory (default
# build/arm64-bench / build/riscv64-bench).
set -euo pipefail
arch=aarch64
if [ "${1:-}" = --arch ]; then arch=${2:-}; shift 2 || true; fi
rounds=${1:-5}
reads=${2:-4000}
if ! [[ $arch =~ ^(aarch64|riscv64)$ && $rounds =~ ^[0-9]+$ && $reads =~ ^[0-9]+$ ]] ||
  [ "$rounds" -eq 0 ] || [ "$reads" -eq 0 ]; then
  echo "usage: bench/transport.sh [--arch aarch64|riscv64] [ROUNDS [READS]] (positive integers)" >&2
  exit 2
fi
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
cd "$repo"
if [ "$arch" = aarch64 ]; then
  build=${LIBVMM_ARM64_BUILD:-$repo/build/arm64-bench}
  cross_build "$build" vmm
  machine_args='--gic v3' console=ttyAMA0 host_args='--gic 3'
else
  build=${LIBVMM_RISCV64_BUILD:-$repo/build/riscv64-bench}
  cross_build "$build" --arch riscv64 vmm
  machine_args='--irqchip aia' console=ttyS0 host_args=''
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

"$arch-linux-gnu-gcc" -O2 -static -Wall -Wextra -o "$work/randread" bench/randread.c
extra=$work/guest-extra
mkdir -p "$extra/usr/bin" "$extra/tests"
cp "$work/randread" "$extra/usr/bin/randread"
cat >"$extra/tests/transportbench" <<EOS
#!/bin/sh
# bench/transport.sh's rounds over vda and vdb: the one under a PCI function is the virtio-pci
# disk (which of the two gets which name depends on the order the drivers probed them).
for r in \$(seq $rounds); do
  order="vda vdb"
  [ \$((r % 2)) -eq 0 ] && order="vdb vda"
  for d in \$order; do
    t=mmio
    case \$(readlink -f /sys/block/\$d/device) in */pci*) t=pci ;; esac
    mib=\$((\$(cat /sys/block/\$d/size) / 2048))
    t0=\$(randread --clock)
    if dd if=/dev/\$d of=/dev/null bs=1M iflag=direct 2>/dev/null; then
      t1=\$(randread --clock)
      echo "LIBVMM-GUEST: BENCH \$t seqread \$(awk -v t0="\$t0" -v t1="\$t1" -v m="\$mib" 'BEGIN { printf "mib_s=%.2f seconds=%.3f", m / (t1 - t0), t1 - t0 }')"
    else
      echo "LIBVMM-GUEST: dd \$d failed"  # no figure from a read that did not happen
    fi
    echo "LIBVMM-GUEST: BENCH \$t \$(randread /dev/\$d $reads 2>&1)"
  done
done
EOS
chmod +x "$extra/tests/transportbench"
payload_new "$arch" "$build/tools/vmm/vmm" --extra "$extra"

payload_script run.sh machine_args="$machine_args" console="$console" <<'EOS'
dd if=/dev/urandom of=/tmp/mmio.img bs=1M count=64 2>/dev/null
cp /tmp/mmio.img /tmp/pci.img
# shellcheck disable=SC2086  # $machine_args: the interrupt controller's flag and value
./vmm --kernel Image --initrd initramfs.cpio.gz --memory 512M $machine_args \
  --cmdline "console=$console quiet libvmm.test=transportbench" \
  --disk /tmp/mmio.img,readonly --disk /tmp/pci.img,readonly,transport=pci </dev/null >/tmp/g.out 2>/tmp/g.err
echo "BENCH-SETUP vmm status $?"
tr -d '\r' </tmp/g.out | sed -n 's/.*LIBVMM-GUEST: BENCH //p'
grep -F "LIBVMM-GUEST:" /tmp/g.out | grep -v BENCH | sed 's/^/BENCH-SETUP /' | head -n 20
EOS
# shellcheck disable=SC2086  # $host_args: emuhost's options for this architecture's host
collect '^((mmio|pci) (seqread|randread) |BENCH-SETUP)' $host_args --timeout 1800
grep '^BENCH-SETUP' "$work/results" || true
need_results '^pci randread '
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# spread NAME WORDS: min..max of NAME over the lines that start with WORDS.
spread() {
  local name=$1
  shift
  awk -v words="$*" -v name="$name" 'index($0, words " ") == 1 {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) v[n++] = kv[2] } }
    END { if (n) { lo = hi = v[0]; for (i = 1; i < n; i++) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i] }
      printf "%s..%s", lo, hi } }' "$work/results"
}
printf '\n%-9s %-8s %14s %14s %8s   (medians of %s rounds, min..max below)\n' job figure mmio pci pci/mmio "$rounds"
for row in "seqread mib_s" "randread iops"; do
  read -r job figure <<<"$row"
  m=$(result "$figure" mmio "$job") p=$(result "$figure" pci "$job")
  printf '%-9s %-8s %14s %14s %8s\n' "$job" "$figure" "$m" "$p" "$(ratio "$p" "$m")"
  printf '%-9s %-8s %14s %14s\n' "" "" "$(spread "$figure" mmio "$job")" "$(spread "$figure" pci "$job")"
done
