/* System instructions, segment loads, interrupt and exception delivery (SDM Vol. 3 chapters
 * 3, 5 and 6; Vol. 2 for each instruction).
 *
 * Long mode is complete enough for a 64-bit kernel: IDT delivery with IST and privilege-change
 * stack switches, #DF and triple faults, IRET, SYSCALL/SYSRET, SWAPGS, MSRs, control registers.
 * Real mode: delivery through the IVT and IRET. Not yet: 32-bit protected-mode delivery (raise a
 * triple fault rather than guess) and IRET,
 * call gates, task switches. Debug registers and single step are debug.c's. */
#include "cpu/emu/alu.h"
#include "cpu/emu/exec.h"

#include <string.h>
#include <time.h>

#define CR0_MP (1ull << 1)
#define CR0_EM (1ull << 2)
#define CR0_TS (1ull << 3)
#define CR0_NE (1ull << 5)
#define CR0_WP (1ull << 16)
#define CR0_AM (1ull << 18)
#define CR0_NW (1ull << 29)
#define CR0_CD (1ull << 30)
#define CR4_TSD (1ull << 2)
#define CR4_DE (1ull << 3)
#define CR4_PSE (1ull << 4)
#define CR4_PGE (1ull << 7)
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define CR4_SMEP (1ull << 20)
#define EFER_SCE (1ull << 0)
#define EFER_NXE (1ull << 11)

/* CR4 bits the guest may set: those of features CPUID advertises (cpuid.c). */
#define CR4_MCE (1ull << 6)
#define CR4_PCE (1ull << 8)
#define CR4_WRITABLE                                                                               \
	(CR4_TSD | CR4_DE | CR4_PSE | CR4_PAE | CR4_MCE | CR4_PGE | CR4_PCE | CR4_OSFXSR |         \
	 CR4_OSXMMEXCPT)
#define CR0_WRITABLE                                                                               \
	(CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_NW | CR0_CD | \
	 CR0_PG)

#define MSR_TSC 0x10
#define MSR_APIC_BASE 0x1b
#define MSR_BIOS_SIGN_ID 0x8b /* microcode update signature */
#define MSR_ARCH_CAPABILITIES 0x10a
#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define MSR_MISC_ENABLE 0x1a0
#define MSR_PAT 0x277
#define MSR_EFER 0xc0000080
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SFMASK 0xc0000084
#define MSR_FS_BASE 0xc0000100
#define MSR_GS_BASE 0xc0000101
#define MSR_KERNEL_GS_BASE 0xc0000102
#define MSR_TSC_AUX 0xc0000103

/* Segment descriptor type bits (S = 1). */
#define DESC_ACCESSED 1
#define DESC_WRITABLE 2 /* data */
#define DESC_READABLE 2 /* code */
#define DESC_CONFORMING 4 /* code */
#define DESC_CODE 8

static int gp(struct emu_cpu *cpu, uint32_t error_code)
{
	return emu_raise(cpu, EMU_VEC_GP, true, error_code);
}

static bool canonical(uint64_t v)
{
	return (uint64_t)((int64_t)(v << 16) >> 16) == v;
}

/* ---- descriptors ---- */

/* Read the 8-byte (or 16-byte system, in long mode) descriptor `selector` names. */
static int descriptor_read(struct emu_cpu *cpu, uint16_t selector, bool wide, uint64_t raw[2],
			   uint32_t ext)
{
	uint64_t base = cpu->s.gdt.base, limit = cpu->s.gdt.limit;
	unsigned index = selector & ~7u;
	int rc;

	if (selector & 4) { /* LDT */
		if (cpu->s.seg[SEG_LDTR].unusable || !cpu->s.seg[SEG_LDTR].present)
			return gp(cpu, (selector & 0xfffc) | ext);
		base = cpu->s.seg[SEG_LDTR].base;
		limit = cpu->s.seg[SEG_LDTR].limit;
	}
	if (index + (wide ? 15u : 7u) > limit)
		return gp(cpu, (selector & 0xfffc) | ext);
	raw[1] = 0;
	if ((rc = cpu->mem->read(cpu, base + index, raw, wide ? 16 : 8, EMU_ACCESS_SYS_READ)))
		return rc;
	return EMU_OK;
}

