# PCI: configuration space, MSI and MSI-X, the host bridge (ECAM, 0xCF8/0xCFC, BAR windows).
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/config_space.cpp
  ${CMAKE_CURRENT_LIST_DIR}/msi.cpp
  ${CMAKE_CURRENT_LIST_DIR}/msix.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pci_function.cpp
  ${CMAKE_CURRENT_LIST_DIR}/host_bridge.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vfio.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vfio_device_file.cpp
)
