# Cross-compiles libvmm for a riscv64 Linux host with Debian 12's cross compiler and a sysroot
# of Debian 13 (trixie) riscv64 packages (Debian 12 has no riscv64 port):
#   tools/install-deps-riscv64   (g++-riscv64-linux-gnu; the sysroot in ~/.cache/libvmm)
#   cmake -G Ninja -B build/riscv64 -DCMAKE_TOOLCHAIN_FILE=cmake/riscv64-linux-gnu.cmake
# The compiler's own glibc (2.36) and libstdc++ are used for headers and linking; trixie's
# libraries (libfmt, libpugixml, libfdt, liburing, libseccomp) and kernel headers (6.12) come
# from the sysroot, and the binary runs against trixie's glibc, which is newer. The unit tests are x86-hosted:
# LIBVMM_BUILD_TESTS defaults to OFF here.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR riscv64)

set(CMAKE_C_COMPILER riscv64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER riscv64-linux-gnu-g++)
set(CMAKE_ASM_COMPILER riscv64-linux-gnu-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE riscv64-linux-gnu)

if(DEFINED ENV{LIBVMM_CACHE})
  set(LIBVMM_RISCV64_SYSROOT $ENV{LIBVMM_CACHE}/riscv64-sysroot)
else()
  set(LIBVMM_RISCV64_SYSROOT $ENV{HOME}/.cache/libvmm/riscv64-sysroot)
endif()
if(NOT EXISTS ${LIBVMM_RISCV64_SYSROOT}/.stamp)
  message(FATAL_ERROR "${LIBVMM_RISCV64_SYSROOT}: no riscv64 sysroot; run tools/install-deps-riscv64")
endif()
# "/" last: architecture-independent CMake packages of the host (CLI11, header-only).
set(CMAKE_FIND_ROOT_PATH /usr/riscv64-linux-gnu ${LIBVMM_RISCV64_SYSROOT} /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(ENV{PKG_CONFIG_SYSROOT_DIR} ${LIBVMM_RISCV64_SYSROOT})
set(ENV{PKG_CONFIG_LIBDIR}
  ${LIBVMM_RISCV64_SYSROOT}/usr/lib/riscv64-linux-gnu/pkgconfig:${LIBVMM_RISCV64_SYSROOT}/usr/share/pkgconfig)
# Trixie's headers first (kernel 6.12 uapi, the libraries'), then the compiler's own.
foreach(lang C CXX)
  set(CMAKE_${lang}_STANDARD_INCLUDE_DIRECTORIES
    ${LIBVMM_RISCV64_SYSROOT}/usr/include/riscv64-linux-gnu ${LIBVMM_RISCV64_SYSROOT}/usr/include)
endforeach()
# Trixie's libraries were linked against trixie's glibc: the symbols they take from it that
# 2.36 lacks are resolved at run time, on the riscv64 host.
set(CMAKE_EXE_LINKER_FLAGS_INIT
  "-Wl,--allow-shlib-undefined -Wl,-rpath-link,${LIBVMM_RISCV64_SYSROOT}/usr/lib/riscv64-linux-gnu")

# GCC inlines no sub-word atomics on RISC-V (std::atomic<bool>, <uint8_t>): libatomic has them.
foreach(lang C CXX)
  set(CMAKE_${lang}_STANDARD_LIBRARIES "-latomic")
endforeach()

set(LIBVMM_BUILD_TESTS OFF CACHE BOOL "Build the unit tests")
