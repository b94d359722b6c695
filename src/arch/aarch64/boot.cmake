# Architecture-neutral arm64 boot pieces (Image loader, device tree): pure code, built and
# unit-tested on every host, used by the aarch64 machine.
# Debian's libfdt-dev ships no pkg-config file: find it directly.
if(NOT TARGET libvmm::fdt)
  find_path(LIBFDT_INCLUDE_DIR libfdt.h)
  # The static library keeps the (optionally static) vmm free of a runtime dependency.
  find_library(LIBFDT_LIBRARY NAMES libfdt.a fdt)
  if(NOT LIBFDT_INCLUDE_DIR OR NOT LIBFDT_LIBRARY)
    message(FATAL_ERROR "libfdt not found: install libfdt-dev (tools/install-deps)")
  endif()
  add_library(libvmm::fdt UNKNOWN IMPORTED GLOBAL)
  set_target_properties(libvmm::fdt PROPERTIES
    IMPORTED_LOCATION ${LIBFDT_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${LIBFDT_INCLUDE_DIR})
endif()
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/image.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fdt.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fdt_node.cpp
)
target_link_libraries(libvmm PRIVATE libvmm::fdt)
