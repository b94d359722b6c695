target_sources(libvmm PRIVATE ${CMAKE_CURRENT_LIST_DIR}/block.cpp
  ${CMAKE_CURRENT_LIST_DIR}/block_request.cpp)
