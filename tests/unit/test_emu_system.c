/* System behaviour of the software CPU that a user process cannot compare against the host:
 * paging and the TLB, #PF error codes, exception and interrupt delivery in long mode (frames,
 * IST, privilege changes, #DF, triple fault), IRET, SYSCALL/SYSRET, MSRs, control registers,
 * MMIO and port I/O callbacks, REP restart after a fault. A small machine is built in a buffer
 * of guest-physical memory: page tables, GDT, IDT and TSS laid out like a 64-bit kernel's. */
#include <stdlib.h>
#include <string.h>

#include "cpu/emu/emu.h"
#include "cpu/emu/jit.h"
#include "test.h"

#define MEM_SIZE (8u << 20)
#define PML4 0x1000
#define PDPT 0x2000
#define PD 0x3000
#define PT_LOW 0x4000 /* identity map of [0, 2 MiB), supervisor */
#define PT_USER 0x5000 /* linear [2 MiB, 4 MiB): the user pages below */
#define GDT 0x10000
#define IDT 0x11000
#define TSS 0x12000
#define KSTACK_TOP 0x20000
#define IST1_TOP 0x30000
#define HANDLERS 0x40000 /* vector v's handler at HANDLERS + 16 * v */
#define LSTAR_ENTRY 0x48000

#define USER_RW 0x200000
#define USER_RO 0x201000
#define SUPERVISOR_ONLY 0x202000
#define USER_NX 0x203000
#define NOT_PRESENT 0x204000
#define USER_MMIO 0x205000
#define MMIO_GPA 0xF0000000ull
#define BIG_2M 0x400000 /* a 2 MiB page → phys 0x600000 */
#define BIG_1G 0x40000000ull /* a 1 GiB page → phys 0 */

#define P 1ull
#define W 2ull
#define U 4ull
#define PS 0x80ull
#define NX (1ull << 63)

static uint8_t *ram;
static struct memory_code_pages code_pages; /* ram's code versions (memory.h) */
static struct emu_cpu cpu;
static unsigned mmio_reads, mmio_writes, pio_count;
static uint64_t mmio_last_gpa, mmio_last_value;
static uint16_t pio_last_port;
static bool mmio_stop_once;

static uint8_t *phys_ram_page(void *opaque, uint64_t gpa)
{
	(void)opaque;
	return gpa < MEM_SIZE ? ram + gpa : NULL;
}

static int phys_mmio(struct emu_cpu *c, uint64_t gpa, void *data, unsigned len, bool is_write)
{
	(void)c;
	if (mmio_stop_once) {
		mmio_stop_once = false;
		return EMU_STOP;
	}
	mmio_last_gpa = gpa;
	if (is_write) {
		mmio_writes++;
		mmio_last_value = 0;
		memcpy(&mmio_last_value, data, len);
	} else {
		mmio_reads++;
		memset(data, 0xAB, len);
	}
	return EMU_OK;
}

/* Port I/O: reads give 0x5A bytes, or with pio_sequence the bytes 1, 2, 3... in order; writes
 * are recorded in pio_out (what a device would have seen, in order). pio_stop_every makes
 * every other access stop first, as the monitor's exits do. */
static bool pio_sequence, pio_stop_every;
static uint8_t pio_next, pio_out[64];
static unsigned pio_out_len, pio_stops;

static int phys_pio(struct emu_cpu *c, uint16_t port, void *data, unsigned len, bool is_write)
{
	(void)c;
	if (pio_stop_every && !(pio_stops++ & 1))
		return EMU_STOP;
	pio_count++;
	pio_last_port = port;
	if (is_write) {
		for (unsigned i = 0; i < len && pio_out_len < sizeof(pio_out); i++)
			pio_out[pio_out_len++] = ((uint8_t *)data)[i];
	} else if (pio_sequence) {
		for (unsigned i = 0; i < len; i++)
			((uint8_t *)data)[i] = ++pio_next;
	} else {
		memset(data, 0x5A, len);
	}
	return EMU_OK;
}

static const struct emu_phys_ops phys_ops = {
	.ram_page = phys_ram_page, .mmio = phys_mmio, .pio = phys_pio
};

static void put64(uint64_t gpa, uint64_t v)
{
	memcpy(ram + gpa, &v, 8);
}

static void put32(uint64_t gpa, uint32_t v)
{
	memcpy(ram + gpa, &v, 4);
}

static uint64_t get64(uint64_t gpa)
{
	uint64_t v;

	memcpy(&v, ram + gpa, 8);
	return v;
}

static void idt_gate(unsigned vector, unsigned type, unsigned dpl, unsigned ist, bool present)
{
	uint64_t off = HANDLERS + 16 * vector, sel = 0x10;

	put64(IDT + 16 * vector, (off & 0xffff) | (sel << 16) | ((uint64_t)ist << 32) |
					 ((uint64_t)type << 40) | ((uint64_t)dpl << 45) |
					 ((uint64_t)present << 47) |
					 (((off >> 16) & 0xffff) << 48));
	put64(IDT + 16 * vector + 8, off >> 32);
}

static void segment(struct cpu_segment *s, uint16_t sel, bool code, unsigned dpl)
{
	memset(s, 0, sizeof(*s));
	s->selector = sel;
	s->limit = 0xffffffff;
	s->type = code ? 0xB : 0x3;
	s->s = 1;
	s->dpl = (uint8_t)dpl;
	s->present = 1;
	s->l = code;
	s->db = !code;
	s->g = 1;
}

/* A fresh machine: page tables, GDT/IDT/TSS, CPU at CPL 3 in 64-bit mode at USER_RW. */
static void machine_reset(void)
{
	struct cpu_state s;

	memset(ram, 0, MEM_SIZE);
	memory_code_written(&code_pages, ram, MEM_SIZE);
	/* Page tables. */
	put64(PML4, PDPT | P | W | U);
	put64(PDPT, PD | P | W | U);
	put64(PDPT + 8, 0 | P | W | PS); /* 1 GiB page at 1 GiB → phys 0 */
	put64(PD, PT_LOW | P | W);
	put64(PD + 8, PT_USER | P | W | U);
	put64(PD + 16, 0x600000 | P | W | U | PS);
	for (unsigned i = 0; i < 512; i++)
		put64(PT_LOW + 8 * i, ((uint64_t)i << 12) | P | W);
	put64(PT_USER + 0, 0x200000 | P | W | U);
	put64(PT_USER + 8, 0x201000 | P | U);
	put64(PT_USER + 16, 0x202000 | P | W);
	put64(PT_USER + 24, 0x203000 | P | W | U | NX);
	put64(PT_USER + 32, 0x204000); /* not present */
	put64(PT_USER + 40, MMIO_GPA | P | W | U);
	put64(PT_USER + 48, 0x206000 | P | W | U);
	/* GDT like Linux: 0x10 kernel CS, 0x18 kernel DS, 0x23 user CS32, 0x2b user DS,
	 * 0x33 user CS, 0x40 TSS. */
	put64(GDT + 0x08, 0x00CF9B000000FFFFull); /* 32-bit kernel code, for the boot path */
	put64(GDT + 0x10, 0x00AF9B000000FFFFull);
	put64(GDT + 0x18, 0x00CF93000000FFFFull);
	put64(GDT + 0x20, 0x00CFFB000000FFFFull);
	put64(GDT + 0x28, 0x00CFF3000000FFFFull);
	put64(GDT + 0x30, 0x00AFFB000000FFFFull);
	put64(GDT + 0x40, 0x67 | ((uint64_t)(TSS & 0xffffff) << 16) | (0x89ull << 40));
	put64(GDT + 0x48, 0);
	put64(TSS + 4, KSTACK_TOP); /* RSP0 */
	put64(TSS + 36, IST1_TOP); /* IST1 */
	put64(TSS + 96, 0x68ull << 48); /* I/O map base past the limit: no bitmap */
	for (unsigned v = 0; v < 256; v++)
		idt_gate(v, 0xE, 0, 0, true);
	idt_gate(3, 0xE, 3, 0, true); /* int3 from user mode */
	idt_gate(8, 0xE, 0, 1, true); /* #DF on IST1 */
	idt_gate(0x80, 0xF, 3, 0, true); /* a trap gate user mode may call */
	idt_gate(0x81, 0xE, 0, 0, true); /* DPL 0: INT 0x81 from user mode is #GP */

	memset(&s, 0, sizeof(s));
	s.cr0 = CR0_PE | CR0_PG | (1ull << 16) /* WP */ | CR0_ET;
	s.cr3 = PML4;
	s.cr4 = CR4_PAE;
	s.efer = EFER_LME | EFER_LMA | (1ull << 11) /* NXE */ | 1 /* SCE */;
	s.gdt.base = GDT;
	s.gdt.limit = 0x4f;
	s.idt.base = IDT;
	s.idt.limit = 0xfff;
	segment(&s.seg[SEG_CS], 0x33, true, 3);
	segment(&s.seg[SEG_SS], 0x2b, false, 3);
	segment(&s.seg[SEG_DS], 0x2b, false, 3);
	segment(&s.seg[SEG_ES], 0x2b, false, 3);
	s.seg[SEG_TR] = (struct cpu_segment){ .selector = 0x40, .base = TSS, .limit = 0x67,
					      .type = 0xB, .present = 1 };
	s.seg[SEG_LDTR].unusable = 1;
	s.rip = USER_RW;
	s.rflags = EMU_FLAG_FIXED1 | EMU_FLAG_IF;
	s.gpr[CPU_RSP] = USER_RW + 0xF00;
	cpu.mem = &emu_paged_memory_ops;
	cpu.phys = &phys_ops;
	cpu.code = &code_pages;
	emu_cpu_init(&cpu, &s);
	cpu.msr.star = (0x23ull << 48) | (0x10ull << 32);
	cpu.msr.lstar = LSTAR_ENTRY;
	cpu.msr.sfmask = EMU_FLAG_IF | EMU_FLAG_DF | EMU_FLAG_TF;
	mmio_reads = mmio_writes = pio_count = 0;
	pio_sequence = pio_stop_every = false;
	pio_next = 0;
	pio_out_len = pio_stops = 0;
}

/* Put code at a linear address of the user page (identity: user pages map phys = linear). */
static void code(uint64_t linear, const uint8_t *bytes, unsigned n)
{
	memcpy(ram + linear, bytes, n);
	memory_code_written(&code_pages, ram + linear, n); /* as a device's DMA would */
	cpu.s.rip = linear;
}

static void to_kernel_mode(uint64_t rip)
{
	segment(&cpu.s.seg[SEG_CS], 0x10, true, 0);
	segment(&cpu.s.seg[SEG_SS], 0x18, false, 0);
	emu_update_mode(&cpu);
	cpu.s.rip = rip;
	cpu.s.gpr[CPU_RSP] = KSTACK_TOP - 0x100;
}

/* A reset machine in kernel mode at `rip` with a JIT of 1 MiB; false (a failed check) without. */
static bool kernel_with_jit(uint64_t rip)
{
	machine_reset();
	to_kernel_mode(rip);
	cpu.jit = emu_jit_create(1 << 20, 0, true);
	CHECK(cpu.jit != NULL);
	return cpu.jit != NULL;
}

static void test_paging_translations(void)
{
	uint64_t gpa = 0;

	machine_reset();
	CHECK_EQ(emu_mmu_translate(&cpu, USER_RW + 0x123, EMU_ACCESS_WRITE, &gpa), EMU_OK);
	CHECK_EQ(gpa, 0x200123);
	CHECK_EQ(emu_mmu_translate(&cpu, BIG_2M + 0x12345, EMU_ACCESS_READ, &gpa), EMU_OK);
	CHECK_EQ(gpa, 0x612345);
	cpu.cpl = 0;
	CHECK_EQ(emu_mmu_translate(&cpu, BIG_1G + 0x7654321, EMU_ACCESS_READ, &gpa), EMU_OK);
	CHECK_EQ(gpa, 0x7654321);
	/* accessed on every level, dirty on the leaf of a write */
	CHECK(get64(PML4) & 0x20);
	CHECK(get64(PD + 8) & 0x20);
	CHECK(get64(PT_USER) & 0x40);
	CHECK(!(get64(PD + 16) & 0x40));
}

static void check_pf(uint64_t linear, enum emu_access access, uint32_t error_code)
{
	uint64_t gpa;

	CHECK_EQ(emu_mmu_translate(&cpu, linear, access, &gpa), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(cpu.exc.error_code, error_code);
	CHECK_EQ(cpu.exc.cr2, linear);
}

static void test_paging_faults(void)
{
	uint64_t gpa;

	machine_reset();
	check_pf(NOT_PRESENT + 8, EMU_ACCESS_READ, 0x4); /* not present, user */
	check_pf(NOT_PRESENT, EMU_ACCESS_WRITE, 0x6);
	check_pf(USER_RO, EMU_ACCESS_WRITE, 0x7); /* protection, write, user */
	check_pf(SUPERVISOR_ONLY, EMU_ACCESS_READ, 0x5);
	check_pf(USER_NX, EMU_ACCESS_FETCH, 0x15); /* I/D with NXE */
	CHECK_EQ(emu_mmu_translate(&cpu, USER_NX, EMU_ACCESS_READ, &gpa), EMU_OK);
	check_pf(0x600000, EMU_ACCESS_READ, 0x4); /* PD[3] not present */
	/* supervisor: WP makes read-only pages read-only for the kernel too */
	cpu.cpl = 0;
	check_pf(USER_RO, EMU_ACCESS_WRITE, 0x3);
	cpu.s.cr0 &= ~(1ull << 16);
	emu_tlb_flush(&cpu, true);
	CHECK_EQ(emu_mmu_translate(&cpu, USER_RO, EMU_ACCESS_WRITE, &gpa), EMU_OK);
	CHECK_EQ(emu_mmu_translate(&cpu, SUPERVISOR_ONLY, EMU_ACCESS_READ, &gpa), EMU_OK);
	/* reserved bits: a physical address bit above 46 */
	put64(PT_USER + 48, (1ull << 50) | 0x206000 | P | W | U);
	check_pf(0x206000, EMU_ACCESS_READ, 0x9);
	/* non-canonical: #GP, not #PF */
	CHECK_EQ(emu_mmu_translate(&cpu, 0x0000800000000000ull, EMU_ACCESS_READ, &gpa),
		 EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
}

static void test_tlb_caches_until_invlpg(void)
{
	/* mov al, [USER_RW + 0x800]; mov al, [USER_RW + 0x800]; invlpg needs CPL 0 */
	static const uint8_t load[] = { 0x8A, 0x04, 0x25, 0x00, 0x08, 0x20, 0x00 };
	static const uint8_t invlpg[] = { 0x0F, 0x01, 0x3C, 0x25, 0x00, 0x00, 0x20, 0x00 };

	machine_reset();
	ram[0x200800] = 0x11;
	ram[0x206800] = 0x66;
	code(USER_RW, load, sizeof(load));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 0x11);
	/* Remap the page without INVLPG: the TLB still has the old translation. */
	put64(PT_USER, 0x206000 | P | W | U);
	code(USER_RW, load, sizeof(load));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 0x11);
	/* INVLPG at CPL 0 (the code runs from the identity-mapped low 2 MiB) */
	to_kernel_mode(0x50000);
	memcpy(ram + 0x50000, invlpg, sizeof(invlpg));
	memcpy(ram + 0x50000 + sizeof(invlpg), load, sizeof(load));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 0x66);
	/* INVLPG at CPL 3 is #GP(0) */
	machine_reset();
	code(USER_RW, invlpg, sizeof(invlpg));
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
}

/* The TLB against its flushes, for each kind of entry: a global (TLB_G) and a non-global
 * (TLB_N) supervisor page are read, written and fetched, then remapped behind the CPU's back;
 * each access shows which translation the TLB still uses. */
#define TLB_G 0x100000 /* PT_LOW's entry 256, made global */
#define TLB_N 0x101000
#define PTE_G_BIT (1ull << 8)

static void tlb_map(uint64_t linear, uint64_t phys, bool global)
{
	put64(PT_LOW + 8 * (linear >> 12), phys | P | W | (global ? PTE_G_BIT : 0));
}

/* Which kinds of access to `linear` land in the page `phys` (bit 0 read, 1 write, 2 fetch);
 * every page used here holds its page number in its first byte. */
static unsigned tlb_kinds_at(uint64_t linear, uint64_t phys)
{
	const uint8_t *host = NULL, v = 0xEE;
	uint8_t got = 0;
	unsigned avail, kinds = 0;
	uint64_t gpa;

	CHECK_EQ(cpu.mem->read(&cpu, linear, &got, 1, EMU_ACCESS_READ), EMU_OK);
	kinds |= got == (uint8_t)(phys >> 12);
	ram[phys + 8] = 0;
	CHECK_EQ(cpu.mem->write(&cpu, linear + 8, &v, 1), EMU_OK);
	kinds |= (ram[phys + 8] == v) << 1;
	CHECK_EQ(cpu.mem->fetch(&cpu, linear, &host, &avail, &gpa), EMU_OK);
	kinds |= (host && *host == (uint8_t)(phys >> 12)) << 2;
	return kinds;
}

/* Reads of `n` pages of the (non-global) 1 GiB page at BIG_1G, one TLB entry each and none
 * of TLB_G's or TLB_N's; with `mmio`, each must miss the TLB and find the page remapped to
 * MMIO. */
static void tlb_read_big(unsigned n, bool mmio)
{
	unsigned before = mmio_reads;
	uint8_t v;

	for (unsigned i = 0, done = 0; done < n; i++) {
		uint64_t linear = BIG_1G + 4096ull * i;
		unsigned index = (unsigned)(linear >> 12) & (EMU_TLB_SIZE - 1);

		if (index == ((TLB_G >> 12) & (EMU_TLB_SIZE - 1)) ||
		    index == ((TLB_N >> 12) & (EMU_TLB_SIZE - 1)))
			continue;
		CHECK_EQ(cpu.mem->read(&cpu, linear, &v, 1, EMU_ACCESS_READ), EMU_OK);
		done++;
	}
	CHECK_EQ(mmio_reads - before, mmio ? n : 0);
}

static void test_tlb_flush_kinds(void)
{
	uint64_t gen, gen_global;

	machine_reset();
	to_kernel_mode(0x50000);
	cpu.s.cr4 |= 1ull << 7; /* PGE */
	for (uint64_t page = 0x100; page < 0x104; page++)
		ram[page << 12] = (uint8_t)page;
	tlb_map(TLB_G, TLB_G, true);
	emu_tlb_flush(&cpu, true);
	CHECK_EQ(tlb_kinds_at(TLB_G, TLB_G), 7);
	CHECK_EQ(tlb_kinds_at(TLB_N, TLB_N), 7);
	/* Remapped without a flush: every kind keeps the old translation. */
	tlb_map(TLB_G, 0x102000, true);
	tlb_map(TLB_N, 0x103000, false);
	CHECK_EQ(tlb_kinds_at(TLB_G, TLB_G), 7);
	CHECK_EQ(tlb_kinds_at(TLB_N, TLB_N), 7);
	/* A CR3 write drops the non-global page's entries of every kind, keeps the global's. */
	gen = cpu.tlb.generation;
	gen_global = cpu.tlb.generation_global;
	emu_tlb_flush(&cpu, false);
	CHECK_EQ(cpu.tlb.generation, gen + 1);
	CHECK_EQ(cpu.tlb.generation_global, gen_global);
	CHECK_EQ(tlb_kinds_at(TLB_G, TLB_G), 7);
	CHECK_EQ(tlb_kinds_at(TLB_N, 0x103000), 7);
	/* INVLPG drops both kinds of page (here the global one, all three kinds). */
	emu_tlb_flush_page(&cpu, TLB_G);
	CHECK_EQ(cpu.tlb.generation_global, gen_global + 1);
	CHECK_EQ(tlb_kinds_at(TLB_G, 0x102000), 7);
	tlb_map(TLB_N, TLB_N, false);
	emu_tlb_flush_page(&cpu, TLB_N + 0xfff);
	CHECK_EQ(tlb_kinds_at(TLB_N, TLB_N), 7);
	/* A full flush drops global pages too. */
	tlb_map(TLB_G, TLB_G, true);
	tlb_map(TLB_N, 0x103000, false);
	emu_tlb_flush(&cpu, false);
	CHECK_EQ(tlb_kinds_at(TLB_G, 0x102000), 7);
	CHECK_EQ(tlb_kinds_at(TLB_N, 0x103000), 7);
	gen_global = cpu.tlb.generation_global;
	emu_tlb_flush(&cpu, true);
	CHECK_EQ(cpu.tlb.generation_global, gen_global + 1);
	CHECK_EQ(tlb_kinds_at(TLB_G, TLB_G), 7);

	/* Non-global entries filled since the last CR3 write, fewer and more than the flush
	 * remembers one by one (EMU_TLB_FILL_LOG), all go; the global page stays. */
	static const unsigned counts[] = { 3, EMU_TLB_FILL_LOG - 8, EMU_TLB_FILL_LOG + 1,
					   EMU_TLB_SIZE };
	for (unsigned k = 0; k < sizeof(counts) / sizeof(counts[0]); k++) {
		unsigned most = EMU_TLB_SIZE < MEM_SIZE / 4096 ? EMU_TLB_SIZE : MEM_SIZE / 4096;
		unsigned n = counts[k] < most - 8 ? counts[k] : most - 8; /* RAM, own entries */

		put64(PDPT + 8, 0 | P | W | PS); /* BIG_1G -> phys 0 */
		tlb_map(TLB_G, TLB_G, true);
		emu_tlb_flush(&cpu, true);
		CHECK_EQ(tlb_kinds_at(TLB_G, TLB_G), 7);
		emu_tlb_flush(&cpu, false);
		tlb_read_big(n, false);
		put64(PDPT + 8, (1ull << 30) | P | W | PS); /* phys 1 GiB: not RAM */
		tlb_map(TLB_G, 0x102000, true);
		tlb_read_big(n, false); /* still cached */
		emu_tlb_flush(&cpu, false);
		CHECK_EQ(tlb_kinds_at(TLB_G, TLB_G), 7);
		tlb_read_big(n, true);
	}
}

/* Two pages whose numbers agree in their low 12 bits share a TLB index: the second way keeps
 * the one a fill replaced, so alternating between them walks the page tables once each, and
 * every flush (CR3 write through the fill log or its overflow scan, INVLPG, full) drops the
 * second way's entries too. A is RAM (phys 0x300000, first byte 0x5A), B is MMIO. */
#define WAY_A (BIG_1G + 0x300000)
#define WAY_B (WAY_A + 4096ull * EMU_TLB_SIZE)

/* Reads A then B, which leaves A in the second way; returns the MMIO reads they caused. */
static unsigned way_fill(void)
{
	unsigned before = mmio_reads;
	uint8_t v;

	CHECK_EQ(cpu.mem->read(&cpu, WAY_A, &v, 1, EMU_ACCESS_READ), EMU_OK);
	CHECK_EQ(v, 0x5A);
	CHECK_EQ(cpu.mem->read(&cpu, WAY_B, &v, 1, EMU_ACCESS_READ), EMU_OK);
	return mmio_reads - before;
}

/* Whether a read of A (remapped to MMIO since it was cached) went to the new mapping. */
static bool way_a_remapped(void)
{
	unsigned before = mmio_reads;
	uint8_t v;

	CHECK_EQ(cpu.mem->read(&cpu, WAY_A, &v, 1, EMU_ACCESS_READ), EMU_OK);
	return mmio_reads == before + 1;
}

/* A back on phys 0x300000, cached in the second way (behind B), then remapped to MMIO
 * without a flush. */
static void way_cached_then_remapped(void)
{
	put64(PDPT + 8, 0 | P | W | PS);
	emu_tlb_flush(&cpu, true);
	way_fill();
	put64(PDPT + 8, (1ull << 30) | P | W | PS);
}

static void test_tlb_second_way(void)
{
	uint64_t walks, hits;
	unsigned fills;
	uint8_t v;

	machine_reset();
	to_kernel_mode(0x50000);
	ram[0x300000] = 0x5A;
	put64(PDPT + 8, 0 | P | W | PS); /* BIG_1G -> phys 0 */
	emu_tlb_flush(&cpu, true);
	walks = cpu.tlb.misses_read;
	hits = cpu.tlb.way2_hits;
	CHECK_EQ(way_fill(), 1);
	fills = cpu.tlb.nr_fills;
	/* A, B, A, B: two walks, then each comes back from the second way; swapping two
	 * non-global pages adds nothing to the fill log (both positions are in it already). */
	CHECK_EQ(cpu.mem->read(&cpu, WAY_A, &v, 1, EMU_ACCESS_READ), EMU_OK);
	CHECK_EQ(v, 0x5A);
	CHECK_EQ(cpu.mem->read(&cpu, WAY_B, &v, 1, EMU_ACCESS_READ), EMU_OK);
	CHECK_EQ(cpu.tlb.misses_read, walks + 2);
	CHECK_EQ(cpu.tlb.way2_hits, hits + 2);
	CHECK_EQ(cpu.tlb.nr_fills, fills);

	/* A remapped (to MMIO) without a flush stays cached in the second way. */
	put64(PDPT + 8, (1ull << 30) | P | W | PS);
	CHECK(!way_a_remapped());
	CHECK_EQ(cpu.mem->read(&cpu, WAY_B, &v, 1, EMU_ACCESS_READ), EMU_OK); /* A to way 2 */
	/* A CR3 write drops it from the second way (the fill log names both ways). */
	emu_tlb_flush(&cpu, false);
	CHECK(way_a_remapped());

	/* The same when more were filled than the log holds (the flush scans both ways). */
	way_cached_then_remapped();
	cpu.tlb.nr_fills = EMU_TLB_FILL_LOG + 1;
	emu_tlb_flush(&cpu, false);
	CHECK(way_a_remapped());

	/* INVLPG of A drops it from the second way. */
	way_cached_then_remapped();
	emu_tlb_flush_page(&cpu, WAY_A);
	CHECK(way_a_remapped());

	/* A full flush drops it too. */
	way_cached_then_remapped();
	emu_tlb_flush(&cpu, true);
	CHECK(way_a_remapped());
	put64(PDPT + 8, 0 | P | W | PS);
	emu_tlb_flush(&cpu, true);
}

/* A TLB entry filled by a supervisor access is not one for a user access of the page. */
static void test_tlb_privilege(void)
{
	uint8_t v;

	machine_reset();
	cpu.cpl = 0;
	CHECK_EQ(cpu.mem->read(&cpu, SUPERVISOR_ONLY, &v, 1, EMU_ACCESS_READ), EMU_OK);
	CHECK_EQ(cpu.mem->write(&cpu, SUPERVISOR_ONLY, &v, 1), EMU_OK);
	cpu.cpl = 3;
	CHECK_EQ(cpu.mem->read(&cpu, SUPERVISOR_ONLY, &v, 1, EMU_ACCESS_READ), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(cpu.exc.error_code, 0x5);
	CHECK_EQ(cpu.mem->write(&cpu, SUPERVISOR_ONLY, &v, 1), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.error_code, 0x7);
	CHECK_EQ(emu_tlb_fast(&cpu, cpu.tlb.read, SUPERVISOR_ONLY, 1), NULL);
	cpu.cpl = 0;
	CHECK(emu_tlb_fast(&cpu, cpu.tlb.read, SUPERVISOR_ONLY, 1) != NULL);
}

static void test_page_crossing_write_is_all_or_nothing(void)
{
	/* mov [USER_RW + 0xFFE] ... crossing into USER_RO: mov dword [0x200FFE], 0x44332211 */
	static const uint8_t store[] = { 0xC7, 0x04, 0x25, 0xFE, 0x0F, 0x20, 0x00,
					 0x11, 0x22, 0x33, 0x44 };

	machine_reset();
	code(USER_RW + 0x100, store, sizeof(store));
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(cpu.exc.cr2, USER_RO);
	CHECK_EQ(ram[0x200FFE], 0);
	CHECK_EQ(ram[0x200FFF], 0);
	CHECK_EQ(cpu.s.rip, USER_RW + 0x100);
}

static void test_mmio_and_pio(void)
{
	/* mov eax, [USER_MMIO + 8]; mov [USER_MMIO + 16], ebx; out 0x80, al; in al, dx */
	static const uint8_t prog[] = { 0x8B, 0x04, 0x25, 0x08, 0x50, 0x20, 0x00,
					0x89, 0x1C, 0x25, 0x10, 0x50, 0x20, 0x00,
					0xE6, 0x80, 0xEC };

	machine_reset();
	code(USER_RW, prog, sizeof(prog));
	mmio_stop_once = true; /* the monitor must complete the first access */
	CHECK_EQ(emu_step(&cpu), EMU_STOP);
	CHECK_EQ(cpu.s.rip, USER_RW);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(mmio_reads, 1);
	CHECK_EQ(mmio_last_gpa, MMIO_GPA + 8);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0xABABABAB);
	cpu.s.gpr[CPU_RBX] = 0x12345678;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(mmio_writes, 1);
	CHECK_EQ(mmio_last_value, 0x12345678);
	/* port I/O at CPL 3 with IOPL 0: #GP */
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
	cpu.s.rflags |= EMU_FLAG_IOPL;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(pio_last_port, 0x80);
	cpu.s.gpr[CPU_RDX] = 0x3F8;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(pio_last_port, 0x3F8);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 0x5A);
}

/* IN/OUT above IOPL through the TSS's I/O permission bitmap (as Linux's ioperm sets it up). */
static void test_io_permission_bitmap(void)
{
	static const uint8_t outs[] = {
		0xEE, /* out dx, al */
		0x66, 0xEF, /* out dx, ax */
	};
	machine_reset();
	memset(ram + TSS + 0x68, 0xff, 0x90); /* every port denied ... */
	ram[TSS + 0x68 + 0x402 / 8] &= (uint8_t)~(1u << (0x402 & 7)); /* ... but 0x402 */
	ram[TSS + 102] = 0x68;
	cpu.s.seg[SEG_TR].limit = 0x68 + 0x402 / 8 + 1; /* the two bytes read for 0x402 */
	code(USER_RW, outs, sizeof(outs));
	cpu.s.gpr[CPU_RDX] = 0x402;
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* granted */
	CHECK_EQ(pio_last_port, 0x402);
	CHECK_EQ(pio_count, 1);
	cpu.s.gpr[CPU_RDX] = 0x401; /* 0x401-0x402: 0x401 denied */
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
	cpu.s.rip = USER_RW;
	cpu.s.gpr[CPU_RDX] = 0x403;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	cpu.s.rip = USER_RW;
	cpu.s.gpr[CPU_RDX] = 0x402;
	cpu.s.seg[SEG_TR].limit--; /* the second byte outside the TSS: #GP even for a granted port */
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
	CHECK_EQ(pio_count, 1);
}

/* Run the instruction at USER_RW until RIP leaves it (REP items, stops), at most `limit` steps;
 * the status of the last step. */
static int run_until_done(unsigned limit)
{
	int rc = EMU_OK;

	for (unsigned i = 0; i < limit && cpu.s.rip == USER_RW; i++)
		if ((rc = emu_step(&cpu)) != EMU_OK && rc != EMU_STOP)
			break;
	return rc;
}

/* INS/OUTS: items in order, DF, operand and address sizes, the segment override on OUTS' source,
 * ES for INS' destination, stops per item, partial progress on a fault, the IOPL check. */
