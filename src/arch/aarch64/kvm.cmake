# The AArch64 KVM machine: only for aarch64 builds (it uses the arm64 KVM ABI).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  target_sources(libvmm PRIVATE
    ${CMAKE_CURRENT_LIST_DIR}/machine.cpp
    ${CMAKE_CURRENT_LIST_DIR}/kvm_arm.cpp)
endif()
