/* Register numbering follows the order of the target description we send, which uses gdb's own
 * feature names (org.gnu.gdb.i386.core/.sse/.segments) so gdb recognises the architecture; control
 * registers come in a feature of our own, shown by gdb as extra registers ($cr3, $efer). The x87
 * and SSE registers are the vCPU's FXSAVE image (struct cpu_fxsave), the same on both backends. */
#include "gdb/x86.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

enum reg_kind {
	REG_GPR, REG_RIP, REG_FLAGS, REG_SEG, REG_BASE, REG_CR, REG_EFER,
	REG_ST, /* x87 ST(i): the 80 bits FXSAVE keeps in stack order, as gdb numbers them */
	REG_FPU, /* x87 control and status, index enum fpu_field */
	REG_XMM, REG_MXCSR,
};
enum fpu_field { FPU_FCTRL, FPU_FSTAT, FPU_FTAG, FPU_FISEG, FPU_FIOFF, FPU_FOSEG, FPU_FOOFF, FPU_FOP };

struct reg_def {
	const char *name;
	uint8_t size; /* bytes */
	uint8_t kind;
	uint8_t index; /* enum cpu_reg, enum cpu_seg, control register number, ST(i), XMMi, fpu_field */
	const char *type;
	uint8_t feature; /* enum feature */
};

enum feature { FEAT_CORE, FEAT_SEGMENTS, FEAT_SYS, FEAT_SSE };

#define X87(n) { "st" #n, 10, REG_ST, n, "i387_ext", FEAT_CORE }
#define FPU(name, field) { name, 4, REG_FPU, field, "int", FEAT_CORE }
#define X87_REGS                                                                                  \
	X87(0), X87(1), X87(2), X87(3), X87(4), X87(5), X87(6), X87(7), FPU("fctrl", FPU_FCTRL), \
		FPU("fstat", FPU_FSTAT), FPU("ftag", FPU_FTAG), FPU("fiseg", FPU_FISEG),         \
		FPU("fioff", FPU_FIOFF), FPU("foseg", FPU_FOSEG), FPU("fooff", FPU_FOOFF),       \
		FPU("fop", FPU_FOP)
#define XMM(n) { "xmm" #n, 16, REG_XMM, n, "vec128", FEAT_SSE }
#define MXCSR { "mxcsr", 4, REG_MXCSR, 0, "i386_mxcsr", FEAT_SSE }

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
	X87_REGS,
	XMM(0), XMM(1), XMM(2), XMM(3), XMM(4), XMM(5), XMM(6), XMM(7),
	XMM(8), XMM(9), XMM(10), XMM(11), XMM(12), XMM(13), XMM(14), XMM(15), MXCSR,
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
	X87_REGS,
	XMM(0), XMM(1), XMM(2), XMM(3), XMM(4), XMM(5), XMM(6), XMM(7), MXCSR,
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

/* The x87 tag of ST(i) from its contents (SDM Vol. 1 §8.1.7): 0 valid, 1 zero, 2 special. */
static unsigned gdb_x87_tag_of(const uint8_t *st)
{
	unsigned exponent = (st[9] & 0x7f) << 8 | st[8];
	uint64_t significand;
	memcpy(&significand, st, 8);
	if (exponent == 0x7fff)
		return 2;
	if (exponent == 0)
		return significand ? 2 : 1;
	return significand >> 63 ? 0 : 2;
}

/* FXSAVE keeps an abridged tag (1 bit per physical register, 1 = not empty); gdb shows the full
 * 16-bit tag word (2 bits per physical register, 3 = empty). */
static uint16_t gdb_x87_full_tag(const struct cpu_fxsave *fx)
{
	unsigned top = (fx->fsw >> 11) & 7;
	uint16_t tag = 0;
	for (unsigned r = 0; r < 8; r++) {
		unsigned t = fx->ftw & (1u << r) ? gdb_x87_tag_of(fx->st[(r - top) & 7]) : 3;
		tag |= (uint16_t)(t << (2 * r));
	}
	return tag;
}

static uint8_t gdb_x87_abridged_tag(uint16_t full)
{
	uint8_t ftw = 0;
	for (unsigned r = 0; r < 8; r++)
		if (((full >> (2 * r)) & 3) != 3)
			ftw |= (uint8_t)(1u << r);
	return ftw;
}

/* gdb's view of the 64-bit FXSAVE pointers: fioff/fooff the low halves of FIP/FDP, fiseg/foseg
 * the high halves (where the 32-bit layout has FCS/FDS). */
static uint64_t gdb_x87_field(const struct cpu_fxsave *fx, unsigned field)
{
	switch (field) {
	case FPU_FCTRL: return fx->fcw;
	case FPU_FSTAT: return fx->fsw;
	case FPU_FTAG: return gdb_x87_full_tag(fx);
	case FPU_FISEG: return fx->fip >> 32;
	case FPU_FIOFF: return fx->fip & 0xFFFFFFFFull;
	case FPU_FOSEG: return fx->fdp >> 32;
	case FPU_FOOFF: return fx->fdp & 0xFFFFFFFFull;
	default: return fx->fop & 0x7ff;
	}
}

