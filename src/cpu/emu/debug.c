/* Guest debugging in the software CPU: the gdb stub's hardware breakpoints and watchpoints with
 * the semantics of DR0-3/DR7 (SDM Vol. 3 §18.2.4-18.2.5: execute breakpoints match the first byte
 * of an instruction, data breakpoints any access that overlaps their aligned 1, 2, 4 or 8 bytes,
 * write-only or read/write, and are reported after the instruction completes).
 *
 * Data breakpoints are seen by wrapping the CPU's memory ops: every data access the instruction
 * code makes goes through cpu->mem, so the wrapper sees them all, and it is only installed while
 * debugging, so the normal path is untouched. Instruction fetches are not data accesses. */
#include "cpu/emu/emu.h"

static bool debug_overlaps(uint64_t la, unsigned len, uint64_t addr, unsigned blen)
{
	return la < addr + blen && addr < la + len;
}

static void debug_watch(struct emu_cpu *cpu, uint64_t la, unsigned len, bool is_write)
{
	struct emu_debug *d = cpu->debug;

	for (unsigned i = 0; i < d->ctl.nr_hw && i < CPU_DEBUG_MAX_HW; i++) {
		enum cpu_hw_break type = d->ctl.hw[i].type;

		if (type == CPU_HW_EXEC || (type == CPU_HW_WRITE && !is_write))
			continue;
		if (debug_overlaps(la, len, d->ctl.hw[i].addr, d->ctl.hw[i].len))
			d->data_hits |= (uint8_t)(1u << i);
	}
}

static int debug_read(struct emu_cpu *cpu, uint64_t la, void *dst, unsigned len,
		      enum emu_access access)
{
	int rc = cpu->debug->inner->read(cpu, la, dst, len, access);

	if (rc == EMU_OK && access != EMU_ACCESS_FETCH)
		debug_watch(cpu, la, len, false);
	return rc;
}

static int debug_write(struct emu_cpu *cpu, uint64_t la, const void *src, unsigned len)
{
	int rc = cpu->debug->inner->write(cpu, la, src, len);

	if (rc == EMU_OK)
		debug_watch(cpu, la, len, true);
	return rc;
}

static int debug_fetch(struct emu_cpu *cpu, uint64_t la, const uint8_t **host, unsigned *avail,
		       uint64_t *gpa)
{
	const struct emu_memory_ops *inner = cpu->debug->inner;

	*host = NULL; /* without the inner op: the uncached path */
	return inner->fetch ? inner->fetch(cpu, la, host, avail, gpa) : EMU_OK;
}

/* A locked read-modify-write: the operand is read and written through the host pointer. */
static int debug_lock_operand(struct emu_cpu *cpu, uint64_t la, unsigned len, void **host)
{
	const struct emu_memory_ops *inner = cpu->debug->inner;
	int rc = EMU_OK;

	*host = NULL; /* without the inner op: the bus-lock path, through read and write */
	if (inner->lock_operand && (rc = inner->lock_operand(cpu, la, len, host)) == EMU_OK && *host)
		debug_watch(cpu, la, len, true);
	return rc;
}

static const struct emu_memory_ops debug_memory_ops = {
	.read = debug_read,
	.write = debug_write,
	.fetch = debug_fetch,
	.lock_operand = debug_lock_operand,
};

void emu_debug_set(struct emu_cpu *cpu, struct emu_debug *d, const struct cpu_debug *ctl)
{
	bool watch = false;

	if (cpu->debug) { /* back to the plain state first */
		cpu->mem = cpu->debug->inner;
		cpu->debug = NULL;
	}
	if (!ctl->enabled)
		return;
	d->ctl = *ctl;
	if (d->ctl.nr_hw > CPU_DEBUG_MAX_HW)
		d->ctl.nr_hw = CPU_DEBUG_MAX_HW;
	for (unsigned i = 0; i < d->ctl.nr_hw; i++)
		watch |= d->ctl.hw[i].type != CPU_HW_EXEC;
	d->inner = cpu->mem;
	d->data_hits = 0;
	cpu->debug = d;
	if (watch)
		cpu->mem = &debug_memory_ops;
}

unsigned emu_debug_exec_hits(const struct emu_debug *d, uint64_t la)
{
	unsigned hits = 0;

	for (unsigned i = 0; i < d->ctl.nr_hw; i++)
		if (d->ctl.hw[i].type == CPU_HW_EXEC && d->ctl.hw[i].addr == la)
			hits |= 1u << i;
	return hits;
}
