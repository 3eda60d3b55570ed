/* The software CPU's interrupt controllers and clocks: LAPIC register file, priorities, EOI,
 * timer modes against a fake clock, IPIs and their routing, x2APIC MSRs, IA32_APIC_BASE, the
 * IOAPIC (edge/level, remote IRR, EOI), MSI decoding and kvmclock structures. */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "cpu/emu/apic_bus.h"
#include "cpu/emu/ioapic.h"
#include "cpu/emu/lapic.h"
#include "cpu/emu/pvclock.h"
#include "test.h"

#define MAX_CPUS 4

/* A small machine: up to 4 LAPICs and an IOAPIC wired as the integrator would wire them, a fake
 * clock and a record of what left through the callbacks. */
struct fake_vcpu {
	struct lapic lapic;
	int index;
	unsigned kicks;
	unsigned timer_updates;
	uint64_t last_deadline;
};

static struct fake_vcpu cpus[MAX_CPUS];
static struct lapic *lapics[MAX_CPUS];
static unsigned nr_cpus;
static uint64_t fake_now_ns, fake_tsc_offset, fake_tsc_per_ns = 1;
static struct apic_message sent[64];
static unsigned nr_sent;
static bool route_ipis;
static int last_eoi_vector;
static struct ioapic ioapic;
static unsigned ioapic_messages;

static uint64_t fake_now(void *opaque)
{
	(void)opaque;
	return fake_now_ns;
}

static uint64_t fake_tsc_at(void *opaque, uint64_t ns)
{
	(void)opaque;
	return ns * fake_tsc_per_ns + fake_tsc_offset;
}

static void fake_send(void *opaque, const struct apic_message *msg)
{
	struct fake_vcpu *c = opaque;

	if (nr_sent < 64)
		sent[nr_sent++] = *msg;
	if (route_ipis)
		apic_bus_deliver(lapics, nr_cpus, msg, c->index);
}

static void fake_eoi(void *opaque, uint8_t vector)
{
	(void)opaque;
	last_eoi_vector = vector;
	ioapic_eoi(&ioapic, vector);
}

static void fake_kick(void *opaque)
{
	__atomic_add_fetch(&((struct fake_vcpu *)opaque)->kicks, 1, __ATOMIC_RELAXED); /* any thread */
}

static void fake_timer_update(void *opaque, uint64_t deadline)
{
	struct fake_vcpu *c = opaque;

	c->timer_updates++;
	c->last_deadline = deadline;
}

static const struct lapic_ops fake_lapic_ops = {
	.now_ns = fake_now,
	.tsc_at = fake_tsc_at,
	.send = fake_send,
	.eoi = fake_eoi,
	.kick = fake_kick,
	.timer_update = fake_timer_update,
};

static int fake_ioapic_deliver(void *opaque, const struct apic_message *msg)
{
	(void)opaque;
	ioapic_messages++;
	return apic_bus_deliver(lapics, nr_cpus, msg, -1);
}

static const struct ioapic_ops fake_ioapic_ops = { .deliver = fake_ioapic_deliver };

static void mmio_w(struct lapic *l, uint32_t offset, uint32_t value)
{
	CHECK(lapic_mmio_write(l, offset, &value, 4));
}

static uint32_t mmio_r(struct lapic *l, uint32_t offset)
{
	uint32_t v = 0xdeadbeef;

	CHECK(lapic_mmio_read(l, offset, &v, 4));
	return v;
}

static uint32_t ioapic_reg_read(uint8_t reg)
{
	uint32_t v;

	ioapic_mmio_write(&ioapic, IOAPIC_REGSEL, &reg, 1);
	ioapic_mmio_read(&ioapic, IOAPIC_WINDOW, &v, 4);
	return v;
}

static void ioapic_reg_write(uint8_t reg, uint32_t value)
{
	ioapic_mmio_write(&ioapic, IOAPIC_REGSEL, &reg, 1);
	ioapic_mmio_write(&ioapic, IOAPIC_WINDOW, &value, 4);
}

static void ioapic_route(unsigned pin, uint64_t entry)
{
	ioapic_reg_write((uint8_t)(IOAPIC_REG_REDIR + 2 * pin + 1), (uint32_t)(entry >> 32));
	ioapic_reg_write((uint8_t)(IOAPIC_REG_REDIR + 2 * pin), (uint32_t)entry);
}

/* n LAPICs (APIC id = index), software-enabled unless `raw`; a fresh IOAPIC (id n, v0x20). */
static void machine_setup_raw(unsigned n, bool raw)
{
	for (unsigned i = 0; i < nr_cpus; i++)
		lapic_destroy(&cpus[i].lapic);
	if (nr_cpus)
		ioapic_destroy(&ioapic);
	memset(cpus, 0, sizeof(cpus));
	nr_cpus = n;
	fake_now_ns = 0;
	fake_tsc_offset = 0;
	fake_tsc_per_ns = 1;
	nr_sent = 0;
	route_ipis = true;
	last_eoi_vector = -1;
	ioapic_messages = 0;
	for (unsigned i = 0; i < n; i++) {
		struct lapic_config cfg = { .apic_id = i, .bsp = i == 0 };

		cpus[i].index = (int)i;
		lapics[i] = &cpus[i].lapic;
		CHECK_EQ(lapic_init(&cpus[i].lapic, &cfg, &fake_lapic_ops, &cpus[i]), 0);
		if (!raw)
			mmio_w(lapics[i], APIC_SVR, APIC_SVR_ENABLE | 0xff);
	}
	CHECK_EQ(ioapic_init(&ioapic, (uint8_t)n, 0x20, &fake_ioapic_ops, NULL), 0);
}

static void machine_setup(unsigned n)
{
	machine_setup_raw(n, false);
}

static bool irr_has(struct lapic *l, unsigned v)
{
	return mmio_r(l, APIC_IRR + (v / 32) * 16) & (1u << (v % 32));
}

static bool isr_has(struct lapic *l, unsigned v)
{
	return mmio_r(l, APIC_ISR + (v / 32) * 16) & (1u << (v % 32));
}

static bool tmr_has(struct lapic *l, unsigned v)
{
	return mmio_r(l, APIC_TMR + (v / 32) * 16) & (1u << (v % 32));
}

/* The CPU core's side: take the highest deliverable interrupt. -1 if none. */
static int take_interrupt(struct lapic *l)
{
	uint8_t v;

	if (!lapic_get_interrupt(l, &v))
		return -1;
	lapic_ack_interrupt(l, v);
	return v;
}

/* ---- register file ---- */

static void test_lapic_power_on_register_values(void)
{
	machine_setup_raw(2, true);
	struct lapic *l = lapics[1];

	CHECK_EQ(mmio_r(l, APIC_ID), 1u << 24);
	CHECK_EQ(mmio_r(l, APIC_VERSION), 0x14u | (5u << 16));
	CHECK_EQ(mmio_r(l, APIC_SVR), 0xffu);
	CHECK_EQ(mmio_r(l, APIC_DFR), 0xffffffffu);
	CHECK_EQ(mmio_r(l, APIC_LDR), 0u);
	CHECK_EQ(mmio_r(l, APIC_TPR), 0u);
	for (uint32_t off = APIC_LVT_TIMER; off <= APIC_LVT_ERROR; off += 0x10)
		CHECK_EQ(mmio_r(l, off), APIC_LVT_MASKED);
	CHECK_EQ(lapic_get_base(lapics[0]), 0xfee00000ull | APIC_BASE_EN | APIC_BASE_BSP);
	CHECK_EQ(lapic_get_base(l), 0xfee00000ull | APIC_BASE_EN);
	CHECK_EQ(lapic_mmio_base(l), 0xfee00000ull);
	CHECK_EQ(lapic_pending(l), 0u);
}

