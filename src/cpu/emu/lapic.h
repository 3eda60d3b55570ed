/* The local APIC of one software vCPU (SDM Vol. 3 chapter 11).
 *
 * What it models
 * - The xAPIC register file at IA32_APIC_BASE (0xFEE00000) by offset, and the x2APIC MSRs
 *   0x800–0x8FF (MSR = 0x800 + offset / 16; the ICR is one 64-bit MSR 0x830, SELF IPI is 0x83F;
 *   DFR, ICR high, APR and RRD do not exist there). Read-only registers ignore xAPIC writes and
 *   #GP as MSRs; reserved offsets read 0 and ignore writes (xAPIC) or #GP (x2APIC).
 * - IRR/ISR/TMR, TPR/PPR (PPR = TPR if TPR[7:4] >= ISRV[7:4], else ISRV & 0xF0), EOI with the
 *   level-triggered EOI broadcast (ops->eoi, to the IOAPIC), the spurious-vector register and
 *   software enable (a software-disabled APIC masks every LVT entry and drops fixed
 *   interrupts), the ESR with illegal-vector errors and the error LVT.
 * - LVT timer, thermal, performance counter, LINT0, LINT1, error (max LVT entry 5: no CMCI).
 * - The timer: one-shot, periodic and TSC-deadline (IA32_TSC_DEADLINE, MSR 0x6E0), with the
 *   divide configuration. The APIC bus runs at 1 GHz (one count per nanosecond before the
 *   divider), as KVM's does. Time comes from outside: ops->now_ns() (the VM's virtual
 *   nanoseconds) and ops->tsc_at() (this vCPU's TSC at such a time); the code never reads a
 *   host clock, so tests drive it with a fake clock. A periodic period is at least
 *   LAPIC_MIN_PERIOD_NS (KVM clamps too): a guest cannot make an interpreter do nothing but
 *   timer interrupts.
 * - ICR writes become struct apic_message IPIs (fixed, lowest priority, NMI, INIT, INIT
 *   de-assert, SIPI; shorthands; physical/logical destinations) handed to ops->send(), except a
 *   self-IPI with the self shorthand, which is accepted directly. Delivery status always reads 0:
 *   a message is delivered before the write returns.
 * - IA32_APIC_BASE (MSR 0x1B): EN and EXTD transitions (disabled → xAPIC → x2APIC → disabled;
 *   the others #GP, SDM §11.12.5), reserved bits #GP, disabling resets the APIC. In x2APIC mode
 *   the ID register is the 32-bit APIC id and the LDR is (id >> 4) << 16 | 1 << (id & 0xF).
 * - Not modelled: CMCI, thermal/perf interrupts (their LVTs are only storage), SMI, ExtINT
 *   through LINT0 (there is no 8259 behind the software CPU), directed EOI (version bit 24 is 0,
 *   so SVR bit 12 stays 0), KVM's PV EOI (MSR 0x4B564D04): it saves a VM exit on KVM, but here
 *   an EOI is already a function call, so the guest should not be offered it (leaf 0x40000001
 *   bit 6).
 *
 * Events for the CPU core
 * - lapic_pending() is one atomic load: LAPIC_PENDING_INTR (a maskable interrupt above PPR),
 *   NMI, INIT, SIPI. The CPU core checks it at its interrupt check points; then
 *   lapic_get_interrupt() + emu_inject_interrupt() + lapic_ack_interrupt() for INTR (when
 *   RFLAGS.IF allows), lapic_take_events() for NMI/INIT/SIPI.
 * - ops->kick() is called whenever lapic_pending() becomes non-zero because of a delivery, from
 *   whichever thread delivered: it must wake the vCPU (out of HLT, or out of a long run).
 *
 * Thread safety
 * - Each LAPIC has a mutex (`lock`) taken by every function here, so all of them may be called
 *   from any thread; callbacks are always called with it released. Deliveries from other
 *   threads (lapic_deliver, lapic_accept_message, apic_bus_deliver: IPIs of other vCPUs, IOAPIC
 *   and MSI deliveries from device threads, the main loop) and timer expiry
 *   (lapic_timer_fire) are meant for any thread.
 * - Meant for the owning vCPU's thread only, because they are instruction semantics that must
 *   not interleave with that vCPU's execution: register and MSR access, lapic_get_interrupt /
 *   lapic_ack_interrupt (call them together, at one instruction boundary), lapic_eoi,
 *   lapic_take_events, lapic_set_base, lapic_reset.
 * - Lock order: IOAPIC lock, then LAPIC locks, one at a time. The LAPIC never calls out with its
 *   lock held, so ops->send/eoi may reach other LAPICs and the IOAPIC. */
