target_sources(libvmm PRIVATE ${CMAKE_CURRENT_LIST_DIR}/block_image.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block_uring.cpp)
include(${PROJECT_SOURCE_DIR}/cmake/libvmmDependencies.cmake)  # PkgConfig::LIBURING
target_link_libraries(libvmm PRIVATE PkgConfig::LIBURING)
