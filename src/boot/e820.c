/* The guest's E820 map: exactly the RAM of memory.c, with the legacy EBDA/ROM hole reserved. */
#include "boot/boot.h"

static unsigned e820_add(struct e820_entry *out, unsigned n, unsigned max, uint64_t addr,
			 uint64_t size, uint32_t type)
{
	if (n < max && size)
		out[n++] = (struct e820_entry){ addr, size, type };
	return n;
}

unsigned e820_build(const struct guest_memory *mem, struct e820_entry *out, unsigned max)
{
	unsigned n = 0;
	uint64_t low_end = memory_low_end(mem);
	n = e820_add(out, n, max, 0, BOOT_EBDA_START, E820_RAM);
	n = e820_add(out, n, max, BOOT_EBDA_START, BOOT_HIGH_START - BOOT_EBDA_START,
		     E820_RESERVED);
	n = e820_add(out, n, max, BOOT_HIGH_START, low_end - BOOT_HIGH_START, E820_RAM);
	/* The PCIe ECAM window (MCFG): reserved, so kernels trust it early (docs/platform.md). */
	n = e820_add(out, n, max, BOOT_ECAM_START, BOOT_ECAM_SIZE, E820_RESERVED);
	for (unsigned i = 1; i < mem->nr_regions; i++)
		n = e820_add(out, n, max, mem->regions[i].gpa, mem->regions[i].size, E820_RAM);
	return n;
}
