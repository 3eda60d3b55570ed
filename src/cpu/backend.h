/* The vCPU backend interface: the only part of the monitor that knows how guest code runs.
 *
 * Two implementations: KVM (src/cpu/kvm.c) and the software x86-64 CPU (src/cpu/emu/). Both turn
 * guest execution into the same exits, delivered to the same run loop (src/vcpu.c) and devices.
 * Interrupts leave devices as a GSI level or an MSI address/data pair; the backend routes them to
 * its interrupt controllers (KVM's in-kernel irqchip, or the software CPU's own LAPIC/IOAPIC). */
#ifndef VMM_CPU_BACKEND_H
#define VMM_CPU_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cpu/state.h"

struct vm;
struct vcpu;

enum vcpu_exit_reason {
	VCPU_EXIT_NONE, /* returned early (kicked): the run loop checks for stop/pause and re-enters */
	VCPU_EXIT_IO, /* port I/O */
	VCPU_EXIT_MMIO, /* access to guest-physical memory that is not RAM */
	VCPU_EXIT_HLT, /* halted with interrupts off or no interrupt controller to wake it */
	VCPU_EXIT_SHUTDOWN, /* triple fault */
	VCPU_EXIT_RESET, /* the platform asked for a reset */
	VCPU_EXIT_POWEROFF, /* the platform asked to power off */
	VCPU_EXIT_INTERNAL, /* the backend cannot continue: detail says why */
	VCPU_EXIT_DEBUG, /* breakpoint or single step (gdb stub) */
};

struct vcpu_exit {
	enum vcpu_exit_reason reason;
	union {
		struct {
			uint16_t port;
			uint8_t size; /* 1, 2 or 4 */
			bool is_write;
			uint32_t count; /* string I/O: repeat count, data holds count * size bytes */
			uint8_t *data;
		} io;
		struct {
			uint64_t gpa;
			uint8_t size; /* 1..8 */
			bool is_write;
			uint8_t *data;
		} mmio;
		struct {
			uint8_t exception; /* 1: #DB (single step, hardware breakpoint), 3: #BP (int3) */
			uint64_t pc; /* linear address of the instruction */
			uint64_t dr6; /* #DB: bits 0-3 the hardware breakpoint hit, bit 14 single step */
		} debug;
	};
	char detail[160]; /* human-readable reason for VCPU_EXIT_INTERNAL */
};

/* Debug controls for the gdb stub (set_guest_debug); x86 debug-register semantics. */
#define CPU_DEBUG_MAX_HW 4
enum cpu_hw_break { CPU_HW_EXEC, CPU_HW_WRITE, CPU_HW_ACCESS };
struct cpu_debug {
	bool enabled; /* false: no debug exits (and none of the below) */
	bool single_step; /* a DEBUG exit after one instruction */
	bool sw_breakpoints; /* int3 exits to the monitor instead of the guest's #BP handler */
	unsigned nr_hw;
	struct {
		uint64_t addr; /* linear */
		enum cpu_hw_break type;
		uint8_t len; /* 1, 2, 4 or 8 (EXEC: 1) */
	} hw[CPU_DEBUG_MAX_HW];
};

struct cpu_backend {
	const char *name; /* "kvm" or "emu" */

	/* VM-wide set-up once memory exists: memslots, interrupt controllers, timers. */
	int (*vm_init)(struct vm *vm);
	void (*vm_destroy)(struct vm *vm);

	int (*vcpu_init)(struct vcpu *vcpu);
	void (*vcpu_destroy)(struct vcpu *vcpu);
	int (*vcpu_get_state)(struct vcpu *vcpu, struct cpu_state *state);
	int (*vcpu_set_state)(struct vcpu *vcpu, const struct cpu_state *state);
	/* Run until the next exit the monitor must handle. The data of an IO/MMIO read exit is filled
	 * in by the run loop before the next vcpu_run(), which completes the instruction. */
	int (*vcpu_run)(struct vcpu *vcpu, struct vcpu_exit *exit);
	/* Make a running vcpu_run() return soon (any thread). */
	void (*vcpu_kick)(struct vcpu *vcpu);

	/* Interrupts from devices (any thread). */
	int (*irq_line)(struct vm *vm, unsigned gsi, bool level);
	int (*irq_msi)(struct vm *vm, uint64_t address, uint32_t data);

	/* Optional (NULL: not supported, the write arrives as an ordinary MMIO exit instead).
	 * Writes of any size to MMIO address addr signal the eventfd fd without leaving the guest
	 * (assign), or no longer do (!assign). 0 or a negative errno. */
	int (*ioeventfd)(struct vm *vm, uint64_t addr, int fd, bool assign);

	/* Optional: called with every vCPU parked (vm_pause) and before they run again (vm_resume),
	 * so the guest's clock does not jump over the pause. */
	void (*vm_paused)(struct vm *vm);
	void (*vm_resuming)(struct vm *vm);

	/* Optional (NULL: the gdb stub reads and writes registers and memory but cannot break or
	 * step). Called with the vCPU parked; replaces its previous debug controls. Exits it causes
	 * are VCPU_EXIT_DEBUG, reported as KVM reports them (#BP: pc at the int3; #DB: pc of the
	 * next instruction, DR6 bits 0-3 the hw[] entries hit, bit 14 a single step). 0 or a
	 * negative errno. */
	int (*set_guest_debug)(struct vcpu *vcpu, const struct cpu_debug *debug);

	/* Optional: the backend's own lines for --stats and `vmm stat` (any thread, while the
	 * vCPUs run). */
	void (*format_stats)(struct vm *vm, FILE *out);
};

extern const struct cpu_backend cpu_backend_kvm;
extern const struct cpu_backend cpu_backend_emu;

#endif
