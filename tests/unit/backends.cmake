libvmm_unit_test(backends_tests
  ${CMAKE_CURRENT_LIST_DIR}/backends_escape_filter_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/backends_factory_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/backends_file_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/backends_input_flow_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/backends_socket_pty_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/backends_stdio_test.cpp
)