static void test_string_io(void)
{
	static const uint8_t rep_insb[] = { 0xF3, 0x6C }, rep_insw[] = { 0x66, 0xF3, 0x6D },
			     rep_insd_a32[] = { 0x67, 0xF3, 0x6D },
			     rep_outsb_fs[] = { 0x64, 0xF3, 0x6E }, outsd_rexw[] = { 0x48, 0x6F },
			     rep_outsw[] = { 0xF3, 0x66, 0x6F };
	const uint64_t buf = USER_RW + 0x800;

	machine_reset();
	cpu.s.rflags |= EMU_FLAG_IOPL;
	pio_sequence = pio_stop_every = true;
	code(USER_RW, rep_insb, sizeof(rep_insb));
	cpu.s.gpr[CPU_RDX] = 0x3F8;
	cpu.s.gpr[CPU_RDI] = buf;
	cpu.s.gpr[CPU_RCX] = 5;
	CHECK_EQ(run_until_done(100), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RW + 2);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 0);
	CHECK_EQ(cpu.s.gpr[CPU_RDI], buf + 5);
	CHECK_EQ(pio_count, 5);
	CHECK_EQ(pio_last_port, 0x3F8);
	CHECK(!memcmp(ram + buf, "\1\2\3\4\5\0", 6));
	/* Words, backwards (DF): the first item at the highest address. */
	pio_stop_every = false;
	code(USER_RW, rep_insw, sizeof(rep_insw));
	cpu.s.rflags |= EMU_FLAG_DF;
	cpu.s.gpr[CPU_RDI] = buf + 0x20;
	cpu.s.gpr[CPU_RCX] = 2;
	CHECK_EQ(run_until_done(10), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RDI], buf + 0x1C);
	CHECK(!memcmp(ram + buf + 0x1E, "\x08\x09\x06\x07", 4));
	cpu.s.rflags &= ~EMU_FLAG_DF;
	/* 32-bit addresses: EDI and ECX count, written as 32-bit registers (zero-extended). */
	code(USER_RW, rep_insd_a32, sizeof(rep_insd_a32));
	cpu.s.gpr[CPU_RDI] = 0xFFFFFFFF00000000ull | buf;
	cpu.s.gpr[CPU_RCX] = 0x1234567800000001ull;
	CHECK_EQ(run_until_done(10), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RDI], buf + 4);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 0);
	CHECK(!memcmp(ram + buf, "\x0A\x0B\x0C\x0D", 4));
	/* OUTS through FS (its base), bytes in order. */
	memcpy(ram + buf + 0x40, "hello", 5);
	cpu.s.seg[SEG_FS].base = 0x40;
	code(USER_RW, rep_outsb_fs, sizeof(rep_outsb_fs));
	cpu.s.gpr[CPU_RSI] = buf;
	cpu.s.gpr[CPU_RCX] = 5;
	pio_stop_every = true;
	CHECK_EQ(run_until_done(100), EMU_OK);
	CHECK_EQ(pio_out_len, 5);
	CHECK(!memcmp(pio_out, "hello", 5));
	CHECK_EQ(cpu.s.gpr[CPU_RSI], buf + 5);
	/* OUTSD with REX.W: still 4 bytes; without REP, RCX is not used. */
	pio_stop_every = false;
	pio_out_len = 0;
	code(USER_RW, outsd_rexw, sizeof(outsd_rexw));
	cpu.s.gpr[CPU_RSI] = buf + 0x40;
	cpu.s.gpr[CPU_RCX] = 0;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(pio_out_len, 4);
	CHECK_EQ(cpu.s.gpr[CPU_RSI], buf + 0x44);
	/* REP with a zero count: nothing. */
	code(USER_RW, rep_outsw, sizeof(rep_outsw));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(pio_out_len, 4);
	CHECK_EQ(cpu.s.rip, USER_RW + 3);
	/* A fault midway: the items before it stay done, RIP on the instruction. */
	code(USER_RW, rep_outsw, sizeof(rep_outsw));
	cpu.s.gpr[CPU_RSI] = NOT_PRESENT - 4;
	cpu.s.gpr[CPU_RCX] = 4;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(cpu.exc.cr2, NOT_PRESENT);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 2);
	CHECK_EQ(cpu.s.gpr[CPU_RSI], NOT_PRESENT);
	CHECK_EQ(pio_out_len, 8);
	CHECK_EQ(cpu.s.rip, USER_RW);
	/* INS into a read-only page faults before the port is read. */
	unsigned reads = pio_count;
	code(USER_RW, rep_insb, sizeof(rep_insb));
	cpu.s.gpr[CPU_RDI] = USER_RO;
	cpu.s.gpr[CPU_RCX] = 1;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(pio_count, reads);
	/* CPL 3 above IOPL without a bitmap: #GP before anything. */
	cpu.s.rflags &= ~EMU_FLAG_IOPL;
	cpu.s.gpr[CPU_RDI] = buf;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
	CHECK_EQ(pio_count, reads);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 1);
}

/* The frame of an exception taken from CPL 3: on RSP0, with SS:RSP, aligned to 16. */
static void test_exception_from_user_mode(void)
{
	static const uint8_t div0[] = { 0xF7, 0xF1 }; /* div ecx */
	uint64_t rsp;

	machine_reset();
	put64(TSS + 4, KSTACK_TOP - 8); /* RSP0 not 16-aligned: the CPU aligns it */
	code(USER_RW + 0x10, div0, sizeof(div0));
	cpu.s.gpr[CPU_RCX] = 0;
	cpu.s.gpr[CPU_RSP] = USER_RW + 0xF08;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_DE);
	CHECK_EQ(emu_deliver_exception(&cpu), EMU_OK);
	CHECK_EQ(cpu.cpl, 0);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * EMU_VEC_DE);
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x10);
	CHECK_EQ(cpu.s.seg[SEG_SS].selector, 0);
	rsp = cpu.s.gpr[CPU_RSP];
	CHECK_EQ(rsp, KSTACK_TOP - 16 - 40);
	CHECK_EQ(get64(rsp), USER_RW + 0x10); /* RIP: the faulting instruction */
	CHECK_EQ(get64(rsp + 8), 0x33);
	CHECK(get64(rsp + 16) & EMU_FLAG_IF);
	CHECK_EQ(get64(rsp + 24), USER_RW + 0xF08);
	CHECK_EQ(get64(rsp + 32), 0x2b);
	CHECK(!(cpu.s.rflags & EMU_FLAG_IF)); /* interrupt gate */
	/* IRETQ back to user mode */
	memcpy(ram + HANDLERS, (const uint8_t[]){ 0x48, 0xCF }, 2);
	cpu.s.rip = HANDLERS;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.cpl, 3);
	CHECK_EQ(cpu.s.rip, USER_RW + 0x10);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], USER_RW + 0xF08);
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x33);
	CHECK_EQ(cpu.s.seg[SEG_SS].selector, 0x2b);
	CHECK_EQ(cpu.mode, EMU_MODE_64);
	CHECK(cpu.s.rflags & EMU_FLAG_IF);
}

static void test_page_fault_frame(void)
{
	static const uint8_t store[] = { 0x88, 0x04, 0x25, 0x00, 0x10, 0x20, 0x00 }; /* [USER_RO] */
	uint64_t rsp;

	machine_reset();
	code(USER_RW + 0x20, store, sizeof(store));
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(emu_deliver_exception(&cpu), EMU_OK);
	rsp = cpu.s.gpr[CPU_RSP];
	CHECK_EQ(rsp, KSTACK_TOP - 48);
	CHECK_EQ(get64(rsp), 0x7); /* the error code below RIP */
	CHECK_EQ(get64(rsp + 8), USER_RW + 0x20);
	CHECK_EQ(cpu.s.cr2, USER_RO);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * EMU_VEC_PF);
}

static void test_software_interrupts(void)
{
	static const uint8_t int80[] = { 0xCD, 0x80 }, int81[] = { 0xCD, 0x81 }, int3[] = { 0xCC };

	machine_reset();
	code(USER_RW, int80, 2);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * 0x80);
	CHECK_EQ(get64(cpu.s.gpr[CPU_RSP]), USER_RW + 2); /* a trap: the next instruction */
	CHECK(cpu.s.rflags & EMU_FLAG_IF); /* trap gate */
	/* a DPL 0 gate from CPL 3: #GP(vector * 8 + 2) against the INT instruction */
	machine_reset();
	code(USER_RW, int81, 2);
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
	CHECK_EQ(cpu.exc.error_code, 0x81 * 8 + 2);
	CHECK_EQ(cpu.s.rip, USER_RW);
	machine_reset();
	code(USER_RW, int3, 1);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * EMU_VEC_BP);
	CHECK_EQ(get64(cpu.s.gpr[CPU_RSP]), USER_RW + 1);
	/* UD2 is a fault: #UD at the instruction */
	machine_reset();
	code(USER_RW, (const uint8_t[]){ 0x0F, 0x0B }, 2);
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_UD);
	CHECK_EQ(cpu.s.rip, USER_RW);
}

static void test_double_and_triple_fault(void)
{
	/* mov al, [NOT_PRESENT] */
	static const uint8_t load[] = { 0x8A, 0x04, 0x25, 0x00, 0x40, 0x20, 0x00 };
	uint64_t rsp;

	machine_reset();
	idt_gate(EMU_VEC_PF, 0xE, 0, 0, false); /* #PF → #NP while delivering → #DF */
	code(USER_RW, load, sizeof(load));
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(emu_deliver_exception(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * EMU_VEC_DF);
	rsp = cpu.s.gpr[CPU_RSP];
	CHECK_EQ(rsp, IST1_TOP - 48); /* on IST1, with error code 0 */
	CHECK_EQ(get64(rsp), 0);
	CHECK_EQ(get64(rsp + 8), USER_RW);
	/* and with #DF's gate missing too: shutdown */
	machine_reset();
	idt_gate(EMU_VEC_PF, 0xE, 0, 0, false);
	idt_gate(EMU_VEC_DF, 0xE, 0, 1, false);
	code(USER_RW, load, sizeof(load));
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(emu_deliver_exception(&cpu), EMU_SHUTDOWN);
	/* #UD then a benign fault while delivering (#NP of the #UD gate): #NP is delivered */
	machine_reset();
	idt_gate(EMU_VEC_UD, 0xE, 0, 0, false);
	code(USER_RW, (const uint8_t[]){ 0x0F, 0x0B }, 2);
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(emu_deliver_exception(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * EMU_VEC_NP);
	CHECK_EQ(get64(cpu.s.gpr[CPU_RSP]), EMU_VEC_UD * 8 + 2 + 1); /* IDT, EXT */
}

static void test_syscall_sysret(void)
{
	static const uint8_t syscall[] = { 0x0F, 0x05 }, sysretq[] = { 0x48, 0x0F, 0x07 };

	machine_reset();
	code(USER_RW + 0x40, syscall, 2);
	cpu.s.rflags |= EMU_FLAG_DF | EMU_FLAG_CF;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.cpl, 0);
	CHECK_EQ(cpu.s.rip, LSTAR_ENTRY);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], USER_RW + 0x42);
	CHECK_EQ(cpu.s.gpr[CPU_R11] & (EMU_FLAG_IF | EMU_FLAG_DF | EMU_FLAG_CF),
		 EMU_FLAG_IF | EMU_FLAG_DF | EMU_FLAG_CF);
	CHECK(!(cpu.s.rflags & (EMU_FLAG_IF | EMU_FLAG_DF)));
	CHECK(cpu.s.rflags & EMU_FLAG_CF);
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x10);
	CHECK_EQ(cpu.s.seg[SEG_SS].selector, 0x18);
	memcpy(ram + LSTAR_ENTRY, sysretq, sizeof(sysretq));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.cpl, 3);
	CHECK_EQ(cpu.mode, EMU_MODE_64);
	CHECK_EQ(cpu.s.rip, USER_RW + 0x42);
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x33);
	CHECK_EQ(cpu.s.seg[SEG_SS].selector, 0x2b);
	CHECK(cpu.s.rflags & EMU_FLAG_IF);
	/* SYSRET at CPL 3: #GP */
	code(USER_RW, sysretq, sizeof(sysretq));
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
}

/* IA32_ARCH_CAPABILITIES reads as the immunities CPUID.7 advertises it for; it is read-only. */
static void test_arch_capabilities_msr(void)
{
	static const uint8_t prog[] = { 0x0F, 0x32, 0x0F, 0x30 }; /* rdmsr; wrmsr */

	machine_reset();
	to_kernel_mode(0x50000);
	memcpy(ram + 0x50000, prog, sizeof(prog));
	cpu.s.gpr[CPU_RCX] = 0x10a;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], (uint32_t)EMU_ARCH_CAPABILITIES);
	CHECK_EQ(cpu.s.gpr[CPU_RDX], EMU_ARCH_CAPABILITIES >> 32);
	CHECK(cpu.s.gpr[CPU_RAX] & 1); /* RDCL_NO: no page-table isolation needed */
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
}

/* Linux's microcode revision probe: WRMSR 0 to IA32_BIOS_SIGN_ID, CPUID(1), RDMSR. Both work
 * (a #GP shows as "unchecked MSR access error" in the guest's boot log); the revision is 1. */
static void test_bios_sign_id_msr(void)
{
	/* wrmsr; cpuid; rdmsr */
	static const uint8_t prog[] = { 0x0F, 0x30, 0x0F, 0xA2, 0x0F, 0x32 };

	machine_reset();
	to_kernel_mode(0x50000);
	memcpy(ram + 0x50000, prog, sizeof(prog));
	cpu.s.gpr[CPU_RCX] = 0x8b;
	cpu.s.gpr[CPU_RAX] = cpu.s.gpr[CPU_RDX] = 0;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	cpu.s.gpr[CPU_RAX] = 1;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	cpu.s.gpr[CPU_RCX] = 0x8b;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0);
	CHECK_EQ(cpu.s.gpr[CPU_RDX], 1);
}

/* Linux sets REP_GOOD (memcpy, memset, clear_page and copy_user by REP MOVSQ/STOSQ) for Intel
 * family 6 only, and drops it again when IA32_MISC_ENABLE says fast strings are off: CPUID.1
 * is family 6, and MISC_ENABLE reads with fast strings on, after init (an AP's INIT) as in the
 * boot state (cpu_state_reset_defaults). */
static void test_family_and_fast_strings(void)
{
	static const uint8_t prog[] = { 0x0F, 0x32 }; /* rdmsr */
	struct cpu_state st;
	uint32_t id[4];

	emu_cpuid(&cpu, 1, 0, id);
	CHECK_EQ((id[0] >> 8) & 0xf, 6); /* family */
	CHECK_EQ(id[0], EMU_CPUID_SIGNATURE);
	machine_reset();
	to_kernel_mode(0x50000);
	memcpy(ram + 0x50000, prog, sizeof(prog));
	cpu.s.gpr[CPU_RCX] = 0x1a0;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], CPU_MISC_ENABLE_RESET);
	CHECK(cpu.s.gpr[CPU_RAX] & 1); /* fast strings */
	memset(&st, 0, sizeof(st));
	cpu_state_reset_defaults(&st);
	CHECK_EQ(st.msr.misc_enable, CPU_MISC_ENABLE_RESET);
}

static void test_msrs_and_control_registers(void)
{
	/* wrmsr; rdmsr; mov rax, cr3; mov cr3, rax; cpuid; rdmsr (unknown) */
	static const uint8_t prog[] = { 0x0F, 0x30, 0x0F, 0x32, 0x0F, 0x20, 0xD8,
					0x0F, 0x22, 0xD8, 0x0F, 0xA2, 0x0F, 0x32 };
	uint32_t vendor[3];

	machine_reset();
	to_kernel_mode(0x50000);
	memcpy(ram + 0x50000, prog, sizeof(prog));
	cpu.s.gpr[CPU_RCX] = 0xC0000102; /* KERNEL_GS_BASE */
	cpu.s.gpr[CPU_RDX] = 0xffffffff;
	cpu.s.gpr[CPU_RAX] = 0x12345678;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.msr.kernel_gs_base, 0xffffffff12345678ull);
	cpu.s.gpr[CPU_RAX] = cpu.s.gpr[CPU_RDX] = 0;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x12345678);
	CHECK_EQ(cpu.s.gpr[CPU_RDX], 0xffffffff);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], PML4);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	cpu.s.gpr[CPU_RAX] = 0;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	vendor[0] = (uint32_t)cpu.s.gpr[CPU_RBX];
	vendor[1] = (uint32_t)cpu.s.gpr[CPU_RDX];
	vendor[2] = (uint32_t)cpu.s.gpr[CPU_RCX];
	CHECK(memcmp(vendor, "GenuineIntel", 12) == 0);
	cpu.s.gpr[CPU_RCX] = 0x12345;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
	/* non-canonical GS base */
	cpu.s.rip = 0x50000;
	cpu.s.gpr[CPU_RCX] = 0xC0000101;
	cpu.s.gpr[CPU_RDX] = 0x00008000;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	/* MOV to CR at CPL 3 */
	machine_reset();
	code(USER_RW, prog + 7, 3);
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
}

/* Entering long mode the way a boot loader does: PAE, LME, then CR0.PG sets LMA. */
static void test_long_mode_activation(void)
{
	struct cpu_state s;

	machine_reset();
	memset(&s, 0, sizeof(s));
	s.cr0 = CR0_PE | CR0_ET;
	s.cr3 = PML4;
	s.cr4 = CR4_PAE;
	s.efer = EFER_LME;
	segment(&s.seg[SEG_CS], 0x08, true, 0);
	s.seg[SEG_CS].l = 0;
	s.seg[SEG_CS].db = 1;
	segment(&s.seg[SEG_SS], 0x18, false, 0);
	s.rip = 0x50000;
	s.rflags = 2;
	emu_cpu_set_state(&cpu, &s);
	CHECK_EQ(cpu.mode, EMU_MODE_32);
	/* mov eax, cr0; or eax, 0x80000000; mov cr0, eax */
	memcpy(ram + 0x50000,
	       (const uint8_t[]){ 0x0F, 0x20, 0xC0, 0x0D, 0, 0, 0, 0x80, 0x0F, 0x22, 0xC0 }, 11);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK(cpu.s.efer & EFER_LMA);
	CHECK(cpu.s.cr0 & CR0_PG);
	CHECK_EQ(cpu.mode, EMU_MODE_32); /* compatibility mode until a 64-bit CS is loaded */
}

/* A far return reloads CS, as Linux's startup_64 does with lretq. */
static void test_far_return(void)
{
	machine_reset();
	to_kernel_mode(0x50000);
	memcpy(ram + 0x50000, (const uint8_t[]){ 0x48, 0xCB }, 2); /* lretq */
	cpu.s.gpr[CPU_RSP] = 0x60000;
	put64(0x60000, 0x51234);
	put64(0x60008, 0x10);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, 0x51234);
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x10);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], 0x60010);
	CHECK_EQ(cpu.mode, EMU_MODE_64);
	/* mov ss, ax with a user data selector at CPL 0: #GP(selector) */
	memcpy(ram + 0x51234, (const uint8_t[]){ 0x8E, 0xD0 }, 2);
	cpu.s.gpr[CPU_RAX] = 0x2b;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
	CHECK_EQ(cpu.exc.error_code, 0x28);
	cpu.s.gpr[CPU_RAX] = 0x18;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.seg[SEG_SS].selector, 0x18);
}

/* REP MOVSB: long runs yield between batches (RIP stays) and a fault keeps the progress. */
static void test_rep_restart(void)
{
	static const uint8_t rep_movsb[] = { 0xF3, 0xA4 };
	unsigned steps = 0;

	machine_reset();
	code(USER_RW, rep_movsb, 2);
	cpu.s.gpr[CPU_RSI] = BIG_2M;
	cpu.s.gpr[CPU_RDI] = BIG_2M + 0x100000;
	cpu.s.gpr[CPU_RCX] = 300000; /* more than one execution does: it yields, RIP stays */
	memset(ram + 0x600000, 0x77, 300000);
	while (cpu.s.rip == USER_RW && steps < 100) {
		CHECK_EQ(emu_step(&cpu), EMU_OK);
		steps++;
	}
	CHECK(steps > 1);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 0);
	CHECK_EQ(ram[0x700000 + 299999], 0x77);
	/* a fault in the middle: into the read-only page */
	machine_reset();
	code(USER_RW, rep_movsb, 2);
	cpu.s.gpr[CPU_RSI] = BIG_2M;
	cpu.s.gpr[CPU_RDI] = USER_RO - 10;
	cpu.s.gpr[CPU_RCX] = 100;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.cr2, USER_RO);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 90);
	CHECK_EQ(cpu.s.gpr[CPU_RDI], USER_RO);
	CHECK_EQ(cpu.s.rip, USER_RW);
}

/* A fetch that crosses into a non-executable page faults with I/D set, at the instruction. */
static void test_fetch_across_pages(void)
{
	machine_reset();
	/* "mov eax, imm32" with its last byte on USER_NX: B8 at 0x202FFC... use USER_RW's end */
	put64(PT_USER + 8, 0x201000 | P | U | NX); /* the page after USER_RW: not executable */
	memcpy(ram + 0x200FFD, (const uint8_t[]){ 0xB8, 1, 2 }, 3);
	ram[0x201000] = 3;
	ram[0x201001] = 4;
	cpu.s.rip = USER_RW + 0xFFD;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(cpu.exc.error_code, 0x15);
	CHECK_EQ(cpu.exc.cr2, USER_RO);
	/* a 1-byte instruction right before the boundary does not touch the next page */
	memcpy(ram + 0x200FFF, (const uint8_t[]){ 0x90 }, 1);
	cpu.s.rip = USER_RW + 0xFFF;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
}

/* Interrupts: STI's one-instruction shadow, injection into a halted CPU. */
static void test_interrupt_injection(void)
{
	/* sti; hlt */
	machine_reset();
	to_kernel_mode(0x50000);
	memcpy(ram + 0x50000, (const uint8_t[]){ 0xFB, 0xF4 }, 2);
	cpu.s.rflags &= ~EMU_FLAG_IF;
	CHECK(!emu_interrupts_enabled(&cpu));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK(!emu_interrupts_enabled(&cpu)); /* the shadow covers HLT */
	CHECK_EQ(emu_step(&cpu), EMU_HALT);
	CHECK(emu_interrupts_enabled(&cpu));
	CHECK_EQ(emu_inject_interrupt(&cpu, 0x30), EMU_OK);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * 0x30);
	CHECK_EQ(get64(cpu.s.gpr[CPU_RSP]), 0x50002); /* resumes after HLT */
	CHECK(!(cpu.s.rflags & EMU_FLAG_IF));
	/* HLT at CPL 3: #GP */
	machine_reset();
	code(USER_RW, (const uint8_t[]){ 0xF4 }, 1);
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
}

/* The 32-bit boot path of a kernel: protected mode without paging, LGDT, segment loads, a far
 * jump, then PAE + EFER.LME + CR0.PG and a far jump into 64-bit code. */
static void test_protected_to_long_mode(void)
{
	static const uint8_t prog[] = {
		0x0F, 0x01, 0x15, 0x00, 0x01, 0x05, 0x00, /* lgdt [0x50100] */
		0xB8, 0x18, 0x00, 0x00, 0x00, /* mov eax, 0x18 */
		0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0, /* mov ds/es/ss, eax */
		0xEA, 0x19, 0x00, 0x05, 0x00, 0x08, 0x00, /* ljmp 0x08:0x50019 */
		0x0F, 0x20, 0xE0, 0x0D, 0x20, 0x00, 0x00, 0x00, 0x0F, 0x22, 0xE0, /* cr4 |= PAE */
		0xB8, 0x00, 0x10, 0x00, 0x00, 0x0F, 0x22, 0xD8, /* cr3 = PML4 */
		0xB9, 0x80, 0x00, 0x00, 0xC0, 0x0F, 0x32, /* rdmsr EFER */
		0x0D, 0x00, 0x01, 0x00, 0x00, 0x0F, 0x30, /* wrmsr EFER | LME */
		0x0F, 0x20, 0xC0, 0x0D, 0x01, 0x00, 0x00, 0x80, 0x0F, 0x22, 0xC0, /* cr0 |= PG|PE */
		0xEA, 0x4C, 0x00, 0x05, 0x00, 0x10, 0x00, /* ljmp 0x10:0x5004C */
		0x48, 0xB8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* mov rax, imm64 */
		0xF4, /* hlt */
	};
	struct cpu_state s;
	int rc = EMU_OK;

	machine_reset();
	memset(&s, 0, sizeof(s));
	s.cr0 = CR0_PE | CR0_ET;
	segment(&s.seg[SEG_CS], 0x08, true, 0);
	s.seg[SEG_CS].l = 0;
	s.seg[SEG_CS].db = 1;
	segment(&s.seg[SEG_SS], 0x18, false, 0);
	s.rip = 0x50000;
	s.rflags = 2;
	emu_cpu_set_state(&cpu, &s);
	CHECK_EQ(sizeof(prog), 0x4C + 11);
	memcpy(ram + 0x50000, prog, sizeof(prog));
	memcpy(ram + 0x50100, (const uint8_t[]){ 0x4f, 0x00, 0x00, 0x00, 0x01, 0x00 }, 6);
	for (unsigned i = 0; i < 40 && rc == EMU_OK; i++)
		rc = emu_step(&cpu);
	CHECK_EQ(rc, EMU_HALT);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x1122334455667788ull);
	CHECK_EQ(cpu.mode, EMU_MODE_64);
	CHECK(cpu.s.efer & EFER_LMA);
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x10);
	CHECK_EQ(cpu.s.seg[SEG_DS].selector, 0x18);
	CHECK_EQ(cpu.s.gdt.base, GDT);
}

/* Real mode: CS:IP addressing, a far jump and a far return that reload CS = selector * 16. */
static void test_real_mode_far_jump(void)
{
	struct cpu_state s;

	machine_reset();
	memset(&s, 0, sizeof(s));
	s.seg[SEG_CS] = (struct cpu_segment){ .selector = 0x800, .base = 0x8000, .limit = 0xffff,
					      .type = 0xB, .s = 1, .present = 1 };
	s.seg[SEG_SS] = (struct cpu_segment){ .limit = 0xffff, .type = 3, .s = 1, .present = 1 };
	s.rflags = 2;
	emu_cpu_set_state(&cpu, &s);
	CHECK_EQ(cpu.mode, EMU_MODE_16);
	/* mov ax, 0x1234; jmp 0x0600:0x0010 */
	memcpy(ram + 0x8000, (const uint8_t[]){ 0xB8, 0x34, 0x12, 0xEA, 0x10, 0x00, 0x00, 0x06 },
	       8);
	/* push 0x0800; push 0x0020; retf 2 (and the hlt it returns to) */
	memcpy(ram + 0x6010, (const uint8_t[]){ 0x68, 0x00, 0x08, 0x68, 0x20, 0x00, 0xCA, 0x02,
						0x00 }, 9);
	ram[0x8020] = 0xF4;
	cpu.s.gpr[CPU_RSP] = 0x7000;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x1234);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.seg[SEG_CS].base, 0x6000);
	CHECK_EQ(cpu.s.rip, 0x10);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* retf 2 */
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x0800);
	CHECK_EQ(cpu.s.seg[SEG_CS].base, 0x8000);
	CHECK_EQ(cpu.s.rip, 0x20);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], 0x7002);
	CHECK_EQ(emu_step(&cpu), EMU_HALT);
}

/* The decode cache keys on guest-physical addresses and checks the bytes: code written by the
 * guest (or by DMA) runs as written, and a remapped page runs its own code. */
static void test_decode_cache_sees_new_code(void)
{
	machine_reset();
	code(USER_RW, (const uint8_t[]){ 0xB0, 0x01 }, 2); /* mov al, 1 */
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
	code(USER_RW, (const uint8_t[]){ 0xB0, 0x02 }, 2); /* patched behind the CPU's back */
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 2);
	code(USER_RW, (const uint8_t[]){ 0x66, 0xB8, 0x03, 0x00 }, 4); /* longer now */
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xffff, 3);
	CHECK_EQ(cpu.s.rip, USER_RW + 4);
	/* the guest patches its own next instruction: mov byte [rip+0], 0x90 then what was 0xF4 */
	code(USER_RW, (const uint8_t[]){ 0xC6, 0x05, 0x00, 0x00, 0x00, 0x00, 0x90, 0xF4 }, 8);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* a NOP now, not HLT (which would #GP at CPL 3) */
	CHECK_EQ(cpu.s.rip, USER_RW + 8);
}

/* Run the block at `rip` on `c` (it ends in jmp $). */
static void run_block_at(struct emu_cpu *c, uint64_t rip)
{
	c->s.rip = rip;
	CHECK_EQ(emu_run(c), EMU_OK);
}

/* Code decoded into a block is decoded again after a write to its page from anywhere: a
 * store through another linear mapping of the page (the TLB's fast path, the slow path and a
 * locked operand), a store by another vCPU, the monitor's own write. */
static void test_blocks_other_writers(void)
{
	static const uint8_t target[] = { 0xB0, 0x01, 0xEB, 0xFE }; /* mov al, 1; jmp $ */
	/* at 0x206000: mov [0x207001], bl; jmp $; at +0x10: xchg [0x207001], bl; jmp $ */
	static const uint8_t store[] = { 0x88, 0x1C, 0x25, 0x01, 0x70, 0x20, 0x00, 0xEB, 0xFE };
	static const uint8_t xchg[] = { 0x86, 0x1C, 0x25, 0x01, 0x70, 0x20, 0x00, 0xEB, 0xFE };
	struct emu_cpu other = { .mem = &emu_paged_memory_ops,
				 .phys = &phys_ops,
				 .code = &code_pages };
	struct cpu_state s;

	machine_reset();
	put64(PT_USER + 56, 0x200000 | P | W | U); /* linear 0x207000: USER_RW's page again */
	code(0x206000, store, sizeof(store));
	code(0x206010, xchg, sizeof(xchg));
	code(USER_RW, target, sizeof(target));
	run_block_at(&cpu, USER_RW);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
	for (unsigned value = 9; value <= 10; value++) { /* a TLB miss, then the fast path */
		cpu.s.gpr[CPU_RBX] = value;
		run_block_at(&cpu, 0x206000);
		run_block_at(&cpu, USER_RW);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, value);
	}
	cpu.s.gpr[CPU_RBX] = 11;
	run_block_at(&cpu, 0x206010);
	run_block_at(&cpu, USER_RW);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 11);
	/* Another vCPU (its own TLB and blocks, the same RAM) stores into the code. */
	emu_cpu_get_state(&cpu, &s);
	emu_cpu_init(&other, &s);
	for (unsigned value = 12; value <= 13; value++) {
		other.s.gpr[CPU_RBX] = value;
		run_block_at(&other, 0x206000);
		run_block_at(&cpu, USER_RW);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, value);
	}
	emu_cpu_destroy(&other);
	/* The monitor writes (DMA, gdb): memory_code_written(). */
	ram[USER_RW + 1] = 14;
	memory_code_written(&code_pages, ram + USER_RW + 1, 1);
	run_block_at(&cpu, USER_RW);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 14);
}

/* The block cache's hash bucket for a block at guest-physical `gpa` in 64-bit mode (cpu.c's
 * block_bucket()). */
static unsigned block_bucket(uint64_t gpa)
{
	uint64_t tag = gpa | (uint64_t)EMU_MODE_64 << 56 | 1ull << 63;

	return (unsigned)((tag * 0x9E3779B97F4A7C15ull) >> (64 - __builtin_ctz(32768)));
}

/* Blocks whose guest-physical addresses fall in the same hash bucket of the block cache all
 * stay decoded, and a write to one's page (memory_code_written()) decodes that one again. Code
 * rewritten without telling the CPU shows which: a block still decoded runs its old
 * instructions, a rebuilt one the new. With two ways per set, a third replaced one of them. */
#define SAME_BUCKET 8
static void test_blocks_same_bucket(void)
{
	/* linear 0x400000 is guest-physical 0x600000 (a 2 MiB page); one block per 4 KiB page */
	static const uint64_t to_linear = 0x200000;
	static const uint8_t block[] = { 0xB0, 0x01, 0xEB, 0xFE }; /* mov al, 1; jmp $ */
	uint64_t at[SAME_BUCKET], gpa = 0x610000, built;
	unsigned bucket = block_bucket(gpa);

	machine_reset();
	for (unsigned i = 0; i < SAME_BUCKET; i++) {
		while (block_bucket(gpa) != bucket)
			gpa++;
		CHECK(gpa + sizeof(block) < MEM_SIZE);
		at[i] = gpa;
		memcpy(ram + gpa, block, sizeof(block));
		ram[gpa + 1] = (uint8_t)(i + 1);
		memory_code_written(&code_pages, ram + gpa, sizeof(block));
		gpa = (gpa | 0xfff) + 1;
	}
	for (unsigned i = 0; i < SAME_BUCKET; i++) {
		run_block_at(&cpu, at[i] - to_linear);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, i + 1);
		ram[at[i] + 1] = (uint8_t)(i + 101); /* behind the CPU's back */
	}
	built = cpu.blocks.builds_empty + cpu.blocks.builds_evicted;
	for (unsigned i = 0; i < SAME_BUCKET; i++) {
		run_block_at(&cpu, at[i] - to_linear);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, i + 1);
	}
	CHECK_EQ(cpu.blocks.builds_empty + cpu.blocks.builds_evicted, built);
	memory_code_written(&code_pages, ram + at[3] + 1, 1);
	for (unsigned i = 0; i < SAME_BUCKET; i++) {
		run_block_at(&cpu, at[i] - to_linear);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, i == 3 ? 104 : i + 1);
	}
	CHECK_EQ(cpu.blocks.builds_empty + cpu.blocks.builds_evicted, built);
}

