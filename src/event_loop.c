/* epoll with a fixed table of handlers. The epoll data holds the slot index; a handler removed
 * while events for it are pending is recognised by its cleared slot and skipped. */
#include "event_loop.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

int event_loop_init(struct event_loop *loop)
{
	for (int i = 0; i < EVENT_LOOP_MAX_HANDLERS; i++)
		loop->handlers[i].fd = -1;
	loop->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	return loop->epoll_fd < 0 ? -errno : 0;
}

void event_loop_destroy(struct event_loop *loop)
{
	if (loop->epoll_fd >= 0)
		close(loop->epoll_fd);
	loop->epoll_fd = -1;
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

void event_loop_run_once(struct event_loop *loop, int timeout_ms)
{
	struct epoll_event ev[32];
	int n = epoll_wait(loop->epoll_fd, ev, 32, timeout_ms);
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