#ifndef VMM_CPU_EMU_LAPIC_H
#define VMM_CPU_EMU_LAPIC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cpu/emu/apic_bus.h"

#define LAPIC_DEFAULT_BASE 0xfee00000ull
#define LAPIC_MMIO_SIZE 0x1000u

/* IA32_APIC_BASE bits (SDM Vol. 3 §11.4.4). */
#define MSR_IA32_APIC_BASE 0x1b
#define APIC_BASE_BSP (1ull << 8)
#define APIC_BASE_EXTD (1ull << 10) /* x2APIC mode */
#define APIC_BASE_EN (1ull << 11)

#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_X2APIC_FIRST 0x800
#define MSR_X2APIC_LAST 0x8ff

/* Register offsets in the xAPIC page (SDM Vol. 3 Table 11-1). */
#define APIC_ID 0x20
#define APIC_VERSION 0x30
#define APIC_TPR 0x80
#define APIC_APR 0x90
#define APIC_PPR 0xa0
#define APIC_EOI 0xb0
#define APIC_RRD 0xc0
#define APIC_LDR 0xd0
#define APIC_DFR 0xe0
#define APIC_SVR 0xf0
#define APIC_ISR 0x100 /* 8 registers, 0x100–0x170 */
#define APIC_TMR 0x180 /* 0x180–0x1F0 */
#define APIC_IRR 0x200 /* 0x200–0x270 */
#define APIC_ESR 0x280
#define APIC_LVT_CMCI 0x2f0
#define APIC_ICR_LOW 0x300
#define APIC_ICR_HIGH 0x310
#define APIC_LVT_TIMER 0x320
#define APIC_LVT_THERMAL 0x330
#define APIC_LVT_PERF 0x340
#define APIC_LVT_LINT0 0x350
#define APIC_LVT_LINT1 0x360
#define APIC_LVT_ERROR 0x370
#define APIC_TIMER_INITIAL 0x380
#define APIC_TIMER_CURRENT 0x390
#define APIC_TIMER_DIVIDE 0x3e0
#define APIC_SELF_IPI 0x3f0 /* x2APIC only (MSR 0x83F) */

/* Register bits. */
#define APIC_SVR_ENABLE (1u << 8)
#define APIC_LVT_MASKED (1u << 16)
#define APIC_LVT_LEVEL (1u << 15)
#define APIC_LVT_REMOTE_IRR (1u << 14)
#define APIC_LVT_DELIVERY_STATUS (1u << 12)
#define APIC_TIMER_ONESHOT (0u << 17)
#define APIC_TIMER_PERIODIC (1u << 17)
#define APIC_TIMER_TSC_DEADLINE (2u << 17)
#define APIC_TIMER_MODE_MASK (3u << 17)
#define APIC_ICR_DEST_LOGICAL (1u << 11)
#define APIC_ICR_LEVEL_ASSERT (1u << 14)
#define APIC_ICR_TRIGGER_LEVEL (1u << 15)
#define APIC_ESR_SEND_ILLEGAL_VECTOR (1u << 5)
#define APIC_ESR_RECEIVE_ILLEGAL_VECTOR (1u << 6)
#define APIC_ESR_ILLEGAL_REGISTER (1u << 7)

#define LAPIC_VERSION 0x14 /* an integrated APIC */
#define LAPIC_MAX_LVT 5 /* timer, thermal, perf, LINT0, LINT1, error */
#define LAPIC_MIN_PERIOD_NS 100000ull /* 100 µs: at most 10000 periodic interrupts/s */
#define LAPIC_NO_DEADLINE UINT64_MAX

/* lapic_pending() bits. */
#define LAPIC_PENDING_INTR (1u << 0) /* a maskable interrupt above PPR: lapic_get_interrupt() */
#define LAPIC_PENDING_NMI (1u << 1)
#define LAPIC_PENDING_INIT (1u << 2)
#define LAPIC_PENDING_SIPI (1u << 3)

