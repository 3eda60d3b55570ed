/* A small template JIT for the software CPU's blocks (jit.c), x86-64 hosts only.
 *
 * A block of decoded instructions (cpu.c) that has been entered `threshold` times in 64-bit mode
 * gets host code: one function per block that does what emu_run()'s loop over the block does —
 * each instruction's handler (insn->fast) in turn, leaving at the first non-zero status or when
 * block_exit is set — with the commonest register-only forms inlined as host instructions on the
 * guest registers in struct emu_cpu (see jit.c for which, and how flags and RIP are kept exact).
 *
 * Code memory is one fixed-size buffer per vCPU mapped twice from a memfd: written through a
 * read-write view, executed through a read-execute view, never both at once (the guest is
 * hostile: no page is writable and executable). When it is full, all compiled code is dropped at
 * once (a new generation) and compilation starts again at the beginning. A block keeps its code
 * in a struct emu_jit_ref, valid only for the generation it was compiled in; the block cache
 * clears the ref whenever it rebuilds the block, so a block never runs another block's code or
 * code compiled from its old instructions. The code refers to the block's struct emu_insn
 * array, which must stay where it is (and unchanged) while the ref is valid. */
#ifndef VMM_CPU_EMU_JIT_H
#define VMM_CPU_EMU_JIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/emu/decode.h"
#include "cpu/emu/emu.h"

/* Entries before a block is compiled: compiling costs about as much as running a block a few
 * hundred times through the interpreter, and most blocks of a boot run only a few times. */
#define EMU_JIT_THRESHOLD 16
/* Code memory per vCPU (a block's code is ~50-200 bytes per instruction). 8 MiB held the
 * kernel's 4 KiB random-read path (~10.7 k blocks, ~5.2 MiB of hot code) with little to spare:
 * the buffer was dropped six times to the shell and again in the middle of the I/O. */
#define EMU_JIT_BUFFER_SIZE (32u << 20)

/* Host code for one block: returns what the last instruction's handler returned (0 when
 * the block ran to its end or stopped early because block_exit was set). */
typedef int (*emu_jit_fn)(struct emu_cpu *cpu);

/* A block's compiled code and its use count. All zero: not compiled, never run. */
struct emu_jit_ref {
	emu_jit_fn code; /* valid while gen equals the JIT's generation */
	uint32_t gen;
	uint32_t runs; /* entries counted towards the threshold */
};

struct emu_jit;

/* A JIT with `size` bytes of code memory compiling blocks at their `threshold`-th entry (0:
 * the first); `templates` false: every instruction through its handler (VMM_EMU_JIT=calls, to
 * tell a template's fault from the rest). NULL with errno set when the host gives no code
 * memory, or on hosts other than x86-64 (ENOTSUP): the interpreter then runs everything. */
struct emu_jit *emu_jit_create(size_t size, unsigned threshold, bool templates);
void emu_jit_destroy(struct emu_jit *jit);

/* The block's code if it has some in the current generation; otherwise count the entry and,
 * at the threshold, compile the `n` instructions (every insn->fast set) and return the code.
 * NULL: run the block through the interpreter. Only for blocks decoded in 64-bit mode. */
emu_jit_fn emu_jit_block(struct emu_jit *jit, struct emu_jit_ref *ref, const struct emu_insn *insn,
			 unsigned n);

/* Chaining: what the block cache (cpu.c) tells the compiler about a block so that its code can
 * go straight to its successors' code. An exit to a constant target in the block's own page
 * (a relative jump or call taken or not, or the fall-through of a block that stopped at its
 * size limit) leaves through a jump that emu_jit_link() points at the successor's chain
 * entry, once both are compiled: in the same page of the same mode, the successor's
 * guest-physical address is the block's page plus the target's offset, whatever linear
 * mapping the block ran through. An exit to a constant target in another page (the same
 * branches, and the fall-through into the next page) records, once emu_jit_link() linked it,
 * the successor's linear address, the TLB generation of the link (or for a global page the
 * global one, which CR3 writes leave alone) and the CPL, and goes to the successor only while
 * RIP, the generation and the CPL are those: a translation is valid for as long as its TLB
 * entry, so a CR3 write, an INVLPG, any other TLB flush or a CPL change never lets it run a
 * successor that the page tables no longer name. After a RET or a near JMP/CALL through a
 * register or memory, the code looks RIP up in a small table of the blocks that such
 * lookups missed and emu_run() then entered (emu_jit_link() with EMU_JIT_EXIT_LOOKUP: linear
 * address, generation, CPL, as above) and goes to the successor on a hit. Either way the successor's chain entry checks, each time, that the
 * attention flag (cpu->attention) is clear, the chain has blocks left (cpu->chain_left) and
 * the block's page still has the version it was decoded from (a block across two pages: the
 * second page too, cross_* below); otherwise it returns to
 * emu_run() with RIP at its first instruction. A block the cache forgets or rebuilds has its
 * chain entry turned into that return for good (emu_jit_unchain()). RIP, the count and the interrupt shadow are exact at
 * every exit, as for a return. Links and the table live with the code buffer: a flush drops
 * them with the code, so they only ever join code of one generation. */
