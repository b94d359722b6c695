# A tiny riscv64 "kernel" for tests/integration/riscv64.sh: a valid Image header, then
#   1. 64 SBI calls KVM leaves to user space (experimental extension 0x08000000, functions 0 to
#      63): vmm reports the extension once and answers each SBI_ERR_NOT_SUPPORTED (-2); any
#      other answer writes to 0x20001000, which the test would see reported; then a call to
#      each of 40 more extensions: 32 extensions in all are reported;
#   2. a read where nothing is mapped (0x20000000): reported, reads all-ones;
#   3. SBI SRST system shutdown: vmm ends with status 0.
	.section .text
	.globl _start
_start:
	j	entry			# code0/code1
	.balign	8
	.dword	0x200000		# text_offset
	.dword	0x1000			# image_size (more than the code)
	.dword	0			# flags: little endian
	.word	0x2			# version 0.2
	.word	0			# res1
	.dword	0			# res2
	.ascii	"RISCV\0\0\0"		# magic (deprecated)
	.ascii	"RSC\x05"		# magic2
	.word	0			# res3 (PE header offset)
entry:
	li	s1, 0			# function 0, 1, ... 63 of one extension: reported once
3:
	li	a7, 0x08000000		# SBI experimental extension
	mv	a6, s1
	li	a0, 0
	ecall
	li	t0, -2
	beq	a0, t0, 4f
	li	t1, 0x20001000
	sw	zero, 0(t1)		# the answer was wrong: make it visible
4:
	addi	s1, s1, 1
	li	t0, 64
	blt	s1, t0, 3b
	li	s1, 0x08000001		# 40 more extensions: 32 in all are reported
	li	s2, 0x08000029
5:
	mv	a7, s1
	li	a6, 0
	li	a0, 0
	ecall
	addi	s1, s1, 1
	blt	s1, s2, 5b
	li	t1, 0x20000000
	lw	t2, 0(t1)		# nothing mapped there
	li	a7, 0x53525354		# SBI SRST
	li	a6, 0			# system_reset
	li	a0, 0			# shutdown
	li	a1, 0			# no reason
	ecall
2:
	wfi
	j	2b
	.balign	8