static void segment_from_descriptor(struct cpu_segment *seg, uint16_t selector,
				    const uint64_t raw[2], bool wide)
{
	uint64_t d = raw[0];

	seg->selector = selector;
	seg->limit = (uint32_t)((d & 0xffff) | ((d >> 32) & 0xf0000));
	seg->base = ((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000);
	if (wide)
		seg->base |= (raw[1] & 0xffffffff) << 32;
	seg->type = (d >> 40) & 0xf;
	seg->s = (d >> 44) & 1;
	seg->dpl = (d >> 45) & 3;
	seg->present = (d >> 47) & 1;
	seg->avl = (d >> 52) & 1;
	seg->l = (d >> 53) & 1;
	seg->db = (d >> 54) & 1;
	seg->g = (d >> 55) & 1;
	if (seg->g)
		seg->limit = (seg->limit << 12) | 0xfff;
	seg->unusable = 0;
}

static void segment_null(struct cpu_segment *seg, uint16_t selector)
{
	memset(seg, 0, sizeof(*seg));
	seg->selector = selector;
	seg->unusable = 1;
}

/* MOV/POP to SS, DS, ES, FS, GS and LSS/LFS/LGS (SDM Vol. 2, MOV: protected-mode checks). */
static int segment_load_data(struct emu_cpu *cpu, unsigned sreg, uint16_t selector)
{
	unsigned rpl = selector & 3;
	struct cpu_segment seg;
	uint64_t raw[2];
	int rc;

	if (!(cpu->s.cr0 & CR0_PE)) { /* real mode: base = selector * 16 */
		cpu->s.seg[sreg].selector = selector;
		cpu->s.seg[sreg].base = (uint64_t)selector << 4;
		return EMU_OK;
	}
	if ((selector & ~3u) == 0) {
		/* A null SS is allowed in 64-bit mode below CPL 3 with RPL = CPL. */
		bool null_ss_ok = cpu->mode == EMU_MODE_64 && cpu->cpl != 3 && rpl == cpu->cpl;

		if (sreg == SEG_SS && !null_ss_ok)
			return gp(cpu, 0);
		segment_null(&cpu->s.seg[sreg], selector);
		if (sreg == SEG_SS)
			cpu->s.seg[sreg].dpl = (uint8_t)cpu->cpl;
		return EMU_OK;
	}
	if ((rc = descriptor_read(cpu, selector, false, raw, 0)))
		return rc;
	segment_from_descriptor(&seg, selector, raw, false);
	if (sreg == SEG_SS) {
		if (rpl != cpu->cpl || !seg.s || (seg.type & DESC_CODE) ||
		    !(seg.type & DESC_WRITABLE) || seg.dpl != cpu->cpl)
			return gp(cpu, selector & 0xfffc);
		if (!seg.present)
			return emu_raise(cpu, EMU_VEC_SS, true, selector & 0xfffc);
	} else {
		bool code = seg.type & DESC_CODE;

		if (!seg.s || (code && !(seg.type & DESC_READABLE)))
			return gp(cpu, selector & 0xfffc);
		bool conforming = code && (seg.type & DESC_CONFORMING);

		if (!conforming && (rpl > seg.dpl || cpu->cpl > seg.dpl))
			return gp(cpu, selector & 0xfffc);
		if (!seg.present)
			return emu_raise(cpu, EMU_VEC_NP, true, selector & 0xfffc);
	}
	/* The accessed bit is not written back to the descriptor table. */
	seg.type |= DESC_ACCESSED;
	if (cpu->mode == EMU_MODE_64 && (sreg == SEG_FS || sreg == SEG_GS))
		seg.base &= 0xffffffff; /* the full base comes from the MSRs */
	cpu->s.seg[sreg] = seg;
	return EMU_OK;
}

/* Check and load a code segment for a far transfer to privilege `cpl` (RET/IRET/JMP/CALL). */
static int segment_check_code(struct emu_cpu *cpu, uint16_t selector, unsigned new_cpl,
			      struct cpu_segment *seg)
{
	uint64_t raw[2];
	int rc;

	if ((selector & ~3u) == 0)
		return gp(cpu, 0);
	if ((rc = descriptor_read(cpu, selector, false, raw, 0)))
		return rc;
	segment_from_descriptor(seg, selector, raw, false);
	if (!seg->s || !(seg->type & DESC_CODE))
		return gp(cpu, selector & 0xfffc);
	if ((seg->type & DESC_CONFORMING) ? seg->dpl > new_cpl : seg->dpl != new_cpl)
		return gp(cpu, selector & 0xfffc);
	if (!seg->present)
		return emu_raise(cpu, EMU_VEC_NP, true, selector & 0xfffc);
	if (seg->l && seg->db)
		return gp(cpu, selector & 0xfffc);
	seg->selector = (uint16_t)((selector & ~3u) | new_cpl);
	seg->type |= DESC_ACCESSED;
	return EMU_OK;
}

static void load_code_segment(struct emu_cpu *cpu, const struct cpu_segment *cs, unsigned cpl)
{
	cpu->s.seg[SEG_CS] = *cs;
	emu_update_mode(cpu);
	cpu->cpl = cpl; /* SS.DPL may lag behind while SS is being loaded */
}

/* Outer-privilege returns null data segments the new CPL may not use (SDM: RET, IRET). */
static void null_inaccessible_segments(struct emu_cpu *cpu)
{
	static const unsigned segs[4] = { SEG_ES, SEG_DS, SEG_FS, SEG_GS };

	for (unsigned i = 0; i < 4; i++) {
		struct cpu_segment *s = &cpu->s.seg[segs[i]];
		bool conforming_code = (s->type & DESC_CODE) && (s->type & DESC_CONFORMING);

		if (!s->unusable && !conforming_code && s->dpl < cpu->cpl)
			segment_null(s, 0);
	}
}

/* ---- interrupt and exception delivery (SDM Vol. 3 §6.14, 64-bit mode) ---- */

static bool exception_is_contributory(unsigned vector)
{
	return vector == EMU_VEC_DE || (vector >= EMU_VEC_TS && vector <= EMU_VEC_GP);
}

static int deliver_long_mode(struct emu_cpu *cpu, unsigned vector, enum emu_event_kind kind,
			     bool has_error_code, uint32_t error_code, uint64_t rip)
{
	uint32_t ext = kind == EMU_EVENT_SOFTWARE ? 0 : 1, idt_err = vector * 8 + 2 + ext;
	uint64_t cr2 = cpu->exc.cr2;
	unsigned old_cpl = cpu->cpl;
	struct cpu_segment cs;
	uint64_t gate[2], frame[6], new_rsp, tss_off = 0, rflags = emu_flags_get(cpu);
	unsigned type, dpl, ist, new_cpl, n = 0;
	uint16_t selector;
	int rc;

	if (vector * 16 + 15 > cpu->s.idt.limit)
		return gp(cpu, idt_err);
	if ((rc = cpu->mem->read(cpu, cpu->s.idt.base + vector * 16, gate, 16,
				 EMU_ACCESS_SYS_READ)))
		return rc;
	type = (gate[0] >> 40) & 0x1f; /* S bit included: must be 0 */
	dpl = (gate[0] >> 45) & 3;
	if (type != 0xE && type != 0xF)
		return gp(cpu, idt_err);
	if (kind == EMU_EVENT_SOFTWARE && dpl < cpu->cpl)
		return gp(cpu, idt_err);
	if (!((gate[0] >> 47) & 1))
		return emu_raise(cpu, EMU_VEC_NP, true, idt_err);
	selector = (uint16_t)(gate[0] >> 16);
	ist = (gate[0] >> 32) & 7;
	if ((selector & ~3u) == 0)
		return gp(cpu, ext);
	{
		uint64_t raw[2];

		if ((rc = descriptor_read(cpu, selector, false, raw, ext)))
			return rc;
		segment_from_descriptor(&cs, selector, raw, false);
	}
	if (!cs.s || !(cs.type & DESC_CODE) || !cs.l || cs.db || cs.dpl > cpu->cpl)
		return gp(cpu, (selector & 0xfffc) | ext);
	if (!cs.present)
		return emu_raise(cpu, EMU_VEC_NP, true, (selector & 0xfffc) | ext);
	new_cpl = (cs.type & DESC_CONFORMING) ? cpu->cpl : cs.dpl;
	/* The stack: IST if the gate names one, else RSPn of the TSS on a privilege change. */
	new_rsp = cpu->s.gpr[CPU_RSP];
	if (ist)
		tss_off = 36 + 8 * (ist - 1);
	else if (new_cpl < cpu->cpl)
		tss_off = 4 + 8 * new_cpl;
	if (tss_off) {
		uint32_t tss_err = (cpu->s.seg[SEG_TR].selector & 0xfffc) | ext;

		if (tss_off + 7 > cpu->s.seg[SEG_TR].limit)
			return emu_raise(cpu, EMU_VEC_TS, true, tss_err);
		if ((rc = cpu->mem->read(cpu, cpu->s.seg[SEG_TR].base + tss_off, &new_rsp, 8,
					 EMU_ACCESS_SYS_READ)))
			return rc;
		if (!canonical(new_rsp))
			return emu_raise(cpu, EMU_VEC_SS, true, ext);
	}
	new_rsp &= ~0xfull;
	/* The frame, lowest address first: [error code], RIP, CS, RFLAGS, RSP, SS. */
	if (has_error_code)
		frame[n++] = error_code;
	frame[n++] = rip;
	frame[n++] = cpu->s.seg[SEG_CS].selector;
	frame[n++] = rflags;
	frame[n++] = cpu->s.gpr[CPU_RSP];
	frame[n++] = cpu->s.seg[SEG_SS].selector;
	cpu->cpl = new_cpl; /* the pushes are supervisor accesses when the CPL drops */
	if ((rc = cpu->mem->write(cpu, new_rsp - 8 * n, frame, 8 * n))) {
		cpu->cpl = old_cpl;
		return rc;
	}
	if (new_cpl < old_cpl) {
		segment_null(&cpu->s.seg[SEG_SS], (uint16_t)new_cpl);
		cpu->s.seg[SEG_SS].dpl = (uint8_t)new_cpl;
	}
	cpu->s.gpr[CPU_RSP] = new_rsp - 8 * n;
	cs.selector = (uint16_t)((selector & ~3u) | new_cpl);
	cs.type |= DESC_ACCESSED;
	load_code_segment(cpu, &cs, new_cpl);
	cpu->s.rip = (gate[0] & 0xffff) | ((gate[0] >> 32) & 0xffff0000) | (gate[1] << 32);
	cpu->s.rflags &= ~(EMU_FLAG_TF | EMU_FLAG_NT | EMU_FLAG_RF | EMU_FLAG_VM);
	if (type == 0xE) /* interrupt gate */
		cpu->s.rflags &= ~EMU_FLAG_IF;
	if (vector == EMU_VEC_PF && kind == EMU_EVENT_EXCEPTION)
		cpu->s.cr2 = cr2;
	return EMU_OK;
}

/* Real mode (SDM Vol. 3 §20.1.4): the IVT at IDTR.base holds IP:CS pairs; FLAGS, CS and IP
 * are pushed (no error code), IF, TF, AC and RF cleared. An entry past the IDT limit is #GP. */
static int deliver_real_mode(struct emu_cpu *cpu, unsigned vector, uint64_t rip)
{
	uint64_t ss_mask = cpu->s.seg[SEG_SS].db ? 0xffffffffull : 0xffffull;
	uint64_t sp = (cpu->s.gpr[CPU_RSP] - 6) & ss_mask;
	uint16_t frame[3], entry[2];
	struct cpu_segment cs;
	int rc;

	if (vector * 4 + 3 > cpu->s.idt.limit)
		return gp(cpu, vector * 8 + 2);
	if ((rc = cpu->mem->read(cpu, (cpu->s.idt.base + vector * 4) & 0xffffffffull, entry, 4,
				 EMU_ACCESS_SYS_READ)))
		return rc;
	frame[0] = (uint16_t)rip;
	frame[1] = cpu->s.seg[SEG_CS].selector;
	frame[2] = (uint16_t)emu_flags_get(cpu);
	if ((rc = cpu->mem->write(cpu, (cpu->s.seg[SEG_SS].base + sp) & 0xffffffffull, frame, 6)))
		return rc;
	cpu->s.gpr[CPU_RSP] = (cpu->s.gpr[CPU_RSP] & ~ss_mask) | sp;
	cs = cpu->s.seg[SEG_CS];
	cs.selector = entry[1];
	cs.base = (uint64_t)entry[1] << 4;
	load_code_segment(cpu, &cs, 0);
	cpu->s.rip = entry[0];
	cpu->s.rflags &= ~(EMU_FLAG_IF | EMU_FLAG_TF | EMU_FLAG_AC | EMU_FLAG_RF);
	return EMU_OK;
}

/* ---- 32-bit protected mode (SDM Vol. 3 §6.12): 8-byte gates, 16- and 32-bit frames ---- */

/* SS:ESP of privilege level `cpl` from the 32-bit TSS (ESPn at 4 + 8n, SSn at 8 + 8n). */
static int tss32_stack(struct emu_cpu *cpu, unsigned cpl, uint32_t ext, struct cpu_segment *ss,
		       uint32_t *esp)
{
	const struct cpu_segment *tr = &cpu->s.seg[SEG_TR];
	uint32_t off = 4 + 8 * cpl, tss_err = (tr->selector & 0xfffc) | ext, v[2];
	uint64_t raw[2];
	uint16_t sel;
	int rc;

	/* A 16-bit TSS (types 1/3) is not supported: #TS as for a TSS too small. */
	if ((tr->type != 0x9 && tr->type != 0xB) || off + 7 > tr->limit)
		return emu_raise(cpu, EMU_VEC_TS, true, tss_err);
	if ((rc = cpu->mem->read(cpu, (tr->base + off) & 0xffffffffull, v, 8, EMU_ACCESS_SYS_READ)))
		return rc;
	*esp = v[0];
	sel = (uint16_t)v[1];
	if ((sel & ~3u) == 0)
		return emu_raise(cpu, EMU_VEC_TS, true, ext);
	if ((rc = descriptor_read(cpu, sel, false, raw, ext)))
		return rc;
	segment_from_descriptor(ss, sel, raw, false);
	if ((sel & 3) != cpl || ss->dpl != cpl || !ss->s || (ss->type & DESC_CODE) ||
	    !(ss->type & DESC_WRITABLE))
		return emu_raise(cpu, EMU_VEC_TS, true, (sel & 0xfffc) | ext);
	if (!ss->present)
		return emu_raise(cpu, EMU_VEC_SS, true, (sel & 0xfffc) | ext);
	ss->type |= DESC_ACCESSED;
	return EMU_OK;
}

/* Push n values of `width` bytes (lowest address first) below `esp` on `ss`; the new stack
 * pointer (16 bits of it for a 16-bit SS) in *sp. An expand-up limit is checked. */
static int push_frame32(struct emu_cpu *cpu, const struct cpu_segment *ss, uint32_t esp,
			const uint32_t *vals, unsigned n, unsigned width, uint32_t *sp,
			uint32_t ss_err)
{
	uint32_t mask = ss->db ? 0xffffffffu : 0xffffu, bottom = (esp - n * width) & mask;
	uint8_t buf[6 * 4];

	for (unsigned i = 0; i < n; i++)
		memcpy(buf + i * width, &vals[i], width);
	if (!(ss->type & 4) && (uint64_t)bottom + n * width - 1 > ss->limit)
		return emu_raise(cpu, EMU_VEC_SS, true, ss_err);
	*sp = bottom;
	return cpu->mem->write(cpu, (ss->base + bottom) & 0xffffffffull, buf, n * width);
}

/* The code segment an interrupt gate names: a present code segment with DPL <= CPL. */
static int gate_code_segment(struct emu_cpu *cpu, uint16_t selector, uint32_t ext,
			     struct cpu_segment *cs)
{
	uint64_t raw[2];
	int rc;

	if ((selector & ~3u) == 0)
		return gp(cpu, ext);
	if ((rc = descriptor_read(cpu, selector, false, raw, ext)))
		return rc;
	segment_from_descriptor(cs, selector, raw, false);
	if (!cs->s || !(cs->type & DESC_CODE) || cs->dpl > cpu->cpl)
		return gp(cpu, (selector & 0xfffc) | ext);
	if (!cs->present)
		return emu_raise(cpu, EMU_VEC_NP, true, (selector & 0xfffc) | ext);
	return EMU_OK;
}

/* Interrupt and trap gates, 16- and 32-bit, to the same or an inner privilege level (a stack
 * from the 32-bit TSS). Task gates and virtual-8086 mode are not supported: a task gate is
 * refused like a bad gate type (#GP), so a guest using one sees a fault, not silence. */
static int deliver_protected_mode(struct emu_cpu *cpu, unsigned vector, enum emu_event_kind kind,
				  bool has_error_code, uint32_t error_code, uint64_t rip)
{
	uint32_t ext = kind == EMU_EVENT_SOFTWARE ? 0 : 1, idt_err = vector * 8 + 2 + ext;
	uint64_t cr2 = cpu->exc.cr2, gate;
	unsigned old_cpl = cpu->cpl, type, new_cpl, width, n = 0;
	struct cpu_segment cs, ss = cpu->s.seg[SEG_SS];
	uint32_t vals[6], esp = (uint32_t)cpu->s.gpr[CPU_RSP], sp = 0, rflags;
	int rc;

	if (vector * 8 + 7 > cpu->s.idt.limit)
		return gp(cpu, idt_err);
	if ((rc = cpu->mem->read(cpu, (cpu->s.idt.base + vector * 8) & 0xffffffffull, &gate, 8,
				 EMU_ACCESS_SYS_READ)))
		return rc;
	type = (gate >> 40) & 0x1f; /* S bit included: must be 0 */
	if (type != 0x6 && type != 0x7 && type != 0xE && type != 0xF)
		return gp(cpu, idt_err);
	if (kind == EMU_EVENT_SOFTWARE && ((gate >> 45) & 3) < cpu->cpl)
		return gp(cpu, idt_err);
	if (!((gate >> 47) & 1))
		return emu_raise(cpu, EMU_VEC_NP, true, idt_err);
	if ((rc = gate_code_segment(cpu, (uint16_t)(gate >> 16), ext, &cs)))
		return rc;
	new_cpl = (cs.type & DESC_CONFORMING) ? cpu->cpl : cs.dpl;
	width = (type & 8) ? 4 : 2;
	if (new_cpl < cpu->cpl && (rc = tss32_stack(cpu, new_cpl, ext, &ss, &esp)))
		return rc;
	rflags = (uint32_t)emu_flags_get(cpu);
	if (has_error_code)
		vals[n++] = error_code;
	vals[n++] = (uint32_t)rip;
	vals[n++] = cpu->s.seg[SEG_CS].selector;
	vals[n++] = rflags;
	if (new_cpl < cpu->cpl) {
		vals[n++] = (uint32_t)cpu->s.gpr[CPU_RSP];
		vals[n++] = cpu->s.seg[SEG_SS].selector;
	}
	cpu->cpl = new_cpl; /* the pushes are supervisor accesses when the CPL drops */
	rc = push_frame32(cpu, &ss, esp, vals, n, width, &sp,
			  new_cpl < old_cpl ? (ss.selector & 0xfffc) | ext : ext);
	if (rc) {
		cpu->cpl = old_cpl;
		return rc;
	}
	if (new_cpl < old_cpl)
		cpu->s.gpr[CPU_RSP] = esp; /* the TSS's ESP, then the frame below it */
	cpu->s.seg[SEG_SS] = ss;
	cpu->s.gpr[CPU_RSP] = ss.db ? sp : (cpu->s.gpr[CPU_RSP] & 0xffff0000u) | sp;
	cs.selector = (uint16_t)((cs.selector & ~3u) | new_cpl);
	cs.type |= DESC_ACCESSED;
	load_code_segment(cpu, &cs, new_cpl);
	cpu->s.rip = (gate & 0xffff) | (width == 4 ? (gate >> 32) & 0xffff0000u : 0);
	cpu->s.rflags &= ~(EMU_FLAG_TF | EMU_FLAG_NT | EMU_FLAG_RF | EMU_FLAG_VM);
	if (!(type & 1)) /* interrupt gate */
		cpu->s.rflags &= ~EMU_FLAG_IF;
	if (vector == EMU_VEC_PF && kind == EMU_EVENT_EXCEPTION)
		cpu->s.cr2 = cr2;
	return EMU_OK;
}

static int deliver_once(struct emu_cpu *cpu, unsigned vector, enum emu_event_kind kind,
			bool has_error_code, uint32_t error_code, uint64_t rip)
{
	cpu->no_single_step = true; /* INT n and friends are not single-stepped (debug.c) */
	if (!(cpu->s.cr0 & CR0_PE))
		return deliver_real_mode(cpu, vector, rip);
	if (!(cpu->s.efer & EFER_LMA))
		return deliver_protected_mode(cpu, vector, kind, has_error_code, error_code, rip);
	return deliver_long_mode(cpu, vector, kind, has_error_code, error_code, rip);
}

/* SDM Vol. 3 §6.15, interrupt 8: which second exception turns into #DF. */
int emu_deliver_event(struct emu_cpu *cpu, unsigned vector, enum emu_event_kind kind,
		      bool has_error_code, uint32_t error_code, uint64_t rip)
{
	uint64_t fault_rip = cpu->s.rip;
	int rc;

	for (unsigned attempt = 0; attempt < 3; attempt++) {
		unsigned second;

		rc = deliver_once(cpu, vector, kind, has_error_code, error_code, rip);
		if (rc != EMU_EXCEPTION)
			return rc;
		second = cpu->exc.vector;
		if (vector == EMU_VEC_DF)
			return EMU_SHUTDOWN;
		if (kind == EMU_EVENT_EXCEPTION &&
		    ((exception_is_contributory(vector) && exception_is_contributory(second)) ||
		     (vector == EMU_VEC_PF &&
		      (second == EMU_VEC_PF || exception_is_contributory(second))))) {
			vector = EMU_VEC_DF;
			has_error_code = true;
			error_code = 0;
		} else {
			vector = second;
			has_error_code = cpu->exc.has_error_code;
			error_code = cpu->exc.error_code;
		}
		kind = EMU_EVENT_EXCEPTION;
		rip = fault_rip; /* the fault happened delivering: it reports the instruction */
	}
	return EMU_SHUTDOWN;
}

bool emu_interrupts_enabled(const struct emu_cpu *cpu)
{
	return (cpu->s.rflags & EMU_FLAG_IF) && !cpu->interrupt_shadow;
}

int emu_inject_interrupt(struct emu_cpu *cpu, unsigned vector)
{
	cpu->interrupt_shadow = false;
	return emu_deliver_event(cpu, vector, EMU_EVENT_EXTERNAL, false, 0, cpu->s.rip);
}

int emu_deliver_exception(struct emu_cpu *cpu)
{
	/* A fault's frame has RF set, so that the instruction, restarted by the handler's IRET,
	 * does not hit its own execute breakpoint again (SDM Vol. 3 §18.3.1.1); not #DB's: an
	 * instruction breakpoint's frame keeps RF clear, a trap's holds the current RF. */
	if (cpu->exc.vector != EMU_VEC_DB)
		cpu->s.rflags |= EMU_FLAG_RF;
	return emu_deliver_event(cpu, cpu->exc.vector, EMU_EVENT_EXCEPTION,
				 cpu->exc.has_error_code, cpu->exc.error_code, cpu->s.rip);
}

/* INT n, INT3, INTO, INT1: traps, the frame holds the next instruction. A fault while
 * delivering is reported against the INT instruction itself. */
static int exec_software_interrupt(struct exec *x, unsigned vector, enum emu_event_kind kind)
{
	struct emu_cpu *cpu = x->cpu;
	int rc = deliver_once(cpu, vector, kind, false, 0, x->next_rip);

	if (rc == EMU_OK)
		x->next_rip = cpu->s.rip; /* emu_execute() commits next_rip */
	return rc;
}

/* The flags IRET may change at the current CPL and IOPL (VM, VIF, VIP stay: no v8086). */
static uint64_t iret_writable_flags(const struct emu_cpu *cpu, uint64_t rflags, unsigned size)
{
	unsigned iopl = (unsigned)((rflags & EMU_FLAG_IOPL) >> 12);
	uint64_t writable = EMU_FLAGS_ARITH | EMU_FLAG_TF | EMU_FLAG_DF | EMU_FLAG_NT |
			    EMU_FLAG_RF | EMU_FLAG_AC | EMU_FLAG_ID;

	if (cpu->cpl == 0)
		writable |= EMU_FLAG_IOPL | EMU_FLAG_VIF | EMU_FLAG_VIP;
	if (cpu->cpl <= iopl)
		writable |= EMU_FLAG_IF;
	return writable & emu_size_mask(size);
}

/* IRET in 32-bit protected mode (SDM Vol. 2, IRET: protected mode), to the same or an outer
 * privilege level. Task returns (NT) and returns to virtual-8086 mode are not supported and
 * raise #GP(0). */
/* IRET's new SS (not null): a present, writable data segment at the new CPL (SDM Vol. 2A, IRET). */
static int iret_load_ss(struct emu_cpu *cpu, uint16_t ss_sel, unsigned new_cpl, struct cpu_segment *ss)
{
	uint64_t raw[2];
	int rc;

	if ((rc = descriptor_read(cpu, ss_sel, false, raw, 0)))
		return rc;
	segment_from_descriptor(ss, ss_sel, raw, false);
	if ((ss_sel & 3) != new_cpl || !ss->s || (ss->type & DESC_CODE) ||
	    !(ss->type & DESC_WRITABLE) || ss->dpl != new_cpl)
		return gp(cpu, ss_sel & 0xfffc);
	if (!ss->present)
		return emu_raise(cpu, EMU_VEC_SS, true, ss_sel & 0xfffc);
	return EMU_OK;
}

static int exec_iret_protected(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned size = x->insn->opsize, new_cpl;
	uint64_t v[5], rflags = emu_flags_get(cpu), writable;
	struct cpu_segment cs, ss = cpu->s.seg[SEG_SS];
	bool outer;
	int rc;

	if (rflags & EMU_FLAG_NT)
		return gp(cpu, 0);
	for (unsigned i = 0; i < 3; i++)
		if ((rc = exec_stack_peek(x, size, i * size, &v[i])))
			return rc;
	if (size == 4 && (v[2] & EMU_FLAG_VM) && cpu->cpl == 0)
		return gp(cpu, 0);
	new_cpl = v[1] & 3;
	if (new_cpl < cpu->cpl)
		return gp(cpu, (uint32_t)v[1] & 0xfffc);
	if ((rc = segment_check_code(cpu, (uint16_t)v[1], new_cpl, &cs)))
		return rc;
	if ((v[0] & emu_size_mask(size)) > cs.limit)
		return gp(cpu, 0);
	if (new_cpl > cpu->cpl) {
		uint16_t ss_sel;

		for (unsigned i = 3; i < 5; i++)
			if ((rc = exec_stack_peek(x, size, i * size, &v[i])))
				return rc;
		ss_sel = (uint16_t)v[4];
		if ((ss_sel & ~3u) == 0)
			return gp(cpu, 0);
		if ((rc = iret_load_ss(cpu, ss_sel, new_cpl, &ss)))
			return rc;
		ss.type |= DESC_ACCESSED;
	}
	writable = iret_writable_flags(cpu, rflags, size);
	cpu->s.rflags = (rflags & ~writable) | (v[2] & writable) | EMU_FLAG_FIXED1;
	outer = new_cpl > cpu->cpl;
	if (outer) {
		uint64_t mask = ss.db ? 0xffffffffull : 0xffffull;

		cpu->s.seg[SEG_SS] = ss;
		cpu->s.gpr[CPU_RSP] = (cpu->s.gpr[CPU_RSP] & ~mask) | (v[3] & mask);
	} else {
		cpu->s.gpr[CPU_RSP] = exec_rsp_adjust(x, 3 * size);
	}
	load_code_segment(cpu, &cs, new_cpl);
	x->next_rip = v[0] & emu_size_mask(size);
	if (outer)
		null_inaccessible_segments(cpu);
	return EMU_OK;
}

/* IRET in 64-bit mode (SDM Vol. 2, IRET: IA-32e mode). */
static int exec_iret(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned size = x->insn->opsize, new_cpl;
	uint64_t v[5], writable, rflags = emu_flags_get(cpu);
	struct cpu_segment cs, ss;
	uint16_t cs_sel, ss_sel;
	int rc;

	if (!(cpu->s.cr0 & CR0_PE)) { /* real mode: IP, CS, FLAGS (IRETD: EFLAGS but VM/VIF/VIP) */
		uint64_t mask = size == 2 ? 0xffffull : 0x257fd5ull;

		for (unsigned i = 0; i < 3; i++)
			if ((rc = exec_stack_peek(x, size, i * size, &v[i])))
				return rc;
		cs = cpu->s.seg[SEG_CS];
		cs.selector = (uint16_t)v[1];
		cs.base = (uint64_t)(uint16_t)v[1] << 4;
		cpu->s.gpr[CPU_RSP] = exec_rsp_adjust(x, 3 * size);
		load_code_segment(cpu, &cs, 0);
		cpu->cc.op = EMU_CC_NONE;
		cpu->s.rflags = (rflags & ~mask) | (v[2] & mask) | EMU_FLAG_FIXED1;
		x->next_rip = v[0] & emu_size_mask(size);
		return EMU_OK;
	}
	if (!(cpu->s.efer & EFER_LMA))
		return exec_iret_protected(x);
	if (rflags & EMU_FLAG_NT)
		return gp(cpu, 0);
	for (unsigned i = 0; i < 5; i++)
		if ((rc = exec_stack_peek(x, size, i * size, &v[i])))
			return rc;
	cs_sel = (uint16_t)v[1];
	ss_sel = (uint16_t)v[4];
	new_cpl = cs_sel & 3;
	if (new_cpl < cpu->cpl)
		return gp(cpu, cs_sel & 0xfffc);
	if ((rc = segment_check_code(cpu, cs_sel, new_cpl, &cs)))
		return rc;
	if (cs.l && !canonical(v[0]))
		return gp(cpu, 0);
	/* SS: null only for a 64-bit target below CPL 3. */
	if ((ss_sel & ~3u) == 0) {
		if (!cs.l || new_cpl == 3 || (ss_sel & 3) != new_cpl)
			return gp(cpu, 0);
		segment_null(&ss, ss_sel);
		ss.dpl = (uint8_t)new_cpl;
	} else if ((rc = iret_load_ss(cpu, ss_sel, new_cpl, &ss))) {
		return rc;
	}
	/* RFLAGS: IOPL only at CPL 0, IF only at CPL <= IOPL; VM, VIF, VIP stay (no v8086). */
	writable = iret_writable_flags(cpu, rflags, size);
	cpu->s.rflags = (rflags & ~writable) | (v[2] & writable) | EMU_FLAG_FIXED1;
	cpu->s.gpr[CPU_RSP] = v[3];
	if (size == 4)
		cpu->s.gpr[CPU_RSP] &= 0xffffffff;
	cpu->s.seg[SEG_SS] = ss;
	load_code_segment(cpu, &cs, new_cpl);
	x->next_rip = cs.l ? v[0] : v[0] & 0xffffffff;
	if (new_cpl > 0)
		null_inaccessible_segments(cpu);
	return EMU_OK;
}

/* RETF (CB, CA iw): same or outer privilege, no call gates. */
static int exec_far_return(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned size = x->insn->opsize, new_cpl;
	uint64_t rip, sel, imm = x->insn->opcode == 0xCA ? x->insn->imm : 0;
	struct cpu_segment cs;
	int rc;

	if ((rc = exec_stack_peek(x, size, 0, &rip)) || (rc = exec_stack_peek(x, size, size, &sel)))
		return rc;
	if (!(cpu->s.cr0 & CR0_PE)) { /* real mode: CS = selector, base = selector * 16 */
		cs = cpu->s.seg[SEG_CS];
		cs.selector = (uint16_t)sel;
		cs.base = (uint64_t)(uint16_t)sel << 4;
		cpu->s.gpr[CPU_RSP] = exec_rsp_adjust(x, (int64_t)(2 * size + imm));
		load_code_segment(cpu, &cs, 0);
		x->next_rip = rip & emu_size_mask(size);
		return EMU_OK;
	}
	new_cpl = sel & 3;
	if (new_cpl < cpu->cpl)
		return gp(cpu, (uint32_t)sel & 0xfffc);
	if ((rc = segment_check_code(cpu, (uint16_t)sel, new_cpl, &cs)))
		return rc;
	if (new_cpl > cpu->cpl) { /* to an outer level: SS:RSP follow on the stack */
		uint64_t rsp, ss_sel;
		unsigned saved_cpl = cpu->cpl;

		if ((rc = exec_stack_peek(x, size, 2 * size + imm, &rsp)) ||
		    (rc = exec_stack_peek(x, size, 3 * size + imm, &ss_sel)))
			return rc;
		cpu->cpl = new_cpl;
		rc = segment_load_data(cpu, SEG_SS, (uint16_t)ss_sel);
		cpu->cpl = saved_cpl;
		if (rc)
			return rc;
		cpu->s.gpr[CPU_RSP] = rsp + imm;
		load_code_segment(cpu, &cs, new_cpl);
		null_inaccessible_segments(cpu);
	} else {
		cpu->s.gpr[CPU_RSP] = exec_rsp_adjust(x, (int64_t)(2 * size + imm));
		load_code_segment(cpu, &cs, new_cpl);
	}
	x->next_rip = cpu->mode == EMU_MODE_64 ? rip : rip & emu_size_mask(size);
	return EMU_OK;
}

/* A far JMP/CALL to sel:offset: a code segment of the same privilege (no call gates or task
 * switches yet), or in real mode simply CS = sel, base = sel * 16. */
static int far_transfer(struct exec *x, uint16_t sel, uint64_t offset, bool call)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned size = x->insn->opsize;
	struct cpu_segment cs;
	int rc;

	if (!(cpu->s.cr0 & CR0_PE)) {
		cs = cpu->s.seg[SEG_CS];
		cs.selector = sel;
		cs.base = (uint64_t)sel << 4;
	} else {
		if ((rc = segment_check_code(cpu, sel, cpu->cpl, &cs)))
			return rc;
		if ((sel & 3) > cpu->cpl)
			return gp(cpu, sel & 0xfffc);
	}
	if (call) {
		uint64_t old_rsp = cpu->s.gpr[CPU_RSP];

		if ((rc = exec_push(x, size, cpu->s.seg[SEG_CS].selector)) ||
		    (rc = exec_push(x, size, x->next_rip))) {
			cpu->s.gpr[CPU_RSP] = old_rsp;
			return rc;
		}
	}
	load_code_segment(cpu, &cs, cpu->cpl);
	x->next_rip = cpu->mode == EMU_MODE_64 ? offset : offset & emu_size_mask(size);
	return EMU_OK;
}

