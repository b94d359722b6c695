target_sources(libvmm PRIVATE ${CMAKE_CURRENT_LIST_DIR}/input_flow_control.cpp)
