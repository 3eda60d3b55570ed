/*
 * Application processor start-up. smp.c copies the real-mode part (ap_trampoline_start ..
 * ap_trampoline_end) to a free page below 1 MiB and points the SIPI vector at it. The code
 * there is position independent (CS-relative) and only loads our GDT and sets CR0.PE; the rest
 * runs from the kernel image, sharing enter_long_mode32 with the boot path.
 */
#include "layout.h"

	.section .text, "ax"
	.code16
	.globl ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
	cli
	cld
	movw	%cs, %ax
	movw	%ax, %ds
	lgdtl	ap_trampoline_gdtr - ap_trampoline_start
	movl	%cr0, %eax
	orl	$CR0_PE, %eax
	movl	%eax, %cr0
	ljmpl	$KERNEL_CS32, $ap_entry32

	.balign 8
ap_trampoline_gdtr:
	.word	GDT_ENTRIES * 8 - 1
	.long	gdt
ap_trampoline_end:

	.code32
ap_entry32:
	movl	$KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	$ap_entry64, %edi
	jmp	enter_long_mode32

	.code64
/* Each AP takes the next stack slot atomically, so a late AP never shares a stack. */
ap_entry64:
	movl	$1, %eax
	lock xaddl %eax, ap_next_slot(%rip)
	cmpl	$MAX_CPUS, %eax
	jae	cpu_park
	movl	%eax, %edi
	leal	1(%rax), %eax
	shlq	$AP_STACK_SHIFT, %rax
	addq	$ap_stacks, %rax
	movq	%rax, %rsp
	call	ap_main
	jmp	cpu_park

	.section .stack, "aw", @nobits
	.balign 16
ap_stacks:
	.skip	MAX_CPUS << AP_STACK_SHIFT
