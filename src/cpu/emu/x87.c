/* The x87 FPU: D8-DF and WAIT (SDM Vol. 1 chapter 8, Vol. 2 for each instruction).
 *
 * The state lives in cpu->fx in the FXSAVE layout (what FXSAVE writes and KVM's kvm_fpu
 * carries): FCW, FSW (TOP in bits 13:11), the abridged tag byte (bit j: physical register Rj is
 * not empty) and the eight registers in stack order (fx.st[i] is ST(i)).
 *
 * Every computational instruction (arithmetic, loads, stores, compares, stack operations,
 * FCMOVcc, FCOMI) is executed by the host's own x87 unit on the guest's complete state: FRSTOR
 * of the guest's registers, control word (precision, rounding, masks), condition codes and tags
 * (with its exception flags cleared, so nothing is pending), the very same instruction (same
 * ModRM; memory forms on a copy of the operand), FNSAVE back. Results, condition codes
 * (including the ones the manual leaves undefined), stack faults, pushes and pops and the
 * "no result, no pop" rule of unmasked exceptions are then the hardware's. EFLAGS go in through
 * SAHF (FCMOVcc) and come out through LAHF (FCOMI). The exception flags are sticky: the new
 * ones are or-ed in; ES and B follow the unmasked ones.
 *
 * Done here: FNINIT, FNCLEX, FLDCW, FNSTCW, FNSTSW, FLDENV/FNSTENV, FRSTOR/FNSAVE (all formats:
 * 16/32-bit, real/protected mode), WAIT; #NM for CR0.EM/TS (WAIT: MP and TS); #MF at a waiting
 * instruction while an unmasked exception is pending (with CR0.NE; without NE the FERR# line is
 * not modelled and the instruction proceeds). FIP, FDP and FOP are kept for every non-control
 * instruction; FCS and FDS are saved as 0, as on processors that deprecate them. */
#include "cpu/emu/alu.h"
#include "cpu/emu/exec.h"

#include <string.h>

#define CR0_MP (1ull << 1)
#define CR0_EM (1ull << 2)
#define CR0_TS (1ull << 3)
#define CR0_NE (1ull << 5)

#define FSW_IE 0x0001
#define FSW_DE 0x0002
#define FSW_ZE 0x0004
#define FSW_OE 0x0008
#define FSW_UE 0x0010
#define FSW_PE 0x0020
#define FSW_SF 0x0040
#define FSW_ES 0x0080
#define FSW_C0 0x0100
#define FSW_C1 0x0200
#define FSW_C2 0x0400
#define FSW_TOP 0x3800
#define FSW_C3 0x4000
#define FSW_B 0x8000
#define FSW_CC (FSW_C0 | FSW_C1 | FSW_C2 | FSW_C3)
#define FSW_EXC 0x3f /* the six maskable exceptions */

#define FCW_DEFAULT 0x037f

/* ---- the host FPU ---- */

/* The guest's x87 state as FRSTOR/FNSAVE see it (32-bit protected-mode format, which is what
 * they use in 64-bit mode), the memory operand and the flags FCMOVcc reads / FCOMI writes. */
struct host_io {
	uint8_t img[108];
	uint8_t m[16];
	uint16_t ax; /* AH: SF ZF AF PF CF in (SAHF) and out (LAHF) */
	uint8_t of; /* OF after the instruction; 1 before it */
	uint16_t save;
};

/* The host runs the guest's instruction on the guest's state: FRSTOR it (exception flags
 * cleared, so nothing is pending), execute, FNSAVE it back (FNSAVE does not wait, and
 * reinitialises the host FPU), restore the host's control word. */
#define HOST_RUN(text)                                                                             \
	asm volatile("fnstcw %[save]\n\t"                                                          \
		     "movb $0x7f, %%cl\n\taddb $1, %%cl\n\t" /* OF = 1 */                          \
		     "sahf\n\t"                                                                    \
		     "frstor %[img]\n\t" text "\n\t"                                               \
		     "lahf\n\tseto %%cl\n\t"                                                       \
		     "fnsave %[img]\n\t"                                                           \
		     "fldcw %[save]"                                                               \
		     : [img] "+m"(io->img), [m] "+m"(io->m), [save] "=m"(io->save), "+a"(io->ax),  \
		       "=&c"(io->of)                                                               \
		     :                                                                             \
		     : "cc", "st", "st(1)", "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)")

