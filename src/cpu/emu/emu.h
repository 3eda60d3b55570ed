/* The software x86-64 CPU (`--accel emu`): CPU state, memory interface and the step function.
 *
 * The architectural state is a struct cpu_state (cpu/state.h), the same register file the KVM
 * backend converts to and from, plus lazily evaluated arithmetic flags. Memory is reached only
 * through struct emu_memory_ops, so the system layer (paging, software TLB, MMIO exits) plugs in
 * without the instruction code knowing about it; unit tests plug in a flat memory (flatmem.c). */
#ifndef VMM_CPU_EMU_EMU_H
#define VMM_CPU_EMU_EMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/backend.h"
#include "cpu/state.h"
#include "memory.h"

/* RFLAGS bits (SDM Vol. 1 §3.4.3). */
#define EMU_FLAG_CF (1ull << 0)
#define EMU_FLAG_FIXED1 (1ull << 1) /* always reads as 1 */
#define EMU_FLAG_PF (1ull << 2)
#define EMU_FLAG_AF (1ull << 4)
#define EMU_FLAG_ZF (1ull << 6)
#define EMU_FLAG_SF (1ull << 7)
#define EMU_FLAG_TF (1ull << 8)
#define EMU_FLAG_IF (1ull << 9)
#define EMU_FLAG_DF (1ull << 10)
#define EMU_FLAG_OF (1ull << 11)
#define EMU_FLAG_IOPL (3ull << 12)
#define EMU_FLAG_NT (1ull << 14)
#define EMU_FLAG_RF (1ull << 16)
#define EMU_FLAG_VM (1ull << 17)
#define EMU_FLAG_AC (1ull << 18)
#define EMU_FLAG_VIF (1ull << 19)
#define EMU_FLAG_VIP (1ull << 20)
#define EMU_FLAG_ID (1ull << 21)
/* x87/MMX/SSE state in the FXSAVE layout (SDM Vol. 1 §10.5.1, 64-bit format), as KVM's kvm_fpu
 * carries it too: x87.c owns the x87 part (st[] in stack order; MMn is physical register n),
 * sse.c the XMM registers, MXCSR and MMX instructions. */
struct emu_fxstate {
	uint16_t fcw, fsw;
	uint8_t ftw, reserved0;
	uint16_t fop;
	uint64_t fip, fdp;
	uint32_t mxcsr, mxcsr_mask;
	uint8_t st[8][16];
	uint8_t xmm[16][16];
	uint8_t reserved1[96];
} __attribute__((aligned(16)));
_Static_assert(sizeof(struct emu_fxstate) == 512, "FXSAVE area");

/* The six status flags produced by arithmetic. */
#define EMU_FLAGS_ARITH                                                                            \
	(EMU_FLAG_CF | EMU_FLAG_PF | EMU_FLAG_AF | EMU_FLAG_ZF | EMU_FLAG_SF | EMU_FLAG_OF)

/* Exception vectors (SDM Vol. 3 §6.3.1). */
enum emu_vector {
	EMU_VEC_DE = 0,
	EMU_VEC_DB = 1,
	EMU_VEC_BP = 3,
	EMU_VEC_OF = 4,
	EMU_VEC_BR = 5,
	EMU_VEC_UD = 6,
	EMU_VEC_NM = 7,
	EMU_VEC_DF = 8,
	EMU_VEC_TS = 10,
	EMU_VEC_NP = 11,
	EMU_VEC_SS = 12,
	EMU_VEC_GP = 13,
	EMU_VEC_PF = 14,
	EMU_VEC_MF = 16,
	EMU_VEC_AC = 17,
	EMU_VEC_MC = 18,
	EMU_VEC_XM = 19,
};

/* What one emu_step() did. */
enum emu_status {
	EMU_OK = 0, /* the instruction retired */
	EMU_EXCEPTION, /* it faulted: cpu->exc describes the exception, state is as before it */
	EMU_HALT, /* HLT retired */
	EMU_STOP, /* a memory or I/O callback asked to leave (MMIO/PIO exit); the instruction
		   * restarts when emu_step() is called again */
	EMU_SHUTDOWN, /* triple fault */
};

struct emu_exception {
	uint8_t vector;
	bool has_error_code;
	uint32_t error_code;
	uint64_t cr2; /* faulting linear address for #PF */
};

