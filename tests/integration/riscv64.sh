#!/usr/bin/env bash
# riscv64 Linux guests: cross-builds vmm for riscv64, then boots trixie's stock riscv64 kernel
# (the one the emulated host runs) with our initramfs inside the emulated riscv64 KVM host
# (tools/emuhost/emuhost --arch riscv64, a PLIC host: no in-kernel AIA), in one boot:
#   net and boot facts: 2 harts (SBI HSM), the 16550A console, the PLIC vmm emulates, virtIO
#               network in a network namespace (ping, 1 MiB over TCP), SBI SRST shutdown ending
#               vmm with status 0;
#   console:    the initramfs shell on the 16550A both ways; `reboot` (SRST reset) ends vmm
#               with 0; every thread under its seccomp filter;
#   virtio:     block (the guest's write checked from the host after exit), console, rng;
#   system:     the example .system file (with the PLIC) checked and run;
#   faults:     a tiny Image reading unmapped memory (reported), making an SBI call vmm does
#               not implement (reported once, answered SBI_ERR_NOT_SUPPORTED), then SRST;
#               --irqchip aia refused in one line (vmm does not create KVM's AIA).
# Usage: riscv64.sh CROSS_BUILD_DIR
set -euo pipefail
build=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"

cross_build "$build" --arch riscv64 vmm

extra=$work/extra
mkdir -p "$extra/tests"
cp "$repo/tests/integration/riscv64/info" "$extra/tests/riscv64info"
cp "$repo/tests/integration/riscv64/net" "$extra/tests/riscv64net"
payload_new riscv64 "$build/tools/vmm/vmm" --extra "$extra"
riscv64-linux-gnu-as "$repo/tests/integration/riscv64/fault.S" -o "$work/fault.o"
riscv64-linux-gnu-objcopy -O binary "$work/fault.o" "$payload/fault.Image"
sed -e 's|<irqchip kind="aia" />|<irqchip kind="plic" />|' \
  -e 's|<cmdline>console=ttyS0</cmdline>|<cmdline>console=ttyS0 quiet libvmm.test=riscv64info</cmdline>|' \
  -e 's|<virtio_net tap="tap0" />||' "$repo/examples/simple/simple-riscv64.system" >"$payload/simple.system"

payload_script run.sh <<'EOS'
# All of it in a network namespace of its own: the TAP, its address and the web server live
# there, and no traffic leaves it.
[ -n "$IN_TEST_NETNS" ] || IN_TEST_NETNS=1 exec unshare -n "$0"
# 1. Two harts, the 16550A, the PLIC; virtIO network on a TAP made beforehand: eth0 has the MAC
#    given with --net, pings the TAP's host side (10.0.0.1) and fetches 1 MiB from the host's
#    web server intact; then SBI SRST shutdown ends vmm.
ip link set lo up
tunctl -t tap0 >/dev/null
ip addr add 10.0.0.1/24 dev tap0
ip link set tap0 up
mkdir -p /tmp/www
dd if=/dev/urandom of=/tmp/www/to-guest bs=64k count=16 2>/dev/null
to_guest=$(sha256sum </tmp/www/to-guest | cut -d' ' -f1)
httpd -f -p 10.0.0.1:8080 -h /tmp/www &
httpd=$!
boot info "quiet libvmm.test=riscv64net" --vcpus 2 --net tap=tap0,mac=52:54:00:12:34:56
kill $httpd
cat /tmp/info.out
check "net: eth0 has the MAC given with --net" grep -qF "eth0 address: 52:54:00:12:34:56" /tmp/info.out
check "net: the guest pings the host side of the TAP" grep -qF "ping host ok" /tmp/info.out
check "net: 1 MiB over TCP arrives intact" grep -qF "to-guest sha256: $to_guest" /tmp/info.out
check "boot: /init ran" grep -qF "LIBVMM-GUEST: init started" /tmp/info.out
check "boot: 2 harts came up (SBI HSM)" grep -qF "smp: Brought up 1 node, 2 CPUs" /tmp/info.out
check "boot: the console is the 16550A" grep -qE "ttyS0 at MMIO 0x10000000 .*is a 16550A" /tmp/info.out
check "boot: the guest's interrupts go through the PLIC" grep -qF "irqchip: PLIC" /tmp/info.out
check "boot: the harts' ISA is KVM's (riscv,isa)" grep -qE "LIBVMM-GUEST: isa: rv64imafdc" /tmp/info.out
check "poweroff: exit status 0" [ "$status" -eq 0 ]
check "poweroff: vmm saw SBI SRST shutdown" grep -qF "guest stopped (power off)" /tmp/info.err

# 2. The 16550A both ways: an interactive shell fed through a FIFO (interrupt-driven input
#    through the PLIC); `reboot` (SBI SRST reset) ends vmm too.
start console guest --memory 256M --vcpus 2 --cmdline "console=ttyS0 quiet"
check "console: the shell prompt appeared" wait_for /tmp/console.out "guest# " 240
check "seccomp: every thread of vmm is sandboxed (the default, kill)" sandboxed
send console 'echo marker-$((6*7))'
check "console: input reached the guest and ran" wait_for /tmp/console.out "marker-42" 60
send console 'reboot -f'
stop
check "reset: exit status 0 after reboot" [ "$status" -eq 0 ]
check "reset: vmm saw SBI SRST reset" grep -qF "guest stopped (reset)" /tmp/console.err

