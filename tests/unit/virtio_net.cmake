libvmm_unit_test(virtio_net_tests ${CMAKE_CURRENT_LIST_DIR}/virtio_net_test.cpp)
