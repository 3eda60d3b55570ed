/* Differential test of the software CPU against the host CPU.
 *
 * Every case is one instruction with random and edge-value inputs. It runs natively, in a code
 * page between a stub that loads all 16 GPRs and RFLAGS from a context block and one that stores
 * them back, and in the emulator from the same state (same addresses: the emulator's flat memory
 * maps the native page's addresses onto a copy of the scratch buffer). GPRs, the defined flags,
 * RIP (taken or not) and the scratch memory must match.
 *
 * Flags the SDM leaves undefined are not compared. Table of what is masked, per instruction:
 *   AND OR XOR TEST                  AF
 *   SHL/SAL SHR SAR (count&mask > 1) OF, AF; (count == 1) AF; CF too when count >= width (8/16)
 *   ROL ROR RCL RCR (count&mask != 1) OF
 *   SHLD SHRD                        AF; OF unless count == 1
 *   MUL IMUL (all forms)             SF ZF AF PF
 *   DIV IDIV                         all six
 *   BSF BSR                          CF OF SF AF PF
 *   BT BTS BTR BTC                   OF SF AF PF
 *   POPCNT, the rest                 nothing
 * Results the SDM leaves undefined are not generated: SHLD/SHRD of a 16-bit operand by 17..31,
 * BSWAP of a 16-bit register. BSF/BSR of 0 leave the destination unchanged (AMD documents it,
 * Intel does it) and that is compared.
 *
 * SSE/SSE2, MMX, x87, FXSAVE/FXRSTOR: the stub also loads and stores XMM0-15, MXCSR and the x87
 * image (FCW, FSW, abridged FTW, ST0-7; MM0-7 are their mantissas), and they are compared
 * exactly. Not compared there: FOP, FIP and FDP (what processors record varies: AMD hosts store
 * them only with an unmasked exception pending) and MXCSR_MASK (AMD has bit 17, MM). A signal
 * maps to the vector it reports: SIGILL #UD, SIGSEGV #GP (misaligned 16-byte operands), SIGFPE
 * #DE, or #MF for x87/MMX forms with a pending x87 exception, or #XM for SSE floating-point
 * forms with unmasked exceptions; on a fault the emulator must leave every register and byte
 * as it was.
 *
 * Every group runs twice: in 64-bit mode, then in compatibility mode ("compat32:"), where the
 * native stub far-returns into Linux's 32-bit user code segment (0x23) around the instruction
 * and the emulator runs with CS.L = 0, CS.D = 1; there only EAX..EDI are compared and no REX,
 * RIP-relative or 16-bit (67) addressing is generated.
 *
 * Every case runs in the emulator twice: through emu_step(), which picks the specialised handler
 * of the instruction's form where there is one (fast.c, as the block loop does), and through
 * emu_execute() alone (the generic path, which is what runs everything else) with memory that
 * has no map op, so REP MOVS/STOS go element by element there instead of through their bulk
 * path; both must match the host. A "generic:" prefix on a failure names the second.
 *
 * REP string instructions that fault in the middle (a guard page) are compared with the host's
 * registers at its SIGSEGV (the signal's ucontext): iterations before the fault stay done.
 *
 * Where Intel and AMD differ, the emulator (CPUID: GenuineIntel) does what Intel does, and only
 * an Intel host (CPUID leaf 0) is its reference there; on any other host intel_reference()
 * turns the host's results into Intel's before they are compared (intel_reference() says what
 * differs). EMU_DIFF_HOST_INTEL=0 does that on an Intel host too (where it must change nothing:
 * a check of intel_reference() against the hardware), =1 takes the host as Intel.
 *
 * EMU_DIFF_ITERS sets the cases per instruction form (default 64), EMU_DIFF_SEED the seed. */
#include <cpuid.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>

#include "cpu/emu/alu.h"
#include "cpu/emu/decode.h"
#include "cpu/emu/emu.h"
#include "cpu/emu/fast.h"
#include "cpu/emu/jit.h"
#include "test.h"

/* ---- the native page ---- */

#define PAGE_SIZE_TOTAL 0x2000
#define CTX_OFF 0x0
#define CODE_OFF 0x400
#define INSN_OFF 0x600
#define SCRATCH_OFF 0x1000
#define SCRATCH_SIZE 0x400
#define DATA_SIZE 0x300 /* memory operands land in [0, DATA_SIZE) of the scratch */
#define STACK_TOP 0x3c0 /* default RSP offset in the scratch */
#define BRANCH_DISTANCE 16 /* from the fall-through to the taken target */
#define FX_IN_OFF 0x1800 /* native only: the FXRSTOR image loaded before the instruction */
#define FX_OUT_OFF 0x1a00 /* and the FXSAVE image stored after it */
#define X87_IMAGE 160 /* FCW..ST7 of the FXSAVE layout: what the x87 cases set and compare */

struct native_ctx {
	uint64_t gpr[16];
	uint64_t rflags;
	uint64_t host_rsp;
	uint64_t branch_taken;
	uint8_t xmm[16][16];
	uint32_t mxcsr, host_mxcsr;
};

static uint8_t *page; /* MAP_32BIT: every address fits in a disp32 */
/* Compatibility mode: the instruction runs in a 32-bit code segment (Linux's __USER32_CS,
 * 0x23) natively and with CS.L = 0, CS.D = 1 in the emulator. Only EAX..EDI are compared. */
static bool compat;
#define USER32_CS 0x23
#define USER_CS 0x33
#define USER_DS 0x2b
#define COMPAT_TMP_STACK 0xFF0 /* in the code page: for flags transfers in 32-bit code */
static uint8_t *stub64_entry, *stub32_entry; /* where the native stubs start */
static struct native_ctx *ctx;

/* Three pages for string instructions that cross pages and fault in the middle: natively
 * between two PROT_NONE guard pages, in the emulator one flat window at the same addresses
 * (a copy, emu_sbuf), with nothing mapped around it. Cases that use it (c->sbuf_used) start
 * both from sbuf_init, and their memory is compared as the scratch is. */
#define SBUF_SIZE (3 * 4096)
static uint8_t *sbuf; /* the first of the three pages */
static uint8_t sbuf_init[SBUF_SIZE];

/* The emulator's RAM: the scratch in the first page, the string pages in the next three. One
 * block, so that its code-page versions (scratch_code, memory.h) cover every store the CPU
 * reports with a host pointer: the locked path's and the REP MOVS/STOS bulk path's (which
 * writes the string pages; with the scratch alone tracked, it read a version word outside
 * the array, which crashed once the layout of the test's static data changed). */
static uint8_t emu_ram[4096 + SBUF_SIZE] __attribute__((aligned(4096)));
static uint8_t *const emu_scratch = emu_ram, *const emu_sbuf = emu_ram + 4096;
static struct memory_code_pages scratch_code;

/* The registers and fault of the native run's last signal (ucontext), for the page faults of
 * string instructions in the middle of their iterations. */
static struct {
	uint64_t gpr[16], rflags, addr, err;
} native_fault;

#define COMPARED_FLAGS (EMU_FLAGS_ARITH | EMU_FLAG_DF)

/* ---- random numbers ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static unsigned rnd_below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

/* A value with a good chance of being an edge case for an operand of `size` bytes. */
static uint64_t rnd_value(unsigned size)
{
	static const uint64_t edges[] = { 0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff,
					  0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull,
					  0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull,
					  ~0ull - 1 };
	uint64_t sign;

	if (size > 8)
		size = 8;
	sign = 1ull << (8 * size - 1);
	switch (rnd_below(8)) {
	case 0:
		return edges[rnd_below(sizeof(edges) / sizeof(edges[0]))] ^
		       (rnd_below(2) ? 0 : rnd() << (8 * (size & 7)));
	case 1:
		return sign + rnd_below(3) - 1 + (rnd() << 1 << (8 * size - 1));
	case 2:
		return rnd() >> rnd_below(64);
	case 3:
		return rnd_below(2) ? -(uint64_t)rnd_below(4) : rnd_below(4);
	default:
		return rnd();
	}
}

/* ---- one test case ---- */

struct tcase {
	uint8_t code[128]; /* one instruction, or a sequence (test_jit_sequences()) */
	unsigned len;
	uint64_t gpr[16];
	uint64_t rflags;
	uint8_t scratch[SCRATCH_SIZE];
	uint8_t xmm[16][16];
	uint32_t mxcsr;
	uint8_t x87[X87_IMAGE]; /* FCW, FSW, abridged FTW, ST0-7 (FXSAVE layout; no FIP/FDP/FOP) */
	unsigned ignore_off, ignore_len; /* scratch bytes not compared (x87 FIP/FCS/FOP/FDP/FDS) */
	bool fpe_is_mf; /* SIGFPE means #MF (x87), not #DE */
	bool fpe_is_xm; /* SIGFPE means #XM (SSE floating point) */
	uint64_t flags_undef; /* flags not compared */
	unsigned used; /* registers with a role (not free for address registers) */
	unsigned max_steps; /* emulator steps allowed (REP string instructions) */
	unsigned mem_off; /* scratch offset of the ModRM memory operand */
	unsigned insns; /* instructions in code[] when more than one: each is stepped */
	bool sbuf_used; /* the string pages (sbuf) hold data: initialise and compare them */
	bool partial_fault; /* a native page fault may come after iterations (REP strings) */
	unsigned str_size; /* with partial_fault: the string element's size */
	bool str_a32; /* and whether its addresses are 32-bit */
};

static const char *group_name;
static unsigned group_cases, group_failures;
static unsigned long total_cases, fast_cases;
static bool generic_path; /* the emulator runs emu_execute() alone (run_emulator()) */
static bool jit_path; /* the emulator runs the case's instructions as one compiled block */
static struct emu_jit *jit; /* compiles at the first entry; a small buffer, flushed often */
static unsigned long jit_cases, jit_inlined; /* cases run compiled; instructions inlined */

static void case_init(struct tcase *c)
{
	memset(c, 0, sizeof(*c));
	for (unsigned i = 0; i < 16; i++)
		c->gpr[i] = rnd_value(8);
	c->gpr[CPU_RSP] = (uint64_t)(uintptr_t)page + SCRATCH_OFF + STACK_TOP - 8 * rnd_below(4);
	c->used = 1u << CPU_RSP;
	c->rflags = (rnd() & EMU_FLAGS_ARITH) | EMU_FLAG_FIXED1;
	for (unsigned i = 0; i < 16; i++) {
		uint64_t q[2] = { rnd_value(8), rnd_value(8) };

		memcpy(c->xmm[i], q, 16);
	}
	c->mxcsr = 0x1f80;
	c->x87[0] = 0x7f; /* FNINIT state: FCW 0x37F, empty stack; the registers hold junk */
	c->x87[1] = 0x03;
	for (unsigned i = 32; i < X87_IMAGE; i++)
		c->x87[i] = (uint8_t)rnd();
	for (unsigned i = 0; i < 8; i++)
		memset(c->x87 + 32 + 16 * i + 10, 0, 6);
	for (unsigned i = 0; i < SCRATCH_SIZE; i += 8) {
		uint64_t v = rnd_value(8);

		memcpy(c->scratch + i, &v, 8);
	}
	c->max_steps = 1;
}

static uint64_t scratch_addr(unsigned off)
{
	return (uint64_t)(uintptr_t)page + SCRATCH_OFF + off;
}

/* ---- building the native stub ---- */

static uint8_t *emit_bytes(uint8_t *p, const void *bytes, unsigned n)
{
	memcpy(p, bytes, n);
	return p + n;
}

static uint8_t *emit_rip_rel(uint8_t *p, uint8_t rex, uint8_t op, unsigned reg, void *target,
			     unsigned trailing)
{
	int32_t disp;

	if (rex)
		*p++ = rex;
	*p++ = op;
	*p++ = (uint8_t)(((reg & 7) << 3) | 5);
	disp = (int32_t)((uint8_t *)target - (p + 4 + trailing));
	memcpy(p, &disp, 4);
	return p + 4;
}

/* prefix, REX, 0F op, ModRM with a RIP-relative operand (SSE moves, LDMXCSR/STMXCSR) */
static uint8_t *emit_rip_rel_0f(uint8_t *p, uint8_t prefix, uint8_t rex, uint8_t op, unsigned reg,
				void *target)
{
	int32_t disp;

	if (prefix)
		*p++ = prefix;
	if (rex)
		*p++ = rex;
	*p++ = 0x0F;
	*p++ = op;
	*p++ = (uint8_t)(((reg & 7) << 3) | 5);
	disp = (int32_t)((uint8_t *)target - (p + 4));
	memcpy(p, &disp, 4);
	return p + 4;
}

static uint8_t *emit_prologue64(uint8_t *p)
{
	static const uint8_t save[] = {
		0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57
	};

	p = emit_bytes(p, save, sizeof(save));
	p = emit_rip_rel(p, 0x48, 0x89, CPU_RSP, &ctx->host_rsp, 0); /* mov [host_rsp], rsp */
	p = emit_rip_rel_0f(p, 0, 0, 0xAE, 3, &ctx->host_mxcsr); /* stmxcsr [host_mxcsr] */
	p = emit_rip_rel_0f(p, 0, 0, 0xAE, 1, page + FX_IN_OFF); /* fxrstor [fx_in]: the x87 */
	p = emit_rip_rel_0f(p, 0, 0, 0xAE, 2, &ctx->mxcsr); /* ldmxcsr [mxcsr] */
	for (unsigned r = 0; r < 16; r++) /* movdqu xmmN, [xmm + 16N] */
		p = emit_rip_rel_0f(p, 0xF3, r >= 8 ? 0x44 : 0, 0x6F, r, ctx->xmm[r]);
	p = emit_rip_rel(p, 0, 0xFF, 6, &ctx->rflags, 0); /* push qword [rflags] */
	*p++ = 0x9D; /* popfq */
	for (unsigned r = 0; r < 16; r++) /* mov rN, [gpr + 8N] */
		p = emit_rip_rel(p, 0x48 | (r >= 8 ? 4 : 0), 0x8B, r, &ctx->gpr[r], 0);
	return p;
}

static void build_prologue(void)
{
	uint8_t buf[512];
	/* RIP-relative displacements depend on where the code is: measure, then build in place
	 * so that it ends at INSN_OFF. */
	unsigned len = (unsigned)(emit_prologue64(buf) - buf);
	uint8_t *start = page + INSN_OFF - len;

	emit_prologue64(start);
	memset(page + CODE_OFF, 0xCC, (size_t)(start - (page + CODE_OFF)));
	stub64_entry = start;
}

static void *stub_entry(void)
{
	return compat ? stub32_entry : stub64_entry;
}

static uint8_t *emit32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
	return p + 4;
}

static uint32_t abs32(const void *target)
{
	return (uint32_t)(uintptr_t)target;
}

/* The entry for compatibility mode: 64-bit code that far-returns into the 32-bit part right
 * before INSN_OFF, which loads EFLAGS and EAX..EDI (absolute addresses: all below 2 GiB). */
static void build_prologue32(void)
{
	static const uint8_t save[] = {
		0x53, 0x55, 0x41, 0x54, 0x41, 0x55, 0x41, 0x56, 0x41, 0x57
	};
	const unsigned len32 = 5 + 6 + 6 + 1 + 7 + 8 * 6 + 7 + 8 * 8;
	uint8_t *l32 = page + INSN_OFF - len32, *p;

	p = stub32_entry = page + CODE_OFF + 0x40;
	p = emit_bytes(p, save, sizeof(save));
	p = emit_rip_rel(p, 0x48, 0x89, CPU_RSP, &ctx->host_rsp, 0); /* mov [host_rsp], rsp */
	p = emit_rip_rel_0f(p, 0, 0, 0xAE, 3, &ctx->host_mxcsr); /* stmxcsr [host_mxcsr] */
	*p++ = 0x6A; /* push USER32_CS */
	*p++ = USER32_CS;
	*p++ = 0x68; /* push l32 */
	p = emit32(p, abs32(l32));
	*p++ = 0x48; /* retfq */
	*p++ = 0xCB;
	p = l32;
	*p++ = 0xBC; /* mov esp, tmp stack */
	p = emit32(p, abs32(page + COMPAT_TMP_STACK));
	/* 64-bit processes run with null DS/ES, which 32-bit code cannot use: load USER_DS. */
	p = emit_bytes(p, (const uint8_t[]){ 0x6A, USER_DS, 0x1F, 0x6A, USER_DS, 0x07 }, 6);
	*p++ = 0xFF; /* push dword [rflags] */
	*p++ = 0x35;
	p = emit32(p, abs32(&ctx->rflags));
	*p++ = 0x9D; /* popfd */
	p = emit_bytes(p, (const uint8_t[]){ 0x0F, 0xAE, 0x0D }, 3); /* fxrstor [fx_in] */
	p = emit32(p, abs32(page + FX_IN_OFF));
	p = emit_bytes(p, (const uint8_t[]){ 0x0F, 0xAE, 0x15 }, 3); /* ldmxcsr [mxcsr] */
	p = emit32(p, abs32(&ctx->mxcsr));
	for (unsigned r = 0; r < 8; r++) { /* movdqu xmm_r, [xmm + 16r] */
		uint8_t movdqu_load[] = { 0xF3, 0x0F, 0x6F, (uint8_t)(0x05 | (r << 3)) };

		p = emit_bytes(p, movdqu_load, 4);
		p = emit32(p, abs32(ctx->xmm[r]));
	}
	for (unsigned r = 0; r < 8; r++) { /* mov r32, [gpr + 8r] */
		*p++ = 0x8B;
		*p++ = (uint8_t)(0x05 | (r << 3));
		p = emit32(p, abs32(&ctx->gpr[r]));
	}
}

/* After a 32-bit instruction: fall-through and target blocks, the stores, back to 64 bits. */
static void build_epilogue32(unsigned insn_len)
{
	static const uint8_t restore[] = { 0x41, 0x5F, 0x41, 0x5E, 0x41, 0x5D,
					   0x41, 0x5C, 0x5D, 0x5B, 0xC3 };
	uint8_t *fall = page + INSN_OFF + insn_len, *p, *target = fall + BRANCH_DISTANCE;
	uint8_t *store = target + 10, *l64;

	for (unsigned taken = 0; taken < 2; taken++) {
		p = taken ? target : fall;
		*p++ = 0xC7; /* mov dword [taken], 0/1 */
		*p++ = 0x05;
		p = emit32(p, abs32(&ctx->branch_taken));
		p = emit32(p, taken);
		if (!taken) {
			*p++ = 0xE9; /* jmp store */
			p = emit32(p, (uint32_t)(store - (p + 4)));
			*p = 0x90;
		}
	}
	p = store;
	for (unsigned r = 0; r < 8; r++) { /* mov [gpr + 8r], r32 */
		*p++ = 0x89;
		*p++ = (uint8_t)(0x05 | (r << 3));
		p = emit32(p, abs32(&ctx->gpr[r]));
	}
	for (unsigned r = 0; r < 8; r++) { /* movdqu [xmm + 16r], xmm_r */
		uint8_t movdqu_store[] = { 0xF3, 0x0F, 0x7F, (uint8_t)(0x05 | (r << 3)) };

		p = emit_bytes(p, movdqu_store, 4);
		p = emit32(p, abs32(ctx->xmm[r]));
	}
	p = emit_bytes(p, (const uint8_t[]){ 0x0F, 0xAE, 0x1D }, 3); /* stmxcsr [mxcsr] */
	p = emit32(p, abs32(&ctx->mxcsr));
	p = emit_bytes(p, (const uint8_t[]){ 0x0F, 0xAE, 0x05 }, 3); /* fxsave [fx_out] */
	p = emit32(p, abs32(page + FX_OUT_OFF));
	p = emit_bytes(p, (const uint8_t[]){ 0xDB, 0xE3 }, 2); /* fninit: the host's x87 state */
	*p++ = 0xBC; /* mov esp, tmp stack */
	p = emit32(p, abs32(page + COMPAT_TMP_STACK));
	*p++ = 0x9C; /* pushfd */
	*p++ = 0x8F; /* pop dword [rflags] */
	*p++ = 0x05;
	p = emit32(p, abs32(&ctx->rflags));
	*p++ = 0x6A; /* push USER_CS */
	*p++ = USER_CS;
	*p++ = 0x68; /* push l64 */
	l64 = p + 4 + 1;
	p = emit32(p, abs32(l64));
	*p++ = 0xCB; /* retf (32-bit) */
	p = emit_rip_rel(p, 0x48, 0x8B, CPU_RSP, &ctx->host_rsp, 0); /* mov rsp, [host_rsp] */
	p = emit_rip_rel_0f(p, 0, 0, 0xAE, 2, &ctx->host_mxcsr); /* ldmxcsr [host_mxcsr] */
	*p++ = 0xFC; /* cld */
	emit_bytes(p, restore, sizeof(restore));
}

/* After the instruction: the fall-through block, the branch target block, then the stores. */
static void build_epilogue(unsigned insn_len)
{
	static const uint8_t restore[] = { 0x41, 0x5F, 0x41, 0x5E, 0x41, 0x5D,
					   0x41, 0x5C, 0x5D, 0x5B, 0xC3 };
	uint8_t *fall = page + INSN_OFF + insn_len, *p = fall, *target, *store;
	int32_t rel;

	p = emit_rip_rel(p, 0x48, 0xC7, 0, &ctx->branch_taken, 4); /* mov qword [taken], 0 */
	memset(p, 0, 4);
	p += 4;
	target = fall + BRANCH_DISTANCE;
	store = target + 11;
	*p++ = 0xE9; /* jmp store */
	rel = (int32_t)(store - (p + 4));
	memcpy(p, &rel, 4);
	p = target;
	p = emit_rip_rel(p, 0x48, 0xC7, 0, &ctx->branch_taken, 4); /* mov qword [taken], 1 */
	rel = 1;
	memcpy(p, &rel, 4);
	p += 4;
	for (unsigned r = 0; r < 16; r++) /* mov [gpr + 8N], rN */
		p = emit_rip_rel(p, 0x48 | (r >= 8 ? 4 : 0), 0x89, r, &ctx->gpr[r], 0);
	for (unsigned r = 0; r < 16; r++) /* movdqu [xmm + 16N], xmmN */
		p = emit_rip_rel_0f(p, 0xF3, r >= 8 ? 0x44 : 0, 0x7F, r, ctx->xmm[r]);
	p = emit_rip_rel_0f(p, 0, 0, 0xAE, 3, &ctx->mxcsr); /* stmxcsr [mxcsr] */
	p = emit_rip_rel_0f(p, 0, 0, 0xAE, 0, page + FX_OUT_OFF); /* fxsave [fx_out] */
	p = emit_bytes(p, (const uint8_t[]){ 0xDB, 0xE3 }, 2); /* fninit: the host's x87 state */
	p = emit_rip_rel_0f(p, 0, 0, 0xAE, 2, &ctx->host_mxcsr); /* ldmxcsr [host_mxcsr] */
	p = emit_rip_rel(p, 0x48, 0x8B, CPU_RSP, &ctx->host_rsp, 0); /* mov rsp, [host_rsp] */
	*p++ = 0x9C; /* pushfq */
	p = emit_rip_rel(p, 0, 0x8F, 0, &ctx->rflags, 0); /* pop qword [rflags] */
	*p++ = 0xFC; /* cld */
	emit_bytes(p, restore, sizeof(restore));
}

