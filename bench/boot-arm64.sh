#!/usr/bin/env bash
# arm64 boot-time and memory benchmark: our cross-built vmm against QEMU (`-M virt`, KVM) side
# by side in the same emulated arm64 KVM host run (tools/emuhost-arm64, GICv3), booting the
# same Debian arm64 kernel and initramfs with the same memory, vCPUs and command line. QEMU
# for arm64 comes from Debian's qemu-system-arm:arm64 and its dependencies, fetched with
# `apt-get download` and unpacked (never installed) in the cache.
# Measures with bench/bootmark (cross-built), as bench/boot.sh does on x86_64:
#   marker_ms   wall time from starting the VMM to the guest's /init printing its first line
#   maxrss_kib  the VMM process's peak resident memory until then
# Usage: bench/boot-arm64.sh [RUNS]   (default 5). Prints a table of medians.
set -euo pipefail
runs=${1:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
tools/install-deps-arm64
build=${LIBVMM_ARM64_BUILD:-$repo/build/arm64}
cmake -G Ninja -S . -B "$build" -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake >/dev/null
ninja -C "$build" -j2 vmm bootmark >/dev/null
kernel=$(tools/emuhost-arm64/emuhost --print-kernel)
initrd=$(images/build-initramfs aarch64)

qemu=${LIBVMM_CACHE:-$HOME/.cache/libvmm}/arm64-qemu
if [ ! -x "$qemu/root/usr/bin/qemu-system-aarch64" ]; then
  echo "boot-arm64.sh: fetching qemu-system-arm:arm64 and its libraries" >&2
  rm -rf "$qemu"
  mkdir -p "$qemu/dl"
  # Everything it depends on, but the C runtime (ours is copied with vmm) and base packages.
  pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances --no-pre-depends qemu-system-arm:arm64 \
    | grep -E '^[a-z0-9].*:arm64$' | sort -u \
    | grep -vE '^(libc6|libgcc-s1|libstdc\+\+6|debconf|perl-base|dpkg|tar|coreutils|init-system-helpers|adduser|passwd|libpam|lsb-base|sensible-utils|base-files|util-linux|mount|systemd|libsystemd0|libcrypt1)')
  (cd "$qemu/dl" && apt-get download -qq -o APT::Sandbox::User=root $pkgs)
  for deb in "$qemu"/dl/*.deb; do dpkg-deb -x "$deb" "$qemu/root"; done
  rm -rf "$qemu/dl"
fi

payload=$(mktemp -d)
trap 'rm -rf "$payload"' EXIT
cp "$kernel" "$payload/Image"
cp "$initrd" "$payload/initramfs.cpio.gz"
tools/emuhost-arm64/copy-binary "$build/tools/vmm/vmm" "$payload"
tools/emuhost-arm64/copy-binary "$build/bench/bootmark" "$payload"
COPY_BINARY_LIBDIRS=$qemu/root/usr/lib/aarch64-linux-gnu:$qemu/root/lib/aarch64-linux-gnu \
  tools/emuhost-arm64/copy-binary "$qemu/root/usr/bin/qemu-system-aarch64" "$payload"

cat >"$payload/run.sh" <<EOS
#!/bin/sh
cmdline="console=ttyAMA0 quiet"
marker="LIBVMM-GUEST: init started"
i=0
while [ \$i -lt $runs ]; do
  echo "vmm \$(./bootmark "\$marker" ./vmm --kernel Image --initrd initramfs.cpio.gz --memory 256M --cmdline "\$cmdline" --quiet)"
  echo "qemu \$(./bootmark "\$marker" ./qemu-system-aarch64 -M virt,gic-version=3 -accel kvm -cpu host -m 256M -smp 1 \
      -nodefaults -no-user-config -display none -serial stdio -no-reboot \
      -kernel Image -initrd initramfs.cpio.gz -append "\$cmdline")"
  i=\$((i + 1))
done
EOS
chmod +x "$payload/run.sh"
tools/emuhost-arm64/emuhost --timeout 1200 "$payload" | tee "$payload/log" | grep -E '^(vmm|qemu) marker_ms=' >"$payload/results" || true

median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
field() { grep "^$1 " "$payload/results" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2 | median; }
[ -s "$payload/results" ] || { echo "boot-arm64.sh: no results; emulated host output:"; tail -30 "$payload/log"; exit 1; }
printf '%-6s %12s %14s  (median of %s runs, emulated arm64 KVM host, 256 MiB, 1 vCPU)\n' VMM "to /init ms" "peak RSS KiB" "$runs"
for v in vmm qemu; do
  printf '%-6s %12s %14s\n' "$v" "$(field $v marker_ms)" "$(field $v maxrss_kib)"
done
grep -F 'marker_ms=-1' "$payload/results" && echo "boot-arm64.sh: warning: some runs never reached /init" || true
