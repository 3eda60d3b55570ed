/* MC146818 CMOS real-time clock at 0x70/0x71. The time is the host's (UTC) plus an offset the
 * guest sets by writing the time registers. Alarm and periodic interrupts are not generated. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "devices/devices.h"
#include "vm.h"

enum { RTC_SEC = 0, RTC_MIN = 2, RTC_HOUR = 4, RTC_WDAY = 6, RTC_MDAY = 7, RTC_MON = 8,
       RTC_YEAR = 9, RTC_REG_A = 0x0A, RTC_REG_B = 0x0B, RTC_REG_C = 0x0C, RTC_REG_D = 0x0D,
       RTC_CENTURY = 0x32 };
#define REG_B_SET 0x80
#define REG_B_BINARY 0x04
#define REG_B_24H 0x02
#define REG_D_VRT 0x80

struct rtc {
	pthread_mutex_t lock;
	uint8_t index;
	uint8_t cmos[128];
	int64_t offset; /* guest time minus host time, seconds */
};

static uint8_t rtc_encode(const struct rtc *r, unsigned v)
{
	return (r->cmos[RTC_REG_B] & REG_B_BINARY) ? (uint8_t)v : (uint8_t)((v / 10) << 4 | v % 10);
}

static unsigned rtc_decode(const struct rtc *r, uint8_t v)
{
	return (r->cmos[RTC_REG_B] & REG_B_BINARY) ? v : (v >> 4) * 10 + (v & 0xF);
}

static void rtc_now(const struct rtc *r, struct tm *tm)
{
	time_t t = time(NULL) + r->offset;
	gmtime_r(&t, tm);
}

static uint8_t rtc_hour(const struct rtc *r, int hour)
{
	if (r->cmos[RTC_REG_B] & REG_B_24H)
		return rtc_encode(r, (unsigned)hour);
	unsigned h12 = hour % 12 ? (unsigned)hour % 12 : 12;
	return (uint8_t)(rtc_encode(r, h12) | (hour >= 12 ? 0x80 : 0));
}

static uint8_t rtc_read_reg(struct rtc *r, unsigned reg)
{
	struct tm tm;
	rtc_now(r, &tm);
	switch (reg) {
	case RTC_SEC: return rtc_encode(r, (unsigned)tm.tm_sec % 60);
	case RTC_MIN: return rtc_encode(r, (unsigned)tm.tm_min);
	case RTC_HOUR: return rtc_hour(r, tm.tm_hour);
	case RTC_WDAY: return rtc_encode(r, (unsigned)tm.tm_wday + 1);
	case RTC_MDAY: return rtc_encode(r, (unsigned)tm.tm_mday);
	case RTC_MON: return rtc_encode(r, (unsigned)tm.tm_mon + 1);
	case RTC_YEAR: return rtc_encode(r, (unsigned)(tm.tm_year + 1900) % 100);
	case RTC_CENTURY: return rtc_encode(r, (unsigned)(tm.tm_year + 1900) / 100);
	case RTC_REG_A: return r->cmos[RTC_REG_A] & 0x7F; /* UIP never set: reads are atomic here */
	case RTC_REG_C: return 0; /* no interrupt flags: interrupts are not generated */
	case RTC_REG_D: return REG_D_VRT; /* battery good */
	default: return r->cmos[reg];
	}
}

/* A guest write to a time field moves the offset so that field reads back as written. */
static void rtc_write_time(struct rtc *r, unsigned reg, uint8_t v)
{
	struct tm tm;
	rtc_now(r, &tm);
	unsigned value = rtc_decode(r, reg == RTC_HOUR ? (uint8_t)(v & 0x7F) : v);
	switch (reg) {
	case RTC_SEC: tm.tm_sec = (int)value; break;
	case RTC_MIN: tm.tm_min = (int)value; break;
	case RTC_HOUR:
		tm.tm_hour = (int)value;
		if (!(r->cmos[RTC_REG_B] & REG_B_24H))
			tm.tm_hour = (int)(value % 12) + ((v & 0x80) ? 12 : 0);
		break;
	case RTC_MDAY: tm.tm_mday = (int)value; break;
	case RTC_MON: tm.tm_mon = (int)value - 1; break;
	case RTC_YEAR: tm.tm_year = (tm.tm_year + 1900) / 100 * 100 + (int)value - 1900; break;
	case RTC_CENTURY: tm.tm_year = (int)value * 100 + (tm.tm_year + 1900) % 100 - 1900; break;
	default: return;
	}
	time_t t = timegm(&tm);
	if (t != (time_t)-1)
		r->offset = (int64_t)(t - time(NULL));
}

static void rtc_write_reg(struct rtc *r, unsigned reg, uint8_t v)
{
	switch (reg) {
	case RTC_SEC: case RTC_MIN: case RTC_HOUR: case RTC_MDAY: case RTC_MON: case RTC_YEAR:
	case RTC_CENTURY:
		rtc_write_time(r, reg, v);
		break;
	case RTC_WDAY: case RTC_REG_C: case RTC_REG_D:
		break; /* derived or read-only */
	default:
		r->cmos[reg] = v;
	}
}

static void rtc_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct rtc *r = owner;
	uint8_t *b = data;
	if (size != 1) { /* the chip is byte-wide: wider accesses are ignored / read as ones */
		if (!is_write)
			memset(data, 0xFF, size);
		return;
	}
	pthread_mutex_lock(&r->lock);
	if (offset == 0) {
		if (is_write)
			r->index = b[0] & 0x7F; /* bit 7 is the NMI mask */
		else
			b[0] = r->index;
	} else if (is_write) {
		rtc_write_reg(r, r->index, b[0]);
	} else {
		b[0] = rtc_read_reg(r, r->index);
	}
	pthread_mutex_unlock(&r->lock);
}

void *rtc_create(struct vm *vm)
{
	struct rtc *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	pthread_mutex_init(&r->lock, NULL);
	r->cmos[RTC_REG_A] = 0x26; /* 32.768 kHz time base, 1024 Hz rate */
	r->cmos[RTC_REG_B] = REG_B_24H;
	if (bus_register(&vm->pio, 0x70, 2, r, rtc_io, "rtc") < 0) {
		free(r);
		return NULL;
	}
	return r;
}