static uint64_t fallthrough_addr(const struct tcase *c)
{
	return (uint64_t)(uintptr_t)page + INSN_OFF + c->len;
}

static uint64_t target_addr(const struct tcase *c)
{
	return fallthrough_addr(c) + BRANCH_DISTANCE;
}

/* ---- running it ---- */

static sigjmp_buf native_jmp;

static void native_signal(int sig, siginfo_t *info, void *uc_void)
{
	/* gregs' order (sys/ucontext.h) for rax..r15 */
	static const int greg_of[16] = { REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP,
					 REG_RSI, REG_RDI, REG_R8,  REG_R9,  REG_R10, REG_R11,
					 REG_R12, REG_R13, REG_R14, REG_R15 };
	const ucontext_t *uc = uc_void;

	for (unsigned i = 0; i < 16; i++)
		native_fault.gpr[i] = (uint64_t)uc->uc_mcontext.gregs[greg_of[i]];
	native_fault.rflags = (uint64_t)uc->uc_mcontext.gregs[REG_EFL];
	native_fault.err = (uint64_t)uc->uc_mcontext.gregs[REG_ERR];
	native_fault.addr = (uint64_t)(uintptr_t)info->si_addr;
	siglongjmp(native_jmp, sig);
}

/* Returns 0, or the signal the instruction raised. */
static int run_native(const struct tcase *c)
{
	void (*volatile stub)(void) = (void (*)(void))stub_entry();
	volatile int sig;

	memcpy(page + INSN_OFF, c->code, c->len);
	if (compat)
		build_epilogue32(c->len);
	else
		build_epilogue(c->len);
	memcpy(ctx->gpr, c->gpr, sizeof(ctx->gpr));
	memcpy(ctx->xmm, c->xmm, sizeof(ctx->xmm));
	ctx->mxcsr = c->mxcsr;
	memset(page + FX_IN_OFF, 0, 512);
	memcpy(page + FX_IN_OFF, c->x87, X87_IMAGE);
	memcpy(page + FX_IN_OFF + 24, &(uint32_t){ 0x1f80 }, 4); /* a valid MXCSR for FXRSTOR */
	ctx->rflags = c->rflags;
	ctx->branch_taken = 0;
	memcpy(page + SCRATCH_OFF, c->scratch, SCRATCH_SIZE);
	if (c->sbuf_used)
		memcpy(sbuf, sbuf_init, SBUF_SIZE);
	sig = sigsetjmp(native_jmp, 0); /* SA_NODEFER: no mask to restore */
	if (sig == 0)
		stub();
	return sig;
}

struct emu_result {
	int status;
	struct emu_cpu cpu;
};

/* One instruction through emu_execute() without a specialised handler. Undecodable bytes go
 * through emu_step() for its exception. Counts the cases that emu_step() runs through a handler. */
static int step_generic(struct emu_cpu *cpu)
{
	const uint8_t *code = (const uint8_t *)(uintptr_t)cpu->s.rip; /* flat: host = linear */
	struct emu_insn insn;

	if (emu_decode(code, EMU_MAX_INSN_LEN, cpu->mode, &insn) != EMU_DECODE_OK)
		return emu_step(cpu);
	emu_fast_select(&insn, cpu->mode);
	if (insn.fast)
		fast_cases++;
	return emu_execute(cpu, &insn);
}

#define JIT_SEQ_MAX 10 /* instructions in a test_jit_sequences() case */

/* The case's instructions (c->insns, or one) decoded as cpu.c's blocks decode them, compiled
 * at once and run as emu_run() runs compiled code. */
static int run_jit(struct emu_cpu *cpu, const struct tcase *c)
{
	static struct emu_insn insn[JIT_SEQ_MAX];
	const uint8_t *code = (const uint8_t *)(uintptr_t)cpu->s.rip; /* flat: host = linear */
	unsigned n = c->insns ? c->insns : 1, pos = 0;
	struct emu_jit_ref ref = { 0 };
	emu_jit_fn fn;

	for (unsigned i = 0; i < n; i++) {
		if (emu_decode(code + pos, EMU_MAX_INSN_LEN, cpu->mode, &insn[i]) != EMU_DECODE_OK)
			return emu_step(cpu);
		emu_fast_select(&insn[i], cpu->mode);
		if (!insn[i].fast)
			insn[i].fast = emu_block_generic;
		jit_inlined += (unsigned long)emu_jit_inlines(&insn[i]);
		pos += insn[i].len;
	}
	fn = emu_jit_block(jit, &ref, insn, n);
	if (!fn)
		return -1;
	jit_cases++;
	cpu->block_exit = false;
	return emu_jit_run(fn, cpu);
}

static void run_emulator(const struct tcase *c, struct emu_result *r)
{
	static struct emu_flat_memory mem;
	static struct emu_memory_ops no_map_ops;
	struct cpu_state s;

	memset(&s, 0, sizeof(s));
	memcpy(s.gpr, c->gpr, sizeof(s.gpr));
	s.rip = (uint64_t)(uintptr_t)page + INSN_OFF;
	s.rflags = c->rflags | EMU_FLAG_IF;
	s.cr0 = CR0_PE | CR0_PG | (1ull << 1) | (1ull << 5); /* MP, NE: #MF as Linux has it */
	s.cr4 = CR4_PAE | (1ull << 9) | (1ull << 10); /* OSFXSR, OSXMMEXCPT as Linux has them */
	s.efer = EFER_LME | EFER_LMA;
	s.seg[SEG_CS] = (struct cpu_segment){ .selector = USER_CS,
					      .type = 11,
					      .present = 1,
					      .dpl = 3,
					      .s = 1,
					      .l = 1,
					      .g = 1,
					      .limit = 0xffffffff };
	if (compat) { /* as the native stub leaves them: CS 0x23, DS = ES = SS = USER_DS */
		s.seg[SEG_CS].selector = USER32_CS;
		s.seg[SEG_CS].l = 0;
		s.seg[SEG_CS].db = 1;
	}
	s.seg[SEG_SS] = (struct cpu_segment){ .selector = 0x2b, .type = 3, .present = 1, .dpl = 3,
					      .s = 1, .db = 1, .g = 1, .limit = 0xffffffff };
	if (compat)
		s.seg[SEG_DS] = s.seg[SEG_ES] = s.seg[SEG_SS];
	memset(&mem, 0, sizeof(mem));
	memcpy(emu_scratch, c->scratch, SCRATCH_SIZE);
	emu_flat_add(&mem, (uint64_t)(uintptr_t)page, page, SCRATCH_OFF, false);
	emu_flat_add(&mem, scratch_addr(0), emu_scratch, SCRATCH_SIZE, true);
	emu_flat_add(&mem, (uint64_t)(uintptr_t)sbuf, emu_sbuf, SBUF_SIZE, true);
	if (c->sbuf_used)
		memcpy(emu_sbuf, sbuf_init, SBUF_SIZE);
	if (!r->cpu.mem) {
		r->cpu.mem = &emu_flat_memory_ops;
		r->cpu.mem_opaque = &mem;
		r->cpu.code = &scratch_code;
		emu_cpu_init(&r->cpu, &s);
	}
	/* The generic path also goes element by element through REP MOVS/STOS: the same
	 * memory without the map op that their bulk path needs. */
	no_map_ops = emu_flat_memory_ops;
	no_map_ops.map = NULL;
	r->cpu.mem = generic_path ? &no_map_ops : &emu_flat_memory_ops;
	emu_cpu_set_state(&r->cpu, &s);
	memcpy(r->cpu.fx.xmm, c->xmm, sizeof(c->xmm));
	r->cpu.fx.mxcsr = c->mxcsr;
	memcpy(&r->cpu.fx, c->x87, 24);
	memcpy(r->cpu.fx.st, c->x87 + 32, sizeof(r->cpu.fx.st));
	for (unsigned i = 0; i < (c->insns ? 1 : c->max_steps) && jit_path; i++) {
		r->status = run_jit(&r->cpu, c);
		if (r->status != EMU_OK || (!c->insns && r->cpu.s.rip != s.rip))
			break;
	}
	for (unsigned i = 0; i < (c->insns ? c->insns : c->max_steps) && !jit_path; i++) {
		r->status = generic_path ? step_generic(&r->cpu) : emu_step(&r->cpu);
		if (r->status != EMU_OK || (!c->insns && r->cpu.s.rip != s.rip))
			break;
	}
	emu_flags_sync(&r->cpu);
}

static const char *reg_names[16] = { "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
				     "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15" };

static void report(const struct tcase *c, const char *what)
{
	group_failures++;
	test_failed_checks++;
	if (group_failures > 5)
		return;
	printf("FAIL - %s%s%s: %s; bytes",
	       generic_path ? "generic: "
	       : jit_path   ? "jit: "
			    : "",
	       compat ? "compat32: " : "", group_name, what);
	for (unsigned i = 0; i < c->len; i++)
		printf(" %02x", c->code[i]);
	printf("; rflags in %#llx;", (unsigned long long)c->rflags);
	for (unsigned i = 0; i < 16; i++)
		printf(" %s=%#llx", reg_names[i], (unsigned long long)c->gpr[i]);
	printf("\n");
}

/* The x87 state: FCW, FSW, abridged FTW and the 80 bits of each register, from an FXSAVE
 * image (`img`) and the emulator. FOP, FIP and FDP are not compared: what processors record
 * there varies (FOP/FDP only on unmasked exceptions, FCS/FDS deprecated). */
static bool x87_differs(const uint8_t *img, const struct emu_fxstate *fx, char *what, size_t n)
{
	uint16_t fcw, fsw;

	memcpy(&fcw, img, 2);
	memcpy(&fsw, img + 2, 2);
	if (fcw != fx->fcw || fsw != fx->fsw || img[4] != fx->ftw) {
		snprintf(what, n, "x87 fcw/fsw/ftw native %#x/%#x/%#x emulator %#x/%#x/%#x", fcw, fsw,
			 img[4], fx->fcw, fx->fsw, fx->ftw);
		return true;
	}
	for (unsigned i = 0; i < 8; i++) {
		if (memcmp(img + 32 + 16 * i, fx->st[i], 10)) {
			uint64_t nm, em;
			uint16_t ne, ee;

			memcpy(&nm, img + 32 + 16 * i, 8);
			memcpy(&ne, img + 40 + 16 * i, 2);
			memcpy(&em, fx->st[i], 8);
			memcpy(&ee, fx->st[i] + 8, 2);
			snprintf(what, n, "st%u native %04x:%016llx emulator %04x:%016llx (fsw %#x)", i,
				 ne, (unsigned long long)nm, ee, (unsigned long long)em, fsw);
			return true;
		}
	}
	return false;
}

/* The scratch (and the string pages, when the case uses them) against the native run. */
static bool memory_differs(const struct tcase *c, char *what, size_t n)
{
	for (unsigned i = 0; i < SCRATCH_SIZE; i++) {
		if (i >= c->ignore_off && i < c->ignore_off + c->ignore_len)
			continue;
		if (page[SCRATCH_OFF + i] != emu_scratch[i]) {
			snprintf(what, n, "scratch[%#x] native %#x emulator %#x", i,
				 page[SCRATCH_OFF + i], emu_scratch[i]);
			return true;
		}
	}
	if (c->sbuf_used && memcmp(sbuf, emu_sbuf, SBUF_SIZE)) {
		unsigned i = 0;

		while (sbuf[i] == emu_sbuf[i])
			i++;
		snprintf(what, n, "string pages [%#x] native %#x emulator %#x", i, sbuf[i],
			 emu_sbuf[i]);
		return true;
	}
	return false;
}

/* A native page fault in the middle of a REP string instruction: the emulator must fault
 * at the same address with the same W bit, with the native registers at the fault (the
 * iterations before it done, rCX/rSI/rDI at the faulting element) and the same memory. */
/* The first byte outside the string pages of the element at rSI or rDI of `rp`, or 0. */
static uint64_t sbuf_fault_at(const struct tcase *c, const struct emu_result *rp, unsigned reg)
{
	uint64_t la = rp->cpu.s.gpr[reg], lo = (uint64_t)(uintptr_t)sbuf, hi = lo + SBUF_SIZE;

	if (c->str_a32 || compat)
		la &= 0xffffffffull;
	if (la < lo)
		return la;
	if (la + c->str_size > hi)
		return la < hi ? hi : la;
	return 0;
}

/* Both operands of the faulting iteration (CMPS, MOVS) are outside the pages: which fault a
 * CPU reports first is not defined (the AMD EPYC host reported ES:rDI's before DS:rSI's
 * for CMPS), so the emulator's (DS:rSI first) is accepted when the host reported the other one. */
static bool other_operand_faulted(const struct tcase *c, const struct emu_result *rp)
{
	uint64_t src = sbuf_fault_at(c, rp, CPU_RSI), dst = sbuf_fault_at(c, rp, CPU_RDI);

	return src && dst && rp->cpu.exc.cr2 == src && native_fault.addr == dst;
}

static void compare_partial_fault(const struct tcase *c, const struct emu_result *rp)
{
	uint64_t mask = COMPARED_FLAGS & ~c->flags_undef;
	char what[256];

	if (rp->status != EMU_EXCEPTION || rp->cpu.exc.vector != EMU_VEC_PF ||
	    (rp->cpu.exc.cr2 != native_fault.addr && !other_operand_faulted(c, rp)) ||
	    rp->cpu.s.rip != (uint64_t)(uintptr_t)page + INSN_OFF ||
	    (rp->cpu.exc.cr2 == native_fault.addr &&
	     ((rp->cpu.exc.error_code ^ native_fault.err) & 2))) {
		snprintf(what, sizeof(what),
			 "native #PF at %#llx err %#llx, emulator status %d vector %u cr2 %#llx "
			 "err %#x",
			 (unsigned long long)native_fault.addr,
			 (unsigned long long)native_fault.err, rp->status, rp->cpu.exc.vector,
			 (unsigned long long)rp->cpu.exc.cr2, rp->cpu.exc.error_code);
		report(c, what);
		return;
	}
	for (unsigned i = 0; i < (compat ? 8u : 16u); i++) {
		uint64_t cmp_mask = compat ? 0xffffffffull : ~0ull;

		if ((native_fault.gpr[i] ^ rp->cpu.s.gpr[i]) & cmp_mask) {
			snprintf(what, sizeof(what), "at the fault: %s native %#llx emulator %#llx",
				 reg_names[i], (unsigned long long)native_fault.gpr[i],
				 (unsigned long long)rp->cpu.s.gpr[i]);
			report(c, what);
			return;
		}
	}
	if ((native_fault.rflags ^ rp->cpu.s.rflags) & mask) {
		snprintf(what, sizeof(what), "at the fault: rflags native %#llx emulator %#llx",
			 (unsigned long long)native_fault.rflags,
			 (unsigned long long)rp->cpu.s.rflags);
		report(c, what);
		return;
	}
	if (memory_differs(c, what, sizeof(what)))
		report(c, what);
}

/* Compare the emulator's run of a case with the native one (signal `sig`, 0 for none). */
static void compare_case(struct tcase *c, int sig, const struct emu_result *rp)
{
	uint64_t mask = COMPARED_FLAGS & ~c->flags_undef;
	uint64_t expect_rip;
	char what[256];

	if (sig == SIGSEGV && c->partial_fault && native_fault.addr) {
		compare_partial_fault(c, rp);
		return;
	}
	if (sig) {
		/* Linux reports #DE as SIGFPE, #UD as SIGILL and #GP (alignment) as SIGSEGV. */
		unsigned vector = sig == SIGFPE	   ? (c->fpe_is_mf   ? EMU_VEC_MF
						      : c->fpe_is_xm ? EMU_VEC_XM
								     : EMU_VEC_DE)
				  : sig == SIGILL  ? EMU_VEC_UD
				  : sig == SIGSEGV ? EMU_VEC_GP
						   : 255;

		if (rp->status == EMU_EXCEPTION && rp->cpu.exc.vector == vector &&
		    rp->cpu.s.rip == (uint64_t)(uintptr_t)page + INSN_OFF) {
			/* A fault leaves the state as it was before the instruction. */
			if (memcmp(rp->cpu.s.gpr, c->gpr, sizeof(c->gpr)) ||
			    memcmp(rp->cpu.fx.xmm, c->xmm, sizeof(c->xmm)) ||
			    ((rp->cpu.s.rflags ^ c->rflags) & COMPARED_FLAGS) ||
			    memcmp(emu_scratch, c->scratch, SCRATCH_SIZE) ||
			    (c->sbuf_used && memcmp(emu_sbuf, sbuf_init, SBUF_SIZE)) ||
			    x87_differs(c->x87, &rp->cpu.fx, what, sizeof(what)))
				report(c, "emulator changed state on a fault");
			return;
		}
		snprintf(what, sizeof(what), "native signal %d, emulator status %d vector %u", sig,
			 rp->status, rp->cpu.exc.vector);
		report(c, what);
		return;
	}
	if (rp->status != EMU_OK) {
		snprintf(what, sizeof(what), "emulator status %d vector %u (native ran)", rp->status,
			 rp->cpu.exc.vector);
		report(c, what);
		return;
	}
	for (unsigned i = 0; i < (compat ? 8u : 16u); i++) {
		uint64_t cmp_mask = compat ? 0xffffffffull : ~0ull;

		if ((ctx->gpr[i] ^ rp->cpu.s.gpr[i]) & cmp_mask) {
			snprintf(what, sizeof(what), "%s native %#llx emulator %#llx", reg_names[i],
				 (unsigned long long)ctx->gpr[i],
				 (unsigned long long)rp->cpu.s.gpr[i]);
			report(c, what);
			return;
		}
	}
	if ((ctx->rflags ^ rp->cpu.s.rflags) & mask) {
		snprintf(what, sizeof(what), "rflags native %#llx emulator %#llx (compared %#llx)",
			 (unsigned long long)ctx->rflags, (unsigned long long)rp->cpu.s.rflags,
			 (unsigned long long)mask);
		report(c, what);
		return;
	}
	for (unsigned i = 0; i < (compat ? 8u : 16u); i++) {
		if (memcmp(ctx->xmm[i], rp->cpu.fx.xmm[i], 16)) {
			uint64_t n[2], e[2];

			memcpy(n, ctx->xmm[i], 16);
			memcpy(e, rp->cpu.fx.xmm[i], 16);
			snprintf(what, sizeof(what),
				 "xmm%u native %016llx%016llx emulator %016llx%016llx", i,
				 (unsigned long long)n[1], (unsigned long long)n[0],
				 (unsigned long long)e[1], (unsigned long long)e[0]);
			report(c, what);
			return;
		}
	}
	if (x87_differs(page + FX_OUT_OFF, &rp->cpu.fx, what, sizeof(what))) {
		report(c, what);
		return;
	}
	if (ctx->mxcsr != rp->cpu.fx.mxcsr) {
		snprintf(what, sizeof(what), "mxcsr native %#x emulator %#x", ctx->mxcsr,
			 rp->cpu.fx.mxcsr);
		report(c, what);
		return;
	}
	expect_rip = ctx->branch_taken ? target_addr(c) : fallthrough_addr(c);
	if (rp->cpu.s.rip != expect_rip) {
		snprintf(what, sizeof(what), "rip native %#llx emulator %#llx",
			 (unsigned long long)expect_rip, (unsigned long long)rp->cpu.s.rip);
		report(c, what);
		return;
	}
	if (memory_differs(c, what, sizeof(what)))
		report(c, what);
}

/* ---- where Intel and AMD differ ----
 *
 * Found when this test first ran on an Intel host (a Xeon of family 6, model 207, with ERMS
 * and FSRM) after running on an AMD EPYC; the Intel behaviour is checked against that host:
 *  - REP MOVS/CMPS/STOS/LODS/SCAS with 32-bit addresses (67) in 64-bit mode: Intel writes ECX
 *    (clearing RCX's upper half), and MOVS ESI and EDI, STOS EDI, as they are before the
 *    first iteration, so also with a zero count and when the first iteration faults; AMD
 *    writes them only with the iterations, as the SDM's pseudo-code does.
 *  - REPE/REPNE CMPS/SCAS stopped by a fault after some iterations: Intel's fault frame has
 *    the arithmetic flags of before the instruction (the SDM's REP page says so), AMD's those
 *    of the last iteration done. */
static bool host_intel;

/* The opcode (A4..AF) of a case that is one REP string instruction, and whether it has a 67
 * prefix; 0 for any other case. */
static unsigned rep_string_op(const struct tcase *c, bool *a67)
{
	static const uint8_t legacy[] = { 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0xF0 };
	bool rep = false;
	unsigned i;

	*a67 = false;
	if (c->insns)
		return 0;
	for (i = 0; i < c->len; i++) {
		if (c->code[i] == 0xF2 || c->code[i] == 0xF3)
			rep = true;
		else if (c->code[i] == 0x67)
			*a67 = true;
		else if (!memchr(legacy, c->code[i], sizeof(legacy)))
			break;
	}
	if (!compat && i < c->len && (c->code[i] & 0xF0) == 0x40) /* REX */
		i++;
	if (!rep || i >= c->len || c->code[i] < 0xA4 || c->code[i] > 0xAF)
		return 0;
	return c->code[i];
}

/* On a host that is not Intel: the native results of the case (signal `sig`) as an Intel CPU
 * would have left them. After Intel's writes of ECX/ESI/EDI the upper halves are clear
 * whether or not iterations ran; the flags at a fault are the case's own. */
static void intel_reference(const struct tcase *c, int sig)
{
	bool a67;
	unsigned op = rep_string_op(c, &a67);
	bool partial = sig == SIGSEGV && c->partial_fault && native_fault.addr;
	uint64_t *gpr = partial ? native_fault.gpr : ctx->gpr;

	if (host_intel || !op || (sig && !partial))
		return;
	if (a67 && !compat) {
		gpr[CPU_RCX] &= 0xffffffffull;
		if (op <= 0xA5)
			gpr[CPU_RSI] &= 0xffffffffull;
		if (op <= 0xA5 || op == 0xAA || op == 0xAB)
			gpr[CPU_RDI] &= 0xffffffffull;
	}
	if (partial && (op == 0xA6 || op == 0xA7 || op == 0xAE || op == 0xAF))
		native_fault.rflags =
			(native_fault.rflags & ~COMPARED_FLAGS) | (c->rflags & COMPARED_FLAGS);
}

/* Run one case natively and in the emulator both ways (emu_step() with the specialised
 * handlers, emu_execute() alone), and compare each with the native run. */
static void check_case(struct tcase *c)
{
	static struct emu_result r;
	unsigned failures = group_failures;
	int sig;

	group_cases++;
	total_cases++;
	sig = run_native(c);
	intel_reference(c, sig);
	generic_path = false;
	run_emulator(c, &r);
	compare_case(c, sig, &r);
	if (group_failures != failures)
		return; /* one report per case */
	generic_path = true;
	run_emulator(c, &r);
	compare_case(c, sig, &r);
	generic_path = false;
	if (compat || group_failures != failures)
		return; /* the JIT compiles 64-bit blocks only */
	jit_path = true;
	run_emulator(c, &r);
	compare_case(c, sig, &r);
	jit_path = false;
}

