/* Register numbering follows the order of the target description we send, which uses gdb's own
 * feature names (org.gnu.gdb.i386.core/.segments) so gdb recognises the architecture; control
 * registers come in a feature of our own, shown by gdb as extra registers ($cr3, $efer). */
#include "gdb/x86.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum reg_kind { REG_GPR, REG_RIP, REG_FLAGS, REG_SEG, REG_X87, REG_BASE, REG_CR, REG_EFER };

struct reg_def {
	const char *name;
	uint8_t size; /* bytes */
	uint8_t kind;
	uint8_t index; /* enum cpu_reg, enum cpu_seg, control register number */
	const char *type;
	uint8_t feature; /* 0 core, 1 segments, 2 system */
};

#define X87(n) { "st" #n, 10, REG_X87, 0, "i387_ext", 0 }
#define FPU(name) { name, 4, REG_X87, 0, "int", 0 }

static const struct reg_def regs64[] = {
	{ "rax", 8, REG_GPR, CPU_RAX, "int64", 0 }, { "rbx", 8, REG_GPR, CPU_RBX, "int64", 0 },
	{ "rcx", 8, REG_GPR, CPU_RCX, "int64", 0 }, { "rdx", 8, REG_GPR, CPU_RDX, "int64", 0 },
	{ "rsi", 8, REG_GPR, CPU_RSI, "int64", 0 }, { "rdi", 8, REG_GPR, CPU_RDI, "int64", 0 },
	{ "rbp", 8, REG_GPR, CPU_RBP, "data_ptr", 0 }, { "rsp", 8, REG_GPR, CPU_RSP, "data_ptr", 0 },
	{ "r8", 8, REG_GPR, CPU_R8, "int64", 0 },   { "r9", 8, REG_GPR, CPU_R9, "int64", 0 },
	{ "r10", 8, REG_GPR, CPU_R10, "int64", 0 }, { "r11", 8, REG_GPR, CPU_R11, "int64", 0 },
	{ "r12", 8, REG_GPR, CPU_R12, "int64", 0 }, { "r13", 8, REG_GPR, CPU_R13, "int64", 0 },
	{ "r14", 8, REG_GPR, CPU_R14, "int64", 0 }, { "r15", 8, REG_GPR, CPU_R15, "int64", 0 },
	{ "rip", 8, REG_RIP, 0, "code_ptr", 0 },    { "eflags", 4, REG_FLAGS, 0, "int32", 0 },
	{ "cs", 4, REG_SEG, SEG_CS, "int32", 0 },   { "ss", 4, REG_SEG, SEG_SS, "int32", 0 },
	{ "ds", 4, REG_SEG, SEG_DS, "int32", 0 },   { "es", 4, REG_SEG, SEG_ES, "int32", 0 },
	{ "fs", 4, REG_SEG, SEG_FS, "int32", 0 },   { "gs", 4, REG_SEG, SEG_GS, "int32", 0 },
	X87(0), X87(1), X87(2), X87(3), X87(4), X87(5), X87(6), X87(7),
	FPU("fctrl"), FPU("fstat"), FPU("ftag"), FPU("fiseg"),
	FPU("fioff"), FPU("foseg"), FPU("fooff"), FPU("fop"),
	{ "fs_base", 8, REG_BASE, SEG_FS, "int64", 1 }, { "gs_base", 8, REG_BASE, SEG_GS, "int64", 1 },
	{ "cr0", 8, REG_CR, 0, "int64", 2 }, { "cr2", 8, REG_CR, 2, "int64", 2 },
	{ "cr3", 8, REG_CR, 3, "int64", 2 }, { "cr4", 8, REG_CR, 4, "int64", 2 },
	{ "efer", 8, REG_EFER, 0, "int64", 2 },
};

