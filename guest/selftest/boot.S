/*
 * Entry stubs. Three ways in, one way on:
 *   KERNEL_BASE + 0x000  Linux boot protocol, 32-bit (code32_start): ESI = boot_params
 *   KERNEL_BASE + 0x200  Linux boot protocol, 64-bit (XLF_KERNEL_64):  RSI = boot_params
 *   pvh_entry32          PVH (XEN_ELFNOTE_PHYS32_ENTRY):               EBX = hvm_start_info
 * The 32-bit paths turn on long mode themselves; all of them then load our GDT and page
 * tables (pagetables.S), clear .bss and call boot_main(kind, boot argument).
 */
#include "layout.h"

	.section .text.boot, "ax"
	.code32

	/* Must be the first byte of the image: the loader jumps to code32_start. */
	.globl linux_entry32
linux_entry32:
	cli
	cld
	movl	%esi, %ebx
	movl	$BOOT_KIND_LINUX32, %esi
	jmp	protected_mode_common

	/* The 64-bit entry point sits at a fixed offset (boot.rst, "64-bit boot protocol"). */
	.org	0x200
	.code64
	.globl linux_entry64
linux_entry64:
	cli
	cld
	/* A first console line before any other work: on hosts that emulate guest kernel code,
	 * it separates the monitor's start-up time from the guest's own (bench/startup). */
	leaq	entry_banner(%rip), %rdi
1:	movb	(%rdi), %al
	testb	%al, %al
	jz	2f
	movw	$0x3F8, %dx
	outb	%al, %dx
	incq	%rdi
	jmp	1b
2:
	movq	%rsi, %rbx
	movl	$BOOT_KIND_LINUX64, %esi
	movq	$boot_stack_top, %rsp	/* the protocol gives us no stack; lretq needs one */
	/* Our tables map the same identity range as the loader's, so the switch is seamless. */
	lgdt	gdt_descriptor(%rip)
	movq	$pml4, %rax
	movq	%rax, %cr3
	pushq	$KERNEL_CS
	leaq	long_mode_common(%rip), %rax
	pushq	%rax
	lretq

	.code32
	.globl pvh_entry32
pvh_entry32:
	cli
	cld
	movl	$entry_banner, %edi	/* the same first line as the 64-bit entry */
1:	movb	(%edi), %al
	testb	%al, %al
	jz	2f
	movw	$0x3F8, %dx
	outb	%al, %dx
	incl	%edi
	jmp	1b
2:
	movl	$BOOT_KIND_PVH, %esi
	/* fall through: EBX already holds the hvm_start_info address */

/* 32-bit protected mode, paging off, flat segments: ESI = kind, EBX = boot argument. */
protected_mode_common:
	lgdt	gdt_descriptor
	movl	$KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	ljmp	$KERNEL_CS32, $1f
1:	movl	$long_mode_common, %edi
	jmp	enter_long_mode32

/*
 * Turn on PAE paging with our tables and long mode, then jump to the 64-bit address in EDI.
 * Shared with the application processors (trampoline.S). Keeps ESI and EBX.
 */
	.globl enter_long_mode32
enter_long_mode32:
	movl	%cr4, %eax
	orl	$CR4_PAE, %eax
	movl	%eax, %cr4
	movl	$pml4, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	rdmsr
	orl	$EFER_LME, %eax
	wrmsr
	movl	%cr0, %eax
	orl	$(CR0_PG | CR0_PE), %eax
	movl	%eax, %cr0
	ljmp	$KERNEL_CS, $1f
	.code64
	/* The upper halves of the registers are undefined after the switch: clear them. */
1:	movl	%edi, %edi
	movl	%esi, %esi
	movl	%ebx, %ebx
	jmp	*%rdi

/* 64-bit mode on our GDT and page tables: ESI = kind, RBX = boot argument. */
long_mode_common:
	movl	$KERNEL_DS, %eax
	movl	%eax, %ds
	movl	%eax, %es
	movl	%eax, %ss
	movl	%eax, %fs
	movl	%eax, %gs
	/* A bzImage loader only copies the file: .bss is ours to clear (stacks are not in it). */
	movq	$_bss_start, %rdi
	movq	$_bss_end, %rcx
	subq	%rdi, %rcx
	shrq	$3, %rcx
	xorl	%eax, %eax
	rep stosq
	movq	$boot_stack_top, %rsp
	movl	%esi, %edi
	movq	%rbx, %rsi
	call	boot_main
	.globl cpu_park
cpu_park:
	cli
	hlt
	jmp	cpu_park

/* Our GDT: loaded by every CPU, also from real mode by the AP trampoline. */
	.section .data.gdt, "aw"
	.balign 16
	.globl gdt
gdt:
	.quad	0
	.quad	0x00AF9B000000FFFF	/* KERNEL_CS: 64-bit code, accessed */
	.quad	0x00CF93000000FFFF	/* KERNEL_DS: flat data, accessed */
	.quad	0x00CF9B000000FFFF	/* KERNEL_CS32: flat 32-bit code, accessed */
gdt_end:
	.if	gdt_end - gdt != GDT_ENTRIES * 8
	.error	"GDT_ENTRIES in layout.h does not match the GDT"
	.endif
	.balign 8
	.globl gdt_descriptor
gdt_descriptor:
	.word	gdt_end - gdt - 1
	.quad	gdt

/* Stacks are not in .bss so that nothing has to clear them. */
	.section .stack, "aw", @nobits
	.balign 16
boot_stack:
	.skip	BOOT_STACK_SIZE
	.globl boot_stack_top
boot_stack_top:

/* PVH entry note (Xen public/elfnote.h, XEN_ELFNOTE_PHYS32_ENTRY = 18). The address is
 * stored as 8 bytes like Linux does, so readers taking 4 or 8 bytes both get it. */
	.section .note.pvh, "a", @note
	.balign 4
	.long	4		/* name size: "Xen\0" */
	.long	8		/* descriptor size */
	.long	18		/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz	"Xen"
	.balign 4
	.quad	pvh_entry32

	.section .rodata
entry_banner:
	.asciz	"selftest: # entry\n"
