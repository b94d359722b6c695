# VirtIO: the MMIO transport, split virtqueues, and the block, console and network devices.
include(${PROJECT_SOURCE_DIR}/cmake/libvmmDependencies.cmake)  # PkgConfig::LIBURING
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/virtqueue.cpp
  ${CMAKE_CURRENT_LIST_DIR}/mmio_transport.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block_uring.cpp
  ${CMAKE_CURRENT_LIST_DIR}/console.cpp
  ${CMAKE_CURRENT_LIST_DIR}/net.cpp
)
target_link_libraries(libvmm PRIVATE PkgConfig::LIBURING)  # the block device's io=io_uring
