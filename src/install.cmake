# `cmake --install`: the static library, its public headers, and a CMake package so that
# another project can `find_package(libvmm)` and link libvmm::libvmm (examples/custom_vmm).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(LIBVMM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/libvmm)
install(TARGETS libvmm EXPORT libvmmTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/libvmm DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT libvmmTargets NAMESPACE libvmm:: DESTINATION ${LIBVMM_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/libvmmConfig.cmake.in
  ${PROJECT_BINARY_DIR}/libvmmConfig.cmake INSTALL_DESTINATION ${LIBVMM_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/libvmmConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/libvmmConfig.cmake ${PROJECT_BINARY_DIR}/libvmmConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/libvmmDependencies.cmake
  DESTINATION ${LIBVMM_CMAKE_DIR})