/* Read a far pointer m16:16/32/64 (offset, then selector) at the memory operand; #UD for a
 * register operand. */
static int read_far_pointer(struct exec *x, uint64_t *offset, uint64_t *sel)
{
	unsigned size = x->insn->opsize;
	int rc;

	if (x->insn->mod == 3)
		return emu_raise(x->cpu, EMU_VEC_UD, false, 0);
	if ((rc = exec_mem_read(x, x->la, size, offset)))
		return rc;
	return exec_mem_read(x, x->la + size, 2, sel);
}

/* JMP FAR / CALL FAR m16:16/32/64 (FF /5, FF /3). */
static int exec_far_jump(struct exec *x, bool call)
{
	uint64_t offset, sel;
	int rc = read_far_pointer(x, &offset, &sel);

	if (rc)
		return rc;
	return far_transfer(x, (uint16_t)sel, offset, call);
}

/* ---- SYSCALL / SYSRET (SDM Vol. 2) ---- */

static void flat_segment(struct cpu_segment *seg, uint16_t selector, bool code, unsigned dpl,
			 bool l, bool db)
{
	memset(seg, 0, sizeof(*seg));
	seg->selector = selector;
	seg->limit = 0xffffffff;
	seg->type = code ? 0xB : 0x3; /* execute/read accessed, read/write accessed */
	seg->s = 1;
	seg->dpl = (uint8_t)dpl;
	seg->present = 1;
	seg->l = l;
	seg->db = db;
	seg->g = 1;
}

