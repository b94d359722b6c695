#!/usr/bin/env bash
# tests/integration/emuhost_riscv64.sh
#
# The emulated riscv64 KVM host (tools/emuhost/emuhost --arch riscv64: QEMU TCG with the
# hypervisor extension, Debian 13's kernel) in one boot: /dev/kvm is there once kvm.ko is
# loaded, the payload's output reaches our stdout and its exit status (3) is emuhost's.
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
echo "$prog: PASS (${elapsed_ms} ms)"
