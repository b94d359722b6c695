#!/usr/bin/env bash
# tests/integration/emuhost_riscv64.sh
#
# The emulated riscv64 KVM host (tools/emuhost/emuhost --arch riscv64: QEMU TCG with the
# hypervisor extension and the AIA, trixie's QEMU and kernel) in one boot: /dev/kvm is there
# once kvm.ko is loaded, KVM offers its in-kernel AIA (the host's IMSIC has guest interrupt
# files), the payload's output reaches our stdout and its exit status (3) is emuhost's.
# The host linux.riscv64 (tests/integration/riscv64.sh) runs its guests in.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
prog=emuhost_riscv64
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "$prog: FAIL: $*" >&2
  [ ! -f "$work/out" ] || { echo "---- emuhost output ----" >&2; tail -n 30 "$work/out" >&2; }
  exit 1
}

mkdir -p "$work/payload"
cat >"$work/payload/run.sh" <<'EOS'
#!/bin/sh
[ -c /dev/kvm ] || { echo "no /dev/kvm"; exit 1; }
echo "kvm ok"
dmesg | grep -q 'kvm .*AIA available with [1-9]' && echo "kvm aia ok"
echo "isa: $(sed -n 's/^isa[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
exit 3
EOS
chmod +x "$work/payload/run.sh"
start=$(date +%s%N)
status=0
"$repo/tools/emuhost/emuhost" --arch riscv64 --timeout 600 "$work/payload" >"$work/out" 2>"$work/err" \
  || status=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
[ "$status" -eq 3 ] || fail "emuhost exited $status, not the payload's 3 ($(tail -n 1 "$work/err"))"
grep -qx 'kvm ok' "$work/out" || fail "'kvm ok' missing: no /dev/kvm in the riscv64 host"
grep -q '^isa: rv64[a-z]*h' "$work/out" || fail "the host's harts lack the H extension"
grep -qx 'kvm aia ok' "$work/out" || fail "the host's KVM offers no in-kernel AIA"
echo "$prog: PASS (${elapsed_ms} ms)"
