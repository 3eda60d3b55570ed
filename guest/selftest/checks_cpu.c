/* CPU checks: what CPUID says about the hypervisor, APIC ids, and bringing up every AP. */
#include "apic.h"
#include "check.h"
#include "io.h"
#include "lib.h"
#include "smp.h"

#define CPUID_HYPERVISOR_BIT (1u << 31)
#define KVM_CPUID_SIGNATURE 0x40000000
#define KVM_CPUID_FEATURES 0x40000001
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)

/* The x86-64 baseline (the psABI's x86-64 v1, which glibc assumes, and what a 64-bit Linux
 * kernel requires): leaf 1 EDX FPU PSE TSC MSR PAE CX8 APIC PGE CMOV PAT CLFSH MMX FXSR SSE SSE2,
 * 0x80000001 EDX SYSCALL NX LM. */
#define CPUID_1_EDX_BASELINE 0x0789A379u
#define CPUID_X1_EDX_BASELINE ((1u << 11) | (1u << 20) | (1u << 29))

void check_cpuid(struct selftest *t)
{
	uint32_t regs[4], x1[4];
	char signature[13];

	(void)t;
	cpuid(1, 0, regs);
	if (!(regs[2] & CPUID_HYPERVISOR_BIT))
		check_fail("cpuid-hypervisor", "leaf 1 ECX bit 31 is clear");
	else
		check_ok("cpuid-hypervisor");
	cpuid(0x80000001, 0, x1);
	if ((regs[3] & CPUID_1_EDX_BASELINE) != CPUID_1_EDX_BASELINE ||
	    (x1[3] & CPUID_X1_EDX_BASELINE) != CPUID_X1_EDX_BASELINE)
		check_fail("cpuid-x86-64-baseline", "missing: leaf 1 EDX 0x%x, 0x80000001 EDX 0x%x",
			   CPUID_1_EDX_BASELINE & ~regs[3], CPUID_X1_EDX_BASELINE & ~x1[3]);
	else
		check_ok("cpuid-x86-64-baseline");

	cpuid(KVM_CPUID_SIGNATURE, 0, regs);
	memcpy(signature + 0, &regs[1], 4);
	memcpy(signature + 4, &regs[2], 4);
	memcpy(signature + 8, &regs[3], 4);
	signature[12] = '\0';
	bool is_kvm = !memcmp(signature, "KVMKVMKVM\0\0\0", 12);
	if (!is_kvm)
		check_fail("cpuid-kvm", "leaf 0x40000000 signature \"%s\"", signature);
	else if (regs[0] < KVM_CPUID_FEATURES)
		check_fail("cpuid-kvm", "leaf 0x40000000 max leaf 0x%x", regs[0]);
	else
		check_ok("cpuid-kvm");

	cpuid(KVM_CPUID_FEATURES, 0, regs);
	if (!is_kvm || !(regs[0] & KVM_FEATURE_CLOCKSOURCE2))
		check_fail("cpuid-kvmclock", "leaf 0x40000001 EAX 0x%x lacks CLOCKSOURCE2 (bit 3)",
			   is_kvm ? regs[0] : 0);
	else
		check_ok("cpuid-kvmclock");
}

/* A leaf past the maximum of its range: Intel processors (and KVM with an Intel vendor) answer
 * with the highest basic leaf, AMD ones with zeros (SDM Vol. 2A and APM Vol. 3, CPUID). */
void check_cpuid_out_of_range(struct selftest *t)
{
	uint32_t r0[4], max_ext[4], past[4], past_ext[4], want[4] = { 0, 0, 0, 0 };

	(void)t;
	cpuid(0, 0, r0);
	cpuid(0x80000000, 0, max_ext);
	cpuid(r0[0] + 1, 0, past);
	cpuid(max_ext[0] + 1, 0, past_ext);
	if (!memcmp(&r0[1], "Genu", 4) && !memcmp(&r0[3], "ineI", 4) && !memcmp(&r0[2], "ntel", 4))
		cpuid(r0[0], 0, want);
	if (memcmp(past, want, sizeof(want)) || memcmp(past_ext, want, sizeof(want)))
		check_fail("cpuid-out-of-range",
			   "leaf 0x%x gives %x %x %x %x, leaf 0x%x gives %x %x %x %x, expected %x %x %x %x",
			   r0[0] + 1, past[0], past[1], past[2], past[3], max_ext[0] + 1, past_ext[0],
			   past_ext[1], past_ext[2], past_ext[3], want[0], want[1], want[2], want[3]);
	else
		check_ok("cpuid-out-of-range");
}

void check_bsp_apic_id(struct selftest *t)
{
	uint32_t regs[4];

	cpuid(1, 0, regs);
	uint32_t cpuid_id = regs[1] >> 24;
	t->bsp_apic_id = lapic_id();
	if (lapic_base() != LAPIC_DEFAULT_BASE)
		check_fail("bsp-apic-id", "IA32_APIC_BASE is 0x%lx", lapic_base());
	else if (t->bsp_apic_id != 0 || cpuid_id != 0)
		check_fail("bsp-apic-id", "LAPIC id %u, CPUID id %u, expected 0", t->bsp_apic_id,
			   cpuid_id);
	else
		check_ok("bsp-apic-id");
}

/* Starts one AP; false after reporting a failure. */
static bool smp_start_one(uint32_t apic_id, uint32_t *started_ids, uint32_t started)
{
	uint32_t reported;

	if (!smp_start_ap(apic_id, &reported)) {
		check_fail("smp", "AP with APIC id %u did not come up", apic_id);
		return false;
	}
	if (reported != apic_id) {
		check_fail("smp", "AP started as APIC id %u reports id %u", apic_id, reported);
		return false;
	}
	for (uint32_t i = 0; i < started; i++) {
		if (started_ids[i] == reported) {
			check_fail("smp", "two APs report APIC id %u", reported);
			return false;
		}
	}
	started_ids[started] = reported;
	return true;
}

void check_smp(struct selftest *t)
{
	const struct acpi_info *a = &t->acpi;
	uint32_t started_ids[MAX_CPUS];
	uint32_t started = 0;
	char why[96];

	if (!a->madt || a->cpu_count == 0 || a->cpu_count > MAX_CPUS) {
		check_fail("smp", "no usable CPU list in the MADT");
		return;
	}
	if (a->cpu_count == 1) {
		check_ok("smp");
		return;
	}
	if (!smp_prepare_trampoline(&t->boot, why, sizeof(why))) {
		check_fail("smp", "%s", why);
		return;
	}
	for (uint32_t i = 0; i < a->cpu_count; i++) {
		if (a->cpu_apic_ids[i] == t->bsp_apic_id)
			continue;
		if (!smp_start_one(a->cpu_apic_ids[i], started_ids, started))
			return;
		started++;
	}
	if (started + 1 != a->cpu_count)
		check_fail("smp", "%u APs up, the MADT lists %u CPUs", started, a->cpu_count);
	else
		check_ok("smp");
	check_note("smp: %u CPUs running", started + 1);
}
