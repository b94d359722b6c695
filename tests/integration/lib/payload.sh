# Helpers for the scripts that run inside the emulated KVM host (tools/emuhost/emuhost), sourced
# by every run.sh that tests/integration/lib/host.sh writes (`payload_script`). busybox sh; cwd
# is /payload, which holds ./vmm, the guest kernel ($kernel: bzImage on x86_64, Image on
# aarch64 and riscv64) and initramfs.cpio.gz.
#
#   check NAME COMMAND...          runs COMMAND; prints "PASS: NAME" or "FAIL: NAME" and counts
#   wait_for FILE TEXT SECONDS     true once FILE contains TEXT, false after SECONDS
#   finish NAME FILES...           on failures, the end of each FILE; then "NAME: P passed,
#                                  F failed"; true if none failed (run.sh's last command)
#   guest VMM-ARGS...              ./vmm booting $kernel and initramfs.cpio.gz
#   boot NAME CMDLINE VMM-ARGS...  one guest run, 256 MiB, command line "console=$console
#                                  CMDLINE", stdin /dev/null, stdout /tmp/NAME.out, stderr
#                                  /tmp/NAME.err, ended by `stop`; sets $status and says how
#                                  long it took
#   start NAME COMMAND...          COMMAND in the background, stdin from the FIFO /tmp/NAME.in,
#                                  stdout /tmp/NAME.out, stderr /tmp/NAME.err; sets $pid
#   send NAME TEXT                 writes the line TEXT to /tmp/NAME.in; false after 10 s if
#                                  nothing reads it (the command has exited)
#   sandboxed                      true if the one running vmm has threads and each runs under
#                                  a seccomp filter (/proc/PID/task/*/status "Seccomp: 2": the
#                                  default --seccomp=kill)
#   stop                           waits for that command, at most $stop_limit seconds (420 if
#                                  unset): then stuck_report and it is stopped; sets $status
#   stop_within SECONDS            stop with that limit
#   await PID NAME SECONDS         waits for any process PID, at most SECONDS: then
#                                  stuck_report NAME PID and it is stopped; sets $status
#   stuck_report NAME PID WHY      "STUCK NAME:" lines on what a VMM that does not end is doing
#   near A B PERCENT               true if |A - B| <= B * PERCENT / 100
#   between A LO HI                true if LO <= A <= HI
#   tone_checks WAV OUT ERR [LABEL]  the checks of a guest that played the 2 s 440 Hz stereo
#                                  S16_LE 48 kHz tone with tests/integration/sound/aplay-tone
#                                  (or linux_sound.sh's guest) through vmm --sound wav:WAV: OUT
#                                  its console output, ERR vmm's stderr; ./wavtool measures WAV
#                                  (the file has that format, 2 s within one period, 440 Hz
#                                  within 1 %; aplay took 1.6-4 s beyond its own start-up:
#                                  paced). The checks are named "LABEL: ..." (default "sound");
#                                  the console output without CRs is left in /tmp/tone.guest
#   [FS_OPTIONS=,transport=pci|mmio] virtiofs_checks MIB VMM-ARGS...
#                                  a folder (/tmp/share) shared through ./virtiofsd with a guest
#                                  booted with --fs tag=hostshare (and VMM-ARGS) that runs
#                                  images/tests/fs: it mounts the tag, reads the host's file,
#                                  writes one the host reads, lists, renames, unlinks and copies
#                                  a file of MIB MiB (checksums compared on the host); then
#                                  virtiofsd is killed: vmm logs it and the guest goes on. False
#                                  (vmm and virtiofsd stopped) if the guest could not mount it
#   two_nic_boot TEST IRQ_PATH VMM-ARGS...
#                                  a guest booted as `boot info` with libvmm.test=TEST (which
#                                  runs tests/integration/lib/guest-net) and two NICs: tap0
#                                  (10.0.0.1, MAC 52:54:00:12:34:56) and tap1 (10.0.1.1, MAC
#                                  :57, vhost=on with 2 queue pairs over virtio-pci, a
#                                  multiqueue TAP vmm creates), a web server for both serving
#                                  1 MiB of random bytes; checks that each NIC pings its host
#                                  and fetches the 1 MiB intact, that vmm handed tap1's rings to
#                                  the kernel, both pairs' queue interrupts go straight to MSI-X
#                                  vectors (IRQ_PATH names how: "irqfds through the ITS") and
#                                  the driver chose both pairs on the control queue (VMM-ARGS
#                                  should give 2 vCPUs and -v)
#   bench_guest NAME TEST SECONDS COMMAND...
#                                  runs the VMM COMMAND (stdout and stderr /tmp/out.NAME) until
#                                  the guest's /init reports the end of its libvmm.test=TEST, or
#                                  SECONDS pass, then stops it (QEMU microvm does not exit on the
#                                  guest's reboot) and prints its "LIBVMM-GUEST: BENCH " lines
#                                  with NAME in place of that prefix; a guest that did not
#                                  finish gets "BENCH-WARNING" lines with the end of the
#                                  VMM's output, and a VMM that ignores SIGTERM is killed
#   bench_sampled NAME TEST SECONDS COMMS COMMAND...
#                                  bench_guest with sample_marks NAME COMMS beside it
#   sample_marks NAME COMMS        (beside bench_guest NAME, in the background) at each
#                                  "LIBVMM-GUEST: MARK begin JOB" and "MARK end JOB ops=N" line
#                                  of the guest (which then idles 1 s, so that the sampler's
#                                  lag does not move the window into the job), reads KVM's exit
#                                  counter (debugfs: the sum over live VMs: this one and
#                                  kvm-hold's, which never runs) and the CPU time of the processes named in COMMS
#                                  (space-separated, as in /proc/PID/comm): all of it, and the
#                                  part that is not guest time (utime + stime - guest_time: the
#                                  VMM's own work, without its vCPU threads' time in the
#                                  guest). Prints "NAME JOB exits=N cpu_ms=N vmm_cpu_ms=N ops=N
#                                  exits_per_op=X cpu_us_per_op=Y vmm_cpu_us_per_op=Z" per job,
#                                  "NAME JOB unsampled" if the VM was gone at its end mark;
#                                  returns at the guest's "MARK done". With sample_reasons=1
#                                  (the sourcing script's variable) each window also counts
#                                  kvm:kvm_exit by exit reason and kvm:kvm_msr by MSR and
#                                  direction (tracing hist triggers, counted in the kernel) and
#                                  prints "NAME JOB exits_by_reason_per_op REASON=X ..." and
#                                  "NAME JOB msr_exits_per_op MSR.r|w=X ..."
#   stop_process PID NAME          SIGTERM to a VMM or back-end (vmm-device, virtiofsd, ...)
#                                  and waits for it, at most 10 s: then one "BENCH-WARNING"
#                                  line and SIGKILL, so that a process that does not stop
#                                  cannot hold the run until emuhost's timeout
# shellcheck shell=sh disable=SC2034  # $kernel, $console, $status, $pid: for the sourcing script

