# The ASan + UBSan build's vmm in the emulated host (label linux-sanitized, not linux: only a
# LIBVMM_SANITIZE build registers it, and tools/run-tests runs it from that build).
if(LIBVMM_SANITIZE)
  add_test(NAME linux.sanitized
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/linux_sanitized.sh $<TARGET_FILE:vmm>)
  set_tests_properties(linux.sanitized PROPERTIES LABELS linux-sanitized TIMEOUT 1200)
endif()
