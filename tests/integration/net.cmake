add_test(NAME linux.net COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_net.sh $<TARGET_FILE:vmm>)
set_tests_properties(linux.net PROPERTIES LABELS linux TIMEOUT 900)
