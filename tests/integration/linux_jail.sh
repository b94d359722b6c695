#!/usr/bin/env bash
# The jail (vmm --jail, docs/SECURITY.md "Sandbox: the jail"), inside the emulated KVM host, as
# root there: a Linux guest boots in a jail with a virtIO disk and a virtIO network device on a
# TAP the jail creates in a network namespace this test makes (no traffic leaves it), its frames
# moved by the host kernel's vhost-net (vhost=on: /dev/vhost-net in the jail), and a
# virtIO console on a Unix socket. While the guest runs, the test looks at the jailed process
# from outside: its root holds exactly the files the VM needs, it is uid/gid 1000 with no
# capabilities in any set and no_new_privs, PID 1 of its own PID namespace, in its own mount,
# IPC and UTS namespaces and in the given network namespace. The guest reads and writes its
# disk and pings the host. Afterwards the jail's directory is empty and the TAP gone. Then bad
# input: one line, exit status 2.
# Usage: linux_jail.sh VMM
set -euo pipefail
vmm=$1
# shellcheck source=tests/integration/lib/host.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/host.sh"

# The guest's side, as /tests/jail in its initramfs.
extra=$work/guest-extra
mkdir -p "$extra/tests"
cat >"$extra/tests/jail" <<'EOS'
#!/bin/sh
say() { echo "LIBVMM-GUEST: $*"; }
say "vda says: $(dd if=/dev/vda bs=32 count=1 2>/dev/null)"
if printf 'written-in-the-jail' | dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null; then
  say "vda write ok"
fi
ip link set lo up
ip link set eth0 up && ip addr add 10.0.0.2/24 dev eth0
if ping -c 3 -W 10 10.0.0.1 >/dev/null 2>&1; then say "ping host ok"; else say "ping host failed"; fi
say "jail guest ready"
i=0
until timeout 10 wget -q -O /dev/null http://10.0.0.1:8080/done 2>/dev/null; do
  sleep 1; i=$((i + 1)); [ $i -lt 300 ] || break
done
say "jail guest done"
EOS
chmod +x "$extra/tests/jail"

payload_new x86_64 "$vmm" --extra "$extra"
payload_binary "$(command -v ip)" "$(command -v setpriv)"

payload_script run.sh <<'EOS'
# Runs inside the emulated host, as root, cwd /payload.
ns=libvmm-jail jail=/tmp/jail
inns() { ./ip netns exec $ns "$@"; }
./ip netns add $ns || { echo "cannot create a network namespace"; exit 1; }
inns ./ip link set lo up
mkdir -p $jail /tmp/jail-disk /tmp/jail-out /www
dd if=/dev/zero of=/tmp/jail-disk/vda.img bs=1M count=4 2>/dev/null
printf 'disk-marker-0123456789abcdef' | dd of=/tmp/jail-disk/vda.img conv=notrunc 2>/dev/null
chown -R 1000:1000 /tmp/jail-disk
# The initrd in the console socket's directory: the directory's own mount must not hide it
# (it did when mounted after the files: an empty initrd).
mkdir -p /run/jailvm && cp initramfs.cpio.gz /run/jailvm/

./vmm --jail $jail --jail-uid 1000 --jail-netns $ns --kernel bzImage --initrd /run/jailvm/initramfs.cpio.gz \
  --memory 160M --cmdline "console=ttyS0 quiet libvmm.test=jail" \
  --serial file:/tmp/jail-out/serial.log --disk /tmp/jail-disk/vda.img --net tap=tap0,vhost=on \
  --console socket:/run/jailvm/console.sock </dev/null >/tmp/jail.stdout 2>/tmp/jail.err &
outer=$!
# The jail's supervisor makes tap0 in the namespace; give the host's end an address.
i=0
until inns ./ip link show tap0 >/dev/null 2>&1 || [ $i -ge 600 ]; do sleep 0.1; i=$((i + 1)); done
check "the jail created tap0 in the network namespace" inns ./ip link show tap0
if [ $failed -ne 0 ]; then  # nothing else can work: say why now
  kill $outer 2>/dev/null
  wait $outer
  ./ip netns delete $ns
  finish linux_jail /tmp/jail.err /tmp/jail-out/serial.log
  exit 1
fi
inns ./ip addr add 10.0.0.1/24 dev tap0
inns ./ip link set tap0 up
inns httpd -p 10.0.0.1:8080 -h /www
check "the guest boots in the jail and pings the host" wait_for /tmp/jail-out/serial.log "jail guest ready" 300
pid=$(sed -n 's/.*jail: the VM runs as pid \([0-9]*\) .*/\1/p' /tmp/jail.err)
check "vmm says which process is jailed" [ -n "$pid" ]
pid=${pid:-0}
status_is() { grep -qx "$1:[[:space:]]*$2" /proc/$pid/status; }
check "jailed: uid 1000 (real, effective, saved, fs)" status_is Uid "1000.1000.1000.1000"
check "jailed: gid 1000" status_is Gid "1000.1000.1000.1000"
check "jailed: no supplementary groups" status_is Groups ""
for set in CapInh CapPrm CapEff CapBnd CapAmb; do
  check "jailed: $set empty" status_is $set 0000000000000000