static void test_lapic_read_only_and_reserved_registers(void)
{
	machine_setup(1);
	struct lapic *l = lapics[0];
	uint8_t byte = 0xff;
	uint64_t wide = ~0ull;

	mmio_w(l, APIC_ID, 0x05000000);
	CHECK_EQ(mmio_r(l, APIC_ID), 0u); /* the id is the vCPU index */
	mmio_w(l, APIC_VERSION, 0);
	CHECK_EQ(mmio_r(l, APIC_VERSION), 0x50014u);
	mmio_w(l, APIC_PPR, 0xff);
	CHECK_EQ(mmio_r(l, APIC_PPR), 0u);
	mmio_w(l, APIC_IRR + 0x10, 0xffffffff);
	CHECK_EQ(mmio_r(l, APIC_IRR + 0x10), 0u);
	mmio_w(l, APIC_TIMER_CURRENT, 1234);
	CHECK_EQ(mmio_r(l, APIC_TIMER_CURRENT), 0u);
	/* reserved offsets and the CMCI LVT (not implemented) read 0 and ignore writes */
	mmio_w(l, 0x40, 0x1234);
	CHECK_EQ(mmio_r(l, 0x40), 0u);
	CHECK_EQ(mmio_r(l, APIC_LVT_CMCI), 0u);
	CHECK_EQ(mmio_r(l, APIC_SELF_IPI), 0u);
	/* writable registers keep only their defined bits */
	mmio_w(l, APIC_TPR, 0xffffff5a);
	CHECK_EQ(mmio_r(l, APIC_TPR), 0x5au);
	mmio_w(l, APIC_LDR, 0x12345678);
	CHECK_EQ(mmio_r(l, APIC_LDR), 0x12000000u);
	mmio_w(l, APIC_DFR, 0x00000000);
	CHECK_EQ(mmio_r(l, APIC_DFR), 0x0fffffffu);
	mmio_w(l, APIC_TIMER_DIVIDE, 0xffffffff);
	CHECK_EQ(mmio_r(l, APIC_TIMER_DIVIDE), 0xbu);
	mmio_w(l, APIC_LVT_LINT1, 0xffffffff); /* LINT1 cannot be level-triggered */
	CHECK_EQ(mmio_r(l, APIC_LVT_LINT1), 0x127ffu);
	mmio_w(l, APIC_LVT_TIMER, 0xffffffff); /* reserved timer mode 3 becomes one-shot */
	CHECK_EQ(mmio_r(l, APIC_LVT_TIMER), 0x100ffu);
	/* a narrow write is dropped; a byte read returns that byte of the register */
	CHECK(lapic_mmio_write(l, APIC_TPR, &byte, 1));
	CHECK_EQ(mmio_r(l, APIC_TPR), 0x5au);
	CHECK(lapic_mmio_read(l, APIC_VERSION + 2, &byte, 1));
	CHECK_EQ(byte, 5);
	CHECK(lapic_mmio_read(l, APIC_TPR, &wide, 8));
	CHECK_EQ(wide, 0x5au);
	CHECK(lapic_mmio_read(l, APIC_TPR + 4, &byte, 1));
	CHECK_EQ(byte, 0);
}

static void test_lapic_software_disable_masks_lvt_and_drops_fixed(void)
{
	machine_setup_raw(1, true);
	struct lapic *l = lapics[0];

	mmio_w(l, APIC_LVT_LINT0, 0x700); /* ExtINT, unmasked: refused while disabled */
	CHECK_EQ(mmio_r(l, APIC_LVT_LINT0), 0x700u | APIC_LVT_MASKED);
	CHECK(!lapic_deliver(l, 0x40, false));
	CHECK(!irr_has(l, 0x40));
	mmio_w(l, APIC_SVR, 0x1ff);
	CHECK_EQ(mmio_r(l, APIC_LVT_LINT0), 0x700u | APIC_LVT_MASKED); /* stays masked */
	mmio_w(l, APIC_LVT_LINT0, 0x700);
	CHECK_EQ(mmio_r(l, APIC_LVT_LINT0), 0x700u);
	CHECK(lapic_deliver(l, 0x40, false));
	CHECK(irr_has(l, 0x40));
	mmio_w(l, APIC_SVR, 0xff); /* disabling masks every LVT again */
	CHECK_EQ(mmio_r(l, APIC_LVT_LINT0), 0x700u | APIC_LVT_MASKED);
	/* NMI and INIT are still accepted by a software-disabled APIC */
	struct apic_message nmi = { .delivery_mode = APIC_DM_NMI, .assert = true };
	CHECK(lapic_accept_message(l, &nmi));
	CHECK(lapic_pending(l) & LAPIC_PENDING_NMI);
}

/* ---- priorities, acceptance and EOI ---- */

static void test_lapic_priority_ppr_and_tpr(void)
{
	machine_setup(1);
	struct lapic *l = lapics[0];
	uint8_t v;

	CHECK(lapic_deliver(l, 0x31, false));
	CHECK(lapic_deliver(l, 0x52, false));
	CHECK(lapic_pending(l) & LAPIC_PENDING_INTR);
	CHECK(lapic_get_interrupt(l, &v));
	CHECK_EQ(v, 0x52);
	lapic_ack_interrupt(l, 0x52);
	CHECK(isr_has(l, 0x52) && !irr_has(l, 0x52));
	CHECK_EQ(mmio_r(l, APIC_PPR), 0x50u);
	CHECK(!lapic_get_interrupt(l, &v)); /* 0x31 is below the in-service class */
	CHECK(!(lapic_pending(l) & LAPIC_PENDING_INTR));
	CHECK(lapic_deliver(l, 0x61, false));
	CHECK(lapic_get_interrupt(l, &v) && v == 0x61);
	mmio_w(l, APIC_TPR, 0x60); /* same class as 0x61: blocked */
	CHECK_EQ(mmio_r(l, APIC_PPR), 0x60u);
	CHECK(!lapic_get_interrupt(l, &v));
	mmio_w(l, APIC_TPR, 0x5f); /* TPR class = ISRV class: PPR = TPR */
	CHECK_EQ(mmio_r(l, APIC_PPR), 0x5fu);
	CHECK(lapic_get_interrupt(l, &v) && v == 0x61);
	CHECK_EQ(mmio_r(l, APIC_APR), 0x60u); /* IRRV class 6 is the highest */
	/* CR8 is TPR[7:4] */
	CHECK_EQ(lapic_get_cr8(l), 5u);
	lapic_set_cr8(l, 0xf);
	CHECK_EQ(mmio_r(l, APIC_TPR), 0xf0u);
	CHECK(!lapic_get_interrupt(l, &v));
	lapic_set_cr8(l, 0);
	CHECK(lapic_get_interrupt(l, &v) && v == 0x61);
}

static void test_lapic_eoi_retires_highest_in_service(void)
{
	machine_setup(1);
	struct lapic *l = lapics[0];

	lapic_deliver(l, 0x52, false);
	CHECK_EQ(take_interrupt(l), 0x52);
	lapic_deliver(l, 0x81, false); /* nested: a higher class interrupts the handler */
	CHECK_EQ(take_interrupt(l), 0x81);
	CHECK_EQ(mmio_r(l, APIC_PPR), 0x80u);
	mmio_w(l, APIC_EOI, 0);
	CHECK(!isr_has(l, 0x81) && isr_has(l, 0x52));
	CHECK_EQ(mmio_r(l, APIC_PPR), 0x50u);
	lapic_eoi(l);
	CHECK(!isr_has(l, 0x52));
	CHECK_EQ(mmio_r(l, APIC_PPR), 0u);
	lapic_eoi(l); /* nothing in service: harmless */
	CHECK_EQ(last_eoi_vector, -1); /* edge-triggered: no EOI broadcast */
	/* vectors 0–15 are illegal: dropped with a receive error in ESR after the next write */
	CHECK(!lapic_deliver(l, 7, false));
	CHECK_EQ(mmio_r(l, APIC_ESR), 0u);
	mmio_w(l, APIC_ESR, 0);
	CHECK_EQ(mmio_r(l, APIC_ESR), APIC_ESR_RECEIVE_ILLEGAL_VECTOR);
	mmio_w(l, APIC_ESR, 0);
	CHECK_EQ(mmio_r(l, APIC_ESR), 0u);
}

static void test_lapic_kick_only_when_something_new_is_pending(void)
{
	machine_setup(1);
	struct lapic *l = lapics[0];

	CHECK_EQ(cpus[0].kicks, 0u);
	lapic_deliver(l, 0x40, false);
	CHECK_EQ(cpus[0].kicks, 1u);
	lapic_deliver(l, 0x30, false); /* INTR was already pending */
	CHECK_EQ(cpus[0].kicks, 1u);
	take_interrupt(l);
	lapic_deliver(l, 0x20, false); /* below PPR: nothing deliverable, no kick */
	CHECK_EQ(cpus[0].kicks, 1u);
	lapic_eoi(l); /* 0x30 becomes deliverable */
	CHECK(lapic_pending(l) & LAPIC_PENDING_INTR);
	CHECK_EQ(cpus[0].kicks, 2u);
}

