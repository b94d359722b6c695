#!/usr/bin/env bash
# A guest that sends malformed virtio-snd requests in a loop stops neither the console nor
# another device: the sound-flood guest (sound_flood.c) on this machine's /dev/kvm through the
# real `vmm`, with --sound none and --rng. It floods the sound device's control, tx and rx
# queues with every kind of malformed request (200 rounds), checking each status, while it
# prints on COM1 and reads virtio-rng after every round; then plays two periods, breaks the
# control queue with a descriptor loop, reads virtio-rng again and resets the sound device.
# vmm must log at most a handful of lines about it (rate-limited), count every malformed
# request at the end, and exit 0 when the guest resets.
# Usage: sound_flood.sh VMM SOUND_FLOOD_BZIMAGE
set -uo pipefail
vmm=$1 guest=$2
# shellcheck source=tests/guests/need_kvm.sh
. "$(dirname "$0")/need_kvm.sh"
need_kvm sound_flood
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$work/out err=$work/err
fail() { echo "FAIL: $*"; echo "--- stdout"; cat "$out"; echo "--- stderr"; cat "$err"; exit 1; }

rounds=200
started=$(date +%s)
timeout 120 "$vmm" --kernel "$guest" --memory 32M --cmdline "acpi=off rounds=$rounds" \
  --sound none,transport=mmio --rng transport=mmio </dev/null >"$out" 2>"$err"
status=$?
ran=$(($(date +%s) - started))
echo "the guest ran $ran s"
[ "$status" -eq 0 ] || fail "exit status $status, expected 0"
for line in "SOUND-FLOOD: round $rounds of malformed requests answered; virtio-rng answers" \
  "SOUND-FLOOD: playback after the flood done" \
  "SOUND-FLOOD: virtio-rng answers after the broken sound queue" \
  "SOUND-FLOOD: the sound device works again after a reset" "SOUND-FLOOD: PASS"; do
  grep -qxF -- "$line" "$out" || fail "the guest did not say: $line"
done
! grep -q "SOUND-FLOOD: FAIL" "$out" || fail "the guest saw a wrong answer"
grep -qF "guest stopped (reset)" "$err" || fail "vmm did not see the guest's reset"
# Rate-limited: the device's own lines stop after a burst of 16 (then one saying so); the
# transport's (a notification of a queue that does not exist, once a round) stop too; while
# the flood goes on, each lets one line through every 10 s (with one saying how many it left
# out).
snd_lines=$(grep -c "virtio-snd: " "$err")
most=$((64 + 4 * (ran / 10 + 1)))
echo "$snd_lines log lines about the guest's errors (at most $most in $ran s)"
[ "$snd_lines" -le "$most" ] || fail "$snd_lines log lines: not rate-limited"
grep -qF "virtio-snd: further guest errors are not logged" "$err" || fail "no end of the device's lines"
malformed=$(sed -n 's/.* \([0-9]*\) malformed requests;.*/\1/p' "$err")
echo "vmm counted ${malformed:-no} malformed requests"
[ "${malformed:-0}" -ge $((rounds * 17)) ] || fail "vmm counted ${malformed:-no} malformed requests, expected >= $((rounds * 17))"
echo "PASS"