enum emu_access {
	EMU_ACCESS_READ,
	EMU_ACCESS_WRITE,
	EMU_ACCESS_FETCH,
	EMU_ACCESS_SYS_READ, /* implicit supervisor read (GDT, IDT, TSS) whatever the CPL */
};

struct emu_cpu;

/* The CPU's only way to memory. Addresses are linear (segmentation already applied); the system
 * layer translates them (paging, TLB) and routes RAM, MMIO and faults. An access is 1..512
 * bytes (most are 1..16; FXSAVE is 512) and crosses at most one page boundary. Each callback
 * returns EMU_OK, EMU_EXCEPTION after filling cpu->exc (e.g. with emu_raise()), or EMU_STOP to
 * leave the step (the instruction restarts). */
struct emu_memory_ops {
	int (*read)(struct emu_cpu *cpu, uint64_t linear, void *dst, unsigned len,
		    enum emu_access access);
	int (*write)(struct emu_cpu *cpu, uint64_t linear, const void *src, unsigned len);
	/* Optional, for the decode cache: translate `linear` for execution (faulting like read)
	 * and give the host address of that byte, how many bytes follow it contiguously and its
	 * guest-physical address; *host = NULL (with EMU_OK) when it is not plain RAM. */
	int (*fetch)(struct emu_cpu *cpu, uint64_t linear, const uint8_t **host, unsigned *avail,
		     uint64_t *gpa);
	/* Optional, for locked read-modify-writes (LOCK, XCHG with memory; exec.c): translate
	 * the `len` bytes at `linear` for writing, faulting exactly as write() would but
	 * writing nothing, and give the host address of the operand when all of it is RAM in
	 * host-contiguous memory (one page), else *host = NULL with EMU_OK (MMIO, two pages).
	 * Without it every locked operand takes the bus-lock path. */
	int (*lock_operand)(struct emu_cpu *cpu, uint64_t linear, unsigned len, void **host);
	/* Optional, for REP MOVS/STOS over RAM (exec.c): translate the `len` bytes at `linear`,
	 * which lie in one 4 KiB page, for `access` (EMU_ACCESS_READ or EMU_ACCESS_WRITE)
	 * exactly as read() or write() of them would (same faults, accessed and dirty bits,
	 * and for a write the same effect on the block being executed), moving no data, and
	 * give their host address when they are plain RAM, else *host = NULL with EMU_OK
	 * (MMIO, or a range the memory cannot map: the caller then goes element by element).
	 * The caller then reads or writes the bytes through the host address itself, and
	 * reports a write with emu_code_stored() after it when cpu->code is set. */
	int (*map)(struct emu_cpu *cpu, uint64_t linear, unsigned len, enum emu_access access,
		   void **host);
};

/* Lazily evaluated arithmetic flags: the last flag-producing operation is recorded and the six
 * status flags computed only when something reads them (emu_flags_sync()). */
enum emu_cc_op {
	EMU_CC_NONE, /* rflags holds the flags */
	EMU_CC_ADD,
	EMU_CC_ADC,
	EMU_CC_SUB,
	EMU_CC_SBB,
	EMU_CC_LOGIC,
	EMU_CC_INC,
	EMU_CC_DEC,
};

struct emu_lazy_flags {
	uint8_t op; /* enum emu_cc_op */
	uint8_t size; /* operand size in bytes */
	uint8_t carry; /* carry in (ADC/SBB) or the preserved CF (INC/DEC) */
	uint64_t res, src1, src2;
};

/* Guest-physical memory as the paging layer (mmu.c) sees it. */
struct emu_phys_ops {
	/* Host address of the 4 KiB guest-physical page at `gpa` (page-aligned) if it is RAM,
	 * else NULL (MMIO or nothing). */
	uint8_t *(*ram_page)(void *opaque, uint64_t gpa);
	/* An access to a non-RAM address: EMU_OK when done (read data filled in), EMU_STOP
	 * when the monitor must complete it (the instruction is restarted afterwards). */
	int (*mmio)(struct emu_cpu *cpu, uint64_t gpa, void *data, unsigned len, bool is_write);
	/* Port I/O of 1, 2 or 4 bytes, same contract as mmio. */
	int (*pio)(struct emu_cpu *cpu, uint16_t port, void *data, unsigned len, bool is_write);
};

/* A statistics counter with one writer that other threads may read at any time. */
#define EMU_STAT_INC(c) __atomic_store_n(&(c), (c) + 1, __ATOMIC_RELAXED)
#define EMU_STAT_ADD(c, n) __atomic_store_n(&(c), (c) + (n), __ATOMIC_RELAXED)

