#!/usr/bin/env bash
# Boot-time and memory benchmark: our vmm against QEMU side by side, in the same emulated KVM
# host run, booting the same kernel and initramfs with the same memory, vCPUs and command line.
#   x86_64 (default): the guest kernel and initramfs from images/ under vmm and QEMU -M microvm;
#     also under vmm as the uncompressed vmlinux (images/extract-vmlinux, the same kernel
#     without its decompressor; column vmm-elf). QEMU boots the bzImage only: it loads an ELF
#     kernel through PVH, which the minimal guest kernel leaves out.
#     QEMU runs microvm with acpi=off (MP table, as ours): its ACPI tables expect PCI, which the
#     minimal guest kernel leaves out, and without working interrupt routing /init never prints.
#   --arch aarch64 (also bench/boot-arm64.sh): in the emulated arm64 host (GICv3), Debian's
#     stock arm64 kernel and images/build-initramfs aarch64 under our cross-built vmm (in
#     $LIBVMM_ARM64_BUILD, default build/arm64) and QEMU -M virt. QEMU for arm64 comes from
#     Debian's qemu-system-arm:arm64 and its dependencies, fetched with `apt-get download` and
#     unpacked (never installed) in the cache.
#   --arch riscv64 (also bench/boot-riscv64.sh): in the emulated riscv64 host (KVM's in-kernel
#     AIA), Debian 13's stock riscv64 kernel and images/build-initramfs riscv64 under our
#     cross-built vmm ($LIBVMM_RISCV64_BUILD, default build/riscv64) and QEMU -M
#     virt,aia=aplic-imsic from Debian 13's qemu-system-riscv:riscv64, unpacked in the cache.
# For each VMM, RUNS boots (interleaved, the order rotating each round) measure, with bench/bootmark:
#   marker_ms   wall time from starting the VMM to the guest's /init printing its first line
#   maxrss_kib  the VMM process's peak resident memory until then (guest RAM it touched included)
# Usage: bench/boot.sh [--arch x86_64|aarch64|riscv64] [RUNS]   (default 5). Prints a table of
# medians with min..max, and the vmm/qemu ratio of each interleaved pair; see docs/PERFORMANCE.md.
#   BOOT_DEVICES=1   (x86_64) every VM gets a disk (a 1 MiB image), an entropy device and a
#                    console (to a file): vmm with its default transport (virtio-pci), "vmm-mmio"
#                    the same with transport=mmio, QEMU microvm the same over its virtio-mmio
#                    (modern, and a console of one port, as ours: bench/boot-setup.sh);
#                    no vmm-elf.
set -euo pipefail
arch=x86_64
if [ "${1:-}" = --arch ]; then arch=${2:-}; shift 2 || true; fi
runs=${1:-5}
[[ $arch =~ ^(x86_64|aarch64|riscv64)$ && $runs =~ ^[0-9]+$ ]] && [ "$runs" -gt 0 ] \
  || { echo "usage: bench/boot.sh [--arch x86_64|aarch64|riscv64] [RUNS]" >&2; exit 2; }
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
cd "$repo"

# shellcheck source=bench/boot-setup.sh
. "$repo/bench/boot-setup.sh"
boot_payload "$arch"
vmms=vmm
devices=${BOOT_DEVICES:-}
if [ -n "$devices" ]; then
  [ "$arch" = x86_64 ] || { echo "bench/boot.sh: BOOT_DEVICES is for x86_64" >&2; exit 2; }
  vmms="vmm vmm-mmio"
elif [ "$arch" = x86_64 ]; then
  "$repo/images/extract-vmlinux" "$payload/bzImage" "$payload/vmlinux"
  vmms="vmm vmm-elf"
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

vmm_devices='' mmio_devices='' qemu_devices=''
if [ -n "$devices" ]; then
  vmm_devices=$boot_devices_vmm mmio_devices=$boot_devices_vmm_mmio qemu_devices=$boot_devices_qemu
fi
payload_script run.sh runs="$runs" qemu="$qemu" vmm_devices="$vmm_devices" \
    mmio_devices="$mmio_devices" qemu_devices="$qemu_devices" <<'EOS'
