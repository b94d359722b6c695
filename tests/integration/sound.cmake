add_test(NAME linux.sound COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_sound.sh $<TARGET_FILE:vmm>
  $<TARGET_FILE:vmm-device>)
set_tests_properties(linux.sound PROPERTIES LABELS linux TIMEOUT 900)
