/* The software CPU's template JIT (jit.h): host x86-64 code for hot blocks.
 *
 * A compiled block is a function `int f(struct emu_cpu *cpu)` that keeps cpu in RBX and, for
 * each instruction, either calls its handler (insn->fast with the instruction's address as an
 * immediate; then leaves on a non-zero status or block_exit, as emu_run()'s loop does) or
 * executes an inlined template. Every exit is a jump back to a shared epilogue placed before the
 * entry point. */
#include "cpu/emu/jit.h"

#include "cpu/emu/alu.h"
#include "cpu/emu/fast.h"
#include "memory.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)

#include <sys/mman.h>
#include <unistd.h>

/* A successor that compiled code may go to when its target is not fixed by its block's page
 * (jit.h): the entries of the lookup table, and the record of a return site (exits to other
 * pages have their own check: emit_exit_xpage()). The
 * pair (linear address, TLB generation) names one guest-physical address, as a TLB entry
 * does; CPL and mode must be the ones it was made at (the mode always is: compiled code is
 * 64-bit and a near branch keeps the mode). The successor's chain entry checks the rest. */
struct jit_target {
	uint64_t la; /* linear address (RIP) of the successor's first instruction */
	uint64_t gen; /* the cpu->tlb.generation it holds for, JIT_NEVER: none */
	uint64_t ggen; /* the cpu->tlb.generation_global it holds for (a global page), or NEVER */
	uint64_t code; /* the successor's chain entry (read-execute view) | 1 when CPL 3 */
};
/* No generation reaches it (64-bit counters counting flushes). */
#define JIT_NEVER UINT64_MAX
/* The buffer's cold region is 1/JIT_COLD_PART of it (struct emu_jit): on a boot and a disk
 * benchmark, compiled blocks had ~500-520 bytes of hot code and ~230-240 of cold, so both
 * regions fill at about the same time (a quarter filled the cold one first: more flushes). */
#define JIT_COLD_PART 3
/* The lookup table's entries (RET, indirect JMP/CALL): 512 KiB per vCPU (filled at each
 * flush of the buffer; a lookup reads one entry). */
#define JIT_LOOKUP_SIZE 16384
/* In jit_exit: a CALL's return site link (emit_ret_push()) at the buffer offset in the
 * other bits, not an exit record. */
#define JIT_RET_LINK 0x80000000u
/* A return site link: mov rdx, la; mov r8, gen; mov r9, ggen; mov r10, code (4 x 10 bytes):
 * where each immediate is. */
#define JIT_RET_LINK_LEN 40u
/* An exit record's gpa for an exit to another page with its own check (emit_exit_xpage(); a
 * same-page record's is a guest-physical address, below 2^56: struct jit_link_rec). */
#define JIT_XPAGE_CHECK (UINT64_MAX - 1)
/* In a same-page record: link the exit to the successor's full chain entry, with the version
 * check (the exit after CPUID, a serialising instruction: emit_exit_to()). */
#define JIT_FULL_ENTRY (1ull << 62)

struct emu_jit {
	uint8_t *rw; /* the buffer, written here */
	uint8_t *rx; /* the same pages, executed here */
	/* Blocks' hot code (what runs when nothing unusual happens) fills [0, hot_size) from
	 * its start, at pos; their cold code (TLB misses' slow paths, rare calls) fills
	 * [hot_size, size) at cold_pos, so that the hot code of the kernel's paths is dense in
	 * the host's caches. A block that does not fit in either drops everything. */
	size_t size, pos, hot_size, cold_pos;
	uint32_t gen; /* a new one when the buffer is dropped (jit_next_gen()); never 0 */
	unsigned threshold;
	bool inline_off; /* VMM_EMU_JIT=calls: handler calls only (to bisect a template) */
	uint64_t flushes;
	/* Blocks entered through emu_run() after a lookup missed them, by linear address
	 * (emu_jit_link()), for the lookup after RET and indirect JMP/CALL; emptied with the
	 * buffer. */
	struct jit_target *lookup;
	/* The shared code at the start of the buffer (jit_stubs()), read-execute view, called
	 * by exits (emit_find()): check the jit_target in RDX against RIP and the CPU and
	 * return its code in RCX, else the miss (a return with status 0); find RIP's entry in
	 * the lookup table and do the same. */
	const uint8_t *stub_check, *stub_lookup;
	/* The return prediction's (struct emu_cpu's ret_ring): the push of a CALL's entry, and
	 * after a RET the check of the entry it pops, else the lookup (jit_ret_stubs()). */
	const uint8_t *stub_ret_push, *stub_ret;
	/* The epilogue (jit_epilogue) that every return from compiled code jumps to. */
	const uint8_t *stub_epilogue;
};

static bool jit_stubs(struct emu_jit *jit);

/* Generations are numbered across all JITs of the process: a block's ref (jit.h) then never
 * names code of another JIT that had the same number (tests give a vCPU a new JIT while its
 * block cache keeps refs to the old one's code; emu_jit_unchain() must not patch what is at
 * such a ref's address in the new buffer). Never 0. */
static uint32_t jit_next_gen(void)
{
	static uint32_t last;
	uint32_t gen;

	while (!(gen = __atomic_add_fetch(&last, 1, __ATOMIC_RELAXED)))
		;
	return gen;
}

/* Where to ask for the executed view: 256 MiB below vmm's text, so that compiled code reaches
 * the handlers with call rel32 (emit_call()). Only a hint: the host may put it anywhere, and
 * calls out of reach then go through a register. */
static void *jit_near_text(size_t size)
{
	uintptr_t text = (uintptr_t)&emu_jit_create, room = (256u << 20) + size;

	return text > room ? (void *)((text - room) & ~(uintptr_t)0x1fffff) : NULL;
}

struct emu_jit *emu_jit_create(size_t size, unsigned threshold, bool templates)
{
	struct emu_jit *jit = calloc(1, sizeof(*jit));
	int fd = -1, err;

	if (!jit)
		return NULL;
	jit->size = size; /* what emu_jit_destroy() unmaps */
	fd = memfd_create("vmm-emu-jit", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
		goto fail;
	jit->rw = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (jit->rw == MAP_FAILED) {
		jit->rw = NULL;
		goto fail;
	}
	jit->rx = mmap(jit_near_text(size), size, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
	if (jit->rx == MAP_FAILED) {
		jit->rx = NULL;
		goto fail;
	}
	close(fd);
	fd = -1;
	jit->gen = jit_next_gen();
	jit->hot_size = size - size / JIT_COLD_PART;
	jit->cold_pos = jit->hot_size;
	jit->threshold = threshold;
	jit->inline_off = !templates;
	jit->lookup = malloc(JIT_LOOKUP_SIZE * sizeof(*jit->lookup));
	if (!jit->lookup)
		goto fail;
	memset(jit->lookup, 0xff, JIT_LOOKUP_SIZE * sizeof(*jit->lookup));
	if (!jit_stubs(jit)) {
		errno = ENOSPC;
		goto fail;
	}
	return jit;
fail:
	err = errno;
	if (fd >= 0)
		close(fd);
	emu_jit_destroy(jit);
	errno = err;
	return NULL;
}

void emu_jit_destroy(struct emu_jit *jit)
{
	if (!jit)
		return;
	if (jit->rw)
		munmap(jit->rw, jit->size);
	if (jit->rx)
		munmap(jit->rx, jit->size);
	free(jit->lookup);
	free(jit);
}

uint64_t emu_jit_flushes(const struct emu_jit *jit)
{
	return __atomic_load_n(&jit->flushes, __ATOMIC_RELAXED); /* --stats: any thread */
}

/* ---- emitting ---- */

struct emit {
	uint8_t *p, *start, *end; /* writing, in the read-write view */
	bool overflow;
};

static void emit_bytes(struct emit *e, const void *b, size_t n)
{
	if (e->overflow || (size_t)(e->end - e->p) < n) {
		e->overflow = true;
		return;
	}
	memcpy(e->p, b, n);
	e->p += n;
}

static void emit1(struct emit *e, uint8_t b)
{
	emit_bytes(e, &b, 1);
}

static void emit4(struct emit *e, uint32_t v)
{
	emit_bytes(e, &v, 4);
}

static void emit8(struct emit *e, uint64_t v)
{
	emit_bytes(e, &v, 8);
}

/* pop rcx (RAX's push); pop r15; pop r14; pop r13; pop r12; pop rbp; pop rbx; ret: what every
 * exit from compiled code ends with (emit_prologue() pushed them), shared (stub_epilogue) */
static const uint8_t jit_epilogue[12] = { 0x59, 0x41, 0x5F, 0x41, 0x5E, 0x41,
					  0x5D, 0x41, 0x5C, 0x5D, 0x5B, 0xC3 };

/* Host registers, all callee-saved: RBX holds cpu for the whole function, R12 the TLB tag bits
 * (emit_tlb_tag()), R13 points near the fields that compiled code uses most (JIT_HOT_BASE),
 * R14 and R15 at the read and write TLB arrays, and EBP is the mask of an entry's offset in
 * them (emit_tlb_lookup()). */
enum {
	RAX,
	RCX,
	RDX,
	RBX,
	RSP,
	RBP,
	RSI,
	RDI
};

/* R13 = cpu + JIT_HOT_BASE from the prologue on: the fields from the lazy flags (cc) to
 * jit_scratch (emu.h), which compiled code reads and writes in most blocks (the flags' record,
 * the instruction count, the interrupt shadow, the chain entry's attention and chain_left),
 * are a one-byte displacement from it instead of four from RBX: 3 bytes less each (2 with a
 * REX prefix the instruction did not need). */
#define JIT_HOT_BASE ((int32_t)offsetof(struct emu_cpu, cc) + 128)
_Static_assert(offsetof(struct emu_cpu, jit_scratch) + 8 <= offsetof(struct emu_cpu, cc) + 256,
	       "compiled code's hot fields are within R13's reach");

/* An instruction `op` with a ModRM naming host register `reg` and the memory operand
 * [rbx + disp] (a field of struct emu_cpu), as [r13 + disp8] when that reaches. `w`: REX.W;
 * `pfx`: a 66 prefix, a REX prefix (0x40: SIL/DIL as a byte register) or 0. */
static void emit_mem(struct emit *e, uint8_t pfx, bool w, const uint8_t *op, unsigned oplen,
		     unsigned reg, int32_t disp)
{
	uint8_t rex = (uint8_t)(0x40 | (w ? 8 : 0) | ((reg & 8) ? 4 : 0));
	int32_t hot = disp - JIT_HOT_BASE;
	bool force_rex = false;

	if ((pfx & 0xF0) == 0x40) { /* a REX prefix: merged into this one */
		rex |= pfx;
		pfx = 0;
		force_rex = true;
	}
	if (pfx)
		emit1(e, pfx);
	if (hot >= -128 && hot < 128) { /* [r13 + disp8] (REX.B; mod 01, r/m 101: no SIB) */
		emit1(e, (uint8_t)(rex | 1));
		emit_bytes(e, op, oplen);
		emit1(e, (uint8_t)(0x40 | ((reg & 7) << 3) | 5));
		emit1(e, (uint8_t)hot);
		return;
	}
	if (rex != 0x40 || force_rex)
		emit1(e, rex);
	emit_bytes(e, op, oplen);
	if (disp >= -128 && disp < 128) {
		emit1(e, (uint8_t)(0x40 | ((reg & 7) << 3) | RBX));
		emit1(e, (uint8_t)disp);
	} else {
		emit1(e, (uint8_t)(0x80 | ((reg & 7) << 3) | RBX));
		emit4(e, (uint32_t)disp);
	}
}

/* A rel32 jump or Jcc (cc < 16; 16: JMP) to `target` in the read-execute view. */
static void emit_jump(struct emit *e, const struct emu_jit *jit, unsigned cc, const uint8_t *target)
{
	uint8_t *at;

	if (cc < 16) {
		emit1(e, 0x0F);
		emit1(e, (uint8_t)(0x80 | cc));
	} else {
		emit1(e, 0xE9);
	}
	at = e->p + 4; /* the next instruction, in the read-write view */
	emit4(e, (uint32_t)(int32_t)(target - (jit->rx + (at - jit->rw))));
}

/* A call of `fn` (in vmm's text): call rel32 when it is within reach of the code buffer
 * (emu_jit_create() asks for a mapping near the text), else through RAX. */
static void emit_call(struct emit *e, const struct emu_jit *jit, uint64_t fn)
{
	int64_t rel = (int64_t)(fn - (uint64_t)(uintptr_t)(jit->rx + (e->p + 5 - jit->rw)));

	if (rel == (int32_t)rel) {
		emit1(e, 0xE8);
		emit4(e, (uint32_t)(int32_t)rel);
		return;
	}
	emit_bytes(e, (const uint8_t[]){ 0x48, 0xB8 }, 2); /* mov rax, fn; call rax */
	emit8(e, fn);
	emit_bytes(e, (const uint8_t[]){ 0xFF, 0xD0 }, 2);
}

#define CC_B 2
#define CC_NZ 5
#define CPU_OFF(field) ((int32_t)offsetof(struct emu_cpu, field))
#define GPR(r) (CPU_OFF(s.gpr) + 8 * (int32_t)(r))

/* One dword store writes the lazy flags' op, size and carry (and the padding byte after them). */
_Static_assert(offsetof(struct emu_lazy_flags, op) == 0 &&
		       offsetof(struct emu_lazy_flags, size) == 1 &&
		       offsetof(struct emu_lazy_flags, carry) == 2 &&
		       offsetof(struct emu_lazy_flags, res) == 8,
	       "lazy flags layout");

/* mov reg, [rbx + disp] and mov [rbx + disp], reg, 64 bits (w) or 32 bits (zero-extending). */
static void emit_load(struct emit *e, bool w, unsigned reg, int32_t disp)
{
	emit_mem(e, 0, w, (const uint8_t[]){ 0x8B }, 1, reg, disp);
}

static void emit_store(struct emit *e, bool w, unsigned reg, int32_t disp)
{
	emit_mem(e, 0, w, (const uint8_t[]){ 0x89 }, 1, reg, disp);
}

/* The lazy flags record's result (`reg`) and its kind | size << 8, as the handlers write them. */
static void emit_record_result_from(struct emit *e, unsigned reg, unsigned kind, unsigned size)
{
	emit_store(e, true, reg, CPU_OFF(cc.res));
	emit_mem(e, 0, false, (const uint8_t[]){ 0xC7 }, 1, 0, CPU_OFF(cc.op));
	emit4(e, kind | (uint32_t)size << 8);
}

static void emit_record_result(struct emit *e, unsigned kind, unsigned size)
{
	emit_record_result_from(e, RAX, kind, size);
}

/* A register-register instruction `op reg-field, rm-field` among RAX/RCX/RDX. */
static void emit_rr(struct emit *e, uint8_t pfx, bool w, const uint8_t *op, unsigned oplen,
		    unsigned reg, unsigned rm)
{
	if (pfx)
		emit1(e, pfx);
	if (w)
		emit1(e, 0x48);
	emit_bytes(e, op, oplen);
	emit1(e, (uint8_t)(0xC0 | (reg << 3) | rm));
}

/* ---- compiling ---- */

/* What the host's arithmetic flags and the guest's lazy flags record hold at a point of the
 * block, as far as the compiler knows. */
enum producer {
	PROD_UNKNOWN, /* nothing known: a condition must go through the handler */
	PROD_ADD, /* the record holds an ADD of prod_size bytes */
	PROD_SUB, /* SUB or CMP */
	PROD_LOGIC, /* AND, OR, XOR, TEST */
	PROD_RFLAGS, /* no record (cc.op EMU_CC_NONE): the six flags are in RFLAGS */
	PROD_INCDEC, /* INC or DEC: the result gives ZF SF PF (CF and OF need the handler) */
};

struct compile {
	struct emit e; /* where the emit_* functions write: the hot code, or the cold while */
	struct emit cold; /* cold_swap() swapped them (then this is the hot code) */
	struct emu_jit *jit;
	const uint8_t *exit; /* the epilogue, in the read-execute view: EAX is the status */
	/* Instructions retired by inlined templates whose RIP, count and interrupt shadow are
	 * not yet written to the CPU (emit_sync() does before anything can look). */
	unsigned pend_n;
	uint64_t pend_rip;
	enum producer prod;
	unsigned prod_size;
	bool host_flags; /* the host's CF ZF SF OF PF equal the guest's (an inlined ALU op) */
	bool uses_tlb; /* a memory template needs R12 from the prologue */
	/* On every path to here an instruction retired with the interrupt shadow cleared (a
	 * sync wrote it, or a handler ran): only the block's first retirement clears it, as
	 * only a block's last instruction can set it (STI, MOV SS and POP SS end blocks: cpu.c's
	 * block_ends()), so it can be set only when the block starts. For the region being
	 * written; cold_swap() keeps the hot one's across a detour into the cold region (which
	 * branches off the hot code here and joins it again later). */
	bool shadow_clear, hot_shadow_clear, in_cold;
	/* A call since the last look at block_exit may have set it (a handler, the store into a
	 * code page) on some path to here: the exits look at it only then. Where the cold code
	 * joins the hot code again, either path's (cold_swap()). */
	bool exit_dirty, hot_exit_dirty;
	/* Chaining (jit.h): the block's facts (NULL: no chaining), a return with status 0 (in
	 * the read-execute view), the page offset of the instruction being compiled, and
	 * whether the block's exits have been emitted (its last instruction branched). */
	const struct emu_jit_chain *chain;
	const uint8_t *ret0;
	unsigned insn_off;
	bool ended;
	/* The block's last instruction is CPUID: another CPU's writes into code that it made
	 * visible before are seen after it, so its exit is linked to the successor's full chain
	 * entry (emu_jit_link()), which compares the page's version (x86 code that modifies code
	 * another CPU runs has that CPU execute a serialising instruction, SDM Vol. 3 §8.1.3;
	 * interrupts and IRET end the chain anyway). */
	bool serialised;
};

static void emit_shadow_clear(struct compile *c);

/* Make RIP, the instruction count and the interrupt shadow exact (clobbers host flags). */
static void emit_sync(struct compile *c)
{
	struct emit *e = &c->e;

	if (!c->pend_n)
		return;
	emit_mem(e, 0, true, (const uint8_t[]){ 0x81 }, 1, 0, CPU_OFF(s.rip)); /* add [rip], imm */
	emit4(e, (uint32_t)c->pend_rip);
	emit_mem(e, 0, true, (const uint8_t[]){ 0x83 }, 1, 0, CPU_OFF(instructions));
	emit1(e, (uint8_t)c->pend_n);
	emit_shadow_clear(c);
	c->pend_n = 0;
	c->pend_rip = 0;
	c->host_flags = false;
}

/* A call of insn->fast(cpu, insn), then the exits emu_run()'s loop takes after it. */
static void emit_handler_call(struct compile *c, const struct emu_insn *insn, bool last)
{
	struct emit *e = &c->e;

	emit_sync(c);
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x89, 0xDF }, 3); /* mov rdi, rbx */
	emit_bytes(e, (const uint8_t[]){ 0x48, 0xBE }, 2); /* mov rsi, insn */
	emit8(e, (uint64_t)(uintptr_t)insn);
	emit_call(e, c->jit, (uint64_t)(uintptr_t)insn->fast);
	emit_bytes(e, (const uint8_t[]){ 0x85, 0xC0 }, 2); /* test eax, eax */
	emit_jump(e, c->jit, CC_NZ, c->exit);
	c->shadow_clear = true; /* retired (one that sets the shadow ends the block) */
	c->exit_dirty = true;
	if (!last) { /* cmp byte [cpu->block_exit], 0; jnz exit (EAX is 0) */
		emit_mem(e, 0, false, (const uint8_t[]){ 0x80 }, 1, 7, CPU_OFF(block_exit));
		emit1(e, 0);
		emit_jump(e, c->jit, CC_NZ, c->exit);
		c->exit_dirty = false;
	}
	c->host_flags = false;
}

/* ---- which forms are inlined ---- */