#define FILL_AT 0x180000ull /* kernel code for the blocks that fill the cache */

/* `count` new blocks of one HLT each (kernel mode) from FILL_AT + `from`, run by `c`. */
static void fill_blocks(struct emu_cpu *c, unsigned from, unsigned count)
{
	memset(ram + FILL_AT + from, 0xF4, count);
	memory_code_written(&code_pages, ram + FILL_AT + from, count);
	for (unsigned i = 0; i < count; i++) {
		c->s.rip = FILL_AT + from + i;
		if (emu_run(c) != EMU_HALT) {
			CHECK_EQ(emu_run(c), EMU_HALT);
			return;
		}
	}
}

/* A vCPU of its own (an empty block cache) in kernel mode, with cpu's state. */
static void fresh_cpu(struct emu_cpu *c)
{
	struct cpu_state s;

	memset(c, 0, sizeof(*c));
	c->mem = &emu_paged_memory_ops;
	c->phys = &phys_ops;
	c->code = &code_pages;
	to_kernel_mode(0);
	emu_cpu_get_state(&cpu, &s);
	emu_cpu_init(c, &s);
}

/* `c` runs the block at `rip` (mov al, N; ... hlt, or up to the block size limit) and returns
 * N: the one it decoded, which may be older than the bytes there now. */
static unsigned block_value(struct emu_cpu *c, uint64_t rip)
{
	c->s.rip = rip;
	c->s.gpr[CPU_RAX] = 0;
	emu_run(c);
	return (unsigned)(c->s.gpr[CPU_RAX] & 0xff);
}

/* The block cache holds EMU_BLOCK_SLOTS blocks whatever their addresses, and a new one
 * replaces the one decoded longest ago; blocks take the instructions they need from a pool of
 * EMU_BLOCK_POOL_INSNS, and when it comes round the blocks decoded into it longest ago go. */
static void test_blocks_replaced_in_turn(void)
{
	static const uint8_t a[] = { 0xB0, 0x01, 0xF4 }; /* mov al, 1; hlt */
	const uint64_t a_at = 0x150000, b_at = 0x150010, nops = 0x160000;
	const unsigned per_pool = EMU_BLOCK_POOL_INSNS / EMU_BLOCK_MAX_INSNS;
	struct emu_cpu c;
	unsigned made = 0;

	machine_reset();
	fresh_cpu(&c);
	code(a_at, a, sizeof(a));
	code(b_at, a, sizeof(a));
	ram[b_at + 1] = 2;
	memory_code_written(&code_pages, ram + b_at, sizeof(a));
	CHECK_EQ(block_value(&c, a_at), 1);
	CHECK_EQ(block_value(&c, b_at), 2);
	fill_blocks(&c, 0, EMU_BLOCK_SLOTS - 2); /* every slot taken */
	CHECK_EQ(c.blocks.builds_empty, EMU_BLOCK_SLOTS);
	CHECK_EQ(c.blocks.builds_evicted, 0);
	ram[a_at + 1] = 3; /* behind the CPU's back */
	ram[b_at + 1] = 4;
	CHECK_EQ(block_value(&c, a_at), 1);
	CHECK_EQ(block_value(&c, b_at), 2);
	fill_blocks(&c, EMU_BLOCK_SLOTS - 2, 1); /* replaces a */
	CHECK_EQ(c.blocks.builds_evicted, 1);
	CHECK_EQ(block_value(&c, b_at), 2);
	CHECK_EQ(block_value(&c, a_at), 3); /* decoded again: replaces b */
	CHECK_EQ(block_value(&c, b_at), 4);
	CHECK_EQ(c.blocks.builds_evicted, 3);
	emu_cpu_destroy(&c);

	/* Blocks of EMU_BLOCK_MAX_INSNS: mov al, 1 and NOPs, then NOPs from other addresses. */
	fresh_cpu(&c);
	memset(ram + a_at, 0x90, 64);
	memset(ram + nops, 0x90, 0x4000);
	code(a_at, a, 2);
	memory_code_written(&code_pages, ram + nops, 0x4000);
	CHECK_EQ(block_value(&c, a_at), 1);
	CHECK_EQ(c.s.rip, a_at + 1 + EMU_BLOCK_MAX_INSNS);
	ram[a_at + 1] = 3;
	for (uint64_t at = nops; made < per_pool + 1 && at < nops + 0x4000; at++) {
		if ((at & 0xfff) > 0x1000 - EMU_BLOCK_MAX_INSNS)
			continue;
		if (made == per_pool - 1) /* the pool full up to a's instructions */
			CHECK_EQ(block_value(&c, a_at), 1);
		c.s.rip = at;
		CHECK_EQ(emu_run(&c), EMU_OK);
		CHECK_EQ(c.s.rip, at + EMU_BLOCK_MAX_INSNS);
		made++;
	}
	CHECK_EQ(made, per_pool + 1);
	CHECK_EQ(c.blocks.builds_evicted, 0); /* slots to spare: the pool forgot a */
	CHECK_EQ(block_value(&c, a_at), 3);
	emu_cpu_destroy(&c);
}

/* A block decoded again for a new version of its page, with the same bytes, is compiled again
 * at its next entry; with other bytes it counts its entries to the JIT's threshold again. */
static void test_blocks_same_bytes_recompiled(void)
{
	static const uint8_t a[] = { 0xB0, 0x01, 0xF4 }; /* mov al, 1; hlt */
	const uint64_t a_at = 0x150000;
	struct emu_cpu c;

	machine_reset();
	fresh_cpu(&c);
	c.jit = emu_jit_create(1 << 20, 3, true);
	if (!c.jit) { /* not an x86-64 host */
		emu_cpu_destroy(&c);
		return;
	}
	code(a_at, a, sizeof(a));
	for (unsigned i = 0; i < 4; i++)
		CHECK_EQ(block_value(&c, a_at), 1);
	CHECK_EQ(c.blocks.interpreted, 3);
	CHECK_EQ(c.blocks.compiled, 1);
	memory_code_written(&code_pages, ram + a_at + 0x800, 1); /* same page, not the block */
	CHECK_EQ(block_value(&c, a_at), 1);
	CHECK_EQ(c.blocks.builds_version, 1);
	CHECK_EQ(c.blocks.interpreted, 3);
	CHECK_EQ(c.blocks.compiled, 2);
	ram[a_at + 1] = 2;
	memory_code_written(&code_pages, ram + a_at + 1, 1);
	CHECK_EQ(block_value(&c, a_at), 2);
	CHECK_EQ(c.blocks.builds_version, 2);
	CHECK_EQ(c.blocks.interpreted, 4);
	CHECK_EQ(c.blocks.compiled, 2);
	emu_cpu_destroy(&c);
}

/* An instruction that crosses into the next page is a block of its own, kept decoded like any
 * other (it went through emu_step() each time, which also ended the emu_run() pass): the next
 * page's new bytes, its new translation after INVLPG, and a fault on it (not present, NX) are
 * what the next entry sees. Reached from a block that runs up to it, in a chain. */
static void test_blocks_cross_page(void)
{
	uint64_t builds, runs;

	machine_reset();
	/* mov ecx, 5; 8 x nop; mov eax, 0x04030201 across USER_RW's end; jmp $ */
	code(USER_RW + 0xFF0,
	     (const uint8_t[]){ 0xB9, 0x05, 0x00, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
				0x90, 0x90, 0xB8, 0x01, 0x02 },
	     16);
	code(USER_RO, (const uint8_t[]){ 0x03, 0x04, 0xEB, 0xFE }, 4);
	cpu.s.rip = USER_RW + 0xFFD;
	runs = cpu.blocks.interpreted + cpu.blocks.compiled;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RO + 2);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x04030201);
	CHECK_EQ(cpu.blocks.interpreted + cpu.blocks.compiled - runs, 1); /* a block, not a step */
	builds = cpu.blocks.builds_empty + cpu.blocks.builds_evicted + cpu.blocks.builds_version;
	cpu.s.rip = USER_RW + 0xFFD;
	cpu.s.gpr[CPU_RAX] = 0;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x04030201);
	CHECK_EQ(cpu.blocks.builds_empty + cpu.blocks.builds_evicted + cpu.blocks.builds_version,
		 builds); /* still decoded */
	/* In a chain, after the block before it: the pass goes on to the jmp $ */
	cpu.chain_max = 8;
	cpu.s.rip = USER_RW + 0xFF0;
	cpu.s.gpr[CPU_RAX] = 0;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RO + 2);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x04030201);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 5);
	CHECK(cpu.chain_ran >= 3);
	cpu.chain_max = 0;
	/* The second page written (as by DMA): its new bytes */
	code(USER_RO, (const uint8_t[]){ 0x13, 0x14 }, 2);
	cpu.s.rip = USER_RW + 0xFFD;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x14130201);
	CHECK_EQ(cpu.s.rip, USER_RO + 2);
	/* The second page remapped: the old one until INVLPG of it, then the new one */
	memcpy(ram + 0x206000, (const uint8_t[]){ 0x23, 0x24, 0xEB, 0xFE }, 4);
	memory_code_written(&code_pages, ram + 0x206000, 4);
	put64(PT_USER + 8, 0x206000 | P | U);
	cpu.s.rip = USER_RW + 0xFFD;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x14130201);
	emu_tlb_flush_page(&cpu, USER_RO);
	cpu.s.rip = USER_RW + 0xFFD;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x24230201);
	/* Not executable, then not present: #PF on the second page, nothing changed */
	put64(PT_USER + 8, 0x206000 | P | U | NX);
	emu_tlb_flush_page(&cpu, USER_RO);
	cpu.s.rip = USER_RW + 0xFFD;
	cpu.s.gpr[CPU_RAX] = 0;
	CHECK_EQ(emu_run(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(cpu.exc.error_code, 0x15);
	CHECK_EQ(cpu.exc.cr2, USER_RO);
	CHECK_EQ(cpu.s.rip, USER_RW + 0xFFD);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0);
	put64(PT_USER + 8, 0);
	emu_tlb_flush_page(&cpu, USER_RO);
	CHECK_EQ(emu_run(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(cpu.exc.error_code, 0x14);
	CHECK_EQ(cpu.exc.cr2, USER_RO);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0);
	/* Present again: the block runs again */
	put64(PT_USER + 8, 0x201000 | P | U);
	emu_tlb_flush_page(&cpu, USER_RO);
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x14130201);
}

/* emu_run(): a block runs to its branch; it sees code patched behind its back, code it
 * patches itself in its own block, a new mapping after a TLB flush; an MMIO access ends it. */
static void test_blocks(void)
{
	uint64_t n;

	machine_reset();
	/* mov al, 1; mov bl, 2; jmp $ */
	code(USER_RW, (const uint8_t[]){ 0xB0, 0x01, 0xB3, 0x02, 0xEB, 0xFE }, 6);
	n = cpu.instructions;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.instructions - n, 3);
	CHECK_EQ(cpu.s.rip, USER_RW + 4);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
	CHECK_EQ(cpu.s.gpr[CPU_RBX] & 0xff, 2);
	code(USER_RW, (const uint8_t[]){ 0xB0, 0x05 }, 2); /* patched behind the CPU's back */
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 5);
	/* mov byte [rip+1], 7 patches the immediate of the next mov al, 1 in the same block */
	code(USER_RW, (const uint8_t[]){ 0xC6, 0x05, 0x01, 0x00, 0x00, 0x00, 0x07, 0xB0, 0x01,
					0xEB, 0xFE }, 11);
	for (unsigned i = 0; i < 4 && cpu.s.rip != USER_RW + 9; i++)
		CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RW + 9);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 7);
	/* Remap the code page: the old translation (and block) until the TLB is flushed. */
	memcpy(ram + 0x206000, (const uint8_t[]){ 0xB0, 0x06, 0xEB, 0xFE }, 4);
	memory_code_written(&code_pages, ram + 0x206000, 4);
	code(USER_RW, (const uint8_t[]){ 0xB0, 0x01, 0xEB, 0xFE }, 4);
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
	put64(PT_USER, 0x206000 | P | W | U);
	cpu.s.rip = USER_RW;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
	emu_tlb_flush(&cpu, true);
	cpu.s.rip = USER_RW;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 6);
	/* A loop of one block, which runs again without a lookup: mov ecx, 100; L: inc eax;
	 * dec ecx; jnz L; jmp $ */
	machine_reset();
	code(USER_RW, (const uint8_t[]){ 0xB9, 0x64, 0x00, 0x00, 0x00, 0xFF, 0xC0, 0xFF, 0xC9,
					 0x75, 0xFA, 0xEB, 0xFE }, 13);
	for (unsigned i = 0; i < 100 && cpu.s.rip != USER_RW + 11; i++)
		CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RW + 11);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 100);
	/* The loop patches its own ADD's immediate from 1 to 2: mov ecx, 3; L: add eax, 1;
	 * mov byte [rip - 8], 2; dec ecx; jnz L; jmp $ → 1 + 2 + 2 */
	machine_reset();
	code(USER_RW, (const uint8_t[]){ 0xB9, 0x03, 0x00, 0x00, 0x00, 0x83, 0xC0, 0x01,
					 0xC6, 0x05, 0xF8, 0xFF, 0xFF, 0xFF, 0x02, 0xFF, 0xC9,
					 0x75, 0xF2, 0xEB, 0xFE }, 21);
	for (unsigned i = 0; i < 100 && cpu.s.rip != USER_RW + 19; i++)
		CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RW + 19);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 5);
	/* mov eax, [USER_MMIO + 8]; mov bl, 3; jmp $: the block ends after the MMIO access */
	machine_reset();
	code(USER_RW, (const uint8_t[]){ 0x8B, 0x04, 0x25, 0x08, 0x50, 0x20, 0x00, 0xB3, 0x03,
					 0xEB, 0xFE }, 11);
	mmio_stop_once = true;
	CHECK_EQ(emu_run(&cpu), EMU_STOP);
	CHECK_EQ(cpu.s.rip, USER_RW);
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RW + 7);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0xABABABAB);
	CHECK_EQ(cpu.s.gpr[CPU_RBX] & 0xff, 0);
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RBX] & 0xff, 3);
	test_blocks_other_writers();
	test_blocks_cross_page();
}

/* The jump cache and block links keep a block on a global page across a CR3 write (a
 * non-global flush), as the TLB keeps the page's translation, even when the TLB entry itself
 * was evicted meanwhile; a block on a non-global page, INVLPG and a full flush make the next
 * entry follow the page tables. (A global translation that a CR3 write keeps stale is what
 * a real CPU may do too: the guest must INVLPG or toggle CR4.PGE after changing it.) */
static void test_blocks_global_pages(void)
{
	static const uint8_t old_code[] = { 0xB0, 0x01, 0xEB, 0xFE }; /* mov al, 1; jmp $ */
	static const uint8_t new_code[] = { 0xB0, 0x06, 0xEB, 0xFE }; /* mov al, 6; jmp $ */
	/* at linear 0x300000, whose fetch TLB slot is USER_RW's: mov bl, 1; jmp $ */
	static const uint8_t evict[] = { 0xB3, 0x01, 0xEB, 0xFE };
	const uint64_t G = 1ull << 8;

	for (unsigned how = 0; how < 4; how++) {
		machine_reset();
		cpu.s.cr4 |= 1ull << 7; /* PGE */
		emu_tlb_flush(&cpu, true);
		/* how 0: global page, CR3 write; 1: non-global page, CR3 write; 2: global page,
		 * INVLPG; 3: global page, full flush (CR4.PGE toggled). */
		put64(PT_USER, 0x200000 | P | W | U | (how == 1 ? 0 : G));
		put64(PT_USER + 256 * 8, 0x207000 | P | W | U);
		code(USER_RW, old_code, sizeof(old_code));
		code(0x206000, new_code, sizeof(new_code));
		code(0x207000, evict, sizeof(evict));
		run_block_at(&cpu, USER_RW);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
		/* Remapped without an invalidation; then the flush, and the TLB slot reused. */
		put64(PT_USER, 0x206000 | P | W | U | (how == 1 ? 0 : G));
		if (how <= 1)
			emu_tlb_flush(&cpu, false);
		else if (how == 2)
			emu_tlb_flush_page(&cpu, USER_RW);
		else
			emu_tlb_flush(&cpu, true);
		run_block_at(&cpu, 0x300000);
		CHECK_EQ(cpu.s.gpr[CPU_RBX] & 0xff, 1);
		run_block_at(&cpu, USER_RW);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, how == 0 ? 1 : 6);
	}
	/* A link from a block on a global page to one on a non-global page: after a CR3 write
	 * the successor is looked up again. At 0x201000 (global): mov al, 2; jmp USER_RW. */
	machine_reset();
	cpu.s.cr4 |= 1ull << 7;
	emu_tlb_flush(&cpu, true);
	put64(PT_USER + 8, 0x201000 | P | U | G);
	code(0x201000, (const uint8_t[]){ 0xB0, 0x02, 0xE9, 0xF9, 0xEF, 0xFF, 0xFF }, 7);
	code(USER_RW, old_code, sizeof(old_code));
	code(0x206000, new_code, sizeof(new_code));
	cpu.chain_max = 2;
	for (unsigned i = 0; i < 2; i++) { /* the second pass follows the link */
		run_block_at(&cpu, 0x201000);
		CHECK_EQ(cpu.chain_ran, 2);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
	}
	put64(PT_USER, 0x206000 | P | W | U);
	emu_tlb_flush(&cpu, false);
	run_block_at(&cpu, 0x201000);
	CHECK_EQ(cpu.chain_ran, 2);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 6);
	cpu.chain_max = 0;
}

/* While an interrupt waits for IF (if_awaited), an instruction that sets IF (STI, POPF) ends
 * the chain after its block, counted as run, so that the interrupt is taken at once; one that
 * leaves IF set does not, nor does one that sets it with nothing waiting. */
static void test_block_chain_ends_at_if(unsigned *attention)
{
	/* nop; sti | pushfq; or dword [rsp], 0x200; popfq | 3 x (inc eax; jmp next) | jmp $ */
	static const uint8_t if_chain[] = { 0x90, 0xFB, 0x9C, 0x81, 0x0C, 0x24, 0x00, 0x02, 0x00,
					    0x00, 0x9D, 0xFF, 0xC0, 0xEB, 0x00, 0xFF, 0xC0, 0xEB,
					    0x00, 0xFF, 0xC0, 0xEB, 0x00, 0xEB, 0xFE };

	/* 0: STI, 1: POPF with IF 0, 2: IF 1, 3: STI with nothing waiting */
	for (unsigned how = 0; how < 4; how++) {
		machine_reset();
		code(USER_RW, if_chain, sizeof(if_chain));
		*attention = 0;
		/* IOPL 3: STI and POPF may set IF in user mode */
		cpu.s.rflags = EMU_FLAG_FIXED1 | (3u << 12) | (how == 2 ? EMU_FLAG_IF : 0);
		cpu.s.rip = USER_RW + (how == 1 ? 2 : 0);
		/* the stack off the code's page: a store there would end the chain itself */
		cpu.s.gpr[CPU_RSP] = 0x206800; /* TMPL_DATA's page, user RW */
		cpu.chain_max = 8;
		cpu.if_awaited = how < 3;
		CHECK_EQ(emu_run(&cpu), EMU_OK);
		cpu.if_awaited = false;
		CHECK(cpu.s.rflags & EMU_FLAG_IF);
		if (how == 0) { /* the STI block, then no more */
			CHECK_EQ(cpu.chain_ran, 1);
			CHECK_EQ(cpu.s.rip, USER_RW + 2);
		} else if (how == 1) { /* PUSHF's block (to POPF), then no more */
			CHECK_EQ(cpu.chain_ran, 1);
			CHECK_EQ(cpu.s.rip, USER_RW + 11);
		} else { /* all 8: sti, pushfq to popfq, 3 x inc, jmp $ three times */
			CHECK_EQ(cpu.chain_ran, 8);
		}
		CHECK_EQ(cpu.s.gpr[CPU_RAX], how >= 2 ? 3 : 0);
	}
}

/* CLI and PUSHF do not end blocks (fast.c's handlers): `cli; pushfq; pop rbx; inc eax; jmp $`
 * is one block, IF cleared before PUSHF pushes the flags; CLI at CPL 3 above
 * IOPL is #GP with nothing changed, first instruction or not; compiled or interpreted. */
static void test_cli_pushf_in_block(void)
{
	static const uint8_t prog[] = { 0xFA, 0x9C, 0x5B, 0xFF, 0xC0, 0xEB, 0xFE };
	static const uint8_t late_cli[] = { 0xFF, 0xC0, 0xFA, 0xEB, 0xFE };

	for (unsigned jit = 0; jit < 2; jit++) {
		if (jit)
			cpu.jit = emu_jit_create(1 << 20, 0, true);
		for (unsigned iopl = 0; iopl < 4; iopl += 3) {
			machine_reset();
			code(USER_RW, prog, sizeof(prog));
			cpu.s.gpr[CPU_RSP] = 0x206800; /* off the code's page */
			cpu.s.rflags = EMU_FLAG_FIXED1 | EMU_FLAG_IF | ((uint64_t)iopl << 12);
			cpu.chain_max = 0;
			if (iopl == 0) {
				CHECK_EQ(emu_run(&cpu), EMU_EXCEPTION);
				CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
				CHECK_EQ(cpu.s.rip, USER_RW);
				CHECK(cpu.s.rflags & EMU_FLAG_IF);
				continue;
			}
			CHECK_EQ(emu_run(&cpu), EMU_OK);
			CHECK_EQ(cpu.s.rip, USER_RW + 5); /* at jmp $: one block */
			CHECK_EQ(cpu.s.gpr[CPU_RAX], 1);
			CHECK_EQ(cpu.instructions, 5);
			CHECK(!(cpu.s.rflags & EMU_FLAG_IF));
			CHECK_EQ(cpu.s.gpr[CPU_RBX], EMU_FLAG_FIXED1 | (3u << 12));
		}
		machine_reset(); /* CLI after an instruction of its block: that one retired */
		code(USER_RW, late_cli, sizeof(late_cli));
		CHECK_EQ(emu_run(&cpu), EMU_EXCEPTION);
		CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
		CHECK_EQ(cpu.s.rip, USER_RW + 2);
		CHECK_EQ(cpu.s.gpr[CPU_RAX], 1);
		machine_reset(); /* at CPL 0 (compiled: inline) whatever IOPL, flags kept */
		code(USER_RW, late_cli, sizeof(late_cli));
		to_kernel_mode(USER_RW);
		cpu.s.gpr[CPU_RAX] = ~0ull; /* inc eax: ZF, PF, AF, CF kept */
		cpu.s.rflags = EMU_FLAG_FIXED1 | EMU_FLAG_IF | EMU_FLAG_CF;
		CHECK_EQ(emu_run(&cpu), EMU_OK);
		CHECK_EQ(cpu.s.rip, USER_RW + 3); /* at jmp $: inc, cli, jmp */
		CHECK_EQ(cpu.instructions, 3);
		CHECK(!(cpu.s.rflags & EMU_FLAG_IF));
		CHECK_EQ(emu_flags_get(&cpu),
			 EMU_FLAG_FIXED1 | EMU_FLAG_CF | EMU_FLAG_ZF | EMU_FLAG_PF | EMU_FLAG_AF);
		emu_jit_destroy(cpu.jit);
		cpu.jit = NULL;
	}
}

/* F3 0F BC/BD without BMI1/LZCNT in CPUID are BSF/BSR (the prefix ignored), through fast.c's
 * handler as through emu_execute(): a zero source leaves the destination and sets ZF (the host,
 * which has TZCNT, cannot be the reference in test_emu_diff.c). */
static void test_tzcnt_is_bsf(void)
{
	static const uint8_t tzcnt[] = { 0xF3, 0x48, 0x0F, 0xBC, 0xC3, 0xF3, 0x0F, 0xBD, 0xCB };

	for (unsigned generic = 0; generic < 2; generic++) {
		machine_reset();
		code(USER_RW, tzcnt, sizeof(tzcnt));
		cpu.s.gpr[CPU_RAX] = 0x1234;
		cpu.s.gpr[CPU_RBX] = 0;
		cpu.s.gpr[CPU_RCX] = 0xffffffff00000077ull;
		if (generic) {
			struct emu_insn insn;

			CHECK_EQ(emu_decode(tzcnt, 5, EMU_MODE_64, &insn), EMU_DECODE_OK);
			CHECK_EQ(emu_execute(&cpu, &insn), EMU_OK);
		} else {
			CHECK_EQ(emu_step(&cpu), EMU_OK);
		}
		CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x1234);
		CHECK_EQ(emu_flags_get(&cpu) & (EMU_FLAG_ZF | EMU_FLAG_CF), EMU_FLAG_ZF);
		cpu.s.rip = USER_RW;
		cpu.s.gpr[CPU_RBX] = 0x8000000000000100ull;
		CHECK_EQ(emu_step(&cpu), EMU_OK);
		CHECK_EQ(cpu.s.gpr[CPU_RAX], 8);
		CHECK_EQ(emu_flags_get(&cpu) & (EMU_FLAG_ZF | EMU_FLAG_CF), 0);
		CHECK_EQ(emu_step(&cpu), EMU_OK); /* bsr ecx, ebx: 8, zero-extended */
		CHECK_EQ(cpu.s.gpr[CPU_RCX], 8);
		CHECK_EQ(cpu.s.rip, USER_RW + sizeof(tzcnt));
	}
}

/* RDTSC and RDTSCP (fast.c's handlers) at CPL 3: EDX:EAX the TSC (the upper halves 0, never
 * going back), RDTSCP's ECX IA32_TSC_AUX; with CR4.TSD #GP, nothing changed. */
static void test_rdtsc_user(void)
{
	/* rdtscp; rdtsc; jmp $ */
	static const uint8_t prog[] = { 0x0F, 0x01, 0xF9, 0x0F, 0x31, 0xEB, 0xFE };
	uint64_t first;

	machine_reset();
	CHECK_EQ(cpu.cpl, 3);
	code(USER_RW, prog, sizeof(prog));
	cpu.msr.tsc_aux = 0xabcd12345678ull;
	cpu.s.gpr[CPU_RAX] = cpu.s.gpr[CPU_RCX] = cpu.s.gpr[CPU_RDX] = ~0ull;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RW + 3);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 0x12345678);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] >> 32, 0);
	CHECK_EQ(cpu.s.gpr[CPU_RDX] >> 32, 0);
	first = cpu.s.gpr[CPU_RDX] << 32 | cpu.s.gpr[CPU_RAX];
	CHECK_EQ(emu_run(&cpu), EMU_OK); /* rdtsc in a block */
	CHECK_EQ(cpu.s.rip, USER_RW + 5);
	CHECK((cpu.s.gpr[CPU_RDX] << 32 | cpu.s.gpr[CPU_RAX]) >= first);
	cpu.s.cr4 |= 1ull << 2; /* CR4.TSD */
	for (unsigned i = 0; i < 2; i++) {
		cpu.s.rip = USER_RW + (i ? 3 : 0);
		cpu.s.gpr[CPU_RAX] = 7;
		CHECK_EQ(i ? emu_run(&cpu) : emu_step(&cpu), EMU_EXCEPTION);
		CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
		CHECK_EQ(cpu.s.rip, USER_RW + (i ? 3 : 0));
		CHECK_EQ(cpu.s.gpr[CPU_RAX], 7);
	}
}

/* REP STOS (fast.c's rep_stos: one page's bytes at once, else emu_execute()) in a block,
 * interpreted and compiled, with the TLB cold and warm: the bytes, RDI, RCX and the block
 * going on after it; a run that
 * crosses onto the not-present page stops there with #PF, what fit stored and counted; DF 1
 * stores downwards; RCX 0 stores nothing; a store into the block's own page ends the block. */
static void test_rep_stos_in_block(void)
{
	/* rep stosq (or rep stosb); inc ebx; jmp $ */
	static const uint8_t q[] = { 0xF3, 0x48, 0xAB, 0xFF, 0xC3, 0xEB, 0xFE };
	static const uint8_t b[] = { 0xF3, 0xAA, 0xFF, 0xC3, 0xEB, 0xFE };
	const uint64_t data = 0x206000; /* TMPL_DATA: user RW, the next page not present */
	const uint64_t pattern = 0x0123456789abcdefull;

	for (unsigned jit = 0; jit < 2; jit++) {
		if (jit)
			cpu.jit = emu_jit_create(1 << 20, 0, true);
		for (unsigned run = 0; run < 12; run++) { /* each case twice, the TLB then warm */
			unsigned k = run / 2;
			bool bytes = k == 4, down = k == 2, own = k == 5;
			uint64_t rdi = k == 1 ? data + 4096 - 16
				       : own  ? USER_RW + 0x800
					      : data + 0x100;
			uint64_t rcx = k == 1 ? 4 : k == 3 ? 0 : bytes ? 100 : 5;
			unsigned size = bytes ? 1 : 8, len = bytes ? 6 : 7;
			int rc;

			if (run % 2 == 0)
				machine_reset();
			cpu.s.rflags = EMU_FLAG_FIXED1 | EMU_FLAG_IF;
			cpu.s.gpr[CPU_RBX] = 0;
			memset(ram + data, 0x5a, 4096);
			memset(ram + USER_RW + 0x800, 0x5a, 0x100);
			code(USER_RW, bytes ? b : q, len);
			cpu.s.gpr[CPU_RAX] = pattern;
			cpu.s.gpr[CPU_RCX] = rcx;
			cpu.s.gpr[CPU_RDI] = rdi;
			if (down)
				cpu.s.rflags |= EMU_FLAG_DF;
			rc = emu_run(&cpu);
			if (k == 1) { /* two fit, then #PF on 0x207000 */
				CHECK_EQ(rc, EMU_EXCEPTION);
				CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
				CHECK_EQ(cpu.s.gpr[CPU_RCX], 2);
				CHECK_EQ(cpu.s.gpr[CPU_RDI], data + 4096);
				CHECK_EQ(get64(data + 4096 - 8), pattern);
				CHECK_EQ(cpu.s.rip, USER_RW);
				continue;
			}
			CHECK_EQ(rc, EMU_OK);
			CHECK_EQ(cpu.s.gpr[CPU_RCX], 0);
			CHECK_EQ(cpu.s.gpr[CPU_RDI], down ? rdi - rcx * size : rdi + rcx * size);
			/* the block went on after it, except after a store into its own page */
			CHECK_EQ(cpu.s.gpr[CPU_RBX], own ? 0 : 1);
			CHECK_EQ(cpu.s.rip, USER_RW + (own ? len - 4 : len - 2));
			if (k == 3) {
				CHECK_EQ(ram[data + 0x100], 0x5a);
			} else if (bytes) {
				CHECK_EQ(ram[rdi], 0xef);
				CHECK_EQ(ram[rdi + 99], 0xef);
				CHECK_EQ(ram[rdi + 100], 0x5a);
			} else {
				uint64_t first = down ? rdi - 32 : rdi;

				CHECK_EQ(get64(first), pattern);
				CHECK_EQ(get64(first + 32), pattern);
				CHECK_EQ(ram[down ? first - 1 : first + 40], 0x5a);
			}
		}
		emu_jit_destroy(cpu.jit);
		cpu.jit = NULL;
	}
}

/* Chaining: one emu_run() runs up to chain_max blocks, and only one while the attention flag
 * is set or chain_max is 0; an early block end (MMIO) stops the chain. */
