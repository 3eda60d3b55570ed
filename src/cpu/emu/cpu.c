/* The software CPU's state handling and its fetch-decode-execute step. */
#include "cpu/emu/decode.h"
#include "cpu/emu/emu.h"
#include "cpu/emu/fast.h"
#include "cpu/emu/jit.h"

#include <stdlib.h>
#include <string.h>

#define EMU_PAGE_SIZE 4096ull

/* Decode once, into blocks: a block is a run of decoded instructions that starts at one
 * guest-physical address and ends at a branch or any instruction that may change the mode,
 * the paging or the interrupt state (block_ends()), at the end of the page, or after
 * BLOCK_MAX_INSNS. Blocks are cached by guest-physical address and mode. Each records the
 * version of its page (memory.h's code-page tracking) when it was decoded, and entering it
 * compares that with the page's version now: every writer of guest RAM (this and the other
 * vCPUs' stores, locked operands, page-table A/D bits, devices' DMA, loaders, gdb) makes a
 * new version of a page it writes after code was decoded from it, so self-modifying and
 * cross-modifying code, DMA into code pages and writes through another mapping of the page
 * are decoded again. Tracking is by guest-physical page, so remapping needs nothing. A write
 * by the block itself into its own page also ends the block after that instruction (mmu.c
 * sets block_exit), so the next instruction is fetched anew.
 *
 * Finding the block of CS:RIP without a TLB lookup: a jump cache maps the linear address, mode
 * and user/supervisor fetch to the block (whose tag and version say whether it still holds
 * that code). An entry is valid for one TLB generation, as the TLB entry it came from: a
 * block on a non-global page until the next flush of any kind (CR3, INVLPG, CR0/CR4/EFER
 * changes), a block on a global page (the kernel's) until the next INVLPG or full flush,
 * so context switches keep the kernel's entries (mmu.c's two generations). */
/* 40: the kernel's hottest loop at boot (mpihelp_submul_1, RSA: 37 instructions) is one block
 * that branches to itself, so it runs compiled (jit.c) without a lookup per pass; with 16 it
 * was three blocks and three lookups per pass. CPU to "Run /init" with the JIT at load ~8:
 * 11.4 s against 14.4 s (medians of 3); the cache holds ~16 MiB of blocks per vCPU. */
#define BLOCK_MAX_INSNS EMU_BLOCK_MAX_INSNS
/* The block cache: BLOCK_SLOTS blocks found through a hash table by tag (chains of slots from
 * BLOCK_BUCKETS buckets), their instructions in one pool of BLOCK_POOL_INSNS, each block using
 * the n it needs. Slots and the pool are both taken in turn, round and round (block_alloc()):
 * a new block replaces the oldest one in slot order, and any whose instructions lie where its
 * own go, so the cache forgets the blocks decoded longest ago, whatever their addresses. With
 * 2 ways of 8192 slots (each with room for 40 instructions: 16 MiB per vCPU) the disk path
 * (4 KiB random reads) decoded ~380 blocks per request again because others of the same set
 * had replaced them, and a third block cycling through a set of two missed every time. */
#define BLOCK_SLOTS EMU_BLOCK_SLOTS
#define BLOCK_BUCKETS 32768
#define BLOCK_POOL_INSNS EMU_BLOCK_POOL_INSNS /* blocks average ~4.5 instructions */
#define JUMP_CACHE_SIZE 4096
#define BLOCK_VALID (1ull << 63)
#define BLOCK_NONE UINT32_MAX /* no slot */
#define BLOCK_GPA_MASK ((1ull << 56) - 1) /* a tag's guest-physical address */

struct emu_jump_entry {
	uint64_t la; /* linear address of the block's first instruction */
	uint64_t ctx; /* jump_ctx() when it was filled */
	uint64_t tag; /* the block's tag then: the block may have been replaced since */
	uint32_t index; /* the block's slot in the block cache */
};

/* What finding and entering a block reads, apart from the block: validating a link or a jump
 * cache entry reads the successor's tag and version, then emu_run() its code. The blocks are
 * ~2 KB each (~16 MiB per vCPU), far more than the host's L2; these heads, in their own array
 * indexed like the blocks (40 bytes each, 320 KiB), mostly stay in it, so a block's first
 * touch is its compiled code or its instructions, which running it needs anyway. With the
 * tag in the block, that load was ~20 % of emu_run()'s own samples (one cache miss). */
struct emu_block_head {
	uint64_t tag; /* gpa | mode << 56 | BLOCK_VALID, 0 when empty */
	const uint32_t *version_word; /* its page's code version (memory.h) */
	uint32_t version; /* what it was when the block was decoded */
	uint8_t n;
	bool loops; /* ends with a relative jump (Jcc, JMP, LOOP): may branch to itself */
	bool falls_through; /* its last instruction does not end blocks (it stopped at the limit) */
	bool cross; /* one instruction that crosses into the next page (struct emu_block_cross) */
	struct emu_jit_ref jit; /* host code (jit.c), cleared whenever the block is rebuilt */
	uint32_t first; /* its instructions: the pool's [first, first + n) */
	uint32_t next; /* the next slot of its hash bucket, BLOCK_NONE at the end */
};

/* Block chaining: each block remembers the last two blocks that ran right after it, as jump
 * cache entries of its own (same validity: linear address, context, the block's tag, its
 * page's version), so going from a block to its usual successors skips the jump cache. They
 * are one cache line per slot in their own array: in struct emu_block, which nothing else
 * reads when the block runs compiled, the load of the first link's address was ~20 % of
 * emu_run()'s own samples (a cache miss on every block that went on to another). */
