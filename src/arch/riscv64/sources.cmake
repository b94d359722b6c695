# The riscv64 pieces that are pure code (board, Image loader, device tree, the machine's
# options): built and unit-tested on every host, used by the riscv64 machine (and by every host
# to check a description for riscv64 and to refuse its options by name).
target_sources(libvmm PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/board.cpp
  ${CMAKE_CURRENT_LIST_DIR}/image.cpp
  ${CMAKE_CURRENT_LIST_DIR}/fdt.cpp
  ${CMAKE_CURRENT_LIST_DIR}/options.cpp
)