static void test_block_chains(void)
{
	/* 4 x (inc eax; jmp next) then jmp $ */
	static const uint8_t chain[] = { 0xFF, 0xC0, 0xEB, 0x00, 0xFF, 0xC0, 0xEB, 0x00, 0xFF,
					 0xC0, 0xEB, 0x00, 0xFF, 0xC0, 0xEB, 0x00, 0xEB, 0xFE };
	static const uint8_t mmio_chain[] = { 0x8B, 0x04, 0x25, 0x08, 0x50, 0x20, 0x00,
					      0xEB, 0x00, 0xB3, 0x03, 0xEB, 0xFE };

	machine_reset();
	code(USER_RW, chain, sizeof(chain));
	CHECK_EQ(emu_run(&cpu), EMU_OK); /* chain_max 0: one block */
	CHECK_EQ(cpu.chain_ran, 1);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 1);
	cpu.chain_max = 2;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.chain_ran, 2);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 3);
	CHECK_EQ(cpu.s.rip, USER_RW + 12);
	cpu.attention = 1;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.chain_ran, 1);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 4);
	cpu.attention = 0;
	/* mmio_chain: mov eax, [USER_MMIO + 8]; jmp next; mov bl, 3; jmp $ */
	machine_reset();
	code(USER_RW, mmio_chain, sizeof(mmio_chain));
	cpu.chain_max = 8;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.chain_ran, 1);
	CHECK_EQ(cpu.s.rip, USER_RW + 7);
	CHECK_EQ(cpu.s.gpr[CPU_RBX] & 0xff, 0);
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.chain_ran, 8);
	CHECK_EQ(cpu.s.gpr[CPU_RBX] & 0xff, 3);
	test_block_chain_ends_at_if(&cpu.attention);
	cpu.chain_max = 0;
}

/* Compiled blocks chain (jit.c): the same counts and state as through emu_run()'s own chain,
 * first with the exits not linked yet, then linked. */
static void test_block_chains_linked(void)
{
	cpu.jit = emu_jit_create(1 << 20, 0, true);
	CHECK(cpu.jit != NULL);
	if (!cpu.jit)
		return;
	test_block_chains(); /* compiles and links */
	test_block_chains(); /* the links of the same code (machine_reset() rewrote it: new) */
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* ---- compiled code across pages and after indirect branches (jit.c) ---- */

#define XP_PAGE(i) (0x208000ull + 0x1000ull * (i)) /* user pages 8.., identity */

/* Map XP_PAGE(i) (PT_USER entry 8 + i) to `phys` with `flags`. */
static void xp_map(unsigned i, uint64_t phys, uint64_t flags)
{
	put64(PT_USER + 8 * (8 + i), phys | flags);
}

/* `op` (one byte, or 0F xx with op2) with a rel32 from `at` to `to`; returns the next address. */
static uint64_t put_rel32(uint64_t at, uint8_t op, uint64_t to)
{
	uint8_t b[5] = { op };
	int32_t rel = (int32_t)(to - (at + 5));

	memcpy(b + 1, &rel, 4);
	code(at, b, 5);
	return at + 5;
}

/* A user-mode machine whose first pages XP_PAGE(0..5) are mapped, with a compiling JIT
 * (threshold 0) or none. */
static void xp_reset(bool jit)
{
	machine_reset();
	for (unsigned i = 0; i < 6; i++)
		xp_map(i, XP_PAGE(i), P | W | U);
	if (jit && !cpu.jit)
		cpu.jit = emu_jit_create(1 << 20, 0, true);
	if (!jit && cpu.jit) {
		emu_jit_destroy(cpu.jit);
		cpu.jit = NULL;
	}
}

/* One emu_run() from `a` with a chain of up to `max` blocks. */
static int xp_run(uint64_t a, unsigned max)
{
	cpu.s.rip = a;
	cpu.chain_max = max;
	return emu_run(&cpu);
}

static void to_user_mode(void)
{
	segment(&cpu.s.seg[SEG_CS], 0x33, true, 3);
	segment(&cpu.s.seg[SEG_SS], 0x2b, false, 3);
	emu_update_mode(&cpu);
}

/* A store by a chained block into its own page ends that block after the store, as it does
 * for the first block of an emu_run() pass: the instructions after it are decoded again. A at
 * XP_PAGE(0) jumps to B at XP_PAGE(1) + 0x10: mov byte [rdi], 0xC2; inc ecx; jmp $. Once A
 * is linked to B, RDI pointing at inc ecx's ModRM byte turns it into inc edx. */
static void test_jit_chained_block_writes_own_page(void)
{
	static const uint8_t b_code[] = { 0xC6, 0x07, 0xC2, 0xFF, 0xC1, 0xEB, 0xFE };
	const uint64_t a = XP_PAGE(0) + 0x20, b = XP_PAGE(1) + 0x10;

	xp_reset(true);
	if (!cpu.jit)
		return;
	code(b, b_code, sizeof(b_code));
	put_rel32(a, 0xE9, b);
	for (unsigned i = 0; i < 3; i++) { /* compile A and B, link A to B */
		cpu.s.gpr[CPU_RDI] = USER_RW + 0x800;
		CHECK_EQ(xp_run(a, 2), EMU_OK);
		CHECK_EQ(cpu.s.rip, b + 5);
	}
	cpu.s.gpr[CPU_RDI] = b + 4;
	cpu.s.gpr[CPU_RCX] = cpu.s.gpr[CPU_RDX] = 0;
	CHECK_EQ(xp_run(a, 2), EMU_OK);
	for (unsigned i = 0; i < 4 && cpu.s.rip != b + 5; i++)
		CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, b + 5);
	CHECK_EQ(ram[b + 4], 0xC2);
	CHECK_EQ(cpu.s.gpr[CPU_RDX], 1); /* the new instruction ran */
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 0); /* not the old one */
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* A link from a block to a successor in another page holds as long as the successor's
 * translation does: a CR3 write (its page not global), an INVLPG of its page or a CPL change
 * makes the next pass look the successor up again (here: the new code the page tables name,
 * or the #PF the new CPL gets), and a global page's link survives CR3 writes as its TLB
 * entry does. A at XP_PAGE(0) jumps to B at XP_PAGE(1) + 0x10 (mov al, 1 | 6; jmp $). */
static void test_jit_cross_page_links(void)
{
	static const uint8_t old_b[] = { 0xB0, 0x01, 0xEB, 0xFE },
			     new_b[] = { 0xB0, 0x06, 0xEB, 0xFE };
	const uint64_t a = XP_PAGE(0) + 0x20, b = XP_PAGE(1) + 0x10, G = 1ull << 8;

	for (unsigned how = 0; how < 5; how++) {
		/* how 0: CR3 write; 1: INVLPG (global page); 2: full flush (global page); 3: CR3
		 * write, global page (kept); 4: CPL 0 → 3 with B on a supervisor page. */
		bool global = how >= 1 && how <= 3;
		uint64_t flags = P | W | (how == 4 ? 0 : U) | (global ? G : 0);

		xp_reset(true);
		if (!cpu.jit)
			return;
		cpu.s.cr4 |= 1ull << 7; /* PGE */
		emu_tlb_flush(&cpu, true);
		xp_map(1, XP_PAGE(1), flags);
		code(b, old_b, sizeof(old_b));
		code(XP_PAGE(4) + 0x10, new_b, sizeof(new_b));
		/* A: inc ecx; jmp b */
		code(a, (const uint8_t[]){ 0xFF, 0xC1 }, 2);
		put_rel32(a + 2, 0xE9, b);
		if (how == 4)
			to_kernel_mode(a);
		for (unsigned i = 0; i < 3; i++) { /* compiles, links, follows the link */
			cpu.s.gpr[CPU_RAX] = 0;
			CHECK_EQ(xp_run(a, 2), EMU_OK);
			CHECK_EQ(cpu.s.rip, b + 2);
			CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
			CHECK_EQ(cpu.chain_ran, 2);
		}
		CHECK_EQ(cpu.s.gpr[CPU_RCX], 3);
		/* B's page remapped to the new code, then the invalidation. */
		xp_map(1, XP_PAGE(4), flags);
		if (how == 0 || how == 3)
			emu_tlb_flush(&cpu, false);
		else if (how == 1)
			emu_tlb_flush_page(&cpu, b);
		else if (how == 2)
			emu_tlb_flush(&cpu, true);
		else
			to_user_mode();
		cpu.s.gpr[CPU_RAX] = 0;
		if (how == 4) {
			CHECK_EQ(xp_run(a, 2), EMU_EXCEPTION);
			CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
			CHECK_EQ(cpu.s.rip, b);
			CHECK_EQ(cpu.s.gpr[CPU_RAX], 0);
			continue;
		}
		CHECK_EQ(xp_run(a, 2), EMU_OK);
		CHECK_EQ(cpu.s.rip, b + 2);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, how == 3 ? 1 : 6);
		CHECK_EQ(cpu.chain_ran, 2);
	}
	cpu.chain_max = 0;
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* The same code at two linear addresses (one page mapped twice, in one TLB generation): a
 * direct jump into the next page goes on to whatever page follows each mapping; a link to
 * another page holds only for the linear address it was made at. */
static void test_jit_cross_page_alias(void)
{
	const uint64_t a = XP_PAGE(0) + 0x20, b = XP_PAGE(1) + 0x10;

	xp_reset(true);
	if (!cpu.jit)
		return;
	xp_map(2, XP_PAGE(0), P | W | U); /* A's page again */
	xp_map(3, XP_PAGE(5), P | W | U); /* after it: other code than B's */
	code(b, (const uint8_t[]){ 0xB0, 0x01, 0xEB, 0xFE }, 4);
	code(XP_PAGE(5) + 0x10, (const uint8_t[]){ 0xB0, 0x07, 0xEB, 0xFE }, 4);
	code(a, (const uint8_t[]){ 0xFF, 0xC1 }, 2);
	put_rel32(a + 2, 0xE9, b);
	for (unsigned i = 0; i < 3; i++) { /* compiles, links, follows the link */
		uint64_t chained = cpu.blocks.chained;

		cpu.s.gpr[CPU_RAX] = 0;
		CHECK_EQ(xp_run(a, 2), EMU_OK);
		CHECK_EQ(cpu.s.rip, b + 2);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
		CHECK_EQ(cpu.chain_ran, 2);
		CHECK_EQ(cpu.blocks.chained, chained + (i > 0));
	}
	cpu.s.gpr[CPU_RAX] = 0;
	CHECK_EQ(xp_run(XP_PAGE(2) + 0x20, 2), EMU_OK);
	CHECK_EQ(cpu.s.rip, XP_PAGE(3) + 0x12);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 7);
	cpu.chain_max = 0;
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* A call site (5 bytes, then 4) whose return site shares c1's lookup table entry, on a page
 * XP_PAGE(6..) mapped for it (the entry's index has as many bits as the table's size). */
static uint64_t lookup_twin(uint64_t c1)
{
	for (unsigned k = 6; k < 64; k++)
		for (uint64_t c = XP_PAGE(k); c + 9 <= XP_PAGE(k) + 4096; c++)
			if (emu_jit_lookup_entry(c + 5) == emu_jit_lookup_entry(c1 + 5)) {
				xp_map(k, XP_PAGE(k), P | W | U);
				return c;
			}
	return 0;
}

/* After RET the lookup table finds the return site's code only for the same linear address
 * in the same TLB generation at the same CPL: two return sites in one table entry, a
 * remapped return site after a CR3 write, and a return site on a supervisor page reached at
 * CPL 0 and then at CPL 3 (#PF). F at XP_PAGE(1): ret. */
static void test_jit_return_lookup(void)
{
	const uint64_t f = XP_PAGE(1) + 0x40, c1 = XP_PAGE(0) + 0xFB;
	const uint64_t s = 0x100000; /* supervisor, identity (PT_LOW) */
	uint64_t c2;

	xp_reset(true);
	if (!cpu.jit)
		return;
	c2 = lookup_twin(c1);
	CHECK(c2 != 0);
	if (!c2)
		return;
	code(f, (const uint8_t[]){ 0xC3 }, 1);
	/* c1: call f; mov al, 1; jmp $ and c2: call f; mov al, 2; jmp $ */
	code(put_rel32(c1, 0xE8, f), (const uint8_t[]){ 0xB0, 0x01, 0xEB, 0xFE }, 4);
	code(put_rel32(c2, 0xE8, f), (const uint8_t[]){ 0xB0, 0x02, 0xEB, 0xFE }, 4);
	code(XP_PAGE(4) + 0xFB, ram + c1, 9); /* the same page's copy, with mov al, 7 */
	ram[XP_PAGE(4) + 0x101] = 7;
	memory_code_written(&code_pages, ram + XP_PAGE(4), 4096);
	for (unsigned i = 0; i < 3; i++) {
		cpu.s.gpr[CPU_RAX] = 0;
		CHECK_EQ(xp_run(c1, 3), EMU_OK);
		CHECK_EQ(cpu.s.rip, c1 + 7);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
		CHECK_EQ(cpu.chain_ran, 3);
		CHECK_EQ(cpu.s.gpr[CPU_RSP], USER_RW + 0xF00);
	}
	for (unsigned i = 0; i < 2; i++) {
		CHECK_EQ(xp_run(c2, 3), EMU_OK);
		CHECK_EQ(cpu.s.rip, c2 + 7);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 2);
		CHECK_EQ(xp_run(c1, 3), EMU_OK);
		CHECK_EQ(cpu.s.rip, c1 + 7);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
	}
	xp_map(0, XP_PAGE(4), P | W | U);
	emu_tlb_flush(&cpu, false);
	CHECK_EQ(xp_run(c1, 3), EMU_OK);
	CHECK_EQ(cpu.s.rip, c1 + 7);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 7);

	/* At CPL 0, s calls f (a user page) and f returns to s + 5, remembered at CPL 0. */
	code(put_rel32(s, 0xE8, f), (const uint8_t[]){ 0xB0, 0x03, 0xEB, 0xFE }, 4);
	to_kernel_mode(s);
	cpu.s.gpr[CPU_RSP] = USER_RW + 0xF00;
	for (unsigned i = 0; i < 3; i++) {
		cpu.s.gpr[CPU_RAX] = 0;
		CHECK_EQ(xp_run(s, 3), EMU_OK);
		CHECK_EQ(cpu.s.rip, s + 7);
		CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 3);
	}
	/* At CPL 3, f returns to s + 5 (pushed by hand): a fetch fault, not s's code. */
	to_user_mode();
	cpu.s.gpr[CPU_RSP] = USER_RW + 0xEF8;
	put64(USER_RW + 0xEF8, s + 5);
	cpu.s.gpr[CPU_RAX] = 0;
	CHECK_EQ(xp_run(f, 3), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(cpu.s.rip, s + 5);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0);
	cpu.chain_max = 0;
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* The ring entry that the last CALL wrote (struct emu_cpu's return prediction). */
static const struct emu_ret_pred *ret_last_pushed(void)
{
	return &cpu.ret_ring[((cpu.ret_top - 64) & (EMU_RET_RING * 64 - 1)) / 64];
}

/* The return prediction (jit.c): a RET goes to the return site's code through the CALL's
 * ring entry only when the entry names the address returned to, in the JIT's current
 * generation, and the site's link holds for the TLB generation and the CPL. C at XP_PAGE(0):
 * call F; mov al, 1; mov bl, 2; jmp $. F (XP_PAGE(1)): ret; F2: add qword [rsp], 2; ret (to
 * C + 7, not where the CALL pushed). */
static void test_jit_return_prediction(void)
{
	const uint64_t c = XP_PAGE(0) + 0x20, f = XP_PAGE(1) + 0x40, f2 = XP_PAGE(1) + 0x80;
	const uint64_t s = 0x100000; /* supervisor, identity (PT_LOW) */
	static const uint8_t site[] = { 0xB0, 0x01, 0xB3, 0x02, 0xEB, 0xFE };

	xp_reset(true);
	if (!cpu.jit)
		return;
	code(f, (const uint8_t[]){ 0xC3 }, 1);
	code(f2, (const uint8_t[]){ 0x48, 0x83, 0x04, 0x24, 0x02, 0xC3 }, 6);
	code(put_rel32(c, 0xE8, f), site, sizeof(site));
	/* Compiled (the CALL's push misses the TLB: its slow path writes no entry). Then the
	 * CALL writes the entry; the RET takes it to the site's (unlinked) record: emu_run() is
	 * told to link that record, not the lookup table. */
	CHECK_EQ(xp_run(c, 3), EMU_OK);
	CHECK_EQ(xp_run(c, 1), EMU_OK);
	CHECK_EQ(cpu.s.rip, f);
	CHECK_EQ(ret_last_pushed()->la, c + 5);
	CHECK_EQ(ret_last_pushed()->gen, emu_jit_generation(cpu.jit));
	CHECK_EQ(xp_run(f, 1), EMU_OK);
	CHECK_EQ(cpu.s.rip, c + 5);
	CHECK(cpu.jit_exit != 0 && cpu.jit_exit != EMU_JIT_EXIT_LOOKUP);
	/* After a flush of the buffer, an entry written before it names a record that is no
	 * longer one: the RET takes the lookup. */
	CHECK_EQ(xp_run(c, 1), EMU_OK);
	emu_jit_forget(cpu.jit);
	CHECK_EQ(xp_run(f, 1), EMU_OK);
	CHECK_EQ(cpu.s.rip, c + 5);
	CHECK_EQ(cpu.jit_exit, EMU_JIT_EXIT_LOOKUP);
	/* Linked: C, F and the site in one pass; a RET elsewhere (F2) still lands right. */
	for (unsigned i = 0; i < 3; i++) {
		cpu.s.gpr[CPU_RAX] = cpu.s.gpr[CPU_RBX] = 0;
		CHECK_EQ(xp_run(c, 3), EMU_OK);
		CHECK_EQ(cpu.s.rip, c + 9);
		CHECK_EQ(cpu.s.gpr[CPU_RAX], 1);
		CHECK_EQ(cpu.chain_ran, 3);
		CHECK_EQ(cpu.s.gpr[CPU_RSP], USER_RW + 0xF00);
	}
	put_rel32(c, 0xE8, f2);
	for (unsigned i = 0; i < 3; i++) {
		cpu.s.gpr[CPU_RAX] = cpu.s.gpr[CPU_RBX] = 0;
		CHECK_EQ(xp_run(c, 3), EMU_OK);
		CHECK_EQ(cpu.s.rip, c + 9);
		CHECK_EQ(cpu.s.gpr[CPU_RAX], 0);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 2);
		CHECK_EQ(cpu.s.gpr[CPU_RSP], USER_RW + 0xF00);
	}
	put_rel32(c, 0xE8, f);
	for (unsigned i = 0; i < 3; i++)
		CHECK_EQ(xp_run(c, 3), EMU_OK);
	/* The CALL's entry written, then C's page remapped to a copy with mov al, 7 and CR3
	 * written: the RET's entry still names C + 5, the new code runs. */
	code(XP_PAGE(4) + 0x20, ram + c, 11);
	ram[XP_PAGE(4) + 0x26] = 7;
	memory_code_written(&code_pages, ram + XP_PAGE(4), 4096);
	CHECK_EQ(xp_run(c, 1), EMU_OK);
	xp_map(0, XP_PAGE(4), P | W | U);
	emu_tlb_flush(&cpu, false);
	cpu.s.gpr[CPU_RAX] = 0;
	CHECK_EQ(xp_run(f, 2), EMU_OK);
	CHECK_EQ(cpu.s.rip, c + 9);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 7);
	/* At CPL 0, S calls F and returns, linked at CPL 0; then S's CALL alone, and F's RET at
	 * CPL 3 to S + 5 (a supervisor page): the fetch fault, not S's code. */
	code(put_rel32(s, 0xE8, f), (const uint8_t[]){ 0xB0, 0x03, 0xEB, 0xFE }, 4);
	to_kernel_mode(s);
	cpu.s.gpr[CPU_RSP] = USER_RW + 0xF00;
	for (unsigned i = 0; i < 3; i++) {
		cpu.s.gpr[CPU_RAX] = 0;
		CHECK_EQ(xp_run(s, 3), EMU_OK);
		CHECK_EQ(cpu.s.rip, s + 7);
		CHECK_EQ(cpu.s.gpr[CPU_RAX], 3);
	}
	CHECK_EQ(xp_run(s, 1), EMU_OK);
	CHECK_EQ(ret_last_pushed()->la, s + 5);
	to_user_mode();
	cpu.s.gpr[CPU_RAX] = 0;
	CHECK_EQ(xp_run(f, 3), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(cpu.s.rip, s + 5);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0);
	cpu.chain_max = 0;
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* A successor reached through the lookup table after RET runs only while its block cache slot
 * still holds that code: after its slot and its instructions' room in the pool were given to
 * other blocks (an interpreted fill that goes round the pool; the page, the TLB and the CPL
 * unchanged), the RET that the table still sends to the old code goes back to emu_run(),
 * which decodes the block again. Handler calls only (templates off), so old code would run
 * the handlers on whatever the pool holds now. F: ret; G (another page): mov ebx, imm; hlt. */
static void test_jit_lookup_rebuilt_block(void)
{
	const uint64_t f = 0x160000, g = 0x161000, sp = KSTACK_TOP - 0x100;
	struct emu_jit *jit;
	uint64_t chained;

	machine_reset();
	to_kernel_mode(f);
	/* compiling at the second entry: the fill's blocks, run once, stay interpreted (no
	 * flush of the buffer), and the JIT sees them take G's slot (emu_jit_unchain()) */
	cpu.jit = jit = emu_jit_create(1 << 20, 1, false);
	CHECK(jit != NULL);
	if (!jit)
		return;
	code(f, (const uint8_t[]){ 0xC3 }, 1);
	code(g, (const uint8_t[]){ 0xBB, 0x11, 0x11, 0x11, 0x11, 0xF4 }, 6);
	cpu.chain_max = 4;
	for (unsigned i = 0; i < 6; i++) {
		/* 0: interpreted; 1: F runs compiled, its lookup misses, G is remembered; then the
		 * table sends F's RET to G's code (a chained entry); 4: after the fill, both
		 * decoded again (and interpreted); 5: F compiled again, its RET finds G's old code
		 * in the table */
		if (i == 4) {
			for (unsigned k = 0; k * 40000 <= EMU_BLOCK_POOL_INSNS; k++)
				fill_blocks(&cpu, 0, 40000);
			CHECK_EQ(emu_jit_flushes(jit), 0);
		}
		chained = cpu.blocks.chained;
		cpu.s.rip = f;
		cpu.s.gpr[CPU_RSP] = sp - 8;
		put64(sp - 8, g);
		cpu.s.gpr[CPU_RBX] = 0;
		CHECK_EQ(emu_run(&cpu), EMU_HALT);
		CHECK_EQ(cpu.s.rip, g + 6);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 0x11111111);
		CHECK_EQ(cpu.s.gpr[CPU_RSP], sp);
		if (i == 2 || i == 3)
			CHECK_EQ(cpu.blocks.chained, chained + 1);
		if (i >= 4) /* G's old code refused: G ran from emu_run() */
			CHECK_EQ(cpu.blocks.chained, chained);
	}
	cpu.chain_max = 0;
	emu_jit_destroy(jit);
	cpu.jit = NULL;
}

/* A program of calls and returns across pages, an indirect CALL through a register and a JMP
 * through memory, a block that falls through into the next page, an instruction that crosses
 * into the next page (a block of its own, reached from its page's block before it), blocks
 * that end at PUSHF and LFENCE, up to a #UD, run emu_run() by emu_run() compiled (linked across pages, returns
 * found by the lookup) and interpreted: after every emu_run() the same status, RIP,
 * instruction count, blocks run, registers and stack; and with the attention flag set now
 * and then, the same. */
struct xp_state {
	int rc;
	uint64_t rip, instructions, rax, rbx, rcx, rdx, rsp;
	unsigned ran;
};

static void xp_program(void)
{
	const uint64_t m = XP_PAGE(0) + 0x100, f = XP_PAGE(1) + 0xFFC, g = XP_PAGE(2) + 0xFFA;
	const uint64_t h = XP_PAGE(4) + 0x30, slot = XP_PAGE(5) + 0x80;
	uint64_t p;
	uint8_t b[10] = { 0x48, 0xBA };

	/* m: mov ecx, 20; L: call f; add ebx, eax; mov rdx, g; call rdx; jmp [rip + slot];
	 * M (back from h): dec ecx; jnz L; ud2 (the end: a #UD; a JMP $ would loop in one
	 * interpreted block, where compiled code counts each pass as a block) */
	code(m, (const uint8_t[]){ 0xB9, 0x14, 0x00, 0x00, 0x00 }, 5);
	p = put_rel32(m + 5, 0xE8, f);
	code(p, (const uint8_t[]){ 0x01, 0xC3 }, 2);
	memcpy(b + 2, &g, 8);
	code(p + 2, b, 10);
	code(p + 12, (const uint8_t[]){ 0xFF, 0xD2, 0xFF, 0x25 }, 4);
	put32(p + 16, (uint32_t)(slot - (p + 20)));
	put64(slot, h);
	memory_code_written(&code_pages, ram + p + 16, 4);
	/* M at p + 20: dec ecx; jnz L (rel8); ud2 */
	code(p + 20, (const uint8_t[]){ 0xFF, 0xC9, 0x75, (uint8_t)(m + 5 - (p + 24)), 0x0F, 0x0B },
	     6);
	/* f: pushf (a block end that goes on to the next instruction); pop rdx; add eax, 3 (across
	 * into XP_PAGE(2)); ret */
	code(f, (const uint8_t[]){ 0x9C, 0x5A, 0x83, 0xC0, 0x03, 0xC3 }, 6);
	/* g: add eax, 1; nop; nop; nop (the page ends) | inc eax; ret */
	code(g, (const uint8_t[]){ 0x83, 0xC0, 0x01, 0x90, 0x90, 0x90 }, 6);
	code(XP_PAGE(3), (const uint8_t[]){ 0xFF, 0xC0, 0xC3 }, 3);
	/* h: lfence (another); add ebx, 2; jmp M */
	code(h, (const uint8_t[]){ 0x0F, 0xAE, 0xE8, 0x83, 0xC3, 0x02 }, 6);
	put_rel32(h + 6, 0xE9, p + 20);
	cpu.s.rip = m;
}

static unsigned xp_trace(struct xp_state *out, unsigned cap, unsigned max, unsigned attention_every)
{
	unsigned n = 0;

	while (n < cap) {
		struct xp_state *st = &out[n];

		cpu.attention = attention_every && n % attention_every == attention_every - 1;
		cpu.chain_max = max;
		st->rc = emu_run(&cpu);
		st->rip = cpu.s.rip;
		st->instructions = cpu.instructions;
		st->rax = cpu.s.gpr[CPU_RAX];
		st->rbx = cpu.s.gpr[CPU_RBX];
		st->rcx = cpu.s.gpr[CPU_RCX];
		st->rdx = cpu.s.gpr[CPU_RDX];
		st->rsp = cpu.s.gpr[CPU_RSP];
		st->ran = cpu.chain_ran;
		n++;
		if (st->rc)
			break;
	}
	cpu.attention = 0;
	cpu.chain_max = 0;
	return n;
}

static bool xp_same(const struct xp_state *a, const struct xp_state *b)
{
	return a->rc == b->rc && a->rip == b->rip && a->instructions == b->instructions &&
	       a->rax == b->rax && a->rbx == b->rbx && a->rcx == b->rcx && a->rdx == b->rdx &&
	       a->rsp == b->rsp && a->ran == b->ran;
}

/* The first of `n` runs whose compiled state differs from the interpreted one (each field
 * checked there, so that a failure names it), or `n` when none does. */
static unsigned xp_first_difference(const struct xp_state *interp, const struct xp_state *compiled,
				    unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (xp_same(&interp[i], &compiled[i]))
			continue;
		CHECK_EQ(compiled[i].rc, interp[i].rc);
		CHECK_EQ(compiled[i].rip, interp[i].rip);
		CHECK_EQ(compiled[i].instructions, interp[i].instructions);
		CHECK_EQ(compiled[i].ran, interp[i].ran);
		CHECK_EQ(compiled[i].rax, interp[i].rax);
		CHECK_EQ(compiled[i].rbx, interp[i].rbx);
		CHECK_EQ(compiled[i].rcx, interp[i].rcx);
		CHECK_EQ(compiled[i].rdx, interp[i].rdx);
		CHECK_EQ(compiled[i].rsp, interp[i].rsp);
		return i;
	}
	return n;
}

static void test_jit_cross_page_exact(void)
{
	static struct xp_state interp[1024], compiled[1024];
	static const unsigned max[] = { 1, 2, 3, 7, 16, 64 };

	for (unsigned k = 0; k < sizeof(max) / sizeof(max[0]); k++) {
		for (unsigned att = 0; att < 4; att += 3) {
			unsigned n, m;

			xp_reset(false);
			xp_program();
			n = xp_trace(interp, 1024, max[k], att);
			xp_reset(true);
			if (!cpu.jit)
				return;
			xp_program();
			m = xp_trace(compiled, 1024, max[k], att);
			CHECK_EQ(m, n);
			CHECK(n < 1024);
			CHECK_EQ(interp[n - 1].rc, EMU_EXCEPTION);
			CHECK_EQ(interp[n - 1].rip, XP_PAGE(0) + 0x100 + 34);
			/* eax 3 + 5 (i - 1) added to ebx in pass i, and 2 from h */
			CHECK_EQ(interp[n - 1].rax, 100);
			CHECK_EQ(interp[n - 1].rbx, 1050);
			unsigned runs = n < m ? n : m;
			unsigned first = xp_first_difference(interp, compiled, runs);

			if (first < runs)
				printf("  max %u attention %u: run %u\n", max[k], att, first);
		}
	}
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* Recursion deeper than the return prediction's ring, with two return sites (the upper and
 * the lower half of the depth), three times, ending at a #UD: the same states compiled as
 * interpreted. C: mov ecx, 40; call R; dec edx; jnz C; ud2. R: dec ecx; jz done; cmp ecx, 20;
 * jb low; call R; jmp done; low: call R; done: ret. */
static void ret_deep_program(void)
{
	const uint64_t c = XP_PAGE(0) + 0x300, r = XP_PAGE(2) + 0x100;
	uint64_t p;

	code(c, (const uint8_t[]){ 0xB9, 0x28, 0x00, 0x00, 0x00 }, 5);
	p = put_rel32(c + 5, 0xE8, r);
	code(p, (const uint8_t[]){ 0xFF, 0xCA, 0x75, (uint8_t)(c - (p + 4)), 0x0F, 0x0B }, 6);
	code(r, (const uint8_t[]){ 0xFF, 0xC9, 0x74, 0x11, 0x83, 0xF9, 0x14, 0x72, 0x07 }, 9);
	put_rel32(r + 9, 0xE8, r);
	code(r + 0xE, (const uint8_t[]){ 0xEB, 0x05 }, 2);
	put_rel32(r + 0x10, 0xE8, r);
	code(r + 0x15, (const uint8_t[]){ 0xC3 }, 1);
	cpu.s.gpr[CPU_RDX] = 3;
	cpu.s.rip = c;
}