static void test_lapic_level_triggered_sets_tmr_and_broadcasts_eoi(void)
{
	machine_setup(1);
	struct lapic *l = lapics[0];

	lapic_deliver(l, 0x45, true);
	CHECK(tmr_has(l, 0x45));
	CHECK_EQ(take_interrupt(l), 0x45);
	lapic_eoi(l);
	CHECK_EQ(last_eoi_vector, 0x45);
	lapic_deliver(l, 0x45, false); /* the same vector edge-triggered clears TMR */
	CHECK(!tmr_has(l, 0x45));
}

/* ---- IOAPIC ---- */

static void test_ioapic_registers(void)
{
	machine_setup(2);
	uint32_t v;

	CHECK_EQ(ioapic_reg_read(IOAPIC_REG_ID), 2u << 24);
	CHECK_EQ(ioapic_reg_read(IOAPIC_REG_VERSION), 0x20u | (23u << 16));
	CHECK_EQ(ioapic_reg_read(IOAPIC_REG_ARB), 2u << 24);
	ioapic_reg_write(IOAPIC_REG_VERSION, 0);
	CHECK_EQ(ioapic_reg_read(IOAPIC_REG_VERSION), 0x170020u);
	ioapic_reg_write(IOAPIC_REG_ID, 0xffffffff);
	CHECK_EQ(ioapic_reg_read(IOAPIC_REG_ID), 0x0f000000u);
	ioapic_mmio_read(&ioapic, IOAPIC_REGSEL, &v, 4);
	CHECK_EQ(v, IOAPIC_REG_ID);
	for (unsigned pin = 0; pin < IOAPIC_NR_PINS; pin++)
		CHECK_EQ(ioapic_get_redirection(&ioapic, pin), IOAPIC_REDIR_MASKED);
	/* delivery status and remote IRR are read-only, bits 55:17 reserved */
	ioapic_reg_write(IOAPIC_REG_REDIR + 2 * 5, 0xffffffff);
	ioapic_reg_write(IOAPIC_REG_REDIR + 2 * 5 + 1, 0xffffffff);
	CHECK_EQ(ioapic_get_redirection(&ioapic, 5), 0xff0000000001afffull);
	CHECK_EQ(ioapic_reg_read(IOAPIC_REG_REDIR + 2 * 5 + 1), 0xff000000u);
	CHECK_EQ(ioapic_reg_read(IOAPIC_REG_REDIR + 2 * 23), 0x10000u);
	CHECK_EQ(ioapic_reg_read(IOAPIC_REG_REDIR + 2 * 24), 0u); /* beyond entry 23 */
	CHECK_EQ(ioapic_set_irq(&ioapic, 24, true), -EINVAL);
	CHECK_EQ(ioapic_messages, 0u);
}

static void test_ioapic_edge_pin_delivers_on_rising_edge_only(void)
{
	machine_setup(2);

	ioapic_route(4, 0x34 | (1ull << 56)); /* edge, fixed, physical, APIC id 1 */
	ioapic_set_irq(&ioapic, 4, true);
	CHECK(irr_has(lapics[1], 0x34) && !irr_has(lapics[0], 0x34));
	CHECK(!tmr_has(lapics[1], 0x34));
	CHECK_EQ(take_interrupt(lapics[1]), 0x34);
	ioapic_set_irq(&ioapic, 4, true); /* still high: no new edge */
	CHECK(!irr_has(lapics[1], 0x34));
	ioapic_set_irq(&ioapic, 4, false);
	ioapic_set_irq(&ioapic, 4, true);
	CHECK(irr_has(lapics[1], 0x34));
	CHECK_EQ(ioapic_messages, 2u);
	lapic_eoi(lapics[1]);
	CHECK_EQ(last_eoi_vector, -1);
	/* an edge on a masked pin is lost, also after unmasking */
	take_interrupt(lapics[1]);
	ioapic_set_irq(&ioapic, 4, false);
	ioapic_route(4, IOAPIC_REDIR_MASKED | 0x34 | (1ull << 56));
	ioapic_set_irq(&ioapic, 4, true);
	ioapic_route(4, 0x34 | (1ull << 56));
	CHECK(!irr_has(lapics[1], 0x34));
	CHECK_EQ(ioapic_messages, 2u);
}

static void test_ioapic_level_remote_irr_cycle_with_lapic_eoi(void)
{
	machine_setup(1);
	struct lapic *l = lapics[0];

	/* the SCI: pin 9, level-triggered, active high, vector 0x39, to APIC id 0 */
	ioapic_route(9, 0x39 | IOAPIC_REDIR_LEVEL);
	ioapic_set_irq(&ioapic, 9, true);
	CHECK_EQ(ioapic_messages, 1u);
	CHECK(irr_has(l, 0x39) && tmr_has(l, 0x39));
	CHECK(ioapic_get_redirection(&ioapic, 9) & IOAPIC_REDIR_REMOTE_IRR);
	ioapic_set_irq(&ioapic, 9, true); /* remote IRR holds further messages back */
	CHECK_EQ(ioapic_messages, 1u);
	CHECK_EQ(take_interrupt(l), 0x39);
	lapic_eoi(l); /* line still high: the IOAPIC sends it again */
	CHECK_EQ(last_eoi_vector, 0x39);
	CHECK_EQ(ioapic_messages, 2u);
	CHECK(irr_has(l, 0x39));
	CHECK(ioapic_get_redirection(&ioapic, 9) & IOAPIC_REDIR_REMOTE_IRR);
	CHECK_EQ(take_interrupt(l), 0x39);
	ioapic_set_irq(&ioapic, 9, false); /* the handler quiets the device */
	lapic_eoi(l);
	CHECK_EQ(ioapic_messages, 2u);
	CHECK(!(ioapic_get_redirection(&ioapic, 9) & IOAPIC_REDIR_REMOTE_IRR));
	CHECK(!irr_has(l, 0x39));
	/* the version 0x20 EOI register does what the broadcast does */
	ioapic_set_irq(&ioapic, 9, true);
	CHECK_EQ(ioapic_messages, 3u);
	uint32_t vector = 0x39;
	ioapic_mmio_write(&ioapic, IOAPIC_EOI, &vector, 4);
	CHECK_EQ(ioapic_messages, 4u); /* remote IRR cleared, line high: sent again */
	/* a level pin unmasked while asserted is sent at once */
	ioapic_set_irq(&ioapic, 3, true);
	ioapic_route(3, 0x33 | IOAPIC_REDIR_LEVEL | IOAPIC_REDIR_MASKED);
	CHECK_EQ(ioapic_messages, 4u);
	ioapic_route(3, 0x33 | IOAPIC_REDIR_LEVEL);
	CHECK_EQ(ioapic_messages, 5u);
	CHECK(irr_has(l, 0x33));
	/* switching to edge drops remote IRR */
	ioapic_route(3, 0x33);
	CHECK(!(ioapic_get_redirection(&ioapic, 3) & IOAPIC_REDIR_REMOTE_IRR));
}

static void test_ioapic_version_11_has_no_eoi_register(void)
{
	machine_setup(1);
	ioapic_destroy(&ioapic);
	CHECK_EQ(ioapic_init(&ioapic, 1, 0x11, &fake_ioapic_ops, NULL), 0);
	CHECK_EQ(ioapic_reg_read(IOAPIC_REG_VERSION), 0x170011u);
	ioapic_route(9, 0x39 | IOAPIC_REDIR_LEVEL);
	ioapic_set_irq(&ioapic, 9, true);
	uint32_t vector = 0x39;
	ioapic_mmio_write(&ioapic, IOAPIC_EOI, &vector, 4);
	CHECK(ioapic_get_redirection(&ioapic, 9) & IOAPIC_REDIR_REMOTE_IRR);
	CHECK_EQ(ioapic_messages, 1u);
	struct ioapic bad;
	CHECK_EQ(ioapic_init(&bad, 0, 0x30, &fake_ioapic_ops, NULL), -EINVAL);
}