/* ---- encoding instructions ---- */

struct operand {
	bool mem;
	unsigned reg; /* register operand, 0..15 */
	unsigned size; /* memory operand size (for placing it inside the scratch) */
	uint64_t value; /* initial memory value */
	bool rip_rel_ok; /* may use RIP-relative addressing */
	unsigned adsize; /* 8, or 4 with a 67 prefix */
	unsigned min_off, max_off; /* keep the operand in [min_off, max_off) (0: DATA_SIZE) */
	unsigned align; /* alignment of the operand's address (0: any) */
};

struct insn_spec {
	uint8_t prefix[4];
	unsigned nr_prefix;
	uint8_t rex; /* REX bits beyond R/X/B (W, or 0x40 alone to force one) */
	uint8_t op[3];
	unsigned nr_op;
	bool modrm;
	unsigned reg; /* ModRM.reg: register 0..15 or an opcode extension */
	struct operand rm;
	unsigned imm_size;
	uint64_t imm;
};

/* A register number: 0..15, or 0..7 in compatibility mode (no REX there). */
static unsigned rnd_reg(void)
{
	return rnd_below(compat ? 8 : 16);
}

static unsigned pick_free_reg(struct tcase *c)
{
	unsigned r;

	do
		r = rnd_reg();
	while (c->used & (1u << r));
	c->used |= 1u << r;
	return r;
}

/* Encode `s` into c->code, choosing address registers and their values for a memory operand
 * so that it lands in the scratch buffer. */
static void encode(struct tcase *c, struct insn_spec *s)
{
	uint8_t *p = c->code, rex = s->rex;
	uint8_t modrm = 0, sib = 0;
	bool has_sib = false, rip_rel = false;
	unsigned disp_size = 0, base = 0, index = 4, scale = 0;
	int64_t disp = 0;
	uint64_t target = 0;
	uint8_t *disp_at;

	if (s->rm.adsize == 4)
		s->prefix[s->nr_prefix++] = 0x67;
	/* Now and then a segment override 64-bit mode ignores (ES, CS, SS, DS: base 0). In
	 * compatibility mode they are flat data segments there, except CS: code is not writable
	 * and the emulator does not check segment types and limits yet. */
	if (rnd_below(8) == 0)
		*p++ = (uint8_t[]){ 0x26, 0x3E, 0x36, 0x2E }[rnd_below(compat ? 3 : 4)];
	p = emit_bytes(p, s->prefix, s->nr_prefix);
	if (s->modrm) {
		if (s->reg & 8)
			rex |= 0x44;
		if (!s->rm.mem) {
			modrm = (uint8_t)(0xC0 | ((s->reg & 7) << 3) | (s->rm.reg & 7));
			if (s->rm.reg & 8)
				rex |= 0x41;
		} else {
			unsigned max = s->rm.max_off ? s->rm.max_off : DATA_SIZE;
			unsigned off =
				s->rm.min_off + rnd_below(max - s->rm.min_off - s->rm.size + 1);

			if (s->rm.align)
				off &= ~(s->rm.align - 1);
			unsigned kind = rnd_below(s->rm.rip_rel_ok ? 6 : 5);
			uint64_t idx_val = 0;

			target = scratch_addr(off);
			c->mem_off = off;
			/* the value fills up to 8 bytes; wider operands keep random bytes above */
			memcpy(c->scratch + off, &s->rm.value, s->rm.size < 8 ? s->rm.size : 8);
			disp = (int64_t)rnd_below(3) == 0 ? 0 : (int64_t)rnd_below(256) - 128;
			if (rnd_below(4) == 0)
				disp = (int64_t)(int32_t)rnd() >> rnd_below(20);
			if (kind == 5) { /* RIP-relative */
				rip_rel = true;
				modrm = (uint8_t)(((s->reg & 7) << 3) | 5);
				disp_size = 4;
			} else if (kind == 4) { /* absolute disp32, SIB without base or index */
				modrm = (uint8_t)(((s->reg & 7) << 3) | 4);
				sib = 0x25;
				has_sib = true;
				disp = (int64_t)target;
				disp_size = 4;
			} else {
				base = pick_free_reg(c);
				if (kind >= 2) { /* with an index */
					index = pick_free_reg(c);
					scale = rnd_below(4);
					idx_val = rnd_below(64);
					c->gpr[index] = idx_val;
					if (s->rm.adsize == 4) /* upper bits are ignored */
						c->gpr[index] |= rnd() << 32;
				}
				c->gpr[base] = target - disp - (idx_val << scale);
				if (s->rm.adsize == 4)
					c->gpr[base] = (c->gpr[base] & 0xffffffff) | (rnd() << 32);
				if (base & 8)
					rex |= 0x41;
				if (index != 4 && (index & 8))
					rex |= 0x42;
				if (disp == 0 && (base & 7) != 5)
					disp_size = 0;
				else if (disp >= -128 && disp < 128)
					disp_size = 1;
				else
					disp_size = 4;
				modrm = (uint8_t)((disp_size == 0   ? 0
						   : disp_size == 1 ? 0x40
								    : 0x80) |
						  ((s->reg & 7) << 3));
				if (index != 4 || (base & 7) == 4) {
					has_sib = true;
					modrm |= 4;
					sib = (uint8_t)((scale << 6) | ((index & 7) << 3) |
							(base & 7));
				} else {
					modrm |= base & 7;
				}
			}
		}
	}
	if (rex)
		*p++ = rex | 0x40;
	p = emit_bytes(p, s->op, s->nr_op);
	if (s->modrm) {
		*p++ = modrm;
		if (has_sib)
			*p++ = sib;
	}
	disp_at = p;
	p += disp_size;
	for (unsigned i = 0; i < s->imm_size; i++)
		*p++ = (uint8_t)(s->imm >> (8 * i));
	c->len = (unsigned)(p - c->code);
	if (rip_rel)
		disp = (int64_t)(target - (uint64_t)(uintptr_t)(page + INSN_OFF + c->len));
	for (unsigned i = 0; i < disp_size; i++)
		disp_at[i] = (uint8_t)((uint64_t)disp >> (8 * i));
}

/* A ModRM r/m operand: a register (value set) or memory (placed in the scratch). */
static struct operand rm_operand(struct tcase *c, bool mem, unsigned size, unsigned *reg_out)
{
	struct operand o = { .mem = mem, .size = size, .value = rnd_value(size),
			     .rip_rel_ok = true, .adsize = 8 };

	if (!mem) {
		o.reg = rnd_reg();
		if (o.reg == CPU_RSP && rnd_below(2))
			o.reg = CPU_RBX;
		*reg_out = o.reg;
		c->used |= 1u << o.reg;
	} else if (rnd_below(8) == 0 && !compat) { /* 67 in compat mode: 16-bit addresses */
		o.adsize = 4;
	}
	if (compat)
		o.rip_rel_ok = false; /* mod 00 rm 101 is an absolute disp32 there */
	return o;
}

static void spec_init(struct insn_spec *s, unsigned size)
{
	memset(s, 0, sizeof(*s));
	if (size == 2)
		s->prefix[s->nr_prefix++] = 0x66;
	if (size == 8)
		s->rex = 0x48;
	if (size == 1 && rnd_below(4) == 0 && !compat)
		s->rex = 0x40; /* SPL/BPL/SIL/DIL instead of AH..BH */
}

static void spec_op(struct insn_spec *s, unsigned a, int b)
{
	s->op[s->nr_op++] = (uint8_t)a;
	if (b >= 0)
		s->op[s->nr_op++] = (uint8_t)b;
}

/* Opcode + ModRM with reg = register or /digit, r/m = register or memory of `size`. */
static void build_modrm(struct tcase *c, struct insn_spec *s, bool mem, unsigned size,
			unsigned reg)
{
	unsigned rmreg;

	s->modrm = true;
	s->reg = reg;
	s->rm = rm_operand(c, mem, size, &rmreg);
}

static unsigned imm_bytes_z(unsigned size)
{
	return size == 1 ? 1 : size == 2 ? 2 : 4;
}

static const unsigned sizes[4] = { 1, 2, 4, 8 };

/* sizes[i & 3], with 8 → 4 in compatibility mode (no 64-bit operands there). */
static unsigned size_at(unsigned i)
{
	unsigned size = sizes[i & 3];

	return compat && size == 8 ? 4 : size;
}

static void group_begin(const char *name)
{
	group_name = name;
	group_cases = group_failures = 0;
	test_failed_checks = 0;
}

static void group_end(void)
{
	const char *mode = compat ? "compat32: " : "";

	if (group_failures)
		printf("FAIL - %s%s: %u of %u cases differ\n", mode, group_name, group_failures,
		       group_cases);
	else
		printf("ok - %s%s (%u cases)\n", mode, group_name, group_cases);
	if (group_failures)
		test_total_failed++;
}

static unsigned iters = 64;

/* ---- instruction groups ---- */

static const char *alu_names[8] = { "add", "or", "adc", "sbb", "and", "sub", "xor", "cmp" };

static uint64_t logic_undef(unsigned op)
{
	return (op == 1 || op == 4 || op == 6) ? EMU_FLAG_AF : 0;
}

static void test_alu(void)
{
	char name[64];

	for (unsigned op = 0; op < 8; op++) {
		snprintf(name, sizeof(name), "%s (00-3F, 80-83 forms)", alu_names[op]);
		group_begin(name);
		for (unsigned n = 0; n < iters; n++) {
			for (unsigned si = 0; si < 4; si++) {
				unsigned size = size_at(si);

				/* form 0-3: Eb,Gb Ev,Gv Gb,Eb Gv,Ev; 4/5 acc,imm; 80/81/83 */
				for (unsigned form = 0; form < 8; form++) {
					struct tcase c;
					struct insn_spec s;
					bool mem = rnd_below(2);

					case_init(&c);
					spec_init(&s, size);
					if (form < 4) {
						unsigned reg = pick_free_reg(&c);

						c.gpr[reg] = rnd_value(8);
						spec_op(&s, op * 8 + (form & 2) + (size > 1), -1);
						build_modrm(&c, &s, mem, size, reg);
					} else if (form == 4) {
						spec_op(&s, op * 8 + 4 + (size > 1), -1);
						s.imm_size = imm_bytes_z(size);
						s.imm = rnd_value(8);
					} else if (form == 5) {
						spec_op(&s, 0x80 + (size > 1), -1);
						build_modrm(&c, &s, mem, size, op);
						s.imm_size = imm_bytes_z(size);
						s.imm = rnd_value(8);
					} else if (form == 6 && size > 1) {
						spec_op(&s, 0x83, -1);
						build_modrm(&c, &s, mem, size, op);
						s.imm_size = 1;
						s.imm = rnd_value(1);
					} else {
						continue;
					}
					if (rnd_below(8) == 0 && s.rm.mem && op != 7 && form != 2 &&
					    form != 3)
						s.prefix[s.nr_prefix++] = 0xF0; /* LOCK */
					encode(&c, &s);
					c.flags_undef = logic_undef(op);
					check_case(&c);
				}
			}
		}
		group_end();
	}
}

/* TEST (84/85, A8/A9, F6/F7 /0), NOT, NEG, INC, DEC */
static void test_unary(void)
{
	static const struct {
		const char *name;
		unsigned kind;
	} forms[] = { { "test", 0 }, { "not (F6/F7 /2)", 1 }, { "neg (F6/F7 /3)", 2 },
		      { "inc (FE/FF /0)", 3 }, { "dec (FE/FF /1)", 4 } };

	for (unsigned f = 0; f < 5; f++) {
		group_begin(forms[f].name);
		for (unsigned n = 0; n < iters * 4; n++) {
			unsigned size = size_at(n);
			struct tcase c;
			struct insn_spec s;
			bool mem = rnd_below(2);

			case_init(&c);
			spec_init(&s, size);
			switch (forms[f].kind) {
			case 0:
				switch (rnd_below(3)) {
				case 0: {
					unsigned reg = pick_free_reg(&c);

					spec_op(&s, 0x84 + (size > 1), -1);
					build_modrm(&c, &s, mem, size, reg);
					break;
				}
				case 1:
					spec_op(&s, 0xA8 + (size > 1), -1);
					s.imm_size = imm_bytes_z(size);
					s.imm = rnd_value(8);
					break;
				default:
					spec_op(&s, 0xF6 + (size > 1), -1);
					build_modrm(&c, &s, mem, size, rnd_below(2));
					s.imm_size = imm_bytes_z(size);
					s.imm = rnd_value(8);
					break;
				}
				c.flags_undef = EMU_FLAG_AF;
				break;
			case 1:
			case 2:
				spec_op(&s, 0xF6 + (size > 1), -1);
				build_modrm(&c, &s, mem, size, forms[f].kind + 1);
				break;
			default:
				spec_op(&s, 0xFE + (size > 1), -1);
				build_modrm(&c, &s, mem, size, forms[f].kind - 3);
				break;
			}
			if (forms[f].kind && mem && rnd_below(8) == 0)
				s.prefix[s.nr_prefix++] = 0xF0;
			encode(&c, &s);
			check_case(&c);
		}
		group_end();
	}
}

static unsigned rnd_count(unsigned size)
{
	static const unsigned edges[] = {
		0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255
	};

	(void)size;
	if (rnd_below(2))
		return edges[rnd_below(16)];
	return (unsigned)rnd() & 0xff;
}

static const char *shift_names[8] = { "rol", "ror", "rcl", "rcr", "shl", "shr", "sal (/6)",
				      "sar" };

static void test_shifts(void)
{
	char name[64];

	for (unsigned op = 0; op < 8; op++) {
		snprintf(name, sizeof(name), "%s (C0/C1/D0-D3)", shift_names[op]);
		group_begin(name);
		for (unsigned n = 0; n < iters * 6; n++) {
			unsigned size = size_at(n), bits = 8 * size, form = rnd_below(3), count;
			unsigned masked;
			struct tcase c;
			struct insn_spec s;
			bool mem = rnd_below(2);

			case_init(&c);
			spec_init(&s, size);
			c.used |= 1u << CPU_RCX;
			count = rnd_count(size);
			if (form == 0) { /* C0/C1 ib */
				spec_op(&s, 0xC0 + (size > 1), -1);
				s.imm_size = 1;
				s.imm = count;
			} else if (form == 1) { /* D0/D1: by 1 */
				spec_op(&s, 0xD0 + (size > 1), -1);
				count = 1;
			} else { /* D2/D3: by CL */
				spec_op(&s, 0xD2 + (size > 1), -1);
				c.gpr[CPU_RCX] = (rnd() & ~0xffull) | count;
			}
			build_modrm(&c, &s, mem, size, op);
			if (!mem && s.rm.reg == CPU_RCX) /* keep CL the count */
				s.rm.reg = CPU_RDX;
			encode(&c, &s);
			masked = count & (size == 8 ? 63 : 31);
			if (op <= 3) {
				if (masked != 1)
					c.flags_undef = EMU_FLAG_OF;
			} else {
				c.flags_undef = EMU_FLAG_AF;
				if (masked != 1)
					c.flags_undef |= EMU_FLAG_OF;
				if (masked >= bits && op != 7)
					c.flags_undef |= EMU_FLAG_CF;
			}
			check_case(&c);
		}
		group_end();
	}
}

static void test_shift_double(void)
{
	group_begin("shld/shrd (0F A4/A5/AC/AD)");
	for (unsigned n = 0; n < iters * 16; n++) {
		unsigned size = size_at(1 + n % 3),
			 op = 0xA4 + (rnd_below(2) ? 8 : 0) + rnd_below(2);
		unsigned count, masked, reg;
		struct tcase c;
		struct insn_spec s;
		bool mem = rnd_below(2);

		case_init(&c);
		spec_init(&s, size);
		c.used |= 1u << CPU_RCX;
		count = rnd_count(size);
		masked = count & (size == 8 ? 63 : 31);
		if (size == 2 && masked > 16)
			count = masked = 16; /* result undefined above the operand size */
		reg = pick_free_reg(&c);
		spec_op(&s, 0x0F, (int)op);
		build_modrm(&c, &s, mem, size, reg);
		if (!mem && s.rm.reg == CPU_RCX)
			s.rm.reg = CPU_RDX;
		if (op & 1) {
			c.gpr[CPU_RCX] = (rnd() & ~0xffull) | count;
		} else {
			s.imm_size = 1;
			s.imm = count;
		}
		encode(&c, &s);
		c.flags_undef = EMU_FLAG_AF | (masked != 1 ? EMU_FLAG_OF : 0);
		check_case(&c);
	}
	group_end();
}

static void test_muldiv(void)
{
	static const char *names[4] = { "mul (F6/F7 /4)", "imul (F6/F7 /5)", "div (F6/F7 /6)",
					"idiv (F6/F7 /7)" };

	for (unsigned op = 4; op < 8; op++) {
		group_begin(names[op - 4]);
		for (unsigned n = 0; n < iters * 8; n++) {
			unsigned size = size_at(n);
			struct tcase c;
			struct insn_spec s;
			bool mem = rnd_below(2);

			case_init(&c);
			spec_init(&s, size);
			c.used |= (1u << CPU_RAX) | (1u << CPU_RDX);
			if (op >= 6 && rnd_below(2)) {
				/* Mostly avoid #DE: a small high half. */
				c.gpr[CPU_RDX] = rnd_below(2) ? 0 : (rnd() & ~emu_size_mask(size));
				if (size == 1)
					c.gpr[CPU_RAX] &= ~0xff00ull;
				if (op == 7 && rnd_below(2)) { /* sign-extended dividend */
					uint64_t lo = c.gpr[CPU_RAX];
					bool neg = lo & emu_sign_bit(size);

					if (size == 1)
						c.gpr[CPU_RAX] =
							(lo & ~0xff00ull) | (neg ? 0xff00 : 0);
					else
						c.gpr[CPU_RDX] = neg ? ~0ull : 0;
				}
			}
			spec_op(&s, 0xF6 + (size > 1), -1);
			build_modrm(&c, &s, mem, size, op);
			if (!mem && (s.rm.reg == CPU_RAX || s.rm.reg == CPU_RDX) && rnd_below(2))
				s.rm.reg = CPU_RBX;
			encode(&c, &s);
			c.flags_undef =
				op <= 5 ? EMU_FLAG_SF | EMU_FLAG_ZF | EMU_FLAG_AF | EMU_FLAG_PF
					: EMU_FLAGS_ARITH;
			check_case(&c);
		}
		group_end();
	}
	group_begin("imul (0F AF, 69, 6B)");
	for (unsigned n = 0; n < iters * 12; n++) {
		unsigned size = size_at(1 + n % 3), form = rnd_below(3);
		struct tcase c;
		struct insn_spec s;
		unsigned reg;

		case_init(&c);
		spec_init(&s, size);
		reg = pick_free_reg(&c);
		if (form == 0)
			spec_op(&s, 0x0F, 0xAF);
		else
			spec_op(&s, form == 1 ? 0x69 : 0x6B, -1);
		build_modrm(&c, &s, rnd_below(2), size, reg);
		if (form) {
			s.imm_size = form == 1 ? imm_bytes_z(size) : 1;
			s.imm = rnd_value(8);
		}
		encode(&c, &s);
		c.flags_undef = EMU_FLAG_SF | EMU_FLAG_ZF | EMU_FLAG_AF | EMU_FLAG_PF;
		check_case(&c);
	}
	group_end();
}

/* MOV 88-8B, B0-BF, C6/C7, A0-A3, 8C */
static void test_mov(void)
{
	group_begin("mov (88-8C, A0-A3, B0-BF, C6/C7)");
	for (unsigned n = 0; n < iters * 16; n++) {
		unsigned size = size_at(n), form = rnd_below(6), reg;
		struct tcase c;
		struct insn_spec s;

		case_init(&c);
		spec_init(&s, size);
		switch (form) {
		case 0: /* 88/89/8A/8B */
			reg = pick_free_reg(&c);
			spec_op(&s, 0x88 + 2 * rnd_below(2) + (size > 1), -1);
			build_modrm(&c, &s, rnd_below(2), size, reg);
			break;
		case 1: /* B0+r / B8+r */
			reg = rnd_reg();
			if (reg & 8)
				s.rex |= 0x41;
			spec_op(&s, (size == 1 ? 0xB0 : 0xB8) + (reg & 7), -1);
			s.imm_size = size;
			s.imm = rnd_value(8);
			break;
		case 2: /* C6/C7 /0 */
			spec_op(&s, 0xC6 + (size > 1), -1);
			build_modrm(&c, &s, rnd_below(2), size, 0);
			s.imm_size = imm_bytes_z(size);
			s.imm = rnd_value(8);
			break;
		case 3: { /* A0-A3 moffs */
			unsigned off = rnd_below(DATA_SIZE - 8), asz = rnd_below(4) ? 8 : 4;

			if (compat)
				asz = 4; /* the default there; 67 would make it 16 bits */
			else if (asz == 4)
				s.prefix[s.nr_prefix++] = 0x67;
			spec_op(&s, 0xA0 + 2 * rnd_below(2) + (size > 1), -1);
			s.imm_size = asz;
			s.imm = scratch_addr(off);
			break;
		}
		case 4: /* 8C: MOV r/m, Sreg */
			if (size == 1)
				size = 2, s.rex &= ~0x40;
			spec_op(&s, 0x8C, -1);
			build_modrm(&c, &s, rnd_below(2), size, rnd_below(6));
			if (s.rm.mem && s.nr_prefix && s.prefix[0] == 0x66 && rnd_below(2))
				s.nr_prefix = 0;
			break;
		default: /* LEA */
			if (size == 1)
				break;
			reg = pick_free_reg(&c);
			spec_op(&s, 0x8D, -1);
			build_modrm(&c, &s, true, size, reg);
			break;
		}
		if (form == 5 && size == 1)
			continue;
		encode(&c, &s);
		check_case(&c);
	}
	group_end();
}

/* MOVZX/MOVSX 0F B6/B7/BE/BF, MOVSXD 63, CBW..CQO 98/99, BSWAP, XLAT */
static void test_extend(void)
{
	group_begin("movzx/movsx/movsxd/cbw/cwd/bswap/xlat");
	for (unsigned n = 0; n < iters * 16; n++) {
		unsigned size = size_at(1 + n % 3), form = rnd_below(6), reg;
		struct tcase c;
		struct insn_spec s;

		case_init(&c);
		spec_init(&s, size);
		switch (form) {
		case 0: { /* MOVZX/MOVSX */
			unsigned op = (rnd_below(2) ? 0xB6 : 0xBE) + rnd_below(2);

			reg = pick_free_reg(&c);
			spec_op(&s, 0x0F, (int)op);
			if (!(op & 1) && rnd_below(3) == 0 && !compat)
				s.rex |= 0x40;
			build_modrm(&c, &s, rnd_below(2), (op & 1) ? 2 : 1, reg);
			break;
		}
		case 1: /* MOVSXD (ARPL in compatibility mode: not tested) */
			if (compat)
				continue;
			reg = pick_free_reg(&c);
			spec_op(&s, 0x63, -1);
			build_modrm(&c, &s, rnd_below(2), size == 8 ? 4 : size, reg);
			break;
		case 2:
			spec_op(&s, 0x98 + rnd_below(2), -1);
			break;
		case 3: /* BSWAP r32/r64 (16-bit is undefined) */
			if (size == 2)
				s.nr_prefix = 0; /* 32-bit instead */
			reg = rnd_reg();
			if (reg & 8)
				s.rex |= 0x41;
			spec_op(&s, 0x0F, 0xC8 + (int)(reg & 7));
			break;
		case 4: { /* XLAT */
			unsigned off = rnd_below(DATA_SIZE - 256);

			s.nr_prefix = 0;
			c.used |= (1u << CPU_RBX) | (1u << CPU_RAX);
			c.gpr[CPU_RBX] = scratch_addr(off);
			spec_op(&s, 0xD7, -1);
			break;
		}
		default: /* XCHG with rAX, 90+r */
			reg = rnd_reg();
			if (reg & 8)
				s.rex |= 0x41;
			spec_op(&s, 0x90 + (reg & 7), -1);
			break;
		}
		encode(&c, &s);
		check_case(&c);
	}
	group_end();
}

