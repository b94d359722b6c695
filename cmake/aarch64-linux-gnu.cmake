# Cross-compiles libvmm and `vmm` for an arm64 Linux host with Debian's cross toolchain:
#   apt-get install g++-aarch64-linux-gnu; dpkg --add-architecture arm64;
#   apt-get install libfmt-dev:arm64 libfdt1:arm64 libpugixml-dev:arm64 liburing-dev:arm64
#   libseccomp-dev:arm64
#   (tools/install-deps --arm64 does all this)
#   cmake -G Ninja -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# The unit tests are x86-hosted (they need GoogleTest for arm64): LIBVMM_BUILD_TESTS defaults
# to OFF here.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

# -DLIBVMM_CROSS_CLANG=ON: clang with the same GNU cross libraries (the clang warning check).
if(LIBVMM_CROSS_CLANG)
  set(CMAKE_C_COMPILER clang)
  set(CMAKE_CXX_COMPILER clang++)
  set(CMAKE_ASM_COMPILER clang)
  set(CMAKE_C_COMPILER_TARGET aarch64-linux-gnu)
  set(CMAKE_CXX_COMPILER_TARGET aarch64-linux-gnu)
  set(CMAKE_ASM_COMPILER_TARGET aarch64-linux-gnu)
else()
  set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
  set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
  set(CMAKE_ASM_COMPILER aarch64-linux-gnu-gcc)
endif()

# Debian's multiarch layout: the cross libc in /usr/aarch64-linux-gnu, arm64 packages
# (libfmt, libfdt) in /usr/lib/aarch64-linux-gnu with headers shared in /usr/include.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# libfdt-dev:arm64 cannot be installed beside the amd64 one: tools/install-deps-arm64 unpacks
# it (for libfdt.a) into the cache.
if(DEFINED ENV{LIBVMM_CACHE})
  set(LIBVMM_ARM64_SYSROOT $ENV{LIBVMM_CACHE}/arm64-sysroot)
else()
  set(LIBVMM_ARM64_SYSROOT $ENV{HOME}/.cache/libvmm/arm64-sysroot)
endif()
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu / ${LIBVMM_ARM64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)

set(LIBVMM_BUILD_TESTS OFF CACHE BOOL "Build the unit tests")
