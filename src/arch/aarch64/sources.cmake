# Architecture-neutral arm64 pieces (Image loader, device tree: the machine's nodes, the GIC's
# and the PL011's; the machine's options): pure code, built and unit-tested on every host, used
# by the aarch64 machine (and by every host to refuse AArch64 options by name).
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/image.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fdt.cpp
  ${CMAKE_CURRENT_LIST_DIR}/gic.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pl011_fdt.cpp
  ${CMAKE_CURRENT_LIST_DIR}/options.cpp
  ${CMAKE_CURRENT_LIST_DIR}/board.cpp
)
# The AArch64 KVM machine: only for aarch64 builds (it uses the arm64 KVM ABI).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  target_sources(libvmm PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/machine.cpp
    ${CMAKE_CURRENT_LIST_DIR}/kvm_arm.cpp
  )
endif()
