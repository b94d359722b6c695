#!/usr/bin/env bash
# vmm-device's refusals: each bad input is one line naming the flag, exit status 2, nothing
# served; a socket another vmm-device serves is not taken over, and stays when the refused one
# ends.
# Usage: vmm_device_cli.sh VMM_DEVICE
set -uo pipefail
dev=$1
work=$(mktemp -d)
first=
trap '[ -n "$first" ] && kill "$first" 2>/dev/null; rm -rf "$work"' EXIT
failed=0
refuses() {  # refuses "message fragment" ARGS...
  local msg=$1
  shift
  timeout 20 "$dev" "$@" </dev/null >"$work/out" 2>"$work/err"
  local status=$?
  if [ "$status" -ne 2 ] || [ "$(wc -l <"$work/err")" -ne 1 ] || ! grep -qF -- "$msg" "$work/err"; then
    echo "FAIL: vmm-device $*: status $status, expected 2 and one line with: $msg"
    cat "$work/err"
    failed=1
  else
    echo "PASS: vmm-device $* ($msg)"
  fi
}
sock=$work/s.sock
refuses "one device to serve" --socket "$sock"
refuses "unknown option 'input'" --socket "$sock" --sound "wav:$work/o.wav,input=$work/i.wav"
refuses "option 'in' given twice" --socket "$sock" --sound "wav:$work/o.wav,in=$work/a.wav,in=$work/b.wav"
refuses "vhost= applies to vmm's own devices" --socket "$sock" --net tap=t0,vhost=on
refuses "iothread= applies to vmm's own devices" --socket "$sock" --net tap=t0,iothread=on
truncate -s 4096 "$work/x.img"
refuses "transport= applies to vmm's own devices" --socket "$sock" --disk "$work/x.img,transport=mmio"
refuses "stdio is used twice" --socket "$sock" --console stdio,port1=a=stdio
refuses "--disk $work/missing.img: image $work/missing.img: No such file or directory" \
  --socket "$sock" --disk "$work/missing.img"
# A device that cannot be opened leaves no socket behind.
refuses "no ALSA PCM" --socket "$sock" --sound alsa:libvmm_no_such_pcm
[ -e "$sock" ] && { echo "FAIL: a vmm-device that failed left its socket behind"; failed=1; }
# A socket served by another vmm-device (one that ends when its first front-end leaves): refused,
# left in place, and the other goes on (the probe is no front-end).
"$dev" --socket "$sock" --sound none --seccomp off --once 2>"$work/first.err" &
first=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
refuses "--socket $sock: another process listens there" --socket "$sock" --sound none
[ -S "$sock" ] || { echo "FAIL: the refused vmm-device removed the other's socket"; failed=1; }
kill -0 "$first" 2>/dev/null || { echo "FAIL: the probe ended the other (--once)"; failed=1; }
grep -qF "closed without a message (a probe?)" "$work/first.err" ||
  { echo "FAIL: the other vmm-device did not take the probe for one"; failed=1; }
kill "$first"
wait "$first"
first=
[ -e "$sock" ] && { echo "FAIL: vmm-device left its socket behind"; failed=1; }
exit "$failed"
