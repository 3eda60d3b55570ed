/* The software CPU as a vCPU backend (`--accel emu`): cpu_backend_emu.
 *
 * Each vCPU thread runs emu_run() (a block of instructions up to a branch) in batches. Between
 * blocks it looks (one relaxed load) at an attention flag that other threads set when they kick
 * it or make an interrupt pending, and at whether a pending interrupt may now be taken; between
 * batches at the LAPIC timer's deadline. A block ends after any MMIO access, so the replay
 * log below only ever holds one instruction's accesses. HLT sleeps on a condition variable until an interrupt, the timer or a kick.
 *
 * Memory: RAM pages come straight from guest memory; the LAPIC page and the IOAPIC are handled
 * here; a write to a virtio notify address registered through ioeventfd signals its eventfd
 * here too (no exit: the main loop takes the kick, as with KVM_IOEVENTFD); every other non-RAM
 * access stops the instruction (EMU_STOP) and becomes a VCPU_EXIT_MMIO/IO. The instruction is restarted from scratch at the next vcpu_run(), and the
 * accesses it already completed are replayed from a per-instruction log, in order (kind,
 * address, size, direction and written data must match): a read-modify-write, a MOVS between
 * MMIO and RAM or an access split in 8-byte pieces makes several. The log is emptied when an
 * instruction retires or faults. A REP string instruction keeps its completed iterations when
 * it stops (the core's contract), so entries are tagged with RCX: entries of iterations that
 * are done no longer match and are dropped at the restart.
 *
 * Interrupts: devices' GSIs go to the IOAPIC, MSIs are decoded, and both become APIC messages
 * routed by apic_bus_deliver() to the LAPICs (lapic.c), which kick the target vCPU.
 *
 * Time: the virtual clock is the host's CLOCK_MONOTONIC minus the time spent paused; the
 * guest's TSC runs at 1 GHz on the same clock (emu_read_tsc() plus the per-vCPU offset), and
 * kvmclock (pvclock.c) describes exactly that relation. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu/cpuid.h"
#include "cpu/emu/apic_bus.h"
#include "cpu/emu/emu.h"
#include "cpu/emu/jit.h"
#include "cpu/emu/ioapic.h"
#include "cpu/emu/lapic.h"
#include "cpu/emu/pvclock.h"
#include "poll_window.h"
#include "vm.h"

/* Blocks between looks at the clock: what a running vCPU adds to its LAPIC timer's latency
 * (512 blocks are ~100 us of guest code at ~30 M instructions/s; a look costs ~0.1 us). */
#define EMU_BATCH 512
/* More while the timer's deadline is far (ev_next_batch()): a batch ends in emu_run()'s return
 * and a block lookup that starts the next, ~17 per 4 KiB QD32 read request with 512 (the
 * kernel's copy loops run a block per 8 bytes). */
#define EMU_BATCH_MAX 16384
#define EMU_LOG_MAX 80 /* replayed accesses per instruction (FXSAVE to MMIO: 64 pieces) */
#define EMU_UD_LOG_MAX 32 /* distinct #UD instructions reported */
#define EMU_IOEVENTFD_MAX 256 /* notify addresses that signal an eventfd without an exit */

#define PAGE_SIZE 4096ull

/* CPUID bits the backend adds: it owns the LAPIC (SDM Vol. 2A, CPUID). */
#define F1_EDX_APIC (1u << 9)
#define F1_ECX_X2APIC (1u << 21)
#define F1_ECX_TSC_DEADLINE (1u << 24)

#define MSR_TSC 0x10

enum access_kind { ACCESS_MMIO, ACCESS_PIO };

struct access {
	uint8_t kind; /* enum access_kind */
	uint8_t size; /* 1..8 */
	bool is_write;
	bool done; /* the monitor completed it (read data valid) */
	uint64_t addr;
	uint64_t rcx; /* RCX when it was made: which REP iteration */
	uint8_t data[8];
};

struct access_log {
	unsigned n; /* entries */
	unsigned cursor; /* next entry to replay in this attempt */
	struct access a[EMU_LOG_MAX];
};

struct emu_vm;

/* The pace of a vCPU's batches of blocks: blocks run since the clock was read at (0: not). */
struct ev_pace {
	uint64_t at_ns, blocks;
};

struct emu_vcpu {
	struct emu_cpu cpu;
	struct vcpu *vcpu;
	struct emu_vm *evm;
	struct lapic lapic;
	bool lapic_ready;
	struct access_log log;
	bool exit_pending; /* log.a[log.n - 1] went out as an exit */
	bool halted; /* HLT retired, waiting for an interrupt */
	bool wait_sipi; /* after INIT (or at creation for APs): waiting for a SIPI */
	unsigned kicked; /* vcpu_kick: return from vcpu_run (atomic) */
	uint64_t timer_deadline; /* virtual ns, LAPIC_NO_DEADLINE; atomic */
	struct ev_pace pace; /* of the batches (ev_next_batch()); the vCPU thread's */
	pthread_mutex_t lock; /* with cond: the HLT sleep */
	pthread_cond_t cond;
	bool sync_ready;
	/* kvmclock */
	uint64_t system_time_msr;
	uint64_t system_time_gpa; /* 0: disabled */
	bool guest_stopped; /* set PVCLOCK_GUEST_STOPPED at the next update */
	/* Statistics (this vCPU's thread writes them, any thread reads them): time spent halted
	 * or waiting for SIPI, sleeps, interrupts taken, and how long a woken vCPU took to run
	 * again (from the first ev_wake() of a sleep to the thread holding its lock again). */
	uint64_t sleep_ns, sleeps, interrupts, wakeups, wake_latency_ns;
	uint64_t halts; /* HLT retired (a halt that finds an interrupt waiting does not sleep) */
	/* HLT: how long to poll for a wake-up before sleeping (this vCPU's thread updates it),
	 * and whether one is due: the vCPU notified a device (a disk request, a frame sent) and
	 * has taken no interrupt since. Other halts (an idle guest's) never poll. */
	struct poll_window halt_poll;
	bool io_expect;
	/* The first notify after a sleep yields the host CPU (kick_yield()); how many did. */
	bool yield_next_kick;
	uint64_t kick_yields;
	/* Guarded by `lock`: the thread waits in ev_sleep(), and when it was first woken. */
	bool sleeping;
	uint64_t woken_at_ns; /* 0: not woken since it went to sleep */
	/* gdb (set_guest_debug, written with the vCPU parked) */
	bool debugging; /* instructions go through ev_step_debug() */
	bool single_step; /* a debug exit after each instruction; no interrupt taken meanwhile */
	struct emu_debug debug;
};

/* A write to `addr` signals `fd` from the vCPU thread (KVM_IOEVENTFD without a data match). */
struct emu_ioeventfd {
	uint64_t addr;
	int fd;
};