#define BLOCK_LINKS 2
struct emu_block_links {
	uint64_t la[BLOCK_LINKS], ctx[BLOCK_LINKS], tag[BLOCK_LINKS];
	uint32_t index[BLOCK_LINKS];
	uint8_t next; /* the link to replace next */
} __attribute__((aligned(64)));

/* The second page of a block whose one instruction crosses a page boundary: the page that the
 * next linear page translated to when it was decoded, and its version then. A cross block is
 * valid while both pages have their versions and the next linear page still translates to
 * `page` (checked at each entry: the jump cache and links only vouch for the first page). Such
 * instructions went through emu_step() each time (two fetches, two decodes, and the end of
 * the emu_run() pass): ~7.7 per 4 KiB random-read request at depth 32. Kept beside the heads
 * in a small table indexed by slot, as they are rare (a few dozen); an entry taken over by
 * another slot makes the block invalid, which decodes it again. Compiled, such a block's code
 * holds the second page, its version and its guest-physical address as constants, and its
 * chain entry checks them at every entry from compiled code (jit.c's emit_cross_check(): the
 * version, and the fetch TLB's entry for the next linear page); emu_run()'s entries come here
 * (cross_current()). Interpreted, these were ~10 of the ~20 blocks entered from emu_run() per
 * 4 KiB random write at depth 32, each the end of a chain. */
#define BLOCK_CROSS_SLOTS 256
struct emu_block_cross {
	uint32_t slot; /* the slot whose block this describes, BLOCK_NONE: none */
	uint32_t version;
	const uint32_t *version_word;
	uint64_t page; /* guest-physical address of the second page */
};

#define COMPILED_TAGS_LOG2 14
#define COMPILED_TAGS (1u << COMPILED_TAGS_LOG2)

struct emu_icache {
	void *base; /* what to free */
	uint32_t prev; /* the slot of the block emu_run() executed last, BLOCK_NONE if none */
	uint64_t prev_ctx; /* jump_ctx() when it started */
	/* The exit compiled code left through last towards a successor in its page, and the
	 * JIT's generation then (emu_jit_link()); 0: none, or not to be linked. */
	uint32_t link_exit, link_gen;
	uint32_t slot_next; /* the slot the next new block takes */
	uint32_t pool_next; /* where the next block's instructions go in the pool */
	struct emu_jump_entry jump[JUMP_CACHE_SIZE];
	struct emu_block_head head[BLOCK_SLOTS];
	struct emu_block_links links[BLOCK_SLOTS];
	uint32_t bucket[BLOCK_BUCKETS]; /* the first slot of each hash chain, BLOCK_NONE: none */
	struct emu_block_cross cross[BLOCK_CROSS_SLOTS];
	/* For each pool entry, the slot whose block's instructions started there when it was
	 * decoded (BLOCK_NONE: none); the slot's head says whether they still do. */
	uint32_t owner[BLOCK_POOL_INSNS];
	struct emu_insn pool[BLOCK_POOL_INSNS];
	/* Tags of blocks that were compiled, by compiled_index(): a block the cache forgot and
	 * decodes again is compiled at its first entry, not after EMU_JIT_THRESHOLD entries in
	 * the interpreter. A path that runs once a second (a ping's) came back after bulk I/O had
	 * pushed its ~1500 blocks out, and ran interpreted for 16 pings (1.5-5 ms each). */
	uint64_t compiled[COMPILED_TAGS];
};

static unsigned compiled_index(uint64_t tag)
{
	return (unsigned)((tag * 0x9E3779B97F4A7C15ull) >> (64 - COMPILED_TAGS_LOG2));
}

/* A cache with every slot empty (calloc: pages the host zeroes as they are first touched; the
 * BLOCK_NONE bytes of the buckets and owners are touched at once), 64-byte aligned so that
 * each block's links are one cache line. */
static struct emu_icache *icache_alloc(void)
{
	uint8_t *base = calloc(1, sizeof(struct emu_icache) + 64);
	struct emu_icache *ic;

	if (!base)
		return NULL;
	ic = (struct emu_icache *)(base + 64 - ((uintptr_t)base & 63));
	ic->base = base;
	memset(ic->bucket, 0xff, sizeof(ic->bucket));
	memset(ic->owner, 0xff, sizeof(ic->owner));
	for (unsigned i = 0; i < BLOCK_CROSS_SLOTS; i++)
		ic->cross[i].slot = BLOCK_NONE;
	return ic;
}

/* The instructions of the block in `h`. */
static inline struct emu_insn *block_insns(struct emu_icache *ic, const struct emu_block_head *h)
{
	return &ic->pool[h->first];
}

