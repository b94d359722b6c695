# Host ends of device I/O: character backends (stdio, file, socket, pty), input flow control,
# the TAP network backend and its link state, block images (sync and io_uring), and
# sound (none, WAV files).
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/fd_io.cpp
  ${CMAKE_CURRENT_LIST_DIR}/output_queue.cpp
  ${CMAKE_CURRENT_LIST_DIR}/escape_filter.cpp
  ${CMAKE_CURRENT_LIST_DIR}/stdio_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/file_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/socket_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pty_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/open_char_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/input_flow_control.cpp
  ${CMAKE_CURRENT_LIST_DIR}/tap_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/link_watch.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block_image.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block_uring.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vhost_user.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sound_backend.cpp
)
include(${PROJECT_SOURCE_DIR}/cmake/libvmmDependencies.cmake)  # PkgConfig::LIBURING
target_link_libraries(libvmm PRIVATE PkgConfig::LIBURING)  # block images' io=io_uring

# Host ALSA for the sound device (libasound2-dev), when the build machine has it (the arm64
# cross build's sysroot may not; cmake/libvmmDependencies.cmake looks for it).
if(TARGET PkgConfig::ALSA)
  target_sources(libvmm PRIVATE ${CMAKE_CURRENT_LIST_DIR}/sound_alsa.cpp)
  target_link_libraries(libvmm PRIVATE PkgConfig::ALSA)
  target_compile_definitions(libvmm PRIVATE LIBVMM_HAVE_ALSA)
endif()