/* Software TLB (mmu.c): direct-mapped, one array per access kind. The tag is the linear page
 * with bit 0 = user access and bit 1 = valid, so a lookup is one index and one compare; a
 * page that is not RAM (MMIO) also has EMU_TLB_NOHOST, so that a fast path's compare with
 * the tag it wants misses it (the memory ops' lookup ignores that bit). For RAM, `addend` is
 * the host page's address minus the linear page's: the host address of a byte is its linear
 * address + addend (jit.c's inline lookup compares the tag of the access's last byte, so an
 * access that crosses a page misses too, and then adds the addend).
 * 4096 entries each (jit.c's inline lookup masks the index with EMU_TLB_SIZE - 1): the guest
 * kernel's I/O paths (scheduler, block layer, interrupts) touch hundreds of pages per request;
 * on a 4 KiB random read loop at depth 1, 256 entries walked the page tables 157-192 times per
 * request (140-162 reads, 15-27 writes, 2-3 fetches), 4096 entries 10-31 times.
 * Each entry has a second way (`way2`, same index) that only the slow path looks at: a fill
 * moves the entry it replaces there, and a miss that finds its page there swaps the two, so
 * two hot pages whose numbers agree in their low 12 bits cost a swap instead of a page walk
 * each time they alternate. Which pages collide changes with every boot (KASLR, allocation
 * order): a 4 KiB depth-32 read run walked 1-2 or ~28 times per request depending on the boot. */
#define EMU_TLB_SIZE 4096
struct emu_tlb_entry {
	uint64_t tag;
	uint64_t addend; /* RAM: host page - linear page (mod 2^64); MMIO: 0 */
	uint64_t gpa; /* guest-physical page */
	bool global;
};
#define EMU_TLB_USER 1ull /* tag bit: filled for a CPL 3 access */
#define EMU_TLB_VALID 2ull /* tag bit: the entry is in use */
#define EMU_TLB_NOHOST 0x400ull /* tag bit: the page is not RAM (no host address) */
/* How many fills emu_tlb remembers for a flush of non-global entries (beyond: a full scan). */
#define EMU_TLB_FILL_LOG 512
struct emu_tlb {
	bool used; /* any entry filled since the last full flush (flushes are free otherwise) */
	/* What cpu.c caches by linear address (the jump cache, block links) is valid for one
	 * generation: `generation` is bumped by every flush, `generation_global` only by those
	 * that drop global pages too (INVLPG, full flushes), not by CR3 writes, so code on
	 * global pages (the kernel's) stays cached across context switches as its TLB entries
	 * do. */
	uint64_t generation, generation_global;
	/* For compiled code's check after a store (jit.c): the address of the version word
	 * (memory.h) of the RAM page at host address h is code_word_bias + (h >> 12) * 4, i.e.
	 * the version array minus (its RAM's base >> 12) * 4 (mod 2^64); set by every fill while
	 * code is tracked (cpu->code), before any compiled access can use the entry. */
	uint64_t code_word_bias;
	/* Statistics (written by the owning thread only, read anywhere with relaxed loads):
	 * flushes of everything, of all but global pages (CR3 writes), of one page (INVLPG);
	 * misses (page walks) of reads, writes and fetches. */
	uint64_t flushes_all, flushes_nonglobal, flushes_page;
	uint64_t misses_read, misses_write, misses_fetch;
	uint64_t way2_hits; /* misses of the first way found in the second (no walk) */
	/* The entries filled since the last flush of non-global entries (index into `all`),
	 * `nr_fills` of them; more than EMU_TLB_FILL_LOG: the flush scans every entry. A CR3
	 * write then costs what was filled since the last one, not the size of the TLB. Indices
	 * from 3 * EMU_TLB_SIZE on name `way2` entries. */
	unsigned nr_fills;
	uint16_t fills[EMU_TLB_FILL_LOG];
	union {
		struct {
			struct emu_tlb_entry read[EMU_TLB_SIZE], write[EMU_TLB_SIZE],
				fetch[EMU_TLB_SIZE];
		};
		struct emu_tlb_entry all[3 * EMU_TLB_SIZE];
	};
	struct emu_tlb_entry way2[3 * EMU_TLB_SIZE]; /* the second way of all[i] */
};
_Static_assert(6 * EMU_TLB_SIZE <= 65536, "fill log indices are 16 bits");

