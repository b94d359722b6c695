# Platform devices. All arch-neutral and built everywhere (the unit tests run on x86), the
# PL011 UART included.
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/uart16550.cpp
  ${CMAKE_CURRENT_LIST_DIR}/cmos_rtc.cpp
  ${CMAKE_CURRENT_LIST_DIR}/i8042.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pl011.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pl031.cpp
  ${CMAKE_CURRENT_LIST_DIR}/pl061.cpp
)
