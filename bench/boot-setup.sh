# Sourced by bench/boot.sh, bench/exits.sh and bench/distro-boot.sh (after
# tests/integration/lib/host.sh): builds what a boot comparison needs and starts the payload.
#   boot_payload ARCH   x86_64: build/gcc's vmm and bootmark, QEMU from this machine (microvm
#                       firmware in qemu-data/); aarch64: vmm and bootmark cross-built in
#                       $LIBVMM_ARM64_BUILD (default build/arm64), QEMU for arm64
#                       (arm64_qemu_root); riscv64: the same from $LIBVMM_RISCV64_BUILD
#                       (default build/riscv64) and riscv64_qemu_root, both VMMs on KVM's
#                       AIA. Sets $qemu (the QEMU command and machine, relative to /payload)
#                       and $where.
# shellcheck shell=bash
# shellcheck shell=bash disable=SC2034,SC2154  # sets variables for, and uses those of, its sourcing script

# The devices of a comparison with devices (bench/boot.sh's BOOT_DEVICES=1, bench/exits.sh's
# EXITS_DEVICES=1), x86_64: a disk on /tmp/disk.img (a 1 MiB image the payload makes in the
# emulated host), an entropy source and a console to a file. `vmm` with its default transport
# (virtio-pci), the same over virtio-mmio, and QEMU microvm with the same devices over its
# virtio-mmio, made alike where QEMU 7.2's defaults differ from ours: modern virtio-mmio
# (version 2, as ours; QEMU's force-legacy defaults to true) and a console of one port
# (max_ports=1: QEMU's default of 31 offers MULTIPORT, and the guest then sets up 64 queues,
# where ours, with its one port, offers 2 and no MULTIPORT).
boot_devices_vmm="--disk /tmp/disk.img --rng --console file:/tmp/hvc.out"
boot_devices_vmm_mmio="--disk /tmp/disk.img,transport=mmio --rng transport=mmio \
--console file:/tmp/hvc.out,transport=mmio"
boot_devices_qemu="-global virtio-mmio.force-legacy=false \
-drive id=d,file=/tmp/disk.img,format=raw,if=none -device virtio-blk-device,drive=d \
-device virtio-rng-device -chardev file,id=c,path=/tmp/hvcq.out \
-device virtio-serial-device,max_ports=1 -device virtconsole,chardev=c"

boot_payload() {
  local build qemu_root triplet
  if [ "$1" = x86_64 ]; then
    native_build
    build=$repo/build/gcc
    payload_new x86_64 "$build/tools/vmm/vmm"
    payload_binary "$build/bench/bootmark" /usr/bin/qemu-system-x86_64
    mkdir -p "$payload/qemu-data"
    cp /usr/share/qemu/{bios-microvm.bin,qboot.rom,linuxboot_dma.bin,pvh.bin} "$payload/qemu-data/"
    qemu='./qemu-system-x86_64 -L qemu-data -M microvm,acpi=off'
    where="emulated KVM host"
    return
  fi
  if [ "$1" = riscv64 ]; then
    build=${LIBVMM_RISCV64_BUILD:-$repo/build/riscv64}
    cross_build "$build" --arch riscv64 vmm bootmark
    qemu_root=$(riscv64_qemu_root)
    qemu='./qemu-system-riscv64 -M virt,aia=aplic-imsic'
    where="emulated riscv64 KVM host"
    triplet=riscv64-linux-gnu
  else
    build=${LIBVMM_ARM64_BUILD:-$repo/build/arm64}
    cross_build "$build" vmm bootmark
    qemu_root=$(arm64_qemu_root)
    qemu='./qemu-system-aarch64 -M virt,gic-version=3'
    where="emulated arm64 KVM host"
    triplet=aarch64-linux-gnu
  fi
  payload_new "$1" "$build/tools/vmm/vmm"
  payload_binary "$build/bench/bootmark"
  COPY_BINARY_LIBDIRS=$qemu_root/root/usr/lib/$triplet:$qemu_root/root/lib/$triplet \
    payload_binary "$qemu_root/root/usr/bin/qemu-system-$1"
}

