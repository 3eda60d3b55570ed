/* Specialised handlers for the most frequent instruction forms in 64-bit mode (fast.h).
 *
 * Each handler is emu_execute()'s code for one form with the operation and operand size as
 * compile-time constants (the macros below instantiate them), so the generic parts — the
 * struct exec, the map/opcode switches, the size switches of register access, the LOCK
 * checks — drop out. Faults leave the state unchanged as emu_execute() promises: memory is
 * read first, a memory destination is written before any register or flag changes, and the
 * lazy flags are committed last. The differential test (tests/unit/test_emu_diff.c) runs every
 * case through emu_step(), which selects these handlers, and through emu_execute() alone. */
#include "cpu/emu/fast.h"

#include <string.h>

#include "cpu/emu/alu.h"

#define INLINE static inline __attribute__((always_inline))
#define LIKELY(x) __builtin_expect(!!(x), 1)

/* TEST: AND without a result (an operation number beside enum emu_alu_op). */
#define OP_TEST 8

/* ---- retiring ---- */

INLINE int retire_to(struct emu_cpu *cpu, uint64_t rip)
{
	cpu->s.rip = rip;
	cpu->instructions++;
	cpu->interrupt_shadow = false;
	return EMU_OK;
}

INLINE uint64_t next_rip(const struct emu_cpu *cpu, const struct emu_insn *insn)
{
	return cpu->s.rip + insn->len;
}

INLINE int retire(struct emu_cpu *cpu, const struct emu_insn *insn)
{
	return retire_to(cpu, next_rip(cpu, insn));
}

/* ---- registers (never AH..BH: emu_fast_select() leaves those to emu_execute()) ---- */

INLINE uint64_t rget(const struct emu_cpu *cpu, unsigned r, unsigned size)
{
	return cpu->s.gpr[r] & emu_size_mask(size);
}

/* 32-bit results zero-extend, 8- and 16-bit ones merge (SDM Vol. 1 §3.4.1.1). */
INLINE void rset(struct emu_cpu *cpu, unsigned r, unsigned size, uint64_t v)
{
	emu_gpr_write(&cpu->s.gpr[r], size, v);
}

/* ---- memory (64-bit addresses: only FS and GS have a base) ---- */

INLINE uint64_t fast_ea(const struct emu_cpu *cpu, const struct emu_insn *insn)
{
	uint64_t ea = (uint64_t)insn->disp;

	if (insn->base < 16)
		ea += cpu->s.gpr[insn->base];
	else if (insn->base == EMU_REG_RIP)
		ea += next_rip(cpu, insn);
	if (insn->index != EMU_REG_NONE)
		ea += cpu->s.gpr[insn->index] * insn->scale;
	return ea;
}

INLINE uint64_t fast_la(const struct emu_cpu *cpu, const struct emu_insn *insn)
{
	uint64_t ea = fast_ea(cpu, insn);

	if (insn->seg >= SEG_FS)
		ea += cpu->s.seg[insn->seg].base;
	return ea;
}

INLINE uint64_t load(const uint8_t *p, unsigned size)
{
	uint8_t b;
	uint16_t w;
	uint32_t d;
	uint64_t q;

	switch (size) {
	case 1:
		memcpy(&b, p, 1);
		return b;
	case 2:
		memcpy(&w, p, 2);
		return w;
	case 4:
		memcpy(&d, p, 4);
		return d;
	default:
		memcpy(&q, p, 8);
		return q;
	}
}

INLINE void store(uint8_t *p, unsigned size, uint64_t v)
{
	uint8_t b = (uint8_t)v;
	uint16_t w = (uint16_t)v;
	uint32_t d = (uint32_t)v;

	switch (size) {
	case 1:
		memcpy(p, &b, 1);
		break;
	case 2:
		memcpy(p, &w, 2);
		break;
	case 4:
		memcpy(p, &d, 4);
		break;
	default:
		memcpy(p, &v, 8);
		break;
	}
}

static int mread_slow(struct emu_cpu *cpu, uint64_t la, unsigned size, uint64_t *v)
{
	*v = 0;
	return cpu->mem->read(cpu, la, v, size, EMU_ACCESS_READ);
}

static int mwrite_slow(struct emu_cpu *cpu, uint64_t la, unsigned size, uint64_t v)
{
	return cpu->mem->write(cpu, la, &v, size);
}

INLINE int mread(struct emu_cpu *cpu, uint64_t la, unsigned size, uint64_t *v)
{
	const uint8_t *p = emu_tlb_fast(cpu, cpu->tlb.read, la, size);

	if (LIKELY(p)) {
		*v = load(p, size);
		return EMU_OK;
	}
	return mread_slow(cpu, la, size, v);
}

INLINE int mwrite(struct emu_cpu *cpu, uint64_t la, unsigned size, uint64_t v)
{
	uint8_t *p = emu_tlb_fast(cpu, cpu->tlb.write, la, size);

	if (LIKELY(p)) {
		store(p, size, v);
		emu_code_stored(cpu, p);
		return EMU_OK;
	}
	return mwrite_slow(cpu, la, size, v);
}

/* ---- flags ---- */

/* ADD/ADC/SUB/SBB/CMP/logic/TEST as emu_alu() computes them, with the lazy flags returned in
 * *cc for the caller to commit once nothing can fault any more. */
INLINE uint64_t alu(const struct emu_cpu *cpu, unsigned op, unsigned size, uint64_t a, uint64_t b,
		    struct emu_lazy_flags *cc)
{
	uint64_t mask = emu_size_mask(size), r;
	bool c = false;
	uint8_t kind;

	a &= mask;
	b &= mask;
	switch (op) {
	case ALU_ADD:
		r = a + b;
		kind = EMU_CC_ADD;
		break;
	case ALU_ADC:
		c = emu_lazy_cf(cpu);
		r = a + b + c;
		kind = EMU_CC_ADC;
		break;
	case ALU_SBB:
		c = emu_lazy_cf(cpu);
		r = a - b - c;
		kind = EMU_CC_SBB;
		break;
	case ALU_SUB:
	case ALU_CMP:
		r = a - b;
		kind = EMU_CC_SUB;
		break;
	case ALU_OR:
		r = a | b;
		kind = EMU_CC_LOGIC;
		break;
	case ALU_XOR:
		r = a ^ b;
		kind = EMU_CC_LOGIC;
		break;
	default: /* AND, TEST */
		r = a & b;
		kind = EMU_CC_LOGIC;
		break;
	}
	r &= mask;
	cc->op = kind;
	cc->size = (uint8_t)size;
	cc->carry = c;
	cc->src1 = a;
	cc->src2 = b;
	cc->res = r;
	return r;
}

INLINE bool alu_writes(unsigned op)
{
	return op != ALU_CMP && op != OP_TEST;
}

/* All six status flags at once (MUL, IMUL): no recorded operation is needed any more. */
INLINE void flags_replace(struct emu_cpu *cpu, uint64_t f)
{
	cpu->cc.op = EMU_CC_NONE;
	cpu->s.rflags = (cpu->s.rflags & ~EMU_FLAGS_ARITH) | f;
}

INLINE uint64_t szp(uint64_t r, unsigned size)
{
	uint64_t f = 0;

	r &= emu_size_mask(size);
	if (!r)
		f |= EMU_FLAG_ZF;
	if (r & emu_sign_bit(size))
		f |= EMU_FLAG_SF;
	if (!__builtin_parity((unsigned)(r & 0xff)))
		f |= EMU_FLAG_PF;
	return f;
}

/* ---- instantiation ---- */

#define SIZE_IDX(size) ((size) == 1 ? 0 : (size) == 2 ? 1 : (size) == 4 ? 2 : 3)
#define FOR_SIZES(gen, ...) gen(__VA_ARGS__, 1) gen(__VA_ARGS__, 2) gen(__VA_ARGS__, 4) gen(__VA_ARGS__, 8)
#define FOR_ALU_OPS(gen, form)                                                                     \
	FOR_SIZES(gen, form, 0)                                                                    \
	FOR_SIZES(gen, form, 1)                                                                    \
	FOR_SIZES(gen, form, 2)                                                                    \
	FOR_SIZES(gen, form, 3)                                                                    \
	FOR_SIZES(gen, form, 4)                                                                    \
	FOR_SIZES(gen, form, 5)                                                                    \
	FOR_SIZES(gen, form, 6)                                                                    \
	FOR_SIZES(gen, form, 7)                                                                    \
	FOR_SIZES(gen, form, 8)
#define HANDLER(name)                                                                              \
	static int name(struct emu_cpu *cpu, const struct emu_insn *insn __attribute__((unused)))

/* ---- ALU: op reg,reg / reg,imm / mem,reg / reg,mem / mem,imm ----
 * fast_a is the destination register (or the register operand of a memory destination's
 * source), fast_b the source register. */

/* The two shapes every form reduces to: a register destination (fast_a) with the source value
 * b, and a memory destination read, operated on with b and written back unless the operation
 * only sets flags. Always inlined with a constant op and size, so each handler stays one
 * straight path. */