cmdline="console=$console quiet"
marker="LIBVMM-GUEST: init started"
[ -z "$vmm_devices" ] || dd if=/dev/zero of=/tmp/disk.img bs=1M count=1 2>/dev/null
boot() {  # boot VMM: one run, one result line
  image=$kernel more=$vmm_devices
  case $1 in
    vmm-elf) image=vmlinux ;;
    vmm-mmio) more=$mmio_devices ;;
  esac
  if [ "$1" = qemu ]; then
    # shellcheck disable=SC2086  # $qemu: the program and its machine options; $qemu_devices: words
    echo "qemu $(./bootmark "$marker" $qemu -accel kvm -cpu host -m 256M -smp 1 \
        -nodefaults -no-user-config -display none -serial stdio -no-reboot \
        -kernel "$kernel" -initrd initramfs.cpio.gz -append "$cmdline" $qemu_devices)"
  else
    # shellcheck disable=SC2086  # $more: words
    echo "$1 $(./bootmark "$marker" ./vmm --kernel "$image" --initrd initramfs.cpio.gz --memory 256M --cmdline "$cmdline" --quiet $more)"
  fi
}
set -- vmm qemu
[ ! -f vmlinux ] || set -- vmm vmm-elf qemu
[ -z "$vmm_devices" ] || set -- vmm vmm-mmio qemu
i=0
while [ $i -lt "$runs" ]; do
  for v in "$@"; do boot "$v"; done
  # The first goes last next round: no VMM always boots right after the same one.
  first=$1; shift; set -- "$@" "$first"
  i=$((i + 1))
done
EOS
collect '^(vmm|vmm-elf|vmm-mmio|qemu) marker_ms=' --timeout 1200
need_results '^(vmm|qemu) '
# spread FIELD VMM: "min..max" of a figure over the runs that reached /init.
spread() {
  awk -v vmm="$2" -v name="$1" '$1 == vmm {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name && kv[2] >= 0) {
      v = kv[2] + 0; if (n == 0 || v < lo) lo = v; if (n == 0 || v > hi) hi = v; n++ } } }
    END { if (n) printf "%d..%d", lo, hi; else print "-" }' "$work/results"
}
printf '%-7s %12s %14s %16s  (median and min..max of %s runs, %s, 256 MiB, 1 vCPU)\n' VMM \
  "to /init ms" "peak RSS KiB" "to /init min..max" "$runs" "$where"
# The medians are of the runs that reached /init: a failed one (-1, and its RSS) is no figure.
grep -vE 'marker_ms=-1(\.0*)?( |$)' "$work/results" >"$work/reached" || true
for v in $vmms qemu; do
  printf '%-7s %12s %14s %16s\n' "$v" "$(results_file=$work/reached result marker_ms $v)" \
    "$(results_file=$work/reached result maxrss_kib $v)" "$(spread marker_ms $v)"
done
# vmm / qemu per interleaved pair (run i of each): the median and the range of the ratios.
for v in $vmms; do
  awk -v vmm="$v" '$1 == vmm || $1 == "qemu" { for (i = 2; i <= NF; i++) { split($i, kv, "=")
        if (kv[1] == "marker_ms") { if ($1 == vmm) v[++nv] = kv[2]; else q[++nq] = kv[2] } } }
    END { n = 0; for (i = 1; i <= nv && i <= nq; i++) if (v[i] > 0 && q[i] > 0) r[++n] = v[i] / q[i]
      if (!n) exit
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
      m = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
      printf "%s/qemu to /init, per pair: median %.2fx, min %.2fx, max %.2fx (%d pairs)\n", vmm, m, r[1], r[n], n }' \
    "$work/results"
done
# Every run in order, for spreads that medians hide (e.g. two modes).
for v in $vmms qemu; do
  printf '%-7s runs (ms):%s\n' "$v" "$(awk -v vmm="$v" '$1 == vmm { for (i = 2; i <= NF; i++) {
    split($i, kv, "="); if (kv[1] == "marker_ms") printf " %d", kv[2] } }' "$work/results")"
done
grep -F 'marker_ms=-1' "$work/results" && echo "$prog: warning: some runs never reached /init" || true
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
