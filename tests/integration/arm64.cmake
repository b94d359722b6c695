# arm64 guests in the emulated arm64 KVM host (tools/emuhost/emuhost --arch aarch64): vmm is
# cross-built for arm64 into its own build directory by the test itself.
add_test(NAME linux.arm64.gicv3
  COMMAND ${PROJECT_SOURCE_DIR}/tests/integration/arm64.sh ${CMAKE_BINARY_DIR}/arm64-cross gicv3)
add_test(NAME linux.arm64.gicv2
  COMMAND ${PROJECT_SOURCE_DIR}/tests/integration/arm64.sh ${CMAKE_BINARY_DIR}/arm64-cross gicv2)
set_tests_properties(linux.arm64.gicv3 linux.arm64.gicv2 PROPERTIES LABELS linux TIMEOUT 1500)
