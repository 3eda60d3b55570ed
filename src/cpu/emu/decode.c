/* x86 instruction decoder (SDM Vol. 2 chapter 2 and appendix A, the opcode maps). */
#include "cpu/emu/decode.h"

#include <string.h>

#define M EMU_OP_MODRM
#define B EMU_OP_BYTE
#define D64 EMU_OP_D64
#define F64 EMU_OP_F64
#define I64 EMU_OP_I64
#define BAD EMU_OP_INVALID
#define IB (EMU_IMM_B << EMU_OP_IMM_SHIFT)
#define IW (EMU_IMM_W << EMU_OP_IMM_SHIFT)
#define IZ (EMU_IMM_Z << EMU_OP_IMM_SHIFT)
#define IV (EMU_IMM_V << EMU_OP_IMM_SHIFT)
#define IENTER (EMU_IMM_ENTER << EMU_OP_IMM_SHIFT)
#define IFAR (EMU_IMM_FAR << EMU_OP_IMM_SHIFT)
#define IMOFFS (EMU_IMM_MOFFS << EMU_OP_IMM_SHIFT)
#define IGRP3 (EMU_IMM_GRP3 << EMU_OP_IMM_SHIFT)
#define PFX 0 /* prefix bytes never reach the table */

/* The eight ALU rows 00-3F share one pattern: Eb,Gb Ev,Gv Gb,Eb Gv,Ev AL,Ib rAX,Iz then two
 * opcodes (push/pop seg, prefixes, BCD) that are listed individually. */
#define ALU_ROW M | B, M, M | B, M, B | IB, IZ

static const uint16_t map1[256] = {
	/* 00 */ ALU_ROW, I64, I64, ALU_ROW, I64, BAD /* 0F escape */,
	/* 10 */ ALU_ROW, I64, I64, ALU_ROW, I64, I64,
	/* 20 */ ALU_ROW, PFX, I64, ALU_ROW, PFX, I64,
	/* 30 */ ALU_ROW, PFX, I64, ALU_ROW, PFX, I64,
	/* 40 INC/DEC (REX in 64-bit mode) */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	/* 50 PUSH/POP r */
	D64, D64, D64, D64, D64, D64, D64, D64, D64, D64, D64, D64, D64, D64, D64, D64,
	/* 60 */ I64, I64, I64 | M, M, PFX, PFX, PFX, PFX,
	/* 68 */ D64 | IZ, M | IZ, D64 | IB, M | IB, B, 0, B, 0,
	/* 70 Jcc rel8 */
	F64 | IB, F64 | IB, F64 | IB, F64 | IB, F64 | IB, F64 | IB, F64 | IB, F64 | IB,
	F64 | IB, F64 | IB, F64 | IB, F64 | IB, F64 | IB, F64 | IB, F64 | IB, F64 | IB,
	/* 80 */ M | B | IB, M | IZ, I64 | M | B | IB, M | IB, M | B, M, M | B, M,
	/* 88 */ M | B, M, M | B, M, M, M, M, M | D64,
	/* 90 */ 0, 0, 0, 0, 0, 0, 0, 0,
	/* 98 */ 0, 0, I64 | IFAR, 0, D64, D64, 0, 0,
	/* A0 */ B | IMOFFS, IMOFFS, B | IMOFFS, IMOFFS, B, 0, B, 0,
	/* A8 */ B | IB, IZ, B, 0, B, 0, B, 0,
	/* B0 */ B | IB, B | IB, B | IB, B | IB, B | IB, B | IB, B | IB, B | IB,
	/* B8 */ IV, IV, IV, IV, IV, IV, IV, IV,
	/* C0 */ M | B | IB, M | IB, F64 | IW, F64, M /* VEX3 */, M /* VEX2 */, M | B | IB, M | IZ,
	/* C8 */ D64 | IENTER, D64, IW, 0, 0, IB, I64, 0,
	/* D0 */ M | B, M, M | B, M, I64 | IB, I64 | IB, I64, B,
	/* D8 x87 */ M, M, M, M, M, M, M, M,
	/* E0 */ F64 | IB, F64 | IB, F64 | IB, F64 | IB, B | IB, IB, B | IB, IB,
	/* E8 */ F64 | IZ, F64 | IZ, I64 | IFAR, F64 | IB, B, 0, B, 0,
	/* F0 */ PFX, 0, PFX, PFX, 0, 0, M | B | IGRP3, M | IGRP3,
	/* F8 */ 0, 0, 0, 0, 0, 0, M | B, M,
};

