/*
 * Static page tables, assembled into the image so that no CPU spends time building them:
 * the first 4 GiB identity-mapped with 2 MiB pages (the top GiB uncached: it holds the
 * LAPIC, IOAPIC and PCI windows), plus one page directory of 2 MiB windows at
 * HIGHMEM_WINDOW that paging.c points at memory above 4 GiB on demand.
 */
#include "layout.h"

#define PTE_PRESENT 0x001
#define PTE_WRITE 0x002
#define PTE_PWT 0x008
#define PTE_PCD 0x010
#define PTE_LARGE 0x080
#define TABLE (PTE_PRESENT | PTE_WRITE)
#define PAGE_2M (PTE_PRESENT | PTE_WRITE | PTE_LARGE)

	.section .data.pagetables, "aw"
	.balign 4096
	.globl pml4
pml4:
	.quad	pdpt_identity + TABLE
	.quad	pdpt_window + TABLE		/* HIGHMEM_WINDOW = 512 GiB */
	.fill	510, 8, 0

pdpt_identity:
	.quad	pd_identity + 0 * 4096 + TABLE
	.quad	pd_identity + 1 * 4096 + TABLE
	.quad	pd_identity + 2 * 4096 + TABLE
	.quad	pd_identity + 3 * 4096 + TABLE
	.fill	508, 8, 0

pdpt_window:
	.quad	pd_window + TABLE
	.fill	511, 8, 0

	.globl pd_window
pd_window:
	.fill	512, 8, 0

pd_identity:
	.set	address, 0
	.rept	3 * 512				/* 0 - 3 GiB: RAM, write-back */
	.quad	address + PAGE_2M
	.set	address, address + 0x200000
	.endr
	.rept	512				/* 3 - 4 GiB: MMIO, uncached */
	.quad	address + PAGE_2M + PTE_PCD + PTE_PWT
	.set	address, address + 0x200000
	.endr
