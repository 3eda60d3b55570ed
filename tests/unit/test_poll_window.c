/* The adaptive busy-poll window (src/poll_window.c) and the event loop's polling before it
 * blocks (src/event_loop.c). */
#include <pthread.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "event_loop.h"
#include "poll_window.h"
#include "test.h"

#define MAX_NS 200000u

static void test_window_starts_closed_and_grows_on_short_sleeps(void)
{
	struct poll_window w;
	poll_window_init(&w, MAX_NS, true);
	CHECK_EQ(w.ns, 0);
	/* A sleep woken 30 us in: polling would have caught it. */
	poll_window_update(&w, 30000, false, 0);
	CHECK_EQ(w.ns, POLL_WINDOW_START_NS);
	poll_window_update(&w, 30000, false, POLL_WINDOW_START_NS);
	CHECK_EQ(w.ns, 2 * POLL_WINDOW_START_NS);
	CHECK_EQ(w.misses, 1); /* only a wait that polled counts as a miss */
	for (int i = 0; i < 10; i++)
		poll_window_update(&w, 150000, false, w.ns);
	CHECK_EQ(w.ns, MAX_NS); /* capped */
}

static void test_window_keeps_its_size_on_hits(void)
{
	struct poll_window w;
	poll_window_init(&w, MAX_NS, true);
	w.ns = 40000;
	poll_window_update(&w, 25000, true, 25000);
	CHECK_EQ(w.ns, 40000);
	CHECK_EQ(w.hits, 1);
	CHECK_EQ(w.misses, 0);
	CHECK_EQ(w.poll_ns, 25000);
}

static void test_window_shrinks_to_zero_when_nothing_comes(void)
{
	struct poll_window w;
	poll_window_init(&w, MAX_NS, true);
	w.ns = MAX_NS;
	/* An idle guest: every wait far longer than the cap. */
	unsigned steps = 0;
	while (w.ns && steps < 100) {
		poll_window_update(&w, 4000000, false, w.ns);
		steps++;
	}
	CHECK_EQ(w.ns, 0);
	CHECK(steps <= 6); /* halving: 200 -> 100 -> 50 -> 25 -> 12.5 -> 0 */
	uint64_t shrinks = w.shrinks;
	poll_window_update(&w, 4000000, false, 0);
	CHECK_EQ(w.ns, 0); /* and stays closed: no polling at all */
	CHECK_EQ(w.shrinks, shrinks);
}

static void test_window_off_never_opens(void)
{
	struct poll_window w;
	poll_window_init(&w, 0, true);
	for (int i = 0; i < 5; i++)
		poll_window_update(&w, 1000, false, 0);
	CHECK_EQ(w.ns, 0);
	CHECK_EQ(w.grows, 0);
}

/* The host check reads a loadavg line: runnable threads against the online CPUs. */
static void test_window_holds_back_on_a_busy_host(void)
{
	char path[] = "/tmp/vmm-test-loadavg-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	unlink(path);
	struct poll_window w;
	poll_window_init(&w, MAX_NS, true);
	CHECK(!poll_window_should_poll(&w, 1000)); /* window closed: no look at the host */
	w.ns = MAX_NS;
	w.loadavg_fd = fd;
	CHECK(pwrite(fd, "4.00 3.00 2.00 9999/10000 4242\n", 31, 0) == 31);
	CHECK(!poll_window_should_poll(&w, 1000));
	CHECK_EQ(w.host_busy, 1);
	CHECK(ftruncate(fd, 0) == 0);
	CHECK(pwrite(fd, "0.00 0.00 0.00 1/100 4242\n", 26, 0) == 26);
	/* Within POLL_WINDOW_HOST_CHECK_NS the last look stands... */
	CHECK(!poll_window_should_poll(&w, 1000 + POLL_WINDOW_HOST_CHECK_NS - 1));
	/* ...then one running thread (this one) leaves a CPU to spare. */
	CHECK(poll_window_should_poll(&w, 1000 + POLL_WINDOW_HOST_CHECK_NS));
	CHECK_EQ(w.host_busy, 2);
	poll_window_destroy(&w);
	CHECK_EQ(w.loadavg_fd, -1);
	/* Told not to check: polls on whatever the host's load, and opens nothing. */
	poll_window_init(&w, MAX_NS, false);
	w.ns = MAX_NS;
	CHECK(poll_window_should_poll(&w, 1000));
	CHECK_EQ(w.loadavg_fd, -2);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct fired {
	int count;
};

static void on_event(void *opaque, int fd, uint32_t events)
{
	struct fired *f = opaque;
	uint64_t v;
	(void)events;
	if (read(fd, &v, sizeof(v)) == sizeof(v))
		f->count++;
}

struct writer {
	int fd;
	uint64_t delay_ns;
};

static void *write_later(void *arg)
{
	struct writer *w = arg;
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)w->delay_ns };
	nanosleep(&ts, NULL);
	uint64_t one = 1;
	if (write(w->fd, &one, sizeof(one)) < 0)
		return NULL;
	return NULL;
}