/* Two-byte map 0F xx. SSE/MMX rows are listed for their length only; the executor decides. */
static const uint16_t map0f[256] = {
	/* 00 */ M, M, M, M, BAD, 0, 0, 0, 0, 0, BAD, 0, BAD, M, 0, M | IB /* 3DNow! */,
	/* 10 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* 20 */ M, M, M, M, BAD, BAD, BAD, BAD, M, M, M, M, M, M, M, M,
	/* 30 */ 0, 0, 0, 0, 0, 0, BAD, 0, BAD, BAD, BAD, BAD, BAD, BAD, BAD, BAD,
	/* 40 CMOVcc */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* 50 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* 60 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* 70 */ M | IB, M | IB, M | IB, M | IB, M, M, M, 0, M, M, BAD, BAD, M, M, M, M,
	/* 80 Jcc rel16/32 */
	F64 | IZ, F64 | IZ, F64 | IZ, F64 | IZ, F64 | IZ, F64 | IZ, F64 | IZ, F64 | IZ,
	F64 | IZ, F64 | IZ, F64 | IZ, F64 | IZ, F64 | IZ, F64 | IZ, F64 | IZ, F64 | IZ,
	/* 90 SETcc */
	M | B, M | B, M | B, M | B, M | B, M | B, M | B, M | B,
	M | B, M | B, M | B, M | B, M | B, M | B, M | B, M | B,
	/* A0 */ D64, D64, 0, M, M | IB, M, BAD, BAD, D64, D64, 0, M, M | IB, M, M, M,
	/* B0 */ M | B, M, M, M, M, M, M, M, M, M, M | IB, M, M, M, M, M,
	/* C0 */ M | B, M, M | IB, M, M | IB, M | IB, M | IB, M, 0, 0, 0, 0, 0, 0, 0, 0,
	/* D0 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* E0 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
	/* F0 */ M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
};

#undef M
#undef B
#undef D64
#undef F64
#undef I64
#undef BAD
#undef IB
#undef IW
#undef IZ
#undef IV
#undef IENTER
#undef IFAR
#undef IMOFFS
#undef IGRP3
#undef PFX

struct decode_cursor {
	const uint8_t *bytes;
	unsigned avail, pos;
};

static int cursor_take(struct decode_cursor *c, unsigned n, uint64_t *value)
{
	uint64_t v = 0;

	if (c->pos + n > EMU_MAX_INSN_LEN)
		return EMU_DECODE_TOO_LONG;
	if (c->pos + n > c->avail)
		return EMU_DECODE_SHORT;
	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)c->bytes[c->pos + i] << (8 * i);
	c->pos += n;
	*value = v;
	return 0;
}

static int64_t sign_extend(uint64_t v, unsigned bytes)
{
	unsigned shift = 64 - 8 * bytes;

	return (int64_t)(v << shift) >> shift;
}

/* 16-bit addressing forms, ModRM.rm 0..7 (SDM Vol. 2 table 2-1). */
static const uint8_t modrm16_base[8] = { CPU_RBX, CPU_RBX, CPU_RBP, CPU_RBP,
					 CPU_RSI, CPU_RDI, CPU_RBP, CPU_RBX };
static const uint8_t modrm16_index[8] = { CPU_RSI, CPU_RDI, CPU_RSI, CPU_RDI,
					  EMU_REG_NONE, EMU_REG_NONE, EMU_REG_NONE, EMU_REG_NONE };