# cross_bench_setup ARCH: what bench/net.sh and bench/block.sh --arch aarch64|riscv64 need: vmm
# cross-built in $LIBVMM_ARM64_BUILD or $LIBVMM_RISCV64_BUILD (default build/arm64-bench,
# build/riscv64-bench), the architecture's QEMU (arm64_qemu_root, riscv64_qemu_root) and its
# tools (tools/install-deps-arm64 or -riscv64 --bench). Sets $bench_vmm, $bench_qemu (the two
# binaries), $bench_build (vmm's build folder, for cross_build of more targets), $bench_qemu_root
# (QEMU's unpacked packages: on arm64 also qemu-storage-daemon and virtiofsd), $bench_tools (the
# tools' unpacked root; bench_tool NAME finds one there), how the guests boot there
# ($bench_console, $bench_vmm_machine: vmm's options for the interrupt controller,
# $bench_qemu_machine: QEMU's -M, $bench_qemu_comm: QEMU's process name as /proc/PID/comm has
# it), and exports COPY_BINARY_LIBDIRS with their library folders (for
# payload_binary and extra_binary).
cross_bench_setup() {
  local build qemu_root triplet cache=${LIBVMM_CACHE:-$HOME/.cache/libvmm}
  if [ "$1" = aarch64 ]; then
    build=${LIBVMM_ARM64_BUILD:-$repo/build/arm64-bench}
    cross_build "$build" vmm
    "$repo/tools/install-deps-arm64" --bench
    qemu_root=$(arm64_qemu_root)
    triplet=aarch64-linux-gnu bench_tools=$cache/arm64-bench
    bench_console=ttyAMA0 bench_vmm_machine="--gic v3" bench_qemu_machine=virt,gic-version=3
  else
    build=${LIBVMM_RISCV64_BUILD:-$repo/build/riscv64-bench}
    cross_build "$build" --arch riscv64 vmm
    "$repo/tools/install-deps-riscv64" --bench
    qemu_root=$(riscv64_qemu_root)
    triplet=riscv64-linux-gnu bench_tools=$cache/riscv64-bench
    bench_console=ttyS0 bench_vmm_machine="--irqchip aia" bench_qemu_machine=virt,aia=aplic-imsic
  fi
  bench_build=$build bench_qemu_root=$qemu_root/root
  bench_vmm=$build/tools/vmm/vmm bench_qemu=$bench_qemu_root/usr/bin/qemu-system-$1
  bench_qemu_comm=qemu-system-$1
  bench_qemu_comm=${bench_qemu_comm:0:15}  # the kernel keeps 15 characters of a name
  export COPY_BINARY_LIBDIRS=$bench_tools/usr/lib/$triplet:$bench_tools/lib/$triplet
  COPY_BINARY_LIBDIRS=$COPY_BINARY_LIBDIRS:$qemu_root/root/usr/lib/$triplet:$qemu_root/root/lib/$triplet
}
# bench_tool NAME: the path of NAME among cross_bench_setup's tools (Debian 12's packages and
# trixie's put some in different folders: ip in /bin or /usr/bin, dmsetup in /sbin or /usr/sbin).
bench_tool() {
  local dir
  for dir in bin sbin usr/bin usr/sbin; do
    if [ -x "$bench_tools/$dir/$1" ]; then echo "$bench_tools/$dir/$1"; return 0; fi
  done
  echo "$prog: no $1 in $bench_tools" >&2
  return 1
}