enum lapic_lvt {
	LAPIC_LVT_TIMER,
	LAPIC_LVT_THERMAL,
	LAPIC_LVT_PERF,
	LAPIC_LVT_LINT0,
	LAPIC_LVT_LINT1,
	LAPIC_LVT_ERROR,
	LAPIC_NR_LVT,
};

struct lapic_ops {
	/* The VM's virtual time in nanoseconds (monotonic). Required. */
	uint64_t (*now_ns)(void *opaque);
	/* This vCPU's TSC at virtual time `ns` (with the emu core's 1 GHz TSC: ns + TSC offset).
	 * Required for TSC-deadline mode. */
	uint64_t (*tsc_at)(void *opaque, uint64_t ns);
	/* An IPI written to the ICR: route it (apic_bus_deliver with this LAPIC as the source). */
	void (*send)(void *opaque, const struct apic_message *msg);
	/* EOI of a level-triggered vector: tell the IOAPIC (ioapic_eoi). Optional. */
	void (*eoi)(void *opaque, uint8_t vector);
	/* Something became pending (lapic_pending() != 0): wake the vCPU. Any thread. Optional. */
	void (*kick)(void *opaque);
	/* The timer's next expiry changed (absolute virtual ns, LAPIC_NO_DEADLINE when stopped):
	 * re-arm the host timer that will call lapic_timer_fire(). Optional. */
	void (*timer_update)(void *opaque, uint64_t deadline_ns);
};

struct lapic_config {
	uint32_t apic_id; /* vCPU index (docs/platform.md) */
	bool bsp; /* IA32_APIC_BASE.BSP: vCPU 0 */
	unsigned phys_bits; /* MAXPHYADDR for IA32_APIC_BASE's reserved bits (0: 46) */
	uint64_t tsc_hz; /* the guest TSC's rate (0: 1 GHz, the emu core's virtual TSC) */
};

struct lapic_events {
	bool nmi;
	bool init;
	bool sipi;
	uint8_t sipi_vector; /* the AP starts in real mode at CS = vector << 8, IP 0: vector << 12 */
};

/* All fields are guarded by `lock`; use the functions. */
struct lapic {
	pthread_mutex_t lock;
	const struct lapic_ops *ops;
	void *opaque;
	struct lapic_config config;
	uint64_t base; /* IA32_APIC_BASE */
	uint32_t tpr, ldr, dfr, svr;
	uint32_t esr; /* as read by the guest: latched at the last ESR write */
	uint32_t esr_pending; /* errors since then */
	uint32_t icr_low, icr_high; /* x2APIC: icr_high is the 32-bit destination */
	uint32_t lvt[LAPIC_NR_LVT];
	uint32_t timer_initial, timer_divide;
	uint32_t irr[8], isr[8], tmr[8]; /* 256 bits each, vector v in word v / 32 */
	/* The timer: armed when deadline_ns != LAPIC_NO_DEADLINE. */
	uint64_t timer_start_ns; /* when the initial count was loaded or last reloaded */
	uint64_t timer_period_ns; /* one-shot/periodic: initial count × divide × 1 ns */
	uint64_t deadline_ns;
	uint64_t reported_deadline_ns; /* the last value given to ops->timer_update */
	uint64_t tsc_deadline; /* IA32_TSC_DEADLINE as the guest reads it (0: disarmed) */
	struct lapic_events events;
	unsigned pending; /* LAPIC_PENDING_*, also published in `pending_atomic` */
	unsigned pending_atomic; /* read with __atomic_load_n by lapic_pending() */
	/* Statistics: how many interrupts were accepted, delivered to the CPU, and IPIs sent. */
	uint64_t stat_accepted, stat_acked, stat_ipis, stat_timer_fired;
};

/* Set up a LAPIC in its power-on state (xAPIC mode, enabled in IA32_APIC_BASE, software
 * disabled: SVR = 0xFF, all LVT masked). 0 or a negative errno (mutex). */
int lapic_init(struct lapic *lapic, const struct lapic_config *config,
	       const struct lapic_ops *ops, void *opaque);
void lapic_destroy(struct lapic *lapic);
/* INIT: every register to its reset value except the APIC id and IA32_APIC_BASE (SDM
 * §11.4.7.3); pending IRR/ISR, timer and events are dropped. */
