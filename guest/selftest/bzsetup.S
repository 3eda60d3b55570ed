/*
 * The real-mode part of selftest.bzImage: boot sector, setup header (boot.rst, protocol 2.15)
 * and a small real-mode stub for loaders that start the kernel the traditional way (QEMU -kernel,
 * GRUB's linux16). The stub asks the BIOS for the E820 map, switches to protected mode and jumps
 * to code32_start with ESI = boot_params, as the 32-bit boot protocol wants. A loader using the
 * 64-bit protocol (vmm) never runs it. mkbzimage patches setup_sects, syssize and init_size.
 */
#include "layout.h"

#define BP_E820_ENTRIES 0x1E8
#define BP_E820_TABLE 0x2D0
#define E820_MAX_ENTRIES 128
#define SMAP 0x534D4150
#define BOOT_CS 0x10 /* boot.rst: __BOOT_CS and __BOOT_DS at 32-bit entry */
#define BOOT_DS 0x18

	.code16
	.section .text, "ax"
	.globl _start
_start:
	/* Sector 0 is the obsolete boot sector: not bootable by itself. */
	.org	0x1F1
setup_sects:		.byte	0		/* patched */
root_flags:		.word	0
syssize:		.long	0		/* patched: 16-byte units */
ram_size:		.word	0
vid_mode:		.word	0xFFFF		/* NORMAL_VGA */
root_dev:		.word	0
boot_flag:		.word	0xAA55
	.org	0x200
jump:			.byte	0xEB, header_end - 1f
1:
header:			.ascii	"HdrS"
version:		.word	0x020F
realmode_swtch:		.long	0
start_sys_seg:		.word	0x1000
kernel_version:		.word	version_string - 0x200
type_of_loader:		.byte	0
loadflags:		.byte	0x01		/* LOADED_HIGH */
setup_move_size:	.word	0x8000
	.org	0x214
code32_start:		.long	KERNEL_BASE
ramdisk_image:		.long	0
ramdisk_size:		.long	0
bootsect_kludge:	.long	0
heap_end_ptr:		.word	0
ext_loader_ver:		.byte	0
ext_loader_type:	.byte	0
	.org	0x228
cmd_line_ptr:		.long	0
initrd_addr_max:	.long	0x7FFFFFFF
kernel_alignment:	.long	0x200000
relocatable_kernel:	.byte	0
min_alignment:		.byte	12
xloadflags:		.word	0x0001		/* XLF_KERNEL_64: entry at code32_start + 0x200 */
cmdline_size:		.long	4095
hardware_subarch:	.long	0
hardware_subarch_data:	.quad	0
payload_offset:		.long	0
payload_length:		.long	0
setup_data:		.quad	0
pref_address:		.quad	KERNEL_BASE
	.org	0x260
init_size:		.long	0		/* patched: image + .bss + stacks */
handover_offset:	.long	0
kernel_info_offset:	.long	0
	.org	0x26C
header_end:
	/* The setup segment doubles as the zero page we pass on, so the code lives past its
	 * 4 KiB: the E820 table we fill in (0x2D0 onwards) would otherwise overwrite it. */
	jmp	real_mode_start

	.org	0x1000
/* Entered at CS = DS + 0x20, IP = 0 (the jump above), with DS = ES = SS = the setup segment. */
real_mode_start:
	cli
	cld
	call	reload_ds
	movb	$0, BP_E820_ENTRIES
	xorl	%ebx, %ebx
	movw	$BP_E820_TABLE, %di
e820_next:
	movl	$0xE820, %eax
	movl	$20, %ecx
	movl	$SMAP, %edx
	int	$0x15
	jc	e820_done
	cmpl	$SMAP, %eax
	jne	e820_done
	call	reload_ds	/* do not trust the BIOS with DS */
	incb	BP_E820_ENTRIES
	addw	$20, %di
	cmpb	$E820_MAX_ENTRIES, BP_E820_ENTRIES
	jae	e820_done
	testl	%ebx, %ebx
	jnz	e820_next
e820_done:
	call	reload_ds
	movzwl	%ax, %esi
	shll	$4, %esi		/* ESI = boot_params: the setup segment is the zero page */
	leal	setup_gdt(%esi), %eax
	movl	%eax, setup_gdtr + 2
	lgdtl	setup_gdtr
	movl	%cr0, %eax
	orl	$CR0_PE, %eax
	movl	%eax, %cr0
	movw	$BOOT_DS, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	ljmpl	$BOOT_CS, $KERNEL_BASE

/* DS = AX = the setup segment, recomputed from CS which no interrupt handler can change. */
reload_ds:
	movw	%cs, %ax
	subw	$0x20, %ax
	movw	%ax, %ds
	ret

	.balign 8
setup_gdt:
	.quad	0
	.quad	0
	.quad	0x00CF9B000000FFFF	/* BOOT_CS: flat 32-bit code */
	.quad	0x00CF93000000FFFF	/* BOOT_DS: flat data */
setup_gdtr:
	.word	setup_gdtr - setup_gdt - 1
	.long	0			/* linear address of setup_gdt, filled in above */

version_string:
	.asciz	"vmm selftest"

	.org	0x1200			/* setup_sects = 8 */