enum form_kind {
	FORM_CALL, /* the handler */
	FORM_MOV_RR,
	FORM_MOV_RI,
	FORM_ALU, /* ADD OR ADC SBB AND SUB XOR CMP, TEST (op 8) with a register or immediate */
	FORM_LEA,
	FORM_SHIFT, /* SHL SHR SAR by an immediate or 1 */
	FORM_ROT, /* ROL ROR by an immediate or 1 */
	FORM_SHIFT_CL, /* SHL SHR SAR by CL */
	FORM_ALU_HI, /* ALU (not ADC/SBB) or TEST of AH..BH with an immediate (emu_execute()'s) */
	FORM_BSWAP,
	FORM_NOT,
	FORM_NEG,
	FORM_INCDEC, /* INC (op 0), DEC (op 1) */
	FORM_IMUL, /* IMUL r, r (b) or r, r, imm */
	FORM_MOVX, /* MOVZX, MOVSX, MOVSXD r, r */
	FORM_CMOV,
	FORM_SETCC,
	FORM_SETCC_MEM, /* SETcc m8: the condition, then a store through the TLB inline */
	FORM_JCC,
	FORM_JMP,
	FORM_LOAD, /* MOV r, m; MOVZX/MOVSX r, m8/m16; MOVSXD r, m32: the TLB inline, else the handler */
	FORM_STORE, /* MOV m, r */
	FORM_STORE_IMM, /* MOV m, imm */
	FORM_ALU_MEM, /* ALU (not ADC/SBB) or TEST with a memory operand (`mem_a`: the destination) */
	FORM_INCDEC_MEM, /* INC (op 0), DEC (op 1) m */
	FORM_PUSH, /* PUSH r64 */
	FORM_POP, /* POP r64 */
	FORM_CALL_REL, /* CALL rel32: the block's last instruction */
	FORM_RET, /* RET: the block's last instruction */
	FORM_NOP, /* NOP, NOP r/m (no memory access), PREFETCH, ENDBR64 */
	FORM_CLI, /* CLI at CPL 0 inline, else the handler (IOPL, #GP) */
};

#define OP_TEST 8

struct form {
	enum form_kind kind;
	unsigned op; /* ALU or shift operation; condition code */
	unsigned size; /* operand size (MOVX: destination) */
	unsigned from; /* MOVX: source size */
	bool sign; /* MOVX */
	bool imm; /* the source is insn->imm */
	bool mem_a; /* ALU_MEM: the first operand (and destination) is the memory operand */
	unsigned count; /* SHIFT */
};

static bool wide(unsigned size)
{
	return size == 4 || size == 8;
}

/* ALU op (not ADC/SBB: their carry in is not worth the registers here) or TEST with a memory
 * operand: `mem_a` when the memory operand comes first (and is written unless CMP/TEST). */
static struct form alu_mem_form(unsigned op, unsigned size, bool mem_a, bool imm)
{
	if (op == 2 || op == 3)
		return (struct form){ .kind = FORM_CALL, .size = size };
	return (struct form){
		.kind = FORM_ALU_MEM, .op = op, .size = size, .imm = imm, .mem_a = mem_a
	};
}

static struct form classify_map1(const struct emu_insn *insn)
{
	unsigned op = insn->opcode, size = insn->opsize, ext = (insn->modrm >> 3) & 7;
	struct form f = { .kind = FORM_CALL, .size = size };

	if (op < 0x40 && (op & 7) < 6) {
		f.op = op >> 3;
		f.imm = (op & 7) >= 4;
		f.kind = FORM_ALU;
		if ((op & 7) < 4 && insn->mod != 3)
			f = alu_mem_form(f.op, size, (op & 7) < 2, false);
		return f;
	}
	switch (op) {
	case 0x50 ... 0x57:
		f.kind = FORM_PUSH;
		return f;
	case 0x58 ... 0x5F:
		f.kind = FORM_POP;
		return f;
	case 0x63:
		if (size == 8)
			f = (struct form){ .kind = insn->mod == 3 ? FORM_MOVX : FORM_LOAD,
					   .size = 8,
					   .from = 4,
					   .sign = true };
		return f;
	case 0x69:
	case 0x6B:
		if (insn->mod == 3 && wide(size))
			f = (struct form){ .kind = FORM_IMUL, .size = size, .imm = true };
		return f;
	case 0x70 ... 0x7F:
		return (struct form){ .kind = FORM_JCC, .op = op & 15 };
	case 0x80 ... 0x83:
		if (insn->mod != 3)
			return alu_mem_form(ext, size, true, true);
		return (struct form){ .kind = FORM_ALU, .op = ext, .size = size, .imm = true };
	case 0x84:
	case 0x85:
		if (insn->mod != 3)
			return alu_mem_form(OP_TEST, size, true, false);
		return (struct form){ .kind = FORM_ALU, .op = OP_TEST, .size = size };
	case 0x88 ... 0x8B:
		if (insn->mod != 3)
			f = (struct form){ .kind = (op & 2) ? FORM_LOAD : FORM_STORE,
					   .size = size,
					   .from = size };
		else if (wide(size))
			f.kind = FORM_MOV_RR;
		return f;
	case 0x90:
		f.kind = FORM_NOP;
		return f;
	case 0x8D:
		if (wide(size))
			f.kind = FORM_LEA;
		return f;
	case 0xA8:
	case 0xA9:
		return (struct form){ .kind = FORM_ALU, .op = OP_TEST, .size = size, .imm = true };
	case 0xB8 ... 0xBF:
		if (wide(size))
			f.kind = FORM_MOV_RI;
		return f;
	case 0xC3:
		f.kind = FORM_RET;
		return f;
	case 0xC6:
	case 0xC7:
		if (insn->mod != 3)
			f.kind = FORM_STORE_IMM;
		else if (wide(size))
			f.kind = FORM_MOV_RI;
		return f;
	case 0xC1:
	case 0xD1:
		if (insn->mod == 3 && (wide(size) || (size == 2 && ext >= 4)) && ext != 2 &&
		    ext != 3) {
			unsigned count = op == 0xD1 ? 1 : (unsigned)insn->imm & 0xff;

			count &= size == 8 ? 63 : 31;
			/* a count of 0 changes no flag, and one of 16 or more leaves CF
			 * undefined for a 16-bit operand: the handler */
			if (count && (size != 2 || count < 16))
				f = (struct form){ .kind = ext <= 1 ? FORM_ROT : FORM_SHIFT,
						   .op = ext == 6 ? 4 : ext,
						   .size = size,
						   .count = count };
		}
		return f;
	case 0xD3:
		if (insn->mod == 3 && wide(size) && ext >= 4)
			f = (struct form){ .kind = FORM_SHIFT_CL,
					   .op = ext == 6 ? 4 : ext,
					   .size = size };
		return f;
	case 0xF6:
	case 0xF7:
		if (ext <= 1 && insn->mod != 3)
			return alu_mem_form(OP_TEST, size, true, true);
		if (ext <= 1)
			return (struct form){
				.kind = FORM_ALU, .op = OP_TEST, .size = size, .imm = true
			};
		if (insn->mod == 3 && wide(size) && (ext == 2 || ext == 3))
			f.kind = ext == 2 ? FORM_NOT : FORM_NEG;
		return f;
	case 0xFE:
	case 0xFF:
		if (ext > 1)
			return f;
		if (insn->mod != 3)
			f = (struct form){ .kind = FORM_INCDEC_MEM, .op = ext, .size = size };
		else if (wide(size))
			f = (struct form){ .kind = FORM_INCDEC, .op = ext, .size = size };
		return f;
	case 0xE8:
		f.kind = FORM_CALL_REL;
		return f;
	case 0xFA:
		f.kind = FORM_CLI;
		return f;
	case 0xE9:
	case 0xEB:
		f.kind = FORM_JMP;
		return f;
	default:
		return f;
	}
}

static struct form classify_map0f(const struct emu_insn *insn)
{
	unsigned op = insn->opcode, size = insn->opsize;
	struct form f = { .kind = FORM_CALL, .size = size };

	switch (op) {
	case 0x0D:
	case 0x18 ... 0x1F:
		f.kind = FORM_NOP;
		return f;
	case 0x40 ... 0x4F:
		if (insn->mod == 3 && wide(size))
			f = (struct form){ .kind = FORM_CMOV, .op = op & 15, .size = size };
		return f;
	case 0x80 ... 0x8F:
		return (struct form){ .kind = FORM_JCC, .op = op & 15 };
	case 0x90 ... 0x9F:
		return (struct form){ .kind = insn->mod == 3 ? FORM_SETCC : FORM_SETCC_MEM,
				      .op = op & 15,
				      .size = 1 };
	case 0xAF:
		if (insn->mod == 3 && wide(size))
			f = (struct form){ .kind = FORM_IMUL, .size = size };
		return f;
	case 0xC8 ... 0xCF:
		if (wide(size))
			f.kind = FORM_BSWAP;
		return f;
	case 0xB6:
	case 0xB7:
	case 0xBE:
	case 0xBF:
		if (size >= 2)
			f = (struct form){ .kind = insn->mod == 3 ? FORM_MOVX : FORM_LOAD,
					   .size = size,
					   .from = (op & 1) ? 2 : 1,
					   .sign = op >= 0xBE };
		return f;
	default:
		return f;
	}
}

/* ALU r/m8, imm8 (80 /0 /1 /4-/7) and TEST r/m8, imm8 (F6 /0 /1) on AH..BH: fast.c leaves
 * those to emu_execute() (its handlers name whole registers), so blocks give them
 * emu_block_generic(); compiled code addresses the byte itself. Without any prefix: no REX
 * (which would make them SPL..DIL), no LOCK (#UD on a register), 66 or segment. On the disk
 * path, ~11 per 4 KiB request (mostly `test ah, imm8`). */
static struct form classify_high_byte(const struct emu_insn *insn)
{
	unsigned ext = (insn->modrm >> 3) & 7, op = insn->opcode;

	if (insn->map != EMU_MAP_1 || insn->prefix || insn->mod != 3 || insn->rm < 4 ||
	    insn->rm > 7)
		return (struct form){ .kind = FORM_CALL };
	if (op == 0x80 && ext != 2 && ext != 3)
		return (struct form){ .kind = FORM_ALU_HI, .op = ext, .size = 1, .imm = true };
	if (op == 0xF6 && ext <= 1)
		return (struct form){ .kind = FORM_ALU_HI, .op = OP_TEST, .size = 1, .imm = true };
	return (struct form){ .kind = FORM_CALL };
}

/* Only forms fast.c has a handler for (64-bit mode, no LOCK/67/F2/F3, no AH..BH): its
 * selection resolved the registers into fast_a/fast_b, which the templates use. The JIT
 * compiles 64-bit blocks only, so classify_high_byte() may look at the rest. */
static struct form classify(const struct emu_insn *insn)
{
	if (insn->fast == emu_block_generic)
		return classify_high_byte(insn);
	if (!insn->fast)
		return (struct form){ .kind = FORM_CALL };
	if (insn->map == EMU_MAP_1)
		return classify_map1(insn);
	if (insn->map == EMU_MAP_0F)
		return classify_map0f(insn);
	return (struct form){ .kind = FORM_CALL };
}

int emu_jit_inlines(const struct emu_insn *insn)
{
	return classify(insn).kind != FORM_CALL;
}

/* Whether a form reads the arithmetic flags (conditions, carry in). */
static bool form_reads_flags(const struct form *f)
{
	return f->kind == FORM_CMOV || f->kind == FORM_SETCC || f->kind == FORM_SETCC_MEM ||
	       f->kind == FORM_JCC || (f->kind == FORM_ALU && (f->op == 2 || f->op == 3));
}

/* Whether a form goes through the TLB inline, with its handler as the slow path (which may
 * fault, so the flags before it must be exact). */
static bool form_accesses_memory(const struct form *f)
{
	switch (f->kind) {
	case FORM_LOAD:
	case FORM_STORE:
	case FORM_STORE_IMM:
	case FORM_SETCC_MEM:
	case FORM_ALU_MEM:
	case FORM_INCDEC_MEM:
	case FORM_PUSH:
	case FORM_POP:
	case FORM_CALL_REL:
	case FORM_RET:
	case FORM_CLI: /* its slow path is the handler, which may raise #GP */
		return true;
	default:
		return false;
	}
}

/* Whether the instruction may write memory, compiled as `f` (its handler, an inline store, or a
 * template's slow path): a block of none needs no cpu->block_page of its own. */
static bool form_may_write(const struct emu_insn *insn, const struct form *f)
{
	switch (f->kind) {
	case FORM_CALL:
	case FORM_STORE:
	case FORM_STORE_IMM:
	case FORM_SETCC_MEM:
	case FORM_ALU_MEM:
	case FORM_INCDEC_MEM:
	case FORM_PUSH:
	case FORM_CALL_REL:
		return true;
	case FORM_LOAD:
	case FORM_POP:
	case FORM_RET:
	case FORM_LEA:
	case FORM_NOP:
		return false;
	default: /* register forms; any other with a memory operand, to be safe */
		return emu_insn_has_mem(insn);
	}
}

/* Whether an inlined form replaces all six flags. */
static bool form_writes_flags(const struct form *f)
{
	return f->kind == FORM_ALU || f->kind == FORM_SHIFT || f->kind == FORM_IMUL ||
	       f->kind == FORM_NEG || f->kind == FORM_ALU_HI;
}

/* The record an ALU handler leaves (fast.c's alu()), for a handler-run instruction. */
static enum producer handler_producer(const struct emu_insn *insn, unsigned *size)
{
	unsigned op = insn->opcode, alu_op;

	*size = insn->opsize;
	if (!insn->fast || insn->fast == emu_block_generic)
		return PROD_UNKNOWN;
	if (insn->map == EMU_MAP_0F && op == 0xB1) /* fast.c's CMPXCHG m, r: CMP rAX, m */
		return PROD_SUB;
	if (insn->map == EMU_MAP_0F) /* fast.c's BT/BTS/BTR/BTC, BSF/BSR, CMPXCHG16B */
		return (op == 0xA3 || op == 0xAB || op == 0xB3 || op == 0xBB || op == 0xBA ||
			op == 0xBC || op == 0xBD || op == 0xC7)
			       ? PROD_RFLAGS
			       : PROD_UNKNOWN;
	if (insn->map != EMU_MAP_1)
		return PROD_UNKNOWN;
	if (op < 0x40 && (op & 7) < 6)
		alu_op = op >> 3;
	else if (op >= 0x80 && op <= 0x83)
		alu_op = (insn->modrm >> 3) & 7;
	else if (op == 0x84 || op == 0x85 || op == 0xA8 || op == 0xA9)
		alu_op = OP_TEST;
	else if ((op == 0xF6 || op == 0xF7) && ((insn->modrm >> 3) & 7) <= 1)
		alu_op = OP_TEST;
	else
		return PROD_UNKNOWN;
	switch (alu_op) {
	case 0: /* ADD */
		return PROD_ADD;
	case 5: /* SUB */
	case 7: /* CMP */
		return PROD_SUB;
	case 2: /* ADC */
	case 3: /* SBB */
		return PROD_UNKNOWN;
	default:
		return PROD_LOGIC;
	}
}

/* Whether a handler-run instruction leaves the flags alone (so what is known stays known). */
static bool handler_keeps_flags(const struct emu_insn *insn)
{
	unsigned op = insn->opcode;

	if (!insn->fast || insn->fast == emu_block_generic)
		return false;
	if (insn->map == EMU_MAP_1)
		return (op >= 0x88 && op <= 0x8B) || op == 0x8D || op == 0xC6 || op == 0xC7 ||
		       (op >= 0x50 && op <= 0x5F) || op == 0x63 || (op >= 0xB0 && op <= 0xBF);
	if (insn->map == EMU_MAP_0F)
		return op == 0xB6 || op == 0xB7 || op == 0xBE || op == 0xBF;
	return false;
}

/* Set the host's flags to the guest's from what is known; false when nothing is. Clobbers RDX
 * only. */
static bool emit_guest_flags(struct compile *c)
{
	struct emit *e = &c->e;
	unsigned size = c->prod_size;
	uint8_t pfx = size == 2 ? 0x66 : 0;
	bool w = size == 8;
	uint8_t byte = size == 1;

	if (c->host_flags)
		return true;
	switch (c->prod) {
	case PROD_SUB: /* mov rdx, [src1]; cmp rdx, [src2] */
		emit_load(e, true, RDX, CPU_OFF(cc.src1));
		emit_mem(e, pfx, w, (const uint8_t[]){ (uint8_t)(0x3B - byte) }, 1, RDX,
			 CPU_OFF(cc.src2));
		break;
	case PROD_ADD: /* mov rdx, [src1]; add rdx, [src2] */
		emit_load(e, true, RDX, CPU_OFF(cc.src1));
		emit_mem(e, pfx, w, (const uint8_t[]){ (uint8_t)(0x03 - byte) }, 1, RDX,
			 CPU_OFF(cc.src2));
		break;
	case PROD_LOGIC: /* mov rdx, [res]; test rdx, rdx */
		emit_load(e, true, RDX, CPU_OFF(cc.res));
		emit_rr(e, pfx, w, (const uint8_t[]){ (uint8_t)(0x85 - byte) }, 1, RDX, RDX);
		break;
	case PROD_RFLAGS: /* mov edx, [rflags]; and edx, CF PF AF ZF SF OF; push rdx; popfq */
		emit_load(e, false, RDX, CPU_OFF(s.rflags));
		emit_rr(e, 0, false, (const uint8_t[]){ 0x81 }, 1, 4, RDX);
		emit4(e, EMU_FLAGS_ARITH);
		emit_bytes(e, (const uint8_t[]){ 0x52, 0x9D }, 2);
		break;
	default:
		return false;
	}
	c->host_flags = true;
	return true;
}

/* Set the host's flags for condition `cc` from what is known (emit_guest_flags(), or for ZF,
 * SF and PF alone the result of an INC/DEC: the kernel's `decl %gs:preempt_count; je`,
 * ~14 per 4 KiB QD32 read request, called emu_fast_cond()); false when nothing is. */
static bool emit_guest_flags_for(struct compile *c, unsigned cc)
{
	struct emit *e = &c->e;
	unsigned size = c->prod_size;

	if (c->host_flags || c->prod != PROD_INCDEC)
		return emit_guest_flags(c);
	if ((cc >> 1) != 2 && (cc >> 1) != 4 && (cc >> 1) != 5) /* E/NE, S/NS, P/NP */
		return false;
	emit_load(e, true, RDX, CPU_OFF(cc.res)); /* mov rdx, [res]; test rdx, rdx (sized) */
	emit_rr(e, size == 2 ? 0x66 : 0, size == 8,
		(const uint8_t[]){ (uint8_t)(0x85 - (size == 1)) }, 1, RDX, RDX);
	return true; /* host_flags stays false: CF and OF are not the guest's */
}

/* Whether the guest's CF can be had (emit_guest_flags()) without a call. */
static bool carry_known(const struct compile *c)
{
	return c->host_flags || c->prod == PROD_ADD || c->prod == PROD_SUB ||
	       c->prod == PROD_LOGIC || c->prod == PROD_RFLAGS;
}

/* ---- templates ---- */

static void emit_mov_rr(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	emit_load(&c->e, f->size == 8, RAX, GPR(insn->fast_b));
	emit_store(&c->e, true, RAX, GPR(insn->fast_a));
}

static void emit_mov_ri(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	struct emit *e = &c->e;
	uint64_t imm = f->size == 8 ? insn->imm : insn->imm & 0xffffffffull;

	if ((uint64_t)(int64_t)(int32_t)imm == imm) { /* mov qword [reg], simm32 */
		emit_mem(e, 0, true, (const uint8_t[]){ 0xC7 }, 1, 0, GPR(insn->fast_a));
		emit4(e, (uint32_t)imm);
		return;
	}
	emit_bytes(e, (const uint8_t[]){ 0x48, 0xB8 }, 2); /* mov rax, imm64 */
	emit8(e, imm);
	emit_store(e, true, RAX, GPR(insn->fast_a));
}

/* Guest register r's low `size` bytes into `reg`, zero-extended. */
static void emit_gpr_load(struct emit *e, unsigned size, unsigned reg, unsigned r)
{
	if (size < 4)
		emit_mem(e, 0, false, (const uint8_t[]){ 0x0F, size == 1 ? 0xB6 : 0xB7 }, 2, reg,
			 GPR(r));
	else
		emit_load(e, size == 8, reg, GPR(r));
}

/* A `size`-byte result in `reg` (RAX, RCX or RDX; zero-extended when 4 bytes) into guest
 * register r as rset() writes it: 8 and 16 bits merge, 32 bits zero-extend. */
