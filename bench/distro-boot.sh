#!/usr/bin/env bash
# Debian boot benchmark (issue 14): the systemd root file system of images/build-rootfs ARCH
# with Debian's own kernel and initrd, under our vmm and under QEMU, in one emulated KVM host
# run, interleaved (vmm first in even rounds, QEMU first in odd ones):
#   x86_64 (default): QEMU -M microvm with ACPI on (its DSDT describes virtio-mmio as ours does);
#   --arch aarch64: in the emulated arm64 host (GICv3), our cross-built vmm
#     ($LIBVMM_ARM64_BUILD, default build/arm64) and QEMU -M virt,gic-version=3 (Debian's
#     qemu-system-arm:arm64, unpacked in the cache: bench/boot-setup.sh).
# Same image (the emulated host's /dev/vda, a sparse copy of the cached image), kernel, initrd,
# command line, 512 MiB, 1 vCPU, a virtIO disk and entropy device over modern virtio-mmio (QEMU
# with -global virtio-mmio.force-legacy=false: 7.2's default is legacy), the serial console.
# Each boot: the VMM starts; the serial console shows root's automatic login; then
# `systemd-analyze time` and `poweroff` are typed (a boot that does not reach the prompt within
# 900 s is stopped, and the end of its console and stderr printed). Per VMM and round:
#   login_ms     wall time from starting the VMM to the shell prompt after the autologin
#   kernel_ms, initrd_ms, userspace_ms   systemd-analyze's split of the boot (initrd: only
#                with a systemd initrd; Debian's initramfs-tools one counts as kernel time)
#   exits        KVM's exit counter (debugfs /sys/kernel/debug/kvm/exits, the one live VM)
#                from start to the prompt: a figure that does not depend on how busy the
#                machine is
# Usage: bench/distro-boot.sh [--arch x86_64|aarch64] [ROUNDS]   (default 3). Prints medians
# with min..max; see docs/PERFORMANCE.md. VMM=PATH benchmarks that vmm binary (built for ARCH)
# instead of building one.
set -euo pipefail
arch=x86_64
if [ "${1:-}" = --arch ]; then arch=${2:-}; shift 2 || true; fi
rounds=${1:-3}
[[ $arch =~ ^(x86_64|aarch64)$ && $rounds =~ ^[0-9]+$ ]] && [ "$rounds" -gt 0 ] \
  || { echo "usage: bench/distro-boot.sh [--arch x86_64|aarch64] [ROUNDS]" >&2; exit 2; }
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
# shellcheck source=bench/boot-setup.sh
. "$repo/bench/boot-setup.sh"
cd "$repo"
if [ -n "${VMM:-}" ]; then
  [ -x "$VMM" ] || { echo "$prog: VMM=$VMM is not an executable file" >&2; exit 2; }
  vmm=$VMM
elif [ "$arch" = x86_64 ]; then
  native_build
  vmm=$repo/build/gcc/tools/vmm/vmm
else
  cross_build "${LIBVMM_ARM64_BUILD:-$repo/build/arm64}" vmm
  vmm=${LIBVMM_ARM64_BUILD:-$repo/build/arm64}/tools/vmm/vmm
fi

