# vhost-user with real back-ends (virtiofsd) in the emulated x86_64 host.
add_test(NAME linux.vhost COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_vhost.sh $<TARGET_FILE:vmm> x86_64
  $<TARGET_FILE:vmm-device>)
set_tests_properties(linux.vhost PROPERTIES LABELS linux TIMEOUT 1200)
