target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/socket_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pty_backend.cpp
)
