/* CPUID of the software CPU: every bit set here is implemented and tested; a feature is added
 * to this table in the same change as its instructions (emu-notes.md: Linux and glibc choose
 * code paths by CPUID, so an advertised but broken feature corrupts silently).
 *
 * FPU (x87.c), MMX, FXSR (FXSAVE/FXRSTOR), SSE and SSE2 (sse.c) are complete and compared
 * against the host (tests/unit/test_emu_diff.c): the x86-64 baseline. The APIC, x2APIC and
 * TSC-deadline bits are added by the backend, which owns the LAPIC (backend.c). Not advertised,
 * because not implemented (their instructions raise #UD): SYSENTER/SYSEXIT, MTRR, MCE/MCA,
 * XSAVE/AVX, SSE3 and later, BMI1/LZCNT (so F3 0F BC/BD are BSF/BSR), SMEP/SMAP, RDRAND,
 * MONITOR/MWAIT, PCID, FSGSBASE, 3DNow!. */
#include "cpu/emu/emu.h"

#include <string.h>

/* CPUID.1:EDX */
#define F1_EDX_FPU (1u << 0)
#define F1_EDX_PSE (1u << 3) /* 2 MiB/1 GiB pages of long mode; legacy paging raises #GP */
#define F1_EDX_TSC (1u << 4)
#define F1_EDX_MSR (1u << 5)
#define F1_EDX_PAE (1u << 6)
#define F1_EDX_CX8 (1u << 8)
#define F1_EDX_PGE (1u << 13)
#define F1_EDX_CMOV (1u << 15)
#define F1_EDX_PAT (1u << 16)
#define F1_EDX_CLFSH (1u << 19)
#define F1_EDX_MMX (1u << 23)
#define F1_EDX_FXSR (1u << 24)
#define F1_EDX_SSE (1u << 25)
#define F1_EDX_SSE2 (1u << 26)
/* CPUID.1:ECX */
#define F1_ECX_CX16 (1u << 13)
#define F1_ECX_POPCNT (1u << 23)
#define F1_ECX_HYPERVISOR (1u << 31)
/* CPUID.7.0:EBX */
#define F7_EBX_FCS_FDS_DEPRECATED (1u << 13) /* FXSAVE/FNSAVE store FCS and FDS as 0 */
/* CPUID.7.0:EDX */
#define F7_EDX_ARCH_CAPABILITIES (1u << 29) /* the MSR: EMU_ARCH_CAPABILITIES (emu.h) */
/* CPUID.80000001 */
#define X1_ECX_LAHF (1u << 0)
#define X1_EDX_SYSCALL (1u << 11)
#define X1_EDX_NX (1u << 20)
#define X1_EDX_PAGE1GB (1u << 26)
#define X1_EDX_RDTSCP (1u << 27)
#define X1_EDX_LM (1u << 29)
/* CPUID.80000007:EDX */
#define X7_EDX_INVARIANT_TSC (1u << 8)

#define MAX_BASIC_LEAF 7u
#define MAX_HYPERVISOR_LEAF 0x40000001u
#define MAX_EXTENDED_LEAF 0x80000008u

/* A leaf past the maximum of its range (basic, hypervisor, extended) or in no range answers as
 * the highest basic leaf, as on Intel processors (SDM Vol. 2A, CPUID) and under KVM. */
uint32_t emu_cpuid_leaf(uint32_t leaf)
{
	if (leaf <= MAX_BASIC_LEAF || (leaf >= 0x40000000 && leaf <= MAX_HYPERVISOR_LEAF) ||
	    (leaf >= 0x80000000 && leaf <= MAX_EXTENDED_LEAF))
		return leaf;
	return MAX_BASIC_LEAF;
}

void emu_cpuid(const struct emu_cpu *cpu, uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
	static const char brand[48] = "vmm software x86-64 CPU";

	memset(out, 0, 4 * sizeof(out[0]));
	switch (leaf) {
	case 0:
		out[0] = MAX_BASIC_LEAF;
		memcpy(&out[1], "Genu", 4); /* EBX, EDX, ECX spell GenuineIntel */
		memcpy(&out[3], "ineI", 4);
		memcpy(&out[2], "ntel", 4);
		break;
	case 1:
		/* Family 6, model 15, stepping 1. Family 6 is what makes Linux (init_intel) set
		 * REP_GOOD, so its memcpy/memset/clear_page/copy_user run REP MOVSQ/STOSQ, which
		 * exec.c moves a page at a time; family 15 (Netburst) gets MOV loops. Model 15
		 * (Core 2's number; a model >= 15 keeps PAT, >= 13 reads MISC_ENABLE's fast-string
		 * bit) is in none of Linux 6.1's model tables (vulnerability lists, intel_pstate,
		 * intel_idle, TSC from MSRs, split lock, PMU), so no model-specific MSR or erratum
		 * path runs: the kernel sees a generic family-6 CPU with only the features below. */
		out[0] = EMU_CPUID_SIGNATURE;
		out[1] = (8 << 8) /* CLFLUSH: 64 bytes */ | (1 << 16) | (cpu->apic_id << 24);
		out[2] = F1_ECX_CX16 | F1_ECX_POPCNT | F1_ECX_HYPERVISOR;
		out[3] = F1_EDX_FPU | F1_EDX_PSE | F1_EDX_TSC | F1_EDX_MSR | F1_EDX_PAE |
			 F1_EDX_CX8 | F1_EDX_PGE | F1_EDX_CMOV | F1_EDX_PAT | F1_EDX_CLFSH |
			 F1_EDX_MMX | F1_EDX_FXSR | F1_EDX_SSE | F1_EDX_SSE2;
		break;
	case 7:
		if (subleaf == 0) {
			out[1] = F7_EBX_FCS_FDS_DEPRECATED;
			out[3] = F7_EDX_ARCH_CAPABILITIES;
		}
		break;
	case 0x40000000:
		/* The KVM signature (docs/platform.md); its PV features come with kvmclock. */
		out[0] = MAX_HYPERVISOR_LEAF;
		memcpy(&out[1], "KVMKVMKVM\0\0\0", 12); /* EBX, ECX, EDX */
		break;
	case 0x80000000:
		out[0] = MAX_EXTENDED_LEAF;
		break;
	case 0x80000001:
		out[2] = X1_ECX_LAHF;
		out[3] = X1_EDX_SYSCALL | X1_EDX_NX | X1_EDX_PAGE1GB | X1_EDX_RDTSCP | X1_EDX_LM;
		break;
	case 0x80000002:
	case 0x80000003:
	case 0x80000004:
		memcpy(out, brand + 16 * (leaf - 0x80000002), 16);
		break;
	case 0x80000007:
		out[3] = X7_EDX_INVARIANT_TSC;
		break;
	case 0x80000008:
		out[0] = 46 | (48 << 8); /* physical and linear address bits (mmu.c) */
		break;
	default:
		break; /* leaves 2-6 and 0x80000005-6: all zero */
	}
}
