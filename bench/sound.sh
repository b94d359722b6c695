#!/usr/bin/env bash
# virtio-snd playback in real time: a guest's aplay of a 10 s 440 Hz tone (S16_LE, 48 kHz,
# stereo) through --sound alsa into the emulated host's snd-aloop card, against the emulated
# host's own aplay of the same file into the same loopback (the physical limit; Debian 12 has
# no QEMU with virtio-snd). One emulated KVM host run (tools/emuhost/emuhost).
#   latency  the mean latency virtio-snd reported in its playback replies (vmm's end-of-run line)
#   drift    the player's wall time for the 10 s of audio, minus 10 s (the guest's aplay: minus
#            its start-up, measured by an aplay of 10 ms into ALSA's null PCM)
#   xruns    underruns: vmm's count (ALSA's own, plus gaps in the guest's stream); aplay's
#            "underrun!!!" lines for the host
#   cpu      CPU time of vmm's event loop thread (the one that paces and plays) per second of
#            audio, from /proc between the guest's start and end of playback
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
cp "$extra/sound/tone.wav" "$payload/"
mkdir -p "$payload/alsa"
cp -r /usr/share/alsa/alsa.conf /usr/share/alsa/cards /usr/share/alsa/pcm "$payload/alsa/"

payload_script run.sh ROUNDS="$rounds" <<'EOS'
export ALSA_CONFIG_PATH=/payload/alsa/alsa.conf ALSA_CONFIG_DIR=/payload/alsa
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/task/$1/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
r=0
while [ $r -lt "$ROUNDS" ]; do
  r=$((r + 1))
  ./vmm --kernel "$kernel" --initrd initramfs.cpio.gz --memory 256M --serial file:/tmp/b.out \
    --cmdline "console=ttyS0 quiet libvmm.test=soundbench" --sound alsa:hw:Loopback \
    </dev/null 2>/tmp/b.err &
  vmm=$!
  wait_for /tmp/b.out "soundbench start" 300 || echo "soundbench did not start"
  c0=$(cpu_ticks $vmm)
  wait_for /tmp/b.out "soundbench done" 120 || echo "soundbench did not end"
  c1=$(cpu_ticks $vmm)
  wait $vmm || true
  play=$(sed -n 's/.*BENCH play_cs=\([0-9]*\) startup_cs=.*/\1/p' /tmp/b.out)
  startup=$(sed -n 's/.*BENCH play_cs=[0-9]* startup_cs=\([0-9]*\).*/\1/p' /tmp/b.out)
  latency=$(sed -n 's/.*mean playback latency \([0-9]*\) us.*/\1/p' /tmp/b.err)
  xruns=$(sed -n 's/.*frames played, \([0-9]*\) underruns.*/\1/p' /tmp/b.err)
  echo "BENCH vmm latency_ms=$(awk -v l="${latency:-0}" 'BEGIN { printf "%.1f", l / 1000 }')" \
    "drift_ms=$(( (${play:-0} - ${startup:-0}) * 10 - 10000 ))" "xruns=${xruns:-?}" \
    "cpu_ms_per_s=$(awk -v t=$((c1 - c0)) -v hz="$hz" 'BEGIN { printf "%.1f", t * 1000 / hz / 10 }')"
  s0=$(tr -d . </proc/uptime | cut -d' ' -f1)
  ./aplay -D plughw:Loopback,0,0 tone.wav 2>/tmp/h.err >/dev/null
  s1=$(tr -d . </proc/uptime | cut -d' ' -f1)
  echo "BENCH host latency_ms=- drift_ms=$(( (s1 - s0) * 10 - 10000 ))" \
    "xruns=$(grep -c underrun /tmp/h.err)" "cpu_ms_per_s=-"
done
EOS
collect '^BENCH ' --timeout $((900 + rounds * 400))
need_results '^BENCH vmm'
echo "median of $rounds rounds"
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