static void test_jit_return_ring_overflow(void)
{
	static struct xp_state interp[4096], compiled[4096];
	static const unsigned max[] = { 1, 3, 64 };

	for (unsigned k = 0; k < sizeof(max) / sizeof(max[0]); k++) {
		unsigned n, m;

		xp_reset(false);
		ret_deep_program();
		n = xp_trace(interp, 4096, max[k], 0);
		xp_reset(true);
		if (!cpu.jit)
			return;
		ret_deep_program();
		m = xp_trace(compiled, 4096, max[k], 0);
		CHECK_EQ(m, n);
		CHECK(n < 4096);
		CHECK_EQ(interp[n - 1].rc, EMU_EXCEPTION);
		CHECK_EQ(interp[n - 1].rip, XP_PAGE(0) + 0x300 + 14);
		CHECK_EQ(interp[n - 1].rsp, USER_RW + 0xF00);
		unsigned runs = n < m ? n : m;
		unsigned first = xp_first_difference(interp, compiled, runs);

		if (first < runs)
			printf("  max %u: run %u\n", max[k], first);
	}
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

#define CHAIN_PAGE 0x110000ull /* kernel code (identity), and a page table: PD[3] → here */
#define CHAIN_PTE (CHAIN_PAGE + 0x80) /* PTE 16 of that table: linear 0x610000 */
#define CHAIN_B (CHAIN_PTE - 2) /* mov rax, imm64 (the PTE); hlt */
#define CHAIN_A (CHAIN_PAGE + 0x100) /* mov rcx, [rdx]; jmp CHAIN_B */
#define CHAIN_PTE_VALUE (0x120000 | P | W)

/* A (kernel code) goes to B in its page, whose MOV's immediate is a page table entry that
 * A's load may mark accessed (the walk's write makes a new version of the page); one run of
 * A with RDX at `rdx`, from the chain's start, with `max` blocks and the attention flag. */
static int chain_run(uint64_t rdx, unsigned max, unsigned attention)
{
	int rc;

	cpu.s.rip = CHAIN_A;
	cpu.s.gpr[CPU_RAX] = 0;
	cpu.s.gpr[CPU_RDX] = rdx;
	cpu.chain_max = max;
	cpu.attention = attention;
	rc = emu_run(&cpu);
	cpu.attention = 0;
	return rc;
}

/* Linked compiled blocks check, at each successor, that the chain may go on (attention flag,
 * chain_max); a successor whose slot was given to another block since must not run its old
 * code, which calls handlers with the new block's instructions (the cache unchains it); and a
 * successor in the same page must not run after a write into that page (here by the page
 * walk of the block that jumps to it, which ends that block after the load: B's chain
 * entry from its own page does not compare the page's version). */
static void test_block_chain_checks(void)
{
	static const uint8_t a[] = { 0x48, 0x8B, 0x0A, 0xE9, 0x76, 0xFF, 0xFF, 0xFF };
	/* A2: jmp B2; B2 (+0x40): cpuid; hlt; the other block: mov ebx, 0x12345678; hlt */
	static const uint8_t a2[] = { 0xE9, 0x3B, 0xFF, 0xFF, 0xFF };
	static const uint8_t b2[] = { 0x0F, 0xA2, 0xF4 };
	static const uint8_t other[] = { 0xBB, 0x78, 0x56, 0x34, 0x12, 0xF4 };
	const uint64_t page2 = 0x130000, b2_at = page2 + 0x40, other_at = 0x140000;
	struct emu_jit *jit;
	uint32_t cpuid[4];
	uint64_t chained, interpreted;

	if (!kernel_with_jit(CHAIN_A))
		return;
	put64(PD + 24, CHAIN_PAGE | P | W);
	put64(CHAIN_PTE, CHAIN_PTE_VALUE);
	code(CHAIN_B, (const uint8_t[]){ 0x48, 0xB8 }, 2);
	code(CHAIN_PTE + 8, (const uint8_t[]){ 0xF4 }, 1);
	code(CHAIN_A, a, sizeof(a));
	/* A compiled, B compiled, A's exit linked to B. */
	CHECK_EQ(chain_run(CHAIN_PAGE, 4, 0), EMU_HALT);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], CHAIN_PTE_VALUE);
	/* The attention flag and the end of the chain stop it at B. */
	CHECK_EQ(chain_run(CHAIN_PAGE, 4, 1), EMU_OK);
	CHECK_EQ(cpu.s.rip, CHAIN_B);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0);
	CHECK_EQ(cpu.chain_ran, 1);
	CHECK_EQ(chain_run(CHAIN_PAGE, 1, 0), EMU_OK);
	CHECK_EQ(cpu.s.rip, CHAIN_B);
	CHECK_EQ(cpu.chain_ran, 1);
	CHECK_EQ(chain_run(CHAIN_PAGE, 2, 0), EMU_HALT);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], CHAIN_PTE_VALUE);
	CHECK_EQ(cpu.s.rip, CHAIN_PTE + 9);
	/* A's load of linear 0x610000 sets the accessed bit in B's immediate: that write by
	 * this CPU into a page with decoded code ends the chain after A (B's chain entry from
	 * A's page does not compare the version), and B is decoded again. */
	CHECK_EQ(chain_run(0x610000, 4, 0), EMU_OK);
	CHECK_EQ(cpu.s.rip, CHAIN_A + 3);
	CHECK_EQ(cpu.chain_ran, 1);
	CHECK_EQ(emu_run(&cpu), EMU_HALT);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], CHAIN_PTE_VALUE | 0x20);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 0); /* the page at 0x120000 */

	/* B2 replaced in its slot by another compiled block between two runs of A2 → B2: B2
	 * decoded first, then A2 (the next slot), so that after EMU_BLOCK_SLOTS - 2 more blocks
	 * the last of them takes B2's slot (an empty cache, whose slots are taken in order)
	 * and A2 and its link stay. Nothing compares the slot at B2's chain entry: forgetting
	 * B2 turns its entry into a return (emu_jit_unchain()), so the JIT stays during the
	 * fill, compiling blocks at their second entry (the fill's run once: no compiled code,
	 * no flush of A2's). */
	emu_cpu_destroy(&cpu);
	machine_reset();
	to_kernel_mode(b2_at);
	cpu.jit = jit = emu_jit_create(1 << 20, 1, true);
	CHECK(jit != NULL);
	if (!jit)
		return;
	code(page2 + 0x100, a2, sizeof(a2));
	code(b2_at, b2, sizeof(b2));
	code(other_at, other, sizeof(other));
	emu_cpuid(&cpu, 0, 0, cpuid);
	cpu.chain_max = 4;
	cpu.s.rip = b2_at;
	CHECK_EQ(emu_run(&cpu), EMU_HALT);
	for (unsigned run = 0; run < 3; run++) { /* A2 → B2 (cpuid; hlt); compiled, linked */
		cpu.s.rip = page2 + 0x100;
		cpu.s.gpr[CPU_RAX] = cpu.s.gpr[CPU_RCX] = cpu.s.gpr[CPU_RBX] = 0;
		CHECK_EQ(emu_run(&cpu), EMU_HALT);
		CHECK_EQ(cpu.s.rip, b2_at + 3);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], cpuid[1]);
	}
	CHECK_EQ(cpu.chain_ran, 3); /* A2, B2 (to CPUID), HLT: through the links */
	fill_blocks(&cpu, 0, EMU_BLOCK_SLOTS - 2);
	CHECK_EQ(emu_jit_flushes(jit), 0);
	for (unsigned run = 0; run < 2; run++) { /* into B2's slot, compiled at the second */
		cpu.s.rip = other_at;
		cpu.s.gpr[CPU_RBX] = 0;
		CHECK_EQ(emu_run(&cpu), EMU_HALT);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 0x12345678);
	}
	cpu.s.rip = page2 + 0x100;
	cpu.s.gpr[CPU_RAX] = cpu.s.gpr[CPU_RCX] = cpu.s.gpr[CPU_RBX] = 0;
	chained = cpu.blocks.chained;
	interpreted = cpu.blocks.interpreted;
	CHECK_EQ(emu_run(&cpu), EMU_HALT);
	CHECK_EQ(cpu.s.rip, b2_at + 3);
	CHECK_EQ(cpu.s.gpr[CPU_RBX], cpuid[1]);
	CHECK_EQ(cpu.blocks.chained, chained); /* B2 decoded again, through emu_run() */
	/* and compiled at that first entry: it was compiled before the cache forgot it */
	CHECK_EQ(cpu.blocks.interpreted, interpreted);
	cpu.chain_max = 0;
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* A same-page link to a block that the cache then forgets is undone (its exit goes back to its
 * stub, which tells emu_run() to link it again), so that the exit goes straight to the block's
 * new code once that is compiled: A (jmp B) keeps its slot while B's is given to another
 * block (an empty cache: B, a dummy, A, then EMU_BLOCK_SLOTS - 3 fill blocks and one more
 * take the slots in order); B decoded again takes the dummy's. */
static void test_chain_relinked_after_eviction(void)
{
	const uint64_t page = 0x1E0000, a_at = page + 0x100, b_at = page + 0x40;
	const uint64_t dummy_at = page + 0x200, other_at = 0x1F0000;
	uint64_t chained;

	emu_cpu_destroy(&cpu);
	machine_reset();
	to_kernel_mode(b_at);
	cpu.jit = emu_jit_create(1 << 20, 1, true);
	CHECK(cpu.jit != NULL);
	if (!cpu.jit)
		return;
	code(b_at, (const uint8_t[]){ 0xBB, 0x11, 0x11, 0x11, 0x11, 0xF4 }, 6);
	code(dummy_at, (const uint8_t[]){ 0xF4 }, 1);
	code(other_at, (const uint8_t[]){ 0xF4 }, 1);
	put_rel32(a_at, 0xE9, b_at);
	cpu.chain_max = 4;
	cpu.s.rip = b_at;
	CHECK_EQ(emu_run(&cpu), EMU_HALT);
	cpu.s.rip = dummy_at;
	CHECK_EQ(emu_run(&cpu), EMU_HALT);
	for (unsigned run = 0; run < 8; run++) {
		if (run == 3) { /* B's slot to another block */
			fill_blocks(&cpu, 0, EMU_BLOCK_SLOTS - 3);
			cpu.s.rip = other_at;
			CHECK_EQ(emu_run(&cpu), EMU_HALT);
			CHECK_EQ(emu_jit_flushes(cpu.jit), 0);
		}
		cpu.s.rip = a_at;
		cpu.s.gpr[CPU_RBX] = 0;
		chained = cpu.blocks.chained;
		CHECK_EQ(emu_run(&cpu), EMU_HALT);
		CHECK_EQ(cpu.s.rip, b_at + 6);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 0x11111111);
		/* 2: linked; 3: B's old code refused, B decoded again and compiled at once (it
		 * was compiled before the cache forgot it), A's exit linked again; from 4 on
		 * through the link */
		CHECK_EQ(cpu.blocks.chained, chained + (run == 2 || run >= 4));
	}
	cpu.chain_max = 0;
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

#define XMOD_PAGE 0x1B0000ull /* kernel code */
static uint32_t xmod_value;

/* CPUID as another CPU's write becomes visible to this one at it: the next block's MOV
 * immediate rewritten (not by this CPU: no block_exit), as cross-modifying code does before
 * the serialising instruction it has the running CPU execute. */
static void xmod_cpuid(struct emu_cpu *c, uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
	emu_cpuid(c, leaf, subleaf, out);
	if (xmod_value) {
		memcpy(ram + XMOD_PAGE + 3, &xmod_value, 4);
		memory_code_written(&code_pages, ram + XMOD_PAGE + 3, 4);
	}
}

/* A: cpuid; B (after it, in its page): mov ebx, imm32; hlt. Linked, A's exit goes to B's
 * entry that compares the page's version (after CPUID only: other exits within a page skip
 * it), so the new immediate is decoded; linked to the other entry, B's old code would run. */
static void test_chain_cpuid_serialises(void)
{
	static const uint8_t prog[] = { 0x0F, 0xA2, 0xBB, 0x11, 0x11, 0x11, 0x11, 0xF4 };
	static const struct emu_platform_ops ops = { .cpuid = xmod_cpuid };

	if (!kernel_with_jit(XMOD_PAGE))
		return;
	cpu.platform = &ops;
	code(XMOD_PAGE, prog, sizeof(prog));
	cpu.chain_max = 4;
	xmod_value = 0;
	for (unsigned run = 0; run < 4; run++) {
		if (run == 3)
			xmod_value = 0x22222222;
		cpu.s.rip = XMOD_PAGE;
		cpu.s.gpr[CPU_RAX] = cpu.s.gpr[CPU_RCX] = 0;
		CHECK_EQ(emu_run(&cpu), EMU_HALT);
		CHECK_EQ(cpu.s.rip, XMOD_PAGE + 8);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], run == 3 ? 0x22222222 : 0x11111111);
		if (run == 2) /* A to B through the link */
			CHECK_EQ(cpu.chain_ran, 2);
	}
	xmod_value = 0;
	cpu.platform = NULL;
	cpu.chain_max = 0;
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

#define LIMIT_PAGE 0x1C0000ull /* kernel code */
#define LIMIT_DATA 0x1D0000ull /* kernel data */

/* A compiled store as the last instruction of a block (stopped at its size limit: 39 NOPs and
 * mov [rdi], al) into its own page rewrites the next block (inc ecx -> inc edx; hlt), which
 * the block's exit is linked to in that page (entered past the version check): the exit must
 * look at block_exit after such a store and end the chain. The first runs store elsewhere,
 * so that the link is made. */
static void test_chain_store_at_block_limit(void)
{
	uint8_t prog[EMU_BLOCK_MAX_INSNS + 1 + 3];

	memset(prog, 0x90, EMU_BLOCK_MAX_INSNS - 1);
	memcpy(prog + EMU_BLOCK_MAX_INSNS - 1, (const uint8_t[]){ 0x88, 0x07, 0xFF, 0xC1, 0xF4 },
	       5);
	if (!kernel_with_jit(LIMIT_PAGE))
		return;
	code(LIMIT_PAGE, prog, sizeof(prog));
	cpu.chain_max = 4;
	for (unsigned run = 0; run < 4; run++) {
		cpu.s.rip = LIMIT_PAGE;
		cpu.s.gpr[CPU_RAX] = 0xC2;
		cpu.s.gpr[CPU_RCX] = cpu.s.gpr[CPU_RDX] = 0;
		cpu.s.gpr[CPU_RDI] = run < 3 ? LIMIT_DATA : LIMIT_PAGE + EMU_BLOCK_MAX_INSNS + 2;
		for (unsigned i = 0; i < 4 && cpu.s.rip != LIMIT_PAGE + sizeof(prog); i++)
			CHECK(emu_run(&cpu) == EMU_OK || cpu.s.rip == LIMIT_PAGE + sizeof(prog));
		CHECK_EQ(cpu.s.rip, LIMIT_PAGE + sizeof(prog));
		CHECK_EQ(cpu.s.gpr[CPU_RCX], run < 3 ? 1 : 0);
		CHECK_EQ(cpu.s.gpr[CPU_RDX], run < 3 ? 0 : 1);
		if (run == 2) /* the whole program through the link */
			CHECK_EQ(cpu.chain_ran, 2);
	}
	cpu.chain_max = 0;
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* The same blocks with every block compiled at its first entry (jit.c): code patched behind
 * the CPU's back or by the block itself runs as new code, never the old compiled code; a
 * remap follows the TLB; the MMIO exit and its restart leave the state as the interpreter. */
static void test_blocks_compiled(void)
{
	cpu.jit = emu_jit_create(1 << 20, 0, true);
	CHECK(cpu.jit != NULL);
	if (!cpu.jit)
		return;
	test_blocks();
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* Compiled loads of two pages that share a TLB index (linear 0x101000, mapped to phys 0x103000,
 * and BIG_1G + 0x101000, phys 0x101000) in a loop: after one walk each, the one not in the
 * first way comes from the second way's check in the cold code, inline (no handler call, no
 * swap in mmu.c: way2_hits stays 0), with that page's own bytes; after a remap and a CR3
 * write the loads see the new page. */
static void test_jit_tlb_second_way(void)
{
	/* loop: mov rax, [rsi]; add rcx, rax; mov rax, [rdi]; add rcx, rax; dec edx; jnz loop; hlt */
	static const uint8_t prog[] = { 0x48, 0x8B, 0x06, 0x48, 0x01, 0xC1, 0x48, 0x8B, 0x07,
					0x48, 0x01, 0xC1, 0xFF, 0xCA, 0x75, 0xF0, 0xF4 };
	const uint64_t a = 0x101000, b = BIG_1G + 0x101000;

	if (!kernel_with_jit(0x50000))
		return;
	put64(PT_LOW + 8 * (a >> 12), 0x103000 | P | W);
	put64(0x103000, 0x3300);
	put64(0x101000, 0x11);
	put64(0x102000, 0x220000);
	for (unsigned round = 0; round < 2; round++) {
		uint64_t walks = cpu.tlb.misses_read, hits = cpu.tlb.way2_hits;
		int rc = EMU_OK;

		code(0x50000, prog, sizeof(prog));
		cpu.s.gpr[CPU_RSI] = a;
		cpu.s.gpr[CPU_RDI] = b;
		cpu.s.gpr[CPU_RCX] = 0;
		cpu.s.gpr[CPU_RDX] = 100;
		for (unsigned i = 0; i < 1000 && rc == EMU_OK; i++)
			rc = emu_run(&cpu);
		CHECK_EQ(rc, EMU_HALT);
		CHECK_EQ(cpu.s.gpr[CPU_RCX], 100 * ((round ? 0x220000 : 0x3300) + 0x11));
		CHECK_EQ(cpu.tlb.misses_read, walks + 2);
		CHECK_EQ(cpu.tlb.way2_hits, hits);
		/* a to phys 0x102000, then a CR3 write */
		put64(PT_LOW + 8 * (a >> 12), 0x102000 | P | W);
		emu_tlb_flush(&cpu, false);
	}
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* 16-bit shifts by an immediate compiled (jit.c's shift templates): bits 16-63 of the register
 * kept, the flags as the handler leaves them, and nothing but the six arithmetic flags
 * changed in RFLAGS (the OF worked out from the whole register once spilled its upper bits
 * into IOPL, NT, RF... which test_emu_diff.c does not compare). */
static void test_jit_shift_16(void)
{
	static const uint8_t prog[] = {
		0x66, 0xD1, 0xE8, /* shr ax, 1 */
		0x66, 0xC1, 0xE3, 0x03, /* shl bx, 3 */
		0x66, 0xC1, 0xF9, 0x04, /* sar cx, 4 */
		0xEB, 0xFE, /* jmp $ */
	};
	uint64_t other = EMU_FLAG_FIXED1 | EMU_FLAG_IF;

	cpu.jit = emu_jit_create(1 << 20, 0, true);
	CHECK(cpu.jit != NULL);
	if (!cpu.jit)
		return;
	for (unsigned last = 0; last < 3; last++) {
		static const uint64_t want[3] = {
			EMU_FLAG_CF | EMU_FLAG_OF | EMU_FLAG_PF, /* 0x8001 >> 1 = 0x4000 */
			EMU_FLAG_CF | EMU_FLAG_OF | EMU_FLAG_PF | EMU_FLAG_ZF, /* 0xe000 << 3 = 0 */
			EMU_FLAG_SF | EMU_FLAG_PF, /* 0x8f00 >> 4 (signed) = 0xf8f0 */
		};
		uint8_t p[sizeof(prog)];

		machine_reset();
		/* each shift in turn the last before the jmp, so that its flags are the live ones */
		memset(p, 0x90, sizeof(p));
		memcpy(p + 11 - (last == 0 ? 3 : last == 1 ? 7 : 11), prog, 3 + 4 * last);
		memcpy(p + 11, prog + 11, 2);
		code(USER_RW, p, sizeof(p));
		cpu.s.gpr[CPU_RAX] = 0xffffffffffff8001ull;
		cpu.s.gpr[CPU_RBX] = 0x123456789abce000ull;
		cpu.s.gpr[CPU_RCX] = 0xfedcba9876548f00ull;
		for (unsigned i = 0; i < 4 && cpu.s.rip != USER_RW + 11; i++)
			CHECK_EQ(emu_run(&cpu), EMU_OK);
		CHECK_EQ(cpu.s.rip, USER_RW + 11);
		CHECK_EQ(cpu.s.gpr[CPU_RAX], 0xffffffffffff4000ull);
		if (last >= 1)
			CHECK_EQ(cpu.s.gpr[CPU_RBX], 0x123456789abc0000ull);
		if (last >= 2)
			CHECK_EQ(cpu.s.gpr[CPU_RCX], 0xfedcba987654f8f0ull);
		CHECK_EQ(emu_flags_get(&cpu), other | want[last]);
	}
	CHECK(cpu.blocks.compiled > 0);
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* Loads and stores compiled with the inline TLB path (jit.c) end exactly as the interpreter's
 * handlers: the same registers, RIP, count, exception (#PF on a read-only, not-present or
 * supervisor page, a write crossing onto a read-only page), MMIO accesses, and a store into the
 * block's own page or own code. Each case runs twice, the second time with the TLB warm, so
 * the inline path is taken; the first compares the slow path. */
struct jit_mem_case {
	uint64_t src, dst;
	bool kernel;
};

struct jit_mem_outcome {
	int rc[8];
	uint64_t gpr[16], rip, instructions, cr2;
	uint8_t vector, has_error, pad[2];
	uint32_t error;
	unsigned mmio_reads, mmio_writes;
	uint8_t page[4096];
};

#define JIT_MEM_END (USER_RW + 24)

static void jit_mem_run(const struct jit_mem_case *k, struct jit_mem_outcome *o)
{
	memset(o, 0, sizeof(*o));
	for (unsigned r = 0; r < 16; r++)
		cpu.s.gpr[r] = 0x1111111111111111ull * r;
	cpu.s.gpr[CPU_RSI] = k->src;
	cpu.s.gpr[CPU_RDI] = k->dst;
	cpu.s.rip = USER_RW;
	mmio_reads = mmio_writes = 0;
	for (unsigned i = 0; i < 8; i++) {
		o->rc[i] = emu_run(&cpu) + 1;
		if (o->rc[i] != EMU_OK + 1 || cpu.s.rip == JIT_MEM_END)
			break;
	}
	memcpy(o->gpr, cpu.s.gpr, sizeof(o->gpr));
	o->rip = cpu.s.rip;
	o->instructions = cpu.instructions;
	o->vector = cpu.exc.vector;
	o->has_error = cpu.exc.has_error_code;
	o->error = cpu.exc.error_code;
	o->cr2 = cpu.exc.cr2;
	o->mmio_reads = mmio_reads;
	o->mmio_writes = mmio_writes;
	memcpy(o->page, ram + USER_RW, sizeof(o->page));
}

static void jit_mem_cases(struct emu_jit *jit, struct jit_mem_outcome *out, unsigned *n)
{
	/* mov rax, [rsi]; mov [rdi], rax; movzx ecx, byte [rsi + 1]; movsx rdx, word [rsi + 3];
	 * movsxd r8, dword [rsi + 5]; mov [rdi + 8], ecx; jmp $ */
	static const uint8_t prog[] = { 0x48, 0x8B, 0x06, 0x48, 0x89, 0x07, 0x0F, 0xB6, 0x4E,
					0x01, 0x48, 0x0F, 0xBF, 0x56, 0x03, 0x4C, 0x63, 0x46,
					0x05, 0x89, 0x4F, 0x08, 0x90, 0x90, 0xEB, 0xFE };
	static const struct jit_mem_case cases[] = {
		{ USER_RW + 0x800, USER_RW + 0x900, false }, /* plain RAM */
		{ USER_RW + 0xFFC, USER_RW + 0x900, false }, /* loads crossing onto USER_RO */
		{ USER_RW + 0x800, USER_RW + 0xFFC, false }, /* a store crossing onto it: #PF */
		{ USER_RO + 0x10, USER_RW + 0x900, false },
		{ USER_RW + 0x800, USER_RO + 0x10, false }, /* #PF, write */
		{ NOT_PRESENT + 8, USER_RW + 0x900, false },
		{ USER_MMIO + 8, USER_RW + 0x900, false },
		{ USER_RW + 0x800, USER_MMIO + 0x10, false },
		{ SUPERVISOR_ONLY + 8, USER_RW + 0x900, false }, /* #PF from user mode */
		{ USER_RW + 0x800, USER_RW + 0x40, false }, /* the block's own page */
		{ USER_RW + 0x808, USER_RW + 0x9, false }, /* its own code: NOPs over MOVSX... */
		{ SUPERVISOR_ONLY + 8, USER_RW + 0x900, true }, /* CPL 0 */
	};
	unsigned k = 0;

	machine_reset();
	cpu.jit = jit;
	memcpy(ram + USER_RW, prog, sizeof(prog));
	for (unsigned i = 0x800; i < 0x2000; i++)
		ram[USER_RW + i] = (uint8_t)(i * 37 + 11);
	memset(ram + USER_RW + 0x808, 0x90, 16);
	for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		if (cases[c].kernel && cpu.cpl != 0)
			to_kernel_mode(USER_RW);
		for (unsigned twice = 0; twice < 2; twice++)
			jit_mem_run(&cases[c], &out[k++]);
	}
	*n = k;
	cpu.jit = NULL;
}

static void test_jit_memory_paths(void)
{
	static struct jit_mem_outcome interp[32], compiled[32];
	struct emu_jit *jit = emu_jit_create(1 << 20, 0, true);
	unsigned n = 0, m = 0;

	CHECK(jit != NULL);
	if (!jit)
		return;
	jit_mem_cases(NULL, interp, &n);
	jit_mem_cases(jit, compiled, &m);
	CHECK_EQ(n, m);
	for (unsigned i = 0; i < n && i < m; i++) {
		if (memcmp(&interp[i], &compiled[i], sizeof(interp[i]))) {
			printf("  case %u (run %u): compiled %s differs: rc %d/%d rip %llx/%llx "
			       "vector %u/%u rax %llx/%llx\n",
			       i / 2, i % 2,
			       memcmp(interp[i].page, compiled[i].page, 4096) ? "(page)" : "",
			       interp[i].rc[0], compiled[i].rc[0],
			       (unsigned long long)interp[i].rip,
			       (unsigned long long)compiled[i].rip, interp[i].vector,
			       compiled[i].vector, (unsigned long long)interp[i].gpr[0],
			       (unsigned long long)compiled[i].gpr[0]);
			for (unsigned r = 0; r < 16; r++)
				if (interp[i].gpr[r] != compiled[i].gpr[r])
					printf("    r%u %llx/%llx\n", r,
					       (unsigned long long)interp[i].gpr[r],
					       (unsigned long long)compiled[i].gpr[r]);
			printf("    instructions %llu/%llu mmio %u/%u %u/%u\n",
			       (unsigned long long)interp[i].instructions,
			       (unsigned long long)compiled[i].instructions, interp[i].mmio_reads,
			       compiled[i].mmio_reads, interp[i].mmio_writes,
			       compiled[i].mmio_writes);
			test_failed_checks++;
		}
	}
	/* The interpreter's own outcomes are what they must be, for the cases that say most. */
	CHECK_EQ(interp[1].rip, JIT_MEM_END); /* plain RAM, warm */
	CHECK_EQ(interp[5].rc[0], EMU_EXCEPTION + 1); /* store crossing onto USER_RO */
	CHECK_EQ(interp[5].vector, EMU_VEC_PF);
	CHECK_EQ(interp[9].vector, EMU_VEC_PF);
	CHECK(interp[15].mmio_writes > 0);
	CHECK_EQ(interp[20].page[9], 0x90); /* its own code was patched (was 0x01) */
	emu_jit_destroy(jit);
}

/* The byte at linear `la` of the crossing test's mapping: XP_PAGE(0) is itself, XP_PAGE(1)
 * maps the physical page XP_PAGE(4). */
static uint8_t tlb_cross_byte(uint64_t la)
{
	return la < XP_PAGE(1) ? ram[la] : ram[XP_PAGE(4) + (la - XP_PAGE(1))];
}

static uint64_t tlb_cross_value(uint64_t la, unsigned len)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < len; i++)
		v |= (uint64_t)tlb_cross_byte(la + i) << (8 * i);
	return v;
}

/* The inline TLB lookup (jit.c) compares the tag of an access's last byte: an access that
 * crosses into a linear page mapped elsewhere than the next physical page takes the slow path
 * and reads and writes the bytes the page tables name (a lookup that checked only the first
 * byte would read and write the next physical page's, XP_PAGE(1)'s, here 0xEE); one that ends
 * at a page's last byte is no crossing; an MMIO page's entry (no host address) never serves
 * the fast path, even when it is in the TLB. Several passes of one compiled block, the TLB
 * warm after the first: registers, memory, RIP and the count as the page tables say. */
static void test_jit_tlb_page_crossing(void)
{
	/* mov rax, [rsi]; mov ecx, [rsi + 2]; movzx edx, word [rsi + 3]; mov r8, [rsi - 4];
	 * mov [rdi], r9; mov r10, [r11]; jmp $ */
	static const uint8_t prog[] = { 0x48, 0x8B, 0x06, 0x8B, 0x4E, 0x02, 0x0F, 0xB7,
					0x56, 0x03, 0x4C, 0x8B, 0x46, 0xFC, 0x4C, 0x89,
					0x0F, 0x4D, 0x8B, 0x13, 0xEB, 0xFE };
	const uint64_t code_la = XP_PAGE(2) + 0x100, end = code_la + sizeof(prog) - 2;
	const uint64_t r9 = 0x0123456789ABCDEFull;

	xp_reset(true);
	if (!cpu.jit)
		return;
	xp_map(1, XP_PAGE(4), P | W | U);
	for (unsigned i = 0; i < 4096; i++) {
		ram[XP_PAGE(0) + i] = (uint8_t)(i * 7 + 1);
		ram[XP_PAGE(4) + i] = (uint8_t)(0x80 + i);
	}
	memset(ram + XP_PAGE(1), 0xEE, 4096);
	code(code_la, prog, sizeof(prog));
	for (unsigned pass = 0; pass < 4; pass++) {
		uint64_t before = cpu.instructions, compiled = cpu.blocks.compiled;
		uint64_t want[4] = { tlb_cross_value(XP_PAGE(1) - 4, 8),
				     tlb_cross_value(XP_PAGE(1) - 2, 4),
				     tlb_cross_value(XP_PAGE(1) - 1, 2),
				     tlb_cross_value(XP_PAGE(1) - 8, 8) }; /* before the store */
		unsigned reads = mmio_reads;

		cpu.s.gpr[CPU_RSI] = XP_PAGE(1) - 4;
		cpu.s.gpr[CPU_RDI] = XP_PAGE(1) - 3 - (pass & 1); /* 3 or 4 bytes, then the rest */
		cpu.s.gpr[CPU_R9] = r9 + pass;
		cpu.s.gpr[CPU_R11] = USER_MMIO + 8;
		CHECK_EQ(xp_run(code_la, 1), EMU_OK);
		CHECK_EQ(cpu.blocks.compiled - compiled, 1);
		CHECK_EQ(cpu.s.rip, end); /* the MMIO read ends the block after it */
		CHECK_EQ(cpu.instructions - before, 6);
		CHECK_EQ(cpu.s.gpr[CPU_RAX], want[0]);
		CHECK_EQ(cpu.s.gpr[CPU_RCX], want[1]);
		CHECK_EQ(cpu.s.gpr[CPU_RDX], want[2]);
		CHECK_EQ(cpu.s.gpr[CPU_R8], want[3]);
		CHECK_EQ(tlb_cross_value(cpu.s.gpr[CPU_RDI], 8), r9 + pass);
		CHECK_EQ(cpu.s.gpr[CPU_R10], 0xABABABABABABABABull);
		CHECK_EQ(mmio_reads - reads, 1);
		CHECK_EQ(ram[XP_PAGE(1)], 0xEE); /* the next physical page: untouched */
		CHECK_EQ(ram[XP_PAGE(1) + 4], 0xEE);
	}
	/* The MMIO page's entry is in the TLB, as a page without a host address. */
	CHECK(emu_tlb_fast(&cpu, cpu.tlb.read, USER_MMIO + 8, 8) == NULL);
	CHECK(emu_tlb_fast(&cpu, cpu.tlb.read, XP_PAGE(1) - 8, 8) == ram + XP_PAGE(1) - 8);
	CHECK(emu_tlb_fast(&cpu, cpu.tlb.read, XP_PAGE(1) - 4, 8) == NULL); /* crossing */
	CHECK(emu_tlb_fast(&cpu, cpu.tlb.read, XP_PAGE(1), 8) == ram + XP_PAGE(4));
	cpu.chain_max = 0;
	emu_jit_destroy(cpu.jit);
	cpu.jit = NULL;
}

/* A page-crossing instruction (mov eax, imm32 whose last immediate byte is on the next page)
 * in a hot loop of kernel code, reached by a jump from its own page or by a RET (the return
 * prediction): L: add ebx, eax; dec ecx; jz done; then either jmp X (rel8) or five NOPs and
 * call f (f: ret), X: the MOV across the page, then jmp L on the next page; done: hlt. */
#define CROSS_PAGE 0x180000ull /* the MOV's first page (kernel code, identity) */
#define CROSS_NEXT (CROSS_PAGE + 0x1000) /* the next linear page */
#define CROSS_OTHER 0x190000ull /* another physical page for it */
#define CROSS_LOOP (CROSS_PAGE + 0xFE8)
#define CROSS_MOV (CROSS_PAGE + 0xFFC)
#define CROSS_DONE (CROSS_PAGE + 0x100)
#define CROSS_RET 0x183040ull

/* The next page's bytes at physical `phys`: the MOV's last immediate byte, then jmp L. */
static void cross_next_page(uint64_t phys, uint8_t imm3)
{
	uint8_t b[6] = { imm3, 0xE9 };
	int32_t rel = (int32_t)(CROSS_LOOP - (CROSS_NEXT + 6));

	memcpy(b + 2, &rel, 4);
	memcpy(ram + phys, b, sizeof(b));
	memory_code_written(&code_pages, ram + phys, sizeof(b));
}

static void cross_program(bool via_ret)
{
	static const uint8_t loop[] = { 0x01, 0xC3, 0xFF, 0xC9, 0x0F, 0x84 };
	static const uint8_t jump[] = {
		0xEB, 0x08, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC
	};
	static const uint8_t mov[] = { 0xB8, 0x01, 0x02, 0x03 };
	int32_t rel = (int32_t)(CROSS_DONE - (CROSS_LOOP + 10));
	uint8_t b[10];

	code(CROSS_LOOP, loop, sizeof(loop));
	memcpy(b, &rel, 4);
	code(CROSS_LOOP + 6, b, 4);
	if (via_ret) {
		memset(b, 0x90, 5);
		code(CROSS_LOOP + 10, b, 5);
		put_rel32(CROSS_LOOP + 15, 0xE8, CROSS_RET);
	} else {
		code(CROSS_LOOP + 10, jump, sizeof(jump));
	}
	code(CROSS_MOV, mov, sizeof(mov));
	code(CROSS_DONE, (const uint8_t[]){ 0xF4 }, 1);
	code(CROSS_RET, (const uint8_t[]){ 0xC3 }, 1);
	cross_next_page(CROSS_NEXT, 0x04);
}

/* `n` passes of the loop from L with EAX = EBX = 0 (EBX then holds n - 1 times the MOV's
 * immediate), to the HLT or a fault; *interpreted: blocks emu_run() ran interpreted. */
static int cross_loop(unsigned n, uint64_t *interpreted)
{
	uint64_t before = cpu.blocks.interpreted;
	int rc = EMU_OK;

	cpu.s.rip = CROSS_LOOP;
	cpu.s.gpr[CPU_RAX] = cpu.s.gpr[CPU_RBX] = 0;
	cpu.s.gpr[CPU_RCX] = n;
	cpu.chain_max = 4096;
	for (unsigned i = 0; i < 64 && rc == EMU_OK; i++)
		rc = emu_run(&cpu);
	if (interpreted)
		*interpreted = cpu.blocks.interpreted - before;
	return rc;
}

/* The block of the crossing instruction runs compiled, and chains go through it (its code
 * checks the next page at its chain entry, from either entry point: its own page's blocks
 * vouch for that page only): its bytes on the next page rewritten (as by DMA), the next page
 * remapped (the old bytes until INVLPG, the new ones after it; back after a CR3 write), its
 * TLB entry in the second way, and the page not present (#PF on it, nothing changed). In
 * each case L, the first block of each emu_run() pass, is checked by emu_run() (its page's
 * version), and the MOV only by its chain entry. */
static void test_jit_cross_block_chained(void)
{
	for (unsigned via_ret = 0; via_ret < 2; via_ret++) {
		const uint64_t pte = PT_LOW + 8 * (CROSS_NEXT >> 12);
		uint64_t interpreted, walks, chained;
		const uint8_t *host;
		unsigned avail;
		uint64_t gpa;

		if (!kernel_with_jit(CROSS_LOOP))
			return;
		cross_program(via_ret);
		CHECK_EQ(cross_loop(3, NULL), EMU_HALT); /* compiled, linked */
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 2 * 0x04030201u);
		/* Hot: nothing interpreted, chained through the MOV */
		chained = cpu.blocks.chained;
		CHECK_EQ(cross_loop(200, &interpreted), EMU_HALT);
		CHECK_EQ(cpu.s.rip, CROSS_DONE + 1);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], (uint32_t)(199 * 0x04030201u));
		CHECK_EQ(interpreted, 0);
		CHECK(cpu.blocks.chained - chained >= 199 * 3);
		/* The next page's byte rewritten: the new immediate from the first pass on */
		cross_next_page(CROSS_NEXT, 0x14);
		CHECK_EQ(cross_loop(3, NULL), EMU_HALT);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 2 * 0x14030201u);
		CHECK_EQ(cross_loop(50, &interpreted), EMU_HALT);
		CHECK_EQ(interpreted, 0);
		/* Remapped: the old page while the TLB holds it, the new one after INVLPG, the old
		 * one again after a CR3 write */
		cross_next_page(CROSS_OTHER, 0x24);
		put64(pte, CROSS_OTHER | P | W);
		CHECK_EQ(cross_loop(3, NULL), EMU_HALT);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 2 * 0x14030201u);
		emu_tlb_flush_page(&cpu, CROSS_NEXT);
		CHECK_EQ(cross_loop(3, NULL), EMU_HALT);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 2 * 0x24030201u);
		put64(pte, CROSS_NEXT | P | W);
		emu_tlb_flush(&cpu, false);
		CHECK_EQ(cross_loop(3, NULL), EMU_HALT);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 2 * 0x14030201u);
		/* The next page's fetch entry moved to the second way by a fetch of a page at the
		 * same index (BIG_1G + the page: the 1 GiB page, physical 0): the MOV's chain entry
		 * finds it there, so nothing goes back to emu_run() (whose fetch would swap the
		 * ways back) */
		CHECK_EQ(cross_loop(3, NULL), EMU_HALT);
		walks = cpu.tlb.way2_hits;
		CHECK_EQ(cpu.mem->fetch(&cpu, BIG_1G + CROSS_NEXT, &host, &avail, &gpa), EMU_OK);
		CHECK_EQ(gpa, CROSS_NEXT);
		CHECK_EQ(cross_loop(20, &interpreted), EMU_HALT);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 19 * 0x14030201u);
		CHECK_EQ(cpu.tlb.way2_hits, walks);
		/* Not present: #PF on the next page (a supervisor fetch: I, not P), the MOV not run */
		put64(pte, 0);
		emu_tlb_flush_page(&cpu, CROSS_NEXT);
		CHECK_EQ(cross_loop(3, NULL), EMU_EXCEPTION);
		CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
		CHECK_EQ(cpu.exc.error_code, 0x10);
		CHECK_EQ(cpu.exc.cr2, CROSS_NEXT);
		CHECK_EQ(cpu.s.rip, CROSS_MOV);
		CHECK_EQ(cpu.s.gpr[CPU_RAX], 0);
		CHECK_EQ(cpu.s.gpr[CPU_RCX], 2);
		/* Present again: the loop runs compiled again */
		put64(pte, CROSS_NEXT | P | W);
		emu_tlb_flush_page(&cpu, CROSS_NEXT);
		CHECK_EQ(cross_loop(3, NULL), EMU_HALT);
		CHECK_EQ(cross_loop(50, &interpreted), EMU_HALT);
		CHECK_EQ(cpu.s.gpr[CPU_RBX], 49 * 0x14030201u);
		CHECK_EQ(interpreted, 0);
		cpu.chain_max = 0;
		emu_jit_destroy(cpu.jit);
		cpu.jit = NULL;
	}
}

