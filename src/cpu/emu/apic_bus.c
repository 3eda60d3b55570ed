/* Interrupt messages on the software CPU's APIC bus: MSI decoding and destination matching
 * (apic_bus.h). apic_bus_deliver() lives in lapic.c, next to the LAPIC it feeds. */
#include "cpu/emu/apic_bus.h"

#include <errno.h>

/* SDM Vol. 3 §11.11.1 (address) and §11.11.2 (data). */
int apic_msi_decode(uint64_t address, uint32_t data, struct apic_message *msg)
{
	if ((address & ~0xfffffull) != APIC_MSI_ADDRESS_BASE)
		return -EINVAL;
	*msg = (struct apic_message){
		.dest = (uint32_t)((address >> 12) & 0xff) | (uint32_t)((address >> 5) & 0x7f) << 8,
		.vector = data & 0xff,
		.delivery_mode = (data >> 8) & 7,
		.dest_logical = address & (1u << 2),
		.redirection_hint = address & (1u << 3),
		.assert = data & (1u << 14),
		.level_trigger = data & (1u << 15),
		.shorthand = APIC_SHORTHAND_NONE,
	};
	/* An edge-triggered MSI is always an assertion; the level bit only matters for level. */
	if (!msg->level_trigger)
		msg->assert = true;
	return 0;
}

static bool match_logical(const struct apic_identity *t, uint32_t dest)
{
	if (t->x2apic) /* cluster model only: LDR[31:16] cluster, LDR[15:0] members */
		return (dest >> 16) == (t->ldr >> 16) && (dest & t->ldr & 0xffff);
	uint8_t mda = (uint8_t)dest, logical_id = (uint8_t)(t->ldr >> 24);
	if ((t->dfr >> 28) == 0xf) /* flat */
		return mda & logical_id;
	/* cluster: bits 7:4 select the cluster, bits 3:0 the members */
	return (mda >> 4) == (logical_id >> 4) && (mda & logical_id & 0xf);
}

bool apic_match_destination(const struct apic_identity *target, const struct apic_message *msg,
			    bool target_is_source)
{
	uint32_t broadcast = msg->x2apic_format ? APIC_BROADCAST_X2APIC : APIC_BROADCAST_XAPIC;

	if (!target->hw_enabled)
		return false;
	switch (msg->shorthand) {
	case APIC_SHORTHAND_SELF: return target_is_source;
	case APIC_SHORTHAND_ALL: return true;
	case APIC_SHORTHAND_OTHERS: return !target_is_source;
	}
	if (msg->dest == broadcast)
		return true;
	if (!msg->dest_logical) /* an xAPIC compares its 8-bit id, an x2APIC its 32-bit id */
		return msg->dest == (target->x2apic ? target->id : (target->id & 0xff));
	return match_logical(target, msg->dest);
}