static int decode_modrm16(struct decode_cursor *c, struct emu_insn *insn)
{
	unsigned rm = insn->modrm & 7;
	uint64_t v;
	int err;

	insn->base = modrm16_base[rm];
	insn->index = modrm16_index[rm];
	insn->scale = 1;
	if (insn->mod == 0 && rm == 6) {
		insn->base = EMU_REG_NONE;
		if ((err = cursor_take(c, 2, &v)))
			return err;
		insn->disp = sign_extend(v, 2);
	} else if (insn->mod == 1) {
		if ((err = cursor_take(c, 1, &v)))
			return err;
		insn->disp = sign_extend(v, 1);
	} else if (insn->mod == 2) {
		if ((err = cursor_take(c, 2, &v)))
			return err;
		insn->disp = sign_extend(v, 2);
	}
	if (insn->base == CPU_RBP && !(insn->prefix & EMU_PFX_SEG))
		insn->seg = SEG_SS;
	return 0;
}

/* 32/64-bit addressing with SIB (SDM Vol. 2 tables 2-2 and 2-3, §2.2.1.6 for RIP-relative). */
static int decode_modrm32(struct decode_cursor *c, struct emu_insn *insn, enum emu_mode mode)
{
	unsigned rm = insn->modrm & 7;
	unsigned rex_b = (insn->rex & 1) << 3, rex_x = (insn->rex & 2) << 2;
	uint64_t v;
	int err;

	insn->index = EMU_REG_NONE;
	insn->scale = 1;
	if (rm == 4) {
		unsigned sib, base, index;

		if ((err = cursor_take(c, 1, &v)))
			return err;
		sib = (unsigned)v;
		insn->scale = (uint8_t)(1u << (sib >> 6));
		index = ((sib >> 3) & 7) | rex_x;
		base = sib & 7;
		/* SIB index 100 without REX.X means no index */
		insn->index = index == CPU_RSP ? EMU_REG_NONE : (uint8_t)index;
		if (base == 5 && insn->mod == 0) {
			insn->base = EMU_REG_NONE;
			if ((err = cursor_take(c, 4, &v)))
				return err;
			insn->disp = sign_extend(v, 4);
		} else {
			insn->base = (uint8_t)(base | rex_b);
		}
	} else if (rm == 5 && insn->mod == 0) {
		insn->base = mode == EMU_MODE_64 ? EMU_REG_RIP : EMU_REG_NONE;
		if ((err = cursor_take(c, 4, &v)))
			return err;
		insn->disp = sign_extend(v, 4);
	} else {
		insn->base = (uint8_t)(rm | rex_b);
	}
	if (insn->mod == 1) {
		if ((err = cursor_take(c, 1, &v)))
			return err;
		insn->disp = sign_extend(v, 1);
	} else if (insn->mod == 2) {
		if ((err = cursor_take(c, 4, &v)))
			return err;
		insn->disp = sign_extend(v, 4);
	}
	/* rSP and rBP as base default to SS (SDM Vol. 1 §3.7.4); with REX.B, r12/r13 do not. */
	if ((insn->base == CPU_RSP || insn->base == CPU_RBP) && !(insn->prefix & EMU_PFX_SEG))
		insn->seg = SEG_SS;
	return 0;
}

static int decode_modrm(struct decode_cursor *c, struct emu_insn *insn, enum emu_mode mode)
{
	uint64_t v;
	int err;

	if ((err = cursor_take(c, 1, &v)))
		return err;
	insn->modrm = (uint8_t)v;
	insn->mod = insn->modrm >> 6;
	insn->reg = ((insn->modrm >> 3) & 7) | ((insn->rex & 4) << 1);
	insn->rm = (insn->modrm & 7) | ((insn->rex & 1) << 3);
	insn->base = insn->index = EMU_REG_NONE;
	/* MOV to/from CR/DR (0F 20-23) ignore the mod field: the operand is always a register
	 * (SDM Vol. 2, MOV—Move to/from Control Registers). */
	if (insn->map == EMU_MAP_0F && (insn->opcode & 0xFC) == 0x20)
		insn->mod = 3;
	if (insn->mod == 3)
		return 0;
	if (insn->adsize == 2)
		return decode_modrm16(c, insn);
	return decode_modrm32(c, insn, mode);
}

