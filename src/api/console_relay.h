/* The console's other ends besides stdin/stdout: a pty (--console-pty) that clients attach to
 * and detach from (`vmm console NAME`), and a log file (--console-log). The UART writes into a
 * pipe; the main loop copies it to the log and to the pty (or stdout). */
#ifndef VMM_API_CONSOLE_RELAY_H
#define VMM_API_CONSOLE_RELAY_H

#include <stdbool.h>
#include <stddef.h>

#include "event_loop.h"

struct console_relay {
	bool active; /* false: the UART writes to stdout directly, input comes from stdin */
	int master, slave_hold; /* the pty, or -1; the monitor holds a slave fd so the master
				 * never reads EIO while no client is attached */
	int pipe_rd, pipe_wr; /* UART output */
	int log_fd, out_fd; /* log (or -1); where the console goes (pty master or stdout) */
	char pty_path[64];
	struct event_loop *loop;
};

/* Set up what was asked for (nothing when pty is false and log_path is NULL). 0, or -1 with
 * one line in err. */
int console_relay_open(struct console_relay *r, bool pty, const char *log_path,
		       struct event_loop *loop, char *err, size_t err_len);
/* The fd the UART writes to, and the fd the console reads from. */
int console_relay_uart_fd(const struct console_relay *r);
int console_relay_input_fd(const struct console_relay *r);
/* Copy everything the UART has written so far (at the end of a run). */
void console_relay_drain(struct console_relay *r);
void console_relay_close(struct console_relay *r);

#endif