static void test_ioapic_nmi_and_logical_destinations(void)
{
	machine_setup(4);
	for (unsigned i = 0; i < 4; i++)
		mmio_w(lapics[i], APIC_LDR, (1u << i) << 24); /* flat model, one bit per CPU */

	ioapic_route(1, 0x41 | IOAPIC_REDIR_DEST_LOGICAL | (0x6ull << 56)); /* CPUs 1 and 2 */
	ioapic_set_irq(&ioapic, 1, true);
	CHECK(!irr_has(lapics[0], 0x41) && irr_has(lapics[1], 0x41) && irr_has(lapics[2], 0x41));
	CHECK(!irr_has(lapics[3], 0x41));
	ioapic_route(2, (APIC_DM_NMI << 8) | (3ull << 56));
	ioapic_set_irq(&ioapic, 2, true);
	CHECK_EQ(lapic_pending(lapics[3]), LAPIC_PENDING_NMI);
	/* lowest priority goes to one CPU: the one with the lowest TPR */
	mmio_w(lapics[0], APIC_TPR, 0x20);
	mmio_w(lapics[1], APIC_TPR, 0x30);
	mmio_w(lapics[2], APIC_TPR, 0x10);
	mmio_w(lapics[3], APIC_TPR, 0x40);
	ioapic_route(5, 0x55 | (APIC_DM_LOWEST << 8) | IOAPIC_REDIR_DEST_LOGICAL | (0xfull << 56));
	ioapic_set_irq(&ioapic, 5, true);
	for (unsigned i = 0; i < 4; i++)
		CHECK_EQ(irr_has(lapics[i], 0x55), i == 2);
}

/* ---- timer ---- */

static void test_timer_one_shot_fires_once_at_the_deadline(void)
{
	machine_setup(1);
	struct lapic *l = lapics[0];

	fake_now_ns = 1000;
	mmio_w(l, APIC_TIMER_DIVIDE, 0x3); /* ÷16 */
	mmio_w(l, APIC_LVT_TIMER, 0xec); /* one-shot, vector 0xEC */
	CHECK_EQ(lapic_timer_next_deadline(l), LAPIC_NO_DEADLINE);
	mmio_w(l, APIC_TIMER_INITIAL, 1000); /* 16 µs */
	CHECK_EQ(lapic_timer_next_deadline(l), 17000u);
	CHECK_EQ(cpus[0].last_deadline, 17000u);
	fake_now_ns = 9000;
	CHECK_EQ(mmio_r(l, APIC_TIMER_CURRENT), 500u);
	CHECK_EQ(mmio_r(l, APIC_TIMER_INITIAL), 1000u);
	CHECK(!lapic_timer_fire(l, 16999));
	CHECK(!irr_has(l, 0xec));
	CHECK(lapic_timer_fire(l, 17000));
	CHECK(irr_has(l, 0xec));
	CHECK_EQ(lapic_timer_next_deadline(l), LAPIC_NO_DEADLINE);
	CHECK_EQ(cpus[0].last_deadline, LAPIC_NO_DEADLINE);
	CHECK(!lapic_timer_fire(l, 40000)); /* once only */
	fake_now_ns = 40000;
	CHECK_EQ(mmio_r(l, APIC_TIMER_CURRENT), 0u);
	/* rewriting the initial count restarts; 0 stops */
	mmio_w(l, APIC_TIMER_INITIAL, 10);
	CHECK_EQ(lapic_timer_next_deadline(l), 40160u);
	mmio_w(l, APIC_TIMER_INITIAL, 0);
	CHECK_EQ(lapic_timer_next_deadline(l), LAPIC_NO_DEADLINE);
	/* a masked timer counts and expires but raises nothing */
	take_interrupt(l);
	lapic_eoi(l);
	mmio_w(l, APIC_LVT_TIMER, 0xec | APIC_LVT_MASKED);
	mmio_w(l, APIC_TIMER_INITIAL, 10);
	CHECK(lapic_timer_fire(l, 50000));
	CHECK(!irr_has(l, 0xec));
}

static void test_timer_periodic_rearms_and_coalesces(void)
{
	machine_setup(1);
	struct lapic *l = lapics[0];

	mmio_w(l, APIC_TIMER_DIVIDE, 0xb); /* ÷1 */
	mmio_w(l, APIC_LVT_TIMER, APIC_TIMER_PERIODIC | 0xef);
	mmio_w(l, APIC_TIMER_INITIAL, 250000); /* 250 µs */
	CHECK_EQ(lapic_timer_next_deadline(l), 250000u);
	CHECK(lapic_timer_fire(l, 250000));
	CHECK_EQ(lapic_timer_next_deadline(l), 500000u);
	CHECK_EQ(take_interrupt(l), 0xef);
	lapic_eoi(l);
	fake_now_ns = 400000;
	CHECK_EQ(mmio_r(l, APIC_TIMER_CURRENT), 100000u);
	CHECK(lapic_timer_fire(l, 500010));
	CHECK_EQ(lapic_timer_next_deadline(l), 750000u);
	CHECK_EQ(take_interrupt(l), 0xef);
	lapic_eoi(l);
	/* late by several periods: one interrupt, the next expiry stays on the 250 µs grid */
	CHECK(lapic_timer_fire(l, 1800000));
	CHECK_EQ(lapic_timer_next_deadline(l), 2000000u);
	CHECK_EQ(take_interrupt(l), 0xef);
	CHECK_EQ(take_interrupt(l), -1);
	fake_now_ns = 1900000; /* current count wraps within the period */
	CHECK_EQ(mmio_r(l, APIC_TIMER_CURRENT), 100000u);
	/* a tiny period is clamped to LAPIC_MIN_PERIOD_NS */
	fake_now_ns = 3000000;
	mmio_w(l, APIC_TIMER_INITIAL, 10);
	CHECK_EQ(lapic_timer_next_deadline(l), 3000000u + LAPIC_MIN_PERIOD_NS);
	CHECK_EQ(mmio_r(l, APIC_TIMER_CURRENT), 10u);
	/* periodic → one-shot: the running count finishes and stops */
	mmio_w(l, APIC_LVT_TIMER, APIC_TIMER_ONESHOT | 0xef);
	CHECK(lapic_timer_fire(l, 3000000u + LAPIC_MIN_PERIOD_NS));
	CHECK_EQ(lapic_timer_next_deadline(l), LAPIC_NO_DEADLINE);
}

static void test_timer_divide_configuration(void)
{
	static const struct {
		uint32_t dcr, divisor;
	} table[] = { { 0x0, 2 }, { 0x1, 4 }, { 0x2, 8 }, { 0x3, 16 },
		      { 0x8, 32 }, { 0x9, 64 }, { 0xa, 128 }, { 0xb, 1 } };

	machine_setup(1);
	struct lapic *l = lapics[0];

	mmio_w(l, APIC_LVT_TIMER, 0xec);
	for (unsigned i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		fake_now_ns = 1000000 * (i + 1);
		mmio_w(l, APIC_TIMER_DIVIDE, table[i].dcr);
		mmio_w(l, APIC_TIMER_INITIAL, 1000);
		CHECK_EQ(lapic_timer_next_deadline(l) - fake_now_ns, 1000u * table[i].divisor);
		fake_now_ns += 100 * table[i].divisor;
		CHECK_EQ(mmio_r(l, APIC_TIMER_CURRENT), 900u);
	}
	/* the largest count at the largest divisor does not overflow */
	fake_now_ns = 0;
	mmio_w(l, APIC_TIMER_DIVIDE, 0xa);
	mmio_w(l, APIC_TIMER_INITIAL, 0xffffffff);
	CHECK_EQ(lapic_timer_next_deadline(l), 0xffffffffull * 128);
	CHECK_EQ(mmio_r(l, APIC_TIMER_CURRENT), 0xffffffffu);
}

