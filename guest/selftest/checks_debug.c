/* The CPU's debug registers and single step (SDM Vol. 3 §18.2-18.3), as Linux's hw_breakpoint,
 * ptrace and kgdb use them: an execute breakpoint is a #DB fault at the instruction (the handler
 * sets RF in the frame so that IRET runs it), a data breakpoint (write, or read/write) a #DB
 * trap after the access, RFLAGS.TF a trap after each instruction that started with it set; DR6
 * tells which. The same results on KVM (the host CPU's debug registers) and the software CPU;
 * data breakpoints only with selftest.watch=1 (kvm-pvm's emulator does not have them). */
#include "check.h"
#include "interrupts.h"
#include "io.h"
#include "lib.h"

#define VECTOR_DB 1
#define VECTOR_UD 6
#define RFLAGS_TF (1ul << 8)
#define RFLAGS_RF (1ul << 16)
#define DR6_RESET 0xFFFF0FF0ul
#define DR6_BS (1ul << 14)
#define DR7_FIXED 0x400ul
#define DR7_RW_WRITE 1ul
#define DR7_RW_ACCESS 3ul
#define DR7_LEN_1 0ul
#define DR7_LEN_4 3ul
#define DR7_LEN_8 2ul

#define DEBUG_MAX_EVENTS 4

struct debug_event {
	uint64_t rip, dr6, rflags;
};

static volatile unsigned debug_events;
static struct debug_event debug_event[DEBUG_MAX_EVENTS];
static volatile uint64_t watched[2] __attribute__((aligned(16)));

