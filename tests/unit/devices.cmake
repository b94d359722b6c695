libvmm_unit_test(devices_tests
  ${CMAKE_CURRENT_LIST_DIR}/devices_uart16550_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/devices_cmos_rtc_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/devices_i8042_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/devices_port_sink_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/devices_pl011_test.cpp
  ${CMAKE_CURRENT_LIST_DIR}/devices_pl031_test.cpp
)
