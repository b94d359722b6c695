libvmm_unit_test(jail_tests
  ${CMAKE_CURRENT_LIST_DIR}/jail_plan_test.cpp)
