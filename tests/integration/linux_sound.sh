#!/usr/bin/env bash
# virtio-snd with the real Linux driver (CONFIG_SND_VIRTIO) and Debian's aplay/arecord in the
# guest, inside the emulated KVM host, in one boot of it:
#   wav48k  `aplay -l` lists the virtio-snd card; aplay of a 2 s 440 Hz stereo S16_LE 48 kHz
#           tone through --sound wav: the host file has that format, 2 s within one period, and
#           440 Hz within 1 %; the guest's aplay took 1.6-4 s (paced, not instant); arecord of
#           1 s from the host WAV given as in= (1000 Hz mono): same frequency, 1 s within a
#           period; vmm logs its counters at the end and exits 0;
#   wav8k   a second guest plays 8 kHz mono U8 (rate and format negotiation) on a card served
#           by our vmm-device (--sound wav:) over vhost-user (vmm --vhost-user sound): the host
#           file has that format and the tone's 300 Hz; vmm-device exits 0 when vmm leaves
#           (--once) and logs its counters;
#   alsa    the 48 kHz tone through --sound alsa:hw:Loopback,,0 (ALSA's hw:Loopback,0: a comma
#           doubled in the flag) into the emulated host's snd-aloop card, with vmm in a jail
#           (--jail: the PCM opened before it and inherited) under the default seccomp kill
#           mode (ALSA's ioctls pinned to the PCM's descriptors), an arecord on the loopback's
#           other end: the capture has the 440 Hz tone, all 2 s of it (the end that ALSA
#           held at the guest's STOP is played, not dropped).
# Usage: linux_sound.sh VMM VMM_DEVICE
set -euo pipefail
vmm=$1
vmm_device=$2
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"

command -v aplay >/dev/null || { echo "linux_sound: aplay missing (apt-get install alsa-utils; tools/install-deps)" >&2; exit 1; }

# wavtool makes and measures the WAV files, on this host, in the emulated host and in the guest.
cc -O2 -static -o "$work/wavtool" "$repo/tests/integration/sound/wavtool.c" -lm

# The guest's extra files: aplay (arecord is the same program) with its libraries, ALSA's
# configuration, wavtool, the tones and the guest's test scripts.
extra=$work/extra
mkdir -p "$extra/bin" "$extra/tests" "$extra/usr/share/alsa" "$extra/sound"
extra_binary "$extra" "$(command -v aplay)" bin/aplay
ln -s aplay "$extra/bin/arecord"
cp /usr/share/alsa/alsa.conf "$extra/usr/share/alsa/"
cp -r /usr/share/alsa/cards /usr/share/alsa/pcm "$extra/usr/share/alsa/"
cp "$work/wavtool" "$extra/bin/wavtool"
"$work/wavtool" gen "$extra/sound/tone48k.wav" 48000 2 s16 440 2
"$work/wavtool" gen "$extra/sound/tone8k.wav" 8000 1 u8 300 2
"$work/wavtool" gen "$extra/sound/blip48k.wav" 48000 2 s16 440 0.01
cat >"$extra/tests/soundalsa" <<'EOG'
#!/bin/sh
aplay -q -D hw:0,0 /sound/tone48k.wav 2>&1 | sed 's/^/LIBVMM-GUEST: aplay: /'
# The VM's end would cut off what the host's ALSA still plays after aplay's STOP.
sleep 1
echo "LIBVMM-GUEST: sound done"
reboot -f
EOG
cat >"$extra/tests/sound" <<'EOG'
#!/bin/sh
# Plays the 48 kHz tone, times it, then records 1 s from the device (the host's in= file).
# Leading zeros dropped: "0.98" s is 98 cs, not the invalid octal 098 in $((...)).
uptime_cs() { tr -d . </proc/uptime | cut -d' ' -f1 | sed 's/^0*\([0-9]\)/\1/'; }
aplay -l 2>&1 | sed 's/^/LIBVMM-GUEST: aplay -l: /'
t0=$(uptime_cs)
aplay -q -D hw:0,0 /sound/tone48k.wav 2>&1 | sed 's/^/LIBVMM-GUEST: aplay: /'
t1=$(uptime_cs)
aplay -q -D null /sound/blip48k.wav 2>&1 | sed 's/^/LIBVMM-GUEST: aplay: /'
t2=$(uptime_cs)
echo "LIBVMM-GUEST: aplay took $((t1 - t0)) cs, of 10 ms $((t2 - t1)) cs"
arecord -q -D hw:0,0 -f S16_LE -r 48000 -c 1 -d 1 /tmp/rec.wav 2>&1 | sed 's/^/LIBVMM-GUEST: arecord: /'
echo "LIBVMM-GUEST: recorded $(wavtool info /tmp/rec.wav 2>&1)"
echo "LIBVMM-GUEST: sound done"
reboot -f
EOG
cat >"$extra/tests/sound8k" <<'EOG'
#!/bin/sh
aplay -q -D hw:0,0 /sound/tone8k.wav 2>&1 | sed 's/^/LIBVMM-GUEST: aplay: /'
echo "LIBVMM-GUEST: sound done"
reboot -f
EOG
chmod +x "$extra/tests/sound" "$extra/tests/sound8k" "$extra/tests/soundalsa"

