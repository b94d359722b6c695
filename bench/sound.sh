#!/usr/bin/env bash
# virtio-snd playback in real time: a guest's aplay of a 10 s 440 Hz tone (S16_LE, 48 kHz,
# stereo) through --sound alsa into the emulated host's snd-aloop card, against the emulated
# host's own aplay of the same file into the same loopback (the physical limit; Debian 12 has
# no QEMU with virtio-snd). One emulated KVM host run (tools/emuhost/emuhost).
#   latency  the mean latency virtio-snd reported in its playback replies (vmm's end-of-run line)
#   drift    the player's wall time for the 10 s of audio, minus 10 s and minus its start-up
#            (both players alike: the start-up measured just before by an aplay of 10 ms into
#            ALSA's null PCM, in the guest and in the emulated host)
#   xruns    underruns: vmm's count (ALSA's own, plus gaps in the guest's stream); aplay's
#            "underrun!!!" lines for the host
#   cpu      CPU time of vmm's event loop thread (the one that paces and plays) per second of
#            audio, from /proc between the guest's start and end of playback
# A round whose guest does not start or end its playback, or print its figures, gives no vmm
# figures (the host's still count): it is reported as failed, and the medians are of the others.
# Usage: bench/sound.sh [ROUNDS]   (default 3; about 3 minutes per round): medians, then min..max.
# See docs/PERFORMANCE.md.
set -euo pipefail
rounds=${1:-3}
[[ $rounds =~ ^[0-9]+$ ]] && [ "$rounds" -gt 0 ] || { echo "usage: bench/sound.sh [ROUNDS]" >&2; exit 2; }
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
cd "$repo"
native_build
command -v aplay >/dev/null || { echo "bench/sound.sh: aplay missing (tools/install-deps)" >&2; exit 1; }
cc -O2 -static -o "$work/wavtool" tests/integration/sound/wavtool.c -lm

extra=$work/extra
mkdir -p "$extra/tests" "$extra/usr/share/alsa" "$extra/sound"
extra_binary "$extra" "$(command -v aplay)" bin/aplay
cp -r /usr/share/alsa/alsa.conf /usr/share/alsa/cards /usr/share/alsa/pcm "$extra/usr/share/alsa/"
"$work/wavtool" gen "$extra/sound/tone.wav" 48000 2 s16 440 10
"$work/wavtool" gen "$extra/sound/blip.wav" 48000 2 s16 440 0.01
cat >"$extra/tests/soundbench" <<'EOG'
#!/bin/sh
uptime_cs() { tr -d . </proc/uptime | cut -d' ' -f1; }
t0=$(uptime_cs); aplay -q -D null /sound/blip.wav; t1=$(uptime_cs)
echo "LIBVMM-GUEST: soundbench start"
aplay -q -D hw:0,0 /sound/tone.wav
t2=$(uptime_cs)
echo "LIBVMM-GUEST: soundbench done"
echo "LIBVMM-GUEST: BENCH play_cs=$((t2 - t1)) startup_cs=$((t1 - t0))"
reboot -f
EOG
chmod +x "$extra/tests/soundbench"

payload_new x86_64 build/gcc/tools/vmm/vmm --extra "$extra"
payload_binary "$(command -v aplay)"
cp "$extra/sound/tone.wav" "$extra/sound/blip.wav" "$payload/"
mkdir -p "$payload/alsa"
cp -r /usr/share/alsa/alsa.conf /usr/share/alsa/cards /usr/share/alsa/pcm "$payload/alsa/"

