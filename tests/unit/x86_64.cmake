libvmm_unit_test(x86_64_tests
  ${CMAKE_CURRENT_LIST_DIR}/x86_64_linux_boot_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/x86_64_long_mode_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/x86_64_mptable_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/x86_64_acpi_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/x86_64_aml_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/x86_64_cpuid_test.cpp
)
