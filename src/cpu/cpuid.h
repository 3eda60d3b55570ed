/* The guest-visible CPUID, shared by both backends: topology made true for this VM, the
 * hypervisor bit and KVM's paravirtual leaves. */
#ifndef VMM_CPUID_H
#define VMM_CPUID_H

#include <stdbool.h>
#include <stdint.h>

struct cpuid_leaf {
	uint32_t function, index;
	uint32_t eax, ebx, ecx, edx;
};

/* KVM paravirtual feature bits, leaf 0x40000001 EAX (Documentation/virt/kvm/x86/cpuid.rst). */
#define KVM_PV_CLOCKSOURCE (1u << 0)
#define KVM_PV_NOP_IO_DELAY (1u << 1)
#define KVM_PV_CLOCKSOURCE2 (1u << 3)
#define KVM_PV_STEAL_TIME (1u << 5)
#define KVM_PV_EOI (1u << 6)
#define KVM_PV_UNHALT (1u << 7)
#define KVM_PV_TLB_FLUSH (1u << 9)
#define KVM_PV_SEND_IPI (1u << 11)
#define KVM_PV_CLOCKSOURCE_STABLE (1u << 24)
#define CPUID_PV_FEATURES_WANTED                                                               \
	(KVM_PV_CLOCKSOURCE | KVM_PV_NOP_IO_DELAY | KVM_PV_CLOCKSOURCE2 | KVM_PV_STEAL_TIME |   \
	 KVM_PV_EOI | KVM_PV_UNHALT | KVM_PV_TLB_FLUSH | KVM_PV_SEND_IPI |                     \
	 KVM_PV_CLOCKSOURCE_STABLE)

/* Adjust one leaf of the backend's supported CPUID for vCPU `cpu` of `nr_cpus`. Returns false
 * when the leaf must not be shown to the guest at all. */
bool cpuid_adjust(struct cpuid_leaf *leaf, unsigned cpu, unsigned nr_cpus);

#endif
