/* Console input and terminal state. */
#include "console.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/devices.h"
#include "vm.h"

#define CONSOLE_ESCAPE 0x01 /* Ctrl-A, as in QEMU */

/* The one piece of process-wide state outside the VM object: the terminal settings to put back,
 * reachable from atexit() and from a fatal-signal handler, which have no VM pointer. */
static struct {
	bool saved;
	int fd;
	struct termios termios;
} console_saved;

void console_restore(void)
{
	if (console_saved.saved)
		tcsetattr(console_saved.fd, TCSAFLUSH, &console_saved.termios);
}

static void console_fatal_signal(int sig)
{
	console_restore();
	signal(sig, SIG_DFL);
	raise(sig);
}

void console_init(struct console *c, int in_fd)
{
	memset(c, 0, sizeof(*c));
	c->in_fd = in_fd;
	c->is_tty = isatty(in_fd);
	if (!c->is_tty || tcgetattr(in_fd, &console_saved.termios) < 0)
		return;
	console_saved.fd = in_fd;
	console_saved.saved = true;
	atexit(console_restore);
	const int fatal[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
	for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
		signal(fatal[i], console_fatal_signal);
	struct termios raw = console_saved.termios;
	cfmakeraw(&raw);
	raw.c_oflag |= OPOST | ONLCR; /* keep the monitor's own messages readable */
	if (tcsetattr(in_fd, TCSAFLUSH, &raw) == 0)
		c->raw = true;
}

static void console_help(void)
{
	static const char help[] = "\r\nC-a x  quit the VM\r\nC-a a  send C-a to the guest\r\n"
				   "C-a h  this help\r\n";
	if (write(STDERR_FILENO, help, sizeof(help) - 1) < 0) {
		/* nowhere else to report it */
	}
}

/* Apply the escape state machine to buf in place; returns the bytes left for the guest. */
static size_t console_filter(struct console *c, struct vm *vm, uint8_t *buf, size_t len)
{
	size_t out = 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t b = buf[i];
		if (!c->escape) {
			if (b == CONSOLE_ESCAPE)
				c->escape = true;
			else
				buf[out++] = b;
			continue;
		}
		c->escape = false;
		if (b == 'x' || b == 'X') {
			vm_request_stop(vm, VM_STATUS_USER_QUIT);
			return out;
		} else if (b == 'h' || b == 'H' || b == '?') {
			console_help();
		} else if (b == 'a' || b == CONSOLE_ESCAPE) {
			buf[out++] = CONSOLE_ESCAPE;
		} else {
			buf[out++] = CONSOLE_ESCAPE;
			buf[out++] = b; /* out <= i here, so this never overtakes the input */
		}
	}
	return out;
}

bool console_handle_input(struct console *c, struct vm *vm)
{
	struct serial *uart = vm->devices->com1;
	uint8_t buf[512];
	if (!serial_wait_for_space(uart, 2))
		return false; /* the guest has not drained the UART: leave the rest in the pipe */
	size_t space = serial_rx_space(uart);
	/* Half the space, and one byte of buf spare: an escape pending from the last read can
	 * expand the first byte of this one to two. */
	size_t want = space / 2 ? space / 2 : 1;
	ssize_t n = read(c->in_fd, buf, want < sizeof(buf) - 1 ? want : sizeof(buf) - 1);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		c->eof = true; /* the guest keeps running without input */
		return true;
	}
	if (n < 0)
		return true;
	size_t len = console_filter(c, vm, buf, (size_t)n);
	serial_receive(uart, buf, len);
	return true;
}