/* The block cache's counters (cpu.c), written by the owning thread only (EMU_STAT_INC), read
 * anywhere with relaxed loads. finds: blocks looked up by emu_run(), of which link_hits came
 * from the previous block's links and jump_hits from the jump cache; the rest took the slow
 * path (a TLB lookup, the block cache's set), which built its block when the slot was empty
 * (builds_empty), held another block (builds_evicted: that one is lost) or held this one
 * decoded from an older version of its page (builds_version). Entries: blocks that emu_run()
 * started compiled or interpreted; chained: compiled blocks that compiled code went on to. */
/* The block cache's size (cpu.c): slots for this many blocks, and room for this many decoded
 * instructions in all, at most EMU_BLOCK_MAX_INSNS per block. */
#define EMU_BLOCK_SLOTS 32768
#define EMU_BLOCK_POOL_INSNS (EMU_BLOCK_SLOTS * 6)
#define EMU_BLOCK_MAX_INSNS 40

struct emu_block_stats {
	uint64_t finds, link_hits, jump_hits;
	uint64_t builds_empty, builds_evicted, builds_version;
	uint64_t compiled, interpreted, chained;
};

/* MSRs the software CPU implements beyond struct cpu_state (system.c). */
struct emu_msrs {
	uint64_t star, lstar, cstar, sfmask, kernel_gs_base;
	uint64_t sysenter_cs, sysenter_esp, sysenter_eip;
	uint64_t pat, misc_enable, tsc_aux, tsc_offset;
};

enum emu_mode {
	EMU_MODE_16, /* real mode or a 16-bit code segment */
	EMU_MODE_32, /* a 32-bit code segment (protected or compatibility mode) */
	EMU_MODE_64, /* 64-bit mode (EFER.LMA and CS.L) */
};

struct emu_icache;
struct emu_jit;

/* Guest debugging for the gdb stub (debug.c), with the x86 debug registers' semantics (SDM Vol. 3
 * §18.2): execute breakpoints are checked by the caller of emu_step() at instruction boundaries,
 * data breakpoints by memory ops that wrap the CPU's own (installed only while a data breakpoint
 * is set, so they cost nothing otherwise: every data access must go through cpu->mem), and INT3
 * becomes a #BP fault left to the caller (RIP at the INT3) instead of going through the IDT. */
struct emu_debug {
	struct cpu_debug ctl; /* what the stub asked for */
	bool watch; /* ctl has data breakpoints */
	uint8_t data_hits; /* DR6 bits 0-3: data breakpoints hit since the caller cleared it */
};

/* Optional hooks for what the monitor keeps outside the core (backend.c: the LAPIC, kvmclock,
 * the VM's CPUID). A NULL pointer or field means the core's own behaviour. */
#define EMU_MSR_UNHANDLED (-1)
struct emu_platform_ops {
	/* RDMSR/WRMSR: EMU_OK when handled (*value filled for a read), EMU_EXCEPTION after
	 * filling cpu->exc (e.g. #GP), or EMU_MSR_UNHANDLED for the core's MSR code. */
	int (*msr)(struct emu_cpu *cpu, uint32_t index, uint64_t *value, bool is_write);
	/* CPUID as the guest sees it (instead of emu_cpuid()). */
	void (*cpuid)(struct emu_cpu *cpu, uint32_t leaf, uint32_t subleaf, uint32_t out[4]);
	/* MOV from/to CR8 (the LAPIC's TPR[7:4]); the value is already checked. */
	uint64_t (*cr8_read)(struct emu_cpu *cpu);
	void (*cr8_write)(struct emu_cpu *cpu, uint64_t value);
};

/* Entries of struct emu_cpu's return prediction ring (a power of two). */
#define EMU_RET_RING 32

