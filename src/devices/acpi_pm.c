/* ACPI fixed hardware (ACPI 6.5 §4.8): the PM1a event and control blocks, the PM timer and the
 * reset register, at the ports the FADT names (acpi/acpi.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acpi/acpi.h"
#include "devices/devices.h"
#include "vm.h"

#define PM1_TMR_STS (1u << 0)
#define PM1_PWRBTN (1u << 8)
#define PM1_WAK_STS (1u << 15)
#define PM1_CNT_SCI_EN (1u << 0)
#define PM1_CNT_SLP_EN (1u << 13)
#define PM1_CNT_SLP_TYP(v) (((v) >> 10) & 7)
#define PM_TIMER_HZ 3579545ull

struct acpi_pm {
	struct vm *vm;
	pthread_mutex_t lock; /* guards sts, en, cnt, sci_level */
	uint16_t sts, en, cnt;
	bool sci_level;
};

static void acpi_pm_update_sci(struct acpi_pm *pm)
{
	bool level = (pm->sts & pm->en) != 0;
	if (level != pm->sci_level) {
		pm->sci_level = level;
		vm_irq_line(pm->vm, ACPI_SCI_IRQ, level);
	}
}

/* Read `size` bytes at `offset` of a little-endian register file value. */
static void acpi_pm_read_bytes(uint64_t value, uint64_t offset, void *data, unsigned size)
{
	uint8_t *b = data;
	for (unsigned i = 0; i < size; i++)
		b[i] = offset + i < 8 ? (uint8_t)(value >> (8 * (offset + i))) : 0xFF;
}

static void acpi_pm_event_io(void *owner, uint64_t offset, void *data, unsigned size,
			     bool is_write)
{
	struct acpi_pm *pm = owner;
	pthread_mutex_lock(&pm->lock);
	if (!is_write) {
		acpi_pm_read_bytes(pm->sts | (uint32_t)pm->en << 16, offset, data, size);
	} else {
		const uint8_t *b = data;
		for (unsigned i = 0; i < size && offset + i < 4; i++) {
			unsigned at = (unsigned)offset + i, shift = 8 * (at & 1);
			if (at < 2)
				pm->sts &= (uint16_t)~(b[i] << shift); /* write 1 to clear */
			else
				pm->en = (uint16_t)((pm->en & ~(0xFF << shift)) | b[i] << shift);
		}
		acpi_pm_update_sci(pm);
	}
	pthread_mutex_unlock(&pm->lock);
}

static void acpi_pm_control_io(void *owner, uint64_t offset, void *data, unsigned size,
			       bool is_write)
{
	struct acpi_pm *pm = owner;
	pthread_mutex_lock(&pm->lock);
	if (!is_write) {
		acpi_pm_read_bytes(pm->cnt | PM1_CNT_SCI_EN, offset, data, size);
		pthread_mutex_unlock(&pm->lock);
		return;
	}
	const uint8_t *b = data;
	for (unsigned i = 0; i < size && offset + i < 2; i++) {
		unsigned shift = 8 * (unsigned)(offset + i);
		pm->cnt = (uint16_t)((pm->cnt & ~(0xFF << shift)) | b[i] << shift);
	}
	uint16_t cnt = pm->cnt;
	pm->cnt &= (uint16_t)~PM1_CNT_SLP_EN; /* SLP_EN is write-only */
	pthread_mutex_unlock(&pm->lock);
	if ((cnt & PM1_CNT_SLP_EN) && PM1_CNT_SLP_TYP(cnt) == ACPI_S5_TYPE)
		vm_request_stop(pm->vm, VM_STATUS_POWEROFF);
}

/* 24-bit free-running counter at 3.579545 MHz, from the host's monotonic clock. */
static void acpi_pm_timer_io(void *owner, uint64_t offset, void *data, unsigned size,
			     bool is_write)
{
	(void)owner;
	if (is_write)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	unsigned __int128 ns = (unsigned __int128)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	uint64_t ticks = (uint64_t)(ns * PM_TIMER_HZ / 1000000000ull) & 0xFFFFFF;
	acpi_pm_read_bytes(ticks, offset, data, size);
}

static void acpi_pm_reset_io(void *owner, uint64_t offset, void *data, unsigned size,
			     bool is_write)
{
	struct acpi_pm *pm = owner;
	(void)offset;
	if (!is_write) {
		memset(data, 0, size);
		return;
	}
	if (*(uint8_t *)data & 0x04) /* bit 2: perform the reset chosen by bit 1 */
		vm_request_stop(pm->vm, VM_STATUS_REBOOT);
}

void acpi_pm_power_button(struct acpi_pm *pm)
{
	pthread_mutex_lock(&pm->lock);
	pm->sts |= PM1_PWRBTN;
	acpi_pm_update_sci(pm);
	pthread_mutex_unlock(&pm->lock);
}

struct acpi_pm *acpi_pm_create(struct vm *vm)
{
	struct acpi_pm *pm = calloc(1, sizeof(*pm));
	if (!pm)
		return NULL;
	pm->vm = vm;
	pthread_mutex_init(&pm->lock, NULL);
	if (bus_register(&vm->pio, ACPI_PM1_EVT_PORT, 4, pm, acpi_pm_event_io, "acpi-pm1-event") < 0 ||
	    bus_register(&vm->pio, ACPI_PM1_CNT_PORT, 2, pm, acpi_pm_control_io, "acpi-pm1-control") < 0 ||
	    bus_register(&vm->pio, ACPI_PM_TMR_PORT, 4, pm, acpi_pm_timer_io, "acpi-pm-timer") < 0 ||
	    bus_register(&vm->pio, ACPI_RESET_PORT, 1, pm, acpi_pm_reset_io, "acpi-reset") < 0) {
		acpi_pm_destroy(pm);
		return NULL;
	}
	return pm;
}

void acpi_pm_destroy(struct acpi_pm *pm)
{
	if (!pm)
		return;
	pthread_mutex_destroy(&pm->lock);
	free(pm);
}
