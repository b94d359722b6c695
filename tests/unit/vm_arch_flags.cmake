libvmm_unit_test(vm_arch_flags_tests ${CMAKE_CURRENT_LIST_DIR}/vm_arch_flags_test.cpp)
