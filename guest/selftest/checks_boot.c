/* Checks of what the loader handed over: boot structure, command line, memory map. */
#include "check.h"
#include "io.h"
#include "layout.h"
#include "lib.h"
#include "paging.h"

/* The legacy holes (0x9FC00-0xFFFFF and the like) make RAM a little less than selftest.mem. */
#define MEM_TOLERANCE MiB
#define HIGHMEM_PATTERN 0x5E1F7E575E1F7E57ull

extern const uint8_t _start[], _end[];

void check_bootinfo(struct selftest *t)
{
	const struct boot_info *b = &t->boot;

	check_note("boot: %s, structure at 0x%lx, cmdline \"%s\"", b->kind_name, b->source,
		   b->cmdline);
	if (b->problem[0])
		check_fail("bootinfo", "%s", b->problem);
	else if (!b->have_cmdline || !b->cmdline[0])
		check_fail("bootinfo", "command line is empty");
	else if (t->args.error[0])
		check_fail("bootinfo", "%s", t->args.error);
	else
		check_ok("bootinfo");
}

/* Index of the E820 RAM entry that contains [start, end), or -1. */
static int e820_find_ram(const struct boot_info *b, uint64_t start, uint64_t end)
{
	for (uint32_t i = 0; i < b->e820_count; i++) {
		const struct e820_entry *e = &b->e820[i];

		if (e->type == E820_RAM && e->addr <= start && end <= e->addr + e->size)
			return (int)i;
	}
	return -1;
}

/* Sorted, non-empty, non-overlapping; returns false after reporting the first bad entry. */
static bool e820_check_order(const struct boot_info *b)
{
	for (uint32_t i = 0; i < b->e820_count; i++) {
		const struct e820_entry *e = &b->e820[i];

		if (e->size == 0 || e->addr + e->size < e->addr) {
			check_fail("e820", "entry %u [0x%lx +0x%lx] is empty or wraps", i, e->addr,
				   e->size);
			return false;
		}
		if (i > 0 && e->addr < b->e820[i - 1].addr + b->e820[i - 1].size) {
			check_fail("e820", "entry %u at 0x%lx overlaps or precedes entry %u", i,
				   e->addr, i - 1);
			return false;
		}
	}
	return true;
}

static uint64_t e820_ram_total(const struct boot_info *b)
{
	uint64_t total = 0;

	for (uint32_t i = 0; i < b->e820_count; i++)
		if (b->e820[i].type == E820_RAM)
			total += b->e820[i].size;
	return total;
}

void check_e820(struct selftest *t)
{
	const struct boot_info *b = &t->boot;
	uint64_t total = e820_ram_total(b);

	check_note("e820: %u entries, %lu KiB RAM", b->e820_count, total / KiB);
	for (uint32_t i = 0; i < b->e820_count; i++)
		check_note("e820: [0x%09lx-0x%09lx) type %u", b->e820[i].addr,
			   b->e820[i].addr + b->e820[i].size, b->e820[i].type);
	if (b->e820_count == 0) {
		check_fail("e820", "no memory map");
		return;
	}
	if (!e820_check_order(b))
		return;
	if (e820_find_ram(b, 0, 1) < 0)
		check_fail("e820", "address 0 is not RAM");
	else if (e820_find_ram(b, (uint64_t)_start, (uint64_t)_end) < 0)
		check_fail("e820", "the kernel [0x%lx-0x%lx) is not inside one RAM entry",
			   (uint64_t)_start, (uint64_t)_end);
	else if (t->args.mem && (total + MEM_TOLERANCE < t->args.mem ||
				 total > t->args.mem + MEM_TOLERANCE))
		check_fail("e820", "RAM total %lu KiB, expected %lu KiB (selftest.mem)",
			   total / KiB, t->args.mem / KiB);
	else
		check_ok("e820");
}

static uint32_t cpu_physical_address_bits(void)
{
	uint32_t regs[4];

	cpuid(0x80000000, 0, regs);
	if (regs[0] < 0x80000008)
		return 36;
	cpuid(0x80000008, 0, regs);
	return regs[0] & 0xFF;
}

/* Writes a pattern at phys through a window mapping, reads it back, restores the old value. */
static bool highmem_probe(uint64_t phys)
{
	volatile uint64_t *p = highmem_map(phys, 0);
	uint64_t old = *p, pattern = HIGHMEM_PATTERN ^ phys;
	bool ok;

	*p = pattern;
	ok = *p == pattern;
	*p = old;
	highmem_unmap(0);
	return ok;
}

void check_highmem(struct selftest *t)
{
	const struct boot_info *b = &t->boot;
	uint64_t limit = 1ull << cpu_physical_address_bits();
	bool found = false;

	for (uint32_t i = 0; i < b->e820_count; i++) {
		const struct e820_entry *e = &b->e820[i];
		uint64_t end = e->addr + e->size;
		uint64_t first = e->addr > 4 * GiB ? e->addr : 4 * GiB;

		if (e->type != E820_RAM || end <= 4 * GiB)
			continue;
		found = true;
		if (end > limit) {
			check_fail("highmem", "RAM up to 0x%lx beyond the CPU's 0x%lx", end, limit);
			return;
		}
		if (!highmem_probe(first) || !highmem_probe(end - 8)) {
			check_fail("highmem", "pattern did not read back in [0x%lx-0x%lx)", first, end);
			return;
		}
	}
	if (found)
		check_ok("highmem");
}
