/* x86 for the gdb stub: the register layout gdb is told about (target description), register
 * values to and from cpu_state, and the guest's page-table walk. Pure: unit-tested. */
#ifndef VMM_GDB_X86_H
#define VMM_GDB_X86_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/state.h"

/* Which layout: chosen from the vCPU's mode when gdb attaches (64-bit when EFER.LMA). */
enum gdb_x86_mode { GDB_X86_64, GDB_X86_32 };

unsigned gdb_x86_nr_regs(enum gdb_x86_mode mode);
/* Size in bytes of register n (0 for an unknown n). */
unsigned gdb_x86_reg_size(enum gdb_x86_mode mode, unsigned n);
/* Little-endian bytes of register n into out (gdb_x86_reg_size bytes); x87 and SSE registers
 * come from the FXSAVE image (gdb's full tag word computed from the abridged one). */
void gdb_x86_reg_get(enum gdb_x86_mode mode, const struct cpu_state *st, unsigned n, uint8_t *out);
/* Set register n from its bytes: general registers, RIP, RFLAGS, FS/GS base, x87 and SSE.
 * Others (segment selectors, control registers) are read-only here: false. */
bool gdb_x86_reg_set(enum gdb_x86_mode mode, struct cpu_state *st, unsigned n, const uint8_t *in);
/* Bytes of the whole 'g' packet. */
size_t gdb_x86_regs_size(enum gdb_x86_mode mode);
/* The target description (target.xml) for qXfer:features:read into buf (NUL-terminated).
 * Returns its length, 0 when cap is too small. */
size_t gdb_x86_target_xml(enum gdb_x86_mode mode, char *buf, size_t cap);

/* Reads guest-physical memory; false when [pa, pa+len) is not RAM. */
typedef bool (*gdb_read_phys_fn)(void *opaque, uint64_t pa, void *buf, size_t len);
/* Translate a guest-virtual address with the vCPU's paging mode (none, 32-bit, PAE, 4- or
 * 5-level): 0 and *pa, or -EFAULT when not mapped (or a table is outside RAM). */
int gdb_x86_translate(const struct cpu_state *st, uint64_t va, uint64_t *pa,
		      gdb_read_phys_fn read_phys, void *opaque);

#endif
