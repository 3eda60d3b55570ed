/* The APIC bus of the software CPU: interrupt messages between IOAPIC, MSI sources and the local
 * APICs of all vCPUs.
 *
 * Every interrupt, whatever its source, becomes one struct apic_message: an IOAPIC redirection
 * entry (ioapic.c), an MSI/MSI-X address/data pair written by a device (apic_msi_decode()) or an
 * IPI written to a LAPIC's ICR (lapic.c). Routing a message means asking each LAPIC whether it
 * is a destination (apic_match_destination(), a pure function of the target's identity: APIC
 * id, logical destination and format, mode) and handing the message to the ones that are
 * (lapic_accept_message()). apic_bus_deliver() does both for an array of LAPICs, including the
 * lowest-priority choice; the integrator calls it from the IOAPIC's deliver callback, from
 * irq_msi() and from each LAPIC's send callback.
 *
 * Destination rules (SDM Vol. 3 §11.6.2, §11.12.10):
 * - shorthands (IPIs only): self, all including self, all excluding self; the destination
 *   field is then ignored.
 * - physical mode: the destination is an APIC id; 0xFF (8-bit messages: IOAPIC, MSI, xAPIC
 *   ICR) or 0xFFFFFFFF (x2APIC ICR) is a broadcast.
 * - logical mode, target in xAPIC mode: the 8-bit destination is compared with LDR[31:24],
 *   flat model (DFR[31:28] = 0xF): any common bit; cluster model (DFR[31:28] = 0): same high
 *   nibble (cluster) and a common bit in the low nibble.
 * - logical mode, target in x2APIC mode (only the cluster model exists): the 32-bit destination's
 *   bits 31:16 equal LDR[31:16] and bits 15:0 share a bit with LDR[15:0]. An 8-bit message to an
 *   x2APIC target is read the same way (cluster 0), which is what a guest with APIC ids < 16
 *   and no interrupt remapping gets.
 * - a hardware-disabled LAPIC (IA32_APIC_BASE.EN = 0) is no destination at all.
 *
 * Thread safety: apic_msi_decode() and apic_match_destination() are pure. apic_bus_deliver()
 * may be called from any thread; it takes each LAPIC's lock in turn (never two at once). */
#ifndef VMM_CPU_EMU_APIC_BUS_H
#define VMM_CPU_EMU_APIC_BUS_H

#include <stdbool.h>
#include <stdint.h>

/* Delivery modes (ICR, LVT, redirection entry and MSI data bits 10:8). */
#define APIC_DM_FIXED 0
#define APIC_DM_LOWEST 1
#define APIC_DM_SMI 2
#define APIC_DM_NMI 4
#define APIC_DM_INIT 5
#define APIC_DM_STARTUP 6
#define APIC_DM_EXTINT 7

/* ICR destination shorthand (bits 19:18). */
#define APIC_SHORTHAND_NONE 0
#define APIC_SHORTHAND_SELF 1
#define APIC_SHORTHAND_ALL 2 /* including self */
#define APIC_SHORTHAND_OTHERS 3 /* all excluding self */

#define APIC_BROADCAST_XAPIC 0xffu
#define APIC_BROADCAST_X2APIC 0xffffffffu

/* MSI address (SDM Vol. 3 §11.11.1): 0xFEE in bits 31:20, destination id 19:12, redirection
 * hint bit 3, destination mode bit 2. KVM's extended destination id (address bits 11:5, the
 * high bits of a 15-bit id) is honoured as well. */
#define APIC_MSI_ADDRESS_BASE 0xfee00000u
#define APIC_MSI_ADDRESS_MASK 0xfff00000u

struct apic_message {
	uint32_t dest; /* APIC id (physical) or logical destination */
	uint8_t vector;
	uint8_t delivery_mode; /* APIC_DM_* */
	uint8_t shorthand; /* APIC_SHORTHAND_* (IPIs only, else NONE) */
	bool dest_logical; /* destination mode: logical (true) or physical */
	bool level_trigger; /* trigger mode: level (true) or edge */
	bool assert; /* the level bit: false only for an INIT level de-assert */
	bool x2apic_format; /* 32-bit destination (x2APIC ICR): broadcast is 0xFFFFFFFF */
	bool redirection_hint; /* MSI RH: lowest priority among the logical destinations */
};

/* What a LAPIC looks like to the router (lapic_identity() takes a snapshot). */
struct apic_identity {
	uint32_t id; /* APIC id (xAPIC: the 8-bit id; x2APIC: the 32-bit id) */
	uint32_t ldr; /* logical destination register as read by the guest */
	uint32_t dfr; /* destination format register (xAPIC only) */
	bool x2apic; /* IA32_APIC_BASE.EXTD */
	bool hw_enabled; /* IA32_APIC_BASE.EN */
	uint8_t priority; /* arbitration priority for lowest-priority delivery (TPR) */
};

/* Decode an MSI (PCI MSI/MSI-X, also what the IOAPIC sends). 0, or -EINVAL when the address is
 * not in the 0xFEExxxxx window (the write is then an ordinary memory write the device made). */
int apic_msi_decode(uint64_t address, uint32_t data, struct apic_message *msg);

/* Whether the LAPIC described by `target` is a destination of `msg`. `target_is_source` says
 * whether it sent the message (for the self / all-excluding-self shorthands). */
bool apic_match_destination(const struct apic_identity *target, const struct apic_message *msg,
			    bool target_is_source);

struct lapic;

/* Route `msg` to the matching LAPICs among `lapics[0..n)`; `source` is the sending LAPIC's
 * index for IPIs or -1. A lowest-priority message (delivery mode APIC_DM_LOWEST; the MSI
 * redirection hint only accompanies it) goes to one destination, the one with the lowest TPR
 * (the lowest index on a tie). Returns how many LAPICs accepted the message. */
int apic_bus_deliver(struct lapic *const *lapics, unsigned n, const struct apic_message *msg,
		     int source);

#endif
