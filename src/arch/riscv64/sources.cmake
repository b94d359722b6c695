# The riscv64 pieces that are pure code (board, Image loader, device tree, the PLIC vmm
# emulates, the machine's options): built and unit-tested on every host, for the riscv64
# machine (and for every host to check a description for riscv64 and to refuse its options by
# name). The KVM machine itself is not written yet.
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/board.cpp
  ${CMAKE_CURRENT_LIST_DIR}/image.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fdt.cpp
  ${CMAKE_CURRENT_LIST_DIR}/options.cpp
  ${CMAKE_CURRENT_LIST_DIR}/plic.cpp
)
