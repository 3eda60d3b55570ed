/* The monitor's one event loop (epoll), run by the main thread: console input, signals, stop
 * requests, and every asynchronous device fd (disk completions, queue notifications, TAPs). */
#ifndef VMM_EVENT_LOOP_H
#define VMM_EVENT_LOOP_H

#include <stdint.h>

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
};

int event_loop_init(struct event_loop *loop);
void event_loop_destroy(struct event_loop *loop);
/* Watch fd for events (EPOLLIN...), calling fn from the main thread. 0 or a negative errno;
 * -EPERM for files epoll cannot watch (regular files). Only the main thread may call these. */
int event_loop_add(struct event_loop *loop, int fd, uint32_t events, event_fn fn, void *opaque);
int event_loop_modify(struct event_loop *loop, int fd, uint32_t events);
void event_loop_remove(struct event_loop *loop, int fd);
/* Wait up to timeout_ms (-1: forever) and dispatch what is ready. */
void event_loop_run_once(struct event_loop *loop, int timeout_ms);

#endif