static void emit_gpr_store(struct emit *e, unsigned size, unsigned reg, unsigned r)
{
	if (size == 1)
		emit_mem(e, 0, false, (const uint8_t[]){ 0x88 }, 1, reg, GPR(r));
	else if (size == 2)
		emit_mem(e, 0x66, false, (const uint8_t[]){ 0x89 }, 1, reg, GPR(r));
	else
		emit_store(e, true, reg, GPR(r));
}

/* mov reg, imm masked to `size` (sign-extended 32 bits for 8 bytes: ALU immediates fit). */
static void emit_mov_imm(struct emit *e, unsigned size, unsigned reg, uint64_t imm)
{
	if (size == 8) {
		emit_bytes(e, (const uint8_t[]){ 0x48, 0xC7, (uint8_t)(0xC0 | reg) }, 3);
		emit4(e, (uint32_t)imm);
	} else {
		emit1(e, (uint8_t)(0xB8 | reg));
		emit4(e, (uint32_t)(imm & emu_size_mask(size)));
	}
}

/* A register-register `op` of `size` bytes (`op` is the 16/32/64-bit opcode; the byte form
 * is op - 1). */
static void emit_rr_sized(struct emit *e, unsigned size, uint8_t op, unsigned reg, unsigned rm)
{
	uint8_t o = size == 1 ? (uint8_t)(op - 1) : op;

	emit_rr(e, size == 2 ? 0x66 : 0, size == 8, &o, 1, reg, rm);
}

/* ADD OR ADC SBB AND SUB XOR CMP TEST on EAX/RAX (a) and ECX/RCX (b), as fast.c's alu()
 * records them: the inputs masked to the size, the result, the kind and the carry in. */
static void emit_alu(struct compile *c, const struct emu_insn *insn, const struct form *f,
		     bool record)
{
	/* The host's op r/m, reg for each operation; CMP and TEST as SUB and AND on a copy. */
	static const uint8_t host_op[9] = { 0x01, 0x09, 0x11, 0x19, 0x21, 0x29, 0x31, 0x29, 0x21 };
	static const uint8_t kind[9] = { EMU_CC_ADD,   EMU_CC_LOGIC, EMU_CC_ADC,
					 EMU_CC_SBB,   EMU_CC_LOGIC, EMU_CC_SUB,
					 EMU_CC_LOGIC, EMU_CC_SUB,   EMU_CC_LOGIC };
	struct emit *e = &c->e;
	bool carry_in = f->op == 2 || f->op == 3;

	emit_gpr_load(e, f->size, RAX, insn->fast_a);
	if (f->imm)
		emit_mov_imm(e, f->size, RCX, insn->imm);
	else
		emit_gpr_load(e, f->size, RCX, insn->fast_b);
	if (carry_in) { /* the guest's CF into the host's (from the old record), and into DL */
		emit_guest_flags(c);
		emit_bytes(e, (const uint8_t[]){ 0x0F, 0x92, 0xC2 }, 3); /* setc dl */
	}
	if (record) { /* plain moves: the host's CF survives them */
		emit_store(e, true, RAX, CPU_OFF(cc.src1));
		emit_store(e, true, RCX, CPU_OFF(cc.src2));
	}
	emit_rr_sized(e, f->size, host_op[f->op], RCX, RAX);
	if (f->op != 7 && f->op != OP_TEST)
		emit_gpr_store(e, f->size, RAX, insn->fast_a);
	if (record) {
		emit_record_result(e, kind[f->op], f->size);
		if (carry_in)
			emit_mem(e, 0, false, (const uint8_t[]){ 0x88 }, 1, RDX, CPU_OFF(cc.carry));
	}
	c->host_flags = true;
	c->prod = kind[f->op] == EMU_CC_ADD	? PROD_ADD
		  : kind[f->op] == EMU_CC_SUB	? PROD_SUB
		  : kind[f->op] == EMU_CC_LOGIC ? PROD_LOGIC
						: PROD_UNKNOWN;
	c->prod_size = f->size;
}

/* RAX = base + index * scale + displacement (RIP-relative from the instruction's end), as
 * fast.c's fast_ea(); plus the FS/GS base for a linear address (`seg`). Clobbers RCX. False
 * when the displacement from the last synced RIP does not fit 32 bits. */
static bool emit_address(struct compile *c, const struct emu_insn *insn, bool seg)
{
	static const uint8_t ss[9] = { [1] = 0, [2] = 1, [4] = 2, [8] = 3 };
	struct emit *e = &c->e;
	int64_t disp = insn->disp;

	if (insn->base < 16) {
		emit_load(e, true, RAX, GPR(insn->base));
	} else if (insn->base == EMU_REG_RIP) {
		disp += (int64_t)(c->pend_rip + insn->len);
		if (disp != (int32_t)disp)
			return false;
		emit_load(e, true, RAX, CPU_OFF(s.rip));
	} else if (insn->index == EMU_REG_NONE) { /* mov rax, simm32 (flags kept) */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0xC7, 0xC0 }, 3);
		emit4(e, (uint32_t)(int32_t)disp);
		disp = 0;
	} else {
		emit1(e, 0xB8); /* mov eax, 0 (flags kept) */
		emit4(e, 0);
	}
	if (insn->index != EMU_REG_NONE) { /* mov rcx, [index]; lea rax, [rax + rcx*s + d] */
		emit_load(e, true, RCX, GPR(insn->index));
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x84 }, 3);
		emit1(e, (uint8_t)(ss[insn->scale] << 6 | RCX << 3 | RAX));
		emit4(e, (uint32_t)(int32_t)disp);
	} else if (disp >= -128 && disp < 128 && disp) { /* lea rax, [rax + disp8] */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x40, (uint8_t)disp }, 4);
	} else if (disp) { /* lea rax, [rax + disp32] */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x80 }, 3);
		emit4(e, (uint32_t)(int32_t)disp);
	}
	if (seg && insn->seg >= SEG_FS) { /* mov rcx, [segment base]; lea rax, [rax + rcx] */
		emit_load(e, true, RCX,
			  CPU_OFF(s.seg) + (int32_t)(insn->seg * sizeof(struct cpu_segment)) +
				  (int32_t)offsetof(struct cpu_segment, base));
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x04, 0x08 }, 4);
	}
	return true;
}

/* LEA: the offset alone, no segment base. */
static bool emit_lea(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	struct emit *e = &c->e;

	if (!emit_address(c, insn, false))
		return false;
	if (f->size == 4)
		emit_bytes(e, (const uint8_t[]){ 0x89, 0xC0 }, 2); /* mov eax, eax */
	emit_store(e, true, RAX, GPR(insn->fast_a));
	return true;
}

/* A forward rel32 jump or Jcc (cc < 16; 16: JMP) whose target is patched later. */
static uint8_t *emit_jump_fwd(struct emit *e, unsigned cc)
{
	if (cc < 16) {
		emit1(e, 0x0F);
		emit1(e, (uint8_t)(0x80 | cc));
	} else {
		emit1(e, 0xE9);
	}
	emit4(e, 0);
	return e->overflow ? NULL : e->p - 4;
}

static void patch_jump(const struct emit *e, uint8_t *at)
{
	if (at && !e->overflow) {
		int32_t rel = (int32_t)(e->p - (at + 4));

		memcpy(at, &rel, 4);
	}
}

#define CC_E 4
#define CC_A 7

/* Point the forward jump at `at` (emit_jump_fwd(), possibly in the other region) to `to`, a
 * position in the read-write view. */
static void patch_jump_to(const struct compile *c, uint8_t *at, const uint8_t *to)
{
	if (at && !c->e.overflow && !c->cold.overflow) {
		int32_t rel = (int32_t)(to - (at + 4));

		memcpy(at, &rel, 4);
	}
}

/* Write to the cold region from here on (emit_*(c) write to c->e), or back to the hot one. */
static void cold_swap(struct compile *c)
{
	struct emit hot = c->e;

	c->e = c->cold;
	c->cold = hot;
	c->in_cold = !c->in_cold;
	if (c->in_cold) {
		c->hot_shadow_clear = c->shadow_clear;
		c->hot_exit_dirty = c->exit_dirty;
	} else {
		c->shadow_clear = c->hot_shadow_clear;
		c->exit_dirty = c->exit_dirty || c->hot_exit_dirty;
	}
}

/* mov byte [interrupt_shadow], 0 unless every path here has (struct compile). */
static void emit_shadow_clear(struct compile *c)
{
	if (c->shadow_clear)
		return;
	emit_mem(&c->e, 0, false, (const uint8_t[]){ 0xC6 }, 1, 0, CPU_OFF(interrupt_shadow));
	emit1(&c->e, 0);
	c->shadow_clear = true;
}

/* add or subtract (sub) `rip` and `n` to/from RIP and the instruction count. */
static void emit_add_retired(struct emit *e, uint64_t rip, unsigned n, bool sub)
{
	emit_mem(e, 0, true, (const uint8_t[]){ 0x81 }, 1, sub ? 5 : 0, CPU_OFF(s.rip));
	emit4(e, (uint32_t)rip);
	emit_mem(e, 0, true, (const uint8_t[]){ 0x83 }, 1, sub ? 5 : 0, CPU_OFF(instructions));
	emit1(e, (uint8_t)n);
}

#define TLB_ADDEND 8 /* disp8s of an entry's fields */
#define TLB_GPA 16
_Static_assert(sizeof(struct emu_tlb_entry) == 32 && offsetof(struct emu_tlb_entry, addend) == 8 &&
		       offsetof(struct emu_tlb_entry, gpa) == 16 && EMU_TLB_SIZE <= 65536 &&
		       (EMU_TLB_SIZE & (EMU_TLB_SIZE - 1)) == 0,
	       "TLB entry layout");

/* After a store through the write TLB entry at [r15 + `entry`] (`entry`: RDX or
 * RSI, the entry's offset) to the host address in RAX: emu_code_stored() (memory.h's
 * memory_code_store()): the page's version word, and if code was decoded from the page a new
 * version (rare: cold code). A store into the page of the block being run (self-modifying
 * code: that page has decoded code) also sets block_exit, as emu_tlb_fast() does, and for an
 * instruction the block goes on after (`stay`) ends the block after it, with RIP, the count
 * and the shadow exact; the flags are too: the caller's lookup sent the store to the slow path
 * when they would not be (emit_tlb_lookup()'s `page_check`). Clobbers RCX and RDI. */
static void emit_code_stored(struct compile *c, const struct emu_insn *insn, bool stay,
			     unsigned entry)
{
	struct emit *e = &c->e;
	uint8_t *cold, *back, *plain;

	emit_bytes(e, (const uint8_t[]){ 0x48, 0x89, 0xC1 }, 3); /* mov rcx, rax */
	emit_bytes(e, (const uint8_t[]){ 0x48, 0xC1, 0xE9, 0x0C }, 4); /* shr rcx, 12 */
	emit_load(e, true, RDI, CPU_OFF(tlb.code_word_bias)); /* mov rdi, [bias] */
	/* test byte [rdi + rcx * 4], MEMORY_CODE_DECODED */
	emit_bytes(e, (const uint8_t[]){ 0xF6, 0x04, 0x8F, MEMORY_CODE_DECODED }, 4);
	cold = emit_jump_fwd(e, CC_NZ);
	back = e->p;
	cold_swap(c);
	e = &c->e;
	patch_jump_to(c, cold, e->p);
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x3C, 0x8F }, 4); /* lea rdi, [rdi+rcx*4] */
	/* mov rcx, [r15 + entry + gpa]; cmp rcx, [block_page]; jne plain */
	emit_bytes(e, (const uint8_t[]){ 0x49, 0x8B, 0x4C, (uint8_t)(entry << 3 | 7), TLB_GPA }, 5);
	emit_mem(e, 0, true, (const uint8_t[]){ 0x3B }, 1, RCX, CPU_OFF(block_page));
	plain = emit_jump_fwd(e, CC_NZ);
	emit_mem(e, 0, false, (const uint8_t[]){ 0xC6 }, 1, 0, CPU_OFF(block_exit));
	emit1(e, 1);
	emit_call(e, c->jit, (uint64_t)(uintptr_t)memory_code_bump);
	if (stay) { /* retired, and out (a return with status 0, as after a handler) */
		emit_add_retired(e, c->pend_rip + insn->len, c->pend_n + 1, false);
		emit_shadow_clear(c);
		emit_jump(e, c->jit, 16, c->ret0);
	} else {
		emit_jump(e, c->jit, 16, c->jit->rx + (back - c->jit->rw));
	}
	/* Another page: the block goes on. Its chain may go on in its own page without comparing
	 * versions (emu_jit_link()), but not into the page written without the check. */
	patch_jump(e, plain);
	emit_call(e, c->jit, (uint64_t)(uintptr_t)memory_code_bump);
	emit_jump(e, c->jit, 16, c->jit->rx + (back - c->jit->rw));
	cold_swap(c);
	if (!stay) /* the block's own page: block_exit set, for the exit after it */
		c->exit_dirty = true;
}

/* An instruction `op` whose ModRM names host register `reg` (< 8; as a byte register, AL..BL
 * only) and the memory operand [rax] (a guest access through the TLB: its host address). */
static void emit_at_host(struct emit *e, uint8_t pfx, bool w, const uint8_t *op, unsigned oplen,
			 unsigned reg)
{
	if (pfx)
		emit1(e, pfx);
	if (w)
		emit1(e, 0x48);
	emit_bytes(e, op, oplen);
	emit1(e, (uint8_t)((reg & 7) << 3 | RAX));
}

/* A `size`-byte value at [rax] into `reg`, zero-extended to 64 bits. */
static void emit_host_load(struct emit *e, unsigned size, unsigned reg)
{
	if (size < 4)
		emit_at_host(e, 0, false, (const uint8_t[]){ 0x0F, size == 1 ? 0xB6 : 0xB7 }, 2,
			     reg);
	else
		emit_at_host(e, 0, size == 8, (const uint8_t[]){ 0x8B }, 1, reg);
}

/* The low `size` bytes of `reg` (RCX or RDX) to [rax]. */
static void emit_host_store(struct emit *e, unsigned size, unsigned reg)
{
	emit_at_host(e, size == 2 ? 0x66 : 0, size == 8,
		     (const uint8_t[]){ size == 1 ? 0x88 : 0x89 }, 1, reg);
}

/* The jumps to the slow path that emit_tlb_lookup() leaves for emit_slow_path(). */
struct tlb_jumps {
	uint8_t *slow[2];
	/* A read's lookup: where the inline path goes on with RAX = the host address (read-execute
	 * view), for the check of the entry's second way in cold code (NULL for a write). */
	const uint8_t *way2_back;
};

/* emu_tlb_fast() inline for `len` bytes at the linear address in RAX, QEMU-style: the tag of
 * the access's last byte's page (with R12's bits: user/valid for the CPL, or an impossible bit
 * while cpu->mem is not the paging layer) against the entry's tag, which only RAM pages have
 * without EMU_TLB_NOHOST (so a miss, MMIO and a page crossing all mismatch), then the entry's
 * addend: RAX = the host address, RDX = the entry's offset in its array. With `page_check`, a
 * write to the block's own page takes the slow path too (emit_code_stored() handles it
 * otherwise). Mismatches jump to the slow path. Clobbers RCX and the host's flags. The arrays'
 * addresses (R14, R15) and the index's mask (EBP) are in registers from the prologue on: the
 * lookups are ~27 % of the hot code's bytes on the disk path, and [rbx + rdx + disp32] twice
 * and an AND with an imm32 made each 11 bytes longer (47 bytes, now 36). */
static void emit_tlb_lookup(struct compile *c, bool write, unsigned len, bool page_check,
			    struct tlb_jumps *t)
{
	struct emit *e = &c->e;
	uint8_t base = write ? 0x17 : 0x16; /* SIB: [r15 + rdx] or [r14 + rdx] */

	emit_bytes(e, (const uint8_t[]){ 0x89, 0xC2 }, 2); /* mov edx, eax */
	emit_bytes(e, (const uint8_t[]){ 0xC1, 0xEA, 0x07 }, 3); /* shr edx, 12 - 5 */
	emit_bytes(e, (const uint8_t[]){ 0x21, 0xEA }, 2); /* and edx, ebp: (SIZE - 1) * 32 */
	if (len > 1) /* lea rcx, [rax + len - 1] */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x48, (uint8_t)(len - 1) }, 4);
	else /* mov rcx, rax */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x89, 0xC1 }, 3);
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x81, 0xE1, 0x00, 0xF0, 0xFF, 0xFF }, 7); /* and */
	emit_bytes(e, (const uint8_t[]){ 0x4C, 0x09, 0xE1 }, 3); /* or rcx, r12 */
	emit_bytes(e, (const uint8_t[]){ 0x49, 0x3B, 0x0C, base }, 4); /* cmp rcx, [r14|r15+rdx] */
	t->slow[0] = emit_jump_fwd(e, CC_NZ);
	t->slow[1] = NULL;
	if (page_check) { /* mov rcx, [r15 + rdx + gpa]; cmp rcx, [block_page]; je slow */
		emit_bytes(e, (const uint8_t[]){ 0x49, 0x8B, 0x4C, base, TLB_GPA }, 5);
		emit_mem(e, 0, true, (const uint8_t[]){ 0x3B }, 1, RCX, CPU_OFF(block_page));
		t->slow[1] = emit_jump_fwd(e, CC_E);
	}
	/* add rax, [r14|r15 + rdx + addend] */
	emit_bytes(e, (const uint8_t[]){ 0x49, 0x03, 0x44, base, TLB_ADDEND }, 5);
	t->way2_back = write ? NULL : c->jit->rx + (e->p - c->jit->rw);
	c->host_flags = false;
	c->uses_tlb = true;
}

/* At the start of a slow path (cold code): the lookup's jumps come here. A read's mismatch
 * first compares the tag in RCX with the entry's second way (mmu.c's `way2`: the page the last
 * fill at that index replaced) and on a match goes back to the inline path with that way's
 * addend: two hot pages sharing an index then cost a detour, not a handler call. Writes go
 * straight to the handler (the store's code check reads the first way's gpa). */
static void patch_slow_jumps(struct compile *c, const struct tlb_jumps *t)
{
	struct emit *e = &c->e;
	/* the read kind's second ways come first: from R14 (the read array) */
	int32_t way2 = CPU_OFF(tlb.way2) - CPU_OFF(tlb.read);
	uint8_t *miss;

	if (t->way2_back) {
		patch_jump_to(c, t->slow[0], e->p);
		emit_bytes(e, (const uint8_t[]){ 0x49, 0x3B, 0x8C, 0x16 }, 4); /* cmp rcx, [..] */
		emit4(e, (uint32_t)way2);
		miss = emit_jump_fwd(e, CC_NZ);
		emit_bytes(e, (const uint8_t[]){ 0x49, 0x03, 0x84, 0x16 }, 4); /* add rax, [..] */
		emit4(e, (uint32_t)(way2 + (int32_t)offsetof(struct emu_tlb_entry, addend)));
		emit_jump(e, c->jit, 16, t->way2_back);
		patch_jump(e, miss);
		patch_jump_to(c, t->slow[1], e->p);
		return;
	}
	for (unsigned i = 0; i < 2; i++)
		patch_jump_to(c, t->slow[i], e->p);
}

/* After a template's inline path: the slow path (cold code, jumping back to the end of the
 * inline path), which is the handler with RIP and the count exact. For an instruction that
 * stays in the block (`ends` false) both paths then meet with the same instructions pending
 * (the slow path takes back what it synced); one that ends the block wrote RIP and the count
 * on its inline path, and both meet with nothing pending. */
static void emit_slow_path(struct compile *c, const struct emu_insn *insn, bool last, bool ends,
			   const struct tlb_jumps *t)
{
	/* where the inline path goes on, in the read-execute view */
	const uint8_t *done = c->jit->rx + (c->e.p - c->jit->rw);
	unsigned pend_n = c->pend_n;
	uint64_t pend_rip = c->pend_rip;
	struct emit *e = &c->e;

	cold_swap(c);
	patch_slow_jumps(c, t);
	if (ends) {
		emit_handler_call(c, insn, last); /* syncs what is pending first */
	} else {
		if (pend_n) {
			emit_add_retired(e, pend_rip, pend_n, false);
			emit_shadow_clear(c);
		}
		c->pend_n = 0;
		emit_handler_call(c, insn, last);
		c->pend_n = pend_n;
		c->pend_rip = pend_rip;
		emit_add_retired(e, pend_rip + insn->len, pend_n + 1, true);
	}
	emit_jump(e, c->jit, 16, done);
	cold_swap(c);
	c->host_flags = false;
}

