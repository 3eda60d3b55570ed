/* The software CPU's state handling and its fetch-decode-execute step. */
#include "cpu/emu/decode.h"
#include "cpu/emu/emu.h"

#include <stdlib.h>
#include <string.h>

#define EMU_PAGE_SIZE 4096ull

/* Decode once: instructions are cached by guest-physical address and mode, and a hit is
 * verified against the current bytes, so self-modifying code, DMA into code pages and
 * remapping need no invalidation. Direct-mapped; instructions crossing a page boundary are
 * not cached. */
#define ICACHE_SIZE 4096
#define ICACHE_VALID (1ull << 63)

struct emu_icache_entry {
	uint64_t tag; /* gpa | mode << 56 | ICACHE_VALID */
	uint64_t bytes[2]; /* the instruction's bytes (and what followed them) */
	struct emu_insn insn;
};

struct emu_icache {
	struct emu_icache_entry entry[ICACHE_SIZE];
};

void emu_cpu_init(struct emu_cpu *cpu, const struct cpu_state *state)
{
	const struct emu_memory_ops *mem = cpu->mem;
	const struct emu_phys_ops *phys = cpu->phys;
	void *mem_opaque = cpu->mem_opaque, *phys_opaque = cpu->phys_opaque;
	const struct emu_platform_ops *platform = cpu->platform;
	struct emu_icache *icache = cpu->icache;
	struct emu_debug *debug = cpu->debug; /* INIT/SIPI keep gdb's breakpoints */

	memset(cpu, 0, sizeof(*cpu));
	/* A cache that cannot be allocated only costs speed. Entries never need flushing. */
	cpu->icache = icache ? icache : calloc(1, sizeof(*cpu->icache));
	cpu->mem = mem;
	cpu->mem_opaque = mem_opaque;
	cpu->phys = phys;
	cpu->phys_opaque = phys_opaque;
	cpu->platform = platform;
	cpu->debug = debug;
	cpu->msr.pat = 0x0007040600070406ull; /* the reset value (SDM Vol. 3 §11.12.4) */
	emu_fpu_reset(cpu);
	cpu->s = *state;
	cpu->s.rflags |= EMU_FLAG_FIXED1;
	cpu->cc.op = EMU_CC_NONE;
	emu_update_mode(cpu);
}

void emu_cpu_destroy(struct emu_cpu *cpu)
{
	free(cpu->icache);
	cpu->icache = NULL;
}

/* The parts of struct cpu_state the CPU keeps in its own form: the FPU/SSE image (the same FXSAVE
 * layout), the MSRs and the debug registers. */
_Static_assert(sizeof(struct emu_fxstate) == sizeof(struct cpu_fxsave), "one FXSAVE layout");

static void emu_cpu_import_extended(struct emu_cpu *cpu, const struct cpu_state *st)
{
	memcpy(&cpu->fx, &st->fpu, sizeof(cpu->fx));
	cpu->msr.star = st->msr.star;
	cpu->msr.lstar = st->msr.lstar;
	cpu->msr.cstar = st->msr.cstar;
	cpu->msr.sfmask = st->msr.sfmask;
	cpu->msr.kernel_gs_base = st->msr.kernel_gs_base;
	cpu->msr.sysenter_cs = st->msr.sysenter_cs;
	cpu->msr.sysenter_esp = st->msr.sysenter_esp;
	cpu->msr.sysenter_eip = st->msr.sysenter_eip;
	cpu->msr.pat = st->msr.pat;
	cpu->msr.tsc_aux = st->msr.tsc_aux;
	cpu->msr.misc_enable = st->msr.misc_enable;
	memcpy(cpu->dr, st->dr, sizeof(st->dr));
	cpu->dr[6] = st->dr6;
	cpu->dr[7] = st->dr7;
	cpu->interrupt_shadow = st->events.interrupt_shadow;
}

static void emu_cpu_export_extended(const struct emu_cpu *cpu, struct cpu_state *st)
{
	memcpy(&st->fpu, &cpu->fx, sizeof(st->fpu));
	st->msr = (struct cpu_msrs){
		.star = cpu->msr.star, .lstar = cpu->msr.lstar, .cstar = cpu->msr.cstar,
		.sfmask = cpu->msr.sfmask, .kernel_gs_base = cpu->msr.kernel_gs_base,
		.sysenter_cs = cpu->msr.sysenter_cs, .sysenter_esp = cpu->msr.sysenter_esp,
		.sysenter_eip = cpu->msr.sysenter_eip, .pat = cpu->msr.pat,
		.tsc_aux = cpu->msr.tsc_aux, .misc_enable = cpu->msr.misc_enable,
	};
	memcpy(st->dr, cpu->dr, sizeof(st->dr));
	st->dr6 = cpu->dr[6];
	st->dr7 = cpu->dr[7];
	st->events = (struct cpu_events){ .interrupt_shadow = cpu->interrupt_shadow };
}

void emu_cpu_set_state(struct emu_cpu *cpu, const struct cpu_state *state)
{
	emu_cpu_import_extended(cpu, state);
	cpu->s = *state;
	cpu->s.rflags |= EMU_FLAG_FIXED1;
	cpu->cc.op = EMU_CC_NONE;
	emu_tlb_flush(cpu, true);
	emu_update_mode(cpu);
}

