/* The software CPU's local APIC: see lapic.h for what is modelled and the threading rules.
 * Register semantics from SDM Vol. 3 chapter 11 (section numbers below). */
#include "cpu/emu/lapic.h"

#include <errno.h>
#include <string.h>

#define NSEC_PER_SEC 1000000000ull

/* Work collected while the lock is held and done after it is released, so that callbacks may
 * reach other LAPICs, the IOAPIC or the vCPU's wake-up machinery. */
struct lapic_outbox {
	unsigned pending_before;
	bool send;
	struct apic_message msg;
	int eoi_vector; /* -1: none */
};

/* ---- 256-bit vector sets (IRR, ISR, TMR) ---- */

static void vec_set(uint32_t *set, unsigned v)
{
	set[v / 32] |= 1u << (v % 32);
}

static void vec_clear(uint32_t *set, unsigned v)
{
	set[v / 32] &= ~(1u << (v % 32));
}

static bool vec_test(const uint32_t *set, unsigned v)
{
	return set[v / 32] & (1u << (v % 32));
}

/* The highest vector in the set, or -1. */
static int vec_highest(const uint32_t *set)
{
	for (int i = 7; i >= 0; i--)
		if (set[i])
			return i * 32 + 31 - __builtin_clz(set[i]);
	return -1;
}

/* ---- state helpers, all with the lock held ---- */

static bool x2apic_mode(const struct lapic *l)
{
	return l->base & APIC_BASE_EXTD;
}

static bool hw_enabled(const struct lapic *l)
{
	return l->base & APIC_BASE_EN;
}

static bool sw_enabled(const struct lapic *l)
{
	return l->svr & APIC_SVR_ENABLE;
}

static unsigned timer_mode(const struct lapic *l)
{
	return l->lvt[LAPIC_LVT_TIMER] & APIC_TIMER_MODE_MASK;
}

/* The logical x2APIC id (SDM §11.12.10.2): cluster = id[19:4], one bit for id[3:0]. */
static uint32_t x2apic_ldr(uint32_t id)
{
	return ((id >> 4) << 16) | (1u << (id & 0xf));
}

/* §11.8.3.1: PPR = TPR if TPR[7:4] >= ISRV[7:4], else ISRV[7:4]:0. */
static uint32_t ppr_locked(const struct lapic *l)
{
	int isrv = vec_highest(l->isr);

	if (isrv < 0)
		isrv = 0;
	if ((l->tpr >> 4) >= ((unsigned)isrv >> 4))
		return l->tpr & 0xff;
	return (unsigned)isrv & 0xf0;
}

/* §11.8.3.1 (APR, used only for reads): the highest of TPR, ISRV and IRRV classes. */
static uint32_t apr_locked(const struct lapic *l)
{
	int isrv = vec_highest(l->isr), irrv = vec_highest(l->irr);
	unsigned tpr = l->tpr & 0xff, isr_class = isrv < 0 ? 0 : (unsigned)isrv >> 4;
	unsigned irr_class = irrv < 0 ? 0 : (unsigned)irrv >> 4;

	if ((tpr >> 4) >= isr_class && (tpr >> 4) >= irr_class)
		return tpr;
	unsigned cls = isr_class > irr_class ? isr_class : irr_class;
	if ((tpr >> 4) > cls)
		cls = tpr >> 4;
	return cls << 4;
}

static int deliverable_vector_locked(const struct lapic *l)
{
	int irrv = vec_highest(l->irr);

	if (irrv < 0 || ((unsigned)irrv & 0xf0) <= (ppr_locked(l) & 0xf0))
		return -1;
	return irrv;
}

static void update_pending_locked(struct lapic *l)
{
	unsigned p = 0;

	if (deliverable_vector_locked(l) >= 0)
		p |= LAPIC_PENDING_INTR;
	if (l->events.nmi)
		p |= LAPIC_PENDING_NMI;
	if (l->events.init)
		p |= LAPIC_PENDING_INIT;
	if (l->events.sipi)
		p |= LAPIC_PENDING_SIPI;
	l->pending = p;
	__atomic_store_n(&l->pending_atomic, p, __ATOMIC_RELEASE);
}

static void lapic_lock(struct lapic *l, struct lapic_outbox *o)
{
	pthread_mutex_lock(&l->lock);
	o->pending_before = l->pending;
	o->send = false;
	o->eoi_vector = -1;
}