/* XCHG 86/87, CMPXCHG 0F B0/B1, XADD 0F C0/C1 */
static void test_exchange(void)
{
	static const char *names[3] = { "xchg (86/87)", "cmpxchg (0F B0/B1)", "xadd (0F C0/C1)" };

	for (unsigned g = 0; g < 3; g++) {
		group_begin(names[g]);
		for (unsigned n = 0; n < iters * 8; n++) {
			unsigned size = size_at(n), reg;
			struct tcase c;
			struct insn_spec s;
			bool mem = rnd_below(2);

			case_init(&c);
			spec_init(&s, size);
			if (g == 1)
				c.used |= 1u << CPU_RAX;
			reg = pick_free_reg(&c);
			if (g == 0)
				spec_op(&s, 0x86 + (size > 1), -1);
			else
				spec_op(&s, 0x0F, (g == 1 ? 0xB0 : 0xC0) + (size > 1));
			build_modrm(&c, &s, mem, size, reg);
			if (g == 1 && rnd_below(2)) { /* make the comparison succeed */
				if (mem)
					c.gpr[CPU_RAX] = (c.gpr[CPU_RAX] & ~emu_size_mask(size)) |
							 (s.rm.value & emu_size_mask(size));
				else
					c.gpr[CPU_RAX] = c.gpr[s.rm.reg];
			}
			if (mem && rnd_below(4) == 0)
				s.prefix[s.nr_prefix++] = 0xF0;
			encode(&c, &s);
			check_case(&c);
		}
		group_end();
	}
}

/* CMPXCHG8B/CMPXCHG16B (0F C7 /1) */
static void test_cmpxchg_wide(void)
{
	group_begin("cmpxchg8b/cmpxchg16b (0F C7 /1)");
	for (unsigned n = 0; n < iters * 8; n++) {
		bool wide = (n & 1) && !compat; /* CMPXCHG16B needs REX.W */
		struct tcase c;
		struct insn_spec s;

		case_init(&c);
		spec_init(&s, wide ? 8 : 4);
		c.used |= (1u << CPU_RAX) | (1u << CPU_RDX) | (1u << CPU_RBX) | (1u << CPU_RCX);
		spec_op(&s, 0x0F, 0xC7);
		build_modrm(&c, &s, true, 16, 1);
		s.rm.align = wide ? 16 : 1;
		if (rnd_below(4))
			s.prefix[s.nr_prefix++] = 0xF0;
		encode(&c, &s);
		if (rnd_below(2)) { /* make it succeed */
			memcpy(&c.gpr[CPU_RAX], c.scratch + c.mem_off, wide ? 8 : 4);
			memcpy(&c.gpr[CPU_RDX], c.scratch + c.mem_off + (wide ? 8 : 4),
			       wide ? 8 : 4);
		}
		check_case(&c);
	}
	group_end();
}

/* BT/BTS/BTR/BTC with a register offset and with imm8 */
static void test_bit_test(void)
{
	static const char *names[4] = { "bt (0F A3, 0F BA /4)", "bts (0F AB, 0F BA /5)",
					"btr (0F B3, 0F BA /6)", "btc (0F BB, 0F BA /7)" };

	for (unsigned op = 0; op < 4; op++) {
		group_begin(names[op]);
		for (unsigned n = 0; n < iters * 8; n++) {
			unsigned size = size_at(1 + n % 3), reg;
			struct tcase c;
			struct insn_spec s;
			bool mem = rnd_below(2);

			case_init(&c);
			spec_init(&s, size);
			if (rnd_below(2)) {
				reg = pick_free_reg(&c);
				spec_op(&s, 0x0F, 0xA3 + 8 * (int)op);
				/* Memory: a bit offset within ±256 bits of the operand. */
				if (mem)
					c.gpr[reg] =
						(uint64_t)((int64_t)rnd_below(512) - 256) ^
						(rnd_below(2) ? (rnd() << 16 & ~emu_size_mask(size))
							      : 0);
				build_modrm(&c, &s, mem, size, reg);
				s.rm.min_off = 64;
				s.rm.max_off = DATA_SIZE - 64;
			} else {
				spec_op(&s, 0x0F, 0xBA);
				build_modrm(&c, &s, mem, size, 4 + op);
				s.imm_size = 1;
				s.imm = rnd();
			}
			if (op && mem && rnd_below(4) == 0)
				s.prefix[s.nr_prefix++] = 0xF0;
			encode(&c, &s);
			c.flags_undef = EMU_FLAG_OF | EMU_FLAG_SF | EMU_FLAG_AF | EMU_FLAG_PF;
			check_case(&c);
		}
		group_end();
	}
}

/* BSF/BSR 0F BC/BD, POPCNT F3 0F B8 */
static void test_bit_scan(void)
{
	static const char *names[3] = { "bsf (0F BC)", "bsr (0F BD)", "popcnt (F3 0F B8)" };

	for (unsigned g = 0; g < 3; g++) {
		group_begin(names[g]);
		for (unsigned n = 0; n < iters * 8; n++) {
			unsigned size = size_at(1 + n % 3), reg;
			struct tcase c;
			struct insn_spec s;

			case_init(&c);
			spec_init(&s, size);
			if (g == 2) {
				memmove(s.prefix + 1, s.prefix, s.nr_prefix);
				s.prefix[0] = 0xF3; /* 66 F3 or F3 alone; REX stays last */
				s.nr_prefix++;
			}
			reg = pick_free_reg(&c);
			spec_op(&s, 0x0F, g == 2 ? 0xB8 : 0xBC + (int)g);
			build_modrm(&c, &s, rnd_below(2), size, reg);
			if (rnd_below(4) == 0) { /* a zero source */
				s.rm.value &= ~emu_size_mask(size);
				if (!s.rm.mem)
					c.gpr[s.rm.reg] &= ~emu_size_mask(size);
			}
			encode(&c, &s);
			if (g < 2)
				c.flags_undef = EMU_FLAG_CF | EMU_FLAG_OF | EMU_FLAG_SF |
						EMU_FLAG_AF | EMU_FLAG_PF;
			check_case(&c);
		}
		group_end();
	}
}

/* SETcc, CMOVcc: all 16 conditions with random flags */
static void test_conditional(void)
{
	group_begin("setcc (0F 90-9F)");
	for (unsigned n = 0; n < iters * 16; n++) {
		struct tcase c;
		struct insn_spec s;

		case_init(&c);
		spec_init(&s, 1);
		spec_op(&s, 0x0F, 0x90 + (int)(n & 15));
		build_modrm(&c, &s, rnd_below(2), 1, rnd_below(8));
		encode(&c, &s);
		check_case(&c);
	}
	group_end();
	group_begin("cmovcc (0F 40-4F)");
	for (unsigned n = 0; n < iters * 16; n++) {
		unsigned size = size_at(1 + n % 3), reg;
		struct tcase c;
		struct insn_spec s;

		case_init(&c);
		spec_init(&s, size);
		reg = pick_free_reg(&c);
		spec_op(&s, 0x0F, 0x40 + (int)(rnd() & 15));
		build_modrm(&c, &s, rnd_below(2), size, reg);
		encode(&c, &s);
		check_case(&c);
	}
	group_end();
}

/* Jcc, JMP, CALL, RET, indirect JMP/CALL, LOOP/JrCXZ: targets are the fall-through or the
 * block BRANCH_DISTANCE bytes after it. */
/* Two instructions: a flag producer (ALU op, TEST, INC/DEC between two registers) and a
 * consumer of one condition (Jcc, SETcc, CMOVcc), so conditions are evaluated from each kind
 * of recorded (lazy) flags, not only from RFLAGS as in a one-instruction case. */
static void test_flags_then_condition(void)
{
	static const unsigned regs[] = { 0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };

	group_begin("flags then condition (ALU/TEST/INC/DEC/BT/BSF/shifts, then Jcc/SETcc/CMOVcc)");
	for (unsigned n = 0; n < iters * 32; n++) {
		unsigned size = size_at(rnd_below(4)), cc = rnd() & 15, form = rnd_below(13);
		unsigned modrm_reg;
		unsigned nregs = compat ? 7 : 15; /* compat32: EAX..EDI, no REX, no 64-bit size */
		unsigned a = regs[rnd_below(nregs)], b = regs[rnd_below(nregs)];
		unsigned d = regs[rnd_below(nregs)];
		uint8_t *p;
		struct tcase c;

		if (compat && size == 8)
			size = 4;
		if (form >= 10 && form <= 11 && size == 1) /* BT, BSF: no 8-bit form */
			size = 4;
		case_init(&c);
		c.gpr[a] = rnd_value(size);
		c.gpr[b] = rnd_below(4) ? rnd_value(size) : c.gpr[a];
		p = c.code;
		if (size == 2)
			*p++ = 0x66;
		if (!compat)
			*p++ = (uint8_t)(0x40 | (size == 8 ? 8 : 0) | ((b & 8) ? 4 : 0) |
					 ((a & 8) ? 1 : 0));
		if (form < 8) { /* ALU op a, b (forms 00-3F /r) */
			*p++ = (uint8_t)(form * 8 + (size > 1));
			if (form == 2 || form == 3)
				c.flags_undef = 0; /* ADC/SBB read CF: defined */
			else if (form == 1 || form == 4 || form == 6)
				c.flags_undef = EMU_FLAG_AF;
		} else if (form == 8) { /* TEST a, b */
			*p++ = (uint8_t)(0x84 + (size > 1));
			c.flags_undef = EMU_FLAG_AF;
		} else if (form == 10) { /* BT a, b: CF, ZF kept; the rest undefined */
			*p++ = 0x0F;
			*p++ = 0xA3;
			cc = 2 + rnd_below(6); /* B AE E NE BE A */
			c.flags_undef = EMU_FLAG_OF | EMU_FLAG_SF | EMU_FLAG_AF | EMU_FLAG_PF;
		} else if (form == 11) { /* BSF b, a: ZF; the rest undefined */
			*p++ = 0x0F;
			*p++ = 0xBC;
			cc = 4 + rnd_below(2);
			c.flags_undef =
				EMU_FLAG_CF | EMU_FLAG_OF | EMU_FLAG_SF | EMU_FLAG_AF | EMU_FLAG_PF;
			if (rnd_below(4) == 0)
				c.gpr[a] &= ~emu_size_mask(size);
		} else if (form == 12) { /* SHL/SHR/SAR a, 1..width-1: OF undefined above 1 */
			unsigned count = 1 + rnd_below(size * 8 - 1);

			*p++ = (uint8_t)(0xC0 + (size > 1));
			b = rnd_below(3) == 0 ? 4 : rnd_below(2) ? 5 : 7;
			p[1] = (uint8_t)count;
			c.flags_undef = EMU_FLAG_AF | (count > 1 ? EMU_FLAG_OF : 0);
			if (count > 1 && (cc < 2 || cc >= 12)) /* conditions that read OF */
				cc = 2 + rnd_below(10);
		} else { /* INC/DEC a */
			*p++ = (uint8_t)(0xFE + (size > 1));
			b = rnd_below(2);
		}
		modrm_reg = b;
		*p++ = (uint8_t)(0xC0 | ((modrm_reg & 7) << 3) | (a & 7));
		if (form == 12)
			p++; /* the count, written above */
		switch (rnd_below(3)) {
		case 0: /* Jcc rel8 */
			*p++ = (uint8_t)(0x70 + cc);
			*p++ = BRANCH_DISTANCE;
			break;
		case 1: /* SETcc d8 (compat32: AL, CL, DL, BL, AH, CH, DH, BH) */
			if (!compat)
				*p++ = (uint8_t)(0x40 | ((d & 8) ? 1 : 0));
			*p++ = 0x0F;
			*p++ = (uint8_t)(0x90 + cc);
			*p++ = (uint8_t)(0xC0 | (d & 7));
			break;
		default: /* CMOVcc d, a (32 or 64 bits) */
			if (!compat)
				*p++ = (uint8_t)(0x40 | (rnd_below(2) ? 8 : 0) | ((d & 8) ? 4 : 0) |
						 ((a & 8) ? 1 : 0));
			*p++ = 0x0F;
			*p++ = (uint8_t)(0x40 + cc);
			*p++ = (uint8_t)(0xC0 | ((d & 7) << 3) | (a & 7));
			break;
		}
		c.len = (unsigned)(p - c.code);
		c.insns = 2;
		check_case(&c);
	}
	group_end();
}

/* INC/DEC m and CMPXCHG m, r followed by Jcc: compiled, the condition comes from their
 * records (jit.c: ZF SF PF of an INC/DEC's result, CMPXCHG's CMP) after the template's or the
 * handler's path (the kernel's `decl %gs:preempt_count; je`, `cmpxchg; jne`). */
static void test_memory_flags_then_condition(void)
{
	group_begin("memory flags then condition (INC/DEC m, CMPXCHG m, r, then Jcc)");
	for (unsigned n = 0; n < iters * 16; n++) {
		unsigned size = size_at(rnd_below(4)), cc = rnd() & 15, reg;
		bool incdec = rnd_below(2);
		struct tcase c;
		struct insn_spec s;
		uint8_t *p;

		case_init(&c);
		spec_init(&s, size);
		if (incdec) {
			static const unsigned zsp[6] = { 4, 5, 8, 9, 10, 11 };

			unsigned dec = rnd_below(2);

			spec_op(&s, 0xFE + (size > 1), -1);
			build_modrm(&c, &s, true, size, dec);
			if (rnd_below(4)) /* mostly conditions on ZF SF PF; now and then CF OF */
				cc = zsp[rnd_below(6)];
			if (rnd_below(4) == 0) /* a result of 0 */
				s.rm.value = dec ? 1 : emu_size_mask(size);
		} else {
			c.used |= 1u << CPU_RAX;
			reg = pick_free_reg(&c);
			spec_op(&s, 0x0F, 0xB0 + (size > 1));
			build_modrm(&c, &s, true, size, reg);
			if (rnd_below(2)) /* make the comparison succeed */
				c.gpr[CPU_RAX] = (c.gpr[CPU_RAX] & ~emu_size_mask(size)) |
						 (s.rm.value & emu_size_mask(size));
		}
		encode(&c, &s);
		p = c.code + c.len;
		c.insns = 2;
		if (incdec && rnd_below(2)) { /* INC/DEC r next: its CF is the record's carry */
			unsigned r = pick_free_reg(&c);

			while (r == CPU_RSP) /* the native stub's stack */
				r = pick_free_reg(&c);
			if (r & 8)
				*p++ = 0x41;
			*p++ = 0xFF;
			*p++ = (uint8_t)(0xC0 | (rnd_below(2) << 3) | (r & 7));
			cc = rnd() & 15;
			c.insns = 3;
		}
		*p++ = (uint8_t)(0x70 + cc);
		*p++ = BRANCH_DISTANCE;
		c.len = (unsigned)(p - c.code);
		check_case(&c);
	}
	group_end();
}

static void test_branches(void)
{
	group_begin("jcc/jmp/call/ret/loop (70-7F, 0F 80-8F, E0-E3, E8, E9, EB, C2, C3, FF /2 /4)");
	for (unsigned n = 0; n < iters * 32; n++) {
		unsigned form = rnd_below(9);
		struct tcase c;
		struct insn_spec s;

		case_init(&c);
		spec_init(&s, 4);
		switch (form) {
		case 0: /* Jcc rel8 */
			spec_op(&s, 0x70 + (int)(rnd() & 15), -1);
			s.imm_size = 1;
			s.imm = BRANCH_DISTANCE;
			break;
		case 1: /* Jcc rel32 */
			spec_op(&s, 0x0F, 0x80 + (int)(rnd() & 15));
			s.imm_size = 4;
			s.imm = BRANCH_DISTANCE;
			break;
		case 2: /* JMP rel8/rel32, CALL rel32 */
			switch (rnd_below(3)) {
			case 0:
				spec_op(&s, 0xEB, -1);
				s.imm_size = 1;
				break;
			case 1:
				spec_op(&s, 0xE9, -1);
				s.imm_size = 4;
				break;
			default:
				spec_op(&s, 0xE8, -1);
				s.imm_size = 4;
				break;
			}
			s.imm = BRANCH_DISTANCE;
			break;
		case 3:
		case 4: { /* RET / RET imm16: the return address is on the stack */
			bool imm = form == 4;

			if (rnd_below(4) == 0) /* "rep ret" (AMD's idiom) and "bnd ret" (F2) */
				s.prefix[s.nr_prefix++] = rnd_below(2) ? 0xF3 : 0xF2;
			spec_op(&s, imm ? 0xC2 : 0xC3, -1);
			if (imm) {
				s.imm_size = 2;
				s.imm = rnd_below(3) ? rnd_below(64) : rnd() & 0xffff;
				if (s.imm > 0x200)
					s.imm &= 0x1ff;
			}
			break;
		}
		case 5:
		case 6: { /* JMP/CALL indirect through a register or memory */
			unsigned ext = form == 5 ? 4 : 2;

			spec_init(&s, compat ? 4 : 8);
			if (!compat)
				s.rex = rnd_below(2) ? 0x48 : 0;
			spec_op(&s, 0xFF, -1);
			build_modrm(&c, &s, rnd_below(2), compat ? 4 : 8, ext);
			break;
		}
		default: { /* LOOP/LOOPE/LOOPNE/JrCXZ */
			static const uint64_t counts[] = { 0, 1, 2, 0x100000000ull,
							   0x100000001ull };

			c.used |= 1u << CPU_RCX;
			c.gpr[CPU_RCX] = rnd_below(2) ? counts[rnd_below(5)] : rnd_value(8);
			if (rnd_below(3) == 0)
				s.prefix[s.nr_prefix++] = 0x67;
			spec_op(&s, 0xE0 + (int)rnd_below(4), -1);
			s.imm_size = 1;
			s.imm = BRANCH_DISTANCE;
			break;
		}
		}
		encode(&c, &s);
		/* Now the addresses are known: put the targets where the instruction reads them. */
		{
			uint64_t where = rnd_below(2) ? target_addr(&c) : fallthrough_addr(&c);
			unsigned sp = (unsigned)(c.gpr[CPU_RSP] - scratch_addr(0));

			if (form == 3 || form == 4)
				memcpy(c.scratch + sp, &where, 8);
			if (form == 5 || form == 6) {
				if (s.rm.mem) {
					memcpy(c.scratch + c.mem_off, &where, 8);
				} else {
					c.gpr[s.rm.reg] = where;
				}
			}
		}
		if ((form == 5 || form == 6) && !s.rm.mem && s.rm.reg == CPU_RSP)
			continue; /* would run the native stub on a code-address stack */
		check_case(&c);
	}
	group_end();
}

/* PUSH/POP in all forms, PUSHF/POPF, LEAVE, ENTER */
static void test_stack(void)
{
	group_begin("push/pop/pushf/popf/leave/enter, flag ops (50-5F, 68, 6A, 8F, 9C-9F, C8, C9, "
		    "F5, F8-FD, FF /6; compat32: 40-4F, 60, 61)");
	for (unsigned n = 0; n < iters * 32; n++) {
		unsigned form = rnd_below(9), reg;
		struct tcase c;
		struct insn_spec s;
		bool o16 = rnd_below(4) == 0;

		case_init(&c);
		spec_init(&s, o16 ? 2 : 4);
		switch (form) {
		case 0: /* PUSH r / POP r */
			reg = rnd_reg();
			if (reg & 8)
				s.rex |= 0x41;
			spec_op(&s, (rnd_below(2) ? 0x50 : 0x58) + (reg & 7), -1);
			break;
		case 1: /* PUSH imm */
			if (rnd_below(2)) {
				spec_op(&s, 0x68, -1);
				s.imm_size = o16 ? 2 : 4;
			} else {
				spec_op(&s, 0x6A, -1);
				s.imm_size = 1;
			}
			s.imm = rnd_value(8);
			break;
		case 2: /* PUSH r/m (FF /6), POP r/m (8F /0) */
			if (rnd_below(2)) {
				spec_op(&s, 0xFF, -1);
				build_modrm(&c, &s, rnd_below(2), o16 ? 2 : 8, 6);
			} else {
				spec_op(&s, 0x8F, -1);
				build_modrm(&c, &s, rnd_below(2), o16 ? 2 : 8, 0);
			}
			break;
		case 3: /* PUSHF */
			spec_op(&s, 0x9C, -1);
			break;
		case 4: { /* POPF: arithmetic flags, DF, and IF/IOPL that CPL 3 cannot change */
			uint64_t v = (rnd() & (EMU_FLAGS_ARITH | EMU_FLAG_DF | EMU_FLAG_IF |
					       EMU_FLAG_IOPL)) | EMU_FLAG_FIXED1;
			unsigned sp = (unsigned)(c.gpr[CPU_RSP] - scratch_addr(0));

			spec_op(&s, 0x9D, -1);
			memcpy(c.scratch + sp, &v, 8);
			break;
		}
		case 5: /* LEAVE */
		case 6: /* ENTER */
			c.used |= 1u << CPU_RBP;
			c.gpr[CPU_RBP] =
				(c.gpr[CPU_RBP] & ~0xffffull & (o16 ? ~0ull : 0)) |
				(scratch_addr(0x100 + 8 * rnd_below(48)) & (o16 ? 0xffff : ~0ull));
			/* 16-bit LEAVE/ENTER: RBP's upper bits must still address scratch */
			if (o16)
				c.gpr[CPU_RBP] = scratch_addr(0x100 + 8 * rnd_below(48));
			if (form == 5) {
				spec_op(&s, 0xC9, -1);
			} else {
				spec_op(&s, 0xC8, -1);
				s.imm_size = 3;
				s.imm = rnd_below(64) | ((uint64_t)rnd_below(4) << 16);
				if (rnd_below(8) == 0)
					s.imm = rnd_below(0x80) | ((uint64_t)(rnd() & 0xff) << 16);
			}
			break;
		case 7:
			if (compat && rnd_below(2)) { /* PUSHA/POPA, INC/DEC r (40-4F) */
				if (rnd_below(2))
					spec_op(&s, 0x60 + rnd_below(2), -1);
				else
					spec_op(&s, 0x40 + rnd_below(16), -1);
				break;
			}
			/* fall through */
		default: /* LAHF/SAHF, CLC/STC/CMC/CLD/STD */
			s.nr_prefix = 0;
			spec_op(&s, ((const uint8_t[]){ 0x9E, 0x9F, 0xF8, 0xF9, 0xF5, 0xFC, 0xFD })
					    [rnd_below(7)],
				-1);
			c.rflags |= rnd() & EMU_FLAG_DF;
			break;
		}
		encode(&c, &s);
		if (form == 2 && s.rm.mem && s.op[0] == 0x8F)
			c.max_steps = 1;
		check_case(&c);
	}
	group_end();
}

