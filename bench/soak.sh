#!/usr/bin/env bash
# Endurance: one guest keeps its virtIO disk, network and consoles busy for SECONDS inside the
# emulated KVM host, while the host samples vmm's memory every 60 s (and at the start).
#   block    4 MiB of random data written to /dev/vda with O_DIRECT at a rotating offset,
#            fsynced (a FLUSH), read back with O_DIRECT and compared
#   network  ping of the host side of the TAP, and 1 MiB fetched over TCP from a busybox httpd
#            there, checksum compared (everything inside a network namespace the script creates)
#   console  lines on the serial console (ttyS0) and on the virtIO console (hvc0)
# Each sample is VmRSS of /proc/PID/status, and RssAnon: guest RAM is a memfd mapping here
# (--memory-backing memfd: RssShmem, which grows as the guest touches its memory, up to
# --memory; the default backing, anonymous memory, would count as RssAnon), so RssAnon is vmm's
# own heap and stacks, where a leak would show. At the end: first, last and max of each, and
# the least-squares slope in KiB/hour. The run fails if vmm dies, the guest reports an error,
# or it stops making progress.
# Usage: bench/soak.sh [SECONDS] [--record]   (default 3600; at least 120)
#   --record  also writes the figure into docs/SECURITY.md, between the soak markers of its
#             "Endurance" section (nothing else in the repository is written)
set -euo pipefail
secs=3600 record=no
for arg in "$@"; do
  case $arg in
    --record) record=yes ;;
    *)
      [[ $arg =~ ^[0-9]+$ ]] && [ "$arg" -ge 120 ] \
        || { echo "usage: bench/soak.sh [SECONDS] [--record] (SECONDS: a whole number, at least 120)" >&2; exit 2; }
      secs=$arg ;;
  esac
done
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "$0")/../tests/integration/lib/host.sh"
cd "$repo"
doc=$repo/docs/SECURITY.md
if [ $record = yes ]; then
  grep -q '^<!-- soak:begin -->$' "$doc" && grep -q '^<!-- soak:end -->$' "$doc" \
    || { echo "bench/soak.sh: $doc has no <!-- soak:begin --> / <!-- soak:end --> markers" >&2; exit 2; }
fi
native_build

