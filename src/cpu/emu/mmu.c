/* Linear → physical translation: 4-level paging (SDM Vol. 3 §4.5), access rights (§4.6),
 * #PF error codes (§4.7), accessed/dirty bits (§4.8) and a software TLB (§4.10).
 *
 * Not implemented yet: 32-bit and PAE paging outside long mode (an access with CR0.PG set but
 * EFER.LMA clear raises #GP, never a wrong translation), 5-level paging, protection keys, SMAP.
 * Page-table entries must live in RAM: an entry in MMIO space reads as not present. */
#include "cpu/emu/emu.h"

#include <string.h>

#define PAGE_SIZE 4096ull
#define PAGE_MASK (~(PAGE_SIZE - 1))

#define PTE_P (1ull << 0)
#define PTE_W (1ull << 1)
#define PTE_U (1ull << 2)
#define PTE_A (1ull << 5)
#define PTE_D (1ull << 6)
#define PTE_PS (1ull << 7)
#define PTE_G (1ull << 8)
#define PTE_NX (1ull << 63)

/* The physical-address width the CPUID table reports (leaf 0x80000008). */
#define EMU_PHYS_BITS 46
#define PHYS_ADDR_MASK (((1ull << EMU_PHYS_BITS) - 1) & PAGE_MASK)

#define PF_ERR_P (1u << 0)
#define PF_ERR_W (1u << 1)
#define PF_ERR_U (1u << 2)
#define PF_ERR_RSVD (1u << 3)
#define PF_ERR_I (1u << 4)

#define CR0_WP (1ull << 16)
#define CR4_PSE (1ull << 4)
#define CR4_PGE (1ull << 7)
#define CR4_SMEP (1ull << 20)
#define EFER_NXE (1ull << 11)

#define TLB_VALID EMU_TLB_VALID
#define TLB_USER EMU_TLB_USER

struct walk {
	uint64_t gpa; /* of the byte, not the page */
	uint64_t *entries[4]; /* host pointers of the entries used, for A/D updates */
	unsigned nr_entries;
	bool writable, user, executable, global;
};

static bool is_user_access(const struct emu_cpu *cpu, enum emu_access access)
{
	return cpu->cpl == 3 && access != EMU_ACCESS_SYS_READ;
}

static int page_fault(struct emu_cpu *cpu, uint64_t linear, uint32_t error_code)
{
	cpu->exc.cr2 = linear;
	return emu_raise(cpu, EMU_VEC_PF, true, error_code);
}

/* Bits that must be 0 in an entry at `level` (4 = PML4E .. 1 = PTE), SDM Vol. 3 table 4-20. */
static uint64_t reserved_bits(const struct emu_cpu *cpu, unsigned level, uint64_t pte)
{
	uint64_t rsvd = ~((1ull << EMU_PHYS_BITS) - 1) & ~PTE_NX & ((1ull << 52) - 1);

	/* Bits 62:52 are ignored (available to software) and protection keys are off. */
	if (!(cpu->s.efer & EFER_NXE))
		rsvd |= PTE_NX;
	if (level == 4)
		rsvd |= PTE_PS; /* and bit 8 (G) is ignored */
	else if (level == 3 && (pte & PTE_PS))
		rsvd |= 0x3fffe000ull; /* 1 GiB page: bits 29:13 */
	else if (level == 2 && (pte & PTE_PS))
		rsvd |= 0x1fe000ull; /* 2 MiB page: bits 20:13 */
	return rsvd;
}

static int walk_long_mode(struct emu_cpu *cpu, uint64_t linear, enum emu_access access,
			  struct walk *w)
{
	uint64_t table = cpu->s.cr3 & PHYS_ADDR_MASK;
	bool user = is_user_access(cpu, access);
	uint32_t err = (access == EMU_ACCESS_WRITE ? PF_ERR_W : 0) | (user ? PF_ERR_U : 0);
	bool nx_enabled = cpu->s.efer & EFER_NXE;

