#!/usr/bin/env bash
# VFIO passthrough throughput: an NVMe controller read by the emulated KVM host's own nvme
# driver, against the same controller passed through (vmm --vfio) to a Linux guest reading it
# with its nvme driver, in one emulated host run (tools/emuhost/emuhost --nvme: q35, an emulated
# Intel IOMMU, QEMU's NVMe controller on a 256 MiB image of random data).
# Two jobs, the same programs on both sides, on /dev/nvme0n1, one request in flight:
#   seqread    busybox dd bs=1M iflag=direct of the first SEQ_MIB MiB (timed with randread --clock)
#   randread   RANDOM_READS 4 KiB O_DIRECT pread()s at random 4 KiB-aligned offsets over the
#              whole namespace (bench/randread.c, built here with cc -O2 -static)
# Rounds alternate host and guest (host, guest; guest, host; ...), so the controller moves
# between the host's nvme driver and vfio-pci (driver_override) every other round and neither
# side always goes first; one guest boot per round (256 MiB, 1 vCPU, vmm --vfio ADDR -v: its
# end-of-run counters show how many BAR accesses trapped and interrupts took the event loop).
# Usage: bench/vfio.sh [ROUNDS [SEQ_MIB [RANDOM_READS]]]   (default 9, 256, 20000; about 5
# minutes on a 2-core machine: a guest boots in ~5 s there). VFIO_BENCH_VMM=PATH runs that vmm
# binary instead of building build/gcc's; VFIO_BENCH_GUEST_ARGS="..." adds to the guest kernel's
# command line (e.g. idle=poll: the guest never halts waiting for its completion interrupt);
# VFIO_BENCH_HOST_DOMAIN=identity|DMA|DMA-FQ sets the controller's IOMMU group's default domain
# type before the host's nvme driver first binds (identity: the host's own reads bypass the
# IOMMU's translation, as with iommu=pt; the guest's go through VFIO's domain either way).
# Prints medians, min..max and the guest/host ratios; see docs/PERFORMANCE.md. The image is
# made once and kept in ${LIBVMM_CACHE:-~/.cache/libvmm}/vfio-bench/ (the emulated host gets a
# copy).
set -euo pipefail
rounds=${1:-9}
seq_mib=${2:-256}
reads=${3:-20000}
if ! [[ $rounds =~ ^[1-9][0-9]*$ && $seq_mib =~ ^[1-9][0-9]*$ && $reads =~ ^[1-9][0-9]*$ ]] \
    || [ "$seq_mib" -gt 256 ]; then
  echo "usage: bench/vfio.sh [ROUNDS [SEQ_MIB (1-256) [RANDOM_READS]]] (positive integers)" >&2
  exit 2
fi
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
cd "$repo"
vmm=${VFIO_BENCH_VMM:-}
if [ -z "$vmm" ]; then
  tools/install-deps
  [ -f build/gcc/build.ninja ] || cmake -S "$repo" -B build/gcc -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLIBVMM_WERROR=ON >/dev/null
  ninja -C build/gcc --quiet vmm >&2
  vmm=build/gcc/tools/vmm/vmm