/* MOVS/CMPS/STOS/LODS/SCAS with and without REP/REPE/REPNE, both directions, 64- and 32-bit
 * addresses. */
static void test_strings(void)
{
	static const char *names[5] = { "movs (A4/A5)", "cmps (A6/A7)", "stos (AA/AB)",
					"lods (AC/AD)", "scas (AE/AF)" };
	static const uint8_t ops[5] = { 0xA4, 0xA6, 0xAA, 0xAC, 0xAE };

	for (unsigned g = 0; g < 5; g++) {
		group_begin(names[g]);
		for (unsigned n = 0; n < iters * 8; n++) {
			unsigned size = size_at(n), rep = rnd_below(3), count = rnd_below(20);
			unsigned si = 160 + rnd_below(DATA_SIZE - 320),
				 di = 160 + rnd_below(DATA_SIZE - 320);
			struct tcase c;
			struct insn_spec s;
			bool a32 = rnd_below(4) == 0 && !compat;

			case_init(&c);
			spec_init(&s, size);
			if (rep)
				s.prefix[s.nr_prefix++] = rep == 1 ? 0xF3 : 0xF2;
			if (a32)
				s.prefix[s.nr_prefix++] = 0x67;
			spec_op(&s, ops[g] + (size > 1), -1);
			encode(&c, &s);
			c.rflags |= rnd() & EMU_FLAG_DF;
			c.gpr[CPU_RSI] = scratch_addr(si) | (a32 ? rnd() << 32 : 0);
			c.gpr[CPU_RDI] = scratch_addr(di) | (a32 ? rnd() << 32 : 0);
			c.gpr[CPU_RCX] = (rnd_below(4) == 0 ? 0 : count) | (rnd() << 32);
			if (!a32 && !compat)
				c.gpr[CPU_RCX] &= 0xffffffff;
			if (rnd_below(2)) { /* equal data, so REPE/REPNE run on */
				memmove(c.scratch + di - 128, c.scratch + si - 128, 256);
				if (rnd_below(2))
					memset(c.scratch + di - 128, (int)(c.gpr[CPU_RAX] & 0xff),
					       256);
				if (g == 4 && size > 1)
					for (unsigned i = 0; i < 256; i += size)
						memcpy(c.scratch + di - 128 + i, &c.gpr[CPU_RAX],
						       size);
				c.scratch[di + rnd_below(128) - 64] ^=
					(uint8_t)(1 + rnd_below(255));
			}
			c.max_steps = 100;
			check_case(&c);
		}
		group_end();
	}
}

/* A position in the string pages for an element of `size` bytes: aligned or not. */
static unsigned sbuf_offset(unsigned size)
{
	unsigned off = rnd_below(SBUF_SIZE);

	/* near a page boundary, often */
	if (rnd_below(2))
		off = (rnd_below(3) * 4096 + 4096 - 64 + rnd_below(128)) % SBUF_SIZE;
	return rnd_below(2) ? off & ~(size - 1) : off;
}

/* How many elements from `off` in direction `down` stay in the string pages. */
static unsigned sbuf_room(unsigned off, unsigned size, bool down)
{
	if (down)
		return off + size > SBUF_SIZE ? 0 : off / size + 1;
	return (SBUF_SIZE - off) / size;
}

/* REP MOVS/STOS/CMPS/SCAS/LODS over three pages with unmapped pages around them: every size,
 * both directions, 64- and 32-bit addresses, counts that cross page boundaries or run into a
 * guard page (a #PF in the middle: registers and memory at the fault must match the host's),
 * and MOVS with overlapping source and destination at distances below, at and above the
 * element size (the element-wise order replicates data, memmove would not). */
static void test_strings_pages(void)
{
	static const char *names[5] = { "rep movs across pages", "rep cmps across pages",
					"rep stos across pages", "rep lods across pages",
					"rep scas across pages" };
	static const uint8_t ops[5] = { 0xA4, 0xA6, 0xAA, 0xAC, 0xAE };
	static const unsigned deltas[] = { 1,  2,  3,  4,  5,  6,   7,	  8,	9,    12,
					   15, 16, 17, 31, 64, 100, 4095, 4096, 4097, 8192 };

	for (unsigned g = 0; g < 5; g++) {
		group_begin(names[g]);
		for (unsigned n = 0; n < iters * 8; n++) {
			unsigned size = size_at(n), si = sbuf_offset(size), di = sbuf_offset(size);
			bool down = rnd_below(2), a32 = rnd_below(4) == 0 && !compat;
			bool cond = g == 1 || g == 4;
			uint64_t count;
			struct tcase c;
			struct insn_spec s;

			case_init(&c);
			spec_init(&s, size);
			s.prefix[s.nr_prefix++] = cond && rnd_below(2) ? 0xF2 : 0xF3;
			if (a32)
				s.prefix[s.nr_prefix++] = 0x67;
			spec_op(&s, ops[g] + (size > 1), -1);
			encode(&c, &s);
			if (g == 0 && rnd_below(2)) { /* overlapping, either way round */
				unsigned d = deltas[rnd_below(sizeof(deltas) / sizeof(deltas[0]))];

				di = rnd_below(2) ? si + d : si - d;
				if (di + size > SBUF_SIZE)
					di = si - d < SBUF_SIZE ? si - d : si;
			}
			if (cond) { /* equal data so that REPE runs on, a few differences */
				uint8_t b = (uint8_t)rnd();

				memset(sbuf_init, b, SBUF_SIZE);
				for (unsigned k = rnd_below(4); k > 0; k--)
					sbuf_init[rnd_below(SBUF_SIZE)] ^=
						(uint8_t)(1 + rnd_below(255));
				c.gpr[CPU_RAX] = 0x0101010101010101ull * b;
			} else {
				for (unsigned k = 0; k < SBUF_SIZE; k += 8) {
					uint64_t v = rnd();

					memcpy(sbuf_init + k, &v, 8);
				}
			}
			switch (rnd_below(4)) {
			case 0:
				count = rnd_below(40);
				break;
			case 1: /* to the end of the pages, maybe one more (a fault) */
				count = sbuf_room(di, size, down);
				if (g == 0 && sbuf_room(si, size, down) < count)
					count = sbuf_room(si, size, down);
				count += rnd_below(3);
				count = count ? count - 1 : 0;
				break;
			default:
				count = rnd_below(SBUF_SIZE / size + 64);
				break;
			}
			c.rflags |= down ? EMU_FLAG_DF : 0;
			c.gpr[CPU_RSI] = (uint64_t)(uintptr_t)sbuf + si;
			c.gpr[CPU_RDI] = (uint64_t)(uintptr_t)sbuf + di;
			c.gpr[CPU_RCX] = count;
			if (a32 || compat) { /* only the low halves count */
				c.gpr[CPU_RSI] |= rnd() << 32;
				c.gpr[CPU_RDI] |= rnd() << 32;
				c.gpr[CPU_RCX] |= rnd() << 32;
			}
			c.sbuf_used = c.partial_fault = true;
			c.str_size = size;
			c.str_a32 = a32;
			c.max_steps = 64;
			check_case(&c);
		}
		group_end();
	}
}

/* SSE/SSE2 moves, logic and 128-bit integer instructions. */
enum sse_kind {
	SSE_RM, /* xmm, xmm/m128 (aligned memory) */
	SSE_RM_U, /* xmm, xmm/m128, any alignment */
	SSE_ST, /* xmm/m128, xmm (aligned) */
	SSE_ST_U, /* xmm/m128, xmm, any alignment */
	SSE_ST_MEM, /* m128, xmm only (non-temporal stores) */
	SSE_RM_IMM, /* xmm, xmm/m128, imm8 */
	SSE_SHIFT_IMM, /* xmm, imm8 with /n */
	SSE_SCALAR, /* xmm, xmm/m32 or m64 (size in arg) */
	SSE_SCALAR_ST, /* xmm/m32 or m64, xmm */
	SSE_HALF, /* xmm, m64 (or xmm for MOVHLPS/MOVLHPS) */
	SSE_HALF_ST, /* m64, xmm */
	SSE_GPR_LOAD, /* xmm, r/m32/64 */
	SSE_GPR_STORE, /* r/m32/64, xmm */
	SSE_TO_GPR, /* r32, xmm (+imm8 for PEXTRW) */
	SSE_MOVQ_ST, /* xmm/m64, xmm (66 0F D6) */
	SSE_MXCSR, /* LDMXCSR/STMXCSR m32 */
	SSE_CVT_TO_GPR, /* r32/64, xmm/m32 or m64 (size in arg) */
	SSE_MASKMOV, /* xmm, xmm: bytes to [rDI] */
	SSE_MOVNTI, /* m32/64, r32/64 */
};

static const struct sse_form {
	const char *name;
	uint8_t prefix; /* 0, 0x66, 0xF3, 0xF2 */
	uint8_t op;
	uint8_t kind;
	uint8_t arg; /* /digit for shifts and MXCSR ops, scalar size */
} sse_forms[] = {
	{ "movups", 0, 0x10, SSE_RM_U, 0 }, { "movups st", 0, 0x11, SSE_ST_U, 0 },
	{ "movupd st", 0x66, 0x11, SSE_ST_U, 0 }, { "movapd st", 0x66, 0x29, SSE_ST, 0 },
	{ "movntpd", 0x66, 0x2B, SSE_ST_MEM, 0 }, { "movlpd st", 0x66, 0x13, SSE_HALF_ST, 0 },
	{ "movhpd st", 0x66, 0x17, SSE_HALF_ST, 0 }, { "andnpd", 0x66, 0x55, SSE_RM, 0 },
	{ "orpd", 0x66, 0x56, SSE_RM, 0 }, { "maskmovdqu", 0x66, 0xF7, SSE_MASKMOV, 0 },
	{ "movnti", 0, 0xC3, SSE_MOVNTI, 0 },
	{ "movupd", 0x66, 0x10, SSE_RM_U, 0 }, { "movss", 0xF3, 0x10, SSE_SCALAR, 4 },
	{ "movss st", 0xF3, 0x11, SSE_SCALAR_ST, 4 }, { "movsd", 0xF2, 0x10, SSE_SCALAR, 8 },
	{ "movsd st", 0xF2, 0x11, SSE_SCALAR_ST, 8 }, { "movlps", 0, 0x12, SSE_HALF, 0 },
	{ "movlps st", 0, 0x13, SSE_HALF_ST, 0 }, { "movhps", 0, 0x16, SSE_HALF, 0 },
	{ "movhps st", 0, 0x17, SSE_HALF_ST, 0 }, { "movlpd", 0x66, 0x12, SSE_HALF, 1 },
	{ "movhpd", 0x66, 0x16, SSE_HALF, 1 }, { "unpcklps", 0, 0x14, SSE_RM, 0 },
	{ "unpckhps", 0, 0x15, SSE_RM, 0 }, { "unpcklpd", 0x66, 0x14, SSE_RM, 0 },
	{ "unpckhpd", 0x66, 0x15, SSE_RM, 0 }, { "movaps", 0, 0x28, SSE_RM, 0 },
	{ "movaps st", 0, 0x29, SSE_ST, 0 }, { "movapd", 0x66, 0x28, SSE_RM, 0 },
	{ "movntps", 0, 0x2B, SSE_ST_MEM, 0 }, { "andps", 0, 0x54, SSE_RM, 0 },
	{ "andnps", 0, 0x55, SSE_RM, 0 }, { "orps", 0, 0x56, SSE_RM, 0 },
	{ "xorps", 0, 0x57, SSE_RM, 0 }, { "andpd", 0x66, 0x54, SSE_RM, 0 },
	{ "xorpd", 0x66, 0x57, SSE_RM, 0 }, { "movmskps", 0, 0x50, SSE_TO_GPR, 0 },
	{ "movmskpd", 0x66, 0x50, SSE_TO_GPR, 0 }, { "shufps", 0, 0xC6, SSE_RM_IMM, 0 },
	{ "shufpd", 0x66, 0xC6, SSE_RM_IMM, 0 }, { "punpcklbw", 0x66, 0x60, SSE_RM, 0 },
	{ "punpcklwd", 0x66, 0x61, SSE_RM, 0 }, { "punpckldq", 0x66, 0x62, SSE_RM, 0 },
	{ "packsswb", 0x66, 0x63, SSE_RM, 0 }, { "pcmpgtb", 0x66, 0x64, SSE_RM, 0 },
	{ "pcmpgtw", 0x66, 0x65, SSE_RM, 0 }, { "pcmpgtd", 0x66, 0x66, SSE_RM, 0 },
	{ "packuswb", 0x66, 0x67, SSE_RM, 0 }, { "punpckhbw", 0x66, 0x68, SSE_RM, 0 },
	{ "punpckhwd", 0x66, 0x69, SSE_RM, 0 }, { "punpckhdq", 0x66, 0x6A, SSE_RM, 0 },
	{ "packssdw", 0x66, 0x6B, SSE_RM, 0 }, { "punpcklqdq", 0x66, 0x6C, SSE_RM, 0 },
	{ "punpckhqdq", 0x66, 0x6D, SSE_RM, 0 }, { "movd/movq", 0x66, 0x6E, SSE_GPR_LOAD, 0 },
	{ "movdqa", 0x66, 0x6F, SSE_RM, 0 }, { "movdqu", 0xF3, 0x6F, SSE_RM_U, 0 },
	{ "pshufd", 0x66, 0x70, SSE_RM_IMM, 0 }, { "pshufhw", 0xF3, 0x70, SSE_RM_IMM, 0 },
	{ "pshuflw", 0xF2, 0x70, SSE_RM_IMM, 0 }, { "psrlw imm", 0x66, 0x71, SSE_SHIFT_IMM, 2 },
	{ "psraw imm", 0x66, 0x71, SSE_SHIFT_IMM, 4 },
	{ "psllw imm", 0x66, 0x71, SSE_SHIFT_IMM, 6 },
	{ "psrld imm", 0x66, 0x72, SSE_SHIFT_IMM, 2 },
	{ "psrad imm", 0x66, 0x72, SSE_SHIFT_IMM, 4 },
	{ "pslld imm", 0x66, 0x72, SSE_SHIFT_IMM, 6 },
	{ "psrlq imm", 0x66, 0x73, SSE_SHIFT_IMM, 2 },
	{ "psrldq", 0x66, 0x73, SSE_SHIFT_IMM, 3 }, { "psllq imm", 0x66, 0x73, SSE_SHIFT_IMM, 6 },
	{ "pslldq", 0x66, 0x73, SSE_SHIFT_IMM, 7 }, { "pcmpeqb", 0x66, 0x74, SSE_RM, 0 },
	{ "pcmpeqw", 0x66, 0x75, SSE_RM, 0 }, { "pcmpeqd", 0x66, 0x76, SSE_RM, 0 },
	{ "movd/movq st", 0x66, 0x7E, SSE_GPR_STORE, 0 }, { "movq", 0xF3, 0x7E, SSE_SCALAR, 8 },
	{ "movdqa st", 0x66, 0x7F, SSE_ST, 0 }, { "movdqu st", 0xF3, 0x7F, SSE_ST_U, 0 },
	{ "pinsrw", 0x66, 0xC4, SSE_GPR_LOAD, 1 }, { "pextrw", 0x66, 0xC5, SSE_TO_GPR, 1 },
	{ "psrlw", 0x66, 0xD1, SSE_RM, 0 }, { "psrld", 0x66, 0xD2, SSE_RM, 0 },
	{ "psrlq", 0x66, 0xD3, SSE_RM, 0 }, { "paddq", 0x66, 0xD4, SSE_RM, 0 },
	{ "pmullw", 0x66, 0xD5, SSE_RM, 0 }, { "movq st", 0x66, 0xD6, SSE_MOVQ_ST, 0 },
	{ "pmovmskb", 0x66, 0xD7, SSE_TO_GPR, 0 }, { "psubusb", 0x66, 0xD8, SSE_RM, 0 },
	{ "psubusw", 0x66, 0xD9, SSE_RM, 0 }, { "pminub", 0x66, 0xDA, SSE_RM, 0 },
	{ "pand", 0x66, 0xDB, SSE_RM, 0 }, { "paddusb", 0x66, 0xDC, SSE_RM, 0 },
	{ "paddusw", 0x66, 0xDD, SSE_RM, 0 }, { "pmaxub", 0x66, 0xDE, SSE_RM, 0 },
	{ "pandn", 0x66, 0xDF, SSE_RM, 0 }, { "pavgb", 0x66, 0xE0, SSE_RM, 0 },
	{ "psraw", 0x66, 0xE1, SSE_RM, 0 }, { "psrad", 0x66, 0xE2, SSE_RM, 0 },
	{ "pavgw", 0x66, 0xE3, SSE_RM, 0 }, { "pmulhuw", 0x66, 0xE4, SSE_RM, 0 },
	{ "pmulhw", 0x66, 0xE5, SSE_RM, 0 }, { "movntdq", 0x66, 0xE7, SSE_ST_MEM, 0 },
	{ "psubsb", 0x66, 0xE8, SSE_RM, 0 }, { "psubsw", 0x66, 0xE9, SSE_RM, 0 },
	{ "pminsw", 0x66, 0xEA, SSE_RM, 0 }, { "por", 0x66, 0xEB, SSE_RM, 0 },
	{ "paddsb", 0x66, 0xEC, SSE_RM, 0 }, { "paddsw", 0x66, 0xED, SSE_RM, 0 },
	{ "pmaxsw", 0x66, 0xEE, SSE_RM, 0 }, { "pxor", 0x66, 0xEF, SSE_RM, 0 },
	{ "psllw", 0x66, 0xF1, SSE_RM, 0 }, { "pslld", 0x66, 0xF2, SSE_RM, 0 },
	{ "psllq", 0x66, 0xF3, SSE_RM, 0 }, { "pmuludq", 0x66, 0xF4, SSE_RM, 0 },
	{ "pmaddwd", 0x66, 0xF5, SSE_RM, 0 }, { "psadbw", 0x66, 0xF6, SSE_RM, 0 },
	{ "psubb", 0x66, 0xF8, SSE_RM, 0 }, { "psubw", 0x66, 0xF9, SSE_RM, 0 },
	{ "psubd", 0x66, 0xFA, SSE_RM, 0 }, { "psubq", 0x66, 0xFB, SSE_RM, 0 },
	{ "paddb", 0x66, 0xFC, SSE_RM, 0 }, { "paddw", 0x66, 0xFD, SSE_RM, 0 },
	{ "paddd", 0x66, 0xFE, SSE_RM, 0 }, { "ldmxcsr", 0, 0xAE, SSE_MXCSR, 2 },
	{ "stmxcsr", 0, 0xAE, SSE_MXCSR, 3 },
	/* floating point: arg = scalar size; the lane type comes from sse_fp_lane() */
	{ "addps", 0, 0x58, SSE_RM, 0 }, { "addpd", 0x66, 0x58, SSE_RM, 0 },
	{ "addss", 0xF3, 0x58, SSE_SCALAR, 4 }, { "addsd", 0xF2, 0x58, SSE_SCALAR, 8 },
	{ "mulps", 0, 0x59, SSE_RM, 0 }, { "mulpd", 0x66, 0x59, SSE_RM, 0 },
	{ "mulss", 0xF3, 0x59, SSE_SCALAR, 4 }, { "mulsd", 0xF2, 0x59, SSE_SCALAR, 8 },
	{ "subps", 0, 0x5C, SSE_RM, 0 }, { "subpd", 0x66, 0x5C, SSE_RM, 0 },
	{ "subss", 0xF3, 0x5C, SSE_SCALAR, 4 }, { "subsd", 0xF2, 0x5C, SSE_SCALAR, 8 },
	{ "minps", 0, 0x5D, SSE_RM, 0 }, { "minpd", 0x66, 0x5D, SSE_RM, 0 },
	{ "minss", 0xF3, 0x5D, SSE_SCALAR, 4 }, { "minsd", 0xF2, 0x5D, SSE_SCALAR, 8 },
	{ "divps", 0, 0x5E, SSE_RM, 0 }, { "divpd", 0x66, 0x5E, SSE_RM, 0 },
	{ "divss", 0xF3, 0x5E, SSE_SCALAR, 4 }, { "divsd", 0xF2, 0x5E, SSE_SCALAR, 8 },
	{ "maxps", 0, 0x5F, SSE_RM, 0 }, { "maxpd", 0x66, 0x5F, SSE_RM, 0 },
	{ "maxss", 0xF3, 0x5F, SSE_SCALAR, 4 }, { "maxsd", 0xF2, 0x5F, SSE_SCALAR, 8 },
	{ "sqrtps", 0, 0x51, SSE_RM, 0 }, { "sqrtpd", 0x66, 0x51, SSE_RM, 0 },
	{ "sqrtss", 0xF3, 0x51, SSE_SCALAR, 4 }, { "sqrtsd", 0xF2, 0x51, SSE_SCALAR, 8 },
	{ "rsqrtps", 0, 0x52, SSE_RM, 0 }, { "rsqrtss", 0xF3, 0x52, SSE_SCALAR, 4 },
	{ "rcpps", 0, 0x53, SSE_RM, 0 }, { "rcpss", 0xF3, 0x53, SSE_SCALAR, 4 },
	{ "cmpps", 0, 0xC2, SSE_RM_IMM, 0 }, { "cmppd", 0x66, 0xC2, SSE_RM_IMM, 0 },
	{ "cmpss", 0xF3, 0xC2, SSE_SCALAR, 4 }, { "cmpsd", 0xF2, 0xC2, SSE_SCALAR, 8 },
	{ "ucomiss", 0, 0x2E, SSE_SCALAR, 4 }, { "comiss", 0, 0x2F, SSE_SCALAR, 4 },
	{ "ucomisd", 0x66, 0x2E, SSE_SCALAR, 8 }, { "comisd", 0x66, 0x2F, SSE_SCALAR, 8 },
	{ "cvtps2pd", 0, 0x5A, SSE_SCALAR, 8 }, { "cvtpd2ps", 0x66, 0x5A, SSE_RM, 0 },
	{ "cvtss2sd", 0xF3, 0x5A, SSE_SCALAR, 4 }, { "cvtsd2ss", 0xF2, 0x5A, SSE_SCALAR, 8 },
	{ "cvtdq2ps", 0, 0x5B, SSE_RM, 0 }, { "cvtps2dq", 0x66, 0x5B, SSE_RM, 0 },
	{ "cvttps2dq", 0xF3, 0x5B, SSE_RM, 0 }, { "cvttpd2dq", 0x66, 0xE6, SSE_RM, 0 },
	{ "cvtdq2pd", 0xF3, 0xE6, SSE_SCALAR, 8 }, { "cvtpd2dq", 0xF2, 0xE6, SSE_RM, 0 },
	{ "cvtsi2ss", 0xF3, 0x2A, SSE_GPR_LOAD, 0 }, { "cvtsi2sd", 0xF2, 0x2A, SSE_GPR_LOAD, 0 },
	{ "cvttss2si", 0xF3, 0x2C, SSE_CVT_TO_GPR, 4 },
	{ "cvtss2si", 0xF3, 0x2D, SSE_CVT_TO_GPR, 4 },
	{ "cvttsd2si", 0xF2, 0x2C, SSE_CVT_TO_GPR, 8 },
	{ "cvtsd2si", 0xF2, 0x2D, SSE_CVT_TO_GPR, 8 },
};

