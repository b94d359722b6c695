target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/vm.cpp
  ${CMAKE_CURRENT_LIST_DIR}/device_plan.cpp
  ${CMAKE_CURRENT_LIST_DIR}/host_events.cpp
  ${CMAKE_CURRENT_LIST_DIR}/msi_routes.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pci_notifiers.cpp
  ${CMAKE_CURRENT_LIST_DIR}/memory_slots.cpp)