void emu_cpu_init(struct emu_cpu *cpu, const struct cpu_state *state)
{
	const struct emu_memory_ops *mem = cpu->mem;
	const struct emu_phys_ops *phys = cpu->phys;
	void *mem_opaque = cpu->mem_opaque, *phys_opaque = cpu->phys_opaque;
	const struct emu_platform_ops *platform = cpu->platform;
	struct emu_icache *icache = cpu->icache;
	struct memory_code_pages *code = cpu->code;
	struct emu_debug *debug = cpu->debug; /* INIT/SIPI keep gdb's breakpoints */
	struct emu_jit *jit = cpu->jit;
	/* other threads' (an INIT must not lose a kick that came meanwhile) */
	unsigned attention = __atomic_load_n(&cpu->attention, __ATOMIC_RELAXED);

	if (cpu->watch_inner) /* the plain memory ops; emu_debug_update() wraps them again */
		mem = cpu->watch_inner;
	memset(cpu, 0, sizeof(*cpu));
	/* A cache that cannot be allocated only costs speed. Blocks never need flushing. */
	if (!icache)
		icache = icache_alloc();
	else { /* a new TLB generation (0) must not meet entries of the old one */
		memset(icache->jump, 0, sizeof(icache->jump));
		memset(icache->links, 0, sizeof(icache->links));
	}
	cpu->icache = icache;
	if (icache)
		icache->prev = BLOCK_NONE;
	if (jit) /* its links and lookups name TLB generations, which start again */
		emu_jit_forget(jit);
	cpu->mem = mem;
	cpu->mem_opaque = mem_opaque;
	cpu->phys = phys;
	cpu->phys_opaque = phys_opaque;
	cpu->code = code;
	cpu->platform = platform;
	cpu->debug = debug;
	cpu->jit = jit;
	__atomic_fetch_or(&cpu->attention, attention, __ATOMIC_RELAXED);
	cpu->block_page = EMU_NO_BLOCK_PAGE;
	cpu->msr.pat = 0x0007040600070406ull; /* the reset value (SDM Vol. 3 §11.12.4) */
	cpu->msr.misc_enable = CPU_MISC_ENABLE_RESET; /* an AP after INIT: firmware's value */
	emu_fpu_reset(cpu);
	cpu->s = *state;
	cpu->s.rflags |= EMU_FLAG_FIXED1;
	cpu->cc.op = EMU_CC_NONE;
	emu_update_mode(cpu);
	emu_debug_reset_dr(cpu);
}

void emu_cpu_destroy(struct emu_cpu *cpu)
{
	if (cpu->icache)
		free(cpu->icache->base);
	cpu->icache = NULL;
	emu_jit_destroy(cpu->jit);
	cpu->jit = NULL;
}

/* The parts of struct cpu_state the CPU keeps in its own form: the FPU/SSE image (the same FXSAVE
 * layout), the MSRs and the debug registers. */
_Static_assert(sizeof(struct emu_fxstate) == sizeof(struct cpu_fxsave), "one FXSAVE layout");

static void emu_cpu_import_extended(struct emu_cpu *cpu, const struct cpu_state *st)
{
	memcpy(&cpu->fx, &st->fpu, sizeof(cpu->fx));
	cpu->msr.star = st->msr.star;
	cpu->msr.lstar = st->msr.lstar;
	cpu->msr.cstar = st->msr.cstar;
	cpu->msr.sfmask = st->msr.sfmask;
	cpu->msr.kernel_gs_base = st->msr.kernel_gs_base;
	cpu->msr.sysenter_cs = st->msr.sysenter_cs;
	cpu->msr.sysenter_esp = st->msr.sysenter_esp;
	cpu->msr.sysenter_eip = st->msr.sysenter_eip;
	cpu->msr.pat = st->msr.pat;
	cpu->msr.tsc_aux = st->msr.tsc_aux;
	cpu->msr.misc_enable = st->msr.misc_enable;
	memcpy(cpu->dr, st->dr, sizeof(st->dr));
	cpu->dr[6] = st->dr6;
	cpu->dr[7] = st->dr7;
	cpu->interrupt_shadow = st->events.interrupt_shadow;
}

static void emu_cpu_export_extended(const struct emu_cpu *cpu, struct cpu_state *st)
{
	memcpy(&st->fpu, &cpu->fx, sizeof(st->fpu));
	st->msr = (struct cpu_msrs){
		.star = cpu->msr.star, .lstar = cpu->msr.lstar, .cstar = cpu->msr.cstar,
		.sfmask = cpu->msr.sfmask, .kernel_gs_base = cpu->msr.kernel_gs_base,
		.sysenter_cs = cpu->msr.sysenter_cs, .sysenter_esp = cpu->msr.sysenter_esp,
		.sysenter_eip = cpu->msr.sysenter_eip, .pat = cpu->msr.pat,
		.tsc_aux = cpu->msr.tsc_aux, .misc_enable = cpu->msr.misc_enable,
	};
	memcpy(st->dr, cpu->dr, sizeof(st->dr));
	st->dr6 = cpu->dr[6];
	st->dr7 = cpu->dr[7];
	st->events = (struct cpu_events){ .interrupt_shadow = cpu->interrupt_shadow };
}

void emu_cpu_set_state(struct emu_cpu *cpu, const struct cpu_state *state)
{
	emu_cpu_import_extended(cpu, state);
	cpu->s = *state;
	cpu->s.rflags |= EMU_FLAG_FIXED1;
	cpu->cc.op = EMU_CC_NONE;
	emu_tlb_flush(cpu, true);
	emu_update_mode(cpu);
	emu_debug_update(cpu);
}

void emu_cpu_get_state(struct emu_cpu *cpu, struct cpu_state *state)
{
	emu_flags_sync(cpu);
	*state = cpu->s;
	emu_cpu_export_extended(cpu, state);
}

/* SDM Vol. 3 §2.2 (modes) and §5.5 (CPL = SS.DPL, as KVM reports it). */
void emu_update_mode(struct emu_cpu *cpu)
{
	const struct cpu_segment *cs = &cpu->s.seg[SEG_CS];

	if (!(cpu->s.cr0 & CR0_PE)) {
		cpu->mode = EMU_MODE_16;
		cpu->cpl = 0;
		return;
	}
	if ((cpu->s.efer & EFER_LMA) && cs->l)
		cpu->mode = EMU_MODE_64;
	else
		cpu->mode = cs->db ? EMU_MODE_32 : EMU_MODE_16;
	cpu->cpl = cpu->s.seg[SEG_SS].dpl;
}

static uint64_t code_linear(const struct emu_cpu *cpu, uint64_t rip)
{
	if (cpu->mode == EMU_MODE_64)
		return rip;
	return (cpu->s.seg[SEG_CS].base + rip) & 0xffffffffull;
}

