/* vCPU threads. Each runs the backend until an exit, dispatches it to the PIO or MMIO bus and
 * goes back in; the loop names no device. */
#include "vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "gdb/gdb.h"

static void vcpu_dump_registers(struct vcpu *vcpu)
{
	struct cpu_state st;
	if (vcpu->vm->backend->vcpu_get_state(vcpu, &st) < 0)
		return;
	static const char *const names[CPU_NR_GPRS] = { "rax", "rcx", "rdx", "rbx", "rsp", "rbp",
							 "rsi", "rdi", "r8",  "r9",  "r10", "r11",
							 "r12", "r13", "r14", "r15" };
	fprintf(stderr, "vmm: vCPU %u registers:\n", vcpu->index);
	for (int i = 0; i < CPU_NR_GPRS; i++)
		fprintf(stderr, "  %-3s %016llx%s", names[i], (unsigned long long)st.gpr[i],
			i % 4 == 3 ? "\n" : "");
	fprintf(stderr, "  rip %016llx  rflags %08llx  cs %04x  ss %04x\n",
		(unsigned long long)st.rip, (unsigned long long)st.rflags,
		st.seg[SEG_CS].selector, st.seg[SEG_SS].selector);
	fprintf(stderr, "  cr0 %08llx  cr2 %016llx  cr3 %016llx  cr4 %08llx  efer %llx\n",
		(unsigned long long)st.cr0, (unsigned long long)st.cr2, (unsigned long long)st.cr3,
		(unsigned long long)st.cr4, (unsigned long long)st.efer);
	fprintf(stderr, "  gdt %016llx/%04x  idt %016llx/%04x\n", (unsigned long long)st.gdt.base,
		st.gdt.limit, (unsigned long long)st.idt.base, st.idt.limit);
}

/* The value of an access, for the trace (little-endian, up to 8 bytes). */
static unsigned long long vcpu_access_value(const uint8_t *data, unsigned size)
{
	unsigned long long v = 0;
	for (unsigned i = 0; i < size && i < 8; i++)
		v |= (unsigned long long)data[i] << (8 * i);
	return v;
}

static void vcpu_trace_exit(struct vcpu *vcpu, const struct vcpu_exit *exit)
{
	struct cpu_state st;
	unsigned long long rip = vcpu->vm->backend->vcpu_get_state(vcpu, &st) == 0 ? st.rip : ~0ull;
	if (exit->reason == VCPU_EXIT_IO)
		trace_event(vcpu->vm, TRACE_EXIT, vcpu->index, "%s rip 0x%llx port 0x%x",
			    stats_exit_name(exit->reason), rip, exit->io.port);
	else if (exit->reason == VCPU_EXIT_MMIO)
		trace_event(vcpu->vm, TRACE_EXIT, vcpu->index, "%s rip 0x%llx gpa 0x%llx",
			    stats_exit_name(exit->reason), rip, (unsigned long long)exit->mmio.gpa);
	else
		trace_event(vcpu->vm, TRACE_EXIT, vcpu->index, "%s rip 0x%llx",
			    stats_exit_name(exit->reason), rip);
}

static void vcpu_io(struct vcpu *vcpu, struct vcpu_exit *exit)
{
	struct vm *vm = vcpu->vm;
	for (uint32_t i = 0; i < exit->io.count; i++) {
		uint8_t *data = exit->io.data + i * exit->io.size;
		const char *name;
		bus_dispatch(&vm->pio, exit->io.port, data, exit->io.size, exit->io.is_write, &name);
		trace_event(vm, TRACE_PIO, vcpu->index, "%s port 0x%x size %u value 0x%llx %s",
			    exit->io.is_write ? "out" : "in", exit->io.port, exit->io.size,
			    vcpu_access_value(data, exit->io.size), name ? name : "(unclaimed)");
	}
}

static void vcpu_mmio(struct vcpu *vcpu, struct vcpu_exit *exit)
{
	struct vm *vm = vcpu->vm;
	const char *name;
	bus_dispatch(&vm->mmio, exit->mmio.gpa, exit->mmio.data, exit->mmio.size, exit->mmio.is_write,
		     &name);
	trace_event(vm, TRACE_MMIO, vcpu->index, "%s gpa 0x%llx size %u value 0x%llx %s",
		    exit->mmio.is_write ? "write" : "read", (unsigned long long)exit->mmio.gpa,
		    exit->mmio.size, vcpu_access_value(exit->mmio.data, exit->mmio.size),
		    name ? name : "(unclaimed)");
}

