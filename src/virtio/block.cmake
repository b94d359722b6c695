target_sources(libvmm PRIVATE ${CMAKE_CURRENT_LIST_DIR}/block.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block_uring.cpp)
pkg_check_modules(LIBURING REQUIRED IMPORTED_TARGET liburing)
target_link_libraries(libvmm PRIVATE PkgConfig::LIBURING)