static int exec_syscall(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	uint16_t sel = (uint16_t)(cpu->msr.star >> 32) & 0xfffc;
	struct cpu_segment cs;

	cpu->no_single_step = true; /* SFMASK clears TF: no trap into the kernel's entry */
	if (cpu->mode != EMU_MODE_64 || !(cpu->s.efer & EFER_SCE))
		return exec_ud(x); /* compatibility-mode SYSCALL is not supported */
	cpu->s.gpr[CPU_RCX] = x->next_rip;
	cpu->s.gpr[CPU_R11] = emu_flags_get(cpu) & ~EMU_FLAG_RF;
	cpu->s.rflags &= ~(cpu->msr.sfmask | EMU_FLAG_RF);
	cpu->s.rflags |= EMU_FLAG_FIXED1;
	flat_segment(&cs, sel, true, 0, true, false);
	flat_segment(&cpu->s.seg[SEG_SS], (uint16_t)(sel + 8), false, 0, false, true);
	load_code_segment(cpu, &cs, 0);
	x->next_rip = cpu->msr.lstar;
	return EMU_OK;
}

static int exec_sysret(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	uint16_t base = (uint16_t)(cpu->msr.star >> 48);
	bool to64 = x->insn->opsize == 8;
	struct cpu_segment cs;

	if (cpu->mode != EMU_MODE_64 || !(cpu->s.efer & EFER_SCE))
		return exec_ud(x);
	if (cpu->cpl != 0)
		return gp(cpu, 0);
	if (to64 && !canonical(cpu->s.gpr[CPU_RCX]))
		return gp(cpu, 0); /* Intel: the #GP is taken at CPL 0 */
	cpu->s.rflags = (cpu->s.gpr[CPU_R11] & 0x3c7fd7) | EMU_FLAG_FIXED1;
	cpu->cc.op = EMU_CC_NONE;
	flat_segment(&cs, (uint16_t)((to64 ? base + 16 : base) | 3), true, 3, to64, !to64);
	flat_segment(&cpu->s.seg[SEG_SS], (uint16_t)((base + 8) | 3), false, 3, false, true);
	load_code_segment(cpu, &cs, 3);
	x->next_rip = to64 ? cpu->s.gpr[CPU_RCX] : cpu->s.gpr[CPU_RCX] & 0xffffffff;
	return EMU_OK;
}