static int decode_immediate(struct decode_cursor *c, struct emu_insn *insn)
{
	enum emu_imm_kind kind = (insn->attr & EMU_OP_IMM_MASK) >> EMU_OP_IMM_SHIFT;
	unsigned size = 0;
	bool sign = true;
	uint64_t v;
	int err;

	switch (kind) {
	case EMU_IMM_NONE:
		return 0;
	case EMU_IMM_B:
		size = 1;
		break;
	case EMU_IMM_W:
		size = 2;
		sign = false;
		break;
	case EMU_IMM_Z:
		size = insn->opsize == 2 ? 2 : 4;
		break;
	case EMU_IMM_V:
		size = insn->opsize;
		sign = false;
		break;
	case EMU_IMM_GRP3:
		if (((insn->modrm >> 3) & 7) > 1)
			return 0;
		size = insn->opsize == 1 ? 1 : insn->opsize == 2 ? 2 : 4;
		break;
	case EMU_IMM_MOFFS:
		size = insn->adsize;
		sign = false;
		break;
	case EMU_IMM_ENTER:
		if ((err = cursor_take(c, 2, &insn->imm)) || (err = cursor_take(c, 1, &v)))
			return err;
		insn->imm2 = (uint16_t)v;
		insn->imm_size = 3;
		return 0;
	case EMU_IMM_FAR:
		if ((err = cursor_take(c, insn->opsize == 2 ? 2 : 4, &insn->imm)) ||
		    (err = cursor_take(c, 2, &v)))
			return err;
		insn->imm2 = (uint16_t)v;
		insn->imm_size = insn->opsize == 2 ? 4 : 6;
		return 0;
	}
	if ((err = cursor_take(c, size, &v)))
		return err;
	insn->imm = sign ? (uint64_t)sign_extend(v, size) : v;
	insn->imm_size = (uint8_t)size;
	return 0;
}

static bool decode_is_legacy_prefix(uint64_t v)
{
	return v == 0xF0 || v == 0xF2 || v == 0xF3 || v == 0x66 || v == 0x67 || v == 0x64 ||
	       v == 0x65 || (v & 0xE7) == 0x26;
}

/* Legacy prefixes and REX (SDM Vol. 2 §2.1.1, §2.2.1). A REX not immediately before the opcode
 * is ignored. Returns the first opcode byte's position via the cursor. */
static int decode_prefixes(struct decode_cursor *c, struct emu_insn *insn, enum emu_mode mode)
{
	static const uint8_t seg_of[8] = { SEG_ES, SEG_CS, SEG_SS, SEG_DS };
	uint64_t v;
	int err;

	for (;;) {
		if ((err = cursor_take(c, 1, &v)))
			return err;
		if (!((v & 0xF0) == 0x40 && mode == EMU_MODE_64) && decode_is_legacy_prefix(v))
			insn->rex = 0; /* a REX not right before the opcode is ignored */
		switch (v) {
		case 0xF0:
			insn->prefix |= EMU_PFX_LOCK;
			break;
		case 0xF2:
			insn->prefix |= EMU_PFX_REPNE;
			insn->last_rep = 0xF2;
			break;
		case 0xF3:
			insn->prefix |= EMU_PFX_REP;
			insn->last_rep = 0xF3;
			break;
		case 0x66:
			insn->prefix |= EMU_PFX_OPSIZE;
			break;
		case 0x67:
			insn->prefix |= EMU_PFX_ADSIZE;
			break;
		case 0x26:
		case 0x2E:
		case 0x36:
		case 0x3E:
			/* ES/CS/SS/DS overrides: ignored in 64-bit mode (their base is 0). */
			insn->prefix |= EMU_PFX_SEG;
			insn->seg = seg_of[(v >> 3) & 3];
			break;
		case 0x64:
		case 0x65:
			insn->prefix |= EMU_PFX_SEG;
			insn->seg = v == 0x64 ? SEG_FS : SEG_GS;
			break;
		default:
			if (mode == EMU_MODE_64 && (v & 0xF0) == 0x40) {
				insn->rex = (uint8_t)v;
				continue;
			}
			c->pos--;
			if (insn->rex)
				insn->prefix |= EMU_PFX_REX;
			return 0;
		}
	}
}

