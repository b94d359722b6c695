# The jail (vmm --jail): a Linux guest with disk and network in a jail, inspected from outside.
add_test(NAME linux.jail COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_jail.sh $<TARGET_FILE:vmm>)
set_tests_properties(linux.jail PROPERTIES LABELS linux TIMEOUT 1200)