case $(uname -m) in
  aarch64) kernel=Image console=ttyAMA0 ;;
  riscv64) kernel=Image console=ttyS0 ;;
  *) kernel=bzImage console=ttyS0 ;;
esac
passed=0 failed=0

check() {
  name=$1; shift
  if "$@"; then echo "PASS: $name"; passed=$((passed + 1)); else echo "FAIL: $name"; failed=$((failed + 1)); fi
}

# wait_for FILE TEXT SECONDS [PID]: until FILE holds TEXT; with PID, gives up as soon as that
# process has ended (a guest that stopped early fails at once instead of after SECONDS).
wait_for() { wait_for_grep -F "$@"; }

# wait_for_match FILE REGEX SECONDS [PID]: the same for a line matching REGEX (grep -E); for
# values a guest prints, which may be half-written when their start appears.
wait_for_match() { wait_for_grep -E "$@"; }

# wait_for_grep -F|-E FILE PATTERN SECONDS [PID]: the loop of both.
wait_for_grep() {
  wait_mode=$1; shift
  i=0
  while [ $i -lt $(($3 * 10)) ]; do
    grep -q "$wait_mode" -- "$2" "$1" 2>/dev/null && return 0
    if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then
      grep -q "$wait_mode" -- "$2" "$1" 2>/dev/null && return 0
      echo "wait_for: process $4 ended before '$2' appeared in $1"
      return 1
    fi
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

finish() {
  name=$1; shift
  if [ $failed -ne 0 ]; then for f in "$@"; do echo "---- $f"; tail -n 40 "$f" 2>/dev/null; done; fi
  echo "$name: $passed passed, $failed failed"
  [ $failed -eq 0 ]
}

guest() {
  ./vmm --kernel "$kernel" --initrd initramfs.cpio.gz "$@"
}

# grow_image IMG OLD_MIB NEW_MIB: IMG grown on the host from OLD_MIB to NEW_MIB of zeros, with
# LIBVMM-GREW-PAST-THE-END at its old end (the guest's tests/wait_to_grow reads it back there).
grow_image() {
  dd if=/dev/zero of="$1" bs=1M seek=$(($3 - 1)) count=1 conv=notrunc 2>/dev/null
  printf 'LIBVMM-GREW-PAST-THE-END' | dd of="$1" bs=1M seek="$2" conv=notrunc 2>/dev/null
}

# named_port_checks LOG OUT WHO: the console's port1 is on a pty, which its VMM or vmm-device
# named in LOG; the guest's tests/named_port finds the host end closed until this opens the
# pty, writes a line there and says in OUT what it read, and sees the host end close when the
# pty's last user leaves.
named_port_checks() {
  pts=$(sed -n 's|^.*--console port1: console on \(/dev/pts/[0-9]*\)$|\1|p' "$1" | head -n 1)
  check "$3 named port: on a pty ($pts)" [ -c "$pts" ]
  [ -c "$pts" ] || return 0
  check "$3 named port: closed for the guest while no program has the pty open" \
    wait_for "$2" "named port org.libvmm.test: its host end is closed" 60
  cat "$pts" >/tmp/port.out 2>/dev/null &
  port_reader=$!
  check "$3 named port: the pty opened, the guest's line goes through (PORT_OPEN) and reaches it" \
    wait_for /tmp/port.out "hello over the named port" 60
  printf 'ping-over-the-port\n' >"$pts"
  check "$3 named port: host input reaches the guest" \
    wait_for "$2" "named port got: ping-over-the-port" 60
  kill $port_reader 2>/dev/null
  check "$3 named port: the pty's last user left, the port's end of file in the guest (PORT_OPEN 0)" \
    wait_for "$2" "named port org.libvmm.test: the host end closed" 60
}

# link_checks SET OUT ERR WHO: the host's TAP is the guest's cable. `SET down`, then `SET up`
# sets the TAP's link; the guest, whose output is OUT (tests/link_state reports eth0's carrier
# at each change), sees its link follow (VIRTIO_NET_S_LINK_UP and a config interrupt), and the
# device's process, whose stderr is ERR, says so.
link_checks() {
  was_up=$(grep -c "eth0 carrier: 1" "$2")
  "$1" down
  check "$4: the host's TAP down, the guest's link goes down" wait_for "$2" "eth0 carrier: 0" 60
  check "$4: ... the device says so" wait_for "$3" "is down, and so is the guest's link" 10
  "$1" up
  i=0
  while [ "$(grep -c "eth0 carrier: 1" "$2")" -le "$was_up" ] && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
  done
  check "$4: the TAP up again, so is the guest's link" [ "$(grep -c "eth0 carrier: 1" "$2")" -gt "$was_up" ]
  check "$4: ... the device says so" wait_for "$3" "is up, and so is the guest's link" 10
}

# in_code_boot CMDLINE: boots examples/devices_in_code (./devices_in_code on $kernel) with a
# 1 MiB disk that starts with a pattern, the guest running tests/in_code with CMDLINE before
# that; checks what holds on every architecture (exit status, the pattern, the rng, the
# program's lines) and leaves /tmp/in_code.out and /tmp/code.err for the caller's checks of
# which transport each device got.
in_code_boot() {
  dd if=/dev/zero of=/tmp/code.img bs=1M count=1 2>/dev/null
  printf 'LIBVMM-DISK-MADE-IN-CODE' | dd of=/tmp/code.img conv=notrunc 2>/dev/null
  start code ./devices_in_code "$kernel" initramfs.cpio.gz /tmp/code.img "$1 libvmm.test=in_code"
  stop
  tr -d '\r' </tmp/code.out >/tmp/in_code.out
  check "in code: exit status 0 (got $status)" [ "$status" -eq 0 ]
  check "in code: the guest reads the program's pattern from its disk" \
    grep -qF "vda starts with: LIBVMM-DISK-MADE-IN-CODE" /tmp/in_code.out
  check "in code: the program's rng is the guest's hwrng, 64 KiB read" \
    sh -c 'grep -qF "hwrng is virtio_rng" /tmp/in_code.out && grep -qF "hwrng 64 KiB: 65536 bytes" /tmp/in_code.out'
  check "in code: the program printed where the devices went" \
    sh -c 'grep -qF "devices_in_code: virtio-blk at" /tmp/code.err && grep -qF "devices_in_code: virtio-rng at" /tmp/code.err'
}

# terminal_size_checks NAME OUT WHO: WHO's console runs on the terminal of start_on_terminal NAME
# 100 30; the guest's tests/terminal_size says in OUT hvc0's size, then its new size once this
# resizes the terminal to 132 x 43 (SIGWINCH; F_SIZE).
terminal_size_checks() {
  check "$3: hvc0 has the size of its terminal" wait_for "$2" "/dev/hvc0 size: 30 100" 60
  resize_terminal "$1" 132 43
  check "$3: the terminal resized, hvc0 follows" wait_for "$2" "/dev/hvc0 resized: 43 132" 60
}

near() { awk -v a="$1" -v b="$2" -v p="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d <= b * p / 100) }'; }
between() { awk -v a="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(a != "" && a >= lo && a <= hi) }'; }

tone_checks() {
  tone_label=${4:-sound}
  tr -d '\r' <"$2" >/tmp/tone.guest
  check "$tone_label: the guest's aplay -l lists the virtio-snd card" \
    grep -qE "LIBVMM-GUEST: aplay -l: card 0: .*virtio" /tmp/tone.guest
  check "$tone_label: aplay (and arecord) ran without errors" \
    sh -c '! grep -qE "LIBVMM-GUEST: a(play|record): " /tmp/tone.guest'
  ./wavtool info "$1" >/tmp/tone.info 2>&1 || true
  cat /tmp/tone.info
  check "$tone_label: the host file is S16_LE 48000 Hz stereo" \
    grep -qF "format=S16_LE rate=48000 channels=2 " /tmp/tone.info
  # 2 s = 96000 frames; one period of the guest's driver is at most 1/10 s (4800 frames).
  tone_frames=$(sed -n 's/.*frames=\([^ ]*\).*/\1/p' /tmp/tone.info | head -n 1)
  check "$tone_label: 2 s within one period ($tone_frames frames)" \
    between "$tone_frames" 91200 100800
  tone_freq=$(sed -n 's/.*freq=\([^ ]*\).*/\1/p' /tmp/tone.info | head -n 1)
  check "$tone_label: 440 Hz within 1 % ($tone_freq)" near "$tone_freq" 440 1
  # aplay's own start-up on the emulated CPU (loading libasound and its configuration) is
  # measured by an aplay of 10 ms into ALSA's null PCM and taken off: what is left is the time
  # the tone took to play through the device.
  tone_took=$(sed -n 's/^LIBVMM-GUEST: aplay took \([0-9]*\) cs, .*/\1/p' /tmp/tone.guest)
  tone_blip=$(sed -n 's/^LIBVMM-GUEST: aplay took .*, of 10 ms \([0-9]*\) cs$/\1/p' /tmp/tone.guest)
  tone_net=$((${tone_took:-0} - ${tone_blip:-0} + 1))
  echo "guest aplay wall time: ${tone_took:-?} cs for 2 s, ${tone_blip:-?} cs for 10 ms: $tone_net cs playing"
  # Paced: not drained at once (a device that does not pace ends within a few tenths of a
  # second), not stalled (4 s: the emulated host's own speed varies with what runs beside it).
  # The start-up subtracted is one other run's, which may take a few tenths longer: 1.87 s was
  # seen in CI for riscv64 with another suite beside it, hence 1.6 s, not 1.9.
  check "$tone_label: the guest's aplay took 1.6-4 s beyond its start-up ($tone_net cs)" \
    between "$tone_net" 160 400
  check "$tone_label: vmm logged its counters at the end" \
    grep -qE "virtio-snd \(wav .*\): [0-9]+ frames played, [0-9]+ underruns" "$3"
}

two_nic_boot() {
  net_test=$1 irq_path=$2
  shift 2
  tunctl -t tap0 >/dev/null && ip addr add 10.0.0.1/24 dev tap0 && ip link set tap0 up
  mkdir -p /tmp/www
  dd if=/dev/urandom of=/tmp/www/to-guest bs=64k count=16 2>/dev/null
  to_guest=$(sha256sum </tmp/www/to-guest | cut -d' ' -f1)
  httpd -f -p 8080 -h /tmp/www &  # both NICs' host sides
  httpd0=$!
  # tap1 is a multiqueue TAP vmm creates (busybox's tunctl makes none): its host side gets
  # 10.0.1.1 as soon as it exists, long before the guest's driver comes up. (Asked of ip, not
  # /sys/class/net, which shows the namespace sysfs was mounted in, not this one.)
  (
    i=0
    while ! ip link show tap1 >/dev/null 2>&1 && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    ip addr add 10.0.1.1/24 dev tap1 && ip link set tap1 up
  ) &
  boot info "quiet libvmm.test=$net_test" --net tap=tap0,mac=52:54:00:12:34:56 \
    --net tap=tap1,mac=52:54:00:12:34:57,vhost=on,num_queues=2,transport=pci "$@"
  kill $httpd0
  check "net: the guest has a NIC with the MAC given with --net" \
    grep -qF "LIBVMM-GUEST: first NIC: eth" /tmp/info.out
  check "net: the guest pings the host side of the TAP" \
    grep -qF "LIBVMM-GUEST: ping host ok" /tmp/info.out
  check "net: 1 MiB over TCP arrives intact" \
    grep -qF "LIBVMM-GUEST: to-guest sha256: $to_guest" /tmp/info.out
  check "vhost=on: the guest pings the host over the second NIC" \
    grep -qF "second NIC ping host ok" /tmp/info.out
  check "vhost=on: 1 MiB over TCP arrives intact on the second NIC" \
    grep -qF "second NIC to-guest sha256: $to_guest" /tmp/info.out
  check "vhost=on: vmm handed both rings to the kernel" \
    grep -qF "vhost-net1: started in the host kernel" /tmp/info.err
  check "vhost=on: the kernel signals both pairs' MSI-X vectors ($irq_path)" \
    grep -qF "vhost-net1: queue 3 interrupts go straight to MSI-X vector" /tmp/info.err
  check "vhost=on: the driver uses both queue pairs (VQ_PAIRS_SET on the control queue)" \
    grep -qF "vhost-net1: 2 of 2 queue pairs in use" /tmp/info.err
}

virtiofs_checks() {
  fs_mib=$1
  shift
  share=/tmp/share
  rm -rf $share
  mkdir -p $share
  echo "put there by the host" >$share/from-host.txt
  echo r >$share/rename-me
  echo d >$share/delete-me
  dd if=/dev/urandom of=$share/big.bin bs=1M count="$fs_mib" 2>/dev/null
  big=$(sha256sum <$share/big.bin | cut -d' ' -f1)
  ./virtiofsd --socket-path=/tmp/vfs.sock -o source=$share -o cache=auto -o sandbox=chroot \
    2>/tmp/vfsd.err &
  vfsd=$!
  i=0
  while [ ! -S /tmp/vfs.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  start fs ./vmm --kernel $kernel --initrd initramfs.cpio.gz --memory 256M \
    --cmdline "console=$console quiet libvmm.test=fs" --fs "tag=hostshare,socket=/tmp/vfs.sock${FS_OPTIONS:-}" "$@"
  check "virtio-fs: the guest mounts the tag" wait_for /tmp/fs.out "fs mounted" 240 $pid
  if ! grep -qF "fs mounted" /tmp/fs.out; then  # nothing else can work
    kill $pid $vfsd 2>/dev/null
    return 1
  fi
  check "virtio-fs: the guest reads the host's file" \
    wait_for /tmp/fs.out "fs host file: put there by the host" 30
  check "virtio-fs: the guest lists the folder" \
    wait_for /tmp/fs.out "fs ls: big.bin delete-me from-guest.txt from-host.txt rename-me" 30
  check "virtio-fs: the host reads the guest's file" \
    wait_for $share/from-guest.txt "written by the guest" 30
  check "virtio-fs: rename" wait_for /tmp/fs.out "fs renamed" 30
  check "virtio-fs: the host sees the rename" [ -f $share/renamed -a ! -e $share/rename-me ]
  check "virtio-fs: unlink" wait_for /tmp/fs.out "fs unlinked" 30
  check "virtio-fs: the host sees the unlink" [ ! -e $share/delete-me ]
  check "virtio-fs: $fs_mib MiB copy" wait_for /tmp/fs.out "fs copy sha256: $big" 600
  check "virtio-fs: the host's copy has the same checksum" \
    [ "$(sha256sum <$share/copy.bin | cut -d' ' -f1)" = "$big" ]
  grep "fs copied in" /tmp/fs.out || true
  check "virtio-fs: unmount" wait_for /tmp/fs.out "fs unmounted" 60
  # The back-end goes away: vmm says so, the guest runs on.
  kill $vfsd
  check "virtio-fs: vmm logs the back-end's hang-up" \
    wait_for /tmp/fs.err "virtio-fs: backend at /tmp/vfs.sock closed the connection" 30
  last=$(grep -c "fs alive" /tmp/fs.out)
  check "virtio-fs: the guest goes on" wait_for /tmp/fs.out "fs alive $((last + 3))" 60
  check "virtio-fs: vmm still runs" kill -0 $pid
  kill $pid
  await $pid fs 60
  return 0
}

boot() {
  name=$1 cmdline=$2; shift 2
  started=$(date +%s)
  guest --memory 256M --cmdline "console=$console $cmdline" "$@" \
    </dev/null >"/tmp/$name.out" 2>"/tmp/$name.err" &
  pid=$!
  stop
  echo "boot $name took $(($(date +%s) - started)) s"
}

start() {
  name=$1; shift
  rm -f "/tmp/$name.in"
  mkfifo "/tmp/$name.in"
  "$@" <>"/tmp/$name.in" >"/tmp/$name.out" 2>"/tmp/$name.err" &
  pid=$!
}

# start_on_terminal NAME COLS ROWS CMD...: as start, but CMD's stdin and stdout are a terminal of
# COLS x ROWS (a pty util-linux's script makes: the test copies it in as ./script), whose input
# comes from /tmp/NAME.in and whose output goes to /tmp/NAME.out; CMD's stderr goes to
# /tmp/NAME.err. CMD is a program or guest; no word of it may hold a single quote. CMD is
# exec'd, so that the signals script passes on (SIGTERM) reach it. resize_terminal NAME COLS ROWS
# then resizes that terminal: the kernel sends CMD SIGWINCH.
start_on_terminal() {
  name=$1 cols=$2 rows=$3; shift 3
  [ "$1" != guest ] || { shift; set -- ./vmm --kernel "$kernel" --initrd initramfs.cpio.gz "$@"; }
  {
    echo "readlink /proc/\$\$/fd/0 >/tmp/$name.tty"
    echo "stty cols $cols rows $rows || exit 125"
    printf 'exec '
    for word in "$@"; do printf "'%s' " "$word"; done
    echo "2>/tmp/$name.err"
  } >"/tmp/$name.sh"
  rm -f "/tmp/$name.in" "/tmp/$name.tty"
  mkfifo "/tmp/$name.in"
  ./script -qefc "sh /tmp/$name.sh" /dev/null <>"/tmp/$name.in" >"/tmp/$name.out" \
    2>"/tmp/$name.script.err" &
  pid=$!
}

resize_terminal() {
  stty -F "$(cat "/tmp/$1.tty")" cols "$2" rows "$3"
}

send() {
  # Opening a FIFO blocks until something reads it: if the VMM has exited, give up after 10 s
  # instead of hanging the suite until its emulated host times out.
  (echo "$2" >"/tmp/$1.in") &
  writer=$! i=0
  while kill -0 $writer 2>/dev/null; do
    if [ $i -ge 100 ]; then
      kill $writer 2>/dev/null
      echo "send $1: nothing reads /tmp/$1.in (has it exited?)" >&2
      return 1
    fi
    sleep 0.1; i=$((i + 1))
  done
  wait $writer
}

# vfio_bind ADDR: hands host PCI function ADDR to vfio-pci (its driver_override, then a probe).
vfio_bind() {
  echo vfio-pci >"/sys/bus/pci/devices/$1/driver_override"
  echo "$1" >/sys/bus/pci/drivers_probe
}

# vfio_slow_paths ADDR ERR: what vmm -v counted for passed-through ADDR in its log ERR: BAR
# accesses trapped, of them to the MSI-X table and PBA, interrupts through the event loop.
vfio_slow_paths() {
  sed -n "s/.*vfio $1: \([0-9]*\) BAR accesses trapped (\([0-9]*\) to the MSI-X table and PBA), \([0-9]*\) interrupts through the event loop/\1 \2 \3/p" "$2"
}

sandboxed() {
  vmm_pid=$(pidof vmm) || return 1
  threads=0
  for task in /proc/"$vmm_pid"/task/*; do
    threads=$((threads + 1))
    grep -qE '^Seccomp:[[:space:]]+2$' "$task/status" || { echo "unfiltered: $task ($(cat "$task/comm"))"; return 1; }
  done
  echo "$threads threads of vmm, each with its seccomp filter"
  [ "$threads" -ge 2 ]
}

stop() {
  stop_within "${stop_limit:-420}"
}

stop_within() {
  await "$pid" "$name" "$1"
}

# await PID NAME SECONDS: waits for process PID (whose files are /tmp/NAME.*), at most SECONDS:
# one still running then gets stuck_report and is stopped (two SIGTERMs: for vmm the second
# stops it at once; SIGKILL 10 s later), instead of holding the suite until the emulated host's
# own timeout. Sets $status.
await() {
  (
    t=0
    while [ $t -lt "$3" ]; do sleep 1; t=$((t + 1)); kill -0 "$1" 2>/dev/null || exit 0; done
    stuck_report "$2" "$1" "still running after $3 s"
    kill "$1" 2>/dev/null; sleep 1; kill "$1" 2>/dev/null
    t=0
    while kill -0 "$1" 2>/dev/null && [ $t -lt 10 ]; do sleep 1; t=$((t + 1)); done
    kill -9 "$1" 2>/dev/null
  ) &
  watchdog=$!
  wait "$1"
  status=$?
  kill "$watchdog" 2>/dev/null
  wait "$watchdog" 2>/dev/null
  return 0
}

# stuck_report NAME PID WHY: what a VMM that did not end was doing, as "STUCK NAME:" lines: its
# threads (state, kernel wait channel, system call, kernel stack), two seconds of its VMs' exits
# from KVM's trace events (each exit's reason and guest instruction pointer: a guest spinning,
# halted forever or exiting in a loop looks different), and the ends of /tmp/NAME.out and .err.
stuck_report() {
  echo "STUCK $1: pid $2 $3"
  # The process and its descendants (a shell function started in the background is a subshell
  # whose child is vmm).
  pids=" $2 "
  for level in 1 2 3; do
    for stat in /proc/[0-9]*/stat; do
      read -r p _ _ ppid _ <"$stat" 2>/dev/null || continue
      case "$pids" in *" $ppid "*) case "$pids" in *" $p "*) ;; *) pids="$pids$p " ;; esac ;; esac
    done
  done
  for p in $pids; do
    for task in /proc/"$p"/task/*; do
      [ -d "$task" ] || continue
      echo "STUCK $1: thread $p/${task##*/} ($(cat "$task/comm")) $(grep '^State' "$task/status" | tr -s '\t ' ' ')" \
        "wchan $(cat "$task/wchan" 2>/dev/null) syscall $(cut -d' ' -f1-3 "$task/syscall" 2>/dev/null)"
      sed "s/^/STUCK $1:   /" "$task/stack" 2>/dev/null | head -n 8
    done
  done
  tracing=/sys/kernel/tracing
  [ -d $tracing/events ] || mount -t tracefs tracefs $tracing 2>/dev/null || true
  if [ -d $tracing/events/kvm ]; then
    echo 0 >$tracing/tracing_on; : >$tracing/trace
    for e in kvm_exit kvm_entry kvm_inj_virq kvm_apic_ipi kvm_msi_set_irq kvm_set_irq kvm_userspace_exit \
        kvm_mmio kvm_pio kvm_hypercall; do
      [ ! -d $tracing/events/kvm/$e ] || echo 1 >$tracing/events/kvm/$e/enable
    done
    echo 1 >$tracing/tracing_on; sleep 2; echo 0 >$tracing/tracing_on
    grep -v '^#' $tracing/trace >/tmp/stuck.trace
    echo "STUCK $1: KVM events in 2 s: $(wc -l </tmp/stuck.trace); exits by vCPU, reason and guest address:"
    sed -n 's/.*kvm_exit: \(vcpu [0-9]*\) reason \([^ ]*\) rip \([^ ]*\).*/\1 \2 \3/p' /tmp/stuck.trace \
      | sort | uniq -c | sort -rn | head -n 12 | sed "s/^ */STUCK $1:   /"
    echo "STUCK $1: the last 20 events:"
    tail -n 20 /tmp/stuck.trace | sed "s/^ */STUCK $1:   /"
    echo 0 >$tracing/events/kvm/enable; : >$tracing/trace
  fi
  for f in "/tmp/$1.out" "/tmp/$1.err" "/tmp/out.$1"; do
    [ -f "$f" ] || continue
    echo "STUCK $1: the end of $f:"
    tr -d '\r' <"$f" | tail -n 15 | sed "s/^/STUCK $1:   /"
  done
}

