libvmm_unit_test(virtio_rng_tests ${CMAKE_CURRENT_LIST_DIR}/virtio_rng_test.cpp)