static void lapic_unlock(struct lapic *l, struct lapic_outbox *o)
{
	bool kick, timer_changed;
	uint64_t deadline = l->deadline_ns;

	update_pending_locked(l);
	kick = l->pending & ~o->pending_before;
	timer_changed = deadline != l->reported_deadline_ns;
	l->reported_deadline_ns = deadline;
	pthread_mutex_unlock(&l->lock);

	if (o->send && l->ops->send)
		l->ops->send(l->opaque, &o->msg);
	if (o->eoi_vector >= 0 && l->ops->eoi)
		l->ops->eoi(l->opaque, (uint8_t)o->eoi_vector);
	if (timer_changed && l->ops->timer_update)
		l->ops->timer_update(l->opaque, deadline);
	if (kick && l->ops->kick)
		l->ops->kick(l->opaque);
}

/* §11.5.3: an error sets ESR bits (visible after the next ESR write) and raises the error
 * LVT's interrupt. */
static void signal_error_locked(struct lapic *l, uint32_t bits)
{
	uint32_t lvt = l->lvt[LAPIC_LVT_ERROR];

	l->esr_pending |= bits;
	if (!(lvt & APIC_LVT_MASKED) && (lvt & 0xff) >= 16) {
		vec_set(l->irr, lvt & 0xff);
		vec_clear(l->tmr, lvt & 0xff);
	}
}

/* Fixed delivery into IRR (§11.8.4). A software-disabled APIC drops it (§11.4.7.2); vectors
 * 0–15 are illegal (§11.5.3). */
static bool accept_fixed_locked(struct lapic *l, unsigned vector, bool level)
{
	if (!hw_enabled(l) || !sw_enabled(l))
		return false;
	if (vector < 16) {
		signal_error_locked(l, APIC_ESR_RECEIVE_ILLEGAL_VECTOR);
		return false;
	}
	vec_set(l->irr, vector);
	if (level)
		vec_set(l->tmr, vector);
	else
		vec_clear(l->tmr, vector);
	l->stat_accepted++;
	return true;
}

static bool accept_message_locked(struct lapic *l, const struct apic_message *msg)
{
	if (!hw_enabled(l))
		return false;
	switch (msg->delivery_mode) {
	case APIC_DM_FIXED:
	case APIC_DM_LOWEST:
		return accept_fixed_locked(l, msg->vector, msg->level_trigger);
	case APIC_DM_NMI:
		l->events.nmi = true;
		return true;
	case APIC_DM_INIT:
		/* INIT level de-assert only synchronises arbitration ids on old APICs (§11.6.1). */
		if (msg->level_trigger && !msg->assert)
			return false;
		l->events.init = true;
		l->events.sipi = false; /* a SIPI counts only after this INIT */
		return true;
	case APIC_DM_STARTUP:
		l->events.sipi = true;
		l->events.sipi_vector = msg->vector;
		return true;
	default: /* SMI, ExtINT (no 8259 behind this CPU), reserved */
		return false;
	}
}

/* ---- the timer (§11.5.4) ---- */

/* Divide configuration bits 0, 1, 3: 0b111 is ÷1, otherwise ÷2^(value+1). */
static uint32_t timer_divisor(uint32_t dcr)
{
	unsigned v = (dcr & 3) | ((dcr & 8) >> 1);

	return v == 7 ? 1 : 2u << v;
}

static void timer_stop_locked(struct lapic *l)
{
	l->deadline_ns = LAPIC_NO_DEADLINE;
}

/* A write of the initial count (re)starts a one-shot or periodic count from it; 0 stops it. */
static void timer_start_locked(struct lapic *l)
{
	uint64_t now, period;

	if (timer_mode(l) == APIC_TIMER_TSC_DEADLINE || !l->timer_initial) {
		timer_stop_locked(l);
		return;
	}
	now = l->ops->now_ns(l->opaque);
	period = (uint64_t)l->timer_initial * timer_divisor(l->timer_divide);
	if (timer_mode(l) == APIC_TIMER_PERIODIC && period < LAPIC_MIN_PERIOD_NS)
		period = LAPIC_MIN_PERIOD_NS;
	l->timer_start_ns = now;
	l->timer_period_ns = period;
	l->deadline_ns = now + period;
}

