# System descriptions (.system files, docs/SYSTEM_FORMAT.md).
set(LIBVMM_TEST_GUEST ${CMAKE_BINARY_DIR}/tests/guests/test-guest.bzImage)

# Every invalid description under tests/system/invalid is explained by `vmm check` (or refused
# by `vmm run`), with the messages its <!-- expect: ... --> lines name.
file(GLOB LIBVMM_INVALID_SYSTEMS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/system/invalid/*.system)
foreach(file ${LIBVMM_INVALID_SYSTEMS})
  get_filename_component(name ${file} NAME_WE)
  add_test(NAME system.invalid.${name}
    COMMAND ${PROJECT_SOURCE_DIR}/tests/system/check_invalid.sh $<TARGET_FILE:vmm> ${LIBVMM_TEST_GUEST} ${file})
  set_tests_properties(system.invalid.${name} PROPERTIES LABELS unit TIMEOUT 60)
endforeach()

# vmm-device's refusals of bad input, and of a socket another vmm-device serves.
add_test(NAME system.vmm_device_cli
  COMMAND ${PROJECT_SOURCE_DIR}/tests/system/vmm_device_cli.sh $<TARGET_FILE:vmm-device>)
set_tests_properties(system.vmm_device_cli PROPERTIES LABELS unit TIMEOUT 120)

# Passthrough with the freestanding test guest on this machine's /dev/kvm: shared regions
# (host file, shm object, read-only map) and host events raising a guest IRQ.
foreach(case shared_file shared_shm readonly irq_fifo irq_socket irq_flood two_guests hugepages microkit_x86)
  add_test(NAME system.${case}
    COMMAND ${PROJECT_SOURCE_DIR}/tests/guests/system_case.sh $<TARGET_FILE:vmm> ${LIBVMM_TEST_GUEST} ${case})
  set_tests_properties(system.${case} PROPERTIES LABELS guest TIMEOUT 120 SKIP_RETURN_CODE 77)
endforeach()

# The custom VMM example (a description built in code, an eventfd IRQ, the VMM's own map of a
# shared region), in the tree and against an installed libvmm.
# (Not in sanitizer builds, ASan or TSan: the installed library would need the sanitizer runtime.)
if(TARGET custom_vmm AND NOT LIBVMM_SANITIZE AND NOT LIBVMM_TSAN)
  add_test(NAME example.custom_vmm
    COMMAND ${PROJECT_SOURCE_DIR}/tests/system/custom_vmm.sh $<TARGET_FILE:custom_vmm> ${LIBVMM_TEST_GUEST})
  add_test(NAME example.custom_vmm_installed
    COMMAND ${PROJECT_SOURCE_DIR}/tests/system/install_test.sh ${CMAKE_BINARY_DIR} ${PROJECT_SOURCE_DIR} ${LIBVMM_TEST_GUEST})
  set_tests_properties(example.custom_vmm example.custom_vmm_installed PROPERTIES LABELS guest
    TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()

# The example descriptions boot Linux in the emulated KVM host.
add_test(NAME linux.system COMMAND ${PROJECT_SOURCE_DIR}/tests/integration/system.sh $<TARGET_FILE:vmm>)
set_tests_properties(linux.system PROPERTIES LABELS linux TIMEOUT 1500)

# Microkit descriptions as written (the manual's and libvmm's examples' forms), checked for
# either architecture on this machine (vmm check --arch); booted by linux.arm64.gicv2.
add_test(NAME system.microkit_check
  COMMAND ${PROJECT_SOURCE_DIR}/tests/system/microkit_check.sh $<TARGET_FILE:vmm>)
set_tests_properties(system.microkit_check PROPERTIES LABELS unit TIMEOUT 60)