/* The lane type a floating-point form reads: 4 (single), 8 (double) or 0 (not floating). */
static unsigned sse_fp_lane(const struct sse_form *form)
{
	switch (form->op) {
	case 0x51 ... 0x53:
	case 0x58 ... 0x5A:
	case 0x5C ... 0x5F:
	case 0xC2:
	case 0x2C:
	case 0x2D:
	case 0x2E:
	case 0x2F:
		return form->prefix == 0x66 || form->prefix == 0xF2 ? 8 : 4;
	case 0x5B:
		return form->prefix ? 4 : 0; /* CVTPS2DQ/CVTTPS2DQ read singles, CVTDQ2PS ints */
	case 0xE6:
		return form->prefix == 0xF3 ? 0 : 8;
	default:
		return 0;
	}
}

/* Whether the form computes in floating point (MXCSR flags, #XM). */
static bool sse_fp_form(const struct sse_form *form)
{
	switch (form->op) {
	case 0x2A:
	case 0x2C ... 0x2F:
	case 0x51 ... 0x53:
	case 0x58 ... 0x5F:
	case 0xC2:
	case 0xE6:
		return true;
	default:
		return false;
	}
}

/* Floating-point lanes with the interesting values: zeros, infinities, NaNs (quiet and
 * signalling), denormals, extremes, ones, values near integer limits, random numbers. */
static void rnd_fp_xmm(uint8_t out[16], unsigned lane)
{
	static const uint32_t singles[] = { 0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000,
					    0xffc00001, 0x7fa00000, 0x00000001, 0x807fffff,
					    0x00800000, 0x7f7fffff, 0x3f800000, 0xbf800000,
					    0x4f000000, 0xcf000000, 0x5f000000, 0x3f000000,
					    0x40400000 };
	static const uint64_t doubles[] = { 0, 0x8000000000000000ull, 0x7ff0000000000000ull,
					    0xfff0000000000000ull, 0x7ff8000000000000ull,
					    0xfff8000000000001ull, 0x7ff4000000000000ull, 1,
					    0x800fffffffffffffull, 0x0010000000000000ull,
					    0x7fefffffffffffffull, 0x3ff0000000000000ull,
					    0xbff0000000000000ull, 0x41e0000000000000ull,
					    0xc1e0000000000000ull, 0x43e0000000000000ull,
					    0x3fe0000000000000ull, 0x4008000000000000ull };

	for (unsigned i = 0; i < 16 / lane; i++) {
		if (lane == 4) {
			uint32_t v = rnd_below(2) ? singles[rnd_below(18)] : (uint32_t)rnd();

			if (rnd_below(4) == 0) /* a nearby normal number: rounding matters */
				v = 0x3f800000 + (uint32_t)rnd_below(1 << 23) -
				    (uint32_t)(rnd() & 1) * 0x800000;
			memcpy(out + 4 * i, &v, 4);
		} else {
			uint64_t v = rnd_below(2) ? doubles[rnd_below(18)] : rnd();

			if (rnd_below(4) == 0)
				v = 0x3ff0000000000000ull + (rnd() >> 12);
			memcpy(out + 8 * i, &v, 8);
		}
	}
}

/* Lane values with edges: 0, all ones, sign bits, small numbers, equal bytes. */
static void rnd_xmm(uint8_t out[16])
{
	uint64_t q[2];

	switch (rnd_below(6)) {
	case 0: /* equal to something common */
		memset(out, rnd_below(2) ? 0 : 0xff, 16);
		return;
	case 1: /* bytes from a small set: equalities and sign bits */
		for (unsigned i = 0; i < 16; i++)
			out[i] = (uint8_t[]){ 0, 1, 0x7f, 0x80, 0xff, 0x41 }[rnd_below(6)];
		return;
	case 2: /* words at the saturation edges */
		for (unsigned i = 0; i < 8; i++) {
			uint16_t w = (uint16_t[]){ 0, 1, 0x7fff, 0x8000, 0xffff, 0x7f, 0x80,
						   0xff }[rnd_below(8)];

			memcpy(out + 2 * i, &w, 2);
		}
		return;
	default:
		q[0] = rnd_value(8);
		q[1] = rnd_value(8);
		memcpy(out, q, 16);
		return;
	}
}

static void test_sse(void)
{
	for (unsigned f = 0; f < sizeof(sse_forms) / sizeof(sse_forms[0]); f++) {
		const struct sse_form *form = &sse_forms[f];
		char name[64];

		snprintf(name, sizeof(name), "sse: %s (%s0F %02X%s)", form->name,
			 form->prefix == 0x66 ? "66 " : form->prefix == 0xF3 ? "F3 "
			 : form->prefix == 0xF2 ? "F2 " : "", form->op,
			 form->kind == SSE_SHIFT_IMM || form->kind == SSE_MXCSR ? " /n" : "");
		group_begin(name);
		for (unsigned n = 0; n < iters * 4; n++) {
			unsigned kind = form->kind, nregs = compat ? 8 : 16, msize = 16;
			bool mem = rnd_below(2), wide = !compat && rnd_below(2);
			struct tcase c;
			struct insn_spec s;

			unsigned lane = sse_fp_lane(form);

			case_init(&c);
			for (unsigned i = 0; i < 16; i++) {
				if (lane)
					rnd_fp_xmm(c.xmm[i], lane);
				else
					rnd_xmm(c.xmm[i]);
			}
			if (sse_fp_form(form)) {
				/* rounding mode, FTZ, DAZ and sticky flags; now and then unmasked
				 * exceptions: #XM, the destination unchanged */
				c.mxcsr = 0x1f80 | ((uint32_t)rnd() & 0xe07f);
				if (rnd_below(8) == 0)
					c.mxcsr &= ~((uint32_t)rnd() & 0x1f80);
				c.fpe_is_xm = true;
			}
			spec_init(&s, 4);
			/* Now and then a 66 before F3/F2: the mandatory F3/F2 wins. */
			if ((form->prefix == 0xF3 || form->prefix == 0xF2) && rnd_below(8) == 0)
				s.prefix[s.nr_prefix++] = 0x66;
			if (form->prefix)
				s.prefix[s.nr_prefix++] = form->prefix;
			spec_op(&s, 0x0F, form->op);
			s.modrm = true;
			s.reg = rnd_below(nregs);
			if (kind == SSE_SHIFT_IMM || kind == SSE_TO_GPR || kind == SSE_MXCSR ||
			    kind == SSE_MASKMOV)
				mem = kind == SSE_MXCSR;
			if (kind == SSE_ST_MEM || kind == SSE_MOVNTI)
				mem = true;
			if (kind == SSE_MASKMOV) {
				c.gpr[CPU_RDI] = scratch_addr(rnd_below(DATA_SIZE - 16));
				c.used |= 1u << CPU_RDI;
			}
			if (kind == SSE_MOVNTI) {
				msize = wide ? 8 : 4;
				if (wide)
					s.rex = 0x48;
			}
			if (kind == SSE_SHIFT_IMM)
				s.reg = form->arg;
			if (kind == SSE_MXCSR) {
				s.reg = form->arg;
				msize = 4;
			}
			if (kind == SSE_SCALAR || kind == SSE_SCALAR_ST)
				msize = form->arg;
			if (kind == SSE_HALF || kind == SSE_HALF_ST || kind == SSE_MOVQ_ST)
				msize = 8;
			if (kind == SSE_HALF && form->arg && !mem)
				mem = true; /* MOVLPD/MOVHPD have no register form */
			if (kind == SSE_HALF_ST)
				mem = true;
			if (kind == SSE_CVT_TO_GPR) {
				msize = form->arg;
				if (wide)
					s.rex = 0x48;
			}
			if (kind == SSE_GPR_LOAD || kind == SSE_GPR_STORE) {
				msize = form->arg ? 2 : wide ? 8 : 4;
				if (wide && !form->arg)
					s.rex = 0x48;
			}
			s.rm = rm_operand(&c, mem, msize, &s.rm.reg);
			if (!mem && kind != SSE_GPR_LOAD && kind != SSE_GPR_STORE)
				s.rm.reg = rnd_below(nregs); /* an XMM register */
			if (kind == SSE_MOVNTI)
				s.reg = rnd_reg(); /* a GPR */
			if (kind == SSE_CVT_TO_GPR) {
				s.reg = rnd_reg();
				if (s.reg == CPU_RSP)
					s.reg = CPU_RAX;
			}
			/* SSE_TO_GPR: the ModRM.reg is the GPR, rm the XMM register */
			if (kind == SSE_TO_GPR) {
				s.reg = rnd_reg();
				if (s.reg == CPU_RSP)
					s.reg = CPU_RAX;
			}
			/* Aligned forms: mostly aligned, sometimes not (#GP on both sides). */
			if (mem && (kind == SSE_RM || kind == SSE_ST || kind == SSE_ST_MEM ||
				    kind == SSE_RM_IMM) && rnd_below(16))
				s.rm.align = 16;
			if (kind == SSE_MXCSR && form->arg == 2) { /* a valid MXCSR value */
				uint32_t v = 0x1f80 | ((uint32_t)rnd() & 0x7f40);

				s.rm.value = v;
				s.rm.size = 4;
			}
			if (kind == SSE_RM_IMM || kind == SSE_SHIFT_IMM || form->op == 0xC4 ||
			    form->op == 0xC5 || form->op == 0xC2) {
				static const uint8_t counts[] = { 0,  1,  7,  8,  15,   16,  17, 31,
								  32, 33, 63, 64, 65, 0x80, 0xff };
				bool edge = kind == SSE_SHIFT_IMM && rnd_below(2);

				s.imm_size = 1;
				s.imm = edge ? counts[rnd_below(15)] : rnd() & 0xff;
				if (form->op == 0xC2) /* the 8 SSE predicates (more are AVX) */
					s.imm &= 7;
			}
			encode(&c, &s);
			if (mem && (kind == SSE_RM || kind == SSE_RM_U || kind == SSE_RM_IMM) &&
			    rnd_below(2) && form->op >= 0xD1 && form->op <= 0xF3 &&
			    ((form->op & 0xF) >= 1 && (form->op & 0xF) <= 3)) {
				/* shift counts from memory: small ones too */
				uint64_t cnt = rnd_below(70);

				memcpy(c.scratch + c.mem_off, &cnt, 8);
			}
			if (!mem && (kind == SSE_RM) && form->op >= 0xD1 && form->op <= 0xF3 &&
			    rnd_below(2)) {
				uint64_t cnt = rnd_below(70);

				memcpy(c.xmm[s.rm.reg], &cnt, 8);
			}
			check_case(&c);
		}
		group_end();
	}
}

/* NOPs: 90, 66 90, F3 90 (PAUSE), 0F 1F /0, ENDBR64, 0F 18 /0-3 */
static void test_nops(void)
{
	static const uint8_t forms[][12] = {
		{ 1, 0x90 },
		{ 2, 0x66, 0x90 },
		{ 2, 0xF3, 0x90 },
		{ 4, 0xF3, 0x0F, 0x1E, 0xFA },
		{ 3, 0x0F, 0x1F, 0x00 },
		{ 4, 0x0F, 0x1F, 0x40, 0x00 },
		{ 5, 0x0F, 0x1F, 0x44, 0x00, 0x00 },
		{ 6, 0x66, 0x0F, 0x1F, 0x44, 0x00, 0x00 },
		{ 7, 0x0F, 0x1F, 0x80, 0x00, 0x00, 0x00, 0x00 },
		{ 8, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00 },
		{ 9, 0x66, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00 },
		{ 11, 0x66, 0x66, 0x2E, 0x0F, 0x1F, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00 },
		{ 3, 0x0F, 0x18, 0x08 },
		{ 4, 0x48, 0x0F, 0x1F, 0xC0 }, /* last: DEC EAX + NOP in compatibility mode */
		{ 3, 0x0F, 0xAE, 0xE8 }, /* lfence */
		{ 3, 0x0F, 0xAE, 0xF0 }, /* mfence */
		{ 3, 0x0F, 0xAE, 0xF8 }, /* sfence */
		{ 3, 0x0F, 0xAE, 0x38 }, /* clflush [rax] */
	};

	group_begin("nop, multi-byte nop, endbr64, pause, prefetch");
	for (unsigned n = 0; n < iters * 4; n++) {
		const uint8_t *f = forms[n % (sizeof(forms) / sizeof(forms[0]))];
		struct tcase c;

		if (compat && f[1] == 0x48)
			continue;
		case_init(&c);
		memcpy(c.code, f + 1, f[0]);
		c.len = f[0];
		/* Memory forms use RAX: let it point at the scratch (a prefetch touches it). */
		c.gpr[CPU_RAX] = scratch_addr(rnd_below(DATA_SIZE - 16));
		check_case(&c);
	}
	group_end();
}

/* INC/DEC r16/r32 (40+r, 48+r): one-byte forms outside 64-bit mode, where they are REX. */
static void test_inc_dec_short(void)
{
	if (!compat)
		return;
	group_begin("inc/dec r (40+r, 48+r)");
	for (unsigned n = 0; n < iters * 4; n++) {
		struct tcase c;

		case_init(&c);
		c.len = 0;
		if (rnd_below(2))
			c.code[c.len++] = 0x66;
		c.code[c.len++] = (uint8_t)(0x40 + rnd_below(16));
		check_case(&c);
	}
	group_end();
}

/* Encodings the host rejects with #UD must raise #UD in the emulator too. */
static void test_invalid(void)
{
	static const uint8_t forms[][6] = {
		{ 2, 0x0F, 0x0B }, /* UD2 */
		{ 1, 0x06 }, /* PUSH ES: invalid in 64-bit mode */
		{ 1, 0x27 }, /* DAA */
		{ 1, 0xD6 }, /* SALC */
		{ 3, 0xF0, 0x01, 0xC0 }, /* LOCK on a register destination */
		{ 3, 0xF0, 0x39, 0x00 }, /* LOCK CMP */
		{ 3, 0xF0, 0x8B, 0x00 }, /* LOCK MOV */
		{ 2, 0x8D, 0xC0 }, /* LEA with a register operand */
		{ 2, 0xFE, 0xD0 }, /* FE /2 */
		{ 2, 0xFF, 0xF8 }, /* FF /7 */
		{ 3, 0x0F, 0xBA, 0xC0 }, /* 0F BA /0 */
		{ 4, 0x0F, 0x73, 0xD8, 0x01 }, /* PSRLDQ has no MMX form */
		{ 4, 0x0F, 0x71, 0xC0, 0x01 }, /* 0F 71 /0 */
		{ 4, 0x0F, 0x73, 0xE0, 0x01 }, /* no PSRAQ */
		{ 5, 0x66, 0x0F, 0x73, 0xE0, 0x01 }, /* no PSRAQ */
		{ 4, 0x0F, 0x71, 0x10, 0x01 }, /* shift by immediate with a memory operand */
		{ 3, 0x0F, 0x6C, 0xC0 }, /* PUNPCKLQDQ has no MMX form */
		{ 3, 0x0F, 0xD6, 0xC0 }, /* MOVQ needs 66 (F3/F2: MOVQ2DQ/MOVDQ2Q) */
		{ 4, 0x0F, 0xC5, 0x00, 0x01 }, /* PEXTRW from memory */
		{ 3, 0x0F, 0xE7, 0xC0 }, /* MOVNTQ to a register */
		{ 3, 0x0F, 0xD7, 0x00 }, /* PMOVMSKB from memory */
		{ 3, 0x0F, 0xF7, 0x00 }, /* MASKMOVQ with memory */
		{ 4, 0xF3, 0x0F, 0xD6, 0x00 }, /* MOVQ2DQ from memory */
		{ 4, 0x66, 0x0F, 0x12, 0xC0 }, /* MOVLPD has no register form */
		{ 4, 0x66, 0x0F, 0xD7, 0x00 }, /* PMOVMSKB xmm from memory */
		{ 3, 0x0F, 0x2B, 0xC0 }, /* MOVNTPS to a register */
		{ 3, 0x0F, 0xC3, 0xC0 }, /* MOVNTI to a register */
	};

	group_begin("invalid opcodes raise #UD");
	for (unsigned n = 0; n < sizeof(forms) / sizeof(forms[0]); n++) {
		struct tcase c;

		if (compat && forms[n][0] == 1)
			continue; /* the one-byte ones are valid outside 64-bit mode */
		case_init(&c);
		memcpy(c.code, forms[n] + 1, forms[n][0]);
		c.len = forms[n][0];
		if (c.code[0] == 0x0F && c.code[1] == 0xBA)
			c.code[c.len++] = 3; /* its imm8 */
		c.gpr[CPU_RAX] = scratch_addr(0);
		check_case(&c);
	}
	group_end();
}

/* ---- x87 ---- */

/* An 80-bit value: signed zeros, infinities, NaNs (quiet, signalling, the indefinite),
 * denormals, now and then the unsupported encodings (pseudo-denormals, unnormals,
 * pseudo-infinities/NaNs), integers near the 16/32/64-bit limits, halves, ordinary numbers. */
static void rnd_f80(uint8_t out[10])
{
	uint64_t mant = rnd() | (1ull << 63);
	unsigned exp = 0x3fff - 8 + rnd_below(24), sign = rnd_below(2);
	long double ld;

	switch (rnd_below(16)) {
	case 0: mant = 0; exp = 0; break;
	case 1: mant = 1ull << 63; exp = 0x7fff; break;
	case 2: mant = (3ull << 62) | (rnd_below(2) ? 0 : rnd() >> 2); exp = 0x7fff; break;
	case 3: mant = (1ull << 63) | (rnd() >> 2) | 1; exp = 0x7fff; break; /* SNaN */
	case 4: mant = rnd() >> rnd_below(64); exp = 0; break; /* denormal */
	case 5: /* unsupported: pseudo-denormal, unnormal, pseudo-infinity/NaN */
		mant = rnd() ^ (1ull << 63);
		exp = (unsigned[]){ 0, 1 + rnd_below(0x7ffe), 0x7fff }[rnd_below(3)];
		if (exp != 0)
			mant &= ~(1ull << 63);
		else
			mant |= 1ull << 63;
		break;
	case 6: case 7: { /* integers near the limits and small ones */
		static const int64_t ints[] = { 0, 1, 2, 3, 0x7fff, 0x8000, 0x7fffffff, 0x80000000ll,
						0x7ffffffffffffc00ll, 99999, 1000000000000000000ll };
		int64_t v = ints[rnd_below(11)] + (int64_t)rnd_below(5) - 2;

		ld = (long double)v;
		if (rnd_below(4) == 0)
			ld = -ld;
		if (rnd_below(3) == 0)
			ld += rnd_below(2) ? 0.5L : 0.25L;
		if (rnd_below(8) == 0)
			ld = 9223372036854775808.0L * (rnd_below(2) ? 1 : -1); /* 2^63 */
		memset(out, 0, 10);
		memcpy(out, &ld, 10);
		return;
	}
	case 8: exp = 1 + rnd_below(0x7ffe); break; /* any exponent */
	case 9: exp = rnd_below(2) ? 1 + rnd_below(80) : 0x7ffe - rnd_below(80); break;
	case 10: mant = (1ull << 63) | (rnd() & 0xffffff0000000000ull); break; /* few bits */
	default: break;
	}
	exp |= sign << 15;
	memcpy(out, &mant, 8);
	memcpy(out + 8, &exp, 2);
}

/* A random x87 state: TOP, a stack of some depth (sometimes random tags), values, control
 * word (rounding, precision, now and then unmasked exceptions) and status flags. */
static void rnd_x87_state(struct tcase *c, bool unmasked_ok)
{
	unsigned top = rnd_below(8), depth = rnd_below(10), ftw = 0;
	uint16_t fcw = 0x037f, fsw;

	if (depth > 8)
		depth = rnd_below(3); /* shallow stacks are common */
	for (unsigned i = 0; i < depth; i++)
		ftw |= 1u << ((top + i) & 7);
	if (rnd_below(8) == 0)
		ftw = (unsigned)rnd() & 0xff;
	for (unsigned i = 0; i < 8; i++)
		rnd_f80(c->x87 + 32 + 16 * i);
	if (rnd_below(2))
		fcw = (uint16_t)((fcw & ~0x0f00) | (rnd() & 0x0f00)); /* RC, PC */
	if (unmasked_ok && rnd_below(6) == 0)
		fcw = (uint16_t)(fcw & ~(rnd() & 0x3f));
	fsw = (uint16_t)((rnd() & 0x4700) | (top << 11)); /* C0-C3 */
	if (rnd_below(4) == 0)
		fsw |= (uint16_t)(rnd() & 0x3f & fcw); /* masked sticky flags */
	if (unmasked_ok && rnd_below(32) == 0)
		fsw |= (uint16_t)(rnd() & 0x3f);
	if (fsw & ~fcw & 0x3f) /* a pending unmasked exception: ES and B, and #MF next */
		fsw |= 0x8080;
	memcpy(c->x87, &fcw, 2);
	memcpy(c->x87 + 2, &fsw, 2);
	c->x87[4] = (uint8_t)ftw;
	c->fpe_is_mf = true;
}

enum x87_mem {
	XM_REG, XM_NONE, XM_F32, XM_F64, XM_I16, XM_I32, XM_I64, XM_F80, XM_BCD, XM_CW, XM_ENV,
	XM_SAVE, XM_OUT2, XM_OUT4, XM_OUT8, XM_OUT10,
};