static int decode_error(struct emu_cpu *cpu, int rc)
{
	if (rc == EMU_DECODE_TOO_LONG)
		return emu_raise(cpu, EMU_VEC_GP, true, 0);
	return emu_raise(cpu, EMU_VEC_UD, false, 0);
}

/* Fetch and decode at CS:RIP. Bytes are fetched up to the end of the page first, so an
 * instruction that ends before a page boundary never touches (or faults on) the next page. */
static int fetch_decode(struct emu_cpu *cpu, struct emu_insn *insn, const struct emu_insn **out)
{
	uint8_t bytes[EMU_MAX_INSN_LEN];
	uint64_t la = code_linear(cpu, cpu->s.rip);
	unsigned first = (unsigned)(EMU_PAGE_SIZE - (la & (EMU_PAGE_SIZE - 1)));
	int rc;

	*out = insn;

	if (first > EMU_MAX_INSN_LEN)
		first = EMU_MAX_INSN_LEN;
	if ((rc = cpu->mem->read(cpu, la, bytes, first, EMU_ACCESS_FETCH)))
		return rc;
	rc = emu_decode(bytes, first, cpu->mode, insn);
	if (rc == EMU_DECODE_SHORT) {
		if ((rc = cpu->mem->read(cpu, la + first, bytes + first, EMU_MAX_INSN_LEN - first,
					 EMU_ACCESS_FETCH)))
			return rc;
		rc = emu_decode(bytes, EMU_MAX_INSN_LEN, cpu->mode, insn);
	}
	if (rc != EMU_DECODE_OK)
		return decode_error(cpu, rc);
	emu_fast_select(insn, cpu->mode);
	return EMU_OK;
}

int emu_step_insn(struct emu_cpu *cpu)
{
	const struct emu_insn *insn;
	struct emu_insn decoded;
	int rc;

	if ((rc = fetch_decode(cpu, &decoded, &insn)))
		return rc;
	return emu_execute_insn(cpu, insn);
}

int emu_step(struct emu_cpu *cpu)
{
	return emu_debug_active(cpu) ? emu_debug_step(cpu) : emu_step_insn(cpu);
}

/* ---- blocks ---- */

/* Whether execution must leave the block after this instruction: it may branch, change the
 * mode, CPL, paging, TLB, segment bases or the interrupt flag/shadow, or is rare enough not
 * to matter. Everything else falls through to the next instruction (or faults, which also
 * leaves the block). */
static bool block_ends(const struct emu_insn *insn)
{
	unsigned op = insn->opcode;

	if (insn->map == EMU_MAP_1) {
		if (op < 0x40)
			return (op & 7) >= 6; /* segment push/pop, prefixes, BCD */
		switch (op) {
		case 0x40 ... 0x5F: /* INC/DEC, PUSH/POP r */
		case 0x63: /* MOVSXD */
		case 0x68 ... 0x6B: /* PUSH imm, IMUL */
		case 0x80 ... 0x8D: /* group 1, TEST, XCHG, MOV, MOV Ev,Sreg, LEA */
		case 0x8F: /* POP Ev */
		case 0x90 ... 0x99: /* NOP, XCHG, CBW, CWD */
		case 0x9C: /* PUSHF */
		case 0x9E: /* SAHF */
		case 0x9F: /* LAHF */
		case 0xA0 ... 0xAF: /* MOV moffs, string instructions (REP stays on them) */
		case 0xB0 ... 0xBF: /* MOV r, imm */
		case 0xC0:
		case 0xC1: /* shifts */
		case 0xC6:
		case 0xC7: /* MOV Ev, imm */
		case 0xC8:
		case 0xC9: /* ENTER, LEAVE */
		case 0xD0 ... 0xD3: /* shifts */
		case 0xD7: /* XLAT */
		case 0xF5: /* CMC */
		case 0xF6:
		case 0xF7: /* group 3 */
		case 0xF8 ... 0xF9: /* CLC, STC */
		case 0xFA: /* CLI: clearing IF needs no look at pending interrupts */
		case 0xFC ... 0xFE: /* CLD, STD, group 4 */
			return false;
		case 0xFF: /* group 5: INC, DEC, PUSH continue; CALL, JMP end */
			return ((insn->modrm >> 3) & 7) >= 2 && ((insn->modrm >> 3) & 7) != 6;
		default:
			return true;
		}
	}
	if (insn->map == EMU_MAP_0F) {
		switch (op) {
		case 0x10 ... 0x17: /* SSE moves */
		case 0x18 ... 0x1F: /* hint NOPs */
		case 0x28 ... 0x2F:
		case 0x40 ... 0x4F: /* CMOVcc */
		case 0x50 ... 0x7F:
		case 0x90 ... 0x9F: /* SETcc */
		case 0xA3:
		case 0xA4:
		case 0xA5:
		case 0xAB:
		case 0xAC:
		case 0xAD:
		case 0xAF:
		case 0xB0 ... 0xB1: /* CMPXCHG */
		case 0xB3:
		case 0xB6 ... 0xBF: /* MOVZX, POPCNT, BTx, BSF/BSR, MOVSX */
		case 0xC0 ... 0xC6: /* XADD, SSE */
		case 0xC8 ... 0xFF: /* BSWAP, SSE */
			return false;
		case 0xAE: /* LFENCE, MFENCE, SFENCE */
			return !(insn->mod == 3 && ((insn->modrm >> 3) & 7) >= 5);
		}
	}
	return true;
}

static bool is_relative_jump(const struct emu_insn *insn)
{
	unsigned op = insn->opcode;

	if (insn->map == EMU_MAP_0F)
		return op >= 0x80 && op <= 0x8F;
	return insn->map == EMU_MAP_1 &&
	       ((op >= 0x70 && op <= 0x7F) || (op >= 0xE0 && op <= 0xE3) || op == 0xE9 || op == 0xEB);
}

