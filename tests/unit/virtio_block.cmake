libvmm_unit_test(virtio_block_tests ${CMAKE_CURRENT_LIST_DIR}/virtio_block_test.cpp)
