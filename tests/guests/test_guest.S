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
 *        "mem ADDR" (hex) writes GUEST_PATTERN at guest-physical ADDR (a shared region), then
 *                 waits until the host writes a NUL-terminated answer at ADDR+0x100, prints it;
 *        "answer ADDR" (hex) is the other side of "mem" in a second guest sharing the region:
 *                 waits for a NUL-terminated text at ADDR, prints it, answers at ADDR+0x100;
 *        "irq PIN" (decimal) routes IOAPIC pin PIN to vector 0x30 on this CPU's local APIC,
 *                 then counts interrupts, printing a line for each, until there were three;
 *        "output" writes COM1 output forever, 4 KiB per `rep outsb` (one exit each), without
 *                 waiting for THRE: output nobody reads must not keep vmm from stopping;
 *        anything else: nothing more.
 * It ends by resetting through the i8042 controller (port 0x64, command 0xFE).
 */
#define COM1 0x3f8
#define LSR (COM1 + 5)
#define UNMAPPED 0xd0000000 /* in the x86 MMIO gap; the test VM has no device there */
#define IDT 0x50000         /* free RAM below the stack; zero, like all fresh guest RAM */
#define IRQ_VECTOR 0x30
#define IOAPIC 0xfec00000
#define LAPIC 0xfee00000

        .section .text
        .globl _start
_start:
#include "bzimage_header.inc"

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
        cmp $'m', %al
        je do_mem
        cmp $'i', %al
        je do_irq
        cmp $'a', %al
        je do_answer
        cmp $'o', %al
        je do_output
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

do_output:
        lea flood(%rip), %rsi
        mov $flood_end - flood, %ecx
        mov $COM1, %dx
        rep outsb
        jmp do_output

do_spin:
        mov $1000000, %ecx
6:      dec %ecx
        jnz 6b
        jmp reset

do_mem:
        lea 4(%rbx), %rsi               /* after "mem " */
        call parse_hex
        mov %rax, %rbx
        lea 1(%rax), %rdi
        lea guest_pattern+1(%rip), %rsi
20:     lodsb                           /* copy the pattern, NUL included, but its first byte */
        stosb
        test %al, %al
        jnz 20b
        movb guest_pattern(%rip), %al   /* then the first byte, which "answer" waits for: */
        mov %al, (%rbx)                 /* it never sees half the text (stores stay in order) */
        lea mem_written(%rip), %rsi
        call puts
21:     pause
        cmpb $0, 0x100(%rbx)            /* the host's answer */
        je 21b
        lea host_answered(%rip), %rsi
        call puts
        lea 0x100(%rbx), %rsi
        call puts
        mov $'\n', %al
        call putc
        jmp reset

do_answer:
        lea 7(%rbx), %rsi               /* after "answer " */
        call parse_hex
        mov %rax, %rbx
29:     pause
        cmpb $0, (%rbx)                 /* the other guest's text */
        je 29b
        lea other_wrote(%rip), %rsi
        call puts
        mov %rbx, %rsi
        call puts
        mov $'\n', %al
        call putc
        lea guest_answer+1(%rip), %rsi  /* the answer, NUL included, but its first byte */
        lea 0x101(%rbx), %rdi
30:     lodsb
        stosb
        test %al, %al
        jnz 30b
        movb guest_answer(%rip), %al    /* then the first byte, which "mem" waits for: */
        mov %al, 0x100(%rbx)            /* it never sees half the answer */
        jmp reset

