/* Local APIC and IOAPIC register access. Both are MMIO in the uncached top GiB. */
#include "apic.h"
#include "io.h"
#include "layout.h"

#define MSR_APIC_BASE 0x1B
#define APIC_BASE_MASK 0xFFFFFF000ull

#define LAPIC_ID 0x020
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0B0
#define LAPIC_SVR 0x0F0
#define LAPIC_ESR 0x280
#define LAPIC_ICR_LOW 0x300
#define LAPIC_ICR_HIGH 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_TIMER_INITIAL 0x380
#define LAPIC_TIMER_CURRENT 0x390
#define LAPIC_TIMER_DIVIDE 0x3E0

#define SVR_APIC_ENABLE 0x100
#define ICR_DELIVERY_PENDING (1u << 12)
#define LVT_MASKED (1u << 16)
#define LVT_TIMER_PERIODIC (1u << 17)
#define TIMER_DIVIDE_BY_16 0x3
#define ICR_POLL_LIMIT 100000

#define IOAPIC_REGSEL 0x00
#define IOAPIC_WINDOW 0x10
#define IOAPIC_VERSION 0x01
#define IOAPIC_REDIRECTION(pin) (0x10 + 2 * (pin))

/* Cached: every CPU has the same base, and an MSR read is a VM exit. */
static uint64_t lapic_mmio;

uint64_t lapic_base(void)
{
	if (!lapic_mmio)
		lapic_mmio = rdmsr(MSR_APIC_BASE) & APIC_BASE_MASK;
	return lapic_mmio;
}

static uint32_t lapic_read(uint32_t reg)
{
	return mmio_read32(lapic_base() + reg);
}

static void lapic_write(uint32_t reg, uint32_t value)
{
	mmio_write32(lapic_base() + reg, value);
}

void lapic_enable(void)
{
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_SVR, SVR_APIC_ENABLE | VECTOR_SPURIOUS);
}

uint32_t lapic_id(void)
{
	return lapic_read(LAPIC_ID) >> 24;
}

void lapic_eoi(void)
{
	lapic_write(LAPIC_EOI, 0);
}

void lapic_timer_start(uint8_t vector, uint32_t count, bool periodic)
{
	lapic_write(LAPIC_TIMER_DIVIDE, TIMER_DIVIDE_BY_16);
	lapic_write(LAPIC_LVT_TIMER, vector | (periodic ? LVT_TIMER_PERIODIC : 0));
	lapic_write(LAPIC_TIMER_INITIAL, count);
}

void lapic_timer_stop(void)
{
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
	lapic_write(LAPIC_TIMER_INITIAL, 0);
}

uint32_t lapic_timer_current(void)
{
	return lapic_read(LAPIC_TIMER_CURRENT);
}

bool lapic_send_ipi(uint32_t apic_id, uint32_t command)
{
	lapic_write(LAPIC_ESR, 0);
	lapic_write(LAPIC_ICR_HIGH, apic_id << 24);
	lapic_write(LAPIC_ICR_LOW, command);
	for (int i = 0; i < ICR_POLL_LIMIT; i++)
		if (!(lapic_read(LAPIC_ICR_LOW) & ICR_DELIVERY_PENDING))
			return true;
	return false;
}

static uint32_t ioapic_read(uint64_t base, uint32_t reg)
{
	mmio_write32(base + IOAPIC_REGSEL, reg);
	return mmio_read32(base + IOAPIC_WINDOW);
}

static void ioapic_write(uint64_t base, uint32_t reg, uint32_t value)
{
	mmio_write32(base + IOAPIC_REGSEL, reg);
	mmio_write32(base + IOAPIC_WINDOW, value);
}

uint32_t ioapic_pin_count(uint64_t base)
{
	return ((ioapic_read(base, IOAPIC_VERSION) >> 16) & 0xFF) + 1;
}

void ioapic_route(uint64_t base, uint32_t pin, uint32_t low, uint32_t dest_apic_id)
{
	/* Mask first, so the entry is never live half-written. */
	ioapic_write(base, IOAPIC_REDIRECTION(pin), IOAPIC_MASKED);
	ioapic_write(base, IOAPIC_REDIRECTION(pin) + 1, dest_apic_id << 24);
	ioapic_write(base, IOAPIC_REDIRECTION(pin), low);
}

void ioapic_mask(uint64_t base, uint32_t pin)
{
	ioapic_write(base, IOAPIC_REDIRECTION(pin), IOAPIC_MASKED);
}