/* ---- MSRs ---- */

uint64_t emu_read_tsc(const struct emu_cpu *cpu)
{
	struct timespec ts;

	/* A 1 GHz virtual TSC from the host's monotonic clock: one tick per nanosecond. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + cpu->msr.tsc_offset;
}

static int msr_read(struct emu_cpu *cpu, uint32_t index, uint64_t *v)
{
	switch (index) {
	case MSR_TSC: *v = emu_read_tsc(cpu); break;
	case MSR_APIC_BASE: *v = cpu->s.apic_base; break;
	case MSR_ARCH_CAPABILITIES: *v = EMU_ARCH_CAPABILITIES; break;
	case MSR_BIOS_SIGN_ID: /* microcode revision 1, as on KVM */
		*v = 1ull << 32;
		break;
	case MSR_SYSENTER_CS: *v = cpu->msr.sysenter_cs; break;
	case MSR_SYSENTER_ESP: *v = cpu->msr.sysenter_esp; break;
	case MSR_SYSENTER_EIP: *v = cpu->msr.sysenter_eip; break;
	case MSR_MISC_ENABLE: *v = cpu->msr.misc_enable; break;
	case MSR_PAT: *v = cpu->msr.pat; break;
	case MSR_EFER: *v = cpu->s.efer; break;
	case MSR_STAR: *v = cpu->msr.star; break;
	case MSR_LSTAR: *v = cpu->msr.lstar; break;
	case MSR_CSTAR: *v = cpu->msr.cstar; break;
	case MSR_SFMASK: *v = cpu->msr.sfmask; break;
	case MSR_FS_BASE: *v = cpu->s.seg[SEG_FS].base; break;
	case MSR_GS_BASE: *v = cpu->s.seg[SEG_GS].base; break;
	case MSR_KERNEL_GS_BASE: *v = cpu->msr.kernel_gs_base; break;
	case MSR_TSC_AUX: *v = cpu->msr.tsc_aux; break;
	default:
		return gp(cpu, 0); /* guests probe with rdmsr_safe() */
	}
	return EMU_OK;
}

static int msr_write_efer(struct emu_cpu *cpu, uint64_t v)
{
	uint64_t writable = EFER_SCE | EFER_LME | EFER_NXE;

	if (v & ~(writable | EFER_LMA))
		return gp(cpu, 0);
	/* LME may not change while paging is on (SDM Vol. 3 §9.8.5); LMA is read-only. */
	if ((cpu->s.cr0 & CR0_PG) && ((v ^ cpu->s.efer) & EFER_LME))
		return gp(cpu, 0);
	cpu->s.efer = (cpu->s.efer & EFER_LMA) | (v & writable);
	emu_tlb_flush(cpu, true); /* NXE changes what the TLB allows */
	return EMU_OK;
}

static int msr_write(struct emu_cpu *cpu, uint32_t index, uint64_t v)
{
	switch (index) {
	case MSR_TSC: cpu->msr.tsc_offset += v - emu_read_tsc(cpu); break;
	case MSR_APIC_BASE: cpu->s.apic_base = v; break; /* the LAPIC itself comes with step 3 */
	case MSR_BIOS_SIGN_ID: /* Linux writes 0 before reading the revision: nothing to keep */
		break;
	case MSR_SYSENTER_CS: cpu->msr.sysenter_cs = v; break;
	case MSR_SYSENTER_ESP: cpu->msr.sysenter_esp = v; break;
	case MSR_SYSENTER_EIP: cpu->msr.sysenter_eip = v; break;
	case MSR_MISC_ENABLE: cpu->msr.misc_enable = v; break;
	case MSR_PAT:
		/* Each of the 8 entries must be a valid memory type: 0, 1, 4, 5, 6 or 7. */
		for (unsigned i = 0; i < 8; i++) {
			unsigned t = (v >> (8 * i)) & 0xff;

			if (t > 7 || t == 2 || t == 3)
				return gp(cpu, 0);
		}
		cpu->msr.pat = v;
		break;
	case MSR_EFER: return msr_write_efer(cpu, v);
	case MSR_STAR: cpu->msr.star = v; break;
	case MSR_LSTAR:
	case MSR_CSTAR:
	case MSR_FS_BASE:
	case MSR_GS_BASE:
	case MSR_KERNEL_GS_BASE:
		if (!canonical(v))
			return gp(cpu, 0);
		if (index == MSR_LSTAR) cpu->msr.lstar = v;
		else if (index == MSR_CSTAR) cpu->msr.cstar = v;
		else if (index == MSR_FS_BASE) cpu->s.seg[SEG_FS].base = v;
		else if (index == MSR_GS_BASE) cpu->s.seg[SEG_GS].base = v;
		else cpu->msr.kernel_gs_base = v;
		break;
	case MSR_SFMASK: cpu->msr.sfmask = v & 0xffffffff; break;
	case MSR_TSC_AUX: cpu->msr.tsc_aux = v & 0xffffffff; break;
	default:
		return gp(cpu, 0);
	}
	return EMU_OK;
}

static int exec_msr(struct exec *x, bool write)
{
	struct emu_cpu *cpu = x->cpu;
	uint32_t index = (uint32_t)cpu->s.gpr[CPU_RCX];
	uint64_t v = 0;
	int rc;

	if (cpu->cpl)
		return gp(cpu, 0);
	if (write)
		v = (cpu->s.gpr[CPU_RDX] << 32) | (cpu->s.gpr[CPU_RAX] & 0xffffffff);
	rc = cpu->platform && cpu->platform->msr ? cpu->platform->msr(cpu, index, &v, write)
						  : EMU_MSR_UNHANDLED;
	if (rc == EMU_MSR_UNHANDLED)
		rc = write ? msr_write(cpu, index, v) : msr_read(cpu, index, &v);
	if (rc || write)
		return rc;
	cpu->s.gpr[CPU_RAX] = v & 0xffffffff;
	cpu->s.gpr[CPU_RDX] = v >> 32;
	return EMU_OK;
}

/* ---- control registers (SDM Vol. 2, MOV—Move to/from Control Registers) ---- */

static int cr0_write(struct emu_cpu *cpu, uint64_t v)
{
	uint64_t old = cpu->s.cr0;

	if (v >> 32)
		return gp(cpu, 0);
	if (((v & CR0_PG) && !(v & CR0_PE)) || ((v & CR0_NW) && !(v & CR0_CD)))
		return gp(cpu, 0);
	if ((v & CR0_PG) && !(old & CR0_PG) && (cpu->s.efer & EFER_LME)) {
		if (!(cpu->s.cr4 & CR4_PAE))
			return gp(cpu, 0);
		cpu->s.efer |= EFER_LMA; /* activating long mode (SDM Vol. 3 §9.8.5) */
	}
	if (!(v & CR0_PG) && (old & CR0_PG)) {
		if (cpu->mode == EMU_MODE_64)
			return gp(cpu, 0);
		cpu->s.efer &= ~EFER_LMA;
	}
	cpu->s.cr0 = (v & CR0_WRITABLE) | CR0_ET;
	if ((old ^ cpu->s.cr0) & (CR0_PG | CR0_WP | CR0_PE))
		emu_tlb_flush(cpu, true);
	emu_update_mode(cpu);
	return EMU_OK;
}

