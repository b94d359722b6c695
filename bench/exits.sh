#!/usr/bin/env bash
# VM exits to /init: our vmm against QEMU, booting the same kernel and initramfs with 256 MiB and
# 1 vCPU in the same emulated KVM host run (bench/boot.sh's setup: x86_64 against QEMU
# -M microvm,acpi=off; --arch aarch64 against QEMU -M virt,gic-version=3).
# Each boot runs under bench/bootmark --at-marker: when the guest's /init prints its first line
# the VMM is stopped (SIGSTOP: every vCPU is out of the guest), and these are read while it
# stands still, then it is killed:
#   KVM's debugfs counters (/sys/kernel/debug/kvm/*: the sums over live VMs: this one, and
#   emuhost's kvm-hold, whose vCPU never runs): exits, io_exits, mmio_exits, halt_exits, pf_taken, ... (x86_64; arm64 has fewer);
#   histograms (tracing hist triggers, counted in the kernel, no trace buffer to overflow) of
#   kvm:kvm_exit by exit reason (x86_64: the SVM exit code, the emulated host's CPU being AMD;
#   arm64: the ESR exception class), kvm:kvm_pio by port and direction, kvm:kvm_mmio by
#   direction and address, kvm:kvm_userspace_exit by KVM_EXIT_* reason (the exits that reach
#   the VMM process), and on arm64 kvm:kvm_guest_fault (stage-2 faults) by ESR.
# Rounds alternate which VMM boots first. Prints the medians of every counter for both VMMs, and
# the breakdowns by reason, port and address, largest first.
# Usage: bench/exits.sh [--arch x86_64|aarch64] [ROUNDS]   (default 3). See docs/PERFORMANCE.md.
#   EXITS_VMM_ARGS   more arguments for our vmm (e.g. "-v", to see its RAM backing line on the
#                    emulated host's console)
#   EXITS_VARIANTS   more configurations of our vmm, each booted in every round and shown in its
#                    own column: "NAME:ARGS;NAME:ARGS", e.g. "memfd:--memory-backing memfd"
#   EXITS_QEMU_ARGS  more arguments for QEMU (e.g. a disk, to compare machines with devices);
#                    where they (or EXITS_DEVICES) have a virtio-mmio device (virtio-*-device)
#                    and do not set virtio-mmio.force-legacy, -global
#                    virtio-mmio.force-legacy=false is added once: QEMU 7.2's virtio-mmio is
#                    legacy (version 1) by default, ours modern (version 2)
#   /tmp/disk.img    a 1 MiB zero-filled image in the emulated host, for a disk in those
#                    arguments: EXITS_VMM_ARGS="--disk /tmp/disk.img", EXITS_QEMU_ARGS="-drive
#                    id=d,file=/tmp/disk.img,format=raw,if=none -device virtio-blk-device,drive=d"
#   EXITS_DEVICES=1  (x86_64) both VMMs with bench/boot.sh's BOOT_DEVICES set (a disk, an rng
#                    and a console; bench/boot-setup.sh), before the two variables above
#   EXITS_SHMEM_THP  written to the emulated host's transparent_hugepage/shmem_enabled before
#                    the rounds (Debian's kernels: never), e.g. advise: memfd guest RAM with
#                    huge pages (QEMU's anonymous RAM and our default's do not use shmem)
#   EXITS_HUGEPAGES  2 MiB pages the emulated host reserves (vm.nr_hugepages) before the rounds,
#                    for a variant with --memory-backing hugetlb (256 MiB of RAM: 128)
#   EXITS_PCI_CONFIG=1  also count PCI configuration accesses through 0xCF8/0xCFC by function
#                    and register (a histogram of the addresses written to 0xCF8): where a
#                    machine with PCI devices spends its port I/O exits
set -euo pipefail
arch=x86_64
if [ "${1:-}" = --arch ]; then arch=${2:-}; shift 2 || true; fi
rounds=${1:-3}
[[ $arch =~ ^(x86_64|aarch64)$ && $rounds =~ ^[0-9]+$ ]] && [ "$rounds" -gt 0 ] \
  || { echo "usage: bench/exits.sh [--arch x86_64|aarch64] [ROUNDS]" >&2; exit 2; }
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
cd "$repo"
# shellcheck source=bench/boot-setup.sh
. "$repo/bench/boot-setup.sh"
boot_payload "$arch"

