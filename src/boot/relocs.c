/* The relocation table of a KASLR-capable x86-64 kernel: arch/x86/tools/relocs appends it to
 * vmlinux before compression (CONFIG_X86_NEED_RELOCS, which on x86-64 is CONFIG_RANDOMIZE_BASE),
 * and the kernel's own decompressor (arch/x86/boot/compressed/misc.c, handle_relocations) applies
 * it when it moves the kernel's virtual address. Read backwards from the end of the decompressed
 * data, as the decompressor does: 32-bit entries up to a zero word, inverse 32-bit entries up to
 * a zero, 64-bit entries up to a zero. Each entry is the low 32 bits of the kernel virtual
 * address of a field to adjust, sign-extended. */
#include <errno.h>
#include <string.h>

#include "boot/boot.h"

static uint32_t relocs_word(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Walk back from word index *i (exclusive) to the next zero word; the count before it. */
static int relocs_scan_back(const uint8_t *data, size_t *i, size_t *count)
{
	size_t start = *i;
	while (*i > 0 && relocs_word(data + (*i - 1) * 4) != 0)
		(*i)--;
	if (*i == 0)
		return -ENOENT; /* no terminator inside the region */
	*count = start - *i;
	(*i)--; /* the zero itself */
	return 0;
}

int relocs_parse(const uint8_t *data, size_t len, struct kernel_relocs *r)
{
	memset(r, 0, sizeof(*r));
	if (len % 4)
		return -EINVAL;
	size_t i = len / 4;
	if (relocs_scan_back(data, &i, &r->n32) < 0 ||
	    relocs_scan_back(data, &i, &r->n_inv32) < 0 || relocs_scan_back(data, &i, &r->n64) < 0)
		return -ENOENT;
	r->table = data + i * 4;
	r->table_len = len - i * 4;
	return 0;
}

/* Where entry w points in image (linked to start at image_vaddr), or -1 when not all of its
 * width bytes lie inside. */
static int64_t relocs_target(uint32_t w, uint64_t image_vaddr, size_t image_size, size_t width)
{
	uint64_t vaddr = (uint64_t)(int64_t)(int32_t)w;
	uint64_t off = vaddr - image_vaddr;
	if (off >= image_size || image_size - off < width)
		return -1;
	return (int64_t)off;
}

/* Entry k of the table in the order the decompressor applies them: 32-bit, inverse, 64-bit. */
struct relocs_cursor {
	const uint8_t *words;
	size_t first, count, width;
};

static void relocs_cursors(const struct kernel_relocs *r, struct relocs_cursor c[3])
{
	/* Table layout in memory: 0, 64-bit..., 0, inverse..., 0, 32-bit... */
	c[0] = (struct relocs_cursor){ r->table, 1 + r->n64 + 1 + r->n_inv32 + 1, r->n32, 4 };
	c[1] = (struct relocs_cursor){ r->table, 1 + r->n64 + 1, r->n_inv32, 4 };
	c[2] = (struct relocs_cursor){ r->table, 1, r->n64, 8 };
}

int relocs_check(const struct kernel_relocs *r, size_t image_size, uint64_t image_vaddr)
{
	struct relocs_cursor c[3];
	relocs_cursors(r, c);
	for (int k = 0; k < 3; k++)
		for (size_t j = 0; j < c[k].count; j++)
			if (relocs_target(relocs_word(c[k].words + (c[k].first + j) * 4),
					  image_vaddr, image_size, c[k].width) < 0)
				return -EINVAL;
	return 0;
}

int relocs_apply(const struct kernel_relocs *r, uint8_t *image, size_t image_size,
		 uint64_t image_vaddr, uint64_t delta)
{
	struct relocs_cursor c[3];
	relocs_cursors(r, c);
	/* Check every target first, so a bad table leaves the image untouched. */
	if (relocs_check(r, image_size, image_vaddr) < 0)
		return -EINVAL;
	if (!delta)
		return 0;
	for (int k = 0; k < 3; k++) {
		for (size_t j = 0; j < c[k].count; j++) {
			uint32_t w = relocs_word(c[k].words + (c[k].first + j) * 4);
			uint8_t *p = image + relocs_target(w, image_vaddr, image_size, c[k].width);
			if (k == 2) {
				uint64_t v;
				memcpy(&v, p, 8);
				v += delta;
				memcpy(p, &v, 8);
			} else {
				uint32_t v;
				memcpy(&v, p, 4);
				/* 32-bit fields hold addresses (add), inverse ones hold
				 * differences to kernel addresses (subtract). */
				v = k == 0 ? v + (uint32_t)delta : v - (uint32_t)delta;
				memcpy(p, &v, 4);
			}
		}
	}
	return 0;
}