static int cr4_write(struct emu_cpu *cpu, uint64_t v)
{
	uint64_t old = cpu->s.cr4;

	if (v & ~CR4_WRITABLE)
		return gp(cpu, 0);
	if ((cpu->s.efer & EFER_LMA) && !(v & CR4_PAE))
		return gp(cpu, 0);
	cpu->s.cr4 = v;
	if ((old ^ v) & (CR4_PGE | CR4_PAE | CR4_PSE | CR4_SMEP))
		emu_tlb_flush(cpu, true);
	return EMU_OK;
}

static int exec_mov_cr(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned cr = x->insn->reg, size = cpu->mode == EMU_MODE_64 ? 8 : 4;
	bool to_cr = x->insn->opcode == 0x22;
	uint64_t v;

	if (cr != 0 && cr != 2 && cr != 3 && cr != 4 && cr != 8)
		return exec_ud(x);
	if (cpu->cpl)
		return gp(cpu, 0);
	if (!to_cr) {
		switch (cr) {
		case 0: v = cpu->s.cr0; break;
		case 2: v = cpu->s.cr2; break;
		case 3: v = cpu->s.cr3; break;
		case 4: v = cpu->s.cr4; break;
		default:
			v = cpu->platform && cpu->platform->cr8_read ? cpu->platform->cr8_read(cpu)
								     : cpu->s.cr8;
			break;
		}
		exec_reg_set(x, x->insn->rm, size, v);
		return EMU_OK;
	}
	v = exec_reg_get(x, x->insn->rm, size);
	switch (cr) {
	case 0:
		return cr0_write(cpu, v);
	case 2:
		cpu->s.cr2 = v;
		return EMU_OK;
	case 3:
		if (v & ~((1ull << 52) - 1))
			return gp(cpu, 0);
		cpu->s.cr3 = v;
		emu_tlb_flush(cpu, false);
		return EMU_OK;
	case 4:
		return cr4_write(cpu, v);
	default:
		if (v & ~0xfull)
			return gp(cpu, 0);
		cpu->s.cr8 = v;
		if (cpu->platform && cpu->platform->cr8_write)
			cpu->platform->cr8_write(cpu, v);
		return EMU_OK;
	}
}

#define DR7_GD (1ull << 13)

static int exec_mov_dr(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned dr = x->insn->reg, size = cpu->mode == EMU_MODE_64 ? 8 : 4;

	if (dr > 7)
		return exec_ud(x);
	if ((dr == 4 || dr == 5) && (cpu->s.cr4 & CR4_DE))
		return exec_ud(x);
	if (dr == 4 || dr == 5)
		dr += 2;
	if (cpu->cpl)
		return gp(cpu, 0);
	if (cpu->dr[7] & DR7_GD) { /* general detect: a #DB fault before any DR access */
		cpu->dr[7] &= ~DR7_GD;
		cpu->dr[6] = (cpu->dr[6] & ~0xfull) | EMU_DR6_BD;
		return emu_raise(cpu, EMU_VEC_DB, false, 0);
	}
	if (x->insn->opcode == 0x21) {
		exec_reg_set(x, x->insn->rm, size, cpu->dr[dr]);
		return EMU_OK;
	}
	return emu_debug_write_dr(cpu, dr, exec_reg_get(x, x->insn->rm, size));
}

/* ---- descriptor tables: 0F 00 and 0F 01 ---- */

static int exec_dtable(struct exec *x, unsigned op)
{
	struct emu_cpu *cpu = x->cpu;
	struct cpu_dtable *t = (op & 1) ? &cpu->s.idt : &cpu->s.gdt;
	unsigned base_size = cpu->mode == EMU_MODE_64 ? 8 : 4;
	uint64_t limit, base;
	int rc;

	if (op >= 2) { /* LGDT, LIDT */
		if (cpu->cpl)
			return gp(cpu, 0);
		if ((rc = exec_mem_read(x, x->la, 2, &limit)) ||
		    (rc = exec_mem_read(x, x->la + 2, base_size, &base)))
			return rc;
		if (base_size == 4 && x->insn->opsize == 2)
			base &= 0xffffff;
		if (base_size == 8 && !canonical(base))
			return gp(cpu, 0);
		t->limit = (uint16_t)limit;
		t->base = base;
		return EMU_OK;
	}
	/* SGDT, SIDT (allowed at any CPL: UMIP is not advertised) */
	if ((rc = exec_mem_write(x, x->la + 2, base_size, t->base)))
		return rc;
	return exec_mem_write(x, x->la, 2, t->limit);
}

static int exec_load_system_segment(struct exec *x, bool tr)
{
	struct emu_cpu *cpu = x->cpu;
	bool wide = cpu->mode == EMU_MODE_64;
	struct cpu_segment seg;
	uint64_t sel, raw[2];
	int rc;

	if (!(cpu->s.cr0 & CR0_PE))
		return exec_ud(x);
	if (cpu->cpl)
		return gp(cpu, 0);
	if ((rc = exec_rm_read(x, 2, &sel)))
		return rc;
	if (sel & 4)
		return gp(cpu, (uint32_t)sel & 0xfffc);
	if ((sel & ~3u) == 0) {
		if (tr)
			return gp(cpu, 0);
		segment_null(&cpu->s.seg[SEG_LDTR], (uint16_t)sel);
		return EMU_OK;
	}
	if ((rc = descriptor_read(cpu, (uint16_t)sel, wide, raw, 0)))
		return rc;
	segment_from_descriptor(&seg, (uint16_t)sel, raw, wide);
	/* LTR wants an available 64-bit (or 32-bit) TSS (type 9); LLDT an LDT (type 2). */
	if (seg.s || seg.type != (tr ? 9 : 2))
		return gp(cpu, (uint32_t)sel & 0xfffc);
	if (!seg.present)
		return emu_raise(cpu, EMU_VEC_NP, true, (uint32_t)sel & 0xfffc);
	if (tr) {
		/* Mark it busy in the GDT (LTR is CPL 0, so a plain supervisor write works). */
		uint8_t type_byte = (uint8_t)(raw[0] >> 40) | 2;

		if ((rc = cpu->mem->write(cpu, cpu->s.gdt.base + (sel & ~7u) + 5, &type_byte, 1)))
			return rc;
		seg.type |= 2;
		cpu->s.seg[SEG_TR] = seg;
	} else {
		cpu->s.seg[SEG_LDTR] = seg;
	}
	return EMU_OK;
}

/* For LAR, LSL, VERR, VERW: read the descriptor if the selector names one inside the table;
 * these instructions report an unusable selector in ZF instead of faulting. */
static int descriptor_probe(struct emu_cpu *cpu, uint16_t selector, uint64_t raw[2], bool *ok)
{
	uint64_t limit = (selector & 4) ? cpu->s.seg[SEG_LDTR].limit : cpu->s.gdt.limit;

	*ok = false;
	if ((selector & ~3u) == 0 || ((selector & 4) && cpu->s.seg[SEG_LDTR].unusable) ||
	    (selector & ~7u) + 7u > limit)
		return EMU_OK;
	*ok = true;
	return descriptor_read(cpu, selector, false, raw, 0);
}

/* The privilege test shared by LAR/LSL/VERR/VERW: DPL >= CPL and RPL, conforming code aside. */
static bool descriptor_visible(const struct emu_cpu *cpu, const struct cpu_segment *seg,
			       uint16_t selector)
{
	bool conforming = seg->s && (seg->type & DESC_CODE) && (seg->type & DESC_CONFORMING);

	return conforming || (seg->dpl >= cpu->cpl && seg->dpl >= (selector & 3));
}

/* VERR/VERW r/m16 (0F 00 /4, /5): ZF = the segment can be read / written from here. Linux runs
 * VERW on every return to user mode as the MDS buffer-clearing mitigation. */
static int exec_verify_segment(struct exec *x, bool write)
{
	struct emu_cpu *cpu = x->cpu;
	struct cpu_segment seg;
	uint64_t sel, raw[2];
	bool ok, usable = false;
	int rc;

	if (!(cpu->s.cr0 & CR0_PE))
		return exec_ud(x);
	if ((rc = exec_rm_read(x, 2, &sel)) ||
	    (rc = descriptor_probe(cpu, (uint16_t)sel, raw, &ok)))
		return rc;
	if (ok) {
		segment_from_descriptor(&seg, (uint16_t)sel, raw, false);
		if (seg.s && descriptor_visible(cpu, &seg, (uint16_t)sel)) {
			if (write)
				usable = !(seg.type & DESC_CODE) && (seg.type & DESC_WRITABLE);
			else
				usable = !(seg.type & DESC_CODE) || (seg.type & DESC_READABLE);
		}
	}
	emu_flags_set(cpu, EMU_FLAG_ZF, usable ? EMU_FLAG_ZF : 0);
	return EMU_OK;
}