static bool timer_fire_locked(struct lapic *l, uint64_t now)
{
	uint32_t lvt = l->lvt[LAPIC_LVT_TIMER];

	if (l->deadline_ns == LAPIC_NO_DEADLINE || now < l->deadline_ns)
		return false;
	switch (timer_mode(l)) {
	case APIC_TIMER_PERIODIC: {
		uint64_t period = l->timer_period_ns, missed;

		if (period < LAPIC_MIN_PERIOD_NS) /* it was started as a one-shot */
			period = l->timer_period_ns = LAPIC_MIN_PERIOD_NS;
		/* Missed periods are coalesced: one interrupt, the next expiry stays on the grid. */
		missed = (now - l->deadline_ns) / period;
		l->timer_start_ns = l->deadline_ns + missed * period;
		l->deadline_ns = l->timer_start_ns + period;
		break;
	}
	case APIC_TIMER_TSC_DEADLINE:
		l->tsc_deadline = 0; /* §11.5.4.1: the MSR reads 0 once the timer fired */
		timer_stop_locked(l);
		break;
	default:
		timer_stop_locked(l);
		break;
	}
	l->stat_timer_fired++;
	if (!(lvt & APIC_LVT_MASKED))
		accept_fixed_locked(l, lvt & 0xff, false);
	return true;
}

static uint32_t timer_current_count_locked(struct lapic *l)
{
	uint64_t now, remaining, count, divisor = timer_divisor(l->timer_divide);

	if (timer_mode(l) == APIC_TIMER_TSC_DEADLINE || l->deadline_ns == LAPIC_NO_DEADLINE)
		return 0;
	now = l->ops->now_ns(l->opaque);
	if (now < l->deadline_ns)
		remaining = l->deadline_ns - now;
	else if (timer_mode(l) == APIC_TIMER_PERIODIC && l->timer_period_ns)
		remaining = l->timer_period_ns - (now - l->deadline_ns) % l->timer_period_ns;
	else
		return 0; /* a one-shot that expired, before lapic_timer_fire() saw it */
	count = remaining / divisor;
	return count > l->timer_initial ? l->timer_initial : (uint32_t)count;
}

static void tsc_deadline_write_locked(struct lapic *l, uint64_t value)
{
	uint64_t now, tsc, hz = l->config.tsc_hz;

	/* §11.5.4.1: writes are ignored outside TSC-deadline mode; 0 disarms. */
	if (timer_mode(l) != APIC_TIMER_TSC_DEADLINE)
		return;
	l->tsc_deadline = value;
	if (!value) {
		timer_stop_locked(l);
		return;
	}
	now = l->ops->now_ns(l->opaque);
	tsc = l->ops->tsc_at(l->opaque, now);
	if (value <= tsc) {
		l->deadline_ns = now;
		timer_fire_locked(l, now);
		return;
	}
	/* Round up, so that the guest's TSC has reached the deadline when the interrupt comes. */
	unsigned __int128 delta = (unsigned __int128)(value - tsc) * NSEC_PER_SEC + hz - 1;
	delta /= hz;
	l->deadline_ns = delta > UINT64_MAX - now - 1 ? UINT64_MAX - 1 : now + (uint64_t)delta;
}

/* ---- reset and IA32_APIC_BASE ---- */

static void reset_locked(struct lapic *l)
{
	l->tpr = 0;
	l->ldr = x2apic_mode(l) ? x2apic_ldr(l->config.apic_id) : 0;
	l->dfr = 0xffffffff;
	l->svr = 0xff;
	l->esr = l->esr_pending = 0;
	l->icr_low = l->icr_high = 0;
	for (unsigned i = 0; i < LAPIC_NR_LVT; i++)
		l->lvt[i] = APIC_LVT_MASKED;
	l->timer_initial = l->timer_divide = 0;
	memset(l->irr, 0, sizeof(l->irr));
	memset(l->isr, 0, sizeof(l->isr));
	memset(l->tmr, 0, sizeof(l->tmr));
	l->timer_start_ns = l->timer_period_ns = 0;
	l->tsc_deadline = 0;
	timer_stop_locked(l);
}

int lapic_init(struct lapic *lapic, const struct lapic_config *config,
	       const struct lapic_ops *ops, void *opaque)
{
	int rc;

	memset(lapic, 0, sizeof(*lapic));
	if ((rc = pthread_mutex_init(&lapic->lock, NULL)))
		return -rc;
	lapic->ops = ops;
	lapic->opaque = opaque;
	lapic->config = *config;
	if (!lapic->config.phys_bits)
		lapic->config.phys_bits = 46;
	if (!lapic->config.tsc_hz)
		lapic->config.tsc_hz = NSEC_PER_SEC;
	lapic->base = LAPIC_DEFAULT_BASE | APIC_BASE_EN | (config->bsp ? APIC_BASE_BSP : 0);
	lapic->reported_deadline_ns = LAPIC_NO_DEADLINE;
	reset_locked(lapic);
	return 0;
}