static void test_timer_tsc_deadline(void)
{
	machine_setup(1);
	struct lapic *l = lapics[0];
	uint64_t v;

	fake_now_ns = 1000;
	fake_tsc_offset = 5000; /* the guest's TSC = ns + 5000 */
	/* outside TSC-deadline mode the MSR reads 0 and ignores writes */
	CHECK_EQ(lapic_msr_write(l, MSR_IA32_TSC_DEADLINE, 99999), 0);
	CHECK_EQ(lapic_msr_read(l, MSR_IA32_TSC_DEADLINE, &v), 0);
	CHECK_EQ(v, 0u);
	CHECK_EQ(lapic_timer_next_deadline(l), LAPIC_NO_DEADLINE);
	/* a running one-shot is disarmed by the switch to TSC-deadline mode */
	mmio_w(l, APIC_TIMER_INITIAL, 100);
	mmio_w(l, APIC_LVT_TIMER, APIC_TIMER_TSC_DEADLINE | 0xec);
	CHECK_EQ(lapic_timer_next_deadline(l), LAPIC_NO_DEADLINE);
	CHECK_EQ(mmio_r(l, APIC_TIMER_INITIAL), 0u);
	mmio_w(l, APIC_TIMER_INITIAL, 100); /* ignored in this mode */
	CHECK_EQ(mmio_r(l, APIC_TIMER_INITIAL), 0u);
	CHECK_EQ(lapic_timer_next_deadline(l), LAPIC_NO_DEADLINE);

	CHECK_EQ(lapic_msr_write(l, MSR_IA32_TSC_DEADLINE, 15000), 0); /* TSC now 6000 */
	CHECK_EQ(lapic_timer_next_deadline(l), 10000u);
	CHECK_EQ(lapic_msr_read(l, MSR_IA32_TSC_DEADLINE, &v), 0);
	CHECK_EQ(v, 15000u);
	CHECK_EQ(mmio_r(l, APIC_TIMER_CURRENT), 0u);
	CHECK(!lapic_timer_fire(l, 9999));
	CHECK(lapic_timer_fire(l, 10000));
	CHECK(irr_has(l, 0xec));
	CHECK_EQ(lapic_msr_read(l, MSR_IA32_TSC_DEADLINE, &v), 0);
	CHECK_EQ(v, 0u); /* reads 0 once fired */
	CHECK_EQ(lapic_timer_next_deadline(l), LAPIC_NO_DEADLINE);
	take_interrupt(l);
	lapic_eoi(l);
	/* a deadline already passed fires at once */
	fake_now_ns = 20000;
	CHECK_EQ(lapic_msr_write(l, MSR_IA32_TSC_DEADLINE, 24000), 0);
	CHECK(irr_has(l, 0xec));
	take_interrupt(l);
	lapic_eoi(l);
	/* 0 disarms */
	CHECK_EQ(lapic_msr_write(l, MSR_IA32_TSC_DEADLINE, 1000000), 0);
	CHECK_EQ(lapic_timer_next_deadline(l), 1000000u - 25000u + 20000u);
	CHECK_EQ(lapic_msr_write(l, MSR_IA32_TSC_DEADLINE, 0), 0);
	CHECK_EQ(lapic_timer_next_deadline(l), LAPIC_NO_DEADLINE);
	/* switching back to one-shot disarms too */
	CHECK_EQ(lapic_msr_write(l, MSR_IA32_TSC_DEADLINE, 1000000), 0);
	mmio_w(l, APIC_LVT_TIMER, APIC_TIMER_ONESHOT | 0xec);
	CHECK_EQ(lapic_timer_next_deadline(l), LAPIC_NO_DEADLINE);

	/* a 2 GHz TSC: the deadline in ns rounds up so the TSC has reached it */
	machine_setup_raw(1, false);
	l = lapics[0];
	lapic_destroy(l);
	struct lapic_config cfg = { .apic_id = 0, .tsc_hz = 2000000000ull };
	CHECK_EQ(lapic_init(l, &cfg, &fake_lapic_ops, &cpus[0]), 0);
	mmio_w(l, APIC_SVR, 0x1ff);
	fake_tsc_per_ns = 2;
	fake_now_ns = 100;
	mmio_w(l, APIC_LVT_TIMER, APIC_TIMER_TSC_DEADLINE | 0xec);
	CHECK_EQ(lapic_msr_write(l, MSR_IA32_TSC_DEADLINE, 1001), 0); /* TSC now 200 */
	CHECK_EQ(lapic_timer_next_deadline(l), 100u + 401u);
	CHECK(fake_tsc_at(NULL, lapic_timer_next_deadline(l)) >= 1001);
}

/* ---- IPIs ---- */

static void test_ipi_fixed_destinations_and_shorthands(void)
{
	machine_setup(4);
	for (unsigned i = 0; i < 4; i++)
		mmio_w(lapics[i], APIC_LDR, (1u << i) << 24);
	struct lapic *src = lapics[0];

	/* physical, to APIC id 2 */
	mmio_w(src, APIC_ICR_HIGH, 2u << 24);
	mmio_w(src, APIC_ICR_LOW, 0x40);
	CHECK_EQ(nr_sent, 1u);
	CHECK_EQ(sent[0].dest, 2u);
	CHECK_EQ(sent[0].vector, 0x40);
	CHECK_EQ(sent[0].delivery_mode, APIC_DM_FIXED);
	CHECK(!sent[0].dest_logical && !sent[0].x2apic_format);
	for (unsigned i = 0; i < 4; i++)
		CHECK_EQ(irr_has(lapics[i], 0x40), i == 2);
	CHECK_EQ(mmio_r(src, APIC_ICR_LOW) & APIC_LVT_DELIVERY_STATUS, 0u); /* already sent */
	CHECK_EQ(mmio_r(src, APIC_ICR_HIGH), 2u << 24);
	/* logical flat: 0x0A = CPUs 1 and 3 */
	mmio_w(src, APIC_ICR_HIGH, 0x0au << 24);
	mmio_w(src, APIC_ICR_LOW, APIC_ICR_DEST_LOGICAL | 0x41);
	for (unsigned i = 0; i < 4; i++)
		CHECK_EQ(irr_has(lapics[i], 0x41), i == 1 || i == 3);
	/* physical broadcast */
	mmio_w(src, APIC_ICR_HIGH, 0xffu << 24);
	mmio_w(src, APIC_ICR_LOW, 0x42);
	for (unsigned i = 0; i < 4; i++)
		CHECK(irr_has(lapics[i], 0x42));
	/* shorthands ignore the destination field */
	mmio_w(src, APIC_ICR_HIGH, 0);
	mmio_w(src, APIC_ICR_LOW, (APIC_SHORTHAND_OTHERS << 18) | 0x43);
	for (unsigned i = 0; i < 4; i++)
		CHECK_EQ(irr_has(lapics[i], 0x43), i != 0);
	mmio_w(src, APIC_ICR_LOW, (APIC_SHORTHAND_ALL << 18) | 0x44);
	for (unsigned i = 0; i < 4; i++)
		CHECK(irr_has(lapics[i], 0x44));
	unsigned before = nr_sent;
	mmio_w(src, APIC_ICR_LOW, (APIC_SHORTHAND_SELF << 18) | 0x45);
	CHECK_EQ(nr_sent, before); /* accepted locally, not sent on the bus */
	for (unsigned i = 0; i < 4; i++)
		CHECK_EQ(irr_has(lapics[i], 0x45), i == 0);
	/* an illegal vector is not sent: ESR send error, error LVT interrupt */
	mmio_w(src, APIC_LVT_ERROR, 0xfe);
	mmio_w(src, APIC_ICR_LOW, 0x05 | (APIC_SHORTHAND_OTHERS << 18));
	CHECK_EQ(nr_sent, before);
	CHECK(irr_has(src, 0xfe));
	mmio_w(src, APIC_ESR, 0);
	CHECK_EQ(mmio_r(src, APIC_ESR), APIC_ESR_SEND_ILLEGAL_VECTOR);
	/* cluster model: LDR 0x12 = cluster 1, member bit 1; 0x13 reaches it, 0x22 does not */
	mmio_w(lapics[3], APIC_DFR, 0x0fffffff);
	mmio_w(lapics[3], APIC_LDR, 0x12u << 24);
	mmio_w(src, APIC_ICR_HIGH, 0x22u << 24);
	mmio_w(src, APIC_ICR_LOW, APIC_ICR_DEST_LOGICAL | 0x46);
	CHECK(!irr_has(lapics[3], 0x46));
	mmio_w(src, APIC_ICR_HIGH, 0x13u << 24);
	mmio_w(src, APIC_ICR_LOW, APIC_ICR_DEST_LOGICAL | 0x46);
	CHECK(irr_has(lapics[3], 0x46));
	/* a hardware-disabled APIC receives nothing */
	CHECK_EQ(lapic_set_base(lapics[2], 0xfee00000), 0);
	mmio_w(src, APIC_ICR_LOW, (APIC_SHORTHAND_ALL << 18) | 0x47);
	CHECK(irr_has(lapics[1], 0x47));
	CHECK(!lapic_mmio_read(lapics[2], APIC_IRR, &before, 4)); /* no MMIO page either */
	CHECK_EQ(lapic_set_base(lapics[2], 0xfee00000 | APIC_BASE_EN), 0);
	CHECK(!irr_has(lapics[2], 0x47));
}

