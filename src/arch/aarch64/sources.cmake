# The arm64 boot pieces (Image loader, device tree) are pure code, built and unit-tested on
# every host; the AArch64 KVM machine only for aarch64 builds (it uses the arm64 KVM ABI).
include(${PROJECT_SOURCE_DIR}/cmake/libvmmDependencies.cmake)  # libvmm::fdt
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/image.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fdt.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fdt_node.cpp
)
target_link_libraries(libvmm PRIVATE libvmm::fdt)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  target_sources(libvmm PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/machine.cpp
    ${CMAKE_CURRENT_LIST_DIR}/kvm_arm.cpp
  )
endif()