void lapic_destroy(struct lapic *lapic)
{
	pthread_mutex_destroy(&lapic->lock);
}

void lapic_reset(struct lapic *lapic)
{
	struct lapic_outbox o;

	lapic_lock(lapic, &o);
	reset_locked(lapic); /* events stay: a SIPI may follow the INIT that led here */
	lapic_unlock(lapic, &o);
}

uint64_t lapic_get_base(struct lapic *lapic)
{
	uint64_t v;

	pthread_mutex_lock(&lapic->lock);
	v = lapic->base;
	pthread_mutex_unlock(&lapic->lock);
	return v;
}

uint64_t lapic_mmio_base(struct lapic *lapic)
{
	return lapic_get_base(lapic) & ~0xfffull;
}

/* §11.12.5: disabled (EN=0, EXTD=0), xAPIC (EN=1), x2APIC (EN=1, EXTD=1); EN=0 with EXTD=1 is
 * invalid, and x2APIC → xAPIC or disabled → x2APIC #GP. */
int lapic_set_base(struct lapic *lapic, uint64_t value)
{
	struct lapic_outbox o;
	uint64_t reserved = 0x2ffull | ~((1ull << lapic->config.phys_bits) - 1);
	bool en = value & APIC_BASE_EN, extd = value & APIC_BASE_EXTD;
	int rc = 0;

	lapic_lock(lapic, &o);
	bool was_en = hw_enabled(lapic), was_x2 = x2apic_mode(lapic);
	if ((value & reserved) || (!en && extd) || (was_x2 && en && !extd) ||
	    (!was_en && en && extd)) {
		rc = -EINVAL;
		goto out;
	}
	/* The BSP flag belongs to the platform, not to the guest. */
	lapic->base = (value & ~APIC_BASE_BSP) | (lapic->base & APIC_BASE_BSP);
	if (!en && was_en)
		reset_locked(lapic); /* a disabled APIC comes back in its power-on state */
	else if (extd && !was_x2)
		lapic->ldr = x2apic_ldr(lapic->config.apic_id);
out:
	lapic_unlock(lapic, &o);
	return rc;
}

/* ---- registers ---- */

static const uint32_t lvt_writable[LAPIC_NR_LVT] = {
	[LAPIC_LVT_TIMER] = 0xff | APIC_LVT_MASKED | APIC_TIMER_MODE_MASK,
	[LAPIC_LVT_THERMAL] = 0x7ff | APIC_LVT_MASKED,
	[LAPIC_LVT_PERF] = 0x7ff | APIC_LVT_MASKED,
	[LAPIC_LVT_LINT0] = 0x7ff | (1u << 13) | APIC_LVT_LEVEL | APIC_LVT_MASKED,
	[LAPIC_LVT_LINT1] = 0x7ff | (1u << 13) | APIC_LVT_MASKED, /* LINT1 is edge only */
	[LAPIC_LVT_ERROR] = 0xff | APIC_LVT_MASKED,
};

static int lvt_index(uint32_t offset)
{
	switch (offset) {
	case APIC_LVT_TIMER: return LAPIC_LVT_TIMER;
	case APIC_LVT_THERMAL: return LAPIC_LVT_THERMAL;
	case APIC_LVT_PERF: return LAPIC_LVT_PERF;
	case APIC_LVT_LINT0: return LAPIC_LVT_LINT0;
	case APIC_LVT_LINT1: return LAPIC_LVT_LINT1;
	case APIC_LVT_ERROR: return LAPIC_LVT_ERROR;
	default: return -1;
	}
}

/* Read the 32-bit register at `offset` (16-byte aligned). -EINVAL for registers that do not
 * exist in this mode or cannot be read (x2APIC: #GP; xAPIC: reads 0). */
