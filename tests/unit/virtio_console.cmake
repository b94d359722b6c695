libvmm_unit_test(virtio_console_tests
  ${CMAKE_CURRENT_LIST_DIR}/virtio_console_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/backends_socket_pty_test.cpp
)
target_link_libraries(virtio_console_tests PRIVATE libvmm_virtio_kit)
