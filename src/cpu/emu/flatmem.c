/* A flat memory for unit tests and simple users: windows of host memory at linear addresses.
 * An access outside every window raises #PF with the faulting address in exc.cr2, like a
 * not-present page; a write to a read-only window raises #PF with the W bit. */
#include "cpu/emu/emu.h"

#include <errno.h>
#include <string.h>

#define PF_ERR_PRESENT (1u << 0)
#define PF_ERR_WRITE (1u << 1)
#define PF_ERR_FETCH (1u << 4)

int emu_flat_add(struct emu_flat_memory *mem, uint64_t linear, void *host, size_t size,
		 bool writable)
{
	if (mem->nr_windows >= EMU_FLAT_MAX_WINDOWS)
		return -ENOSPC;
	mem->windows[mem->nr_windows++] = (struct emu_flat_window){
		.linear = linear, .host = host, .size = size, .writable = writable
	};
	return 0;
}

static struct emu_flat_window *flat_find(struct emu_flat_memory *mem, uint64_t linear,
					 unsigned len)
{
	for (unsigned i = 0; i < mem->nr_windows; i++) {
		struct emu_flat_window *w = &mem->windows[i];

		if (linear >= w->linear && linear - w->linear <= w->size &&
		    w->size - (linear - w->linear) >= len)
			return w;
	}
	return NULL;
}

/* #PF for an access of `len` bytes at `linear` outside the windows: CR2 is its first byte
 * outside them, as paging reports the second page of an access that crosses into an
 * unmapped one. */
static int flat_fault(struct emu_cpu *cpu, uint64_t linear, unsigned len, uint32_t error_code)
{
	struct emu_flat_memory *mem = cpu->mem_opaque;

	cpu->exc.cr2 = linear;
	for (unsigned i = 0; i < mem->nr_windows && len; i++) {
		const struct emu_flat_window *w = &mem->windows[i];

		if (linear >= w->linear && linear - w->linear < w->size)
			cpu->exc.cr2 = w->linear + w->size;
	}
	return emu_raise(cpu, EMU_VEC_PF, true, error_code);
}

static int flat_read(struct emu_cpu *cpu, uint64_t linear, void *dst, unsigned len,
		     enum emu_access access)
{
	struct emu_flat_window *w = flat_find(cpu->mem_opaque, linear, len);

	if (!w)
		return flat_fault(cpu, linear, len, access == EMU_ACCESS_FETCH ? PF_ERR_FETCH : 0);
	memcpy(dst, w->host + (linear - w->linear), len);
	return EMU_OK;
}

static int flat_write(struct emu_cpu *cpu, uint64_t linear, const void *src, unsigned len)
{
	struct emu_flat_window *w = flat_find(cpu->mem_opaque, linear, len);

	if (!w)
		return flat_fault(cpu, linear, len, PF_ERR_WRITE);
	if (!w->writable)
		return flat_fault(cpu, linear, 0, PF_ERR_WRITE | PF_ERR_PRESENT);
	memcpy(w->host + (linear - w->linear), src, len);
	return EMU_OK;
}

static int flat_fetch(struct emu_cpu *cpu, uint64_t linear, const uint8_t **host,
		      unsigned *avail, uint64_t *gpa)
{
	struct emu_flat_window *w = flat_find(cpu->mem_opaque, linear, 1);
	uint64_t left;

	if (!w)
		return flat_fault(cpu, linear, 1, PF_ERR_FETCH);
	left = w->size - (linear - w->linear);
	*host = w->host + (linear - w->linear);
	*avail = left > 4096 ? 4096 : (unsigned)left;
	*gpa = linear;
	return EMU_OK;
}

static int flat_lock_operand(struct emu_cpu *cpu, uint64_t linear, unsigned len, void **host)
{
	struct emu_flat_window *w = flat_find(cpu->mem_opaque, linear, len);

	*host = NULL;
	if (!w)
		return flat_fault(cpu, linear, len, PF_ERR_WRITE);
	if (!w->writable)
		return flat_fault(cpu, linear, 0, PF_ERR_WRITE | PF_ERR_PRESENT);
	*host = w->host + (linear - w->linear);
	return EMU_OK;
}

/* As a paging layer would: a range inside one 4 KiB page of one window. */
static int flat_map(struct emu_cpu *cpu, uint64_t linear, unsigned len, enum emu_access access,
		    void **host)
{
	struct emu_flat_window *w;

	*host = NULL;
	if (!len || (linear & 0xfff) + len > 4096 ||
	    (access != EMU_ACCESS_READ && access != EMU_ACCESS_WRITE))
		return EMU_OK;
	w = flat_find(cpu->mem_opaque, linear, len);
	if (!w) /* not all in one window: the caller's element-wise path finds the fault */
		return EMU_OK;
	if (access == EMU_ACCESS_WRITE && !w->writable)
		return flat_fault(cpu, linear, 0, PF_ERR_WRITE | PF_ERR_PRESENT);
	*host = w->host + (linear - w->linear);
	return EMU_OK;
}

const struct emu_memory_ops emu_flat_memory_ops = {
	.read = flat_read,
	.write = flat_write,
	.fetch = flat_fetch,
	.lock_operand = flat_lock_operand,
	.map = flat_map,
};
