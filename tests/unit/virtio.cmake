libvmm_unit_test(virtio_tests
  ${CMAKE_CURRENT_LIST_DIR}/virtio_virtqueue_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_mmio_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_pci_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_device_kind_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_block_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_block_iothread_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_block_in_flight_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_console_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_net_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_net_txthread_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_rng_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_vhost_user_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_vhost_net_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_vhost_user_backend_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/virtio_sound_test.cpp
)
target_link_libraries(virtio_tests PRIVATE libvmm_virtio_kit libvmm_vhost_abi_c)
# The kernel's vhost ABI as its C headers give it (C++ cannot include them).
add_library(libvmm_vhost_abi_c STATIC ${CMAKE_CURRENT_LIST_DIR}/support/vhost_abi.c)
target_compile_options(libvmm_vhost_abi_c PRIVATE -Wall -Wextra)
if(ALSA_FOUND)
  target_compile_definitions(virtio_tests PRIVATE LIBVMM_TEST_ALSA)  # the alsa sound backend
endif()
