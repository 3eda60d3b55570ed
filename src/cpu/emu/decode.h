/* x86 instruction decoder: bytes → struct emu_insn.
 *
 * The decoded form depends only on the bytes and the mode (default operand/address size, 64-bit
 * mode), never on register values, so it can be cached per guest-physical address later. */
#ifndef VMM_CPU_EMU_DECODE_H
#define VMM_CPU_EMU_DECODE_H

#include <stdint.h>

#include "cpu/emu/emu.h"

#define EMU_MAX_INSN_LEN 15

enum emu_map {
	EMU_MAP_1, /* one-byte opcodes */
	EMU_MAP_0F, /* 0F xx */
	EMU_MAP_0F38, /* 0F 38 xx */
	EMU_MAP_0F3A, /* 0F 3A xx */
};

/* Prefix bits in emu_insn.prefix. */
#define EMU_PFX_LOCK 0x01
#define EMU_PFX_REP 0x02 /* F3 */
#define EMU_PFX_REPNE 0x04 /* F2 */
#define EMU_PFX_OPSIZE 0x08 /* 66 */
#define EMU_PFX_ADSIZE 0x10 /* 67 */
#define EMU_PFX_REX 0x20 /* a REX prefix is present (selects SPL/BPL/SIL/DIL over AH..BH) */
#define EMU_PFX_SEG 0x40 /* a segment override is present */

#define EMU_REG_NONE 0xff
#define EMU_REG_RIP 0x10 /* base of a RIP-relative operand */

/* Per-opcode attributes (decode.c tables). */
#define EMU_OP_MODRM 0x0001
#define EMU_OP_BYTE 0x0002 /* 8-bit operand size */
#define EMU_OP_D64 0x0004 /* default 64-bit operand size in 64-bit mode (66 gives 16) */
#define EMU_OP_F64 0x0008 /* operand size forced to 64 in 64-bit mode (near branches) */
#define EMU_OP_I64 0x0010 /* invalid in 64-bit mode */
#define EMU_OP_INVALID 0x0020 /* not an instruction (#UD) */
#define EMU_OP_IMM_SHIFT 8
#define EMU_OP_IMM_MASK 0x0f00
enum emu_imm_kind {
	EMU_IMM_NONE,
	EMU_IMM_B, /* 8 bits, sign-extended */
	EMU_IMM_W, /* 16 bits, zero-extended */
	EMU_IMM_Z, /* 16 or 32 bits by operand size, sign-extended */
	EMU_IMM_V, /* 16, 32 or 64 bits by operand size (MOV r, imm) */
	EMU_IMM_ENTER, /* 16 bits + 8 bits */
	EMU_IMM_FAR, /* 16:16 or 16:32 far pointer */
	EMU_IMM_MOFFS, /* an address of address size */
	EMU_IMM_GRP3, /* F6/F7: B or Z only for /0 and /1 */
};

struct emu_insn;
struct emu_cpu;
/* A specialised handler for one instruction form (fast.h). */
typedef int (*emu_fast_fn)(struct emu_cpu *cpu, const struct emu_insn *insn);

struct emu_insn {
	uint8_t len;
	uint8_t map; /* enum emu_map */
	uint8_t opcode;
	uint8_t prefix; /* EMU_PFX_* */
	uint8_t last_rep; /* 0, 0xF2 or 0xF3: the last of them (SSE mandatory prefix) */
	uint8_t rex; /* the REX byte, 0 if none */
	uint8_t seg; /* enum cpu_seg of the memory operand (override or default) */
	uint8_t opsize; /* operand size in bytes: 1, 2, 4 or 8 */
	uint8_t adsize; /* address size in bytes: 2, 4 or 8 */
	uint8_t modrm; /* the raw byte */
	uint8_t mod; /* 0..3; 3 = register operand */
	uint8_t reg; /* ModRM.reg extended by REX.R */
	uint8_t rm; /* ModRM.rm extended by REX.B (register operand when mod == 3) */
	uint8_t base, index; /* memory operand: registers, EMU_REG_NONE or EMU_REG_RIP */
	uint8_t scale; /* 1, 2, 4 or 8 */
	uint8_t imm_size; /* bytes of immediate decoded */
	uint8_t fast_a, fast_b; /* register operands resolved by emu_fast_select() */
	uint16_t attr; /* EMU_OP_* of the opcode */
	uint16_t imm2; /* ENTER's nesting level; a far pointer's selector */
	int32_t disp; /* displacements are at most 32 bits, sign-extended */
	uint64_t imm; /* sign- or zero-extended per enum emu_imm_kind */
	emu_fast_fn fast; /* set by emu_fast_select(), NULL: emu_execute() */
};
/* Blocks hold up to 40 of these (cpu.c): keep it small. */
_Static_assert(sizeof(struct emu_insn) == 48, "struct emu_insn is 48 bytes");

enum emu_decode_result {
	EMU_DECODE_OK = 0,
	EMU_DECODE_UD = -1, /* invalid opcode: #UD */
	EMU_DECODE_TOO_LONG = -2, /* more than 15 bytes: #GP(0) */
	EMU_DECODE_SHORT = -3, /* ran out of the `avail` bytes given */
};

/* Decode one instruction from bytes[0..avail). Returns an enum emu_decode_result. */
int emu_decode(const uint8_t *bytes, unsigned avail, enum emu_mode mode, struct emu_insn *insn);

static inline int emu_insn_has_mem(const struct emu_insn *insn)
{
	return (insn->attr & EMU_OP_MODRM) && insn->mod != 3;
}

/* Execute one decoded instruction fetched at cpu->s.rip (exec.c). */
int emu_execute(struct emu_cpu *cpu, const struct emu_insn *insn);

#endif
