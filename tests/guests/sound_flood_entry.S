/*
 * Boot header and 64-bit entry of the sound-flood guest (sound_flood.c): the bzImage setup
 * header, then at 0x100200 (the 64-bit entry point) a stack and a call to flood_main with
 * boot_params; when it returns, a reset through the i8042 controller.
 */
        .section .header, "a"
#include "bzimage_header.inc"

        .section .entry, "ax"
        .code64
        .globl entry64
entry64:
        mov $0x80000, %rsp
        mov %rsi, %rdi                  /* boot_params */
        call flood_main
        mov $0xfe, %al
        out %al, $0x64
1:      hlt
        jmp 1b

        .section .note.GNU-stack, "", @progbits