/* The context of a jump cache entry or link for a block on a non-global page. Bit 4 is always
 * set, so a never-filled (zero) entry never matches; bit 3 tells the two kinds apart. */
static uint64_t jump_ctx(const struct emu_cpu *cpu)
{
	return (cpu->tlb.generation << 5) | 16 | ((uint64_t)cpu->mode << 1) | (cpu->cpl == 3);
}

/* The same for a block on a global page: survives CR3 writes, as the page's TLB entry does. */
static uint64_t jump_ctx_global(const struct emu_cpu *cpu)
{
	return (cpu->tlb.generation_global << 5) | 16 | 8 | ((uint64_t)cpu->mode << 1) |
	       (cpu->cpl == 3);
}

/* An instruction without a specialised handler, in a block: emu_execute(), and the end of
 * the block unless it fell through to the next instruction (a REP string instruction that
 * stopped between iterations, a fault). Specialised handlers only branch as a block's last
 * instruction (block_ends()), so emu_run() checks only block_exit between instructions. */
int emu_block_generic(struct emu_cpu *cpu, const struct emu_insn *insn)
{
	uint64_t next = cpu->s.rip + insn->len;
	int rc = emu_execute(cpu, insn);

	if (cpu->s.rip != next)
		cpu->block_exit = true;
	return rc;
}

/* A block of the one instruction at linear `la` (`host`, `avail` bytes before the end of its
 * page) that continues into the next page: decoded from both pages' bytes when the next one is
 * RAM that fetching may read (else h->n stays 0 and emu_step() runs it, raising its fault),
 * the second page and its version in `*cross`. */
static void block_build_cross(struct emu_cpu *cpu, struct emu_block_head *h, struct emu_insn *insn,
			      const uint8_t *host, unsigned avail, uint64_t la,
			      struct emu_block_cross *cross)
{
	uint8_t bytes[EMU_MAX_INSN_LEN];
	const uint8_t *host2;
	unsigned avail2;
	uint64_t gpa2;
	uint32_t *word2;

	if (avail >= EMU_MAX_INSN_LEN || cpu->mem->fetch(cpu, la + avail, &host2, &avail2, &gpa2) ||
	    !host2)
		return;
	word2 = memory_code_word(cpu->code, host2);
	cross->version = memory_code_mark(cpu->code, word2); /* before the bytes are read */
	cross->version_word = word2;
	cross->page = gpa2;
	memcpy(bytes, host, avail);
	memcpy(bytes + avail, host2, EMU_MAX_INSN_LEN - avail);
	if (emu_decode(bytes, EMU_MAX_INSN_LEN, cpu->mode, insn) != EMU_DECODE_OK)
		return;
	emu_fast_select(insn, cpu->mode);
	if (!insn->fast)
		insn->fast = emu_block_generic;
	h->n = 1;
	h->cross = true;
}

/* Decode the block at `host` (`avail` bytes to the end of the page; linear address `la`) into
 * instructions at `insn` (room for BLOCK_MAX_INSNS). An instruction that does not fit in the
 * page or does not decode ends the block before it; h->n = 0 when the first one does not
 * decode, and when it continues into the next page it is the block's only instruction
 * (h->cross, the second page in `*cross`) if that page can be read. */
static void block_build(struct emu_cpu *cpu, struct emu_block_head *h, struct emu_insn *b,
			const uint8_t *host, unsigned avail, uint64_t tag, uint64_t la,
			struct emu_block_cross *cross)
{
	unsigned pos = 0;
	uint32_t *word = memory_code_word(cpu->code, host);
	int rc;

	h->tag = 0;
	h->n = 0;
	h->cross = false;
	/* Marked before the bytes are read: a write from now on makes a new version. */
	h->version = memory_code_mark(cpu->code, word);
	h->version_word = word;
	memset(&h->jit, 0, sizeof(h->jit)); /* its code ran the old instructions */
	while (h->n < BLOCK_MAX_INSNS) {
		struct emu_insn *insn = &b[h->n];
		unsigned left = avail - pos;

		if (!left)
			break;
		rc = emu_decode(host + pos, left, cpu->mode, insn);
		if (rc == EMU_DECODE_SHORT && !pos && cpu->mode == EMU_MODE_64)
			block_build_cross(cpu, h, insn, host, avail, la, cross);
		if (rc != EMU_DECODE_OK)
			break;
		emu_fast_select(insn, cpu->mode);
		if (!insn->fast)
			insn->fast = emu_block_generic;
		pos += insn->len;
		h->n++;
		if (block_ends(insn))
			break;
	}
	h->loops = h->n && is_relative_jump(&b[h->n - 1]) && !h->cross;
	h->falls_through = h->n && !block_ends(&b[h->n - 1]);
	h->tag = tag;
}

/* Whether nothing wrote the block's page since it was decoded. */
static inline bool block_current(const struct emu_block_head *h)
{
	return __atomic_load_n(h->version_word, __ATOMIC_RELAXED) == h->version;
}

/* Whether the block in slot `index` is still the one tagged `tag`, and current. */
static inline bool slot_current(const struct emu_icache *ic, uint32_t index, uint64_t tag)
{
	const struct emu_block_head *h = &ic->head[index];

	return h->tag == tag && block_current(h);
}

/* Remember jump cache entry `j` as a successor of the block in slot `prev` (if any). */
static void block_link(struct emu_icache *ic, uint32_t prev, const struct emu_jump_entry *j)
{
	struct emu_block_links *l;

	if (prev == BLOCK_NONE)
		return;
	l = &ic->links[prev];
	l->la[l->next] = j->la;
	l->ctx[l->next] = j->ctx;
	l->tag[l->next] = j->tag;
	l->index[l->next] = j->index;
	l->next = (uint8_t)((l->next + 1) % BLOCK_LINKS);
}

