/* PM timer, LAPIC tick and bounded waits. */
#include "timer.h"
#include "apic.h"
#include "interrupts.h"
#include "io.h"
#include "layout.h"

/* Used when the PM timer cannot calibrate: a guess that keeps the tick in a sane range. */
#define LAPIC_COUNT_GUESS 100000u
#define CALIBRATION_US 10000u
/*
 * Safety net for a clock that was verified but then stops: polls allowed per millisecond.
 * Generous, since a poll can take anything from nanoseconds (TCG) to microseconds (VM exit).
 */
#define BUSY_POLLS_PER_MS 1000000u
#define HALT_POLLS_PER_MS 10u

static uint16_t pm_port;
static uint32_t pm_mask = 0xFFFFFF;
static bool pm_working;
static volatile uint64_t ticks;
static bool tick_working;

void pmtimer_setup(uint16_t port, bool bits32)
{
	pm_port = port;
	pm_mask = bits32 ? 0xFFFFFFFF : 0xFFFFFF;
}

bool pmtimer_present(void)
{
	return pm_port != 0;
}

uint32_t pmtimer_read(void)
{
	return pm_port ? inl(pm_port) & pm_mask : 0;
}

uint32_t pmtimer_mask(void)
{
	return pm_mask;
}

void pmtimer_set_working(bool working)
{
	pm_working = working;
}

/* Elapsed time since start, from the best clock we have. */
struct stopwatch {
	uint32_t last_pm;
	uint64_t pm_elapsed;
	uint64_t start_ticks;
	uint64_t polls;
};

static void stopwatch_start(struct stopwatch *w)
{
	w->last_pm = pmtimer_read();
	w->pm_elapsed = 0;
	w->start_ticks = tick_count();
	w->polls = 0;
}

static uint64_t stopwatch_us(struct stopwatch *w)
{
	w->polls++;
	if (pm_working) {
		uint32_t now = pmtimer_read();

		w->pm_elapsed += (now - w->last_pm) & pm_mask;
		w->last_pm = now;
		return w->pm_elapsed * 1000000 / PM_TIMER_HZ;
	}
	if (tick_working)
		return (tick_count() - w->start_ticks) * (1000000 / TICK_HZ);
	return w->polls; /* no clock: pretend each poll is a microsecond */
}

void delay_us(uint32_t us)
{
	struct stopwatch w;

	stopwatch_start(&w);
	while (stopwatch_us(&w) < us && w.polls < ((uint64_t)us / 1000 + 1) * BUSY_POLLS_PER_MS)
		cpu_relax();
}

bool wait_until(bool (*done)(void *arg), void *arg, uint32_t timeout_ms)
{
	uint64_t max_polls = (uint64_t)timeout_ms *
			     (tick_working ? HALT_POLLS_PER_MS : BUSY_POLLS_PER_MS) + 100;
	struct stopwatch w;

	stopwatch_start(&w);
	while (!done(arg)) {
		if (stopwatch_us(&w) >= (uint64_t)timeout_ms * 1000 || w.polls > max_polls)
			return done(arg);
		if (tick_working)
			cpu_wait_for_interrupt();
		else
			cpu_relax();
	}
	return true;
}

static void tick_interrupt(const struct interrupt_frame *frame)
{
	(void)frame;
	ticks++;
	lapic_eoi();
}

static uint32_t tick_calibrate(void)
{
	if (!pm_working)
		return LAPIC_COUNT_GUESS;
	lapic_timer_start(VECTOR_TIMER, 0xFFFFFFFF, false);
	delay_us(CALIBRATION_US);
	uint32_t elapsed = 0xFFFFFFFF - lapic_timer_current();
	lapic_timer_stop();
	return elapsed;
}

uint32_t tick_start(void)
{
	uint32_t per_tick;

	interrupts_set_handler(VECTOR_TIMER, tick_interrupt);
	lapic_enable();
	per_tick = tick_calibrate() * (1000000 / CALIBRATION_US) / TICK_HZ;
	if (per_tick == 0)
		return 0;
	lapic_timer_start(VECTOR_TIMER, per_tick, true);
	return per_tick;
}

void tick_stop(void)
{
	lapic_timer_stop();
	tick_working = false;
}

uint64_t tick_count(void)
{
	return ticks;
}

void tick_set_working(bool working)
{
	tick_working = working;
}