bench_guest() {
  name=$1 test=$2 seconds=$3
  shift 3
  "$@" </dev/null >"/tmp/out.$name" 2>&1 &
  pid=$! t=0
  while kill -0 $pid 2>/dev/null && ! grep -q "test $test exit status" "/tmp/out.$name" \
      && [ $t -lt "$seconds" ]; do
    sleep 1; t=$((t + 1))
  done
  if ! grep -q "test $test exit status" "/tmp/out.$name"; then
    # Timed out, or the VMM ended first: say so, with the end of what it printed.
    echo "BENCH-WARNING $name: the guest did not finish $test ($t s; VMM $(kill -0 $pid 2>/dev/null \
      && echo running || echo gone)); the end of its output:"
    tr -d '\r' <"/tmp/out.$name" | grep -v -e 'LIBVMM-GUEST: BENCH ' -e 'LIBVMM-GUEST: MARK ' \
      | tail -n 8 | sed "s/^/BENCH-WARNING $name: /"
    ! kill -0 $pid 2>/dev/null || stuck_report "$name" $pid "did not finish $test in $seconds s"
  fi
  stop_process $pid "$name's VMM"
  tr -d '\r' <"/tmp/out.$name" | sed -n "s/^LIBVMM-GUEST: BENCH /$name /p"
}

