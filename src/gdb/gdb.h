/* The gdb stub (-g/--gdb [HOST:]PORT, --gdb-wait): a thread of its own serving the GDB remote
 * serial protocol for the guest over TCP, one client at a time. All vCPUs are threads; while gdb
 * has the guest stopped, every vCPU is parked (vm_pause). Breakpoints and single-step go through
 * the backend's optional set_guest_debug; registers and memory through vcpu_get/set_state and
 * guest RAM, so the software CPU gets the stub by implementing the same op. */
#ifndef VMM_GDB_H
#define VMM_GDB_H

#include <stdbool.h>

struct vm;
struct vcpu;
struct vcpu_exit;

/* Listen on cfg.gdb_host:gdb_port and start the thread; with --gdb-wait the vCPUs are held
 * (vm_pause_begin) until gdb attaches. Before the vCPU threads start. 0, or a negative errno
 * after printing one line. */
int gdb_start(struct vm *vm);
/* Tell a connected gdb the VM is gone ("W" packet), stop and join the thread. Idempotent. */
void gdb_stop(struct vm *vm);
/* A vCPU's VCPU_EXIT_DEBUG: stop the VM for gdb. vCPU thread; returns true (the vCPU parks). */
bool gdb_vcpu_debug_exit(struct vcpu *vcpu, const struct vcpu_exit *exit);

#endif
