# Debian guests (issue 14): Debian's own kernels (and root file systems) under vmm in the
# emulated KVM host.
add_test(NAME linux.debian COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_debian.sh $<TARGET_FILE:vmm>)
set_tests_properties(linux.debian PROPERTIES LABELS linux TIMEOUT 900 RUN_SERIAL ON)