static int reg_read_locked(struct lapic *l, uint32_t offset, uint32_t *value, bool x2)
{
	int lvt = lvt_index(offset);

	if (lvt >= 0) {
		*value = l->lvt[lvt];
		return 0;
	}
	if (offset >= APIC_ISR && offset < APIC_ISR + 0x80) {
		*value = l->isr[(offset - APIC_ISR) >> 4];
		return 0;
	}
	if (offset >= APIC_TMR && offset < APIC_TMR + 0x80) {
		*value = l->tmr[(offset - APIC_TMR) >> 4];
		return 0;
	}
	if (offset >= APIC_IRR && offset < APIC_IRR + 0x80) {
		*value = l->irr[(offset - APIC_IRR) >> 4];
		return 0;
	}
	switch (offset) {
	case APIC_ID: *value = x2 ? l->config.apic_id : l->config.apic_id << 24; return 0;
	case APIC_VERSION: *value = LAPIC_VERSION | (LAPIC_MAX_LVT << 16); return 0;
	case APIC_TPR: *value = l->tpr; return 0;
	case APIC_PPR: *value = ppr_locked(l); return 0;
	case APIC_LDR: *value = l->ldr; return 0;
	case APIC_SVR: *value = l->svr; return 0;
	case APIC_ESR: *value = l->esr; return 0;
	case APIC_ICR_LOW: *value = l->icr_low; return 0;
	case APIC_TIMER_INITIAL: *value = l->timer_initial; return 0;
	case APIC_TIMER_CURRENT: *value = timer_current_count_locked(l); return 0;
	case APIC_TIMER_DIVIDE: *value = l->timer_divide; return 0;
	}
	if (x2) /* APR, RRD, DFR, ICR high do not exist; EOI and SELF IPI are write-only */
		return -EINVAL;
	switch (offset) {
	case APIC_APR: *value = apr_locked(l); return 0;
	case APIC_DFR: *value = l->dfr; return 0;
	case APIC_ICR_HIGH: *value = l->icr_high; return 0;
	case APIC_EOI: /* write-only */
	case APIC_RRD: /* remote read is not supported (§11.6.1: "invalid" status) */
		*value = 0;
		return 0;
	}
	return -EINVAL;
}

static void eoi_locked(struct lapic *l, struct lapic_outbox *o)
{
	int v = vec_highest(l->isr);

	if (v < 0)
		return;
	vec_clear(l->isr, (unsigned)v);
	/* §11.8.5: a level-triggered vector's EOI is broadcast to the IOAPICs. */
	if (vec_test(l->tmr, (unsigned)v))
		o->eoi_vector = v;
}

/* §11.6.1: the ICR as a message. `dest` is ICR[63:56] (xAPIC) or ICR[63:32] (x2APIC). */
static void icr_send_locked(struct lapic *l, uint32_t low, uint32_t dest, bool x2,
			    struct lapic_outbox *o)
{
	struct apic_message msg = {
		.dest = dest,
		.vector = low & 0xff,
		.delivery_mode = (low >> 8) & 7,
		.shorthand = (low >> 18) & 3,
		.dest_logical = low & APIC_ICR_DEST_LOGICAL,
		.level_trigger = low & APIC_ICR_TRIGGER_LEVEL,
		.assert = low & APIC_ICR_LEVEL_ASSERT,
		.x2apic_format = x2,
	};

	switch (msg.delivery_mode) {
	case APIC_DM_FIXED:
	case APIC_DM_LOWEST:
		if (msg.vector < 16) {
			signal_error_locked(l, APIC_ESR_SEND_ILLEGAL_VECTOR);
			return;
		}
		break;
	case APIC_DM_NMI:
	case APIC_DM_INIT:
	case APIC_DM_STARTUP:
		break;
	default: /* SMI is not modelled; ExtINT and 3 are not valid in the ICR */
		return;
	}
	/* Only fixed interrupts are valid with the self shorthand: accepted right here. */
	if (msg.shorthand == APIC_SHORTHAND_SELF) {
		if (msg.delivery_mode == APIC_DM_FIXED)
			accept_fixed_locked(l, msg.vector, msg.level_trigger);
		return;
	}
	l->stat_ipis++;
	o->send = true;
	o->msg = msg;
}

/* Write the 32-bit register at `offset`. -EINVAL where the x2APIC MSR raises #GP (the xAPIC
 * caller ignores it). */
static int reg_write_locked(struct lapic *l, uint32_t offset, uint32_t value, bool x2,
			    struct lapic_outbox *o)
{
	int lvt = lvt_index(offset);