#define DR_ACCESSORS(n)                                                    \
	static __attribute__((unused)) void set_dr##n(uint64_t v)          \
	{                                                                  \
		__asm__ volatile("mov %0, %%dr" #n : : "r"(v) : "memory"); \
	}                                                                  \
	static __attribute__((unused)) uint64_t get_dr##n(void)            \
	{                                                                  \
		uint64_t v;                                                \
		__asm__ volatile("mov %%dr" #n ", %0" : "=r"(v));          \
		return v;                                                  \
	}
DR_ACCESSORS(0)
DR_ACCESSORS(1)
DR_ACCESSORS(6)
DR_ACCESSORS(7)

/* Records the #DB, clears DR6 as Linux does, and lets the interrupted code go on: RF past an
 * execute breakpoint, TF off after the first step. */
static void debug_handler(const struct interrupt_frame *frame)
{
	struct interrupt_frame *f = (struct interrupt_frame *)frame; /* IRET pops what we change */
	unsigned n = debug_events;

	if (n < DEBUG_MAX_EVENTS)
		debug_event[n] = (struct debug_event){ f->rip, get_dr6(), f->rflags };
	debug_events = n + 1;
	set_dr6(DR6_RESET);
	f->rflags |= RFLAGS_RF;
	f->rflags &= ~RFLAGS_TF;
}

static void debug_reset(void)
{
	set_dr7(DR7_FIXED);
	set_dr6(DR6_RESET);
	debug_events = 0;
	memset(debug_event, 0, sizeof(debug_event));
}

static uint64_t dr7_data(unsigned i, uint64_t rw, uint64_t len)
{
	return DR7_FIXED | (1ul << (2 * i)) | (rw << (16 + 4 * i)) | (len << (18 + 4 * i));
}

/* DR0 on an instruction, which then runs once the #DB fault has reported it. */
static bool debug_exec_breakpoint(char *why, size_t size)
{
	uint64_t target;

	debug_reset();
	/* L0, RW0 = 00 (execute), LEN0 = 00 */
	__asm__ volatile("lea 1f(%%rip), %0; mov %0, %%dr0; mov %1, %%dr7; nop; 1: nop"
			 : "=&r"(target)
			 : "r"(DR7_FIXED | 1)
			 : "memory");
	set_dr7(DR7_FIXED);
	if (get_dr0() != target) {
		format(why, size, "DR0 reads 0x%lx after writing 0x%lx", get_dr0(), target);
		return false;
	}
	if (debug_events != 1 || debug_event[0].rip != target || (debug_event[0].dr6 & 0xF) != 1 ||
	    (debug_event[0].rflags & RFLAGS_RF)) {
		format(why, size,
		       "execute breakpoint: %u #DB, rip 0x%lx (expected 0x%lx), dr6 0x%lx, rflags "
		       "0x%lx",
		       debug_events, debug_event[0].rip, target, debug_event[0].dr6,
		       debug_event[0].rflags);
		return false;
	}
	return true;
}

/* DR1 on 4 bytes for writes: a byte store inside them traps after the store (RIP at the next
 * instruction), a load does not; then read/write on 8 bytes: a load traps. */
static bool debug_data_breakpoints(char *why, size_t size)
{
	uint64_t next, value;

	debug_reset();
	set_dr1((uint64_t)&watched[0] + 4);
	set_dr7(dr7_data(1, DR7_RW_WRITE, DR7_LEN_4));
	__asm__ volatile("movb $0x5a, (%1); 1: lea 1b(%%rip), %0"
			 : "=r"(next)
			 : "r"((uint64_t)&watched[0] + 6)
			 : "memory");
	unsigned after_store = debug_events;
	value = watched[0]; /* a load of a write breakpoint */
	unsigned after_load = debug_events;
	set_dr7(DR7_FIXED);
	if (after_store != 1 || after_load != 1 || debug_event[0].rip != next ||
	    (debug_event[0].dr6 & 0xF) != 2 || (uint8_t)(value >> 48) != 0x5a) {
		format(why, size,
		       "write breakpoint: %u #DB after the store (rip 0x%lx, expected 0x%lx), %u "
		       "after a load, dr6 0x%lx",
		       after_store, debug_event[0].rip, next, after_load, debug_event[0].dr6);
		return false;
	}
	debug_reset();
	set_dr1((uint64_t)&watched[1]);
	set_dr7(dr7_data(1, DR7_RW_ACCESS, DR7_LEN_8));
	__asm__ volatile("mov (%2), %1; 1: lea 1b(%%rip), %0"
			 : "=r"(next), "=r"(value)
			 : "r"(&watched[1])
			 : "memory");
	set_dr7(DR7_FIXED);
	if (debug_events != 1 || debug_event[0].rip != next || (debug_event[0].dr6 & 0xF) != 2) {
		format(why, size,
		       "read/write breakpoint: %u #DB, rip 0x%lx (expected 0x%lx), dr6 0x%lx",
		       debug_events, debug_event[0].rip, next, debug_event[0].dr6);
		return false;
	}
	return true;
}

/* TF set by POPF: no trap after that POPF, one after the next instruction (BS), whose handler
 * clears TF. */
static bool debug_single_step(char *why, size_t size)
{
	uint64_t after_nop;

	debug_reset();
	__asm__ volatile("pushfq; orq %1, (%%rsp); popfq; nop; 1: lea 1b(%%rip), %0"
			 : "=r"(after_nop)
			 : "i"(RFLAGS_TF)
			 : "memory", "cc");
	if (debug_events != 1 || debug_event[0].rip != after_nop ||
	    !(debug_event[0].dr6 & DR6_BS)) {
		format(why, size, "single step: %u #DB, rip 0x%lx (expected 0x%lx), dr6 0x%lx",
		       debug_events, debug_event[0].rip, after_nop, debug_event[0].dr6);
		return false;
	}
	return true;
}

static volatile uint64_t fault_rflags;

/* #UD: record the frame's RFLAGS and step over the UD2. */
static void ud_handler(const struct interrupt_frame *frame)
{
	struct interrupt_frame *f = (struct interrupt_frame *)frame;

	fault_rflags = f->rflags;
	f->rip += 2;
}

/* A fault's frame carries RF = 1 (SDM Vol. 3 §18.3.1.1: so that the instruction, restarted,
 * does not hit its own execute breakpoint again), with or without breakpoints. (That the CPU
 * clears it again at the start of the next instruction would show in a software interrupt's
 * frame, but INT n at CPL 0 is an emulation failure on kvm-pvm: test_emu_system checks it.) */
static bool debug_fault_frame_rf(char *why, size_t size)
{
	fault_rflags = 0;
	interrupts_set_handler(VECTOR_UD, ud_handler);
	__asm__ volatile("ud2" : : : "memory");
	interrupts_set_handler(VECTOR_UD, 0);
	if (!(fault_rflags & RFLAGS_RF)) {
		format(why, size, "RFLAGS 0x%lx in the #UD frame", fault_rflags);
		return false;
	}
	return true;
}

static void debug_report(const char *name, bool ok, const char *why)
{
	if (ok)
		check_ok(name);
	else
		check_fail(name, "%s", why);
}

void check_debug_registers(struct selftest *t)
{
	char why[160] = "";

	/* First: the #DB handler below leaves RF set in frames, which must not hide a CPU that
	 * never sets it itself. */
	debug_report("fault-frame-rf", debug_fault_frame_rf(why, sizeof(why)), why);
	interrupts_set_handler(VECTOR_DB, debug_handler);
	debug_report("debug-exec-breakpoint", debug_exec_breakpoint(why, sizeof(why)), why);
	/* Only when asked: KVM without VMX/SVM (kvm-pvm) emulates guest CPL 0 code in the host,
	 * whose emulator ignores data breakpoints, and every user of this guest would fail. */
	if (t->args.watch)
		debug_report("debug-data-breakpoints", debug_data_breakpoints(why, sizeof(why)),
			     why);
	else
		check_note("debug-data-breakpoints not checked (selftest.watch=1 checks them)");
	debug_report("debug-single-step", debug_single_step(why, sizeof(why)), why);
	debug_reset();
	interrupts_set_handler(VECTOR_DB, 0);
	if (get_dr7() != DR7_FIXED)
		check_fail("debug-dr7-reset", "DR7 reads 0x%lx after writing 0x400", get_dr7());
}
