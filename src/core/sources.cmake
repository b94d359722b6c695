target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/error.cpp
  ${CMAKE_CURRENT_LIST_DIR}/log.cpp
  ${CMAKE_CURRENT_LIST_DIR}/guest_memory.cpp
  ${CMAKE_CURRENT_LIST_DIR}/sigbus_guard.cpp
  ${CMAKE_CURRENT_LIST_DIR}/bus.cpp
  ${CMAKE_CURRENT_LIST_DIR}/event_loop.cpp
  ${CMAKE_CURRENT_LIST_DIR}/io_thread.cpp
  ${CMAKE_CURRENT_LIST_DIR}/kvm.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fault_report.cpp
  ${CMAKE_CURRENT_LIST_DIR}/vcpu_runner.cpp
  ${CMAKE_CURRENT_LIST_DIR}/coalesced_writes.cpp
  ${CMAKE_CURRENT_LIST_DIR}/kvm_irq.cpp
  ${CMAKE_CURRENT_LIST_DIR}/kvm_device.cpp
  ${CMAKE_CURRENT_LIST_DIR}/size.cpp
  ${CMAKE_CURRENT_LIST_DIR}/file.cpp
  ${CMAKE_CURRENT_LIST_DIR}/device_spec.cpp
)
# The device tree writer (fdt.cpp) on libfdt.
include(${PROJECT_SOURCE_DIR}/cmake/libvmmDependencies.cmake)  # libvmm::fdt
target_sources(libvmm PRIVATE ${CMAKE_CURRENT_LIST_DIR}/fdt.cpp)
target_link_libraries(libvmm PRIVATE libvmm::fdt)
# The per-thread seccomp sandbox (seccomp.cpp) on libseccomp.
target_sources(libvmm PRIVATE ${CMAKE_CURRENT_LIST_DIR}/seccomp.cpp)
target_link_libraries(libvmm PRIVATE PkgConfig::LIBSECCOMP)
