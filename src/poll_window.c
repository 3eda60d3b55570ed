/* Adaptive poll window (poll_window.h). */
#include "poll_window.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stats.h"

void poll_window_init(struct poll_window *w, uint32_t max_ns, bool check_host)
{
	*w = (struct poll_window){ .max_ns = max_ns, .loadavg_fd = check_host ? -1 : -2 };
}

void poll_window_destroy(struct poll_window *w)
{
	if (w->loadavg_fd >= 0)
		close(w->loadavg_fd);
	w->loadavg_fd = -1;
}

/* "0.52 0.58 0.59 3/512 1234": runnable threads (this one included) against the online CPUs.
 * Unreadable: assume a spare CPU, as without the check. */
static bool poll_window_host_has_spare_cpu(struct poll_window *w)
{
	char buf[128];
	if (w->loadavg_fd == -1) {
		w->loadavg_fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
		if (w->loadavg_fd < 0)
			w->loadavg_fd = -2;
	}
	if (w->loadavg_fd < 0)
		return true;
	ssize_t n = pread(w->loadavg_fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return true;
	buf[n] = '\0';
	char *p = buf;
	for (int field = 0; field < 3 && p; field++) {
		p = strchr(p, ' ');
		p = p ? p + 1 : NULL;
	}
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	return !p || cpus <= 0 || strtol(p, NULL, 10) <= cpus;
}

bool poll_window_host_spare(struct poll_window *w, uint64_t now_ns)
{
	if (!w->host_checked_ns || now_ns - w->host_checked_ns >= POLL_WINDOW_HOST_CHECK_NS) {
		w->host_spare = poll_window_host_has_spare_cpu(w);
		w->host_checked_ns = now_ns;
	}
	return w->host_spare;
}

bool poll_window_should_poll(struct poll_window *w, uint64_t now_ns)
{
	if (!w->ns)
		return false;
	if (poll_window_host_spare(w, now_ns))
		return true;
	stats_add(w->host_busy, 1);
	return false;
}

void poll_window_update(struct poll_window *w, uint64_t waited_ns, bool hit, uint64_t polled_ns)
{
	stats_add(w->poll_ns, polled_ns);
	if (hit) {
		stats_add(w->hits, 1);
		return;
	}
	if (polled_ns)
		stats_add(w->misses, 1);
	if (!w->max_ns)
		return;
	if (waited_ns <= w->max_ns) {
		/* Slept, then woken within the cap: a longer poll would have caught it. */
		if (w->ns < w->max_ns) {
			uint64_t ns = w->ns ? (uint64_t)w->ns * 2 : POLL_WINDOW_START_NS;
			__atomic_store_n(&w->ns, (uint32_t)(ns < w->max_ns ? ns : w->max_ns),
					 __ATOMIC_RELAXED);
			stats_add(w->grows, 1);
		}
	} else if (w->ns) {
		/* A long wait: the poll was wasted. Halve it; a small window is worth nothing. */
		__atomic_store_n(&w->ns, w->ns / 2 >= POLL_WINDOW_START_NS ? w->ns / 2 : 0,
				 __ATOMIC_RELAXED);
		stats_add(w->shrinks, 1);
	}
}

void poll_window_format(const struct poll_window *w, FILE *out)
{
	fprintf(out,
		"%llu caught the event, %llu slept after polling, %llu did not poll (host busy); "
		"window %.1f us (cap %.1f, grown %llu, shrunk %llu times), %.6f s polling",
		(unsigned long long)stats_load(w->hits), (unsigned long long)stats_load(w->misses),
		(unsigned long long)stats_load(w->host_busy), stats_load(w->ns) / 1e3,
		w->max_ns / 1e3, (unsigned long long)stats_load(w->grows),
		(unsigned long long)stats_load(w->shrinks), (double)stats_load(w->poll_ns) / 1e9);
}
