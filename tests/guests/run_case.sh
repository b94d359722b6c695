#!/usr/bin/env bash
# Runs one scenario of the freestanding test guest (test_guest.S) on this machine's /dev/kvm
# through the real `vmm` program, and checks its console output and exit status.
# Usage: run_case.sh VMM GUEST_BZIMAGE CASE [VMM_DEVICE]
set -uo pipefail
vmm=$1 guest=$2 case=$3 vmm_device=${4:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$work/out err=$work/err
# shellcheck source=tests/guests/need_kvm.sh
. "$(dirname "$0")/need_kvm.sh"
need_kvm "$case"

fail() { echo "FAIL ($case): $*"; echo "--- stdout"; cat "$out"; echo "--- stderr"; cat "$err"; exit 1; }
expect_out() { grep -qF -- "$1" "$out" || fail "stdout lacks: $1"; }
expect_err() { grep -qF -- "$1" "$err" || fail "stderr lacks: $1"; }
expect_status() { [ "$status" -eq "$1" ] || fail "exit status $status, expected $1"; }

# run ARGS...: runs vmm with stdin from $input (default: nothing), recording status.
input=/dev/null
run() { timeout 60 "$vmm" "$@" <"$input" >"$out" 2>"$err"; status=$?; }

case $case in
  hello)
    run --kernel "$guest" --memory 32M --cmdline "hello world"
    expect_status 0
    expect_out "TEST-GUEST: hello, command line: hello world"
    expect_out "TEST-GUEST: resetting"
    expect_err "guest stopped (reset)"
    ;;
  fault)
    run --kernel "$guest" --memory 32M --cmdline fault
    expect_status 0
    expect_out "TEST-GUEST: survived the fault"
    expect_err "guest fault: vCPU 0 read 4 bytes at guest-physical 0xd0000000"
    expect_err "guest fault: vCPU 0 wrote 4 bytes at guest-physical 0xd0000008"
    expect_err "nearest: memory 'guest_ram' at [0x0, 0x2000000)"
    expect_err "to fix it, either: (1) give the guest access to this address"
    ;;
  fault_strict)
    run --kernel "$guest" --memory 32M --cmdline fault --strict
    expect_status 1
    expect_err "guest fault: vCPU 0 read 4 bytes at guest-physical 0xd0000000"
    expect_err "--strict: stopping the VM"
    grep -qF "survived the fault" "$out" && fail "the guest ran on after a strict fault"
    ;;
  echo)
    printf 'ping\nq' >"$work/in"
    input=$work/in
    run --kernel "$guest" --memory 32M --cmdline echo
    expect_status 0
    expect_out "TEST-GUEST: echo ready"
    expect_out "ping"
    expect_out "TEST-GUEST: resetting"
    ;;
  triple)
    # --quiet: a triple fault is said even when only errors are logged.
    run --kernel "$guest" --memory 32M --cmdline triple --quiet
    expect_status 0
    expect_out "TEST-GUEST: triple fault"
    expect_err "vCPU 0: triple fault at"
    ;;
  output_stuck)
    # COM1 on a FIFO whose reader (this script, through fd 3) never reads: once the pipe is full,
    # vmm must still stop on SIGTERM at once, not wait for a reader in write().
    mkfifo "$work/fifo"
    exec 3<>"$work/fifo"
    "$vmm" --kernel "$guest" --memory 32M --cmdline output --serial "file:$work/fifo" \
      </dev/null >"$out" 2>"$err" &
    pid=$!  # vmm itself (no timeout wrapper), so that SIGKILL below reaches it
    # Wait until the pipe is full: until a non-blocking write of one byte of ours fails. The
    # guest fills it in a few dozen exits (4 KiB each).
    for _ in $(seq 200); do
      dd if=/dev/zero of=/dev/fd/3 bs=1 count=1 oflag=nonblock status=none 2>/dev/null || break
      sleep 0.1
    done
    kill -TERM "$pid"
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid"
      wait "$pid"
      fail "vmm did not stop within 2 s of SIGTERM while its serial output was not read"
    fi
    wait "$pid"
    status=$?
    expect_status 0
    expect_err "stopped by signal 15"
    waiting=$(timeout 1 cat <&3 | wc -c)
    [ "$waiting" -ge 65536 ] || fail "only $waiting bytes reached the FIFO: the pipe never filled up"
    ;;
  jail)
    # vmm --jail on this machine's /dev/kvm (pivot_root here; tests/integration/linux_jail.sh
    # covers a Linux guest with disk and network). Root only: the jail is built as root.
    [ "$(id -u)" -eq 0 ] || { echo "SKIP ($case): needs root"; exit 77; }
    mkdir "$work/jail"
    dd if=/dev/zero of="$work/disk.img" bs=1M count=1 status=none
    chown 65534:65534 "$work/disk.img"
    run --jail "$work/jail" --jail-uid 65534 --jail-netns new --kernel "$guest" --memory 32M \
      --cmdline "hello world" --disk "$work/disk.img" --serial "file:$work/serial.out"
    cat "$work/serial.out" >>"$out"
    expect_status 0
    expect_out "TEST-GUEST: hello, command line: hello world"
    expect_err "jail: the VM runs as pid"
    expect_err "guest stopped (reset)"
    [ -z "$(ls -A "$work/jail")" ] || fail "the jail's directory is not empty afterwards: $(ls -A "$work/jail")"
    [ "$(stat -c %u "$work/serial.out")" = 65534 ] || fail "the serial output is not the jail user's"
    # SIGTERM to vmm (the jail's supervisor) reaches the jailed VM, which stops cleanly.
    mkfifo "$work/in"
    exec 3<>"$work/in"
    "$vmm" --jail "$work/jail" --jail-uid 65534 --kernel "$guest" --memory 32M --cmdline echo \
      <&3 >"$out" 2>"$err" &
    pid=$!
    for _ in $(seq 100); do grep -qF "echo ready" "$out" && break; sleep 0.1; done
    expect_out "TEST-GUEST: echo ready"
    kill -TERM "$pid"
    wait "$pid"
    status=$?
    expect_status 0
    expect_err "stopped by signal 15"
    [ -z "$(ls -A "$work/jail")" ] || fail "the jail's directory is not empty after SIGTERM"
    ;;
  jail_vhost)
    # vmm --jail with a vhost-user disk from vmm-device: the socket must be one the jail's user
    # may connect to (refused in one line before the VM starts otherwise); then the jailed VM
    # connects from inside and negotiates with vmm-device. Root only, as for jail.
    [ "$(id -u)" -eq 0 ] || { echo "SKIP ($case): needs root"; exit 77; }
    # device_served PID ERRFILE SOCKET WHAT: vmm-device --once (PID, its stderr in ERRFILE)
    # ended with status 0 after a front-end connected on SOCKET.
    device_served() {
      wait "$1"
      local status=$?
      cat "$2" >>"$err"
      [ "$status" -eq 0 ] || fail "$4 exited $status"
      expect_err "vmm-device: front-end on $3: connected"
    }
    mkdir "$work/jail" "$work/run"
    dd if=/dev/zero of="$work/disk.img" bs=1M count=1 status=none
    "$vmm_device" --socket "$work/run/blk.sock" --disk "$work/disk.img" --once 2>"$work/dev.err" &
    dev=$!
    for _ in $(seq 100); do [ -S "$work/run/blk.sock" ] && break; sleep 0.1; done
    chmod 0755 "$work/run/blk.sock"
    run --jail "$work/jail" --jail-uid 65534 --jail-netns new --kernel "$guest" --memory 32M \
      --cmdline "hello world" --vhost-user "blk,socket=$work/run/blk.sock"
    expect_status 2
    expect_err "cannot connect to this socket: it needs write permission"
    [ "$(wc -l <"$err")" -eq 1 ] || fail "the refusal is more than one line"
    chown 65534:65534 "$work/run/blk.sock"
    run --jail "$work/jail" --jail-uid 65534 --jail-netns new --kernel "$guest" --memory 32M \
      --cmdline "hello world" --vhost-user "blk,socket=$work/run/blk.sock"
    expect_status 0
    expect_out "TEST-GUEST: hello, command line: hello world"
    expect_err "jail: the VM runs as pid"
    device_served "$dev" "$work/dev.err" "$work/run/blk.sock" "vmm-device --once"
    expect_err "the front-end closed the connection"
    [ -z "$(ls -A "$work/jail")" ] || fail "the jail's directory is not empty afterwards"
    # The other way round: vmm-device in a jail of its own (the disk image the only file in it,
    # as the jail's user; its socket at DIR/PATH on the host), vmm outside connects.
    mkdir "$work/device-jail"
    chown 65534:65534 "$work/disk.img"
    "$vmm_device" --jail "$work/device-jail" --jail-uid 65534 --jail-netns new \
      --socket "$work/run2/blk.sock" --disk "$work/disk.img" --once 2>"$work/dev2.err" &
    dev=$!
    sock="$work/device-jail$work/run2/blk.sock"
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
    run --kernel "$guest" --memory 32M --cmdline "hello world" --vhost-user "blk,socket=$sock"
    expect_status 0
    expect_out "TEST-GUEST: hello, command line: hello world"
    device_served "$dev" "$work/dev2.err" "$work/run2/blk.sock" "vmm-device --jail --once"
    expect_err "vmm-device: jail: the device runs as pid"
    [ -z "$(ls -A "$work/device-jail")" ] || fail "the device's jail directory is not empty afterwards"
    ;;
  bad_inputs)
    check() {  # check "message fragment" ARGS...: expects exit 2 and the message, nothing run
      local msg=$1; shift
      run "$@"
      [ "$status" -eq 2 ] || fail "vmm $* exited $status, expected 2"
      [ "$(wc -l <"$err")" -eq 1 ] || fail "vmm $* printed more than one line"
      expect_err "$msg"
      [ -s "$out" ] && fail "vmm $* started a guest"
      true
    }
    printf 'not a kernel at all\n' >"$work/tiny"
    yes 'not a kernel at all' | head -c 8192 >"$work/text"
    head -c 1000 "$guest" >"$work/truncated"
    truncate -s 20M "$work/big"
    check "--kernel $work/missing: No such file or directory" --kernel "$work/missing"
    check "--kernel $work: not a regular file" --kernel "$work"
    check "--kernel $work/text: not a bzImage" --kernel "$work/text"
    check "--kernel $work/tiny: is too small to be a bzImage" --kernel "$work/tiny"
    check "--kernel $work/truncated: " --kernel "$work/truncated"
    check "--cmdline: 3000 bytes is longer than" --kernel "$guest" --cmdline "$(head -c 3000 /dev/zero | tr '\0' x)"
    check "--initrd $work/big: initrd of " --kernel "$guest" --memory 32M --initrd "$work/big"
    check "kernel needs 1 MiB of RAM from 0x1000000 (init_size)" --kernel "$guest" --memory 16M
    check "--initrd $work/missing: No such file or directory" --kernel "$guest" --initrd "$work/missing"
    check "--memory: must be greater than zero" --kernel "$guest" --memory 0
    check "--memory: cannot parse 'lots'" --kernel "$guest" --memory lots
    check "--memory: 1048577 bytes is not a multiple of 1 MiB" --kernel "$guest" --memory 1048577
    check "is more than this host's" --kernel "$guest" --memory 64T
    check "--vcpus: must be at least 1" --kernel "$guest" --vcpus 0
    check "--vcpus: '2x' is not a number" --kernel "$guest" --vcpus 2x
    check "--jail-uid: '-5' is not a number" --kernel "$guest" --jail "$work" --jail-uid -5
    check "--vm: only with run or check FILE.system" --kernel "$guest" --vm other
    truncate -s 4096 "$work/s.img"
    check "--disk $work/s.img: $work/s.img is already used by --serial file:$work/s.img" --kernel "$guest" --disk "$work/s.img" --serial "file:$work/s.img"
    check "--serial: unknown backend 'bogus'" --kernel "$guest" --serial bogus
    check "--kernel is required" --cmdline x
    check "--seccomp: 'bogus' is not a mode; use off, log or kill" --kernel "$guest" --seccomp bogus
    check "--seccomp: 1 required off|log|kill missing" --kernel "$guest" --seccomp=
    check "--seccomp: 'KILL' is not a mode; use off, log or kill" --kernel "$guest" --seccomp KILL
    truncate -s 1000 "$work/odd.img"
    check "--disk $work/missing.img: image $work/missing.img: No such file or directory" --kernel "$guest" --disk "$work/missing.img"
    check "--disk $work: image $work: is a directory" --kernel "$guest" --disk "$work"
    check "--disk $work/odd.img: image $work/odd.img: size 1000 bytes is not a multiple of 512" --kernel "$guest" --disk "$work/odd.img"
    check "--disk $work/odd.img,bogus: unknown option 'bogus'" --kernel "$guest" --disk "$work/odd.img,bogus"
    disks=()
    for i in $(seq 1 17); do truncate -s 4096 "$work/d$i.img"; disks+=(--disk "$work/d$i.img,transport=mmio"); done
    check "--disk $work/d17.img,transport=mmio: no free interrupt line or device slot left for it (16 virtIO devices at most)" --kernel "$guest" "${disks[@]}"
    # PCI (the default here): device numbers 1 to 31 on bus 0.
    disks=()
    for i in $(seq 1 32); do truncate -s 4096 "$work/p$i.img"; disks+=(--disk "$work/p$i.img"); done
    check "--disk $work/p32.img: no PCI device number left for it (31 PCI devices at most)" --kernel "$guest" "${disks[@]}"
    # Refused once a disk's I/O thread exists, which waits for the vCPUs before its filter:
    # the teardown lets it go (no hang).
    check "kernel needs 1 MiB of RAM from 0x1000000 (init_size)" --kernel "$guest" --memory 16M --disk "$work/d1.img"
    check "--vfio 0000:ff:1f.7: no such PCI device on this host" --kernel "$guest" --disk "$work/d1.img" --vfio 0000:ff:1f.7
    check "--console bogus: unknown backend 'bogus'" --kernel "$guest" --console bogus
    check "--console none,port1=agent: port1 'agent': expected port1=NAME=BACKEND" --kernel "$guest" --console none,port1=agent
    check "--net tap=t0,mac=52:54:00:12:34: malformed MAC" --kernel "$guest" --net tap=t0,mac=52:54:00:12:34
    check "MAC 01:00:5e:00:00:01 is a multicast address" --kernel "$guest" --net tap=t0,mac=01:00:5e:00:00:01
    check "--net mac=52:54:00:12:34:56: missing tap=NAME" --kernel "$guest" --net mac=52:54:00:12:34:56
    check "--net tap=t0,mtu=20: MTU '20' is not a number from 68 to 65535" --kernel "$guest" --net tap=t0,mtu=20
    check "--net tap=a-name-much-too-long: TAP name 'a-name-much-too-long' is longer than 15 characters" --kernel "$guest" --net tap=a-name-much-too-long
    # Another architecture's machine options, refused by name (arch/machine_option.hpp).
    check "--gic v3: only AArch64 machines have a GIC; this vmm runs x86_64 guests" --kernel "$guest" --gic v3
    check "--dtb $work/tiny: only AArch64 and RISC-V machines boot with a device tree; this vmm runs x86_64 guests" --kernel "$guest" --dtb "$work/tiny"
    LIBVMM_KVM_DEVICE=$work/nokvm check "no such device: this host has no KVM" --kernel "$guest"
    if command -v setpriv >/dev/null && [ "$(id -u)" -eq 0 ]; then
      # As an unprivileged user, from copies it can reach (the build tree may be under /root).
      chmod 755 "$work"
      install -m 755 "$vmm" "$work/vmm"
      install -m 644 "$guest" "$work/guest.bzImage"
      run_as_nobody() { timeout 60 setpriv --reuid=65534 --regid=65534 --clear-groups "$work/vmm" "$@" </dev/null >"$out" 2>"$err"; status=$?; }
      run_as_nobody --kernel "$work/guest.bzImage"
      [ "$status" -eq 2 ] || fail "unprivileged vmm exited $status, expected 2"
      expect_err "permission denied"
    fi
    ;;
  seccomp_kill)
    # A thread that makes a call off its allow-list stops vmm at once with one line naming the
    # thread and the call (LIBVMM_SECCOMP_TEST_FORBIDDEN: core/seccomp.hpp). The default mode.
    for thread in vcpu0 "event loop"; do
      LIBVMM_SECCOMP_TEST_FORBIDDEN=$thread run --kernel "$guest" --memory 32M --cmdline hello -v
      if [ "$status" -eq 0 ] && grep -qF "seccomp: sanitizer build" "$err"; then
        echo "SKIP ($case): sanitizer builds run kill mode as log"; exit 77
      fi
      expect_status 159
      expect_err "vmm: seccomp: thread '$thread' made forbidden system call openat ("
      [ "$(grep -c "forbidden system call" "$err")" -eq 1 ] || fail "more than one seccomp line"
      grep -qF "opened /" "$err" && fail "the forbidden call went through"
      # A vCPU's filter, and so the call, come before its first guest instruction.
      [ "$thread" = vcpu0 ] && [ -s "$out" ] && fail "the guest ran"
    done
    # A disk's I/O thread loads its own filter when it starts (once the vCPUs exist).
    truncate -s 1M "$work/io.img"
    LIBVMM_SECCOMP_TEST_FORBIDDEN=blk-io0 run --kernel "$guest" --memory 32M --cmdline hello --disk "$work/io.img"
    expect_status 159
    expect_err "vmm: seccomp: thread 'blk-io0' made forbidden system call openat ("
    # The same with --vcpus 2: the second vCPU's own filter.
    LIBVMM_SECCOMP_TEST_FORBIDDEN=vcpu1 run --kernel "$guest" --memory 32M --cmdline hello --vcpus 2 --seccomp kill
    expect_status 159
    expect_err "vmm: seccomp: thread 'vcpu1' made forbidden system call openat ("
    ;;
  seccomp_modes)
    # log lets the call through (the kernel logs it); off loads no filter; each runs the guest.
    for mode in log off; do
      LIBVMM_SECCOMP_TEST_FORBIDDEN=vcpu0 run --kernel "$guest" --memory 32M --cmdline hello --seccomp=$mode
      expect_status 0
      expect_err "seccomp test: thread 'vcpu0' opened / (allowed)"
      expect_out "TEST-GUEST: resetting"
    done
    ;;
  *) echo "unknown case $case"; exit 2 ;;
esac
echo "PASS ($case)"