/* LAR/LSL r, r/m16 (0F 02, 0F 03): access rights or the byte-granular limit, ZF = valid. */
static int exec_lar_lsl(struct exec *x, bool lsl)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned size = x->insn->opsize;
	struct cpu_segment seg;
	uint64_t sel, raw[2];
	bool ok, valid = false;
	int rc;

	if (!(cpu->s.cr0 & CR0_PE))
		return exec_ud(x);
	if ((rc = exec_rm_read(x, 2, &sel)) ||
	    (rc = descriptor_probe(cpu, (uint16_t)sel, raw, &ok)))
		return rc;
	if (ok) {
		segment_from_descriptor(&seg, (uint16_t)sel, raw, false);
		/* System types: LDT and TSSs (in long mode); LAR also takes gates elsewhere. */
		if (seg.s)
			valid = true;
		else if (seg.type == 2 || seg.type == 9 || seg.type == 0xB)
			valid = true;
		else if (!lsl && cpu->mode != EMU_MODE_64 && (seg.type == 0xC || seg.type == 4 ||
							    seg.type == 5))
			valid = true;
		valid = valid && descriptor_visible(cpu, &seg, (uint16_t)sel);
	}
	emu_flags_set(cpu, EMU_FLAG_ZF, valid ? EMU_FLAG_ZF : 0);
	if (!valid)
		return EMU_OK;
	if (lsl)
		exec_reg_set(x, x->insn->reg, size == 2 ? 2 : 4, seg.limit);
	else
		exec_reg_set(x, x->insn->reg, size == 2 ? 2 : 4,
			     (raw[0] >> 32) & (size == 2 ? 0xff00 : 0xf0ff00));
	return EMU_OK;
}

static int exec_group6(struct exec *x)
{
	unsigned op = (x->insn->modrm >> 3) & 7;
	struct emu_cpu *cpu = x->cpu;

	switch (op) {
	case 0: /* SLDT */
	case 1: /* STR */
		if (!(cpu->s.cr0 & CR0_PE))
			return exec_ud(x);
		return exec_rm_write(x, x->insn->mod == 3 ? x->insn->opsize : 2,
				     cpu->s.seg[op ? SEG_TR : SEG_LDTR].selector);
	case 2:
		return exec_load_system_segment(x, false);
	case 3:
		return exec_load_system_segment(x, true);
	case 4:
	case 5:
		return exec_verify_segment(x, op == 5);
	default:
		return exec_ud(x);
	}
}

/* LMSW: PE can be set but not cleared; MP, EM and TS are loaded. */
static int exec_lmsw(struct emu_cpu *cpu, uint64_t v)
{
	return cr0_write(cpu, (cpu->s.cr0 & ~0xeull) | (v & 0xf) | (cpu->s.cr0 & CR0_PE));
}

static int exec_group7(struct exec *x)
{
	const struct emu_insn *insn = x->insn;
	struct emu_cpu *cpu = x->cpu;
	unsigned op = (insn->modrm >> 3) & 7;
	uint64_t v;
	int rc;

	if (insn->mod != 3) {
		switch (op) {
		case 0 ... 3:
			return exec_dtable(x, op);
		case 4: /* SMSW m16 */
			return exec_mem_write(x, x->la, 2, cpu->s.cr0);
		case 6: /* LMSW m16 */
			if (cpu->cpl)
				return gp(cpu, 0);
			if ((rc = exec_rm_read(x, 2, &v)))
				return rc;
			return exec_lmsw(cpu, v);
		case 7: /* INVLPG */
			if (cpu->cpl)
				return gp(cpu, 0);
			emu_tlb_flush_page(cpu, x->la);
			return EMU_OK;
		default:
			return exec_ud(x);
		}
	}
	switch (insn->modrm) {
	case 0xF8: /* SWAPGS */
		if (cpu->mode != EMU_MODE_64)
			return exec_ud(x);
		if (cpu->cpl)
			return gp(cpu, 0);
		v = cpu->s.seg[SEG_GS].base;
		cpu->s.seg[SEG_GS].base = cpu->msr.kernel_gs_base;
		cpu->msr.kernel_gs_base = v;
		return EMU_OK;
	case 0xF9: /* RDTSCP */
		if ((cpu->s.cr4 & CR4_TSD) && cpu->cpl)
			return gp(cpu, 0);
		v = emu_read_tsc(cpu);
		cpu->s.gpr[CPU_RAX] = v & 0xffffffff;
		cpu->s.gpr[CPU_RDX] = v >> 32;
		cpu->s.gpr[CPU_RCX] = cpu->msr.tsc_aux & 0xffffffff;
		return EMU_OK;
	default:
		if (op == 4) /* SMSW r: the whole CR0 with a 32/64-bit operand */
			return exec_rm_write(x, insn->opsize, cpu->s.cr0);
		if (op == 6) { /* LMSW r */
			if (cpu->cpl)
				return gp(cpu, 0);
			return exec_lmsw(cpu, exec_reg_get(x, insn->rm, 2));
		}
		/* MONITOR/MWAIT, CLAC/STAC, XGETBV/XSETBV, VMX, PKRU: not advertised. */
		return exec_ud(x);
	}
}

/* ---- the rest ---- */

/* CMPXCHG8B / CMPXCHG16B m64/m128 (0F C7 /1). */
static int exec_cmpxchg_wide(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	bool wide = x->insn->opsize == 8;
	unsigned half = wide ? 8 : 4;
	uint64_t m[2] = { 0, 0 }, mask = emu_size_mask(half);
	uint64_t lo = cpu->s.gpr[CPU_RAX] & mask, hi = cpu->s.gpr[CPU_RDX] & mask;
	int rc;

	if (x->insn->mod == 3)
		return exec_ud(x);
	if (wide && (x->la & 15))
		return gp(cpu, 0);
	if ((rc = exec_mem_read_bytes(x, x->la, m, 2 * half)))
		return rc;
	if (!wide) {
		m[1] = m[0] >> 32;
		m[0] &= mask;
	}
	if (m[0] == lo && m[1] == hi) {
		uint64_t n[2] = { cpu->s.gpr[CPU_RBX] & mask, cpu->s.gpr[CPU_RCX] & mask };

		if (!wide)
			n[0] |= n[1] << 32;
		if ((rc = exec_mem_write_bytes(x, x->la, n, 2 * half)))
			return rc;
		emu_flags_set(cpu, EMU_FLAG_ZF, EMU_FLAG_ZF);
		return EMU_OK;
	}
	/* Failure: the old value is written back (the access is locked), then rDX:rAX load it. */
	if (!wide)
		m[0] |= m[1] << 32;
	if ((rc = exec_mem_write_bytes(x, x->la, m, 2 * half)))
		return rc;
	if (!wide)
		m[0] &= mask;
	exec_reg_set(x, CPU_RAX, half, m[0]);
	exec_reg_set(x, CPU_RDX, half, m[1]);
	emu_flags_set(cpu, EMU_FLAG_ZF, 0);
	return EMU_OK;
}

static int exec_group15(struct exec *x)
{
	unsigned op = (x->insn->modrm >> 3) & 7;
	bool prefixed = x->insn->prefix & (EMU_PFX_OPSIZE | EMU_PFX_REP | EMU_PFX_REPNE);

	if (x->insn->mod == 3) {
		/* LFENCE, MFENCE, SFENCE: this vCPU's accesses are already in program order;
		 * make them visible to others too. */
		if (op >= 5 && !prefixed) {
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
			return EMU_OK;
		}
		return exec_ud(x);
	}
	if (op == 7 && !prefixed)
		return EMU_OK; /* CLFLUSH: no caches to flush */
	if (op <= 3 && !prefixed)
		return exec_sse_state(x, op); /* FXSAVE, FXRSTOR, LDMXCSR, STMXCSR */
	return exec_ud(x); /* XSAVE family, CLFLUSHOPT, CLWB: not advertised */
}

static int exec_cpuid(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	uint32_t out[4], leaf = emu_cpuid_leaf((uint32_t)cpu->s.gpr[CPU_RAX]);

	if (cpu->platform && cpu->platform->cpuid)
		cpu->platform->cpuid(cpu, leaf, (uint32_t)cpu->s.gpr[CPU_RCX], out);
	else
		emu_cpuid(cpu, leaf, (uint32_t)cpu->s.gpr[CPU_RCX], out);
	cpu->s.gpr[CPU_RAX] = out[0];
	cpu->s.gpr[CPU_RBX] = out[1];
	cpu->s.gpr[CPU_RCX] = out[2];
	cpu->s.gpr[CPU_RDX] = out[3];
	return EMU_OK;
}

static int exec_rdtsc(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	uint64_t v;

	if ((cpu->s.cr4 & CR4_TSD) && cpu->cpl)
		return gp(cpu, 0);
	v = emu_read_tsc(cpu);
	cpu->s.gpr[CPU_RAX] = v & 0xffffffff;
	cpu->s.gpr[CPU_RDX] = v >> 32;
	return EMU_OK;
}

/* Above IOPL in protected mode, the TSS's I/O permission bitmap decides (SDM Vol. 1 §19.5.2): the
 * 16-bit offset at TSS+102 locates it, the bits of every port accessed must be 0, and both bytes
 * read must lie within the TSS limit; otherwise #GP(0). Linux grants ports this way (ioperm). */
static int io_permitted(struct emu_cpu *cpu, uint16_t port, unsigned size)
{
	const struct cpu_segment *tr = &cpu->s.seg[SEG_TR];
	uint16_t base;
	uint8_t bits[2];
	unsigned offset;
	int rc;

	if (tr->unusable || !tr->present || (tr->type & 9) != 9 || tr->limit < 103)
		return gp(cpu, 0); /* not a 32/64-bit TSS with the field */
	if ((rc = cpu->mem->read(cpu, tr->base + 102, &base, 2, EMU_ACCESS_SYS_READ)))
		return rc;
	offset = base + port / 8u;
	if (offset + 1 > tr->limit)
		return gp(cpu, 0);
	if ((rc = cpu->mem->read(cpu, tr->base + offset, bits, 2, EMU_ACCESS_SYS_READ)))
		return rc;
	if ((unsigned)(bits[0] | bits[1] << 8) & (((1u << size) - 1) << (port & 7)))
		return gp(cpu, 0);
	return EMU_OK;
}

/* Whether this CPL may use `size` bytes at `port` (protected mode above IOPL: the TSS's I/O
 * bitmap decides) and whether ports exist at all; IN/OUT and INS/OUTS both ask first. */
static int io_allowed(struct exec *x, uint16_t port, unsigned size)
{
	struct emu_cpu *cpu = x->cpu;
	int rc;

	if ((cpu->s.cr0 & CR0_PE) && cpu->cpl > ((cpu->s.rflags & EMU_FLAG_IOPL) >> 12) &&
	    (rc = io_permitted(cpu, port, size)))
		return rc;
	if (!cpu->phys || !cpu->phys->pio)
		return exec_ud(x);
	return EMU_OK;
}