	if (lvt >= 0) {
		uint32_t old = l->lvt[lvt];

		value &= lvt_writable[lvt];
		if (!sw_enabled(l)) /* §11.4.7.2: the mask bits cannot be cleared */
			value |= APIC_LVT_MASKED;
		if (lvt == LAPIC_LVT_TIMER) {
			if ((value & APIC_TIMER_MODE_MASK) == APIC_TIMER_MODE_MASK)
				value &= ~APIC_TIMER_MODE_MASK; /* reserved mode: one-shot */
			/* §11.5.4.1: switching to or from TSC-deadline mode disarms the timer. */
			if (((old ^ value) & APIC_TIMER_MODE_MASK) &&
			    ((old & APIC_TIMER_MODE_MASK) == APIC_TIMER_TSC_DEADLINE ||
			     (value & APIC_TIMER_MODE_MASK) == APIC_TIMER_TSC_DEADLINE)) {
				l->timer_initial = 0;
				l->tsc_deadline = 0;
				timer_stop_locked(l);
			}
		}
		/* Read-only status bits (delivery status, remote IRR) stay as they were. */
		l->lvt[lvt] = value | (old & ~lvt_writable[lvt] & APIC_LVT_REMOTE_IRR);
		return 0;
	}
	switch (offset) {
	case APIC_TPR:
		if (x2 && (value & ~0xffu))
			return -EINVAL;
		l->tpr = value & 0xff;
		return 0;
	case APIC_EOI:
		if (x2 && value)
			return -EINVAL;
		eoi_locked(l, o);
		return 0;
	case APIC_LDR:
		if (x2)
			return -EINVAL; /* read-only in x2APIC mode */
		l->ldr = value & 0xff000000;
		return 0;
	case APIC_DFR:
		if (x2)
			return -EINVAL;
		l->dfr = value | 0x0fffffff; /* bits 27:0 are reserved and read as 1 */
		return 0;
	case APIC_SVR:
		if (x2 && (value & ~0x3ffu))
			return -EINVAL;
		l->svr = value & 0x3ff; /* vector, enable, focus checking (ignored) */
		if (!sw_enabled(l))
			for (unsigned i = 0; i < LAPIC_NR_LVT; i++)
				l->lvt[i] |= APIC_LVT_MASKED;
		return 0;
	case APIC_ESR:
		if (x2 && value)
			return -EINVAL;
		l->esr = l->esr_pending; /* §11.5.3: a write latches the errors since the last one */
		l->esr_pending = 0;
		return 0;
	case APIC_ICR_LOW:
		if (x2)
			return -EINVAL; /* one 64-bit MSR: lapic_msr_write() */
		l->icr_low = value & ~APIC_LVT_DELIVERY_STATUS;
		icr_send_locked(l, l->icr_low, l->icr_high >> 24, false, o);
		return 0;
	case APIC_ICR_HIGH:
		if (x2)
			return -EINVAL;
		l->icr_high = value & 0xff000000;
		return 0;
	case APIC_TIMER_INITIAL:
		if (timer_mode(l) == APIC_TIMER_TSC_DEADLINE)
			return 0; /* §11.5.4.1: ignored in TSC-deadline mode */
		l->timer_initial = value;
		timer_start_locked(l);
		return 0;
	case APIC_TIMER_DIVIDE:
		if (x2 && (value & ~0xbu))
			return -EINVAL;
		l->timer_divide = value & 0xb; /* takes effect at the next initial-count write */
		return 0;
	case APIC_SELF_IPI:
		if (!x2 || (value & ~0xffu))
			return -EINVAL;
		if (value < 16)
			signal_error_locked(l, APIC_ESR_SEND_ILLEGAL_VECTOR);
		else
			accept_fixed_locked(l, value, false);
		return 0;
	case APIC_ID:
	case APIC_VERSION:
	case APIC_PPR:
	case APIC_TIMER_CURRENT:
		return x2 ? -EINVAL : 0; /* read-only (the ID is fixed to the vCPU index here) */
	case APIC_APR:
	case APIC_RRD:
		return x2 ? -EINVAL : 0;
	}
	if (offset >= APIC_ISR && offset < APIC_IRR + 0x80)
		return x2 ? -EINVAL : 0; /* ISR, TMR, IRR are read-only */
	return -EINVAL;
}

bool lapic_mmio_read(struct lapic *lapic, uint32_t offset, void *data, unsigned len)
{
	struct lapic_outbox o;
	uint8_t reg[16] = { 0 };
	uint32_t value = 0;
	unsigned byte = offset & 0xf;

	lapic_lock(lapic, &o);
	if (!hw_enabled(lapic) || x2apic_mode(lapic)) {
		lapic_unlock(lapic, &o);
		return false;
	}
	if (reg_read_locked(lapic, offset & 0xff0, &value, false))
		value = 0; /* reserved: reads 0 */
	lapic_unlock(lapic, &o);
	memcpy(reg, &value, 4); /* the register's first 32 bits; the other 96 read 0 */
	memset(data, 0, len);
	if (byte < sizeof(reg))
		memcpy(data, reg + byte, len < sizeof(reg) - byte ? len : sizeof(reg) - byte);
	return true;
}