payload_script run.sh ROUNDS="$rounds" <<'EOS'
export ALSA_CONFIG_PATH=/payload/alsa/alsa.conf ALSA_CONFIG_DIR=/payload/alsa
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/task/$1/stat" 2>/dev/null || echo 0; }
uptime_cs() { tr -d . </proc/uptime | cut -d' ' -f1; }  # as the guest's
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
r=0
while [ $r -lt "$ROUNDS" ]; do
  r=$((r + 1))
  ./vmm --kernel "$kernel" --initrd initramfs.cpio.gz --memory 256M --serial file:/tmp/b.out \
    --cmdline "console=ttyS0 quiet libvmm.test=soundbench" --sound alsa:hw:Loopback \
    </dev/null 2>/tmp/b.err &
  vmm=$!
  failed=
  if ! wait_for /tmp/b.out "soundbench start" 300 $vmm; then
    failed="the guest's playback did not start"
  fi
  c0=$(cpu_ticks $vmm)
  if [ -z "$failed" ] && ! wait_for /tmp/b.out "soundbench done" 120 $vmm; then
    failed="the guest's playback did not end"
  fi
  c1=$(cpu_ticks $vmm)
  # The guest reboots after its figures (vmm exits); a vmm that does not is stopped (payload.sh).
  await $vmm b 60
  play=$(sed -n 's/.*BENCH play_cs=\([0-9]*\) startup_cs=.*/\1/p' /tmp/b.out)
  startup=$(sed -n 's/.*BENCH play_cs=[0-9]* startup_cs=\([0-9]*\).*/\1/p' /tmp/b.out)
  if [ -z "$failed" ] && { [ -z "$play" ] || [ -z "$startup" ]; }; then
    failed="the guest printed no figures"
  fi
  latency=$(sed -n 's/.*mean playback latency \([0-9]*\) us.*/\1/p' /tmp/b.err)
  xruns=$(sed -n 's/.*frames played, \([0-9]*\) underruns.*/\1/p' /tmp/b.err)
  if [ -n "$failed" ]; then
    # No figures from this round: made-up ones (a drift of -10 s, no latency) would move the
    # medians.
    echo "BENCH-FAILED vmm round $r: $failed (vmm status $status)"
    tr -d '\r' </tmp/b.out | tail -n 5 | sed 's/^/BENCH-FAILED vmm console: /'
    tail -n 5 /tmp/b.err | sed 's/^/BENCH-FAILED vmm stderr: /'
  else
    # A figure vmm's end-of-run line lacks is left out (the median is of the rounds that have it).
    fields="drift_ms=$(( (play - startup) * 10 - 10000 ))"
    [ -z "$latency" ] ||
      fields="latency_ms=$(awk -v l="$latency" 'BEGIN { printf "%.1f", l / 1000 }') $fields"
    [ -z "$xruns" ] || fields="$fields xruns=$xruns"
    echo "BENCH vmm $fields" \
      "cpu_ms_per_s=$(awk -v t=$((c1 - c0)) -v hz="$hz" 'BEGIN { printf "%.1f", t * 1000 / hz / 10 }')"
  fi
  # The host's aplay, measured as the guest's: its start-up (10 ms into the null PCM) first, then
  # the tone into the loopback, the start-up taken off.
  s0=$(uptime_cs)
  ./aplay -q -D null blip.wav 2>/dev/null
  s1=$(uptime_cs)
  ./aplay -D plughw:Loopback,0,0 tone.wav 2>/tmp/h.err >/dev/null
  s2=$(uptime_cs)
  echo "BENCH host latency_ms=- drift_ms=$(( ((s2 - s1) - (s1 - s0)) * 10 - 10000 ))" \
    "xruns=$(grep -c underrun /tmp/h.err)" "cpu_ms_per_s=-"
done
EOS
collect '^BENCH[ -]' --timeout $((900 + rounds * 400))
need_results '^BENCH vmm'
failed=$(grep -c '^BENCH-FAILED vmm round' "$work/results" || true)
if [ "$failed" != 0 ]; then
  grep '^BENCH-FAILED' "$work/results"
  echo "$prog: warning: $failed of $rounds rounds gave no vmm figures" >&2
fi
echo "median of $rounds rounds (vmm: of the $((rounds - failed)) that gave figures)"
printf '%-6s %12s %10s %7s %14s\n' who latency_ms drift_ms xruns cpu_ms_per_s
for who in vmm host; do
  printf '%-6s %12s %10s %7s %14s\n' "$who" "$(result latency_ms BENCH "$who")" \
    "$(result drift_ms BENCH "$who")" "$(result xruns BENCH "$who")" "$(result cpu_ms_per_s BENCH "$who")"
done
echo "spread (min..max over the rounds)"
for who in vmm host; do
  printf '%-6s %12s %10s %7s %14s\n' "$who" "$(spread_of %.1f 1 latency_ms BENCH "$who")" \
    "$(spread_of %.0f 1 drift_ms BENCH "$who")" "$(spread_of %.0f 1 xruns BENCH "$who")" \
    "$(spread_of %.1f 1 cpu_ms_per_s BENCH "$who")"
done