	if (access == EMU_ACCESS_FETCH && (nx_enabled || (cpu->s.cr4 & CR4_SMEP)))
		err |= PF_ERR_I;
	w->writable = w->user = w->executable = true;
	w->nr_entries = 0;
	for (unsigned level = 4; level >= 1; level--) {
		unsigned shift = 12 + 9 * (level - 1);
		uint64_t pte_gpa = table + (((linear >> shift) & 511) << 3);
		uint8_t *page = cpu->phys->ram_page(cpu->phys_opaque, pte_gpa & PAGE_MASK);
		uint64_t *entry, pte;

		if (!page)
			return page_fault(cpu, linear, err);
		entry = (uint64_t *)(page + (pte_gpa & ~PAGE_MASK));
		pte = __atomic_load_n(entry, __ATOMIC_RELAXED);
		if (!(pte & PTE_P))
			return page_fault(cpu, linear, err);
		if (pte & reserved_bits(cpu, level, pte))
			return page_fault(cpu, linear, err | PF_ERR_P | PF_ERR_RSVD);
		w->entries[w->nr_entries++] = entry;
		w->writable &= !!(pte & PTE_W);
		w->user &= !!(pte & PTE_U);
		if (nx_enabled && (pte & PTE_NX))
			w->executable = false;
		if (level == 1 || (pte & PTE_PS)) {
			uint64_t size_mask = (1ull << shift) - 1;

			w->gpa = ((pte & PHYS_ADDR_MASK) & ~size_mask) | (linear & size_mask);
			w->global = (pte & PTE_G) && (cpu->s.cr4 & CR4_PGE);
			break;
		}
		table = pte & PHYS_ADDR_MASK;
	}
	/* Access rights (SDM Vol. 3 §4.6.1). */
	if (user) {
		if (!w->user || (access == EMU_ACCESS_WRITE && !w->writable))
			return page_fault(cpu, linear, err | PF_ERR_P);
	} else {
		if (access == EMU_ACCESS_WRITE && !w->writable && (cpu->s.cr0 & CR0_WP))
			return page_fault(cpu, linear, err | PF_ERR_P);
		if (access == EMU_ACCESS_FETCH && w->user && (cpu->s.cr4 & CR4_SMEP))
			return page_fault(cpu, linear, err | PF_ERR_P);
	}
	if (access == EMU_ACCESS_FETCH && !w->executable)
		return page_fault(cpu, linear, err | PF_ERR_P);
	/* Accessed on every level, dirty on the leaf for writes; atomically, as other vCPUs
	 * and the guest may update the same entries. */
	for (unsigned i = 0; i < w->nr_entries; i++) {
		uint64_t bits = PTE_A;

		if (i == w->nr_entries - 1 && access == EMU_ACCESS_WRITE)
			bits |= PTE_D;
		if ((__atomic_load_n(w->entries[i], __ATOMIC_RELAXED) & bits) != bits) {
			__atomic_fetch_or(w->entries[i], bits, __ATOMIC_RELAXED);
			/* Page tables are RAM like any other: code may share their page. */
			emu_code_stored(cpu, w->entries[i]);
		}
	}
	return EMU_OK;
}

static bool canonical(uint64_t linear)
{
	return (uint64_t)((int64_t)(linear << 16) >> 16) == linear;
}

static int walk(struct emu_cpu *cpu, uint64_t linear, enum emu_access access, struct walk *w)
{
	if (!(cpu->s.cr0 & CR0_PG)) {
		w->gpa = cpu->s.efer & EFER_LMA ? linear : linear & 0xffffffffull;
		w->writable = w->user = w->executable = true;
		w->global = false;
		return EMU_OK;
	}
	if (!(cpu->s.efer & EFER_LMA))
		return emu_raise(cpu, EMU_VEC_GP, true, 0); /* legacy paging: not yet */
	if (!canonical(linear)) /* #SS for stack accesses is not distinguished yet */
		return emu_raise(cpu, EMU_VEC_GP, true, 0);
	return walk_long_mode(cpu, linear, access, w);
}

int emu_mmu_translate(struct emu_cpu *cpu, uint64_t linear, enum emu_access access,
		      uint64_t *gpa)
{
	struct walk w;
	int rc = walk(cpu, linear, access, &w);

	if (rc == EMU_OK)
		*gpa = w.gpa;
	return rc;
}

/* ---- TLB ---- */

static struct emu_tlb_entry *tlb_array(struct emu_cpu *cpu, enum emu_access access)
{
	switch (access) {
	case EMU_ACCESS_WRITE:
		return cpu->tlb.write;
	case EMU_ACCESS_FETCH:
		return cpu->tlb.fetch;
	default:
		return cpu->tlb.read;
	}
}

static uint64_t tlb_tag(uint64_t linear, bool user)
{
	return (linear & PAGE_MASK) | (user ? TLB_USER : 0) | TLB_VALID;
}

/* The host address of `linear` through its entry, NULL when the page is not RAM. */
static uint8_t *tlb_host(const struct emu_tlb_entry *e, uint64_t linear)
{
	return e->tag & EMU_TLB_NOHOST ? NULL : (uint8_t *)(uintptr_t)(linear + e->addend);
}