fi
[ -x "$vmm" ] || { echo "$prog: $vmm is not an executable" >&2; exit 2; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# The namespace: 256 MiB of random data (reads of zeros could be short-cut somewhere), made once.
# Only read here, but QEMU opens it read-write: the emulated host gets a copy.
cache=${LIBVMM_CACHE:-$HOME/.cache/libvmm}/vfio-bench
mkdir -p "$cache"
source_image=$cache/nvme-urandom-256M.img
if [ ! -f "$source_image" ]; then
  head -c 256M /dev/urandom >"$source_image.tmp"
  mv "$source_image.tmp" "$source_image"
fi
image=$work/nvme.img
cp "$source_image" "$image"

cc -O2 -static -Wall -Wextra -o "$work/randread" bench/randread.c

# Guest side: /usr/bin/randread and /tests/vfiobench (run by /init for libvmm.test=vfiobench).
extra=$work/guest-extra
mkdir -p "$extra/usr/bin" "$extra/tests"
cp "$work/randread" "$extra/usr/bin/randread"
cat >"$extra/tests/vfiobench" <<EOS
#!/bin/sh
# One round of bench/vfio.sh on the passed-through NVMe namespace.
i=0
while [ ! -b /dev/nvme0n1 ] && [ \$i -lt 600 ]; do sleep 0.1; i=\$((i + 1)); done
[ -b /dev/nvme0n1 ] || { echo "LIBVMM-GUEST: no /dev/nvme0n1"; dmesg | grep -i nvme; exit 1; }
t0=\$(randread --clock)
if dd if=/dev/nvme0n1 of=/dev/null bs=1M count=$seq_mib iflag=direct 2>/dev/null; then
  t1=\$(randread --clock)
  echo "LIBVMM-GUEST: BENCH seqread \$(awk -v t0="\$t0" -v t1="\$t1" 'BEGIN { printf "mib_s=%.2f seconds=%.3f", $seq_mib / (t1 - t0), t1 - t0 }')"
else
  echo "LIBVMM-GUEST: dd failed"  # no figure from a read that did not happen
fi
echo "LIBVMM-GUEST: BENCH \$(randread /dev/nvme0n1 $reads 2>&1)"
EOS
chmod +x "$extra/tests/vfiobench"

payload_new x86_64 "$vmm" --extra "$extra"
cp "$work/randread" "$payload/"
# The emulated host boots with no NVMe driver (emuhost leaves the controller unbound): its own
# nvme module and what it needs, in load order.
"$emuhost" --pack-modules "$payload/modules" nvme

payload_script run.sh rounds="$rounds" seq_mib="$seq_mib" reads="$reads" \
  guest_args="${VFIO_BENCH_GUEST_ARGS:-}" host_domain="${VFIO_BENCH_HOST_DOMAIN:-}" <<'EOS'
nvme=
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/class")" = 0x010802 ] && nvme=$(basename "$d")
done
[ -n "$nvme" ] || { echo "BENCH-ERROR: the emulated host has no NVMe controller"; exit 1; }
dev=/sys/bus/pci/devices/$nvme
if [ -n "$host_domain" ]; then
  echo "$host_domain" >"$dev/iommu_group/type" \
    || { echo "BENCH-ERROR: cannot set the IOMMU group's type to $host_domain"; exit 1; }
fi
while read -r ko; do
  insmod "modules/$ko" || { echo "BENCH-ERROR: insmod $ko failed"; exit 1; }
done <modules/load-order
driver() { basename "$(readlink "$dev/driver" 2>/dev/null)" 2>/dev/null; }
# to_host, to_vfio: hand the controller to the host's nvme driver, or to vfio-pci.
# (The nvme driver finds its namespaces after probing, asynchronously: wait for the disk.)
to_host() {
  if [ "$(driver)" != nvme ]; then
    [ -e "$dev/driver" ] && echo "$nvme" >"$dev/driver/unbind"
    echo >"$dev/driver_override"
    echo "$nvme" >/sys/bus/pci/drivers_probe
  fi
  i=0
  while [ ! -b /dev/nvme0n1 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
  [ -b /dev/nvme0n1 ] || { echo "BENCH-ERROR: no /dev/nvme0n1 (driver: $(driver))"; dmesg | tail -n 20 | sed 's/^/BENCH-ERROR: dmesg: /'; exit 1; }
}
to_vfio() {
  [ "$(driver)" = vfio-pci ] && return 0
  [ -e "$dev/driver" ] && echo "$nvme" >"$dev/driver/unbind"
  echo vfio-pci >"$dev/driver_override"
  echo "$nvme" >/sys/bus/pci/drivers_probe
  group=$(basename "$(readlink "$dev/iommu_group")")
  [ -c "/dev/vfio/$group" ] || { echo "BENCH-ERROR: not bound to vfio-pci (driver: $(driver))"; exit 1; }
}
# host_round, guest_round: one round's two jobs, "host|guest seqread|randread mib_s=..." lines.
host_round() {
  to_host
  t0=$(./randread --clock)
  if dd if=/dev/nvme0n1 of=/dev/null bs=1M count="$seq_mib" iflag=direct 2>/dev/null; then
    t1=$(./randread --clock)
    echo "host seqread $(awk -v t0="$t0" -v t1="$t1" -v m="$seq_mib" 'BEGIN { printf "mib_s=%.2f seconds=%.3f", m / (t1 - t0), t1 - t0 }') round=$round"
  else
    echo "BENCH-ERROR: dd failed"
  fi
  echo "host $(./randread /dev/nvme0n1 "$reads" 2>&1) round=$round"
}
guest_round() {
  to_vfio
  started=$(cut -d' ' -f1 /proc/uptime)
  # A round takes 10-20 s on a 2-core machine: a guest still running after 300 s is stuck.
  bench_guest guest vfiobench 300 ./vmm --kernel bzImage --initrd initramfs.cpio.gz --memory 256M \
    --cmdline "console=ttyS0 quiet loglevel=5 libvmm.test=vfiobench $guest_args" --vfio "$nvme" -v |
    sed "s/\$/ round=$round/"  # pairs with the host's round by its number, not its place
  tr -d '\r' </tmp/out.guest | sed -n "s/.*vfio $nvme: \([0-9]*\) BAR accesses trapped (\([0-9]*\) .*, \([0-9]*\) interrupts through the event loop.*/guest vfio trapped=\1 msix_trapped=\2 loop_irqs=\3/p"
  echo "guest boot and round took $(awk -v a="$started" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.0f", b - a }') s"
  grep -qF 'test vfiobench exit status 0' /tmp/out.guest || {
    echo "BENCH-ERROR: guest round failed (vmm and console, then dmesg):"
    tr -d '\r' </tmp/out.guest | tail -n 20 | sed 's/^/BENCH-ERROR: /'
    dmesg | tail -n 10 | sed 's/^/BENCH-ERROR: dmesg: /'
  }
}
to_host
# The host's DMA domain (DMA: strict IOTLB flushes; DMA-FQ: lazy) for its own driver's reads.
domain=$(cat "$dev/iommu_group/type" 2>/dev/null || echo unknown)
echo "BENCH-SETUP nvme=$nvme size_sectors=$(cat /sys/block/nvme0n1/size) host_iommu_domain=$domain rounds=$rounds seq_mib=$seq_mib reads=$reads guest_args=$guest_args"
# Untimed: one pass over the namespace, so the first round's reads do not pay for the image
# file's first reads on the machine running QEMU.
dd if=/dev/nvme0n1 of=/dev/null bs=1M iflag=direct 2>/dev/null
round=0
while [ $round -lt "$rounds" ]; do
  if [ $((round % 2)) = 0 ]; then host_round; guest_round; else guest_round; host_round; fi
  round=$((round + 1))
