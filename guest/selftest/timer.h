/*
 * Time: the ACPI PM timer (3.579545 MHz) measures, the LAPIC timer ticks at 100 Hz so waits can
 * halt instead of spin. Every wait is bounded even if neither works.
 */
#ifndef SELFTEST_TIMER_H
#define SELFTEST_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#define PM_TIMER_HZ 3579545u
#define TICK_HZ 100u

void pmtimer_setup(uint16_t port, bool bits32);
bool pmtimer_present(void);
uint32_t pmtimer_read(void);
uint32_t pmtimer_mask(void);
/* Marks the PM timer as verified; until then waits do not trust it. */
void pmtimer_set_working(bool working);

/* Spins for about `us` microseconds. */
void delay_us(uint32_t us);

/* Calibrates the LAPIC timer against the PM timer (10 ms) and starts the 100 Hz tick.
 * Returns the LAPIC count per tick, 0 if the LAPIC timer does not count down. */
uint32_t tick_start(void);
void tick_stop(void);
uint64_t tick_count(void);
/* Marks the tick as verified: from now on waits halt between polls. */
void tick_set_working(bool working);

/* Polls done(arg) until it returns true or timeout_ms passes; returns its last answer. */
bool wait_until(bool (*done)(void *arg), void *arg, uint32_t timeout_ms);

#endif