/* The entry at fill-log index `pos`: all[pos], or way2[pos - 3 * EMU_TLB_SIZE]. */
static struct emu_tlb_entry *tlb_at(struct emu_tlb *tlb, unsigned pos)
{
	return pos < 3 * EMU_TLB_SIZE ? &tlb->all[pos] : &tlb->way2[pos - 3 * EMU_TLB_SIZE];
}

/* Drop every entry that is not global: the ones filled since the last such flush (the others
 * went then), or all of them (both ways) when more were filled than the log holds. */
static void tlb_flush_nonglobal(struct emu_tlb *tlb)
{
	if (tlb->nr_fills <= EMU_TLB_FILL_LOG) {
		for (unsigned i = 0; i < tlb->nr_fills; i++) {
			struct emu_tlb_entry *e = tlb_at(tlb, tlb->fills[i]);

			if (!e->global)
				e->tag = 0;
		}
	} else {
		for (unsigned i = 0; i < 6 * EMU_TLB_SIZE; i++)
			if (!tlb_at(tlb, i)->global)
				tlb_at(tlb, i)->tag = 0;
	}
	tlb->nr_fills = 0;
}

void emu_tlb_flush(struct emu_cpu *cpu, bool include_global)
{
	struct emu_tlb *tlb = &cpu->tlb;

	tlb->generation++;
	if (include_global)
		tlb->generation_global++;
	if (include_global)
		EMU_STAT_INC(tlb->flushes_all);
	else
		EMU_STAT_INC(tlb->flushes_nonglobal);
	if (!tlb->used)
		return;
	if (!include_global) {
		tlb_flush_nonglobal(tlb);
		return;
	}
	tlb->used = false;
	tlb->nr_fills = 0;
	for (unsigned i = 0; i < 3 * EMU_TLB_SIZE; i++)
		tlb->all[i].tag = tlb->way2[i].tag = 0;
}

void emu_tlb_flush_page(struct emu_cpu *cpu, uint64_t linear)
{
	unsigned i = (unsigned)(linear >> 12) & (EMU_TLB_SIZE - 1);

	/* Large pages are cached per 4 KiB page, so flushing the one page is enough. What cpu.c
	 * caches by linear address is not kept per page: all of it goes, global pages' too. */
	cpu->tlb.generation++;
	cpu->tlb.generation_global++;
	EMU_STAT_INC(cpu->tlb.flushes_page);
	for (unsigned k = i; k < 3 * EMU_TLB_SIZE; k += EMU_TLB_SIZE) { /* each kind's entry */
		cpu->tlb.all[k].tag = 0;
		cpu->tlb.way2[k].tag = 0;
	}
}

bool emu_tlb_fetch_global(const struct emu_cpu *cpu, uint64_t linear)
{
	const struct emu_tlb_entry *e = &cpu->tlb.fetch[(linear >> 12) & (EMU_TLB_SIZE - 1)];

	/* Filled for either privilege: whether the page is global does not depend on it. */
	return e->global && (e->tag & ~(TLB_USER | EMU_TLB_NOHOST)) == tlb_tag(linear, false);
}

static void tlb_count_miss(struct emu_tlb *tlb, enum emu_access access)
{
	if (access == EMU_ACCESS_WRITE)
		EMU_STAT_INC(tlb->misses_write);
	else if (access == EMU_ACCESS_FETCH)
		EMU_STAT_INC(tlb->misses_fetch);
	else
		EMU_STAT_INC(tlb->misses_read);
}

/* Remember a fill for tlb_flush_nonglobal() (counting on past the log's size: it overflowed):
 * the entry at fill-log index `pos` may hold a non-global page. */
static void tlb_log_fill(struct emu_tlb *tlb, unsigned pos)
{
	if (tlb->nr_fills < EMU_TLB_FILL_LOG)
		tlb->fills[tlb->nr_fills] = (uint16_t)pos;
	if (tlb->nr_fills <= EMU_TLB_FILL_LOG)
		tlb->nr_fills++;
}

/* Entry `old` (fill-log index `pos`) is about to hold a page, non-global or not: the log must
 * name the position if it will hold a non-global page. One that holds a non-global page now
 * is named already (every such position is, since the last flush of them), so only a position
 * that held none does: a swap of two hot kernel pages (global) or of two user pages (both
 * non-global) logs nothing, and alternating pages do not overflow the log into full scans. */
