# The x86_64 board (its layout) is pure code, built for every host so that any vmm checks an
# x86_64 description (vmm check --arch x86_64); so are the AML writer and the machine's options
# (every host refuses them by name).
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/options.cpp
  ${CMAKE_CURRENT_LIST_DIR}/boot_layout.cpp
  ${CMAKE_CURRENT_LIST_DIR}/board.cpp
  ${CMAKE_CURRENT_LIST_DIR}/aml.cpp
)
# x86_64-only: these sources include the x86 kernel ABI headers (asm/bootparam.h, ...).
if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  return()
endif()
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/bzimage.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vmlinux.cpp
  ${CMAKE_CURRENT_LIST_DIR}/linux_loader.cpp
  ${CMAKE_CURRENT_LIST_DIR}/long_mode.cpp
  ${CMAKE_CURRENT_LIST_DIR}/mptable.cpp
  ${CMAKE_CURRENT_LIST_DIR}/acpi.cpp
  # The x86_64 KVM machine (the host machine of x86_64 builds).
  ${CMAKE_CURRENT_LIST_DIR}/machine.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vcpu_setup.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cpuid.cpp
  ${CMAKE_CURRENT_LIST_DIR}/kvm_x86.cpp
)
