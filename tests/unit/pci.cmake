libvmm_unit_test(pci_tests
  ${CMAKE_CURRENT_LIST_DIR}/pci_config_space_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pci_msi_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pci_msix_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pci_host_bridge_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pci_vfio_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pci_vfio_device_test.cpp
)
