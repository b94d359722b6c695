# Architecture-neutral arm64 boot pieces (Image loader, device tree): pure code, built and
# unit-tested on every host, used by the aarch64 machine.
include(${PROJECT_SOURCE_DIR}/cmake/libvmmDependencies.cmake)  # libvmm::fdt
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/image.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fdt.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fdt_node.cpp
)
target_link_libraries(libvmm PRIVATE libvmm::fdt)
