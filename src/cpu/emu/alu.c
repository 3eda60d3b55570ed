/* Flags and integer arithmetic (SDM Vol. 1 §3.4.3 and each instruction's "Flags Affected").
 *
 * ADD/ADC/SUB/SBB/logic/INC/DEC only record their operands (struct emu_lazy_flags); the flags
 * are computed when read. Shifts and rotates, whose flags depend on the count in many ways,
 * compute them at once. Where the SDM leaves a flag undefined we produce the value listed in
 * tests/unit/test_emu_diff.c's table (usually 0 or the natural formula); guests must not rely
 * on them and the differential test does not compare them. */
#include "cpu/emu/alu.h"

uint64_t emu_flags_szp(uint64_t result, unsigned size)
{
	uint64_t f = 0;

	result &= emu_size_mask(size);
	if (!result)
		f |= EMU_FLAG_ZF;
	if (result & emu_sign_bit(size))
		f |= EMU_FLAG_SF;
	if (!__builtin_parity((unsigned)(result & 0xff)))
		f |= EMU_FLAG_PF;
	return f;
}

/* The six status flags of the recorded operation. */
static uint64_t flags_compute(const struct emu_lazy_flags *cc)
{
	uint64_t mask = emu_size_mask(cc->size), sign = emu_sign_bit(cc->size);
	uint64_t a = cc->src1 & mask, b = cc->src2 & mask, r = cc->res & mask;
	uint64_t f = emu_flags_szp(r, cc->size);

	switch (cc->op) {
	case EMU_CC_ADD:
	case EMU_CC_ADC:
		if (cc->op == EMU_CC_ADC && cc->carry ? r <= a : r < a)
			f |= EMU_FLAG_CF;
		if ((a ^ r) & (b ^ r) & sign)
			f |= EMU_FLAG_OF;
		f |= (a ^ b ^ r) & EMU_FLAG_AF;
		break;
	case EMU_CC_SUB:
	case EMU_CC_SBB:
		if (cc->op == EMU_CC_SBB && cc->carry ? a <= b : a < b)
			f |= EMU_FLAG_CF;
		if ((a ^ b) & (a ^ r) & sign)
			f |= EMU_FLAG_OF;
		f |= (a ^ b ^ r) & EMU_FLAG_AF;
		break;
	case EMU_CC_LOGIC:
		break; /* CF = OF = 0, AF undefined: 0 */
	case EMU_CC_INC:
	case EMU_CC_DEC:
		/* Like ADD/SUB of 1 but CF is preserved (SDM: INC, DEC). */
		if (cc->carry)
			f |= EMU_FLAG_CF;
		if (r == (cc->op == EMU_CC_INC ? sign : sign - 1))
			f |= EMU_FLAG_OF;
		f |= (a ^ 1 ^ r) & EMU_FLAG_AF;
		break;
	}
	return f;
}

void emu_flags_sync(struct emu_cpu *cpu)
{
	if (cpu->cc.op == EMU_CC_NONE)
		return;
	cpu->s.rflags = (cpu->s.rflags & ~EMU_FLAGS_ARITH) | flags_compute(&cpu->cc);
	cpu->cc.op = EMU_CC_NONE;
}

uint64_t emu_flags_get(struct emu_cpu *cpu)
{
	emu_flags_sync(cpu);
	return cpu->s.rflags;
}

void emu_flags_set(struct emu_cpu *cpu, uint64_t mask, uint64_t value)
{
	/* Replacing all six status flags needs nothing of the recorded operation. */
	if ((mask & EMU_FLAGS_ARITH) == EMU_FLAGS_ARITH)
		cpu->cc.op = EMU_CC_NONE;
	else
		emu_flags_sync(cpu);
	cpu->s.rflags = (cpu->s.rflags & ~mask) | (value & mask);
}

/* Single flags of the recorded operation, without materialising the others (Jcc, SETcc,
 * CMOVcc, ADC and SBB read one or two). Same formulas as flags_compute(); CF is
 * emu_lazy_cf() (alu.h). */
