/* The KVM backend: guest code runs on the host CPU through /dev/kvm, with KVM's in-kernel
 * LAPIC/IOAPIC/PIC and PIT. Documentation/virt/kvm/api.rst. */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu/cpuid.h"
#include "vm.h"

#define KVM_TSS_ADDR 0xFFFBD000ul
#define KVM_IDENTITY_MAP_ADDR 0xFFFBC000ul
#define KVM_MAX_CPUID_ENTRIES 256

struct kvm_vm_data {
	int kvm_fd, vm_fd;
	struct kvm_clock_data paused_clock; /* kvmclock when the VM was paused */
	bool have_paused_clock;
	int run_size;
	struct kvm_cpuid2 *supported; /* KVM_GET_SUPPORTED_CPUID, adjusted per vCPU */
	unsigned guest_debug_flags; /* KVM_CAP_SET_GUEST_DEBUG2: the KVM_GUESTDBG_* flags KVM knows */
};

struct kvm_vcpu_data {
	int fd;
	struct kvm_run *run;
};

/* One line that says what to do, for the two ways /dev/kvm is commonly unusable. */
static int kvm_open_device(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	int err = errno;
	if (err == ENOENT)
		fprintf(stderr, "vmm: /dev/kvm: not found (load the kvm module: modprobe kvm_intel or kvm_amd; or use --accel emu)\n");
	else if (err == EACCES || err == EPERM)
		fprintf(stderr, "vmm: /dev/kvm: permission denied (add yourself to the kvm group: sudo usermod -aG kvm $USER, then log in again; or use --accel emu)\n");
	else
		fprintf(stderr, "vmm: /dev/kvm: %s (use --accel emu)\n", strerror(err));
	return -err;
}

static int kvm_fail(const char *what)
{
	int err = errno;
	fprintf(stderr, "vmm: kvm: %s: %s\n", what, strerror(err));
	return -err;
}

static int kvm_map_memory(struct vm *vm, struct kvm_vm_data *k)
{
	for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
		struct kvm_userspace_memory_region r = {
			.slot = i,
			.guest_phys_addr = vm->mem.regions[i].gpa,
			.memory_size = vm->mem.regions[i].size,
			.userspace_addr = (uint64_t)(uintptr_t)vm->mem.regions[i].host,
		};
		if (ioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
			return kvm_fail("KVM_SET_USER_MEMORY_REGION");
	}
	return 0;
}

static int kvm_get_supported_cpuid(struct kvm_vm_data *k)
{
	k->supported = calloc(1, sizeof(*k->supported) +
					 KVM_MAX_CPUID_ENTRIES * sizeof(struct kvm_cpuid_entry2));
	if (!k->supported)
		return -ENOMEM;
	k->supported->nent = KVM_MAX_CPUID_ENTRIES;
	if (ioctl(k->kvm_fd, KVM_GET_SUPPORTED_CPUID, k->supported) < 0)
		return kvm_fail("KVM_GET_SUPPORTED_CPUID");
	return 0;
}

