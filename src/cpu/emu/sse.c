/* SSE/SSE2: the XMM registers, moves, logic and the 128-bit integer instructions, MXCSR and
 * FXSAVE/FXRSTOR (SDM Vol. 1 chapters 10-11, Vol. 2 for each instruction).
 *
 * Floating point is computed by the host's own SSE unit (the host is x86-64: same IEEE results,
 * rounding modes, DAZ/FTZ and exception flags) with the guest's MXCSR and every exception
 * masked; an exception the guest left unmasked then raises #XM (#UD without CR4.OSXMMEXCPT)
 * without writing the destination. The host runs with the guest's flags cleared, so only new
 * exceptions count; an unmasked underflow also takes exact tiny results (fp_unmasked_underflow).
 *
 * MMX (no-prefix 0F 60-7F, C4/C5, D1-FE, EMMS) reuses the 128-bit lane helpers on the low 64
 * bits; the MM registers are the x87 registers' mantissas (x87.c). The state is kept in the
 * FXSAVE layout, which is also what KVM's kvm_fpu carries. */
#include "cpu/emu/alu.h"
#include "cpu/emu/exec.h"

#include <string.h>

#define CR0_EM (1ull << 2)
#define CR0_TS (1ull << 3)
#define CR0_NE (1ull << 5)
#define FSW_ES 0x0080 /* an unmasked x87 exception is pending */
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define MXCSR_FLAGS 0x3fu
#define MXCSR_MASKS 0x1f80u
#define MXCSR_MASK_SUPPORTED 0xffffu /* with DAZ */
#define MXCSR_UE 0x0010u
#define MXCSR_UM 0x0800u
#define MXCSR_FTZ 0x8000u

typedef union {
	uint8_t b[16];
	uint16_t w[8];
	uint32_t d[4];
	uint64_t q[2];
	int8_t sb[16];
	int16_t sw[8];
	int32_t sd[4];
	int64_t sq[2];
} xmm_t;

enum sse_prefix { PFX_NONE, PFX_66, PFX_F3, PFX_F2 };

void emu_fpu_reset(struct emu_cpu *cpu)
{
	memset(&cpu->fx, 0, sizeof(cpu->fx));
	cpu->fx.fcw = 0x37f; /* FNINIT / power-on values (SDM Vol. 1 §8.1.5, §10.2.3) */
	cpu->fx.mxcsr = 0x1f80;
	cpu->fx.mxcsr_mask = MXCSR_MASK_SUPPORTED;
}

static enum sse_prefix sse_prefix(const struct emu_insn *insn)
{
	if (insn->last_rep == 0xF3)
		return PFX_F3;
	if (insn->last_rep == 0xF2)
		return PFX_F2;
	return (insn->prefix & EMU_PFX_OPSIZE) ? PFX_66 : PFX_NONE;
}

/* #UD without OSFXSR or with CR0.EM, #NM with CR0.TS (SDM Vol. 3 table 2-2). */
static int sse_available(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;

	if ((cpu->s.cr0 & CR0_EM) || !(cpu->s.cr4 & CR4_OSFXSR))
		return exec_ud(x);
	if (cpu->s.cr0 & CR0_TS)
		return emu_raise(cpu, EMU_VEC_NM, false, 0);
	return EMU_OK;
}

static uint8_t *xmm_reg(struct exec *x, unsigned n)
{
	return x->cpu->fx.xmm[n];
}

/* The r/m operand as an XMM register or `size` bytes of memory (16-byte aligned if asked). */
static int xmm_rm_read(struct exec *x, unsigned size, bool aligned, xmm_t *v)
{
	memset(v, 0, sizeof(*v));
	if (x->insn->mod == 3) {
		memcpy(v, xmm_reg(x, x->insn->rm), 16);
		return EMU_OK;
	}
	if (aligned && (x->la & 15))
		return emu_raise(x->cpu, EMU_VEC_GP, true, 0);
	return x->cpu->mem->read(x->cpu, x->la, v, size, EMU_ACCESS_READ);
}

static int xmm_rm_write(struct exec *x, unsigned size, bool aligned, const xmm_t *v)
{
	if (x->insn->mod == 3) {
		memcpy(xmm_reg(x, x->insn->rm), v, size);
		return EMU_OK;
	}
	if (aligned && (x->la & 15))
		return emu_raise(x->cpu, EMU_VEC_GP, true, 0);
	return x->cpu->mem->write(x->cpu, x->la, v, size);
}

static void xmm_get(struct exec *x, unsigned n, xmm_t *v)
{
	memcpy(v, xmm_reg(x, n), 16);
}

static void xmm_set(struct exec *x, unsigned n, const xmm_t *v)
{
	memcpy(xmm_reg(x, n), v, 16);
}

/* ---- lane helpers ---- */