static const struct reg_def regs32[] = {
	{ "eax", 4, REG_GPR, CPU_RAX, "int32", 0 }, { "ecx", 4, REG_GPR, CPU_RCX, "int32", 0 },
	{ "edx", 4, REG_GPR, CPU_RDX, "int32", 0 }, { "ebx", 4, REG_GPR, CPU_RBX, "int32", 0 },
	{ "esp", 4, REG_GPR, CPU_RSP, "data_ptr", 0 }, { "ebp", 4, REG_GPR, CPU_RBP, "data_ptr", 0 },
	{ "esi", 4, REG_GPR, CPU_RSI, "int32", 0 }, { "edi", 4, REG_GPR, CPU_RDI, "int32", 0 },
	{ "eip", 4, REG_RIP, 0, "code_ptr", 0 },    { "eflags", 4, REG_FLAGS, 0, "int32", 0 },
	{ "cs", 4, REG_SEG, SEG_CS, "int32", 0 },   { "ss", 4, REG_SEG, SEG_SS, "int32", 0 },
	{ "ds", 4, REG_SEG, SEG_DS, "int32", 0 },   { "es", 4, REG_SEG, SEG_ES, "int32", 0 },
	{ "fs", 4, REG_SEG, SEG_FS, "int32", 0 },   { "gs", 4, REG_SEG, SEG_GS, "int32", 0 },
	X87(0), X87(1), X87(2), X87(3), X87(4), X87(5), X87(6), X87(7),
	FPU("fctrl"), FPU("fstat"), FPU("ftag"), FPU("fiseg"),
	FPU("fioff"), FPU("foseg"), FPU("fooff"), FPU("fop"),
	/* No org.gnu.gdb.i386.segments here: gdb 13 asserts on it in an i386 description. */
	{ "cr0", 4, REG_CR, 0, "int32", 2 }, { "cr2", 4, REG_CR, 2, "int32", 2 },
	{ "cr3", 4, REG_CR, 3, "int32", 2 }, { "cr4", 4, REG_CR, 4, "int32", 2 },
	{ "efer", 8, REG_EFER, 0, "int64", 2 },
};

#define NREGS(a) (sizeof(a) / sizeof((a)[0]))

static const struct reg_def *gdb_x86_table(enum gdb_x86_mode mode, unsigned *n)
{
	*n = mode == GDB_X86_64 ? NREGS(regs64) : NREGS(regs32);
	return mode == GDB_X86_64 ? regs64 : regs32;
}

unsigned gdb_x86_nr_regs(enum gdb_x86_mode mode)
{
	unsigned n;
	gdb_x86_table(mode, &n);
	return n;
}

unsigned gdb_x86_reg_size(enum gdb_x86_mode mode, unsigned n)
{
	unsigned nr;
	const struct reg_def *t = gdb_x86_table(mode, &nr);
	return n < nr ? t[n].size : 0;
}

size_t gdb_x86_regs_size(enum gdb_x86_mode mode)
{
	unsigned nr;
	const struct reg_def *t = gdb_x86_table(mode, &nr);
	size_t total = 0;
	for (unsigned i = 0; i < nr; i++)
		total += t[i].size;
	return total;
}

static uint64_t gdb_x86_value(const struct reg_def *r, const struct cpu_state *st)
{
	switch (r->kind) {
	case REG_GPR: return st->gpr[r->index];
	case REG_RIP: return st->rip;
	case REG_FLAGS: return st->rflags;
	case REG_SEG: return st->seg[r->index].selector;
	case REG_BASE: return st->seg[r->index].base;
	case REG_CR:
		return r->index == 0 ? st->cr0 : r->index == 2 ? st->cr2 : r->index == 3 ? st->cr3
										: st->cr4;
	case REG_EFER: return st->efer;
	default: return 0;
	}
}

void gdb_x86_reg_get(enum gdb_x86_mode mode, const struct cpu_state *st, unsigned n, uint8_t *out)
{
	unsigned nr;
	const struct reg_def *t = gdb_x86_table(mode, &nr);
	if (n >= nr)
		return;
	memset(out, 0, t[n].size);
	uint64_t v = gdb_x86_value(&t[n], st);
	for (unsigned i = 0; i < t[n].size && i < 8; i++)
		out[i] = (uint8_t)(v >> (8 * i));
}

bool gdb_x86_reg_set(enum gdb_x86_mode mode, struct cpu_state *st, unsigned n, const uint8_t *in)
{
	unsigned nr;
	const struct reg_def *t = gdb_x86_table(mode, &nr);
	if (n >= nr)
		return false;
	const struct reg_def *r = &t[n];
	uint64_t v = 0;
	for (unsigned i = 0; i < r->size && i < 8; i++)
		v |= (uint64_t)in[i] << (8 * i);
	uint64_t keep = r->size >= 8 ? 0 : ~0ull << (8 * r->size); /* 32-bit view: upper half stays */
	switch (r->kind) {
	case REG_GPR: st->gpr[r->index] = (st->gpr[r->index] & keep) | v; return true;
	case REG_RIP: st->rip = (st->rip & keep) | v; return true;
	case REG_FLAGS: st->rflags = (st->rflags & ~0xFFFFFFFFull) | (v & 0xFFFFFFFFull) | 2; return true;
	case REG_BASE: st->seg[r->index].base = (st->seg[r->index].base & keep) | v; return true;
	default: return false;
	}
}