/* MOV/MOVZX/MOVSX/MOVSXD loads, MOV stores (of a register or an immediate) through the TLB
 * inline, else the handler. A store leaves the flags alone: exact if the block ends after it. */
static bool emit_memory(struct compile *c, const struct emu_insn *insn, const struct form *f,
			bool last)
{
	struct emit *e = &c->e;
	bool store = f->kind != FORM_LOAD;
	struct tlb_jumps t;

	if (!emit_address(c, insn, true))
		return false;
	emit_tlb_lookup(c, store, f->from ? f->from : f->size, false, &t);
	if (f->kind == FORM_STORE_IMM) { /* mov size [rax], imm */
		emit_at_host(e, f->size == 2 ? 0x66 : 0, f->size == 8,
			     (const uint8_t[]){ f->size == 1 ? 0xC6 : 0xC7 }, 1, 0);
		if (f->size == 1)
			emit1(e, (uint8_t)insn->imm);
		else if (f->size == 2)
			emit_bytes(e, &(uint16_t){ (uint16_t)insn->imm }, 2);
		else
			emit4(e, (uint32_t)insn->imm);
		emit_code_stored(c, insn, !last, RDX);
	} else if (store) {
		emit_load(e, true, RCX, GPR(insn->fast_b));
		emit_host_store(e, f->size, RCX);
		emit_code_stored(c, insn, !last, RDX);
	} else {
		if (f->from == 4 && f->sign) /* movsxd rax, dword [rax] */
			emit_at_host(e, 0, true, (const uint8_t[]){ 0x63 }, 1, RAX);
		else if (f->from < 4 && f->sign) /* movsx eax|rax, byte|word [rax] */
			emit_at_host(e, 0, f->size == 8,
				     (const uint8_t[]){ 0x0F, f->from == 1 ? 0xBE : 0xBF }, 2, RAX);
		else
			emit_host_load(e, f->from, RAX);
		emit_gpr_store(e, f->size, RAX, insn->fast_a);
	}
	emit_slow_path(c, insn, last, false, &t);
	return true;
}

/* ADD OR AND SUB XOR CMP TEST with a memory operand, as fast.c's alu_rm/alu_mr/alu_mi: the
 * operand through the TLB inline (the write TLB when the result goes back to memory: writable
 * implies readable), a in RCX, b in RDX (the entry's offset then kept in RSI); the record as
 * alu() leaves it where the flags are live. */
static bool emit_alu_mem(struct compile *c, const struct emu_insn *insn, const struct form *f,
			 bool record, bool last)
{
	static const uint8_t host_op[9] = { 0x01, 0x09, 0, 0, 0x21, 0x29, 0x31, 0x29, 0x21 };
	static const uint8_t kind[9] = {
		EMU_CC_ADD, EMU_CC_LOGIC, 0,	      0,	   EMU_CC_LOGIC,
		EMU_CC_SUB, EMU_CC_LOGIC, EMU_CC_SUB, EMU_CC_LOGIC
	};
	struct emit *e = &c->e;
	bool writes = f->op != 7 && f->op != OP_TEST, to_mem = writes && f->mem_a;
	struct tlb_jumps t;

	if (!emit_address(c, insn, true))
		return false;
	emit_tlb_lookup(c, to_mem, f->size, to_mem && !record && !last, &t);
	if (to_mem)
		emit_bytes(e, (const uint8_t[]){ 0x89, 0xD6 }, 2); /* mov esi, edx */
	if (f->mem_a) { /* a from memory, b a register or the immediate */
		emit_host_load(e, f->size, RCX);
		if (f->imm)
			emit_mov_imm(e, f->size, RDX, insn->imm);
		else
			emit_gpr_load(e, f->size, RDX, insn->fast_b);
	} else { /* a the register, b from memory */
		emit_host_load(e, f->size, RDX);
		emit_gpr_load(e, f->size, RCX, insn->fast_a);
	}
	if (record) {
		emit_store(e, true, RCX, CPU_OFF(cc.src1));
		emit_store(e, true, RDX, CPU_OFF(cc.src2));
	}
	emit_rr_sized(e, f->size, host_op[f->op], RDX, RCX);
	if (to_mem)
		emit_host_store(e, f->size, RCX);
	else if (writes)
		emit_gpr_store(e, f->size, RCX, insn->fast_a);
	if (record)
		emit_record_result_from(e, RCX, kind[f->op], f->size);
	if (to_mem)
		emit_code_stored(c, insn, !last, RSI);
	emit_slow_path(c, insn, last, false, &t);
	/* Either path left alu()'s record (the inline one only where it is live). */
	c->prod = !record		      ? PROD_UNKNOWN
		  : kind[f->op] == EMU_CC_ADD ? PROD_ADD
		  : kind[f->op] == EMU_CC_SUB ? PROD_SUB
					      : PROD_LOGIC;
	c->prod_size = f->size;
	return true;
}

static uint64_t jit_lazy_cf(const struct emu_cpu *cpu);

/* Whether emit_address() can form the instruction's address (a RIP-relative displacement
 * from the last synced RIP fits 32 bits). */
static bool address_fits(const struct compile *c, const struct emu_insn *insn)
{
	int64_t disp = (int64_t)insn->disp + (int64_t)(c->pend_rip + insn->len);

	return insn->base != EMU_REG_RIP || disp == (int32_t)disp;
}

/* INC DEC m, as fast.c's incdec_m(): with live flags the record keeps the guest's CF (in SIL
 * across the lookup), from the host's when the record is known here, else from
 * emu_lazy_cf() (another block's or a handler's producer: the kernel's preempt_count,
 * `decl %gs:...; je`). */
static bool emit_incdec_mem(struct compile *c, const struct emu_insn *insn, const struct form *f,
			    bool record, bool last)
{
	struct emit *e = &c->e;
	struct tlb_jumps t;

	if (!address_fits(c, insn))
		return false;
	if (record && emit_guest_flags(c)) {
		emit_bytes(e, (const uint8_t[]){ 0x40, 0x0F, 0x92, 0xC6 }, 4); /* setc sil */
	} else if (record && c->prod == PROD_INCDEC) { /* movzx esi, byte [carry]: its CF */
		emit_mem(e, 0, false, (const uint8_t[]){ 0x0F, 0xB6 }, 2, RSI, CPU_OFF(cc.carry));
	} else if (record) { /* esi = jit_lazy_cf(cpu) */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x89, 0xDF }, 3); /* mov rdi, rbx */
		emit_call(e, c->jit, (uint64_t)(uintptr_t)jit_lazy_cf);
		emit_bytes(e, (const uint8_t[]){ 0x89, 0xC6 }, 2); /* mov esi, eax */
	}
	emit_address(c, insn, true);
	emit_tlb_lookup(c, true, f->size, !record && !last, &t);
	emit_host_load(e, f->size, RCX);
	if (record) {
		emit_store(e, true, RCX, CPU_OFF(cc.src1));
		emit_mem(e, 0, true, (const uint8_t[]){ 0xC7 }, 1, 0, CPU_OFF(cc.src2));
		emit4(e, 1);
	}
	emit_rr_sized(e, f->size, 0xFF, f->op, RCX);
	emit_host_store(e, f->size, RCX);
	if (record) { /* the record, and mov [carry], sil */
		emit_record_result_from(e, RCX, f->op ? EMU_CC_DEC : EMU_CC_INC, f->size);
		emit_mem(e, 0x40, false, (const uint8_t[]){ 0x88 }, 1, RSI, CPU_OFF(cc.carry));
	}
	emit_code_stored(c, insn, !last, RDX);
	emit_slow_path(c, insn, last, false, &t);
	c->prod = record ? PROD_INCDEC : PROD_UNKNOWN; /* the handler records INC/DEC too */
	c->prod_size = f->size;
	return true;
}

/* RAX = RSP (+ `delta`): a stack address (SS has no base in 64-bit mode). */
static void emit_stack_address(struct emit *e, int8_t delta)
{
	emit_load(e, true, RAX, GPR(CPU_RSP));
	if (delta) /* lea rax, [rax + delta] */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x40, (uint8_t)delta }, 4);
}

/* add qword [RSP], delta */
static void emit_rsp_add(struct emit *e, int8_t delta)
{
	emit_mem(e, 0, true, (const uint8_t[]){ 0x83 }, 1, 0, GPR(CPU_RSP));
	emit1(e, (uint8_t)delta);
}

/* The block's last instruction retired on the inline path: RIP (already written, or += rel),
 * the count and the shadow. */
static void emit_retire_end(struct compile *c, bool add_rip, int32_t rel)
{
	struct emit *e = &c->e;

	if (add_rip) { /* add qword [rip], rel */
		emit_mem(e, 0, true, (const uint8_t[]){ 0x81 }, 1, 0, CPU_OFF(s.rip));
		emit4(e, (uint32_t)rel);
	}
	emit_mem(e, 0, true, (const uint8_t[]){ 0x83 }, 1, 0, CPU_OFF(instructions));
	emit1(e, (uint8_t)(c->pend_n + 1));
	emit_shadow_clear(c);
}

static void emit_exit_to(struct compile *c, int64_t target);
static void emit_branch_before_handler(struct compile *c);
static void emit_branch_after_handler(struct compile *c, const struct emu_insn *insn, bool cond);

/* CALL rel32's slow path (cold code), as compile_block() runs a relative branch's handler: the
 * exit its new RIP names (the block ends there). */
static void emit_call_slow_path(struct compile *c, const struct emu_insn *insn, bool last,
				const struct tlb_jumps *t)
{
	cold_swap(c);
	patch_slow_jumps(c, t);
	emit_branch_before_handler(c);
	emit_handler_call(c, insn, last);
	emit_branch_after_handler(c, insn, false);
	cold_swap(c);
	c->host_flags = false;
}

/* ---- return prediction (struct emu_cpu's ret_ring) ---- */

#define RET_RING_MASK (EMU_RET_RING * 64 - 1)
_Static_assert(sizeof(struct emu_ret_pred) == 64 && (EMU_RET_RING & (EMU_RET_RING - 1)) == 0 &&
		       offsetof(struct emu_ret_pred, la) == 32 &&
		       offsetof(struct emu_ret_pred, record) == 40 &&
		       offsetof(struct emu_ret_pred, gen) == 44 &&
		       sizeof(((struct emu_ret_pred *)0)->link) == sizeof(struct jit_target),
	       "the return ring's layout");

/* An instruction `op` (`oplen` bytes) whose ModRM names host register `reg` (< 8) and the
 * memory operand [rbx + rax + disp]: a field of ret_ring's entry at the byte offset in RAX. */
static void emit_ring_mem(struct emit *e, bool w, const uint8_t *op, unsigned oplen, unsigned reg,
			  int32_t disp)
{
	if (w || reg >= 8)
		emit1(e, (uint8_t)(0x40 | (w ? 8 : 0) | (reg >= 8 ? 4 : 0)));
	emit_bytes(e, op, oplen);
	emit_bytes(e, (const uint8_t[]){ (uint8_t)(0x84 | ((reg & 7) << 3)), 0x03 }, 2);
	emit4(e, (uint32_t)(CPU_OFF(ret_ring) + disp));
}

/* A compiled CALL, after its push, while RIP is still the block's (plus `next` the return
 * address): RCX = the return address, ESI = JIT_RET_LINK | where the return site's link is,
 * the link (a struct jit_target as four MOVABS immediates in RDX, R8, R9, R10, which
 * emu_jit_link() patches: in the instruction stream, they cost no load that misses the
 * caches, as a record in memory did after the callee's code had evicted it), never linked
 * yet, and a call of the push stub (jit_ret_stubs()), shared by all CALLs. */
static void emit_ret_push(struct compile *c, int64_t next)
{
	struct emit *e = &c->e;
	static const uint8_t mov[4][2] = {
		{ 0x48, 0xBA }, { 0x49, 0xB8 }, { 0x49, 0xB9 }, { 0x49, 0xBA }
	};
	const uint64_t never[4] = { 0, JIT_NEVER, JIT_NEVER, 0 };

	emit_load(e, true, RCX, CPU_OFF(s.rip));
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x89 }, 3); /* lea rcx, [rcx + next] */
	emit4(e, (uint32_t)next);
	emit1(e, 0xBE); /* mov esi, JIT_RET_LINK | the link's offset (after these 5 bytes) */
	emit4(e, JIT_RET_LINK | (uint32_t)(e->p + 4 - c->jit->rw));
	for (unsigned i = 0; i < 4; i++) {
		emit_bytes(e, mov[i], 2);
		emit8(e, never[i]);
	}
	emit1(e, 0xE8); /* call stub_ret_push */
	emit4(e,
	      (uint32_t)(int32_t)(c->jit->stub_ret_push - (c->jit->rx + (e->p + 4 - c->jit->rw))));
}

/* PUSH r64, POP r64, CALL rel32, RET as fast.c's handlers: the stack slot through the TLB
 * inline; PUSH reads its register before RSP moves, POP writes RSP before its register (POP
 * RSP keeps the popped value); CALL and RET end the block with RIP written. */
static bool emit_stack(struct compile *c, const struct emu_insn *insn, const struct form *f,
		       bool last)
{
	struct emit *e = &c->e;
	bool push = f->kind == FORM_PUSH || f->kind == FORM_CALL_REL;
	bool ends = f->kind == FORM_CALL_REL || f->kind == FORM_RET;
	int64_t next = (int64_t)(c->pend_rip + insn->len), target = next + (int64_t)insn->imm;
	struct tlb_jumps t;

	if (ends && (!last || target != (int32_t)target))
		return false;
	emit_stack_address(e, push ? -8 : 0);
	emit_tlb_lookup(c, push, 8, false, &t);
	switch (f->kind) {
	case FORM_PUSH: /* the store, RSP, then the code check (which may end the block) */
		emit_load(e, true, RCX, GPR(insn->fast_a));
		emit_host_store(e, 8, RCX);
		emit_rsp_add(e, -8);
		emit_code_stored(c, insn, !last, RDX);
		break;
	case FORM_POP:
		emit_host_load(e, 8, RCX);
		emit_rsp_add(e, 8);
		emit_store(e, true, RCX, GPR(insn->fast_a));
		break;
	case FORM_CALL_REL: /* the return address: RIP + next */
		emit_load(e, true, RCX, CPU_OFF(s.rip));
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x89 }, 3); /* lea rcx, [rcx + next] */
		emit4(e, (uint32_t)next);
		emit_host_store(e, 8, RCX);
		emit_code_stored(c, insn, false, RDX);
		emit_rsp_add(e, -8);
		if (c->chain)
			emit_ret_push(c, next);
		emit_retire_end(c, true, (int32_t)target);
		emit_exit_to(c, (int64_t)c->insn_off + insn->len + (int64_t)insn->imm);
		emit_call_slow_path(c, insn, last, &t);
		c->pend_n = 0;
		c->pend_rip = 0;
		return true;
	default: /* RET */
		emit_host_load(e, 8, RCX);
		emit_rsp_add(e, 8);
		emit_store(e, true, RCX, CPU_OFF(s.rip));
		emit_retire_end(c, false, 0);
		break;
	}
	emit_slow_path(c, insn, last, ends, &t);
	if (ends) {
		c->pend_n = 0;
		c->pend_rip = 0;
	}
	return true;
}

/* SHL SHR SAR by a non-zero count where their flags are dead (else emit_shift_flags()). */
static void emit_shift(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	struct emit *e = &c->e;
	bool w = f->size == 8;

	/* a 16-bit operand: the whole register, the host's 66-prefixed shift keeps bits 16-63 */
	emit_load(e, f->size != 4, RAX, GPR(insn->fast_a));
	emit_rr(e, f->size == 2 ? 0x66 : 0, w, (const uint8_t[]){ 0xC1 }, 1, f->op, RAX);
	emit1(e, (uint8_t)f->count);
	emit_store(e, true, RAX, GPR(insn->fast_a));
	c->host_flags = false;
	c->prod = PROD_UNKNOWN;
}

/* SHL SHR SAR by CL where the flags are dead: the host's shift by the guest's CL, which masks
 * the count as the guest does (a count of 0 changes no flag; a 32-bit operand is still
 * zero-extended, as shift_fixed() writes it). ~16 per 4 KiB QD32 read request went through
 * their handlers. */
static void emit_shift_cl(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	struct emit *e = &c->e;
	bool w = f->size == 8;

	/* movzx ecx, byte [guest rcx]; mov rax, [a]; shl|shr|sar rax, cl; mov [a], rax */
	emit_mem(e, 0, false, (const uint8_t[]){ 0x0F, 0xB6 }, 2, RCX, GPR(CPU_RCX));
	emit_load(e, w, RAX, GPR(insn->fast_a));
	emit_rr(e, 0, w, (const uint8_t[]){ 0xD3 }, 1, f->op, RAX);
	emit_store(e, true, RAX, GPR(insn->fast_a));
	c->host_flags = false;
	c->prod = PROD_UNKNOWN;
}

/* The six arithmetic flags, worked out in `reg`, into RFLAGS: no flag operation pending
 * (cc.op EMU_CC_NONE), nothing known of the host's flags or the producer. */
static void emit_arith_flags_store(struct compile *c, unsigned reg)
{
	struct emit *e = &c->e;

	emit_mem(e, 0, true, (const uint8_t[]){ 0x81 }, 1, 4, CPU_OFF(s.rflags)); /* and */
	emit4(e, (uint32_t) ~(uint32_t)EMU_FLAGS_ARITH);
	emit_mem(e, 0, true, (const uint8_t[]){ 0x09 }, 1, reg, CPU_OFF(s.rflags)); /* or */
	emit_mem(e, 0, false, (const uint8_t[]){ 0xC6 }, 1, 0, CPU_OFF(cc.op)); /* EMU_CC_NONE */
	emit1(e, EMU_CC_NONE);
	c->host_flags = false;
	c->prod = PROD_RFLAGS;
}

/* After SHL (op 4), SHR (5) or SAR (7) by 1..top in RAX (the result), with the host's flags in
 * RDX (pushfq; pop rdx) and, for SHR, the operand's sign in RSI: CF PF ZF SF from the host,
 * OF the result's sign ^ CF (SHL), the operand's sign (SHR) or 0 (SAR), AF 0, into RFLAGS. */
static void emit_shift_flags_store(struct compile *c, unsigned op, uint8_t top)
{
	struct emit *e = &c->e;

	emit_rr(e, 0, false, (const uint8_t[]){ 0x81 }, 1, 4, RDX); /* and edx, CF PF ZF SF */
	emit4(e, EMU_FLAG_CF | EMU_FLAG_PF | EMU_FLAG_ZF | EMU_FLAG_SF);
	if (op == 4) { /* SHL: OF = the result's sign ^ CF */
		emit_rr(e, 0, true, (const uint8_t[]){ 0x89 }, 1, RAX, RSI); /* mov rsi, rax */
		emit_rr(e, 0, true, (const uint8_t[]){ 0xC1 }, 1, 5, RSI); /* shr rsi, top */
		emit1(e, top);
		emit_rr(e, 0, false, (const uint8_t[]){ 0x31 }, 1, RDX, RSI); /* xor esi, edx */
		emit_rr(e, 0, false, (const uint8_t[]){ 0x83 }, 1, 4, RSI); /* and esi, 1 */
		emit1(e, 1);
	}
	if (op != 7) { /* shl esi, 11; or edx, esi */
		emit_rr(e, 0, false, (const uint8_t[]){ 0xC1 }, 1, 4, RSI);
		emit1(e, 11);
		emit_rr(e, 0, false, (const uint8_t[]){ 0x09 }, 1, RSI, RDX);
	}
	emit_arith_flags_store(c, RDX);
}

/* SHL SHR SAR with their flags, as fast.c's shift_fixed(): all six replaced (AF 0), CF ZF SF
 * PF from the host's shift (the count is 1..width-1), OF computed for every count. */
