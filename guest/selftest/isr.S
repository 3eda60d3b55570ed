/*
 * Interrupt entry stubs: one 16-byte stub per vector (interrupts.c computes the address as
 * isr_stubs + 16 * vector). Each pushes a dummy error code where the CPU does not, then the
 * vector, so isr_common sees one frame layout (struct interrupt_frame in interrupts.h).
 */
#include "layout.h"

	.section .text, "ax"
	.code64
	.balign 16
	.globl isr_stubs
isr_stubs:
	.set	vector, 0
	.rept	IDT_VECTORS
	.balign 16
	/* Vectors with a CPU-pushed error code: #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, #VC, #SX */
	.if (vector == 8) || (vector >= 10 && vector <= 14) || (vector == 17) || (vector == 21) || (vector == 29) || (vector == 30)
	.else
	pushq	$0
	.endif
	pushq	$vector
	jmp	isr_common
	.set	vector, vector + 1
	.endr

isr_common:
	pushq	%rax
	pushq	%rcx
	pushq	%rdx
	pushq	%rsi
	pushq	%rdi
	pushq	%r8
	pushq	%r9
	pushq	%r10
	pushq	%r11
	movq	%rsp, %rdi
	cld
	call	interrupt_dispatch
	popq	%r11
	popq	%r10
	popq	%r9
	popq	%r8
	popq	%rdi
	popq	%rsi
	popq	%rdx
	popq	%rcx
	popq	%rax
	addq	$16, %rsp
	iretq