/* ---- the JIT's templates against the interpreter's handlers, with random inputs ---- */

static uint64_t tmpl_rng = 0x9E3779B97F4A7C15ull;

static uint64_t tmpl_rnd64(void)
{
	tmpl_rng ^= tmpl_rng << 13;
	tmpl_rng ^= tmpl_rng >> 7;
	tmpl_rng ^= tmpl_rng << 17;
	return tmpl_rng;
}

static unsigned tmpl_rnd(unsigned n)
{
	return (unsigned)(tmpl_rnd64() % n);
}

#define TMPL_DATA 0x206000 /* a user RW page beside the code's (the next one is not present) */

/* An address for a memory operand: mostly the data page (often near its end, so that some
 * accesses cross onto the not-present page), sometimes a page that faults (read-only for a
 * write, supervisor-only, not present), MMIO, the code's own page or a non-canonical one. */
static uint64_t tmpl_address(void)
{
	static const uint64_t special[] = { USER_RO,   SUPERVISOR_ONLY, NOT_PRESENT,
					    USER_MMIO, USER_RW + 0x800, 0x8000000000000000ull };
	unsigned off = tmpl_rnd(2) ? tmpl_rnd(4096 - 64) : 4096 - 16 + tmpl_rnd(16);

	if (tmpl_rnd(8))
		return TMPL_DATA + off;
	return special[tmpl_rnd(sizeof(special) / sizeof(special[0]))] + (off & 0x7f8);
}

/* Registers: RSI and RDI hold addresses (a case's memory operands use them as bases), the
 * rest random; only PUSH/POP (and CALL/RET) use RSP. */
static unsigned tmpl_reg(void)
{
	unsigned r;

	do
		r = tmpl_rnd(16);
	while (r == CPU_RSP);
	return r;
}

/* Prefixes for operand size `size` with ModRM reg `reg`, rm/base `rm`: 66, REX (always for
 * byte forms, so that registers 4-7 are SPL..DIL, as fast.c selects them). */
static uint8_t *tmpl_prefix(uint8_t *p, unsigned size, unsigned reg, unsigned rm)
{
	if (size == 2)
		*p++ = 0x66;
	if (size == 1 || size == 8 || reg >= 8 || rm >= 8)
		*p++ = (uint8_t)(0x40 | (size == 8 ? 8 : 0) | (reg >= 8 ? 4 : 0) |
				 (rm >= 8 ? 1 : 0));
	return p;
}

/* ModRM for [base + disp8] (base RSI or RDI) or a register. */
static uint8_t *tmpl_modrm(uint8_t *p, unsigned reg, bool mem, unsigned rm)
{
	if (!mem) {
		*p++ = (uint8_t)(0xC0 | (reg & 7) << 3 | (rm & 7));
		return p;
	}
	*p++ = (uint8_t)(0x40 | (reg & 7) << 3 | (rm & 7));
	*p++ = (uint8_t)(tmpl_rnd(4) ? tmpl_rnd(32) : 0);
	return p;
}

static uint8_t *tmpl_imm(uint8_t *p, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		*p++ = (uint8_t)tmpl_rnd64();
	return p;
}

/* One instruction of the forms the templates cover. */
static uint8_t *tmpl_insn(uint8_t *p)
{
	uint8_t *q;
	static const unsigned sizes[] = { 1, 2, 4, 8 };
	unsigned size = sizes[tmpl_rnd(4)], reg = tmpl_reg(),
		 base = tmpl_rnd(2) ? CPU_RSI : CPU_RDI;
	unsigned op = tmpl_rnd(8), byte = size == 1 ? 0 : 1,
		 isz = size == 1   ? 1
		       : size == 2 ? 2
				   : 4;
	bool mem = tmpl_rnd(4) != 0;
	unsigned rm = mem ? base : tmpl_reg();

	switch (tmpl_rnd(17)) {
	case 0: /* ALU r/m, r and r, r/m */
		p = tmpl_prefix(p, size, reg, rm);
		*p++ = (uint8_t)(op << 3 | tmpl_rnd(2) << 1 | byte);
		return tmpl_modrm(p, reg, mem, rm);
	case 1: /* ALU r/m, imm (80, 81, 83) */
		p = tmpl_prefix(p, size, 0, rm);
		*p++ = size == 1 ? 0x80 : tmpl_rnd(2) ? 0x83 : 0x81;
		p = tmpl_modrm(p, op, mem, rm);
		return tmpl_imm(p, p[-1 - (mem ? 1 : 0)] == 0x83 ? 1 : isz);
	case 2: /* TEST r/m, r; TEST r/m, imm; TEST accumulator, imm */
		p = tmpl_prefix(p, size, reg, rm);
		if (tmpl_rnd(3) == 0) {
			*p++ = (uint8_t)(0x84 | byte);
			return tmpl_modrm(p, reg, mem, rm);
		}
		if (tmpl_rnd(2)) {
			*p++ = (uint8_t)(0xA8 | byte);
			return tmpl_imm(p, isz);
		}
		*p++ = (uint8_t)(0xF6 | byte);
		p = tmpl_modrm(p, 0, mem, rm);
		return tmpl_imm(p, isz);
	case 3: /* INC/DEC r/m */
		p = tmpl_prefix(p, size, 0, rm);
		*p++ = (uint8_t)(0xFE | byte);
		return tmpl_modrm(p, tmpl_rnd(2), mem, rm);
	case 4: /* MOV r/m, r; MOV r, r/m */
		p = tmpl_prefix(p, size, reg, rm);
		*p++ = (uint8_t)(0x88 | tmpl_rnd(2) << 1 | byte);
		return tmpl_modrm(p, reg, mem, rm);
	case 5: /* MOV r/m, imm */
		p = tmpl_prefix(p, size, 0, rm);
		*p++ = (uint8_t)(0xC6 | byte);
		p = tmpl_modrm(p, 0, mem, rm);
		return tmpl_imm(p, isz);
	case 6: /* MOVZX/MOVSX r, r/m8|16; MOVSXD r, r/m32 */
		if (tmpl_rnd(4) == 0) {
			p = tmpl_prefix(p, 8, reg, rm);
			*p++ = 0x63;
			return tmpl_modrm(p, reg, mem, rm);
		}
		q = p;
		p = tmpl_prefix(p, size == 1 ? 4 : size, reg, rm);
		if (!mem && p == q) /* no prefix (p[-1] is not this instruction's) */
			*p++ = 0x40; /* byte sources 4-7 are SPL..DIL */
		*p++ = 0x0F;
		*p++ = (uint8_t)(0xB6 | tmpl_rnd(2) | tmpl_rnd(2) << 3);
		return tmpl_modrm(p, reg, mem, rm);
	case 7: /* PUSH r, POP r (RSP too: PUSH RSP stores the old value, POP RSP keeps the popped) */
		if (tmpl_rnd(8) == 0)
			reg = CPU_RSP;
		if (reg >= 8)
			*p++ = 0x41;
		*p++ = (uint8_t)((tmpl_rnd(2) ? 0x50 : 0x58) | (reg & 7));
		return p;
	case 8: /* NOPs: 90, NOP r/m (no access, whatever the address), ENDBR64, PREFETCH */
		switch (tmpl_rnd(4)) {
		case 0:
			*p++ = 0x90;
			return p;
		case 1:
			*p++ = 0x0F;
			*p++ = 0x1F;
			return tmpl_modrm(p, 0, true, base);
		case 2:
			return memcpy(p, (const uint8_t[]){ 0xF3, 0x0F, 0x1E, 0xFA }, 4), p + 4;
		default:
			*p++ = 0x0F;
			*p++ = 0x18;
			return tmpl_modrm(p, 1, true, base);
		}
	case 9: /* SETcc r/m8 */
		p = tmpl_prefix(p, 1, 0, rm);
		*p++ = 0x0F;
		*p++ = (uint8_t)(0x90 | tmpl_rnd(16));
		return tmpl_modrm(p, 0, mem, rm);
	case 10: /* CMOVcc r, r/m */
		p = tmpl_prefix(p, size == 1 ? 8 : size, reg, rm);
		*p++ = 0x0F;
		*p++ = (uint8_t)(0x40 | tmpl_rnd(16));
		return tmpl_modrm(p, reg, mem, rm);
	case 11: /* ADC/SBB r, r after a known producer */
		p = tmpl_prefix(p, size, reg, rm);
		*p++ = (uint8_t)((tmpl_rnd(2) ? 0x10 : 0x18) | byte);
		return tmpl_modrm(p, reg, false, tmpl_reg());
	case 13: /* IMUL r, r (0F AF) or r, r, imm8 (6B), with the flags read or not */
		p = tmpl_prefix(p, size < 4 ? 4 : size, reg, rm);
		if (tmpl_rnd(2)) {
			*p++ = 0x0F;
			*p++ = 0xAF;
			return tmpl_modrm(p, reg, false, rm);
		}
		*p++ = 0x6B;
		p = tmpl_modrm(p, reg, false, rm);
		return tmpl_imm(p, 1);
	case 14: /* ALU AH..BH, imm8 (80 /op, not ADC/SBB) or TEST AH..BH, imm8 (F6 /0): no REX */
		if (tmpl_rnd(2)) {
			*p++ = 0xF6;
			*p++ = (uint8_t)(0xC4 + tmpl_rnd(4));
		} else {
			*p++ = 0x80;
			*p++ = (uint8_t)(0xC4 +
					 ((unsigned[]){ 0, 1, 4, 5, 6, 7 }[tmpl_rnd(6)] << 3) +
					 tmpl_rnd(4));
		}
		return tmpl_imm(p, 1);
	case 15: /* BSWAP r32/r64 */
		p = tmpl_prefix(p, size < 4 ? 4 : size, 0, rm);
		*p++ = 0x0F;
		*p++ = (uint8_t)(0xC8 + (rm & 7));
		return p;
	case 12: /* SHL/SAL/SHR/SAR r, CL (inlined where a later instruction replaces the flags) */
		p = tmpl_prefix(p, size < 4 ? 4 : size, 0, rm);
		*p++ = 0xD3;
		return tmpl_modrm(p, 4 + tmpl_rnd(4), false, rm);
	default: /* SHL/SHR/SAR/ROL r, imm (flags for a later condition) */
		p = tmpl_prefix(p, size < 4 ? 4 : size, 0, rm);
		*p++ = 0xC1;
		p = tmpl_modrm(p, (unsigned[]){ 0, 1, 4, 5, 7 }[tmpl_rnd(5)], false, rm);
		*p++ = (uint8_t)(1 + tmpl_rnd(31));
		return p;
	}
}

struct tmpl_case {
	uint8_t code[160];
	unsigned len;
	uint64_t gpr[16], rflags;
	bool kernel;
};

struct tmpl_outcome { /* no padding: compared with memcmp() */
	uint64_t gpr[16], rip, rflags, instructions, cr2;
	int rc;
	uint32_t error;
	uint8_t vector, has_error, pad[6];
	unsigned mmio_reads, mmio_writes;
	uint8_t data[4096], stack[4096];
};
_Static_assert(sizeof(struct tmpl_outcome) == 184 + 8192, "struct tmpl_outcome has no padding");

/* A block of 1-8 instructions ending in a Jcc, JMP, CALL or RET. */
static void tmpl_case_make(struct tmpl_case *k)
{
	unsigned n = 1 + tmpl_rnd(8);
	uint8_t *p = k->code;

	for (unsigned i = 0; i < n; i++)
		p = tmpl_insn(p);
	switch (tmpl_rnd(4)) {
	case 0: /* jcc +0x10 */
		*p++ = (uint8_t)(0x70 | tmpl_rnd(16));
		*p++ = 0x10;
		break;
	case 1: /* call +0x20 */
		p = memcpy(p, (const uint8_t[]){ 0xE8, 0x20, 0, 0, 0 }, 5), p += 5;
		break;
	case 2:
		*p++ = 0xC3;
		break;
	default: /* jmp +0x10 */
		*p++ = 0xEB;
		*p++ = 0x10;
		break;
	}
	k->len = (unsigned)(p - k->code);
	for (unsigned r = 0; r < 16; r++)
		k->gpr[r] = tmpl_rnd(4) ? tmpl_rnd64() : tmpl_rnd64() & 0xff;
	k->gpr[CPU_RSI] = tmpl_address();
	k->gpr[CPU_RDI] = tmpl_address();
	k->gpr[CPU_RSP] = tmpl_rnd(6) ? TMPL_DATA + 16 + 8 * tmpl_rnd(500) : tmpl_address();
	k->rflags = EMU_FLAG_FIXED1 | EMU_FLAG_IF | (tmpl_rnd64() & EMU_FLAGS_ARITH);
	k->kernel = tmpl_rnd(4) == 0;
}

/* Run the case's block once from a fresh state (memory, registers), the TLB as it is. */
static void tmpl_run(const struct tmpl_case *k, struct tmpl_outcome *o)
{
	for (unsigned i = 0; i < 4096; i++) {
		ram[TMPL_DATA + i] = (uint8_t)(i * 131 + 7);
		ram[USER_RW + 0x800 + i % 0x800] = (uint8_t)(i * 29 + 3);
	}
	code(USER_RW, k->code, k->len);
	memcpy(cpu.s.gpr, k->gpr, sizeof(cpu.s.gpr));
	cpu.s.rflags = k->rflags;
	cpu.cc.op = EMU_CC_NONE;
	cpu.exc.vector = 0;
	cpu.instructions = 0;
	mmio_reads = mmio_writes = 0;
	memset(o, 0, sizeof(*o));
	o->rc = emu_run(&cpu);
	emu_flags_sync(&cpu);
	memcpy(o->gpr, cpu.s.gpr, sizeof(o->gpr));
	o->rip = cpu.s.rip;
	o->rflags = cpu.s.rflags;
	o->instructions = cpu.instructions;
	if (o->rc == EMU_EXCEPTION) {
		o->vector = cpu.exc.vector;
		o->has_error = cpu.exc.has_error_code;
		o->error = cpu.exc.error_code;
		o->cr2 = cpu.exc.cr2;
	}
	o->mmio_reads = mmio_reads;
	o->mmio_writes = mmio_writes;
	memcpy(o->data, ram + TMPL_DATA, 4096);
	memcpy(o->stack, ram + USER_RW, 4096);
}

static bool tmpl_outcomes_differ(const struct tmpl_case *k, const struct tmpl_outcome *a,
				 const struct tmpl_outcome *b, const char *what)
{
	if (!memcmp(a, b, sizeof(*a)))
		return false;
	printf("  %s differs (interpreted/compiled): rc %d/%d rip %llx/%llx rflags %llx/%llx "
	       "count %llu/%llu vector %u/%u error %x/%x cr2 %llx/%llx data %s code page %s; "
	       "bytes",
	       what, a->rc, b->rc, (unsigned long long)a->rip, (unsigned long long)b->rip,
	       (unsigned long long)a->rflags, (unsigned long long)b->rflags,
	       (unsigned long long)a->instructions, (unsigned long long)b->instructions, a->vector,
	       b->vector, a->error, b->error, (unsigned long long)a->cr2,
	       (unsigned long long)b->cr2, memcmp(a->data, b->data, 4096) ? "differs" : "same",
	       memcmp(a->stack, b->stack, 4096) ? "differs" : "same");
	for (unsigned i = 0; i < k->len; i++)
		printf(" %02x", k->code[i]);
	printf("\n");
	for (unsigned r = 0; r < 16; r++)
		if (a->gpr[r] != b->gpr[r])
			printf("    r%u in %llx: %llx/%llx\n", r, (unsigned long long)k->gpr[r],
			       (unsigned long long)a->gpr[r], (unsigned long long)b->gpr[r]);
	return true;
}

/* Random blocks of the forms the JIT inlines (memory ALU, INC/DEC, MOV and MOVZX/MOVSX with
 * memory, MOV m, imm, byte and word ALU, PUSH/POP/CALL/RET, NOPs) with conditions after them,
 * random registers, flags and memory, and addresses that fault (#PF with each error code,
 * #GP/#SS for non-canonical ones), cross pages, reach MMIO or the code's own page: compiled
 * they end exactly as interpreted, with the TLB cold and warm, at CPL 3 and CPL 0. */
static void test_jit_templates_random(void)
{
	static struct tmpl_outcome interp[2], compiled[2];
	static struct tmpl_case k;
	struct emu_jit *jit = emu_jit_create(1 << 20, 0, true);
	unsigned failures = 0, warm_hits = 0;

	CHECK(jit != NULL);
	if (!jit)
		return;
	for (unsigned n = 0; n < 3000 && failures < 5; n++) {
		tmpl_case_make(&k);
		for (unsigned compiled_run = 0; compiled_run < 2; compiled_run++) {
			struct tmpl_outcome *o = compiled_run ? compiled : interp;

			machine_reset();
			if (k.kernel)
				to_kernel_mode(USER_RW);
			cpu.jit = compiled_run ? jit : NULL;
			tmpl_run(&k, &o[0]); /* cold TLB */
			tmpl_run(&k, &o[1]); /* warm: the inline path where the access may */
			cpu.jit = NULL;
		}
		for (unsigned w = 0; w < 2; w++) {
			if (tmpl_outcomes_differ(&k, &interp[w], &compiled[w],
						 w ? "warm" : "cold")) {
				failures++;
				test_failed_checks++;
				break;
			}
		}
		warm_hits += interp[1].rc == EMU_OK;
	}
	CHECK(warm_hits > 1000); /* most blocks run to their end */
	emu_jit_destroy(jit);
}

/* VERR/VERW/LAR/LSL report through ZF instead of faulting (Linux runs VERW on every return
 * to user mode). */
static void test_segment_probes(void)
{
	/* verw ax; verr ax; lsl ecx, ax; lar edx, ax */
	static const uint8_t prog[] = { 0x0F, 0x00, 0xE8, 0x0F, 0x00, 0xE0,
					0x0F, 0x03, 0xC8, 0x0F, 0x02, 0xD0 };
	static const struct {
		uint16_t sel;
		bool verw, verr, valid;
		uint32_t limit, rights;
	} cases[] = {
		{ 0x2b, true, true, true, 0xffffffff, 0x00C0F300 }, /* user data */
		{ 0x33, false, true, true, 0xffffffff, 0x00A0FB00 }, /* user code: readable */
		{ 0x18, false, false, false, 0, 0 }, /* kernel data: DPL 0 from CPL 3 */
		{ 0x00, false, false, false, 0, 0 }, /* null */
		{ 0x1f8, false, false, false, 0, 0 }, /* beyond the GDT limit */
	};

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		machine_reset();
		code(USER_RW, prog, sizeof(prog));
		cpu.s.gpr[CPU_RAX] = cases[i].sel;
		cpu.s.gpr[CPU_RCX] = cpu.s.gpr[CPU_RDX] = 0x5555;
		CHECK_EQ(emu_step(&cpu), EMU_OK);
		CHECK_EQ(!!(emu_flags_get(&cpu) & EMU_FLAG_ZF), cases[i].verw);
		CHECK_EQ(emu_step(&cpu), EMU_OK);
		CHECK_EQ(!!(emu_flags_get(&cpu) & EMU_FLAG_ZF), cases[i].verr);
		CHECK_EQ(emu_step(&cpu), EMU_OK);
		CHECK_EQ(!!(emu_flags_get(&cpu) & EMU_FLAG_ZF), cases[i].valid);
		CHECK_EQ(emu_step(&cpu), EMU_OK);
		CHECK_EQ(!!(emu_flags_get(&cpu) & EMU_FLAG_ZF), cases[i].valid);
		CHECK_EQ(cpu.s.gpr[CPU_RCX], cases[i].valid ? cases[i].limit : 0x5555);
		CHECK_EQ(cpu.s.gpr[CPU_RDX], cases[i].valid ? cases[i].rights : 0x5555);
	}
}

/* SSE availability (CR4.OSFXSR, CR0.EM, CR0.TS) and FXSAVE/FXRSTOR, which a user-mode
 * differential test cannot check. */
static void test_sse_state(void)
{
	/* pxor xmm1, xmm1; fxsave [USER_RW + 0x400]; fxrstor [USER_RW + 0x400] */
	static const uint8_t pxor[] = { 0x66, 0x0F, 0xEF, 0xC9 };
	static const uint8_t fxsave[] = { 0x0F, 0xAE, 0x04, 0x25, 0x00, 0x04, 0x20, 0x00 };
	static const uint8_t fxrstor[] = { 0x0F, 0xAE, 0x0C, 0x25, 0x00, 0x04, 0x20, 0x00 };
	uint32_t mxcsr;

	machine_reset();
	code(USER_RW, pxor, sizeof(pxor));
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION); /* CR4.OSFXSR = 0 */
	CHECK_EQ(cpu.exc.vector, EMU_VEC_UD);
	cpu.s.cr4 |= 1ull << 9;
	cpu.s.cr0 |= 1ull << 3; /* TS: the OS switches FPU state lazily */
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_NM);
	cpu.s.cr0 &= ~(1ull << 3);
	memset(cpu.fx.xmm[1], 0x5A, 16);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.fx.xmm[1][15], 0);
	/* FXSAVE: MXCSR at 24, XMM1 at 160 + 16 */
	memset(cpu.fx.xmm[1], 0x77, 16);
	code(USER_RW, fxsave, sizeof(fxsave));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	memcpy(&mxcsr, ram + 0x200400 + 24, 4);
	CHECK_EQ(mxcsr, 0x1f80);
	CHECK_EQ(ram[0x200400 + 176], 0x77);
	CHECK_EQ(ram[0x200400], 0x7f); /* FCW 0x037f */
	/* FXRSTOR brings back what was saved; a reserved MXCSR bit is #GP */
	memset(cpu.fx.xmm[1], 0, 16);
	code(USER_RW, fxrstor, sizeof(fxrstor));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.fx.xmm[1][0], 0x77);
	mxcsr = 0x10000;
	memcpy(ram + 0x200400 + 24, &mxcsr, 4);
	code(USER_RW, fxrstor, sizeof(fxrstor));
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
	/* divss xmm0, xmm1 by zero with #Z unmasked: #XM (with CR4.OSXMMEXCPT, else #UD), the
	 * destination unchanged and MXCSR.ZE set */
	{
		static const uint8_t divss[] = { 0xF3, 0x0F, 0x5E, 0xC1 };
		const float one = 1.0f, zero = 0.0f;

		memcpy(cpu.fx.xmm[0], &one, 4);
		memcpy(cpu.fx.xmm[1], &zero, 4);
		cpu.fx.mxcsr = 0x1f80 & ~0x200u;
		code(USER_RW, divss, sizeof(divss));
		CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
		CHECK_EQ(cpu.exc.vector, EMU_VEC_UD);
		cpu.s.cr4 |= 1ull << 10;
		cpu.fx.mxcsr = 0x1f80 & ~0x200u;
		CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
		CHECK_EQ(cpu.exc.vector, EMU_VEC_XM);
		/* NOLINTNEXTLINE(bugprone-suspicious-memory-comparison): the bits are checked */
		CHECK(!memcmp(cpu.fx.xmm[0], &one, 4));
		CHECK_EQ(cpu.fx.mxcsr & 0x3f, 0x4);
		cpu.fx.mxcsr = 0x1f80; /* masked: +inf and ZE */
		CHECK_EQ(emu_step(&cpu), EMU_OK);
		CHECK_EQ(cpu.fx.xmm[0][3], 0x7f);
		CHECK_EQ(cpu.fx.mxcsr, 0x1f84);
	}
	/* misaligned FXSAVE area: #GP */
	code(USER_RW, (const uint8_t[]){ 0x0F, 0xAE, 0x04, 0x25, 0x08, 0x04, 0x20, 0x00 }, 8);
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
}

/* x87: #NM for CR0.TS/EM (WAIT only with MP and TS), an unmasked exception that leaves the
 * stack alone and raises #MF at the next waiting instruction (CR0.NE), the non-waiting FNSTSW
 * and FNCLEX, FXSAVE of the x87 part, and CPUID's FPU/FXSR/SSE/SSE2 bits. */
