# shellcheck shell=bash
# Sourced by the scripts that run guests on this machine's /dev/kvm: without a usable one (a
# machine without virtualization) there is nothing to run them on, so they are skipped, saying
# so (exit 77, each test's SKIP_RETURN_CODE), as the unit tests that need KVM are. The Linux
# tests run in the emulated KVM host and need none.
# Usage: need_kvm [WHAT]
need_kvm() {
  [ -r /dev/kvm ] && [ -w /dev/kvm ] && return 0
  echo "SKIP${1:+ ($1)}: this machine has no usable /dev/kvm"
  exit 77
}