# 3. virtIO block, console and rng, with the kernel's module drivers loaded by /init.
dd if=/dev/zero of=/tmp/vda.img bs=1M count=4 2>/dev/null
printf 'LIBVMM-HOST-WROTE-THIS!!' | dd of=/tmp/vda.img conv=notrunc 2>/dev/null
dd if=/dev/zero of=/tmp/vdb.img bs=1M count=1 2>/dev/null
start hvc0 guest --memory 256M --cmdline "console=ttyS0 quiet libvmm.test=virtio" \
  --disk /tmp/vda.img --disk /tmp/vdb.img,readonly --console stdio --rng --serial file:/tmp/virtio.out
check "virtio: hvc0 output reached vmm's stdout" wait_for /tmp/hvc0.out "LIBVMM-GUEST: hello over hvc0" 240
send hvc0 "ping-from-host"
check "virtio: host input reached the guest over hvc0" wait_for /tmp/hvc0.out "hvc0 got: ping-from-host" 60
stop
check "virtio: exit status 0" [ "$status" -eq 0 ]
check "virtio: virtio_rng is the guest's hwrng" grep -qF "hwrng: virtio_rng.0" /tmp/virtio.out
check "virtio: /dev/hwrng gives random bytes" grep -qF "hwrng gives random bytes" /tmp/virtio.out
check "virtio: /dev/hwrng reads 64 KiB" grep -qF "hwrng 64 KiB: 65536 bytes" /tmp/virtio.out
check "virtio: the guest sees vda and vdb" grep -qF "block devices: vda vdb" /tmp/virtio.out
check "virtio: the guest reads the host's pattern" grep -qF "vda starts with: LIBVMM-HOST-WROTE-THIS!!" /tmp/virtio.out
check "virtio: vdb is read-only in the guest" grep -qF "vdb write refused" /tmp/virtio.out
check "virtio: the guest's write is in the image" \
  sh -c 'dd if=/tmp/vda.img bs=512 skip=8 count=1 2>/dev/null | grep -qF guest-wrote-this-sector'

# 4. The example system (its PLIC form, without the TAP): checked, then run.
export LIBVMM_GUEST=$PWD
cp /tmp/vdb.img vda.img
./vmm check simple.system >/tmp/check.out 2>&1
check "system: vmm check accepts the example" [ $? -eq 0 ]
check "system: ... RAM at 0x8000_0000" \
  grep -qF "RAM      [0x0080000000, 0x0090000000) 'guest_ram' rwx" /tmp/check.out
check "system: ... the PLIC" grep -qF "irqchip  plic (emulated by vmm)" /tmp/check.out
./vmm run simple.system </dev/null >/tmp/system.out 2>/tmp/system.err
status=$?
check "system: 2 harts came up" grep -qF "smp: Brought up 1 node, 2 CPUs" /tmp/system.out
check "system: the guest sees its disk" grep -qF "block devices: vda" /tmp/system.out
check "system: exit status 0 after SBI SRST shutdown" [ "$status" -eq 0 ]

# 5. Faults and SBI: an unmapped read is reported (all-ones) and the run goes on; an SBI call
#    KVM leaves to vmm is reported once and answered SBI_ERR_NOT_SUPPORTED (else the Image
#    writes to 0x20001000); SRST shutdown: status 0.
./vmm --kernel fault.Image --memory 64M </dev/null >/tmp/fault.out 2>/tmp/fault.err
status=$?
check "faults: unmapped read reported" \
  grep -qF "guest fault: vCPU 0 read 4 bytes at guest-physical 0x20000000" /tmp/fault.err
check "faults: the unimplemented SBI call reported" \
  grep -qF "the guest called SBI extension 0x8000000 function 0" /tmp/fault.err
check "faults: ... and answered SBI_ERR_NOT_SUPPORTED" sh -c '! grep -qF 0x20001000 /tmp/fault.err'
check "faults: exit status 0 after SRST" [ "$status" -eq 0 ]
./vmm --kernel Image --irqchip aia --memory 256M </dev/null >/tmp/aia.out 2>/tmp/aia.err
status=$?
check "irqchip: --irqchip aia refused with status 2" [ "$status" -eq 2 ]
check "irqchip: ... in one line naming the flag" \
  sh -c '[ "$(wc -l </tmp/aia.err)" -eq 1 ] && grep -qF -- "--irqchip aia: " /tmp/aia.err'
finish riscv64 /tmp/info.out /tmp/info.err /tmp/console.out /tmp/console.err /tmp/virtio.out \
  /tmp/hvc0.out /tmp/hvc0.err /tmp/check.out /tmp/system.out /tmp/system.err /tmp/fault.err /tmp/aia.err
EOS
started=$(date +%s)
status=0
run_payload --timeout 1500 || status=$?
echo "$prog: the emulated riscv64 host took $(($(date +%s) - started)) s"
exit $status