static bool lazy_zf(const struct emu_cpu *cpu)
{
	if (cpu->cc.op == EMU_CC_NONE)
		return cpu->s.rflags & EMU_FLAG_ZF;
	return !(cpu->cc.res & emu_size_mask(cpu->cc.size));
}

static bool lazy_sf(const struct emu_cpu *cpu)
{
	if (cpu->cc.op == EMU_CC_NONE)
		return cpu->s.rflags & EMU_FLAG_SF;
	return cpu->cc.res & emu_sign_bit(cpu->cc.size);
}

static bool lazy_of(const struct emu_cpu *cpu)
{
	const struct emu_lazy_flags *cc = &cpu->cc;
	uint64_t sign, a = cc->src1, b = cc->src2, r = cc->res;

	/* With no pending operation the size is whatever was left (0 after a reset): no sign. */
	if (cc->op == EMU_CC_NONE)
		return cpu->s.rflags & EMU_FLAG_OF;
	sign = emu_sign_bit(cc->size);
	switch (cc->op) {
	case EMU_CC_ADD:
	case EMU_CC_ADC:
		return (a ^ r) & (b ^ r) & sign;
	case EMU_CC_SUB:
	case EMU_CC_SBB:
		return (a ^ b) & (a ^ r) & sign;
	case EMU_CC_LOGIC:
		return false;
	case EMU_CC_INC:
		return (r & emu_size_mask(cc->size)) == sign;
	default: /* DEC */
		return (r & emu_size_mask(cc->size)) == sign - 1;
	}
}

/* Jcc/SETcc/CMOVcc condition codes (SDM Vol. 1 appendix B). */
bool emu_condition(struct emu_cpu *cpu, unsigned cc)
{
	bool r;

	switch (cc >> 1) {
	case 0: r = lazy_of(cpu); break;
	case 1: r = emu_lazy_cf(cpu); break;
	case 2: r = lazy_zf(cpu); break;
	case 3: r = emu_lazy_cf(cpu) || lazy_zf(cpu); break;
	case 4: r = lazy_sf(cpu); break;
	case 5: r = emu_flags_get(cpu) & EMU_FLAG_PF; break;
	case 6: r = lazy_sf(cpu) != lazy_of(cpu); break;
	default: r = lazy_zf(cpu) || lazy_sf(cpu) != lazy_of(cpu); break;
	}
	return (cc & 1) ? !r : r;
}

uint64_t emu_inc_dec(struct emu_cpu *cpu, bool dec, unsigned size, uint64_t a)
{
	uint64_t mask = emu_size_mask(size);
	uint64_t r = (dec ? a - 1 : a + 1) & mask;

	emu_flags_record(cpu, dec ? EMU_CC_DEC : EMU_CC_INC, size, a & mask, 1, r, emu_lazy_cf(cpu));
	return r;
}

static uint64_t msb(uint64_t v, unsigned size)
{
	return (v & emu_sign_bit(size)) ? 1 : 0;
}

/* Rotate through carry, one bit at a time: rare, and the loop is obviously right. */
static uint64_t rotate_carry(uint64_t a, unsigned size, unsigned count, bool right, uint64_t *cf)
{
	unsigned bits = 8 * size;

	for (unsigned i = 0; i < count; i++) {
		uint64_t out;

		if (right) {
			out = a & 1;
			a = (a >> 1) | (*cf << (bits - 1));
		} else {
			out = msb(a, size);
			a = ((a << 1) | *cf) & emu_size_mask(size);
		}
		*cf = out;
	}
	return a;
}

static uint64_t rotate(uint64_t a, unsigned size, unsigned count, bool right)
{
	unsigned bits = 8 * size;

	/* cppcheck-suppress zerodivcond ; size is 1, 2, 4 or 8 */
	count %= bits;
	if (!count)
		return a;
	if (right)
		return ((a >> count) | (a << (bits - count))) & emu_size_mask(size);
	return ((a << count) | (a >> (bits - count))) & emu_size_mask(size);
}

/* SDM Vol. 2: SAL/SAR/SHL/SHR and RCL/RCR/ROL/ROR. The count is masked to 5 bits (6 with a 64-bit
 * operand); a masked count of 0 changes nothing, not even flags. */