static void tlb_log_move(struct emu_tlb *tlb, unsigned pos, const struct emu_tlb_entry *old,
			 bool global)
{
	if (!global && (!old->tag || old->global))
		tlb_log_fill(tlb, pos);
}

/* What every fill of an entry (or a swap of the ways) does before compiled code may use it. */
static void tlb_note_fill(struct emu_cpu *cpu)
{
	cpu->tlb.used = true;
	if (cpu->code && cpu->code->version)
		cpu->tlb.code_word_bias = (uint64_t)(uintptr_t)cpu->code->version -
					  ((uint64_t)(uintptr_t)cpu->code->base >> 12) * 4;
}

/* A miss of entry `e` (all[pos]) whose page is in its second way: swap the ways, so the page
 * is where the fast paths look and the one it replaces stays a swap away. */
static void tlb_swap_ways(struct emu_cpu *cpu, struct emu_tlb_entry *e, unsigned pos)
{
	struct emu_tlb_entry *w2 = &cpu->tlb.way2[pos], t = *e;

	tlb_log_move(&cpu->tlb, pos, e, w2->global);
	tlb_log_move(&cpu->tlb, 3 * EMU_TLB_SIZE + pos, w2, t.global);
	*e = *w2;
	*w2 = t;
	EMU_STAT_INC(cpu->tlb.way2_hits);
	tlb_note_fill(cpu);
}

/* The TLB entry for the page of `linear`, walking the page tables on a miss of both ways. */
static int tlb_lookup(struct emu_cpu *cpu, uint64_t linear, enum emu_access access,
		      struct emu_tlb_entry **out)
{
	bool user = is_user_access(cpu, access);
	struct emu_tlb_entry *e = &tlb_array(cpu, access)[(linear >> 12) & (EMU_TLB_SIZE - 1)];
	unsigned pos = (unsigned)(e - cpu->tlb.all);
	uint64_t tag = tlb_tag(linear, user);
	struct walk w;
	uint8_t *host;
	int rc;

	if ((e->tag & ~EMU_TLB_NOHOST) == tag) {
		*out = e;
		return EMU_OK;
	}
	if ((cpu->tlb.way2[pos].tag & ~EMU_TLB_NOHOST) == tag) {
		tlb_swap_ways(cpu, e, pos);
		*out = e;
		return EMU_OK;
	}
	tlb_count_miss(&cpu->tlb, access);
	if ((rc = walk(cpu, linear, access, &w)))
		return rc;
	if (e->tag) { /* the page it replaces moves to the second way */
		tlb_log_move(&cpu->tlb, 3 * EMU_TLB_SIZE + pos, &cpu->tlb.way2[pos], e->global);
		cpu->tlb.way2[pos] = *e;
	}
	tlb_log_move(&cpu->tlb, pos, e, w.global);
	tlb_note_fill(cpu);
	e->gpa = w.gpa & PAGE_MASK;
	host = cpu->phys->ram_page(cpu->phys_opaque, e->gpa);
	e->tag = host ? tag : tag | EMU_TLB_NOHOST;
	e->addend = host ? (uint64_t)(uintptr_t)host - (linear & PAGE_MASK) : 0;
	e->global = w.global;
	*out = e;
	return EMU_OK;
}

/* ---- memory ops ---- */

static int page_read(struct emu_cpu *cpu, struct emu_tlb_entry *e, uint64_t linear, void *dst,
		     unsigned len)
{
	unsigned off = (unsigned)(linear & ~PAGE_MASK);
	uint8_t *host = tlb_host(e, linear);

	if (host) {
		memcpy(dst, host, len);
		return EMU_OK;
	}
	cpu->block_exit = true;
	return cpu->phys->mmio(cpu, e->gpa + off, dst, len, false);
}

static int page_write(struct emu_cpu *cpu, struct emu_tlb_entry *e, uint64_t linear,
		      const void *src, unsigned len)
{
	unsigned off = (unsigned)(linear & ~PAGE_MASK);
	uint8_t *host = tlb_host(e, linear);

	if (e->gpa == cpu->block_page)
		cpu->block_exit = true; /* self-modifying code: fetch the next instruction anew */
	if (host) {
		memcpy(host, src, len);
		emu_code_stored(cpu, host);
		return EMU_OK;
	}
	cpu->block_exit = true;
	return cpu->phys->mmio(cpu, e->gpa + off, (void *)src, len, true);
}

