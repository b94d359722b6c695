add_test(NAME linux.pci COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_pci.sh $<TARGET_FILE:vmm>
  $<TARGET_FILE:devices_in_code>)
set_tests_properties(linux.pci PROPERTIES LABELS linux TIMEOUT 1200)