/* An event that comes while the loop polls is dispatched, counted as a hit, and one that
 * comes after a long sleep shrinks the window; without an expectation the loop never polls. */
static void test_event_loop_polls_only_when_expecting(void)
{
	struct event_loop loop;
	struct fired f = { 0 };
	CHECK_EQ(event_loop_init(&loop), 0);
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	CHECK(fd >= 0);
	CHECK_EQ(event_loop_add(&loop, fd, EPOLLIN, on_event, &f), 0);
	/* 50 ms: a window a busy host does not miss; polling whatever the host's load. */
	event_loop_set_poll_max(&loop, 50000000, false);
	loop.poll.ns = 50000000;

	/* Not expecting: the wait blocks, the window is neither used nor changed. */
	struct writer w = { fd, 2000000 };
	pthread_t t;
	pthread_create(&t, NULL, write_later, &w);
	event_loop_run_once(&loop, 5000);
	pthread_join(t, NULL);
	CHECK_EQ(f.count, 1);
	CHECK_EQ(loop.poll.hits + loop.poll.misses, 0);

	/* Expecting: the event comes 1 ms into the 50 ms poll. The host may stall this thread
	 * for longer than the window, so a miss is possible, but one of a few tries hits. */
	for (int i = 0; i < 10 && !loop.poll.hits; i++) {
		w.delay_ns = 1000000;
		event_loop_expect(&loop);
		pthread_create(&t, NULL, write_later, &w);
		event_loop_run_once(&loop, 5000);
		pthread_join(t, NULL);
	}
	CHECK_EQ(f.count, 1 + loop.poll.hits + loop.poll.misses);
	CHECK(loop.poll.hits >= 1);
	CHECK(!loop.expect); /* one wait consumed the expectation */

	/* Expecting, but nothing comes for far longer than the cap: the window shrinks. */
	uint32_t before = loop.poll.ns;
	w.delay_ns = 600000000;
	event_loop_expect(&loop);
	uint64_t start = now_ns();
	pthread_create(&t, NULL, write_later, &w);
	event_loop_run_once(&loop, 5000);
	pthread_join(t, NULL);
	CHECK(now_ns() - start >= 600000000);
	CHECK(loop.poll.ns < before);
	CHECK(loop.poll.shrinks >= 1);

	/* A busy host (more runnable threads than CPUs): the wait does not poll. The host's
	 * load comes from a file that says so, however long this thread takes to get there
	 * (a fresh look only holds for POLL_WINDOW_HOST_CHECK_NS: under ASan on a loaded host
	 * the real /proc/loadavg was read again and could show a CPU to spare). */
	char path[] = "/tmp/vmm-test-loadavg-XXXXXX";
	int busy_fd = mkstemp(path);
	CHECK(busy_fd >= 0);
	unlink(path);
	CHECK(pwrite(busy_fd, "4.00 3.00 2.00 9999/10000 4242\n", 31, 0) == 31);
	poll_window_destroy(&loop.poll);
	loop.poll.loadavg_fd = busy_fd; /* closed by the next poll_window_destroy() */
	loop.poll.ns = 50000000;
	loop.poll.host_spare = false;
	loop.poll.host_checked_ns = now_ns();
	uint64_t polled = loop.poll.poll_ns, busy = loop.poll.host_busy;
	event_loop_expect(&loop);
	w.delay_ns = 1000000;
	pthread_create(&t, NULL, write_later, &w);
	event_loop_run_once(&loop, 5000);
	pthread_join(t, NULL);
	CHECK_EQ(loop.poll.poll_ns, polled);
	CHECK_EQ(loop.poll.host_busy, busy + 1);

	/* Off: expecting changes nothing. */
	event_loop_set_poll_max(&loop, 0, true);
	event_loop_expect(&loop);
	w.delay_ns = 1000000;
	pthread_create(&t, NULL, write_later, &w);
	event_loop_run_once(&loop, 5000);
	pthread_join(t, NULL);
	CHECK_EQ(loop.poll.hits + loop.poll.misses, 0);
	event_loop_remove(&loop, fd);
	close(fd);
	event_loop_destroy(&loop);
}

int main(void)
{
	RUN_TEST(test_window_starts_closed_and_grows_on_short_sleeps);
	RUN_TEST(test_window_keeps_its_size_on_hits);
	RUN_TEST(test_window_shrinks_to_zero_when_nothing_comes);
	RUN_TEST(test_window_off_never_opens);
	RUN_TEST(test_window_holds_back_on_a_busy_host);
	RUN_TEST(test_event_loop_polls_only_when_expecting);
	return TEST_EXIT();
}