static int64_t saturate(int64_t v, int64_t lo, int64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* PADD/PSUB in all widths, with signed/unsigned saturation variants. */
enum lane_op { LANE_ADD, LANE_SUB, LANE_ADDS, LANE_SUBS, LANE_ADDUS, LANE_SUBUS, LANE_CMPEQ,
	       LANE_CMPGT, LANE_MINU, LANE_MAXU, LANE_MINS, LANE_MAXS, LANE_AVG };

static uint64_t lane_get(const xmm_t *v, unsigned width, unsigned i)
{
	switch (width) {
	case 1: return v->b[i];
	case 2: return v->w[i];
	case 4: return v->d[i];
	default: return v->q[i];
	}
}

static void lane_set(xmm_t *v, unsigned width, unsigned i, uint64_t value)
{
	switch (width) {
	case 1: v->b[i] = (uint8_t)value; break;
	case 2: v->w[i] = (uint16_t)value; break;
	case 4: v->d[i] = (uint32_t)value; break;
	default: v->q[i] = value; break;
	}
}

static void lanes(xmm_t *d, const xmm_t *s, unsigned width, enum lane_op op)
{
	uint64_t mask = emu_size_mask(width);
	int64_t smax = (int64_t)(mask >> 1), smin = -smax - 1;

	for (unsigned i = 0; i < 16 / width; i++) {
		uint64_t a = lane_get(d, width, i), b = lane_get(s, width, i), r;
		int64_t sa = (int64_t)emu_sext(a, width), sb = (int64_t)emu_sext(b, width);

		switch (op) {
		case LANE_ADD: r = a + b; break;
		case LANE_SUB: r = a - b; break;
		case LANE_ADDS: r = (uint64_t)saturate(sa + sb, smin, smax); break;
		case LANE_SUBS: r = (uint64_t)saturate(sa - sb, smin, smax); break;
		case LANE_ADDUS: r = a + b > mask ? mask : a + b; break;
		case LANE_SUBUS: r = a > b ? a - b : 0; break;
		case LANE_CMPEQ: r = a == b ? mask : 0; break;
		case LANE_CMPGT: r = sa > sb ? mask : 0; break;
		case LANE_MINU: r = a < b ? a : b; break;
		case LANE_MAXU: r = a > b ? a : b; break;
		case LANE_MINS: r = sa < sb ? a : b; break;
		case LANE_MAXS: r = sa > sb ? a : b; break;
		default: r = (a + b + 1) >> 1; break; /* LANE_AVG */
		}
		lane_set(d, width, i, r & mask);
	}
}

/* PSRL/PSRA/PSLL by a count (W, D, Q lanes); counts past the width give 0 (or the sign). */
static void lane_shift(xmm_t *d, unsigned width, unsigned kind, uint64_t count)
{
	unsigned bits = 8 * width;

	for (unsigned i = 0; i < 16 / width; i++) {
		uint64_t a = lane_get(d, width, i), r;

		if (kind == 2) /* logical right */
			r = count >= bits ? 0 : a >> count;
		else if (kind == 4) /* arithmetic right */
			r = (uint64_t)((int64_t)emu_sext(a, width) >>
				       (count >= bits ? bits - 1 : count));
		else /* 6: left */
			r = count >= bits ? 0 : a << count;
		lane_set(d, width, i, r & emu_size_mask(width));
	}
}

/* PUNPCKL/H: interleave the low (or high) halves of d and s, `width` bytes at a time. */
static void unpack(xmm_t *d, const xmm_t *s, unsigned width, bool high)
{
	xmm_t r;
	unsigned n = 8 / width, base = high ? n : 0;

	for (unsigned i = 0; i < n; i++) {
		lane_set(&r, width, 2 * i, lane_get(d, width, base + i));
		lane_set(&r, width, 2 * i + 1, lane_get(s, width, base + i));
	}
	*d = r;
}

/* PACKSSWB/PACKSSDW/PACKUSWB: narrow d then s with saturation. */
static void pack(xmm_t *d, const xmm_t *s, unsigned width, bool is_unsigned)
{
	unsigned n = 16 / width, half = width / 2;
	int64_t lo = is_unsigned ? 0 : -(1ll << (8 * half - 1));
	int64_t hi = is_unsigned ? (1ll << (8 * half)) - 1 : (1ll << (8 * half - 1)) - 1;
	xmm_t r;

	for (unsigned i = 0; i < n; i++) {
		int64_t a = (int64_t)emu_sext(lane_get(d, width, i), width);
		int64_t b = (int64_t)emu_sext(lane_get(s, width, i), width);

		lane_set(&r, half, i, (uint64_t)saturate(a, lo, hi));
		lane_set(&r, half, n + i, (uint64_t)saturate(b, lo, hi));
	}
	*d = r;
}

/* ---- instruction groups ---- */

/* Two-operand xmm ← xmm op xmm/m128 (66 prefix; the memory operand must be aligned). */
static int sse_binary(struct exec *x, void (*fn)(xmm_t *d, const xmm_t *s, unsigned arg),
		      unsigned arg)
{
	xmm_t d, s;
	int rc;

	if ((rc = xmm_rm_read(x, 16, true, &s)))
		return rc;
	xmm_get(x, x->insn->reg, &d);
	fn(&d, &s, arg);
	xmm_set(x, x->insn->reg, &d);
	return EMU_OK;
}

static void op_and(xmm_t *d, const xmm_t *s, unsigned arg)
{
	(void)arg;
	d->q[0] &= s->q[0];
	d->q[1] &= s->q[1];
}

static void op_andn(xmm_t *d, const xmm_t *s, unsigned arg)
{
	(void)arg;
	d->q[0] = ~d->q[0] & s->q[0];
	d->q[1] = ~d->q[1] & s->q[1];
}

static void op_or(xmm_t *d, const xmm_t *s, unsigned arg)
{
	(void)arg;
	d->q[0] |= s->q[0];
	d->q[1] |= s->q[1];
}

static void op_xor(xmm_t *d, const xmm_t *s, unsigned arg)
{
	(void)arg;
	d->q[0] ^= s->q[0];
	d->q[1] ^= s->q[1];
}

/* arg = lane_op << 8 | width */
static void op_lanes(xmm_t *d, const xmm_t *s, unsigned arg)
{
	lanes(d, s, arg & 0xff, arg >> 8);
}

/* arg = high << 8 | width */
static void op_unpack(xmm_t *d, const xmm_t *s, unsigned arg)
{
	unpack(d, s, arg & 0xff, arg >> 8);
}

/* arg = unsigned << 8 | width */
static void op_pack(xmm_t *d, const xmm_t *s, unsigned arg)
{
	pack(d, s, arg & 0xff, arg >> 8);
}

/* arg = kind (2, 4, 6) << 8 | width: shift by the low quadword of s */
static void op_shift_xmm(xmm_t *d, const xmm_t *s, unsigned arg)
{
	lane_shift(d, arg & 0xff, arg >> 8, s->q[0]);
}

static void op_multiply(xmm_t *d, const xmm_t *s, unsigned op)
{
	xmm_t r = *d;

	switch (op) {
	case 0xD5: /* PMULLW */
		for (unsigned i = 0; i < 8; i++)
			r.w[i] = (uint16_t)(d->sw[i] * s->sw[i]);
		break;
	case 0xE5: /* PMULHW */
		for (unsigned i = 0; i < 8; i++)
			r.w[i] = (uint16_t)((d->sw[i] * s->sw[i]) >> 16);
		break;
	case 0xE4: /* PMULHUW */
		for (unsigned i = 0; i < 8; i++)
			r.w[i] = (uint16_t)(((uint32_t)d->w[i] * s->w[i]) >> 16);
		break;
	case 0xF4: /* PMULUDQ */
		r.q[0] = (uint64_t)d->d[0] * s->d[0];
		r.q[1] = (uint64_t)d->d[2] * s->d[2];
		break;
	case 0xF5: /* PMADDWD: the all-0x8000 pair wraps to 0x80000000 */
		for (unsigned i = 0; i < 4; i++)
			r.d[i] = (uint32_t)((int64_t)d->sw[2 * i] * s->sw[2 * i] +
					    (int64_t)d->sw[2 * i + 1] * s->sw[2 * i + 1]);
		break;
	default: /* 0xF6 PSADBW */
		for (unsigned h = 0; h < 2; h++) {
			unsigned sum = 0;

			for (unsigned i = 0; i < 8; i++) {
				int diff = d->b[8 * h + i] - s->b[8 * h + i];

				sum += (unsigned)(diff < 0 ? -diff : diff);
			}
			r.q[h] = sum;
		}
		break;
	}
	*d = r;
}

/* 66 0F 71/72/73 /n ib: shifts by an immediate; 73 /3 and /7 shift whole bytes. */
static int sse_shift_imm(struct exec *x)
{
	unsigned op = x->insn->opcode, kind = (x->insn->modrm >> 3) & 7;
	unsigned count = (unsigned)x->insn->imm & 0xff;
	xmm_t v, r;

	if (x->insn->mod != 3)
		return exec_ud(x);
	xmm_get(x, x->insn->rm, &v);
	if (op == 0x73 && (kind == 3 || kind == 7)) { /* PSRLDQ, PSLLDQ */
		memset(&r, 0, sizeof(r));
		if (count > 16)
			count = 16;
		for (unsigned i = 0; i < 16; i++) {
			int from = kind == 3 ? (int)(i + count) : (int)i - (int)count;

			if (from >= 0 && from < 16)
				r.b[i] = v.b[from];
		}
		v = r;
	} else if ((kind == 2 || kind == 6 || (kind == 4 && op != 0x73))) {
		lane_shift(&v, op == 0x71 ? 2 : op == 0x72 ? 4 : 8, kind, count);
	} else {
		return exec_ud(x);
	}
	xmm_set(x, x->insn->rm, &v);
	return EMU_OK;
}

/* PSHUFD/PSHUFHW/PSHUFLW xmm, xmm/m128, imm8 (66/F3/F2 0F 70). */
static int sse_shuffle(struct exec *x, enum sse_prefix pfx)
{
	unsigned imm = (unsigned)x->insn->imm & 0xff;
	xmm_t s, r;
	int rc;

	if ((rc = xmm_rm_read(x, 16, true, &s)))
		return rc;
	r = s;
	for (unsigned i = 0; i < 4; i++) {
		unsigned sel = (imm >> (2 * i)) & 3;

		if (pfx == PFX_66)
			r.d[i] = s.d[sel];
		else if (pfx == PFX_F3)
			r.w[4 + i] = s.w[4 + sel];
		else
			r.w[i] = s.w[sel];
	}
	xmm_set(x, x->insn->reg, &r);
	return EMU_OK;
}

/* SHUFPS (0F C6) and SHUFPD (66 0F C6). */
static int sse_shufp(struct exec *x, bool pd)
{
	unsigned imm = (unsigned)x->insn->imm & 0xff;
	xmm_t d, s, r;
	int rc;

	if ((rc = xmm_rm_read(x, 16, true, &s)))
		return rc;
	xmm_get(x, x->insn->reg, &d);
	if (pd) {
		r.q[0] = d.q[imm & 1];
		r.q[1] = s.q[(imm >> 1) & 1];
	} else {
		r.d[0] = d.d[imm & 3];
		r.d[1] = d.d[(imm >> 2) & 3];
		r.d[2] = s.d[(imm >> 4) & 3];
		r.d[3] = s.d[(imm >> 6) & 3];
	}
	xmm_set(x, x->insn->reg, &r);
	return EMU_OK;
}

/* MOVD/MOVQ between XMM and a GPR or memory (66 0F 6E/7E), MOVQ (F3 0F 7E, 66 0F D6). */
static int sse_movd(struct exec *x, enum sse_prefix pfx)
{
	unsigned op = x->insn->opcode, size = x->insn->rex & 8 ? 8 : 4;
	xmm_t v;
	uint64_t g;
	int rc;

	if (op == 0x6E) { /* MOVD/MOVQ xmm, r/m32/64: zero-extended */
		if ((rc = exec_rm_read(x, size, &g)))
			return rc;
		memset(&v, 0, sizeof(v));
		v.q[0] = g;
		xmm_set(x, x->insn->reg, &v);
		return EMU_OK;
	}
	if (op == 0x7E && pfx == PFX_66) { /* MOVD/MOVQ r/m32/64, xmm */
		xmm_get(x, x->insn->reg, &v);
		return exec_rm_write(x, size, v.q[0]);
	}
	if (op == 0x7E) { /* F3: MOVQ xmm, xmm/m64, upper quadword cleared */
		if ((rc = xmm_rm_read(x, 8, false, &v)))
			return rc;
		v.q[1] = 0;
		xmm_set(x, x->insn->reg, &v);
		return EMU_OK;
	}
	/* 66 0F D6: MOVQ xmm/m64, xmm (a register destination clears its upper quadword) */
	xmm_get(x, x->insn->reg, &v);
	v.q[1] = 0;
	if (x->insn->mod == 3) {
		xmm_set(x, x->insn->rm, &v);
		return EMU_OK;
	}
	return xmm_rm_write(x, 8, false, &v);
}

/* Full-width moves: MOVUPS/MOVAPS/MOVUPD/MOVAPD/MOVDQU/MOVDQA and the non-temporal stores. */
static int sse_move128(struct exec *x, bool load, bool aligned)
{
	xmm_t v;
	int rc;

	if (load) {
		if ((rc = xmm_rm_read(x, 16, aligned, &v)))
			return rc;
		xmm_set(x, x->insn->reg, &v);
		return EMU_OK;
	}
	xmm_get(x, x->insn->reg, &v);
	return xmm_rm_write(x, 16, aligned, &v);
}

/* MOVSS/MOVSD (F3/F2 0F 10/11): register to register merges the low element; a load clears
 * the rest; a store writes only the element. */
static int sse_move_scalar(struct exec *x, unsigned size, bool load)
{
	xmm_t d, s;
	int rc;

	if (!load) {
		xmm_get(x, x->insn->reg, &s);
		if (x->insn->mod == 3) {
			xmm_get(x, x->insn->rm, &d);
			memcpy(&d, &s, size);
			xmm_set(x, x->insn->rm, &d);
			return EMU_OK;
		}
		return xmm_rm_write(x, size, false, &s);
	}
	if ((rc = xmm_rm_read(x, size, false, &s)))
		return rc;
	if (x->insn->mod == 3) {
		xmm_get(x, x->insn->reg, &d);
		memcpy(&d, &s, size);
	} else {
		d = s; /* upper bytes already zero */
	}
	xmm_set(x, x->insn->reg, &d);
	return EMU_OK;
}

/* MOVLPS/MOVLPD/MOVHPS/MOVHPD (0F 12/13/16/17 with memory), MOVHLPS/MOVLHPS (registers). */
static int sse_move_half(struct exec *x)
{
	unsigned op = x->insn->opcode;
	bool high = op >= 0x16, store = op & 1;
	xmm_t d, s;
	int rc;

	if (store) {
		if (x->insn->mod == 3)
			return exec_ud(x);
		xmm_get(x, x->insn->reg, &s);
		s.q[0] = s.q[high];
		return xmm_rm_write(x, 8, false, &s);
	}
	xmm_get(x, x->insn->reg, &d);
	if ((rc = xmm_rm_read(x, 8, false, &s)))
		return rc;
	if (x->insn->mod == 3) /* MOVHLPS (12): low ← src high; MOVLHPS (16): high ← src low */
		d.q[high] = s.q[!high];
	else
		d.q[high] = s.q[0];
	xmm_set(x, x->insn->reg, &d);
	return EMU_OK;
}

/* UNPCKLPS/UNPCKHPS (0F 14/15) and the PD forms (66). */
static int sse_unpack_fp(struct exec *x, bool pd)
{
	return sse_binary(x, op_unpack, (pd ? 8 : 4) | ((x->insn->opcode & 1) << 8));
}

/* MOVMSKPS/MOVMSKPD (0F 50), PMOVMSKB (66 0F D7): sign bits into a GPR. */
static int sse_movemask(struct exec *x, unsigned width)
{
	xmm_t v;
	uint32_t m = 0;

	if (x->insn->mod != 3)
		return exec_ud(x);
	xmm_get(x, x->insn->rm, &v);
	for (unsigned i = 0; i < 16 / width; i++)
		m |= (uint32_t)((lane_get(&v, width, i) >> (8 * width - 1)) & 1) << i;
	exec_reg_set(x, x->insn->reg, x->cpu->mode == EMU_MODE_64 ? 8 : 4, m);
	return EMU_OK;
}

/* PINSRW xmm, r32/m16, imm8 (66 0F C4) and PEXTRW r32, xmm, imm8 (66 0F C5). */
static int sse_insert_extract_word(struct exec *x)
{
	unsigned lane = (unsigned)x->insn->imm & 7;
	uint64_t w;
	xmm_t v;
	int rc;

	if (x->insn->opcode == 0xC5) {
		if (x->insn->mod != 3)
			return exec_ud(x);
		xmm_get(x, x->insn->rm, &v);
		exec_reg_set(x, x->insn->reg, x->cpu->mode == EMU_MODE_64 ? 8 : 4, v.w[lane]);
		return EMU_OK;
	}
	if ((rc = exec_rm_read(x, 2, &w)))
		return rc;
	xmm_get(x, x->insn->reg, &v);
	v.w[lane] = (uint16_t)w;
	xmm_set(x, x->insn->reg, &v);
	return EMU_OK;
}

/* MASKMOVDQU xmm1, xmm2 (66 0F F7): bytes of xmm1 whose xmm2 byte has the top bit set go to
 * DS:rDI. */
static int sse_maskmov(struct exec *x)
{
	xmm_t d, m;
	uint64_t base = x->cpu->s.gpr[CPU_RDI] & exec_addr_mask(x);
	int rc;

	if (x->insn->mod != 3)
		return exec_ud(x);
	xmm_get(x, x->insn->reg, &d);
	xmm_get(x, x->insn->rm, &m);
	for (unsigned i = 0; i < 16; i++) {
		uint64_t la;

		if (!(m.b[i] & 0x80))
			continue;
		la = exec_seg_linear(x, x->insn->seg, (base + i) & exec_addr_mask(x));
		if ((rc = exec_mem_write(x, la, 1, d.b[i])))
			return rc;
	}
	return EMU_OK;
}

/* The FXSAVE image (SDM Vol. 1 §10.5.1): with REX.W the 64-bit format (FIP and FDP as 64-bit
 * offsets), without it the 32-bit one (FIP[31:0], FCS, FDP[31:0], FDS; FCS and FDS are 0 here,
 * as CPUID.7.0:EBX[13] says). XMM8-15 only in 64-bit mode; bytes 416-511 are software's and
 * are not written, like the reserved slot bytes 10-15 of the registers are always 0. */
static unsigned fxsave_length(const struct exec *x)
{
	return x->cpu->mode == EMU_MODE_64 ? 416 : 288;
}

static int fxsave(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	struct emu_fxstate img = cpu->fx;

	if (!(x->insn->rex & 8)) {
		uint32_t fip = (uint32_t)cpu->fx.fip, fdp = (uint32_t)cpu->fx.fdp;

		img.fip = fip; /* FCS and bytes 14-15: 0 */
		img.fdp = fdp; /* FDS and bytes 22-23: 0 */
	}
	img.reserved0 = 0;
	img.mxcsr_mask = MXCSR_MASK_SUPPORTED;
	return cpu->mem->write(cpu, x->la, &img, fxsave_length(x));
}

/* FXRSTOR: reserved MXCSR bits #GP; the 32-bit format loads 32-bit FIP and FDP. */
static int fxrstor(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	struct emu_fxstate img;
	int rc;

	memset(&img, 0, sizeof(img));
	if ((rc = cpu->mem->read(cpu, x->la, &img, fxsave_length(x), EMU_ACCESS_READ)))
		return rc;
	if (img.mxcsr & ~MXCSR_MASK_SUPPORTED)
		return emu_raise(cpu, EMU_VEC_GP, true, 0);
	if (!(x->insn->rex & 8)) {
		img.fip &= 0xffffffffull;
		img.fdp &= 0xffffffffull;
	}
	/* As FLDCW and FLDENV (x87.c): reserved control bits read as the FNINIT value, and ES
	 * and B follow the unmasked exception flags. */
	img.fcw = (uint16_t)((img.fcw & 0x1f3f) | 0x40);
	if (img.fsw & ~img.fcw & 0x3f)
		img.fsw |= 0x8080;
	else
		img.fsw &= (uint16_t)~0x8080;
	img.reserved0 = 0;
	img.fop &= 0x7ff;
	img.mxcsr_mask = MXCSR_MASK_SUPPORTED;
	for (unsigned i = 0; i < 8; i++)
		memset(img.st[i] + 10, 0, 6);
	if (cpu->mode != EMU_MODE_64)
		memcpy(img.xmm[8], cpu->fx.xmm[8], 8 * 16);
	memcpy(img.reserved1, cpu->fx.reserved1, sizeof(img.reserved1));
	cpu->fx = img;
	return EMU_OK;
}

/* LDMXCSR/STMXCSR (0F AE /2, /3), FXSAVE/FXRSTOR (0F AE /0, /1). */
int exec_sse_state(struct exec *x, unsigned op)
{
	struct emu_cpu *cpu = x->cpu;
	uint64_t v;
	int rc;

	if (op >= 2 && (rc = sse_available(x)))
		return rc;
	if (op < 2 && (cpu->s.cr0 & (CR0_EM | CR0_TS)))
		return (cpu->s.cr0 & CR0_EM) ? exec_ud(x) : emu_raise(cpu, EMU_VEC_NM, false, 0);
	switch (op) {
	case 0: /* FXSAVE m512: 16-byte aligned */
		if (x->la & 15)
			return emu_raise(cpu, EMU_VEC_GP, true, 0);
		return fxsave(x);
	case 1: /* FXRSTOR m512 */
		if (x->la & 15)
			return emu_raise(cpu, EMU_VEC_GP, true, 0);
		return fxrstor(x);
	case 2: /* LDMXCSR m32 */
		if ((rc = exec_mem_read(x, x->la, 4, &v)))
			return rc;
		if (v & ~(uint64_t)MXCSR_MASK_SUPPORTED)
			return emu_raise(cpu, EMU_VEC_GP, true, 0);
		cpu->fx.mxcsr = (uint32_t)v;
		return EMU_OK;
	default: /* STMXCSR m32 */
		return exec_mem_write(x, x->la, 4, cpu->fx.mxcsr);
	}
}

/* 0F C3 MOVNTI m32/64, r: an integer store (no prefix). */
static int exec_movnti(struct exec *x)
{
	if (x->insn->mod == 3)
		return exec_ud(x);
	return exec_mem_write(x, x->la, x->insn->opsize, exec_reg_get(x, x->insn->reg,
								   x->insn->opsize));
}

/* The 66-prefixed integer instructions of 0F 60-7F and 0F D0-FF. */
static int sse_integer(struct exec *x)
{
	unsigned op = x->insn->opcode;

	switch (op) {
	case 0x60 ... 0x62: return sse_binary(x, op_unpack, 1u << (op - 0x60));
	case 0x68 ... 0x6A: return sse_binary(x, op_unpack, 256 | 1u << (op - 0x68));
	case 0x6C: return sse_binary(x, op_unpack, 8);
	case 0x6D: return sse_binary(x, op_unpack, 256 | 8);
	case 0x63: return sse_binary(x, op_pack, 2);
	case 0x6B: return sse_binary(x, op_pack, 4);
	case 0x67: return sse_binary(x, op_pack, 256 | 2);
	case 0x64 ... 0x66: return sse_binary(x, op_lanes, LANE_CMPGT << 8 | 1u << (op - 0x64));
	case 0x74 ... 0x76: return sse_binary(x, op_lanes, LANE_CMPEQ << 8 | 1u << (op - 0x74));
	case 0xD1 ... 0xD3: return sse_binary(x, op_shift_xmm, 2 << 8 | 2u << (op - 0xD1));
	case 0xE1 ... 0xE2: return sse_binary(x, op_shift_xmm, 4 << 8 | 2u << (op - 0xE1));
	case 0xF1 ... 0xF3: return sse_binary(x, op_shift_xmm, 6 << 8 | 2u << (op - 0xF1));
	case 0xD4: return sse_binary(x, op_lanes, LANE_ADD << 8 | 8);
	case 0xFB: return sse_binary(x, op_lanes, LANE_SUB << 8 | 8);
	case 0xFC ... 0xFE: return sse_binary(x, op_lanes, LANE_ADD << 8 | 1u << (op - 0xFC));
	case 0xF8 ... 0xFA: return sse_binary(x, op_lanes, LANE_SUB << 8 | 1u << (op - 0xF8));
	case 0xD8 ... 0xD9: return sse_binary(x, op_lanes, LANE_SUBUS << 8 | 1u << (op - 0xD8));
	case 0xDC ... 0xDD: return sse_binary(x, op_lanes, LANE_ADDUS << 8 | 1u << (op - 0xDC));
	case 0xE8 ... 0xE9: return sse_binary(x, op_lanes, LANE_SUBS << 8 | 1u << (op - 0xE8));
	case 0xEC ... 0xED: return sse_binary(x, op_lanes, LANE_ADDS << 8 | 1u << (op - 0xEC));
	case 0xDA: return sse_binary(x, op_lanes, LANE_MINU << 8 | 1);
	case 0xDE: return sse_binary(x, op_lanes, LANE_MAXU << 8 | 1);
	case 0xEA: return sse_binary(x, op_lanes, LANE_MINS << 8 | 2);
	case 0xEE: return sse_binary(x, op_lanes, LANE_MAXS << 8 | 2);
	case 0xE0: return sse_binary(x, op_lanes, LANE_AVG << 8 | 1);
	case 0xE3: return sse_binary(x, op_lanes, LANE_AVG << 8 | 2);
	case 0xD5:
	case 0xE4:
	case 0xE5:
	case 0xF4:
	case 0xF5:
	case 0xF6: return sse_binary(x, op_multiply, op);
	case 0xDB: return sse_binary(x, op_and, 0);
	case 0xDF: return sse_binary(x, op_andn, 0);
	case 0xEB: return sse_binary(x, op_or, 0);
	case 0xEF: return sse_binary(x, op_xor, 0);
	case 0x6E:
	case 0x7E:
	case 0xD6: return sse_movd(x, PFX_66);
	case 0x6F: return sse_move128(x, true, true); /* MOVDQA */
	case 0x7F: return sse_move128(x, false, true);
	case 0xE7: /* MOVNTDQ m128, xmm */
		return x->insn->mod == 3 ? exec_ud(x) : sse_move128(x, false, true);
	case 0x70: return sse_shuffle(x, PFX_66);
	case 0x71 ... 0x73: return sse_shift_imm(x);
	case 0xC4:
	case 0xC5: return sse_insert_extract_word(x);
	case 0xD7: return sse_movemask(x, 1);
	case 0xF7: return sse_maskmov(x);
	default: return exec_ud(x);
	}
}

/* ---- floating point, on the host's SSE unit ---- */

typedef float v4sf __attribute__((vector_size(16)));

/* Each wrapper runs one host instruction "op src, dst" between LDMXCSR of `csr` and STMXCSR,
 * restoring the host's MXCSR, and returns the MXCSR after the operation. */
#define FP_OP(name, insn)                                                                         \
	static uint32_t name(xmm_t *d, const xmm_t *s, uint32_t csr)                              \
	{                                                                                          \
		v4sf a, b;                                                                         \
		uint32_t out, host;                                                                \
                                                                                                   \
		memcpy(&a, d, 16);                                                                 \
		memcpy(&b, s, 16);                                                                 \
		__asm__ volatile("stmxcsr %[host]\n\tldmxcsr %[in]\n\t" insn " %[b], %[a]\n\t"     \
				 "stmxcsr %[out]\n\tldmxcsr %[host]"                               \
				 : [a] "+x"(a), [out] "=m"(out), [host] "=m"(host)                 \
				 : [b] "x"(b), [in] "m"(csr));                                     \
		memcpy(d, &a, 16);                                                                 \
		return out;                                                                        \
	}

typedef uint32_t (*fp_fn)(xmm_t *d, const xmm_t *s, uint32_t csr);

#define FP_FOUR(op) FP_OP(op##ps, #op "ps") FP_OP(op##pd, #op "pd") FP_OP(op##ss, #op "ss")       \
	FP_OP(op##sd, #op "sd")
FP_FOUR(add)
FP_FOUR(mul)
FP_FOUR(sub)
FP_FOUR(min)
FP_FOUR(div)
FP_FOUR(max)
FP_FOUR(sqrt)
FP_OP(rsqrtps, "rsqrtps")
FP_OP(rsqrtss, "rsqrtss")
FP_OP(rcpps, "rcpps")
FP_OP(rcpss, "rcpss")
FP_OP(cvtps2pd, "cvtps2pd")
FP_OP(cvtpd2ps, "cvtpd2ps")
FP_OP(cvtss2sd, "cvtss2sd")
FP_OP(cvtsd2ss, "cvtsd2ss")
FP_OP(cvtdq2ps, "cvtdq2ps")
FP_OP(cvtps2dq, "cvtps2dq")
FP_OP(cvttps2dq, "cvttps2dq")
FP_OP(cvttpd2dq, "cvttpd2dq")
FP_OP(cvtdq2pd, "cvtdq2pd")
FP_OP(cvtpd2dq, "cvtpd2dq")

/* CMPPS/CMPPD/CMPSS/CMPSD with the 8 SSE predicates (the immediate must be a constant). */
#define FP_CMP(kind)                                                                              \
	FP_OP(cmpeq##kind, "cmpeq" #kind) FP_OP(cmplt##kind, "cmplt" #kind)                        \
	FP_OP(cmple##kind, "cmple" #kind) FP_OP(cmpunord##kind, "cmpunord" #kind)                  \
	FP_OP(cmpneq##kind, "cmpneq" #kind) FP_OP(cmpnlt##kind, "cmpnlt" #kind)                    \
	FP_OP(cmpnle##kind, "cmpnle" #kind) FP_OP(cmpord##kind, "cmpord" #kind)
FP_CMP(ps)
FP_CMP(pd)
FP_CMP(ss)
FP_CMP(sd)

static const fp_fn fp_cmp[4][8] = {
	{ cmpeqps, cmpltps, cmpleps, cmpunordps, cmpneqps, cmpnltps, cmpnleps, cmpordps },
	{ cmpeqpd, cmpltpd, cmplepd, cmpunordpd, cmpneqpd, cmpnltpd, cmpnlepd, cmpordpd },
	{ cmpeqss, cmpltss, cmpless, cmpunordss, cmpneqss, cmpnltss, cmpnless, cmpordss },
	{ cmpeqsd, cmpltsd, cmplesd, cmpunordsd, cmpneqsd, cmpnltsd, cmpnlesd, cmpordsd },
};

/* (U)COMISS/(U)COMISD: the result is in ZF, PF, CF (read with SETcc: no stack use, as the
 * compiler may keep data in the red zone); OF, SF, AF are cleared. */
#define FP_COMPARE(name, insn)                                                                    \
	static uint32_t name(const xmm_t *d, const xmm_t *s, uint32_t csr, uint64_t *flags)       \
	{                                                                                          \
		v4sf a, b;                                                                         \
		uint32_t out, host;                                                                \
		uint8_t z, p, c;                                                                   \
                                                                                                   \
		memcpy(&a, d, 16);                                                                 \
		memcpy(&b, s, 16);                                                                 \
		__asm__ volatile("stmxcsr %[host]\n\tldmxcsr %[in]\n\t" insn " %[b], %[a]\n\t"     \
				 "setz %[z]\n\tsetp %[p]\n\tsetc %[c]\n\t"                       \
				 "stmxcsr %[out]\n\tldmxcsr %[host]"                               \
				 : [z] "=q"(z), [p] "=q"(p), [c] "=q"(c), [out] "=m"(out),         \
				   [host] "=m"(host)                                               \
				 : [a] "x"(a), [b] "x"(b), [in] "m"(csr)                           \
				 : "cc");                                                          \
		*flags = (z ? EMU_FLAG_ZF : 0) | (p ? EMU_FLAG_PF : 0);                           \
		*flags |= c ? EMU_FLAG_CF : 0;                                                     \
		return out;                                                                        \
	}
FP_COMPARE(comiss_fn, "comiss")
FP_COMPARE(ucomiss_fn, "ucomiss")
FP_COMPARE(comisd_fn, "comisd")
FP_COMPARE(ucomisd_fn, "ucomisd")

/* Integer ↔ scalar conversions with a GPR (CVTSI2SS/SD, CVT(T)SS2SI, CVT(T)SD2SI). */
#define FP_FROM_GPR(name, insn)                                                                   \
	static uint32_t name(xmm_t *d, uint64_t g, uint32_t csr)                                  \
	{                                                                                          \
		v4sf a;                                                                            \
		uint32_t out, host;                                                                \
                                                                                                   \
		memcpy(&a, d, 16);                                                                 \
		__asm__ volatile("stmxcsr %[host]\n\tldmxcsr %[in]\n\t" insn " %[a]\n\t"     \
				 "stmxcsr %[out]\n\tldmxcsr %[host]"                               \
				 : [a] "+x"(a), [out] "=m"(out), [host] "=m"(host)                 \
				 : [g] "r"(g), [in] "m"(csr));                                     \
		memcpy(d, &a, 16);                                                                 \
		return out;                                                                        \
	}
FP_FROM_GPR(cvtsi2ss32, "cvtsi2ssl %k[g],")
FP_FROM_GPR(cvtsi2ss64, "cvtsi2ssq %q[g],")
FP_FROM_GPR(cvtsi2sd32, "cvtsi2sdl %k[g],")
FP_FROM_GPR(cvtsi2sd64, "cvtsi2sdq %q[g],")

#define FP_TO_GPR(name, insn, reg)                                                                \
	static uint32_t name(const xmm_t *s, uint64_t *g, uint32_t csr)                           \
	{                                                                                          \
		v4sf a;                                                                            \
		uint64_t r = 0;                                                                    \
		uint32_t out, host;                                                                \
                                                                                                   \
		memcpy(&a, s, 16);                                                                 \
		__asm__ volatile("stmxcsr %[host]\n\tldmxcsr %[in]\n\t" insn " %[a], " reg "\n\t"  \
				 "stmxcsr %[out]\n\tldmxcsr %[host]"                               \
				 : [r] "+r"(r), [out] "=m"(out), [host] "=m"(host)                 \
				 : [a] "x"(a), [in] "m"(csr));                                     \
		*g = r;                                                                            \
		return out;                                                                        \
	}
FP_TO_GPR(cvtss2si32, "cvtss2si", "%k[r]")
FP_TO_GPR(cvtss2si64, "cvtss2si", "%q[r]")
FP_TO_GPR(cvttss2si32, "cvttss2si", "%k[r]")
FP_TO_GPR(cvttss2si64, "cvttss2si", "%q[r]")
FP_TO_GPR(cvtsd2si32, "cvtsd2si", "%k[r]")
FP_TO_GPR(cvtsd2si64, "cvtsd2si", "%q[r]")
FP_TO_GPR(cvttsd2si32, "cvttsd2si", "%k[r]")
FP_TO_GPR(cvttsd2si64, "cvttsd2si", "%q[r]")

/* The host's MXCSR for a computation: the guest's rounding, FTZ and DAZ, every exception
 * masked, and no flags, so that what the host reports is what this instruction raised (a
 * flag already set in the guest's MXCSR is sticky, not a new exception). */
static uint32_t fp_csr(uint32_t guest)
{
	return (guest & ~MXCSR_FLAGS) | MXCSR_MASKS;
}

/* Commit MXCSR after a computation run with every exception masked: an exception the guest
 * left unmasked raises #XM (or #UD without CR4.OSXMMEXCPT) and the result is dropped. */
static int fp_commit(struct exec *x, uint32_t guest, uint32_t out)
{
	uint32_t raised = out & MXCSR_FLAGS, unmasked = raised & ~(guest >> 7) & MXCSR_FLAGS;

	x->cpu->fx.mxcsr = guest | raised;
	if (unmasked)
		return (x->cpu->s.cr4 & CR4_OSXMMEXCPT) ? emu_raise(x->cpu, EMU_VEC_XM, false, 0)
							: exec_ud(x);
	return EMU_OK;
}

/* Which result lanes can underflow: none, or `lanes` singles (4) or doubles (8). */
struct fp_tiny {
	unsigned lanes, width;
};

static bool fp_lane_denormal(const xmm_t *v, unsigned width, unsigned i)
{
	if (width == 4)
		return !(v->d[i] & 0x7f800000u) && (v->d[i] & 0x007fffffu);
	return !(v->q[i] & 0x7ff0000000000000ull) && (v->q[i] & 0x000fffffffffffffull);
}

/* With underflow unmasked, a tiny result raises #U even when it is exact (SDM Vol. 1
 * §11.5.2.3), but the masked computation flags UE only for tiny and inexact ones: an exact
 * tiny result is a denormal when computed without FTZ, so look for one. */
static uint32_t fp_unmasked_underflow(fp_fn fn, const xmm_t *d, const xmm_t *s, uint32_t guest,
				      struct fp_tiny tiny)
{
	xmm_t r = *d;

	if (!tiny.lanes || (guest & MXCSR_UM))
		return 0;
	fn(&r, s, fp_csr(guest) & ~MXCSR_FTZ);
	for (unsigned i = 0; i < tiny.lanes; i++)
		if (fp_lane_denormal(&r, tiny.width, i))
			return MXCSR_UE;
	return 0;
}

/* dst ← op(dst, src): packed (16 aligned bytes of memory) or scalar (4/8 bytes). */
static int fp_binary_tiny(struct exec *x, fp_fn fn, unsigned size, struct fp_tiny tiny)
{
	uint32_t guest = x->cpu->fx.mxcsr, out;
	xmm_t d, s, r;
	int rc;

	if ((rc = xmm_rm_read(x, size, size == 16, &s)))
		return rc;
	xmm_get(x, x->insn->reg, &d);
	r = d;
	out = fn(&r, &s, fp_csr(guest));
	out |= fp_unmasked_underflow(fn, &d, &s, guest, tiny);
	if ((rc = fp_commit(x, guest, out)))
		return rc;
	xmm_set(x, x->insn->reg, &r);
	return EMU_OK;
}

/* The same for operations that cannot underflow (or whose results are not floating). */
static int fp_binary(struct exec *x, fp_fn fn, unsigned size)
{
	return fp_binary_tiny(x, fn, size, (struct fp_tiny){ 0, 0 });
}

static int fp_compare_flags(struct exec *x, bool is_double, bool unordered)
{
	uint32_t guest = x->cpu->fx.mxcsr, out;
	uint64_t f = 0, mask = EMU_FLAGS_ARITH;
	xmm_t d, s;
	int rc;

	if ((rc = xmm_rm_read(x, is_double ? 8 : 4, false, &s)))
		return rc;
	xmm_get(x, x->insn->reg, &d);
	if (is_double)
		out = (unordered ? ucomisd_fn : comisd_fn)(&d, &s, fp_csr(guest), &f);
	else
		out = (unordered ? ucomiss_fn : comiss_fn)(&d, &s, fp_csr(guest), &f);
	if ((rc = fp_commit(x, guest, out)))
		return rc;
	emu_flags_set(x->cpu, mask, f);
	return EMU_OK;
}

static int fp_from_gpr(struct exec *x, bool is_double)
{
	bool wide = x->insn->rex & 8;
	uint32_t guest = x->cpu->fx.mxcsr, out;
	uint64_t g;
	xmm_t d;
	int rc;

	if ((rc = exec_rm_read(x, wide ? 8 : 4, &g)))
		return rc;
	xmm_get(x, x->insn->reg, &d);
	if (is_double)
		out = (wide ? cvtsi2sd64 : cvtsi2sd32)(&d, g, fp_csr(guest));
	else
		out = (wide ? cvtsi2ss64 : cvtsi2ss32)(&d, g, fp_csr(guest));
	if ((rc = fp_commit(x, guest, out)))
		return rc;
	xmm_set(x, x->insn->reg, &d);
	return EMU_OK;
}

static int fp_to_gpr(struct exec *x, bool is_double, bool truncate)
{
	static uint32_t (*const fns[2][2][2])(const xmm_t *, uint64_t *, uint32_t) = {
		{ { cvtss2si32, cvtss2si64 }, { cvttss2si32, cvttss2si64 } },
		{ { cvtsd2si32, cvtsd2si64 }, { cvttsd2si32, cvttsd2si64 } },
	};
	bool wide = x->insn->rex & 8;
	uint32_t guest = x->cpu->fx.mxcsr, out;
	uint64_t g;
	xmm_t s;
	int rc;

	if ((rc = xmm_rm_read(x, is_double ? 8 : 4, false, &s)))
		return rc;
	out = fns[is_double][truncate][wide](&s, &g, fp_csr(guest));
	if ((rc = fp_commit(x, guest, out)))
		return rc;
	exec_reg_set(x, x->insn->reg, wide ? 8 : 4, g);
	return EMU_OK;
}

static int mmx_convert(struct exec *x, enum sse_prefix pfx);

/* The floating-point part of the 0F map (after moves, logic and integer instructions). */
static int sse_float(struct exec *x, enum sse_prefix pfx)
{
	static const fp_fn arith[6][4] = {
		{ addps, addpd, addss, addsd }, { mulps, mulpd, mulss, mulsd },
		{ 0, 0, 0, 0 }, /* 5A: conversions, below */
		{ 0, 0, 0, 0 }, /* 5B */
		{ subps, subpd, subss, subsd }, { minps, minpd, minss, minsd },
	};
	static const unsigned sizes[4] = { 16, 16, 4, 8 }; /* by prefix: none, 66, F3, F2 */
	static const struct fp_tiny result[4] = { { 4, 4 }, { 2, 8 }, { 1, 4 }, { 1, 8 } };
	unsigned op = x->insn->opcode;

	switch (op) {
	case 0x58:
	case 0x59:
	case 0x5C:
		return fp_binary_tiny(x, arith[op - 0x58][pfx], sizes[pfx], result[pfx]);
	case 0x5D:
		return fp_binary(x, arith[op - 0x58][pfx], sizes[pfx]);
	case 0x5E:
		return fp_binary_tiny(x, (fp_fn[]){ divps, divpd, divss, divsd }[pfx], sizes[pfx],
				      result[pfx]);
	case 0x5F:
		return fp_binary(x, (fp_fn[]){ maxps, maxpd, maxss, maxsd }[pfx], sizes[pfx]);
	case 0x51:
		return fp_binary(x, (fp_fn[]){ sqrtps, sqrtpd, sqrtss, sqrtsd }[pfx], sizes[pfx]);
	case 0x52:
	case 0x53:
		if (pfx == PFX_66 || pfx == PFX_F2)
			return exec_ud(x);
		if (op == 0x52)
			return fp_binary(x, pfx == PFX_F3 ? rsqrtss : rsqrtps, sizes[pfx]);
		return fp_binary(x, pfx == PFX_F3 ? rcpss : rcpps, sizes[pfx]);
	case 0xC2:
		return fp_binary(x, fp_cmp[pfx][x->insn->imm & 7], sizes[pfx]);
	case 0x2E:
	case 0x2F:
		if (pfx == PFX_F3 || pfx == PFX_F2)
			return exec_ud(x);
		return fp_compare_flags(x, pfx == PFX_66, op == 0x2E);
	case 0x5A: /* CVTPS2PD m64, CVTPD2PS m128, CVTSS2SD m32, CVTSD2SS m64 */
		return fp_binary_tiny(x, (fp_fn[]){ cvtps2pd, cvtpd2ps, cvtss2sd, cvtsd2ss }[pfx],
				      (unsigned[]){ 8, 16, 4, 8 }[pfx],
				      (struct fp_tiny[]){ { 0, 0 }, { 2, 4 }, { 0, 0 }, { 1, 4 } }[pfx]);
	case 0x5B:
		if (pfx == PFX_F2)
			return exec_ud(x);
		return fp_binary(x, (fp_fn[]){ cvtdq2ps, cvtps2dq, cvttps2dq }[pfx], 16);
	case 0xE6:
		if (pfx == PFX_NONE)
			return exec_ud(x);
		/* 66: CVTTPD2DQ m128, F3: CVTDQ2PD m64, F2: CVTPD2DQ m128 */
		return fp_binary(x, (fp_fn[]){ 0, cvttpd2dq, cvtdq2pd, cvtpd2dq }[pfx],
				 pfx == PFX_F3 ? 8 : 16);
	case 0x2A:
		if (pfx != PFX_F3 && pfx != PFX_F2)
			return mmx_convert(x, pfx); /* CVTPI2PS/PD */
		return fp_from_gpr(x, pfx == PFX_F2);
	case 0x2C:
	case 0x2D:
		if (pfx != PFX_F3 && pfx != PFX_F2)
			return mmx_convert(x, pfx); /* CVT(T)PS2PI/PD2PI */
		return fp_to_gpr(x, pfx == PFX_F2, op == 0x2C);
	default:
		return exec_ud(x); /* SSE3 and later */
	}
}

/* ---- MMX (SDM Vol. 1 chapter 9) ---- */

/* A pending unmasked x87 exception is reported (#MF, with CR0.NE as in x87.c) before any MMX
 * instruction, and before an SSE instruction with an MM register operand. */
static int mmx_pending_mf(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;

	if ((cpu->fx.fsw & FSW_ES) && (cpu->s.cr0 & CR0_NE))
		return emu_raise(cpu, EMU_VEC_MF, false, 0);
	return EMU_OK;
}

/* MMX instructions: #UD with CR0.EM, #NM with CR0.TS, then #MF (SDM Vol. 3 table 2-2; they
 * do not depend on CR4.OSFXSR). */
static int mmx_available(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;

	if (cpu->s.cr0 & CR0_EM)
		return exec_ud(x);
	if (cpu->s.cr0 & CR0_TS)
		return emu_raise(cpu, EMU_VEC_NM, false, 0);
	return mmx_pending_mf(x);
}

static unsigned mm_reg(const struct exec *x)
{
	return x->insn->reg & 7; /* REX.R and REX.B do not extend MM register numbers */
}

static unsigned mm_rm(const struct exec *x)
{
	return x->insn->rm & 7;
}

/* The r/m operand as an MM register or `size` bytes of memory (no alignment rule). */
static int mm_rm_read(struct exec *x, unsigned size, uint64_t *v)
{
	*v = 0;
	if (x->insn->mod == 3) {
		*v = x87_mm_get(x->cpu, mm_rm(x));
		return EMU_OK;
	}
	return x->cpu->mem->read(x->cpu, x->la, v, size, EMU_ACCESS_READ);
}

/* The end of every MMX instruction that did not fault: MMX state, then the destination. */
static void mm_write(struct exec *x, unsigned n, uint64_t v)
{
	x87_mmx_enter(x->cpu);
	x87_mm_set(x->cpu, n, v);
}

/* mm ← op(mm, mm/m64), computed by the 128-bit helpers on zero-extended operands: every
 * lane-wise operation gives the MMX result in the low quadword. */
static int mmx_binary(struct exec *x, void (*fn)(xmm_t *d, const xmm_t *s, unsigned arg),
		      unsigned arg)
{
	xmm_t d, s;
	int rc;

	memset(&d, 0, sizeof(d));
	memset(&s, 0, sizeof(s));
	if ((rc = mm_rm_read(x, 8, &s.q[0])))
		return rc;
	d.q[0] = x87_mm_get(x->cpu, mm_reg(x));
	fn(&d, &s, arg);
	mm_write(x, mm_reg(x), d.q[0]);
	return EMU_OK;
}

/* PUNPCKL/H on 64 bits: the low (or, shifted down, the high) halves interleaved. */
static void op_mmx_unpack(xmm_t *d, const xmm_t *s, unsigned arg)
{
	xmm_t hs = *s;

	if (arg >> 8) {
		d->q[0] >>= 32;
		hs.q[0] >>= 32;
	}
	unpack(d, &hs, arg & 0xff, false);
}

/* PACKSS/PACKUS on 64 bits: d's lanes then s's, narrowed. */
static void op_mmx_pack(xmm_t *d, const xmm_t *s, unsigned arg)
{
	xmm_t zero;

	memset(&zero, 0, sizeof(zero));
	d->q[1] = s->q[0];
	pack(d, &zero, arg & 0xff, arg >> 8);
}

/* 0F 71/72/73 /2 /4 /6 ib on an MM register (no /3 /7 byte shifts, no PSRAQ). */
static int mmx_shift_imm(struct exec *x)
{
	unsigned op = x->insn->opcode, kind = (x->insn->modrm >> 3) & 7;
	xmm_t v;

	memset(&v, 0, sizeof(v));
	v.q[0] = x87_mm_get(x->cpu, mm_rm(x));
	lane_shift(&v, op == 0x71 ? 2 : op == 0x72 ? 4 : 8, kind, x->insn->imm & 0xff);
	mm_write(x, mm_rm(x), v.q[0]);
	return EMU_OK;
}

/* MOVD/MOVQ mm, r/m32/64 (6E); MOVD/MOVQ r/m32/64, mm (7E); MOVQ mm, mm/m64 (6F);
 * MOVQ mm/m64, mm (7F); MOVNTQ m64, mm (E7). */
static int mmx_move(struct exec *x)
{
	unsigned op = x->insn->opcode, size = x->insn->rex & 8 ? 8 : 4;
	uint64_t v;
	int rc;

	switch (op) {
	case 0x6E:
		if ((rc = exec_rm_read(x, size, &v)))
			return rc;
		mm_write(x, mm_reg(x), v);
		return EMU_OK;
	case 0x6F:
		if ((rc = mm_rm_read(x, 8, &v)))
			return rc;
		mm_write(x, mm_reg(x), v);
		return EMU_OK;
	case 0x7E:
		if ((rc = exec_rm_write(x, size, x87_mm_get(x->cpu, mm_reg(x)))))
			return rc;
		x87_mmx_enter(x->cpu);
		return EMU_OK;
	default: /* 7F, E7 */
		v = x87_mm_get(x->cpu, mm_reg(x));
		if (x->insn->mod == 3) {
			mm_write(x, mm_rm(x), v);
			return EMU_OK;
		}
		if ((rc = x->cpu->mem->write(x->cpu, x->la, &v, 8)))
			return rc;
		x87_mmx_enter(x->cpu);
		return EMU_OK;
	}
}

/* PSHUFW (70), PINSRW (C4), PEXTRW (C5), PMOVMSKB (D7), MASKMOVQ (F7). */
static int mmx_words_and_bytes(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned op = x->insn->opcode, imm = (unsigned)x->insn->imm & 0xff;
	xmm_t v, r;
	uint64_t w;
	int rc;

	memset(&v, 0, sizeof(v));
	switch (op) {
	case 0x70:
		if ((rc = mm_rm_read(x, 8, &v.q[0])))
			return rc;
		r = v;
		for (unsigned i = 0; i < 4; i++)
			r.w[i] = v.w[(imm >> (2 * i)) & 3];
		mm_write(x, mm_reg(x), r.q[0]);
		return EMU_OK;
	case 0xC4:
		if ((rc = exec_rm_read(x, 2, &w)))
			return rc;
		v.q[0] = x87_mm_get(cpu, mm_reg(x));
		v.w[imm & 3] = (uint16_t)w;
		mm_write(x, mm_reg(x), v.q[0]);
		return EMU_OK;
	case 0xC5:
		v.q[0] = x87_mm_get(cpu, mm_rm(x));
		exec_reg_set(x, x->insn->reg, cpu->mode == EMU_MODE_64 ? 8 : 4, v.w[imm & 3]);
		x87_mmx_enter(cpu);
		return EMU_OK;
	case 0xD7:
		v.q[0] = x87_mm_get(cpu, mm_rm(x));
		w = 0;
		for (unsigned i = 0; i < 8; i++)
			w |= (uint64_t)(v.b[i] >> 7) << i;
		exec_reg_set(x, x->insn->reg, cpu->mode == EMU_MODE_64 ? 8 : 4, w);
		x87_mmx_enter(cpu);
		return EMU_OK;
	default: { /* F7 MASKMOVQ: bytes of mm1 whose mm2 byte has the top bit set go to DS:rDI */
		uint64_t base = cpu->s.gpr[CPU_RDI] & exec_addr_mask(x);

		v.q[0] = x87_mm_get(cpu, mm_reg(x));
		r.q[0] = x87_mm_get(cpu, mm_rm(x));
		for (unsigned i = 0; i < 8; i++) {
			uint64_t la;

			if (!(r.b[i] & 0x80))
				continue;
			la = exec_seg_linear(x, x->insn->seg, (base + i) & exec_addr_mask(x));
			if ((rc = exec_mem_write(x, la, 1, v.b[i])))
				return rc;
		}
		x87_mmx_enter(cpu);
		return EMU_OK;
	}
	}
}

/* Whether a no-prefix opcode of 0F 60-7F, C4/C5, D0-FF is an MMX instruction with this
 * ModRM (invalid ones are #UD before any #NM or #MF). */
static bool mmx_valid(const struct emu_insn *insn)
{
	unsigned op = insn->opcode, kind = (insn->modrm >> 3) & 7;
	bool reg = insn->mod == 3;

	switch (op) {
	case 0x60 ... 0x6B:
	case 0x6E ... 0x70:
	case 0x74 ... 0x77:
	case 0x7E:
	case 0x7F:
	case 0xC4:
	case 0xD1 ... 0xD5:
	case 0xD8 ... 0xE5:
	case 0xE8 ... 0xEF:
	case 0xF1 ... 0xF6:
	case 0xF8 ... 0xFE:
		return true;
	case 0x71:
	case 0x72:
		return reg && (kind == 2 || kind == 4 || kind == 6);
	case 0x73:
		return reg && (kind == 2 || kind == 6);
	case 0xC5:
	case 0xD7:
	case 0xF7:
		return reg;
	case 0xE7:
		return !reg;
	default: /* 6C/6D (66 only), 78-7D, D0, D6, E6, F0, FF */
		return false;
	}
}

/* No-prefix 0F 60-7F, C4/C5 and D0-FF. */
static int exec_mmx(struct exec *x)
{
	unsigned op = x->insn->opcode;
	int rc;

	if (!mmx_valid(x->insn))
		return exec_ud(x);
	if ((rc = mmx_available(x)))
		return rc;
	switch (op) {
	case 0x60 ... 0x62: return mmx_binary(x, op_mmx_unpack, 1u << (op - 0x60));
	case 0x68 ... 0x6A: return mmx_binary(x, op_mmx_unpack, 256 | 1u << (op - 0x68));
	case 0x63: return mmx_binary(x, op_mmx_pack, 2);
	case 0x6B: return mmx_binary(x, op_mmx_pack, 4);
	case 0x67: return mmx_binary(x, op_mmx_pack, 256 | 2);
	case 0x64 ... 0x66: return mmx_binary(x, op_lanes, LANE_CMPGT << 8 | 1u << (op - 0x64));
	case 0x74 ... 0x76: return mmx_binary(x, op_lanes, LANE_CMPEQ << 8 | 1u << (op - 0x74));
	case 0x77: /* EMMS */
		x87_emms(x->cpu);
		return EMU_OK;
	case 0x71 ... 0x73: return mmx_shift_imm(x);
	case 0x6E:
	case 0x6F:
	case 0x7E:
	case 0x7F:
	case 0xE7: return mmx_move(x);
	case 0x70:
	case 0xC4:
	case 0xC5:
	case 0xD7:
	case 0xF7: return mmx_words_and_bytes(x);
	case 0xD1 ... 0xD3: return mmx_binary(x, op_shift_xmm, 2 << 8 | 2u << (op - 0xD1));
	case 0xE1 ... 0xE2: return mmx_binary(x, op_shift_xmm, 4 << 8 | 2u << (op - 0xE1));
	case 0xF1 ... 0xF3: return mmx_binary(x, op_shift_xmm, 6 << 8 | 2u << (op - 0xF1));
	case 0xD4: return mmx_binary(x, op_lanes, LANE_ADD << 8 | 8);
	case 0xFB: return mmx_binary(x, op_lanes, LANE_SUB << 8 | 8);
	case 0xFC ... 0xFE: return mmx_binary(x, op_lanes, LANE_ADD << 8 | 1u << (op - 0xFC));
	case 0xF8 ... 0xFA: return mmx_binary(x, op_lanes, LANE_SUB << 8 | 1u << (op - 0xF8));
	case 0xD8 ... 0xD9: return mmx_binary(x, op_lanes, LANE_SUBUS << 8 | 1u << (op - 0xD8));
	case 0xDC ... 0xDD: return mmx_binary(x, op_lanes, LANE_ADDUS << 8 | 1u << (op - 0xDC));
	case 0xE8 ... 0xE9: return mmx_binary(x, op_lanes, LANE_SUBS << 8 | 1u << (op - 0xE8));
	case 0xEC ... 0xED: return mmx_binary(x, op_lanes, LANE_ADDS << 8 | 1u << (op - 0xEC));
	case 0xDA: return mmx_binary(x, op_lanes, LANE_MINU << 8 | 1);
	case 0xDE: return mmx_binary(x, op_lanes, LANE_MAXU << 8 | 1);
	case 0xEA: return mmx_binary(x, op_lanes, LANE_MINS << 8 | 2);
	case 0xEE: return mmx_binary(x, op_lanes, LANE_MAXS << 8 | 2);
	case 0xE0: return mmx_binary(x, op_lanes, LANE_AVG << 8 | 1);
	case 0xE3: return mmx_binary(x, op_lanes, LANE_AVG << 8 | 2);
	case 0xD5:
	case 0xE4:
	case 0xE5:
	case 0xF4:
	case 0xF5:
	case 0xF6: return mmx_binary(x, op_multiply, op);
	case 0xDB: return mmx_binary(x, op_and, 0);
	case 0xDF: return mmx_binary(x, op_andn, 0);
	case 0xEB: return mmx_binary(x, op_or, 0);
	default: return mmx_binary(x, op_xor, 0); /* EF */
	}
}

/* MOVQ2DQ xmm, mm (F3 0F D6) and MOVDQ2Q mm, xmm (F2 0F D6): registers only. */
static int mmx_movq_xmm(struct exec *x, enum sse_prefix pfx)
{
	xmm_t v;
	int rc;

	if (x->insn->mod != 3)
		return exec_ud(x);
	if ((rc = mmx_pending_mf(x)))
		return rc;
	memset(&v, 0, sizeof(v));
	if (pfx == PFX_F3) {
		v.q[0] = x87_mm_get(x->cpu, mm_rm(x));
		xmm_set(x, x->insn->reg, &v);
		x87_mmx_enter(x->cpu);
		return EMU_OK;
	}
	xmm_get(x, x->insn->rm, &v);
	mm_write(x, mm_reg(x), v.q[0]);
	return EMU_OK;
}

/* CVTPI2PS/CVTPI2PD xmm, mm/m64 (0F/66 0F 2A) and CVT(T)PS2PI mm, xmm/m64, CVT(T)PD2PI mm,
 * xmm/m128 (0F/66 0F 2C/2D), by the packed SSE2 conversions on the host with the unused
 * lanes zero (so they raise no exception flags). A memory source to 2A involves no MM
 * register: no #MF, no MMX state. */
static int mmx_convert(struct exec *x, enum sse_prefix pfx)
{
	bool to_mm = x->insn->opcode != 0x2A, pd = pfx == PFX_66;
	bool mm_operand = to_mm || x->insn->mod == 3;
	uint32_t guest = x->cpu->fx.mxcsr, out;
	xmm_t d, s, t;
	int rc;

	if (mm_operand && (rc = mmx_pending_mf(x)))
		return rc;
	memset(&s, 0, sizeof(s));
	memset(&t, 0, sizeof(t));
	if (!to_mm) {
		if ((rc = mm_rm_read(x, 8, &s.q[0])))
			return rc;
		xmm_get(x, x->insn->reg, &d);
		out = (pd ? cvtdq2pd : cvtdq2ps)(&t, &s, fp_csr(guest));
		if ((rc = fp_commit(x, guest, out)))
			return rc;
		if (pd)
			d = t;
		else
			d.q[0] = t.q[0];
		xmm_set(x, x->insn->reg, &d);
		if (mm_operand)
			x87_mmx_enter(x->cpu);
		return EMU_OK;
	}
	if ((rc = xmm_rm_read(x, pd ? 16 : 8, pd, &s)))
		return rc;
	if (!pd)
		s.q[1] = 0;
	if (x->insn->opcode == 0x2C)
		out = (pd ? cvttpd2dq : cvttps2dq)(&t, &s, fp_csr(guest));
	else
		out = (pd ? cvtpd2dq : cvtps2dq)(&t, &s, fp_csr(guest));
	if ((rc = fp_commit(x, guest, out)))
		return rc;
	mm_write(x, mm_reg(x), t.q[0]);
	return EMU_OK;
}

/* Entry from exec_map0f for 0F 10-17, 28-2F, 50-7F, C2-C7 (not C7), D0-FF. */
int exec_sse(struct exec *x)
{
	enum sse_prefix pfx = sse_prefix(x->insn);
	unsigned op = x->insn->opcode;
	int rc;

	if (op == 0xC3 && pfx == PFX_NONE)
		return exec_movnti(x);
	if (pfx == PFX_NONE && ((op >= 0x60 && op <= 0x7F) || op == 0xC4 || op == 0xC5 || op >= 0xD0))
		return exec_mmx(x);
	if ((rc = sse_available(x)))
		return rc;
	switch (op) {
	case 0x10:
	case 0x11:
		if (pfx == PFX_F3 || pfx == PFX_F2)
			return sse_move_scalar(x, pfx == PFX_F3 ? 4 : 8, op == 0x10);
		return sse_move128(x, op == 0x10, false); /* MOVUPS/MOVUPD */
	case 0x12:
	case 0x13:
	case 0x16:
	case 0x17:
		if (pfx == PFX_F3 || pfx == PFX_F2 || (pfx == PFX_66 && x->insn->mod == 3))
			return exec_ud(x); /* MOVSLDUP/MOVDDUP/MOVSHDUP: SSE3 */
		return sse_move_half(x);
	case 0x14:
	case 0x15:
		if (pfx == PFX_F3 || pfx == PFX_F2)
			return exec_ud(x);
		return sse_unpack_fp(x, pfx == PFX_66);
	case 0x28:
	case 0x29:
		if (pfx == PFX_F3 || pfx == PFX_F2)
			return exec_ud(x);
		return sse_move128(x, op == 0x28, true); /* MOVAPS/MOVAPD */
	case 0x2B: /* MOVNTPS/MOVNTPD m128, xmm */
		if (pfx == PFX_F3 || pfx == PFX_F2 || x->insn->mod == 3)
			return exec_ud(x);
		return sse_move128(x, false, true);
	case 0x50:
		if (pfx == PFX_F3 || pfx == PFX_F2)
			return exec_ud(x);
		return sse_movemask(x, pfx == PFX_66 ? 8 : 4);
	case 0x54 ... 0x57: /* ANDPS ANDNPS ORPS XORPS (and PD) */
		if (pfx == PFX_F3 || pfx == PFX_F2)
			return exec_ud(x);
		return sse_binary(x, (void (*[])(xmm_t *, const xmm_t *, unsigned)){
					     op_and, op_andn, op_or, op_xor }[op - 0x54], 0);
	case 0xC6:
		if (pfx == PFX_F3 || pfx == PFX_F2)
			return exec_ud(x);
		return sse_shufp(x, pfx == PFX_66);
	case 0x6F:
	case 0x7F:
		if (pfx == PFX_F3) /* MOVDQU */
			return sse_move128(x, op == 0x6F, false);
		break;
	case 0x70:
		if (pfx == PFX_F3 || pfx == PFX_F2)
			return sse_shuffle(x, pfx);
		break;
	case 0x7E:
		if (pfx == PFX_F3)
			return sse_movd(x, PFX_F3);
		break;
	case 0xD6:
		if (pfx == PFX_F3 || pfx == PFX_F2)
			return mmx_movq_xmm(x, pfx);
		break;
	default:
		break;
	}
	/* 66 0F 60-7F and C4-FF are integer instructions, except CMPPD (C2) and CVTTPD2DQ (E6). */
	if (pfx == PFX_66 && op >= 0x60 && op != 0xC2 && op != 0xE6)
		return sse_integer(x);
	return sse_float(x, pfx);
}