/* The hash chain of blocks tagged `tag` (the address's bits spread over the bucket index: a
 * multiplicative hash, as kernel code is dense and its blocks start at any byte). */
static inline uint32_t *block_bucket(struct emu_icache *ic, uint64_t tag)
{
	_Static_assert((BLOCK_BUCKETS & (BLOCK_BUCKETS - 1)) == 0, "a power of two");
	return &ic->bucket[(tag * 0x9E3779B97F4A7C15ull) >> (64 - __builtin_ctz(BLOCK_BUCKETS))];
}

/* The slot of the block tagged `tag` (it may be out of date), BLOCK_NONE if none. */
static uint32_t block_lookup(struct emu_icache *ic, uint64_t tag)
{
	uint32_t index = *block_bucket(ic, tag);

	while (index != BLOCK_NONE && ic->head[index].tag != tag)
		index = ic->head[index].next;
	return index;
}

/* Forget the block in slot `index` (if any): out of its hash chain, tag and code cleared, its
 * compiled code's chain entry a return from now on (links to it and lookups go back to
 * emu_run()). Slots are only ever named together with the tag they held (links, the jump
 * cache), so that needs no other bookkeeping. */
static void block_evict(struct emu_cpu *cpu, uint32_t index)
{
	struct emu_icache *ic = cpu->icache;
	struct emu_block_head *h = &ic->head[index];
	uint32_t *p;

	if (!h->tag)
		return;
	emu_jit_unchain(cpu->jit, &h->jit);
	for (p = block_bucket(ic, h->tag); *p != index; p = &ic->head[*p].next)
		;
	*p = h->next;
	h->tag = 0;
	h->n = 0;
	memset(&h->jit, 0, sizeof(h->jit));
}

/* Forget the blocks whose instructions start in the pool's [from, to). */
static void pool_forget(struct emu_cpu *cpu, uint32_t from, uint32_t to)
{
	struct emu_icache *ic = cpu->icache;

	for (uint32_t i = from; i < to; i++)
		if (ic->owner[i] != BLOCK_NONE) {
			if (ic->head[ic->owner[i]].first == i)
				block_evict(cpu, ic->owner[i]);
			ic->owner[i] = BLOCK_NONE;
		}
}

/* Room in the pool for a block of up to BLOCK_MAX_INSNS instructions at ic->pool_next (back at
 * the start when the end has too little), for slot `index`: the blocks whose instructions
 * start there are forgotten first (those that started before and reach into it went when
 * their own start was reached, as the pool is filled in order). */
static uint32_t block_pool_take(struct emu_cpu *cpu, uint32_t index)
{
	struct emu_icache *ic = cpu->icache;
	uint32_t first = ic->pool_next;

	if (first + BLOCK_MAX_INSNS > BLOCK_POOL_INSNS) {
		pool_forget(cpu, first, BLOCK_POOL_INSNS); /* unused from now on */
		first = 0;
	}
	pool_forget(cpu, first, first + BLOCK_MAX_INSNS);
	ic->owner[first] = index;
	return first;
}

/* A slot for a new block tagged `tag`, in its hash chain: the next one in turn, whose block
 * (the oldest one decoded into a slot) is forgotten. */
static uint32_t block_alloc(struct emu_cpu *cpu, uint64_t tag)
{
	struct emu_icache *ic = cpu->icache;
	uint32_t index = ic->slot_next, *bucket = block_bucket(ic, tag);
	struct emu_block_head *h = &ic->head[index];

	ic->slot_next = (index + 1) % BLOCK_SLOTS;
	block_evict(cpu, index);
	h->next = *bucket;
	*bucket = index;
	return index;
}

/* Keep the second page of the block in slot `index` if it crosses one (block_build()). */
static void block_cross_keep(struct emu_icache *ic, uint32_t index, const struct emu_block_head *h,
			     const struct emu_block_cross *cross)
{
	if (h->cross) {
		ic->cross[index % BLOCK_CROSS_SLOTS] = *cross;
		ic->cross[index % BLOCK_CROSS_SLOTS].slot = index;
	}
}

/* Whether the block in slot `index`, entered at linear `la`, still has its second page if it
 * crosses into one: the page's version, and the next linear page's translation (the fetch TLB
 * at best; a fault there just fails the check, and emu_step() raises it). */
static bool cross_current(struct emu_cpu *cpu, uint32_t index, uint64_t la)
{
	const struct emu_icache *ic = cpu->icache;
	const struct emu_block_cross *c = &ic->cross[index % BLOCK_CROSS_SLOTS];
	const uint8_t *host;
	unsigned avail;
	uint64_t gpa;

	if (!ic->head[index].cross)
		return true;
	if (c->slot != index || __atomic_load_n(c->version_word, __ATOMIC_RELAXED) != c->version)
		return false;
	if (cpu->mem->fetch(cpu, (la | (EMU_PAGE_SIZE - 1)) + 1, &host, &avail, &gpa) || !host)
		return false;
	return gpa == c->page;
}

/* Decode the block tagged `tag` into slot `index` (a new one, or the block's own when its page
 * has a new version), its instructions at the next place in the pool. */
static void block_decode(struct emu_cpu *cpu, uint32_t index, const uint8_t *host, unsigned avail,
			 uint64_t tag, uint64_t la)
{
	struct emu_icache *ic = cpu->icache;
	struct emu_block_head *h = &ic->head[index];
	struct emu_block_cross cross;

	h->tag = 0; /* not forgotten for its own instructions' room */
	h->first = block_pool_take(cpu, index);
	block_build(cpu, h, &ic->pool[h->first], host, avail, tag, la, &cross);
	block_cross_keep(ic, index, h, &cross);
	ic->pool_next = h->first + h->n;
	if (!h->n) /* nothing in the pool to forget it for */
		ic->owner[h->first] = BLOCK_NONE;
}

