/* The executor: one decoded instruction at a time (SDM Vol. 2 for each instruction).
 *
 * Every handler returns an enum emu_status. Faulting instructions leave the architectural state
 * as it was before them: memory is read before anything is written, and registers are written
 * after memory. REP string instructions may stop between iterations (RIP stays on them). */
#include "cpu/emu/alu.h"
#include "cpu/emu/decode.h"
#include "cpu/emu/emu.h"
#include "cpu/emu/exec.h"

#include <pthread.h>
#include <string.h>

/* A REP string instruction yields (RIP stays on it) after this much work, so that the vCPU
 * sees interrupts and its timers: bytes moved by the bulk path, where each element done one
 * at a time counts EXEC_REP_ELEMENT_COST (4096 of them per execution). */
#define EXEC_REP_BATCH_BYTES (32u * 1024)
#define EXEC_REP_ELEMENT_COST 8u

/* ---- registers ---- */

/* ---- memory ---- */

uint64_t exec_seg_linear(const struct exec *x, unsigned seg, uint64_t offset)
{
	const struct emu_cpu *cpu = x->cpu;

	/* 64-bit mode: only FS and GS have a base (SDM Vol. 1 §3.3.7.1). Limits: not checked. */
	if (cpu->mode == EMU_MODE_64)
		return (seg == SEG_FS || seg == SEG_GS) ? offset + cpu->s.seg[seg].base : offset;
	return (offset + cpu->s.seg[seg].base) & 0xffffffffull;
}

uint64_t exec_addr_mask(const struct exec *x)
{
	return emu_size_mask(x->insn->adsize);
}

uint64_t exec_effective_address(const struct exec *x)
{
	const struct emu_insn *insn = x->insn;
	uint64_t ea = (uint64_t)insn->disp;

	if (insn->base == EMU_REG_RIP)
		ea += x->next_rip;
	else if (insn->base != EMU_REG_NONE)
		ea += x->cpu->s.gpr[insn->base];
	if (insn->index != EMU_REG_NONE)
		ea += x->cpu->s.gpr[insn->index] * insn->scale;
	return ea & exec_addr_mask(x);
}

/* ---- locked read-modify-writes (SDM Vol. 3 §9.1.2) ----
 *
 * vCPUs are host threads sharing guest RAM, so a locked instruction must not be a plain read
 * and a later write. Its operand is translated for writing first (a fault changes nothing),
 * read, and the handler computes the new value and flags as usual; the write is then a host
 * compare-and-swap against what was read, and if another vCPU changed the operand in between
 * the whole instruction runs again (EXEC_RETRY; handlers write registers only after memory).
 * A host compare-and-swap covers an operand of 1, 2, 4 or 8 bytes that is naturally aligned
 * (any host) or within one 64-byte cache line (x86 hosts, whose LOCK CMPXCHG allows that),
 * and the 16-byte aligned operand of CMPXCHG16B (x86-64 hosts: LOCK CMPXCHG16B). Anything
 * else — split locks across cache lines or pages, MMIO, memory without a lock_operand hook —
 * is read and written under one process-wide mutex (one VM per process: VM-wide), which
 * serialises such operands against each other but not against the compare-and-swap path:
 * a split lock overlapping an aligned locked operand that another vCPU updates at the same
 * time is not atomic against it (Linux avoids split locks; real CPUs make them very slow).
 * An MMIO operand whose access stops the instruction (an exit) releases the mutex at the
 * stop; the replayed read and the write happen under it again when the instruction resumes. */
static pthread_mutex_t exec_bus_lock = PTHREAD_MUTEX_INITIALIZER;

#define HOST_CACHE_LINE 64

static bool host_atomic_ok(const uint8_t *host, unsigned len)
{
	uintptr_t p = (uintptr_t)host;

	if (len == 16) /* CMPXCHG16B: #GP unless aligned */
#if defined(__x86_64__)
		return !(p & 15);
#else
		return false;
#endif
	if (len != 1 && len != 2 && len != 4 && len != 8)
		return false;
	if (!(p & (len - 1)))
		return true;
#if defined(__x86_64__) || defined(__i386__)
	return (p & (HOST_CACHE_LINE - 1)) + len <= HOST_CACHE_LINE;
#else
	return false;
#endif
}