INLINE int alu_to_reg(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned op, unsigned size,
		      uint64_t b)
{
	struct emu_lazy_flags cc;
	uint64_t r = alu(cpu, op, size, cpu->s.gpr[insn->fast_a], b, &cc);

	if (alu_writes(op))
		rset(cpu, insn->fast_a, size, r);
	cpu->cc = cc;
	return retire(cpu, insn);
}

INLINE int alu_to_mem(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned op, unsigned size,
		      uint64_t b)
{
	struct emu_lazy_flags cc;
	uint64_t la = fast_la(cpu, insn), a, r;
	int rc;

	if ((rc = mread(cpu, la, size, &a)))
		return rc;
	r = alu(cpu, op, size, a, b, &cc);
	if (alu_writes(op) && (rc = mwrite(cpu, la, size, r)))
		return rc;
	cpu->cc = cc;
	return retire(cpu, insn);
}

INLINE int alu_rr(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned op, unsigned size)
{
	return alu_to_reg(cpu, insn, op, size, cpu->s.gpr[insn->fast_b]);
}

INLINE int alu_ri(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned op, unsigned size)
{
	return alu_to_reg(cpu, insn, op, size, insn->imm);
}

INLINE int alu_rm(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned op, unsigned size)
{
	uint64_t b;
	int rc;

	if ((rc = mread(cpu, fast_la(cpu, insn), size, &b)))
		return rc;
	return alu_to_reg(cpu, insn, op, size, b);
}

INLINE int alu_mr(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned op, unsigned size)
{
	return alu_to_mem(cpu, insn, op, size, cpu->s.gpr[insn->fast_b]);
}

INLINE int alu_mi(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned op, unsigned size)
{
	return alu_to_mem(cpu, insn, op, size, insn->imm);
}

