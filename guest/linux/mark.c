/* vmm-mark TEXT...: write TEXT (the arguments joined by spaces) and a newline to vmm's
 * boot-profiling port 0x402 (docs/platform.md), one `outb` per byte, so the monitor records the
 * moment with its own clock (`--stats`, trace category `boot`; bench/boot times the stages of a
 * boot with it). The default guest has only busybox, which has no outb applet, and Debian's cloud
 * kernel is built without /dev/port (CONFIG_DEVPORT), hence this program: static, no libc, a few
 * hundred bytes. It needs CAP_SYS_RAWIO (ioperm), which PID 1 and root have; elsewhere it fails
 * with status 1 and writes nothing. On a machine without the port the writes go nowhere. */
#define MARK_PORT 0x402
#define SYS_EXIT 60
#define SYS_IOPERM 173

static long mark_syscall(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return ret;
}

static void mark_outb(unsigned char byte)
{
	__asm__ volatile("outb %0, %1" : : "a"(byte), "Nd"((unsigned short)MARK_PORT));
}

/* The initial stack (System V ABI, x86-64): argc, then the argv pointers. */
__attribute__((used, noreturn)) static void mark_main(long *stack)
{
	long argc = stack[0];
	char **argv = (char **)(stack + 1);

	if (mark_syscall(SYS_IOPERM, MARK_PORT, 1, 1) < 0)
		mark_syscall(SYS_EXIT, 1, 0, 0);
	for (long i = 1; i < argc; i++) {
		if (i > 1)
			mark_outb(' ');
		for (const char *p = argv[i]; *p; p++)
			mark_outb((unsigned char)*p);
	}
	mark_outb('\n');
	mark_syscall(SYS_EXIT, 0, 0, 0);
	__builtin_unreachable();
}

__asm__(".globl _start\n"
	"_start:\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call mark_main\n");