done
check "jailed: no_new_privs" status_is NoNewPrivs 1
check "jailed: PID 1 of its own PID namespace" status_is NSpid "$pid.1"
for n in mnt pid ipc uts; do
  check "jailed: its own $n namespace" [ "$(readlink /proc/$pid/ns/$n)" != "$(readlink /proc/self/ns/$n)" ]
done
check "jailed: in network namespace $ns" [ "$(readlink /proc/$pid/ns/net)" = "$(inns readlink /proc/self/ns/net)" ]
# Everything the process can see: exactly the files its VM needs (/proc: its own processes only).
(cd /proc/$pid/root && find . -path ./proc -prune -o -print | sort) >/tmp/jail.files
cat >/tmp/jail.expected <<'EOF'
.
./dev
./dev/kvm
./dev/net
./dev/net/tun
./dev/vhost-net
./payload
./payload/bzImage
./run
./run/jailvm
./run/jailvm/console.sock
./run/jailvm/initramfs.cpio.gz
./tmp
./tmp/jail-disk
./tmp/jail-disk/vda.img
./tmp/jail-out
./tmp/jail-out/serial.log
EOF
check "jailed: sees only the files its VM needs" cmp -s /tmp/jail.files /tmp/jail.expected
check "jailed: its /proc lists its own process, nothing of the system" \
  [ "$(ls /proc/$pid/root/proc | tr '\n' ' ')" = "1 self thread-self " ]
check "jailed: its root is read-only" sh -c "! touch /proc/$pid/root/x 2>/dev/null"
check "jailed: its cwd is /payload" [ "$(readlink /proc/$pid/cwd)" = /payload ]
check "the console socket is in the jail's directory on the host" [ -S $jail/run/jailvm/console.sock ]
touch /www/done
wait $outer; status=$?
tr -d '\r' </tmp/jail-out/serial.log >/tmp/jail.out
check "the guest read its disk" grep -qF "LIBVMM-GUEST: vda says: disk-marker-0123456789abcdef" /tmp/jail.out
check "the guest wrote its disk" sh -c 'dd if=/tmp/jail-disk/vda.img bs=512 skip=1 count=1 2>/dev/null | grep -q written-in-the-jail'
check "the guest pinged the host through the TAP" grep -qF "LIBVMM-GUEST: ping host ok" /tmp/jail.out
check "vmm exit status 0 after the guest rebooted" [ "$status" -eq 0 ]
check "the jail's directory is empty again" sh -c "[ -z \"\$(ls -A $jail)\" ]"
check "the TAP the jail created is gone" sh -c "! ./ip netns exec $ns ./ip link show tap0 2>/dev/null"

# Bad input: one line naming the flag or file (besides "jail: the VM runs as pid N" when the
# jail was built before the problem showed), exit status 2; and nothing left behind.
bad() {  # bad "message fragment" COMMAND...
  msg=$1; shift
  "$@" --kernel bzImage --serial none </dev/null >/dev/null 2>/tmp/bad.all
  st=$?
  grep -v "jail: the VM runs as pid" /tmp/bad.all >/tmp/bad.err
  [ "$st" -eq 2 ] && [ "$(wc -l </tmp/bad.err)" -eq 1 ] && grep -qF -- "$msg" /tmp/bad.err \
    || { echo "exit $st: $(cat /tmp/bad.err)"; return 1; }
}
check "not root" bad "--jail: needs root" ./setpriv --reuid=1000 --regid=1000 --clear-groups ./vmm --jail $jail --jail-uid 1000
check "no --jail-uid" bad "--jail: needs --jail-uid N" ./vmm --jail $jail
check "uid 0" bad "--jail-uid 0: the VM must run as a user other than root" ./vmm --jail $jail --jail-uid 0
check "a missing directory" bad "--jail /tmp/nosuchdir: No such file or directory" ./vmm --jail /tmp/nosuchdir --jail-uid 1000
touch $jail/leftover
check "a directory that is not empty" bad "--jail $jail: not empty" ./vmm --jail $jail --jail-uid 1000
rm $jail/leftover
check "a missing network namespace" bad "--jail-netns nosuchns: no such network namespace" ./vmm --jail $jail --jail-uid 1000 --jail-netns nosuchns
check "a pty" bad "--console pty: pty: not in a jail" ./vmm --jail $jail --jail-uid 1000 --console pty
check "--net with a new network namespace" bad "--jail-netns new: TAP 'tap0' would reach nothing" ./vmm --jail $jail --jail-uid 1000 --jail-netns new --net tap=tap0
dd if=/dev/zero of=/tmp/root-only.img bs=1M count=1 2>/dev/null
chmod 600 /tmp/root-only.img
check "a disk image the jail's user cannot open" bad "/tmp/root-only.img: Permission denied" ./vmm --jail $jail --jail-uid 1000 --disk /tmp/root-only.img
check "nothing is left in the jail's directory after the refusals" [ -z "$(ls -A $jail)" ]
./ip netns delete $ns
finish linux_jail /tmp/jail.err /tmp/jail.out /tmp/jail.files /tmp/bad.err
EOS
run_payload --timeout 900