static void emit_shift_flags(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	struct emit *e = &c->e;
	bool w = f->size == 8;
	uint8_t top = (uint8_t)(8 * f->size - 1);

	emit_load(e, f->size != 4, RAX, GPR(insn->fast_a)); /* 16-bit: as emit_shift() */
	if (f->op == 5) { /* SHR: OF = the operand's sign; mov rsi, rax; shr rsi, top */
		emit_rr(e, 0, true, (const uint8_t[]){ 0x89 }, 1, RAX, RSI);
		emit_rr(e, 0, true, (const uint8_t[]){ 0xC1 }, 1, 5, RSI);
		emit1(e, top);
		if (f->size == 2) /* and esi, 1: bits 16-63 are the register's */
			emit_bytes(e, (const uint8_t[]){ 0x83, 0xE6, 0x01 }, 3);
	}
	emit_rr(e, f->size == 2 ? 0x66 : 0, w, (const uint8_t[]){ 0xC1 }, 1, f->op, RAX);
	emit1(e, (uint8_t)f->count);
	emit_store(e, true, RAX, GPR(insn->fast_a));
	emit_bytes(e, (const uint8_t[]){ 0x9C, 0x5A }, 2); /* pushfq; pop rdx */
	emit_shift_flags_store(c, f->op, top);
}

/* ROL ROR by a non-zero count, as alu.c's emu_shift(): only CF and OF change, so with live
 * flags the recorded ones are made exact first (emu_flags_sync()); CF is the bit rotated in,
 * OF (defined for a count of 1) the same formula as the handler's for every count. */
static void emit_rotate(struct compile *c, const struct emu_insn *insn, const struct form *f,
			bool live)
{
	struct emit *e = &c->e;
	bool ror = f->op == 1;
	uint8_t top = (uint8_t)(8 * f->size - 1);

	if (live) { /* emu_flags_sync(cpu) */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x89, 0xDF }, 3); /* mov rdi, rbx */
		emit_call(e, c->jit, (uint64_t)(uintptr_t)emu_flags_sync);
	}
	emit_shift(c, insn, f); /* the same group-2 instruction on RAX, stored back */
	if (!live)
		return;
	emit_rr(e, 0, true, (const uint8_t[]){ 0x89 }, 1, RAX, RCX); /* mov rcx, rax */
	emit_rr(e, 0, true, (const uint8_t[]){ 0xC1 }, 1, 5, RCX); /* shr rcx, top: the sign */
	emit1(e, top);
	emit_rr(e, 0, true, (const uint8_t[]){ 0x89 }, 1, RAX, RDX); /* mov rdx, rax */
	if (ror) { /* shr rdx, top - 1: the bit below the sign */
		emit_rr(e, 0, true, (const uint8_t[]){ 0xC1 }, 1, 5, RDX);
		emit1(e, (uint8_t)(top - 1));
	}
	emit_rr(e, 0, false, (const uint8_t[]){ 0x83 }, 1, 4, RDX); /* and edx, 1 */
	emit1(e, 1);
	/* ROL: CF = bit 0 (EDX), OF = sign ^ CF; ROR: CF = sign (ECX), OF = sign ^ bit below */
	if (ror) { /* xor edx, ecx; shl edx, 11; or ecx, edx */
		emit_rr(e, 0, false, (const uint8_t[]){ 0x31 }, 1, RCX, RDX);
		emit_rr(e, 0, false, (const uint8_t[]){ 0xC1 }, 1, 4, RDX);
		emit1(e, 11);
		emit_rr(e, 0, false, (const uint8_t[]){ 0x09 }, 1, RDX, RCX);
	} else { /* xor ecx, edx; shl ecx, 11; or ecx, edx */
		emit_rr(e, 0, false, (const uint8_t[]){ 0x31 }, 1, RDX, RCX);
		emit_rr(e, 0, false, (const uint8_t[]){ 0xC1 }, 1, 4, RCX);
		emit1(e, 11);
		emit_rr(e, 0, false, (const uint8_t[]){ 0x09 }, 1, RDX, RCX);
	}
	emit_mem(e, 0, true, (const uint8_t[]){ 0x81 }, 1, 4, CPU_OFF(s.rflags)); /* and */
	emit4(e, (uint32_t) ~(uint32_t)(EMU_FLAG_CF | EMU_FLAG_OF));
	emit_mem(e, 0, true, (const uint8_t[]){ 0x09 }, 1, RCX, CPU_OFF(s.rflags)); /* or */
}

/* NOT: no flag changes, and the host's flags survive (mov, not, mov). */
static void emit_not(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	struct emit *e = &c->e;
	bool w = f->size == 8;

	emit_load(e, w, RAX, GPR(insn->fast_a));
	emit_rr(e, 0, w, (const uint8_t[]){ 0xF7 }, 1, 2, RAX);
	emit_store(e, true, RAX, GPR(insn->fast_a));
}

/* NEG: fast.c records SUB 0 - a. */
static void emit_neg(struct compile *c, const struct emu_insn *insn, const struct form *f,
		     bool record)
{
	struct emit *e = &c->e;
	bool w = f->size == 8;

	emit_load(e, w, RCX, GPR(insn->fast_a));
	emit_bytes(e, (const uint8_t[]){ 0x31, 0xC0 }, 2); /* xor eax, eax */
	if (record) {
		emit_store(e, true, RAX, CPU_OFF(cc.src1));
		emit_store(e, true, RCX, CPU_OFF(cc.src2));
	}
	emit_rr(e, 0, w, (const uint8_t[]){ 0x29 }, 1, RCX, RAX); /* sub rax, rcx */
	emit_store(e, true, RAX, GPR(insn->fast_a));
	if (record) {
		emit_record_result(e, EMU_CC_SUB, f->size);
	}
	c->host_flags = true;
	c->prod = PROD_SUB;
	c->prod_size = f->size;
}

/* The guest's CF for compiled code that cannot work it out (the record's operation is not
 * known when compiling). */
static uint64_t jit_lazy_cf(const struct emu_cpu *cpu)
{
	return emu_lazy_cf(cpu);
}

/* INC DEC: with live flags, the record keeps the guest's CF, from the host's when the record
 * is known here, else from emu_lazy_cf(); the host's CF is then set to it before the host's
 * INC/DEC (which keeps it), so the host's flags are the guest's after it. */
static bool emit_incdec(struct compile *c, const struct emu_insn *insn, const struct form *f,
			bool record)
{
	struct emit *e = &c->e;
	bool w = f->size == 8, known = true;

	if (record) {
		known = emit_guest_flags(c);
		if (known) {
			emit_bytes(e, (const uint8_t[]){ 0x0F, 0x92, 0xC2 }, 3); /* setc dl */
		} else if (c->prod == PROD_INCDEC) { /* movzx edx, byte [carry]: its CF */
			emit_mem(e, 0, false, (const uint8_t[]){ 0x0F, 0xB6 }, 2, RDX,
				 CPU_OFF(cc.carry));
		} else { /* edx = jit_lazy_cf(cpu) */
			emit_bytes(e, (const uint8_t[]){ 0x48, 0x89, 0xDF }, 3); /* mov rdi, rbx */
			emit_call(e, c->jit, (uint64_t)(uintptr_t)jit_lazy_cf);
			emit_bytes(e, (const uint8_t[]){ 0x89, 0xC2 }, 2); /* mov edx, eax */
		}
	}
	emit_load(e, w, RAX, GPR(insn->fast_a));
	if (record) { /* plain moves: the host's CF survives them */
		emit_store(e, true, RAX, CPU_OFF(cc.src1));
		emit_mem(e, 0, true, (const uint8_t[]){ 0xC7 }, 1, 0, CPU_OFF(cc.src2));
		emit4(e, 1);
	}
	if (!known) /* bt edx, 0: the host's CF = the guest's */
		emit_bytes(e, (const uint8_t[]){ 0x0F, 0xBA, 0xE2, 0x00 }, 4);
	emit_rr(e, 0, w, (const uint8_t[]){ 0xFF }, 1, f->op, RAX);
	emit_store(e, true, RAX, GPR(insn->fast_a));
	if (record) {
		emit_record_result(e, f->op ? EMU_CC_DEC : EMU_CC_INC, f->size);
		emit_mem(e, 0, false, (const uint8_t[]){ 0x88 }, 1, RDX, CPU_OFF(cc.carry));
	}
	c->host_flags = record;
	c->prod = record ? PROD_INCDEC : PROD_UNKNOWN;
	c->prod_size = f->size;
	return true;
}

static void emit_imul(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	struct emit *e = &c->e;
	bool w = f->size == 8;

	if (f->imm) { /* imul rax, [b], imm32 */
		emit_mem(e, 0, w, (const uint8_t[]){ 0x69 }, 1, RAX, GPR(insn->fast_b));
		emit4(e, (uint32_t)insn->imm);
	} else { /* mov rax, [a]; imul rax, [b] */
		emit_load(e, w, RAX, GPR(insn->fast_a));
		emit_mem(e, 0, w, (const uint8_t[]){ 0x0F, 0xAF }, 2, RAX, GPR(insn->fast_b));
	}
	emit_store(e, true, RAX, GPR(insn->fast_a));
	c->host_flags = false;
	c->prod = PROD_UNKNOWN;
}

/* After emit_imul() (the product in RAX, the host's CF = OF = overflow) where the flags are
 * read: as fast.c's imul2(), SF ZF PF of the result, CF = OF = overflow, AF 0, written to
 * RFLAGS with no record. IMUL with live flags, ~5 per 4 KiB QD32 read request, went through
 * its handler. */
static void emit_imul_flags(struct compile *c, const struct form *f)
{
	struct emit *e = &c->e;

	emit_bytes(e, (const uint8_t[]){ 0x0F, 0x90, 0xC2 }, 3); /* seto dl */
	emit_rr(e, 0, f->size == 8, (const uint8_t[]){ 0x85 }, 1, RAX, RAX); /* test rax, rax */
	emit_bytes(e, (const uint8_t[]){ 0x9C, 0x59 }, 2); /* pushfq; pop rcx */
	emit_rr(e, 0, false, (const uint8_t[]){ 0x81 }, 1, 4, RCX); /* and ecx, PF ZF SF */
	emit4(e, EMU_FLAG_PF | EMU_FLAG_ZF | EMU_FLAG_SF);
	emit_bytes(e, (const uint8_t[]){ 0x0F, 0xB6, 0xD2 }, 3); /* movzx edx, dl */
	emit_bytes(e, (const uint8_t[]){ 0x69, 0xD2 }, 2); /* imul edx, edx, CF | OF */
	emit4(e, EMU_FLAG_CF | EMU_FLAG_OF);
	emit_rr(e, 0, false, (const uint8_t[]){ 0x09 }, 1, RDX, RCX); /* or ecx, edx */
	emit_arith_flags_store(c, RCX);
}

/* FORM_ALU_HI: as emit_alu() with an immediate, on the byte of AH..BH (the second byte of
 * RAX..RBX in struct cpu_state). */
static void emit_alu_high_byte(struct compile *c, const struct emu_insn *insn, const struct form *f,
			       bool record)
{
	static const uint8_t host_op[9] = { 0x01, 0x09, 0, 0, 0x21, 0x29, 0x31, 0x29, 0x21 };
	static const uint8_t kind[9] = {
		EMU_CC_ADD, EMU_CC_LOGIC, 0,	      0,	   EMU_CC_LOGIC,
		EMU_CC_SUB, EMU_CC_LOGIC, EMU_CC_SUB, EMU_CC_LOGIC
	};
	struct emit *e = &c->e;
	int32_t at = GPR(insn->rm & 3) + 1;

	emit_mem(e, 0, false, (const uint8_t[]){ 0x0F, 0xB6 }, 2, RAX, at); /* movzx eax, [at] */
	emit_mov_imm(e, 1, RCX, insn->imm);
	if (record) {
		emit_store(e, true, RAX, CPU_OFF(cc.src1));
		emit_store(e, true, RCX, CPU_OFF(cc.src2));
	}
	emit_rr_sized(e, 1, host_op[f->op], RCX, RAX);
	if (f->op != 7 && f->op != OP_TEST)
		emit_mem(e, 0, false, (const uint8_t[]){ 0x88 }, 1, RAX, at); /* mov [at], al */
	if (record)
		emit_record_result(e, kind[f->op], 1);
	c->host_flags = true;
	c->prod = kind[f->op] == EMU_CC_ADD   ? PROD_ADD
		  : kind[f->op] == EMU_CC_SUB ? PROD_SUB
					      : PROD_LOGIC;
	c->prod_size = 1;
}

/* BSWAP r32 (zero-extended) or r64; the flags stay. */
static void emit_bswap(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	struct emit *e = &c->e;

	emit_load(e, f->size == 8, RAX, GPR(insn->fast_a));
	if (f->size == 8)
		emit1(e, 0x48);
	emit_bytes(e, (const uint8_t[]){ 0x0F, 0xC8 }, 2); /* bswap eax|rax */
	emit_store(e, true, RAX, GPR(insn->fast_a));
}

static void emit_movx(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	struct emit *e = &c->e;
	bool w = f->size == 8 && f->sign;

	if (f->from == 4) /* movsxd rax, [b] */
		emit_mem(e, 0, true, (const uint8_t[]){ 0x63 }, 1, RAX, GPR(insn->fast_b));
	else /* movzx/movsx eax|rax, byte|word [b] */
		emit_mem(e, 0, w, (const uint8_t[]){ 0x0F, (uint8_t)(insn->opcode) }, 2, RAX,
			 GPR(insn->fast_b));
	if (f->size == 2) /* mov [a], ax: the rest of the register stays */
		emit_mem(e, 0x66, false, (const uint8_t[]){ 0x89 }, 1, RAX, GPR(insn->fast_a));
	else
		emit_store(e, true, RAX, GPR(insn->fast_a));
}

/* CMOVcc r, r: a 32-bit destination is zero-extended whether or not it moves. */
static void emit_cmov(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	struct emit *e = &c->e;
	bool w = f->size == 8;

	emit_load(e, w, RAX, GPR(insn->fast_a));
	emit_mem(e, 0, w, (const uint8_t[]){ 0x0F, (uint8_t)(0x40 | f->op) }, 2, RAX,
		 GPR(insn->fast_b));
	emit_store(e, true, RAX, GPR(insn->fast_a));
}

static void emit_setcc(struct compile *c, const struct emu_insn *insn, const struct form *f)
{
	emit_mem(&c->e, 0, false, (const uint8_t[]){ 0x0F, (uint8_t)(0x90 | f->op) }, 2, 0,
		 GPR(insn->fast_a));
}

/* A condition whose producer is not known here (another block's, a handler's): the host's ZF
 * clear when condition `cc` holds, from emu_fast_cond(), which cannot fault (RIP and the count
 * need no sync). Afterwards `*cc` is the host condition to use (NZ) and the host's flags are
 * not the guest's. On the disk path ~40 Jcc per 4 KiB request went through their handler for
 * this (a sync, the call, the branch worked out again from RIP). */
static void emit_cond_call(struct compile *c, unsigned *cc)
{
	struct emit *e = &c->e;

	emit_bytes(e, (const uint8_t[]){ 0x48, 0x89, 0xDF }, 3); /* mov rdi, rbx */
	emit1(e, 0xBE); /* mov esi, cc */
	emit4(e, *cc);
	emit_bytes(e, (const uint8_t[]){ 0x48, 0xB8 }, 2); /* mov rax, emu_fast_cond */
	emit8(e, (uint64_t)(uintptr_t)emu_fast_cond);
	emit_bytes(e, (const uint8_t[]){ 0xFF, 0xD0 }, 2); /* call rax */
	emit_bytes(e, (const uint8_t[]){ 0x85, 0xC0 }, 2); /* test eax, eax */
	*cc = CC_NZ;
	c->host_flags = false;
}

/* SETcc m8 (fast.c's setcc_m): the condition into R8B first (from what is known of the flags,
 * else emu_fast_cond()), as the TLB lookup clobbers the host's flags, then the byte stored
 * through the TLB inline, else the handler, which works the condition out again from the
 * guest's flags (exact here: a memory form keeps the flags before it live). The flags stay as
 * they were, and so does what is known of them. In the guest's 1 MiB O_DIRECT requests,
 * __bio_try_merge_page()'s `*same_page = ...` (`sete (%r8)`) runs once per page: ~255 times
 * per request, 42 % of the compiled code's handler calls (each also cost the `je` after it an
 * emu_fast_cond() call, the producer being unknown after a handler). */
static bool emit_setcc_mem(struct compile *c, const struct emu_insn *insn, const struct form *f,
			   bool last)
{
	struct emit *e = &c->e;
	enum producer prod = c->prod;
	unsigned cc = f->op;
	struct tlb_jumps t;

	if (!emit_guest_flags_for(c, cc))
		emit_cond_call(c, &cc);
	emit_bytes(e, (const uint8_t[]){ 0x41, 0x0F, (uint8_t)(0x90 | cc), 0xC0 }, 4); /* r8b */
	if (!emit_address(c, insn, true))
		return false;
	emit_tlb_lookup(c, true, 1, false, &t);
	emit_bytes(e, (const uint8_t[]){ 0x44, 0x88, 0x00 }, 3); /* mov [rax], r8b */
	emit_code_stored(c, insn, !last, RDX);
	emit_slow_path(c, insn, last, false, &t);
	c->prod = prod;
	return true;
}

/* ---- exits and chaining ---- */

/* No constant target: what emit_exit_to() gets for a block that ends otherwise. */
#define EXIT_NONE INT64_MIN

/* call stub; jmp rcx: the stub (check or lookup, jit_stubs()) returns where to go, the
 * successor's chain entry or the miss, and each exit jumps there on its own, so that the
 * host predicts each one's target from its own history (one jump shared by every RET and
 * every exit to another page was 4-7 % of the compiled code's samples). */
static void emit_find(struct compile *c, const uint8_t *stub)
{
	emit_bytes(&c->e, (const uint8_t[]){ 0xE8 }, 1);
	emit4(&c->e, (uint32_t)(int32_t)(stub - (c->jit->rx + (c->e.p + 4 - c->jit->rw))));
	emit_bytes(&c->e, (const uint8_t[]){ 0xFF, 0xE1 }, 2); /* jmp rcx */
}

/* The record of a linkable exit (jit.h, emu_jit_link()), after its stub: the successor's
 * guest-physical address (| JIT_FULL_ENTRY) for an exit in the block's page, JIT_XPAGE_CHECK
 * for one to another page; where the exit's jump keeps its rel32; the next record linked to
 * the same successor (its list of incoming exits, 0 at the end); and for JIT_XPAGE_CHECK
 * where the exit's check is and the offsets in it of what emu_jit_link() fills in. */
struct jit_link_rec {
	uint64_t gpa;
	uint32_t jump; /* buffer offset of the rel32 */
	uint32_t next; /* buffer offset of the next record, 0: none */
	uint32_t check; /* JIT_XPAGE_CHECK: buffer offset of the check (emit_exit_xpage()) */
	uint8_t gen_imm, gen_disp, cpl_cc, pad; /* JIT_XPAGE_CHECK: their offsets in it */
};
/* mov dword [r13 + jit_exit], imm32 (8 bytes); jmp rel32 (5): the stub before the record */
#define JIT_STUB_LEN 13u

/* What a linkable exit's jump and checks (the rel32s at `to_stub`) go to while it is not
 * linked: jit_exit names the record after it, for emu_jit_link(), and the block returns with
 * status 0. In the cold region (or, for an exit in cold code, right there). */
static void emit_exit_stub(struct compile *c, const struct jit_link_rec *rec,
			   uint8_t *const *to_stub, unsigned n)
{
	bool swap = !c->in_cold;
	struct emit *e;
	uint8_t *stub;

	if (swap)
		cold_swap(c);
	e = &c->e;
	stub = e->p;
	emit_mem(e, 0, false, (const uint8_t[]){ 0xC7 }, 1, 0, CPU_OFF(jit_exit));
	emit4(e, (uint32_t)(e->p + 4 + 5 - c->jit->rw));
	emit_jump(e, c->jit, 16, c->ret0);
	if (!e->overflow && e->p - stub != JIT_STUB_LEN)
		e->overflow = true; /* never: fixed sizes */
	emit_bytes(e, rec, sizeof(*rec));
	for (unsigned i = 0; i < n; i++)
		patch_jump_to(c, to_stub[i], stub);
	if (swap)
		cold_swap(c);
}

/* The exit of a jump to another page (jit.h): the successor's linear address, TLB generation
 * (of a global page: the global one) and CPL bit are immediates of the check, which
 * emu_jit_link() fills in when it links the exit's jump to the successor's chain entry (the
 * full one, with the version check); a mismatch goes to the stub. Never linked, the jump
 * goes to the stub too. (It called the shared check stub before, which loaded a record kept
 * with the code, and jumped through RCX: ~15 instructions, a call, a return and an indirect
 * jump on every way out to another page, and data loads from lines of code.) */
