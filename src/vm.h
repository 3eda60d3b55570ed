/* The VM object: everything one `vmm` process runs. No other global state exists. */
#ifndef VMM_VM_H
#define VMM_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "config.h"
#include "event_loop.h"
#include "cpu/backend.h"
#include "memory.h"
#include "stats.h"
#include "trace.h"

#define VM_MAX_VCPUS 64

/* Exit statuses of the `vmm` process (documented in README.md and docs/vmm.1). */
enum vm_status {
	VM_STATUS_POWEROFF = 0,
	VM_STATUS_ERROR = 1, /* monitor set-up or runtime error */
	VM_STATUS_USAGE = 2, /* bad command line */
	VM_STATUS_REBOOT = 3,
	VM_STATUS_PANIC = 4,
	VM_STATUS_TRIPLE_FAULT = 5,
	VM_STATUS_INTERNAL = 6,
	VM_STATUS_USER_QUIT = 7, /* Ctrl-A x on the console */
};

struct vcpu {
	struct vm *vm;
	unsigned index; /* also the APIC id */
	pthread_t thread;
	bool thread_started;
	void *backend_data; /* owned by the backend */
	uint64_t exits_io, exits_mmio, exits_total;
	struct vcpu_stats stats; /* written only by this vCPU's thread (stats.h) */
};

/* Work a device holds back while the guest is busy, handed over as soon as a vCPU goes idle
 * (virtio-blk's paced completions). `fn` returns true when it handed something over (an
 * interrupt may be pending now). */
#define VM_MAX_IDLE_HOOKS 16
struct vm_idle_hook {
	bool (*fn)(void *opaque);
	void *opaque;
};

struct vm {
	struct vm_config cfg;
	const struct cpu_backend *backend;
	void *backend_data;
	struct guest_memory mem;
	struct bus pio, mmio;

	unsigned nr_vcpus;
	struct vcpu vcpus[VM_MAX_VCPUS];
	struct cpu_state boot_state; /* vCPU 0's state at the kernel entry */

	/* Stop request: the first status set wins; the main loop is woken through stop_fd. */
	atomic_bool stopping;
	atomic_int status;
	int stop_fd; /* eventfd */

	/* Pause: while `paused`, every vCPU thread parks outside the guest (vcpu.c). */
	pthread_mutex_t pause_lock; /* guards paused and parked */
	pthread_cond_t pause_cond;
	atomic_bool paused;
	unsigned parked;
	bool pause_complete; /* vm_pause saw every vCPU parked (and told the backend) */

	struct devices *devices; /* the platform devices (devices/platform.c) */
	struct virtio_devices *virtio; /* PCI host bridge and virtio devices (virtio/devices.c) */
	struct event_loop *loop; /* the main thread's loop; outlives the VM across restarts */

	struct trace trace; /* -t: enabled categories and where lines go (trace.h) */
	struct vm_irq_stats irq_stats;
	uint64_t created_ns, started_ns; /* monitor set-up done / vCPUs started (trace_now_ns) */
	struct gdb_server *gdb; /* -g: the gdb stub (gdb/gdb.h), or NULL */

	/* Set by a backend's vm_init when it sees its vCPUs go idle and calls vm_run_idle_hooks()
	 * before one sleeps (the software CPU; KVM halts in the kernel). Devices add hooks while
	 * the machine is built (fixed once the vCPUs run: read without a lock). */
	bool idle_hooks_run;
	unsigned nr_idle_hooks;
	struct vm_idle_hook idle_hooks[VM_MAX_IDLE_HOOKS];
};

/* The kernel and initrd files, read once (a restart after reboot loads them again from here). */
struct vm_images {
	uint8_t *kernel, *initrd;
	size_t kernel_size, initrd_size;
};

/* Build the whole machine; NULL after printing one line that says why. */
struct vm *vm_create(const struct vm_config *cfg, const struct cpu_backend *backend,
		     const struct vm_images *img, struct event_loop *loop, int console_out_fd);
void vm_destroy(struct vm *vm);
/* Start every vCPU thread / kick and join them all. */
int vm_start_vcpus(struct vm *vm);
void vm_stop_vcpus(struct vm *vm);

/* Stop every vCPU outside the guest and return once all are parked (idempotent); resume them.
 * Any thread but a vCPU thread. */
void vm_pause(struct vm *vm);
void vm_resume(struct vm *vm);
/* Start a pause without waiting for it (any thread, a vCPU thread too: that vCPU parks when it
 * returns to its run loop); vm_pause() then waits until every vCPU is parked. */
void vm_pause_begin(struct vm *vm);

/* Ask every thread to stop; the process will exit with `status` (first caller wins). Any thread. */
void vm_request_stop(struct vm *vm, enum vm_status status);
/* Add a hook that runs when a vCPU goes idle (only while the machine is built; -ENOSPC when
 * full). */
int vm_add_idle_hook(struct vm *vm, bool (*fn)(void *opaque), void *opaque);
/* A vCPU is about to sleep with nothing to run: every hook; true when one handed work over.
 * That vCPU's thread. */
bool vm_run_idle_hooks(struct vm *vm);
/* Raise/lower a GSI or send an MSI through the backend. Any thread. */
int vm_irq_line(struct vm *vm, unsigned gsi, bool level);
/* Edge interrupt: raise then lower. */
int vm_irq_pulse(struct vm *vm, unsigned gsi);
/* Send an MSI through the backend (-ENOSYS without MSI support). Any thread. */
int vm_irq_msi(struct vm *vm, uint64_t address, uint32_t data);

#endif
