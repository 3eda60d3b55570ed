/* Guest CPUID adjustments (Intel SDM vol. 2A "CPUID", AMD APM vol. 3 appendix E). */
#include "cpu/cpuid.h"

#include <string.h>

/* Bits needed to number nr APIC ids. */
static uint32_t cpuid_id_bits(unsigned nr)
{
	uint32_t bits = 0;
	while ((1u << bits) < nr)
		bits++;
	return bits;
}

/* Leaf 0xB: one thread per core, nr_cpus cores in one package. */
static void cpuid_topology(struct cpuid_leaf *l, unsigned cpu, unsigned nr_cpus)
{
	l->edx = cpu;
	switch (l->index) {
	case 0: /* SMT level */
		l->eax = 0;
		l->ebx = 1;
		l->ecx = (1u << 8) | l->index;
		break;
	case 1: /* core level */
		l->eax = cpuid_id_bits(nr_cpus);
		l->ebx = nr_cpus;
		l->ecx = (2u << 8) | l->index;
		break;
	default:
		l->eax = l->ebx = 0;
		l->ecx = l->index;
	}
}

bool cpuid_adjust(struct cpuid_leaf *l, unsigned cpu, unsigned nr_cpus)
{
	switch (l->function) {
	case 1:
		l->ebx = (l->ebx & 0x0000FFFFu) | (cpu << 24) | ((nr_cpus & 0xFF) << 16);
		l->ecx |= 1u << 31; /* running under a hypervisor */
		if (nr_cpus > 1)
			l->edx |= 1u << 28; /* HTT: EBX[23:16] is valid */
		break;
	case 4: /* deterministic cache parameters: cores per package, no sharing claims */
		l->eax = (l->eax & 0x3FFFu) | ((nr_cpus - 1) << 26);
		break;
	case 0xB:
		cpuid_topology(l, cpu, nr_cpus);
		break;
	case 0x1F: /* extended topology v2: 0xB says all there is */
		return false;
	case 0x40000000:
		l->eax = 0x40000001;
		memcpy(&l->ebx, "KVMK", 4);
		memcpy(&l->ecx, "VMKV", 4);
		memcpy(&l->edx, "M\0\0\0", 4);
		break;
	case 0x40000001:
		l->eax &= CPUID_PV_FEATURES_WANTED;
		l->ebx = l->ecx = l->edx = 0;
		break;
	case 0x80000008: /* AMD: number of cores and APIC id size */
		l->ecx = (cpuid_id_bits(nr_cpus) << 12) | (nr_cpus - 1);
		break;
	case 0x8000001E: /* AMD: extended APIC id, one thread per core */
		l->eax = cpu;
		l->ebx = cpu & 0xFF;
		l->ecx = 0;
		break;
	default:
		break;
	}
	return true;
}
