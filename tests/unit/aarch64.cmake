libvmm_unit_test(aarch64_tests
  ${CMAKE_CURRENT_LIST_DIR}/aarch64_image_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/aarch64_fdt_test.cpp
)
target_link_libraries(aarch64_tests PRIVATE libvmm::fdt)
target_compile_definitions(aarch64_tests PRIVATE
  LIBVMM_TEST_DATA_DIR="${CMAKE_CURRENT_LIST_DIR}/data")
