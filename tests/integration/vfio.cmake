add_test(NAME linux.vfio COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_vfio.sh $<TARGET_FILE:vmm>)
set_tests_properties(linux.vfio PROPERTIES LABELS linux TIMEOUT 1800)
