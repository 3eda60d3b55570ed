/* Shared by the executor's files (exec.c: integer instructions, system.c: system instructions,
 * interrupts and exceptions). Not for use outside src/cpu/emu/. */
#ifndef VMM_CPU_EMU_EXEC_H
#define VMM_CPU_EMU_EXEC_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "cpu/emu/alu.h"
#include "cpu/emu/decode.h"
#include "cpu/emu/emu.h"

/* A locked read-modify-write (LOCK prefix, or XCHG with memory): the instruction's first
 * memory read and its write of the same bytes are one atomic access (exec.c). */
struct exec_locked {
	bool active; /* this instruction's memory operand is locked */
	bool pending; /* the operand was read, its write is still to come */
	bool held; /* the bus lock is held (an operand no host atomic can update) */
	uint8_t len;
	uint8_t *host; /* the operand in RAM, updated by a host compare-and-swap; or NULL */
	uint64_t la;
	uint8_t old[16]; /* what the read saw: the compare-and-swap's expected value */
};

/* A handler's status besides enum emu_status: the compare-and-swap of a locked operand found
 * another value (another vCPU wrote it), so emu_execute() runs the instruction again. */
#define EXEC_RETRY 100

/* One instruction being executed. */
struct exec {
	struct emu_cpu *cpu;
	const struct emu_insn *insn;
	uint64_t next_rip; /* RIP after this instruction; branches change it */
	uint64_t la; /* linear address of the ModRM memory operand, if any */
	bool partial; /* a REP string instruction completed iterations: keep them on a fault */
	struct exec_locked lk;
};

/* Registers by number and size (byte registers 4-7 are AH..BH without REX). Inline, with the
 * memory accessors below: they run for nearly every instruction. */
static inline __attribute__((always_inline)) uint64_t exec_reg_get(const struct exec *x, unsigned reg, unsigned size)
{
	/* Without REX, byte registers 4-7 are AH, CH, DH, BH. */
	if (size == 1 && reg >= 4 && reg < 8 && !(x->insn->prefix & EMU_PFX_REX))
		return (x->cpu->s.gpr[reg - 4] >> 8) & 0xff;
	return x->cpu->s.gpr[reg] & emu_size_mask(size);
}

/* As emu_gpr_write(), and without REX byte registers 4-7 are AH..BH. */
static inline __attribute__((always_inline)) void exec_reg_set(struct exec *x, unsigned reg,
							       unsigned size, uint64_t v)
{
	if (size == 1 && reg >= 4 && reg < 8 && !(x->insn->prefix & EMU_PFX_REX)) {
		uint64_t *r = &x->cpu->s.gpr[reg - 4];

		*r = (*r & ~0xff00ull) | ((v & 0xff) << 8);
		return;
	}
	emu_gpr_write(&x->cpu->s.gpr[reg], size, v);
}

/* Addresses: segment base applied (64-bit mode: FS/GS only), address-size masking. */
uint64_t exec_seg_linear(const struct exec *x, unsigned seg, uint64_t offset);
uint64_t exec_addr_mask(const struct exec *x);
uint64_t exec_effective_address(const struct exec *x);

/* Any length up to 16 bytes (CMPXCHG8B/16B); a locked operand goes through the lock path. */
int exec_mem_read_bytes(struct exec *x, uint64_t la, void *dst, unsigned len);
int exec_mem_write_bytes(struct exec *x, uint64_t la, const void *src, unsigned len);

/* Memory (the TLB's fast path, else the memory ops) and the ModRM r/m operand; each returns
 * an enum emu_status. */
static inline int exec_mem_read(struct exec *x, uint64_t la, unsigned size, uint64_t *v)
{
	const uint8_t *p;

	*v = 0;
	if (x->lk.active)
		return exec_mem_read_bytes(x, la, v, size);
	if ((p = emu_tlb_fast(x->cpu, x->cpu->tlb.read, la, size))) {
		switch (size) {
		case 1:
			*v = *p;
			break;
		case 2: {
			uint16_t t;
			memcpy(&t, p, 2);
			*v = t;
			break;
		}
		case 4: {
			uint32_t t;
			memcpy(&t, p, 4);
			*v = t;
			break;
		}
		default:
			memcpy(v, p, 8);
			break;
		}
		return EMU_OK;
	}
	return x->cpu->mem->read(x->cpu, la, v, size, EMU_ACCESS_READ);
}

static inline int exec_mem_write(struct exec *x, uint64_t la, unsigned size, uint64_t v)
{
	uint8_t *p;

	if (x->lk.active)
		return exec_mem_write_bytes(x, la, &v, size);
	if ((p = emu_tlb_fast(x->cpu, x->cpu->tlb.write, la, size))) {
		switch (size) {
		case 1:
			*p = (uint8_t)v;
			break;
		case 2: {
			uint16_t t = (uint16_t)v;
			memcpy(p, &t, 2);
			break;
		}
		case 4: {
			uint32_t t = (uint32_t)v;
			memcpy(p, &t, 4);
			break;
		}
		default:
			memcpy(p, &v, 8);
			break;
		}
		emu_code_stored(x->cpu, p);
		return EMU_OK;
	}
	return x->cpu->mem->write(x->cpu, la, &v, size);
}

/* The ModRM r/m operand. */
static inline __attribute__((always_inline)) int exec_rm_read(struct exec *x, unsigned size, uint64_t *v)
{
	if (x->insn->mod == 3) {
		*v = exec_reg_get(x, x->insn->rm, size);
		return EMU_OK;
	}
	return exec_mem_read(x, x->la, size, v);
}

static inline __attribute__((always_inline)) int exec_rm_write(struct exec *x, unsigned size, uint64_t v)
{
	if (x->insn->mod == 3) {
		exec_reg_set(x, x->insn->rm, size, v);
		return EMU_OK;
	}
	return exec_mem_write(x, x->la, size, v);
}

/* The stack (SS:rSP with the stack-address size). */
unsigned exec_stack_size(const struct exec *x);
uint64_t exec_rsp_adjust(const struct exec *x, int64_t delta);
int exec_push(struct exec *x, unsigned size, uint64_t v);
int exec_pop(struct exec *x, unsigned size, uint64_t *v);
int exec_stack_peek(struct exec *x, unsigned size, uint64_t offset, uint64_t *v);

void exec_jump_to(struct exec *x, uint64_t target);
void exec_jump_relative(struct exec *x);
int exec_ud(struct exec *x);

/* sse.c: SSE/SSE2 instructions of the 0F map, and 0F AE /0-/3 (FXSAVE, FXRSTOR, LDMXCSR,
 * STMXCSR). */
int exec_sse(struct exec *x);
int exec_sse_state(struct exec *x, unsigned op);

/* x87.c: the x87 FPU (D8-DF) and WAIT (9B). */
int exec_x87(struct exec *x);
/* x87.c: the MMX registers are the x87 registers' mantissas (physical order, not stack order);
 * sse.c's MMX instructions read them, then enter MMX state (TOP 0, tags valid), then write. */
uint64_t x87_mm_get(const struct emu_cpu *cpu, unsigned n);
void x87_mmx_enter(struct emu_cpu *cpu);
void x87_mm_set(struct emu_cpu *cpu, unsigned n, uint64_t v);
void x87_emms(struct emu_cpu *cpu);

/* system.c: system instructions of the one-byte and 0F maps; EMU_VEC_UD if not one. */
int exec_system_map1(struct exec *x);
int exec_system_map0f(struct exec *x);

#endif
