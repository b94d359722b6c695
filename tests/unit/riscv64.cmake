libvmm_unit_test(riscv64_tests
  ${CMAKE_CURRENT_LIST_DIR}/riscv64_image_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/riscv64_fdt_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/riscv64_board_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/riscv64_plic_test.cpp
)
target_link_libraries(riscv64_tests PRIVATE libvmm::fdt)
target_compile_definitions(riscv64_tests PRIVATE
  LIBVMM_TEST_DATA_DIR="${CMAKE_CURRENT_LIST_DIR}/data")
