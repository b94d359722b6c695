# The shared virtIO test kit (support/virtio_kit.*): guest memory, the driver's side of a split
# ring, an MMIO driver, a fake transport and interrupt line. A library, not a test: the virtIO
# unit tests link it, and so do the fuzzers (fuzz/CMakeLists.txt includes this file).
if(NOT TARGET libvmm_virtio_kit)
  add_library(libvmm_virtio_kit STATIC ${CMAKE_CURRENT_LIST_DIR}/support/virtio_kit.cpp)
  target_link_libraries(libvmm_virtio_kit PUBLIC libvmm)
  target_include_directories(libvmm_virtio_kit PUBLIC ${CMAKE_CURRENT_LIST_DIR}/..)
  target_compile_options(libvmm_virtio_kit PRIVATE ${LIBVMM_WARNINGS})
endif()
