# Libraries libvmm links that have no CMake package of their own, as imported targets. Used by
# the build (src/) and, installed beside libvmmConfig.cmake, by projects that find_package(libvmm)
# (libvmm is static: they link these too).

# libfdt: Debian's libfdt-dev ships no pkg-config file, so find it directly. The static library
# keeps the (optionally static) vmm free of a runtime dependency.
if(NOT TARGET libvmm::fdt)
  find_path(LIBFDT_INCLUDE_DIR libfdt.h)
  find_library(LIBFDT_LIBRARY NAMES libfdt.a fdt)
  if(NOT LIBFDT_INCLUDE_DIR OR NOT LIBFDT_LIBRARY)
    message(FATAL_ERROR "libfdt not found: install libfdt-dev (tools/install-deps)")
  endif()
  add_library(libvmm::fdt UNKNOWN IMPORTED GLOBAL)
  set_target_properties(libvmm::fdt PROPERTIES
    IMPORTED_LOCATION ${LIBFDT_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${LIBFDT_INCLUDE_DIR})
endif()

# liburing (the block device's io=io_uring), through its pkg-config file.
if(NOT TARGET PkgConfig::LIBURING)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(LIBURING REQUIRED IMPORTED_TARGET GLOBAL liburing)
endif()

# libseccomp (the per-thread sandbox, core/seccomp.hpp), through its pkg-config file.
if(NOT TARGET PkgConfig::LIBSECCOMP)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(LIBSECCOMP REQUIRED IMPORTED_TARGET GLOBAL libseccomp)
endif()

# ALSA (the sound device's alsa backend), optional: a build machine without libasound2-dev (or
# a cross sysroot without it) builds libvmm without that backend (--sound alsa says so).
# An installed libvmm built with it (LIBVMM_WITH_ALSA, set by libvmmConfig.cmake) requires it:
# a machine without alsa.pc is told so here, not by a missing target later.
if(NOT TARGET PkgConfig::ALSA)
  find_package(PkgConfig REQUIRED)
  if(LIBVMM_WITH_ALSA)
    pkg_check_modules(ALSA REQUIRED IMPORTED_TARGET GLOBAL alsa)
  else()
    pkg_check_modules(ALSA IMPORTED_TARGET GLOBAL alsa)
  endif()
endif()