/* Register forms: key (opcode - D8) * 64 + ModRM - C0. */
#define REG_KEY(op, modrm) (((op) - 0xD8) * 64 + (modrm) - 0xC0)
#define R1(op, mr)                                                                                 \
	case REG_KEY(op, (mr)):                                                                    \
		HOST_RUN(".byte " #op ", " #mr);                                                   \
		break;
#define R8(op, b) R1(op, b + 0) R1(op, b + 1) R1(op, b + 2) R1(op, b + 3) R1(op, b + 4)         \
	R1(op, b + 5) R1(op, b + 6) R1(op, b + 7)
/* Memory forms: key 512 + (opcode - D8) * 8 + ModRM.reg. */
#define MEM_KEY(op, reg) (512 + ((op) - 0xD8) * 8 + (reg))
#define M1(op, reg, text)                                                                          \
	case MEM_KEY(op, reg):                                                                     \
		HOST_RUN(text " %[m]");                                                            \
		break;

static void host_run(unsigned key, struct host_io *io)
{
	switch (key) {
	R8(0xd8, 0xc0) R8(0xd8, 0xc8) R8(0xd8, 0xd0) R8(0xd8, 0xd8)
	R8(0xd8, 0xe0) R8(0xd8, 0xe8) R8(0xd8, 0xf0) R8(0xd8, 0xf8)
	R8(0xd9, 0xc0) R8(0xd9, 0xc8) R1(0xd9, 0xd0) R8(0xd9, 0xd8)
	R1(0xd9, 0xe0) R1(0xd9, 0xe1) R1(0xd9, 0xe4) R1(0xd9, 0xe5)
	R1(0xd9, 0xe8) R1(0xd9, 0xe9) R1(0xd9, 0xea) R1(0xd9, 0xeb) R1(0xd9, 0xec) R1(0xd9, 0xed)
	R1(0xd9, 0xee) R8(0xd9, 0xf0) R8(0xd9, 0xf8)
	R8(0xda, 0xc0) R8(0xda, 0xc8) R8(0xda, 0xd0) R8(0xda, 0xd8) R1(0xda, 0xe9)
	R8(0xdb, 0xc0) R8(0xdb, 0xc8) R8(0xdb, 0xd0) R8(0xdb, 0xd8) R8(0xdb, 0xe8) R8(0xdb, 0xf0)
	R8(0xdc, 0xc0) R8(0xdc, 0xc8) R8(0xdc, 0xd0) R8(0xdc, 0xd8)
	R8(0xdc, 0xe0) R8(0xdc, 0xe8) R8(0xdc, 0xf0) R8(0xdc, 0xf8)
	R8(0xdd, 0xc0) R8(0xdd, 0xc8) R8(0xdd, 0xd0) R8(0xdd, 0xd8) R8(0xdd, 0xe0) R8(0xdd, 0xe8)
	R8(0xde, 0xc0) R8(0xde, 0xc8) R8(0xde, 0xd0) R1(0xde, 0xd9)
	R8(0xde, 0xe0) R8(0xde, 0xe8) R8(0xde, 0xf0) R8(0xde, 0xf8)
	R8(0xdf, 0xc0) R8(0xdf, 0xc8) R8(0xdf, 0xd0) R8(0xdf, 0xd8) R8(0xdf, 0xe8) R8(0xdf, 0xf0)
	M1(0xd8, 0, "fadds") M1(0xd8, 1, "fmuls") M1(0xd8, 2, "fcoms") M1(0xd8, 3, "fcomps")
	M1(0xd8, 4, "fsubs") M1(0xd8, 5, "fsubrs") M1(0xd8, 6, "fdivs") M1(0xd8, 7, "fdivrs")
	M1(0xd9, 0, "flds") M1(0xd9, 2, "fsts") M1(0xd9, 3, "fstps")
	M1(0xda, 0, "fiaddl") M1(0xda, 1, "fimull") M1(0xda, 2, "ficoml") M1(0xda, 3, "ficompl")
	M1(0xda, 4, "fisubl") M1(0xda, 5, "fisubrl") M1(0xda, 6, "fidivl") M1(0xda, 7, "fidivrl")
	M1(0xdb, 0, "fildl") M1(0xdb, 1, "fisttpl") M1(0xdb, 2, "fistl") M1(0xdb, 3, "fistpl")
	M1(0xdb, 5, "fldt") M1(0xdb, 7, "fstpt")
	M1(0xdc, 0, "faddl") M1(0xdc, 1, "fmull") M1(0xdc, 2, "fcoml") M1(0xdc, 3, "fcompl")
	M1(0xdc, 4, "fsubl") M1(0xdc, 5, "fsubrl") M1(0xdc, 6, "fdivl") M1(0xdc, 7, "fdivrl")
	M1(0xdd, 0, "fldl") M1(0xdd, 1, "fisttpll") M1(0xdd, 2, "fstl") M1(0xdd, 3, "fstpl")
	M1(0xde, 0, "fiadds") M1(0xde, 1, "fimuls") M1(0xde, 2, "ficoms") M1(0xde, 3, "ficomps")
	M1(0xde, 4, "fisubs") M1(0xde, 5, "fisubrs") M1(0xde, 6, "fidivs") M1(0xde, 7, "fidivrs")
	M1(0xdf, 0, "filds") M1(0xdf, 1, "fisttps") M1(0xdf, 2, "fists") M1(0xdf, 3, "fistps")
	M1(0xdf, 4, "fbld") M1(0xdf, 5, "fildll") M1(0xdf, 6, "fbstp") M1(0xdf, 7, "fistpll")
	default:
		break;
	}
}

/* Whether the host has the instruction (the keys above): everything else is #UD. */
static bool host_has(unsigned op, unsigned modrm, bool mem)
{
	unsigned reg = (modrm >> 3) & 7;

	if (mem) {
		switch (op) {
		case 0xD9: return reg == 0 || reg == 2 || reg == 3;
		case 0xDB: return reg != 4 && reg != 6;
		case 0xDD: return reg < 4;
		default: return true;
		}
	}
	switch (op) {
	case 0xD9:
		return modrm < 0xD0 || modrm == 0xD0 || (modrm >= 0xD8 && modrm < 0xE0) ||
		       modrm == 0xE0 || modrm == 0xE1 || modrm == 0xE4 || modrm == 0xE5 ||
		       (modrm >= 0xE8 && modrm <= 0xEE) || modrm >= 0xF0;
	case 0xDA: return modrm < 0xE0 || modrm == 0xE9;
	case 0xDB: return modrm < 0xE0 || (modrm >= 0xE8 && modrm < 0xF8);
	case 0xDD: return modrm < 0xF0;
	case 0xDE: return modrm < 0xD8 || modrm == 0xD9 || modrm >= 0xE0;
	case 0xDF: return modrm < 0xE0 || (modrm >= 0xE8 && modrm < 0xF8);
	default: return true; /* D8, DC */
	}
}

/* ---- the state ---- */

static unsigned fpu_top(const struct emu_cpu *cpu)
{
	return (cpu->fx.fsw >> 11) & 7;
}

/* ES and B follow the unmasked exception flags (FLDCW and FLDENV recompute them too). */
static void update_es(struct emu_cpu *cpu)
{
	if (cpu->fx.fsw & ~cpu->fx.fcw & FSW_EXC)
		cpu->fx.fsw |= FSW_ES | FSW_B;
	else
		cpu->fx.fsw &= (uint16_t)~(FSW_ES | FSW_B);
}

/* The full tag of physical register r (FSTENV/FSAVE): 0 valid, 1 zero, 2 special, 3 empty. */
static unsigned full_tag(const struct emu_cpu *cpu, unsigned r)
{
	const uint8_t *v = cpu->fx.st[(r - fpu_top(cpu)) & 7];
	uint64_t mant;
	unsigned exp;

	if (!(cpu->fx.ftw & (1u << r)))
		return 3;
	memcpy(&mant, v, 8);
	exp = (v[8] | (unsigned)v[9] << 8) & 0x7fff;
	if (exp == 0x7fff)
		return 2;
	if (exp == 0)
		return mant ? 2 : 1;
	return (mant >> 63) ? 0 : 2; /* unnormals are special */
}

static uint16_t full_tag_word(const struct emu_cpu *cpu)
{
	uint16_t tw = 0;

	for (unsigned r = 0; r < 8; r++)
		tw |= (uint16_t)(full_tag(cpu, r) << (2 * r));
	return tw;
}

/* Run instruction `key` on the host with the guest's state; *m is the memory operand. */
static void host_exec(struct emu_cpu *cpu, unsigned key, struct host_io *io)
{
	uint32_t env[7] = { 0 };
	uint64_t fl = emu_flags_get(cpu);

	env[0] = 0xffff0000u | cpu->fx.fcw;
	/* No exception flags (nothing pending for the host); they are sticky, merged after. */
	env[1] = 0xffff0000u | (cpu->fx.fsw & (FSW_CC | FSW_TOP));
	env[2] = 0xffff0000u | full_tag_word(cpu);
	memcpy(io->img, env, 28);
	for (unsigned i = 0; i < 8; i++)
		memcpy(io->img + 28 + 10 * i, cpu->fx.st[i], 10);
	io->ax = (uint16_t)((fl & (EMU_FLAGS_ARITH & ~EMU_FLAG_OF)) << 8);
	host_run(key, io);
}

/* Unmasked exceptions the instruction raised (in the host's image). */
static uint16_t host_unmasked(const struct emu_cpu *cpu, const struct host_io *io)
{
	uint16_t fsw;

	memcpy(&fsw, io->img + 4, 2);
	return fsw & ~cpu->fx.fcw & FSW_EXC;
}

/* Take the host's result: C0-C3, TOP, tags and registers; exception flags are sticky. */
static void host_apply(struct emu_cpu *cpu, const struct host_io *io)
{
	uint16_t fsw, tw;

	memcpy(&fsw, io->img + 4, 2);
	memcpy(&tw, io->img + 8, 2);
	cpu->fx.fsw = (uint16_t)((fsw & (FSW_CC | FSW_TOP)) |
				 ((cpu->fx.fsw | fsw) & (FSW_EXC | FSW_SF)));
	update_es(cpu);
	cpu->fx.ftw = 0;
	for (unsigned r = 0; r < 8; r++)
		if (((tw >> (2 * r)) & 3) != 3)
			cpu->fx.ftw |= (uint8_t)(1u << r);
	for (unsigned i = 0; i < 8; i++) {
		memcpy(cpu->fx.st[i], io->img + 28 + 10 * i, 10);
		memset(cpu->fx.st[i] + 10, 0, 6);
	}
}

/* FCOMI/FUCOMI(P) write ZF, PF, CF and clear OF, SF, AF; they leave EFLAGS alone on an
 * unmasked exception (the host then leaves OF = 1). */
static void host_eflags(struct emu_cpu *cpu, const struct host_io *io)
{
	if (io->of)
		return;
	emu_flags_sync(cpu);
	cpu->s.rflags = (cpu->s.rflags & ~EMU_FLAGS_ARITH) |
			((uint64_t)(io->ax >> 8) & (EMU_FLAG_ZF | EMU_FLAG_PF | EMU_FLAG_CF));
}

/* ---- instructions ---- */

static int mem_read(struct exec *x, void *dst, unsigned len)
{
	return x->cpu->mem->read(x->cpu, x->la, dst, len, EMU_ACCESS_READ);
}

static int mem_write(struct exec *x, const void *src, unsigned len)
{
	return x->cpu->mem->write(x->cpu, x->la, src, len);
}

/* Bytes a memory form reads (loads, arithmetic) or writes (stores). */
static unsigned mem_size(unsigned op, unsigned reg, bool *store)
{
	static const uint8_t d9[8] = { 4, 0, 4, 4 }, db[8] = { 4, 4, 4, 4, 0, 10, 0, 10 },
			     dd[8] = { 8, 8, 8, 8 }, df[8] = { 2, 2, 2, 2, 10, 8, 10, 8 };

	*store = false;
	switch (op) {
	case 0xD8: case 0xDA: return 4;
	case 0xDC: return 8;
	case 0xDE: return 2;
	case 0xD9: *store = reg >= 2; return d9[reg];
	case 0xDB: *store = reg == 1 || reg == 2 || reg == 3 || reg == 7; return db[reg];
	case 0xDD: *store = reg >= 1; return dd[reg];
	default: *store = reg == 1 || reg == 2 || reg == 3 || reg >= 6; return df[reg];
	}
}

/* A memory form run on the host. A store whose unmasked exception suppressed it (found by
 * running it again over different memory contents) writes nothing. */
static int host_memory(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned op = x->insn->opcode, reg = (x->insn->modrm >> 3) & 7;
	unsigned key = MEM_KEY(op, reg);
	bool store, written = true;
	unsigned size = mem_size(op, reg, &store);
	struct host_io io;
	int rc;

	memset(&io, 0, sizeof(io));
	if (!store && (rc = mem_read(x, io.m, size)))
		return rc;
	host_exec(cpu, key, &io);
	if (store && host_unmasked(cpu, &io)) {
		struct host_io again;

		memset(&again, 0, sizeof(again));
		memset(again.m, 0xff, sizeof(again.m));
		host_exec(cpu, key, &again);
		written = !memcmp(io.m, again.m, size);
	}
	if (store && written && (rc = mem_write(x, io.m, size)))
		return rc;
	host_apply(cpu, &io);
	return EMU_OK;
}

static int host_register(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned op = x->insn->opcode, modrm = x->insn->modrm;
	struct host_io io;

	memset(&io, 0, sizeof(io));
	host_exec(cpu, REG_KEY(op, modrm), &io);
	host_apply(cpu, &io);
	if ((op == 0xDB || op == 0xDF) && modrm >= 0xE8 && modrm < 0xF8)
		host_eflags(cpu, &io);
	return EMU_OK;
}

/* ---- environment: FNSTENV/FLDENV/FNSAVE/FRSTOR (SDM Vol. 1 §8.1.10, figures 8-9 to 8-12) ---- */


/* A new TOP: the registers stay where they are physically (fx.st is in stack order). */
static void set_top_keep_registers(struct emu_cpu *cpu, unsigned top)
{
	unsigned old = fpu_top(cpu);
	uint8_t st[8][16];

	for (unsigned i = 0; i < 8; i++) /* ST(i) under the new TOP is R((top + i) & 7) */
		memcpy(st[i], cpu->fx.st[(top + i - old) & 7], 16);
	memcpy(cpu->fx.st, st, sizeof(st));
	cpu->fx.fsw = (uint16_t)((cpu->fx.fsw & ~FSW_TOP) | (top & 7) << 11);
}

/* ---- the MMX view of the registers (SDM Vol. 1 §9.5) ---- */

/* MMn is the mantissa of physical register Rn, i.e. ST((n - TOP) & 7). */
uint64_t x87_mm_get(const struct emu_cpu *cpu, unsigned n)
{
	uint64_t v;

	memcpy(&v, cpu->fx.st[(n - fpu_top(cpu)) & 7], 8);
	return v;
}

/* Every MMX instruction but EMMS: TOP = 0 and all tags valid (its register writes follow). */
void x87_mmx_enter(struct emu_cpu *cpu)
{
	set_top_keep_registers(cpu, 0);
	cpu->fx.ftw = 0xff;
}

/* A write to MMn (after x87_mmx_enter): the mantissa, and sign and exponent all ones. */
void x87_mm_set(struct emu_cpu *cpu, unsigned n, uint64_t v)
{
	uint8_t *r = cpu->fx.st[(n - fpu_top(cpu)) & 7];

	memcpy(r, &v, 8);
	r[8] = r[9] = 0xff;
	memset(r + 10, 0, 6);
}

/* EMMS: TOP = 0 too ("each time an MMX instruction is executed", SDM Vol. 3 §12.2), and
 * every register empty. */
void x87_emms(struct emu_cpu *cpu)
{
	set_top_keep_registers(cpu, 0);
	cpu->fx.ftw = 0;
}

/* Build the 14- or 28-byte environment image. */
static unsigned env_store(struct exec *x, uint8_t *env)
{
	struct emu_cpu *cpu = x->cpu;
	bool o32 = x->insn->opsize != 2, real = !(cpu->s.cr0 & CR0_PE);
	uint32_t fip = (uint32_t)cpu->fx.fip, fdp = (uint32_t)cpu->fx.fdp, fop = cpu->fx.fop & 0x7ff;
	uint32_t f[7];

	f[0] = cpu->fx.fcw;
	f[1] = cpu->fx.fsw;
	f[2] = full_tag_word(cpu);
	if (real) {
		f[3] = fip & 0xffff;
		f[4] = ((fip >> 16) << 12) | fop;
		f[5] = fdp & 0xffff;
		f[6] = (fdp >> 16) << 12;
	} else {
		f[3] = fip;
		f[4] = fop << 16; /* FCS = 0 */
		f[5] = fdp;
		f[6] = 0; /* FDS = 0 */
	}
	if (o32) {
		for (unsigned i = 0; i < 7; i++) {
			uint32_t v = f[i];

			if (i < 3 || (real && (i == 3 || i == 5)) || (!real && i == 6))
				v |= 0xffff0000u;
			memcpy(env + 4 * i, &v, 4);
		}
		return 28;
	}
	for (unsigned i = 0; i < 7; i++) {
		uint16_t v = (uint16_t)f[i];

		if (!real && i == 4)
			v = 0; /* FCS; the 16-bit format has no opcode */
		memcpy(env + 2 * i, &v, 2);
	}
	return 14;
}

static void env_load(struct exec *x, const uint8_t *env)
{
	struct emu_cpu *cpu = x->cpu;
	bool o32 = x->insn->opsize != 2, real = !(cpu->s.cr0 & CR0_PE);
	uint32_t f[7];

	for (unsigned i = 0; i < 7; i++) {
		if (o32) {
			memcpy(&f[i], env + 4 * i, 4);
		} else {
			uint16_t v;

			memcpy(&v, env + 2 * i, 2);
			f[i] = v;
		}
	}
	cpu->fx.fcw = (uint16_t)((f[0] & 0x1f3f) | 0x40);
	set_top_keep_registers(cpu, (f[1] >> 11) & 7);
	cpu->fx.fsw = (uint16_t)f[1];
	cpu->fx.ftw = 0;
	for (unsigned r = 0; r < 8; r++)
		if (((f[2] >> (2 * r)) & 3) != 3)
			cpu->fx.ftw |= (uint8_t)(1u << r);
	if (real) {
		cpu->fx.fip = (f[3] & 0xffff) | ((f[4] >> 12) << 16);
		cpu->fx.fop = (uint16_t)(f[4] & 0x7ff);
		cpu->fx.fdp = (f[5] & 0xffff) | ((f[6] >> 12) << 16);
	} else {
		cpu->fx.fip = o32 ? f[3] : f[3] & 0xffff;
		cpu->fx.fop = o32 ? (uint16_t)((f[4] >> 16) & 0x7ff) : 0;
		cpu->fx.fdp = o32 ? f[5] : f[5] & 0xffff;
	}
	update_es(cpu);
}

static void fninit(struct emu_cpu *cpu)
{
	set_top_keep_registers(cpu, 0);
	cpu->fx.fcw = FCW_DEFAULT;
	cpu->fx.fsw = 0;
	cpu->fx.ftw = 0;
	cpu->fx.fop = 0;
	cpu->fx.fip = 0;
	cpu->fx.fdp = 0;
}

static int env_op(struct exec *x, unsigned reg)
{
	struct emu_cpu *cpu = x->cpu;
	uint8_t buf[28 + 80];
	unsigned len;
	int rc;

	switch (reg) {
	case 4: /* FLDENV */
	case 5: /* FRSTOR (DD /4 reaches here as 5) */
		len = x->insn->opsize != 2 ? 28 : 14;
		if ((rc = mem_read(x, buf, len + (reg == 5 ? 80 : 0))))
			return rc;
		env_load(x, buf);
		if (reg == 5) {
			for (unsigned i = 0; i < 8; i++) {
				memcpy(cpu->fx.st[i], buf + len + 10 * i, 10);
				memset(cpu->fx.st[i] + 10, 0, 6);
			}
		}
		return EMU_OK;
	case 6: /* FNSTENV: then all exceptions masked */
	case 7: /* FNSAVE (DD /6 reaches here as 7): then FNINIT */
		len = env_store(x, buf);
		if (reg == 7)
			for (unsigned i = 0; i < 8; i++)
				memcpy(buf + len + 10 * i, cpu->fx.st[i], 10);
		if ((rc = mem_write(x, buf, len + (reg == 7 ? 80 : 0))))
			return rc;
		if (reg == 7) {
			fninit(cpu);
		} else {
			cpu->fx.fcw |= FSW_EXC;
			update_es(cpu);
		}
		return EMU_OK;
	}
	return exec_ud(x);
}

/* ---- dispatch ---- */

/* The instructions that do not wait for (check) pending exceptions. */
static bool no_wait(const struct emu_insn *insn)
{
	unsigned op = insn->opcode, reg = (insn->modrm >> 3) & 7;

	if (insn->mod != 3)
		return (op == 0xD9 && reg >= 6) || (op == 0xDD && reg >= 6);
	return (op == 0xDB && (insn->modrm == 0xE2 || insn->modrm == 0xE3 ||
			       insn->modrm == 0xE0 || insn->modrm == 0xE1 || insn->modrm == 0xE4)) ||
	       (op == 0xDF && insn->modrm == 0xE0);
}

/* The instructions done here rather than on the host: control and environment. */
static int x87_control(struct exec *x)
{
	struct emu_cpu *cpu = x->cpu;
	unsigned op = x->insn->opcode, modrm = x->insn->modrm, reg = (modrm >> 3) & 7;
	uint64_t v;
	int rc;

	if (x->insn->mod != 3) {
		switch (op * 8 + reg) {
		case 0xD9 * 8 + 4: return env_op(x, 4); /* FLDENV */
		case 0xD9 * 8 + 5: /* FLDCW */
			if ((rc = exec_mem_read(x, x->la, 2, &v)))
				return rc;
			cpu->fx.fcw = (uint16_t)((v & 0x1f3f) | 0x40);
			update_es(cpu);
			return EMU_OK;
		case 0xD9 * 8 + 6: return env_op(x, 6); /* FNSTENV */
		case 0xD9 * 8 + 7: return exec_mem_write(x, x->la, 2, cpu->fx.fcw); /* FNSTCW */
		case 0xDD * 8 + 4: return env_op(x, 5); /* FRSTOR */
		case 0xDD * 8 + 6: return env_op(x, 7); /* FNSAVE */
		case 0xDD * 8 + 7: return exec_mem_write(x, x->la, 2, cpu->fx.fsw); /* FNSTSW */
		}
		return exec_ud(x);
	}
	switch (op * 256 + modrm) {
	case 0xDBE0: /* FNENI, FNDISI, FNSETPM: no-ops since the 387 */
	case 0xDBE1:
	case 0xDBE4:
		return EMU_OK;
	case 0xDBE2: /* FNCLEX */
		cpu->fx.fsw &= (uint16_t)~(FSW_EXC | FSW_SF | FSW_ES | FSW_B);
		return EMU_OK;
	case 0xDBE3: /* FNINIT */
		fninit(cpu);
		return EMU_OK;
	case 0xDFE0: /* FNSTSW AX */
		exec_reg_set(x, CPU_RAX, 2, cpu->fx.fsw);
		return EMU_OK;
	}
	return exec_ud(x);
}

/* D8-DF and 9B (WAIT/FWAIT). */
int exec_x87(struct exec *x)
{
	const struct emu_insn *insn = x->insn;
	struct emu_cpu *cpu = x->cpu;
	bool control;
	int rc;

	if (insn->opcode == 0x9B) {
		if ((cpu->s.cr0 & (CR0_MP | CR0_TS)) == (CR0_MP | CR0_TS))
			return emu_raise(cpu, EMU_VEC_NM, false, 0);
		if ((cpu->fx.fsw & FSW_ES) && (cpu->s.cr0 & CR0_NE))
			return emu_raise(cpu, EMU_VEC_MF, false, 0);
		return EMU_OK;
	}
	if (cpu->s.cr0 & (CR0_EM | CR0_TS))
		return emu_raise(cpu, EMU_VEC_NM, false, 0);
	control = no_wait(insn);
	if (!control && (cpu->fx.fsw & FSW_ES) && (cpu->s.cr0 & CR0_NE))
		return emu_raise(cpu, EMU_VEC_MF, false, 0);
	if (host_has(insn->opcode, insn->modrm, insn->mod != 3))
		rc = insn->mod == 3 ? host_register(x) : host_memory(x);
	else
		rc = x87_control(x);
	if (rc == EMU_OK && !control) {
		unsigned reg = (insn->modrm >> 3) & 7;
		bool env = insn->mod != 3 && ((insn->opcode == 0xD9 && reg >= 4) ||
					      (insn->opcode == 0xDD && reg >= 4));

		if (!env) { /* the last non-control instruction */
			cpu->fx.fop = (uint16_t)(((insn->opcode & 7) << 8) | insn->modrm);
			cpu->fx.fip = cpu->s.rip;
			if (insn->mod != 3)
				cpu->fx.fdp = exec_effective_address(x);
		}
	}
	return rc;
}