static void emit_exit_xpage(struct compile *c)
{
	struct emit *e = &c->e;
	struct jit_link_rec rec = { .gpa = JIT_XPAGE_CHECK,
				    .check = (uint32_t)(e->p - c->jit->rw) };
	uint8_t *check = e->p, *to_stub[4];

	emit_bytes(e, (const uint8_t[]){ 0x48, 0xB8 }, 2); /* mov rax, la */
	emit8(e, JIT_NEVER);
	/* cmp [rip], rax */
	emit_mem(e, 0, true, (const uint8_t[]){ 0x39 }, 1, RAX, CPU_OFF(s.rip));
	to_stub[0] = emit_jump_fwd(e, CC_NZ);
	rec.gen_imm = (uint8_t)(e->p + 2 - check); /* mov rax, generation */
	emit_bytes(e, (const uint8_t[]){ 0x48, 0xB8 }, 2);
	emit8(e, JIT_NEVER);
	rec.gen_disp = (uint8_t)(e->p + 3 - check); /* cmp [rbx + disp32], rax */
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x39, 0x83 }, 3);
	emit4(e, (uint32_t)CPU_OFF(tlb.generation));
	to_stub[1] = emit_jump_fwd(e, CC_NZ);
	emit_mem(e, 0, false, (const uint8_t[]){ 0x83 }, 1, 7, CPU_OFF(cpl)); /* cmp [cpl], 3 */
	emit1(e, 3);
	rec.cpl_cc = (uint8_t)(e->p + 1 - check); /* jne (CPL 3) or je (not) */
	to_stub[2] = emit_jump_fwd(e, CC_NZ);
	to_stub[3] = emit_jump_fwd(e, 16);
	if (!to_stub[3])
		return;
	rec.jump = (uint32_t)(to_stub[3] - c->jit->rw);
	emit_exit_stub(c, &rec, to_stub, 4);
}

/* Leave the block towards the instruction at page offset `target` of the block's page
 * (outside [0, 4096): another page; EXIT_NONE: not known when compiling), with RIP, the count
 * and the shadow exact: a return with status 0, or for a chained block a jump that
 * emu_jit_link() can point at the successor's chain entry (jit.h). Until it does, the jump
 * goes to a stub in the cold region that sets cpu->jit_exit to the exit's record (struct
 * jit_link_rec: in the block's page, the successor's guest-physical address, which
 * emu_jit_link() checks) and returns; once linked, the exit is only the jump (it wrote
 * jit_exit each time before: a 10-byte store on every block's way out), and the successor
 * keeps it in its list of incoming exits, which emu_jit_unchain() points back at their
 * stubs. In another page, a check comes first (emit_exit_xpage()). A block that stopped
 * early (block_exit) returns. */
static void emit_exit_to(struct compile *c, int64_t target)
{
	struct emit *e = &c->e;
	struct jit_link_rec rec = { 0 };
	uint8_t *jump;

	if (!c->chain || target == EXIT_NONE) {
		emit_jump(e, c->jit, 16, c->ret0);
		return;
	}
	if (c->exit_dirty) { /* cmp byte [block_exit], 0; jnz ret0 */
		emit_mem(e, 0, false, (const uint8_t[]){ 0x80 }, 1, 7, CPU_OFF(block_exit));
		emit1(e, 0);
		emit_jump(e, c->jit, CC_NZ, c->ret0);
	}
	if (target < 0 || target >= 4096) {
		emit_exit_xpage(c);
		return;
	}
	rec.gpa = (c->chain->gpa & ~0xfffull) | (uint64_t)target |
		  (c->serialised ? JIT_FULL_ENTRY : 0);
	jump = emit_jump_fwd(e, 16);
	if (!jump)
		return;
	rec.jump = (uint32_t)(jump - c->jit->rw);
	emit_exit_stub(c, &rec, &jump, 1);
}

/* The exit after a RET or an indirect JMP/CALL (RIP written by it): the lookup table may
 * know the successor, else the return with jit_exit EMU_JIT_EXIT_LOOKUP, so that emu_run()
 * has emu_jit_link() remember the block it finds. jit_exit is 0 here (a successful chain
 * entry cleared it). A RET tries the return prediction first. */
static void emit_exit_lookup(struct compile *c, bool ret)
{
	struct emit *e = &c->e;

	emit_mem(e, 0, false, (const uint8_t[]){ 0x80 }, 1, 7, CPU_OFF(block_exit)); /* cmp, 0 */
	emit1(e, 0);
	emit_jump(e, c->jit, CC_NZ, c->ret0);
	emit_find(c, ret ? c->jit->stub_ret : c->jit->stub_lookup);
}

/* Whether `insn` (a block's last) is a near RET, or a near JMP/CALL through a register or
 * memory, run by its fast.c handler (which leaves block_exit alone: emu_block_generic() sets
 * it for any branch). */
static bool indirect_branch(const struct emu_insn *insn)
{
	unsigned ext = (insn->modrm >> 3) & 7;

	if (insn->map != EMU_MAP_1 || !insn->fast || insn->fast == emu_block_generic)
		return false;
	return insn->opcode == 0xC3 || (insn->opcode == 0xFF && (ext == 2 || ext == 4));
}

/* Whether `insn`, a block's last instruction that ends blocks (cpu.c's block_ends()) for being
 * rare or system-level, goes on to the next instruction and keeps everything a successor's
 * code relies on: mode, CPL, paging and the TLB, the code segment, the debug state (TF,
 * DR7). A fault returns a status; had its handler changed RIP, emu_block_generic() would
 * have set block_exit. PUSHF, CLI, STI (which sets IF: a pending interrupt either made the
 * caller's chain one block long or raises the attention flag, which the successor's chain
 * entry checks), SWAPGS, RDTSC(P), CPUID, fences, FXSAVE/FXRSTOR, LDMXCSR/STMXCSR, CLFLUSH,
 * CMPXCHG8B/16B. */
static bool ends_at_next(const struct emu_insn *insn)
{
	unsigned op = insn->opcode;

	if (insn->map == EMU_MAP_1)
		return op == 0x9C || op == 0xFA || op == 0xFB;
	if (insn->map != EMU_MAP_0F)
		return false;
	switch (op) {
	case 0x01:
		return insn->modrm == 0xF8 || insn->modrm == 0xF9;
	case 0x31:
	case 0xA2:
	case 0xAE:
		return true;
	case 0xC7:
		return insn->mod != 3 && ((insn->modrm >> 3) & 7) == 1;
	default:
		return false;
	}
}

static uint8_t *emit_jump8_fwd(struct emit *e, unsigned cc);
static void patch_jump8(struct emit *e, uint8_t *at);

/* The return prediction's stubs (struct emu_jit), in each generation of the buffer (whose
 * number they hold). Push, called by a CALL (emit_ret_push()) with RCX = the return address,
 * RDX, R8, R9, R10 = its return site's link (a struct jit_target) and ESI = what jit_exit
 * calls that link: the entry at ret_top gets them and the generation; ret_top moves on.
 * Clobbers RAX. Ret, called after a RET (emit_exit_lookup()) as the lookup is: ret_top moves
 * back to the entry of the CALL that the RET most likely returns from; if that entry names
 * the address the RET returned to (RIP) in this generation, the check stub checks the
 * link's copy, with jit_exit naming the link (so that a miss has emu_run() link it to the
 * block there), else the lookup. The entry only chooses what to check: a wrong or stale one
 * costs the lookup. */
static void jit_ret_stubs(struct emu_jit *jit, struct emit *e)
{
	uint8_t *miss[2];

	jit->stub_ret_push = jit->rx + (e->p - jit->rw);
	emit_load(e, false, RAX, CPU_OFF(ret_top));
	emit_ring_mem(e, true, (const uint8_t[]){ 0x89 }, 1, RCX, 32); /* mov [entry.la], rcx */
	emit_ring_mem(e, true, (const uint8_t[]){ 0x89 }, 1, RDX, 0); /* the link */
	emit_ring_mem(e, true, (const uint8_t[]){ 0x89 }, 1, 8, 8);
	emit_ring_mem(e, true, (const uint8_t[]){ 0x89 }, 1, 9, 16);
	emit_ring_mem(e, true, (const uint8_t[]){ 0x89 }, 1, 10, 24);
	emit_ring_mem(e, false, (const uint8_t[]){ 0x89 }, 1, RSI, 40); /* mov [.record], esi */
	emit_ring_mem(e, false, (const uint8_t[]){ 0xC7 }, 1, 0, 44); /* mov [entry.gen], gen */
	emit4(e, jit->gen);
	emit_bytes(e, (const uint8_t[]){ 0x83, 0xC0, 0x40 }, 3); /* add eax, 64 */
	emit1(e, 0x25); /* and eax, RET_RING_MASK */
	emit4(e, RET_RING_MASK);
	emit_store(e, false, RAX, CPU_OFF(ret_top));
	emit1(e, 0xC3);

	jit->stub_ret = jit->rx + (e->p - jit->rw);
	emit_load(e, false, RAX, CPU_OFF(ret_top));
	emit_bytes(e, (const uint8_t[]){ 0x83, 0xE8, 0x40 }, 3); /* sub eax, 64 */
	emit1(e, 0x25); /* and eax, RET_RING_MASK */
	emit4(e, RET_RING_MASK);
	emit_store(e, false, RAX, CPU_OFF(ret_top));
	emit_load(e, true, RCX, CPU_OFF(s.rip));
	emit_ring_mem(e, true, (const uint8_t[]){ 0x3B }, 1, RCX, 32); /* cmp rcx, [entry.la] */
	miss[0] = emit_jump8_fwd(e, CC_NZ);
	emit_ring_mem(e, false, (const uint8_t[]){ 0x81 }, 1, 7, 44); /* cmp [entry.gen], gen */
	emit4(e, jit->gen);
	miss[1] = emit_jump8_fwd(e, CC_NZ);
	emit_ring_mem(e, false, (const uint8_t[]){ 0x8B }, 1, RDX, 40); /* mov edx, [.record] */
	emit_store(e, false, RDX, CPU_OFF(jit_exit));
	emit_ring_mem(e, true, (const uint8_t[]){ 0x8D }, 1, RDX, 0); /* lea rdx, [entry.link] */
	emit_jump(e, jit, 16, jit->stub_check);
	patch_jump8(e, miss[0]);
	patch_jump8(e, miss[1]);
	emit_jump(e, jit, 16, jit->stub_lookup);
}

/* The shared code at the start of each generation of the buffer (struct emu_jit): the check
 * of a struct jit_target and the lookup, both called (emit_find()) and returning in RCX
 * where to jump: the successor's chain entry, or the miss, a return with status 0 (jit_exit
 * EMU_JIT_EXIT_LOOKUP unless it names an exit) through the epilogue that every block's code
 * shares (stub_epilogue). Reached only from compiled code, with
 * RBX = cpu and R12 the TLB tag bits, which stay right for the successor: same CPL, same
 * memory ops. false: the buffer is too small. */
static bool jit_stubs(struct emu_jit *jit)
{
	struct emit em = { .start = jit->rw, .p = jit->rw, .end = jit->rw + jit->size };
	struct emit *e = &em;
	const uint8_t *miss, *find_miss, *check_gen;
	uint8_t *gen_ok, *keep;

	/* miss: a lookup's (jit_exit 0) says so in jit_exit, for emu_jit_link(); an exit to
	 * another page keeps its record there */
	miss = jit->rx;
	emit_mem(e, 0, false, (const uint8_t[]){ 0x83 }, 1, 7, CPU_OFF(jit_exit)); /* cmp, 0 */
	emit1(e, 0);
	keep = emit_jump_fwd(e, CC_NZ);
	emit_mem(e, 0, false, (const uint8_t[]){ 0xC7 }, 1, 0, CPU_OFF(jit_exit));
	emit4(e, EMU_JIT_EXIT_LOOKUP);
	patch_jump(e, keep);
	emit_bytes(e, (const uint8_t[]){ 0x31, 0xC0 }, 2); /* xor eax, eax */
	jit->stub_epilogue = jit->rx + (e->p - jit->rw);
	emit_bytes(e, jit_epilogue, sizeof(jit_epilogue));
	/* what check and lookup return on a miss: RCX = miss; ret */
	find_miss = jit->rx + (e->p - jit->rw);
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x0D }, 3); /* lea rcx, [rip + miss] */
	emit4(e, (uint32_t)(int32_t)(miss - (find_miss + 7)));
	emit1(e, 0xC3);
	/* check: RIP against [rdx] (la) */
	jit->stub_check = jit->rx + (e->p - jit->rw);
	emit_load(e, true, RAX, CPU_OFF(s.rip));
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x3B, 0x02 }, 3); /* cmp rax, [rdx] */
	emit_jump(e, jit, CC_NZ, find_miss);
	/* the generation: either the TLB's (the page's translation made in this one), or for
	 * a global page the global one (kept across CR3 writes) */
	check_gen = jit->rx + (e->p - jit->rw);
	emit_load(e, true, RAX, CPU_OFF(tlb.generation));
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x3B, 0x42, 0x08 }, 4); /* cmp rax, [rdx + 8] */
	gen_ok = emit_jump_fwd(e, CC_E);
	emit_load(e, true, RAX, CPU_OFF(tlb.generation_global));
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x3B, 0x42, 0x10 }, 4); /* cmp rax, [rdx + 16] */
	emit_jump(e, jit, CC_NZ, find_miss);
	patch_jump(e, gen_ok);
	/* xor ecx, ecx; cmp dword [cpl], 3; sete cl; xor rcx, [rdx + 24]; test cl, 1; jnz miss;
	 * ret (the CPL's bit must match; RCX is the successor's chain entry) */
	emit_bytes(e, (const uint8_t[]){ 0x31, 0xC9 }, 2);
	emit_mem(e, 0, false, (const uint8_t[]){ 0x83 }, 1, 7, CPU_OFF(cpl));
	emit1(e, 3);
	emit_bytes(e, (const uint8_t[]){ 0x0F, 0x94, 0xC1 }, 3);
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x33, 0x4A, 0x18 }, 4);
	emit_bytes(e, (const uint8_t[]){ 0xF6, 0xC1, 0x01 }, 3);
	emit_jump(e, jit, CC_NZ, find_miss);
	emit1(e, 0xC3);
	/* lookup: RDX = &lookup[(rip ^ rip >> 12) % size]; then the check */
	jit->stub_lookup = jit->rx + (e->p - jit->rw);
	emit_load(e, true, RAX, CPU_OFF(s.rip));
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x89, 0xC2 }, 3); /* mov rdx, rax */
	emit_bytes(e, (const uint8_t[]){ 0x48, 0xC1, 0xEA, 0x0C }, 4); /* shr rdx, 12 */
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x31, 0xC2 }, 3); /* xor rdx, rax */
	emit_bytes(e, (const uint8_t[]){ 0x81, 0xE2 }, 2); /* and edx, size - 1 */
	emit4(e, JIT_LOOKUP_SIZE - 1);
	emit_bytes(e, (const uint8_t[]){ 0xC1, 0xE2, 0x05 }, 3); /* shl edx, 5 */
	emit_bytes(e, (const uint8_t[]){ 0x48, 0xB9 }, 2); /* mov rcx, lookup */
	emit8(e, (uint64_t)(uintptr_t)jit->lookup);
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x01, 0xCA }, 3); /* add rdx, rcx */
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x3B, 0x02 }, 3); /* cmp rax, [rdx] */
	emit_jump(e, jit, CC_NZ, find_miss);
	emit_jump(e, jit, 16, check_gen);
	jit_ret_stubs(jit, e);
	if (e->overflow)
		return false;
	jit->pos = (size_t)(e->p - jit->rw);
	return true;
}

_Static_assert(sizeof(struct jit_target) == 32, "the stubs' jit_target layout");

/* A forward rel8 jump or Jcc (cc < 16; 16: JMP) to a target patched later (patch_jump8()). */
static uint8_t *emit_jump8_fwd(struct emit *e, unsigned cc)
{
	emit1(e, cc < 16 ? (uint8_t)(0x70 | cc) : 0xEB);
	emit1(e, 0);
	return e->overflow ? NULL : e->p - 1;
}

/* Point the rel8 at `at` here; a target out of its reach makes the code not fit (never with
 * the short distances it is used for). */
static void patch_jump8(struct emit *e, uint8_t *at)
{
	ptrdiff_t rel = at ? e->p - (at + 1) : 0;

	if (!at || e->overflow)
		return;
	if (rel > 127) {
		e->overflow = true;
		return;
	}
	*at = (uint8_t)rel;
}

/* A backward rel8 jump or Jcc (cc < 16; 16: JMP) to `to`, a position in the read-write view
 * (the short distances it is used for always reach). */
static void emit_jump8_back(struct emit *e, unsigned cc, const uint8_t *to)
{
	ptrdiff_t rel = to - (e->p + 2);

	if (rel < -128) {
		e->overflow = true;
		return;
	}
	emit1(e, cc < 16 ? (uint8_t)(0x70 | cc) : 0xEB);
	emit1(e, (uint8_t)(int8_t)rel);
}

/* The chain entry (jit.h): where exits linked to the block jump, with the checks that let the
 * chain go on into it, each leaving through the return with status 0 just before it
 * (JIT_ENTRY_OUT bytes back; RIP is at the block's first instruction, jit_exit names the exit
 * that came here, for emu_run() to link again); then the body follows. From its start (for
 * exits to other pages and lookups): the page's code version against the block's; from
 * JIT_ENTRY_SAME on (for exits within the block's page, see emu_jit_link()): the attention
 * flag and the chain's budget. Whether the block's cache slot still holds this code is not
 * looked at: the block cache calls emu_jit_unchain() when it forgets or rebuilds a block,
 * which points both entries at the return (a check of the slot through a MOVABS load, a
 * cache miss more often than not, ran at every entry before). */
#define JIT_ENTRY_SAME 16u
/* xor eax, eax; mov dword [r13 + jit_last], slot; jmp stub_epilogue; int3: an even length, as
 * a chain entry's address must be even (struct jit_target keeps the CPL in bit 0) */
#define JIT_ENTRY_OUT 16u

/* A jump or Jcc (cc < 16; 16: JMP) back to `to`, a position in the read-write view: rel8 when
 * it reaches, else rel32. */
static void emit_jump_back(struct compile *c, unsigned cc, const uint8_t *to)
{
	struct emit *e = &c->e;

	if (to - (e->p + 2) >= -128)
		emit_jump8_back(e, cc, to);
	else
		emit_jump(e, c->jit, cc, c->jit->rx + (to - c->jit->rw));
}

/* The chain entry's checks of a block whose one instruction crosses into the next page
 * (jit.h's cross_*), from both entry points: a predecessor in the block's own page vouches
 * for that page only. The next page's code version, then the next linear page's
 * translation: the fetch TLB's entry for it (RIP's page + 4096, the tag with R12's CPL bits,
 * either way) must name the guest-physical page the block was decoded from. An entry that
 * is not there (a flush, INVLPG, another page at that index) or names another page fails:
 * emu_run() then checks as for an interpreted block (a walk: the old page, a new one, or
 * the fault). The TLB holds what paging gave this CPU, so this is what emu_run()'s own
 * check (the fetch of the page) finds whenever it finds an entry. Out to `out` on a
 * mismatch. */