/* Replace the `len` bytes at `host` with `desired` if they still hold `expected`. */
static bool host_cas(uint8_t *host, unsigned len, const void *expected, const void *desired)
{
	uint64_t e = 0, d = 0;

#if defined(__x86_64__)
	if (len == 16) {
		uint64_t e2[2], d2[2];
		bool ok;

		memcpy(e2, expected, 16);
		memcpy(d2, desired, 16);
		__asm__ volatile("lock cmpxchg16b (%[p])"
				 : "=@ccz"(ok), "+a"(e2[0]), "+d"(e2[1])
				 : [p] "r"(host), "b"(d2[0]), "c"(d2[1])
				 : "memory");
		return ok;
	}
#endif
	memcpy(&e, expected, len);
	memcpy(&d, desired, len);
	if (!((uintptr_t)host & (len - 1))) {
		switch (len) {
		case 1: {
			uint8_t e1 = (uint8_t)e;
			return __atomic_compare_exchange_n(host, &e1, (uint8_t)d, false,
							   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
		}
		case 2: {
			uint16_t e1 = (uint16_t)e;
			return __atomic_compare_exchange_n((uint16_t *)(void *)host, &e1,
							   (uint16_t)d, false, __ATOMIC_SEQ_CST,
							   __ATOMIC_SEQ_CST);
		}
		case 4: {
			uint32_t e1 = (uint32_t)e;
			return __atomic_compare_exchange_n((uint32_t *)(void *)host, &e1,
							   (uint32_t)d, false, __ATOMIC_SEQ_CST,
							   __ATOMIC_SEQ_CST);
		}
		default:
			return __atomic_compare_exchange_n((uint64_t *)(void *)host, &e, d, false,
							   __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
		}
	}
#if defined(__x86_64__) || defined(__i386__)
	/* Unaligned within a cache line: LOCK CMPXCHG is atomic there (host_atomic_ok()). */
	bool ok;

	switch (len) {
	case 2:
		__asm__ volatile("lock cmpxchgw %w[d], (%[p])"
				 : "=@ccz"(ok), "+a"(e)
				 : [p] "r"(host), [d] "r"(d)
				 : "memory");
		return ok;
	case 4:
		__asm__ volatile("lock cmpxchgl %k[d], (%[p])"
				 : "=@ccz"(ok), "+a"(e)
				 : [p] "r"(host), [d] "r"(d)
				 : "memory");
		return ok;
#if defined(__x86_64__)
	case 8:
		__asm__ volatile("lock cmpxchgq %[d], (%[p])"
				 : "=@ccz"(ok), "+a"(e)
				 : [p] "r"(host), [d] "r"(d)
				 : "memory");
		return ok;
#endif
	}
#endif
	return false; /* not reached: host_atomic_ok() refused it */
}

static void exec_lock_release(struct exec *x)
{
	if (x->lk.held) {
		pthread_mutex_unlock(&exec_bus_lock);
		x->lk.held = false;
	}
}

int exec_mem_read_bytes(struct exec *x, uint64_t la, void *dst, unsigned len)
{
	struct emu_cpu *cpu = x->cpu;
	struct exec_locked *lk = &x->lk;
	void *host = NULL;
	int rc;

	if (!lk->active || lk->pending || lk->held)
		return cpu->mem->read(cpu, la, dst, len, EMU_ACCESS_READ);
	if (cpu->mem->lock_operand && (rc = cpu->mem->lock_operand(cpu, la, len, &host)))
		return rc;
	lk->la = la;
	lk->len = (uint8_t)len;
	lk->pending = true;
	if (host && host_atomic_ok(host, len)) {
		lk->host = host;
		/* Not atomic itself: a torn or stale value makes the compare-and-swap fail. */
		memcpy(lk->old, host, len);
		memcpy(dst, lk->old, len);
		return EMU_OK;
	}
	lk->host = NULL;
	pthread_mutex_lock(&exec_bus_lock);
	lk->held = true;
	return cpu->mem->read(cpu, la, dst, len, EMU_ACCESS_READ);
}

int exec_mem_write_bytes(struct exec *x, uint64_t la, const void *src, unsigned len)
{
	struct emu_cpu *cpu = x->cpu;
	struct exec_locked *lk = &x->lk;

	if (!lk->pending || la != lk->la || len != lk->len)
		return cpu->mem->write(cpu, la, src, len);
	lk->pending = false;
	if (!lk->host)
		return cpu->mem->write(cpu, la, src, len); /* under the bus lock */
	if (!host_cas(lk->host, len, lk->old, src))
		return EXEC_RETRY;
	emu_code_stored(cpu, lk->host);
	return EMU_OK;
}

/* ---- stack (SDM Vol. 1 §6.2) ---- */

unsigned exec_stack_size(const struct exec *x)
{
	if (x->cpu->mode == EMU_MODE_64)
		return 8;
	return x->cpu->s.seg[SEG_SS].db ? 4 : 2;
}

uint64_t exec_rsp_adjust(const struct exec *x, int64_t delta)
{
	unsigned ss = exec_stack_size(x);
	uint64_t rsp = x->cpu->s.gpr[CPU_RSP];
	uint64_t mask = emu_size_mask(ss);

	return (rsp & ~mask) | ((rsp + (uint64_t)delta) & mask);
}

int exec_push(struct exec *x, unsigned size, uint64_t v)
{
	uint64_t rsp = exec_rsp_adjust(x, -(int64_t)size);
	uint64_t la = exec_seg_linear(x, SEG_SS, rsp & emu_size_mask(exec_stack_size(x)));
	int rc = exec_mem_write(x, la, size, v);

	if (rc == EMU_OK)
		x->cpu->s.gpr[CPU_RSP] = rsp;
	return rc;
}

/* Read the top of the stack without popping. */
int exec_stack_peek(struct exec *x, unsigned size, uint64_t offset, uint64_t *v)
{
	uint64_t sp = (x->cpu->s.gpr[CPU_RSP] + offset) & emu_size_mask(exec_stack_size(x));

	return exec_mem_read(x, exec_seg_linear(x, SEG_SS, sp), size, v);
}

int exec_pop(struct exec *x, unsigned size, uint64_t *v)
{
	int rc = exec_stack_peek(x, size, 0, v);

	if (rc == EMU_OK)
		x->cpu->s.gpr[CPU_RSP] = exec_rsp_adjust(x, size);
	return rc;
}

/* ---- branches ---- */

void exec_jump_to(struct exec *x, uint64_t target)
{
	/* Outside 64-bit mode the new IP is truncated to the operand size. */
	if (x->cpu->mode != EMU_MODE_64)
		target &= emu_size_mask(x->insn->opsize);
	x->next_rip = target;
}

void exec_jump_relative(struct exec *x)
{
	exec_jump_to(x, x->next_rip + x->insn->imm);
}

/* ---- instruction groups ---- */

/* 00-3F: op Eb,Gb / Ev,Gv / Gb,Eb / Gv,Ev / AL,Ib / rAX,Iz */
static int exec_alu(struct exec *x)
{
	const struct emu_insn *insn = x->insn;
	enum emu_alu_op op = (insn->opcode >> 3) & 7;
	unsigned size = insn->opsize, form = insn->opcode & 7;
	uint64_t a, b, r;
	int rc;

	switch (form) {
	case 0:
	case 1:
		if ((rc = exec_rm_read(x, size, &a)))
			return rc;
		b = exec_reg_get(x, insn->reg, size);
		r = emu_alu(x->cpu, op, size, a, b);
		return op == ALU_CMP ? EMU_OK : exec_rm_write(x, size, r);
	case 2:
	case 3:
		if ((rc = exec_rm_read(x, size, &b)))
			return rc;
		a = exec_reg_get(x, insn->reg, size);
		r = emu_alu(x->cpu, op, size, a, b);
		if (op != ALU_CMP)
			exec_reg_set(x, insn->reg, size, r);
		return EMU_OK;
	default: /* 4, 5: accumulator, immediate */
		a = exec_reg_get(x, CPU_RAX, size);
		r = emu_alu(x->cpu, op, size, a, insn->imm);
		if (op != ALU_CMP)
			exec_reg_set(x, CPU_RAX, size, r);
		return EMU_OK;
	}
}

/* 80-83: group 1, op Ev,imm */
static int exec_group1(struct exec *x)
{
	enum emu_alu_op op = (x->insn->modrm >> 3) & 7;
	unsigned size = x->insn->opsize;
	uint64_t a, r;
	int rc;

	if ((rc = exec_rm_read(x, size, &a)))
		return rc;
	r = emu_alu(x->cpu, op, size, a, x->insn->imm);
	return op == ALU_CMP ? EMU_OK : exec_rm_write(x, size, r);
}

/* C0/C1/D0-D3: group 2 shifts and rotates */
static int exec_group2(struct exec *x)
{
	const struct emu_insn *insn = x->insn;
	unsigned size = insn->opsize, count;
	uint64_t a, r;
	int rc;

	if (insn->opcode <= 0xC1)
		count = (unsigned)insn->imm & 0xff;
	else if (insn->opcode <= 0xD1)
		count = 1;
	else
		count = x->cpu->s.gpr[CPU_RCX] & 0xff;
	if ((rc = exec_rm_read(x, size, &a)))
		return rc;
	r = emu_shift(x->cpu, (insn->modrm >> 3) & 7, size, a, count);
	/* A count that masks to 0 is still a write of the unchanged value (memory included). */
	return exec_rm_write(x, size, r);
}

static int divide_error(struct exec *x)
{
	return emu_raise(x->cpu, EMU_VEC_DE, false, 0);
}

/* F6/F7 /4../7: MUL, IMUL, DIV, IDIV with the accumulator pair. */
static int exec_muldiv(struct exec *x, unsigned op, uint64_t src)
{
	unsigned size = x->insn->opsize, bits = 8 * size;
	uint64_t mask = emu_size_mask(size);
	uint64_t lo_in = x->cpu->s.gpr[CPU_RAX] & mask, hi_in;
	unsigned __int128 wide, q, rem;
	uint64_t lo, hi;
	bool overflow;

	/* 8-bit forms use AX as the pair; the others rDX:rAX. */
	if (size == 1)
		hi_in = (x->cpu->s.gpr[CPU_RAX] >> 8) & 0xff;
	else
		hi_in = x->cpu->s.gpr[CPU_RDX] & mask;
	switch (op) {
	case 4: /* MUL */
		wide = (unsigned __int128)lo_in * src;
		lo = (uint64_t)wide & mask;
		hi = (uint64_t)(wide >> bits) & mask;
		overflow = hi != 0;
		break;
	case 5: { /* IMUL */
		__int128 sw = (__int128)(int64_t)emu_sext(lo_in, size) *
			      (int64_t)emu_sext(src, size);

		lo = (uint64_t)sw & mask;
		hi = (uint64_t)(sw >> bits) & mask;
		overflow = sw != (__int128)(int64_t)emu_sext(lo, size);
		break;
	}
	case 6: /* DIV */
		if (!src)
			return divide_error(x);
		wide = ((unsigned __int128)hi_in << bits) | lo_in;
		q = wide / src;
		rem = wide % src;
		if (q > mask)
			return divide_error(x);
		lo = (uint64_t)q;
		hi = (uint64_t)rem;
		overflow = false;
		break;
	default: { /* IDIV */
		__int128 n = (__int128)(((unsigned __int128)hi_in << bits) | lo_in);
		__int128 d = (int64_t)emu_sext(src, size), sq, sr;

		/* Sign-extend the 2*bits-wide dividend. */
		n = (__int128)((unsigned __int128)n << (128 - 2 * bits)) >> (128 - 2 * bits);
		if (!d)
			return divide_error(x);
		/* The only overflowing 128/64 case, -2^127 / -1, cannot occur: bits <= 64. */
		sq = n / d;
		sr = n % d;
		if (sq != (__int128)(int64_t)emu_sext((uint64_t)sq, size))
			return divide_error(x);
		lo = (uint64_t)sq & mask;
		hi = (uint64_t)sr & mask;
		overflow = false;
		break;
	}
	}
	if (size == 1) {
		exec_reg_set(x, CPU_RAX, 2, lo | (hi << 8));
	} else {
		exec_reg_set(x, CPU_RAX, size, lo);
		exec_reg_set(x, CPU_RDX, size, hi);
	}
	/* MUL/IMUL: CF = OF = the upper half is significant; SF ZF AF PF are undefined, we
	 * take them from the low half. DIV/IDIV: all six undefined, left unchanged. */
	if (op <= 5)
		emu_flags_set(x->cpu, EMU_FLAGS_ARITH,
			      emu_flags_szp(lo, size) | (overflow ? EMU_FLAG_CF | EMU_FLAG_OF : 0));
	return EMU_OK;
}

/* F6/F7: group 3 */
static int exec_group3(struct exec *x)
{
	unsigned op = (x->insn->modrm >> 3) & 7, size = x->insn->opsize;
	uint64_t a;
	int rc;

	if ((rc = exec_rm_read(x, size, &a)))
		return rc;
	switch (op) {
	case 0:
	case 1: /* TEST Ev, imm (/1 is an alias) */
		emu_alu(x->cpu, ALU_AND, size, a, x->insn->imm);
		return EMU_OK;
	case 2: /* NOT: no flags */
		return exec_rm_write(x, size, ~a);
	case 3: /* NEG = 0 - a: CF = (a != 0) falls out of SUB */
		return exec_rm_write(x, size, emu_alu(x->cpu, ALU_SUB, size, 0, a));
	default:
		return exec_muldiv(x, op, a);
	}
}

/* IMUL Gv,Ev[,imm] (0F AF, 69, 6B) */
static int exec_imul_reg(struct exec *x, bool has_imm)
{
	unsigned size = x->insn->opsize;
	uint64_t a, b, lo;
	bool overflow;
	__int128 p;
	int rc;

	if ((rc = exec_rm_read(x, size, &a)))
		return rc;
	b = has_imm ? x->insn->imm : exec_reg_get(x, x->insn->reg, size);
	p = (__int128)(int64_t)emu_sext(a, size) * (int64_t)emu_sext(b, size);
	lo = (uint64_t)p & emu_size_mask(size);
	overflow = p != (__int128)(int64_t)emu_sext(lo, size);
	exec_reg_set(x, x->insn->reg, size, lo);
	emu_flags_set(x->cpu, EMU_FLAGS_ARITH,
		      emu_flags_szp(lo, size) | (overflow ? EMU_FLAG_CF | EMU_FLAG_OF : 0));
	return EMU_OK;
}

/* FE/FF: INC, DEC, CALL, JMP, PUSH */
static int exec_group45(struct exec *x)
{
	const struct emu_insn *insn = x->insn;
	unsigned op = (insn->modrm >> 3) & 7, size = insn->opsize;
	uint64_t a;
	int rc;

	if (insn->opcode == 0xFE && op > 1)
		return emu_raise(x->cpu, EMU_VEC_UD, false, 0);
	switch (op) {
	case 0:
	case 1:
		if ((rc = exec_rm_read(x, size, &a)))
			return rc;
		return exec_rm_write(x, size, emu_inc_dec(x->cpu, op == 1, size, a));
	case 2: /* CALL near, absolute indirect */
	case 4: /* JMP near, absolute indirect */
		if (x->cpu->mode == EMU_MODE_64)
			size = 8; /* the operand size is forced to 64 bits (Intel) */
		if ((rc = exec_rm_read(x, size, &a)))
			return rc;
		if (op == 2 && (rc = exec_push(x, size, x->next_rip)))
			return rc;
		x->next_rip = a & emu_size_mask(size);
		return EMU_OK;
	case 6: /* PUSH Ev: 64-bit default in 64-bit mode */
		if (x->cpu->mode == EMU_MODE_64 && size == 4)
			size = 8;
		if ((rc = exec_rm_read(x, size, &a)))
			return rc;
		return exec_push(x, size, a);
	case 3: /* CALL far */
	case 5: /* JMP far */
		return exec_system_map1(x);
	default: /* 7: reserved */
		return emu_raise(x->cpu, EMU_VEC_UD, false, 0);
	}
}

/* Size of PUSH/POP operands: 66 gives 16 bits, otherwise 64 in 64-bit mode (D64). */
static unsigned stack_op_size(const struct exec *x)
{
	return x->insn->opsize;
}

static int exec_pop_rm(struct exec *x)
{
	unsigned size = stack_op_size(x);
	uint64_t v, old_rsp = x->cpu->s.gpr[CPU_RSP];
	int rc;

	if ((x->insn->modrm >> 3) & 7)
		return emu_raise(x->cpu, EMU_VEC_UD, false, 0); /* 8F /1-7: XOP on AMD */
	if ((rc = exec_stack_peek(x, size, 0, &v)))
		return rc;
	/* The address is computed with RSP already incremented (SDM: POP). */
	x->cpu->s.gpr[CPU_RSP] = exec_rsp_adjust(x, size);
	if (x->insn->mod != 3)
		x->la = exec_seg_linear(x, x->insn->seg, exec_effective_address(x));
	if ((rc = exec_rm_write(x, size, v)))
		x->cpu->s.gpr[CPU_RSP] = old_rsp;
	return rc;
}

static int exec_xchg(struct exec *x, unsigned reg)
{
	unsigned size = x->insn->opsize;
	uint64_t a, b = exec_reg_get(x, reg, size);
	int rc;

	if ((rc = exec_rm_read(x, size, &a)) || (rc = exec_rm_write(x, size, b)))
		return rc;
	exec_reg_set(x, reg, size, a);
	return EMU_OK;
}

/* 0F 40-4F: CMOVcc. The source is read (and may fault) whatever the condition; a 32-bit
 * destination is zero-extended even when nothing moves (SDM: CMOVcc, 64-bit mode). */
static int exec_cmov(struct exec *x)
{
	unsigned size = x->insn->opsize;
	uint64_t v;
	int rc;

	if ((rc = exec_rm_read(x, size, &v)))
		return rc;
	if (emu_condition(x->cpu, x->insn->opcode & 15))
		exec_reg_set(x, x->insn->reg, size, v);
	else if (size == 4)
		exec_reg_set(x, x->insn->reg, 4, exec_reg_get(x, x->insn->reg, 4));
	return EMU_OK;
}

/* 0F A3/AB/B3/BB and 0F BA: BT, BTS, BTR, BTC. op: 0 BT, 1 BTS, 2 BTR, 3 BTC. */
static int exec_bit_test(struct exec *x, unsigned op, uint64_t offset, bool imm)
{
	unsigned size = x->insn->opsize, bits = 8 * size;
	uint64_t v, bit, la = x->la;
	int rc;

	if (imm || x->insn->mod == 3) {
		offset &= bits - 1;
	} else {
		/* A register offset addresses memory beyond the operand: signed, in units of the
		 * operand size (SDM: BT, "bit base"). */
		int64_t soff = (int64_t)emu_sext(offset, size);
		unsigned log2_bits = size == 8 ? 6 : size == 4 ? 5 : 4;
		uint64_t ea = exec_effective_address(x) + (uint64_t)((soff >> log2_bits) * size);

		la = exec_seg_linear(x, x->insn->seg, ea & exec_addr_mask(x));
		offset = (uint64_t)soff & (bits - 1);
	}
	if (x->insn->mod == 3)
		v = exec_reg_get(x, x->insn->rm, size);
	else if ((rc = exec_mem_read(x, la, size, &v)))
		return rc;
	bit = (v >> offset) & 1;
	/* CF = the bit; OF SF AF PF undefined (left unchanged); ZF unaffected. */
	emu_flags_set(x->cpu, EMU_FLAG_CF, bit);
	if (op == 0)
		return EMU_OK;
	v = emu_bit_op(v, offset, op);
	if (x->insn->mod == 3) {
		exec_reg_set(x, x->insn->rm, size, v);
		return EMU_OK;
	}
	return exec_mem_write(x, la, size, v);
}

/* 0F BC/BD: BSF, BSR. A zero source sets ZF and leaves the destination unchanged (as AMD
 * documents and Intel CPUs do); CF OF SF AF PF are undefined: we clear them. */
static int exec_bit_scan(struct exec *x, bool reverse)
{
	unsigned size = x->insn->opsize;
	uint64_t v;
	int rc;

	if ((rc = exec_rm_read(x, size, &v)))
		return rc;
	if (!v) {
		emu_flags_set(x->cpu, EMU_FLAGS_ARITH, EMU_FLAG_ZF);
		return EMU_OK;
	}
	emu_flags_set(x->cpu, EMU_FLAGS_ARITH, 0);
	exec_reg_set(x, x->insn->reg, size, reverse ? 63u - (unsigned)__builtin_clzll(v)
					       : (unsigned)__builtin_ctzll(v));
	return EMU_OK;
}

/* F3 0F B8: POPCNT. ZF = (source == 0), the other five flags cleared. */
static int exec_popcnt(struct exec *x)
{
	unsigned size = x->insn->opsize;
	uint64_t v;
	int rc;

	if ((rc = exec_rm_read(x, size, &v)))
		return rc;
	exec_reg_set(x, x->insn->reg, size, (uint64_t)__builtin_popcountll(v));
	emu_flags_set(x->cpu, EMU_FLAGS_ARITH, v ? 0 : EMU_FLAG_ZF);
	return EMU_OK;
}

/* 0F B0/B1: CMPXCHG. The destination is always written (memory gets its old value back on
 * failure, SDM: CMPXCHG); a register destination is only written on success. */
static int exec_cmpxchg(struct exec *x)
{
	unsigned size = x->insn->opsize;
	uint64_t dst, acc = exec_reg_get(x, CPU_RAX, size);
	int rc;

	if ((rc = exec_rm_read(x, size, &dst)))
		return rc;
	emu_alu(x->cpu, ALU_CMP, size, acc, dst);
	if (acc == dst)
		return exec_rm_write(x, size, exec_reg_get(x, x->insn->reg, size));
	if (x->insn->mod != 3 && (rc = exec_rm_write(x, size, dst)))
		return rc;
	exec_reg_set(x, CPU_RAX, size, dst);
	return EMU_OK;
}

/* 0F C0/C1: XADD */
static int exec_xadd(struct exec *x)
{
	unsigned size = x->insn->opsize;
	uint64_t dst, src = exec_reg_get(x, x->insn->reg, size), sum;
	int rc;

	if ((rc = exec_rm_read(x, size, &dst)))
		return rc;
	sum = emu_alu(x->cpu, ALU_ADD, size, dst, src);
	/* SDM: TEMP ← SRC + DEST; SRC ← DEST; DEST ← TEMP: with reg == rm the sum wins. */
	if (x->insn->mod == 3) {
		exec_reg_set(x, x->insn->reg, size, dst);
		exec_reg_set(x, x->insn->rm, size, sum);
		return EMU_OK;
	}
	if ((rc = exec_mem_write(x, x->la, size, sum)))
		return rc;
	exec_reg_set(x, x->insn->reg, size, dst);
	return EMU_OK;
}

/* 0F A4/A5/AC/AD: SHLD/SHRD Ev,Gv,Ib/CL */
static int exec_shift_double(struct exec *x)
{
	unsigned size = x->insn->opsize, op = x->insn->opcode;
	unsigned count = (op & 1) ? x->cpu->s.gpr[CPU_RCX] & 0xff : (unsigned)x->insn->imm & 0xff;
	uint64_t dst, r;
	int rc;

	if ((rc = exec_rm_read(x, size, &dst)))
		return rc;
	r = emu_shift_double(x->cpu, op >= 0xAC, size, dst, exec_reg_get(x, x->insn->reg, size),
			     count);
	return exec_rm_write(x, size, r);
}

static uint64_t bswap(uint64_t v, unsigned size)
{
	if (size == 8)
		return __builtin_bswap64(v);
	if (size == 4)
		return __builtin_bswap32((uint32_t)v);
	return 0; /* 16-bit BSWAP is undefined; current CPUs give 0 */
}

/* ---- string instructions (SDM Vol. 1 §7.3.9) ---- */

enum string_op { STR_MOVS, STR_CMPS, STR_STOS, STR_LODS, STR_SCAS };

static int string_once(struct exec *x, enum string_op op, unsigned size)
{
	struct emu_cpu *cpu = x->cpu;
	uint64_t amask = exec_addr_mask(x);
	uint64_t si = cpu->s.gpr[CPU_RSI] & amask, di = cpu->s.gpr[CPU_RDI] & amask;
	uint64_t src_la = exec_seg_linear(x, x->insn->seg, si);
	uint64_t dst_la = exec_seg_linear(x, SEG_ES, di);
	int64_t step = (cpu->s.rflags & EMU_FLAG_DF) ? -(int64_t)size : (int64_t)size;
	uint64_t a, b;
	int rc = EMU_OK;
	bool uses_si = false, uses_di = false;

	switch (op) {
	case STR_MOVS:
		if ((rc = exec_mem_read(x, src_la, size, &a)) ||
		    (rc = exec_mem_write(x, dst_la, size, a)))
			return rc;
		uses_si = uses_di = true;
		break;
	case STR_CMPS:
		if ((rc = exec_mem_read(x, src_la, size, &a)) ||
		    (rc = exec_mem_read(x, dst_la, size, &b)))
			return rc;
		emu_alu(cpu, ALU_CMP, size, a, b);
		uses_si = uses_di = true;
		break;
	case STR_STOS:
		if ((rc = exec_mem_write(x, dst_la, size, exec_reg_get(x, CPU_RAX, size))))
			return rc;
		uses_di = true;
		break;
	case STR_LODS:
		if ((rc = exec_mem_read(x, src_la, size, &a)))
			return rc;
		exec_reg_set(x, CPU_RAX, size, a);
		uses_si = true;
		break;
	case STR_SCAS:
		if ((rc = exec_mem_read(x, dst_la, size, &b)))
			return rc;
		emu_alu(cpu, ALU_CMP, size, exec_reg_get(x, CPU_RAX, size), b);
		uses_di = true;
		break;
	}
	/* Only the address-size part of rSI/rDI moves (32-bit addresses zero-extend in 64-bit). */
	if (uses_si)
		exec_reg_set(x, CPU_RSI, x->insn->adsize, si + (uint64_t)step);
	if (uses_di)
		exec_reg_set(x, CPU_RDI, x->insn->adsize, di + (uint64_t)step);
	return EMU_OK;
}

/* ---- the bulk path of REP MOVS/STOS ----
 *
 * Runs of elements that lie in one page of the source and one of the destination are mapped
 * once (cpu->mem->map: the faults, A/D bits and TLB entries of the element-wise accesses) and
 * copied or filled on the host. Anything the bulk path does not take — an element across a
 * page or an address-size wrap, MMIO, a fault, memory without a map op (debug.c's watchpoint
 * wrapper) — goes through string_once(), one element, which raises the exact fault with the
 * registers at that element. */

/* How many elements from offset `off` (linear `la`) stay in la's page and do not wrap the
 * address size (mask `amask`) going up, or down when `down`; 0 if the first one crosses. */
static uint64_t string_room(uint64_t off, uint64_t la, unsigned size, uint64_t amask, bool down)
{
	unsigned pofs = (unsigned)(la & 0xfff);
	uint64_t n;

	if (pofs + size > 4096 || off + size - 1 > amask)
		return 0;
	n = down ? pofs / size + 1 : (4096 - pofs) / size;
	/* 64-bit addresses move the linear address with the offset; narrower ones wrap alone. */
	if (amask != ~0ull) {
		uint64_t wrap = down ? off / size + 1 : (amask - off + 1) / size;

		if (wrap < n)
			n = wrap;
	}
	return n;
}

/* `len` bytes of whole elements from `src` to `dst`, with the result of copying element by
 * element in the direction of the instruction. Where the destination lies ahead of the source
 * in that direction, closer than `len`, the element-wise order replicates data (memmove would
 * not): chunks of whole elements no longer than the distance do the same, since no element of
 * a chunk reads what an earlier element of the same chunk wrote. */
static void string_copy(uint8_t *dst, const uint8_t *src, size_t len, unsigned size, bool down)
{
	uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src;
	size_t dist = down ? s - d : d - s, chunk;

	if ((down ? d >= s : d <= s) || dist >= len) {
		memmove(dst, src, len);
		return;
	}
	chunk = dist / size * size;
	if (!chunk) { /* closer than one element: each reads what the previous one wrote */
		for (size_t i = 0; i < len; i += size) {
			size_t at = down ? len - size - i : i;

			memmove(dst + at, src + at, size);
		}
		return;
	}
	for (size_t done = 0; done < len; done += chunk) {
		size_t n = len - done < chunk ? len - done : chunk;

		if (down)
			memcpy(dst + len - done - n, src + len - done - n, n);
		else
			memcpy(dst + done, src + done, n);
	}
}

/* `len` bytes of whole elements of `size` bytes, each the low bytes of `v`. */
static void string_fill(uint8_t *dst, size_t len, unsigned size, uint64_t v)
{
	uint8_t pattern[64];

	if (size == 1 || !v) {
		memset(dst, (int)(v & 0xff), len);
		return;
	}
	for (unsigned i = 0; i < sizeof(pattern); i += size)
		memcpy(pattern + i, &v, size);
	for (; len >= sizeof(pattern); dst += sizeof(pattern), len -= sizeof(pattern))
		memcpy(dst, pattern, sizeof(pattern));
	memcpy(dst, pattern, len);
}

/* Up to `max` (>= 1) elements of REP MOVS or STOS in one run: how many were done (RSI/RDI
 * moved past them), 0 when the next element must go through string_once(). */
static uint64_t string_bulk(struct exec *x, enum string_op op, unsigned size, uint64_t max)
{
	struct emu_cpu *cpu = x->cpu;
	uint64_t amask = exec_addr_mask(x);
	bool down = cpu->s.rflags & EMU_FLAG_DF;
	uint64_t si = cpu->s.gpr[CPU_RSI] & amask, di = cpu->s.gpr[CPU_RDI] & amask;
	uint64_t src_la = exec_seg_linear(x, x->insn->seg, si);
	uint64_t dst_la = exec_seg_linear(x, SEG_ES, di);
	uint64_t n = string_room(di, dst_la, size, amask, down), back;
	void *src = NULL, *dst;
	unsigned len;

	if (op == STR_MOVS) {
		uint64_t src_n = string_room(si, src_la, size, amask, down);

		if (src_n < n)
			n = src_n;
	}
	if (max < n)
		n = max;
	if (!n)
		return 0;
	len = (unsigned)(n * size);
	back = down ? (n - 1) * size : 0; /* the run's lowest element is its last one */
	/* The source first: a fault there must come before the destination's A/D bits. */
	if (op == STR_MOVS &&
	    (cpu->mem->map(cpu, src_la - back, len, EMU_ACCESS_READ, &src) || !src))
		return 0;
	if (cpu->mem->map(cpu, dst_la - back, len, EMU_ACCESS_WRITE, &dst) || !dst)
		return 0;
	if (op == STR_MOVS) {
		string_copy(dst, src, len, size, down);
		exec_reg_set(x, CPU_RSI, x->insn->adsize, down ? si - n * size : si + n * size);
	} else {
		string_fill(dst, len, size, exec_reg_get(x, CPU_RAX, size));
	}
	if (cpu->code) /* guest RAM with code tracking: after the store, as emu_tlb_fast() users */
		emu_code_stored(cpu, dst);
	exec_reg_set(x, CPU_RDI, x->insn->adsize, down ? di - n * size : di + n * size);
	return n;
}

static int exec_string(struct exec *x, enum string_op op)
{
	const struct emu_insn *insn = x->insn;
	unsigned size = insn->opsize, as = insn->adsize;
	bool rep = insn->prefix & (EMU_PFX_REP | EMU_PFX_REPNE);
	bool cond = op == STR_CMPS || op == STR_SCAS;
	/* Under single step or breakpoints one iteration at a time: #DB traps follow each. */
	bool debug = emu_debug_active(x->cpu);
	bool bulk = (op == STR_MOVS || op == STR_STOS) && x->cpu->mem->map && !debug;
	unsigned budget = EXEC_REP_BATCH_BYTES;
	struct emu_lazy_flags saved_cc = x->cpu->cc;
	uint64_t saved_rflags = x->cpu->s.rflags;
	int rc;

	if (!rep)
		return string_once(x, op, size);
	/* Before the first iteration (with a zero count too, and when it faults) Intel writes
	 * the count register at the address size, and MOVS its rSI and rDI, STOS its rDI, as
	 * they are: with 32-bit addresses in 64-bit mode (67) that clears their upper halves.
	 * AMD writes them only with the iterations (the SDM's pseudo-code too); CPUID says
	 * Intel, and this is what the Intel host of test_emu_diff.c did (a Xeon of family 6,
	 * model 207). With 16- or 64-bit addresses these writes change nothing. */
	exec_reg_set(x, CPU_RCX, as, x->cpu->s.gpr[CPU_RCX]);
	if (op == STR_MOVS)
		exec_reg_set(x, CPU_RSI, as, x->cpu->s.gpr[CPU_RSI]);
	if (op == STR_MOVS || op == STR_STOS)
		exec_reg_set(x, CPU_RDI, as, x->cpu->s.gpr[CPU_RDI]);
	do {
		uint64_t count = x->cpu->s.gpr[CPU_RCX] & emu_size_mask(as), n;

		if (!count)
			return EMU_OK;
		if (bulk &&
		    (n = string_bulk(x, op, size, budget / size > count ? count : budget / size))) {
			x->partial = true;
			exec_reg_set(x, CPU_RCX, as, count - n);
			budget -= (unsigned)(n * size);
			continue;
		}
		if ((rc = string_once(x, op, size)))
			goto interrupted;
		x->partial = true;
		exec_reg_set(x, CPU_RCX, as, count - 1);
		/* REPE (F3) stops on ZF = 0, REPNE (F2) on ZF = 1; the last of F2/F3 counts. */
		if (cond && emu_condition(x->cpu, 4) != (insn->last_rep == 0xF3))
			return EMU_OK;
		budget = budget > EXEC_REP_ELEMENT_COST ? budget - EXEC_REP_ELEMENT_COST : 0;
	} while (budget >= size && !debug);
	if (!(x->cpu->s.gpr[CPU_RCX] & emu_size_mask(as)))
		return EMU_OK;
	rc = EMU_OK;
interrupted:
	/* Not finished (batch done, or a fault): execute this instruction again. Iterations
	 * already done stay done; that is what the CPU does on an interrupt or fault. REPE/REPNE
	 * CMPS/SCAS leave the flags as they were before the instruction: the SDM says so for a
	 * fault (REP: "the EFLAGS value is restored to the state prior to the execution of the
	 * instruction"; CMPS/SCAS do not read them, so the resumed instruction does not need
	 * them), and the Intel host of test_emu_diff.c showed the same flags at an interrupt
	 * (a timer signal) and at TF's single-step traps between iterations, so only the
	 * iteration that ends the instruction writes them. AMD hosts leave the flags of the
	 * last iteration done. */
	if (cond) {
		x->cpu->cc = saved_cc;
		x->cpu->s.rflags = saved_rflags;
	}
	x->next_rip = x->cpu->s.rip;
	return rc;
}

/* ---- flags instructions ---- */

static int exec_pushf(struct exec *x)
{
	/* VM and RF are pushed as 0 (SDM: PUSHF). */
	uint64_t f = emu_flags_get(x->cpu) & ~(EMU_FLAG_VM | EMU_FLAG_RF);

	return exec_push(x, stack_op_size(x), f);
}

static int exec_popf(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned size = stack_op_size(x);
	uint64_t v, old = emu_flags_get(cpu), writable;
	unsigned iopl = (unsigned)((old & EMU_FLAG_IOPL) >> 12);
	int rc;

	if ((rc = exec_pop(x, size, &v)))
		return rc;
	/* SDM: POPF. Protected/long mode: IOPL only at CPL 0, IF only at CPL <= IOPL; VM, VIF,
	 * VIP and RF are never changed this way. Virtual-8086 mode is not supported. */
	writable = EMU_FLAGS_ARITH | EMU_FLAG_TF | EMU_FLAG_DF | EMU_FLAG_NT | EMU_FLAG_AC |
		   EMU_FLAG_ID;
	if (cpu->cpl == 0)
		writable |= EMU_FLAG_IOPL;
	if (cpu->cpl <= iopl)
		writable |= EMU_FLAG_IF;
	writable &= emu_size_mask(size);
	cpu->s.rflags = (old & ~writable) | (v & writable) | EMU_FLAG_FIXED1;
	return EMU_OK;
}

static int exec_flag_op(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;

	switch (x->insn->opcode) {
	case 0xF5: /* CMC */
		emu_flags_set(cpu, EMU_FLAG_CF, ~emu_flags_get(cpu));
		break;
	case 0xF8: /* CLC */
		emu_flags_set(cpu, EMU_FLAG_CF, 0);
		break;
	case 0xF9: /* STC */
		emu_flags_set(cpu, EMU_FLAG_CF, EMU_FLAG_CF);
		break;
	case 0xFA: /* CLI */
	case 0xFB: /* STI: the one-instruction interrupt shadow comes with interrupt delivery */
		if (cpu->cpl > ((cpu->s.rflags & EMU_FLAG_IOPL) >> 12))
			return emu_raise(cpu, EMU_VEC_GP, true, 0);
		if (x->insn->opcode == 0xFA) {
			cpu->s.rflags &= ~EMU_FLAG_IF;
		} else {
			/* STI delays interrupts until after the next instruction when IF was 0
			 * (SDM Vol. 2, STI), so "sti; hlt" cannot miss a wake-up. */
			if (!(cpu->s.rflags & EMU_FLAG_IF))
				cpu->shadow_next = true;
			cpu->s.rflags |= EMU_FLAG_IF;
		}
		break;
	case 0xFC: /* CLD */
		cpu->s.rflags &= ~EMU_FLAG_DF;
		break;
	case 0xFD: /* STD */
		cpu->s.rflags |= EMU_FLAG_DF;
		break;
	}
	return EMU_OK;
}

/* ---- dispatch ---- */

/* The register in the low 3 bits of the opcode (50+r, B8+r, ...), extended by REX.B. */
static unsigned opcode_reg(const struct emu_insn *insn)
{
	return (insn->opcode & 7) | ((insn->rex & 1) << 3);
}

int exec_ud(struct exec *x)
{
	return emu_raise(x->cpu, EMU_VEC_UD, false, 0);
}

static int exec_mov_imm_group(struct exec *x)
{
	if ((x->insn->modrm >> 3) & 7)
		return exec_ud(x); /* C6 F8 XABORT / C7 F8 XBEGIN: no RTM */
	return exec_rm_write(x, x->insn->opsize, x->insn->imm);
}

static int exec_enter(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned size = x->insn->opsize, level = (unsigned)x->insn->imm2 & 31;
	uint64_t old_rsp = cpu->s.gpr[CPU_RSP], old_rbp = cpu->s.gpr[CPU_RBP], frame, v;
	int rc;

	/* SDM: ENTER. Nested levels copy the enclosing frame pointers. */
	if ((rc = exec_push(x, size, old_rbp)))
		return rc;
	frame = cpu->s.gpr[CPU_RSP];
	for (unsigned i = 1; i < level; i++) {
		uint64_t bp = (old_rbp - (uint64_t)i * size) & emu_size_mask(exec_stack_size(x));

		if ((rc = exec_mem_read(x, exec_seg_linear(x, SEG_SS, bp), size, &v)) ||
		    (rc = exec_push(x, size, v)))
			goto fail;
	}
	if (level && (rc = exec_push(x, size, frame)))
		goto fail;
	/* A fault on the final RSP adjustment cannot happen here: no access is made. */
	exec_reg_set(x, CPU_RBP, size, frame);
	cpu->s.gpr[CPU_RSP] = exec_rsp_adjust(x, -(int64_t)(x->insn->imm & 0xffff));
	return EMU_OK;
fail:
	cpu->s.gpr[CPU_RSP] = old_rsp;
	return rc;
}

/* PUSHA/PUSHAD, POPA/POPAD (60, 61; not in 64-bit mode). POPA skips the saved rSP. */
static int exec_pusha_popa(struct exec *x, bool push)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned size = x->insn->opsize, ss = exec_stack_size(x);
	uint64_t old_rsp = cpu->s.gpr[CPU_RSP], v[8];
	int rc;

	for (unsigned r = 0; r < 8; r++) {
		if (push) {
			v[r] = exec_reg_get(x, r, size);
		} else if ((rc = exec_stack_peek(x, size, (7 - r) * size, &v[r]))) {
			return rc;
		}
	}
	if (!push) {
		for (unsigned r = 0; r < 8; r++)
			if (r != CPU_RSP)
				exec_reg_set(x, r, size, v[r]);
		cpu->s.gpr[CPU_RSP] = exec_rsp_adjust(x, 8 * size);
		return EMU_OK;
	}
	/* Write the whole block first so a fault changes nothing. */
	for (unsigned r = 0; r < 8; r++) {
		uint64_t sp = (old_rsp - (r + 1) * size) & emu_size_mask(ss);

		if ((rc = exec_mem_write(x, exec_seg_linear(x, SEG_SS, sp), size, v[r])))
			return rc;
	}
	cpu->s.gpr[CPU_RSP] = exec_rsp_adjust(x, -8 * (int64_t)size);
	return EMU_OK;
}

static int exec_leave(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned size = x->insn->opsize, ss = exec_stack_size(x);
	uint64_t old_rsp = cpu->s.gpr[CPU_RSP], v;
	int rc;

	/* rSP ← rBP (stack-address size), then POP rBP (operand size). */
	cpu->s.gpr[CPU_RSP] = (old_rsp & ~emu_size_mask(ss)) |
			      (cpu->s.gpr[CPU_RBP] & emu_size_mask(ss));
	if ((rc = exec_pop(x, size, &v))) {
		cpu->s.gpr[CPU_RSP] = old_rsp;
		return rc;
	}
	exec_reg_set(x, CPU_RBP, size, v);
	return EMU_OK;
}

static int exec_ret(struct exec *x)
{
	unsigned size = x->insn->opsize;
	uint64_t target;
	int rc;

	if ((rc = exec_stack_peek(x, size, 0, &target)))
		return rc;
	uint64_t release = x->insn->opcode == 0xC2 ? x->insn->imm : 0; /* RET imm16 */

	x->cpu->s.gpr[CPU_RSP] = exec_rsp_adjust(x, (int64_t)(size + release));
	x->next_rip = target;
	return EMU_OK;
}

static int exec_loop(struct exec *x)
{
	unsigned as = x->insn->adsize, op = x->insn->opcode;
	uint64_t count = x->cpu->s.gpr[CPU_RCX] & emu_size_mask(as);
	bool taken;

	if (op == 0xE3) { /* JrCXZ */
		taken = count == 0;
	} else {
		count = (count - 1) & emu_size_mask(as);
		exec_reg_set(x, CPU_RCX, as, count);
		taken = count != 0;
		if (op == 0xE1) /* LOOPE */
			taken = taken && emu_condition(x->cpu, 4);
		else if (op == 0xE0) /* LOOPNE */
			taken = taken && !emu_condition(x->cpu, 4);
	}
	if (taken)
		exec_jump_relative(x);
	return EMU_OK;
}

static int exec_sign_extend_acc(struct exec *x)
{
	unsigned size = x->insn->opsize;
	uint64_t a = exec_reg_get(x, CPU_RAX, size / 2);

	if (x->insn->opcode == 0x98) { /* CBW/CWDE/CDQE */
		exec_reg_set(x, CPU_RAX, size, emu_sext(a, size / 2));
	} else { /* CWD/CDQ/CQO */
		a = exec_reg_get(x, CPU_RAX, size);
		exec_reg_set(x, CPU_RDX, size, (a & emu_sign_bit(size)) ? ~0ull : 0);
	}
	return EMU_OK;
}

static int exec_moffs(struct exec *x)
{
	unsigned size = x->insn->opsize;
	uint64_t la = exec_seg_linear(x, x->insn->seg, x->insn->imm & exec_addr_mask(x)), v;
	int rc;

	if (x->insn->opcode <= 0xA1) {
		if ((rc = exec_mem_read(x, la, size, &v)))
			return rc;
		exec_reg_set(x, CPU_RAX, size, v);
		return EMU_OK;
	}
	return exec_mem_write(x, la, size, exec_reg_get(x, CPU_RAX, size));
}

static int exec_xlat(struct exec *x)
{
	uint64_t off = x->cpu->s.gpr[CPU_RBX] + (x->cpu->s.gpr[CPU_RAX] & 0xff);

	uint64_t v;
	int rc;

	off &= exec_addr_mask(x);
	if ((rc = exec_mem_read(x, exec_seg_linear(x, x->insn->seg, off), 1, &v)))
		return rc;
	exec_reg_set(x, CPU_RAX, 1, v);
	return EMU_OK;
}

static int exec_lahf_sahf(struct exec *x)
{
	if (x->insn->opcode == 0x9F) { /* LAHF: AH ← SF:ZF:0:AF:0:PF:1:CF */
		x->cpu->s.gpr[CPU_RAX] = (x->cpu->s.gpr[CPU_RAX] & ~0xff00ull) |
					 ((emu_flags_get(x->cpu) & 0xd5) | 2) << 8;
	} else { /* SAHF */
		uint64_t mask = EMU_FLAG_SF | EMU_FLAG_ZF | EMU_FLAG_AF | EMU_FLAG_PF | EMU_FLAG_CF;

		emu_flags_set(x->cpu, mask, x->cpu->s.gpr[CPU_RAX] >> 8);
	}
	return EMU_OK;
}

static int exec_map1(struct exec *x)
{
	const struct emu_insn *insn = x->insn;
	struct emu_cpu *cpu = x->cpu;
	unsigned op = insn->opcode, size = insn->opsize;
	uint64_t v;
	int rc;

	if (op < 0x40 && (op & 7) < 6)
		return exec_alu(x);
	switch (op) {
	case 0x40 ... 0x4F: /* INC/DEC r (not 64-bit mode: REX there) */
		v = emu_inc_dec(cpu, op >= 0x48, size, exec_reg_get(x, op & 7, size));
		exec_reg_set(x, op & 7, size, v);
		return EMU_OK;
	case 0x50 ... 0x57:
		v = exec_reg_get(x, opcode_reg(insn), size);
		return exec_push(x, stack_op_size(x), v);
	case 0x58 ... 0x5F:
		if ((rc = exec_pop(x, stack_op_size(x), &v)))
			return rc;
		exec_reg_set(x, opcode_reg(insn), size, v); /* POP rSP: the popped value wins */
		return EMU_OK;
	case 0x60:
	case 0x61:
		return exec_pusha_popa(x, op == 0x60);
	case 0x63: /* MOVSXD (64-bit mode; ARPL elsewhere is not supported) */
		if (cpu->mode != EMU_MODE_64)
			return exec_ud(x);
		if ((rc = exec_rm_read(x, size == 8 ? 4 : size, &v)))
			return rc;
		exec_reg_set(x, insn->reg, size, size == 8 ? emu_sext(v, 4) : v);
		return EMU_OK;
	case 0x68:
	case 0x6A:
		return exec_push(x, stack_op_size(x), insn->imm);
	case 0x69:
	case 0x6B:
		return exec_imul_reg(x, true);
	case 0x70 ... 0x7F:
		if (emu_condition(cpu, op & 15))
			exec_jump_relative(x);
		return EMU_OK;
	case 0x80 ... 0x83:
		return exec_group1(x);
	case 0x84:
	case 0x85: /* TEST Ev,Gv */
		if ((rc = exec_rm_read(x, size, &v)))
			return rc;
		emu_alu(cpu, ALU_AND, size, v, exec_reg_get(x, insn->reg, size));
		return EMU_OK;
	case 0x86:
	case 0x87:
		return exec_xchg(x, insn->reg);
	case 0x88:
	case 0x89:
		return exec_rm_write(x, size, exec_reg_get(x, insn->reg, size));
	case 0x8A:
	case 0x8B:
		if ((rc = exec_rm_read(x, size, &v)))
			return rc;
		exec_reg_set(x, insn->reg, size, v);
		return EMU_OK;
	case 0x8C: /* MOV Ev,Sreg: 16 bits to memory, zero-extended to a register */
		if ((insn->reg & 7) >= 6)
			return exec_ud(x);
		v = cpu->s.seg[insn->reg & 7].selector; /* Sreg encoding = enum cpu_seg order */
		return exec_rm_write(x, insn->mod == 3 ? size : 2, v);
	case 0x8D: /* LEA */
		if (insn->mod == 3)
			return exec_ud(x);
		exec_reg_set(x, insn->reg, size, exec_effective_address(x));
		return EMU_OK;
	case 0x8F:
		return exec_pop_rm(x);
	case 0x90 ... 0x97: {
		unsigned reg = opcode_reg(insn);

		if (reg == CPU_RAX) /* NOP, PAUSE (F3 90); XCHG eAX,eAX does not zero-extend */
			return EMU_OK;
		v = exec_reg_get(x, reg, size);
		exec_reg_set(x, reg, size, exec_reg_get(x, CPU_RAX, size));
		exec_reg_set(x, CPU_RAX, size, v);
		return EMU_OK;
	}
	case 0x98:
	case 0x99:
		return exec_sign_extend_acc(x);
	case 0x9C:
		return exec_pushf(x);
	case 0x9D:
		return exec_popf(x);
	case 0x9E:
	case 0x9F:
		return exec_lahf_sahf(x);
	case 0xA0 ... 0xA3:
		return exec_moffs(x);
	case 0xA4:
	case 0xA5:
		return exec_string(x, STR_MOVS);
	case 0xA6:
	case 0xA7:
		return exec_string(x, STR_CMPS);
	case 0xA8:
	case 0xA9:
		emu_alu(cpu, ALU_AND, size, exec_reg_get(x, CPU_RAX, size), insn->imm);
		return EMU_OK;
	case 0xAA:
	case 0xAB:
		return exec_string(x, STR_STOS);
	case 0xAC:
	case 0xAD:
		return exec_string(x, STR_LODS);
	case 0xAE:
	case 0xAF:
		return exec_string(x, STR_SCAS);
	case 0xB0 ... 0xBF:
		exec_reg_set(x, opcode_reg(insn), size, insn->imm);
		return EMU_OK;
	case 0xC0:
	case 0xC1:
	case 0xD0 ... 0xD3:
		return exec_group2(x);
	case 0xC2:
	case 0xC3:
		return exec_ret(x);
	case 0xC6:
	case 0xC7:
		return exec_mov_imm_group(x);
	case 0xC8:
		return exec_enter(x);
	case 0xC9:
		return exec_leave(x);
	case 0xD7:
		return exec_xlat(x);
	case 0xE0 ... 0xE3:
		return exec_loop(x);
	case 0xE8:
		if ((rc = exec_push(x, size, x->next_rip)))
			return rc;
		exec_jump_relative(x);
		return EMU_OK;
	case 0xE9:
	case 0xEB:
		exec_jump_relative(x);
		return EMU_OK;
	case 0x9B: /* WAIT/FWAIT */
	case 0xD8 ... 0xDF:
		return exec_x87(x);
	case 0xF4: /* HLT */
		if (cpu->cpl)
			return emu_raise(cpu, EMU_VEC_GP, true, 0);
		return EMU_HALT;
	case 0xF5:
	case 0xF8 ... 0xFD:
		return exec_flag_op(x);
	case 0xF6:
	case 0xF7:
		return exec_group3(x);
	case 0xFE:
	case 0xFF:
		return exec_group45(x);
	default:
		return exec_system_map1(x);
	}
}

static int exec_map0f(struct exec *x)
{
	const struct emu_insn *insn = x->insn;
	struct emu_cpu *cpu = x->cpu;
	unsigned op = insn->opcode, size = insn->opsize;
	uint64_t v;
	int rc;

	switch (op) {
	case 0x0D: /* PREFETCH/PREFETCHW: hints */
	case 0x18 ... 0x1F: /* hint NOPs: PREFETCHh, NOP Ev, ENDBR32/64 (F3 0F 1E FA/FB) */
		return EMU_OK;
	case 0x0B: /* UD2 */
		return exec_ud(x);
	case 0x10 ... 0x17:
	case 0x28 ... 0x2F:
	case 0x50 ... 0x7F:
	case 0xC2 ... 0xC6:
	case 0xD0 ... 0xFF:
		return exec_sse(x);
	case 0x40 ... 0x4F:
		return exec_cmov(x);
	case 0x80 ... 0x8F:
		if (emu_condition(cpu, op & 15))
			exec_jump_relative(x);
		return EMU_OK;
	case 0x90 ... 0x9F: /* SETcc Eb */
		return exec_rm_write(x, 1, emu_condition(cpu, op & 15));
	case 0xA3:
		return exec_bit_test(x, 0, exec_reg_get(x, insn->reg, size), false);
	case 0xAB:
		return exec_bit_test(x, 1, exec_reg_get(x, insn->reg, size), false);
	case 0xB3:
		return exec_bit_test(x, 2, exec_reg_get(x, insn->reg, size), false);
	case 0xBB:
		return exec_bit_test(x, 3, exec_reg_get(x, insn->reg, size), false);
	case 0xBA:
		if (((insn->modrm >> 3) & 7) < 4)
			return exec_ud(x);
		return exec_bit_test(x, (insn->modrm >> 3) & 3, insn->imm & 0xff, true);
	case 0xA4:
	case 0xA5:
	case 0xAC:
	case 0xAD:
		return exec_shift_double(x);
	case 0xAF:
		return exec_imul_reg(x, false);
	case 0xB0:
	case 0xB1:
		return exec_cmpxchg(x);
	case 0xB6:
	case 0xB7:
	case 0xBE:
	case 0xBF: { /* MOVZX/MOVSX Gv, Eb/Ew */
		unsigned from = (op & 1) ? 2 : 1;

		if ((rc = exec_rm_read(x, from, &v)))
			return rc;
		exec_reg_set(x, insn->reg, size, op >= 0xBE ? emu_sext(v, from) : v);
		return EMU_OK;
	}
	case 0xB8: /* POPCNT needs F3; without it, JMPE (IA-64) */
		if (insn->last_rep != 0xF3)
			return exec_ud(x);
		return exec_popcnt(x);
	case 0xBC:
	case 0xBD:
		/* F3 0F BC/BD are TZCNT/LZCNT only with BMI1/LZCNT advertised; we advertise
		 * neither, so the F3 prefix is ignored as on CPUs without them. */
		return exec_bit_scan(x, op == 0xBD);
	case 0xC0:
	case 0xC1:
		return exec_xadd(x);
	case 0xC8 ... 0xCF: {
		unsigned reg = opcode_reg(insn);

		exec_reg_set(x, reg, size, bswap(exec_reg_get(x, reg, size), size));
		return EMU_OK;
	}
	default:
		return exec_system_map0f(x);
	}
}

/* LOCK is allowed only on read-modify-write instructions with a memory destination
 * (SDM Vol. 2, LOCK); anything else raises #UD. */
static bool lock_allowed(const struct emu_insn *insn)
{
	unsigned op = insn->opcode, reg = (insn->modrm >> 3) & 7;

	if (!emu_insn_has_mem(insn))
		return false;
	if (insn->map == EMU_MAP_1) {
		if (op < 0x40)
			return (op & 7) < 2 && (op >> 3) != ALU_CMP;
		switch (op) {
		case 0x80 ... 0x83:
			return reg != ALU_CMP;
		case 0x86:
		case 0x87:
			return true;
		case 0xF6:
		case 0xF7:
			return reg == 2 || reg == 3;
		case 0xFE:
		case 0xFF:
			return reg < 2;
		}
		return false;
	}
	if (insn->map == EMU_MAP_0F) {
		switch (op) {
		case 0xAB:
		case 0xB3:
		case 0xBB:
		case 0xB0:
		case 0xB1:
		case 0xC0:
		case 0xC1:
			return true;
		case 0xBA:
			return reg >= 5;
		case 0xC7:
			return reg == 1;
		}
	}
	return false;
}

/* Execute one decoded instruction whose bytes were fetched at cpu->s.rip. */
int emu_execute(struct emu_cpu *cpu, const struct emu_insn *insn)
{
	struct exec x;
	struct emu_lazy_flags saved_cc = cpu->cc;
	uint64_t saved_rflags = cpu->s.rflags;
	int rc;

	/* Field by field: zeroing the whole struct (the lock state's buffer) costs more than
	 * many instructions take. The lock state's other fields are set before they are read. */
	x.cpu = cpu;
	x.insn = insn;
	x.la = 0;
	x.partial = false;
	x.lk.active = x.lk.pending = x.lk.held = false;
	x.next_rip = cpu->s.rip + insn->len;
	cpu->shadow_next = false;
	if (cpu->mode != EMU_MODE_64)
		x.next_rip &= cpu->mode == EMU_MODE_32 ? 0xffffffffull : 0xffffull;
	if ((insn->prefix & EMU_PFX_LOCK) && !lock_allowed(insn))
		return emu_raise(cpu, EMU_VEC_UD, false, 0);
	if (emu_insn_has_mem(insn)) {
		x.la = exec_seg_linear(&x, insn->seg, exec_effective_address(&x));
		/* XCHG with memory is locked without the prefix (SDM Vol. 2, XCHG). */
		x.lk.active = (insn->prefix & EMU_PFX_LOCK) ||
			      (insn->map == EMU_MAP_1 && (insn->opcode & 0xFE) == 0x86);
	}
retry:
	switch (insn->map) {
	case EMU_MAP_1:
		rc = exec_map1(&x);
		break;
	case EMU_MAP_0F:
		rc = exec_map0f(&x);
		break;
	default:
		rc = exec_ud(&x);
		break;
	}
	exec_lock_release(&x);
	if (rc == EXEC_RETRY) {
		/* Another vCPU changed the locked operand: nothing was written, registers are
		 * written after memory; undo the flags and run the instruction again. */
		x.lk.pending = false;
		cpu->cc = saved_cc;
		cpu->s.rflags = saved_rflags;
		goto retry;
	}
	if (rc == EMU_OK || rc == EMU_HALT) {
		cpu->s.rip = x.next_rip;
		cpu->instructions++;
		cpu->interrupt_shadow = cpu->shadow_next;
		/* STI, POPF, IRET, SYSRET...: the caller chains while an interrupt waits for
		 * IF only because these end the chain. */
		if (!(saved_rflags & EMU_FLAG_IF) && (cpu->s.rflags & EMU_FLAG_IF))
			emu_if_raised(cpu);
	} else if (!x.partial) {
		/* A fault after flags were computed (e.g. on the write of a read-modify-write)
		 * must not leave them changed. REP string instructions keep partial progress. */
		cpu->cc = saved_cc;
		cpu->s.rflags = saved_rflags;
	}
	return rc;
}
