/* Interrupt delivery: the LAPIC timer, and an ISA device interrupt routed through the IOAPIC. */
#include "apic.h"
#include "check.h"
#include "console.h"
#include "interrupts.h"
#include "io.h"
#include "timer.h"

#define TIMER_MIN_INTERRUPTS 3
#define TIMER_TIMEOUT_MS 1000
/* Passes of a loop that only reads memory before the next tick must have come: ~300 k
 * passes of CPU time per tick on the software CPU, which looks at its timer every few
 * hundred blocks whatever the guest runs. */
#define TIMER_SPIN_MAX (1ull << 28)
#define UART_TIMEOUT_MS 500
#define COM1_IRQ 4

/* MPS INTI flags (ACPI §5.2.12.5) */
#define INTI_POLARITY_MASK 0x3
#define INTI_ACTIVE_LOW 0x3
#define INTI_TRIGGER_MASK 0xC
#define INTI_LEVEL 0xC

static bool ticks_reached(void *arg)
{
	return tick_count() >= *(const uint64_t *)arg;
}

/* The tick must also come into a loop with no port or MMIO access (nothing that leaves the
 * software CPU's compiled code): blocks that went on chaining into each other until something
 * else stopped them would keep the timer from ever being looked at. */
static void check_timer_in_spin(void)
{
	uint64_t before = tick_count(), spins = 0;

	while (tick_count() == before && ++spins < TIMER_SPIN_MAX)
		;
	if (tick_count() == before) {
		check_fail("lapic-timer-spin", "no tick in %llu passes of a memory-only loop",
			   (unsigned long long)spins);
		return;
	}
	check_ok("lapic-timer-spin");
}

void check_lapic_timer(struct selftest *t)
{
	uint64_t target = TIMER_MIN_INTERRUPTS;
	uint32_t per_tick;

	(void)t;
	per_tick = tick_start();
	if (per_tick == 0) {
		check_fail("lapic-timer", "the current count does not move");
		return;
	}
	irq_enable();
	/* Spins rather than halts: if no interrupt comes, hlt would never return. */
	if (!wait_until(ticks_reached, &target, TIMER_TIMEOUT_MS)) {
		check_fail("lapic-timer", "%lu interrupts in %u ms, expected at least %u",
			   tick_count(), TIMER_TIMEOUT_MS, TIMER_MIN_INTERRUPTS);
		tick_stop();
		return;
	}
	tick_set_working(true);
	check_note("lapic-timer: %u counts (bus clock / 16) per %u ms", per_tick, 1000 / TICK_HZ);
	check_ok("lapic-timer");
	check_timer_in_spin();
}

static volatile uint32_t uart_interrupts;

static void uart_interrupt(const struct interrupt_frame *frame)
{
	(void)frame;
	inb(COM1 + UART_IIR);         /* reading IIR acknowledges the THRE interrupt */
	outb(COM1 + UART_IER, 0);     /* one is enough: stop it from coming back */
	uart_interrupts++;
	lapic_eoi();
}

static bool uart_interrupted(void *arg)
{
	(void)arg;
	return uart_interrupts > 0;
}

/* Redirection-entry bits for an ISA IRQ: edge/high unless the MADT override says otherwise. */
static uint32_t ioapic_entry_for(uint16_t inti_flags)
{
	uint32_t low = VECTOR_UART;

	if ((inti_flags & INTI_POLARITY_MASK) == INTI_ACTIVE_LOW)
		low |= IOAPIC_ACTIVE_LOW;
	if ((inti_flags & INTI_TRIGGER_MASK) == INTI_LEVEL)
		low |= IOAPIC_LEVEL;
	return low;
}

void check_ioapic(struct selftest *t)
{
	uint64_t base = t->acpi.ioapic_address ? t->acpi.ioapic_address : IOAPIC_DEFAULT_BASE;
	uint32_t gsi, pin;
	uint16_t flags;

	acpi_isa_irq_route(&t->acpi, COM1_IRQ, &gsi, &flags);
	pin = gsi - t->acpi.ioapic_gsi_base;
	if (gsi < t->acpi.ioapic_gsi_base || pin >= ioapic_pin_count(base)) {
		check_fail("ioapic", "GSI %u for IRQ %u is not on the IOAPIC", gsi, COM1_IRQ);
		return;
	}
	interrupts_set_handler(VECTOR_UART, uart_interrupt);
	ioapic_route(base, pin, ioapic_entry_for(flags), t->bsp_apic_id);
	outb(COM1 + UART_MCR, 0x03 | UART_MCR_OUT2);
	inb(COM1 + UART_IIR);
	uart_interrupts = 0;
	/* THR is empty (we just polled it), so enabling the THRE interrupt raises IRQ 4 at once. */
	outb(COM1 + UART_IER, UART_IER_THRE);
	bool arrived = wait_until(uart_interrupted, 0, UART_TIMEOUT_MS);
	outb(COM1 + UART_IER, 0);
	ioapic_mask(base, pin);
	outb(COM1 + UART_MCR, 0x03);
	if (arrived)
		check_ok("ioapic");
	else
		check_fail("ioapic", "no interrupt on vector 0x%x from COM1 THRE via pin %u in %u ms",
			   VECTOR_UART, pin, UART_TIMEOUT_MS);
}