# Guest side: /tests/soak (run by /init), looping until vmm is killed.
extra=$work/guest-extra
mkdir -p "$extra/tests"
cat >"$extra/tests/soak" <<'EOS'
#!/bin/sh
say() { echo "LIBVMM-GUEST: $*"; }
ip link set lo up
ip link set eth0 up && ip addr add 10.0.0.2/24 dev eth0
ping -c 3 -W 5 10.0.0.1 >/dev/null 2>&1  # ARP, and the host side is up
round=0 errors=0
fail() { errors=$((errors + 1)); say "SOAK error in round $round: $*"; }
while :; do
  round=$((round + 1))
  # block: 4 MiB at one of 8 offsets of the 64 MiB disk
  seek=$((round % 8 * 4))
  head -c 4194304 /dev/urandom >/tmp/blk
  want=$(md5sum </tmp/blk | cut -d' ' -f1)
  dd if=/tmp/blk of=/dev/vda bs=1M seek=$seek oflag=direct conv=fsync,notrunc 2>/dev/null \
    || fail "disk write"
  got=$(dd if=/dev/vda bs=1M skip=$seek count=4 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail "disk read back differs"
  # network
  ping -c 5 -i 0.2 -W 5 10.0.0.1 >/dev/null 2>&1 || fail "ping"
  got=$(wget -q -O - http://10.0.0.1:8080/blob 2>/dev/null | sha256sum | cut -d' ' -f1)
  [ "$got" = "$(cat /tmp/blob.sha256 2>/dev/null)" ] || {
    wget -q -O /tmp/blob.sha256 http://10.0.0.1:8080/blob.sha256 2>/dev/null
    [ "$got" = "$(cat /tmp/blob.sha256)" ] || fail "download differs"
  }
  # consoles
  i=0
  while [ $i -lt 20 ]; do
    echo "soak round $round line $i: the quick brown fox jumps over the lazy dog 0123456789"
    echo "soak round $round line $i: the quick brown fox jumps over the lazy dog 0123456789" >/dev/hvc0
    i=$((i + 1))
  done
  say "SOAK round=$round errors=$errors"
done
EOS
chmod +x "$extra/tests/soak"

payload_new x86_64 build/gcc/tools/vmm/vmm --extra "$extra"
payload_binary "$(command -v ip)"  # busybox ip has no netns

payload_script run.sh secs="$secs" <<'EOS'
export PATH=/payload:$PATH
./ip netns add soak || { echo "SOAK-SETUP no network namespaces"; exit 1; }
./ip netns exec soak ip link set lo up
./ip netns exec soak ip tuntap add tap0 mode tap
./ip netns exec soak ip addr add 10.0.0.1/24 dev tap0
./ip netns exec soak ip link set tap0 up
mkdir -p /www
dd if=/dev/urandom of=/www/blob bs=64k count=16 2>/dev/null
sha256sum </www/blob | cut -d' ' -f1 >/www/blob.sha256
./ip netns exec soak httpd -p 10.0.0.1:8080 -h /www
dd if=/dev/zero of=/tmp/soak.img bs=1M count=64 2>/dev/null
# `ip netns exec` execs vmm: $! is vmm's pid.
./ip netns exec soak ./vmm --kernel bzImage --initrd initramfs.cpio.gz --memory 256M --memory-backing memfd \
  --cmdline "console=ttyS0 quiet libvmm.test=soak" --disk /tmp/soak.img --net tap=tap0 \
  --console file:/tmp/hvc0.out --serial file:/tmp/soak.out </dev/null 2>/tmp/soak.err &
pid=$!
sample() {
  echo "SOAK-SAMPLE t=$1 rss=$(awk '/^VmRSS:/ { print $2 }' /proc/$pid/status) anon=$(awk '/^RssAnon:/ { print $2 }' /proc/$pid/status) rounds=$(rounds)"
}
rounds() { tr -d '\r' </tmp/soak.out | sed -n 's/^LIBVMM-GUEST: SOAK round=\([0-9]*\) .*/\1/p' | tail -n 1; }
# The clock starts with the first round: boot is not part of the soak.
if ! wait_for /tmp/soak.out "SOAK round=1 " 300; then
  echo "SOAK-FAIL the guest did not finish a first round"
  tail -n 20 /tmp/soak.out /tmp/soak.err
  kill $pid; exit 1
fi
start=$(date +%s) t=0 last=1
sample 0
while [ $t -lt "$secs" ]; do
  sleep $((secs - t < 60 ? secs - t : 60))
  kill -0 $pid 2>/dev/null || { echo "SOAK-FAIL vmm exited"; tail -n 20 /tmp/soak.err; exit 1; }
  t=$(($(date +%s) - start))
  sample $t
  now=$(rounds)
  [ "${now:-0}" -gt "$last" ] || echo "SOAK-FAIL no guest progress in the last minute (round $now)"
  last=${now:-0}
done
kill $pid; wait $pid
tr -d '\r' </tmp/soak.out | grep -F "SOAK error" | head -n 5 | sed 's/^/SOAK-FAIL guest: /'
echo "SOAK-END rounds=$(rounds) errors=$(tr -d '\r' </tmp/soak.out | grep -c "SOAK error") hvc0_lines=$(wc -l </tmp/hvc0.out)"
EOS
collect '^SOAK-' --timeout $((secs + 900))
need_results '^SOAK-SAMPLE '
sed 's/^/  /' "$work/results"
grep -q '^SOAK-FAIL' "$work/results" && failed=yes || failed=no

# Least-squares slope of column $1 (rss or anon) over t, in KiB/hour; first, last, max.
stats() {
  awk -v key="$1" '/^SOAK-SAMPLE / {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      n++; t[n] = v["t"]; y[n] = v[key]; st += t[n]; sy += y[n]; if (y[n] > max) max = y[n] }
    END {
      mt = st / n; my = sy / n
      for (i = 1; i <= n; i++) { sxy += (t[i] - mt) * (y[i] - my); sxx += (t[i] - mt) ^ 2 }
      slope = sxx > 0 ? sxy / sxx * 3600 : 0
      printf "first %d KiB, last %d KiB, max %d KiB, slope %+.0f KiB/hour\n", y[1], y[n], max, slope
    }' "$work/results"
}
samples=$(grep -c '^SOAK-SAMPLE ' "$work/results")
duration=$(sed -n 's/^SOAK-SAMPLE t=\([0-9]*\) .*/\1/p' "$work/results" | tail -n 1)
end=$(grep '^SOAK-END' "$work/results" | sed 's/^SOAK-END //' || true)
rss=$(stats rss) anon=$(stats anon)
echo "soak: ${duration} s, $samples samples, ${end:-no end line}"
echo "  VmRSS:   $rss"
echo "  RssAnon: $anon"
[ "$failed" = no ] || { echo "soak: FAILED (see the SOAK-FAIL lines above)"; exit 1; }

if [ $record = yes ]; then
  figure=$work/figure.md
  {
    echo "<!-- soak:begin -->"
    echo "Recorded by \`bench/soak.sh $secs --record\` on $(date -u +%Y-%m-%d) ($(git -C "$repo" rev-parse --short HEAD)),"
    rounds=$(echo "$end" | sed -n 's/.*rounds=\([0-9]*\).*/\1/p')
    echo "x86_64 guest (1 vCPU, 256 MiB) in the emulated KVM host: ${duration} s, $samples samples of"
    echo "vmm's memory, $rounds rounds of disk, network and console I/O without an error."
    echo
    echo "| vmm memory | first, last, max, least-squares slope |"
    echo "|---|---|"
    echo "| VmRSS (with guest RAM touched so far) | $rss |"
    echo "| RssAnon (vmm's own heap and stacks) | $anon |"
    echo "<!-- soak:end -->"
  } >"$figure"
  awk -v figure="$figure" '
    /^<!-- soak:begin -->$/ { while ((getline line < figure) > 0) print line; skip = 1; next }
    /^<!-- soak:end -->$/ { skip = 0; next }
    !skip' "$doc" >"$work/doc" && cat "$work/doc" >"$doc"
  echo "soak: recorded in docs/SECURITY.md (Endurance)"
fi
