/* The software CPU's I/O APIC (Intel 82093AA datasheet; version 0x20 adds the EOI register).
 *
 * The guest sees it at 0xFEC00000 (docs/platform.md): IOREGSEL at 0x00 selects a register, IOWIN
 * at 0x10 reads or writes it, and (version 0x20) a write of a vector to the EOI register at 0x40
 * ends a level-triggered interrupt as a LAPIC EOI broadcast would. Registers: 0x00 ID (bits
 * 27:24), 0x01 version (bits 7:0 version, 23:16 maximum redirection entry = 23), 0x02
 * arbitration id (read-only, = ID), 0x10 + 2n / 0x11 + 2n the low/high halves of redirection
 * entry n.
 *
 * Redirection entry: vector 7:0, delivery mode 10:8 (fixed, lowest priority, SMI, NMI, INIT,
 * ExtINT), destination mode 11, delivery status 12 (read-only, always 0 here: a message is
 * delivered at once), polarity 13, remote IRR 14 (read-only), trigger mode 15 (level = 1),
 * mask 16, destination 63:56. Entries reset masked.
 *
 * Pins (ioapic_set_irq): `level` is whether the device asserts the line; the polarity bit is
 * stored and read back but not applied (devices report assertion, not voltage, as with KVM's
 * KVM_IRQ_LINE). Edge-triggered: a rising edge on an unmasked pin sends one message; an edge on a
 * masked pin is lost (datasheet: "not delivered or held pending"). Level-triggered: while the
 * line is asserted, unmasked and remote IRR is clear, a message is sent and remote IRR set (when
 * a LAPIC accepted it, fixed/lowest-priority modes); the LAPIC's EOI for that vector
 * (ioapic_eoi) clears remote IRR and, if the line is still asserted, sends it again. Unmasking
 * an asserted level pin sends it. Changing an entry to edge-triggered clears its remote IRR.
 *
 * Every message goes out through ops->deliver as a struct apic_message with an 8-bit
 * destination (the integrator routes it with apic_bus_deliver()).
 *
 * Thread safety: one mutex (`lock`) taken by every function; ioapic_set_irq() is called from
 * device threads, the MMIO functions from vCPU threads, ioapic_eoi() from the vCPU thread that
 * ran the EOI. ops->deliver is called with the lock held, so that remote IRR and the delivery
 * stay one step: it may take LAPIC locks (lock order IOAPIC, then LAPIC) but must not call back
 * into this IOAPIC. */
#ifndef VMM_CPU_EMU_IOAPIC_H
#define VMM_CPU_EMU_IOAPIC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cpu/emu/apic_bus.h"

#define IOAPIC_DEFAULT_BASE 0xfec00000ull
#define IOAPIC_MMIO_SIZE 0x1000u
#define IOAPIC_NR_PINS 24

#define IOAPIC_REGSEL 0x00
#define IOAPIC_WINDOW 0x10
#define IOAPIC_EOI 0x40 /* version 0x20 only */

#define IOAPIC_REG_ID 0x00
#define IOAPIC_REG_VERSION 0x01
#define IOAPIC_REG_ARB 0x02
#define IOAPIC_REG_REDIR 0x10 /* entry n: 0x10 + 2n (low), 0x11 + 2n (high) */

#define IOAPIC_REDIR_MASKED (1ull << 16)
#define IOAPIC_REDIR_LEVEL (1ull << 15)
#define IOAPIC_REDIR_REMOTE_IRR (1ull << 14)
#define IOAPIC_REDIR_ACTIVE_LOW (1ull << 13)
#define IOAPIC_REDIR_DELIVERY_STATUS (1ull << 12)
#define IOAPIC_REDIR_DEST_LOGICAL (1ull << 11)

struct ioapic_ops {
	/* Route one message; return how many LAPICs accepted it (apic_bus_deliver()). */
	int (*deliver)(void *opaque, const struct apic_message *msg);
};

struct ioapic {
	pthread_mutex_t lock;
	const struct ioapic_ops *ops;
	void *opaque;
	uint8_t id; /* 4 bits */
	uint8_t version; /* 0x11 or 0x20 */
	uint8_t regsel;
	uint32_t line; /* bit n: pin n asserted */
	uint64_t redir[IOAPIC_NR_PINS];
	uint64_t stat_delivered[IOAPIC_NR_PINS];
};

/* `version` 0x11 (82093AA) or 0x20 (with the EOI register). 0 or a negative errno. */
int ioapic_init(struct ioapic *ioapic, uint8_t id, uint8_t version, const struct ioapic_ops *ops,
		void *opaque);
void ioapic_destroy(struct ioapic *ioapic);
/* Back to power-on: entries masked, lines and remote IRRs clear, IOREGSEL 0. */
void ioapic_reset(struct ioapic *ioapic);

/* MMIO at `offset` in the 4 KiB window, 1–4 bytes within a 32-bit register (IOREGSEL is often
 * written as a byte). Unknown offsets read 0 and ignore writes. */
void ioapic_mmio_read(struct ioapic *ioapic, uint32_t offset, void *data, unsigned len);
void ioapic_mmio_write(struct ioapic *ioapic, uint32_t offset, const void *data, unsigned len);

/* A device's interrupt line `pin` (the GSI) is asserted or not. -EINVAL for pin >= 24. */
int ioapic_set_irq(struct ioapic *ioapic, unsigned pin, bool level);
/* The LAPIC's EOI broadcast (or an EOI register write) for `vector`. */
void ioapic_eoi(struct ioapic *ioapic, uint8_t vector);

/* The redirection entry of `pin`, for tests and the monitor's debug output. */
uint64_t ioapic_get_redirection(struct ioapic *ioapic, unsigned pin);

#endif
