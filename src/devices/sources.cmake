target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/uart16550.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmos_rtc.cpp
  ${CMAKE_CURRENT_LIST_DIR}/i8042.cpp
)
