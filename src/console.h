/* The console: the terminal (or pipe) on stdin/stdout wired to the guest's COM1. */
#ifndef VMM_CONSOLE_H
#define VMM_CONSOLE_H

#include <stdbool.h>
#include <termios.h>

struct vm;

struct console {
	int in_fd;
	bool is_tty, raw, eof, escape;
};

/* Put a terminal stdin into raw mode (restored by console_restore, at exit and on fatal
 * signals). Pipes and files are used as they are. */
void console_init(struct console *c, int in_fd);
void console_restore(void);
/* Read what is available (as much as the UART can take) and pass it to the guest, handling
 * the Ctrl-A escape: Ctrl-A x quits, Ctrl-A a sends Ctrl-A, Ctrl-A h prints help. Returns false
 * when the UART is full: stop polling the input until serial_rx_wait_fd() is readable. */
bool console_handle_input(struct console *c, struct vm *vm);

#endif
