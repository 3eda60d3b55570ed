/* Debugging in the software CPU, with the semantics of DR0-DR7 (SDM Vol. 3 §18.2-18.3): execute
 * breakpoints match the first byte of an instruction, data breakpoints any access that overlaps
 * their aligned 1, 2, 4 or 8 bytes, write-only or read/write.
 *
 * Two users share it. The guest's own debug registers (what Linux's hw_breakpoint, ptrace, perf
 * and kgdb program): an execute breakpoint is a #DB fault before the instruction unless
 * RFLAGS.RF is set, a data breakpoint or single step (TF) a #DB trap after it, DR6 saying which.
 * And gdb's stub (struct emu_debug, set by the backend), whose breakpoints are checked around
 * the guest's by the backend and reported as debug exits, never as guest exceptions; gdb's
 * come first (its execute breakpoints before the instruction, its data breakpoints are exits
 * while the guest's hits still go to the guest).
 *
 * Data breakpoints are seen by wrapping the CPU's memory ops: every data access the instruction
 * code makes goes through cpu->mem (the TLB fast path is only taken while cpu->mem is the paging
 * layer itself), so the wrapper sees them all. It is installed only while a data breakpoint is
 * set, and the guest's per-instruction checks run only while DR7 enables a breakpoint or TF is
 * set (emu_debug_active()), so otherwise none of this costs anything. Instruction fetches are
 * not data accesses. */
#include "cpu/emu/emu.h"

#define DR7_ENABLE_BITS 0xffull /* L0 G0 ... L3 G3 */
#define DR7_WRITABLE 0xffff23ffull /* L/G, LE/GE, GD, RW/LEN; bits 10-12, 14, 15 are fixed */
#define DR6_WRITABLE 0xe00full /* B0-B3, BD, BS, BT */
#define DR6_HITS 0xfull

enum dr_rw {
	DR_RW_EXEC = 0,
	DR_RW_WRITE = 1,
	DR_RW_IO = 2,
	DR_RW_ACCESS = 3
};

static bool debug_overlaps(uint64_t la, unsigned len, uint64_t addr, unsigned blen)
{
	return la < addr + blen && addr < la + len;
}

static bool dr_enabled(const struct emu_cpu *cpu, unsigned i)
{
	return (cpu->dr7_enabled >> (2 * i)) & 3;
}

static enum dr_rw dr_rw(const struct emu_cpu *cpu, unsigned i)
{
	return (enum dr_rw)((cpu->dr[7] >> (16 + 4 * i)) & 3);
}

/* LEN: 00 one byte, 01 two, 11 four, 10 eight (SDM Vol. 3 §18.2.5). */
static unsigned dr_len(const struct emu_cpu *cpu, unsigned i)
{
	static const unsigned len[4] = { 1, 2, 8, 4 };

	return len[(cpu->dr[7] >> (18 + 4 * i)) & 3];
}

/* Whether DR7 enables a data breakpoint (RW 01 or 11). RW 10 (I/O breakpoints) is defined only
 * with the debugging extensions, which CPUID does not advertise: such a breakpoint never fires. */
static bool dr_watching(const struct emu_cpu *cpu)
{
	for (unsigned i = 0; i < 4; i++)
		if (dr_enabled(cpu, i) &&
		    (dr_rw(cpu, i) == DR_RW_WRITE || dr_rw(cpu, i) == DR_RW_ACCESS))
			return true;
	return false;
}