static void emit_cross_check(struct compile *c, const uint8_t *out)
{
	static const uint8_t cmp_entry[] = { 0x48, 0x3B, 0x84, 0x0B }; /* cmp rax, [rbx+rcx+d] */
	const struct emu_jit_chain *chain = c->chain;
	struct emit *e = &c->e;
	const int32_t fetch = CPU_OFF(tlb.fetch),
		      way2 = CPU_OFF(tlb.way2) +
			     (int32_t)(2 * EMU_TLB_SIZE * sizeof(struct emu_tlb_entry)),
		      gpa = (int32_t)offsetof(struct emu_tlb_entry, gpa);
	uint8_t *first;

	/* mov eax, [version_word]; cmp eax, version; jne out */
	emit1(e, 0xA1);
	emit8(e, (uint64_t)(uintptr_t)chain->cross_version_word);
	emit1(e, 0x3D);
	emit4(e, chain->cross_version);
	emit_jump_back(c, CC_NZ, out);
	/* mov rax, [rip]; add rax, 4096 - offset: the next page (RIP's offset is the block's) */
	emit_load(e, true, RAX, CPU_OFF(s.rip));
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x05 }, 2);
	emit4(e, (uint32_t)(4096 - (chain->gpa & 0xfff)));
	/* mov ecx, eax; shr ecx, 12 - 5; and ecx, ebp (the prologue's (SIZE - 1) * 32, as
	 * emit_tlb_lookup()'s): its entry's offset */
	emit_bytes(e, (const uint8_t[]){ 0x89, 0xC1, 0xC1, 0xE9, 0x07, 0x21, 0xE9 }, 7);
	emit_bytes(e, (const uint8_t[]){ 0x4C, 0x09, 0xE0 }, 3); /* or rax, r12: the tag */
	emit_bytes(e, cmp_entry, sizeof(cmp_entry)); /* the first way; je first */
	emit4(e, (uint32_t)fetch);
	first = emit_jump8_fwd(e, CC_E);
	emit_bytes(e, cmp_entry, sizeof(cmp_entry)); /* the second way (mmu.c's way2); jne out */
	emit4(e, (uint32_t)way2);
	emit_jump_back(c, CC_NZ, out);
	emit_bytes(e, (const uint8_t[]){ 0x81, 0xC1 }, 2); /* add ecx, way2 - fetch */
	emit4(e, (uint32_t)(way2 - fetch));
	patch_jump8(e, first);
	emit_bytes(e, (const uint8_t[]){ 0x48, 0xB8 }, 2); /* mov rax, page; cmp rax, [.gpa] */
	emit8(e, chain->cross_gpa);
	emit_bytes(e, cmp_entry, sizeof(cmp_entry));
	emit4(e, (uint32_t)(fetch + gpa));
	emit_jump_back(c, CC_NZ, out);
}

static void emit_chain_entry(struct compile *c)
{
	struct emit *e = &c->e;
	uint8_t *start = e->p, *out = e->p - JIT_ENTRY_OUT;

	/* mov eax, [version_word]; cmp eax, version; jne out */
	emit1(e, 0xA1);
	emit8(e, (uint64_t)(uintptr_t)c->chain->version_word);
	emit1(e, 0x3D);
	emit4(e, c->chain->version);
	emit_jump8_back(e, CC_NZ, out);
	if (!e->overflow && e->p - start != JIT_ENTRY_SAME)
		e->overflow = true; /* never: fixed sizes */
	/* a block across two pages: the second one (before anything counts the block) */
	if (c->chain->cross_version_word)
		emit_cross_check(c, out);
	/* cmp dword [attention], 0; jne out */
	emit_mem(e, 0, false, (const uint8_t[]){ 0x83 }, 1, 7, CPU_OFF(attention));
	emit1(e, 0);
	emit_jump_back(c, CC_NZ, out);
	/* mov eax, [chain_left]; sub eax, 1; jb out; mov [chain_left], rax: one block taken
	 * from the chain and jit_exit (the next dword) cleared (linked: nothing for emu_run()
	 * to link unless a later exit says so) */
	emit_load(e, false, RAX, CPU_OFF(chain_left));
	emit_bytes(e, (const uint8_t[]){ 0x83, 0xE8, 0x01 }, 3);
	emit_jump_back(c, CC_B, out);
	emit_store(e, true, RAX, CPU_OFF(chain_left));
}

_Static_assert(offsetof(struct emu_cpu, jit_exit) == offsetof(struct emu_cpu, chain_left) + 4,
	       "the chain entry clears jit_exit with its store of chain_left");

/* Whether `insn` is a relative branch whose targets are known when compiling: Jcc, LOOPcc,
 * JrCXZ, JMP rel, CALL rel (taken: `*cond` false for the unconditional ones). */
static bool relative_branch(const struct emu_insn *insn, bool *cond)
{
	unsigned op = insn->opcode;

	*cond = true;
	if (insn->map == EMU_MAP_0F)
		return op >= 0x80 && op <= 0x8F;
	if (insn->map != EMU_MAP_1)
		return false;
	if ((op >= 0x70 && op <= 0x7F) || (op >= 0xE0 && op <= 0xE3))
		return true;
	*cond = false;
	return op == 0xE8 || op == 0xE9 || op == 0xEB;
}

/* A block's last instruction run by its handler when it is a relative branch: RIP before it
 * kept in jit_scratch (after the sync), and afterwards the exit its new RIP names. */
static void emit_branch_before_handler(struct compile *c)
{
	emit_sync(c);
	emit_load(&c->e, true, RAX, CPU_OFF(s.rip));
	emit_store(&c->e, true, RAX, CPU_OFF(jit_scratch));
}

static void emit_branch_after_handler(struct compile *c, const struct emu_insn *insn, bool cond)
{
	struct emit *e = &c->e;
	int64_t fall = (int64_t)c->insn_off + insn->len, taken = fall + (int64_t)insn->imm;
	uint8_t *other;

	/* mov rax, [rip]; sub rax, [jit_scratch]; cmp rax, taken - start; jne other */
	emit_load(e, true, RAX, CPU_OFF(s.rip));
	emit_mem(e, 0, true, (const uint8_t[]){ 0x2B }, 1, RAX, CPU_OFF(jit_scratch));
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x3D }, 2);
	emit4(e, (uint32_t)(insn->len + insn->imm));
	other = emit_jump_fwd(e, CC_NZ);
	emit_exit_to(c, taken);
	patch_jump(e, other);
	if (cond) { /* cmp rax, len; jne ret0 */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x3D }, 2);
		emit4(e, insn->len);
		emit_jump(e, c->jit, CC_NZ, c->ret0);
		emit_exit_to(c, fall);
	} else {
		emit_jump(e, c->jit, 16, c->ret0);
	}
	c->ended = true;
}

/* One way out of an inlined branch with RIP (synced) in RAX: RIP += delta (pend_rip + len,
 * then the displacement when taken), the count and the shadow, then the exit. */
static void emit_branch_exit(struct compile *c, const struct emu_insn *insn, bool taken)
{
	struct emit *e = &c->e;
	int64_t target = (int64_t)c->insn_off + insn->len;

	int64_t delta = (int64_t)(c->pend_rip + insn->len) + (taken ? (int64_t)insn->imm : 0);
	bool shadow_clear = c->shadow_clear; /* the same for both ways out */

	if (delta == (int32_t)delta) { /* lea rax, [rax + fall (+ rel)] */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x80 }, 3);
		emit4(e, (uint32_t)(int32_t)delta);
	} else { /* lea rax, [rax + fall]; lea rax, [rax + rel] */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x80 }, 3);
		emit4(e, (uint32_t)(c->pend_rip + insn->len));
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x80 }, 3);
		emit4(e, (uint32_t)insn->imm);
	}
	if (taken)
		target += (int64_t)insn->imm;
	emit_store(e, true, RAX, CPU_OFF(s.rip));
	emit_mem(e, 0, true, (const uint8_t[]){ 0x83 }, 1, 0, CPU_OFF(instructions));
	emit1(e, (uint8_t)(c->pend_n + 1));
	emit_shadow_clear(c);
	emit_exit_to(c, target);
	c->shadow_clear = shadow_clear;
}

/* The block's last instruction, a relative jump (taken when `cc` holds, or always for 16):
 * RIP, the count and the shadow written, then the exit with status 0 (for a chained block,
 * one exit per target, after a host branch on the condition). */
static void emit_branch(struct compile *c, const struct emu_insn *insn, unsigned cc)
{
	struct emit *e = &c->e;

	if (c->chain) {
		uint8_t *fall = NULL;

		emit_load(e, true, RAX, CPU_OFF(s.rip)); /* flags kept */
		if (cc < 16)
			fall = emit_jump_fwd(e, cc ^ 1);
		emit_branch_exit(c, insn, true);
		if (cc < 16) {
			patch_jump(e, fall);
			emit_branch_exit(c, insn, false);
		}
		c->pend_rip = 0;
		c->pend_n = 0;
		c->ended = true;
		return;
	}
	emit_load(e, true, RAX, CPU_OFF(s.rip));
	emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x80 }, 3); /* lea rax, [rax + fall] */
	emit4(e, (uint32_t)(c->pend_rip + insn->len));
	if (cc < 16) { /* lea rcx, [rax + rel]; cmovcc rax, rcx */
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x8D, 0x88 }, 3);
		emit4(e, (uint32_t)insn->imm);
		emit_rr(e, 0, true, (const uint8_t[]){ 0x0F, (uint8_t)(0x40 | cc) }, 2, RAX, RCX);
	} else {
		emit_bytes(e, (const uint8_t[]){ 0x48, 0x05 }, 2); /* add rax, rel */
		emit4(e, (uint32_t)insn->imm);
	}
	emit_store(e, true, RAX, CPU_OFF(s.rip));
	c->pend_rip = 0;
	emit_mem(e, 0, true, (const uint8_t[]){ 0x83 }, 1, 0, CPU_OFF(instructions));
	emit1(e, (uint8_t)(c->pend_n + 1));
	emit_shadow_clear(c);
	c->pend_n = 0;
}

/* SHL SHR SAR by CL where the flags are live, as fast.c's shift_fixed() with the guest's CL:
 * the host's shift (which masks the count as the guest does, and still writes a 32-bit
 * operand zero-extended for a count of 0), its flags taken at once, and for a count that
 * masks to 0 nothing more (no flag changes: the record stays the guest's); else all six
 * replaced as emit_shift_flags() does (the count is 1..width-1, so the host's CF ZF SF PF are
 * defined; OF computed). ~11 per 4 KiB QD32 read request went through their handlers. */
static void emit_shift_cl_flags(struct compile *c, const struct emu_insn *insn,
				const struct form *f)
{
	struct emit *e = &c->e;
	bool w = f->size == 8;
	uint8_t top = (uint8_t)(8 * f->size - 1), *skip;

	/* movzx ecx, byte [guest rcx]; mov rax, [a] */
	emit_mem(e, 0, false, (const uint8_t[]){ 0x0F, 0xB6 }, 2, RCX, GPR(CPU_RCX));
	emit_load(e, w, RAX, GPR(insn->fast_a));
	if (f->op == 5) { /* SHR: OF = the operand's sign; mov rsi, rax; shr rsi, top */
		emit_rr(e, 0, true, (const uint8_t[]){ 0x89 }, 1, RAX, RSI);
		emit_rr(e, 0, true, (const uint8_t[]){ 0xC1 }, 1, 5, RSI);
		emit1(e, top);
	}
	emit_rr(e, 0, w, (const uint8_t[]){ 0xD3 }, 1, f->op, RAX); /* shl|shr|sar rax, cl */
	emit_store(e, true, RAX, GPR(insn->fast_a));
	emit_bytes(e, (const uint8_t[]){ 0x9C, 0x5A }, 2); /* pushfq; pop rdx */
	emit_rr(e, 0, false, (const uint8_t[]){ 0x83 }, 1, 4, RCX); /* and ecx, width - 1 */
	emit1(e, top);
	skip = emit_jump8_fwd(e, CC_E);
	emit_shift_flags_store(c, f->op, top);
	patch_jump8(e, skip);
	c->host_flags = false;
	c->prod = PROD_UNKNOWN;
}

/* CLI (the kernel's local_irq_save()/disable(), ~5 per 4 KiB QD32 read request): at CPL 0 IF
 * is cleared inline (CPL 0 is never above IOPL); at any other CPL the handler decides (IOPL,
 * #GP), as the slow path. No arithmetic flag changes: what is known of them stays known. */
static void emit_cli(struct compile *c, const struct emu_insn *insn, bool last)
{
	struct emit *e = &c->e;
	struct tlb_jumps t = { .slow = { NULL, NULL }, .way2_back = NULL };
	enum producer prod = c->prod;

	emit_mem(e, 0, false, (const uint8_t[]){ 0x83 }, 1, 7, CPU_OFF(cpl)); /* cmp [cpl], 0 */
	emit1(e, 0);
	t.slow[0] = emit_jump_fwd(e, CC_NZ);
	emit_mem(e, 0, false, (const uint8_t[]){ 0x81 }, 1, 4, CPU_OFF(s.rflags)); /* and */
	emit4(e, (uint32_t) ~(uint32_t)EMU_FLAG_IF);
	emit_slow_path(c, insn, last, false, &t);
	c->host_flags = false;
	c->prod = prod; /* both paths leave the record as it was */
}

/* Inline one instruction if its form has a template and what it needs is known; false: the
 * caller calls the handler. `live`: its flags are read later (by an instruction of the block,
 * a handler, or whatever runs after the block). */
static bool emit_inline(struct compile *c, const struct emu_insn *insn, const struct form *f,
			bool live, bool last)
{
	switch (f->kind) {
	case FORM_LOAD:
	case FORM_STORE:
	case FORM_STORE_IMM:
		if (!emit_memory(c, insn, f, last))
			return false;
		break;
	case FORM_ALU_MEM:
		if (!emit_alu_mem(c, insn, f, live, last))
			return false;
		break;
	case FORM_SETCC_MEM:
		if (!emit_setcc_mem(c, insn, f, last))
			return false;
		break;
	case FORM_INCDEC_MEM:
		if (!emit_incdec_mem(c, insn, f, live, last))
			return false;
		break;
	case FORM_PUSH:
	case FORM_POP:
		if (!emit_stack(c, insn, f, last))
			return false;
		break;
	case FORM_CALL_REL:
	case FORM_RET:
		return emit_stack(c, insn, f, last);
	case FORM_NOP:
		break;
	case FORM_CLI:
		emit_cli(c, insn, last);
		break;
	case FORM_MOV_RR:
		emit_mov_rr(c, insn, f);
		break;
	case FORM_MOV_RI:
		emit_mov_ri(c, insn, f);
		break;
	case FORM_ALU:
		if ((f->op == 2 || f->op == 3) && !carry_known(c))
			return false;
		emit_alu(c, insn, f, live);
		break;
	case FORM_LEA:
		if (!emit_lea(c, insn, f))
			return false;
		break;
	case FORM_SHIFT:
		if (live)
			emit_shift_flags(c, insn, f);
		else
			emit_shift(c, insn, f);
		break;
	case FORM_ROT:
		emit_rotate(c, insn, f, live);
		break;
	case FORM_SHIFT_CL:
		if (live)
			emit_shift_cl_flags(c, insn, f);
		else
			emit_shift_cl(c, insn, f);
		break;
	case FORM_NOT:
		emit_not(c, insn, f);
		break;
	case FORM_NEG:
		emit_neg(c, insn, f, live);
		break;
	case FORM_INCDEC:
		if (!emit_incdec(c, insn, f, live))
			return false;
		break;
	case FORM_IMUL:
		emit_imul(c, insn, f);
		if (live)
			emit_imul_flags(c, f);
		break;
	case FORM_ALU_HI:
		emit_alu_high_byte(c, insn, f, live);
		break;
	case FORM_BSWAP:
		emit_bswap(c, insn, f);
		break;
	case FORM_MOVX:
		emit_movx(c, insn, f);
		break;
	case FORM_CMOV:
	case FORM_SETCC:
		if (emit_guest_flags_for(c, f->op)) {
			if (f->kind == FORM_CMOV)
				emit_cmov(c, insn, f);
			else
				emit_setcc(c, insn, f);
		} else {
			struct form g = *f;

			emit_cond_call(c, &g.op);
			if (f->kind == FORM_CMOV)
				emit_cmov(c, insn, &g);
			else
				emit_setcc(c, insn, &g);
		}
		break;
	case FORM_JCC: {
		unsigned cc = f->op;

		if (!emit_guest_flags_for(c, cc))
			emit_cond_call(c, &cc);
		emit_branch(c, insn, cc);
		return true;
	}
	case FORM_JMP:
		emit_branch(c, insn, 16);
		return true;
	default:
		return false;
	}
	c->pend_n++;
	c->pend_rip += insn->len;
	return true;
}

/* Flag liveness, backwards: live[i] says whether instruction i's flags may be read after it.
 * Everything after the block and every handler may read them (a handler may fault, and a
 * fault leaves the flags exact). */
static void flags_liveness(const struct emu_insn *insn, const struct form *f, unsigned n,
			   bool *live)
{
	bool l = true;

	for (unsigned i = n; i-- > 0;) {
		live[i] = l;
		if (f[i].kind == FORM_CALL || form_accesses_memory(&f[i]) ||
		    form_reads_flags(&f[i]))
			l = true; /* memory forms: their slow path is the handler */
		else if (f[i].kind == FORM_ROT || f[i].kind == FORM_INCDEC ||
			 f[i].kind == FORM_SHIFT_CL)
			continue; /* partial writers: the flags they keep are live as long as theirs */
		else if (form_writes_flags(&f[i]))
			l = false;
		(void)insn;
	}
}

#define JIT_MAX_INSNS 64

/* R12 = the TLB tag bits of this CPL (EMU_TLB_VALID, EMU_TLB_USER at CPL 3), or a bit no tag
 * has while cpu->mem is not the paging layer (debug.c's watchpoints must see every access).
 * Neither changes inside a block: only a block's last instruction may change them. */
static void emit_tlb_tag(struct emit *e)
{
	emit_bytes(e, (const uint8_t[]){ 0x45, 0x31, 0xE4 }, 3); /* xor r12d, r12d */
	emit_mem(e, 0, false, (const uint8_t[]){ 0x83 }, 1, 7, CPU_OFF(cpl)); /* cmp [cpl], 3 */
	emit1(e, 3);
	emit_bytes(e, (const uint8_t[]){ 0x41, 0x0F, 0x94, 0xC4 }, 4); /* sete r12b */
	emit_bytes(e, (const uint8_t[]){ 0x41, 0x83, 0xCC, (uint8_t)EMU_TLB_VALID }, 4); /* or */
	emit_bytes(e, (const uint8_t[]){ 0x48, 0xB8 }, 2); /* mov rax, &emu_paged_memory_ops */
	emit8(e, (uint64_t)(uintptr_t)&emu_paged_memory_ops);
	emit_mem(e, 0, true, (const uint8_t[]){ 0x39 }, 1, RAX, CPU_OFF(mem)); /* cmp [mem], rax */
	emit1(e, 0xB8); /* mov eax, 0x800 */
	emit4(e, 0x800);
	emit_bytes(e, (const uint8_t[]){ 0x44, 0x0F, 0x45, 0xE0 }, 4); /* cmovne r12d, eax */
}

/* The return with status 0 (c->ret0) and the way to the shared epilogue (c->exit: EAX is the
 * status), which every exit of the block jumps back to; JIT_ENTRY_OUT bytes. */
static void emit_return(struct compile *c)
{
	struct emit *e = &c->e;
	uint8_t *start = e->p;

	c->ret0 = c->jit->rx + (e->p - c->jit->rw);
	emit_bytes(e, (const uint8_t[]){ 0x31, 0xC0 }, 2); /* xor eax, eax */
	c->exit = c->jit->rx + (e->p - c->jit->rw);
	if (c->chain) { /* mov dword [jit_last], slot (the chain entry's checks come here too) */
		emit_mem(e, 0, false, (const uint8_t[]){ 0xC7 }, 1, 0, CPU_OFF(jit_last));
		emit4(e, c->chain->slot);
	}
	emit_jump(e, c->jit, 16, c->jit->stub_epilogue);
	if (c->chain) /* int3, never reached: the chain entry after it at an even address */
		emit1(e, 0xCC);
	if (c->chain && !e->overflow && e->p - start != JIT_ENTRY_OUT)
		e->overflow = true; /* never: fixed sizes */
}

/* The entry from emu_run(): push rbx, rbp, r12-r15 and RAX (the stack is then 16-byte
 * aligned for calls); mov rbx, rdi; R13 (JIT_HOT_BASE), R12 (emit_tlb_tag(), which uses R13),
 * R14, R15 and EBP for the TLB lookups (emit_tlb_lookup()). */
static void emit_prologue(struct compile *c)
{
	struct emit *e = &c->e;

	emit_bytes(e,
		   (const uint8_t[]){ 0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57,
				      0x50, 0x48, 0x89, 0xFB },
		   14);
	emit_bytes(e, (const uint8_t[]){ 0x4C, 0x8D, 0xAB }, 3); /* lea r13, [rbx + hot base] */
	emit4(e, (uint32_t)JIT_HOT_BASE);
	emit_tlb_tag(e); /* with handler calls only too: a cross block's chain entry uses it */
	emit_bytes(e, (const uint8_t[]){ 0x4C, 0x8D, 0xB3 }, 3); /* lea r14, [rbx + read] */
	emit4(e, (uint32_t)CPU_OFF(tlb.read));
	emit_bytes(e, (const uint8_t[]){ 0x4C, 0x8D, 0xBB }, 3); /* lea r15, [rbx + write] */
	emit4(e, (uint32_t)CPU_OFF(tlb.write));
	emit1(e, 0xBD); /* mov ebp, (SIZE - 1) * 32 */
	emit4(e, (EMU_TLB_SIZE - 1) << 5);
}