static const struct x87_form {
	const char *name;
	uint8_t op;
	uint8_t lo, hi; /* register forms: ModRM range; memory forms: lo = /digit */
	uint8_t mem; /* enum x87_mem */
} x87_forms[] = {
	{ "fadd/fmul/fcom/fcomp/fsub/fsubr/fdiv/fdivr st,st(i) (D8)", 0xD8, 0xC0, 0xFF, XM_REG },
	{ "fadd/fmul/fsub/fdiv st(i),st and fcom aliases (DC)", 0xDC, 0xC0, 0xFF, XM_REG },
	{ "faddp/fmulp/fsubp/fdivp, fcomp alias (DE)", 0xDE, 0xC0, 0xD7, XM_REG },
	{ "fcompp (DE D9)", 0xDE, 0xD9, 0xD9, XM_REG },
	{ "fsubrp/fsubp/fdivrp/fdivp (DE E0-FF)", 0xDE, 0xE0, 0xFF, XM_REG },
	{ "fld st(i), fxch (D9 C0-CF)", 0xD9, 0xC0, 0xCF, XM_REG },
	{ "fnop (D9 D0)", 0xD9, 0xD0, 0xD0, XM_REG },
	{ "fstp1 alias (D9 D8-DF)", 0xD9, 0xD8, 0xDF, XM_REG },
	{ "fchs/fabs (D9 E0/E1)", 0xD9, 0xE0, 0xE1, XM_REG },
	{ "ftst/fxam (D9 E4/E5)", 0xD9, 0xE4, 0xE5, XM_REG },
	{ "fld1/fldl2t/fldl2e/fldpi/fldlg2/fldln2/fldz (D9 E8-EE)", 0xD9, 0xE8, 0xEE, XM_REG },
	{ "f2xm1/fyl2x/fptan/fpatan/fxtract/fprem1/fdecstp/fincstp (D9 F0-F7)", 0xD9, 0xF0, 0xF7,
	  XM_REG },
	{ "fprem/fyl2xp1/fsqrt/fsincos/frndint/fscale/fsin/fcos (D9 F8-FF)", 0xD9, 0xF8, 0xFF,
	  XM_REG },
	{ "fcmovb/e/be/u (DA C0-DF)", 0xDA, 0xC0, 0xDF, XM_REG },
	{ "fucompp (DA E9)", 0xDA, 0xE9, 0xE9, XM_REG },
	{ "fcmovnb/ne/nbe/nu (DB C0-DF)", 0xDB, 0xC0, 0xDF, XM_REG },
	{ "fnclex/fninit (DB E2/E3)", 0xDB, 0xE2, 0xE3, XM_REG },
	{ "fucomi/fcomi (DB E8-F7)", 0xDB, 0xE8, 0xF7, XM_REG },
	{ "ffree/fxch alias/fst/fstp st(i) (DD C0-DF)", 0xDD, 0xC0, 0xDF, XM_REG },
	{ "fucom/fucomp (DD E0-EF)", 0xDD, 0xE0, 0xEF, XM_REG },
	{ "ffreep/fxch/fstp aliases (DF C0-DF)", 0xDF, 0xC0, 0xDF, XM_REG },
	{ "fnstsw ax (DF E0)", 0xDF, 0xE0, 0xE0, XM_REG },
	{ "fucomip/fcomip (DF E8-F7)", 0xDF, 0xE8, 0xF7, XM_REG },
	{ "fwait (9B)", 0x9B, 0, 0, XM_NONE },
	{ "arith m32fp (D8 /r)", 0xD8, 0xff, 0, XM_F32 },
	{ "arith m64fp (DC /r)", 0xDC, 0xff, 0, XM_F64 },
	{ "arith m32int (DA /r)", 0xDA, 0xff, 0, XM_I32 },
	{ "arith m16int (DE /r)", 0xDE, 0xff, 0, XM_I16 },
	{ "fld m32fp", 0xD9, 0, 0, XM_F32 },
	{ "fst m32fp", 0xD9, 2, 0, XM_OUT4 },
	{ "fstp m32fp", 0xD9, 3, 0, XM_OUT4 },
	{ "fldenv", 0xD9, 4, 0, XM_ENV },
	{ "fldcw", 0xD9, 5, 0, XM_CW },
	{ "fnstenv", 0xD9, 6, 0, XM_ENV },
	{ "fnstcw", 0xD9, 7, 0, XM_OUT2 },
	{ "fild m32int", 0xDB, 0, 0, XM_I32 },
	{ "fisttp m32int", 0xDB, 1, 0, XM_OUT4 },
	{ "fist m32int", 0xDB, 2, 0, XM_OUT4 },
	{ "fistp m32int", 0xDB, 3, 0, XM_OUT4 },
	{ "fld m80fp", 0xDB, 5, 0, XM_F80 },
	{ "fstp m80fp", 0xDB, 7, 0, XM_OUT10 },
	{ "fld m64fp", 0xDD, 0, 0, XM_F64 },
	{ "fisttp m64int", 0xDD, 1, 0, XM_OUT8 },
	{ "fst m64fp", 0xDD, 2, 0, XM_OUT8 },
	{ "fstp m64fp", 0xDD, 3, 0, XM_OUT8 },
	{ "frstor", 0xDD, 4, 0, XM_SAVE },
	{ "fnsave", 0xDD, 6, 0, XM_SAVE },
	{ "fnstsw m16", 0xDD, 7, 0, XM_OUT2 },
	{ "fild m16int", 0xDF, 0, 0, XM_I16 },
	{ "fisttp m16int", 0xDF, 1, 0, XM_OUT2 },
	{ "fist m16int", 0xDF, 2, 0, XM_OUT2 },
	{ "fistp m16int", 0xDF, 3, 0, XM_OUT2 },
	{ "fbld", 0xDF, 4, 0, XM_BCD },
	{ "fild m64int", 0xDF, 5, 0, XM_I64 },
	{ "fbstp", 0xDF, 6, 0, XM_OUT10 },
	{ "fistp m64int", 0xDF, 7, 0, XM_OUT8 },
};

/* A memory operand's value of the kind the instruction reads. */
static void x87_mem_value(struct tcase *c, const struct x87_form *f, bool o16, uint8_t *m)
{
	uint64_t v;

	switch (f->mem) {
	case XM_F32: {
		uint8_t x[16];

		rnd_fp_xmm(x, 4);
		memcpy(m, x, 4);
		break;
	}
	case XM_F64: {
		uint8_t x[16];

		rnd_fp_xmm(x, 8);
		memcpy(m, x, 8);
		break;
	}
	case XM_I16: case XM_I32: case XM_I64:
		v = rnd_value(8);
		memcpy(m, &v, 8);
		break;
	case XM_F80:
		rnd_f80(m);
		break;
	case XM_BCD: /* 18 digits and a sign; now and then a digit above 9 */
		for (unsigned i = 0; i < 9; i++)
			m[i] = (uint8_t)(rnd_below(10) | rnd_below(10) << 4);
		m[9] = rnd_below(2) ? 0x80 : 0;
		if (rnd_below(8) == 0)
			m[rnd_below(9)] |= 0xa0;
		break;
	case XM_CW: { /* mostly sane control words; reserved bits now and then */
		uint16_t cw = (uint16_t)(0x037f ^ (rnd() & 0x0f00));

		if (rnd_below(4) == 0)
			cw = (uint16_t)rnd();
		memcpy(m, &cw, 2);
		break;
	}
	case XM_ENV:
	case XM_SAVE: { /* FLDENV/FRSTOR: an environment (as FNSTENV writes it) */
		unsigned len = o16 ? 14 : 28, w = o16 ? 2 : 4;
		struct tcase tmp;
		uint32_t words[7] = { 0 };

		memset(&tmp, 0, sizeof(tmp));
		rnd_x87_state(&tmp, true);
		memcpy(&words[0], tmp.x87, 2);
		memcpy(&words[1], tmp.x87 + 2, 2);
		words[0] |= 0x40;
		words[0] &= 0x1f7f;
		for (unsigned r = 0; r < 8; r++) /* full tags from the abridged ones */
			if (!(tmp.x87[4] & (1u << r)))
				words[2] |= 3u << (2 * r);
			else
				words[2] |= (unsigned)rnd_below(3) << (2 * r);
		if (!o16)
			for (unsigned i = 0; i < 3; i++)
				words[i] |= 0xffff0000u;
		for (unsigned i = 0; i < 7; i++)
			memcpy(m + w * i, &words[i], w);
		if (f->mem == XM_SAVE)
			for (unsigned i = 0; i < 8; i++)
				rnd_f80(m + len + 10 * i);
		(void)c;
		break;
	}
	default:
		break;
	}
}

static void test_x87(void)
{
	for (unsigned fi = 0; fi < sizeof(x87_forms) / sizeof(x87_forms[0]); fi++) {
		const struct x87_form *f = &x87_forms[fi];
		char name[128];

		snprintf(name, sizeof(name), "x87: %s", f->name);
		group_begin(name);
		for (unsigned n = 0; n < iters * 4; n++) {
			struct tcase c;
			struct insn_spec s;
			bool o16 = false;
			unsigned size;

			case_init(&c);
			rnd_x87_state(&c, true);
			c.rflags = (rnd() & EMU_FLAGS_ARITH) | EMU_FLAG_FIXED1;
			if ((f->mem == XM_ENV || f->mem == XM_SAVE) && rnd_below(4) == 0)
				o16 = true;
			spec_init(&s, o16 ? 2 : 4);
			if (f->mem == XM_REG) {
				spec_op(&s, f->op, f->lo + rnd_below(f->hi - f->lo + 1u));
				encode(&c, &s);
				check_case(&c);
				continue;
			}
			spec_op(&s, f->op, -1);
			if (f->mem == XM_NONE) {
				encode(&c, &s);
				check_case(&c);
				continue;
			}
			size = (unsigned[]){ 0, 0, 4, 8, 2, 4, 8, 10, 10, 2, 28, 108, 2, 4, 8, 10 }
				[f->mem];
			if (o16)
				size -= 14;
			build_modrm(&c, &s, true, size, f->lo == 0xff ? rnd_below(8) : f->lo);
			s.rm.value = 0;
			encode(&c, &s);
			x87_mem_value(&c, f, o16, c.scratch + c.mem_off);
			if (f->mem == XM_ENV || f->mem == XM_SAVE) { /* FIP, FCS, FOP, FDP, FDS */
				c.ignore_off = c.mem_off + (o16 ? 6 : 12);
				c.ignore_len = o16 ? 8 : 16;
			}
			check_case(&c);
		}
		group_end();
	}
}

/* FXSAVE/FXRSTOR (0F AE /0 /1) with and without REX.W. FXSAVE: the image must match but for
 * FOP, FIP and FDP (bytes 6-23), which processors fill differently (AMD only with an unmasked
 * exception pending), and MXCSR_MASK (28-31: AMD has bit 17, MM; MXCSR itself is compared as a
 * register); the FIP/FDP formats are checked in test_emu_system.c. FXRSTOR: random images
 * (now and then a reserved MXCSR bit: #GP), then every register is compared. */
static void test_fxsave(void)
{
	static const char *names[4] = { "fxsave", "fxrstor", "fxsave64 (REX.W)",
					 "fxrstor64 (REX.W)" };

	for (unsigned form = 0; form < 4; form++) {
		bool restore = form & 1, wide = form >= 2;

		if (compat && wide)
			continue;
		group_begin(names[form]);
		for (unsigned n = 0; n < iters * 2; n++) {
			struct tcase c;
			struct insn_spec s;
			uint8_t *img;

			case_init(&c);
			rnd_x87_state(&c, true);
			c.fpe_is_mf = false;
			spec_init(&s, 4);
			if (wide)
				s.rex = 0x48;
			spec_op(&s, 0x0F, 0xAE);
			build_modrm(&c, &s, true, 512, restore);
			s.rm.value = 0;
			if (rnd_below(16))
				s.rm.align = 16;
			encode(&c, &s);
			img = c.scratch + c.mem_off;
			if (restore) {
				uint32_t mxcsr = 0x1f80 ^ ((uint32_t)rnd() & 0xffff);

				for (unsigned i = 0; i < 512; i++)
					img[i] = (uint8_t)rnd();
				if (rnd_below(8) == 0)
					mxcsr |= 1u << (18 + rnd_below(14)); /* reserved: #GP
								(not 17: AMD's MM) */
				memcpy(img + 24, &mxcsr, 4);
				for (unsigned i = 0; i < 8; i++)
					rnd_f80(img + 32 + 16 * i);
			} else {
				c.ignore_off = c.mem_off + 6;
				c.ignore_len = 26;
			}
			check_case(&c);
		}
		group_end();
	}
}

/* ---- MMX ---- */

enum mmx_kind {
	MMX_RM, /* mm, mm/m64 */
	MMX_SHIFT_IMM, /* mm, imm8 with /n */
	MMX_RM_IMM, /* mm, mm/m64, imm8 (PSHUFW) */
	MMX_GPR_LOAD, /* mm, r/m32/64 (MOVD/MOVQ); mm, r32/m16, imm8 (PINSRW, arg 1) */
	MMX_GPR_STORE, /* r/m32/64, mm */
	MMX_TO_GPR, /* r32, mm (PMOVMSKB); r32, mm, imm8 (PEXTRW, arg 1) */
	MMX_ST, /* mm/m64, mm */
	MMX_ST_MEM, /* m64, mm (MOVNTQ) */
	MMX_MASKMOV, /* mm, mm: to [rDI] */
	MMX_NONE, /* EMMS */
	MMX_XMM_FROM_MM, /* xmm, mm (MOVQ2DQ) */
	MMX_MM_FROM_XMM, /* mm, xmm (MOVDQ2Q) */
	MMX_CVT_FROM_MM, /* xmm, mm/m64 (CVTPI2PS/PD) */
	MMX_CVT_TO_MM, /* mm, xmm/m64 (PS, arg 4) or xmm/m128 (PD, arg 8, aligned) */
};

static const struct mmx_form {
	const char *name;
	uint8_t prefix;
	uint8_t op;
	uint8_t kind;
	uint8_t arg;
} mmx_forms[] = {
	{ "punpcklbw", 0, 0x60, MMX_RM, 0 }, { "punpcklwd", 0, 0x61, MMX_RM, 0 },
	{ "punpckldq", 0, 0x62, MMX_RM, 0 }, { "packsswb", 0, 0x63, MMX_RM, 0 },
	{ "pcmpgtb", 0, 0x64, MMX_RM, 0 }, { "pcmpgtw", 0, 0x65, MMX_RM, 0 },
	{ "pcmpgtd", 0, 0x66, MMX_RM, 0 }, { "packuswb", 0, 0x67, MMX_RM, 0 },
	{ "punpckhbw", 0, 0x68, MMX_RM, 0 }, { "punpckhwd", 0, 0x69, MMX_RM, 0 },
	{ "punpckhdq", 0, 0x6A, MMX_RM, 0 }, { "packssdw", 0, 0x6B, MMX_RM, 0 },
	{ "movd/movq mm, r/m", 0, 0x6E, MMX_GPR_LOAD, 0 }, { "movq mm, mm/m64", 0, 0x6F, MMX_RM, 0 },
	{ "pshufw", 0, 0x70, MMX_RM_IMM, 0 }, { "psrlw imm", 0, 0x71, MMX_SHIFT_IMM, 2 },
	{ "psraw imm", 0, 0x71, MMX_SHIFT_IMM, 4 }, { "psllw imm", 0, 0x71, MMX_SHIFT_IMM, 6 },
	{ "psrld imm", 0, 0x72, MMX_SHIFT_IMM, 2 }, { "psrad imm", 0, 0x72, MMX_SHIFT_IMM, 4 },
	{ "pslld imm", 0, 0x72, MMX_SHIFT_IMM, 6 }, { "psrlq imm", 0, 0x73, MMX_SHIFT_IMM, 2 },
	{ "psllq imm", 0, 0x73, MMX_SHIFT_IMM, 6 }, { "pcmpeqb", 0, 0x74, MMX_RM, 0 },
	{ "pcmpeqw", 0, 0x75, MMX_RM, 0 }, { "pcmpeqd", 0, 0x76, MMX_RM, 0 },
	{ "emms", 0, 0x77, MMX_NONE, 0 }, { "movd/movq r/m, mm", 0, 0x7E, MMX_GPR_STORE, 0 },
	{ "movq mm/m64, mm", 0, 0x7F, MMX_ST, 0 }, { "pinsrw", 0, 0xC4, MMX_GPR_LOAD, 1 },
	{ "pextrw", 0, 0xC5, MMX_TO_GPR, 1 }, { "psrlw", 0, 0xD1, MMX_RM, 0 },
	{ "psrld", 0, 0xD2, MMX_RM, 0 }, { "psrlq", 0, 0xD3, MMX_RM, 0 },
	{ "paddq", 0, 0xD4, MMX_RM, 0 }, { "pmullw", 0, 0xD5, MMX_RM, 0 },
	{ "pmovmskb", 0, 0xD7, MMX_TO_GPR, 0 }, { "psubusb", 0, 0xD8, MMX_RM, 0 },
	{ "psubusw", 0, 0xD9, MMX_RM, 0 }, { "pminub", 0, 0xDA, MMX_RM, 0 },
	{ "pand", 0, 0xDB, MMX_RM, 0 }, { "paddusb", 0, 0xDC, MMX_RM, 0 },
	{ "paddusw", 0, 0xDD, MMX_RM, 0 }, { "pmaxub", 0, 0xDE, MMX_RM, 0 },
	{ "pandn", 0, 0xDF, MMX_RM, 0 }, { "pavgb", 0, 0xE0, MMX_RM, 0 },
	{ "psraw", 0, 0xE1, MMX_RM, 0 }, { "psrad", 0, 0xE2, MMX_RM, 0 },
	{ "pavgw", 0, 0xE3, MMX_RM, 0 }, { "pmulhuw", 0, 0xE4, MMX_RM, 0 },
	{ "pmulhw", 0, 0xE5, MMX_RM, 0 }, { "movntq", 0, 0xE7, MMX_ST_MEM, 0 },
	{ "psubsb", 0, 0xE8, MMX_RM, 0 }, { "psubsw", 0, 0xE9, MMX_RM, 0 },
	{ "pminsw", 0, 0xEA, MMX_RM, 0 }, { "por", 0, 0xEB, MMX_RM, 0 },
	{ "paddsb", 0, 0xEC, MMX_RM, 0 }, { "paddsw", 0, 0xED, MMX_RM, 0 },
	{ "pmaxsw", 0, 0xEE, MMX_RM, 0 }, { "pxor", 0, 0xEF, MMX_RM, 0 },
	{ "psllw", 0, 0xF1, MMX_RM, 0 }, { "pslld", 0, 0xF2, MMX_RM, 0 },
	{ "psllq", 0, 0xF3, MMX_RM, 0 }, { "pmuludq", 0, 0xF4, MMX_RM, 0 },
	{ "pmaddwd", 0, 0xF5, MMX_RM, 0 }, { "psadbw", 0, 0xF6, MMX_RM, 0 },
	{ "maskmovq", 0, 0xF7, MMX_MASKMOV, 0 }, { "psubb", 0, 0xF8, MMX_RM, 0 },
	{ "psubw", 0, 0xF9, MMX_RM, 0 }, { "psubd", 0, 0xFA, MMX_RM, 0 },
	{ "psubq", 0, 0xFB, MMX_RM, 0 }, { "paddb", 0, 0xFC, MMX_RM, 0 },
	{ "paddw", 0, 0xFD, MMX_RM, 0 }, { "paddd", 0, 0xFE, MMX_RM, 0 },
	{ "movq2dq", 0xF3, 0xD6, MMX_XMM_FROM_MM, 0 }, { "movdq2q", 0xF2, 0xD6, MMX_MM_FROM_XMM, 0 },
	{ "cvtpi2ps", 0, 0x2A, MMX_CVT_FROM_MM, 4 }, { "cvtpi2pd", 0x66, 0x2A, MMX_CVT_FROM_MM, 8 },
	{ "cvttps2pi", 0, 0x2C, MMX_CVT_TO_MM, 4 }, { "cvtps2pi", 0, 0x2D, MMX_CVT_TO_MM, 4 },
	{ "cvttpd2pi", 0x66, 0x2C, MMX_CVT_TO_MM, 8 }, { "cvtpd2pi", 0x66, 0x2D, MMX_CVT_TO_MM, 8 },
};

/* MMn is physical x87 register n: ST((n - TOP) & 7) of the FXSAVE image. */
static void set_mm(struct tcase *c, unsigned n, uint64_t v)
{
	unsigned top = (c->x87[3] >> 3) & 7;

	memcpy(c->x87 + 32 + 16 * ((n - top) & 7), &v, 8);
}

static void test_mmx(void)
{
	for (unsigned f = 0; f < sizeof(mmx_forms) / sizeof(mmx_forms[0]); f++) {
		const struct mmx_form *form = &mmx_forms[f];
		char name[64];

		snprintf(name, sizeof(name), "mmx: %s (%s0F %02X%s)", form->name,
			 form->prefix == 0x66 ? "66 " : form->prefix == 0xF3 ? "F3 "
			 : form->prefix == 0xF2 ? "F2 " : "", form->op,
			 form->kind == MMX_SHIFT_IMM ? " /n" : "");
		group_begin(name);
		for (unsigned n = 0; n < iters * 4; n++) {
			unsigned kind = form->kind, nregs = compat ? 8 : 16, msize = 8;
			bool mem = rnd_below(2), wide = !compat && rnd_below(2);
			struct tcase c;
			struct insn_spec s;

			case_init(&c);
			/* Random TOP, tags, values and control word; now and then a pending
			 * unmasked exception (#MF first). The registers hold lane values. */
			rnd_x87_state(&c, true);
			for (unsigned i = 0; i < 8; i++) {
				uint8_t v[16];

				rnd_xmm(v);
				if (rnd_below(4))
					memcpy(c.x87 + 32 + 16 * i, v, 8);
			}
			if (kind == MMX_CVT_FROM_MM || kind == MMX_CVT_TO_MM) {
				for (unsigned i = 0; i < 16; i++)
					rnd_fp_xmm(c.xmm[i], form->arg);
				c.mxcsr = 0x1f80 | ((uint32_t)rnd() & 0xe07f);
				if (rnd_below(8) == 0) { /* unmasked: #XM (no #MF pending then) */
					c.mxcsr &= ~((uint32_t)rnd() & 0x1f80);
					c.x87[2] &= 0x40; /* FSW: no exception flags, ES, B */
					c.x87[3] &= 0x7f;
					c.fpe_is_mf = false;
					c.fpe_is_xm = true;
				}
			}
			spec_init(&s, 4);
			if (form->prefix)
				s.prefix[s.nr_prefix++] = form->prefix;
			spec_op(&s, 0x0F, form->op);
			s.modrm = true;
			s.reg = rnd_below(nregs); /* MM numbers ignore REX.R and REX.B */
			switch (kind) {
			case MMX_SHIFT_IMM:
				s.reg = form->arg;
				/* fall through */
			case MMX_TO_GPR:
			case MMX_MASKMOV:
			case MMX_XMM_FROM_MM:
			case MMX_MM_FROM_XMM:
				mem = false;
				break;
			case MMX_ST_MEM:
				mem = true;
				break;
			case MMX_GPR_LOAD:
			case MMX_GPR_STORE:
				msize = form->arg ? 2 : wide ? 8 : 4;
				if (wide && !form->arg)
					s.rex = 0x48;
				break;
			case MMX_CVT_TO_MM:
				msize = form->arg == 8 ? 16 : 8;
				break;
			default:
				break;
			}
			if (kind == MMX_MASKMOV) {
				c.gpr[CPU_RDI] = scratch_addr(rnd_below(DATA_SIZE - 8));
				c.used |= 1u << CPU_RDI;
			}
			if (kind == MMX_NONE) {
				encode(&c, &s); /* 0F 77 has no ModRM: drop it */
				c.len = 0;
				if (rnd_below(4) == 0 && !compat)
					c.code[c.len++] = 0x41; /* a REX prefix changes nothing */
				c.code[c.len++] = 0x0F;
				c.code[c.len++] = 0x77;
				check_case(&c);
				continue;
			}
			s.rm = rm_operand(&c, mem, msize, &s.rm.reg);
			if (!mem && kind != MMX_GPR_LOAD && kind != MMX_GPR_STORE)
				s.rm.reg = rnd_below(nregs);
			if (kind == MMX_TO_GPR) {
				s.reg = rnd_reg();
				if (s.reg == CPU_RSP)
					s.reg = CPU_RAX;
			}
			if (mem && kind == MMX_CVT_TO_MM && form->arg == 8 && rnd_below(16))
				s.rm.align = 16;
			if (kind == MMX_RM_IMM || kind == MMX_SHIFT_IMM || form->op == 0xC4 ||
			    form->op == 0xC5) {
				static const uint8_t counts[] = { 0,  1,  7,  8,  15,   16,  17, 31,
								  32, 33, 63, 64, 65, 0x80, 0xff };

				s.imm_size = 1;
				s.imm = kind == MMX_SHIFT_IMM && rnd_below(2) ? counts[rnd_below(15)]
									       : rnd() & 0xff;
			}
			encode(&c, &s);
			if (kind == MMX_RM && ((form->op >= 0xD1 && form->op <= 0xD3) ||
					       (form->op >= 0xE1 && form->op <= 0xE2) ||
					       (form->op >= 0xF1 && form->op <= 0xF3)) &&
			    rnd_below(2)) { /* shift counts: small ones too */
				uint64_t cnt = rnd_below(70);

				if (mem)
					memcpy(c.scratch + c.mem_off, &cnt, 8);
				else
					set_mm(&c, s.rm.reg & 7, cnt);
			}
			if (kind == MMX_CVT_FROM_MM && !mem && rnd_below(2))
				set_mm(&c, s.rm.reg & 7, rnd_value(8));
			check_case(&c);
		}
		group_end();
	}
}

