/* The monitor's one event loop (epoll), run by the main thread: console input, signals, stop
 * requests, and every asynchronous device fd (disk completions, queue notifications, TAPs). */
#ifndef VMM_EVENT_LOOP_H
#define VMM_EVENT_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "poll_window.h"

typedef void (*event_fn)(void *opaque, int fd, uint32_t events);

#define EVENT_LOOP_MAX_HANDLERS 256

struct event_handler {
	int fd; /* -1: free slot */
	event_fn fn;
	void *opaque;
};

struct event_loop {
	int epoll_fd;
	struct event_handler handlers[EVENT_LOOP_MAX_HANDLERS];
	/* Set (any thread) when an event should come soon: a reply to a frame just sent. The
	 * next wait then polls for `poll`'s window before it blocks (QEMU's AioContext polling). */
	bool expect;
	struct poll_window poll;
};

int event_loop_init(struct event_loop *loop);
void event_loop_destroy(struct event_loop *loop);
/* Watch fd for events (EPOLLIN...), calling fn from the main thread. 0 or a negative errno;
 * -EPERM for files epoll cannot watch (regular files). Only the main thread may call these. */
int event_loop_add(struct event_loop *loop, int fd, uint32_t events, event_fn fn, void *opaque);
int event_loop_modify(struct event_loop *loop, int fd, uint32_t events);
void event_loop_remove(struct event_loop *loop, int fd);
/* The cap of the adaptive poll window (poll_window.h); 0 (the default): never poll.
 * check_host: not while the host has more runnable threads than CPUs. */
void event_loop_set_poll_max(struct event_loop *loop, uint32_t max_ns, bool check_host);
/* An event is due soon (a request or a reply in flight): poll before the next wait blocks.
 * Any thread; a NULL loop (a device in a unit test) is ignored. */
static inline void event_loop_expect(struct event_loop *loop)
{
	if (loop)
		__atomic_store_n(&loop->expect, true, __ATOMIC_RELAXED);
}
/* Wait up to timeout_ms (-1: forever) and dispatch what is ready. */
void event_loop_run_once(struct event_loop *loop, int timeout_ms);

#endif