payload_new x86_64 "$vmm" --extra "$extra"
payload_binary "$work/wavtool" "$(command -v arecord)" "$vmm_device"
# ALSA's configuration for vmm's alsa backend and arecord in the emulated host.
mkdir -p "$payload/alsa"
cp -r /usr/share/alsa/alsa.conf /usr/share/alsa/cards /usr/share/alsa/pcm "$payload/alsa/"
"$work/wavtool" gen "$payload/in.wav" 48000 1 s16 1000 2

payload_script run.sh <<'EOS'
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" "$2" | head -n 1; }

boot wav48k "quiet libvmm.test=sound" --sound wav:/tmp/out48k.wav,in=in.wav
check "wav48k: vmm exit status 0 (got $status)" [ "$status" -eq 0 ]
tone_checks /tmp/out48k.wav /tmp/wav48k.out /tmp/wav48k.err wav48k
grep -F "LIBVMM-GUEST: recorded" /tmp/tone.guest || true
rfreq=$(field freq /tmp/tone.guest)
check "wav48k: arecord got the host's 1000 Hz within 1 % ($rfreq)" near "$rfreq" 1000 1
rframes=$(field frames /tmp/tone.guest)
check "wav48k: arecord got 1 s within one period ($rframes frames)" between "$rframes" 43200 52800

./vmm-device --socket /tmp/snd.sock --sound wav:/tmp/out8k.wav --once 2>/tmp/snddev.err &
dev=$!
wait_for /tmp/snddev.err "serving virtio-snd" 30 $dev
boot wav8k "quiet libvmm.test=sound8k" --vhost-user sound,socket=/tmp/snd.sock
wait $dev
devstatus=$?
check "wav8k: vmm exit status 0 (got $status)" [ "$status" -eq 0 ]
check "wav8k: vmm-device served vmm and exited 0 when it left (got $devstatus)" \
  sh -c "[ $devstatus -eq 0 ] && grep -qF 'front-end on /tmp/snd.sock: connected' /tmp/snddev.err"
check "wav8k: vmm-device logged its counters" \
  grep -qE "virtio-snd \(wav .*\): [0-9]+ frames played, [0-9]+ underruns" /tmp/snddev.err
./wavtool info /tmp/out8k.wav >/tmp/info8k 2>&1 || true
cat /tmp/info8k
check "wav8k: the host file is U8 8000 Hz mono" grep -qF "format=U8 rate=8000 channels=1 " /tmp/info8k
check "wav8k: 300 Hz within 1 % ($(field freq /tmp/info8k))" near "$(field freq /tmp/info8k)" 300 1
check "wav8k: 2 s within one period" between "$(field frames /tmp/info8k)" 15200 16800
# ALSA: vmm plays into the snd-aloop loopback card; arecord takes it from the other end.
export ALSA_CONFIG_PATH=/payload/alsa/alsa.conf ALSA_CONFIG_DIR=/payload/alsa
./arecord -q -D plughw:Loopback,1,0 -f S16_LE -r 48000 -c 2 -d 120 /tmp/loop.wav 2>/tmp/arecord.err &
rec=$!
sleep 1
mkdir -p /tmp/jail
boot alsa "quiet libvmm.test=soundalsa" --jail /tmp/jail --jail-uid 1000 --sound alsa:hw:Loopback,,0
kill -INT $rec
wait $rec || true
check "alsa: vmm exit status 0 (got $status)" [ "$status" -eq 0 ]
check "alsa: vmm ran in the jail" grep -qF "jail: the VM runs as pid" /tmp/alsa.err
check "alsa: the guest's aplay ran without errors" sh -c '! grep -qE "LIBVMM-GUEST: aplay: " /tmp/alsa.out'
./wavtool info /tmp/loop.wav >/tmp/infoalsa 2>&1 || true
cat /tmp/infoalsa /tmp/arecord.err
check "alsa: the loopback's capture has the 440 Hz tone ($(field freq /tmp/infoalsa))" \
  near "$(field freq /tmp/infoalsa)" 440 1
# The tone's last 100 ms were in ALSA's buffer when the guest's STOP came: they play out too.
check "alsa: the whole 2 s tone reached the loopback ($(field tone /tmp/infoalsa) s)" \
  between "$(field tone /tmp/infoalsa)" 1.96 60
finish linux_sound /tmp/tone.guest /tmp/wav48k.err /tmp/wav8k.out /tmp/wav8k.err /tmp/snddev.err /tmp/alsa.out /tmp/alsa.err /tmp/arecord.err
EOS
run_payload --timeout 600