static void test_ipi_init_sipi_nmi(void)
{
	machine_setup(2);
	struct lapic *bsp = lapics[0], *ap = lapics[1];
	struct lapic_events ev;

	/* Linux's wakeup sequence: INIT assert, INIT de-assert, SIPI, SIPI */
	mmio_w(bsp, APIC_ICR_HIGH, 1u << 24);
	mmio_w(bsp, APIC_ICR_LOW, APIC_ICR_TRIGGER_LEVEL | APIC_ICR_LEVEL_ASSERT |
					  (APIC_DM_INIT << 8));
	CHECK_EQ(sent[0].delivery_mode, APIC_DM_INIT);
	CHECK_EQ(lapic_pending(ap), LAPIC_PENDING_INIT);
	CHECK_EQ(cpus[1].kicks, 1u);
	CHECK(lapic_take_events(ap, &ev));
	CHECK(ev.init && !ev.sipi && !ev.nmi);
	lapic_reset(ap); /* what the CPU core does on INIT */
	mmio_w(bsp, APIC_ICR_LOW, APIC_ICR_TRIGGER_LEVEL | (APIC_DM_INIT << 8));
	CHECK_EQ(lapic_pending(ap), 0u); /* de-assert: no effect */
	mmio_w(bsp, APIC_ICR_LOW, (APIC_DM_STARTUP << 8) | 0x9a);
	CHECK_EQ(lapic_pending(ap), LAPIC_PENDING_SIPI);
	CHECK(lapic_take_events(ap, &ev));
	CHECK(ev.sipi && !ev.init);
	CHECK_EQ(ev.sipi_vector, 0x9a); /* the AP starts at 0x9A000 in real mode */
	CHECK(!lapic_take_events(ap, &ev));
	/* NMI, also to a software-disabled APIC; vector ignored */
	mmio_w(ap, APIC_SVR, 0xff);
	mmio_w(bsp, APIC_ICR_LOW, APIC_DM_NMI << 8);
	CHECK_EQ(lapic_pending(ap), LAPIC_PENDING_NMI);
	CHECK(lapic_take_events(ap, &ev) && ev.nmi);
	CHECK_EQ(lapic_pending(ap), 0u);
	/* LINT1 as NMI (the usual LVT LINT1 setting) */
	mmio_w(bsp, APIC_LVT_LINT1, APIC_DM_NMI << 8);
	lapic_set_lint(bsp, 1);
	CHECK_EQ(lapic_pending(bsp), LAPIC_PENDING_NMI);
	lapic_set_lint(ap, 1); /* masked */
	CHECK_EQ(lapic_pending(ap), 0u);
}

/* ---- x2APIC and IA32_APIC_BASE ---- */

static void test_x2apic_msr_mapping(void)
{
	machine_setup(2);
	struct lapic *l = lapics[1];
	uint64_t v;

	/* x2APIC MSRs #GP outside x2APIC mode */
	CHECK_EQ(lapic_msr_read(l, 0x802, &v), -EINVAL);
	CHECK(lapic_msr_owns(0x1b) && lapic_msr_owns(0x6e0) && lapic_msr_owns(0x8ff));
	CHECK(!lapic_msr_owns(0x7ff) && !lapic_msr_owns(0x900));
	CHECK_EQ(lapic_msr_write(l, MSR_IA32_APIC_BASE,
				 0xfee00000 | APIC_BASE_EN | APIC_BASE_EXTD), 0);
	CHECK_EQ(lapic_get_base(l), 0xfee00000 | APIC_BASE_EN | APIC_BASE_EXTD);
	CHECK(!lapic_mmio_read(l, APIC_ID, &v, 4)); /* the MMIO page is gone */
	CHECK(!lapic_mmio_write(l, APIC_TPR, &v, 4));
	CHECK_EQ(lapic_msr_read(l, 0x802, &v), 0);
	CHECK_EQ(v, 1u); /* 32-bit id, not shifted */
	CHECK_EQ(lapic_msr_read(l, 0x803, &v), 0);
	CHECK_EQ(v, 0x50014u);
	CHECK_EQ(lapic_msr_read(l, 0x80d, &v), 0);
	CHECK_EQ(v, 0x2u); /* cluster 0, bit 1 */
	CHECK_EQ(lapic_msr_read(l, 0x80f, &v), 0);
	CHECK_EQ(v, 0x1ffu); /* SVR kept across the switch */
	/* registers that do not exist, or cannot be read / written this way */
	CHECK_EQ(lapic_msr_read(l, 0x80e, &v), -EINVAL); /* DFR */
	CHECK_EQ(lapic_msr_read(l, 0x831, &v), -EINVAL); /* ICR high */
	CHECK_EQ(lapic_msr_read(l, 0x809, &v), -EINVAL); /* APR */
	CHECK_EQ(lapic_msr_read(l, 0x80b, &v), -EINVAL); /* EOI: write-only */
	CHECK_EQ(lapic_msr_read(l, 0x83f, &v), -EINVAL); /* SELF IPI: write-only */
	CHECK_EQ(lapic_msr_read(l, 0x82f, &v), -EINVAL); /* CMCI */
	CHECK_EQ(lapic_msr_read(l, 0x8ff, &v), -EINVAL);
	CHECK_EQ(lapic_msr_write(l, 0x802, 5), -EINVAL); /* ID read-only */
	CHECK_EQ(lapic_msr_write(l, 0x80d, 5), -EINVAL); /* LDR read-only */
	CHECK_EQ(lapic_msr_write(l, 0x839, 5), -EINVAL); /* current count */
	CHECK_EQ(lapic_msr_write(l, 0x821, 5), -EINVAL); /* IRR */
	CHECK_EQ(lapic_msr_write(l, 0x80b, 1), -EINVAL); /* EOI must be 0 */
	CHECK_EQ(lapic_msr_write(l, 0x828, 1), -EINVAL); /* ESR must be 0 */
	CHECK_EQ(lapic_msr_write(l, 0x808, 0x100), -EINVAL); /* TPR reserved bits */
	CHECK_EQ(lapic_msr_write(l, 0x808, 1ull << 32), -EINVAL);
	CHECK_EQ(lapic_msr_write(l, 0x808, 0x20), 0);
	CHECK_EQ(lapic_msr_read(l, 0x808, &v), 0);
	CHECK_EQ(v, 0x20u);
	CHECK_EQ(lapic_msr_read(l, 0x80a, &v), 0); /* PPR */
	CHECK_EQ(v, 0x20u);
	/* SELF IPI, then EOI through MSRs */
	CHECK_EQ(lapic_msr_write(l, 0x83f, 0x51), 0);
	CHECK_EQ(lapic_msr_read(l, 0x822, &v), 0); /* IRR word 2: vectors 0x40–0x5F */
	CHECK_EQ(v, 1u << (0x51 - 0x40));
	CHECK_EQ(take_interrupt(l), 0x51);
	CHECK_EQ(lapic_msr_read(l, 0x812, &v), 0); /* ISR word 2 */
	CHECK_EQ(v, 1u << (0x51 - 0x40));
	CHECK_EQ(lapic_msr_write(l, 0x80b, 0), 0);
	CHECK_EQ(lapic_msr_read(l, 0x812, &v), 0);
	CHECK_EQ(v, 0u);
	CHECK_EQ(lapic_msr_write(l, 0x83f, 0x100), -EINVAL);
	/* the ICR is one 64-bit MSR with a 32-bit destination */
	CHECK_EQ(lapic_msr_write(l, 0x830, (0ull << 32) | 0x61), 0);
	CHECK_EQ(nr_sent, 1u);
	CHECK(sent[0].x2apic_format);
	CHECK_EQ(sent[0].dest, 0u);
	CHECK(irr_has(lapics[0], 0x61));
	CHECK_EQ(lapic_msr_read(l, 0x830, &v), 0);
	CHECK_EQ(v, 0x61u);
	CHECK_EQ(lapic_msr_write(l, 0x830, (0xffffffffull << 32) | 0x62), 0); /* broadcast */
	CHECK(irr_has(lapics[0], 0x62));
	CHECK_EQ(lapic_msr_read(l, 0x820 + 0x62 / 32, &v), 0);
	CHECK(v & (1u << (0x62 % 32)));
	CHECK_EQ(lapic_msr_write(l, 0x830, (0xffull << 32) | 0x63), 0); /* not a broadcast */
	CHECK(!irr_has(lapics[0], 0x63));
	CHECK_EQ(lapic_msr_write(l, 0x830, 1ull << 13), -EINVAL); /* reserved bit */
	/* the timer registers through MSRs */
	CHECK_EQ(lapic_msr_write(l, 0x83e, 0xb), 0);
	CHECK_EQ(lapic_msr_write(l, 0x832, 0xec), 0);
	CHECK_EQ(lapic_msr_write(l, 0x838, 500), 0);
	CHECK_EQ(lapic_timer_next_deadline(l), 500u);
	fake_now_ns = 100;
	CHECK_EQ(lapic_msr_read(l, 0x839, &v), 0);
	CHECK_EQ(v, 400u);
}

