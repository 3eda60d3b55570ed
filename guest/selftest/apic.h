/* Local APIC (xAPIC MMIO) and IOAPIC access (Intel SDM vol. 3 ch. 11; 82093AA datasheet). */
#ifndef SELFTEST_APIC_H
#define SELFTEST_APIC_H

#include <stdbool.h>
#include <stdint.h>

#define LAPIC_DEFAULT_BASE 0xFEE00000ull
#define IOAPIC_DEFAULT_BASE 0xFEC00000ull

/* ICR low-word commands */
#define ICR_INIT 0x00000500
#define ICR_STARTUP 0x00000600
#define ICR_LEVEL_ASSERT 0x00004000

/* IOAPIC redirection entry bits */
#define IOAPIC_ACTIVE_LOW (1u << 13)
#define IOAPIC_LEVEL (1u << 15)
#define IOAPIC_MASKED (1u << 16)

uint64_t lapic_base(void);
void lapic_enable(void);
uint32_t lapic_id(void);
void lapic_eoi(void);
void lapic_timer_start(uint8_t vector, uint32_t count, bool periodic);
void lapic_timer_stop(void);
uint32_t lapic_timer_current(void);
/* Sends an IPI and waits (bounded) for the APIC to accept it; false if it never did. */
bool lapic_send_ipi(uint32_t apic_id, uint32_t command);

uint32_t ioapic_pin_count(uint64_t base);
void ioapic_route(uint64_t base, uint32_t pin, uint32_t low, uint32_t dest_apic_id);
void ioapic_mask(uint64_t base, uint32_t pin);

#endif