#define DEF_ALU(form, op, size)                                                                    \
	HANDLER(alu_##form##_##op##_##size)                                                        \
	{                                                                                          \
		return alu_##form(cpu, insn, op, size);                                            \
	}
#define ENT_ALU(form, op, size) [op][SIZE_IDX(size)] = alu_##form##_##op##_##size,
FOR_ALU_OPS(DEF_ALU, rr)
FOR_ALU_OPS(DEF_ALU, ri)
FOR_ALU_OPS(DEF_ALU, mr)
FOR_ALU_OPS(DEF_ALU, rm)
FOR_ALU_OPS(DEF_ALU, mi)
enum alu_form { FORM_RR, FORM_RI, FORM_MR, FORM_RM, FORM_MI };
static const emu_fast_fn alu_table[5][9][4] = {
	[FORM_RR] = { FOR_ALU_OPS(ENT_ALU, rr) },
	[FORM_RI] = { FOR_ALU_OPS(ENT_ALU, ri) },
	[FORM_MR] = { FOR_ALU_OPS(ENT_ALU, mr) },
	[FORM_RM] = { FOR_ALU_OPS(ENT_ALU, rm) },
	[FORM_MI] = { FOR_ALU_OPS(ENT_ALU, mi) },
};

/* ---- MOV (88-8B, B0-BF, C6/C7 /0) and MOVZX/MOVSX/MOVSXD: fast_a = destination register,
 * fast_b = source register ---- */

INLINE int mov_rr(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	rset(cpu, insn->fast_a, size, cpu->s.gpr[insn->fast_b]);
	return retire(cpu, insn);
}

INLINE int mov_ri(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	rset(cpu, insn->fast_a, size, insn->imm);
	return retire(cpu, insn);
}

INLINE int mov_rm(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	uint64_t v;
	int rc;

	if ((rc = mread(cpu, fast_la(cpu, insn), size, &v)))
		return rc;
	rset(cpu, insn->fast_a, size, v);
	return retire(cpu, insn);
}

INLINE int mov_mr(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	int rc;

	if ((rc = mwrite(cpu, fast_la(cpu, insn), size, cpu->s.gpr[insn->fast_b])))
		return rc;
	return retire(cpu, insn);
}

INLINE int mov_mi(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	int rc;

	if ((rc = mwrite(cpu, fast_la(cpu, insn), size, insn->imm)))
		return rc;
	return retire(cpu, insn);
}

#define DEF_MOV(form, size)                                                                        \
	HANDLER(mov_##form##_##size)                                                               \
	{                                                                                          \
		return mov_##form(cpu, insn, size);                                                \
	}
#define ENT_MOV(form, size) [SIZE_IDX(size)] = mov_##form##_##size,
FOR_SIZES(DEF_MOV, rr)
FOR_SIZES(DEF_MOV, ri)
FOR_SIZES(DEF_MOV, rm)
FOR_SIZES(DEF_MOV, mr)
FOR_SIZES(DEF_MOV, mi)
static const emu_fast_fn mov_table[5][4] = {
	[FORM_RR] = { FOR_SIZES(ENT_MOV, rr) }, [FORM_RI] = { FOR_SIZES(ENT_MOV, ri) },
	[FORM_MR] = { FOR_SIZES(ENT_MOV, mr) }, [FORM_RM] = { FOR_SIZES(ENT_MOV, rm) },
	[FORM_MI] = { FOR_SIZES(ENT_MOV, mi) },
};

/* Zero- or sign-extension of a `from`-byte source into a `to`-byte register. */
INLINE uint64_t extend(uint64_t v, unsigned from, bool sign)
{
	v &= emu_size_mask(from);
	return sign ? emu_sext(v, from) : v;
}

INLINE int movx_r(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned from, unsigned to,
		  bool sign)
{
	rset(cpu, insn->fast_a, to, extend(cpu->s.gpr[insn->fast_b], from, sign));
	return retire(cpu, insn);
}

INLINE int movx_m(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned from, unsigned to,
		  bool sign)
{
	uint64_t v;
	int rc;

	if ((rc = mread(cpu, fast_la(cpu, insn), from, &v)))
		return rc;
	rset(cpu, insn->fast_a, to, extend(v, from, sign));
	return retire(cpu, insn);
}

#define DEF_MOVX(from, to, sign)                                                                   \
	HANDLER(movx_r_##from##_##to##_##sign)                                                     \
	{                                                                                          \
		return movx_r(cpu, insn, from, to, sign);                                          \
	}                                                                                          \
	HANDLER(movx_m_##from##_##to##_##sign)                                                     \
	{                                                                                          \
		return movx_m(cpu, insn, from, to, sign);                                          \
	}
DEF_MOVX(1, 2, 0)
DEF_MOVX(1, 4, 0)
DEF_MOVX(1, 8, 0)
DEF_MOVX(2, 4, 0)
DEF_MOVX(2, 8, 0)
DEF_MOVX(1, 2, 1)
DEF_MOVX(1, 4, 1)
DEF_MOVX(1, 8, 1)
DEF_MOVX(2, 4, 1)
DEF_MOVX(2, 8, 1)
DEF_MOVX(4, 8, 1)

/* LEA: the offset alone, no segment base. */
HANDLER(lea_4)
{
	rset(cpu, insn->fast_a, 4, fast_ea(cpu, insn));
	return retire(cpu, insn);
}

HANDLER(lea_8)
{
	rset(cpu, insn->fast_a, 8, fast_ea(cpu, insn));
	return retire(cpu, insn);
}

/* ---- INC/DEC, NOT/NEG (FE/FF /0 /1, F6/F7 /2 /3): fast_a = the register operand ---- */

INLINE void incdec_flags(struct emu_cpu *cpu, bool dec, unsigned size, uint64_t a, uint64_t r,
			 bool cf)
{
	cpu->cc.op = dec ? EMU_CC_DEC : EMU_CC_INC;
	cpu->cc.size = (uint8_t)size;
	cpu->cc.carry = cf;
	cpu->cc.src1 = a & emu_size_mask(size);
	cpu->cc.src2 = 1;
	cpu->cc.res = r;
}

INLINE int incdec_r(struct emu_cpu *cpu, const struct emu_insn *insn, bool dec, unsigned size)
{
	uint64_t a = cpu->s.gpr[insn->fast_a], r = (dec ? a - 1 : a + 1) & emu_size_mask(size);

	incdec_flags(cpu, dec, size, a, r, emu_lazy_cf(cpu));
	rset(cpu, insn->fast_a, size, r);
	return retire(cpu, insn);
}

INLINE int incdec_m(struct emu_cpu *cpu, const struct emu_insn *insn, bool dec, unsigned size)
{
	uint64_t la = fast_la(cpu, insn), a, r;
	int rc;

	if ((rc = mread(cpu, la, size, &a)))
		return rc;
	r = (dec ? a - 1 : a + 1) & emu_size_mask(size);
	if ((rc = mwrite(cpu, la, size, r)))
		return rc;
	incdec_flags(cpu, dec, size, a, r, emu_lazy_cf(cpu));
	return retire(cpu, insn);
}

INLINE int not_r(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	rset(cpu, insn->fast_a, size, ~cpu->s.gpr[insn->fast_a]);
	return retire(cpu, insn);
}

INLINE int not_m(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	uint64_t la = fast_la(cpu, insn), a;
	int rc;

	if ((rc = mread(cpu, la, size, &a)) || (rc = mwrite(cpu, la, size, ~a)))
		return rc;
	return retire(cpu, insn);
}

INLINE int neg_r(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	struct emu_lazy_flags cc;

	rset(cpu, insn->fast_a, size, alu(cpu, ALU_SUB, size, 0, cpu->s.gpr[insn->fast_a], &cc));
	cpu->cc = cc;
	return retire(cpu, insn);
}

INLINE int neg_m(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	struct emu_lazy_flags cc;
	uint64_t la = fast_la(cpu, insn), a;
	int rc;

	if ((rc = mread(cpu, la, size, &a)) ||
	    (rc = mwrite(cpu, la, size, alu(cpu, ALU_SUB, size, 0, a, &cc))))
		return rc;
	cpu->cc = cc;
	return retire(cpu, insn);
}

#define DEF_UNARY(size)                                                                            \
	HANDLER(inc_r_##size) { return incdec_r(cpu, insn, false, size); }                        \
	HANDLER(dec_r_##size) { return incdec_r(cpu, insn, true, size); }                         \
	HANDLER(inc_m_##size) { return incdec_m(cpu, insn, false, size); }                        \
	HANDLER(dec_m_##size) { return incdec_m(cpu, insn, true, size); }                         \
	HANDLER(not_r_##size) { return not_r(cpu, insn, size); }                                  \
	HANDLER(not_m_##size) { return not_m(cpu, insn, size); }                                  \
	HANDLER(neg_r_##size) { return neg_r(cpu, insn, size); }                                  \
	HANDLER(neg_m_##size) { return neg_m(cpu, insn, size); }
DEF_UNARY(1)
DEF_UNARY(2)
DEF_UNARY(4)
DEF_UNARY(8)
/* [op: 0 INC, 1 DEC, 2 NOT, 3 NEG][memory][size] */
#define ENT_UNARY(name)                                                                            \
	{ { name##_r_1, name##_r_2, name##_r_4, name##_r_8 },                                      \
	  { name##_m_1, name##_m_2, name##_m_4, name##_m_8 } }
static const emu_fast_fn unary_table[4][2][4] = { ENT_UNARY(inc), ENT_UNARY(dec), ENT_UNARY(not),
						  ENT_UNARY(neg) };

/* ---- MUL/IMUL (F7 /4 /5, 0F AF, 69, 6B) ---- */

/* MUL/IMUL rDX:rAX ← rAX * src (32 and 64 bits). SF ZF PF from the low half, AF 0 (as
 * exec_muldiv()), CF = OF = the upper half is significant. */
INLINE int mul1(struct emu_cpu *cpu, const struct emu_insn *insn, uint64_t src, unsigned size,
		bool sign)
{
	uint64_t mask = emu_size_mask(size), a = cpu->s.gpr[CPU_RAX] & mask, lo, hi;
	unsigned bits = 8 * size;
	bool overflow;

	if (!sign) {
		unsigned __int128 w = (unsigned __int128)a * (src & mask);

		lo = (uint64_t)w & mask;
		hi = (uint64_t)(w >> bits) & mask;
		overflow = hi != 0;
	} else {
		__int128 w = (__int128)(int64_t)emu_sext(a, size) * (int64_t)emu_sext(src, size);

		lo = (uint64_t)w & mask;
		hi = (uint64_t)(w >> bits) & mask;
		overflow = w != (__int128)(int64_t)emu_sext(lo, size);
	}
	rset(cpu, CPU_RAX, size, lo);
	rset(cpu, CPU_RDX, size, hi);
	flags_replace(cpu, szp(lo, size) | (overflow ? EMU_FLAG_CF | EMU_FLAG_OF : 0));
	return retire(cpu, insn);
}

#define DEF_MUL1(size)                                                                             \
	HANDLER(mul_r_##size) { return mul1(cpu, insn, cpu->s.gpr[insn->fast_a], size, false); }  \
	HANDLER(imul1_r_##size) { return mul1(cpu, insn, cpu->s.gpr[insn->fast_a], size, true); } \
	HANDLER(mul_m_##size)                                                                      \
	{                                                                                          \
		uint64_t v;                                                                        \
		int rc = mread(cpu, fast_la(cpu, insn), size, &v);                                \
		return rc ? rc : mul1(cpu, insn, v, size, false);                                 \
	}                                                                                          \
	HANDLER(imul1_m_##size)                                                                    \
	{                                                                                          \
		uint64_t v;                                                                        \
		int rc = mread(cpu, fast_la(cpu, insn), size, &v);                                \
		return rc ? rc : mul1(cpu, insn, v, size, true);                                  \
	}
DEF_MUL1(4)
DEF_MUL1(8)

/* IMUL reg, src[, imm]: fast_a = destination; b = the other factor. */
INLINE int imul2(struct emu_cpu *cpu, const struct emu_insn *insn, uint64_t a, uint64_t b,
		 unsigned size)
{
	__int128 p = (__int128)(int64_t)emu_sext(a, size) * (int64_t)emu_sext(b, size);
	uint64_t lo = (uint64_t)p & emu_size_mask(size);
	bool overflow = p != (__int128)(int64_t)emu_sext(lo, size);

	rset(cpu, insn->fast_a, size, lo);
	flags_replace(cpu, szp(lo, size) | (overflow ? EMU_FLAG_CF | EMU_FLAG_OF : 0));
	return retire(cpu, insn);
}

#define DEF_IMUL2(size)                                                                            \
	HANDLER(imul_rr_##size)                                                                    \
	{                                                                                          \
		return imul2(cpu, insn, cpu->s.gpr[insn->fast_b], cpu->s.gpr[insn->fast_a], size); \
	}                                                                                          \
	HANDLER(imul_rri_##size)                                                                   \
	{                                                                                          \
		return imul2(cpu, insn, cpu->s.gpr[insn->fast_b], insn->imm, size);               \
	}                                                                                          \
	HANDLER(imul_rm_##size)                                                                    \
	{                                                                                          \
		uint64_t v;                                                                        \
		int rc = mread(cpu, fast_la(cpu, insn), size, &v);                                \
		return rc ? rc : imul2(cpu, insn, v, cpu->s.gpr[insn->fast_a], size);             \
	}                                                                                          \
	HANDLER(imul_rmi_##size)                                                                   \
	{                                                                                          \
		uint64_t v;                                                                        \
		int rc = mread(cpu, fast_la(cpu, insn), size, &v);                                \
		return rc ? rc : imul2(cpu, insn, v, insn->imm, size);                            \
	}
DEF_IMUL2(2)
DEF_IMUL2(4)
DEF_IMUL2(8)

/* ---- shifts and rotates (C0/C1/D0-D3), register operand: fast_a; emu_shift() sets the flags
 * (nothing can fault) ---- */

INLINE int shift_r(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size, unsigned count)
{
	uint64_t r = emu_shift(cpu, (insn->modrm >> 3) & 7, size, cpu->s.gpr[insn->fast_a], count);

	rset(cpu, insn->fast_a, size, r);
	return retire(cpu, insn);
}

#define DEF_SHIFT(size)                                                                            \
	HANDLER(shift_imm_##size) { return shift_r(cpu, insn, size, (unsigned)insn->imm & 0xff); } \
	HANDLER(shift_1_##size) { return shift_r(cpu, insn, size, 1); }                            \
	HANDLER(shift_cl_##size)                                                                   \
	{                                                                                          \
		return shift_r(cpu, insn, size, (unsigned)cpu->s.gpr[CPU_RCX] & 0xff);             \
	}
DEF_SHIFT(1)
DEF_SHIFT(2)
DEF_SHIFT(4)
DEF_SHIFT(8)
static const emu_fast_fn shift_table[3][4] = {
	{ shift_imm_1, shift_imm_2, shift_imm_4, shift_imm_8 },
	{ shift_1_1, shift_1_2, shift_1_4, shift_1_8 },
	{ shift_cl_1, shift_cl_2, shift_cl_4, shift_cl_8 },
};

/* SHL/SAL, SHR, SAR inline: emu_shift()'s formulas for these three with the operation and size
 * fixed (the flags are all six at once, AF 0; a masked count of 0 changes no flag). */
INLINE int shift_fixed(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned op, unsigned size,
		       unsigned count)
{
	unsigned bits = 8 * size;
	uint64_t mask = emu_size_mask(size), a = cpu->s.gpr[insn->fast_a] & mask, r, cf, of;

	count &= size == 8 ? 63 : 31;
	if (!count) {
		rset(cpu, insn->fast_a, size, a);
		return retire(cpu, insn);
	}
	if (op == SHIFT_SHL) {
		r = count < bits ? (a << count) & mask : 0;
		cf = count <= bits ? (a >> (bits - count)) & 1 : 0;
		of = ((r & emu_sign_bit(size)) ? 1 : 0) ^ cf;
	} else if (op == SHIFT_SHR) {
		r = count < bits ? a >> count : 0;
		cf = count <= bits ? (a >> (count - 1)) & 1 : 0;
		of = (a & emu_sign_bit(size)) ? 1 : 0;
	} else if (count >= bits) { /* SAR: the sign fills, and is CF */
		cf = (a & emu_sign_bit(size)) ? 1 : 0;
		r = cf ? mask : 0;
		of = 0;
	} else {
		cf = (emu_sext(a, size) >> (count - 1)) & 1;
		r = (uint64_t)((int64_t)emu_sext(a, size) >> count) & mask;
		of = 0;
	}
	rset(cpu, insn->fast_a, size, r);
	flags_replace(cpu, szp(r, size) | cf | (of << 11));
	return retire(cpu, insn);
}

#define SHIFT_COUNT_imm ((unsigned)insn->imm & 0xff)
#define SHIFT_COUNT_1 1u
#define SHIFT_COUNT_cl ((unsigned)cpu->s.gpr[CPU_RCX] & 0xff)
#define DEF_SHIFT_FIXED(kind, size)                                                 \
	HANDLER(shl_##kind##_##size)                                                \
	{                                                                           \
		return shift_fixed(cpu, insn, SHIFT_SHL, size, SHIFT_COUNT_##kind); \
	}                                                                           \
	HANDLER(shr_##kind##_##size)                                                \
	{                                                                           \
		return shift_fixed(cpu, insn, SHIFT_SHR, size, SHIFT_COUNT_##kind); \
	}                                                                           \
	HANDLER(sar_##kind##_##size)                                                \
	{                                                                           \
		return shift_fixed(cpu, insn, SHIFT_SAR, size, SHIFT_COUNT_##kind); \
	}
FOR_SIZES(DEF_SHIFT_FIXED, imm)
FOR_SIZES(DEF_SHIFT_FIXED, 1)
FOR_SIZES(DEF_SHIFT_FIXED, cl)
#define ENT_SHIFT_FIXED(name, kind)                                                        \
	{                                                                                  \
		name##_##kind##_1, name##_##kind##_2, name##_##kind##_4, name##_##kind##_8 \
	}
/* [kind: imm, 1, CL][0 SHL, 1 SHR, 2 SAR][size] */
static const emu_fast_fn shift_fixed_table[3][3][4] = {
	{ ENT_SHIFT_FIXED(shl, imm), ENT_SHIFT_FIXED(shr, imm), ENT_SHIFT_FIXED(sar, imm) },
	{ ENT_SHIFT_FIXED(shl, 1), ENT_SHIFT_FIXED(shr, 1), ENT_SHIFT_FIXED(sar, 1) },
	{ ENT_SHIFT_FIXED(shl, cl), ENT_SHIFT_FIXED(shr, cl), ENT_SHIFT_FIXED(sar, cl) },
};

/* ---- conditions: Jcc, CMOVcc, SETcc ---- */

/* Condition code `cc` (SDM Vol. 1 appendix B) with the flags of the two commonest producers,
 * SUB/CMP and logic/TEST, worked out here (alu.c's formulas); anything else, and PF, through
 * emu_condition(). */
INLINE bool cond(struct emu_cpu *cpu, unsigned cc)
{
	const struct emu_lazy_flags *f = &cpu->cc;
	unsigned size = f->size;
	uint64_t mask, sign, a, b, r;
	bool v;

	if ((cc >> 1) == 2 || (cc >> 1) == 4) { /* ZF, SF: of the result whatever the operation */
		if (f->op == EMU_CC_NONE)
			v = cpu->s.rflags & ((cc >> 1) == 2 ? EMU_FLAG_ZF : EMU_FLAG_SF);
		else if ((cc >> 1) == 2)
			v = !(f->res & emu_size_mask(size));
		else
			v = f->res & emu_sign_bit(size);
		return (cc & 1) ? !v : v;
	}
	if ((f->op != EMU_CC_SUB && f->op != EMU_CC_LOGIC) || (cc >> 1) == 5)
		return emu_condition(cpu, cc);
	mask = emu_size_mask(size);
	sign = emu_sign_bit(size);
	a = f->src1 & mask;
	b = f->src2 & mask;
	r = f->res & mask;
	if (f->op == EMU_CC_SUB) {
		switch (cc >> 1) {
		case 0: /* OF */
			v = (a ^ b) & (a ^ r) & sign;
			break;
		case 1: /* CF */
			v = a < b;
			break;
		case 2: /* ZF */
			v = !r;
			break;
		case 3: /* CF | ZF */
			v = a <= b;
			break;
		case 4: /* SF */
			v = r & sign;
			break;
		case 6: /* SF != OF: signed less */
			v = (int64_t)emu_sext(a, size) < (int64_t)emu_sext(b, size);
			break;
		default: /* ZF | SF != OF */
			v = (int64_t)emu_sext(a, size) <= (int64_t)emu_sext(b, size);
			break;
		}
	} else { /* CF = OF = 0 */
		switch (cc >> 1) {
		case 0:
		case 1:
			v = false;
			break;
		case 2:
		case 3:
			v = !r;
			break;
		case 4:
		case 6:
			v = r & sign;
			break;
		default:
			v = !r || (r & sign);
			break;
		}
	}
	return (cc & 1) ? !v : v;
}

/* The condition for compiled code that cannot work it out from what it knows of the flags
 * (jit.c: a Jcc, CMOVcc or SETcc whose flags came from another block or a handler). */
int emu_fast_cond(struct emu_cpu *cpu, unsigned cc)
{
	return cond(cpu, cc & 15);
}

#define DEF_JCC(cc)                                  \
	HANDLER(jcc_##cc)                            \
	{                                            \
		uint64_t next = next_rip(cpu, insn); \
                                                     \
		if (cond(cpu, cc))                   \
			next += insn->imm;           \
		return retire_to(cpu, next);         \
	}
DEF_JCC(0)
DEF_JCC(1)
DEF_JCC(2)
DEF_JCC(3)
DEF_JCC(4)
DEF_JCC(5)
DEF_JCC(6)
DEF_JCC(7)
DEF_JCC(8)
DEF_JCC(9)
DEF_JCC(10)
DEF_JCC(11)
DEF_JCC(12)
DEF_JCC(13)
DEF_JCC(14)
DEF_JCC(15)
static const emu_fast_fn jcc_table[16] = { jcc_0,  jcc_1,  jcc_2,  jcc_3, jcc_4,  jcc_5,
					   jcc_6,  jcc_7,  jcc_8,  jcc_9, jcc_10, jcc_11,
					   jcc_12, jcc_13, jcc_14, jcc_15 };

/* The source is read whatever the condition; a 32-bit destination is zero-extended even when
 * nothing moves (exec_cmov()). */
INLINE int cmov(struct emu_cpu *cpu, const struct emu_insn *insn, uint64_t v, unsigned size)
{
	if (cond(cpu, insn->opcode & 15))
		rset(cpu, insn->fast_a, size, v);
	else if (size == 4)
		rset(cpu, insn->fast_a, 4, cpu->s.gpr[insn->fast_a]);
	return retire(cpu, insn);
}

#define DEF_CMOV(size)                                                                             \
	HANDLER(cmov_r_##size) { return cmov(cpu, insn, cpu->s.gpr[insn->fast_b], size); }        \
	HANDLER(cmov_m_##size)                                                                     \
	{                                                                                          \
		uint64_t v;                                                                        \
		int rc = mread(cpu, fast_la(cpu, insn), size, &v);                                \
		return rc ? rc : cmov(cpu, insn, v, size);                                        \
	}
DEF_CMOV(2)
DEF_CMOV(4)
DEF_CMOV(8)

HANDLER(setcc_r)
{
	rset(cpu, insn->fast_a, 1, cond(cpu, insn->opcode & 15));
	return retire(cpu, insn);
}

HANDLER(setcc_m)
{
	int rc = mwrite(cpu, fast_la(cpu, insn), 1, cond(cpu, insn->opcode & 15));

	return rc ? rc : retire(cpu, insn);
}

/* ---- branches and the stack (64-bit operands, stack addresses: SS has no base) ---- */

HANDLER(jmp_rel)
{
	return retire_to(cpu, next_rip(cpu, insn) + insn->imm);
}

INLINE int push(struct emu_cpu *cpu, uint64_t v)
{
	uint64_t rsp = cpu->s.gpr[CPU_RSP] - 8;
	int rc = mwrite(cpu, rsp, 8, v);

	if (rc == EMU_OK)
		cpu->s.gpr[CPU_RSP] = rsp;
	return rc;
}

HANDLER(call_rel)
{
	uint64_t next = next_rip(cpu, insn);
	int rc = push(cpu, next);

	return rc ? rc : retire_to(cpu, next + insn->imm);
}

INLINE int call_to(struct emu_cpu *cpu, const struct emu_insn *insn, uint64_t target)
{
	int rc = push(cpu, next_rip(cpu, insn));

	return rc ? rc : retire_to(cpu, target);
}

HANDLER(call_r)
{
	return call_to(cpu, insn, cpu->s.gpr[insn->fast_a]);
}

HANDLER(call_m)
{
	uint64_t target;
	int rc = mread(cpu, fast_la(cpu, insn), 8, &target);

	return rc ? rc : call_to(cpu, insn, target);
}

HANDLER(jmp_r)
{
	return retire_to(cpu, cpu->s.gpr[insn->fast_a]);
}

HANDLER(jmp_m)
{
	uint64_t target;
	int rc = mread(cpu, fast_la(cpu, insn), 8, &target);

	return rc ? rc : retire_to(cpu, target);
}

HANDLER(ret)
{
	uint64_t target;
	int rc = mread(cpu, cpu->s.gpr[CPU_RSP], 8, &target);

	if (rc)
		return rc;
	cpu->s.gpr[CPU_RSP] += 8;
	return retire_to(cpu, target);
}

HANDLER(push_r)
{
	int rc = push(cpu, cpu->s.gpr[insn->fast_a]);

	return rc ? rc : retire(cpu, insn);
}

HANDLER(push_i)
{
	int rc = push(cpu, insn->imm);

	return rc ? rc : retire(cpu, insn);
}

HANDLER(push_m)
{
	uint64_t v;
	int rc = mread(cpu, fast_la(cpu, insn), 8, &v);

	if (rc || (rc = push(cpu, v)))
		return rc;
	return retire(cpu, insn);
}

/* Pop 8 bytes at `sp` into `reg`: RSP becomes sp + 8 first, so POP RSP keeps the popped value. */
INLINE int pop_at(struct emu_cpu *cpu, const struct emu_insn *insn, uint64_t sp, unsigned reg)
{
	uint64_t v;
	int rc = mread(cpu, sp, 8, &v);

	if (rc)
		return rc;
	cpu->s.gpr[CPU_RSP] = sp + 8;
	cpu->s.gpr[reg] = v;
	return retire(cpu, insn);
}

HANDLER(pop_r)
{
	return pop_at(cpu, insn, cpu->s.gpr[CPU_RSP], insn->fast_a);
}

/* LEAVE: RSP ← RBP, then POP RBP. */
HANDLER(leave)
{
	return pop_at(cpu, insn, cpu->s.gpr[CPU_RBP], CPU_RBP);
}

/* ---- the rest ---- */

HANDLER(nop)
{
	return retire(cpu, insn);
}

INLINE int xchg_rr(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	uint64_t a = cpu->s.gpr[insn->fast_a], b = cpu->s.gpr[insn->fast_b];

	rset(cpu, insn->fast_a, size, b);
	rset(cpu, insn->fast_b, size, a);
	return retire(cpu, insn);
}

HANDLER(xchg_rr_4) { return xchg_rr(cpu, insn, 4); }
HANDLER(xchg_rr_8) { return xchg_rr(cpu, insn, 8); }

/* CLI at CPL <= IOPL (the kernel's local_irq_save()/disable()); else emu_execute()'s #GP.
 * Clearing IF needs no look at pending interrupts, so CLI does not end blocks. */
HANDLER(cli)
{
	if (cpu->cpl > ((cpu->s.rflags & EMU_FLAG_IOPL) >> 12))
		return emu_execute(cpu, insn);
	cpu->s.rflags &= ~EMU_FLAG_IF;
	return retire(cpu, insn);
}

/* STI at CPL <= IOPL (the kernel's local_irq_enable()): IF 0 -> 1 opens the one-instruction
 * interrupt shadow (SDM: STI) and may end the chain (emu_if_raised()), as emu_execute() does;
 * above IOPL emu_execute()'s #GP. STI ends blocks (cpu.c). */
HANDLER(sti)
{
	bool rise = !(cpu->s.rflags & EMU_FLAG_IF);

	if (cpu->cpl > ((cpu->s.rflags & EMU_FLAG_IOPL) >> 12))
		return emu_execute(cpu, insn);
	cpu->s.rflags |= EMU_FLAG_IF;
	retire(cpu, insn);
	cpu->interrupt_shadow = rise;
	if (rise)
		emu_if_raised(cpu);
	return EMU_OK;
}

/* PUSHFQ: VM and RF are pushed as 0 (SDM: PUSHF). */
HANDLER(pushf_8)
{
	int rc = push(cpu, emu_flags_get(cpu) & ~(EMU_FLAG_VM | EMU_FLAG_RF));

	return rc ? rc : retire(cpu, insn);
}

/* REP STOSB/W/D/Q (the kernel's memset(), ~9 per 4 KiB read request on the disk path) with
 * DF 0 whose bytes lie in one RAM page writable through the TLB: all of them at once (a REP
 * may be interrupted between iterations, never must be). Anything else (DF 1, a page
 * crossing, a TLB miss, MMIO, single steps and breakpoints: one iteration a step) goes to
 * emu_execute() as a block's generic instruction would, which does it in pieces, and may stop
 * between them, or raises the fault. */
INLINE int rep_stos(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	uint64_t n = cpu->s.gpr[CPU_RCX], la = cpu->s.gpr[CPU_RDI], v = cpu->s.gpr[CPU_RAX];
	uint8_t *p;

	if (!n) /* no iteration, no access: the kernel's memset() tail after REP STOSQ */
		return retire(cpu, insn);
	if (n > 4096 / size || (cpu->s.rflags & EMU_FLAG_DF) || emu_debug_active(cpu) ||
	    !(p = emu_tlb_fast(cpu, cpu->tlb.write, la, (unsigned)n * size)))
		return emu_block_generic(cpu, insn);
	if (size == 1)
		memset(p, (uint8_t)v, n);
	else
		for (uint64_t i = 0; i < n; i++)
			store(p + i * size, size, v);
	emu_code_stored(cpu, p);
	cpu->s.gpr[CPU_RDI] = la + n * size;
	cpu->s.gpr[CPU_RCX] = 0;
	return retire(cpu, insn);
}

HANDLER(rep_stos_1)
{
	return rep_stos(cpu, insn, 1);
}
HANDLER(rep_stos_2)
{
	return rep_stos(cpu, insn, 2);
}
HANDLER(rep_stos_4)
{
	return rep_stos(cpu, insn, 4);
}
HANDLER(rep_stos_8)
{
	return rep_stos(cpu, insn, 8);
}

/* CMPXCHG m, r without LOCK (the kernel's this_cpu_cmpxchg(), %gs-relative, ~2.8 per 4 KiB
 * read request on the disk path): flags as CMP rAX, m; the destination written either way
 * (the old value back when they differ, as emu_execute() does), rAX loaded when they differ. */
INLINE int cmpxchg_m(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	uint64_t la = fast_la(cpu, insn), acc = rget(cpu, CPU_RAX, size), dst;
	struct emu_lazy_flags cc;
	int rc;

	if ((rc = mread(cpu, la, size, &dst)))
		return rc;
	alu(cpu, ALU_CMP, size, acc, dst, &cc);
	if ((rc = mwrite(cpu, la, size, acc == dst ? rget(cpu, insn->fast_b, size) : dst)))
		return rc;
	cpu->cc = cc;
	if (acc != dst)
		rset(cpu, CPU_RAX, size, dst);
	return retire(cpu, insn);
}

HANDLER(cmpxchg_m_2)
{
	return cmpxchg_m(cpu, insn, 2);
}
HANDLER(cmpxchg_m_4)
{
	return cmpxchg_m(cpu, insn, 4);
}
HANDLER(cmpxchg_m_8)
{
	return cmpxchg_m(cpu, insn, 8);
}

/* RDTSC, RDTSCP (the kernel's clock reads, ~5 per 4 KiB read request on the disk path); under
 * CR4.TSD above CPL 0 emu_execute()'s #GP. Both end blocks (cpu.c). */
#define FAST_CR4_TSD (1ull << 2)

INLINE int rdtsc_to(struct emu_cpu *cpu, const struct emu_insn *insn, bool aux)
{
	uint64_t v;

	if ((cpu->s.cr4 & FAST_CR4_TSD) && cpu->cpl)
		return emu_execute(cpu, insn);
	v = emu_read_tsc(cpu);
	cpu->s.gpr[CPU_RAX] = v & 0xffffffff;
	cpu->s.gpr[CPU_RDX] = v >> 32;
	if (aux)
		cpu->s.gpr[CPU_RCX] = cpu->msr.tsc_aux & 0xffffffff;
	return retire(cpu, insn);
}

HANDLER(rdtsc)
{
	return rdtsc_to(cpu, insn, false);
}
HANDLER(rdtscp)
{
	return rdtsc_to(cpu, insn, true);
}

/* BSWAP r32 zero-extends (a 16-bit operand is undefined: emu_execute()). */
HANDLER(bswap_4)
{
	rset(cpu, insn->fast_a, 4, __builtin_bswap32((uint32_t)cpu->s.gpr[insn->fast_a]));
	return retire(cpu, insn);
}

HANDLER(bswap_8)
{
	cpu->s.gpr[insn->fast_a] = __builtin_bswap64(cpu->s.gpr[insn->fast_a]);
	return retire(cpu, insn);
}

HANDLER(cdqe)
{
	cpu->s.gpr[CPU_RAX] = emu_sext(cpu->s.gpr[CPU_RAX], 4);
	return retire(cpu, insn);
}

HANDLER(cltq_4) /* CWDE */
{
	rset(cpu, CPU_RAX, 4, emu_sext(cpu->s.gpr[CPU_RAX], 2));
	return retire(cpu, insn);
}

HANDLER(cqo)
{
	cpu->s.gpr[CPU_RDX] = (int64_t)cpu->s.gpr[CPU_RAX] < 0 ? ~0ull : 0;
	return retire(cpu, insn);
}

HANDLER(cdq)
{
	rset(cpu, CPU_RDX, 4, (cpu->s.gpr[CPU_RAX] & 0x80000000u) ? ~0ull : 0);
	return retire(cpu, insn);
}

/* CMPXCHG16B m128 without LOCK (SLUB's this_cpu_cmpxchg_double(), %gs-relative: ~6 per 4 KiB
 * QD32 read request on the disk path) on 16 aligned bytes of RAM writable through the TLB, as
 * system.c's exec_cmpxchg_wide() does it: ZF alone, the old value written back on failure and
 * loaded into RDX:RAX. Misaligned (#GP), a TLB miss or MMIO: emu_execute(). Without LOCK it
 * need not be atomic against other vCPUs (SDM: CMPXCHG16B); LOCK never gets here. */
HANDLER(cmpxchg16b)
{
	uint64_t la = fast_la(cpu, insn), m[2];
	uint8_t *p;

	if ((la & 15) || !(p = emu_tlb_fast(cpu, cpu->tlb.write, la, 16)))
		return emu_execute(cpu, insn);
	memcpy(m, p, 16);
	if (m[0] == cpu->s.gpr[CPU_RAX] && m[1] == cpu->s.gpr[CPU_RDX]) {
		memcpy(p, &cpu->s.gpr[CPU_RBX], 8);
		memcpy(p + 8, &cpu->s.gpr[CPU_RCX], 8);
		emu_code_stored(cpu, p);
		emu_flags_set(cpu, EMU_FLAG_ZF, EMU_FLAG_ZF);
	} else {
		cpu->s.gpr[CPU_RAX] = m[0];
		cpu->s.gpr[CPU_RDX] = m[1];
		emu_flags_set(cpu, EMU_FLAG_ZF, 0);
	}
	return retire(cpu, insn);
}

/* BT/BTS/BTR/BTC (op 0-3) with a register (0F A3/AB/B3/BB) or imm8 (0F BA /4-/7) offset, as
 * exec.c's exec_bit_test(): a register offset into memory addresses the bit string beyond the
 * operand (signed, in operand-size units); CF = the bit, OF SF AF PF left unchanged
 * (undefined), ZF unaffected. The kernel's test_bit()/__set_bit() on the disk path (~11 per
 * 4 KiB QD32 read request, BTS mostly %gs-relative) went through emu_execute(). */
INLINE int bit_test(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned op, bool imm)
{
	unsigned size = insn->opsize, bits = 8 * size;
	uint64_t offset = imm ? insn->imm & 0xff : rget(cpu, insn->reg, size), v, la = 0, bit;
	int rc;

	if (imm || insn->mod == 3) {
		offset &= bits - 1;
		if (insn->mod != 3)
			la = fast_la(cpu, insn);
	} else {
		int64_t soff = (int64_t)emu_sext(offset, size);
		unsigned log2_bits = size == 8 ? 6 : size == 4 ? 5 : 4;

		la = fast_la(cpu, insn) + (uint64_t)((soff >> log2_bits) * (int64_t)size);
		offset = (uint64_t)soff & (bits - 1);
	}
	if (insn->mod == 3)
		v = rget(cpu, insn->rm, size);
	else if ((rc = mread(cpu, la, size, &v)))
		return rc;
	bit = (v >> offset) & 1;
	if (op) {
		v = emu_bit_op(v, offset, op);
		if (insn->mod == 3)
			rset(cpu, insn->rm, size, v);
		else if ((rc = mwrite(cpu, la, size, v)))
			return rc;
	}
	emu_flags_set(cpu, EMU_FLAG_CF, bit);
	return retire(cpu, insn);
}

HANDLER(bit_test_r) /* 0F A3/AB/B3/BB: the operation in opcode bits 3-4 */
{
	return bit_test(cpu, insn, (insn->opcode >> 3) & 3, false);
}
HANDLER(bit_test_i) /* 0F BA /4-/7 */
{
	return bit_test(cpu, insn, (insn->modrm >> 3) & 3, true);
}

/* DIV r/m32, r/m64 (the kernel's do_div()/div_u64() on the disk path, ~3.4 per 4 KiB QD32 read
 * request): a zero divisor or a quotient that does not fit goes to emu_execute()'s #DE; the
 * flags are undefined and left unchanged, as exec.c does. */
INLINE int div_to(struct emu_cpu *cpu, const struct emu_insn *insn, unsigned size)
{
	uint64_t d, mask = emu_size_mask(size);
	unsigned __int128 n, q;
	int rc;

	if (insn->mod == 3)
		d = rget(cpu, insn->rm, size);
	else if ((rc = mread(cpu, fast_la(cpu, insn), size, &d)))
		return rc;
	n = ((unsigned __int128)rget(cpu, CPU_RDX, size) << (8 * size)) | rget(cpu, CPU_RAX, size);
	if (!d || (q = n / d) > mask)
		return emu_execute(cpu, insn);
	rset(cpu, CPU_RAX, size, (uint64_t)q);
	rset(cpu, CPU_RDX, size, (uint64_t)(n % d));
	return retire(cpu, insn);
}

HANDLER(div_4)
{
	return div_to(cpu, insn, 4);
}
HANDLER(div_8)
{
	return div_to(cpu, insn, 8);
}

/* BSF/BSR (0F BC/BD), also with F3 (TZCNT/LZCNT, which CPUID does not advertise: the prefix
 * is ignored, as exec.c does; ~2 TZCNT per 4 KiB QD32 read request on the disk path): a zero
 * source sets ZF, clears the other five and leaves the destination unchanged; otherwise all
 * six cleared (undefined but for ZF). */
INLINE int bit_scan(struct emu_cpu *cpu, const struct emu_insn *insn, bool reverse)
{
	unsigned size = insn->opsize;
	uint64_t v;
	int rc;

	if (insn->mod == 3)
		v = rget(cpu, insn->rm, size);
	else if ((rc = mread(cpu, fast_la(cpu, insn), size, &v)))
		return rc;
	if (!v) {
		emu_flags_set(cpu, EMU_FLAGS_ARITH, EMU_FLAG_ZF);
		return retire(cpu, insn);
	}
	emu_flags_set(cpu, EMU_FLAGS_ARITH, 0);
	rset(cpu, insn->reg, size,
	     reverse ? 63u - (unsigned)__builtin_clzll(v) : (unsigned)__builtin_ctzll(v));
	return retire(cpu, insn);
}

HANDLER(bsf)
{
	return bit_scan(cpu, insn, false);
}
HANDLER(bsr)
{
	return bit_scan(cpu, insn, true);
}

/* XADD m, r without LOCK (the kernel's this_cpu_add_return(), %gs-relative: ~2 per 4 KiB QD32
 * read request): flags as ADD, the sum to memory, then the old value to the register. */
HANDLER(xadd_m)
{
	unsigned size = insn->opsize;
	uint64_t la = fast_la(cpu, insn), dst, sum;
	struct emu_lazy_flags cc;
	int rc;

	if ((rc = mread(cpu, la, size, &dst)))
		return rc;
	sum = alu(cpu, ALU_ADD, size, dst, rget(cpu, insn->reg, size), &cc);
	if ((rc = mwrite(cpu, la, size, sum)))
		return rc;
	cpu->cc = cc;
	rset(cpu, insn->reg, size, dst);
	return retire(cpu, insn);
}

/* LFENCE, MFENCE, SFENCE: this vCPU's accesses are in program order already; made visible to
 * the others as exec_group15() does. */
HANDLER(fence)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return retire(cpu, insn);
}

/* 128-bit SSE moves between an XMM register and memory (MOVUPS/MOVUPD 0F 10/11, MOVAPS/MOVAPD
 * 0F 28/29, MOVDQA 66 0F 6F/7F; ~5 MOVUPS stores per 4 KiB QD32 read request on the disk path
 * went through emu_execute()): the 16 bytes in one RAM page through the TLB. SSE unusable
 * (CR0.EM, CR0.TS, no CR4.OSFXSR: #UD/#NM), a misaligned aligned form (#GP), a TLB miss, a
 * page crossing or MMIO: emu_execute(), as sse.c's sse_move128(). */
#define FAST_CR0_EM (1ull << 2)
#define FAST_CR0_TS (1ull << 3)
#define FAST_CR4_OSFXSR (1ull << 9)

INLINE int sse_move(struct emu_cpu *cpu, const struct emu_insn *insn, bool load, bool aligned)
{
	uint64_t la = fast_la(cpu, insn);
	uint8_t *p;

	if ((cpu->s.cr0 & (FAST_CR0_EM | FAST_CR0_TS)) || !(cpu->s.cr4 & FAST_CR4_OSFXSR) ||
	    (aligned && (la & 15)) ||
	    !(p = emu_tlb_fast(cpu, load ? cpu->tlb.read : cpu->tlb.write, la, 16)))
		return emu_execute(cpu, insn);
	if (load) {
		memcpy(cpu->fx.xmm[insn->reg], p, 16);
	} else {
		memcpy(p, cpu->fx.xmm[insn->reg], 16);
		emu_code_stored(cpu, p);
	}
	return retire(cpu, insn);
}

HANDLER(sse_load_u)
{
	return sse_move(cpu, insn, true, false);
}
HANDLER(sse_store_u)
{
	return sse_move(cpu, insn, false, false);
}
HANDLER(sse_load_a)
{
	return sse_move(cpu, insn, true, true);
}
HANDLER(sse_store_a)
{
	return sse_move(cpu, insn, false, true);
}

/* ---- selection ---- */

/* A register operand of `size` bytes that is not AH..BH (byte registers 4-7 without REX). */
static bool plain_reg(const struct emu_insn *insn, unsigned reg, unsigned size)
{
	return size != 1 || reg < 4 || reg >= 8 || (insn->prefix & EMU_PFX_REX);
}

static unsigned opcode_reg(const struct emu_insn *insn)
{
	return (insn->opcode & 7) | ((insn->rex & 1) << 3);
}

/* op r/m,r (00-3F forms 0/1, 84, 85) or op r,r/m (forms 2/3). */
static emu_fast_fn select_alu_modrm(struct emu_insn *insn, unsigned op, bool rm_is_dest)
{
	unsigned size = insn->opsize, s = SIZE_IDX(size);

	if (!plain_reg(insn, insn->reg, size))
		return NULL;
	if (insn->mod == 3) {
		if (!plain_reg(insn, insn->rm, size))
			return NULL;
		insn->fast_a = rm_is_dest ? insn->rm : insn->reg;
		insn->fast_b = rm_is_dest ? insn->reg : insn->rm;
		return alu_table[FORM_RR][op][s];
	}
	insn->fast_a = insn->fast_b = insn->reg;
	return alu_table[rm_is_dest ? FORM_MR : FORM_RM][op][s];
}

/* op r/m, imm (80/81/83, F6/F7 /0 /1 TEST). */
static emu_fast_fn select_alu_imm(struct emu_insn *insn, unsigned op)
{
	unsigned size = insn->opsize, s = SIZE_IDX(size);

	if (insn->mod != 3)
		return alu_table[FORM_MI][op][s];
	if (!plain_reg(insn, insn->rm, size))
		return NULL;
	insn->fast_a = insn->rm;
	return alu_table[FORM_RI][op][s];
}

static emu_fast_fn select_mov(struct emu_insn *insn, bool rm_is_dest)
{
	unsigned size = insn->opsize, s = SIZE_IDX(size);

	if (!plain_reg(insn, insn->reg, size))
		return NULL;
	if (insn->mod == 3) {
		if (!plain_reg(insn, insn->rm, size))
			return NULL;
		insn->fast_a = rm_is_dest ? insn->rm : insn->reg;
		insn->fast_b = rm_is_dest ? insn->reg : insn->rm;
		return mov_table[FORM_RR][s];
	}
	insn->fast_a = insn->fast_b = insn->reg;
	return mov_table[rm_is_dest ? FORM_MR : FORM_RM][s];
}

static emu_fast_fn select_movx(struct emu_insn *insn, unsigned from, bool sign)
{
	static const emu_fast_fn zx_r[2][4] = { { NULL, movx_r_1_2_0, movx_r_1_4_0, movx_r_1_8_0 },
						{ NULL, NULL, movx_r_2_4_0, movx_r_2_8_0 } };
	static const emu_fast_fn zx_m[2][4] = { { NULL, movx_m_1_2_0, movx_m_1_4_0, movx_m_1_8_0 },
						{ NULL, NULL, movx_m_2_4_0, movx_m_2_8_0 } };
	static const emu_fast_fn sx_r[2][4] = { { NULL, movx_r_1_2_1, movx_r_1_4_1, movx_r_1_8_1 },
						{ NULL, NULL, movx_r_2_4_1, movx_r_2_8_1 } };
	static const emu_fast_fn sx_m[2][4] = { { NULL, movx_m_1_2_1, movx_m_1_4_1, movx_m_1_8_1 },
						{ NULL, NULL, movx_m_2_4_1, movx_m_2_8_1 } };
	unsigned s = SIZE_IDX(insn->opsize), f = from == 1 ? 0 : 1;

	insn->fast_a = insn->reg;
	if (insn->mod != 3)
		return sign ? sx_m[f][s] : zx_m[f][s];
	if (!plain_reg(insn, insn->rm, from))
		return NULL;
	insn->fast_b = insn->rm;
	return sign ? sx_r[f][s] : zx_r[f][s];
}

static emu_fast_fn select_group3(struct emu_insn *insn)
{
	unsigned op = (insn->modrm >> 3) & 7, size = insn->opsize, s = SIZE_IDX(size);
	bool mem = insn->mod != 3;

	if (!mem) {
		if (!plain_reg(insn, insn->rm, size))
			return NULL;
		insn->fast_a = insn->rm;
	}
	switch (op) {
	case 0:
	case 1:
		return select_alu_imm(insn, OP_TEST);
	case 2:
	case 3:
		return unary_table[op][mem][s];
	case 4:
		if (size == 8)
			return mem ? mul_m_8 : mul_r_8;
		if (size == 4)
			return mem ? mul_m_4 : mul_r_4;
		return NULL;
	case 5:
		if (size == 8)
			return mem ? imul1_m_8 : imul1_r_8;
		if (size == 4)
			return mem ? imul1_m_4 : imul1_r_4;
		return NULL;
	case 6: /* DIV: #DE through emu_execute() */
		return size == 8 ? div_8 : size == 4 ? div_4 : NULL;
	default:
		return NULL; /* IDIV */
	}
}

static emu_fast_fn select_group45(struct emu_insn *insn)
{
	unsigned op = (insn->modrm >> 3) & 7, size = insn->opsize;
	bool mem = insn->mod != 3;

	if (!mem) {
		if (!plain_reg(insn, insn->rm, size))
			return NULL;
		insn->fast_a = insn->rm;
	}
	if (op <= 1)
		return unary_table[op][mem][SIZE_IDX(size)];
	if (insn->opcode == 0xFE)
		return NULL;
	switch (op) {
	case 2: /* CALL near indirect: 64-bit operand whatever the prefixes (exec_group45()) */
		return mem ? call_m : call_r;
	case 4:
		return mem ? jmp_m : jmp_r;
	case 6:
		return size != 2 && mem ? push_m : NULL; /* 64-bit unless 66 */
	default:
		return NULL;
	}
}

static emu_fast_fn select_shift(struct emu_insn *insn)
{
	unsigned op = insn->opcode, kind = op <= 0xC1 ? 0 : op <= 0xD1 ? 1 : 2;

	if (insn->mod != 3 || !plain_reg(insn, insn->rm, insn->opsize))
		return NULL;
	insn->fast_a = insn->rm;
	switch ((insn->modrm >> 3) & 7) {
	case SHIFT_SHL:
	case SHIFT_SAL:
		return shift_fixed_table[kind][0][SIZE_IDX(insn->opsize)];
	case SHIFT_SHR:
		return shift_fixed_table[kind][1][SIZE_IDX(insn->opsize)];
	case SHIFT_SAR:
		return shift_fixed_table[kind][2][SIZE_IDX(insn->opsize)];
	default: /* rotates */
		return shift_table[kind][SIZE_IDX(insn->opsize)];
	}
}

static emu_fast_fn select_map1(struct emu_insn *insn)
{
	unsigned op = insn->opcode, size = insn->opsize, s = SIZE_IDX(size);

	if (op < 0x40 && (op & 7) < 6) {
		unsigned alu_op = op >> 3;

		switch (op & 7) {
		case 0:
		case 1:
			return select_alu_modrm(insn, alu_op, true);
		case 2:
		case 3:
			return select_alu_modrm(insn, alu_op, false);
		default: /* accumulator, immediate */
			insn->fast_a = CPU_RAX;
			return alu_table[FORM_RI][alu_op][s];
		}
	}
	switch (op) {
	case 0x50 ... 0x57:
		insn->fast_a = (uint8_t)opcode_reg(insn);
		return size == 8 ? push_r : NULL;
	case 0x58 ... 0x5F:
		insn->fast_a = (uint8_t)opcode_reg(insn);
		return size == 8 ? pop_r : NULL;
	case 0x63: /* MOVSXD */
		if (size != 8)
			return NULL;
		insn->fast_a = insn->reg;
		insn->fast_b = insn->rm;
		return insn->mod == 3 ? movx_r_4_8_1 : movx_m_4_8_1;
	case 0x68:
	case 0x6A:
		return size == 8 ? push_i : NULL;
	case 0x69:
	case 0x6B:
		if (size == 1)
			return NULL;
		insn->fast_a = insn->reg;
		insn->fast_b = insn->rm;
		if (insn->mod == 3)
			return size == 2 ? imul_rri_2 : size == 4 ? imul_rri_4 : imul_rri_8;
		return size == 2 ? imul_rmi_2 : size == 4 ? imul_rmi_4 : imul_rmi_8;
	case 0x70 ... 0x7F:
		return jcc_table[op & 15];
	case 0x80 ... 0x83:
		return select_alu_imm(insn, (insn->modrm >> 3) & 7);
	case 0x84:
	case 0x85:
		return select_alu_modrm(insn, OP_TEST, true);
	case 0x87:
		if (insn->mod != 3 || size < 4)
			return NULL; /* XCHG with memory is locked */
		insn->fast_a = insn->reg;
		insn->fast_b = insn->rm;
		return size == 8 ? xchg_rr_8 : xchg_rr_4;
	case 0x88:
	case 0x89:
		return select_mov(insn, true);
	case 0x8A:
	case 0x8B:
		return select_mov(insn, false);
	case 0x8D:
		if (insn->mod == 3 || size < 4)
			return NULL;
		insn->fast_a = insn->reg;
		return size == 8 ? lea_8 : lea_4;
	case 0x90:
		return (insn->rex & 1) ? NULL : nop; /* REX.B 90: XCHG r8, rAX */
	case 0x98:
		return size == 8 ? cdqe : size == 4 ? cltq_4 : NULL;
	case 0x99:
		return size == 8 ? cqo : size == 4 ? cdq : NULL;
	case 0xA8:
	case 0xA9:
		insn->fast_a = CPU_RAX;
		return alu_table[FORM_RI][OP_TEST][s];
	case 0xB0 ... 0xBF:
		insn->fast_a = (uint8_t)opcode_reg(insn);
		if (!plain_reg(insn, insn->fast_a, size))
			return NULL;
		return mov_table[FORM_RI][s];
	case 0xC0:
	case 0xC1:
	case 0xD0 ... 0xD3:
		return select_shift(insn);
	case 0xC3:
		return size == 8 ? ret : NULL;
	case 0xC6:
	case 0xC7:
		if ((insn->modrm >> 3) & 7)
			return NULL;
		if (insn->mod != 3)
			return mov_table[FORM_MI][s];
		insn->fast_a = insn->rm;
		return plain_reg(insn, insn->rm, size) ? mov_table[FORM_RI][s] : NULL;
	case 0xC9:
		return size == 8 ? leave : NULL;
	case 0x9C:
		return size == 8 ? pushf_8 : NULL;
	case 0xFA:
		return cli;
	case 0xFB:
		return sti;
	case 0xE8:
		return size == 8 ? call_rel : NULL;
	case 0xE9:
	case 0xEB:
		return jmp_rel;
	case 0xF6:
	case 0xF7:
		return select_group3(insn);
	case 0xFE:
	case 0xFF:
		return select_group45(insn);
	default:
		return NULL;
	}
}

static emu_fast_fn select_map0f(struct emu_insn *insn)
{
	unsigned op = insn->opcode, size = insn->opsize;

	switch (op) {
	case 0x0D: /* PREFETCH/PREFETCHW */
	case 0x18 ... 0x1F: /* hint NOPs, NOP Ev */
		return nop;
	case 0x40 ... 0x4F:
		if (size == 1)
			return NULL;
		insn->fast_a = insn->reg;
		insn->fast_b = insn->rm;
		if (insn->mod == 3)
			return size == 2 ? cmov_r_2 : size == 4 ? cmov_r_4 : cmov_r_8;
		return size == 2 ? cmov_m_2 : size == 4 ? cmov_m_4 : cmov_m_8;
	case 0x80 ... 0x8F:
		return jcc_table[op & 15];
	case 0x90 ... 0x9F:
		if (insn->mod != 3)
			return setcc_m;
		insn->fast_a = insn->rm;
		return plain_reg(insn, insn->rm, 1) ? setcc_r : NULL;
	case 0xAF:
		if (size == 1)
			return NULL;
		insn->fast_a = insn->reg;
		insn->fast_b = insn->rm;
		if (insn->mod == 3)
			return size == 2 ? imul_rr_2 : size == 4 ? imul_rr_4 : imul_rr_8;
		return size == 2 ? imul_rm_2 : size == 4 ? imul_rm_4 : imul_rm_8;
	case 0xB6:
	case 0xB7:
	case 0xBE:
	case 0xBF:
		if (size == 1)
			return NULL;
		return select_movx(insn, (op & 1) ? 2 : 1, op >= 0xBE);
	case 0xC8 ... 0xCF:
		insn->fast_a = (uint8_t)opcode_reg(insn);
		return size == 8 ? bswap_8 : size == 4 ? bswap_4 : NULL;
	case 0x31:
		return rdtsc;
	case 0xB1:
		if (insn->mod == 3)
			return NULL;
		insn->fast_b = insn->reg;
		return size == 2 ? cmpxchg_m_2 : size == 4 ? cmpxchg_m_4 : cmpxchg_m_8;
	case 0x01:
		return insn->modrm == 0xF9 ? rdtscp : NULL;
	case 0xC7:
		return insn->mod != 3 && ((insn->modrm >> 3) & 7) == 1 && size == 8 ? cmpxchg16b
										    : NULL;
	case 0xA3:
	case 0xAB:
	case 0xB3:
	case 0xBB:
		return size == 1 ? NULL : bit_test_r;
	case 0xBA:
		return size == 1 || ((insn->modrm >> 3) & 7) < 4 ? NULL : bit_test_i;
	case 0xBC:
		return size == 1 ? NULL : bsf;
	case 0xBD:
		return size == 1 ? NULL : bsr;
	case 0xC1:
		return insn->mod == 3 || size == 1 ? NULL : xadd_m;
	case 0x10:
	case 0x11:
	case 0x28:
	case 0x29: /* MOVUPS/MOVUPD, MOVAPS/MOVAPD with memory (F2/F3 forms never get here) */
		if (insn->mod == 3)
			return NULL;
		return op == 0x10   ? sse_load_u
		       : op == 0x11 ? sse_store_u
		       : op == 0x28 ? sse_load_a
				    : sse_store_a;
	case 0x6F:
	case 0x7F: /* MOVDQA with memory (without 66: MMX MOVQ) */
		if (insn->mod == 3 || !(insn->prefix & EMU_PFX_OPSIZE))
			return NULL;
		return op == 0x6F ? sse_load_a : sse_store_a;
	case 0xAE: /* LFENCE, MFENCE, SFENCE (no 66: prefixed forms are others or #UD) */
		return insn->mod == 3 && ((insn->modrm >> 3) & 7) >= 5 &&
				       !(insn->prefix & EMU_PFX_OPSIZE)
			       ? fence
			       : NULL;
	default:
		return NULL;
	}
}

void emu_fast_select(struct emu_insn *insn, enum emu_mode mode)
{
	insn->fast = NULL;
	if (mode != EMU_MODE_64 || (insn->prefix & (EMU_PFX_LOCK | EMU_PFX_ADSIZE)))
		return;
	/* F2/F3 change or qualify some instructions (string, SSE, POPCNT, PAUSE): only where
	 * they mean nothing here. */
	if (insn->prefix & (EMU_PFX_REP | EMU_PFX_REPNE)) {
		if (insn->map == EMU_MAP_1 && insn->opcode == 0xC3)
			insn->fast = ret;
		else if (insn->map == EMU_MAP_0F && insn->opcode >= 0x18 && insn->opcode <= 0x1F)
			insn->fast = nop; /* ENDBR64 is F3 0F 1E FA */
		else if (insn->map == EMU_MAP_0F && (insn->opcode & 0xFE) == 0xBC &&
			 insn->opsize > 1 && !(insn->prefix & EMU_PFX_REPNE))
			insn->fast = insn->opcode == 0xBC ? bsf : bsr; /* TZCNT/LZCNT: not ours */
		else if (insn->map == EMU_MAP_1 && (insn->opcode & 0xFE) == 0xAA &&
			 !(insn->prefix & EMU_PFX_REPNE))
			insn->fast = insn->opcode == 0xAA ? rep_stos_1
				     : insn->opsize == 2  ? rep_stos_2
				     : insn->opsize == 4  ? rep_stos_4
							  : rep_stos_8;
		return;
	}
	if (insn->map == EMU_MAP_1)
		insn->fast = select_map1(insn);
	else if (insn->map == EMU_MAP_0F)
		insn->fast = select_map0f(insn);
}
