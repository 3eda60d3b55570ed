/*
 * What one MSI costs the thread that sends it, on this host's KVM: KVM_SIGNAL_MSI (what the
 * monitor's main loop does for each virtio completion interrupt) against a write to an eventfd
 * bound with KVM_IRQFD to a GSI that KVM_SET_GSI_ROUTING routes as the same MSI.
 *
 *   cc -O2 -Wall -Wextra -std=gnu11 -o bench/build/irqinject bench/irqinject.c
 *   bench/build/irqinject [COUNT]
 *
 * One VM with the in-kernel irqchip and one vCPU (never run) whose LAPIC is software-enabled, so
 * each MSI is really accepted into its IRR; the vector is the same each time, as for a queue.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MSI_ADDRESS 0xFEE00000u /* APIC id 0 */
#define MSI_VECTOR 0x34
#define GSI 24 /* the first above the IOAPIC pins */
#define LAPIC_SVR 0xF0
#define LAPIC_SVR_ENABLE 0x100

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int check(int ret, const char *what)
{
	if (ret < 0) {
		fprintf(stderr, "irqinject: %s: %s\n", what, strerror(errno));
		exit(1);
	}
	return ret;
}

int main(int argc, char **argv)
{
	long count = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
	if (count <= 0)
		count = 200000;
	int kvm = check(open("/dev/kvm", O_RDWR | O_CLOEXEC), "/dev/kvm");
	int vm = check(ioctl(kvm, KVM_CREATE_VM, 0), "KVM_CREATE_VM");
	if (ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_IRQFD) <= 0 ||
	    ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_IRQ_ROUTING) <= 0 ||
	    ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_SIGNAL_MSI) <= 0) {
		fprintf(stderr, "irqinject: KVM lacks IRQFD, IRQ_ROUTING or SIGNAL_MSI\n");
		return 1;
	}
	check(ioctl(vm, KVM_CREATE_IRQCHIP, 0), "KVM_CREATE_IRQCHIP");
	int vcpu = check(ioctl(vm, KVM_CREATE_VCPU, 0), "KVM_CREATE_VCPU");
	struct kvm_lapic_state lapic;
	check(ioctl(vcpu, KVM_GET_LAPIC, &lapic), "KVM_GET_LAPIC");
	uint32_t svr;
	memcpy(&svr, lapic.regs + LAPIC_SVR, 4);
	svr |= LAPIC_SVR_ENABLE;
	memcpy(lapic.regs + LAPIC_SVR, &svr, 4);
	check(ioctl(vcpu, KVM_SET_LAPIC, &lapic), "KVM_SET_LAPIC");

	struct kvm_msi msi = { .address_lo = MSI_ADDRESS, .data = MSI_VECTOR };
	long delivered = 0;
	double t0 = now();
	for (long i = 0; i < count; i++)
		delivered += check(ioctl(vm, KVM_SIGNAL_MSI, &msi), "KVM_SIGNAL_MSI") > 0;
	double signal_ns = (now() - t0) / (double)count * 1e9;

	struct {
		struct kvm_irq_routing head;
		struct kvm_irq_routing_entry entry;
	} routing;
	memset(&routing, 0, sizeof(routing));
	routing.head.nr = 1;
	routing.entry = (struct kvm_irq_routing_entry){ .gsi = GSI, .type = KVM_IRQ_ROUTING_MSI };
	routing.entry.u.msi.address_lo = MSI_ADDRESS;
	routing.entry.u.msi.data = MSI_VECTOR;
	check(ioctl(vm, KVM_SET_GSI_ROUTING, &routing), "KVM_SET_GSI_ROUTING");
	int fd = check(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd");
	struct kvm_irqfd irqfd = { .fd = (uint32_t)fd, .gsi = GSI };
	check(ioctl(vm, KVM_IRQFD, &irqfd), "KVM_IRQFD");
	uint64_t one = 1;
	t0 = now();
	for (long i = 0; i < count; i++)
		if (write(fd, &one, sizeof(one)) != sizeof(one))
			check(-1, "eventfd write");
	double irqfd_ns = (now() - t0) / (double)count * 1e9;

	printf("KVM_SIGNAL_MSI: %.0f ns per interrupt (%ld of %ld accepted)\n", signal_ns, delivered,
	       count);
	printf("KVM_IRQFD eventfd write: %.0f ns per interrupt\n", irqfd_ns);
	printf("irqfd / signal: %.2f\n", irqfd_ns / signal_ns);
	return 0;
}
