# Debian guests (issue 14): Debian's own kernels (and root file systems) under vmm in the
# emulated KVM host.
add_test(NAME linux.debian COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_debian.sh $<TARGET_FILE:vmm>)
set_tests_properties(linux.debian PROPERTIES LABELS linux TIMEOUT 900)
# The Debian root file system of images/build-rootfs (systemd), booted with Debian's kernel and
# initrd: login, is-system-running, networkd, poweroff and SIGTERM, a clean file system after each.
add_test(NAME linux.debian_rootfs
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_rootfs.sh x86_64 $<TARGET_FILE:vmm>)
# Label rootfs as well: the two systemd suites are the longest (`ctest -L rootfs` runs them,
# `-LE rootfs` everything else).
set_tests_properties(linux.debian_rootfs PROPERTIES LABELS "linux;rootfs" TIMEOUT 2700)
# The same on AArch64 (systemctl poweroff, then the power key on SIGTERM), in the emulated
# arm64 host; vmm cross-built into the directory the linux.arm64.* suites share.
add_test(NAME linux.arm64.debian_rootfs
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_rootfs.sh aarch64 ${CMAKE_BINARY_DIR}/arm64-cross)
set_tests_properties(linux.arm64.debian_rootfs PROPERTIES LABELS "linux;rootfs" TIMEOUT 2700)