static void test_apic_base_transitions(void)
{
	machine_setup(2);
	struct lapic *l = lapics[1];
	const uint64_t base = 0xfee00000;

	CHECK_EQ(lapic_set_base(l, base | APIC_BASE_EXTD), -EINVAL); /* EN=0, EXTD=1 invalid */
	CHECK_EQ(lapic_set_base(l, base | APIC_BASE_EN | 0x1), -EINVAL); /* reserved bit */
	CHECK_EQ(lapic_set_base(l, base | APIC_BASE_EN | (1ull << 46)), -EINVAL); /* > MAXPHY */
	/* the BSP flag is the platform's */
	CHECK_EQ(lapic_set_base(l, base | APIC_BASE_EN | APIC_BASE_BSP), 0);
	CHECK_EQ(lapic_get_base(l), base | APIC_BASE_EN);
	/* xAPIC → x2APIC → (not xAPIC) → disabled → (not x2APIC) → xAPIC */
	lapic_deliver(l, 0x70, false);
	CHECK_EQ(lapic_set_base(l, base | APIC_BASE_EN | APIC_BASE_EXTD), 0);
	CHECK(lapic_pending(l) & LAPIC_PENDING_INTR); /* state survives the switch */
	CHECK_EQ(lapic_set_base(l, base | APIC_BASE_EN), -EINVAL);
	CHECK_EQ(lapic_set_base(l, base), 0);
	CHECK_EQ(lapic_get_base(l), base);
	CHECK_EQ(lapic_pending(l), 0u); /* disabling reset the APIC */
	CHECK(!lapic_deliver(l, 0x70, false));
	CHECK_EQ(lapic_set_base(l, base | APIC_BASE_EN | APIC_BASE_EXTD), -EINVAL);
	CHECK_EQ(lapic_set_base(l, base | APIC_BASE_EN), 0);
	CHECK_EQ(mmio_r(l, APIC_SVR), 0xffu); /* power-on values */
	CHECK_EQ(mmio_r(l, APIC_LVT_TIMER), APIC_LVT_MASKED);
	CHECK_EQ(mmio_r(l, APIC_ID), 1u << 24);
	/* a relocated base moves the MMIO window */
	CHECK_EQ(lapic_set_base(l, 0xfed00000 | APIC_BASE_EN), 0);
	CHECK_EQ(lapic_mmio_base(l), 0xfed00000u);
}

static void test_destination_matching_pure(void)
{
	struct apic_identity x2 = { .id = 0x13, .ldr = (1u << 16) | (1u << 3), .x2apic = true,
				    .hw_enabled = true };
	struct apic_identity flat = { .id = 2, .ldr = 0x04000000, .dfr = 0xffffffff,
				      .hw_enabled = true };
	struct apic_message m = { .dest_logical = true, .x2apic_format = true };

	m.dest = (1u << 16) | 0x8;
	CHECK(apic_match_destination(&x2, &m, false));
	m.dest = (1u << 16) | 0x7;
	CHECK(!apic_match_destination(&x2, &m, false));
	m.dest = (2u << 16) | 0x8;
	CHECK(!apic_match_destination(&x2, &m, false));
	m.dest = 0xffffffff;
	CHECK(apic_match_destination(&x2, &m, false));
	m.dest_logical = false;
	m.dest = 0x13;
	CHECK(apic_match_destination(&x2, &m, false));
	m.dest = 0x113;
	CHECK(!apic_match_destination(&x2, &m, false));
	/* xAPIC physical compares the 8-bit id; 0xFF is broadcast */
	m.x2apic_format = false;
	m.dest = 2;
	CHECK(apic_match_destination(&flat, &m, false));
	m.dest = 0xff;
	CHECK(apic_match_destination(&flat, &m, false));
	m.dest_logical = true;
	m.dest = 0x05;
	CHECK(apic_match_destination(&flat, &m, false));
	m.dest = 0x0b;
	CHECK(!apic_match_destination(&flat, &m, false));
	/* shorthands */
	m.shorthand = APIC_SHORTHAND_SELF;
	CHECK(apic_match_destination(&flat, &m, true) && !apic_match_destination(&flat, &m, false));
	m.shorthand = APIC_SHORTHAND_OTHERS;
	CHECK(!apic_match_destination(&flat, &m, true) && apic_match_destination(&flat, &m, false));
	m.shorthand = APIC_SHORTHAND_ALL;
	CHECK(apic_match_destination(&flat, &m, true));
	flat.hw_enabled = false;
	CHECK(!apic_match_destination(&flat, &m, true));
}

static void test_msi_decode(void)
{
	struct apic_message m;

	/* virtio's MSI-X as Linux programs it: physical, APIC id 3, vector 0x41, edge */
	CHECK_EQ(apic_msi_decode(0xfee03000, 0x0041, &m), 0);
	CHECK_EQ(m.dest, 3u);
	CHECK_EQ(m.vector, 0x41);
	CHECK_EQ(m.delivery_mode, APIC_DM_FIXED);
	CHECK(!m.dest_logical && !m.redirection_hint && !m.level_trigger && m.assert);
	CHECK(!m.x2apic_format);
	/* logical, redirection hint, lowest priority, level assert */
	CHECK_EQ(apic_msi_decode(0xfee0f00c, 0xc122, &m), 0);
	CHECK_EQ(m.dest, 0x0fu);
	CHECK(m.dest_logical && m.redirection_hint && m.level_trigger && m.assert);
	CHECK_EQ(m.delivery_mode, APIC_DM_LOWEST);
	CHECK_EQ(m.vector, 0x22);
	/* NMI */
	CHECK_EQ(apic_msi_decode(0xfee00000, 0x0400, &m), 0);
	CHECK_EQ(m.delivery_mode, APIC_DM_NMI);
	/* KVM's extended destination id in address bits 11:5 */
	CHECK_EQ(apic_msi_decode(0xfee00000 | (0x12 << 12) | (0x3 << 5), 0x30, &m), 0);
	CHECK_EQ(m.dest, 0x312u);
	/* not an MSI address */
	CHECK_EQ(apic_msi_decode(0xfed00000, 0x41, &m), -EINVAL);
	CHECK_EQ(apic_msi_decode(0x1fee00000ull, 0x41, &m), -EINVAL);
	/* routed: MSI to APIC id 1 of 2 */
	machine_setup(2);
	CHECK_EQ(apic_msi_decode(0xfee01000, 0x0049, &m), 0);
	CHECK_EQ(apic_bus_deliver(lapics, nr_cpus, &m, -1), 1);
	CHECK(irr_has(lapics[1], 0x49) && !irr_has(lapics[0], 0x49));
	CHECK_EQ(apic_msi_decode(0xfeeff000, 0x004a, &m), 0); /* broadcast */
	CHECK_EQ(apic_bus_deliver(lapics, nr_cpus, &m, -1), 2);
}

/* ---- kvmclock ---- */

static uint64_t exact_ns(uint64_t system_ns, uint64_t delta, uint64_t hz)
{
	return system_ns + (uint64_t)((unsigned __int128)delta * 1000000000ull / hz);
}

