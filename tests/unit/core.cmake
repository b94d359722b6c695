libvmm_unit_test(core_tests
  ${CMAKE_CURRENT_LIST_DIR}/core_guest_memory_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/core_bus_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/core_event_loop_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/core_io_thread_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/core_size_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/core_fault_report_test.cpp
)
