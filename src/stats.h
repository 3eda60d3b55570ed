/* Statistics (--stats, and the control socket's stats request): per-vCPU exits by reason and time
 * in the guest vs. the monitor, per-range bus accesses, interrupts, per-device counters, and the
 * boot marks of the debug port.
 *
 * Every counter has one writer (its vCPU thread, or the device under its lock) or is updated with
 * relaxed atomics; readers may run at any time and see a slightly old but never torn value. */
#ifndef VMM_STATS_H
#define VMM_STATS_H

#include <stdint.h>
#include <stdio.h>

#include "cpu/backend.h"

#define STATS_EXIT_REASONS (VCPU_EXIT_DEBUG + 1)
#define STATS_MAX_GSI 24 /* IOAPIC pins; higher GSIs are counted together */

/* One writer: the vCPU's own thread. */
struct vcpu_stats {
	uint64_t exits[STATS_EXIT_REASONS];
	uint64_t guest_ns; /* inside vcpu_run() */
	uint64_t monitor_ns; /* handling exits */
	uint64_t paused_ns; /* parked by vm_pause (gdb stop, API pause) */
};

/* Many writers (devices on any thread): relaxed atomics. */
struct vm_irq_stats {
	uint64_t raised[STATS_MAX_GSI + 1]; /* rising edges of vm_irq_line per GSI; last: the rest */
	uint64_t msis;
};

/* Single-writer increment that a reader on another thread may load at any time. */
#define stats_add(counter, n) __atomic_store_n(&(counter), (counter) + (n), __ATOMIC_RELAXED)
#define stats_load(counter) __atomic_load_n(&(counter), __ATOMIC_RELAXED)

struct vm;
const char *stats_exit_name(unsigned reason);
/* Everything, human-readable, as --stats prints it at exit. Any thread, at any time. */
void stats_format(struct vm *vm, FILE *out);
/* The same into buf (NUL-terminated, truncated to len). Returns the length it needed. */
size_t stats_format_buffer(struct vm *vm, char *buf, size_t len);

#endif