static void debug_watch(struct emu_cpu *cpu, uint64_t la, unsigned len, bool is_write)
{
	struct emu_debug *d = cpu->debug;

	if (d && d->watch) {
		for (unsigned i = 0; i < d->ctl.nr_hw && i < CPU_DEBUG_MAX_HW; i++) {
			enum cpu_hw_break type = d->ctl.hw[i].type;

			if (type == CPU_HW_EXEC || (type == CPU_HW_WRITE && !is_write))
				continue;
			if (debug_overlaps(la, len, d->ctl.hw[i].addr, d->ctl.hw[i].len))
				d->data_hits |= (uint8_t)(1u << i);
		}
	}
	if (!cpu->dr7_enabled)
		return;
	for (unsigned i = 0; i < 4; i++) {
		enum dr_rw rw = dr_rw(cpu, i);
		unsigned blen = dr_len(cpu, i);

		if (!dr_enabled(cpu, i) || (rw != DR_RW_ACCESS && (rw != DR_RW_WRITE || !is_write)))
			continue;
		/* The low address bits below the length are ignored (an aligned range). */
		if (debug_overlaps(la, len, cpu->dr[i] & ~(uint64_t)(blen - 1), blen))
			cpu->dr_data_hits |= (uint8_t)(1u << i);
	}
}

static int debug_read(struct emu_cpu *cpu, uint64_t la, void *dst, unsigned len,
		      enum emu_access access)
{
	int rc = cpu->watch_inner->read(cpu, la, dst, len, access);

	if (rc == EMU_OK && access != EMU_ACCESS_FETCH)
		debug_watch(cpu, la, len, false);
	return rc;
}

static int debug_write(struct emu_cpu *cpu, uint64_t la, const void *src, unsigned len)
{
	int rc = cpu->watch_inner->write(cpu, la, src, len);

	if (rc == EMU_OK)
		debug_watch(cpu, la, len, true);
	return rc;
}

static int debug_fetch(struct emu_cpu *cpu, uint64_t la, const uint8_t **host, unsigned *avail,
		       uint64_t *gpa)
{
	const struct emu_memory_ops *inner = cpu->watch_inner;

	*host = NULL; /* without the inner op: the uncached path */
	return inner->fetch ? inner->fetch(cpu, la, host, avail, gpa) : EMU_OK;
}