struct emu_cpu {
	struct cpu_state s; /* the arithmetic flags in s.rflags are stale while cc.op != NONE */
	struct emu_lazy_flags cc;
	enum emu_mode mode; /* derived from CR0/EFER/CS by emu_update_mode() */
	unsigned apic_id; /* reported by CPUID */
	unsigned cpl;
	const struct emu_memory_ops *mem;
	void *mem_opaque; /* for the memory callbacks */
	const struct emu_phys_ops *phys; /* for emu_paged_memory_ops */
	void *phys_opaque;
	const struct emu_platform_ops *platform; /* optional (NULL) */
	struct emu_exception exc;
	bool interrupt_shadow; /* after STI or MOV/POP SS: no interrupt before the next one */
	bool shadow_next; /* set by the instruction executing now */
	uint64_t instructions; /* retired */
	/* From the lazy flags (cc) to jit_scratch below: the fields that compiled code uses most,
	 * within 256 bytes, which it addresses from R13 with one-byte displacements (jit.c's
	 * JIT_HOT_BASE). */
	/* While emu_run() executes a block: the guest-physical page of its code. A write to it
	 * or any MMIO access sets block_exit (mmu.c), which ends the block after the
	 * instruction, so modified code is decoded again and an MMIO exit's replay log is only
	 * ever that of one instruction. */
	uint64_t block_page;
	bool block_exit;
	/* Chaining (set by the caller before each emu_run()): run up to chain_max blocks (0 and
	 * 1: one), going on only after a block that ended normally (EMU_OK, no block_exit) while
	 * `attention` stays zero. emu_run() leaves in chain_ran how many it ran. Other threads
	 * set `attention` (atomically) when this CPU must come back to its caller (a kick, an
	 * interrupt); the caller clears it. It is here, not behind a pointer, so that a compiled
	 * block's chain entry (jit.c) looks at it with one load from the CPU. */
	unsigned attention;
	unsigned chain_max;
	unsigned chain_ran;
	/* Compiled blocks that go straight on to their successors (jit.c) share the chain: a
	 * successor's code starts only while chain_left (what is left of chain_max after the
	 * first block, emu_run() keeps it) is non-zero, and takes one from it. What compiled
	 * code leaves for emu_run(): the block cache slot of the last block it started
	 * (jit_last) and the exit it took last towards a successor (jit_exit, an offset in the
	 * JIT's buffer, 0: none), which emu_run() may link to the successor's code. */
	unsigned chain_left;
	uint32_t jit_exit; /* right after chain_left: the chain entry writes both at once */
	/* if_awaited (set by the caller): an interrupt waits for IF. An instruction that sets
	 * IF then ends the chain (emu_execute(): chain_left 0), and what it took from
	 * chain_left is chain_cut, which emu_run() counts as not run. */
	bool if_awaited;
	unsigned chain_cut;
	uint32_t jit_last;
	uint64_t jit_scratch; /* compiled code's own (RIP before a block's last handler) */
	struct emu_msrs msr;
	uint64_t dr[8]; /* debug registers DR0-DR7 (4 and 5 alias 6 and 7); debug.c */
	/* The guest's own breakpoints (debug.c): DR7's enable bits L0-G3, and the data
	 * breakpoints hit by the instruction executing now (DR6 B0-B3). While DR7 enables
	 * something or RFLAGS.TF or RF is set, emu_step()/emu_run() take debug.c's path, one
	 * instruction at a time; otherwise they cost one test per block. */
	uint8_t dr7_enabled;
	uint8_t dr_data_hits;
	bool no_single_step; /* set by IDT delivery and SYSCALL: no TF trap after them */
	bool dr_mov_ss; /* set by MOV SS/POP SS: #DB traps wait for the next instruction */
	/* The memory ops under debug.c's watchpoint wrapper while it is installed (gdb's
	 * watchpoints or the guest's data breakpoints), else NULL. */
	const struct emu_memory_ops *watch_inner;
	struct emu_fxstate fx; /* x87/MMX registers, XMM registers, MXCSR */
	struct emu_tlb tlb;
	struct emu_icache *icache; /* decoded blocks by guest-physical address (cpu.c) */
	struct emu_block_stats blocks; /* what the block cache did (cpu.c) */
	/* The code-page versions of the RAM that cpu->phys->ram_page() returns (memory.h): set
	 * with phys, needed by emu_paged_memory_ops (every store into RAM reports itself) and by
	 * emu_run()'s blocks (without it, emu_run() steps one instruction at a time). */
	struct memory_code_pages *code;
	struct emu_jit *jit; /* host code for hot blocks (jit.c), NULL: interpreter only */
	struct emu_debug *debug; /* guest debugging on (emu_debug_set), else NULL */
	/* The return prediction of compiled code (jit.c), a ring like a host CPU's return stack
	 * buffer: a compiled CALL writes its return address, which of the JIT's return site
	 * links is its own (with the buffer's generation) and a copy of that link at ret_top (a
	 * byte offset into ret_ring) and moves it on; a compiled RET moves it back and, when the
	 * entry names the address it returned to in the buffer's current generation, checks the
	 * copy as it checks an exit to another page (and on a miss has emu_run() link the
	 * return site), instead of the lookup table. A wrong or stale entry only costs the
	 * lookup; all zero (emu_cpu_init()) matches nothing. */
	uint32_t ret_top;
	struct emu_ret_pred {
		/* the link when the CALL ran (jit.c's struct jit_target): the return site's
		 * linear address, TLB and global generations, code | CPL 3 */
		uint64_t link[4];
		uint64_t la; /* the return address pushed */
		uint32_t record; /* the link, as jit_exit names it (jit.c) */
		uint32_t gen; /* the buffer's generation it was written in (never 0) */
		uint64_t pad[2]; /* one entry per cache line's worth */
	} ret_ring[EMU_RET_RING];
};