void lapic_reset(struct lapic *lapic);

/* xAPIC MMIO: `offset` within the 4 KiB page. Reads of 1–4 bytes inside a register's first 32
 * bits; writes must be 32-bit and aligned (others are ignored, as on hardware they are
 * undefined). Returns true if the access was handled by the xAPIC (false in x2APIC mode or
 * when the APIC is hardware-disabled: the access then behaves as unclaimed MMIO). */
bool lapic_mmio_read(struct lapic *lapic, uint32_t offset, void *data, unsigned len);
bool lapic_mmio_write(struct lapic *lapic, uint32_t offset, const void *data, unsigned len);
/* The guest-physical base of the xAPIC page (IA32_APIC_BASE[51:12]). */
uint64_t lapic_mmio_base(struct lapic *lapic);

/* The MSRs the LAPIC owns: IA32_APIC_BASE (0x1B), IA32_TSC_DEADLINE (0x6E0) and the x2APIC
 * range 0x800–0x8FF. lapic_msr_owns() says whether `index` is one of them; read/write return 0
 * or -EINVAL, on which the CPU raises #GP(0). */
bool lapic_msr_owns(uint32_t index);
int lapic_msr_read(struct lapic *lapic, uint32_t index, uint64_t *value);
int lapic_msr_write(struct lapic *lapic, uint32_t index, uint64_t value);

/* IA32_APIC_BASE alone (also what lapic_msr_write(0x1B) does). */
uint64_t lapic_get_base(struct lapic *lapic);
int lapic_set_base(struct lapic *lapic, uint64_t value);
/* CR8 is TPR[7:4] (SDM Vol. 3 §11.8.6.1): MOV to/from CR8 in 64-bit mode. */
uint64_t lapic_get_cr8(struct lapic *lapic);
void lapic_set_cr8(struct lapic *lapic, uint64_t cr8);

/* Interrupt acceptance by the CPU core. lapic_get_interrupt(): the highest IRR vector whose
 * priority class is above PPR's, true if there is one. lapic_ack_interrupt(): the CPU took it
 * (IRR → ISR, PPR rises). lapic_eoi(): what a write to the EOI register does. */
bool lapic_get_interrupt(struct lapic *lapic, uint8_t *vector);
void lapic_ack_interrupt(struct lapic *lapic, uint8_t vector);
void lapic_eoi(struct lapic *lapic);

/* LAPIC_PENDING_* bits; one atomic load, no lock. */
static inline unsigned lapic_pending(const struct lapic *lapic)
{
	return __atomic_load_n(&lapic->pending_atomic, __ATOMIC_ACQUIRE);
}
/* Take (and clear) pending NMI, INIT and SIPI. True if there was any. */
bool lapic_take_events(struct lapic *lapic, struct lapic_events *events);

/* Accept one interrupt into IRR (fixed delivery): edge (level_trigger false) or level-triggered
 * (TMR set: its EOI is broadcast to the IOAPIC). Any thread. False if it was dropped (software
 * disabled APIC, illegal vector). */
bool lapic_deliver(struct lapic *lapic, uint8_t vector, bool level_trigger);
/* Accept a routed message according to its delivery mode (fixed/lowest priority → IRR, NMI,
 * INIT, SIPI; SMI and ExtINT are dropped). Any thread. */
bool lapic_accept_message(struct lapic *lapic, const struct apic_message *msg);
/* A snapshot of the destination-matching state, for apic_match_destination(). Any thread. */
void lapic_identity(struct lapic *lapic, struct apic_identity *identity);
/* A LINT0/LINT1 pin was asserted (edge): delivered as its LVT entry says (fixed or NMI). */
void lapic_set_lint(struct lapic *lapic, unsigned pin);

/* The timer. next_deadline: absolute virtual ns of the next expiry, or LAPIC_NO_DEADLINE.
 * fire: if the timer expired at `now_ns`, raise its interrupt (unless the LVT masks it),
 * re-arm a periodic timer (missed periods are coalesced into one interrupt) or disarm a
 * one-shot/TSC-deadline timer; true if it expired. Any thread. */
uint64_t lapic_timer_next_deadline(struct lapic *lapic);
bool lapic_timer_fire(struct lapic *lapic, uint64_t now_ns);

#endif
