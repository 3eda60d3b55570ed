/* Integer arithmetic with x86 flag semantics (alu.c), used by the executor. */
#ifndef VMM_CPU_EMU_ALU_H
#define VMM_CPU_EMU_ALU_H

#include <stdbool.h>
#include <stdint.h>

#include "cpu/emu/emu.h"

/* Group-1 operation numbers: the ModRM.reg of 80-83 and bits 5:3 of opcodes 00-3F. */
enum emu_alu_op { ALU_ADD, ALU_OR, ALU_ADC, ALU_SBB, ALU_AND, ALU_SUB, ALU_XOR, ALU_CMP };
/* Group-2 operation numbers: the ModRM.reg of C0/C1/D0-D3 (/6 is an alias of SHL). */
enum emu_shift_op { SHIFT_ROL, SHIFT_ROR, SHIFT_RCL, SHIFT_RCR, SHIFT_SHL, SHIFT_SHR, SHIFT_SAL,
		    SHIFT_SAR };

static inline uint64_t emu_size_mask(unsigned size)
{
	return size >= 8 ? ~0ull : (1ull << (8 * size)) - 1;
}

/* Write `size` bytes of v to a register: 32-bit results zero-extend to 64 bits, 8- and 16-bit
 * results merge (SDM Vol. 1 §3.4.1.1). Byte writes go to the low byte (AH..BH are the
 * caller's business). */
static inline __attribute__((always_inline)) void emu_gpr_write(uint64_t *r, unsigned size,
								uint64_t v)
{
	switch (size) {
	case 1:
		*r = (*r & ~0xffull) | (v & 0xff);
		break;
	case 2:
		*r = (*r & ~0xffffull) | (v & 0xffff);
		break;
	case 4:
		*r = v & 0xffffffffull;
		break;
	default:
		*r = v;
		break;
	}
}

/* BTS (op 1), BTR (2), BTC (3): `v` with bit `offset` set, cleared or flipped; BT (0): `v`. */
static inline uint64_t emu_bit_op(uint64_t v, uint64_t offset, unsigned op)
{
	if (op == 1)
		return v | 1ull << offset;
	if (op == 2)
		return v & ~(1ull << offset);
	return op == 3 ? v ^ 1ull << offset : v;
}

static inline uint64_t emu_sign_bit(unsigned size)
{
	return 1ull << (8 * size - 1);
}

/* Sign-extend the low `size` bytes of v. */
static inline uint64_t emu_sext(uint64_t v, unsigned size)
{
	unsigned shift = 64 - 8 * size;

	return (uint64_t)((int64_t)(v << shift) >> shift);
}

/* Replace the status flags in `mask` with `value` (everything else is kept). */
void emu_flags_set(struct emu_cpu *cpu, uint64_t mask, uint64_t value);
/* SF, ZF and PF of a result, as most instructions set them. */
uint64_t emu_flags_szp(uint64_t result, unsigned size);

/* CF of the recorded operation without materialising the other flags. Inline: ADC/SBB
 * chains (multi-precision arithmetic) read it once per instruction. */
static inline bool emu_lazy_cf(const struct emu_cpu *cpu)
{
	const struct emu_lazy_flags *cc = &cpu->cc;
	uint64_t a = cc->src1, b = cc->src2, r = cc->res; /* recorded masked to the size */

	switch (cc->op) {
	case EMU_CC_NONE:
		return cpu->s.rflags & EMU_FLAG_CF;
	case EMU_CC_ADD:
		return r < a;
	case EMU_CC_ADC:
		return cc->carry ? r <= a : r < a;
	case EMU_CC_SUB:
		return a < b;
	case EMU_CC_SBB:
		return cc->carry ? a <= b : a < b;
	case EMU_CC_LOGIC:
		return false;
	default: /* INC, DEC: preserved */
		return cc->carry;
	}
}

/* Record a flag-producing operation for lazy evaluation (struct emu_lazy_flags). a, b and res
 * are masked to `size` (emu_lazy_cf() relies on it). */
static inline void emu_flags_record(struct emu_cpu *cpu, enum emu_cc_op op, unsigned size,
				    uint64_t a, uint64_t b, uint64_t res, bool carry)
{
	cpu->cc.op = (uint8_t)op;
	cpu->cc.size = (uint8_t)size;
	cpu->cc.src1 = a;
	cpu->cc.src2 = b;
	cpu->cc.res = res;
	cpu->cc.carry = carry;
}

/* ADD/ADC/SUB/SBB/CMP/logic: the result, with the flags recorded lazily. Inline: most
 * instructions are one of these. */
static inline uint64_t emu_alu(struct emu_cpu *cpu, enum emu_alu_op op, unsigned size, uint64_t a,
			       uint64_t b)
{
	uint64_t mask = emu_size_mask(size), r;
	bool c;

	a &= mask;
	b &= mask;
	switch (op) {
	case ALU_ADD:
		r = (a + b) & mask;
		emu_flags_record(cpu, EMU_CC_ADD, size, a, b, r, false);
		return r;
	case ALU_ADC:
		c = emu_lazy_cf(cpu);
		r = (a + b + c) & mask;
		emu_flags_record(cpu, EMU_CC_ADC, size, a, b, r, c);
		return r;
	case ALU_SBB:
		c = emu_lazy_cf(cpu);
		r = (a - b - c) & mask;
		emu_flags_record(cpu, EMU_CC_SBB, size, a, b, r, c);
		return r;
	case ALU_SUB:
	case ALU_CMP:
		r = (a - b) & mask;
		emu_flags_record(cpu, EMU_CC_SUB, size, a, b, r, false);
		return r;
	case ALU_AND:
		r = a & b;
		break;
	case ALU_OR:
		r = a | b;
		break;
	default: /* ALU_XOR */
		r = a ^ b;
		break;
	}
	emu_flags_record(cpu, EMU_CC_LOGIC, size, a, b, r, false);
	return r;
}

uint64_t emu_inc_dec(struct emu_cpu *cpu, bool dec, unsigned size, uint64_t a);
/* Shifts and rotates; count is the unmasked count operand. */
uint64_t emu_shift(struct emu_cpu *cpu, enum emu_shift_op op, unsigned size, uint64_t a,
		   unsigned count);
/* SHLD (right = false) and SHRD (right = true). */
uint64_t emu_shift_double(struct emu_cpu *cpu, bool right, unsigned size, uint64_t dst,
			  uint64_t src, unsigned count);

#endif
