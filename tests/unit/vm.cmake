libvmm_unit_test(vm_tests
  ${CMAKE_CURRENT_LIST_DIR}/vm_validate_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vm_arch_flags_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vm_msi_routes_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vm_pci_notifiers_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vm_memory_slots_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vm_host_events_test.cpp
)
# PciNotifyEventfds.StayOutOfKvm... builds a virtio-pci function on guest memory of the kit.
target_link_libraries(vm_tests PRIVATE libvmm_virtio_kit)