/* Which forms emu_fast_select() gives a handler: the hot ones in 64-bit mode, never LOCK,
 * AH..BH, DIV or another mode (those must reach emu_execute()). And the differential groups
 * above must have run some of their cases through handlers. */
static void test_fast_selection(void)
{
	static const struct {
		uint8_t bytes[12];
		enum emu_mode mode;
		bool fast;
	} forms[] = {
		{ { 0x48, 0x01, 0xd8 }, EMU_MODE_64, true }, /* add rax, rbx */
		{ { 0x48, 0x89, 0x05, 0, 0, 0, 0 }, EMU_MODE_64, true }, /* mov [rip], rax */
		{ { 0x48, 0xc1, 0xe0, 0x05 }, EMU_MODE_64, true }, /* shl rax, 5 */
		{ { 0x75, 0x00 }, EMU_MODE_64, true }, /* jne */
		{ { 0x48, 0xf7, 0xe3 }, EMU_MODE_64, true }, /* mul rbx */
		{ { 0xf3, 0x0f, 0x1e, 0xfa }, EMU_MODE_64, true }, /* endbr64 */
		{ { 0x65, 0x48, 0x8b, 0x04, 0x25, 0, 0, 0 },
		  EMU_MODE_64,
		  true }, /* mov rax, gs:[0] */
		{ { 0xf0, 0x48, 0x01, 0x18 }, EMU_MODE_64, false }, /* lock add [rax], rbx */
		{ { 0x88, 0xe0 }, EMU_MODE_64, false }, /* mov al, ah */
		{ { 0x48, 0xf7, 0xf3 }, EMU_MODE_64, true }, /* div rbx */
		{ { 0xf7, 0x30 }, EMU_MODE_64, true }, /* div dword [rax] */
		{ { 0x48, 0xf7, 0xfb }, EMU_MODE_64, false }, /* idiv rbx */
		{ { 0x66, 0xf7, 0xf3 }, EMU_MODE_64, false }, /* div bx */
		{ { 0x48, 0x0f, 0xa3, 0xd8 }, EMU_MODE_64, true }, /* bt rax, rbx */
		{ { 0x65, 0x48, 0x0f, 0xab, 0x18 }, EMU_MODE_64, true }, /* bts gs:[rax], rbx */
		{ { 0x0f, 0xba, 0x28, 0x05 }, EMU_MODE_64, true }, /* bts dword [rax], 5 */
		{ { 0xf0, 0x0f, 0xba, 0x28, 0x05 }, EMU_MODE_64, false }, /* lock bts [rax], 5 */
		{ { 0x65, 0x48, 0x0f, 0xc7, 0x0e }, EMU_MODE_64, true }, /* cmpxchg16b gs:[rsi] */
		{ { 0xf0, 0x48, 0x0f, 0xc7, 0x0e }, EMU_MODE_64, false }, /* lock cmpxchg16b */
		{ { 0x0f, 0xc7, 0x0e }, EMU_MODE_64, false }, /* cmpxchg8b [rsi] */
		{ { 0x65, 0x0f, 0xc1, 0x06 }, EMU_MODE_64, true }, /* xadd gs:[rsi], eax */
		{ { 0xf0, 0x0f, 0xc1, 0x06 }, EMU_MODE_64, false }, /* lock xadd [rsi], eax */
		{ { 0x48, 0x0f, 0xbc, 0xc3 }, EMU_MODE_64, true }, /* bsf rax, rbx */
		{ { 0xf3, 0x48, 0x0f, 0xbc, 0xc3 }, EMU_MODE_64, true }, /* tzcnt: bsf here */
		{ { 0x0f, 0xae, 0xe8 }, EMU_MODE_64, true }, /* lfence */
		{ { 0x41, 0x0f, 0x11, 0x1f }, EMU_MODE_64, true }, /* movups [r15], xmm3 */
		{ { 0x66, 0x0f, 0x6f, 0x00 }, EMU_MODE_64, true }, /* movdqa xmm0, [rax] */
		{ { 0x0f, 0x6f, 0x00 }, EMU_MODE_64, false }, /* movq mm0, [rax] */
		{ { 0xf3, 0x0f, 0x10, 0x00 }, EMU_MODE_64, false }, /* movss xmm0, [rax] */
		{ { 0x0f, 0x28, 0xc1 }, EMU_MODE_64, false }, /* movaps xmm0, xmm1 */
		{ { 0x0f, 0xae, 0x00 }, EMU_MODE_64, false }, /* fxsave [rax] */
		{ { 0x67, 0x8b, 0x00 }, EMU_MODE_64, false }, /* mov eax, [eax] */
		{ { 0x48, 0x87, 0x18 }, EMU_MODE_64, false }, /* xchg [rax], rbx: locked */
		{ { 0x01, 0xd8 }, EMU_MODE_32, false }, /* add eax, ebx */
	};

	for (unsigned i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		struct emu_insn insn;

		CHECK_EQ(emu_decode(forms[i].bytes, sizeof(forms[i].bytes), forms[i].mode, &insn),
			 EMU_DECODE_OK);
		emu_fast_select(&insn, forms[i].mode);
		if ((insn.fast != NULL) != forms[i].fast) {
			printf("  form %u (%02x %02x %02x): handler %s\n", i, forms[i].bytes[0],
			       forms[i].bytes[1], forms[i].bytes[2], insn.fast ? "chosen" : "missing");
			test_failed_checks++;
		}
	}
	CHECK(fast_cases > 0);
}

/* Which forms the JIT compiles inline (a template) rather than as a call of their handler:
 * SETcc m8 has one since the guest's 1 MiB O_DIRECT requests ran one per page (`sete (%r8)`
 * in __bio_try_merge_page(), ~255 per request) through setcc_m. What a template computes is
 * checked by the "jit:" cases of every group; this only checks that it is used. */
static void test_jit_selection(void)
{
	static const struct {
		uint8_t bytes[12];
		bool inlined;
	} forms[] = {
		{ { 0x41, 0x0f, 0x94, 0x00 }, true }, /* sete [r8] */
		{ { 0x65, 0x0f, 0x95, 0x40, 0x08 }, true }, /* setne gs:[rax + 8] */
		{ { 0x0f, 0x9c, 0x05, 0, 0, 0, 0 }, true }, /* setl [rip] */
		{ { 0x0f, 0x92, 0xc1 }, true }, /* setb cl */
		{ { 0x67, 0x0f, 0x94, 0x00 }, false }, /* sete [eax]: no handler */
		{ { 0x48, 0x89, 0x18 }, true }, /* mov [rax], rbx */
		{ { 0xf0, 0x48, 0x01, 0x18 }, false }, /* lock add [rax], rbx */
		{ { 0x0f, 0xba, 0x28, 0x05 }, false }, /* bts dword [rax], 5: its handler */
	};

	for (unsigned i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		struct emu_insn insn;

		CHECK_EQ(emu_decode(forms[i].bytes, sizeof(forms[i].bytes), EMU_MODE_64, &insn),
			 EMU_DECODE_OK);
		emu_fast_select(&insn, EMU_MODE_64);
		if (!!emu_jit_inlines(&insn) != forms[i].inlined) {
			printf("  form %u (%02x %02x %02x): %s\n", i, forms[i].bytes[0],
			       forms[i].bytes[1], forms[i].bytes[2],
			       forms[i].inlined ? "not inlined" : "inlined");
			test_failed_checks++;
		}
	}
}

/* ---- sequences for the JIT ---- */

#define ARITH_DEFINED (EMU_FLAG_CF | EMU_FLAG_PF | EMU_FLAG_ZF | EMU_FLAG_SF | EMU_FLAG_OF)

/* A register for a sequence: any but RSP (the native stub's stack). */
static unsigned seq_reg(void)
{
	unsigned r;

	do
		r = rnd_below(16);
	while (r == CPU_RSP);
	return r;
}

static uint8_t *seq_rex(uint8_t *p, bool w, unsigned reg, unsigned rm, bool force)
{
	uint8_t rex = (uint8_t)(0x40 | (w ? 8 : 0) | ((reg & 8) ? 4 : 0) | ((rm & 8) ? 1 : 0));

	if (rex != 0x40 || force)
		*p++ = rex;
	return p;
}

static uint8_t *seq_modrm(uint8_t *p, unsigned reg, unsigned rm)
{
	*p++ = (uint8_t)(0xC0 | ((reg & 7) << 3) | (rm & 7));
	return p;
}

/* One instruction of a sequence at p; *written and *undef: the flags it sets and leaves
 * undefined; `reads`: whether it reads flags (only emitted when they are all defined). */
static uint8_t *seq_insn(uint8_t *p, bool flags_defined, uint64_t *written, uint64_t *undef)
{
	unsigned a = seq_reg(), b = seq_reg(), kind = rnd_below(flags_defined ? 16 : 13);
	bool w = rnd_below(2);
	unsigned op = rnd_below(8);

	*written = 0;
	*undef = 0;
	switch (kind) {
	case 0: /* ALU a, b / TEST a, b */
	case 1:
		p = seq_rex(p, w, b, a, false);
		if (op == 2 || op == 3) /* ADC/SBB read CF: below */
			op = 0;
		*p++ = rnd_below(8) ? (uint8_t)(op * 8 + 1) : 0x85;
		p = seq_modrm(p, b, a);
		*written = EMU_FLAGS_ARITH;
		*undef = (p[-2] == 0x85 || op == 1 || op == 4 || op == 6) ? EMU_FLAG_AF : 0;
		return p;
	case 2: /* ALU a, imm8 / imm32 */
		if (op == 2 || op == 3)
			op = 5;
		p = seq_rex(p, w, 0, a, false);
		if (rnd_below(2)) {
			*p++ = 0x83;
			p = seq_modrm(p, op, a);
			*p++ = (uint8_t)rnd_value(1);
		} else {
			uint32_t imm = (uint32_t)rnd_value(4);

			*p++ = 0x81;
			p = seq_modrm(p, op, a);
			memcpy(p, &imm, 4);
			p += 4;
		}
		*written = EMU_FLAGS_ARITH;
		*undef = (op == 1 || op == 4 || op == 6) ? EMU_FLAG_AF : 0;
		return p;
	case 3: /* MOV a, b / MOV a, imm */
		if (rnd_below(2)) {
			p = seq_rex(p, w, b, a, false);
			*p++ = 0x89;
			return seq_modrm(p, b, a);
		} else {
			uint64_t imm = rnd_value(8);

			p = seq_rex(p, w, 0, a, false);
			*p++ = (uint8_t)(0xB8 + (a & 7));
			memcpy(p, &imm, w ? 8 : 4);
			return p + (w ? 8 : 4);
		}
	case 4: { /* LEA a, [b + index * scale + disp32] or [rip + disp32] */
		unsigned index = seq_reg();
		int32_t disp = (int32_t)rnd_value(4);

		if (rnd_below(4) == 0) {
			p = seq_rex(p, w, a, 0, false);
			*p++ = 0x8D;
			*p++ = (uint8_t)(0x05 | ((a & 7) << 3));
		} else {
			uint8_t rex = (uint8_t)(0x40 | (w ? 8 : 0) | ((a & 8) ? 4 : 0) |
						((index & 8) ? 2 : 0) | ((b & 8) ? 1 : 0));

			if (rex != 0x40)
				*p++ = rex;
			*p++ = 0x8D;
			*p++ = (uint8_t)(0x84 | ((a & 7) << 3));
			*p++ = (uint8_t)((rnd_below(4) << 6) | ((index & 7) << 3) | (b & 7));
		}
		memcpy(p, &disp, 4);
		return p + 4;
	}
	case 5: { /* ROL/ROR/SHL/SHR/SAR a, imm8 or 1; SHL/SAL/SHR/SAR a, CL */
		static const unsigned ops[5] = { 0, 1, 4, 5, 7 };
		unsigned sop = ops[rnd_below(5)];
		unsigned mask = w ? 63 : 31, count = rnd_below(70);

		if (rnd_below(3) == 0) { /* the count is whatever CL holds: 0 changes no flag */
			p = seq_rex(p, w, 0, a, false);
			*p++ = 0xD3;
			p = seq_modrm(p, 4 + rnd_below(4), a);
			*undef = EMU_FLAG_OF | EMU_FLAG_AF;
			return p;
		}
		if (rnd_below(4))
			count = 1 + (unsigned)(rnd() & mask) % mask;

		p = seq_rex(p, w, 0, a, false);
		*p++ = count == 1 && rnd_below(2) ? 0xD1 : 0xC1;
		p = seq_modrm(p, sop, a);
		if (p[-2] == 0xC1)
			*p++ = (uint8_t)count;
		if (count & mask) { /* rotates: CF and OF only */
			*written = sop <= 1 ? EMU_FLAG_CF | EMU_FLAG_OF : EMU_FLAGS_ARITH;
			*undef = (sop <= 1 ? 0 : EMU_FLAG_AF) |
				 ((count & mask) > 1 ? EMU_FLAG_OF : 0);
		}
		return p;
	}
	case 6: /* IMUL a, b / IMUL a, b, imm8 */
		p = seq_rex(p, w, a, b, false);
		if (rnd_below(2)) {
			*p++ = 0x0F;
			*p++ = 0xAF;
			p = seq_modrm(p, a, b);
		} else {
			*p++ = 0x6B;
			p = seq_modrm(p, a, b);
			*p++ = (uint8_t)rnd_value(1);
		}
		*written = EMU_FLAGS_ARITH;
		*undef = EMU_FLAG_SF | EMU_FLAG_ZF | EMU_FLAG_AF | EMU_FLAG_PF;
		return p;
	case 7: /* MOVZX/MOVSX a, b8/b16 (REX: no AH..BH), MOVSXD */
		if (rnd_below(5) == 0) {
			p = seq_rex(p, true, a, b, false);
			*p++ = 0x63;
			return seq_modrm(p, a, b);
		}
		p = seq_rex(p, w, a, b, true);
		*p++ = 0x0F;
		*p++ = (uint8_t)((const uint8_t[]){ 0xB6, 0xB7, 0xBE, 0xBF })[rnd_below(4)];
		return seq_modrm(p, a, b);
	case 8: /* INC/DEC, NEG, NOT */
		p = seq_rex(p, w, 0, a, false);
		if (rnd_below(2)) {
			*p++ = 0xFF;
			p = seq_modrm(p, rnd_below(2), a);
			*written = EMU_FLAGS_ARITH & ~EMU_FLAG_CF;
		} else if (rnd_below(2)) {
			*p++ = 0xF7;
			p = seq_modrm(p, 3, a);
			*written = EMU_FLAGS_ARITH;
		} else {
			*p++ = 0xF7;
			p = seq_modrm(p, 2, a);
		}
		return p;
	case 9: /* handler forms: 16-bit and 8-bit ALU */
		if (op == 2 || op == 3)
			op = 7;
		if (w)
			*p++ = 0x66;
		p = seq_rex(p, false, b, a, true);
		*p++ = (uint8_t)(op * 8 + (w ? 1 : 0));
		p = seq_modrm(p, b, a);
		*written = EMU_FLAGS_ARITH;
		*undef = (op == 1 || op == 4 || op == 6) ? EMU_FLAG_AF : 0;
		return p;
	case 10: /* a memory operand: the handler (MOV a, [rsp]) */
		p = seq_rex(p, w, a, 0, false);
		*p++ = 0x8B;
		*p++ = (uint8_t)(0x04 | ((a & 7) << 3));
		*p++ = 0x24;
		return p;
	case 11: /* XOR a, a (zero idiom) */
	case 12:
		p = seq_rex(p, false, a, a, false);
		*p++ = 0x31;
		p = seq_modrm(p, a, a);
		*written = EMU_FLAGS_ARITH;
		*undef = EMU_FLAG_AF;
		return p;
	case 13: /* CMOVcc a, b */
		p = seq_rex(p, w, a, b, false);
		*p++ = 0x0F;
		*p++ = (uint8_t)(0x40 + rnd_below(16));
		return seq_modrm(p, a, b);
	case 14: /* SETcc a8 */
		p = seq_rex(p, false, 0, a, true);
		*p++ = 0x0F;
		*p++ = (uint8_t)(0x90 + rnd_below(16));
		return seq_modrm(p, 0, a);
	default: /* ADC/SBB a, b or imm8 */
		p = seq_rex(p, w, b, a, false);
		if (rnd_below(2)) {
			*p++ = (uint8_t)(rnd_below(2) ? 0x11 : 0x19);
			p = seq_modrm(p, b, a);
		} else {
			*p++ = 0x83;
			p = seq_modrm(p, 2 + rnd_below(2), a);
			*p++ = (uint8_t)rnd_value(1);
		}
		*written = EMU_FLAGS_ARITH;
		return p;
	}
}

/* Random sequences of register instructions, most of them forms the JIT inlines, some through
 * handlers, now and then ending in a Jcc: the JIT compiles each sequence as one block, so flags
 * skipped as dead, conditions from known producers and RIP kept across templates are checked
 * against the host as a whole. */
static void test_jit_sequences(void)
{
	if (compat)
		return;
	group_begin("jit: register sequences (ALU, MOV, LEA, shifts by imm/1/CL, rotates, "
		    "INC/DEC/NOT/NEG, "
		    "IMUL, MOVZX, "
		    "CMOVcc, SETcc, Jcc)");
	for (unsigned n = 0; n < iters * 32; n++) {
		unsigned count = 2 + rnd_below(JIT_SEQ_MAX - 2);
		uint64_t undef = 0, written, u;
		struct tcase c;
		uint8_t *p;

		case_init(&c);
		p = c.code;
		for (unsigned i = 0; i < count; i++) {
			bool last_jcc =
				i + 1 == count && rnd_below(3) == 0 && !(undef & ARITH_DEFINED);

			if (last_jcc) {
				*p++ = (uint8_t)(0x70 + rnd_below(16));
				*p++ = BRANCH_DISTANCE;
				break;
			}
			p = seq_insn(p, !(undef & ARITH_DEFINED), &written, &u);
			undef = (undef & ~written) | u;
		}
		c.len = (unsigned)(p - c.code);
		c.insns = count;
		c.flags_undef = undef;
		check_case(&c);
	}
	group_end();
}

static void run_groups(void)
{
	test_alu();
	test_unary();
	test_shifts();
	test_shift_double();
	test_muldiv();
	test_mov();
	test_extend();
	test_exchange();
	test_cmpxchg_wide();
	test_memory_flags_then_condition();
	test_bit_test();
	test_bit_scan();
	test_conditional();
	test_flags_then_condition();
	test_jit_sequences();
	test_branches();
	test_stack();
	test_strings();
	test_strings_pages();
	test_nops();
	test_inc_dec_short();
	test_invalid();
	test_sse();
	test_x87();
	test_fxsave();
	test_mmx();
}

/* CPUID leaf 0's vendor string is "GenuineIntel". */
static bool host_is_intel(void)
{
	unsigned a = 0, b = 0, c = 0, d = 0;

	return __get_cpuid(0, &a, &b, &c, &d) && b == 0x756e6547 && d == 0x49656e69 &&
	       c == 0x6c65746e;
}

int main(void)
{
	struct sigaction sa;
	stack_t ss;
	const char *env;
	struct timespec t0, t1;

	if ((env = getenv("EMU_DIFF_ITERS")))
		iters = (unsigned)strtoul(env, NULL, 0);
	if ((env = getenv("EMU_DIFF_SEED")))
		rng_state = strtoull(env, NULL, 0) | 1;
	host_intel = host_is_intel();
	if ((env = getenv("EMU_DIFF_HOST_INTEL")))
		host_intel = strtoul(env, NULL, 0) != 0;
	page = mmap(NULL, PAGE_SIZE_TOTAL, PROT_READ | PROT_WRITE | PROT_EXEC,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	if (page == MAP_FAILED) {
		printf("FAIL - mmap of an executable page\n");
		return 1;
	}
	ctx = (struct native_ctx *)(page + CTX_OFF);
	/* guard, three string pages, guard */
	sbuf = mmap(NULL, SBUF_SIZE + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
		    -1, 0);
	if (sbuf == MAP_FAILED || mprotect(sbuf + 4096, SBUF_SIZE, PROT_READ | PROT_WRITE)) {
		printf("FAIL - mmap of the string pages\n");
		return 1;
	}
	sbuf += 4096;

	static uint8_t alt_stack[1 << 16];

	ss.ss_sp = alt_stack;
	ss.ss_size = sizeof(alt_stack);
	ss.ss_flags = 0;
	sigaltstack(&ss, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = native_signal;
	sa.sa_flags = SA_ONSTACK | SA_NODEFER | SA_SIGINFO;
	sigaction(SIGFPE, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGILL, &sa, NULL);
	sigaction(SIGTRAP, &sa, NULL);

	if (memory_code_init(&scratch_code, emu_ram, sizeof(emu_ram)) < 0) {
		printf("FAIL - code-page tracking for the scratch buffer\n");
		return 1;
	}
	/* 256 KiB of code memory: the cases fill it many times, so every flush is exercised. */
	jit = emu_jit_create(256 << 10, 0, true);
	if (!jit) {
		printf("FAIL - no code memory for the JIT\n");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int mode = 0; mode < 2; mode++) {
		compat = mode == 1;
		if (compat)
			build_prologue32();
		else
			build_prologue();
		run_groups();
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	RUN_TEST(test_fast_selection);
	RUN_TEST(test_jit_selection);
	printf("# %lu cases (%lu of them through a specialised handler) in %.2f s\n", total_cases,
	       fast_cases, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	printf("# host CPU %s Intel: %s\n", host_intel ? "taken as" : "not taken as",
	       host_intel ? "the reference where vendors differ"
			  : "its results turned into Intel's where vendors differ");
	printf("# jit: %lu cases compiled, %lu instructions inlined, %llu flushes of code memory\n",
	       jit_cases, jit_inlined, (unsigned long long)emu_jit_flushes(jit));
	emu_jit_destroy(jit);
	return TEST_EXIT();
}
