/* On-demand mappings of memory above 4 GiB (the identity map covers only the first 4 GiB). */
#ifndef SELFTEST_PAGING_H
#define SELFTEST_PAGING_H

#include <stdint.h>

#define HIGHMEM_SLOTS 512

/* Maps the 2 MiB page holding `phys` into window `slot`; returns the virtual address of phys. */
volatile uint64_t *highmem_map(uint64_t phys, unsigned slot);
void highmem_unmap(unsigned slot);

#endif