static int paged_read(struct emu_cpu *cpu, uint64_t linear, void *dst, unsigned len,
		      enum emu_access access)
{
	unsigned first = (unsigned)(PAGE_SIZE - (linear & ~PAGE_MASK));
	struct emu_tlb_entry *a, *b;
	int rc;

	if ((rc = tlb_lookup(cpu, linear, access, &a)))
		return rc;
	if (len <= first)
		return page_read(cpu, a, linear, dst, len);
	/* Crossing a page: translate both before touching either. The second lookup may evict
	 * the first entry (same index), so keep a copy. */
	struct emu_tlb_entry first_entry = *a;

	if ((rc = tlb_lookup(cpu, linear + first, access, &b)))
		return rc;
	if ((rc = page_read(cpu, &first_entry, linear, dst, first)))
		return rc;
	return page_read(cpu, b, linear + first, (uint8_t *)dst + first, len - first);
}

static int paged_write(struct emu_cpu *cpu, uint64_t linear, const void *src, unsigned len)
{
	unsigned first = (unsigned)(PAGE_SIZE - (linear & ~PAGE_MASK));
	struct emu_tlb_entry *a, *b;
	int rc;

	if ((rc = tlb_lookup(cpu, linear, EMU_ACCESS_WRITE, &a)))
		return rc;
	if (len <= first)
		return page_write(cpu, a, linear, src, len);
	struct emu_tlb_entry first_entry = *a;

	if ((rc = tlb_lookup(cpu, linear + first, EMU_ACCESS_WRITE, &b)))
		return rc;
	if ((rc = page_write(cpu, &first_entry, linear, src, first)))
		return rc;
	return page_write(cpu, b, linear + first, (const uint8_t *)src + first, len - first);
}

static int paged_fetch(struct emu_cpu *cpu, uint64_t linear, const uint8_t **host,
		       unsigned *avail, uint64_t *gpa)
{
	unsigned off = (unsigned)(linear & ~PAGE_MASK);
	struct emu_tlb_entry *e;
	int rc;

	if ((rc = tlb_lookup(cpu, linear, EMU_ACCESS_FETCH, &e)))
		return rc;
	*host = tlb_host(e, linear);
	*avail = (unsigned)PAGE_SIZE - off;
	*gpa = e->gpa + off;
	return EMU_OK;
}

/* A locked operand: both pages translated for writing (A and D set, #PF with W) before the
 * instruction reads anything; the host address when it is RAM within one page. */
static int paged_lock_operand(struct emu_cpu *cpu, uint64_t linear, unsigned len, void **host)
{
	unsigned off = (unsigned)(linear & ~PAGE_MASK);
	struct emu_tlb_entry *e;
	int rc;

	*host = NULL;
	if ((rc = tlb_lookup(cpu, linear, EMU_ACCESS_WRITE, &e)))
		return rc;
	if (e->gpa == cpu->block_page)
		cpu->block_exit = true;
	if (off + len > PAGE_SIZE)
		return tlb_lookup(cpu, linear + (PAGE_SIZE - off), EMU_ACCESS_WRITE, &e);
	*host = tlb_host(e, linear);
	return EMU_OK;
}

/* A run of elements of REP MOVS/STOS (exec.c): the same TLB entry, faults and A/D bits as
 * page_read()/page_write() of these bytes, so the caller may copy or fill them through the host
 * address. Every write the bulk path makes goes through here: a write to the page of the
 * block being executed ends the block, as page_write() does, and the caller reports the store
 * with emu_code_stored() once it is done (decoded code in the page is then stale). */
static int paged_map(struct emu_cpu *cpu, uint64_t linear, unsigned len, enum emu_access access,
		     void **host)
{
	unsigned off = (unsigned)(linear & ~PAGE_MASK);
	struct emu_tlb_entry *e;
	int rc;

	*host = NULL;
	if (!len || off + len > PAGE_SIZE ||
	    (access != EMU_ACCESS_READ && access != EMU_ACCESS_WRITE))
		return EMU_OK;
	if ((rc = tlb_lookup(cpu, linear, access, &e)))
		return rc;
	if (e->tag & EMU_TLB_NOHOST)
		return EMU_OK; /* MMIO: element by element, through page_read()/page_write() */
	if (access == EMU_ACCESS_WRITE && e->gpa == cpu->block_page)
		cpu->block_exit = true;
	*host = tlb_host(e, linear);
	return EMU_OK;
}

const struct emu_memory_ops emu_paged_memory_ops = {
	.read = paged_read,
	.write = paged_write,
	.fetch = paged_fetch,
	.lock_operand = paged_lock_operand,
	.map = paged_map,
};