/* Set up `cpu` from an architectural state; the memory callbacks (mem, phys and their opaque
 * pointers) are set by the caller, before or after, and kept. */
void emu_cpu_init(struct emu_cpu *cpu, const struct cpu_state *state);
/* FNINIT/reset values of the FPU and SSE state (sse.c). */
void emu_fpu_reset(struct emu_cpu *cpu);
/* Free what emu_cpu_init() allocated (the decode cache). */
void emu_cpu_destroy(struct emu_cpu *cpu);
/* Replace the architectural state, keeping MSRs and memory callbacks (vcpu_set_state). */
void emu_cpu_set_state(struct emu_cpu *cpu, const struct cpu_state *state);
/* Copy the architectural state out (flags made exact). */
void emu_cpu_get_state(struct emu_cpu *cpu, struct cpu_state *state);
/* Recompute mode and CPL after CR0/EFER/CS changed. */
void emu_update_mode(struct emu_cpu *cpu);

/* Turn guest debugging on (ctl->enabled) or off, with `d` as its state (kept by the caller, which
 * must not free it while it is installed). Replaces any previous setting. */
void emu_debug_set(struct emu_cpu *cpu, struct emu_debug *d, const struct cpu_debug *ctl);
/* DR6 bits 0-3 of the execute breakpoints at linear address `la` (0: none). */
unsigned emu_debug_exec_hits(const struct emu_debug *d, uint64_t la);
/* DR6 as a debug exit reports it: the bits that read as 1 (SDM Vol. 3 §18.2.3), BS for a step. */
#define EMU_DR6_FIXED1 0xFFFF0FF0ull
#define EMU_DR6_BD (1ull << 13)
#define EMU_DR6_BS (1ull << 14)
#define EMU_DR7_FIXED1 0x400ull

/* The guest's debug registers (debug.c): MOV to DRn with the reserved bits checked (#GP), DR7
 * taking effect at once; and the reset values (emu_cpu_init, INIT). */
int emu_debug_write_dr(struct emu_cpu *cpu, unsigned n, uint64_t value);
void emu_debug_reset_dr(struct emu_cpu *cpu);
/* Recompute what DR7 enables and install or remove the watchpoint wrapper (after the debug
 * registers or gdb's setting changed, or an INIT). */
void emu_debug_update(struct emu_cpu *cpu);
/* One instruction with the guest's breakpoints, single step and RF (debug.c; emu_step() calls it
 * while emu_debug_active()): an instruction breakpoint is a #DB fault before it (unless
 * RFLAGS.RF, which the instruction then clears as it starts), data breakpoints and TF a #DB
 * trap after it (EMU_EXCEPTION with the instruction retired and RIP at the next one); DR6 says
 * which. */
int emu_debug_step(struct emu_cpu *cpu);

/* IF went from 0 to 1 (STI, POPF, IRET, SYSRET: emu_execute(), fast.c's STI): with an
 * interrupt waiting for IF, the chain ends after this block (see chain_cut). */
static inline void emu_if_raised(struct emu_cpu *cpu)
{
	if (cpu->if_awaited) {
		cpu->chain_cut += cpu->chain_left;
		cpu->chain_left = 0;
	}
}

/* Whether emu_step()/emu_run() must go through emu_debug_step(): DR7 enables a breakpoint, TF is
 * set, or RF is (loaded by an IRET, usually from a fault's frame): the next instruction clears
 * it as it starts. */
static inline bool emu_debug_active(const struct emu_cpu *cpu)
{
	return cpu->dr7_enabled || (cpu->s.rflags & (EMU_FLAG_TF | EMU_FLAG_RF));
}
/* Fetch, decode and execute one instruction, without the guest's debug checks (cpu.c). */
int emu_step_insn(struct emu_cpu *cpu);
#define EMU_NO_BLOCK_PAGE (~0ull)