bool lapic_mmio_write(struct lapic *lapic, uint32_t offset, const void *data, unsigned len)
{
	struct lapic_outbox o;
	uint32_t value;

	lapic_lock(lapic, &o);
	if (!hw_enabled(lapic) || x2apic_mode(lapic)) {
		lapic_unlock(lapic, &o);
		return false;
	}
	/* Only aligned 32-bit writes are defined (§11.4.1); others are dropped. */
	if (len == 4 && !(offset & 0xf) && offset < LAPIC_MMIO_SIZE) {
		memcpy(&value, data, 4);
		reg_write_locked(lapic, offset, value, false, &o);
	}
	lapic_unlock(lapic, &o);
	return true;
}

bool lapic_msr_owns(uint32_t index)
{
	return index == MSR_IA32_APIC_BASE || index == MSR_IA32_TSC_DEADLINE ||
	       (index >= MSR_X2APIC_FIRST && index <= MSR_X2APIC_LAST);
}

int lapic_msr_read(struct lapic *lapic, uint32_t index, uint64_t *value)
{
	struct lapic_outbox o;
	uint32_t v32 = 0;
	int rc = 0;

	if (index == MSR_IA32_APIC_BASE) {
		*value = lapic_get_base(lapic);
		return 0;
	}
	lapic_lock(lapic, &o);
	if (index == MSR_IA32_TSC_DEADLINE) {
		*value = timer_mode(lapic) == APIC_TIMER_TSC_DEADLINE ? lapic->tsc_deadline : 0;
	} else if (index < MSR_X2APIC_FIRST || index > MSR_X2APIC_LAST || !x2apic_mode(lapic)) {
		rc = -EINVAL; /* §11.12.1.2: x2APIC MSRs #GP unless x2APIC mode is on */
	} else if (index == MSR_X2APIC_FIRST + (APIC_ICR_LOW >> 4)) {
		*value = (uint64_t)lapic->icr_high << 32 | lapic->icr_low;
	} else {
		rc = reg_read_locked(lapic, (index - MSR_X2APIC_FIRST) << 4, &v32, true);
		*value = v32;
	}
	lapic_unlock(lapic, &o);
	return rc;
}

int lapic_msr_write(struct lapic *lapic, uint32_t index, uint64_t value)
{
	struct lapic_outbox o;
	int rc = 0;

	if (index == MSR_IA32_APIC_BASE)
		return lapic_set_base(lapic, value);
	lapic_lock(lapic, &o);
	if (index == MSR_IA32_TSC_DEADLINE) {
		tsc_deadline_write_locked(lapic, value);
	} else if (index < MSR_X2APIC_FIRST || index > MSR_X2APIC_LAST || !x2apic_mode(lapic)) {
		rc = -EINVAL;
	} else if (index == MSR_X2APIC_FIRST + (APIC_ICR_LOW >> 4)) {
		/* §11.12.9: one 64-bit write; delivery status does not exist. Reserved: 12, 13,
		 * 16, 17, 20–31. */
		if (value & 0xfff33000ull) {
			rc = -EINVAL;
		} else {
			lapic->icr_low = (uint32_t)value;
			lapic->icr_high = (uint32_t)(value >> 32);
			icr_send_locked(lapic, lapic->icr_low, lapic->icr_high, true, &o);
		}
	} else if (value >> 32) {
		rc = -EINVAL; /* every other x2APIC register is 32 bits wide */
	} else {
		rc = reg_write_locked(lapic, (index - MSR_X2APIC_FIRST) << 4, (uint32_t)value, true,
				      &o);
	}
	lapic_unlock(lapic, &o);
	return rc;
}

uint64_t lapic_get_cr8(struct lapic *lapic)
{
	uint64_t v;

	pthread_mutex_lock(&lapic->lock);
	v = (lapic->tpr >> 4) & 0xf;
	pthread_mutex_unlock(&lapic->lock);
	return v;
}

void lapic_set_cr8(struct lapic *lapic, uint64_t cr8)
{
	struct lapic_outbox o;

	lapic_lock(lapic, &o);
	lapic->tpr = (uint32_t)(cr8 & 0xf) << 4;
	lapic_unlock(lapic, &o);
}

/* ---- interrupt acceptance ---- */

