# RISC-V descriptions checked for riscv64 on this machine (vmm check --arch riscv64), whatever
# its architecture: the example system's layout and the one-line refusals.
add_test(NAME system.riscv64_check
  COMMAND ${PROJECT_SOURCE_DIR}/tests/system/riscv64_check.sh $<TARGET_FILE:vmm>)
set_tests_properties(system.riscv64_check PROPERTIES LABELS unit TIMEOUT 60)

# The emulated riscv64 KVM host (tools/emuhost/emuhost --arch riscv64), in one boot.
add_test(NAME emuhost.riscv64 COMMAND ${PROJECT_SOURCE_DIR}/tests/integration/emuhost_riscv64.sh)
set_tests_properties(emuhost.riscv64 PROPERTIES LABELS linux TIMEOUT 900)

# riscv64 guests in the emulated riscv64 KVM host, in one boot of an AIA host and a short one of
# a PLIC host (tests/integration/riscv64.sh): vmm is cross-built for riscv64 into its own build
# directory by the test itself.
add_test(NAME linux.riscv64
  COMMAND ${PROJECT_SOURCE_DIR}/tests/integration/riscv64.sh ${CMAKE_BINARY_DIR}/riscv64-cross)
set_tests_properties(linux.riscv64 PROPERTIES LABELS linux TIMEOUT 2400)
