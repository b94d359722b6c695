libvmm_unit_test(vm_tests ${CMAKE_CURRENT_LIST_DIR}/vm_validate_test.cpp)