done
EOS
collect '^((host|guest) (seqread|randread) |BENCH-SETUP|BENCH-ERROR|BENCH-WARNING|guest (boot|vfio) )' \
  --timeout $((600 + rounds * 600)) --nvme "$image" || true
need_results '^guest randread '
need_results '^host randread '
grep -E '^BENCH-(SETUP|ERROR)' "$work/results" || true
n_errors=$(grep -c '^BENCH-ERROR' "$work/results" || true)
n_host=$(grep -c '^host randread ' "$work/results") n_guest=$(grep -c '^guest randread ' "$work/results")
echo "per round:"
grep -E '^(host|guest) ' "$work/results" | sed 's/^/  /'
echo "median of $rounds rounds ($n_host host, $n_guest guest), one request in flight, 256 MiB namespace;"
echo "guest: vmm --vfio, 256 MiB, 1 vCPU; emulated KVM host (QEMU TCG, emulated NVMe and IOMMU)"
printf '%-9s %-6s %10s %12s %10s %12s %11s\n' job unit host "(min..max)" guest "(min..max)" guest/host
for job in seqread randread; do
  case $job in seqread) f=mib_s unit=MiB/s ;; *) f=iops unit=IOPS ;; esac
  h=$(result $f host $job) g=$(result $f guest $job)
  printf '%-9s %-6s %10.0f %12s %10.0f %12s %11s\n' $job $unit "${h:-0}" "$(spread $f host $job)" \
    "${g:-0}" "$(spread $f guest $job)" "$(ratio "$g" "$h")"
done
# The per-round ratios: how much the pairing matters against the spread of the medians.
for job in seqread randread; do
  case $job in seqread) f=mib_s ;; *) f=iops ;; esac
  # Paired by round number: a round that failed on one side leaves out that round only.
  awk -v job=$job -v f=$f '$2 == job { v = ""; k = ""; for (i = 3; i <= NF; i++) { split($i, kv, "=")
        if (kv[1] == f) v = kv[2]; if (kv[1] == "round") k = kv[2] }
      if (v != "" && k != "") { if ($1 == "host") h[k] = v; else if ($1 == "guest") g[k] = v } }
    END { n = 0; for (k in h) if ((k in g) && h[k] > 0) r[++n] = g[k] / h[k]
      if (!n) exit
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (r[j] < r[i]) { t = r[i]; r[i] = r[j]; r[j] = t }
      m = n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2
      printf "%s guest/host per round: median %.2f, min %.2f, max %.2f (%d rounds)\n", job, m, r[1], r[n], n }' \
    "$work/results"
done
[ "$n_host" = "$rounds" ] && [ "$n_guest" = "$rounds" ] \
  || echo "$prog: warning: of $rounds rounds, $n_host host and $n_guest guest rounds have results"
[ "$n_errors" = 0 ] || echo "$prog: warning: $n_errors BENCH-ERROR lines (above); the medians leave those rounds out"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