void emu_cpu_get_state(struct emu_cpu *cpu, struct cpu_state *state)
{
	emu_flags_sync(cpu);
	*state = cpu->s;
	emu_cpu_export_extended(cpu, state);
}

/* SDM Vol. 3 §2.2 (modes) and §5.5 (CPL = SS.DPL, as KVM reports it). */
void emu_update_mode(struct emu_cpu *cpu)
{
	const struct cpu_segment *cs = &cpu->s.seg[SEG_CS];

	if (!(cpu->s.cr0 & CR0_PE)) {
		cpu->mode = EMU_MODE_16;
		cpu->cpl = 0;
		return;
	}
	if ((cpu->s.efer & EFER_LMA) && cs->l)
		cpu->mode = EMU_MODE_64;
	else
		cpu->mode = cs->db ? EMU_MODE_32 : EMU_MODE_16;
	cpu->cpl = cpu->s.seg[SEG_SS].dpl;
}

int emu_raise(struct emu_cpu *cpu, unsigned vector, bool has_error_code, uint32_t error_code)
{
	cpu->exc.vector = (uint8_t)vector;
	cpu->exc.has_error_code = has_error_code;
	cpu->exc.error_code = error_code;
	return EMU_EXCEPTION;
}

static uint64_t code_linear(const struct emu_cpu *cpu, uint64_t rip)
{
	if (cpu->mode == EMU_MODE_64)
		return rip;
	return (cpu->s.seg[SEG_CS].base + rip) & 0xffffffffull;
}

static int decode_error(struct emu_cpu *cpu, int rc)
{
	if (rc == EMU_DECODE_TOO_LONG)
		return emu_raise(cpu, EMU_VEC_GP, true, 0);
	return emu_raise(cpu, EMU_VEC_UD, false, 0);
}

/* Whether the cached instruction's bytes are still the ones at `now`. */
static bool icache_bytes_match(const struct emu_icache_entry *e, const uint64_t now[2])
{
	unsigned len = e->insn.len;

	if (len <= 8)
		return !((now[0] ^ e->bytes[0]) & (~0ull >> (64 - 8 * len)));
	return now[0] == e->bytes[0] && !((now[1] ^ e->bytes[1]) & (~0ull >> (128 - 8 * len)));
}

/* The decode cache's path. Returns EMU_OK with *out set, EMU_OK with *out NULL when the
 * instruction cannot be cached (the slow path decides), or a fault of the fetch. */
static int fetch_cached(struct emu_cpu *cpu, uint64_t la, const struct emu_insn **out)
{
	struct emu_icache_entry *e;
	const uint8_t *host;
	unsigned avail;
	uint64_t gpa, tag, now[2];
	int rc;

	*out = NULL;
	if ((rc = cpu->mem->fetch(cpu, la, &host, &avail, &gpa)) || !host || avail < 16)
		return rc;
	memcpy(now, host, 16);
	tag = gpa | ((uint64_t)cpu->mode << 56) | ICACHE_VALID;
	e = &cpu->icache->entry[(gpa ^ (gpa >> 12)) & (ICACHE_SIZE - 1)];
	if (e->tag == tag && icache_bytes_match(e, now)) {
		*out = &e->insn;
		return EMU_OK;
	}
	e->tag = 0;
	if ((rc = emu_decode((const uint8_t *)now, EMU_MAX_INSN_LEN, cpu->mode, &e->insn)))
		return decode_error(cpu, rc);
	e->tag = tag;
	e->bytes[0] = now[0];
	e->bytes[1] = now[1];
	*out = &e->insn;
	return EMU_OK;
}

/* Fetch and decode at CS:RIP. Bytes are fetched up to the end of the page first, so an
 * instruction that ends before a page boundary never touches (or faults on) the next page. */
static int fetch_decode(struct emu_cpu *cpu, struct emu_insn *insn, const struct emu_insn **out)
{
	uint8_t bytes[EMU_MAX_INSN_LEN];
	uint64_t la = code_linear(cpu, cpu->s.rip);
	unsigned first = (unsigned)(EMU_PAGE_SIZE - (la & (EMU_PAGE_SIZE - 1)));
	int rc;

	if (cpu->icache && cpu->mem->fetch) {
		if ((rc = fetch_cached(cpu, la, out)) || *out)
			return rc;
	}
	*out = insn;

	if (first > EMU_MAX_INSN_LEN)
		first = EMU_MAX_INSN_LEN;
	if ((rc = cpu->mem->read(cpu, la, bytes, first, EMU_ACCESS_FETCH)))
		return rc;
	rc = emu_decode(bytes, first, cpu->mode, insn);
	if (rc == EMU_DECODE_SHORT) {
		if ((rc = cpu->mem->read(cpu, la + first, bytes + first, EMU_MAX_INSN_LEN - first,
					 EMU_ACCESS_FETCH)))
			return rc;
		rc = emu_decode(bytes, EMU_MAX_INSN_LEN, cpu->mode, insn);
	}
	return rc == EMU_DECODE_OK ? EMU_OK : decode_error(cpu, rc);
}

int emu_step(struct emu_cpu *cpu)
{
	const struct emu_insn *insn;
	struct emu_insn decoded;
	int rc;

	if ((rc = fetch_decode(cpu, &decoded, &insn)))
		return rc;
	return emu_execute(cpu, insn);
}