/* Decode the block in slot `index` again for a new version of its page. In a boot to "Run
 * /init", 94 % of these rebuilds (13 435 of 14 336) decoded the very same instructions: their
 * page was written, not their bytes. Those keep their place in the pool, and the
 * next entry compiles them again at once (their compiled code checks the old version) instead
 * of counting EMU_JIT_THRESHOLD entries in the interpreter. */
static void block_redecode(struct emu_cpu *cpu, uint32_t index, const uint8_t *host, unsigned avail,
			   uint64_t la)
{
	struct emu_icache *ic = cpu->icache;
	struct emu_block_head *h = &ic->head[index], fresh = *h;
	struct emu_insn insn[BLOCK_MAX_INSNS];
	struct emu_block_cross cross;
	uint64_t tag = h->tag;

	emu_jit_unchain(cpu->jit, &h->jit); /* compiled from the old version */
	block_build(cpu, &fresh, insn, host, avail, tag, la, &cross);
	block_cross_keep(ic, index, &fresh, &cross);
	if (fresh.n == h->n && fresh.cross == h->cross &&
	    !memcmp(insn, block_insns(ic, h), h->n * sizeof(insn[0]))) {
		h->version = fresh.version;
		h->jit = (struct emu_jit_ref){
			.gen = cpu->jit ? emu_jit_generation(cpu->jit) : 0,
			.runs = UINT32_MAX,
		};
		return;
	}
	h->tag = 0; /* not forgotten for its own instructions' room */
	fresh.first = block_pool_take(cpu, index);
	memcpy(&ic->pool[fresh.first], insn, fresh.n * sizeof(insn[0]));
	fresh.next = h->next; /* forgetting others in its chain may have changed it */
	*h = fresh;
	ic->pool_next = h->first + h->n;
	if (!h->n)
		ic->owner[h->first] = BLOCK_NONE;
}

/* The slot of the block at CS:RIP, BLOCK_NONE when there is none (not RAM, or its first
 * instruction does not decode, or crosses into a page that is not RAM or faults: emu_step()
 * handles those). */
static int block_find(struct emu_cpu *cpu, uint32_t *out)
{
	struct emu_icache *ic = cpu->icache;
	uint64_t la = code_linear(cpu, cpu->s.rip), ctx = jump_ctx(cpu),
		 gctx = jump_ctx_global(cpu);
	struct emu_jump_entry *j = &ic->jump[(la ^ (la >> 12)) & (JUMP_CACHE_SIZE - 1)];
	/* The block before this one, if it ran in the same context: its links may know this. */
	uint32_t prev = ic->prev_ctx == ctx ? ic->prev : BLOCK_NONE;
	struct emu_block_head *h;
	const uint8_t *host;
	unsigned avail;
	uint64_t gpa, tag;
	uint32_t index;
	int rc;

	*out = BLOCK_NONE;
	EMU_STAT_INC(cpu->blocks.finds);
	if (prev != BLOCK_NONE) {
		const struct emu_block_links *l = &ic->links[prev];

		for (unsigned k = 0; k < BLOCK_LINKS; k++) {
			if (l->la[k] == la && (l->ctx[k] == ctx || l->ctx[k] == gctx) &&
			    slot_current(ic, l->index[k], l->tag[k]) &&
			    cross_current(cpu, l->index[k], la)) {
				EMU_STAT_INC(cpu->blocks.link_hits);
				*out = l->index[k];
				return EMU_OK;
			}
		}
	}
	if (j->la == la && (j->ctx == ctx || j->ctx == gctx) &&
	    slot_current(ic, j->index, j->tag) && cross_current(cpu, j->index, la)) {
		EMU_STAT_INC(cpu->blocks.jump_hits);
		block_link(ic, prev, j);
		*out = j->index;
		return EMU_OK;
	}
	if ((rc = cpu->mem->fetch(cpu, la, &host, &avail, &gpa)) || !host)
		return rc;
	tag = gpa | ((uint64_t)cpu->mode << 56) | BLOCK_VALID;
	index = block_lookup(ic, tag);
	if (index == BLOCK_NONE) {
		index = block_alloc(cpu, tag);
		if (ic->head[index].version_word) /* the slot held a block before */
			EMU_STAT_INC(cpu->blocks.builds_evicted);
		else
			EMU_STAT_INC(cpu->blocks.builds_empty);
		block_decode(cpu, index, host, avail, tag, la);
		if (cpu->jit && ic->compiled[compiled_index(tag)] == tag) /* hot before */
			ic->head[index].jit = (struct emu_jit_ref){
				.gen = emu_jit_generation(cpu->jit),
				.runs = UINT32_MAX,
			};
	} else if (!block_current(&ic->head[index]) || !cross_current(cpu, index, la)) {
		EMU_STAT_INC(cpu->blocks.builds_version);
		block_redecode(cpu, index, host, avail, la);
	}
	h = &ic->head[index];
	if (!h->n)
		return EMU_OK;
	*j = (struct emu_jump_entry){ .la = la,
				      .ctx = emu_tlb_fetch_global(cpu, la) ? gctx : ctx,
				      .tag = tag,
				      .index = index };
	block_link(ic, prev, j);
	*out = index;
	return EMU_OK;
}

/* A block that branches back to its own start (a loop) runs again at once, up to this many
 * times, without looking it up or comparing its version: nothing can have changed them but a
 * write by this CPU to the block's page, which ends the loop (block_exit), or another vCPU or
 * a device, which a real CPU does not promise to notice before it serialises either. */
