/* The software CPU's I/O APIC: see ioapic.h. */
#include "cpu/emu/ioapic.h"

#include <errno.h>
#include <string.h>

/* Guest-writable bits of a redirection entry: vector, delivery mode, destination mode,
 * polarity, trigger mode, mask, destination. */
#define REDIR_WRITABLE (0xffull | (7ull << 8) | IOAPIC_REDIR_DEST_LOGICAL |                  \
			IOAPIC_REDIR_ACTIVE_LOW | IOAPIC_REDIR_LEVEL | IOAPIC_REDIR_MASKED |      \
			(0xffull << 56))

static struct apic_message redir_message(uint64_t e)
{
	return (struct apic_message){
		.dest = (uint32_t)(e >> 56),
		.vector = e & 0xff,
		.delivery_mode = (e >> 8) & 7,
		.dest_logical = e & IOAPIC_REDIR_DEST_LOGICAL,
		.level_trigger = e & IOAPIC_REDIR_LEVEL,
		.assert = true,
	};
}

/* Send pin's message if its state asks for one. `edge` says a rising edge just happened. */
static void service_locked(struct ioapic *io, unsigned pin, bool edge)
{
	uint64_t e = io->redir[pin];
	struct apic_message msg;
	int accepted;

	if ((e & IOAPIC_REDIR_MASKED) || !(io->line & (1u << pin)))
		return;
	if (e & IOAPIC_REDIR_LEVEL) {
		if (e & IOAPIC_REDIR_REMOTE_IRR)
			return; /* the LAPIC has not EOIed the previous one */
	} else if (!edge) {
		return;
	}
	msg = redir_message(e);
	accepted = io->ops->deliver(io->opaque, &msg);
	io->stat_delivered[pin]++;
	if ((e & IOAPIC_REDIR_LEVEL) && accepted > 0 &&
	    (msg.delivery_mode == APIC_DM_FIXED || msg.delivery_mode == APIC_DM_LOWEST))
		io->redir[pin] |= IOAPIC_REDIR_REMOTE_IRR;
}

static void reset_locked(struct ioapic *io)
{
	io->regsel = 0;
	io->line = 0;
	for (unsigned i = 0; i < IOAPIC_NR_PINS; i++)
		io->redir[i] = IOAPIC_REDIR_MASKED;
}

int ioapic_init(struct ioapic *ioapic, uint8_t id, uint8_t version, const struct ioapic_ops *ops,
		void *opaque)
{
	int rc;

	if (version != 0x11 && version != 0x20)
		return -EINVAL;
	memset(ioapic, 0, sizeof(*ioapic));
	if ((rc = pthread_mutex_init(&ioapic->lock, NULL)))
		return -rc;
	ioapic->ops = ops;
	ioapic->opaque = opaque;
	ioapic->id = id & 0xf;
	ioapic->version = version;
	reset_locked(ioapic);
	return 0;
}

void ioapic_destroy(struct ioapic *ioapic)
{
	pthread_mutex_destroy(&ioapic->lock);
}

void ioapic_reset(struct ioapic *ioapic)
{
	pthread_mutex_lock(&ioapic->lock);
	reset_locked(ioapic);
	pthread_mutex_unlock(&ioapic->lock);
}

static uint32_t reg_read_locked(struct ioapic *io, uint8_t reg)
{
	switch (reg) {
	case IOAPIC_REG_ID:
	case IOAPIC_REG_ARB: /* the arbitration id is loaded from the ID */
		return (uint32_t)io->id << 24;
	case IOAPIC_REG_VERSION:
		return io->version | (IOAPIC_NR_PINS - 1) << 16;
	}
	if (reg >= IOAPIC_REG_REDIR && reg < IOAPIC_REG_REDIR + 2 * IOAPIC_NR_PINS) {
		uint64_t e = io->redir[(reg - IOAPIC_REG_REDIR) / 2];

		return (reg & 1) ? (uint32_t)(e >> 32) : (uint32_t)e;
	}
	return 0;
}