# unpack_debs DIR PACKAGES...: `apt-get download` PACKAGES and unpack them (never installed)
# into DIR/root, built aside and moved into place whole, its .stamp (the caller's) written last:
# a failed or interrupted fetch leaves no half a cache that later runs would trust.
unpack_debs() {
  local dir=$1 stamp=$2 work deb
  shift 2
  work=$dir.new
  rm -rf "$work"
  mkdir -p "$work/dl" || return 1
  (cd "$work/dl" && apt-get download -qq -o APT::Sandbox::User=root "$@" >&2) ||
    { echo "$prog: apt-get download failed" >&2; rm -rf "$work"; return 1; }
  for deb in "$work"/dl/*.deb; do
    dpkg-deb -x "$deb" "$work/root" || { echo "$prog: cannot unpack $deb" >&2; rm -rf "$work"; return 1; }
  done
  rm -rf "$work/dl"
  echo "$stamp" >"$work/.stamp"
  rm -rf "$dir"
  mv "$work" "$dir"
}

# The folder of QEMU for arm64: Debian's qemu-system-arm:arm64 and its dependencies, unpacked
# in the cache on first use and again when Debian's version changes; its binary is
# root/usr/bin/qemu-system-aarch64, its libraries in root/usr/lib/aarch64-linux-gnu and
# root/lib/aarch64-linux-gnu.
arm64_qemu_root() {
  local qemu_root pkgs stamp
  qemu_root=${LIBVMM_CACHE:-$HOME/.cache/libvmm}/arm64-qemu
  stamp=$(apt-cache policy qemu-system-arm:arm64 2>/dev/null | awk '/Candidate:/ { print $2 }')
  if [ -z "$stamp" ]; then
    # No apt lists (offline): a complete cache from before serves.
    [ -f "$qemu_root/.stamp" ] && [ -x "$qemu_root/root/usr/bin/qemu-system-aarch64" ] &&
      { echo "$qemu_root"; return 0; }
    echo "$prog: apt knows no qemu-system-arm for arm64" >&2
    return 1
  fi
  if [ "$(cat "$qemu_root/.stamp" 2>/dev/null)" != "$stamp" ] ||
    [ ! -x "$qemu_root/root/usr/bin/qemu-system-aarch64" ]; then
    echo "$prog: fetching qemu-system-arm:arm64 $stamp and its libraries" >&2
    # Everything it depends on, but the C runtime (ours is copied with vmm) and base packages.
    pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances --no-pre-depends qemu-system-arm:arm64 \
      | grep -E '^[a-z0-9].*:arm64$' | sort -u \
      | grep -vE '^(libc6|libgcc-s1|libstdc\+\+6|debconf|perl-base|dpkg|tar|coreutils|init-system-helpers|adduser|passwd|libpam|lsb-base|sensible-utils|base-files|util-linux|mount|systemd|libsystemd0|libcrypt1)') ||
      return 1
    # shellcheck disable=SC2086  # one word a package
    unpack_debs "$qemu_root" "$stamp" $pkgs || return 1
  fi
  echo "$qemu_root"
}

# The folder of QEMU for riscv64: Debian 13's qemu-system-riscv:riscv64 (Debian 12 has no
# riscv64 port) and its libraries, fetched through tools/install-deps-riscv64's private apt
# configuration and unpacked (never installed) in the cache, again when trixie's version
# changes; laid out as arm64_qemu_root's. Its C runtime is the sysroot's, copied with vmm.
riscv64_qemu_root() {
  local qemu_root pkgs stamp
  qemu_root=${LIBVMM_CACHE:-$HOME/.cache/libvmm}/riscv64-guest-qemu
  export APT_CONFIG=${LIBVMM_CACHE:-$HOME/.cache/libvmm}/riscv64-apt/apt.conf
  stamp=$(apt-cache policy qemu-system-riscv 2>/dev/null | awk '/Candidate:/ { print $2 }')
  [ -n "$stamp" ] || { echo "$prog: trixie has no qemu-system-riscv for riscv64" >&2; return 1; }
  if [ "$(cat "$qemu_root/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "$prog: fetching qemu-system-riscv:riscv64 $stamp and its libraries" >&2
    pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances qemu-system-riscv \
      | grep -E '^(lib|zlib1g)' | sort -u | grep -vE '^(libc6|libgcc-s1|libstdc\+\+6)$') ||
      return 1
    # shellcheck disable=SC2086  # one word a package
    unpack_debs "$qemu_root" "$stamp" qemu-system-riscv $pkgs || return 1
  fi
  echo "$qemu_root"
}
