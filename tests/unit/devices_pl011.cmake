libvmm_unit_test(devices_pl011_tests ${CMAKE_CURRENT_LIST_DIR}/devices_pl011_test.cpp)
