/* epoll with a fixed table of handlers. The epoll data holds the slot index; a handler removed
 * while events for it are pending is recognised by its cleared slot and skipped. */
#include "event_loop.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

int event_loop_init(struct event_loop *loop)
{
	for (int i = 0; i < EVENT_LOOP_MAX_HANDLERS; i++)
		loop->handlers[i].fd = -1;
	loop->expect = false;
	poll_window_init(&loop->poll, 0, true);
	loop->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	return loop->epoll_fd < 0 ? -errno : 0;
}

void event_loop_destroy(struct event_loop *loop)
{
	if (loop->epoll_fd >= 0)
		close(loop->epoll_fd);
	loop->epoll_fd = -1;
	poll_window_destroy(&loop->poll);
}

static int event_loop_slot(struct event_loop *loop, int fd)
{
	for (int i = 0; i < EVENT_LOOP_MAX_HANDLERS; i++)
		if (loop->handlers[i].fd == fd)
			return i;
	return -1;
}

int event_loop_add(struct event_loop *loop, int fd, uint32_t events, event_fn fn, void *opaque)
{
	int slot = event_loop_slot(loop, -1);
	if (fd < 0 || slot < 0)
		return fd < 0 ? -EBADF : -ENOSPC;
	struct epoll_event ev = { .events = events, .data.u32 = (uint32_t)slot };
	if (epoll_ctl(loop->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return -errno;
	loop->handlers[slot] = (struct event_handler){ fd, fn, opaque };
	return 0;
}

int event_loop_modify(struct event_loop *loop, int fd, uint32_t events)
{
	int slot = event_loop_slot(loop, fd);
	if (slot < 0 || fd < 0)
		return -ENOENT;
	struct epoll_event ev = { .events = events, .data.u32 = (uint32_t)slot };
	return epoll_ctl(loop->epoll_fd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

void event_loop_remove(struct event_loop *loop, int fd)
{
	int slot = event_loop_slot(loop, fd);
	if (slot < 0 || fd < 0)
		return;
	epoll_ctl(loop->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
	loop->handlers[slot].fd = -1;
}

void event_loop_set_poll_max(struct event_loop *loop, uint32_t max_ns, bool check_host)
{
	poll_window_destroy(&loop->poll);
	poll_window_init(&loop->poll, max_ns, check_host);
}

static uint64_t event_loop_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* epoll_wait, first polling it (timeout 0) for the adaptive window when an event is expected:
 * a disk completion or a reply that comes within it then costs no sleep and no wake-up of this
 * thread (~30 us on this 2-core host). */
static int event_loop_wait(struct event_loop *loop, struct epoll_event *ev, int max, int timeout_ms)
{
	bool expect = __atomic_exchange_n(&loop->expect, false, __ATOMIC_RELAXED);
	if (!expect || !loop->poll.max_ns || timeout_ms == 0)
		return epoll_wait(loop->epoll_fd, ev, max, timeout_ms);
	int n = epoll_wait(loop->epoll_fd, ev, max, 0);
	if (n != 0)
		return n; /* already there: nothing to learn about the window */
	uint64_t start = event_loop_now_ns(), now = start;
	uint64_t until =
		poll_window_should_poll(&loop->poll, start) ? start + loop->poll.ns : start;
	while (n == 0 && now < until && poll_window_host_spare(&loop->poll, now)) {
		n = epoll_wait(loop->epoll_fd, ev, max, 0);
		now = event_loop_now_ns();
	}
	uint64_t polled = now - start;
	bool hit = n != 0;
	if (!hit) {
		n = epoll_wait(loop->epoll_fd, ev, max, timeout_ms);
		now = event_loop_now_ns();
	}
	poll_window_update(&loop->poll, now - start, hit, polled);
	return n;
}

void event_loop_run_once(struct event_loop *loop, int timeout_ms)
{
	struct epoll_event ev[32];
	int n = event_loop_wait(loop, ev, 32, timeout_ms);
	for (int i = 0; i < n; i++) {
		uint32_t slot = ev[i].data.u32;
		if (slot >= EVENT_LOOP_MAX_HANDLERS || loop->handlers[slot].fd < 0)
			continue;
		/* A slot reused after a removal in this batch may see a stale event: handlers
		 * use non-blocking fds and tolerate spurious wake-ups. */
		struct event_handler h = loop->handlers[slot];
		h.fn(h.opaque, h.fd, ev[i].events);
	}
}
