# The PL011 UART: arch-neutral, built everywhere (AArch64 machines use it; unit tests run on x86).
target_sources(libvmm PRIVATE ${CMAKE_CURRENT_LIST_DIR}/pl011.cpp)