#define BLOCK_LOOP_MAX 64

/* The block's host code if it has some (or gets some now), after linking the exit that the
 * compiled code before it left through to it, when that exit's target is this block. */
static emu_jit_fn block_code(struct emu_cpu *cpu, struct emu_block_head *h, uint32_t index)
{
	struct emu_icache *ic = cpu->icache;
	const struct emu_block_cross *cross = &ic->cross[index % BLOCK_CROSS_SLOTS];
	struct emu_jit_chain chain = {
		.gpa = h->tag & BLOCK_GPA_MASK,
		.slot = index,
		.version_word = h->version_word,
		.version = h->version,
		.falls_through = h->falls_through,
	};
	emu_jit_fn code;

	if (h->cross) { /* its code checks the second page as cross_current() does */
		if (cross->slot != index) { /* never: block_find() just checked it */
			ic->link_exit = 0;
			return NULL;
		}
		chain.cross_version_word = cross->version_word;
		chain.cross_version = cross->version;
		chain.cross_gpa = cross->page;
	}
	code = emu_jit_block_chain(cpu->jit, &h->jit, block_insns(ic, h), h->n, &chain);

	if (code && ic->compiled[compiled_index(h->tag)] != h->tag)
		ic->compiled[compiled_index(h->tag)] = h->tag;
	if (code && ic->link_exit) /* 64-bit mode: RIP is the linear address */
		emu_jit_link(cpu->jit, cpu, ic->link_exit, ic->link_gen, chain.gpa,
			     emu_tlb_fetch_global(cpu, cpu->s.rip), code);
	ic->link_exit = 0;
	return code;
}

/* Compiled code from the block in `index` on: it may go on to successors (jit.h), so the last
 * block it started is the one to link from, and the exit it took may be linked to the next. */
static int run_compiled(struct emu_cpu *cpu, emu_jit_fn code)
{
	struct emu_icache *ic = cpu->icache;
	int rc;

	cpu->jit_exit = 0;
	rc = emu_jit_run(code, cpu);
	ic->prev = cpu->jit_last;
	if (!rc && cpu->jit_exit) {
		ic->link_exit = cpu->jit_exit;
		ic->link_gen = emu_jit_generation(cpu->jit);
	}
	return rc;
}

/* One block (or one instruction through emu_step()); *block false when it was not a block. */
static int run_block(struct emu_cpu *cpu, bool *block)
{
	struct emu_block_head *h;
	const struct emu_insn *b;
	uint64_t la, ctx;
	emu_jit_fn code = NULL;
	uint32_t index;
	int rc = EMU_OK;

	*block = false;
	if (!cpu->icache || !cpu->code || !cpu->mem->fetch || emu_debug_active(cpu))
		return emu_step(cpu);
	rc = block_find(cpu, &index);
	cpu->icache->prev_ctx = 0; /* jump_ctx() is never 0: no link from here if no block runs */
	if (rc)
		return rc;
	if (index == BLOCK_NONE)
		return emu_step(cpu);
	*block = true;
	h = &cpu->icache->head[index];
	b = block_insns(cpu->icache, h);
	la = code_linear(cpu, cpu->s.rip);
	ctx = jump_ctx(cpu);
	cpu->icache->prev = index;
	cpu->icache->prev_ctx = ctx;
	cpu->block_exit = false;
	cpu->block_page = h->tag & BLOCK_GPA_MASK & ~0xfffull;
	if (cpu->jit && cpu->mode == EMU_MODE_64)
		code = block_code(cpu, h, index);
	else
		cpu->icache->link_exit = 0;
	if (code) { /* loops go round through their chain entry */
		EMU_STAT_INC(cpu->blocks.compiled);
		rc = run_compiled(cpu, code);
		goto out;
	}
	EMU_STAT_INC(cpu->blocks.interpreted);
	for (unsigned loop = 0; loop < BLOCK_LOOP_MAX; loop++) {
		const struct emu_insn *insn = b, *end = b + h->n;

		do {
			if ((rc = insn->fast(cpu, insn)))
				goto out;
		} while (++insn < end && !cpu->block_exit);
		if (!h->loops || cpu->block_exit || code_linear(cpu, cpu->s.rip) != la ||
		    jump_ctx(cpu) != ctx)
			break;
	}
out:
	cpu->block_page = EMU_NO_BLOCK_PAGE;
	return rc;
}

/* Blocks in a chain leave to the caller at anything it must look at: a status, a block that
 * ended early (block_exit: an MMIO access's replay log, a write to its own code), no block,
 * a debug condition, or the caller's attention flag (interrupts, kicks). */
static bool chain_goes_on(const struct emu_cpu *cpu)
{
	return !cpu->block_exit && !emu_debug_active(cpu) &&
	       !__atomic_load_n(&cpu->attention, __ATOMIC_RELAXED);
}

/* chain_left counts down the blocks after the first, here and in compiled code's chains. */
int emu_run(struct emu_cpu *cpu)
{
	unsigned max = cpu->chain_max ? cpu->chain_max : 1, runs = 0;
	bool block;
	int rc;

	cpu->chain_left = max - 1;
	cpu->chain_cut = 0;
	for (;;) {
		rc = run_block(cpu, &block);
		runs++;
		if (rc || !block || !cpu->chain_left || !chain_goes_on(cpu))
			break;
		cpu->chain_left--;
	}
	cpu->chain_ran = max - cpu->chain_left - cpu->chain_cut;
	if (cpu->chain_ran > runs) /* compiled code went on to the others */
		EMU_STAT_ADD(cpu->blocks.chained, cpu->chain_ran - runs);
	return rc;
}
