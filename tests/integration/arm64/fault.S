// A tiny arm64 `Image` for tests/integration/arm64.sh: two device accesses vmm must report.
//   1. a load from an address where nothing is mapped: KVM_EXIT_MMIO, the usual fault report;
//   2. a load pair from the PL011: no valid syndrome, KVM_EXIT_ARM_NISV, the VM stops.
// Build: aarch64-linux-gnu-as fault.S -o fault.o && aarch64-linux-gnu-objcopy -O binary fault.o Image
  .text
_start:
  b start                     // code0
  .word 0                     // code1
  .quad 0                     // text_offset
  .quad 0x10000               // image_size
  .quad 0                     // flags: little endian
  .quad 0, 0, 0               // res2..res4
  .word 0x644d5241            // magic "ARM\x64"
  .word 0                     // res5
start:
  movz x1, #0x0c00, lsl #16   // 0x0c000000: no RAM, no device
  ldr w2, [x1]
  movz x1, #0x0900, lsl #16   // 0x09000000: the PL011
  ldp x2, x3, [x1]
1:
  wfi
  b 1b
