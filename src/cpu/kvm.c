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
	return 0;
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
	return 0;
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
};
