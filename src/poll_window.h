/* An adaptive busy-poll window, after KVM's halt_poll_ns: a thread about to sleep until an event
 * first polls for `ns`; the window grows when the event came soon after it (a little more
 * polling would have saved the sleep and the wake-up) and shrinks when the wait was long (an
 * idle VM, where polling only burns a host CPU), down to 0: no polling. One owner thread
 * updates it; the counters are read by any thread (stats). */
#ifndef VMM_POLL_WINDOW_H
#define VMM_POLL_WINDOW_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* The first window after 0. */
#define POLL_WINDOW_START_NS 10000u

struct poll_window {
	uint32_t ns; /* the current window; 0: go to sleep at once */
	uint32_t max_ns; /* cap; 0: polling is off */
	uint64_t hits; /* waits the poll ended (no sleep) */
	uint64_t misses; /* polls that gave up and slept */
	uint64_t grows, shrinks;
	uint64_t poll_ns; /* time spent polling, hits and misses */
	uint64_t host_busy; /* waits that did not poll: more runnable threads than CPUs */
	/* /proc/loadavg, read at most every POLL_WINDOW_HOST_CHECK_NS: -1 not open yet, -2 not
	 * available (then polling is never held back). */
	int loadavg_fd;
	bool host_spare; /* the last check found a CPU to spare */
	uint64_t host_checked_ns;
};

/* Often enough to stop a poll when another thread (the I/O worker that will complete the
 * request, the thread that will wake this one) becomes runnable; each look is one pread. */
#define POLL_WINDOW_HOST_CHECK_NS 100000u

/* A short pause between two looks: lets the sibling hyperthread run, saves power. */
static inline void poll_window_relax(void)
{
	for (int i = 0; i < 16; i++) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#else
		__asm__ __volatile__(
			"" ::
				: "memory"); /* "N caught, M slept after polling; window ... us ..." (no newline), for --stats. */
		void poll_window_format(const struct poll_window *w, FILE *out);

#endif
	}
}

/* check_host false: poll whatever the host's load (a VM on CPUs of its own, where the load
 * of the others says nothing). */
void poll_window_init(struct poll_window *w, uint32_t max_ns, bool check_host);
void poll_window_destroy(struct poll_window *w);
/* Whether to poll now: the window is open and the host has a CPU to spare. A thread that spins
 * while the one that will wake it waits for a CPU only delays the event (KVM stops polling when
 * another task is runnable on its CPU; this is the nearest user space sees): with more runnable
 * threads than online CPUs (/proc/loadavg's running count), wait without polling. */
bool poll_window_should_poll(struct poll_window *w, uint64_t now_ns);
/* While polling: whether the host still has a CPU to spare (looked at again every
 * POLL_WINDOW_HOST_CHECK_NS). */
bool poll_window_host_spare(struct poll_window *w, uint64_t now_ns);
/* After one wait: `waited_ns` from its start to the event; `hit` when the poll saw it (no
 * sleep); `polled_ns` how long the poll ran. */
void poll_window_update(struct poll_window *w, uint64_t waited_ns, bool hit, uint64_t polled_ns);
/* "N caught, M slept after polling; window ... us ..." (no newline), for --stats. */
void poll_window_format(const struct poll_window *w, FILE *out);

#endif