static void gdb_x87_set_field(struct cpu_fxsave *fx, unsigned field, uint32_t v)
{
	switch (field) {
	case FPU_FCTRL: fx->fcw = (uint16_t)v; break;
	case FPU_FSTAT: fx->fsw = (uint16_t)v; break;
	case FPU_FTAG: fx->ftw = gdb_x87_abridged_tag((uint16_t)v); break;
	case FPU_FISEG: fx->fip = (fx->fip & 0xFFFFFFFFull) | (uint64_t)v << 32; break;
	case FPU_FIOFF: fx->fip = (fx->fip & ~0xFFFFFFFFull) | v; break;
	case FPU_FOSEG: fx->fdp = (fx->fdp & 0xFFFFFFFFull) | (uint64_t)v << 32; break;
	case FPU_FOOFF: fx->fdp = (fx->fdp & ~0xFFFFFFFFull) | v; break;
	default: fx->fop = (uint16_t)(v & 0x7ff); break;
	}
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
	case REG_FPU: return gdb_x87_field(&st->fpu, r->index);
	case REG_MXCSR: return st->fpu.mxcsr;
	default: return 0;
	}
}

void gdb_x86_reg_get(enum gdb_x86_mode mode, const struct cpu_state *st, unsigned n, uint8_t *out)
{
	unsigned nr;
	const struct reg_def *t = gdb_x86_table(mode, &nr);
	if (n >= nr)
		return;
	if (t[n].kind == REG_ST || t[n].kind == REG_XMM) {
		memcpy(out, t[n].kind == REG_ST ? st->fpu.st[t[n].index] : st->fpu.xmm[t[n].index],
		       t[n].size);
		return;
	}
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
	if (r->kind == REG_ST || r->kind == REG_XMM) {
		memcpy(r->kind == REG_ST ? st->fpu.st[r->index] : st->fpu.xmm[r->index], in, r->size);
		return true;
	}
	uint64_t v = 0;
	for (unsigned i = 0; i < r->size && i < 8; i++)
		v |= (uint64_t)in[i] << (8 * i);
	uint64_t keep = r->size >= 8 ? 0 : ~0ull << (8 * r->size); /* 32-bit view: upper half stays */
	switch (r->kind) {
	case REG_GPR: st->gpr[r->index] = (st->gpr[r->index] & keep) | v; return true;
	case REG_RIP: st->rip = (st->rip & keep) | v; return true;
	case REG_FLAGS: st->rflags = (st->rflags & ~0xFFFFFFFFull) | (v & 0xFFFFFFFFull) | 2; return true;
	case REG_BASE: st->seg[r->index].base = (st->seg[r->index].base & keep) | v; return true;
	case REG_FPU: gdb_x87_set_field(&st->fpu, r->index, (uint32_t)v); return true;
	/* Reserved MXCSR bits would make the next FXRSTOR (or KVM_SET_FPU) fault. */
	case REG_MXCSR: st->fpu.mxcsr = (uint32_t)v & st->fpu.mxcsr_mask; return true;
	default: return false;
	}
}

/* The types of the SSE feature (gdb manual, "Target Description Format": Types). */
static const char gdb_x86_sse_types[] =
	"<vector id=\"v4f\" type=\"ieee_single\" count=\"4\"/>"
	"<vector id=\"v2d\" type=\"ieee_double\" count=\"2\"/>"
	"<vector id=\"v16i8\" type=\"int8\" count=\"16\"/>"
	"<vector id=\"v8i16\" type=\"int16\" count=\"8\"/>"
	"<vector id=\"v4i32\" type=\"int32\" count=\"4\"/>"
	"<vector id=\"v2i64\" type=\"int64\" count=\"2\"/>"
	"<union id=\"vec128\"><field name=\"v4_float\" type=\"v4f\"/>"
	"<field name=\"v2_double\" type=\"v2d\"/><field name=\"v16_int8\" type=\"v16i8\"/>"
	"<field name=\"v8_int16\" type=\"v8i16\"/><field name=\"v4_int32\" type=\"v4i32\"/>"
	"<field name=\"v2_int64\" type=\"v2i64\"/><field name=\"uint128\" type=\"uint128\"/>"
	"</union><flags id=\"i386_mxcsr\" size=\"4\">"
	"<field name=\"IE\" start=\"0\" end=\"0\"/><field name=\"DE\" start=\"1\" end=\"1\"/>"
	"<field name=\"ZE\" start=\"2\" end=\"2\"/><field name=\"OE\" start=\"3\" end=\"3\"/>"
	"<field name=\"UE\" start=\"4\" end=\"4\"/><field name=\"PE\" start=\"5\" end=\"5\"/>"
	"<field name=\"DAZ\" start=\"6\" end=\"6\"/><field name=\"IM\" start=\"7\" end=\"7\"/>"
	"<field name=\"DM\" start=\"8\" end=\"8\"/><field name=\"ZM\" start=\"9\" end=\"9\"/>"
	"<field name=\"OM\" start=\"10\" end=\"10\"/><field name=\"UM\" start=\"11\" end=\"11\"/>"
	"<field name=\"PM\" start=\"12\" end=\"12\"/><field name=\"FZ\" start=\"15\" end=\"15\"/>"
	"</flags>";

size_t gdb_x86_target_xml(enum gdb_x86_mode mode, char *buf, size_t cap)
{
	static const char *const features[] = { [FEAT_CORE] = "org.gnu.gdb.i386.core",
						[FEAT_SEGMENTS] = "org.gnu.gdb.i386.segments",
						[FEAT_SYS] = "org.vmm.x86.sys",
						[FEAT_SSE] = "org.gnu.gdb.i386.sse" };
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
			XML_PUT("<feature name=\"%s\">%s", features[feature],
				feature == FEAT_SSE ? gdb_x86_sse_types : "");
		}
		XML_PUT("<reg name=\"%s\" bitsize=\"%u\" type=\"%s\"%s/>", t[i].name,
			t[i].size * 8u, t[i].type, t[i].kind == REG_ST || t[i].kind == REG_FPU	? " group=\"float\""
			: t[i].kind == REG_XMM || t[i].kind == REG_MXCSR ? " group=\"vector\""
									   : "");
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
