target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/virtqueue.cpp
  ${CMAKE_CURRENT_LIST_DIR}/mmio_transport.cpp
)