/* IN/OUT (E4-E7, EC-EF). */
static int exec_port_io(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned op = x->insn->opcode, size = x->insn->opsize == 8 ? 4 : x->insn->opsize;
	uint16_t port = op < 0xE8 ? (uint16_t)(x->insn->imm & 0xff)
				  : (uint16_t)cpu->s.gpr[CPU_RDX];
	bool out = op & 2;
	uint32_t data = 0;
	int rc;

	if ((rc = io_allowed(x, port, size)))
		return rc;
	if (out)
		data = (uint32_t)exec_reg_get(x, CPU_RAX, size);
	if ((rc = cpu->phys->pio(cpu, port, &data, size, out)))
		return rc;
	if (!out)
		exec_reg_set(x, CPU_RAX, size, data);
	return EMU_OK;
}

/* INS/OUTS (6C-6F, SDM Vol. 2 INS/INSB/INSW/INSD and OUTS): the port in DX, memory at ES:rDI
 * (INS, no segment override) or seg:rSI (OUTS, DS unless overridden), rDI/rSI stepped by the
 * item size backwards when DF is set; only the address-size part of them and of rCX moves. Each
 * item is one port access through cpu->phys->pio, so a monitor exit per item (KVM reports a REP
 * INS/OUTS as one exit with several items; the devices see the same accesses in the same order).
 * The I/O permission check comes first, before the count is looked at, as QEMU does. */
#define STRING_IO_BATCH 4096 /* items between looks at interrupts, as exec.c's REP batch */

static int string_io_once(struct exec *x, uint16_t port, unsigned size, bool out)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned index = out ? CPU_RSI : CPU_RDI;
	uint64_t offset = cpu->s.gpr[index] & exec_addr_mask(x);
	uint64_t la = exec_seg_linear(x, out ? x->insn->seg : SEG_ES, offset);
	int64_t step = (cpu->s.rflags & EMU_FLAG_DF) ? -(int64_t)size : (int64_t)size;
	uint64_t v = 0;
	uint32_t data = 0;
	void *host;
	int rc;

	if (out) {
		if ((rc = exec_mem_read(x, la, size, &v)))
			return rc;
		data = (uint32_t)v;
		if ((rc = cpu->phys->pio(cpu, port, &data, size, true)))
			return rc;
	} else {
		/* A port read cannot be taken back: fault on the destination before it. */
		if (cpu->mem->lock_operand && (rc = cpu->mem->lock_operand(cpu, la, size, &host)))
			return rc;
		if ((rc = cpu->phys->pio(cpu, port, &data, size, false)) ||
		    (rc = exec_mem_write(x, la, size, data)))
			return rc;
	}
	exec_reg_set(x, index, x->insn->adsize, offset + (uint64_t)step);
	return EMU_OK;
}

static int exec_string_io(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	const struct emu_insn *insn = x->insn;
	unsigned size = insn->opsize == 8 ? 4 : insn->opsize, as = insn->adsize;
	uint16_t port = (uint16_t)cpu->s.gpr[CPU_RDX];
	bool out = insn->opcode & 2;
	int rc;

	if ((rc = io_allowed(x, port, size)))
		return rc;
	if (!(insn->prefix & (EMU_PFX_REP | EMU_PFX_REPNE)))
		return string_io_once(x, port, size, out);
	/* Under single step or breakpoints one item at a time: the trap comes after each. */
	unsigned batch = emu_debug_active(cpu) ? 1 : STRING_IO_BATCH;

	for (unsigned n = 0; n < batch; n++) {
		uint64_t count = cpu->s.gpr[CPU_RCX] & emu_size_mask(as);

		if (!count)
			return EMU_OK;
		if ((rc = string_io_once(x, port, size, out)))
			return rc; /* RIP stays: the items done stay done (x->partial) */
		x->partial = true;
		exec_reg_set(x, CPU_RCX, as, count - 1);
	}
	if (!(cpu->s.gpr[CPU_RCX] & emu_size_mask(as)))
		return EMU_OK;
	x->next_rip = cpu->s.rip; /* not finished: run again, after any interrupt */
	return EMU_OK;
}

static int exec_mov_to_sreg(struct exec *x)
{
	unsigned sreg = x->insn->reg & 7;
	uint64_t sel;
	int rc;

	if (sreg == SEG_CS || sreg > SEG_GS)
		return exec_ud(x);
	if ((rc = exec_rm_read(x, 2, &sel)))
		return rc;
	if ((rc = segment_load_data(x->cpu, sreg, (uint16_t)sel)))
		return rc;
	if (sreg == SEG_SS) { /* interrupts and #DB traps wait for the RSP load that follows */
		x->cpu->shadow_next = true;
		x->cpu->dr_mov_ss = true;
	}
	return EMU_OK;
}

static int exec_push_pop_sreg(struct exec *x, unsigned sreg, bool push)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned size = x->insn->opsize;
	uint64_t v, old_rsp = cpu->s.gpr[CPU_RSP];
	int rc;

	if (push)
		return exec_push(x, size, cpu->s.seg[sreg].selector);
	if ((rc = exec_pop(x, size, &v)))
		return rc;
	if ((rc = segment_load_data(cpu, sreg, (uint16_t)v)))
		cpu->s.gpr[CPU_RSP] = old_rsp;
	else if (sreg == SEG_SS)
		cpu->shadow_next = cpu->dr_mov_ss = true;
	return rc;
}

/* LSS/LFS/LGS r, m16:16/32/64 (0F B2/B4/B5). */
static int exec_load_far_pointer(struct exec *x, unsigned sreg)
{
	unsigned size = x->insn->opsize;
	uint64_t offset, sel;
	int rc;

	if ((rc = read_far_pointer(x, &offset, &sel)) ||
	    (rc = segment_load_data(x->cpu, sreg, (uint16_t)sel)))
		return rc;
	exec_reg_set(x, x->insn->reg, size, offset);
	return EMU_OK;
}

int exec_system_map1(struct exec *x)
{
	const struct emu_insn *insn = x->insn;
	unsigned op = insn->opcode;

	switch (op) {
	case 0x8E:
		return exec_mov_to_sreg(x);
	case 0xCA:
	case 0xCB:
		return exec_far_return(x);
	case 0xCC: /* with gdb's breakpoints in: a #BP fault for the stub, the IDT untouched */
		if (x->cpu->debug && x->cpu->debug->ctl.sw_breakpoints)
			return emu_raise(x->cpu, EMU_VEC_BP, false, 0);
		return exec_software_interrupt(x, EMU_VEC_BP, EMU_EVENT_SOFTWARE);
	case 0xCD:
		return exec_software_interrupt(x, (unsigned)insn->imm & 0xff, EMU_EVENT_SOFTWARE);
	case 0xF1: /* INT1 (ICEBP): delivered like a hardware #DB, no DPL check */
		return exec_software_interrupt(x, EMU_VEC_DB, EMU_EVENT_EXCEPTION);
	case 0xCF:
		return exec_iret(x);
	case 0xE4 ... 0xE7:
	case 0xEC ... 0xEF:
		return exec_port_io(x);
	case 0x6C ... 0x6F:
		return exec_string_io(x);
	case 0xFF:
		return exec_far_jump(x, ((insn->modrm >> 3) & 7) == 3);
	case 0x9A: /* CALL ptr16:16/32 (not in 64-bit mode) */
	case 0xEA: /* JMP ptr16:16/32 */
		return far_transfer(x, (uint16_t)insn->imm2, insn->imm, op == 0x9A);
	case 0x06: /* PUSH ES, CS, SS, DS; POP ES, SS, DS (not in 64-bit mode) */
	case 0x0E:
	case 0x16:
	case 0x1E:
		return exec_push_pop_sreg(x, (op >> 3) & 3, true);
	case 0x07:
	case 0x17:
	case 0x1F:
		return exec_push_pop_sreg(x, (op >> 3) & 3, false);
	default:
		return exec_ud(x);
	}
}

int exec_system_map0f(struct exec *x)
{
	const struct emu_insn *insn = x->insn;
	struct emu_cpu *cpu = x->cpu;

	switch (insn->opcode) {
	case 0x00:
		return exec_group6(x);
	case 0x01:
		return exec_group7(x);
	case 0x02:
	case 0x03:
		return exec_lar_lsl(x, insn->opcode == 0x03);
	case 0x05:
		return exec_syscall(x);
	case 0x06: /* CLTS */
		if (cpu->cpl)
			return gp(cpu, 0);
		cpu->s.cr0 &= ~CR0_TS;
		return EMU_OK;
	case 0x07:
		return exec_sysret(x);
	case 0x08: /* INVD */
	case 0x09: /* WBINVD */
		return cpu->cpl ? gp(cpu, 0) : EMU_OK;
	case 0x20:
	case 0x22:
		return exec_mov_cr(x);
	case 0x21:
	case 0x23:
		return exec_mov_dr(x);
	case 0x30:
		return exec_msr(x, true);
	case 0x31:
		return exec_rdtsc(x);
	case 0x32:
		return exec_msr(x, false);
	case 0xA0:
	case 0xA8:
		return exec_push_pop_sreg(x, insn->opcode == 0xA0 ? SEG_FS : SEG_GS, true);
	case 0xA1:
	case 0xA9:
		return exec_push_pop_sreg(x, insn->opcode == 0xA1 ? SEG_FS : SEG_GS, false);
	case 0xA2:
		return exec_cpuid(x);
	case 0xAE:
		return exec_group15(x);
	case 0xB2:
		return exec_load_far_pointer(x, SEG_SS);
	case 0xB4:
		return exec_load_far_pointer(x, SEG_FS);
	case 0xB5:
		return exec_load_far_pointer(x, SEG_GS);
	case 0xC7:
		if (((insn->modrm >> 3) & 7) == 1)
			return exec_cmpxchg_wide(x);
		return exec_ud(x); /* RDRAND/RDSEED/RDPID: not advertised */
	default:
		return exec_ud(x);
	}
}