static void test_pvclock_guest_formula_gives_back_nanoseconds(void)
{
	static const uint64_t rates[] = { 1000000000ull, 2500000000ull, 3000000000ull,
					  1800000000ull, 2893421000ull, 100000000ull,
					  3579545ull, 12000000000ull };
	static const uint64_t deltas[] = { 0, 1, 999, 1000000, 1000000007ull, 10000000000ull,
					   123456789012ull };
	uint64_t buf[8] __attribute__((aligned(64))) = { 0 };
	struct pvclock_vcpu_time_info *ti = (void *)buf;

	for (unsigned r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
		struct pvclock_sample s = { .tsc = 0x123456789abcull + r, .system_ns = 5000000000ull,
					    .tsc_hz = rates[r], .flags = PVCLOCK_TSC_STABLE_BIT };
		uint32_t before = ti->version;

		CHECK_EQ(pvclock_update_time_info(ti, &s), 0);
		CHECK_EQ(ti->version, before + 2);
		CHECK_EQ(ti->version & 1, 0u);
		CHECK_EQ(ti->tsc_timestamp, s.tsc);
		CHECK_EQ(ti->system_time, s.system_ns);
		CHECK_EQ(ti->flags, PVCLOCK_TSC_STABLE_BIT);
		CHECK(ti->tsc_to_system_mul >= 0x80000000u);
		for (unsigned d = 0; d < sizeof(deltas) / sizeof(deltas[0]); d++) {
			uint64_t want = exact_ns(s.system_ns, deltas[d], rates[r]);
			uint64_t got = pvclock_read_ns(ti, s.tsc + deltas[d]);
			uint64_t err = got > want ? got - want : want - got;
			/* the 32-bit multiplier is exact to 2^-31 relative, plus truncation */
			uint64_t allowed = 2 + ((want - s.system_ns) >> 30);

			if (rates[r] == 1000000000ull)
				allowed = 0; /* the emu core's TSC: exact */
			CHECK(err <= allowed);
		}
	}
	/* the emu core's 1 GHz TSC scale */
	uint32_t mul;
	int8_t shift;
	CHECK_EQ(pvclock_scale(PVCLOCK_EMU_TSC_HZ, &mul, &shift), 0);
	CHECK_EQ(mul, 0x80000000u);
	CHECK_EQ(shift, 1);
	CHECK_EQ(pvclock_scale(0, &mul, &shift), -EINVAL);
	CHECK_EQ(pvclock_scale(3000000000ull, &mul, &shift), 0);
	CHECK_EQ(shift, -1); /* ns per tick 1/3: delta >> 1, × 2/3 · 2^32 */
}

static void test_pvclock_version_protocol_and_layout(void)
{
	uint64_t buf[4] __attribute__((aligned(8)));
	struct pvclock_vcpu_time_info *ti = (void *)buf;
	struct pvclock_sample s = { .tsc = 1000, .system_ns = 2000, .tsc_hz = PVCLOCK_EMU_TSC_HZ };

	CHECK_EQ(__builtin_offsetof(struct pvclock_vcpu_time_info, tsc_timestamp), 8u);
	CHECK_EQ(__builtin_offsetof(struct pvclock_vcpu_time_info, system_time), 16u);
	CHECK_EQ(__builtin_offsetof(struct pvclock_vcpu_time_info, tsc_to_system_mul), 24u);
	CHECK_EQ(__builtin_offsetof(struct pvclock_vcpu_time_info, tsc_shift), 28u);
	CHECK_EQ(__builtin_offsetof(struct pvclock_vcpu_time_info, flags), 29u);
	memset(buf, 0xa5, sizeof(buf)); /* guest junk: an odd version */
	CHECK_EQ(pvclock_update_time_info(ti, &s), 0);
	CHECK_EQ(ti->version & 1, 0u);
	CHECK_EQ(ti->pad0, 0xa5a5a5a5u); /* padding untouched */
	CHECK_EQ(pvclock_read_ns(ti, 1000), 2000u);
	CHECK_EQ(pvclock_read_ns(ti, 1000 + 123456789), 2000u + 123456789);
	uint32_t v = ti->version;
	CHECK_EQ(pvclock_update_time_info(ti, &s), 0);
	CHECK_EQ(ti->version, v + 2);
	CHECK_EQ(pvclock_update_time_info((uint8_t *)buf + 4, &s), -EINVAL); /* misaligned */
	CHECK_EQ(ti->version, v + 2);

	uint64_t gpa;
	CHECK(pvclock_system_time_msr(0x12340 | 1, &gpa));
	CHECK_EQ(gpa, 0x12340u);
	CHECK(!pvclock_system_time_msr(0x12340, &gpa)); /* disabled */
	CHECK(!pvclock_system_time_msr(0x12344 | 1, &gpa)); /* misaligned */

	uint32_t wbuf[3] = { 7, 0, 0 };
	struct pvclock_wall_clock *wc = (void *)wbuf;
	CHECK_EQ(pvclock_update_wall_clock(wc, 1700000000123456789ull), 0);
	CHECK_EQ(wc->sec, 1700000000u);
	CHECK_EQ(wc->nsec, 123456789u);
	CHECK_EQ(wc->version, 10u); /* 7 was odd: 8, then 9 during, 10 after */
	CHECK_EQ(pvclock_update_wall_clock(wc, 0), 0);
	CHECK_EQ(wc->version, 12u);
}

/* ---- threads ---- */

#define IPI_THREADS 3
#define IPIS_PER_THREAD 20000
static unsigned senders_done;

static void *ipi_sender(void *arg)
{
	unsigned index = (unsigned)(uintptr_t)arg;
	struct apic_message m = { .dest = 0, .vector = (uint8_t)(0x40 + 0x10 * index),
				  .delivery_mode = APIC_DM_FIXED, .assert = true };

	for (unsigned i = 0; i < IPIS_PER_THREAD; i++)
		apic_bus_deliver(lapics, nr_cpus, &m, (int)index + 1);
	__atomic_add_fetch(&senders_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void test_deliveries_from_other_threads_race_with_acceptance(void)
{
	pthread_t threads[IPI_THREADS];
	unsigned taken = 0;

	machine_setup(IPI_THREADS + 1);
	struct lapic *l = lapics[0];

	for (unsigned i = 0; i < IPI_THREADS; i++)
		pthread_create(&threads[i], NULL, ipi_sender, (void *)(uintptr_t)i);
	/* the vCPU: take and EOI whatever is pending until the senders are done */
	while (__atomic_load_n(&senders_done, __ATOMIC_ACQUIRE) < IPI_THREADS) {
		if (lapic_pending(l) & LAPIC_PENDING_INTR) {
			int v = take_interrupt(l);

			CHECK(v == 0x40 || v == 0x50 || v == 0x60);
			lapic_eoi(l);
			taken++;
		}
	}
	for (unsigned i = 0; i < IPI_THREADS; i++)
		pthread_join(threads[i], NULL);
	while (take_interrupt(l) >= 0) {
		lapic_eoi(l);
		taken++;
	}
	/* IRR coalesces repeated vectors, so fewer may be taken than sent, but at least one of
	 * each, and nothing is left behind */
	CHECK(taken >= IPI_THREADS);
	CHECK(taken <= IPI_THREADS * IPIS_PER_THREAD);
	CHECK_EQ(l->stat_accepted, IPI_THREADS * IPIS_PER_THREAD);
	CHECK_EQ(lapic_pending(l), 0u);
	CHECK_EQ(mmio_r(l, APIC_ISR + 0x20), 0u);
}

int main(void)
{
	RUN_TEST(test_lapic_power_on_register_values);
	RUN_TEST(test_lapic_read_only_and_reserved_registers);
	RUN_TEST(test_lapic_software_disable_masks_lvt_and_drops_fixed);
	RUN_TEST(test_lapic_priority_ppr_and_tpr);
	RUN_TEST(test_lapic_eoi_retires_highest_in_service);
	RUN_TEST(test_lapic_kick_only_when_something_new_is_pending);
	RUN_TEST(test_lapic_level_triggered_sets_tmr_and_broadcasts_eoi);
	RUN_TEST(test_ioapic_registers);
	RUN_TEST(test_ioapic_edge_pin_delivers_on_rising_edge_only);
	RUN_TEST(test_ioapic_level_remote_irr_cycle_with_lapic_eoi);
	RUN_TEST(test_ioapic_version_11_has_no_eoi_register);
	RUN_TEST(test_ioapic_nmi_and_logical_destinations);
	RUN_TEST(test_timer_one_shot_fires_once_at_the_deadline);
	RUN_TEST(test_timer_periodic_rearms_and_coalesces);
	RUN_TEST(test_timer_divide_configuration);
	RUN_TEST(test_timer_tsc_deadline);
	RUN_TEST(test_ipi_fixed_destinations_and_shorthands);
	RUN_TEST(test_ipi_init_sipi_nmi);
	RUN_TEST(test_x2apic_msr_mapping);
	RUN_TEST(test_apic_base_transitions);
	RUN_TEST(test_destination_matching_pure);
	RUN_TEST(test_msi_decode);
	RUN_TEST(test_pvclock_guest_formula_gives_back_nanoseconds);
	RUN_TEST(test_pvclock_version_protocol_and_layout);
	RUN_TEST(test_deliveries_from_other_threads_race_with_acceptance);
	return TEST_EXIT();
}
