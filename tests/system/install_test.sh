#!/usr/bin/env bash
# Installs libvmm from a build tree into a temporary prefix, builds examples/custom_vmm against
# it with find_package(libvmm), and runs the result with the test guest.
# Usage: install_test.sh BUILD_DIR SOURCE_DIR TEST_GUEST
set -euo pipefail
build=$1 source=$2 guest=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
cmake -S "$source/examples/custom_vmm" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_COMPILER="$(grep -m1 '^CMAKE_CXX_COMPILER:' "$build/CMakeCache.txt" | cut -d= -f2)" \
  >"$work/configure.log" || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" -j2 >"$work/build.log" || { cat "$work/build.log"; exit 1; }
# Without a usable /dev/kvm it says SKIP and exits 77 (the install and build above still ran).
"$source/tests/system/custom_vmm.sh" "$work/build/custom_vmm" "$guest"
