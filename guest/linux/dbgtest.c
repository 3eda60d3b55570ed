/* vmm-dbgtest: the CPU's debug registers and single step as Linux user programs reach them,
 * through ptrace (the kernel's hw_breakpoint/perf code programs DR0-DR7, its #DB handler reads
 * DR6 and sets RF past an execute breakpoint; PTRACE_SINGLESTEP sets TF). A traced child runs
 * a function with an execute breakpoint on it (DR0), stores to a word with a write watchpoint
 * on it (DR1), and is single-stepped three times; the parent checks each stop. Prints one line
 * per check ("dbgtest: ok - NAME" or "dbgtest: FAIL - NAME: ...") and exits 0 when all pass.
 * Static, no libc (like mark.c), so it costs the initramfs a few kilobytes. */
#define SYS_WRITE 1
#define SYS_GETPID 39
#define SYS_FORK 57
#define SYS_EXIT 60
#define SYS_WAIT4 61
#define SYS_KILL 62
#define SYS_PTRACE 101
#define PTRACE_TRACEME 0
#define PTRACE_PEEKUSER 3
#define PTRACE_POKEUSER 6
#define PTRACE_CONT 7
#define PTRACE_SINGLESTEP 9
#define SIGTRAP 5
#define SIGKILL 9
#define SIGSTOP 19
/* struct user (sys/user.h, x86-64): regs.rip at 16 * 8, u_debugreg[] at 848. */
#define USER_RIP 128
#define USER_DR(n) (848 + 8 * (n))
/* DR7: L0 (DR0 execute, 1 byte), L1 with RW1 = 01 (write) and LEN1 = 11 (4 bytes). */
#define DR7_VALUE 0xD00005ul

static volatile int watched __attribute__((aligned(8)));
static volatile int sink;
static int failures;

static long sys(long nr, long a, long b, long c, long d)
{
	long ret;
	register long r10 __asm__("r10") = d;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}

static void say(const char *s)
{
	long n = 0;

	while (s[n])
		n++;
	sys(SYS_WRITE, 1, (long)s, n, 0);
}

static void say_hex(unsigned long v)
{
	char buf[19] = "0x";
	int n = 2;

	for (int shift = 60; shift >= 0; shift -= 4) {
		unsigned digit = (v >> shift) & 15;

		if (digit || n > 2 || !shift)
			buf[n++] = (char)(digit < 10 ? '0' + digit : 'a' + digit - 10);
	}
	buf[n] = 0;
	say(buf);
}

static void result(const char *name, int ok, const char *what, unsigned long value)
{
	say(ok ? "dbgtest: ok - " : "dbgtest: FAIL - ");
	say(name);
	if (!ok) {
		say(": ");
		say(what);
		say(" ");
		say_hex(value);
		failures++;
	}
	say("\n");
}

static long peek(long pid, long offset)
{
	long value = -1;

	sys(SYS_PTRACE, PTRACE_PEEKUSER, pid, offset, (long)&value);
	return value;
}

/* Resume the child (CONT or SINGLESTEP) and wait for it; the stop signal, or -1 if it ended. */
static int resume(long pid, long request)
{
	int status = 0;

	sys(SYS_PTRACE, request, pid, 0, 0);
	sys(SYS_WAIT4, pid, (long)&status, 0, 0);
	return (status & 0xff) == 0x7f ? (status >> 8) & 0xff : -1;
}

__attribute__((noinline, used)) void dbgtest_target(void)
{
	__asm__ volatile("nop");
}

static void child(void)
{
	sys(SYS_PTRACE, PTRACE_TRACEME, 0, 0, 0);
	sys(SYS_KILL, sys(SYS_GETPID, 0, 0, 0, 0), SIGSTOP, 0, 0);
	dbgtest_target();
	watched = 42;
	for (int i = 0; i < 100; i++)
		sink = sink + i;
	sys(SYS_EXIT, 0, 0, 0, 0);
}

static void parent(long pid)
{
	int status = 0, sig;
	long rip, dr6;

	sys(SYS_WAIT4, pid, (long)&status, 0, 0);
	sys(SYS_PTRACE, PTRACE_POKEUSER, pid, USER_DR(0), (long)dbgtest_target);
	sys(SYS_PTRACE, PTRACE_POKEUSER, pid, USER_DR(1), (long)&watched);
	long rc = sys(SYS_PTRACE, PTRACE_POKEUSER, pid, USER_DR(7), DR7_VALUE);
	result("dr7-accepted", rc == 0, "PTRACE_POKEUSER DR7 returned", (unsigned long)rc);

	sig = resume(pid, PTRACE_CONT);
	rip = peek(pid, USER_RIP);
	dr6 = peek(pid, USER_DR(6));
	result("exec-breakpoint-stop", sig == SIGTRAP && rip == (long)dbgtest_target,
	       "stop signal/rip", sig == SIGTRAP ? (unsigned long)rip : (unsigned long)sig);
	result("exec-breakpoint-dr6", (dr6 & 0xf) == 1, "DR6", (unsigned long)dr6);

	sig = resume(pid, PTRACE_CONT); /* past the breakpoint (RF) to the store */
	dr6 = peek(pid, USER_DR(6));
	result("write-watchpoint-stop", sig == SIGTRAP, "stop signal", (unsigned long)sig);
	result("write-watchpoint-dr6", (dr6 & 0xf) == 2, "DR6", (unsigned long)dr6);

	sys(SYS_PTRACE, PTRACE_POKEUSER, pid, USER_DR(7), 0);
	int steps = 0;
	long last = peek(pid, USER_RIP);
	for (int i = 0; i < 3; i++) {
		sig = resume(pid, PTRACE_SINGLESTEP);
		rip = peek(pid, USER_RIP);
		if (sig == SIGTRAP && rip != last)
			steps++;
		last = rip;
	}
	result("single-step", steps == 3, "steps that moved", (unsigned long)steps);

	sig = resume(pid, PTRACE_CONT);
	if (sig != -1) {
		sys(SYS_KILL, pid, SIGKILL, 0, 0);
		sys(SYS_WAIT4, pid, (long)&status, 0, 0);
	}
	result("child-exits", sig == -1, "it stopped again with signal", (unsigned long)sig);
}

__attribute__((used, noreturn)) static void dbgtest_main(void)
{
	long pid = sys(SYS_FORK, 0, 0, 0, 0);

	if (pid == 0)
		child();
	if (pid < 0)
		result("fork", 0, "fork returned", (unsigned long)pid);
	else
		parent(pid);
	sys(SYS_EXIT, failures ? 1 : 0, 0, 0, 0);
	__builtin_unreachable();
}

__asm__(".globl _start\n"
	"_start:\n"
	"	and $-16, %rsp\n"
	"	call dbgtest_main\n");