# Runs at the marker, the VMM stopped: one line of NAME=VALUE words on stdout.
payload_script snapshot.sh <<'EOS'
T=/sys/kernel/tracing
for f in /sys/kernel/debug/kvm/*; do
  [ -f "$f" ] && printf ' %s=%s' "${f##*/}" "$(cat "$f")"
done
# A hist file's lines: "{ port:        0x3f8, rw:          1 } hitcount:        123". kvm_pio's
# may hold a second histogram, of the addresses written to 0xCF8 (EXITS_PCI_CONFIG): tag c.
for tag in x p m u g; do
  case $tag in
    x) ev=kvm_exit ;; p) ev=kvm_pio ;; m) ev=kvm_mmio ;; u) ev=kvm_userspace_exit ;;
    g) ev=kvm_guest_fault ;;
  esac
  [ -f "$T/events/kvm/$ev/hist" ] || continue
  awk -v tag="$tag" 'BEGIN { cur = tag }
    /^# trigger info:/ { cur = ($0 ~ /keys=val/) ? "c" : tag }
    /^\{/ {
      line = $0; sub(/^\{ */, "", line); split(line, parts, /\} *hitcount: */)
      n = split(parts[1], kv, ","); key = cur
      for (i = 1; i <= n; i++) { v = kv[i]; sub(/^[^:]*: */, "", v); gsub(/ /, "", v); key = key "." v }
      printf " %s=%d", key, parts[2] }' "$T/events/kvm/$ev/hist"
done
echo
EOS

variants=${EXITS_VARIANTS:-}
vmm_args=${EXITS_VMM_ARGS:-} qemu_args=${EXITS_QEMU_ARGS:-}
if [ -n "${EXITS_DEVICES:-}" ]; then
  [ "$arch" = x86_64 ] || { echo "bench/exits.sh: EXITS_DEVICES is for x86_64" >&2; exit 2; }
  vmm_args="$boot_devices_vmm $vmm_args" qemu_args="$boot_devices_qemu $qemu_args"
fi
# Modern virtio-mmio for QEMU's virtio-mmio devices, as ours (boot_devices_qemu sets it itself).
if [[ $qemu_args =~ virtio-[a-z0-9-]+-device && $qemu_args != *virtio-mmio.force-legacy* ]]; then
  qemu_args="-global virtio-mmio.force-legacy=false $qemu_args"
fi
payload_script run.sh rounds="$rounds" qemu="$qemu" vmm_args="$vmm_args" \
    qemu_args="$qemu_args" variants="$variants" shmem_thp="${EXITS_SHMEM_THP:-}" \
    hugepages="${EXITS_HUGEPAGES:-}" pci_config="${EXITS_PCI_CONFIG:-}" <<'EOS'
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
dd if=/dev/zero of=/tmp/disk.img bs=1M count=1 2>/dev/null
thp=/sys/kernel/mm/transparent_hugepage
if [ -n "$shmem_thp" ]; then
  echo "$shmem_thp" >$thp/shmem_enabled || { echo "EXITS: shmem_enabled=$shmem_thp refused"; exit 1; }
fi
if [ -n "$hugepages" ]; then
  echo "$hugepages" >/proc/sys/vm/nr_hugepages
  [ "$(cat /proc/sys/vm/nr_hugepages)" -ge "$hugepages" ] \
    || { echo "EXITS: only $(cat /proc/sys/vm/nr_hugepages) of $hugepages huge pages reserved"; exit 1; }
fi
echo "EXITS: transparent_hugepage: enabled: $(cat $thp/enabled), shmem_enabled: $(cat $thp/shmem_enabled)" >&2
T=/sys/kernel/tracing
[ -d "$T/events" ] || mount -t tracefs tracefs "$T" || { echo "EXITS: no tracefs"; exit 1; }
# Event and its hist trigger; the ones this architecture lacks are skipped.
triggers="kvm_exit:hist:keys=exit_reason.hex
kvm_exit:hist:keys=esr_ec.hex
kvm_pio:hist:keys=port.hex,rw:size=4096
kvm_mmio:hist:keys=type,gpa.hex:size=4096
kvm_userspace_exit:hist:keys=reason
kvm_guest_fault:hist:keys=hsr.hex"
# The address a configuration access writes to 0xCF8 names its function and register.
[ -z "$pci_config" ] || triggers="$triggers
kvm_pio:hist:keys=val.hex:size=8192 if port == 0xcf8 && rw == 1"
# (Re)arms every trigger with zero counts: removing a trigger drops its histogram.
arm() {
  echo "$triggers" | while IFS= read -r t; do
    ev=${t%%:*} spec=${t#*:}
    f=$T/events/kvm/$ev/trigger
    [ -f "$f" ] || continue
    # Only a spec whose fields exist on this architecture is accepted.
    echo "!$spec" >>"$f" 2>/dev/null || true
    echo "$spec" >>"$f" 2>/dev/null || true
  done
}
cmdline="console=$console quiet"
marker="LIBVMM-GUEST: init started"
run_vmm() {
  arm
  # shellcheck disable=SC2086  # $vmm_args: words
  echo "${2:-vmm} round=$1 $(./bootmark --at-marker ./snapshot.sh "$marker" ./vmm --kernel "$kernel" \
      --initrd initramfs.cpio.gz --memory 256M --cmdline "$cmdline" --quiet $vmm_args ${3:-} 2>/tmp/vmm.err \
    | tr '\n' ' ')"
  cat /tmp/vmm.err >&2
}
run_qemu() {
  arm
  # shellcheck disable=SC2086  # $qemu: the program and its machine options; $qemu_args: words
  echo "qemu round=$1 $(./bootmark --at-marker ./snapshot.sh "$marker" $qemu -accel kvm -cpu host \
      -m 256M -smp 1 -nodefaults -no-user-config -display none -serial stdio -no-reboot \
      -kernel "$kernel" -initrd initramfs.cpio.gz -append "$cmdline" $qemu_args | tr '\n' ' ')"
}
i=1
while [ $i -le "$rounds" ]; do
  if [ $((i % 2)) -eq 1 ]; then run_vmm $i; run_qemu $i; else run_qemu $i; run_vmm $i; fi
  rest=$variants
  while [ -n "$rest" ]; do
    v=${rest%%;*}
    [ "$v" = "$rest" ] && rest='' || rest=${rest#*;}
    run_vmm $i "${v%%:*}" "${v#*:}"
  done
  i=$((i + 1))
done
EOS
collect '^[a-z0-9_-]+ round=' --timeout 1800
need_results '^(vmm|qemu) round=.*marker_ms='

# The median over rounds of each counter, 0 where a round lacked it: "VMM NAME VALUE" lines.
# Rounds that never reached /init (marker_ms=-1, no counters) are no figures: left out.
awk '/marker_ms=-1(\.0*)?( |$)/ { next } { v = $1; rounds[v]++; for (i = 3; i <= NF; i++) { split($i, kv, "=");
         if (kv[2] ~ /^-?[0-9.]+$/) { vals[v, kv[1], rounds[v]] = kv[2]; names[kv[1]] = 1 } } }
     END { for (v in rounds) for (n in names) {
             k = 0; for (r = 1; r <= rounds[v]; r++) a[++k] = ((v, n, r) in vals) ? vals[v, n, r] : 0
             for (x = 2; x <= k; x++) { y = a[x]; j = x - 1; while (j > 0 && a[j] > y) { a[j + 1] = a[j]; j-- } a[j + 1] = y }
             m = (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
             print v, n, m; delete a } }' "$work/results" >"$work/medians"
median_of() { awk -v v="$1" -v n="$2" '$1 == v && $2 == n { print $3; found = 1 } END { if (!found) print 0 }' "$work/medians"; }
range_of() {
  awk -v v="$1" -v n="$2" '/marker_ms=-1(\.0*)?( |$)/ { next } $1 == v { for (i = 3; i <= NF; i++) { split($i, kv, "=");
      if (kv[1] == n) { if (lo == "" || kv[2] + 0 < lo) lo = kv[2] + 0; if (kv[2] + 0 > hi) hi = kv[2] + 0 } } }
      END { if (lo != "") printf "%s..%s", lo, hi }' "$work/results"
}