static int kvm_vm_init(struct vm *vm)
{
	struct kvm_vm_data *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->vm_fd = -1;
	vm->backend_data = k;
	k->kvm_fd = kvm_open_device();
	if (k->kvm_fd < 0)
		return k->kvm_fd;
	if (ioctl(k->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		fprintf(stderr, "vmm: /dev/kvm: unexpected API version (need %d)\n", KVM_API_VERSION);
		return -EINVAL;
	}
	k->vm_fd = ioctl(k->kvm_fd, KVM_CREATE_VM, 0);
	if (k->vm_fd < 0)
		return kvm_fail("KVM_CREATE_VM");
	k->run_size = ioctl(k->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->run_size <= 0)
		return kvm_fail("KVM_GET_VCPU_MMAP_SIZE");
	if (ioctl(k->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0)
		return kvm_fail("KVM_SET_TSS_ADDR");
	uint64_t identity = KVM_IDENTITY_MAP_ADDR;
	if (ioctl(k->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0)
		return kvm_fail("KVM_SET_IDENTITY_MAP_ADDR");
	if (ioctl(k->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return kvm_fail("KVM_CREATE_IRQCHIP");
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	if (ioctl(k->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return kvm_fail("KVM_CREATE_PIT2");
	int ret = kvm_map_memory(vm, k);
	if (ret < 0)
		return ret;
	ret = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG2);
	k->guest_debug_flags = ret > 0 ? (unsigned)ret : 0;
	return kvm_get_supported_cpuid(k);
}

static void kvm_vm_destroy(struct vm *vm)
{
	struct kvm_vm_data *k = vm->backend_data;
	if (!k)
		return;
	if (k->vm_fd >= 0)
		close(k->vm_fd);
	if (k->kvm_fd >= 0)
		close(k->kvm_fd);
	free(k->supported);
	free(k);
	vm->backend_data = NULL;
}

static int kvm_set_cpuid(struct vcpu *vcpu, struct kvm_vm_data *k)
{
	size_t bytes = sizeof(struct kvm_cpuid2) + KVM_MAX_CPUID_ENTRIES * sizeof(struct kvm_cpuid_entry2);
	struct kvm_cpuid2 *c = malloc(bytes);
	if (!c)
		return -ENOMEM;
	unsigned n = 0;
	for (unsigned i = 0; i < k->supported->nent; i++) {
		const struct kvm_cpuid_entry2 *in = &k->supported->entries[i];
		struct cpuid_leaf leaf = { in->function, in->index, in->eax, in->ebx, in->ecx, in->edx };
		if (!cpuid_adjust(&leaf, vcpu->index, vcpu->vm->nr_vcpus))
			continue;
		c->entries[n] = *in;
		c->entries[n].eax = leaf.eax;
		c->entries[n].ebx = leaf.ebx;
		c->entries[n].ecx = leaf.ecx;
		c->entries[n].edx = leaf.edx;
		n++;
	}
	c->nent = n;
	int ret = ioctl(((struct kvm_vcpu_data *)vcpu->backend_data)->fd, KVM_SET_CPUID2, c);
	free(c);
	return ret < 0 ? kvm_fail("KVM_SET_CPUID2") : 0;
}

static int kvm_vcpu_init(struct vcpu *vcpu)
{
	struct kvm_vm_data *k = vcpu->vm->backend_data;
	struct kvm_vcpu_data *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	vcpu->backend_data = v;
	v->fd = -1;
	v->fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, (unsigned long)vcpu->index);
	if (v->fd < 0)
		return kvm_fail("KVM_CREATE_VCPU");
	v->run = mmap(NULL, (size_t)k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		v->run = NULL;
		return kvm_fail("mmap of the vCPU run area");
	}
	return kvm_set_cpuid(vcpu, k);
}

static void kvm_vcpu_destroy(struct vcpu *vcpu)
{
	struct kvm_vcpu_data *v = vcpu->backend_data;
	struct kvm_vm_data *k = vcpu->vm->backend_data;
	if (!v)
		return;
	if (v->run)
		munmap(v->run, (size_t)k->run_size);
	if (v->fd >= 0)
		close(v->fd);
	free(v);
	vcpu->backend_data = NULL;
}

/* The MSRs of struct cpu_msrs, in its field order. */
static const uint32_t kvm_state_msrs[] = {
	0xC0000081, /* STAR */
	0xC0000082, /* LSTAR */
	0xC0000083, /* CSTAR */
	0xC0000084, /* SFMASK */
	0xC0000102, /* KERNEL_GS_BASE */
	0x174, 0x175, 0x176, /* SYSENTER_CS/ESP/EIP */
	0x277, /* PAT */
	0xC0000103, /* TSC_AUX */
	0x1A0, /* MISC_ENABLE */
};
#define KVM_NR_STATE_MSRS (sizeof(kvm_state_msrs) / sizeof(kvm_state_msrs[0]))
_Static_assert(sizeof(struct cpu_msrs) == KVM_NR_STATE_MSRS * sizeof(uint64_t), "MSR list");

struct kvm_msr_list_buf {
	struct kvm_msrs hdr;
	struct kvm_msr_entry entries[KVM_NR_STATE_MSRS];
};

static int kvm_get_msrs(int fd, struct cpu_msrs *out)
{
	struct kvm_msr_list_buf buf = { .hdr.nmsrs = KVM_NR_STATE_MSRS };
	for (unsigned i = 0; i < KVM_NR_STATE_MSRS; i++)
		buf.entries[i].index = kvm_state_msrs[i];
	if (ioctl(fd, KVM_GET_MSRS, &buf) != (int)KVM_NR_STATE_MSRS)
		return -EIO;
	uint64_t *v = (uint64_t *)out;
	for (unsigned i = 0; i < KVM_NR_STATE_MSRS; i++)
		v[i] = buf.entries[i].data;
	return 0;
}

static int kvm_set_msrs(int fd, const struct cpu_msrs *in)
{
	struct kvm_msr_list_buf buf = { 0 };
	const uint64_t *v = (const uint64_t *)in;
	unsigned n = 0;
	for (unsigned i = 0; i < KVM_NR_STATE_MSRS; i++) {
		/* MISC_ENABLE 0 would clear bits KVM sets by itself: only a value read back from a
		 * vCPU (never 0) is written. */
		if (kvm_state_msrs[i] == 0x1A0 && v[i] == 0)
			continue;
		buf.entries[n].index = kvm_state_msrs[i];
		buf.entries[n++].data = v[i];
	}
	buf.hdr.nmsrs = n;
	return ioctl(fd, KVM_SET_MSRS, &buf) == (int)n ? 0 : -EIO;
}

/* struct kvm_fpu holds the FXSAVE fields one by one. */
static void kvm_fpu_to(struct cpu_fxsave *f, const struct kvm_fpu *k)
{
	memset(f, 0, sizeof(*f));
	memcpy(f->st, k->fpr, sizeof(f->st));
	f->fcw = k->fcw;
	f->fsw = k->fsw;
	f->ftw = k->ftwx;
	f->fop = k->last_opcode;
	f->fip = k->last_ip;
	f->fdp = k->last_dp;
	memcpy(f->xmm, k->xmm, sizeof(f->xmm));
	f->mxcsr = k->mxcsr;
	f->mxcsr_mask = 0xFFFF;
}

static void kvm_fpu_from(struct kvm_fpu *k, const struct cpu_fxsave *f)
{
	memset(k, 0, sizeof(*k));
	memcpy(k->fpr, f->st, sizeof(k->fpr));
	k->fcw = f->fcw;
	k->fsw = f->fsw;
	k->ftwx = f->ftw;
	k->last_opcode = f->fop;
	k->last_ip = f->fip;
	k->last_dp = f->fdp;
	memcpy(k->xmm, f->xmm, sizeof(k->xmm));
	k->mxcsr = f->mxcsr;
}

static void kvm_events_to(struct cpu_events *e, const struct kvm_vcpu_events *k)
{
	*e = (struct cpu_events){
		.exception_pending = k->exception.injected || k->exception.pending,
		.exception_has_error = k->exception.has_error_code,
		.exception_vector = k->exception.nr,
		.exception_error = k->exception.error_code,
		.interrupt_pending = k->interrupt.injected,
		.interrupt_vector = k->interrupt.nr,
		.interrupt_shadow = k->interrupt.shadow != 0,
		.nmi_pending = k->nmi.pending || k->nmi.injected,
		.nmi_masked = k->nmi.masked,
	};
}

static void kvm_events_from(struct kvm_vcpu_events *k, const struct cpu_events *e)
{
	memset(k, 0, sizeof(*k));
	k->exception.injected = e->exception_pending;
	k->exception.has_error_code = e->exception_has_error;
	k->exception.nr = e->exception_vector;
	k->exception.error_code = e->exception_error;
	k->interrupt.injected = e->interrupt_pending;
	k->interrupt.nr = e->interrupt_vector;
	k->interrupt.shadow = e->interrupt_shadow ? KVM_X86_SHADOW_INT_STI : 0;
	k->nmi.pending = e->nmi_pending;
	k->nmi.masked = e->nmi_masked;
	k->flags = KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_NMI_PENDING;
}

/* MSRs, debug registers, FPU/SSE and pending events: the part of the state beyond the
 * registers and segments. */
static int kvm_get_extended_state(int fd, struct cpu_state *st)
{
	struct kvm_fpu fpu;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dbg;
	if (kvm_get_msrs(fd, &st->msr) < 0 || ioctl(fd, KVM_GET_VCPU_EVENTS, &ev) < 0 ||
	    ioctl(fd, KVM_GET_DEBUGREGS, &dbg) < 0)
		return -EIO;
	/* The XSAVE image starts with the FXSAVE image. KVM_GET_FPU is the fallback: some KVM
	 * implementations (kvm-pvm) report MXCSR as 0 through it. */
	struct kvm_xsave xs;
	if (ioctl(fd, KVM_GET_XSAVE, &xs) == 0) {
		memcpy(&st->fpu, xs.region, sizeof(st->fpu));
	} else if (ioctl(fd, KVM_GET_FPU, &fpu) == 0) {
		kvm_fpu_to(&st->fpu, &fpu);
	} else {
		return -EIO;
	}
	kvm_events_to(&st->events, &ev);
	memcpy(st->dr, dbg.db, sizeof(st->dr));
	st->dr6 = dbg.dr6;
	st->dr7 = dbg.dr7;
	return 0;
}

static int kvm_set_extended_state(int fd, const struct cpu_state *st)
{
	struct kvm_fpu fpu;
	struct kvm_vcpu_events ev;
	struct kvm_debugregs dbg = { .dr6 = st->dr6, .dr7 = st->dr7 };
	memcpy(dbg.db, st->dr, sizeof(dbg.db));
	kvm_fpu_from(&fpu, &st->fpu);
	kvm_events_from(&ev, &st->events);
	if (kvm_set_msrs(fd, &st->msr) < 0)
		return kvm_fail("KVM_SET_MSRS");
	struct kvm_xsave xs;
	if (ioctl(fd, KVM_GET_XSAVE, &xs) == 0) {
		/* Keep the XSAVE header and extended components; replace the legacy part. */
		memcpy(xs.region, &st->fpu, sizeof(st->fpu));
		uint64_t *xstate_bv = (uint64_t *)((uint8_t *)xs.region + 512);
		*xstate_bv |= 3; /* x87 and SSE components are valid */
		if (ioctl(fd, KVM_SET_XSAVE, &xs) < 0)
			return kvm_fail("KVM_SET_XSAVE");
	} else if (ioctl(fd, KVM_SET_FPU, &fpu) < 0) {
		return kvm_fail("KVM_SET_FPU");
	}
	if (ioctl(fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
		return kvm_fail("KVM_SET_VCPU_EVENTS");
	if (ioctl(fd, KVM_SET_DEBUGREGS, &dbg) < 0)
		return kvm_fail("KVM_SET_DEBUGREGS");
	return 0;
}

static void kvm_segment_from(struct kvm_segment *o, const struct cpu_segment *s)
{
	*o = (struct kvm_segment){ .base = s->base, .limit = s->limit, .selector = s->selector,
				   .type = s->type, .present = s->present, .dpl = s->dpl,
				   .db = s->db, .s = s->s, .l = s->l, .g = s->g, .avl = s->avl,
				   .unusable = s->unusable };
}

static void kvm_segment_to(struct cpu_segment *o, const struct kvm_segment *s)
{
	*o = (struct cpu_segment){ .base = s->base, .limit = s->limit, .selector = s->selector,
				   .type = s->type, .present = s->present, .dpl = s->dpl,
				   .db = s->db, .s = s->s, .l = s->l, .g = s->g, .avl = s->avl,
				   .unusable = s->unusable };
}

static int kvm_vcpu_get_state(struct vcpu *vcpu, struct cpu_state *st)
{
	struct kvm_vcpu_data *v = vcpu->backend_data;
	struct kvm_regs r;
	struct kvm_sregs s;
	if (ioctl(v->fd, KVM_GET_REGS, &r) < 0 || ioctl(v->fd, KVM_GET_SREGS, &s) < 0)
		return -errno;
	/* struct kvm_regs order: rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8..r15, rip, rflags. */
	const __u64 *g = &r.rax;
	st->gpr[CPU_RAX] = g[0]; st->gpr[CPU_RBX] = g[1]; st->gpr[CPU_RCX] = g[2];
	st->gpr[CPU_RDX] = g[3]; st->gpr[CPU_RSI] = g[4]; st->gpr[CPU_RDI] = g[5];
	st->gpr[CPU_RSP] = g[6]; st->gpr[CPU_RBP] = g[7];
	for (int i = 0; i < 8; i++)
		st->gpr[CPU_R8 + i] = g[8 + i];
	st->rip = r.rip;
	st->rflags = r.rflags;
	struct kvm_segment *ks[CPU_NR_SEGS] = { &s.es, &s.cs, &s.ss, &s.ds, &s.fs, &s.gs, &s.tr, &s.ldt };
	for (int i = 0; i < CPU_NR_SEGS; i++)
		kvm_segment_to(&st->seg[i], ks[i]);
	st->gdt = (struct cpu_dtable){ s.gdt.base, s.gdt.limit };
	st->idt = (struct cpu_dtable){ s.idt.base, s.idt.limit };
	st->cr0 = s.cr0; st->cr2 = s.cr2; st->cr3 = s.cr3; st->cr4 = s.cr4; st->cr8 = s.cr8;
	st->efer = s.efer;
	st->apic_base = s.apic_base;
	return kvm_get_extended_state(v->fd, st);
}

static int kvm_vcpu_set_state(struct vcpu *vcpu, const struct cpu_state *st)
{
	struct kvm_vcpu_data *v = vcpu->backend_data;
	struct kvm_sregs s;
	if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0) /* keeps apic_base and the interrupt bitmap */
		return kvm_fail("KVM_GET_SREGS");
	struct kvm_segment *ks[CPU_NR_SEGS] = { &s.es, &s.cs, &s.ss, &s.ds, &s.fs, &s.gs, &s.tr, &s.ldt };
	for (int i = 0; i < CPU_NR_SEGS; i++)
		kvm_segment_from(ks[i], &st->seg[i]);
	s.gdt.base = st->gdt.base; s.gdt.limit = st->gdt.limit;
	s.idt.base = st->idt.base; s.idt.limit = st->idt.limit;
	s.cr0 = st->cr0; s.cr2 = st->cr2; s.cr3 = st->cr3; s.cr4 = st->cr4; s.cr8 = st->cr8;
	s.efer = st->efer;
	if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0)
		return kvm_fail("KVM_SET_SREGS");
	struct kvm_regs r = {
		.rax = st->gpr[CPU_RAX], .rbx = st->gpr[CPU_RBX], .rcx = st->gpr[CPU_RCX],
		.rdx = st->gpr[CPU_RDX], .rsi = st->gpr[CPU_RSI], .rdi = st->gpr[CPU_RDI],
		.rsp = st->gpr[CPU_RSP], .rbp = st->gpr[CPU_RBP], .r8 = st->gpr[CPU_R8],
		.r9 = st->gpr[CPU_R9], .r10 = st->gpr[CPU_R10], .r11 = st->gpr[CPU_R11],
		.r12 = st->gpr[CPU_R12], .r13 = st->gpr[CPU_R13], .r14 = st->gpr[CPU_R14],
		.r15 = st->gpr[CPU_R15], .rip = st->rip, .rflags = st->rflags,
	};
	if (ioctl(v->fd, KVM_SET_REGS, &r) < 0)
		return kvm_fail("KVM_SET_REGS");
	return kvm_set_extended_state(v->fd, st);
}

static void kvm_exit_internal(struct vcpu_exit *exit, const struct kvm_run *run)
{
	exit->reason = VCPU_EXIT_INTERNAL;
	if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
		snprintf(exit->detail, sizeof(exit->detail), "KVM internal error, suberror %u%s",
			 run->internal.suberror,
			 run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? " (emulation failure)" : "");
	else if (run->exit_reason == KVM_EXIT_FAIL_ENTRY)
		snprintf(exit->detail, sizeof(exit->detail), "KVM entry failed, reason 0x%llx",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
	else
		snprintf(exit->detail, sizeof(exit->detail), "unexpected KVM exit %u", run->exit_reason);
}

static int kvm_vcpu_run(struct vcpu *vcpu, struct vcpu_exit *exit)
{
	struct kvm_vcpu_data *v = vcpu->backend_data;
	struct kvm_run *run = v->run;
	exit->reason = VCPU_EXIT_NONE;
	if (ioctl(v->fd, KVM_RUN, 0) < 0) {
		run->immediate_exit = 0;
		if (errno == EINTR || errno == EAGAIN)
			return 0;
		return kvm_fail("KVM_RUN");
	}
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		exit->reason = VCPU_EXIT_IO;
		exit->io.port = run->io.port;
		exit->io.size = run->io.size;
		exit->io.is_write = run->io.direction == KVM_EXIT_IO_OUT;
		exit->io.count = run->io.count;
		exit->io.data = (uint8_t *)run + run->io.data_offset;
		break;
	case KVM_EXIT_MMIO:
		exit->reason = VCPU_EXIT_MMIO;
		exit->mmio.gpa = run->mmio.phys_addr;
		exit->mmio.size = (uint8_t)run->mmio.len;
		exit->mmio.is_write = run->mmio.is_write;
		exit->mmio.data = run->mmio.data;
		break;
	case KVM_EXIT_HLT:
		exit->reason = VCPU_EXIT_HLT;
		break;
	case KVM_EXIT_SHUTDOWN:
		exit->reason = VCPU_EXIT_SHUTDOWN;
		break;
	case KVM_EXIT_SYSTEM_EVENT:
		exit->reason = run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN ? VCPU_EXIT_POWEROFF
										   : VCPU_EXIT_RESET;
		break;
	case KVM_EXIT_INTR:
		break;
	case KVM_EXIT_DEBUG:
		exit->reason = VCPU_EXIT_DEBUG;
		exit->debug.exception = (uint8_t)run->debug.arch.exception;
		exit->debug.pc = run->debug.arch.pc;
		exit->debug.dr6 = run->debug.arch.dr6;
		break;
	default:
		kvm_exit_internal(exit, run);
	}
	return 0;
}

/* Called from another thread: immediate_exit covers a vCPU about to enter KVM_RUN, the signal
 * (SIGUSR1, whose handler does nothing) one that is inside it. */
static void kvm_vcpu_kick(struct vcpu *vcpu)
{
	struct kvm_vcpu_data *v = vcpu->backend_data;
	if (!v || !v->run)
		return;
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (vcpu->thread_started)
		pthread_kill(vcpu->thread, SIGUSR1);
}

static int kvm_irq_line(struct vm *vm, unsigned gsi, bool level)
{
	struct kvm_vm_data *k = vm->backend_data;
	struct kvm_irq_level irq = { .irq = gsi, .level = level };
	return ioctl(k->vm_fd, KVM_IRQ_LINE, &irq) < 0 ? -errno : 0;
}

static int kvm_irq_msi(struct vm *vm, uint64_t address, uint32_t data)
{
	struct kvm_vm_data *k = vm->backend_data;
	struct kvm_msi msi = { .address_lo = (uint32_t)address, .address_hi = (uint32_t)(address >> 32),
			       .data = data };
	return ioctl(k->vm_fd, KVM_SIGNAL_MSI, &msi) < 0 ? -errno : 0;
}

/* KVM_IOEVENTFD with length 0: a write of any size matches (KVM_CAP_IOEVENTFD_ANY_LENGTH). */
static int kvm_ioeventfd(struct vm *vm, uint64_t addr, int fd, bool assign)
{
	struct kvm_vm_data *k = vm->backend_data;
	struct kvm_ioeventfd io = { .addr = addr, .len = 0, .fd = fd,
				    .flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN };
	return ioctl(k->vm_fd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

/* Pausing: keep kvmclock where it was, as QEMU does, so guest time does not leap forward. */
static void kvm_vm_paused(struct vm *vm)
{
	struct kvm_vm_data *k = vm->backend_data;
	k->have_paused_clock = ioctl(k->vm_fd, KVM_GET_CLOCK, &k->paused_clock) == 0;
}

static void kvm_vm_resuming(struct vm *vm)
{
	struct kvm_vm_data *k = vm->backend_data;
	if (k->have_paused_clock) {
		struct kvm_clock_data clock = { .clock = k->paused_clock.clock };
		if (ioctl(k->vm_fd, KVM_SET_CLOCK, &clock) < 0)
			kvm_fail("KVM_SET_CLOCK");
		k->have_paused_clock = false;
	}
	/* Tell each guest kernel it was stopped, so its watchdogs do not report a lockup. EINVAL
	 * means the guest has not enabled kvmclock: nothing to tell. */
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		struct kvm_vcpu_data *v = vm->vcpus[i].backend_data;
		if (v)
			ioctl(v->fd, KVM_KVMCLOCK_CTRL, 0);
	}
}

/* KVM_SET_GUEST_DEBUG: DR0-3 hold the addresses, DR7 enables them globally (G0-G3) with their
 * type (R/W: 00 execute, 01 write, 11 read/write) and length (LEN: 00 1, 01 2, 11 4, 10 8 bytes).
 * Intel SDM vol. 3, 18.2.4. Interrupts are held off while stepping where KVM can
 * (KVM_GUESTDBG_BLOCKIRQ), so a step does not land in an interrupt handler. */
static int kvm_set_guest_debug(struct vcpu *vcpu, const struct cpu_debug *debug)
{
	struct kvm_vcpu_data *v = vcpu->backend_data;
	struct kvm_vm_data *k = vcpu->vm->backend_data;
	struct kvm_guest_debug d;
	memset(&d, 0, sizeof(d));
	if (debug->enabled) {
		d.control = KVM_GUESTDBG_ENABLE;
		if (debug->single_step) {
			d.control |= KVM_GUESTDBG_SINGLESTEP;
#ifdef KVM_GUESTDBG_BLOCKIRQ
			if (k->guest_debug_flags & KVM_GUESTDBG_BLOCKIRQ)
				d.control |= KVM_GUESTDBG_BLOCKIRQ;
#endif
		}
		if (debug->sw_breakpoints)
			d.control |= KVM_GUESTDBG_USE_SW_BP;
		uint64_t dr7 = 0;
		for (unsigned i = 0; i < debug->nr_hw && i < CPU_DEBUG_MAX_HW; i++) {
			static const uint8_t rw[] = { [CPU_HW_EXEC] = 0, [CPU_HW_WRITE] = 1,
						      [CPU_HW_ACCESS] = 3 };
			uint8_t len = debug->hw[i].len;
			uint64_t len_bits = len == 2 ? 1 : len == 4 ? 3 : len == 8 ? 2 : 0;
			if (debug->hw[i].type == CPU_HW_EXEC)
				len_bits = 0;
			d.arch.debugreg[i] = debug->hw[i].addr;
			dr7 |= 2ull << (2 * i); /* Gi */
			dr7 |= (uint64_t)rw[debug->hw[i].type] << (16 + 4 * i);
			dr7 |= len_bits << (18 + 4 * i);
		}
		if (dr7) {
			d.control |= KVM_GUESTDBG_USE_HW_BP;
			d.arch.debugreg[7] = dr7 | (1ull << 9); /* GE: exact breakpoint detection */
		}
	}
	if (ioctl(v->fd, KVM_SET_GUEST_DEBUG, &d) < 0)
		return -errno;
	return 0;
}

const struct cpu_backend cpu_backend_kvm = {
	.name = "kvm",
	.vm_init = kvm_vm_init,
	.vm_destroy = kvm_vm_destroy,
	.vcpu_init = kvm_vcpu_init,
	.vcpu_destroy = kvm_vcpu_destroy,
	.vcpu_get_state = kvm_vcpu_get_state,
	.vcpu_set_state = kvm_vcpu_set_state,
	.vcpu_run = kvm_vcpu_run,
	.vcpu_kick = kvm_vcpu_kick,
	.irq_line = kvm_irq_line,
	.irq_msi = kvm_irq_msi,
	.ioeventfd = kvm_ioeventfd,
	.vm_paused = kvm_vm_paused,
	.vm_resuming = kvm_vm_resuming,
	.set_guest_debug = kvm_set_guest_debug,
};
