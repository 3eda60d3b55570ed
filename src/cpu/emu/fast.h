/* Specialised handlers for the most frequent instruction forms (fast.c). Not for use outside
 * src/cpu/emu/.
 *
 * emu_execute() handles every instruction generically: it sets up a struct exec, computes the
 * effective address, dispatches on map and opcode, and reads operand sizes and registers from
 * the decoded instruction as it goes. For the forms that make up most of what a kernel
 * executes in 64-bit mode, emu_fast_select() picks, once per decoded instruction, a handler
 * that does the same for exactly that form (operation, operand size and kind fixed at compile
 * time, register operands resolved into insn->fast_a/fast_b), and stores it in insn->fast.
 * Everything else (LOCK, 67 prefix, AH..BH, modes other than 64-bit, system instructions,
 * string instructions, ...) keeps insn->fast = NULL and goes to emu_execute().
 *
 * A handler keeps emu_execute()'s contract: on EMU_OK the instruction retired (RIP advanced or
 * branched, the instruction counted, the interrupt shadow cleared); on anything else
 * (EMU_EXCEPTION, EMU_STOP) registers, flags and memory are as before it, RIP at it. */
#ifndef VMM_CPU_EMU_FAST_H
#define VMM_CPU_EMU_FAST_H

#include "cpu/emu/decode.h"
#include "cpu/emu/emu.h"

/* Choose insn->fast (and fast_a/fast_b) for an instruction decoded in `mode`. */
void emu_fast_select(struct emu_insn *insn, enum emu_mode mode);

/* Whether condition code `cc` (0..15, SDM Vol. 1 appendix B) holds for the current flags. */
int emu_fast_cond(struct emu_cpu *cpu, unsigned cc);

/* Execute one decoded instruction fetched at cpu->s.rip: its handler, or emu_execute(). */
static inline int emu_execute_insn(struct emu_cpu *cpu, const struct emu_insn *insn)
{
	if (insn->fast)
		return insn->fast(cpu, insn);
	return emu_execute(cpu, insn);
}

/* An instruction without a specialised handler, in a block (cpu.c): emu_execute(), and
 * block_exit unless it fell through to the next instruction. Blocks give it to every
 * instruction whose insn->fast is NULL. */
int emu_block_generic(struct emu_cpu *cpu, const struct emu_insn *insn);

#endif