/* A locked read-modify-write: the operand is read and written through the host pointer. */
static int debug_lock_operand(struct emu_cpu *cpu, uint64_t la, unsigned len, void **host)
{
	const struct emu_memory_ops *inner = cpu->watch_inner;
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

void emu_debug_update(struct emu_cpu *cpu)
{
	bool watch;

	cpu->dr7_enabled = (uint8_t)(cpu->dr[7] & DR7_ENABLE_BITS);
	watch = (cpu->debug && cpu->debug->watch) || dr_watching(cpu);
	if (watch && !cpu->watch_inner) {
		cpu->watch_inner = cpu->mem;
		cpu->mem = &debug_memory_ops;
	} else if (!watch && cpu->watch_inner) {
		cpu->mem = cpu->watch_inner;
		cpu->watch_inner = NULL;
	}
}

void emu_debug_reset_dr(struct emu_cpu *cpu)
{
	for (unsigned i = 0; i < 4; i++)
		cpu->dr[i] = 0;
	cpu->dr[6] = EMU_DR6_FIXED1;
	cpu->dr[7] = EMU_DR7_FIXED1;
	emu_debug_update(cpu);
}

int emu_debug_write_dr(struct emu_cpu *cpu, unsigned n, uint64_t value)
{
	if (n < 4) {
		cpu->dr[n] = cpu->mode == EMU_MODE_64 ? value : value & 0xffffffff;
		return EMU_OK;
	}
	if (cpu->mode == EMU_MODE_64 && (value >> 32)) /* the upper half is reserved: #GP */
		return emu_raise(cpu, EMU_VEC_GP, true, 0);
	if (n == 6) {
		cpu->dr[6] = (value & DR6_WRITABLE) | EMU_DR6_FIXED1;
		return EMU_OK;
	}
	cpu->dr[7] = (value & DR7_WRITABLE) | EMU_DR7_FIXED1;
	emu_debug_update(cpu);
	return EMU_OK;
}

static uint64_t debug_linear_rip(const struct emu_cpu *cpu)
{
	return cpu->mode == EMU_MODE_64 ? cpu->s.rip
					: (cpu->s.seg[SEG_CS].base + cpu->s.rip) & 0xffffffff;
}

/* The guest's enabled execute breakpoints at linear address `la`. */
static unsigned dr_exec_hits(const struct emu_cpu *cpu, uint64_t la)
{
	unsigned hits = 0;

	for (unsigned i = 0; i < 4; i++)
		if (dr_enabled(cpu, i) && dr_rw(cpu, i) == DR_RW_EXEC && cpu->dr[i] == la)
			hits |= 1u << i;
	return hits;
}

/* Record a #DB for the guest: B0-B3 say which breakpoints this one is for, BS stays set. */
static int dr_raise(struct emu_cpu *cpu, uint64_t dr6_bits)
{
	cpu->dr[6] = (cpu->dr[6] & ~DR6_HITS) | EMU_DR6_FIXED1 | dr6_bits;
	return emu_raise(cpu, EMU_VEC_DB, false, 0);
}

int emu_debug_step(struct emu_cpu *cpu)
{
	bool single_step = cpu->s.rflags & EMU_FLAG_TF, resumed = cpu->s.rflags & EMU_FLAG_RF;
	/* After MOV SS/POP SS the traps of that instruction come with this one's. */
	unsigned held = cpu->dr_mov_ss ? cpu->dr_data_hits : 0, hits;
	int rc;

	if (cpu->dr7_enabled && !resumed && (hits = dr_exec_hits(cpu, debug_linear_rip(cpu))))
		return dr_raise(cpu, hits); /* a fault: RIP stays, the handler sets RF to go on */
	cpu->dr_data_hits = 0;
	cpu->no_single_step = cpu->dr_mov_ss = false;
	/* RF is cleared as the instruction starts, after the breakpoint check (SDM Vol. 3
	 * §18.3.1.1): only an IRET that loads it leaves it set; a fault's frame sets it again
	 * (emu_deliver_exception()). */
	cpu->s.rflags &= ~EMU_FLAG_RF;
	rc = emu_step_insn(cpu);
	if (rc == EMU_STOP && resumed) /* restarted later, still past its breakpoint */
		cpu->s.rflags |= EMU_FLAG_RF;
	if (rc != EMU_OK)
		return rc; /* a fault, a stop or HLT */
	hits = cpu->dr_data_hits | held;
	if (cpu->dr_mov_ss) { /* held for the next instruction */
		cpu->dr_data_hits = (uint8_t)hits;
		return EMU_OK;
	}
	cpu->dr_data_hits = 0;
	/* TF at the start of the instruction decides (a POPF that clears it still traps, one
	 * that sets it does not), except across INT n/INT3/INTO/INT1 and SYSCALL, which clear
	 * TF for their handler: the step ends after the IRET/SYSRET instead. */
	single_step &= !cpu->no_single_step;
	if (hits || single_step)
		return dr_raise(cpu, hits | (single_step ? EMU_DR6_BS : 0));
	return EMU_OK;
}

void emu_debug_set(struct emu_cpu *cpu, struct emu_debug *d, const struct cpu_debug *ctl)
{
	cpu->debug = NULL;
	if (ctl->enabled) {
		d->ctl = *ctl;
		if (d->ctl.nr_hw > CPU_DEBUG_MAX_HW)
			d->ctl.nr_hw = CPU_DEBUG_MAX_HW;
		d->watch = false;
		for (unsigned i = 0; i < d->ctl.nr_hw; i++)
			d->watch |= d->ctl.hw[i].type != CPU_HW_EXEC;
		d->data_hits = 0;
		cpu->debug = d;
	}
	emu_debug_update(cpu);
}

unsigned emu_debug_exec_hits(const struct emu_debug *d, uint64_t la)
{
	unsigned hits = 0;

	for (unsigned i = 0; i < d->ctl.nr_hw; i++)
		if (d->ctl.hw[i].type == CPU_HW_EXEC && d->ctl.hw[i].addr == la)
			hits |= 1u << i;
	return hits;
}
