target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/virtqueue.cpp
  ${CMAKE_CURRENT_LIST_DIR}/mmio_transport.cpp
  ${CMAKE_CURRENT_LIST_DIR}/device_kinds.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block_kind.cpp
  ${CMAKE_CURRENT_LIST_DIR}/console_kind.cpp
  ${CMAKE_CURRENT_LIST_DIR}/net_kind.cpp
)
