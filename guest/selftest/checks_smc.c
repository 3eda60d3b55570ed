/* Code that changes under the CPU that runs it: written through a second mapping of its page,
 * by another CPU while this one runs it (cross-modifying code, SDM Vol. 3 §8.1.3), and by a
 * device's DMA (checks_virtio.c). A CPU that caches decoded instructions (the software CPU's
 * blocks) must notice each of these writes; KVM gives the results of a real CPU. */
#include "apic.h"
#include "check.h"
#include "io.h"
#include "lib.h"
#include "paging.h"
#include "smp.h"
#include "timer.h"

#define SMC_ALIAS_SLOT (HIGHMEM_SLOTS - 1)
#define AP_DONE_TIMEOUT_MS 10000 /* only a bound: a working CPU answers at once */

/* Pages of their own, so that nothing else writes them. */
static uint8_t alias_code[4096] __attribute__((aligned(4096)));
static uint8_t cross_code[4096] __attribute__((aligned(4096)));

void smc_write_return(volatile uint8_t *code, uint32_t value)
{
	code[0] = 0xB8; /* mov eax, imm32 */
	code[1] = (uint8_t)value;
	code[2] = (uint8_t)(value >> 8);
	code[3] = (uint8_t)(value >> 16);
	code[4] = (uint8_t)(value >> 24);
	code[5] = 0xC3; /* ret */
}

uint32_t smc_call(const void *code)
{
	uint32_t (*fn)(void) = (uint32_t(*)(void))(uintptr_t)code;

	__asm__ volatile("" ::: "memory");
	return fn();
}

/* Run the page, write its immediate through another linear address of the same physical page
 * (twice: the second store finds the mapping in the TLB), run it again. */
static void check_smc_alias(void)
{
	volatile uint8_t *alias;
	uint32_t got[3];

	smc_write_return(alias_code, 1);
	got[0] = smc_call(alias_code);
	alias = (volatile uint8_t *)highmem_map((uint64_t)(uintptr_t)alias_code, SMC_ALIAS_SLOT);
	alias[1] = 2;
	got[1] = smc_call(alias_code);
	alias[1] = 3;
	got[2] = smc_call(alias_code);
	highmem_unmap(SMC_ALIAS_SLOT);
	if (got[0] != 1 || got[1] != 2 || got[2] != 3)
		check_fail("smc-alias", "returned %u, %u, %u; expected 1, 2, 3", got[0], got[1],
			   got[2]);
	else
		check_ok("smc-alias");
}

/* The AP's side of smc-cross-cpu (ap_task): run the code until it changes (or the BSP gives
 * up), then serialise (CPUID), as the SDM asks of the executing CPU, and run it once more. */
static volatile uint32_t ap_running, ap_done, ap_give_up, ap_seen, ap_after_serialising;

static void smc_ap_task(void)
{
	uint32_t r = smc_call(cross_code), regs[4];

	__atomic_store_n(&ap_running, 1, __ATOMIC_RELEASE);
	while (r == 1 && !__atomic_load_n(&ap_give_up, __ATOMIC_ACQUIRE))
		r = smc_call(cross_code);
	ap_seen = r;
	cpuid(0, 0, regs);
	ap_after_serialising = smc_call(cross_code);
	__atomic_store_n(&ap_done, 1, __ATOMIC_RELEASE);
}

static bool flag_set(void *arg)
{
	return __atomic_load_n((volatile uint32_t *)arg, __ATOMIC_ACQUIRE) != 0;
}

/* Another CPU runs the code in a loop while this one changes it (one plain store, the page
 * already in this CPU's TLB): the AP must see the new code, at the latest after CPUID. The
 * first AP is started again (INIT/SIPI) with smc_ap_task as its work. */
static void check_smc_cross_cpu(struct selftest *t)
{
	const struct acpi_info *a = &t->acpi;
	uint32_t ap = a->cpu_count, id;

	for (uint32_t i = 0; i < a->cpu_count; i++)
		if (a->cpu_apic_ids[i] != t->bsp_apic_id) {
			ap = a->cpu_apic_ids[i];
			break;
		}
	if (a->cpu_count < 2 || ap == a->cpu_count) {
		check_note("smc-cross-cpu: needs a second CPU");
		return;
	}
	smc_write_return(cross_code, 1);
	smc_call(cross_code);
	ap_task = smc_ap_task;
	if (!smp_start_ap(ap, &id) || !wait_until(flag_set, (void *)&ap_running, 1000)) {
		ap_task = 0;
		check_fail("smc-cross-cpu", "AP %u did not start its loop", ap);
		return;
	}
	cross_code[1] = 2;
	if (!wait_until(flag_set, (void *)&ap_done, AP_DONE_TIMEOUT_MS)) {
		__atomic_store_n(&ap_give_up, 1, __ATOMIC_RELEASE);
		wait_until(flag_set, (void *)&ap_done, 1000);
	}
	ap_task = 0;
	if (!ap_done)
		check_fail("smc-cross-cpu", "AP %u never finished", ap);
	else if (ap_seen != 2 || ap_after_serialising != 2)
		check_fail("smc-cross-cpu",
			   "AP %u ran the old code: %u in its loop, %u after CPUID", ap, ap_seen,
			   ap_after_serialising);
	else
		check_ok("smc-cross-cpu");
}

void check_smc(struct selftest *t)
{
	check_smc_alias();
	check_smc_cross_cpu(t);
}