# Readable names for the breakdown keys.
describe() {
  local key=$1
  case $key in
    x.*)
      if [ "$arch" = x86_64 ]; then
        case $((16#${key#x.})) in
          $((0x40))|$((0x41))|$((0x46))|$((0x4e))|$((0x51))|$((0x52))) echo "exception $((16#${key#x.} - 0x40))" ;;
          $((0x60))) echo INTR ;; $((0x61))) echo NMI ;; $((0x64))) echo VINTR ;;
          $((0x6e))) echo RDTSC ;; $((0x72))) echo CPUID ;; $((0x77))) echo PAUSE ;;
          $((0x78))) echo HLT ;; $((0x79))) echo INVLPG ;; $((0x7b))) echo IOIO ;;
          $((0x7c))) echo MSR ;; $((0x7f))) echo SHUTDOWN ;; $((0x81))) echo VMMCALL ;;
          $((0x87))) echo RDTSCP ;; $((0x89))) echo WBINVD ;; $((0x8d))) echo XSETBV ;;
          $((0x400))) echo "NPF (nested page fault)" ;; *) echo "SVM exit code" ;;
        esac
      else
        case $((16#${key#x.})) in
          0) echo "interrupt (kvm_exit of an IRQ, no exception class)" ;; 1) echo "WFI/WFE" ;; 7) echo "FP/SIMD access" ;; $((0x16))) echo HVC64 ;;
          $((0x17))) echo SMC64 ;; $((0x18))) echo "system register" ;;
          $((0x20))) echo "instruction abort (stage 2)" ;; $((0x24))) echo "data abort (stage 2)" ;;
          *) echo "ESR class" ;;
        esac
      fi ;;
    p.*)
      local port=${key#p.}
      port=${port%.*}
      case $((16#$port)) in
        $((0x20))|$((0x21))|$((0xa0))|$((0xa1))) echo "8259 PIC" ;;
        $((0x40))|$((0x41))|$((0x42))|$((0x43))) echo "8254 PIT" ;;
        $((0x61))) echo "PC speaker / PIT gate" ;; $((0x60))|$((0x64))) echo "i8042" ;;
        $((0x70))|$((0x71))) echo "CMOS RTC" ;; $((0x80))) echo "POST / I/O delay" ;;
        $((0x92))) echo "fast A20" ;; $((0xcf8))|$((0xcfc))|$((0xcfd))|$((0xcfe))|$((0xcff))) echo "PCI config" ;;
        $((0x3f8))|$((0x3f9))|$((0x3fa))|$((0x3fb))|$((0x3fc))|$((0x3fd))|$((0x3fe))|$((0x3ff))) echo "COM1 16550" ;;
        $((0x2f8))|$((0x2f9))|$((0x2fa))|$((0x2fb))|$((0x2fc))|$((0x2fd))|$((0x2fe))|$((0x2ff))) echo "COM2" ;;
        $((0x3e8))|$((0x3e9))|$((0x3ea))|$((0x3eb))|$((0x3ec))|$((0x3ed))|$((0x3ee))|$((0x3ef))) echo "COM3" ;;
        $((0x2e8))|$((0x2e9))|$((0x2ea))|$((0x2eb))|$((0x2ec))|$((0x2ed))|$((0x2ee))|$((0x2ef))) echo "COM4" ;;
        $((0x510))|$((0x511))|$((0x514))) echo "QEMU fw_cfg" ;;
        $((0x600))|$((0x601))|$((0x602))|$((0x603))|$((0x604))|$((0x605))|$((0x606))|$((0x607))|$((0x608))|$((0x609))|$((0x60a))|$((0x60b))) echo "ACPI PM" ;;
        *) echo "" ;;
      esac ;;
    u.*)
      case ${key#u.} in
        2) echo "KVM_EXIT_IO" ;; 5) echo "KVM_EXIT_HLT" ;; 6) echo "KVM_EXIT_MMIO" ;;
        8) echo "KVM_EXIT_SHUTDOWN" ;; 10) echo "KVM_EXIT_INTR (signal)" ;;
        24) echo "KVM_EXIT_SYSTEM_EVENT" ;; *) echo "KVM_EXIT_* reason" ;;
      esac ;;
    m.*)
      local gpa=${key#m.?.} dir
      case ${key#m.} in 0.*) dir="read" ;; 1.*) dir="write" ;; *) dir="read, not yet satisfied (KVM_TRACE_MMIO_READ_UNSATISFIED)" ;; esac
      case $((16#$gpa)) in
        $((0xfec00000))|$((0xfec00010))) echo "I/O APIC, $dir" ;;
        *) if [ $((16#$gpa >> 12)) -eq $((0xfee00)) ]; then echo "local APIC register 0x${gpa:5}, $dir"; else echo "MMIO $dir"; fi ;;
      esac ;;
    c.*)
      local a=$((16#${key#c.}))
      printf 'function %02x:%02x.%x, register 0x%02x\n' $((a >> 16 & 255)) $((a >> 11 & 31)) \
        $((a >> 8 & 7)) $((a & 0xfc)) ;;
    g.*)
      local esr=$((16#${key#g.}))
      case $((esr >> 26)) in
        $((0x24))) if [ $((esr & (1 << 24))) -ne 0 ]; then echo "data abort, syndrome valid (ISV)"; else echo "data abort, no syndrome"; fi ;;
        $((0x20))) echo "instruction abort" ;;
        *) echo "stage-2 fault, ESR" ;;
      esac ;;
  esac
}

echo
names="vmm"
rest=$variants
while [ -n "$rest" ]; do
  v=${rest%%;*}
  [ "$v" = "$rest" ] && rest='' || rest=${rest#*;}
  names="$names ${v%%:*}"
done
names="$names qemu"
echo "VM exits to /init ($where, 256 MiB, 1 vCPU; medians of $rounds rounds, min..max):"
printf '%-18s' counter
for v in $names; do printf ' %22s' "$v"; done
printf ' %8s\n' "vmm/qemu"
for n in marker_ms maxrss_kib exits io_exits mmio_exits halt_exits irq_exits pf_taken pf_fixed \
    pf_guest nmi_window_exits irq_window_exits request_irq_exits signal_exits insn_emulation \
    hvc_exit_stat wfe_exit_stat wfi_exit_stat mmio_exit_user mmio_exit_kernel exits_total; do
  grep -q " $n " "$work/medians" || continue
  printf '%-18s' "$n"
  for v in $names; do printf ' %22s' "$(median_of "$v" "$n") ($(range_of "$v" "$n"))"; done
  printf ' %8s\n' "$(ratio "$(median_of vmm "$n")" "$(median_of qemu "$n")")"
done
for group in "x:exits by reason (kvm:kvm_exit)" "u:exits to the VMM process (kvm:kvm_userspace_exit)" \
    "p:port I/O by port and direction (kvm:kvm_pio; rw 1 = write)" \
    "m:MMIO by direction and guest-physical address (kvm:kvm_mmio; top 20)" \
    "g:stage-2 faults by ESR (kvm:kvm_guest_fault)" \
    "c:PCI configuration accesses by function and register (addresses written to 0xCF8; top 20)"; do
  tag=${group%%:*}
  awk -v t="$tag." 'index($2, t) == 1' "$work/medians" | grep -q . || continue
  echo
  echo "${group#*:}"
  printf '  %-28s' key
  for v in $names; do printf ' %10s' "$v"; done
  echo
  # Keys by the larger of the two medians, largest first.
  awk -v t="$tag." 'index($2, t) == 1 { if ($3 > m[$2]) m[$2] = $3 } END { for (k in m) print m[k], k }' \
      "$work/medians" | sort -rn | awk 'NR <= 20' | while read -r _ key; do  # awk reads all: no SIGPIPE
    printf '  %-28s' "$key"
    for v in $names; do printf ' %10s' "$(median_of "$v" "$key")"; done
    printf '  %s\n' "$(describe "$key")"
  done
done
if awk 'index($2, "c.") == 1' "$work/medians" | grep -q .; then
  echo
  echo "PCI configuration accesses by function (sums of the medians above)"
  declare -A per_function=()
  while read -r v key count; do
    a=$((16#${key#c.}))
    f=$(printf '%02x:%02x.%x' $((a >> 16 & 255)) $((a >> 11 & 31)) $((a >> 8 & 7)))
    per_function[$f]=$(( ${per_function[$f]:-0} + 0 ))  # every function gets a line
    per_function["$f $v"]=$(( ${per_function["$f $v"]:-0} + ${count%.*} ))
  done < <(awk 'index($2, "c.") == 1' "$work/medians")
  for f in $(printf '%s\n' "${!per_function[@]}" | grep -v ' ' | sort); do
    printf '  %s' "$f"
    for v in $names; do printf ' %s=%s' "$v" "${per_function["$f $v"]:-0}"; done
    echo
  done
fi
grep -F 'marker_ms=-1' "$work/results" && echo "$prog: warning: some runs never reached /init" || true
