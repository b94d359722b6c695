/*
 * A tiny freestanding guest packaged as a bzImage (Linux x86 boot protocol 2.15 header, 64-bit
 * entry point), so it goes through the same loader, long-mode setup and vCPU path as Linux,
 * but runs in a few thousand instructions: fast enough for a nested, software-assisted KVM.
 *
 * It prints a greeting and its command line on COM1, then acts on the command line's first
 * word:  "fault"  reads and writes an address nothing is mapped at, then continues;
 *        "echo"   echoes COM1 input back until it reads 'q';
 *        "triple" triple-faults (a reset the hard way);
 *        "spin"   runs a 2-million-instruction loop (tools/kvm-speed times it);
 *        anything else: nothing more.
 * It ends by resetting through the i8042 controller (port 0x64, command 0xFE).
 */
#define COM1 0x3f8
#define LSR (COM1 + 5)
#define UNMAPPED 0xd0000000 /* in the x86 MMIO gap; the test VM has no device there */

        .section .text
        .globl _start
_start:
/* ---- boot sector: only the setup header matters ---- */
        .org 0x1f1
        .byte 1                 /* setup_sects */
        .word 0                 /* root_flags */
        .long 0                 /* syssize */
        .word 0, 0, 0           /* ram_size, vid_mode, root_dev */
        .word 0xaa55            /* boot_flag */
        .byte 0xeb, 0x66        /* jump */
        .ascii "HdrS"
        .word 0x020f            /* protocol 2.15 */
        .long 0                 /* realmode_swtch */
        .word 0, 0              /* start_sys_seg, kernel_version */
        .byte 0                 /* type_of_loader */
        .byte 0x01              /* loadflags: LOADED_HIGH */
        .word 0                 /* setup_move_size */
        .long 0x100000          /* code32_start */
        .long 0, 0              /* ramdisk_image, ramdisk_size */
        .long 0                 /* bootsect_kludge */
        .word 0                 /* heap_end_ptr */
        .byte 0, 0              /* ext_loader_ver, ext_loader_type */
        .long 0                 /* cmd_line_ptr */
        .long 0x7fffffff        /* initrd_addr_max */
        .long 0x200000          /* kernel_alignment */
        .byte 1                 /* relocatable_kernel */
        .byte 21                /* min_alignment */
        .word 0x0001            /* xloadflags: XLF_KERNEL_64 */
        .long 2047              /* cmdline_size */
        .long 0                 /* hardware_subarch */
        .quad 0                 /* hardware_subarch_data */
        .long 0, 0              /* payload_offset, payload_length */
        .quad 0                 /* setup_data */
        .quad 0x1000000         /* pref_address */
        .long 0x100000          /* init_size */
        .long 0, 0              /* handover_offset, kernel_info_offset */

/* ---- protected-mode kernel: loaded at 0x100000 ---- */
        .org 0x400
        .code32
entry32:                        /* never used: we only boot through the 64-bit entry */
        hlt
        jmp entry32

        .org 0x400 + 0x200
        .code64
entry64:
        mov $0x80000, %rsp
        mov %rsi, %r15                  /* boot_params */
        lea hello(%rip), %rsi
        call puts
        mov 0x228(%r15), %esi           /* boot_params.hdr.cmd_line_ptr */
        call puts
        mov $'\n', %al
        call putc

        mov 0x228(%r15), %ebx
        movb (%rbx), %al
        cmp $'f', %al
        je do_fault
        cmp $'e', %al
        je do_echo
        cmp $'t', %al
        je do_triple
        cmp $'s', %al
        je do_spin
reset:
        lea bye(%rip), %rsi
        call puts
        mov $0xfe, %al
        out %al, $0x64
1:      hlt
        jmp 1b

do_fault:
        mov $UNMAPPED, %rbx
        mov (%rbx), %eax                /* read: all-ones unless --strict stops us */
        movl $0x12345678, 8(%rbx)       /* write: dropped */
        cmp $0xffffffff, %eax
        jne 2f
        lea after_fault(%rip), %rsi
        call puts
        jmp reset
2:      lea bad_read(%rip), %rsi
        call puts
        jmp reset

do_echo:
        lea echo_ready(%rip), %rsi
        call puts
3:      mov $LSR, %dx
        in %dx, %al
        test $0x01, %al                 /* data ready */
        jz 3b
        mov $COM1, %dx
        in %dx, %al
        cmp $'q', %al
        je reset
        call putc
        jmp 3b

do_triple:
        lea triple(%rip), %rsi
        call puts
        ud2                             /* the boot IDT is empty: #UD, #DF, then shutdown */
        jmp reset

do_spin:
        mov $1000000, %ecx
6:      dec %ecx
        jnz 6b
        jmp reset

/* putc: writes %al to COM1 once the transmitter is empty. */
putc:
        push %rax
        mov $LSR, %dx
4:      in %dx, %al
        test $0x20, %al
        jz 4b
        pop %rax
        mov $COM1, %dx
        out %al, %dx
        ret

/* puts: writes the NUL-terminated string at %rsi. */
puts:
        lodsb
        test %al, %al
        jz 5f
        call putc
        jmp puts
5:      ret

hello:       .asciz "TEST-GUEST: hello, command line: "
after_fault: .asciz "TEST-GUEST: survived the fault\n"
bad_read:    .asciz "TEST-GUEST: unmapped read did not return all-ones\n"
echo_ready:  .asciz "TEST-GUEST: echo ready\n"
triple:      .asciz "TEST-GUEST: triple fault\n"
bye:         .asciz "TEST-GUEST: resetting\n"
        .balign 512
