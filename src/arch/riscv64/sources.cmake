# The riscv64 pieces that are pure code (board, Image loader, device tree, the PLIC vmm
# emulates, the machine's options): built and unit-tested on every host, for the riscv64
# machine (and for every host to check a description for riscv64 and to refuse its options by
# name).
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/board.cpp
  ${CMAKE_CURRENT_LIST_DIR}/image.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fdt.cpp
  ${CMAKE_CURRENT_LIST_DIR}/options.cpp
  ${CMAKE_CURRENT_LIST_DIR}/plic.cpp
)
# The RISC-V KVM machine: only for riscv64 builds (it uses the riscv64 KVM ABI).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "riscv64")
  target_sources(libvmm PRIVATE ${CMAKE_CURRENT_LIST_DIR}/machine.cpp)
endif()
