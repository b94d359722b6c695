#!/usr/bin/env bash
# Passthrough scenarios of `vmm run FILE.system` with the freestanding test guest on this
# machine's /dev/kvm: a shared region the guest and a host process both read and write, a
# read-only map, and host event sources (FIFO, Unix datagram socket, a FIFO flooded without
# end) raising a guest IRQ.
# Usage: system_case.sh VMM GUEST_BZIMAGE CASE
set -uo pipefail
vmm=$1 guest=$2 case=$3
work=$(mktemp -d)
shm_name=/libvmm-test-$$
trap 'rm -rf "$work"; rm -f "/dev/shm$shm_name"' EXIT
out=$work/out err=$work/err
cp "$guest" "$work/guest.bzImage"
# shellcheck source=tests/guests/need_kvm.sh
. "$(dirname "$0")/need_kvm.sh"
# hugepages' refusal comes before KVM is opened; every other case runs the guest.
[ "$case" = hugepages ] || need_kvm "$case"

fail() { echo "FAIL ($case): $*"; echo "--- stdout"; cat "$out"; echo "--- stderr"; cat "$err"; exit 1; }
expect_out() { grep -qF -- "$1" "$out" || fail "stdout lacks: $1"; }
expect_err() { grep -qF -- "$1" "$err" || fail "stderr lacks: $1"; }
# wait_for FILE TEXT [COUNT]: until FILE holds TEXT (COUNT times), at most 30 s.
wait_for() {
  for _ in $(seq 300); do
    local n
    n=$(grep -caF -- "$2" "$1" 2>/dev/null)
    [ "${n:-0}" -ge "${3:-1}" ] && return 0
    sleep 0.1
  done
  fail "timed out waiting for '$2' in $1"
}

# system REGION_ATTRS MAP_PERMS CMDLINE [EXTRA]: writes $work/test.system.
system() {
  cat >"$work/test.system" <<EOS
<?xml version="1.0"?>
<system>
  <memory_region name="guest_ram" size="32M" />
  <memory_region name="shared" size="4K" phys_addr="0xc0000000" $1 />
  <protection_domain name="vmm">
    <map mr="shared" perms="rw" setvar_vaddr="shared_vaddr" />
    <virtual_machine name="test" id="0">
      <map mr="guest_ram" vaddr="0x0" perms="rwx" />
      <map mr="shared" perms="$2" />
      <kernel path="guest.bzImage" />
      <cmdline>$3</cmdline>
      <serial backend="stdio" />
      ${4:-}
    </virtual_machine>
  </protection_domain>
</system>
EOS
}
start() { timeout 60 "$vmm" run "$work/test.system" </dev/null >"$out" 2>"$err" & pid=$!; }
finish() {
  wait "$pid"
  status=$?
  [ "$status" -eq 0 ] || fail "exit status $status, expected 0"
  expect_out "TEST-GUEST: resetting"
}
# The host's side of the shared region: waits for the guest's pattern, answers at 0x100.
answer() {
  wait_for "$1" GUEST-WROTE-THIS
  printf 'HOST-ANSWER\0' | dd of="$1" bs=1 seek=256 conv=notrunc status=none
}

