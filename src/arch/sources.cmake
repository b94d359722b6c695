# What the architectures share (src/arch/*.cpp): built for every architecture. Each
# architecture's own folder has its own list.
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/virtio_mmio_fdt.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pci_ecam_fdt.cpp
  ${CMAKE_CURRENT_LIST_DIR}/machine_options.cpp
  ${CMAKE_CURRENT_LIST_DIR}/board.cpp
  ${CMAKE_CURRENT_LIST_DIR}/device_tree_options.cpp
  ${CMAKE_CURRENT_LIST_DIR}/dtb_boot.cpp
)
