/*
 * AP bring-up (Intel SDM vol. 3 §8.4.4.1): INIT, 10 ms, SIPI, 200 us, SIPI. The AP runs the
 * trampoline (trampoline.S) into long mode on our page tables, picks a stack slot and calls
 * ap_main(), which publishes its APIC id.
 */
#include "smp.h"
#include "apic.h"
#include "io.h"
#include "layout.h"
#include "lib.h"
#include "timer.h"

#define AP_START_TIMEOUT_MS 1000
#define INIT_DELAY_US 10000
#define SIPI_DELAY_US 200
#define PAGE_SIZE 4096

extern const uint8_t ap_trampoline_start[], ap_trampoline_end[];
extern const uint8_t _start[], _end[];

/* Written by the APs. ap_next_slot is taken with lock xadd in trampoline.S. */
volatile uint32_t ap_next_slot;
static volatile uint32_t ap_reported_id[MAX_CPUS];
static volatile uint32_t ap_ready[MAX_CPUS];

void ap_main(uint32_t slot);
void (*volatile ap_task)(void);

void ap_main(uint32_t slot)
{
	void (*task)(void) = ap_task;

	ap_reported_id[slot] = lapic_id();
	__atomic_store_n(&ap_ready[slot], 1, __ATOMIC_RELEASE);
	if (task)
		task();
}

static bool e820_is_ram(const struct boot_info *boot, uint64_t start, uint64_t end)
{
	for (uint32_t i = 0; i < boot->e820_count; i++) {
		const struct e820_entry *e = &boot->e820[i];

		if (e->type == E820_RAM && e->addr <= start && end <= e->addr + e->size)
			return true;
	}
	return false;
}

bool smp_prepare_trampoline(const struct boot_info *boot, char *why, unsigned why_size)
{
	/* cppcheck-suppress comparePointers ; the linker puts both labels around one section */
	uint64_t size = (uint64_t)(ap_trampoline_end - ap_trampoline_start);

	if (size > PAGE_SIZE) {
		format(why, why_size, "trampoline is %lu bytes", size);
		return false;
	}
	if (!e820_is_ram(boot, TRAMPOLINE_PAGE, TRAMPOLINE_PAGE + PAGE_SIZE)) {
		format(why, why_size, "trampoline page 0x%x is not RAM in E820", TRAMPOLINE_PAGE);
		return false;
	}
	if (TRAMPOLINE_PAGE + PAGE_SIZE > (uint64_t)_start && TRAMPOLINE_PAGE < (uint64_t)_end) {
		format(why, why_size, "trampoline page 0x%x overlaps the image", TRAMPOLINE_PAGE);
		return false;
	}
	memcpy((void *)TRAMPOLINE_PAGE, ap_trampoline_start, size);
	return true;
}

struct ap_wait {
	uint32_t slot;
};

static bool ap_has_reported(void *arg)
{
	const struct ap_wait *w = arg;

	return __atomic_load_n(&ap_ready[w->slot], __ATOMIC_ACQUIRE) != 0;
}

static bool ap_has_started(void *arg)
{
	const struct ap_wait *w = arg;

	return ap_next_slot > w->slot;
}

bool smp_start_ap(uint32_t apic_id, uint32_t *reported_id)
{
	struct ap_wait w = { ap_next_slot };
	const uint32_t sipi = ICR_STARTUP | (TRAMPOLINE_PAGE >> 12);

	if (w.slot >= MAX_CPUS)
		return false;
	if (!lapic_send_ipi(apic_id, ICR_INIT | ICR_LEVEL_ASSERT))
		return false;
	delay_us(INIT_DELAY_US);
	if (!lapic_send_ipi(apic_id, sipi))
		return false;
	delay_us(SIPI_DELAY_US);
	/* The second SIPI is for CPUs that missed the first; one that started ignores it. */
	if (!ap_has_started(&w))
		lapic_send_ipi(apic_id, sipi);
	if (!wait_until(ap_has_reported, &w, AP_START_TIMEOUT_MS))
		return false;
	*reported_id = ap_reported_id[w.slot];
	return true;
}