static void reg_write_locked(struct ioapic *io, uint8_t reg, uint32_t value)
{
	if (reg == IOAPIC_REG_ID) {
		io->id = (value >> 24) & 0xf;
		return;
	}
	if (reg < IOAPIC_REG_REDIR || reg >= IOAPIC_REG_REDIR + 2 * IOAPIC_NR_PINS)
		return; /* version, arbitration: read-only */
	unsigned pin = (reg - IOAPIC_REG_REDIR) / 2;
	uint64_t old = io->redir[pin], e;

	if (reg & 1)
		e = (old & 0xffffffffull) | (uint64_t)value << 32;
	else
		e = (old & ~0xffffffffull) | value;
	e = (e & REDIR_WRITABLE) | (old & IOAPIC_REDIR_REMOTE_IRR);
	if (!(e & IOAPIC_REDIR_LEVEL))
		e &= ~IOAPIC_REDIR_REMOTE_IRR;
	io->redir[pin] = e;
	/* An asserted level-triggered line that became deliverable (unmasked) goes out now. */
	if ((e & IOAPIC_REDIR_LEVEL) && (old & IOAPIC_REDIR_MASKED) && !(e & IOAPIC_REDIR_MASKED))
		service_locked(io, pin, false);
}

static void eoi_locked(struct ioapic *io, uint8_t vector)
{
	for (unsigned pin = 0; pin < IOAPIC_NR_PINS; pin++) {
		uint64_t e = io->redir[pin];

		if ((e & 0xff) != vector || !(e & IOAPIC_REDIR_LEVEL) ||
		    !(e & IOAPIC_REDIR_REMOTE_IRR))
			continue;
		io->redir[pin] &= ~IOAPIC_REDIR_REMOTE_IRR;
		service_locked(io, pin, false); /* still asserted: deliver again */
	}
}

/* The 32-bit register the access falls in, as a value; unknown offsets are 0. */
static uint32_t mmio_reg_read_locked(struct ioapic *io, uint32_t reg_offset)
{
	switch (reg_offset) {
	case IOAPIC_REGSEL: return io->regsel;
	case IOAPIC_WINDOW: return reg_read_locked(io, io->regsel);
	default: return 0; /* including the write-only EOI register */
	}
}

void ioapic_mmio_read(struct ioapic *ioapic, uint32_t offset, void *data, unsigned len)
{
	uint32_t value;
	unsigned byte = offset & 3;

	pthread_mutex_lock(&ioapic->lock);
	value = mmio_reg_read_locked(ioapic, offset & ~3u);
	pthread_mutex_unlock(&ioapic->lock);
	memset(data, 0, len);
	if (len > 4 - byte)
		len = 4 - byte;
	memcpy(data, (uint8_t *)&value + byte, len);
}

void ioapic_mmio_write(struct ioapic *ioapic, uint32_t offset, const void *data, unsigned len)
{
	uint32_t reg_offset = offset & ~3u, value;
	unsigned byte = offset & 3;

	pthread_mutex_lock(&ioapic->lock);
	/* A narrow write changes only its bytes of the 32-bit register. */
	value = mmio_reg_read_locked(ioapic, reg_offset);
	if (len > 4 - byte)
		len = 4 - byte;
	memcpy((uint8_t *)&value + byte, data, len);
	switch (reg_offset) {
	case IOAPIC_REGSEL:
		ioapic->regsel = (uint8_t)value;
		break;
	case IOAPIC_WINDOW:
		reg_write_locked(ioapic, ioapic->regsel, value);
		break;
	case IOAPIC_EOI:
		if (ioapic->version >= 0x20)
			eoi_locked(ioapic, (uint8_t)value);
		break;
	}
	pthread_mutex_unlock(&ioapic->lock);
}

int ioapic_set_irq(struct ioapic *ioapic, unsigned pin, bool level)
{
	bool rising;

	if (pin >= IOAPIC_NR_PINS)
		return -EINVAL;
	pthread_mutex_lock(&ioapic->lock);
	rising = level && !(ioapic->line & (1u << pin));
	if (level)
		ioapic->line |= 1u << pin;
	else
		ioapic->line &= ~(1u << pin);
	service_locked(ioapic, pin, rising);
	pthread_mutex_unlock(&ioapic->lock);
	return 0;
}

void ioapic_eoi(struct ioapic *ioapic, uint8_t vector)
{
	pthread_mutex_lock(&ioapic->lock);
	eoi_locked(ioapic, vector);
	pthread_mutex_unlock(&ioapic->lock);
}

uint64_t ioapic_get_redirection(struct ioapic *ioapic, unsigned pin)
{
	uint64_t e = 0;

	if (pin >= IOAPIC_NR_PINS)
		return 0;
	pthread_mutex_lock(&ioapic->lock);
	e = ioapic->redir[pin];
	pthread_mutex_unlock(&ioapic->lock);
	return e;
}
