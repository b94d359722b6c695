# VirtIO: the MMIO transport, split virtqueues, the devices (block, console, network, entropy, sound)
# and the registry of device kinds (device_kinds.cpp, one *_kind.cpp per device).
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/virtqueue.cpp
  ${CMAKE_CURRENT_LIST_DIR}/device_status.cpp
  ${CMAKE_CURRENT_LIST_DIR}/mmio_transport.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pci_transport.cpp
  ${CMAKE_CURRENT_LIST_DIR}/device_kinds.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block_in_flight.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block_request.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block_kind.cpp
  ${CMAKE_CURRENT_LIST_DIR}/console.cpp
  ${CMAKE_CURRENT_LIST_DIR}/console_kind.cpp
  ${CMAKE_CURRENT_LIST_DIR}/net.cpp
  ${CMAKE_CURRENT_LIST_DIR}/net_control.cpp
  ${CMAKE_CURRENT_LIST_DIR}/net_kind.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rng.cpp
  ${CMAKE_CURRENT_LIST_DIR}/rng_kind.cpp
  ${CMAKE_CURRENT_LIST_DIR}/external_queue_device.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vhost_net.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vhost_user.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vhost_user_kind.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vhost_user_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sound.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sound_request.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sound_kind.cpp
)
