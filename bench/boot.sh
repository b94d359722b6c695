#!/usr/bin/env bash
# Boot-time and memory benchmark: our vmm against QEMU side by side, in the same emulated KVM
# host run, booting the same kernel and initramfs with the same memory, vCPUs and command line.
#   x86_64 (default): the guest kernel and initramfs from images/ under vmm and QEMU -M microvm.
#     QEMU runs microvm with acpi=off (MP table, as ours): its ACPI tables expect PCI, which the
#     minimal guest kernel leaves out, and without working interrupt routing /init never prints.
#   --arch aarch64 (also bench/boot-arm64.sh): in the emulated arm64 host (GICv3), Debian's
#     stock arm64 kernel and images/build-initramfs aarch64 under our cross-built vmm (in
#     $LIBVMM_ARM64_BUILD, default build/arm64) and QEMU -M virt. QEMU for arm64 comes from
#     Debian's qemu-system-arm:arm64 and its dependencies, fetched with `apt-get download` and
#     unpacked (never installed) in the cache.
# For each VMM, RUNS boots (interleaved) measure, with bench/bootmark:
#   marker_ms   wall time from starting the VMM to the guest's /init printing its first line
#   maxrss_kib  the VMM process's peak resident memory until then (guest RAM it touched included)
# Usage: bench/boot.sh [--arch x86_64|aarch64] [RUNS]   (default 5). Prints a table of medians;
# see docs/PERFORMANCE.md.
set -euo pipefail
arch=x86_64
if [ "${1:-}" = --arch ]; then arch=${2:-}; shift 2 || true; fi
runs=${1:-5}
[[ $arch =~ ^(x86_64|aarch64)$ && $runs =~ ^[0-9]+$ ]] && [ "$runs" -gt 0 ] \
  || { echo "usage: bench/boot.sh [--arch x86_64|aarch64] [RUNS]" >&2; exit 2; }
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
cd "$repo"

if [ "$arch" = x86_64 ]; then
  native_build
  build=build/gcc
  payload_new x86_64 "$build/tools/vmm/vmm"
  payload_binary "$build/bench/bootmark" /usr/bin/qemu-system-x86_64
  mkdir -p "$payload/qemu-data"
  cp /usr/share/qemu/{bios-microvm.bin,qboot.rom,linuxboot_dma.bin,pvh.bin} "$payload/qemu-data/"
  qemu='./qemu-system-x86_64 -L qemu-data -M microvm,acpi=off'
  where="emulated KVM host"
else
  build=${LIBVMM_ARM64_BUILD:-$repo/build/arm64}
  cross_build "$build" vmm bootmark
  qemu_root=${LIBVMM_CACHE:-$HOME/.cache/libvmm}/arm64-qemu
  if [ ! -x "$qemu_root/root/usr/bin/qemu-system-aarch64" ]; then
    echo "$prog: fetching qemu-system-arm:arm64 and its libraries" >&2
    rm -rf "$qemu_root"
    mkdir -p "$qemu_root/dl"
    # Everything it depends on, but the C runtime (ours is copied with vmm) and base packages.
    pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances --no-pre-depends qemu-system-arm:arm64 \
      | grep -E '^[a-z0-9].*:arm64$' | sort -u \
      | grep -vE '^(libc6|libgcc-s1|libstdc\+\+6|debconf|perl-base|dpkg|tar|coreutils|init-system-helpers|adduser|passwd|libpam|lsb-base|sensible-utils|base-files|util-linux|mount|systemd|libsystemd0|libcrypt1)')
    # shellcheck disable=SC2086  # one word a package
    (cd "$qemu_root/dl" && apt-get download -qq -o APT::Sandbox::User=root $pkgs)
    for deb in "$qemu_root"/dl/*.deb; do dpkg-deb -x "$deb" "$qemu_root/root"; done
    rm -rf "$qemu_root/dl"
  fi
  payload_new aarch64 "$build/tools/vmm/vmm"
  payload_binary "$build/bench/bootmark"
  COPY_BINARY_LIBDIRS=$qemu_root/root/usr/lib/aarch64-linux-gnu:$qemu_root/root/lib/aarch64-linux-gnu \
    payload_binary "$qemu_root/root/usr/bin/qemu-system-aarch64"
  qemu='./qemu-system-aarch64 -M virt,gic-version=3'
  where="emulated arm64 KVM host"
fi

payload_script run.sh runs="$runs" qemu="$qemu" <<'EOS'
cmdline="console=$console quiet"
marker="LIBVMM-GUEST: init started"
i=0
while [ $i -lt "$runs" ]; do
  echo "vmm $(./bootmark "$marker" ./vmm --kernel "$kernel" --initrd initramfs.cpio.gz --memory 256M --cmdline "$cmdline" --quiet)"
  # shellcheck disable=SC2086  # $qemu: the program and its machine options
  echo "qemu $(./bootmark "$marker" $qemu -accel kvm -cpu host -m 256M -smp 1 \
      -nodefaults -no-user-config -display none -serial stdio -no-reboot \
      -kernel "$kernel" -initrd initramfs.cpio.gz -append "$cmdline")"
  i=$((i + 1))
done
EOS
collect '^(vmm|qemu) marker_ms=' --timeout 1200
need_results '^(vmm|qemu) '
printf '%-6s %12s %14s  (median of %s runs, %s, 256 MiB, 1 vCPU)\n' VMM "to /init ms" "peak RSS KiB" \
  "$runs" "$where"
for v in vmm qemu; do
  printf '%-6s %12s %14s\n' "$v" "$(result marker_ms $v)" "$(result maxrss_kib $v)"
done
grep -F 'marker_ms=-1' "$work/results" && echo "$prog: warning: some runs never reached /init" || true