# cpu_ticks PIDS: "ALL OWN" clock ticks of PIDS (utime + stime, and that less guest_time).
cpu_ticks() {
  for p in $1; do cut -d' ' -f14,15,43 /proc/$p/stat 2>/dev/null; done \
    | awk '{ a += $1 + $2; g += $3 } END { print a + 0, a - g + 0 }'
}
# thread_ticks PIDS: "COMM OWN" for each thread of PIDS (spaces in COMM as _; OWN: utime + stime
# less guest_time, in clock ticks). stat's fields are read after its comm's closing parenthesis.
thread_ticks() {
  for p in $1; do
    for t in /proc/$p/task/*; do
      c=$(tr ' ' _ <"$t/comm" 2>/dev/null) || continue
      s=$(sed 's/.*) //' "$t/stat" 2>/dev/null) || continue
      echo "$c $s"
    done
  done | awk '{ print $1, $13 + $14 - $42 }'
}
# The exit-reason histograms of sample_marks: "arm" (re)creates them at zero, "read NAME JOB OPS"
# prints them per operation (entries under 0.01 left out), "off" removes them. Each is an event
# and its keys, and the label its line gets:
#   kvm_exit by reason (x86_64: AMD SVM exit codes, the emulated x86_64 host's CPU being AMD;
#   arm64: the exception class of a trap; riscv64: the trap's scause; "irq" for an exit taken
#   for a host interrupt; named where known, else hex), kvm_msr by MSR and direction,
#   kvm_page_fault (nested page faults) by error code, kvm_mmio by direction and guest address,
#   kvm_pio by port and direction (the events an architecture's KVM lacks are left out).
#   A kernel without histogram triggers (Debian's riscv64 6.12 lacks CONFIG_HIST_TRIGGERS):
#   kvm_exit from the trace buffer, and KVM's own counters (traced_exits below).
exit_keys=exit_reason.hex
exit_names="60 intr 61 nmi 64 vintr 72 cpuid 78 hlt 7b ioio 7c msr 7f shutdown 81 vmmcall 400 npf \
401 avic_ipi 402 avic_unaccel"
case $(uname -m) in
  aarch64)
    exit_keys=ret,esr_ec.hex
    exit_names="2.1 wfx 2.16 hvc 2.17 smc 2.18 sysreg 2.20 iabt 2.24 dabt 1.0 serror" ;;
  riscv64)
    exit_keys=scause.hex
    # An interrupt's scause has the top bit set: irq.5 the host's timer, irq.9 external (with
    # the AIA also the host's IPIs), irq.c a guest interrupt file's for a vCPU not running.
    exit_names="2 illegal a sbi 14 iguestpf 15 lguestpf 16 virtinst 17 sguestpf irq.1 irq_soft \
irq.5 irq_timer irq.9 irq_ext irq.c irq_sgei" ;;
esac
reason_hist_specs="kvm_exit $exit_keys exits_by_reason_per_op
kvm_msr ecx.hex,write msr_exits_per_op
kvm_page_fault error_code.hex npf_by_error_code_per_op
kvm_mmio type,gpa.hex:size=4096 mmio_by_address_per_op
kvm_pio port.hex,rw:size=4096 pio_by_port_per_op"
# Without hist triggers: KVM's per-reason counters ("kvm_stats_per_op": every VM's; what they
# leave out, host interrupts and guest page faults among it, as "other"), and kvm_exit's
# events themselves, recorded in the trace buffer for the window and counted by scause into
# the lines a hist file has (the recording costs each exit some time: a diagnosis, not a figure).
exit_counters() {
  for c in /sys/kernel/debug/kvm/*exit*; do
    case ${c##*/} in "*exit*") ;; *) echo "${c##*/} $(cat "$c")" ;; esac
  done
}
traced_exits() {
  e=$T/events/kvm/kvm_exit
  case $1 in
    arm)
      exit_counters >/tmp/exit_counters.begin
      [ -f $e/enable ] || return 0
      echo 16384 >$T/buffer_size_kb
      : >$T/trace
      echo 1 >$e/enable ;;
    off) [ ! -f $e/enable ] || echo 0 >$e/enable ;;
    read)
      exit_counters | awk -v n="$2" -v j="$3" -v o="$4" '
        NR == FNR { begin[$1] = $2; next }
        { d = $2 - begin[$1]; if ($1 == "exits") { all = d; next }
          key = $1; sub(/_stat$/, "", key); sum += d
          per = o > 0 ? d / o : d; if (per >= 0.01) out = out sprintf(" %s=%.2f", key, per) }
        END { per = o > 0 ? (all - sum) / o : all - sum
              printf "%s %s kvm_stats_per_op%s other=%.2f\n", n, j, out, per }' \
        /tmp/exit_counters.begin -
      [ -f $e/enable ] || return 0
      echo 0 >$e/enable
      awk '/kvm_exit:/ && match($0, /SCAUSE:0x[0-9a-f]+/) {
             c[substr($0, RSTART + 9, RLENGTH - 9)]++ }
           END { for (k in c) printf "{ scause: %s } hitcount: %d\n", k, c[k] }' $T/trace \
        >/tmp/kvm_exit.hist
      : >$T/trace ;;
  esac
}
reason_hists() {
  T=/sys/kernel/tracing
  [ -d $T/events/kvm ] || mount -t tracefs tracefs $T 2>/dev/null
  [ -f $T/events/kvm/kvm_exit/hist ] || traced_exits "$@"
  echo "$reason_hist_specs" | while read -r ev keys label; do
    f=$T/events/kvm/$ev hist=$T/events/kvm/$ev/hist
    [ "$ev" != kvm_exit ] || [ -f "$hist" ] || hist=/tmp/kvm_exit.hist
    [ -f "$hist" ] || continue
    case $1 in
      arm | off)
        [ "$hist" = "$f/hist" ] || continue
        echo "!hist:keys=$keys" >"$f/trigger" 2>/dev/null
        [ "$1" = arm ] && echo "hist:keys=$keys" >"$f/trigger" ;;
      read)
        # A hist line: "{ exit_reason: 7c } hitcount: 12", "{ ecx: 6e0, write: 1 } ...".
        awk -v n="$2" -v j="$3" -v o="$4" -v ev="$ev" -v label="$label" -v names="$exit_names" '
          BEGIN { n_m = split(names, m, " ")
                  for (i = 1; i < n_m; i += 2) name[m[i]] = m[i + 1] }
          /^\{/ { line = $0; sub(/^\{ */, "", line); split(line, parts, /\} *hitcount: */)
                  k = split(parts[1], kv, ","); key = ""
                  for (i = 1; i <= k; i++) {
                    field = kv[i]; sub(/:.*/, "", field); gsub(/ /, "", field)
                    v = kv[i]; sub(/^[^:]*: */, "", v); gsub(/ /, "", v); sub(/^0x/, "", v)
                    if (field == "write" || field == "rw") v = v == 1 ? "w" : "r"
                    key = key (i > 1 ? "." : "") v }
                  # An exit for a host interrupt: ret 0 on arm64 (its class is stale), an scause
                  # with the interrupt bit on riscv64 (named by its cause).
                  if (ev == "kvm_exit" && key ~ /^0\./) key = "irq"
                  if (ev == "kvm_exit" && key ~ /^8000000000000/) { sub(/^80*/, "", key); key = "irq." key }
                  if (ev == "kvm_exit" && key in name) key = name[key]
                  if (!(key in count)) keys[++n_keys] = key
                  count[key] += parts[2] }
          END { for (i = 1; i <= n_keys; i++) {
                  per = o > 0 ? count[keys[i]] / o : count[keys[i]]
                  if (per >= 0.01) out = out sprintf(" %s=%.2f", keys[i], per) }
                printf "%s %s %s%s\n", n, j, label, out }' "$hist" ;;
    esac
  done
}
sample_marks() {
  name=$1 comms=$2 seen=0 out=/tmp/out.$1 exits=/sys/kernel/debug/kvm/exits pids=
  [ -r $exits ] || mount -t debugfs none /sys/kernel/debug 2>/dev/null
  while [ ! -f "$out" ]; do sleep 0.1; done
  while true; do
    n=$(grep -c 'LIBVMM-GUEST: MARK ' "$out")
    while [ "$seen" -lt "$n" ]; do
      seen=$((seen + 1))
      # shellcheck disable=SC2046  # the mark's words
      set -- $(grep 'LIBVMM-GUEST: MARK ' "$out" | sed -n "${seen}p" | tr -d '\r')
      if [ "$3" = "done" ]; then
        [ "${sample_reasons:-0}" = 1 ] && reason_hists off
        return 0
      fi
      if [ -z "$pids" ]; then
        for p in /proc/[0-9]*; do
          case " $comms " in *" $(cat $p/comm 2>/dev/null) "*) pids="$pids ${p#/proc/}" ;; esac
        done
      fi
      e=$(cat $exits 2>/dev/null || echo 0)
      # KVM's halt polling (every VM's vCPUs): time spent polling before a vCPU sleeps, counted
      # in its thread's system time, the "own" CPU below.
      hp=$(cat /sys/kernel/debug/kvm/halt_poll_success_ns /sys/kernel/debug/kvm/halt_poll_fail_ns \
        2>/dev/null | awk '{ s += $1 } END { printf "%d", s / 1000 }')
      ticks=$(cpu_ticks "$pids")
      all=${ticks% *} own=${ticks#* }
      thread_ticks "$pids" >"/tmp/threads.$name.$3"
      if [ "$3" = begin ]; then
        e0=$e a0=$all o0=$own hp0=$hp
        [ "${sample_reasons:-0}" = 1 ] && reason_hists arm
      elif [ "$e" -eq 0 ] || [ "$e" -lt "$e0" ]; then
        echo "$name $4 unsampled"
      else
        ops=0
        case $5 in ops=[0-9]*) ops=${5#ops=} ;; esac
        awk -v n="$name" -v j="$4" -v e=$((e - e0)) -v a=$((all - a0)) -v v=$((own - o0)) \
          -v o="$ops" -v h=$((hp - hp0)) 'BEGIN {
          printf "%s %s exits=%d cpu_ms=%d vmm_cpu_ms=%d ops=%d", n, j, e, a * 10, v * 10, o
          if (o > 0) printf " exits_per_op=%.2f cpu_us_per_op=%.1f vmm_cpu_us_per_op=%.1f",
            e / o, a * 10000 / o, v * 10000 / o
          if (o > 0) printf " halt_poll_us_per_op=%.1f", h / o
          print "" }'
        # Each thread's own CPU in the window, by name: where "own" goes.
        awk -v n="$name" -v j="$4" 'NR == FNR { b[$1] += $2; next } { e[$1] += $2 }
          END { printf "%s %s threads_own_ms", n, j
            for (c in e) if (e[c] - b[c] > 0) printf " %s=%d", c, (e[c] - b[c]) * 10
            print "" }' "/tmp/threads.$name.begin" "/tmp/threads.$name.end"
        [ "${sample_reasons:-0}" = 1 ] && reason_hists read "$name" "$4" "$ops"
      fi
    done
    sleep 0.1
  done
}
stop_process() {
  kill "$1" 2>/dev/null
  t=0
  while kill -0 "$1" 2>/dev/null && [ $t -lt 100 ]; do sleep 0.1; t=$((t + 1)); done
  if kill -0 "$1" 2>/dev/null; then
    echo "BENCH-WARNING $2 (pid $1) did not stop within 10 s of SIGTERM; killed"
    kill -9 "$1" 2>/dev/null
  fi
  wait "$1" 2>/dev/null
}

bench_sampled() {
  name=$1 test=$2 seconds=$3 comms=$4
  shift 4
  rm -f "/tmp/out.$name"
  sample_marks "$name" "$comms" &
  sampler=$!
  bench_guest "$name" "$test" "$seconds" "$@"
  # The sampler returns at the guest's last mark; a guest that failed before it leaves it waiting.
  t=0
  while kill -0 $sampler 2>/dev/null && [ $t -lt 30 ]; do sleep 0.1; t=$((t + 1)); done
  kill $sampler 2>/dev/null
  wait $sampler 2>/dev/null
}