static void decode_sizes(struct emu_insn *insn, enum emu_mode mode)
{
	bool o16 = insn->prefix & EMU_PFX_OPSIZE, a16 = insn->prefix & EMU_PFX_ADSIZE;

	if (mode == EMU_MODE_64) {
		insn->adsize = a16 ? 4 : 8;
		if (insn->rex & 8)
			insn->opsize = 8;
		else if (insn->attr & EMU_OP_F64)
			insn->opsize = 8; /* near branches ignore 66 (Intel; AMD honours it) */
		else if (insn->attr & EMU_OP_D64)
			insn->opsize = o16 ? 2 : 8;
		else
			insn->opsize = o16 ? 2 : 4;
	} else {
		bool d32 = mode == EMU_MODE_32;

		insn->adsize = (d32 ^ a16) ? 4 : 2;
		insn->opsize = (d32 ^ o16) ? 4 : 2;
	}
	if (insn->attr & EMU_OP_BYTE)
		insn->opsize = 1;
}

int emu_decode(const uint8_t *bytes, unsigned avail, enum emu_mode mode, struct emu_insn *insn)
{
	struct decode_cursor c = { .bytes = bytes, .avail = avail, .pos = 0 };
	uint64_t v;
	int err;

	memset(insn, 0, sizeof(*insn));
	insn->seg = SEG_DS;
	insn->base = insn->index = EMU_REG_NONE;
	if ((err = decode_prefixes(&c, insn, mode)))
		return err;
	if ((err = cursor_take(&c, 1, &v)))
		return err;
	insn->opcode = (uint8_t)v;
	if (insn->opcode == 0x0F) {
		if ((err = cursor_take(&c, 1, &v)))
			return err;
		insn->opcode = (uint8_t)v;
		insn->map = EMU_MAP_0F;
		if (insn->opcode == 0x38 || insn->opcode == 0x3A) {
			insn->map = insn->opcode == 0x38 ? EMU_MAP_0F38 : EMU_MAP_0F3A;
			if ((err = cursor_take(&c, 1, &v)))
				return err;
			insn->opcode = (uint8_t)v;
			/* Three-byte maps: all take ModRM; 0F 3A takes an imm8 as well. */
			insn->attr = EMU_OP_MODRM;
			if (insn->map == EMU_MAP_0F3A)
				insn->attr |= EMU_IMM_B << EMU_OP_IMM_SHIFT;
		} else {
			insn->attr = map0f[insn->opcode];
		}
	} else {
		insn->attr = map1[insn->opcode];
		/* VEX (C4/C5) in 64-bit mode, EVEX (62): no AVX is advertised, so #UD. */
		if ((insn->opcode == 0xC4 || insn->opcode == 0xC5) &&
		    (mode == EMU_MODE_64 || (c.pos < avail && bytes[c.pos] >= 0xC0)))
			return EMU_DECODE_UD;
	}
	if ((insn->attr & EMU_OP_INVALID) || (mode == EMU_MODE_64 && (insn->attr & EMU_OP_I64)))
		return EMU_DECODE_UD;
	decode_sizes(insn, mode);
	if ((insn->attr & EMU_OP_MODRM) && (err = decode_modrm(&c, insn, mode)))
		return err;
	if ((err = decode_immediate(&c, insn)))
		return err;
	insn->len = (uint8_t)c.pos;
	return EMU_DECODE_OK;
}