bool vcpu_handle_exit(struct vcpu *vcpu, struct vcpu_exit *exit)
{
	struct vm *vm = vcpu->vm;
	vcpu->exits_total++;
	unsigned reason = (unsigned)exit->reason < STATS_EXIT_REASONS ? exit->reason
								      : VCPU_EXIT_INTERNAL;
	stats_add(vcpu->stats.exits[reason], 1);
	if (trace_enabled(vm, TRACE_EXIT) && exit->reason != VCPU_EXIT_NONE)
		vcpu_trace_exit(vcpu, exit);
	switch (exit->reason) {
	case VCPU_EXIT_NONE:
		return true;
	case VCPU_EXIT_IO:
		vcpu->exits_io++;
		vcpu_io(vcpu, exit);
		return true;
	case VCPU_EXIT_MMIO:
		vcpu->exits_mmio++;
		vcpu_mmio(vcpu, exit);
		return true;
	case VCPU_EXIT_HLT:
		/* Only without an interrupt controller that can wake it: nothing ever will. */
		fprintf(stderr, "vmm: vCPU %u halted with nothing to wake it\n", vcpu->index);
		vm_request_stop(vm, VM_STATUS_INTERNAL);
		return false;
	case VCPU_EXIT_SHUTDOWN:
		fprintf(stderr, "vmm: vCPU %u: triple fault\n", vcpu->index);
		vcpu_dump_registers(vcpu);
		vm_request_stop(vm, VM_STATUS_TRIPLE_FAULT);
		return false;
	case VCPU_EXIT_RESET:
		vm_request_stop(vm, VM_STATUS_REBOOT);
		return false;
	case VCPU_EXIT_POWEROFF:
		vm_request_stop(vm, VM_STATUS_POWEROFF);
		return false;
	case VCPU_EXIT_DEBUG:
		return gdb_vcpu_debug_exit(vcpu, exit);
	case VCPU_EXIT_INTERNAL:
	default:
		fprintf(stderr, "vmm: vCPU %u: %s\n", vcpu->index, exit->detail);
		vcpu_dump_registers(vcpu);
		vm_request_stop(vm, VM_STATUS_INTERNAL);
		return false;
	}
}

/* Wait outside the guest while the VM is paused (vm_pause counts the parked vCPUs). */
static void vcpu_park(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;
	pthread_mutex_lock(&vm->pause_lock);
	vm->parked++;
	pthread_cond_broadcast(&vm->pause_cond);
	while (atomic_load(&vm->paused) && !atomic_load(&vm->stopping))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	vm->parked--;
	pthread_mutex_unlock(&vm->pause_lock);
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm *vm = vcpu->vm;
	char name[16];
	snprintf(name, sizeof(name), "vcpu%u", vcpu->index);
	pthread_setname_np(pthread_self(), name);
	/* Only the kick signal reaches a vCPU thread; every other signal goes to the main loop. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	trace_event(vm, TRACE_BOOT, vcpu->index, "vCPU thread started");
	/* Time accounting: each interval since `mark` goes to the guest, the monitor or a pause. */
	uint64_t mark = trace_now_ns(), now;
	struct vcpu_stats *stats = &vcpu->stats;
	while (!atomic_load(&vm->stopping)) {
		if (atomic_load(&vm->paused)) {
			now = trace_now_ns();
			stats_add(stats->monitor_ns, now - mark);
			vcpu_park(vcpu);
			mark = trace_now_ns();
			stats_add(stats->paused_ns, mark - now);
		}
		struct vcpu_exit exit = { .reason = VCPU_EXIT_NONE };
		int ret = vm->backend->vcpu_run(vcpu, &exit);
		now = trace_now_ns();
		stats_add(stats->guest_ns, now - mark);
		mark = now;
		if (ret < 0) {
			vm_request_stop(vm, VM_STATUS_INTERNAL);
			break;
		}
		bool go_on = vcpu_handle_exit(vcpu, &exit);
		now = trace_now_ns();
		stats_add(stats->monitor_ns, now - mark);
		mark = now;
		if (!go_on)
			break;
	}
	return NULL;
}

int vcpu_start(struct vcpu *vcpu)
{
	int ret = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);
	if (ret)
		return -ret;
	vcpu->thread_started = true;
	return 0;
}

void vcpu_join(struct vcpu *vcpu)
{
	if (vcpu->thread_started) {
		pthread_join(vcpu->thread, NULL);
		vcpu->thread_started = false;
	}
}
