# RISC-V descriptions checked for riscv64 on this machine (vmm check --arch riscv64), whatever
# its architecture: the example system's layout and the one-line refusals.
add_test(NAME system.riscv64_check
  COMMAND ${PROJECT_SOURCE_DIR}/tests/system/riscv64_check.sh $<TARGET_FILE:vmm>)
set_tests_properties(system.riscv64_check PROPERTIES LABELS unit TIMEOUT 60)
