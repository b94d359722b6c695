target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/fd_io.cpp
  ${CMAKE_CURRENT_LIST_DIR}/escape_filter.cpp
  ${CMAKE_CURRENT_LIST_DIR}/stdio_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/file_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/open_char_backend.cpp
)