struct emu_vm {
	struct vm *vm;
	pthread_rwlock_t ioeventfd_lock; /* vCPUs read the table, BAR (un)mapping writes it */
	unsigned nr_ioeventfds;
	struct emu_ioeventfd ioeventfds[EMU_IOEVENTFD_MAX];
	struct ioapic ioapic;
	bool ioapic_ready;
	struct lapic *lapics[VM_MAX_VCPUS];
	unsigned nr_lapics; /* atomic: LAPICs that exist, in vCPU order */
	pthread_mutex_t lock; /* wall clock updates, the #UD log */
	uint64_t paused_total_ns; /* virtual ns = monotonic - paused_total_ns */
	uint64_t paused_at_ns;
	uint64_t wall_clock_msr;
	uint64_t ud_count; /* atomic */
	unsigned ud_logged;
	uint8_t ud_seen[EMU_UD_LOG_MAX][4];
	bool jit; /* compile hot blocks to host code (VMM_EMU_JIT, default on) */
	bool jit_templates; /* with inlined templates (VMM_EMU_JIT=calls: without) */
};

static struct emu_vcpu *to_ev(struct emu_cpu *cpu)
{
	return (struct emu_vcpu *)((char *)cpu - offsetof(struct emu_vcpu, cpu));
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t virtual_ns(const struct emu_vm *evm)
{
	return mono_ns() - __atomic_load_n(&evm->paused_total_ns, __ATOMIC_RELAXED);
}

/* This vCPU's TSC at virtual time `ns`: emu_read_tsc() is monotonic + tsc_offset. */
static uint64_t tsc_at_ns(struct emu_vcpu *ev, uint64_t ns)
{
	return ns + __atomic_load_n(&ev->evm->paused_total_ns, __ATOMIC_RELAXED) +
	       ev->cpu.msr.tsc_offset;
}

/* ---- waking a vCPU ---- */

static void ev_wake(struct emu_vcpu *ev)
{
	__atomic_store_n(&ev->cpu.attention, 1, __ATOMIC_RELEASE);
	if (!ev->sync_ready)
		return;
	pthread_mutex_lock(&ev->lock);
	if (ev->sleeping && !ev->woken_at_ns)
		ev->woken_at_ns = mono_ns();
	pthread_cond_signal(&ev->cond);
	pthread_mutex_unlock(&ev->lock);
}

/* ---- LAPIC and IOAPIC glue ---- */

static uint64_t lapic_cb_now(void *opaque)
{
	struct emu_vcpu *ev = opaque;
	return virtual_ns(ev->evm);
}

static uint64_t lapic_cb_tsc_at(void *opaque, uint64_t ns)
{
	return tsc_at_ns(opaque, ns);
}

static void lapic_cb_send(void *opaque, const struct apic_message *msg)
{
	struct emu_vcpu *ev = opaque;
	struct emu_vm *evm = ev->evm;

	apic_bus_deliver(evm->lapics, __atomic_load_n(&evm->nr_lapics, __ATOMIC_ACQUIRE), msg,
			 (int)ev->vcpu->index);
}

static void lapic_cb_eoi(void *opaque, uint8_t vector)
{
	struct emu_vcpu *ev = opaque;

	if (ev->evm->ioapic_ready)
		ioapic_eoi(&ev->evm->ioapic, vector);
}

static void lapic_cb_kick(void *opaque)
{
	ev_wake(opaque);
}

static void lapic_cb_timer_update(void *opaque, uint64_t deadline_ns)
{
	struct emu_vcpu *ev = opaque;

	__atomic_store_n(&ev->timer_deadline, deadline_ns, __ATOMIC_RELEASE);
	ev_wake(ev);
}

static const struct lapic_ops emu_lapic_ops = {
	.now_ns = lapic_cb_now,
	.tsc_at = lapic_cb_tsc_at,
	.send = lapic_cb_send,
	.eoi = lapic_cb_eoi,
	.kick = lapic_cb_kick,
	.timer_update = lapic_cb_timer_update,
};

static int ioapic_cb_deliver(void *opaque, const struct apic_message *msg)
{
	struct emu_vm *evm = opaque;

	return apic_bus_deliver(evm->lapics, __atomic_load_n(&evm->nr_lapics, __ATOMIC_ACQUIRE),
				msg, -1);
}

static const struct ioapic_ops emu_ioapic_ops = { .deliver = ioapic_cb_deliver };

/* ---- kvmclock ---- */

static void pvclock_refresh(struct emu_vcpu *ev)
{
	struct vm *vm = ev->evm->vm;
	void *host;

	if (!ev->system_time_gpa)
		return;
	host = memory_gpa_to_host(&vm->mem, ev->system_time_gpa,
				  sizeof(struct pvclock_vcpu_time_info));
	if (!host)
		return; /* not RAM: nothing to fill, as KVM does */
	uint64_t now = virtual_ns(ev->evm);
	struct pvclock_sample sample = { .tsc = tsc_at_ns(ev, now), .system_ns = now,
					 .tsc_hz = PVCLOCK_EMU_TSC_HZ,
					 .flags = PVCLOCK_TSC_STABLE_BIT };
	if (ev->guest_stopped)
		sample.flags |= PVCLOCK_GUEST_STOPPED;
	ev->guest_stopped = false;
	pvclock_update_time_info(host, &sample);
	memory_written(&vm->mem, host, sizeof(struct pvclock_vcpu_time_info));
}

static void pvclock_wall_clock(struct emu_vcpu *ev, uint64_t gpa)
{
	struct emu_vm *evm = ev->evm;
	struct timespec rt;
	void *host = memory_gpa_to_host(&evm->vm->mem, gpa, sizeof(struct pvclock_wall_clock));

	if (!host || (gpa & 3))
		return;
	clock_gettime(CLOCK_REALTIME, &rt);
	uint64_t wall = (uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec;
	pthread_mutex_lock(&evm->lock);
	pvclock_update_wall_clock(host, wall - virtual_ns(evm));
	pthread_mutex_unlock(&evm->lock);
	memory_written(&evm->vm->mem, host, sizeof(struct pvclock_wall_clock));
}

/* ---- platform hooks: MSRs, CPUID, CR8 ---- */

static int hook_msr(struct emu_cpu *cpu, uint32_t index, uint64_t *value, bool is_write)
{
	struct emu_vcpu *ev = to_ev(cpu);
	struct emu_vm *evm = ev->evm;

	if (lapic_msr_owns(index)) {
		int ret = is_write ? lapic_msr_write(&ev->lapic, index, *value)
				   : lapic_msr_read(&ev->lapic, index, value);
		if (ret < 0)
			return emu_raise(cpu, EMU_VEC_GP, true, 0);
		if (is_write) {
			cpu->s.apic_base = lapic_get_base(&ev->lapic);
			__atomic_store_n(&ev->cpu.attention, 1, __ATOMIC_RELAXED);
		}
		return EMU_OK;
	}
	switch (index) {
	case MSR_TSC:
		if (!is_write)
			return EMU_MSR_UNHANDLED;
		cpu->msr.tsc_offset += *value - emu_read_tsc(cpu);
		pvclock_refresh(ev);
		return EMU_OK;
	case MSR_KVM_SYSTEM_TIME:
	case MSR_KVM_SYSTEM_TIME_NEW:
		if (!is_write) {
			*value = ev->system_time_msr;
			return EMU_OK;
		}
		ev->system_time_msr = *value;
		if (!pvclock_system_time_msr(*value, &ev->system_time_gpa))
			ev->system_time_gpa = 0;
		pvclock_refresh(ev);
		return EMU_OK;
	case MSR_KVM_WALL_CLOCK:
	case MSR_KVM_WALL_CLOCK_NEW:
		if (!is_write) {
			*value = evm->wall_clock_msr;
			return EMU_OK;
		}
		evm->wall_clock_msr = *value;
		pvclock_wall_clock(ev, *value);
		return EMU_OK;
	default:
		return EMU_MSR_UNHANDLED;
	}
}

static void hook_cpuid(struct emu_cpu *cpu, uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
	struct emu_vcpu *ev = to_ev(cpu);
	struct cpuid_leaf l = { .function = leaf, .index = subleaf };

	emu_cpuid(cpu, leaf, subleaf, out);
	l.eax = out[0];
	l.ebx = out[1];
	l.ecx = out[2];
	l.edx = out[3];
	if (leaf == 1) {
		l.edx |= F1_EDX_APIC;
		l.ecx |= F1_ECX_X2APIC | F1_ECX_TSC_DEADLINE;
	}
	/* Only what is implemented here: kvmclock (both MSR sets, a stable TSC) and the I/O
	 * delay hint. No PV EOI, unhalt, TLB flush, steal time or send-IPI. */
	if (leaf == 0x40000001)
		l.eax = KVM_PV_CLOCKSOURCE | KVM_PV_CLOCKSOURCE2 | KVM_PV_CLOCKSOURCE_STABLE |
			KVM_PV_NOP_IO_DELAY;
	if (!cpuid_adjust(&l, ev->vcpu->index, ev->evm->vm->nr_vcpus)) {
		memset(out, 0, 4 * sizeof(out[0]));
		return;
	}
	out[0] = l.eax;
	out[1] = l.ebx;
	out[2] = l.ecx;
	out[3] = l.edx;
}

static uint64_t hook_cr8_read(struct emu_cpu *cpu)
{
	return lapic_get_cr8(&to_ev(cpu)->lapic);
}

static void hook_cr8_write(struct emu_cpu *cpu, uint64_t value)
{
	struct emu_vcpu *ev = to_ev(cpu);

	lapic_set_cr8(&ev->lapic, value);
	__atomic_store_n(&ev->cpu.attention, 1, __ATOMIC_RELAXED); /* PPR may have dropped */
}

static const struct emu_platform_ops emu_platform = {
	.msr = hook_msr,
	.cpuid = hook_cpuid,
	.cr8_read = hook_cr8_read,
	.cr8_write = hook_cr8_write,
};

/* ---- guest-physical memory ---- */

static uint8_t *phys_ram_page(void *opaque, uint64_t gpa)
{
	struct emu_vm *evm = opaque;

	return memory_gpa_to_host(&evm->vm->mem, gpa, PAGE_SIZE);
}

/* One access of at most 8 bytes that the monitor must complete: replay it from the log or
 * record it and stop the instruction. */
static int log_access(struct emu_vcpu *ev, enum access_kind kind, uint64_t addr, uint8_t *data,
		      unsigned len, bool is_write)
{
	struct access_log *log = &ev->log;
	struct access *e;

	if (log->cursor < log->n) {
		e = &log->a[log->cursor];
		if (e->done && e->kind == kind && e->addr == addr && e->size == len &&
		    e->is_write == is_write && (!is_write || !memcmp(e->data, data, len))) {
			if (!is_write)
				memcpy(data, e->data, len);
			log->cursor++;
			return EMU_OK;
		}
		log->n = log->cursor; /* the instruction took another path: forget the rest */
	}
	if (log->n == EMU_LOG_MAX) {
		/* Guest-controlled (e.g. FXSAVE with MMIO on both sides of a page): refuse. */
		log->n = log->cursor = 0;
		return emu_raise(&ev->cpu, EMU_VEC_GP, true, 0);
	}
	e = &log->a[log->n++];
	*e = (struct access){ .kind = (uint8_t)kind, .size = (uint8_t)len, .is_write = is_write,
			      .addr = addr, .rcx = ev->cpu.s.gpr[CPU_RCX] };
	if (is_write)
		memcpy(e->data, data, len);
	ev->exit_pending = true;
	return EMU_STOP;
}

static bool in_window(uint64_t gpa, unsigned len, uint64_t base, uint64_t size)
{
	return gpa >= base && gpa - base < size && len <= size - (gpa - base);
}

/* A write to a registered notify address: signal its eventfd here, in the vCPU thread, instead
 * of leaving vcpu_run() for the monitor to do the same (the instruction then completes without
 * a restart). Whatever was written is ignored, as KVM does for an ioeventfd without a data match. */
static bool ioeventfd_signal(struct emu_vm *evm, uint64_t gpa)
{
	bool hit = false;

	pthread_rwlock_rdlock(&evm->ioeventfd_lock);
	for (unsigned i = 0; i < evm->nr_ioeventfds && !hit; i++) {
		if (evm->ioeventfds[i].addr == gpa) {
			uint64_t one = 1;

			hit = true;
			if (write(evm->ioeventfds[i].fd, &one, sizeof(one)) < 0) {
				/* counter full (EAGAIN): a wake-up is pending anyway */
			}
		}
	}
	pthread_rwlock_unlock(&evm->ioeventfd_lock);
	return hit;
}

/* After a notify, let the thread it woke (the event loop's, which sends the frame or submits
 * the request) have this CPU now if the host put it here, rather than when the guest next
 * halts: on this 2-core host under load it often waited for the vCPU thread's halt (145-490 us
 * after a ping's transmit notify, the guest running its way from sendto() to idle meanwhile),
 * and the reply then found the vCPU asleep and had to wake it. With the other core idle the
 * event loop runs there and the yield returns at once. Only the first notify after a sleep:
 * that is the latency-bound one (a ping, a depth-1 request); a guest that streams frames or
 * requests without halting never yields the CPU it needs. */
static void kick_yield(struct emu_vcpu *ev)
{
	if (!ev->yield_next_kick)
		return;
	ev->yield_next_kick = false;
	stats_add(ev->kick_yields, 1);
	sched_yield();
}

static int emu_ioeventfd(struct vm *vm, uint64_t addr, int fd, bool assign)
{
	struct emu_vm *evm = vm->backend_data;
	int ret = assign ? -ENOSPC : -ENOENT;

	pthread_rwlock_wrlock(&evm->ioeventfd_lock);
	for (unsigned i = 0; i < evm->nr_ioeventfds; i++) {
		struct emu_ioeventfd *e = &evm->ioeventfds[i];

		if (e->addr != addr)
			continue;
		if (assign) {
			ret = -EEXIST;
		} else if (e->fd == fd) {
			*e = evm->ioeventfds[--evm->nr_ioeventfds];
			ret = 0;
		}
		goto out;
	}
	if (assign && evm->nr_ioeventfds < EMU_IOEVENTFD_MAX) {
		evm->ioeventfds[evm->nr_ioeventfds++] = (struct emu_ioeventfd){ addr, fd };
		ret = 0;
	}
out:
	pthread_rwlock_unlock(&evm->ioeventfd_lock);
	return ret;
}

static int phys_mmio(struct emu_cpu *cpu, uint64_t gpa, void *data, unsigned len, bool is_write)
{
	struct emu_vcpu *ev = to_ev(cpu);
	struct emu_vm *evm = ev->evm;
	uint8_t *p = data;
	uint64_t lbase = lapic_mmio_base(&ev->lapic);
	int rc;

	if (in_window(gpa, len, lbase, LAPIC_MMIO_SIZE)) {
		bool handled = true;

		for (unsigned off = 0; off < len && handled; off += 4) {
			unsigned n = len - off < 4 ? len - off : 4;
			uint32_t reg = (uint32_t)(gpa + off - lbase);

			handled = is_write ? lapic_mmio_write(&ev->lapic, reg, p + off, n)
					   : lapic_mmio_read(&ev->lapic, reg, p + off, n);
		}
		if (handled) {
			if (is_write) /* EOI, TPR: an interrupt may have become deliverable */
				__atomic_store_n(&ev->cpu.attention, 1, __ATOMIC_RELAXED);
			return EMU_OK;
		}
	}
	if (evm->ioapic_ready && in_window(gpa, len, IOAPIC_DEFAULT_BASE, IOAPIC_MMIO_SIZE)) {
		for (unsigned off = 0; off < len; off += 4) {
			unsigned n = len - off < 4 ? len - off : 4;
			uint32_t reg = (uint32_t)(gpa + off - IOAPIC_DEFAULT_BASE);

			if (is_write)
				ioapic_mmio_write(&evm->ioapic, reg, p + off, n);
			else
				ioapic_mmio_read(&evm->ioapic, reg, p + off, n);
		}
		return EMU_OK;
	}
	if (is_write && ioeventfd_signal(evm, gpa)) {
		ev->io_expect = true; /* a completion or a reply will interrupt it */
		kick_yield(ev);
		return EMU_OK;
	}
	/* Pieces of at most 8 bytes (an MMIO exit's size), naturally split. */
	for (unsigned off = 0; off < len;) {
		unsigned n = len - off < 8 ? len - off : 8;

		if ((rc = log_access(ev, ACCESS_MMIO, gpa + off, p + off, n, is_write)))
			return rc;
		off += n;
	}
	return EMU_OK;
}

static int phys_pio(struct emu_cpu *cpu, uint16_t port, void *data, unsigned len, bool is_write)
{
	return log_access(to_ev(cpu), ACCESS_PIO, port, data, len, is_write);
}

static const struct emu_phys_ops emu_phys = {
	.ram_page = phys_ram_page,
	.mmio = phys_mmio,
	.pio = phys_pio,
};

/* ---- reset, INIT and SIPI ---- */

/* The power-on / INIT state (SDM Vol. 3 §9.1.1, Table 9-1). */
static void reset_state(struct cpu_state *s, uint64_t apic_base)
{
	memset(s, 0, sizeof(*s));
	for (unsigned i = 0; i < CPU_NR_SEGS; i++) {
		s->seg[i].limit = 0xffff;
		s->seg[i].present = 1;
		s->seg[i].s = 1;
		s->seg[i].type = 3; /* read/write, accessed */
	}
	s->seg[SEG_CS].selector = 0xf000;
	s->seg[SEG_CS].base = 0xffff0000;
	s->seg[SEG_CS].type = 0xb;
	s->seg[SEG_TR].s = 0;
	s->seg[SEG_TR].type = 0xb; /* busy 32-bit TSS, as KVM reports it */
	s->seg[SEG_LDTR].s = 0;
	s->seg[SEG_LDTR].type = 2;
	s->gdt.limit = s->idt.limit = 0xffff;
	s->rip = 0xfff0;
	s->rflags = 2;
	s->cr0 = 0x60000010; /* CD, NW, ET */
	s->gpr[CPU_RDX] = EMU_CPUID_SIGNATURE; /* CPUID.1:EAX in EDX, as after reset */
	s->apic_base = apic_base;
}

static void ev_log_reset(struct emu_vcpu *ev)
{
	ev->log.n = ev->log.cursor = 0;
	ev->exit_pending = false;
}

static void ev_reinit(struct emu_vcpu *ev, const struct cpu_state *state)
{
	emu_cpu_init(&ev->cpu, state);
	ev->cpu.apic_id = ev->vcpu->index;
	ev_log_reset(ev);
	ev->halted = false;
}

static int ev_take_events(struct emu_vcpu *ev)
{
	struct lapic_events e;
	struct cpu_state s;

	if (!lapic_take_events(&ev->lapic, &e))
		return EMU_OK;
	if (e.init) {
		lapic_reset(&ev->lapic);
		reset_state(&s, lapic_get_base(&ev->lapic));
		ev_reinit(ev, &s);
		ev->wait_sipi = true;
		ev->system_time_gpa = 0;
	}
	if (e.sipi && ev->wait_sipi) {
		reset_state(&s, lapic_get_base(&ev->lapic));
		s.seg[SEG_CS].selector = (uint16_t)(e.sipi_vector << 8);
		s.seg[SEG_CS].base = (uint64_t)e.sipi_vector << 12;
		s.rip = 0;
		ev_reinit(ev, &s);
		ev->wait_sipi = false;
	}
	if (e.nmi && !ev->wait_sipi) { /* NMI blocking until IRET is not modelled */
		ev->halted = false;
		return emu_deliver_event(&ev->cpu, 2, EMU_EVENT_EXTERNAL, false, 0, ev->cpu.s.rip);
	}
	return EMU_OK;
}

/* ---- #UD reporting ---- */

static void report_ud(struct emu_vcpu *ev)
{
	struct emu_vm *evm = ev->evm;
	struct emu_cpu *cpu = &ev->cpu;
	uint8_t bytes[15] = { 0 };
	unsigned got = 0;
	uint64_t la = cpu->mode == EMU_MODE_64 ? cpu->s.rip
					       : (cpu->s.seg[SEG_CS].base + cpu->s.rip) & 0xffffffff;
	struct emu_exception saved = cpu->exc;

	/* The bytes up to the end of the page, then the rest if that page is mapped too. */
	for (unsigned i = 0; i < sizeof(bytes); i++) {
		if (cpu->mem->read(cpu, la + i, &bytes[i], 1, EMU_ACCESS_FETCH) != EMU_OK)
			break;
		got++;
	}
	cpu->exc = saved;
	ev_log_reset(ev); /* a fetch from MMIO must not leave an access behind */
	/* UD2, UD1, UD0 raise #UD by design (Linux's BUG/WARN): not a missing instruction. */
	if (got >= 2 && bytes[0] == 0x0f && (bytes[1] == 0x0b || bytes[1] == 0xb9 || bytes[1] == 0xff))
		return;
	__atomic_fetch_add(&evm->ud_count, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&evm->lock);
	bool seen = false;
	for (unsigned i = 0; i < evm->ud_logged && !seen; i++)
		seen = !memcmp(evm->ud_seen[i], bytes, 4);
	if (!seen && evm->ud_logged < EMU_UD_LOG_MAX) {
		char hex[3 * sizeof(bytes) + 1] = "";
		for (unsigned i = 0; i < got; i++)
			snprintf(hex + 3 * i, 4, "%02x ", bytes[i]);
		memcpy(evm->ud_seen[evm->ud_logged++], bytes, 4);
		int bits = cpu->mode == EMU_MODE_64 ? 64 : cpu->mode == EMU_MODE_32 ? 32 : 16;
		fprintf(stderr,
			"vmm: emu: vCPU %u: #UD (not implemented or invalid) at rip 0x%llx "
			"(cs 0x%x, %d-bit): %s%s\n",
			ev->vcpu->index, (unsigned long long)cpu->s.rip,
			cpu->s.seg[SEG_CS].selector, bits, hex,
			evm->ud_logged == EMU_UD_LOG_MAX ? "(further ones are only counted)" : "");
	}
	pthread_mutex_unlock(&evm->lock);
}

/* ---- guest debugging (the gdb stub) ---- */

#define EV_DEBUG_EXIT 100 /* not an emu_status: ev_step_debug() filled in a debug exit */

static uint64_t ev_linear_rip(const struct emu_cpu *cpu)
{
	return cpu->mode == EMU_MODE_64 ? cpu->s.rip
					: (cpu->s.seg[SEG_CS].base + cpu->s.rip) & 0xffffffff;
}

/* A debug exit as KVM reports it: #DB with DR6 (breakpoints hit, BS) and the next instruction,
 * or #BP with RIP at the INT3 (not delivered to the guest). */
static int ev_debug_exit(struct emu_vcpu *ev, struct vcpu_exit *exit, unsigned vector, uint64_t dr6)
{
	ev_log_reset(ev);
	exit->reason = VCPU_EXIT_DEBUG;
	exit->debug.exception = (uint8_t)vector;
	exit->debug.pc = ev_linear_rip(&ev->cpu);
	exit->debug.dr6 = vector == EMU_VEC_DB ? EMU_DR6_FIXED1 | dr6 : 0;
	return EV_DEBUG_EXIT;
}

/* One instruction with gdb's breakpoints, watchpoints and single step. Returns what emu_step()
 * would (exceptions other than gdb's #BP already delivered), or EV_DEBUG_EXIT. */
static int ev_step_debug(struct emu_vcpu *ev, struct vcpu_exit *exit)
{
	struct emu_cpu *cpu = &ev->cpu;
	unsigned hits;
	int rc;

	/* An instruction restarted after an MMIO/PIO exit was already checked. */
	if (!ev->log.n && (hits = emu_debug_exec_hits(&ev->debug, ev_linear_rip(cpu))))
		return ev_debug_exit(ev, exit, EMU_VEC_DB, hits);
	ev->debug.data_hits = 0;
	rc = emu_step(cpu);
	if (rc == EMU_STOP)
		return rc;
	if (rc == EMU_EXCEPTION) {
		if (cpu->exc.vector == EMU_VEC_BP && ev->debug.ctl.sw_breakpoints)
			return ev_debug_exit(ev, exit, EMU_VEC_BP, 0);
		ev_log_reset(ev);
		if (cpu->exc.vector == EMU_VEC_UD)
			report_ud(ev);
		if ((rc = emu_deliver_exception(cpu)) != EMU_OK)
			return rc; /* triple fault */
		ev->debug.data_hits = 0; /* a faulting instruction does not complete */
	}
	if (rc == EMU_HALT)
		ev->halted = true;
	hits = ev->debug.data_hits | (ev->single_step ? EMU_DR6_BS : 0);
	if (hits)
		return ev_debug_exit(ev, exit, EMU_VEC_DB, hits);
	return rc;
}

static int emu_set_guest_debug(struct vcpu *vcpu, const struct cpu_debug *debug)
{
	struct emu_vcpu *ev = vcpu->backend_data;

	emu_debug_set(&ev->cpu, &ev->debug, debug);
	ev->debugging = debug->enabled;
	ev->single_step = debug->enabled && debug->single_step;
	return 0;
}

/* ---- the backend ---- */

/* VMM_EMU_JIT=off runs every block in the interpreter (to tell a guest problem caused by the
 * JIT from one that is not), =calls compiles blocks to handler calls only (no templates);
 * unset or "on": hot blocks get host code with templates where the host is x86-64. */
static int emu_jit_setting(bool *on, bool *templates)
{
	const char *v = getenv("VMM_EMU_JIT");

	*on = !v || !*v || !strcmp(v, "on") || !strcmp(v, "calls");
	*templates = *on && !(v && !strcmp(v, "calls"));
	if (*on || !strcmp(v, "off"))
		return 0;
	fprintf(stderr, "vmm: VMM_EMU_JIT=%s: not a setting (use on, calls or off, or unset it)\n",
		v);
	return -EINVAL;
}

static int emu_vm_init(struct vm *vm)
{
	struct emu_vm *evm = calloc(1, sizeof(*evm));

	if (!evm)
		return -ENOMEM;
	if (emu_jit_setting(&evm->jit, &evm->jit_templates) < 0) {
		free(evm);
		return -EINVAL;
	}
	vm->backend_data = evm;
	evm->vm = vm;
	pthread_mutex_init(&evm->lock, NULL);
	pthread_rwlock_init(&evm->ioeventfd_lock, NULL);
	/* Decoded blocks stay valid until their page is written (memory.h); the loaders write
	 * before any vCPU runs, devices and gdb call memory_written(). */
	int ret = memory_code_init(&vm->mem.code, vm->mem.base, vm->mem.size);
	if (ret < 0)
		return ret;
	ret = ioapic_init(&evm->ioapic, (uint8_t)vm->nr_vcpus, 0x11, &emu_ioapic_ops, evm);
	if (ret < 0)
		return ret;
	evm->ioapic_ready = true;
	vm->idle_hooks_run = true; /* a halted vCPU runs them before it sleeps */
	return 0;
}

static void emu_vm_destroy(struct vm *vm)
{
	struct emu_vm *evm = vm->backend_data;

	if (!evm)
		return;
	uint64_t uds = __atomic_load_n(&evm->ud_count, __ATOMIC_RELAXED);
	if (uds)
		fprintf(stderr, "vmm: emu: %llu #UD for instructions not implemented (or invalid)\n",
			(unsigned long long)uds);
	if (evm->ioapic_ready)
		ioapic_destroy(&evm->ioapic);
	pthread_mutex_destroy(&evm->lock);
	pthread_rwlock_destroy(&evm->ioeventfd_lock);
	free(evm);
	vm->backend_data = NULL;
}

/* The block cache's and the JIT's counters of one vCPU (emu.h's struct emu_block_stats). */
static void ev_format_block_stats(struct emu_vcpu *ev, FILE *out)
{
	const struct emu_block_stats *b = &ev->cpu.blocks;

	fprintf(out,
		"  vcpu%u: blocks: %llu finds (%llu by link, %llu by jump cache), built %llu "
		"into an empty slot, %llu over another block, %llu for a new code version; "
		"entered %llu compiled, %llu interpreted, %llu chained; JIT buffer flushes %llu\n",
		ev->vcpu->index, (unsigned long long)stats_load(b->finds),
		(unsigned long long)stats_load(b->link_hits),
		(unsigned long long)stats_load(b->jump_hits),
		(unsigned long long)stats_load(b->builds_empty),
		(unsigned long long)stats_load(b->builds_evicted),
		(unsigned long long)stats_load(b->builds_version),
		(unsigned long long)stats_load(b->compiled),
		(unsigned long long)stats_load(b->interpreted),
		(unsigned long long)stats_load(b->chained),
		(unsigned long long)(ev->cpu.jit ? emu_jit_flushes(ev->cpu.jit) : 0));
}

/* One vCPU's counters for --stats and `vmm stat` (any thread: values may be slightly old). */
static void ev_format_stats(struct emu_vcpu *ev, FILE *out)
{
	struct emu_tlb *tlb = &ev->cpu.tlb;
	uint64_t wakeups = stats_load(ev->wakeups);

	fprintf(out,
		"  vcpu%u: %llu instructions, %llu interrupts taken; halted %.6f s in %llu sleeps, "
		"%llu wake-ups %.1f us each to run again; TLB flushes: %llu all, %llu non-global, "
		"%llu pages; TLB misses: %llu reads, %llu writes, %llu fetches, %llu more found "
		"in the second way\n",
		ev->vcpu->index,
		(unsigned long long)__atomic_load_n(&ev->cpu.instructions, __ATOMIC_RELAXED),
		(unsigned long long)stats_load(ev->interrupts),
		(double)stats_load(ev->sleep_ns) / 1e9, (unsigned long long)stats_load(ev->sleeps),
		(unsigned long long)wakeups,
		wakeups ? (double)stats_load(ev->wake_latency_ns) / 1e3 / (double)wakeups : 0.0,
		(unsigned long long)stats_load(tlb->flushes_all),
		(unsigned long long)stats_load(tlb->flushes_nonglobal),
		(unsigned long long)stats_load(tlb->flushes_page),
		(unsigned long long)stats_load(tlb->misses_read),
		(unsigned long long)stats_load(tlb->misses_write),
		(unsigned long long)stats_load(tlb->misses_fetch),
		(unsigned long long)stats_load(tlb->way2_hits));
	fprintf(out, "  vcpu%u: %llu HLT, halt polls: ", ev->vcpu->index,
		(unsigned long long)stats_load(ev->halts));
	poll_window_format(&ev->halt_poll, out);
	fprintf(out, "; %llu notifies yielded the CPU\n",
		(unsigned long long)stats_load(ev->kick_yields));
	ev_format_block_stats(ev, out);
}

/* The #UD count for --stats and `vmm stat`, as the exit message gives it, and each vCPU's
 * counters. */
static void emu_format_stats(struct vm *vm, FILE *out)
{
	struct emu_vm *evm = vm->backend_data;

	if (!evm)
		return;
	fprintf(out, "software CPU: #UD for instructions not implemented (or invalid) %llu\n",
		(unsigned long long)__atomic_load_n(&evm->ud_count, __ATOMIC_RELAXED));
	fprintf(out, "software CPU: code pages marked as decoded %llu (each a membarrier%s)\n",
		(unsigned long long)__atomic_load_n(&vm->mem.code.marks, __ATOMIC_RELAXED),
		vm->mem.code.membarrier ? "" : ": not available");
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		if (vm->vcpus[i].backend_data)
			ev_format_stats(vm->vcpus[i].backend_data, out);
}

static int emu_vcpu_init(struct vcpu *vcpu)
{
	struct emu_vm *evm = vcpu->vm->backend_data;
	struct emu_vcpu *ev = calloc(1, sizeof(*ev));
	pthread_condattr_t attr;
	struct cpu_state s;

	if (!ev)
		return -ENOMEM;
	vcpu->backend_data = ev;
	ev->vcpu = vcpu;
	ev->evm = evm;
	ev->timer_deadline = LAPIC_NO_DEADLINE;
	poll_window_init(&ev->halt_poll, vcpu->vm->cfg.poll_max_ns, !vcpu->vm->cfg.poll_always);
	pthread_mutex_init(&ev->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&ev->cond, &attr);
	pthread_condattr_destroy(&attr);
	ev->sync_ready = true;
	struct lapic_config cfg = { .apic_id = vcpu->index, .bsp = vcpu->index == 0,
				    .phys_bits = 46, .tsc_hz = PVCLOCK_EMU_TSC_HZ };
	int ret = lapic_init(&ev->lapic, &cfg, &emu_lapic_ops, ev);
	if (ret < 0)
		return ret;
	ev->lapic_ready = true;
	ev->cpu.mem = &emu_paged_memory_ops;
	ev->cpu.mem_opaque = ev;
	ev->cpu.phys = &emu_phys;
	ev->cpu.phys_opaque = evm;
	ev->cpu.code = &evm->vm->mem.code;
	ev->cpu.platform = &emu_platform;
	reset_state(&s, lapic_get_base(&ev->lapic));
	ev_reinit(ev, &s);
	if (evm->jit) {
		ev->cpu.jit =
			emu_jit_create(EMU_JIT_BUFFER_SIZE, EMU_JIT_THRESHOLD, evm->jit_templates);
		if (!ev->cpu.jit && errno != ENOTSUP && vcpu->index == 0)
			fprintf(stderr,
				"vmm: emu: no code memory for the JIT (%s): interpreter only\n",
				strerror(errno));
	}
	ev->wait_sipi = true; /* until vcpu_set_state (the BSP) or INIT/SIPI (APs) */
	evm->lapics[vcpu->index] = &ev->lapic;
	__atomic_store_n(&evm->nr_lapics, vcpu->index + 1, __ATOMIC_RELEASE);
	return 0;
}

static void emu_vcpu_destroy(struct vcpu *vcpu)
{
	struct emu_vcpu *ev = vcpu->backend_data;

	if (!ev)
		return;
	uint64_t ns = stats_load(vcpu->stats.guest_ns);
	ns = ns > ev->sleep_ns ? ns - ev->sleep_ns : 0;
	trace_event(vcpu->vm, TRACE_BOOT, vcpu->index,
		    "emu: %llu instructions retired in %llu ms running, %llu ms halted (%llu per second running)",
		    (unsigned long long)ev->cpu.instructions, (unsigned long long)(ns / 1000000),
		    (unsigned long long)(ev->sleep_ns / 1000000),
		    ns ? (unsigned long long)(ev->cpu.instructions * 1000000000.0 / (double)ns) : 0ull);
	emu_cpu_destroy(&ev->cpu);
	poll_window_destroy(&ev->halt_poll);
	if (ev->lapic_ready)
		lapic_destroy(&ev->lapic);
	if (ev->sync_ready) {
		pthread_cond_destroy(&ev->cond);
		pthread_mutex_destroy(&ev->lock);
	}
	free(ev);
	vcpu->backend_data = NULL;
}

static int emu_vcpu_get_state(struct vcpu *vcpu, struct cpu_state *state)
{
	struct emu_vcpu *ev = vcpu->backend_data;

	emu_cpu_get_state(&ev->cpu, state);
	state->cr8 = lapic_get_cr8(&ev->lapic);
	state->apic_base = lapic_get_base(&ev->lapic);
	return 0;
}

static int emu_vcpu_set_state(struct vcpu *vcpu, const struct cpu_state *state)
{
	struct emu_vcpu *ev = vcpu->backend_data;

	emu_cpu_set_state(&ev->cpu, state);
	ev->cpu.s.apic_base = lapic_get_base(&ev->lapic); /* the LAPIC owns it */
	ev_log_reset(ev);
	ev->wait_sipi = false;
	ev->halted = false;
	return 0;
}

/* Whether something needs this vCPU now: a kick or other attention, an NMI/INIT/SIPI, an
 * interrupt it can take, its timer. Without the lock: ev_wake() sets `attention` first. */
static bool ev_wake_due(struct emu_vcpu *ev, bool want_intr)
{
	unsigned pending = lapic_pending(&ev->lapic);
	uint64_t deadline = __atomic_load_n(&ev->timer_deadline, __ATOMIC_ACQUIRE);

	if (__atomic_load_n(&ev->cpu.attention, __ATOMIC_ACQUIRE))
		return true;
	if (pending & (LAPIC_PENDING_NMI | LAPIC_PENDING_INIT | LAPIC_PENDING_SIPI))
		return true;
	if (want_intr && (pending & LAPIC_PENDING_INTR))
		return true;
	return deadline != LAPIC_NO_DEADLINE && virtual_ns(ev->evm) >= deadline;
}

/* Busy-poll for a wake-up until `until_ns` (monotonic): a completion or a packet that comes
 * within the window then costs no futex wake-up and no trip through the host scheduler (47 us
 * on this 2-core host). True when it came. */
static bool ev_halt_poll(struct emu_vcpu *ev, bool want_intr, uint64_t until_ns)
{
	for (;;) {
		if (ev_wake_due(ev, want_intr))
			return true;
		poll_window_relax();
		uint64_t now = mono_ns();
		/* Another thread runnable (the one that will wake this vCPU?): let it have the CPU. */
		if (now >= until_ns || !poll_window_host_spare(&ev->halt_poll, now))
			return false;
	}
}

/* Sleep on the condition variable until something needs this vCPU: an event in its LAPIC, a
 * kick, the timer. `poll`: a halt, which first polls for its adaptive window. */
static void ev_sleep(struct emu_vcpu *ev, bool want_intr, bool poll)
{
	uint64_t start = mono_ns(), woken_at, polled = 0;
	bool hit = false;

	if (poll && poll_window_should_poll(&ev->halt_poll, start)) {
		hit = ev_halt_poll(ev, want_intr, start + ev->halt_poll.ns);
		polled = mono_ns() - start;
	}
	pthread_mutex_lock(&ev->lock);
	ev->sleeping = true;
	ev->woken_at_ns = 0;
	while (!hit) {
		uint64_t deadline = __atomic_load_n(&ev->timer_deadline, __ATOMIC_ACQUIRE);

		if (ev_wake_due(ev, want_intr))
			break;
		if (deadline == LAPIC_NO_DEADLINE) {
			pthread_cond_wait(&ev->cond, &ev->lock);
			continue;
		}
		uint64_t now = virtual_ns(ev->evm);
		if (now >= deadline)
			break;
		uint64_t wake = mono_ns() + (deadline - now);
		struct timespec ts = { .tv_sec = (time_t)(wake / 1000000000ull),
				       .tv_nsec = (long)(wake % 1000000000ull) };
		pthread_cond_timedwait(&ev->cond, &ev->lock, &ts);
	}
	ev->sleeping = false;
	woken_at = ev->woken_at_ns;
	pthread_mutex_unlock(&ev->lock);
	uint64_t end = mono_ns();
	ev->yield_next_kick = true;
	stats_add(ev->sleep_ns, end - start);
	stats_add(ev->sleeps, 1);
	if (woken_at) {
		stats_add(ev->wakeups, 1);
		stats_add(ev->wake_latency_ns, end > woken_at ? end - woken_at : 0);
	}
	if (poll)
		poll_window_update(&ev->halt_poll, end - start, hit, polled);
}

static void exit_from_log(struct emu_vcpu *ev, struct vcpu_exit *exit)
{
	struct access *e = &ev->log.a[ev->log.n - 1];

	if (e->kind == ACCESS_PIO) {
		exit->reason = VCPU_EXIT_IO;
		exit->io.port = (uint16_t)e->addr;
		exit->io.size = e->size;
		exit->io.is_write = e->is_write;
		exit->io.count = 1;
		exit->io.data = e->data;
	} else {
		exit->reason = VCPU_EXIT_MMIO;
		exit->mmio.gpa = e->addr;
		exit->mmio.size = e->size;
		exit->mmio.is_write = e->is_write;
		exit->mmio.data = e->data;
	}
}

/* Before restarting a stopped instruction: the pending access is complete now, and entries
 * of REP iterations that are done (another RCX) will not be made again. */
static void log_resume(struct emu_vcpu *ev)
{
	struct access_log *log = &ev->log;
	uint64_t rcx = ev->cpu.s.gpr[CPU_RCX];
	unsigned n = 0;

	if (ev->exit_pending && log->n)
		log->a[log->n - 1].done = true;
	ev->exit_pending = false;
	for (unsigned i = 0; i < log->n; i++)
		if (log->a[i].rcx == rcx)
			log->a[n++] = log->a[i];
	log->n = n;
	log->cursor = 0;
}

static void ev_check_timer(struct emu_vcpu *ev)
{
	uint64_t deadline = __atomic_load_n(&ev->timer_deadline, __ATOMIC_ACQUIRE);

	if (deadline != LAPIC_NO_DEADLINE) {
		uint64_t now = virtual_ns(ev->evm);
		if (now >= deadline)
			lapic_timer_fire(&ev->lapic, now);
	}
}

/* The blocks the next batch may run: EMU_BATCH, or as many as fit before the LAPIC timer's
 * deadline at half the pace since the last batch started (halts and exits in between only
 * make it look slower), up to EMU_BATCH_MAX; that many with no deadline. The timer is looked
 * at no later than with EMU_BATCH alone unless blocks suddenly run over twice as slowly as
 * they just did; arming the timer sooner wakes the vCPU, which ends the batch at once. */
static unsigned ev_next_batch(struct emu_vcpu *ev)
{
	struct ev_pace *pace = &ev->pace;
	uint64_t deadline = __atomic_load_n(&ev->timer_deadline, __ATOMIC_ACQUIRE), now, per, fit;
	bool known = pace->at_ns && pace->blocks;

	if (deadline == LAPIC_NO_DEADLINE) {
		pace->at_ns = 0;
		return EMU_BATCH_MAX;
	}
	now = virtual_ns(ev->evm);
	per = known && now > pace->at_ns ? (now - pace->at_ns) / pace->blocks : 0;
	pace->at_ns = now;
	pace->blocks = 0;
	if (!known || deadline <= now)
		return EMU_BATCH;
	fit = (deadline - now) / (2 * per + 1);
	return fit < EMU_BATCH ? EMU_BATCH : fit > EMU_BATCH_MAX ? EMU_BATCH_MAX : (unsigned)fit;
}

static int emu_vcpu_run(struct vcpu *vcpu, struct vcpu_exit *exit)
{
	struct emu_vcpu *ev = vcpu->backend_data;
	struct emu_cpu *cpu = &ev->cpu;
	unsigned batch, n;
	int rc;

	exit->reason = VCPU_EXIT_NONE;
	log_resume(ev);
	for (;;) {
		bool mid_insn = ev->log.n != 0; /* an instruction to finish before any event */

		/* A full barrier: what a waker published before setting it is seen below. */
		__atomic_exchange_n(&ev->cpu.attention, 0, __ATOMIC_SEQ_CST);
		if (__atomic_exchange_n(&ev->kicked, 0, __ATOMIC_ACQ_REL) ||
		    atomic_load(&vcpu->vm->stopping) || atomic_load(&vcpu->vm->paused))
			return 0;
		unsigned pending = mid_insn ? 0 : lapic_pending(&ev->lapic);
		if ((pending & (LAPIC_PENDING_NMI | LAPIC_PENDING_INIT | LAPIC_PENDING_SIPI)) &&
		    ev_take_events(ev) == EMU_SHUTDOWN) {
			exit->reason = VCPU_EXIT_SHUTDOWN;
			return 0;
		}
		if (ev->wait_sipi) {
			ev_sleep(ev, false, false);
			continue;
		}
		if (!mid_insn)
			ev_check_timer(ev);
		/* While gdb steps, interrupts wait (as KVM_GUESTDBG_BLOCKIRQ): a step lands on the
		 * next instruction, not in a handler. A halted vCPU takes them, or never moves. */
		bool intr = !mid_insn && (lapic_pending(&ev->lapic) & LAPIC_PENDING_INTR) &&
			    (!ev->single_step || ev->halted);
		if (intr && emu_interrupts_enabled(cpu)) {
			uint8_t vector;

			if (lapic_get_interrupt(&ev->lapic, &vector)) {
				ev->halted = false;
				rc = emu_inject_interrupt(cpu, vector);
				lapic_ack_interrupt(&ev->lapic, vector);
				stats_add(ev->interrupts, 1);
				ev->io_expect = false;
				if (rc == EMU_SHUTDOWN) {
					exit->reason = VCPU_EXIT_SHUTDOWN;
					return 0;
				}
			}
			continue;
		}
		if (ev->halted) {
			bool want_intr = emu_interrupts_enabled(cpu);

			/* Work held back for a busy guest is due now (vm.h); what it hands over
			 * may already have raised an interrupt, which the next pass takes. */
			if (want_intr && vm_run_idle_hooks(vcpu->vm))
				continue;

			/* Poll only for an interrupt that is due (an idle halt sleeps at once) and
			 * can end the halt (not HLT with IF=0). */
			ev_sleep(ev, want_intr, want_intr && ev->io_expect);
			ev->io_expect = false;
			continue;
		}
		batch = ev_next_batch(ev);
		for (n = 0; n < batch; n += cpu->chain_ran, ev->pace.blocks += cpu->chain_ran) {
			if (__atomic_load_n(&ev->cpu.attention, __ATOMIC_RELAXED))
				break;
			if (intr && emu_interrupts_enabled(cpu) && !ev->log.n)
				break;
			/* Chained blocks only when nothing here waits on each one: no replay log,
			 * no pending interrupt waiting for the end of an interrupt shadow. One
			 * waiting for IF lets the chain go on, as an instruction that sets IF ends
			 * it (emu_execute()): the kernel's IRQs-off sections with an interrupt
			 * pending ran one block per emu_run(), ~19 per 4 KiB QD32 read request.
			 * The flag covers the rest (kicks,
			 * interrupts, pause and stop), and the timer is looked at between batches,
			 * which count blocks however many one emu_run() chained: so one emu_run()
			 * may run the rest of the batch. A budget of 16 ended ~22 M passes of a
			 * QD32 random-read run on it, each through emu_run(), block_find() and
			 * this loop again, for nothing. */
			cpu->if_awaited = intr && !(cpu->s.rflags & EMU_FLAG_IF);
			cpu->chain_max = ev->log.n || (intr && (cpu->s.rflags & EMU_FLAG_IF))
						 ? 1
						 : batch - n;
			cpu->chain_ran = 1;
			rc = ev->debugging ? ev_step_debug(ev, exit) : emu_run(cpu);
			if (rc == EMU_OK) {
				if (ev->log.n) {
					ev_log_reset(ev);
					if (mid_insn) /* finished: now look at events */
						break;
				}
				continue;
			}
			if (rc == EV_DEBUG_EXIT)
				return 0;
			if (rc == EMU_STOP) {
				if (!ev->exit_pending) {
					snprintf(exit->detail, sizeof(exit->detail),
						 "emu: instruction stopped without an access");
					exit->reason = VCPU_EXIT_INTERNAL;
					return 0;
				}
				exit_from_log(ev, exit);
				return 0;
			}
			ev_log_reset(ev);
			if (rc == EMU_HALT) {
				ev->halted = true;
				stats_add(ev->halts, 1);
				break;
			}
			if (rc == EMU_EXCEPTION) {
				if (cpu->exc.vector == EMU_VEC_UD)
					report_ud(ev);
				rc = emu_deliver_exception(cpu);
			}
			if (rc == EMU_SHUTDOWN) {
				exit->reason = VCPU_EXIT_SHUTDOWN;
				return 0;
			}
		}
	}
}

static void emu_vcpu_kick(struct vcpu *vcpu)
{
	struct emu_vcpu *ev = vcpu->backend_data;

	if (ev) {
		__atomic_store_n(&ev->kicked, 1, __ATOMIC_RELEASE);
		ev_wake(ev);
	}
}

static int emu_irq_line(struct vm *vm, unsigned gsi, bool level)
{
	struct emu_vm *evm = vm->backend_data;

	if (gsi >= IOAPIC_NR_PINS)
		return -EINVAL;
	return ioapic_set_irq(&evm->ioapic, gsi, level);
}

static int emu_irq_msi(struct vm *vm, uint64_t address, uint32_t data)
{
	struct emu_vm *evm = vm->backend_data;
	struct apic_message msg;
	int ret = apic_msi_decode(address, data, &msg);

	if (ret < 0)
		return ret;
	apic_bus_deliver(evm->lapics, __atomic_load_n(&evm->nr_lapics, __ATOMIC_ACQUIRE), &msg, -1);
	return 0;
}

/* Guest time stands still over a pause: the virtual clock and every TSC skip it. */
static void emu_vm_paused(struct vm *vm)
{
	struct emu_vm *evm = vm->backend_data;

	evm->paused_at_ns = mono_ns();
}

static void emu_vm_resuming(struct vm *vm)
{
	struct emu_vm *evm = vm->backend_data;

	if (!evm->paused_at_ns)
		return;
	uint64_t d = mono_ns() - evm->paused_at_ns;
	evm->paused_at_ns = 0;
	__atomic_fetch_add(&evm->paused_total_ns, d, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		struct emu_vcpu *ev = vm->vcpus[i].backend_data;

		if (!ev)
			continue;
		ev->cpu.msr.tsc_offset -= d;
		ev->guest_stopped = true;
		pvclock_refresh(ev);
	}
}

const struct cpu_backend cpu_backend_emu = {
	.name = "emu",
	.vm_init = emu_vm_init,
	.vm_destroy = emu_vm_destroy,
	.vcpu_init = emu_vcpu_init,
	.vcpu_destroy = emu_vcpu_destroy,
	.vcpu_get_state = emu_vcpu_get_state,
	.vcpu_set_state = emu_vcpu_set_state,
	.vcpu_run = emu_vcpu_run,
	.vcpu_kick = emu_vcpu_kick,
	.irq_line = emu_irq_line,
	.irq_msi = emu_irq_msi,
	.ioeventfd = emu_ioeventfd,
	.vm_paused = emu_vm_paused,
	.vm_resuming = emu_vm_resuming,
	.set_guest_debug = emu_set_guest_debug,
	.format_stats = emu_format_stats,
};
