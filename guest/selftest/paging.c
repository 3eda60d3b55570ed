/* Window mappings through pd_window (pagetables.S), one 2 MiB page per slot. */
#include "paging.h"
#include "io.h"
#include "layout.h"

#define PAGE_2M_SIZE 0x200000ull
#define PAGE_2M_FLAGS 0x83 /* present, writable, large */

extern uint64_t pd_window[HIGHMEM_SLOTS];

volatile uint64_t *highmem_map(uint64_t phys, unsigned slot)
{
	uint64_t virt = HIGHMEM_WINDOW + slot * PAGE_2M_SIZE;

	pd_window[slot] = (phys & ~(PAGE_2M_SIZE - 1)) | PAGE_2M_FLAGS;
	invlpg(virt);
	return (volatile uint64_t *)(virt + (phys & (PAGE_2M_SIZE - 1)));
}

void highmem_unmap(unsigned slot)
{
	pd_window[slot] = 0;
	invlpg(HIGHMEM_WINDOW + slot * PAGE_2M_SIZE);
}