static void test_x87_state(void)
{
	/* fld1; fldz; fdivp st(1), st; wait; fnstsw ax; fnclex; wait; fxsave [USER_RW + 0x400] */
	static const uint8_t prog[] = {
		0xD9, 0xE8, 0xD9, 0xEE, 0xDE, 0xF9, 0x9B, 0xDF, 0xE0, 0xDB,
		0xE2, 0x9B, 0x0F, 0xAE, 0x04, 0x25, 0x00, 0x04, 0x20, 0x00
	};
	const uint64_t ts = 1ull << 3, em = 1ull << 2, mp = 1ull << 1, ne = 1ull << 5;
	uint32_t id[4];
	uint16_t fsw;

	machine_reset();
	cpu.s.cr4 |= 1ull << 9;
	code(USER_RW, prog, sizeof(prog));
	cpu.s.cr0 |= ts;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_NM);
	cpu.s.cr0 = (cpu.s.cr0 & ~ts) | em;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_NM);
	cpu.s.cr0 = (cpu.s.cr0 & ~em) | ne | mp;
	cpu.fx.fcw = 0x037b; /* zero-divide unmasked */
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* fld1 */
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* fldz */
	CHECK_EQ((cpu.fx.fsw >> 11) & 7, 6);
	CHECK_EQ(cpu.fx.ftw, 0xc0);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* fdivp: #Z unmasked, no result, no pop */
	CHECK_EQ(cpu.fx.fsw & 0x80ff, 0x8084);
	CHECK_EQ((cpu.fx.fsw >> 11) & 7, 6);
	CHECK_EQ(cpu.fx.st[1][7], 0x80); /* still 1.0 */
	CHECK_EQ(cpu.fx.st[1][8], 0xff);
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION); /* wait: #MF, a fault */
	CHECK_EQ(cpu.exc.vector, EMU_VEC_MF);
	CHECK_EQ(cpu.s.rip, USER_RW + 6);
	cpu.s.cr0 |= ts; /* WAIT with MP and TS: #NM first */
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_NM);
	cpu.s.cr0 &= ~ts;
	cpu.s.rip += 1; /* as a #MF handler would, past the wait */
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* fnstsw ax does not wait */
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xffff, cpu.fx.fsw);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* fnclex */
	CHECK_EQ(cpu.fx.fsw & 0x80ff, 0);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* wait: nothing pending */
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* fxsave */
	memcpy(&fsw, ram + 0x200400 + 2, 2);
	CHECK_EQ(fsw, cpu.fx.fsw);
	CHECK_EQ(ram[0x200400 + 4], 0xc0); /* abridged tags: R6, R7 */
	CHECK_EQ(ram[0x200400 + 32 + 16 + 7], 0x80); /* ST1 = 1.0 */
	emu_cpuid(&cpu, 1, 0, id);
	CHECK_EQ(id[3] & 0x07800001u, 0x07800001u); /* FPU, MMX, FXSR, SSE, SSE2 */
}

/* MMX: #UD with CR0.EM (where x87 instructions give #NM), #NM with TS, #MF with a pending
 * x87 exception; MMn is physical register n whatever TOP is; an MMX instruction sets TOP 0,
 * every tag valid and the written register's exponent to all ones; EMMS empties the tags.
 * FXSAVE without REX.W stores 32-bit FIP/FDP with FCS/FDS 0, with REX.W 64-bit ones, never
 * bytes 416-511; FXRSTOR without REX.W loads 32 bits of them. */
static void test_mmx_and_fxsave_formats(void)
{
	/* paddb mm0, mm1; emms; movd eax, mm0; fxsave [0x200400]; fxsave64 [0x200600];
	 * fxrstor [0x200600] */
	static const uint8_t prog[] = { 0x0F, 0xFC, 0xC1, 0x0F, 0x77, 0x0F, 0x7E, 0xC0,
					0x0F, 0xAE, 0x04, 0x25, 0x00, 0x04, 0x20, 0x00,
					0x48, 0x0F, 0xAE, 0x04, 0x25, 0x00, 0x06, 0x20, 0x00,
					0x0F, 0xAE, 0x0C, 0x25, 0x00, 0x06, 0x20, 0x00 };
	const uint64_t ts = 1ull << 3, em = 1ull << 2, ne = 1ull << 5;
	const uint64_t r0 = 0x0101010101010101ull, r1 = 0x02020202020202f0ull;
	uint64_t v;
	uint32_t v32;

	machine_reset();
	cpu.s.cr4 |= 1ull << 9;
	code(USER_RW, prog, sizeof(prog));
	cpu.s.cr0 |= em;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_UD);
	cpu.s.cr0 = (cpu.s.cr0 & ~em) | ts;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_NM);
	cpu.s.cr0 = (cpu.s.cr0 & ~ts) | ne;
	cpu.fx.fcw = 0x037b;
	cpu.fx.fsw = 0x8084; /* #Z unmasked and pending */
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_MF);
	cpu.fx.fsw = 5 << 11; /* TOP 5: MM0 is ST(3), MM1 is ST(4) */
	cpu.fx.ftw = 0;
	memcpy(cpu.fx.st[3], &r0, 8);
	memcpy(cpu.fx.st[4], &r1, 8);
	cpu.fx.st[4][8] = 0x34;
	cpu.fx.st[4][9] = 0x12;
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* paddb */
	CHECK_EQ(cpu.fx.fsw, 0);
	CHECK_EQ(cpu.fx.ftw, 0xff);
	memcpy(&v, cpu.fx.st[0], 8);
	CHECK_EQ(v, 0x03030303030303f1ull);
	CHECK_EQ(cpu.fx.st[0][8], 0xff);
	CHECK_EQ(cpu.fx.st[0][9], 0xff);
	memcpy(&v, cpu.fx.st[1], 8);
	CHECK_EQ(v, r1);
	CHECK_EQ(cpu.fx.st[1][8], 0x34); /* read, not written: exponent kept */
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* emms */
	CHECK_EQ(cpu.fx.ftw, 0);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* movd eax, mm0 */
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x030303f1ull);
	CHECK_EQ(cpu.fx.ftw, 0xff);
	cpu.fx.fop = 0x123;
	cpu.fx.fip = 0xffffffff81234567ull;
	cpu.fx.fdp = 0xffff888012345678ull;
	memset(ram + 0x200400, 0xaa, 0x400);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* fxsave */
	memcpy(&v, ram + 0x200400 + 8, 8);
	CHECK_EQ(v, 0x81234567ull); /* FIP[31:0], FCS 0 */
	memcpy(&v, ram + 0x200400 + 16, 8);
	CHECK_EQ(v, 0x12345678ull); /* FDP[31:0], FDS 0 */
	memcpy(&v32, ram + 0x200400 + 28, 4);
	CHECK_EQ(v32, 0xffff); /* MXCSR_MASK */
	CHECK_EQ(ram[0x200400 + 415], cpu.fx.xmm[15][15]);
	CHECK_EQ(ram[0x200400 + 416], 0xaa); /* bytes 416-511: not written */
	CHECK_EQ(ram[0x200400 + 511], 0xaa);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* fxsave64 */
	memcpy(&v, ram + 0x200600 + 8, 8);
	CHECK_EQ(v, 0xffffffff81234567ull);
	memcpy(&v, ram + 0x200600 + 16, 8);
	CHECK_EQ(v, 0xffff888012345678ull);
	CHECK_EQ(ram[0x200600 + 416], 0xaa);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* fxrstor: 32-bit format */
	CHECK_EQ(cpu.fx.fip, 0x81234567ull);
	CHECK_EQ(cpu.fx.fdp, 0x12345678ull);
	CHECK_EQ(cpu.fx.fop, 0x123);
}

/* CPUID advertises exactly what is implemented (cpuid.c's list; the backend adds the APIC
 * bits), and instructions of features it does not advertise raise #UD (after a control: an
 * SSE2 instruction runs, so the #UDs are not for want of CR4.OSFXSR). */
static void test_cpuid_matches_implementation(void)
{
	static const uint8_t absent[][7] = {
		{ 4, 0x66, 0x0F, 0x7C, 0xC1 }, /* HADDPD: SSE3 */
		{ 4, 0xF3, 0x0F, 0x16, 0xC1 }, /* MOVSHDUP: SSE3 */
		{ 4, 0xF2, 0x0F, 0xF0, 0x00 }, /* LDDQU: SSE3 */
		{ 4, 0x0F, 0x38, 0x00, 0xC1 }, /* PSHUFB mm: SSSE3 */
		{ 5, 0x66, 0x0F, 0x38, 0x00, 0xC1 }, /* PSHUFB xmm: SSSE3 */
		{ 6, 0x66, 0x0F, 0x3A, 0x0F, 0xC1, 0x00 }, /* PALIGNR: SSSE3 */
		{ 5, 0x66, 0x0F, 0x38, 0x17, 0xC1 }, /* PTEST: SSE4.1 */
		{ 5, 0xF2, 0x0F, 0x38, 0xF1, 0xC1 }, /* CRC32: SSE4.2 */
		{ 4, 0x0F, 0x38, 0xF0, 0x00 }, /* MOVBE */
		{ 5, 0x66, 0x0F, 0x38, 0xF6, 0xC1 }, /* ADCX: ADX */
		{ 3, 0xC5, 0xF8, 0x77 }, /* VZEROUPPER: AVX */
		{ 5, 0xC4, 0xE2, 0x78, 0xF2, 0xC1 }, /* ANDN: BMI1 */
		{ 3, 0x0F, 0xC7, 0xF0 }, /* RDRAND */
		{ 3, 0x0F, 0xC7, 0xF8 }, /* RDSEED */
		{ 4, 0xF3, 0x0F, 0xC7, 0xF8 }, /* RDPID */
		{ 3, 0x0F, 0xAE, 0x20 }, /* XSAVE */
		{ 3, 0x0F, 0x01, 0xD0 }, /* XGETBV */
		{ 4, 0xF3, 0x0F, 0xAE, 0xC0 }, /* RDFSBASE: FSGSBASE */
		{ 2, 0x0F, 0x34 }, /* SYSENTER: SEP */
		{ 2, 0x0F, 0x0E }, /* FEMMS: 3DNow! */
		{ 4, 0x0F, 0x0F, 0xC1, 0x9E }, /* PFADD: 3DNow! */
	};
	uint32_t id[4];

	emu_cpuid(&cpu, 0, 0, id);
	CHECK_EQ(id[0], 7);
	emu_cpuid(&cpu, 1, 0, id);
	/* FPU PSE TSC MSR PAE CX8 PGE CMOV PAT CLFSH MMX FXSR SSE SSE2 */
	CHECK_EQ(id[3], 0x0789A179u);
	CHECK_EQ(id[2], (1u << 13) | (1u << 23) | (1u << 31)); /* CX16 POPCNT HYPERVISOR */
	emu_cpuid(&cpu, 7, 0, id);
	CHECK_EQ(id[1], 1u << 13); /* FCS/FDS deprecated */
	CHECK_EQ(id[2], 0);
	CHECK_EQ(id[3], 1u << 29); /* IA32_ARCH_CAPABILITIES */
	emu_cpuid(&cpu, 0xD, 0, id);
	CHECK_EQ(id[0] | id[1] | id[2] | id[3], 0);
	emu_cpuid(&cpu, 0x80000001, 0, id);
	CHECK_EQ(id[2], 1u); /* LAHF/SAHF */
	/* SYSCALL NX PAGE1GB RDTSCP LM */
	CHECK_EQ(id[3], (1u << 11) | (1u << 20) | (1u << 26) | (1u << 27) | (1u << 29));

	/* leaves past their range's maximum answer as the highest basic leaf (7) */
	CHECK_EQ(emu_cpuid_leaf(7), 7);
	CHECK_EQ(emu_cpuid_leaf(8), 7);
	CHECK_EQ(emu_cpuid_leaf(0xB), 7);
	CHECK_EQ(emu_cpuid_leaf(0x40000001), 0x40000001);
	CHECK_EQ(emu_cpuid_leaf(0x40000002), 7);
	CHECK_EQ(emu_cpuid_leaf(0x80000008), 0x80000008);
	CHECK_EQ(emu_cpuid_leaf(0x80000009), 7);
	CHECK_EQ(emu_cpuid_leaf(0xC0000000), 7);

	machine_reset();
	code(USER_RW + 0x700, (const uint8_t[]){ 0x0F, 0xA2 }, 2); /* cpuid, EAX = 0xB */
	cpu.s.gpr[CPU_RAX] = 0xB;
	cpu.s.gpr[CPU_RCX] = 0;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RBX], 1u << 13); /* leaf 7's EBX */
	cpu.s.cr4 |= 1ull << 9; /* OSFXSR */
	code(USER_RW, (const uint8_t[]){ 0x66, 0x0F, 0xFE, 0xC1 }, 4); /* paddd xmm0, xmm1 */
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	for (unsigned i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
		cpu.s.gpr[CPU_RAX] = USER_RW + 0x800;
		code(USER_RW + 0x10 * (i + 1), absent[i] + 1, absent[i][0]);
		if (emu_step(&cpu) != EMU_EXCEPTION || cpu.exc.vector != EMU_VEC_UD)
			CHECK_EQ(i, ~0u); /* names the form that did not raise #UD */
	}
}

/* A 32-bit protected-mode interrupt or trap gate (8 bytes) to 0x08:HANDLERS + 16 * vector. */
static void idt_gate32(unsigned vector, unsigned type, unsigned dpl)
{
	uint64_t off = HANDLERS + 16 * vector;

	put64(IDT + 8 * vector, (off & 0xffff) | (0x08ull << 16) | ((uint64_t)type << 40) |
					((uint64_t)dpl << 45) | (1ull << 47) |
					(((off >> 16) & 0xffff) << 48));
}

static uint32_t get32(uint64_t gpa)
{
	uint32_t v;

	memcpy(&v, ram + gpa, 4);
	return v;
}

/* Flat 32-bit protected mode without paging, at CPL 0 or 3 (the GDT of machine_reset: 0x08
 * kernel code, 0x18 kernel data, 0x23 user code, 0x2b user data), the IDT with 8-byte gates
 * and a 32-bit TSS whose SS0:ESP0 is 0x18:KSTACK_TOP. */
static void protected_mode_start(unsigned cpl, uint32_t eip, uint32_t esp)
{
	struct cpu_state s;

	memset(&s, 0, sizeof(s));
	s.cr0 = CR0_PE | CR0_ET;
	segment(&s.seg[SEG_CS], cpl ? 0x23 : 0x08, true, cpl);
	s.seg[SEG_CS].l = 0;
	s.seg[SEG_CS].db = 1;
	segment(&s.seg[SEG_SS], cpl ? 0x2b : 0x18, false, cpl);
	s.seg[SEG_DS] = s.seg[SEG_ES] = s.seg[SEG_SS];
	s.seg[SEG_TR] = (struct cpu_segment){ .selector = 0x40, .base = TSS, .limit = 0x67,
					      .type = 0xB, .present = 1 };
	s.seg[SEG_LDTR].unusable = 1;
	s.gdt.base = GDT;
	s.gdt.limit = 0x4f;
	s.idt.base = IDT;
	s.idt.limit = 0x7ff;
	s.rip = eip;
	s.rflags = EMU_FLAG_FIXED1 | EMU_FLAG_IF;
	s.gpr[CPU_RSP] = esp;
	emu_cpu_set_state(&cpu, &s);
	put64(TSS + 4, KSTACK_TOP | (0x18ull << 32)); /* ESP0, SS0 */
	for (unsigned v = 0; v < 256; v++)
		idt_gate32(v, 0xE, 0);
	for (unsigned v = 0; v < 256; v++)
		ram[HANDLERS + 16 * v] = 0xCF; /* iretd */
}

/* 32-bit protected mode (SDM Vol. 3 §6.12): INT n through a 32-bit interrupt gate at CPL 0
 * (EFLAGS, CS, EIP; IF cleared) and IRETD back; #UD at CPL 3 through a trap gate, with the
 * stack switch to the TSS's SS0:ESP0 (SS, ESP, EFLAGS, CS, EIP; IF kept) and IRETD back to
 * CPL 3; INT n at CPL 3 through a DPL 0 gate: #GP with the IDT error code on the frame; a
 * 16-bit interrupt gate (a 6-byte frame) and IRET with a 16-bit operand. */
static void test_protected_mode_interrupts(void)
{
	uint32_t ksp = KSTACK_TOP;

	machine_reset();
	protected_mode_start(0, 0x50000, 0x7000);
	memcpy(ram + 0x50000, (const uint8_t[]){ 0xCD, 0x21, 0xCD, 0x30, 0xF4 }, 5);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* int 0x21 */
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * 0x21);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], 0x7000 - 12);
	CHECK_EQ(get32(0x7000 - 12), 0x50002);
	CHECK_EQ(get32(0x7000 - 8), 0x08);
	CHECK_EQ(get32(0x7000 - 4), EMU_FLAG_FIXED1 | EMU_FLAG_IF);
	CHECK(!(cpu.s.rflags & EMU_FLAG_IF));
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* iretd */
	CHECK_EQ(cpu.s.rip, 0x50002);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], 0x7000);
	CHECK(cpu.s.rflags & EMU_FLAG_IF);
	/* a 16-bit interrupt gate: IP, CS, FLAGS as words; the handler returns with o16 iret */
	put64(IDT + 8 * 0x30, 0x9000 | (0x08ull << 16) | (0x86ull << 40)); /* 16-bit offset */
	memcpy(ram + 0x9000, (const uint8_t[]){ 0x66, 0xCF }, 2);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* int 0x30 */
	CHECK_EQ(cpu.s.rip, 0x9000);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], 0x7000 - 6);
	CHECK_EQ(get32(0x7000 - 6), 0x00080004);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* iret: a 16-bit frame keeps 16 bits of EIP */
	CHECK_EQ(cpu.s.rip, 0x0004);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], 0x7000);

	/* CPL 3: ud2 through a trap gate, onto the kernel stack */
	protected_mode_start(3, 0x50010, 0x8000);
	idt_gate32(EMU_VEC_UD, 0xF, 0);
	memcpy(ram + 0x50010, (const uint8_t[]){ 0x0F, 0x0B, 0xCD, 0x22 }, 4);
	CHECK_EQ(cpu.cpl, 3);
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_UD);
	CHECK_EQ(emu_deliver_exception(&cpu), EMU_OK);
	CHECK_EQ(cpu.cpl, 0);
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x08);
	CHECK_EQ(cpu.s.seg[SEG_SS].selector, 0x18);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], ksp - 20);
	CHECK_EQ(get32(ksp - 20), 0x50010);
	CHECK_EQ(get32(ksp - 16), 0x23);
	CHECK_EQ(get32(ksp - 12), EMU_FLAG_FIXED1 | EMU_FLAG_IF | EMU_FLAG_RF); /* a fault: RF */
	CHECK_EQ(get32(ksp - 8), 0x8000);
	CHECK_EQ(get32(ksp - 4), 0x2b);
	CHECK(cpu.s.rflags & EMU_FLAG_IF); /* a trap gate */
	put32(ksp - 20, 0x50012); /* as a handler would: return past the ud2 */
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* iretd to CPL 3 */
	CHECK_EQ(cpu.cpl, 3);
	CHECK_EQ(cpu.mode, EMU_MODE_32);
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x23);
	CHECK_EQ(cpu.s.seg[SEG_SS].selector, 0x2b);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], 0x8000);
	CHECK_EQ(cpu.s.rip, 0x50012);
	/* int 0x22 through a DPL 0 gate from CPL 3: #GP(0x22 * 8 + 2) at the INT */
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
	CHECK_EQ(cpu.exc.error_code, 0x22 * 8 + 2);
	CHECK_EQ(emu_deliver_exception(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * EMU_VEC_GP);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], ksp - 24);
	CHECK_EQ(get32(ksp - 24), 0x22 * 8 + 2);
	CHECK_EQ(get32(ksp - 20), 0x50012);
	CHECK(!(cpu.s.rflags & EMU_FLAG_IF)); /* an interrupt gate */
	/* an IDT too short for the vector: #GP, then #DF, then shutdown */
	cpu.s.idt.limit = 8 * EMU_VEC_DF - 1;
	CHECK_EQ(emu_deliver_event(&cpu, 0x40, EMU_EVENT_EXTERNAL, false, 0, cpu.s.rip),
		 EMU_SHUTDOWN);
}

/* A real-mode vCPU as INIT/SIPI leaves it: CS = vector << 8 (base vector << 12), IP = 0. */
static void real_mode_start(uint16_t cs_sel)
{
	struct cpu_state s;

	memset(&s, 0, sizeof(s));
	s.cr0 = CR0_ET;
	s.seg[SEG_CS] = (struct cpu_segment){ .selector = cs_sel, .base = (uint64_t)cs_sel << 4,
					      .limit = 0xffff, .type = 0xB, .s = 1, .present = 1 };
	for (unsigned i = 0; i < CPU_NR_SEGS; i++)
		if (i != SEG_CS && i != SEG_TR && i != SEG_LDTR)
			s.seg[i] = (struct cpu_segment){ .limit = 0xffff, .type = 3, .s = 1,
							 .present = 1 };
	s.idt.limit = 0x3ff; /* the IVT at 0 */
	s.rflags = 2 | EMU_FLAG_IF;
	s.gpr[CPU_RSP] = 0x7000;
	emu_cpu_set_state(&cpu, &s);
}

/* ---- REP MOVS/STOS: the bulk path against the element-wise path ----
 *
 * exec.c copies and fills runs of elements through the paging layer's map op; without it
 * (a copy of emu_paged_memory_ops with map = NULL) the same instruction goes element by
 * element through read/write, which test_emu_diff.c checks against the host CPU. Both must
 * leave the same registers, fault (vector, error code, CR2), MMIO accesses and memory,
 * page-table accessed/dirty bits included. */

static const struct {
	uint64_t start, len;
} string_regions[] = {
	{ 0, 0x8000 }, /* page tables (A/D bits), the extra page directory below */
	{ 0x10000, 0x20000 }, /* real- and protected-mode data */
	{ USER_RW, 0x8000 }, /* the user pages */
	{ 0x600000, 0x8000 }, /* the start of BIG_2M */
	{ 0x7F8000, 0x8000 }, /* the end of BIG_2M (also at linear 0xFFE00000, see below) */
	{ 0x100000, 0x1000 }, /* identity-mapped kernel data */
};
#define STRING_SNAPSHOT (0x8000 * 4 + 0x20000 + 0x1000)

struct string_result {
	int status;
	struct emu_exception exc;
	struct cpu_state s;
	unsigned mmio_reads, mmio_writes;
	uint8_t mem[STRING_SNAPSHOT];
};

static void string_snapshot(uint8_t *buf)
{
	for (unsigned i = 0; i < sizeof(string_regions) / sizeof(string_regions[0]); i++) {
		memcpy(buf, ram + string_regions[i].start, string_regions[i].len);
		buf += string_regions[i].len;
	}
}

static void string_restore(const uint8_t *buf)
{
	for (unsigned i = 0; i < sizeof(string_regions) / sizeof(string_regions[0]); i++) {
		memcpy(ram + string_regions[i].start, buf, string_regions[i].len);
		buf += string_regions[i].len;
	}
}

/* The instruction at CS:RIP from state `s0` and memory `mem0`, through `ops`, to its end, a
 * fault or 64 executions. */
static void string_run(const struct emu_memory_ops *ops, const struct cpu_state *s0,
		       const uint8_t *mem0, struct string_result *r)
{
	string_restore(mem0);
	emu_cpu_set_state(&cpu, s0);
	cpu.mem = ops;
	mmio_reads = mmio_writes = 0;
	for (unsigned i = 0; i < 64; i++) {
		r->status = emu_step(&cpu);
		if (r->status != EMU_OK || cpu.s.rip != s0->rip)
			break;
	}
	r->exc = cpu.exc;
	emu_cpu_get_state(&cpu, &r->s);
	r->mmio_reads = mmio_reads;
	r->mmio_writes = mmio_writes;
	string_snapshot(r->mem);
	cpu.mem = &emu_paged_memory_ops;
}

/* Run the machine's current instruction both ways; the bulk path's result is left in
 * `bulk`. Prints the first difference and returns false when they differ. */
static bool string_paths_agree(const char *what, struct string_result *bulk)
{
	static struct string_result elem;
	static uint8_t mem0[STRING_SNAPSHOT];
	static struct emu_memory_ops no_map;
	struct cpu_state s0;
	const char *diff = NULL;

	no_map = emu_paged_memory_ops;
	no_map.map = NULL;
	emu_cpu_get_state(&cpu, &s0);
	string_snapshot(mem0);
	string_run(&emu_paged_memory_ops, &s0, mem0, bulk);
	string_run(&no_map, &s0, mem0, &elem);
	if (bulk->status != elem.status)
		diff = "status";
	else if (bulk->status == EMU_EXCEPTION &&
		 (bulk->exc.vector != elem.exc.vector ||
		  bulk->exc.error_code != elem.exc.error_code || bulk->exc.cr2 != elem.exc.cr2))
		diff = "exception";
	else if (memcmp(bulk->s.gpr, elem.s.gpr, sizeof(elem.s.gpr)))
		diff = "registers";
	else if (bulk->s.rip != elem.s.rip || bulk->s.rflags != elem.s.rflags)
		diff = "rip/rflags";
	else if (bulk->mmio_reads != elem.mmio_reads || bulk->mmio_writes != elem.mmio_writes)
		diff = "mmio accesses";
	else if (memcmp(bulk->mem, elem.mem, STRING_SNAPSHOT))
		diff = "memory";
	if (!diff)
		return true;
	printf("  %s: %s differ (bulk status %d rcx %#llx rsi %#llx rdi %#llx cr2 %#llx; "
	       "element-wise status %d rcx %#llx rsi %#llx rdi %#llx cr2 %#llx)\n",
	       what, diff, bulk->status, (unsigned long long)bulk->s.gpr[CPU_RCX],
	       (unsigned long long)bulk->s.gpr[CPU_RSI], (unsigned long long)bulk->s.gpr[CPU_RDI],
	       (unsigned long long)bulk->exc.cr2, elem.status,
	       (unsigned long long)elem.s.gpr[CPU_RCX], (unsigned long long)elem.s.gpr[CPU_RSI],
	       (unsigned long long)elem.s.gpr[CPU_RDI], (unsigned long long)elem.exc.cr2);
	return false;
}

static uint64_t string_rng = 0x2545f4914f6cdd1dull;

static unsigned string_rnd(unsigned n)
{
	string_rng ^= string_rng << 13;
	string_rng ^= string_rng >> 7;
	string_rng ^= string_rng << 17;
	return (unsigned)(string_rng % n);
}

/* A linear address for string data: in one of the special user pages (read-only,
 * supervisor, NX, not present, MMIO) or RW memory, often near a page boundary. */
static uint64_t string_place(unsigned size)
{
	static const uint64_t bases[] = { USER_RW,	   USER_RO,	   SUPERVISOR_ONLY, USER_NX,
					  NOT_PRESENT,	   USER_MMIO,	   0x206000,	    BIG_2M,
					  BIG_2M + 0x1000, BIG_2M + 0x2000 };
	uint64_t la = bases[string_rnd(sizeof(bases) / sizeof(bases[0]))];
	unsigned off = string_rnd(2) ? string_rnd(4096) : (4096 - 24 + string_rnd(48)) % 4096;

	return la + (string_rnd(2) ? off & ~(size - 1) : off);
}

/* Random REP MOVS/STOS in 64-bit mode at CPL 3 and 0 (with and without CR0.WP) over pages
 * with every kind of permission, MMIO and not-present pages, overlapping or not. */
static void test_rep_strings_bulk(void)
{
	static const uint8_t ops[2] = { 0xA4, 0xAA };
	static struct string_result r;
	unsigned faults_midway = 0, completed_across = 0, disagree = 0;

	for (unsigned n = 0; n < 800; n++) {
		unsigned size = 1u << string_rnd(4), op = ops[string_rnd(2)], len = 0;
		uint8_t insn[4];
		uint64_t count;
		char what[96];

		machine_reset();
		/* the code in a page of its own, which no data run reaches (a run over its own
		 * instruction would diverge by where each path stops between executions) */
		put64(PT_USER + 16 * 8, 0x210000 | P | W | U);
		if (string_rnd(2)) {
			to_kernel_mode(0x210000);
			if (string_rnd(2))
				cpu.s.cr0 &=
					~(1ull << 16); /* WP off: read-only pages are writable */
		}
		if (size == 2)
			insn[len++] = 0x66;
		if (string_rnd(4) == 0)
			insn[len++] = 0x67;
		if (size == 8)
			insn[len++] = 0x48;
		insn[len++] = 0xF3;
		insn[len++] = (uint8_t)(op + (size > 1));
		/* prefixes in any order are fine; REX must come last */
		if (size == 8) {
			insn[len - 2] = 0x48;
			insn[len - 3] = 0xF3;
		}
		code(0x210000, insn, len);
		cpu.s.gpr[CPU_RSI] = string_place(size);
		cpu.s.gpr[CPU_RDI] = string_rnd(4) ? string_place(size)
						   : cpu.s.gpr[CPU_RSI] + string_rnd(17) - 8;
		count = string_rnd(3) ? string_rnd(0x2400 / size) : string_rnd(40);
		cpu.s.gpr[CPU_RCX] = count;
		cpu.s.gpr[CPU_RAX] = 0x1122334455667788ull * (1 + string_rnd(1000));
		if (string_rnd(2))
			cpu.s.rflags |= EMU_FLAG_DF;
		for (unsigned i = 0; i < 0x7000; i++)
			ram[USER_RW + i] = (uint8_t)(i * 13 + n);
		for (unsigned i = 0; i < 0x3000; i++)
			ram[0x600000 + i] = (uint8_t)(i * 7 + n);
		snprintf(what, sizeof(what), "case %u: %s%u rsi %#llx rdi %#llx rcx %#llx df %d", n,
			 op == 0xA4 ? "movs" : "stos", size, (unsigned long long)cpu.s.gpr[CPU_RSI],
			 (unsigned long long)cpu.s.gpr[CPU_RDI], (unsigned long long)count,
			 !!(cpu.s.rflags & EMU_FLAG_DF));
		if (!string_paths_agree(what, &r)) {
			disagree++;
			continue;
		}
		if (r.status == EMU_EXCEPTION && r.s.gpr[CPU_RCX] != count)
			faults_midway++;
		if (r.status == EMU_OK && count * size > 4096)
			completed_across++;
	}
	CHECK_EQ(disagree, 0);
	/* the cases must have covered what they are for */
	CHECK(faults_midway > 20);
	CHECK(completed_across > 20);
}

/* Address-size wrap and segment bases: 16-bit SI/DI in real mode, a 16-bit address size in
 * 32-bit protected mode with a segment base, a 32-bit address size in 64-bit mode (ESI wraps
 * from 4 GiB to 0), and a source and destination that are the same physical memory at two
 * linear addresses (the data is replicated as element by element). */