/* Compile the block at the buffer's current position; NULL if it does not fit. */
static emu_jit_fn compile_block(struct emu_jit *jit, const struct emu_insn *insn, unsigned n,
				const struct emu_jit_chain *chain)
{
	struct compile c = { .jit = jit, .chain = chain };
	struct emit *e = &c.e;
	struct form f[JIT_MAX_INSNS];
	bool live[JIT_MAX_INSNS], cond;
	uint8_t *entry, *chain_at;
	bool writes = jit->inline_off; /* an instruction may write memory */

	if (n > JIT_MAX_INSNS)
		return NULL;
	for (unsigned i = 0; i < n; i++) {
		f[i] = classify(&insn[i]);
		writes = writes || form_may_write(&insn[i], &f[i]);
	}
	flags_liveness(insn, f, n, live);
	e->start = e->p = jit->rw + ((jit->pos + 15) & ~(size_t)15);
	e->end = jit->rw + jit->hot_size;
	c.cold.start = c.cold.p = jit->rw + jit->cold_pos;
	c.cold.end = jit->rw + jit->size;
	if (e->p > e->end)
		return NULL;
	/* A chained block: the list of its incoming exits (emu_jit_link()), the return with
	 * status 0 and the jump to the epilogue, so that every exit is a backward jump to a known address,
	 * the chain entry, which goes on into the body (chained entries are most of them: ~90 %
	 * on 4 KiB random reads), and the body; the entry from emu_run() (the prologue, after
	 * where the chain entry is, as an offset from it: emu_jit_link() reads it) is cold code
	 * that jumps to the body, so the hot code of the kernel's paths is denser by its ~55
	 * bytes per block. Otherwise: the return, 0 (no chain entry), and the prologue, which
	 * goes on into the body. */
	if (chain) {
		emit4(e, 0);
		emit_return(&c);
		chain_at = e->p;
		emit_chain_entry(&c);
		cold_swap(&c);
		emit4(e, 0);
		entry = e->p;
		emit_prologue(&c);
		emit_jump(e, jit, 16, jit->rx + (c.cold.p - jit->rw)); /* to the body */
		if (!e->overflow) {
			int32_t dist = (int32_t)(chain_at - entry);

			memcpy(entry - 4, &dist, 4);
		}
		cold_swap(&c);
		if (writes) { /* block_page = page: stores into the block's own page end it
			       * after them (self-modifying code), in a chain as for the first
			       * block of a pass (run_block() sets that one) */
			uint64_t page = chain->gpa & ~0xfffull;

			if (page <= INT32_MAX) { /* mov qword [block_page], imm32 */
				emit_mem(e, 0, true, (const uint8_t[]){ 0xC7 }, 1, 0,
					 CPU_OFF(block_page));
				emit4(e, (uint32_t)page);
			} else { /* mov rax, page; mov [block_page], rax */
				emit_bytes(e, (const uint8_t[]){ 0x48, 0xB8 }, 2);
				emit8(e, page);
				emit_store(e, true, RAX, CPU_OFF(block_page));
			}
		}
		c.insn_off = (unsigned)(chain->gpa & 0xfff);
	} else {
		emit_return(&c);
		emit4(e, 0);
		entry = e->p;
		emit_prologue(&c);
	}
	for (unsigned i = 0; i < n; i++) {
		bool last = i + 1 == n;

		if (jit->inline_off || !emit_inline(&c, &insn[i], &f[i], live[i], last)) {
			bool branch = chain && last && relative_branch(&insn[i], &cond);

			if (branch)
				emit_branch_before_handler(&c);
			emit_handler_call(&c, &insn[i], last);
			if (branch)
				emit_branch_after_handler(&c, &insn[i], cond);
			else if (!handler_keeps_flags(&insn[i]))
				c.prod = handler_producer(&insn[i], &c.prod_size);
		}
		c.insn_off += insn[i].len;
	}
	if (!c.ended) {
		emit_sync(&c);
		if (chain && n && indirect_branch(&insn[n - 1]))
			emit_exit_lookup(&c, insn[n - 1].opcode == 0xC3);
		else if (chain && n && (chain->falls_through || ends_at_next(&insn[n - 1]))) {
			c.serialised = insn[n - 1].map == EMU_MAP_0F && insn[n - 1].opcode == 0xA2;
			emit_exit_to(&c, (int64_t)c.insn_off);
		} else {
			emit_exit_to(&c, EXIT_NONE);
		}
	}
	if (e->overflow || c.cold.overflow)
		return NULL;
	jit->pos = (size_t)(e->p - jit->rw);
	jit->cold_pos = (size_t)(c.cold.p - jit->rw);
	return (emu_jit_fn)(uintptr_t)(jit->rx + (entry - jit->rw));
}

emu_jit_fn emu_jit_block(struct emu_jit *jit, struct emu_jit_ref *ref, const struct emu_insn *insn,
			 unsigned n)
{
	return emu_jit_block_chain(jit, ref, insn, n, NULL);
}

uint32_t emu_jit_generation(const struct emu_jit *jit)
{
	return jit->gen;
}

/* The chain entry of chainable code `code` (in this generation's buffer), NULL if none. */
static const uint8_t *chain_entry(const struct emu_jit *jit, emu_jit_fn code)
{
	const uint8_t *entry = (const uint8_t *)(uintptr_t)code;
	const uint8_t *at;
	int32_t dist;

	if (!(entry >= jit->rx + 4 && entry <= jit->rx + jit->pos) &&
	    !(entry >= jit->rx + jit->hot_size + 4 && entry <= jit->rx + jit->cold_pos))
		return NULL; /* not this generation's (the prologue of a chained block is cold) */
	memcpy(&dist, jit->rw + (entry - jit->rx) - 4, 4);
	if (!dist)
		return NULL;
	at = entry + dist;
	return at >= jit->rx + JIT_ENTRY_OUT + 4 && at < jit->rx + jit->pos ? at : NULL;
}

/* Where the CPU is now, as a successor at its RIP (jit_target): valid in this TLB generation,
 * or for a global page in this global generation, at this CPL. */
static struct jit_target target_here(const struct emu_cpu *cpu, bool global, const uint8_t *at)
{
	return (struct jit_target){
		.la = cpu->s.rip,
		.gen = cpu->tlb.generation,
		.ggen = global ? cpu->tlb.generation_global : JIT_NEVER,
		.code = (uint64_t)(uintptr_t)at | (cpu->cpl == 3),
	};
}

/* The CPU at `at`'s block, for the lookup after RET and indirect jumps and calls. */
static void jit_remember(struct emu_jit *jit, const struct emu_cpu *cpu, bool global,
			 const uint8_t *at)
{
	jit->lookup[emu_jit_lookup_entry(cpu->s.rip)] = target_here(cpu, global, at);
}

/* jit_stubs()'s lookup computes the same. */
unsigned emu_jit_lookup_entry(uint64_t la)
{
	return (unsigned)((la ^ (la >> 12)) & (JIT_LOOKUP_SIZE - 1));
}

/* Write `n` bytes at `off` in the buffer unless they are there already. Most links are made
 * again and again (a chain that ran out of blocks returns with its last exit in jit_exit, and
 * emu_run() links it again to the same block), and a store into code the host has just run
 * costs it a pipeline flush (self-modifying code, detected by physical address whatever the
 * view), so only a change is written. */
static void jit_patch(struct emu_jit *jit, size_t off, const void *b, size_t n)
{
	if (memcmp(jit->rw + off, b, n))
		memcpy(jit->rw + off, b, n);
}

/* The buffer offset of the list of incoming exits of the block whose chain entry is `at`:
 * the four bytes before its return (compile_block()). */
static size_t incoming_head(const struct emu_jit *jit, const uint8_t *at)
{
	return (size_t)(at - jit->rx) - JIT_ENTRY_OUT - 4;
}

/* Whether `len` bytes at `off` (a buffer offset) lie in compiled code (the hot region below
 * pos, or the cold one below cold_pos). */
static bool record_fits(const struct emu_jit *jit, size_t off, size_t len)
{
	return (off + len <= jit->pos && off >= 4) ||
	       (off >= jit->hot_size && off + len <= jit->cold_pos);
}

/* Where the exit whose record is `rec` jumps now (read-execute view). */
static const uint8_t *link_now(const struct emu_jit *jit, const struct jit_link_rec *rec)
{
	int32_t now;

	memcpy(&now, jit->rw + rec->jump, 4);
	return jit->rx + rec->jump + 4 + now;
}

/* Take the exit whose record is at `exit` off the incoming list of the block whose chain entry
 * is `at`. */
static void unlist(struct emu_jit *jit, const uint8_t *at, uint32_t exit)
{
	size_t link = incoming_head(jit, at);
	uint32_t next;
	unsigned guard = 0;

	if (at < jit->rx + JIT_ENTRY_OUT + 4 || !record_fits(jit, link, 4))
		return;
	for (;;) {
		memcpy(&next, jit->rw + link, 4);
		if (!next || !record_fits(jit, next, sizeof(struct jit_link_rec)) ||
		    guard++ >= (1u << 24))
			return;
		if (next == exit)
			break;
		link = next + offsetof(struct jit_link_rec, next);
	}
	memcpy(jit->rw + link, jit->rw + exit + offsetof(struct jit_link_rec, next), 4);
}

/* Point the exit whose record is at `exit` at chain entry `at` (+ JIT_ENTRY_SAME for `same`),
 * and put it on that block's list of incoming exits (off the list of the block it was linked
 * to before, if any). */
static void link_jump(struct emu_jit *jit, uint32_t exit, const uint8_t *at, bool same)
{
	struct jit_link_rec rec;
	size_t head = incoming_head(jit, at);
	const uint8_t *to = at + (same ? JIT_ENTRY_SAME : 0), *now,
		      *stub = jit->rx + exit - JIT_STUB_LEN;
	int32_t rel;

	memcpy(&rec, jit->rw + exit, sizeof(rec));
	if (!record_fits(jit, rec.jump, 4) || (now = link_now(jit, &rec)) == to)
		return; /* linked already (a chain that ran out of blocks returned here) */
	if (now != stub)
		unlist(jit, now - (same ? JIT_ENTRY_SAME : 0), exit);
	memcpy(&rec.next, jit->rw + head, 4);
	memcpy(jit->rw + exit, &rec, sizeof(rec));
	memcpy(jit->rw + head, &exit, 4);
	rel = (int32_t)(to - (jit->rx + rec.jump + 4));
	memcpy(jit->rw + rec.jump, &rel, 4);
}

/* Point each exit on the incoming list of the block whose chain entry is `at` back at its
 * stub, and empty the list. */
static void unlink_incoming(struct emu_jit *jit, const uint8_t *at)
{
	size_t head = incoming_head(jit, at);
	uint32_t exit, zero = 0;
	unsigned guard = 0;

	memcpy(&exit, jit->rw + head, 4);
	while (exit && record_fits(jit, exit, sizeof(struct jit_link_rec)) &&
	       guard++ < (1u << 24)) {
		struct jit_link_rec rec;
		const uint8_t *now;
		int32_t stub;

		memcpy(&rec, jit->rw + exit, sizeof(rec));
		if (!record_fits(jit, rec.jump, 4))
			break;
		now = link_now(jit, &rec);
		if (now != at && now != at + JIT_ENTRY_SAME)
			break; /* never: link_jump() keeps one list per exit */
		stub = (int32_t)((int64_t)exit - JIT_STUB_LEN - (int64_t)(rec.jump + 4));
		jit_patch(jit, rec.jump, &stub, 4);
		memcpy(jit->rw + exit + offsetof(struct jit_link_rec, next), &zero, 4);
		exit = rec.next;
	}
	memcpy(jit->rw + head, &zero, 4);
}

/* Fill in the check of the exit to another page whose record is at `exit` for where the CPU
 * is now (RIP, the TLB generation, or the global one for a global page, which every flush of
 * the other bumps too, and the CPL), and link its jump to chain entry `at`. */
static void link_xpage(struct emu_jit *jit, const struct emu_cpu *cpu, uint32_t exit, bool global,
		       const uint8_t *at)
{
	struct jit_link_rec rec;
	uint64_t la = cpu->s.rip, gen = global ? cpu->tlb.generation_global : cpu->tlb.generation;
	int32_t disp = global ? CPU_OFF(tlb.generation_global) : CPU_OFF(tlb.generation);
	uint8_t cc = cpu->cpl == 3 ? 0x80 | CC_NZ : 0x80 | CC_E;

	memcpy(&rec, jit->rw + exit, sizeof(rec));
	if (!record_fits(jit, rec.check, (size_t)rec.cpl_cc + 1) || rec.gen_imm < 2 ||
	    rec.gen_disp <= rec.gen_imm || rec.cpl_cc <= rec.gen_disp)
		return;
	jit_patch(jit, rec.check + 2, &la, 8);
	jit_patch(jit, rec.check + rec.gen_imm, &gen, 8);
	jit_patch(jit, rec.check + rec.gen_disp, &disp, 4);
	jit_patch(jit, rec.check + rec.cpl_cc, &cc, 1);
	link_jump(jit, exit, at, false);
}

/* A CALL's return site link at buffer offset `off` (emit_ret_push()): the immediates of its
 * four MOVABS, in the hot code, get where the CPU is now. */
static void link_return_site(struct emu_jit *jit, const struct emu_cpu *cpu, size_t off,
			     bool global, const uint8_t *at)
{
	struct jit_target t = target_here(cpu, global, at);
	const uint64_t v[4] = { t.la, t.gen, t.ggen, t.code };
	uint8_t op[2];

	if (off + JIT_RET_LINK_LEN > jit->pos)
		return;
	memcpy(op, jit->rw + off, 2);
	if (op[0] != 0x48 || op[1] != 0xBA) /* never: jit_exit named it */
		return;
	for (unsigned i = 0; i < 4; i++)
		jit_patch(jit, off + 10 * i + 2, &v[i], 8);
}

void emu_jit_link(struct emu_jit *jit, const struct emu_cpu *cpu, uint32_t exit, uint32_t gen,
		  uint64_t gpa, bool global, emu_jit_fn code)
{
	const uint8_t *at = chain_entry(jit, code);
	uint64_t want;

	if (exit == EMU_JIT_EXIT_LOOKUP && gen == jit->gen && at) {
		jit_remember(jit, cpu, global, at);
		return;
	}
	if (exit & JIT_RET_LINK) { /* a CALL's return site link (the return prediction's) */
		if (gen == jit->gen && at)
			link_return_site(jit, cpu, exit & ~JIT_RET_LINK, global, at);
		return;
	}
	if (!exit || gen != jit->gen || exit < 4 || !at)
		return;
	if (!record_fits(jit, exit, sizeof(struct jit_link_rec)))
		return; /* neither in the hot code nor in the cold code */
	memcpy(&want, jit->rw + exit, 8);
	if (want == JIT_XPAGE_CHECK) {
		link_xpage(jit, cpu, exit, global, at);
		return;
	}
	if ((want & ~JIT_FULL_ENTRY) != gpa)
		return;
	/* In the block's page: past the version check (but after CPUID, JIT_FULL_ENTRY). The
	 * predecessor ran from code of the page's version of its own decoding, which was the
	 * successor's too when emu_run() found it (versions only grow, and code keeps the one
	 * it was compiled for: a block decoded again is unchained); this CPU's writes into a
	 * page with decoded code end the chain (emu_code_stored()); another thread's are seen
	 * at the next entry from elsewhere (another page, a lookup, emu_run()), as a CPU
	 * running cross-modified code needs an interrupt or a serialising instruction to see
	 * them (SDM Vol. 3 §8.1.3). */
	link_jump(jit, exit, at, !(want & JIT_FULL_ENTRY));
}

void emu_jit_unchain(struct emu_jit *jit, const struct emu_jit_ref *ref)
{
	uint8_t full[2] = { 0xEB }, same[2] = { 0xEB };
	const uint8_t *at;
	size_t off;

	if (!jit || !ref->code || ref->gen != jit->gen || !(at = chain_entry(jit, ref->code)))
		return;
	unlink_incoming(jit, at);
	off = (size_t)(at - jit->rx);
	/* jmp out at both entries (the return just before them) */
	full[1] = (uint8_t)(256 - (JIT_ENTRY_OUT + 2));
	same[1] = (uint8_t)(256 - (JIT_ENTRY_OUT + JIT_ENTRY_SAME + 2));
	jit_patch(jit, off, full, 2);
	jit_patch(jit, off + JIT_ENTRY_SAME, same, 2);
}

/* Drop all code (a new generation) and what refers to it, and start the buffer again. */
static void jit_drop(struct emu_jit *jit)
{
	jit->pos = 0;
	jit->cold_pos = jit->hot_size;
	jit->gen = jit_next_gen();
	memset(jit->lookup, 0xff, JIT_LOOKUP_SIZE * sizeof(*jit->lookup));
	jit_stubs(jit); /* fits: it did at emu_jit_create() */
}

void emu_jit_forget(struct emu_jit *jit)
{
	jit_drop(jit);
}

emu_jit_fn emu_jit_block_chain(struct emu_jit *jit, struct emu_jit_ref *ref,
			       const struct emu_insn *insn, unsigned n,
			       const struct emu_jit_chain *chain)
{
	emu_jit_fn code;

	if (ref->code && ref->gen == jit->gen)
		return ref->code;
	if (ref->gen != jit->gen) { /* never compiled, or compiled into a dropped buffer */
		ref->code = NULL;
		ref->gen = jit->gen;
		ref->runs = 0;
	}
	if (ref->runs < jit->threshold) {
		ref->runs++;
		return NULL;
	}
	code = compile_block(jit, insn, n, chain);
	if (!code) { /* full: drop everything, start again */
		jit_drop(jit);
		EMU_STAT_INC(jit->flushes);
		ref->gen = jit->gen;
		code = compile_block(jit, insn, n, chain);
		if (!code) { /* larger than the whole buffer: stay interpreted */
			ref->runs = 0;
			return NULL;
		}
	}
	ref->code = code;
	return code;
}

#else /* not an x86-64 host: no JIT, the interpreter runs everything */

struct emu_jit *emu_jit_create(size_t size, unsigned threshold, bool templates)
{
	(void)size;
	(void)threshold;
	(void)templates;
	errno = ENOTSUP;
	return NULL;
}

void emu_jit_destroy(struct emu_jit *jit)
{
	(void)jit;
}

emu_jit_fn emu_jit_block(struct emu_jit *jit, struct emu_jit_ref *ref, const struct emu_insn *insn,
			 unsigned n)
{
	(void)jit;
	(void)ref;
	(void)insn;
	(void)n;
	return NULL;
}

emu_jit_fn emu_jit_block_chain(struct emu_jit *jit, struct emu_jit_ref *ref,
			       const struct emu_insn *insn, unsigned n,
			       const struct emu_jit_chain *chain)
{
	(void)chain;
	return emu_jit_block(jit, ref, insn, n);
}

uint32_t emu_jit_generation(const struct emu_jit *jit)
{
	(void)jit;
	return 0;
}

void emu_jit_link(struct emu_jit *jit, const struct emu_cpu *cpu, uint32_t exit, uint32_t gen,
		  uint64_t gpa, bool global, emu_jit_fn code)
{
	(void)jit;
	(void)cpu;
	(void)exit;
	(void)gen;
	(void)gpa;
	(void)global;
	(void)code;
}

void emu_jit_forget(struct emu_jit *jit)
{
	(void)jit;
}

void emu_jit_unchain(struct emu_jit *jit, const struct emu_jit_ref *ref)
{
	(void)jit;
	(void)ref;
}

uint64_t emu_jit_flushes(const struct emu_jit *jit)
{
	(void)jit;
	return 0;
}

int emu_jit_inlines(const struct emu_insn *insn)
{
	(void)insn;
	return 0;
}

unsigned emu_jit_lookup_entry(uint64_t la)
{
	(void)la;
	return 0;
}

#endif