do_irq:
        lea 4(%rbx), %rsi               /* after "irq " */
        call parse_dec
        mov %rax, %r12                  /* the IOAPIC pin */
        xor %r13, %r13                  /* interrupts counted by irq_handler */
        /* One 64-bit interrupt gate, for IRQ_VECTOR; every other vector stays absent. */
        mov $IDT + IRQ_VECTOR * 16, %rdi
        lea irq_handler(%rip), %rax
        mov %ax, (%rdi)                 /* offset 15:0 */
        mov %cs, %dx
        mov %dx, 2(%rdi)                /* code segment selector */
        movw $0x8e00, 4(%rdi)           /* present, DPL 0, interrupt gate, IST 0 */
        shr $16, %rax
        mov %ax, 6(%rdi)                /* offset 31:16 */
        shr $16, %rax
        mov %eax, 8(%rdi)               /* offset 63:32 */
        sub $16, %rsp
        movw $(IRQ_VECTOR + 1) * 16 - 1, (%rsp)
        movq $IDT, 2(%rsp)
        lidt (%rsp)
        add $16, %rsp
        mov $LAPIC + 0xf0, %rdi
        movl $0x1ff, (%rdi)             /* spurious vector register: APIC on, spurious 0xff */
        mov $IOAPIC, %rdi
        lea 0x11(,%r12,2), %eax         /* redirection entry, high half: destination APIC 0 */
        mov %eax, (%rdi)
        movl $0, 0x10(%rdi)
        dec %eax                        /* low half: fixed, physical, edge, unmasked */
        mov %eax, (%rdi)
        movl $IRQ_VECTOR, 0x10(%rdi)
        lea irq_ready(%rip), %rsi
        call puts
22:     cli                             /* sti; hlt: no interrupt slips in between */
        cmp $3, %r13
        jae 23f
        sti
        hlt
        jmp 22b
23:     lea irq_done(%rip), %rsi
        call puts
        jmp reset

irq_handler:
        push %rax
        push %rdx
        push %rsi
        inc %r13
        lea got_irq(%rip), %rsi
        call puts
        mov $LAPIC + 0xb0, %rax
        movl $0, (%rax)                 /* end of interrupt */
        pop %rsi
        pop %rdx
        pop %rax
        iretq

/* parse_hex: the hex number (optional 0x) at %rsi -> %rax. */
parse_hex:
        xor %eax, %eax
        cmpw $0x7830, (%rsi)            /* "0x" */
        jne 24f
        add $2, %rsi
24:     movzbl (%rsi), %ecx
        sub $'0', %ecx
        cmp $9, %ecx
        jbe 25f
        movzbl (%rsi), %ecx
        or $0x20, %ecx                  /* lower case */
        sub $'a', %ecx
        cmp $5, %ecx
        ja 26f
        add $10, %ecx
25:     shl $4, %rax
        or %rcx, %rax
        inc %rsi
        jmp 24b
26:     ret

/* parse_dec: the decimal number at %rsi -> %rax. */
parse_dec:
        xor %eax, %eax
27:     movzbl (%rsi), %ecx
        sub $'0', %ecx
        cmp $9, %ecx
        ja 28f
        imul $10, %rax
        add %rcx, %rax
        inc %rsi
        jmp 27b
28:     ret

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
flood:       .rept 64
             .ascii "TEST-GUEST: output that nobody reads, 64 bytes a line.........\n"
             .endr
flood_end:
after_fault: .asciz "TEST-GUEST: survived the fault\n"
bad_read:    .asciz "TEST-GUEST: unmapped read did not return all-ones\n"
echo_ready:  .asciz "TEST-GUEST: echo ready\n"
triple:      .asciz "TEST-GUEST: triple fault\n"
bye:         .asciz "TEST-GUEST: resetting\n"
guest_pattern: .asciz "GUEST-WROTE-THIS"
mem_written: .asciz "TEST-GUEST: pattern written\n"
host_answered: .asciz "TEST-GUEST: host answered: "
other_wrote: .asciz "TEST-GUEST: the other guest wrote: "
guest_answer: .asciz "ANSWER-FROM-GUEST-B"
irq_ready:   .asciz "TEST-GUEST: irq ready\n"
got_irq:     .asciz "TEST-GUEST: interrupt\n"
irq_done:    .asciz "TEST-GUEST: three interrupts\n"
        .balign 512