size_t gdb_x86_target_xml(enum gdb_x86_mode mode, char *buf, size_t cap)
{
	static const char *const features[] = { "org.gnu.gdb.i386.core", "org.gnu.gdb.i386.segments",
						"org.vmm.x86.sys" };
	unsigned nr;
	const struct reg_def *t = gdb_x86_table(mode, &nr);
	size_t o = 0;
#define XML_PUT(...)                                                                      \
	do {                                                                              \
		int w = snprintf(buf + o, o < cap ? cap - o : 0, __VA_ARGS__);            \
		o += w > 0 ? (size_t)w : 0;                                               \
	} while (0)
	XML_PUT("<?xml version=\"1.0\"?><!DOCTYPE target SYSTEM \"gdb-target.dtd\">"
		"<target version=\"1.0\"><architecture>%s</architecture>",
		mode == GDB_X86_64 ? "i386:x86-64" : "i386");
	int feature = -1;
	for (unsigned i = 0; i < nr; i++) {
		if (t[i].feature != feature) {
			if (feature >= 0)
				XML_PUT("</feature>");
			feature = t[i].feature;
			XML_PUT("<feature name=\"%s\">", features[feature]);
		}
		XML_PUT("<reg name=\"%s\" bitsize=\"%u\" type=\"%s\"%s/>", t[i].name,
			t[i].size * 8u, t[i].type, t[i].kind == REG_X87 ? " group=\"float\"" : "");
	}
	XML_PUT("</feature></target>");
#undef XML_PUT
	return o < cap ? o : 0;
}

#define PTE_P (1ull << 0)
#define PTE_PS (1ull << 7)
#define PTE_ADDR 0x000FFFFFFFFFF000ull
#define CR4_PSE (1ull << 4)
#define CR4_LA57 (1ull << 12)

int gdb_x86_translate(const struct cpu_state *st, uint64_t va, uint64_t *pa,
		      gdb_read_phys_fn read_phys, void *opaque)
{
	if (!(st->cr0 & CR0_PG)) {
		*pa = st->efer & EFER_LMA ? va : va & 0xFFFFFFFFull;
		return 0;
	}
	if (st->efer & EFER_LMA || st->cr4 & CR4_PAE) {
		/* Long mode: 4 or 5 levels of 9 bits; PAE: a 4-entry PDPT, then two levels. */
		int levels = st->efer & EFER_LMA ? (st->cr4 & CR4_LA57 ? 5 : 4) : 3;
		uint64_t table = levels == 3 ? st->cr3 & 0xFFFFFFE0ull : st->cr3 & PTE_ADDR;
		if (levels == 3)
			va &= 0xFFFFFFFFull;
		for (int level = levels; level >= 1; level--) {
			unsigned shift = 12 + 9 * (unsigned)(level - 1);
			unsigned index = (unsigned)(va >> shift) & (levels == 3 && level == 3 ? 3 : 511);
			uint64_t entry;
			if (!read_phys(opaque, table + 8ull * index, &entry, 8) || !(entry & PTE_P))
				return -EFAULT;
			/* Large pages: 1 GiB at the PDPT (not in PAE), 2 MiB at the page directory. */
			bool large = (level == 2 || (level == 3 && levels > 3)) && (entry & PTE_PS);
			if (level == 1 || large) {
				uint64_t mask = (1ull << shift) - 1;
				*pa = ((entry & PTE_ADDR) & ~mask) | (va & mask);
				return 0;
			}
			table = entry & PTE_ADDR;
		}
		return -EFAULT;
	}
	/* 32-bit paging: 10 + 10 bits, 4 MiB pages with CR4.PSE. */
	uint32_t pde, pte;
	uint64_t pd = st->cr3 & 0xFFFFF000ull;
	va &= 0xFFFFFFFFull;
	if (!read_phys(opaque, pd + 4 * (va >> 22), &pde, 4) || !(pde & PTE_P))
		return -EFAULT;
	if ((pde & PTE_PS) && (st->cr4 & CR4_PSE)) {
		*pa = (pde & 0xFFC00000u) | (va & 0x3FFFFF);
		return 0;
	}
	if (!read_phys(opaque, (pde & 0xFFFFF000u) + 4 * ((va >> 12) & 1023), &pte, 4) ||
	    !(pte & PTE_P))
		return -EFAULT;
	*pa = (pte & 0xFFFFF000u) | (va & 0xFFF);
	return 0;
}