/* Fetch, decode and execute one instruction at CS:RIP. */
int emu_step(struct emu_cpu *cpu);
/* Execute the block of decoded instructions at CS:RIP (cpu.c): at least one instruction and
 * at most to the next branch, system instruction, page end, write to the block's own page or
 * MMIO access. Returns what emu_step() returns for the last instruction executed (the state
 * is then as emu_step() leaves it); instructions before it retired. */
int emu_run(struct emu_cpu *cpu);
/* (emu_run() runs more blocks after that one as chain_max and attention allow.) */

/* Record an exception for the caller of emu_step(); returns EMU_EXCEPTION. Inline so that
 * callers (and static analysers) see that it never returns EMU_OK. */
static inline int emu_raise(struct emu_cpu *cpu, unsigned vector, bool has_error_code,
			    uint32_t error_code)
{
	cpu->exc.vector = (uint8_t)vector;
	cpu->exc.has_error_code = has_error_code;
	cpu->exc.error_code = error_code;
	return EMU_EXCEPTION;
}

/* Events delivered through the IDT (system.c). */
enum emu_event_kind {
	EMU_EVENT_EXCEPTION, /* a fault or trap raised by the CPU */
	EMU_EVENT_SOFTWARE, /* INT n, INT3, INTO: the gate's DPL is checked against CPL */
	EMU_EVENT_EXTERNAL, /* an interrupt from the LAPIC/PIC */
};
/* Deliver an event: push the frame, load CS:RIP from the gate, with double-fault and
 * triple-fault handling. `rip` is what the frame holds (the faulting instruction, or the next
 * one for traps and interrupts). Returns EMU_OK, or EMU_SHUTDOWN on a triple fault. */
int emu_deliver_event(struct emu_cpu *cpu, unsigned vector, enum emu_event_kind kind,
		      bool has_error_code, uint32_t error_code, uint64_t rip);
/* Deliver the exception emu_step() reported in cpu->exc (a fault: RIP is the instruction). */
int emu_deliver_exception(struct emu_cpu *cpu);
/* Whether an external interrupt may be taken now (RFLAGS.IF and no STI/MOV SS shadow). */
bool emu_interrupts_enabled(const struct emu_cpu *cpu);
/* Deliver an external interrupt the caller took from its interrupt controller, between
 * instructions (a halted CPU resumes after its HLT). EMU_OK or EMU_SHUTDOWN. */
int emu_inject_interrupt(struct emu_cpu *cpu, unsigned vector);

/* CPUID as the guest sees it (cpuid.c); leaves describe exactly what is implemented. */
/* CPUID.1:EAX, also EDX after reset and INIT: family 6, model 15, stepping 1 (cpuid.c says why). */
#define EMU_CPUID_SIGNATURE 0x6F1u
void emu_cpuid(const struct emu_cpu *cpu, uint32_t leaf, uint32_t subleaf, uint32_t out[4]);
/* IA32_ARCH_CAPABILITIES (MSR 0x10a, advertised by CPUID.7.0:EDX[29]), read-only. This CPU does
 * not speculate, so it is immune to every attack these bits name: RDCL_NO (Meltdown), SSB_NO,
 * MDS_NO, IF_PSCHANGE_MC_NO, TAA_NO, SBDR_SSDP_NO, FBSDP_NO, PSDP_NO, BHI_NO, PBRSB_NO, GDS_NO,
 * RFDS_NO, ITS_NO. Without them Linux takes an Intel CPU for vulnerable and turns on page-table isolation
 * (a CR3 write, so a TLB flush, on every kernel entry) and buffer clearing on every exit. */
#define EMU_ARCH_CAPABILITIES                                                                      \
	((1ull << 0) | (1ull << 4) | (1ull << 5) | (1ull << 6) | (1ull << 8) | (1ull << 13) |     \
	 (1ull << 14) | (1ull << 15) | (1ull << 20) | (1ull << 24) | (1ull << 26) | (1ull << 27) |    \
	 (1ull << 62))
/* The leaf that answers a CPUID for `leaf`: itself, or the highest basic leaf when out of range. */
uint32_t emu_cpuid_leaf(uint32_t leaf);
/* The virtual TSC (system.c). */
uint64_t emu_read_tsc(const struct emu_cpu *cpu);