static void test_rep_strings_wrap(void)
{
	static struct string_result r;

	for (unsigned down = 0; down < 2; down++) {
		for (unsigned size = 1; size <= 4; size *= 2) {
			uint8_t insn[4];
			unsigned len = 0;

			/* real mode: DS = 0x1010 (base 0x10100: SI wraps in the middle of a
			 * page), ES = 0x2000, SI near 0xFFFF */
			machine_reset();
			real_mode_start(0x0800);
			cpu.s.seg[SEG_DS].base = 0x10100;
			cpu.s.seg[SEG_DS].selector = 0x1010;
			cpu.s.seg[SEG_ES].base = 0x20000;
			cpu.s.seg[SEG_ES].selector = 0x2000;
			if (size == 4)
				insn[len++] = 0x66;
			insn[len++] = 0xF3;
			insn[len++] = size == 1 ? 0xA4 : 0xA5;
			memcpy(ram + 0x8000, insn, len);
			cpu.s.rip = 0;
			for (unsigned i = 0; i < 0x20000; i++)
				ram[0x10000 + i] = (uint8_t)(i * 5 + 1);
			cpu.s.gpr[CPU_RSI] = down ? 0x0030 : 0xFFC0 - (size == 2);
			cpu.s.gpr[CPU_RDI] = down ? 0x0021 : 0xFF00;
			cpu.s.gpr[CPU_RCX] = 0x12340000 | 0x100;
			if (down)
				cpu.s.rflags |= EMU_FLAG_DF;
			CHECK(string_paths_agree("real mode, 16-bit SI/DI wrap", &r));
			CHECK_EQ(r.s.gpr[CPU_RCX], 0x12340000); /* CX only */
			CHECK(r.s.gpr[CPU_RSI] < 0x10000);
			/* 32-bit protected mode, 67: 16-bit addresses; a DS base */
			machine_reset();
			protected_mode_start(0, 0x8000, KSTACK_TOP);
			cpu.s.seg[SEG_DS].base = 0x10080;
			len = 0;
			if (size == 2)
				insn[len++] = 0x66;
			insn[len++] = 0x67;
			insn[len++] = 0xF3;
			insn[len++] = size == 1 ? 0xA4 : 0xA5;
			memcpy(ram + 0x8000, insn, len);
			cpu.s.gpr[CPU_RSI] = 0xABCD0000 | (down ? 0x0010 : 0xFFF0);
			cpu.s.gpr[CPU_RDI] = 0x00020000 | (down ? 0x0008 : 0xFFE0);
			cpu.s.gpr[CPU_RCX] = 0x80;
			if (down)
				cpu.s.rflags |= EMU_FLAG_DF;
			CHECK(string_paths_agree("protected mode, 16-bit addresses", &r));
		}
	}
	/* 64-bit mode at CPL 0, 67: ESI from 0xFFFFFFF0 wraps to 0, and with FS (base 0x100)
	 * the linear address jumps from 0x1000000FF to 0x100 in the middle of a page. The last
	 * 2 MiB below 4 GiB and the first 2 MiB above map BIG_2M's physical memory (page
	 * directories at 0x7000 for PDPT[3] and 0x6000 for PDPT[4]). */
	for (unsigned i = 0; i < 4; i++) {
		bool down = i & 1, fs = i & 2;

		machine_reset();
		put64(PDPT + 24, 0x7000 | P | W);
		put64(0x7000 + 511 * 8, 0x600000 | P | W | PS);
		put64(PDPT + 32, 0x6000 | P | W);
		put64(0x6000, 0x600000 | P | W | PS);
		to_kernel_mode(0x50000);
		cpu.s.seg[SEG_FS].base = 0x100;
		memcpy(ram + 0x50000, (const uint8_t[]){ 0x64, 0x67, 0xF3, 0xA4 }, 4);
		cpu.s.rip = fs ? 0x50000 : 0x50001;
		for (unsigned k = 0; k < 0x8000; k++)
			ram[0x7F8000 + k] = ram[0x600000 + k] = (uint8_t)(k * 3 + 7);
		for (unsigned k = 0; k < 0x200; k++)
			ram[k] = (uint8_t)(k + 0x55);
		cpu.s.gpr[CPU_RSI] = down ? 0x10 : 0xFFFFFFF0;
		cpu.s.gpr[CPU_RDI] = 0x1000F0; /* identity-mapped low memory, supervisor */
		cpu.s.gpr[CPU_RCX] = 0x40;
		if (down)
			cpu.s.rflags |= EMU_FLAG_DF;
		CHECK(string_paths_agree("64-bit mode, 32-bit addresses", &r));
		CHECK_EQ(r.status, EMU_OK);
		CHECK_EQ(r.s.gpr[CPU_RSI], down ? 0xFFFFFFD0 : 0x30);
	}
	for (unsigned down = 0; down < 2; down++) {
		/* the same physical bytes through two linear addresses: BIG_2M + 0x1FF000 and
		 * 0xFFFFF000 both map 0x7FF000; a copy one byte up replicates the first byte */
		machine_reset();
		put64(PDPT + 24, 0x7000 | P | W);
		put64(0x7000 + 511 * 8, 0x600000 | P | W | PS);
		to_kernel_mode(0x50000);
		memcpy(ram + 0x50000, (const uint8_t[]){ 0xF3, 0xA4 }, 2);
		for (unsigned i = 0; i < 0x1000; i++)
			ram[0x7FF000 + i] = (uint8_t)(i + 1);
		cpu.s.gpr[CPU_RSI] = down ? 0xFFFFF800 : BIG_2M + 0x1FF000;
		cpu.s.gpr[CPU_RDI] = down ? BIG_2M + 0x1FF7FF : 0xFFFFF001;
		cpu.s.gpr[CPU_RCX] = 0x400;
		if (down)
			cpu.s.rflags |= EMU_FLAG_DF;
		CHECK(string_paths_agree("the same memory at two linear addresses", &r));
		CHECK_EQ(r.status, EMU_OK);
		/* 0x7FF3FF (up: 0x7FF001..0x7FF400 all hold the byte at 0x7FF000) or 0x7FF401
		 * (down: 0x7FF7FF..0x7FF400 all hold the byte at 0x7FF800) */
		CHECK_EQ(r.mem[0x8000 * 3 + 0x20000 + 0x7000 + (down ? 0x401 : 0x3FF)], 0x01);
	}
}

/* REP STOS and MOVS that write the page of the block being executed end the block, so the
 * instructions after them are decoded again (here two UD2 become NOPs), as element-wise
 * writes do; blocks decoded earlier from a page they write are decoded again; an MMIO
 * destination goes element by element through the MMIO callback. */
static void test_rep_strings_block_and_mmio(void)
{
	/* mov edi, 0x206F16; mov ecx, 4; mov al, 0x90; rep stosb; 8 x nop; ud2; ud2; jmp $:
	 * one block, whose REP STOSB turns the UD2s (0x206F16) into NOPs */
	static const uint8_t smc[] = { 0xBF, 0x16, 0x6F, 0x20, 0x00, 0xB9, 0x04, 0x00, 0x00, 0x00,
				       0xB0, 0x90, 0xF3, 0xAA, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90,
				       0x90, 0x90, 0x0F, 0x0B, 0x0F, 0x0B, 0xEB, 0xFE };
	static struct string_result r;
	int rc = EMU_OK;

	machine_reset();
	code(0x206F00, smc, sizeof(smc));
	for (unsigned i = 0; i < 8 && cpu.s.rip != 0x206F1A && rc == EMU_OK; i++)
		rc = emu_run(&cpu);
	CHECK_EQ(rc, EMU_OK);
	CHECK_EQ(cpu.s.rip, 0x206F1A);
	/* A block decoded before (mov al, 1; jmp $ at 0x206800), rewritten by a REP STOSB in
	 * another page: entered again, it runs the new bytes (code-page versions, memory.h) */
	machine_reset();
	code(0x206800, (const uint8_t[]){ 0xB0, 0x01, 0xEB, 0xFE }, 4);
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 1);
	memcpy(ram + USER_RW + 0x100, (const uint8_t[]){ 0xF3, 0xAA, 0xEB, 0xFE }, 4);
	cpu.s.rip = USER_RW + 0x100;
	cpu.s.gpr[CPU_RDI] = 0x206801;
	cpu.s.gpr[CPU_RCX] = 1;
	cpu.s.gpr[CPU_RAX] = 5;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 0);
	cpu.s.rip = 0x206800;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RAX] & 0xff, 5);
	/* rep stosd into MMIO: one callback per element; rep movsb out of MMIO */
	machine_reset();
	code(0x206F00, (const uint8_t[]){ 0xF3, 0xAB }, 2);
	cpu.s.gpr[CPU_RDI] = USER_MMIO + 0x10;
	cpu.s.gpr[CPU_RCX] = 8;
	CHECK(string_paths_agree("rep stosd into MMIO", &r));
	CHECK_EQ(r.mmio_writes, 8);
	machine_reset();
	code(0x206F00, (const uint8_t[]){ 0xF3, 0xA4 }, 2);
	cpu.s.gpr[CPU_RSI] = USER_MMIO + 0xF;
	cpu.s.gpr[CPU_RDI] = USER_RW + 0x800;
	cpu.s.gpr[CPU_RCX] = 0x20; /* MMIO, then down into the not-present page */
	cpu.s.rflags |= EMU_FLAG_DF;
	CHECK(string_paths_agree("rep movsb out of MMIO", &r));
	CHECK_EQ(r.mmio_reads, 0x10);
	CHECK_EQ(r.status, EMU_EXCEPTION);
	CHECK_EQ(r.exc.cr2, NOT_PRESENT + 0xFFF);
	CHECK_EQ(r.s.gpr[CPU_RCX], 0x10);
}

/* Real mode: INT n and exceptions through the IVT (FLAGS, CS, IP pushed; IF cleared), IRET back,
 * an IVT entry past the IDT limit (#GP, then #DF: shutdown). */
static void test_real_mode_interrupts(void)
{
	uint16_t frame[3];

	machine_reset();
	real_mode_start(0x0800);
	/* int 0x21; ud2; hlt — the handlers: 0x0600:0x0010 iret, 0x0000:0x6100 (for #UD) iret */
	memcpy(ram + 0x8000, (const uint8_t[]){ 0xCD, 0x21, 0x0F, 0x0B, 0xF4 }, 5);
	memcpy(ram + 4 * 0x21, (const uint16_t[]){ 0x0010, 0x0600 }, 4);
	memcpy(ram + 4 * 6, (const uint16_t[]){ 0x6100, 0x0000 }, 4);
	ram[0x6010] = 0xCF;
	ram[0x6100] = 0xCF;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x0600);
	CHECK_EQ(cpu.s.seg[SEG_CS].base, 0x6000);
	CHECK_EQ(cpu.s.rip, 0x10);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], 0x7000 - 6);
	memcpy(frame, ram + 0x7000 - 6, 6);
	CHECK_EQ(frame[0], 2); /* the next instruction */
	CHECK_EQ(frame[1], 0x0800);
	CHECK(frame[2] & EMU_FLAG_IF);
	CHECK(!(cpu.s.rflags & EMU_FLAG_IF));
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* iret */
	CHECK_EQ(cpu.s.seg[SEG_CS].base, 0x8000);
	CHECK_EQ(cpu.s.rip, 2);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], 0x7000);
	CHECK(cpu.s.rflags & EMU_FLAG_IF);
	/* ud2: a fault, delivered with the faulting IP */
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_UD);
	CHECK_EQ(emu_deliver_exception(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.seg[SEG_CS].base, 0);
	CHECK_EQ(cpu.s.rip, 0x6100);
	memcpy(frame, ram + 0x7000 - 6, 6);
	CHECK_EQ(frame[0], 2);
	CHECK_EQ(emu_step(&cpu), EMU_OK); /* iret */
	CHECK_EQ(cpu.s.rip, 2);
	/* an external interrupt while halted resumes after the HLT */
	cpu.s.rip = 4;
	CHECK_EQ(emu_step(&cpu), EMU_HALT);
	CHECK_EQ(emu_inject_interrupt(&cpu, 0x21), EMU_OK);
	CHECK_EQ(cpu.s.rip, 0x10);
	memcpy(frame, ram + 0x7000 - 6, 6);
	CHECK_EQ(frame[0], 5);
	/* an IDT limit that excludes the vector: #GP, which is outside too: #DF, then shutdown */
	cpu.s.idt.limit = 0x1f;
	CHECK_EQ(emu_inject_interrupt(&cpu, 0x21), EMU_SHUTDOWN);
}

/* An AP's way to long mode as Linux's trampoline goes (SIPI vector 9: CS 0x0900, IP 0):
 * lidt/lgdt (32-bit operands), CR0.PE, a far jump into a 32-bit segment, data segments, CR4.PAE,
 * CR3, EFER.LME, CR0.PG, a far jump into the 64-bit segment. */
static void test_real_mode_trampoline(void)
{
	static const uint8_t real16[] = {
		0xFA, /* cli */
		0x8C, 0xC8, 0x8E, 0xD8, 0x8E, 0xD0, /* mov ax, cs; mov ds, ax; mov ss, ax */
		0xBC, 0x00, 0x0F, /* mov sp, 0x0f00 */
		0x66, 0x0F, 0x01, 0x1E, 0x00, 0x01, /* lidtl [0x100] */
		0x66, 0x0F, 0x01, 0x16, 0x06, 0x01, /* lgdtl [0x106] */
		0x0F, 0x20, 0xC0, 0x0C, 0x01, 0x0F, 0x22, 0xC0, /* mov eax, cr0; or al, 1; mov cr0 */
		0x66, 0xEA, 0x40, 0x90, 0x00, 0x00, 0x08, 0x00, /* ljmpl 0x08:0x9040 */
	};
	uint8_t prot32[] = {
		0xB8, 0x18, 0x00, 0x00, 0x00, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0, /* ds/es/ss */
		0xBC, 0x00, 0x9F, 0x00, 0x00, /* mov esp, 0x9f00 */
		0x0F, 0x20, 0xE0, 0x0D, 0x20, 0x00, 0x00, 0x00, 0x0F, 0x22, 0xE0, /* cr4 |= PAE */
		0xB8, 0, 0, 0, 0, 0x0F, 0x22, 0xD8, /* mov eax, PML4; mov cr3, eax */
		0xB9, 0x80, 0x00, 0x00, 0xC0, 0x0F, 0x32, /* rdmsr EFER */
		0x0D, 0x00, 0x01, 0x00, 0x00, 0x0F, 0x30, /* wrmsr EFER | LME */
		0x0F, 0x20, 0xC0, 0x0D, 0x01, 0x00, 0x00, 0x80, 0x0F, 0x22, 0xC0, /* cr0 |= PG */
		0xEA, 0xC0, 0x90, 0x00, 0x00, 0x10, 0x00, /* ljmp 0x10:0x90C0 */
	};
	static const uint8_t long64[] = {
		0x48, 0xB8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* mov rax, imm64 */
		0xF4, /* hlt */
	};
	const uint32_t pml4 = PML4;
	int rc = EMU_OK;

	machine_reset();
	real_mode_start(0x0900);
	cpu.s.efer = 0;
	cpu.s.cr4 = 0;
	memcpy(prot32 + 28, &pml4, 4);
	memcpy(ram + 0x9000, real16, sizeof(real16));
	memcpy(ram + 0x9040, prot32, sizeof(prot32));
	memcpy(ram + 0x90C0, long64, sizeof(long64));
	CHECK(0x9040 + sizeof(prot32) <= 0x90C0);
	memcpy(ram + 0x9100, (const uint8_t[]){ 0, 0, 0, 0, 0, 0 }, 6); /* IDT: none yet */
	memcpy(ram + 0x9106, (const uint8_t[]){ 0x4f, 0x00, 0x00, 0x00, 0x01, 0x00 }, 6);
	CHECK_EQ(cpu.mode, EMU_MODE_16);
	for (unsigned i = 0; i < 40 && rc == EMU_OK; i++) {
		rc = emu_step(&cpu);
		if (cpu.s.rip == 0x1e && cpu.s.seg[SEG_CS].base == 0x9000) { /* at the ljmpl */
			CHECK(cpu.s.cr0 & CR0_PE); /* PE set, still 16-bit code until the jump */
			CHECK_EQ(cpu.mode, EMU_MODE_16);
		}
		if (cpu.s.rip == 0x9040)
			CHECK_EQ(cpu.mode, EMU_MODE_32);
	}
	CHECK_EQ(rc, EMU_HALT);
	CHECK_EQ(cpu.s.gpr[CPU_RAX], 0x1122334455667788ull);
	CHECK_EQ(cpu.mode, EMU_MODE_64);
	CHECK(cpu.s.efer & EFER_LMA);
	CHECK_EQ(cpu.s.seg[SEG_CS].selector, 0x10);
	CHECK_EQ(cpu.s.seg[SEG_SS].selector, 0x18);
	CHECK_EQ(cpu.s.gdt.base, GDT);
	CHECK_EQ(cpu.s.gdt.limit, 0x4f);
	CHECK_EQ(cpu.s.idt.limit, 0);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], 0x9f00);
}

/* gdb's debugging on the software CPU (debug.c): one instruction at USER_RW with RBX pointing
 * at `target`; returns the DR6 bits of data breakpoints it hit. */
static unsigned debug_run(struct emu_debug *d, const uint8_t *bytes, unsigned n, uint64_t target)
{
	code(USER_RW, bytes, n);
	cpu.s.gpr[CPU_RBX] = target;
	d->data_hits = 0;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	return d->data_hits;
}

static void test_debug_watchpoints(void)
{
	static const uint8_t store8[] = { 0x88, 0x03 }, load32[] = { 0x8b, 0x03 },
			     store64[] = { 0x48, 0x89, 0x03 }, lock_inc[] = { 0xf0, 0xff, 0x03 },
			     push[] = { 0x50 };
	const uint64_t w = USER_RW + 0x800;
	struct emu_debug d;
	struct cpu_debug ctl = { .enabled = true, .nr_hw = 3 };

	machine_reset();
	ctl.hw[0] = (typeof(ctl.hw[0])){ .addr = w, .type = CPU_HW_WRITE, .len = 4 };
	ctl.hw[1] = (typeof(ctl.hw[1])){ .addr = w + 8, .type = CPU_HW_ACCESS, .len = 8 };
	ctl.hw[2] = (typeof(ctl.hw[2])){ .addr = USER_RW + 0xEF8, .type = CPU_HW_WRITE, .len = 8 };
	emu_debug_set(&cpu, &d, &ctl);
	CHECK(cpu.mem != &emu_paged_memory_ops); /* watching: the wrapper */
	CHECK_EQ(debug_run(&d, store8, sizeof(store8), w + 3), 1); /* last byte of a dword */
	CHECK_EQ(debug_run(&d, store8, sizeof(store8), w + 4), 0); /* the byte after it */
	CHECK_EQ(debug_run(&d, load32, sizeof(load32), w), 0); /* a read: write-only */
	CHECK_EQ(debug_run(&d, load32, sizeof(load32), w + 12), 2); /* read/write, length 8 */
	CHECK_EQ(debug_run(&d, store64, sizeof(store64), w + 1), 3); /* unaligned over both */
	CHECK_EQ(debug_run(&d, lock_inc, sizeof(lock_inc), w), 1); /* locked read-modify-write */
	cpu.s.gpr[CPU_RSP] = USER_RW + 0xF00;
	CHECK_EQ(debug_run(&d, push, sizeof(push), 0), 4); /* an implicit stack write */
	/* Off again: the CPU's own memory ops, nothing recorded. */
	ctl.enabled = false;
	emu_debug_set(&cpu, &d, &ctl);
	CHECK(cpu.mem == &emu_paged_memory_ops);
	CHECK(cpu.debug == NULL);
}

static void test_debug_breakpoints(void)
{
	static const uint8_t int3[] = { 0xcc };
	struct emu_debug d;
	struct cpu_debug ctl = { .enabled = true, .sw_breakpoints = true, .nr_hw = 2 };

	machine_reset();
	ctl.hw[0] = (typeof(ctl.hw[0])){ .addr = USER_RW + 0x10, .type = CPU_HW_WRITE, .len = 1 };
	ctl.hw[1] = (typeof(ctl.hw[1])){ .addr = USER_RW + 0x10, .type = CPU_HW_EXEC, .len = 1 };
	emu_debug_set(&cpu, &d, &ctl);
	CHECK_EQ(emu_debug_exec_hits(&d, USER_RW + 0x10), 2);
	CHECK_EQ(emu_debug_exec_hits(&d, USER_RW + 0x11), 0);
	/* INT3 with gdb's breakpoints in: a #BP fault, RIP still at the INT3, nothing delivered. */
	code(USER_RW, int3, sizeof(int3));
	uint64_t rsp = cpu.s.gpr[CPU_RSP];
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_BP);
	CHECK_EQ(cpu.s.rip, USER_RW);
	CHECK_EQ(cpu.s.gpr[CPU_RSP], rsp);
	/* An INIT (emu_cpu_init) keeps the debugging state. */
	struct cpu_state st;
	emu_cpu_get_state(&cpu, &st);
	emu_cpu_init(&cpu, &st);
	CHECK(cpu.debug == &d);
	/* Without them: the guest's own #BP, through the IDT, after the INT3. */
	ctl.enabled = false;
	emu_debug_set(&cpu, &d, &ctl);
	code(USER_RW, int3, sizeof(int3));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * 3);
}

/* The guest's own debug registers: execute breakpoints as #DB faults (RF lets the instruction
 * run), data breakpoints and TF single step as #DB traps after the instruction, DR6's bits,
 * nothing while DR7 enables nothing, gdb's watchpoints beside the guest's. */
static void test_guest_debug_registers(void)
{
	static const uint8_t nops[] = { 0x90, 0x90, 0x90 }, store8[] = { 0x88, 0x03 },
			     load8[] = { 0x8a, 0x03 }, int80[] = { 0xcd, 0x80 },
			     mov_dr7[] = { 0x0f, 0x23, 0xf8, 0x0f, 0x21, 0xf9 };
	const uint64_t w = USER_RW + 0x800;

	machine_reset();
	CHECK_EQ(cpu.dr[6], 0xFFFF0FF0);
	CHECK_EQ(cpu.dr[7], 0x400);
	/* An execute breakpoint on the second NOP (DR0, L0, RW 00). */
	code(USER_RW, nops, sizeof(nops));
	cpu.dr[0] = USER_RW + 1;
	cpu.dr[7] = 0x401;
	emu_debug_update(&cpu);
	CHECK(cpu.mem == &emu_paged_memory_ops); /* no data breakpoint: no wrapper */
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RW + 1); /* one instruction at a time while DR7 enables one */
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_DB);
	CHECK_EQ(cpu.s.rip, USER_RW + 1); /* a fault */
	CHECK_EQ(cpu.dr[6], 0xFFFF0FF1);
	cpu.s.rflags |= EMU_FLAG_RF; /* what the handler's IRET loads */
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RW + 2);
	CHECK(!(cpu.s.rflags & EMU_FLAG_RF)); /* cleared after that one instruction */
	/* Disabled (L0 clear): the same address does not fire. */
	cpu.dr[7] = 0x400;
	emu_debug_update(&cpu);
	cpu.s.rip = USER_RW + 1;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RW + 2);
	/* Data breakpoints: DR1 write-only 4 bytes at w (G1, RW 01, LEN 11), DR2 read/write one
	 * byte at w + 9 (L2, RW 11, LEN 00); a trap after the instruction. */
	cpu.dr[1] = w + 2; /* the low bits below the length are ignored */
	cpu.dr[2] = w + 9;
	cpu.dr[7] = 0x400 | (1u << 3) | (1u << 4) | (0xDu << 20) | (0x3u << 24);
	emu_debug_update(&cpu);
	CHECK(cpu.mem != &emu_paged_memory_ops);
	code(USER_RW, store8, sizeof(store8));
	cpu.s.gpr[CPU_RBX] = w + 3;
	cpu.s.gpr[CPU_RAX] = 0x42;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_DB);
	CHECK_EQ(cpu.s.rip, USER_RW + 2); /* a trap: the store is done */
	CHECK_EQ(ram[w + 3], 0x42);
	CHECK_EQ(cpu.dr[6] & 0xF, 2);
	code(USER_RW, load8, sizeof(load8)); /* a read of a write-only breakpoint */
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	cpu.s.gpr[CPU_RBX] = w + 9;
	code(USER_RW, load8, sizeof(load8));
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.dr[6] & 0xF, 4);
	cpu.s.gpr[CPU_RBX] = w + 10;
	code(USER_RW, store8, sizeof(store8));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	/* gdb's watchpoint on the same byte: its hit for the stub, the guest's #DB as well. */
	struct emu_debug d;
	struct cpu_debug ctl = { .enabled = true, .nr_hw = 1 };
	ctl.hw[0] = (typeof(ctl.hw[0])){ .addr = w + 9, .type = CPU_HW_ACCESS, .len = 1 };
	emu_debug_set(&cpu, &d, &ctl);
	cpu.s.gpr[CPU_RBX] = w + 9;
	code(USER_RW, load8, sizeof(load8));
	d.data_hits = 0;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(d.data_hits, 1);
	CHECK_EQ(cpu.dr[6] & 0xF, 4);
	ctl.enabled = false;
	emu_debug_set(&cpu, &d, &ctl);
	CHECK(cpu.mem != &emu_paged_memory_ops); /* the guest's still need the wrapper */
	cpu.dr[7] = 0x400;
	emu_debug_update(&cpu);
	CHECK(cpu.mem == &emu_paged_memory_ops);
	/* Single step: a trap with BS after each instruction that starts with TF set. */
	code(USER_RW, nops, sizeof(nops));
	cpu.s.rflags |= EMU_FLAG_TF;
	cpu.dr[6] = 0xFFFF0FF0;
	CHECK_EQ(emu_run(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_DB);
	CHECK_EQ(cpu.s.rip, USER_RW + 1);
	CHECK_EQ(cpu.dr[6], 0xFFFF0FF0 | EMU_DR6_BS);
	/* A REP string instruction: one iteration per step, RIP still on it. */
	static const uint8_t rep_stosb[] = { 0xf3, 0xaa }, mov_ss_nop[] = { 0x8e, 0xd0, 0x90 };
	code(USER_RW, rep_stosb, sizeof(rep_stosb));
	cpu.s.gpr[CPU_RDI] = w;
	cpu.s.gpr[CPU_RCX] = 3;
	CHECK_EQ(emu_run(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_DB);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 2);
	CHECK_EQ(cpu.s.rip, USER_RW);
	/* MOV SS holds the trap back to the instruction after it. */
	code(USER_RW, mov_ss_nop, sizeof(mov_ss_nop));
	cpu.s.gpr[CPU_RAX] = 0x2b;
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_DB);
	CHECK_EQ(cpu.s.rip, USER_RW + 3);
	/* ... but not across INT n, which clears TF for its handler. */
	code(USER_RW, int80, sizeof(int80));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * 0x80);
	CHECK(!(cpu.s.rflags & EMU_FLAG_TF));
	/* MOV to DR7 (CPL 0): the reserved upper half is #GP; bit 10 reads as 1. */
	machine_reset();
	to_kernel_mode(0x100000);
	code(0x100000, mov_dr7, sizeof(mov_dr7));
	cpu.s.gpr[CPU_RAX] = 1ull << 32;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_GP);
	cpu.s.gpr[CPU_RAX] = 0x00010003; /* L0 G0, RW0 01 */
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.gpr[CPU_RCX], 0x00010403);
	CHECK(cpu.mem != &emu_paged_memory_ops);
	/* General detect (DR7.GD): the next MOV DR is a #DB fault with DR6.BD, GD cleared. */
	cpu.dr[7] |= 1u << 13;
	cpu.s.rip = 0x100003;
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_DB);
	CHECK_EQ(cpu.s.rip, 0x100003);
	CHECK(cpu.dr[6] & EMU_DR6_BD);
	CHECK(!(cpu.dr[7] & (1u << 13)));
	CHECK_EQ(emu_step(&cpu), EMU_OK);
	/* INIT: the reset values, no wrapper. */
	struct cpu_state st;
	emu_cpu_get_state(&cpu, &st);
	emu_cpu_init(&cpu, &st);
	CHECK_EQ(cpu.dr[7], 0x400);
	CHECK(cpu.mem == &emu_paged_memory_ops);
}

/* RF: a fault's frame has it set (SDM Vol. 3 §18.3.1.1), an IRET that loads it lets the next
 * instruction past its breakpoint, and that instruction clears it as it starts (a software
 * interrupt then pushes RF = 0). */
static void test_resume_flag(void)
{
	static const uint8_t load_np[] = { 0x8b, 0x04, 0x25, 0x00, 0x40, 0x20, 0x00 },
			     nop_int80[] = { 0x90, 0xcd, 0x80 };

	machine_reset();
	code(USER_RW, load_np, sizeof(load_np));
	CHECK_EQ(emu_step(&cpu), EMU_EXCEPTION);
	CHECK_EQ(cpu.exc.vector, EMU_VEC_PF);
	CHECK_EQ(emu_deliver_exception(&cpu), EMU_OK);
	CHECK(get64(cpu.s.gpr[CPU_RSP] + 24) & EMU_FLAG_RF); /* error code, RIP, CS, RFLAGS */
	CHECK(!(cpu.s.rflags & EMU_FLAG_RF));
	machine_reset();
	code(USER_RW, nop_int80, sizeof(nop_int80));
	cpu.dr[0] = USER_RW; /* an execute breakpoint on the NOP, which RF lets pass */
	cpu.dr[7] = 0x401;
	emu_debug_update(&cpu);
	cpu.s.rflags |= EMU_FLAG_RF;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, USER_RW + 1);
	CHECK(!(cpu.s.rflags & EMU_FLAG_RF));
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * 0x80);
	CHECK(!(get64(cpu.s.gpr[CPU_RSP] + 16) & EMU_FLAG_RF)); /* RIP, CS, RFLAGS */
	/* Without breakpoints too: RF from an IRET does not outlive the next instruction. */
	machine_reset();
	code(USER_RW, nop_int80, sizeof(nop_int80));
	cpu.s.rflags |= EMU_FLAG_RF;
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(emu_run(&cpu), EMU_OK);
	CHECK_EQ(cpu.s.rip, HANDLERS + 16 * 0x80);
	CHECK(!(get64(cpu.s.gpr[CPU_RSP] + 16) & EMU_FLAG_RF));
}

int main(void)
{
	ram = aligned_alloc(4096, MEM_SIZE);
	if (!ram || memory_code_init(&code_pages, ram, MEM_SIZE) < 0)
		return 1;
	RUN_TEST(test_paging_translations);
	RUN_TEST(test_paging_faults);
	RUN_TEST(test_tlb_caches_until_invlpg);
	RUN_TEST(test_tlb_flush_kinds);
	RUN_TEST(test_tlb_second_way);
	RUN_TEST(test_jit_tlb_second_way);
	RUN_TEST(test_tlb_privilege);
	RUN_TEST(test_page_crossing_write_is_all_or_nothing);
	RUN_TEST(test_mmio_and_pio);
	RUN_TEST(test_exception_from_user_mode);
	RUN_TEST(test_page_fault_frame);
	RUN_TEST(test_software_interrupts);
	RUN_TEST(test_double_and_triple_fault);
	RUN_TEST(test_syscall_sysret);
	RUN_TEST(test_msrs_and_control_registers);
	RUN_TEST(test_long_mode_activation);
	RUN_TEST(test_far_return);
	RUN_TEST(test_rep_restart);
	RUN_TEST(test_rep_strings_bulk);
	RUN_TEST(test_rep_strings_wrap);
	RUN_TEST(test_rep_strings_block_and_mmio);
	RUN_TEST(test_fetch_across_pages);
	RUN_TEST(test_interrupt_injection);
	RUN_TEST(test_protected_to_long_mode);
	RUN_TEST(test_real_mode_far_jump);
	RUN_TEST(test_real_mode_interrupts);
	RUN_TEST(test_protected_mode_interrupts);
	RUN_TEST(test_real_mode_trampoline);
	RUN_TEST(test_decode_cache_sees_new_code);
	RUN_TEST(test_blocks);
	RUN_TEST(test_blocks_global_pages);
	RUN_TEST(test_blocks_same_bucket);
	RUN_TEST(test_blocks_replaced_in_turn);
	RUN_TEST(test_blocks_same_bytes_recompiled);
	RUN_TEST(test_block_chains);
	RUN_TEST(test_block_chain_checks); /* before the loops that need its chain budget */
	RUN_TEST(test_chain_cpuid_serialises);
	RUN_TEST(test_chain_relinked_after_eviction);
	RUN_TEST(test_chain_store_at_block_limit);
	RUN_TEST(test_blocks_compiled);
	RUN_TEST(test_jit_shift_16);
	RUN_TEST(test_block_chains_linked);
	RUN_TEST(test_cli_pushf_in_block);
	RUN_TEST(test_rep_stos_in_block);
	RUN_TEST(test_rdtsc_user);
	RUN_TEST(test_tzcnt_is_bsf);
	RUN_TEST(test_jit_cross_page_links);
	RUN_TEST(test_jit_cross_page_alias);
	RUN_TEST(test_jit_chained_block_writes_own_page);
	RUN_TEST(test_jit_return_lookup);
	RUN_TEST(test_jit_return_prediction);
	RUN_TEST(test_jit_lookup_rebuilt_block);
	RUN_TEST(test_jit_cross_page_exact);
	RUN_TEST(test_jit_return_ring_overflow);
	RUN_TEST(test_jit_memory_paths);
	RUN_TEST(test_jit_tlb_page_crossing);
	RUN_TEST(test_jit_cross_block_chained);
	RUN_TEST(test_jit_templates_random);
	RUN_TEST(test_segment_probes);
	RUN_TEST(test_sse_state);
	RUN_TEST(test_x87_state);
	RUN_TEST(test_io_permission_bitmap);
	RUN_TEST(test_string_io);
	RUN_TEST(test_debug_watchpoints);
	RUN_TEST(test_debug_breakpoints);
	RUN_TEST(test_guest_debug_registers);
	RUN_TEST(test_resume_flag);
	RUN_TEST(test_mmx_and_fxsave_formats);
	RUN_TEST(test_cpuid_matches_implementation);
	RUN_TEST(test_family_and_fast_strings);
	RUN_TEST(test_arch_capabilities_msr);
	RUN_TEST(test_bios_sign_id_msr);
	emu_cpu_destroy(&cpu);
	free(ram);
	return TEST_EXIT();
}
