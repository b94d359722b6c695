libvmm_unit_test(system_tests
  ${CMAKE_CURRENT_LIST_DIR}/system_description_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/system_plan_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/system_microkit_test.cpp)
target_compile_definitions(system_tests PRIVATE LIBVMM_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