/* Flags (alu.c). */
void emu_flags_sync(struct emu_cpu *cpu);
uint64_t emu_flags_get(struct emu_cpu *cpu);
bool emu_condition(struct emu_cpu *cpu, unsigned cc); /* the 4-bit condition code of Jcc */

extern const struct emu_memory_ops emu_paged_memory_ops; /* mmu.c, below */

/* The software TLB's fast path for data accesses (the memory ops' slow path fills it): the
 * host address of the `len` bytes at `linear` when they lie in one RAM page that the TLB holds
 * for this kind of access at the current CPL, else NULL (then use cpu->mem). Only while
 * cpu->mem is the paging layer itself: a wrapper around it (debug.c's watchpoints) sees every
 * access. A write to the page of the block being executed ends the block (emu_run():
 * self-modifying code); the caller reports every write with emu_code_stored() after it. */
static inline uint8_t *emu_tlb_fast(struct emu_cpu *cpu, const struct emu_tlb_entry *array,
				    uint64_t linear, unsigned len)
{
	const struct emu_tlb_entry *e = &array[(linear >> 12) & (EMU_TLB_SIZE - 1)];
	uint64_t tag = (linear & ~0xfffull) | (cpu->cpl == 3 ? EMU_TLB_USER : 0) | EMU_TLB_VALID;

	if (e->tag != tag || (linear & 0xfff) + len > 4096 || cpu->mem != &emu_paged_memory_ops)
		return NULL; /* a miss, MMIO (EMU_TLB_NOHOST), a page crossing, a watchpoint */
	if (array == cpu->tlb.write && e->gpa == cpu->block_page)
		cpu->block_exit = true;
	return (uint8_t *)(uintptr_t)(linear + e->addend);
}

/* After a store of at most one page's bytes at `host` (RAM, from emu_tlb_fast() or the TLB):
 * code decoded from that page is no longer valid (memory_code_store()). When that makes a
 * new version of a page with decoded code, the block being run ends after this instruction
 * (block_exit), whichever page it is: a compiled block goes to a successor in its own page
 * without comparing that page's version (jit.c), so a write into that page must end the
 * chain, and block_page only covers stores from blocks that may store (not a page walk's
 * A/D bits in a load's block, for one). Such writes are rare: a page is only bumped again
 * after code is decoded there again. (Compiled stores check block_page themselves.) */
static inline void emu_code_stored(struct emu_cpu *cpu, const void *host)
{
	uint32_t *word = memory_code_word(cpu->code, host);

	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(word, __ATOMIC_RELAXED) & MEMORY_CODE_DECODED) {
		memory_code_bump(word);
		cpu->block_exit = true;
	}
}

/* Linear memory through paging (mmu.c): CR0.PG/CR4/EFER decide the translation, the software
 * TLB caches it, guest-physical accesses go through cpu->phys. */
extern const struct emu_memory_ops emu_paged_memory_ops;
/* Translate one linear address for an access (used by instructions such as INVLPG's users and
 * by tests); returns EMU_OK with *gpa, or EMU_EXCEPTION (#PF/#GP in cpu->exc). */
int emu_mmu_translate(struct emu_cpu *cpu, uint64_t linear, enum emu_access access,
		      uint64_t *gpa);
/* Forget cached translations: all, all but global pages (CR3 writes), or one page (INVLPG). */
void emu_tlb_flush(struct emu_cpu *cpu, bool include_global);
void emu_tlb_flush_page(struct emu_cpu *cpu, uint64_t linear);
/* Whether the fetch TLB holds the page of `linear` as a global page (a CR3 write keeps it). */
bool emu_tlb_fetch_global(const struct emu_cpu *cpu, uint64_t linear);

/* A flat memory for tests and simple users (flatmem.c): a few windows of host memory at chosen
 * linear addresses; anything else raises #PF (or #GP for non-canonical addresses). */
#define EMU_FLAT_MAX_WINDOWS 4
struct emu_flat_window {
	uint64_t linear;
	uint8_t *host;
	size_t size;
	bool writable;
};
struct emu_flat_memory {
	unsigned nr_windows;
	struct emu_flat_window windows[EMU_FLAT_MAX_WINDOWS];
};
extern const struct emu_memory_ops emu_flat_memory_ops; /* mem_opaque = struct emu_flat_memory * */
int emu_flat_add(struct emu_flat_memory *mem, uint64_t linear, void *host, size_t size,
		 bool writable);

#endif
