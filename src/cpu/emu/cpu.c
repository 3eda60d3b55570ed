/* The software CPU's state handling and its fetch-decode-execute step. */
#include "cpu/emu/decode.h"
#include "cpu/emu/emu.h"

#include <string.h>

#define EMU_PAGE_SIZE 4096ull

void emu_cpu_init(struct emu_cpu *cpu, const struct cpu_state *state)
{
	const struct emu_memory_ops *mem = cpu->mem;
	const struct emu_phys_ops *phys = cpu->phys;
	void *mem_opaque = cpu->mem_opaque, *phys_opaque = cpu->phys_opaque;

	memset(cpu, 0, sizeof(*cpu));
	cpu->mem = mem;
	cpu->mem_opaque = mem_opaque;
	cpu->phys = phys;
	cpu->phys_opaque = phys_opaque;
	cpu->msr.pat = 0x0007040600070406ull; /* the reset value (SDM Vol. 3 §11.12.4) */
	cpu->s = *state;
	cpu->s.rflags |= EMU_FLAG_FIXED1;
	cpu->cc.op = EMU_CC_NONE;
	emu_update_mode(cpu);
}

void emu_cpu_set_state(struct emu_cpu *cpu, const struct cpu_state *state)
{
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

/* Fetch and decode at CS:RIP. Bytes are fetched up to the end of the page first, so an
 * instruction that ends before a page boundary never touches (or faults on) the next page. */
static int fetch_decode(struct emu_cpu *cpu, struct emu_insn *insn)
{
	uint8_t bytes[EMU_MAX_INSN_LEN];
	uint64_t la = code_linear(cpu, cpu->s.rip);
	unsigned first = (unsigned)(EMU_PAGE_SIZE - (la & (EMU_PAGE_SIZE - 1)));
	int rc;

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
	switch (rc) {
	case EMU_DECODE_OK:
		return EMU_OK;
	case EMU_DECODE_TOO_LONG:
		return emu_raise(cpu, EMU_VEC_GP, true, 0);
	default:
		return emu_raise(cpu, EMU_VEC_UD, false, 0);
	}
}

int emu_step(struct emu_cpu *cpu)
{
	struct emu_insn insn;
	int rc;

	if ((rc = fetch_decode(cpu, &insn)))
		return rc;
	return emu_execute(cpu, &insn);
}
