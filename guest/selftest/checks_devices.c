/* Device checks: the UART's registers, the ACPI PM timer and the CMOS real-time clock. */
#include "check.h"
#include "console.h"
#include "io.h"
#include "lib.h"
#include "timer.h"

#define UART_POLL_LIMIT 100000
#define PMTIMER_POLL_LIMIT 1000000

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define CMOS_NMI_DISABLE 0x80
#define RTC_SECONDS 0x00
#define RTC_MINUTES 0x02
#define RTC_HOURS 0x04
#define RTC_DAY 0x07
#define RTC_MONTH 0x08
#define RTC_YEAR 0x09
#define RTC_STATUS_A 0x0A
#define RTC_STATUS_B 0x0B
#define RTC_A_UPDATE_IN_PROGRESS 0x80
#define RTC_B_BINARY 0x04
#define RTC_B_24HOUR 0x02
#define RTC_HOUR_PM 0x80
#define RTC_POLL_LIMIT 100000
#define RTC_READ_TRIES 5
#define RTC_ADVANCE_TIMEOUT_MS 2500

void check_uart(struct selftest *t)
{
	uint8_t lsr = 0;

	(void)t;
	outb(COM1 + UART_SCR, 0x5A);
	uint8_t first = inb(COM1 + UART_SCR);
	outb(COM1 + UART_SCR, 0xA5);
	uint8_t second = inb(COM1 + UART_SCR);
	if (first != 0x5A || second != 0xA5) {
		check_fail("uart", "scratch register read back 0x%x/0x%x", first, second);
		return;
	}
	for (int i = 0; i < UART_POLL_LIMIT; i++) {
		lsr = inb(COM1 + UART_LSR);
		if ((lsr & (UART_LSR_THRE | UART_LSR_TEMT)) == (UART_LSR_THRE | UART_LSR_TEMT))
			break;
	}
	if (lsr == 0xFF)
		check_fail("uart", "LSR reads 0xFF");
	else if (!(lsr & UART_LSR_THRE) || !(lsr & UART_LSR_TEMT))
		check_fail("uart", "transmitter never empties (LSR 0x%x)", lsr);
	else
		check_ok("uart");
}

void check_pmtimer(struct selftest *t)
{
	(void)t;
	if (!pmtimer_present()) {
		check_fail("pmtimer", "the FADT has no 4-byte PM timer block");
		return;
	}
	uint32_t first = pmtimer_read(), now = first;
	for (int i = 0; i < PMTIMER_POLL_LIMIT && now == first; i++)
		now = pmtimer_read();
	if (now == first) {
		check_fail("pmtimer", "stuck at 0x%x", first);
		return;
	}
	pmtimer_set_working(true);
	check_ok("pmtimer");
}

struct rtc_time {
	uint8_t second, minute, hour, day, month, year;
};

static uint8_t cmos_read(uint8_t reg)
{
	outb(CMOS_INDEX, CMOS_NMI_DISABLE | reg);
	return inb(CMOS_DATA);
}

static uint8_t rtc_decode(uint8_t raw, bool binary)
{
	return binary ? raw : (uint8_t)((raw >> 4) * 10 + (raw & 0x0F));
}

static void rtc_read_raw(struct rtc_time *r)
{
	for (int i = 0; i < RTC_POLL_LIMIT; i++)
		if (!(cmos_read(RTC_STATUS_A) & RTC_A_UPDATE_IN_PROGRESS))
			break;
	r->second = cmos_read(RTC_SECONDS);
	r->minute = cmos_read(RTC_MINUTES);
	r->hour = cmos_read(RTC_HOURS);
	r->day = cmos_read(RTC_DAY);
	r->month = cmos_read(RTC_MONTH);
	r->year = cmos_read(RTC_YEAR);
}

/* Reads until two consecutive reads agree, so an update between registers cannot tear it. */
static void rtc_read(struct rtc_time *r)
{
	struct rtc_time again;
	uint8_t status_b = cmos_read(RTC_STATUS_B);
	bool binary = status_b & RTC_B_BINARY;

	rtc_read_raw(r);
	for (int i = 0; i < RTC_READ_TRIES; i++) {
		rtc_read_raw(&again);
		if (!memcmp(r, &again, sizeof(again)))
			break;
		*r = again;
	}
	bool pm = !(status_b & RTC_B_24HOUR) && (r->hour & RTC_HOUR_PM);
	r->hour = rtc_decode(r->hour & (uint8_t)~RTC_HOUR_PM, binary);
	if (!(status_b & RTC_B_24HOUR))
		r->hour = (uint8_t)(r->hour % 12 + (pm ? 12 : 0));
	r->second = rtc_decode(r->second, binary);
	r->minute = rtc_decode(r->minute, binary);
	r->day = rtc_decode(r->day, binary);
	r->month = rtc_decode(r->month, binary);
	r->year = rtc_decode(r->year, binary);
}

static bool rtc_second_changed(void *arg)
{
	struct rtc_time now;

	rtc_read(&now);
	return now.second != *(const uint8_t *)arg;
}

void check_rtc(struct selftest *t)
{
	struct rtc_time r;

	rtc_read(&r);
	check_note("rtc: 20%02u-%02u-%02u %02u:%02u:%02u", r.year, r.month, r.day, r.hour,
		   r.minute, r.second);
	if (r.second > 59 || r.minute > 59 || r.hour > 23 || r.day < 1 || r.day > 31 ||
	    r.month < 1 || r.month > 12 || r.year > 99) {
		check_fail("rtc", "time out of range");
		return;
	}
	if (!t->args.quick && !wait_until(rtc_second_changed, &r.second, RTC_ADVANCE_TIMEOUT_MS)) {
		check_fail("rtc", "seconds did not advance in %u ms", RTC_ADVANCE_TIMEOUT_MS);
		return;
	}
	check_ok("rtc");
}
