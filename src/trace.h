/* Event tracing (-t/--trace): one line per event, with a monotonic timestamp relative to the
 * start of the process and the vCPU (or "host") it happened on.
 *
 * Any part of the monitor may trace (`vm` is anything with a `struct trace trace` member: the VM,
 * or the API server, which serves before there is a VM):
 *	if (trace_enabled(vm, TRACE_PIO))
 *		trace_event(vm, TRACE_PIO, vcpu->index, "write 0x%x", port);
 * trace_enabled() is one bit test on the VM object, so a disabled category costs a load and a
 * branch; trace_event() tests it too, so the guard is only needed around costly argument set-up.
 * Lines are written with one write(2) each: threads never interleave within a line. */
#ifndef VMM_TRACE_H
#define VMM_TRACE_H

#include <stdint.h>

enum trace_category {
	TRACE_BOOT, /* VM set-up, loading, vCPU start, debug-port marks */
	TRACE_EXIT, /* every VM exit: reason, vCPU, RIP */
	TRACE_PIO, /* port I/O dispatched to the bus */
	TRACE_MMIO, /* MMIO dispatched to the bus */
	TRACE_PCI, /* PCI configuration space, BAR placement */
	TRACE_VIRTIO, /* queue notifications, chains, completions, device status */
	TRACE_IRQ, /* interrupt lines and MSIs */
	TRACE_NET,
	TRACE_BLK,
	TRACE_CONTROL, /* control socket, gdb stub */
	TRACE_NR_CATEGORIES
};

#define TRACE_ALL ((1u << TRACE_NR_CATEGORIES) - 1)
#define TRACE_HOST (-1) /* the "vcpu" of events that happen outside a vCPU thread */

struct trace {
	uint32_t mask; /* 1 << enum trace_category */
	int fd; /* not owned: main opened it (stderr or --trace-file) */
	uint64_t start_ns; /* CLOCK_MONOTONIC at process start */
};

#ifndef VMM_TRACE_COMPILED_OUT
#define trace_enabled(vm, cat) (__builtin_expect(((vm)->trace.mask >> (cat)) & 1u, 0))
#else /* only for bench/boot's baseline: the monitor with every trace point gone (-t does nothing) */
#define trace_enabled(vm, cat) ((void)(vm), (void)(cat), 0)
#endif
#define trace_event(vm, cat, vcpu, ...)                                                    \
	do {                                                                               \
		if (trace_enabled(vm, cat))                                                \
			trace_write(&(vm)->trace, cat, (int)(vcpu), __VA_ARGS__);          \
	} while (0)

void trace_write(const struct trace *t, enum trace_category cat, int vcpu, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* "pio,mmio", "all", "all,-exit"... into a mask. 0, or -1 with the bad word in err. */
int trace_parse_categories(const char *text, uint32_t *mask, char *err, unsigned err_len);
const char *trace_category_name(enum trace_category cat);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t trace_now_ns(void);

#endif
