/* Choosing where a kernel goes, as its own decompressor does with KASLR
 * (arch/x86/boot/compressed/kaslr.c): a physical address among the aligned slots of E820 RAM
 * from a minimum up that hold the whole image and overlap nothing to avoid (initrd, command
 * line, boot_params), and independently a virtual offset among the aligned slots of the kernel
 * image area. The random numbers come from the caller, so the choice itself is testable. */
#include <errno.h>

#include "boot/boot.h"

static uint64_t kaslr_align_up(uint64_t v, uint64_t align)
{
	return (v + align - 1) & ~(align - 1);
}

/* The earliest range to avoid that overlaps [start, end), or NULL. */
static const struct boot_range *kaslr_first_overlap(const struct kaslr_phys_request *req,
						    uint64_t start, uint64_t end)
{
	const struct boot_range *first = NULL;
	for (unsigned i = 0; i < req->nr_avoid; i++) {
		const struct boot_range *a = &req->avoid[i];
		if (!a->size || a->start >= end || a->start + a->size <= start)
			continue;
		if (!first || a->start < first->start)
			first = a;
	}
	return first;
}

/* Calls back for each free interval that holds the image: its first slot and number of slots.
 * Stops when the callback returns non-zero. */
typedef int (*kaslr_interval_fn)(uint64_t first, uint64_t slots, void *ctx);

static void kaslr_walk(const struct kaslr_phys_request *req, kaslr_interval_fn fn, void *ctx)
{
	for (unsigned i = 0; i < req->nr_map; i++) {
		const struct e820_entry *e = &req->map[i];
		if (e->type != E820_RAM || e->addr + e->size < e->addr)
			continue;
		uint64_t end = e->addr + e->size < req->limit ? e->addr + e->size : req->limit;
		uint64_t start = e->addr > req->min ? e->addr : req->min;
		while (start < end) {
			start = kaslr_align_up(start, req->align);
			if (start >= end || end - start < req->image_size)
				break;
			const struct boot_range *a = kaslr_first_overlap(req, start, end);
			uint64_t stop = !a ? end : a->start > start ? a->start : start;
			if (stop - start >= req->image_size &&
			    fn(start, 1 + (stop - start - req->image_size) / req->align, ctx))
				return;
			if (!a)
				break;
			start = a->start + a->size;
		}
	}
}

static int kaslr_count(uint64_t first, uint64_t slots, void *ctx)
{
	(void)first;
	*(uint64_t *)ctx += slots;
	return 0;
}

struct kaslr_pick {
	uint64_t index, align, addr;
};

static int kaslr_pick_slot(uint64_t first, uint64_t slots, void *ctx)
{
	struct kaslr_pick *p = ctx;
	if (p->index >= slots) {
		p->index -= slots;
		return 0;
	}
	p->addr = first + p->index * p->align;
	return 1;
}

uint64_t kaslr_phys_slots(const struct kaslr_phys_request *req)
{
	uint64_t total = 0;
	if (req->align && !(req->align & (req->align - 1)))
		kaslr_walk(req, kaslr_count, &total);
	return total;
}

int kaslr_choose_phys(const struct kaslr_phys_request *req, uint64_t random, uint64_t *addr)
{
	uint64_t total = kaslr_phys_slots(req);
	if (!total)
		return -ENOSPC;
	struct kaslr_pick pick = { .index = random % total, .align = req->align };
	kaslr_walk(req, kaslr_pick_slot, &pick);
	*addr = pick.addr;
	return 0;
}

bool kaslr_fits(const struct kaslr_phys_request *req, uint64_t addr)
{
	struct kaslr_phys_request one = *req;
	one.min = addr;
	one.limit = addr + req->image_size < req->limit ? addr + req->image_size : req->limit;
	return !(addr & (req->align - 1)) && kaslr_phys_slots(&one) == 1;
}

uint64_t kaslr_choose_virt(uint64_t min, uint64_t image_size, uint64_t align, uint64_t area,
			   uint64_t random)
{
	if (!align || min + image_size > area)
		return min;
	uint64_t slots = 1 + (area - min - image_size) / align;
	return min + (random % slots) * align;
}
