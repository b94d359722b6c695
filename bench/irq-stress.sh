#!/usr/bin/env bash
# How often the emulated KVM host fails a guest under interrupt load, with our vmm and with QEMU
# side by side: each run boots a 2-vCPU guest (256 MiB, a virtio-rng and a virtio-blk disk;
# QEMU with the same virtio-mmio devices, modern as ours (-global virtio-mmio.force-legacy=false),
# kernel and initramfs: -M microvm on x86_64, -M virt with GICv3 on aarch64) whose `stress` test
# (images/tests/stress) keeps both vCPUs taking virtIO and timer interrupts for SECONDS, then
# resets. Each run ends as one of:
#   done        the guest finished: its last line came (for either VMM whatever the VMM says
#               on stderr then; the VMM is stopped if the guest's reset does not end it)
#   reset       the guest reset before it finished, with nothing on its console: on x86_64 a
#               triple fault (vmm says so on stderr; QEMU, run with -no-reboot, exits)
#   host-crash  the emulated host's kernel panicked or its machine stopped during the run
#               (tools/emuhost boots it again; the runs still to do go on there)
#   hung        no end within SECONDS + 240 s (the script's own count, for either VMM)
#   error       anything else (the VMM's own stderr is printed)
# This measures the test platform (on x86_64 QEMU's TCG emulating an AMD CPU with SVM, Debian's
# kernel and KVM on it) as much as the VMMs: see docs/PERFORMANCE.md, "The emulated host under
# interrupt load". Rounds alternate which VMM runs first.
# Usage: bench/irq-stress.sh [--arch x86_64|aarch64] [ROUNDS] [SECONDS]
#        (default x86_64, 3 rounds of 60 s per VMM)
#   STRESS_VMMS  more builds of vmm, each run every round in its own row: "NAME:PATH;NAME:PATH"
set -euo pipefail
arch=x86_64
if [ "${1:-}" = --arch ]; then arch=${2:-}; shift 2 || true; fi
rounds=${1:-3}
secs=${2:-60}
[[ $arch =~ ^(x86_64|aarch64)$ && $rounds =~ ^[0-9]+$ && $secs =~ ^[0-9]+$ ]] \
  && [ "$rounds" -gt 0 ] && [ "$secs" -ge 10 ] \
  || { echo "usage: bench/irq-stress.sh [--arch x86_64|aarch64] [ROUNDS] [SECONDS >= 10]" >&2
    exit 2; }
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
cd "$repo"
# shellcheck source=bench/boot-setup.sh
. "$repo/bench/boot-setup.sh"
boot_payload "$arch"
names=vmm
extra=${STRESS_VMMS:-}
while [ -n "$extra" ]; do
  item=${extra%%;*}
  [ "$item" = "$extra" ] && extra='' || extra=${extra#*;}
  name=${item%%:*} path=${item#*:}
  [[ $name =~ ^[a-z0-9_-]+$ && $name != vmm && $name != qemu ]] && [ -x "$path" ] \
    || { echo "$prog: STRESS_VMMS: '$item' is not NAME:PATH of an executable" >&2; exit 2; }
  cp "$path" "$payload/$name"
  names="$names $name"
done
names="$names qemu"

# The schedule: "NAME:ROUND" items, the order rotating each round.
schedule=
for ((r = 1; r <= rounds; r++)); do
  read -ra order <<<"$names"
  for ((i = 0; i < ${#order[@]}; i++)); do
    schedule="$schedule ${order[(i + r - 1) % ${#order[@]}]}:$r"
  done
done

payload_script run.sh secs="$secs" qemu="$qemu" <<'EOS'
dd if=/dev/urandom of=disk.img bs=1M count=32 2>/dev/null
cmdline="console=$console quiet libvmm.test=stress STRESS_SECS=$secs"
limit=$((secs + 240))
done_marker="LIBVMM-GUEST: stress done"
# Both VMMs' runs end alike: in the background, watched by this script (the emulated host has
# busybox's timeout only, which runs the command as itself and so never exits with 124; and
# vmm, sent SIGTERM, presses the power button and exits 0 as after the guest's own reset: a
# hung vmm would look like a reset). After its last line the guest resets, which QEMU's x86_64
# microvm does not always turn into an exit: the run is over at the line, for both VMMs alike.
# Whatever a VMM prints on stderr after that is no failure of the guest's run (and QEMU may
# print warnings where vmm, with --quiet, prints nothing): not looked at for "done".
# end_run PID: waits for the run's end; sets $end to done or hung (the VMM then stopped and
# waited for), or to nothing if the VMM ended before the guest's last line.
end_run() {
  waited=0
  while kill -0 "$1" 2>/dev/null && ! grep -qF "$done_marker" out 2>/dev/null; do
    [ $waited -lt "$limit" ] || break
    sleep 1
    waited=$((waited + 1))
  done
  end=
  if grep -qF "$done_marker" out 2>/dev/null; then end="done"
  elif kill -0 "$1" 2>/dev/null; then end=hung
  else return 0; fi
  # Stopped: SIGTERM (a second one stops vmm at once, without its power-button wait), SIGKILL
  # after 10 s.
  kill "$1" 2>/dev/null; sleep 1; kill "$1" 2>/dev/null
  t=0
  while kill -0 "$1" 2>/dev/null && [ $t -lt 10 ]; do sleep 1; t=$((t + 1)); done
  kill -9 "$1" 2>/dev/null
  wait "$1"
}
run_vmm() {
  rm -f out
  "./$1" --kernel "$kernel" --initrd initramfs.cpio.gz --memory 256M --vcpus 2 \
    --rng transport=mmio --disk disk.img,transport=mmio,num_queues=1 --cmdline "$cmdline" \
    --quiet </dev/null >out 2>err &  # QEMU's devices: virtio-mmio, one disk queue
  pid=$!
  end_run $pid
  if [ -n "$end" ]; then echo "$end"; return; fi
  rc=0
  wait $pid || rc=$?
  if [ "$rc" -eq 0 ] && { [ ! -s err ] || grep -q 'triple fault' err; }; then echo reset
  else echo error; fi
}
run_qemu() {
  rm -f out
  # shellcheck disable=SC2086  # $qemu: the program and its machine options
  $qemu -accel kvm -cpu host -global virtio-mmio.force-legacy=false -m 256M -smp 2 -nodefaults \
    -no-user-config -display none -serial file:out -no-reboot -device virtio-rng-device \
    -drive file=disk.img,if=none,id=disk,format=raw -device virtio-blk-device,drive=disk \
    -kernel "$kernel" -initrd initramfs.cpio.gz -append "$cmdline" </dev/null >err 2>&1 &
  pid=$!
  end_run $pid
  if [ -n "$end" ]; then echo "$end"; return; fi
  if wait $pid && [ ! -s err ]; then echo reset
  else echo error; fi
}
for item in $(cat schedule); do
  name=${item%:*}
  echo "STRESS-START $item"
  start=$(date +%s)
  if [ "$name" = qemu ]; then outcome=$(run_qemu); else outcome=$(run_vmm "$name"); fi
  beats=$(grep -c 'LIBVMM-GUEST: stress beat' out || true)
  echo "STRESS-RESULT $item outcome=$outcome secs=$(($(date +%s) - start)) beats=$beats"
  grep 'LIBVMM-GUEST: stress beat' out | tail -n 1 | sed "s/^LIBVMM-GUEST: /STRESS-BEAT $item /"
  if [ "$outcome" != done ]; then
    tail -n 3 out | sed 's/^/STRESS-OUT /'
    sed 's/^/STRESS-ERR /' err
  fi
done
EOS

# Each emulated-host boot runs what is left of the schedule; a run the host died in counts as
# a host-crash. (tools/emuhost itself boots a panicked host once more with the whole payload,
# so a run may be done twice: every run is counted, by name.)
results=$work/stress-results
: >"$results"
left="$schedule " attempt=0  # each item between spaces: " vmm:1 " is not part of " vmm:10 "
while [ -n "${left// /}" ] && [ $attempt -lt $((rounds * 3)) ]; do
  attempt=$((attempt + 1))
  echo "$left" >"$payload/schedule"
  run_payload --timeout $(((secs + 300) * $(wc -w <<<"$left") + 600)) >"$work/log" 2>&1 || true
  awk '/^STRESS-START / { current = $2 }
       /^STRESS-RESULT / { print; current = "" }
       /^STRESS-(OUT|ERR|BEAT) / { print }
       /kernel panicked|locked up|stopped without|livelock/ && current != "" {
         print "STRESS-RESULT " current " outcome=host-crash"; current = "" }' \
    "$work/log" >>"$results"
  for item in $left; do
    grep -q "^STRESS-RESULT $item " "$results" && left=${left/ $item / }
  done
done

grep -E '^STRESS-(OUT|ERR)' "$results" | head -n 60 || true
echo "Interrupt counts at each run's last beat (/proc/interrupts: local timer, virtIO):"
grep -E '^STRESS-BEAT' "$results" | cut -c 13- | cut -c -300 || true
echo
echo "$secs s of interrupt load per run, 2 vCPUs, $where:"
printf '%-8s %5s %5s %6s %11s %5s %6s\n' "" runs "done" reset host-crash hung error
for name in $names; do
  awk -v n="$name" '$1 == "STRESS-RESULT" && index($2, n ":") == 1 {
      runs++; split($3, o, "="); c[o[2]]++ }
    END { printf "%-8s %5d %5d %6d %11d %5d %6d\n", n, runs, c["done"], c["reset"],
            c["host-crash"], c["hung"], c["error"] }' "$results"
done