struct emu_jit_chain {
	uint64_t gpa; /* guest-physical address of the block's first instruction */
	uint32_t slot; /* its block cache slot: its code's return sets cpu->jit_last to it */
	const uint32_t *version_word; /* its page's code version (memory.h), and the value */
	uint32_t version; /* it had when the block was decoded */
	bool falls_through; /* the last instruction is not a block end: the next one follows */
	/* A block of one instruction that crosses into the next page (cpu.c's cross blocks):
	 * that page's guest-physical address, its code version word and the version it had
	 * when the block was decoded (cross_version_word NULL: the block lies in one page).
	 * Its chain entry checks both, from either entry point: the version, and the fetch
	 * TLB's entry for the next linear page (either way) naming that page at this CPL;
	 * otherwise it returns to emu_run(), which checks them as for an interpreted block. */
	const uint32_t *cross_version_word;
	uint32_t cross_version;
	uint64_t cross_gpa;
};

/* emu_jit_block() for a block that may be chained (chain: its facts) or not (NULL). */
emu_jit_fn emu_jit_block_chain(struct emu_jit *jit, struct emu_jit_ref *ref,
			       const struct emu_insn *insn, unsigned n,
			       const struct emu_jit_chain *chain);
/* The buffer's generation: an exit taken (cpu->jit_exit) is only linked in its own. */
uint32_t emu_jit_generation(const struct emu_jit *jit);
/* Make exit `exit` (cpu->jit_exit after code of generation `gen` returned) jump straight to
 * `code`, the chainable code of the block at `gpa`, if that is the exit's target (else
 * nothing: the caller may have gone elsewhere, e.g. into an interrupt handler); for
 * EMU_JIT_EXIT_LOOKUP (a lookup after RET or an indirect JMP/CALL missed), remember `code`
 * in the lookup table. The CPU is at that block's first instruction, in 64-bit mode, and its
 * RIP's translation is in the current TLB generation (`global`: a global page's, kept across
 * CR3 writes). */
#define EMU_JIT_EXIT_LOOKUP 1u
void emu_jit_link(struct emu_jit *jit, const struct emu_cpu *cpu, uint32_t exit, uint32_t gen,
		  uint64_t gpa, bool global, emu_jit_fn code);
/* The block cache forgets or rebuilds the block whose code `ref` holds (before it clears the
 * ref): its chain entry then always returns, so that no exit linked to it and no lookup that
 * remembers it runs that code again (it calls handlers with the block's instructions, whose
 * place in the cache another block may take, and was compiled from the old bytes). */
void emu_jit_unchain(struct emu_jit *jit, const struct emu_jit_ref *ref);
/* Drop all code, links and remembered blocks (a new generation): the TLB generations they
 * name start again (emu_cpu_init()). */
void emu_jit_forget(struct emu_jit *jit);

/* Run compiled code as emu_run() runs a block body (block_exit cleared by the caller). */
static inline int emu_jit_run(emu_jit_fn code, struct emu_cpu *cpu)
{
	return code(cpu);
}

/* Times all code was dropped because the buffer was full, and the buffer's generation. */
uint64_t emu_jit_flushes(const struct emu_jit *jit);

/* The lookup table entry that the lookup after RET and indirect JMP/CALL reads for linear
 * address `la` (tests: two return sites in one entry). */
unsigned emu_jit_lookup_entry(uint64_t la);

/* Whether a form would be inlined (tests: each group says how many of its cases were). */
int emu_jit_inlines(const struct emu_insn *insn);

#endif
