# System descriptions (.system files): parser, validator, layout and the System runner.
find_package(pugixml REQUIRED)
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/parser.cpp
  ${CMAKE_CURRENT_LIST_DIR}/description.cpp
  ${CMAKE_CURRENT_LIST_DIR}/layout.cpp
  ${CMAKE_CURRENT_LIST_DIR}/microkit.cpp
  ${CMAKE_CURRENT_LIST_DIR}/system.cpp)
target_link_libraries(libvmm PRIVATE pugixml::pugixml)