uint64_t emu_shift(struct emu_cpu *cpu, enum emu_shift_op op, unsigned size, uint64_t a,
		   unsigned count)
{
	unsigned bits = 8 * size;
	uint64_t mask = emu_size_mask(size), r, cf, of;

	count &= size == 8 ? 63 : 31;
	a &= mask;
	if (!count)
		return a;
	cf = emu_lazy_cf(cpu);
	switch (op) {
	case SHIFT_ROL:
		r = rotate(a, size, count, false);
		cf = r & 1;
		of = msb(r, size) ^ cf;
		emu_flags_set(cpu, EMU_FLAG_CF | EMU_FLAG_OF, cf | (of << 11));
		return r;
	case SHIFT_ROR:
		r = rotate(a, size, count, true);
		cf = msb(r, size);
		of = msb(r, size) ^ msb(r << 1, size);
		emu_flags_set(cpu, EMU_FLAG_CF | EMU_FLAG_OF, cf | (of << 11));
		return r;
	case SHIFT_RCL:
		/* 8- and 16-bit operands rotate through 9 or 17 bits. */
		r = rotate_carry(a, size, size < 4 ? count % (bits + 1) : count, false, &cf);
		of = msb(r, size) ^ cf;
		emu_flags_set(cpu, EMU_FLAG_CF | EMU_FLAG_OF, cf | (of << 11));
		return r;
	case SHIFT_RCR:
		of = msb(a, size) ^ cf; /* defined for a count of 1: computed before rotating */
		r = rotate_carry(a, size, size < 4 ? count % (bits + 1) : count, true, &cf);
		emu_flags_set(cpu, EMU_FLAG_CF | EMU_FLAG_OF, cf | (of << 11));
		return r;
	case SHIFT_SHL:
	case SHIFT_SAL:
		/* Counts >= the width (8/16-bit operands only) leave 0; CF is then undefined. */
		r = count < bits ? (a << count) & mask : 0;
		cf = count <= bits ? (a >> (bits - count)) & 1 : 0;
		of = msb(r, size) ^ cf;
		break;
	case SHIFT_SHR:
		r = count < bits ? a >> count : 0;
		cf = count <= bits ? (a >> (count - 1)) & 1 : 0;
		of = msb(a, size);
		break;
	default: /* SHIFT_SAR: counts >= the width fill with the sign, which is also CF */
		if (count >= bits) {
			cf = msb(a, size);
			r = cf ? mask : 0;
		} else {
			cf = (emu_sext(a, size) >> (count - 1)) & 1;
			r = (uint64_t)((int64_t)emu_sext(a, size) >> count) & mask;
		}
		of = 0;
		break;
	}
	emu_flags_set(cpu, EMU_FLAGS_ARITH, emu_flags_szp(r, size) | cf | (of << 11));
	return r;
}

/* SDM Vol. 2: SHLD, SHRD. A count above the operand size (16-bit only) leaves the result and
 * the flags undefined; the differential test does not generate it. */
uint64_t emu_shift_double(struct emu_cpu *cpu, bool right, unsigned size, uint64_t dst,
			  uint64_t src, unsigned count)
{
	unsigned bits = 8 * size;
	uint64_t mask = emu_size_mask(size), r, cf, of;

	count &= size == 8 ? 63 : 31;
	dst &= mask;
	src &= mask;
	if (!count)
		return dst;
	if (count > bits) { /* 16-bit operand, 17..31: undefined; shift src:dst by count - 16 */
		uint64_t t = dst;

		count -= bits;
		dst = src;
		src = t;
	}
	if (right) {
		r = (dst >> count) | (count < 64 ? src << (bits - count) : 0);
		if (count == bits)
			r = src;
		cf = (dst >> (count - 1)) & 1;
	} else {
		r = count == bits ? src : (dst << count) | (src >> (bits - count));
		cf = (dst >> (bits - count)) & 1;
	}
	r &= mask;
	of = msb(r, size) ^ msb(dst, size);
	emu_flags_set(cpu, EMU_FLAGS_ARITH, emu_flags_szp(r, size) | cf | (of << 11));
	return r;
}