case $case in
  microkit_x86)
    # libvmm's x86_64 form (tests/system/microkit/x86_simple.system: <vcpu>, program_image,
    # COM1 as <ioport> with its <irq pin>), images from vmm run's flags: COM1 on stdout.
    timeout 60 "$vmm" run "$(dirname "$0")/../system/microkit/x86_simple.system" \
      --kernel "$work/guest.bzImage" --cmdline "hello" </dev/null >"$out" 2>"$err"
    status=$?
    [ "$status" -eq 0 ] || fail "exit status $status, expected 0"
    expect_out "TEST-GUEST: hello, command line: hello"
    expect_out "TEST-GUEST: resetting"
    ;;
  shared_file)
    system 'path="shared.bin"' rw "mem 0xc0000000"
    start
    answer "$work/shared.bin"
    finish
    expect_out "TEST-GUEST: host answered: HOST-ANSWER"
    ;;
  shared_shm)
    system "shm=\"$shm_name\"" rw "mem 0xc0000000"
    start
    answer "/dev/shm$shm_name"
    finish
    expect_out "TEST-GUEST: host answered: HOST-ANSWER"
    ;;
  readonly)
    # The host's answer is there from the start; the guest's write must not land.
    truncate -s 4096 "$work/shared.bin"
    printf 'HOST-ANSWER\0' | dd of="$work/shared.bin" bs=1 seek=256 conv=notrunc status=none
    system 'path="shared.bin"' r "mem 0xc0000000"
    start
    finish
    expect_out "TEST-GUEST: host answered: HOST-ANSWER"
    expect_err "wrote 1 byte at guest-physical 0xc0000000"
    expect_err "memory 'shared' is read-only for the guest"
    grep -qaF GUEST-WROTE "$work/shared.bin" && fail "the guest wrote to its read-only map"
    ;;
  irq_fifo | irq_socket)
    if [ "$case" = irq_fifo ]; then
      system "" rw "irq 20" '<irq irq="20" fifo="doorbell" />'
      fire() { echo x >"$work/doorbell"; }
    else
      command -v python3 >/dev/null || { echo "SKIP: no python3 to send datagrams"; exit 77; }
      system "" rw "irq 20" '<irq irq="20" socket="doorbell.sock" />'
      fire() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b"x", sys.argv[1])' "$work/doorbell.sock"; }
    fi
    start
    wait_for "$out" "TEST-GUEST: irq ready"
    for n in 1 2 3; do
      fire
      wait_for "$out" "TEST-GUEST: interrupt" "$n"
    done
    finish
    expect_out "TEST-GUEST: three interrupts"
    ;;
  irq_flood)
    # A writer that never stops: interrupts still reach the guest and vmm ends as it should
    # (each wake-up takes a bounded amount: the HostEvents unit tests).
    system "" rw "irq 20" '<irq irq="20" fifo="doorbell" />'
    start
    wait_for "$out" "TEST-GUEST: irq ready"
    yes >"$work/doorbell" 2>/dev/null &
    flood=$!
    wait_for "$out" "TEST-GUEST: three interrupts"
    finish
    kill "$flood" 2>/dev/null
    ;;
  two_guests)
    # One region mapped into two guests is the same memory: guest a writes, guest b answers.
    cat >"$work/test.system" <<EOS
<system>
  <memory_region name="ram_a" size="32M" />
  <memory_region name="ram_b" size="32M" />
  <memory_region name="shared" size="4K" phys_addr="0xc0000000" />
  <protection_domain name="vmm">
    <virtual_machine name="a" id="0" ram="ram_a">
      <map mr="ram_a" vaddr="0x0" />
      <map mr="shared" />
      <kernel path="guest.bzImage" />
      <cmdline>mem 0xc0000000</cmdline>
      <serial backend="stdio" />
    </virtual_machine>
    <virtual_machine name="b" id="1" ram="ram_b">
      <map mr="ram_b" vaddr="0x0" />
      <map mr="shared" />
      <kernel path="guest.bzImage" />
      <cmdline>answer 0xc0000000</cmdline>
      <serial backend="file:$work/b.out" />
    </virtual_machine>
  </protection_domain>
</system>
EOS
    start
    finish
    expect_out "TEST-GUEST: host answered: ANSWER-FROM-GUEST-B"
    grep -qF "TEST-GUEST: the other guest wrote: GUEST-WROTE-THIS" "$work/b.out" ||
      fail "guest b did not see guest a's text"
    ;;
  hugepages)
    # page_size 2 MiB asks for huge pages: a clear error (status 2) on a host without free ones.
    sed 's|<memory_region name="guest_ram" size="32M" />|<memory_region name="guest_ram" size="32M" page_size="2M" />|' \
      <<<"$(system "" rw "hello"; cat "$work/test.system")" >"$work/test.system"
    free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
    timeout 60 "$vmm" run "$work/test.system" </dev/null >"$out" 2>"$err"
    status=$?
    if [ "${free:-0}" -ge 16 ]; then
      need_kvm "$case"
      [ "$status" -eq 0 ] || fail "exit status $status with $free free huge pages"
      expect_out "TEST-GUEST: resetting"
    else
      [ "$status" -eq 2 ] || fail "exit status $status without free huge pages, expected 2"
      expect_err "test.system:3: memory region 'guest_ram': "
      expect_err "huge pages"
    fi
    ;;
  *) echo "unknown case $case"; exit 2 ;;
esac
echo "PASS ($case)"