bool lapic_get_interrupt(struct lapic *lapic, uint8_t *vector)
{
	int v;

	pthread_mutex_lock(&lapic->lock);
	v = deliverable_vector_locked(lapic);
	pthread_mutex_unlock(&lapic->lock);
	if (v < 0)
		return false;
	*vector = (uint8_t)v;
	return true;
}

void lapic_ack_interrupt(struct lapic *lapic, uint8_t vector)
{
	struct lapic_outbox o;

	lapic_lock(lapic, &o);
	if (vec_test(lapic->irr, vector)) {
		vec_clear(lapic->irr, vector);
		vec_set(lapic->isr, vector);
		lapic->stat_acked++;
	}
	lapic_unlock(lapic, &o);
}

void lapic_eoi(struct lapic *lapic)
{
	struct lapic_outbox o;

	lapic_lock(lapic, &o);
	eoi_locked(lapic, &o);
	lapic_unlock(lapic, &o);
}

bool lapic_take_events(struct lapic *lapic, struct lapic_events *events)
{
	struct lapic_outbox o;
	bool any;

	lapic_lock(lapic, &o);
	*events = lapic->events;
	any = events->nmi || events->init || events->sipi;
	memset(&lapic->events, 0, sizeof(lapic->events));
	lapic_unlock(lapic, &o);
	return any;
}

bool lapic_deliver(struct lapic *lapic, uint8_t vector, bool level_trigger)
{
	struct lapic_outbox o;
	bool ok;

	lapic_lock(lapic, &o);
	ok = accept_fixed_locked(lapic, vector, level_trigger);
	lapic_unlock(lapic, &o);
	return ok;
}

bool lapic_accept_message(struct lapic *lapic, const struct apic_message *msg)
{
	struct lapic_outbox o;
	bool ok;

	lapic_lock(lapic, &o);
	ok = accept_message_locked(lapic, msg);
	lapic_unlock(lapic, &o);
	return ok;
}

void lapic_identity(struct lapic *lapic, struct apic_identity *identity)
{
	pthread_mutex_lock(&lapic->lock);
	identity->id = lapic->config.apic_id;
	identity->ldr = lapic->ldr;
	identity->dfr = lapic->dfr;
	identity->x2apic = x2apic_mode(lapic);
	identity->hw_enabled = hw_enabled(lapic);
	identity->priority = (uint8_t)lapic->tpr;
	pthread_mutex_unlock(&lapic->lock);
}

void lapic_set_lint(struct lapic *lapic, unsigned pin)
{
	struct lapic_outbox o;
	uint32_t lvt;

	if (pin > 1)
		return;
	lapic_lock(lapic, &o);
	lvt = lapic->lvt[pin ? LAPIC_LVT_LINT1 : LAPIC_LVT_LINT0];
	if (hw_enabled(lapic) && !(lvt & APIC_LVT_MASKED)) {
		struct apic_message msg = {
			.vector = lvt & 0xff,
			.delivery_mode = (lvt >> 8) & 7,
			.assert = true,
		};
		accept_message_locked(lapic, &msg);
	}
	lapic_unlock(lapic, &o);
}

uint64_t lapic_timer_next_deadline(struct lapic *lapic)
{
	uint64_t d;

	pthread_mutex_lock(&lapic->lock);
	d = lapic->deadline_ns;
	pthread_mutex_unlock(&lapic->lock);
	return d;
}

bool lapic_timer_fire(struct lapic *lapic, uint64_t now_ns)
{
	struct lapic_outbox o;
	bool fired;

	lapic_lock(lapic, &o);
	fired = timer_fire_locked(lapic, now_ns);
	lapic_unlock(lapic, &o);
	return fired;
}

/* ---- the bus (apic_bus.h) ---- */

int apic_bus_deliver(struct lapic *const *lapics, unsigned n, const struct apic_message *msg,
		     int source)
{
	struct apic_identity id;
	int count = 0, best = -1;
	unsigned best_priority = 0;

	for (unsigned i = 0; i < n; i++) {
		lapic_identity(lapics[i], &id);
		if (!apic_match_destination(&id, msg, (int)i == source))
			continue;
		if (msg->delivery_mode == APIC_DM_LOWEST) {
			if (best < 0 || id.priority < best_priority) {
				best = (int)i;
				best_priority = id.priority;
			}
			continue;
		}
		if (lapic_accept_message(lapics[i], msg))
			count++;
	}
	if (best >= 0 && lapic_accept_message(lapics[best], msg))
		count++;
	return count;
}