mapfile -t rootfs < <("$repo/images/build-rootfs" "$arch")
[ ${#rootfs[@]} -eq 3 ] || { echo "$prog: images/build-rootfs $arch failed" >&2; exit 1; }
cp --sparse=always "${rootfs[0]}" "$work/rootfs.img"

payload_new "$arch"
payload_binary "$vmm"
[ -x "$payload/vmm" ] || mv "$payload/$(basename "$vmm")" "$payload/vmm"
if [ "$arch" = x86_64 ]; then
  payload_binary /usr/bin/qemu-system-x86_64
  mkdir -p "$payload/qemu-data"
  cp /usr/share/qemu/{bios-microvm.bin,qboot.rom,linuxboot_dma.bin,pvh.bin} "$payload/qemu-data/"
else
  qemu_root=$(arm64_qemu_root)
  COPY_BINARY_LIBDIRS=$qemu_root/root/usr/lib/aarch64-linux-gnu:$qemu_root/root/lib/aarch64-linux-gnu \
    payload_binary "$qemu_root/root/usr/bin/qemu-system-aarch64"
fi
cp "${rootfs[1]}" "$payload/vmlinuz"
cp "${rootfs[2]}" "$payload/initrd.img"

payload_script run.sh rounds="$rounds" <<'EOS'
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
# (The start timeout: as in tests/integration/linux_rootfs.sh, for a busy machine.)
cmdline="root=/dev/vda ro console=$console quiet systemd.default_timeout_start_sec=900"
# Milliseconds since the emulated host booted (busybox's date has no %N; /proc/uptime has
# hundredths: "123.45"; the fraction without its leading zero, which ash would read as octal).
ms() { read -r up _ </proc/uptime; frac=${up#*.}; echo $((${up%.*} * 1000 + ${frac#0} * 10)); }
# (Not anchored: bash's bracketed-paste escapes come first on the line.)
answer() { tr -d '\r' <"/tmp/$1.out" | sed -n "s/.*LIBVMM-$2: //p" | tail -n 1; }
# One boot of VMM NAME (its command after it): prints "NAME login_ms=... exits=... kernel_ms=...".
measure() {
  name=$1; shift
  t0=$(ms)
  : >"/tmp/$name.out"  # (start's redirection may come after wait_for's first look)
  start "$name" "$@"
  if ! wait_for "/tmp/$name.out" "root@debian" 900; then
    # What the guest and the VMM said last, for the report (a boot that never got there).
    tr -d '\r' <"/tmp/$name.out" | tail -n 25 | sed "s/^/$name console: /"
    tail -n 10 "/tmp/$name.err" | sed "s/^/$name stderr: /"
    echo "$name login_ms=-1"; kill "$pid"; stop; return
  fi
  login=$(($(ms) - t0))
  exits=$(cat /sys/kernel/debug/kvm/exits 2>/dev/null || echo -1)
  send "$name" 'systemctl is-system-running --wait >/dev/null; echo LIBVMM""-T: $(systemd-analyze time | head -n 1)'
  wait_for "/tmp/$name.out" "LIBVMM-T: " 600 || true
  times=$(answer "$name" T)  # "Startup finished in 2.1s (kernel) + 3.2s (initrd) + 10.5s (userspace) = ..."
  send "$name" 'poweroff'
  waited=0
  while kill -0 "$pid" 2>/dev/null && [ $waited -lt 120 ]; do sleep 1; waited=$((waited + 1)); done
  kill "$pid" 2>/dev/null
  stop
  echo "$name login_ms=$login exits=$exits $(echo "$times" | awk '
    function ms(v) { if (v ~ /min/) { split(v, a, "min"); return a[1] * 60000 + ms(a[2]) }
                     if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return -1 }
    { for (i = 1; i <= NF; i++) if ($i ~ /^\((kernel|initrd|userspace)\)$/) {
        k = $i; gsub(/[()]/, "", k); printf "%s_ms=%d ", k, ms($(i - 1)) } }')"
}
run_vmm() {
  measure vmm ./vmm --kernel vmlinuz --initrd initrd.img --memory 512M --cmdline "$cmdline" \
    --disk /dev/vda,direct,transport=mmio --rng transport=mmio  # as QEMU's below: O_DIRECT, MMIO
}
run_qemu() {
  if [ -x ./qemu-system-x86_64 ]; then
    set -- ./qemu-system-x86_64 -L qemu-data -M microvm,acpi=on,rtc=on
  else
    set -- ./qemu-system-aarch64 -M virt,gic-version=3
  fi
  # Modern virtio-mmio (version 2), as ours: QEMU 7.2's is legacy unless told otherwise.
  measure qemu "$@" -accel kvm -cpu host -global virtio-mmio.force-legacy=false \
    -m 512M -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -drive file=/dev/vda,if=none,id=root,format=raw,cache=none -device virtio-blk-device,drive=root \
    -device virtio-rng-device -kernel vmlinuz -initrd initrd.img -append "$cmdline"
}
# (Not $i: payload.sh's wait_for counts with it.) The order swaps every round: neither VMM
# always boots right after the other's shutdown, or first after the emulated host's start.
round=0
while [ $round -lt "$rounds" ]; do
  if [ $((round % 2)) -eq 0 ]; then run_vmm; run_qemu; else run_qemu; run_vmm; fi
  round=$((round + 1))
done
EOS
collect '^(vmm|qemu) (login_ms=|console: |stderr: )' --disk "$work/rootfs.img" \
  --timeout $((rounds * 1800))
need_results '^(vmm|qemu) login_ms=[0-9]'
echo "Each boot (round by round; a boot that did not reach the prompt: its console's end):"
sed 's/^/  /' "$work/results"

# Median with min..max of NAME's values on VMM's lines.
stat() {
  awk -v vmm="$1" -v name="$2" '$1 == vmm && $2 ~ /^login_ms=/ { for (i = 2; i <= NF; i++) { split($i, kv, "=");
      if (kv[1] == name && kv[2] >= 0 && kv[2] != "") print kv[2] } }' "$work/results" | sort -n \
    | awk '{ a[NR] = $1 } END { if (!NR) { print "-"; exit }
        m = NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%d (%d..%d)", m, a[1], a[NR] }'
}
echo "Debian 12 boot to the login shell ($rounds rounds, emulated $arch KVM host, 512 MiB, 1 vCPU;"
echo "median (min..max))"
printf '%-6s %-24s %-24s %-24s %-24s %-24s\n' VMM "login ms" "kernel ms" "initrd ms" \
  "userspace ms" "VM exits"
for v in vmm qemu; do
  printf '%-6s %-24s %-24s %-24s %-24s %-24s\n' "$v" "$(stat $v login_ms)" "$(stat $v kernel_ms)" \
    "$(stat $v initrd_ms)" "$(stat $v userspace_ms)" "$(stat $v exits)"
done
