libvmm_unit_test(system_tests ${CMAKE_CURRENT_LIST_DIR}/system_description_test.cpp)
