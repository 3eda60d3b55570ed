/* Console relay: UART → pipe → (log file, pty master or stdout). The pipe is non-blocking on
 * the vCPU side, so a console nobody reads can never stop the guest (or a pause waiting for
 * the vCPUs); the pty drops what a detached client would not read, the log keeps everything. */
#include "api/console_relay.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <termios.h>
#include <unistd.h>

static void console_relay_write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* full (detached pty: dropped) or gone */
		buf += n;
		len -= (size_t)n;
	}
}

static bool console_relay_copy(struct console_relay *r)
{
	char buf[4096];
	ssize_t n = read(r->pipe_rd, buf, sizeof(buf));
	if (n <= 0)
		return false;
	if (r->log_fd >= 0)
		console_relay_write_all(r->log_fd, buf, (size_t)n);
	console_relay_write_all(r->out_fd, buf, (size_t)n);
	return true;
}

static void console_relay_on_output(void *opaque, int fd, uint32_t events)
{
	(void)fd;
	(void)events;
	console_relay_copy(opaque);
}

void console_relay_drain(struct console_relay *r)
{
	if (r->active)
		while (console_relay_copy(r))
			;
}

static int console_relay_open_pty(struct console_relay *r, char *err, size_t err_len)
{
	r->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	const char *name = r->master >= 0 && grantpt(r->master) == 0 && unlockpt(r->master) == 0
				   ? ptsname(r->master) : NULL;
	if (name && strlen(name) < sizeof(r->pty_path)) {
		strcpy(r->pty_path, name);
		r->slave_hold = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	}
	struct termios t;
	if (r->slave_hold < 0 || tcgetattr(r->slave_hold, &t) < 0) {
		snprintf(err, err_len, "--console-pty: %s (is /dev/pts mounted?)", strerror(errno));
		return -1;
	}
	cfmakeraw(&t); /* the attaching client's terminal does the cooking */
	tcsetattr(r->slave_hold, TCSANOW, &t);
	r->out_fd = r->master;
	return 0;
}

int console_relay_open(struct console_relay *r, bool pty, const char *log_path,
		       struct event_loop *loop, char *err, size_t err_len)
{
	*r = (struct console_relay){ .master = -1, .slave_hold = -1, .pipe_rd = -1, .pipe_wr = -1,
				     .log_fd = -1, .out_fd = STDOUT_FILENO, .loop = loop };
	if (!pty && !log_path)
		return 0;
	r->active = true;
	if (log_path) {
		r->log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (r->log_fd < 0) {
			snprintf(err, err_len, "--console-log %s: %s (give a writable path)", log_path,
				 strerror(errno));
			console_relay_close(r);
			return -1;
		}
	}
	if (pty && console_relay_open_pty(r, err, err_len) < 0) {
		console_relay_close(r);
		return -1;
	}
	int p[2];
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
		snprintf(err, err_len, "console: pipe: %s", strerror(errno));
		console_relay_close(r);
		return -1;
	}
	r->pipe_rd = p[0];
	r->pipe_wr = p[1];
	fcntl(r->pipe_rd, F_SETPIPE_SZ, 1 << 20); /* room for bursts while the main loop is busy */
	int ret = event_loop_add(loop, r->pipe_rd, EPOLLIN, console_relay_on_output, r);
	if (ret < 0) {
		snprintf(err, err_len, "console: event loop: %s", strerror(-ret));
		console_relay_close(r);
		return -1;
	}
	return 0;
}

int console_relay_uart_fd(const struct console_relay *r)
{
	return r->active ? r->pipe_wr : STDOUT_FILENO;
}

int console_relay_input_fd(const struct console_relay *r)
{
	return r->master >= 0 ? r->master : STDIN_FILENO;
}

void console_relay_close(struct console_relay *r)
{
	if (r->pipe_rd >= 0) {
		console_relay_drain(r);
		event_loop_remove(r->loop, r->pipe_rd);
	}
	int *fds[] = { &r->pipe_rd, &r->pipe_wr, &r->log_fd, &r->slave_hold, &r->master };
	for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
	r->active = false;
}
