/* User-mode networking with libslirp: NAT to the host's sockets, DHCP (the guest gets
 * 10.0.2.15), DNS at 10.0.2.3 forwarded to the host's resolver, the host itself at 10.0.2.2,
 * and host port forwarding (hostfwd=). Needs no root and no TAP. The link's MTU is the guest's
 * choice of mtu= (65520 unless given: libslirp's largest), told to the guest through virtio-net's
 * MTU field.
 *
 * libslirp is driven from the main event loop: after every batch of calls into it (the frames
 * of one transmit kick, a socket event, a timer) the set of sockets it wants polled is read
 * again with slirp_pollfds_fill and mirrored into the epoll loop (epoll_ctl only for sockets
 * whose events changed), and one timerfd is armed for the earliest of its timers and its poll
 * timeout (only when that changed). When a socket is ready, what epoll says about it is handed
 * to slirp_pollfds_poll; when the timer fires, every socket's state, from poll(timeout 0). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "net/net.h"

#ifndef HAVE_LIBSLIRP

struct net_backend *net_user_open(const struct net_config *nc, struct event_loop *loop,
				  char *err, size_t err_len)
{
	(void)nc;
	(void)loop;
	snprintf(err, err_len, "--net user: user-mode networking is not built into this vmm (install libslirp-dev and rebuild, or use -n tap)");
	return NULL;
}

#else

#include <arpa/inet.h>
#include <libslirp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "event_loop.h"

#define USER_MAX_FDS 128
#define USER_GUEST_ADDR "10.0.2.15"

struct user_timer {
	struct user_net *u;
	SlirpTimerCb cb; /* timer_new */
	SlirpTimerId id; /* timer_new_opaque */
	void *cb_opaque;
	int64_t expire_ms; /* -1: not armed */
	struct user_timer *next;
};

struct user_net {
	struct net_backend be; /* first */
	Slirp *slirp;
	struct event_loop *loop;
	int timer_fd;
	struct user_timer *timers;
	struct pollfd pfds[USER_MAX_FDS]; /* from the last slirp_pollfds_fill */
	unsigned nr_pfds;
	bool overflow;
	int watched[USER_MAX_FDS]; /* fds in the event loop */
	uint32_t watched_events[USER_MAX_FDS]; /* what each is watched for */
	unsigned nr_watched;
	int64_t armed_ms; /* the timerfd's deadline (CLOCK_MONOTONIC ms), -1 disarmed */
	bool guest_error_reported;
};

static int64_t user_clock_ns(void *opaque)
{
	(void)opaque;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static ssize_t user_send_packet(const void *buf, size_t len, void *opaque)
{
	struct user_net *u = opaque;
	if (u->be.receive)
		u->be.receive(u->be.receive_opaque, buf, len);
	return (ssize_t)len;
}

static void user_guest_error(const char *msg, void *opaque)
{
	struct user_net *u = opaque;
	if (!u->guest_error_reported)
		fprintf(stderr, "vmm: user network: the guest sent something invalid: %s\n", msg);
	u->guest_error_reported = true;
}

static struct user_timer *user_timer_add(struct user_net *u)
{
	struct user_timer *t = calloc(1, sizeof(*t));
	if (!t)
		abort(); /* libslirp cannot take a failure here */
	t->u = u;
	t->expire_ms = -1;
	t->next = u->timers;
	u->timers = t;
	return t;
}

static void *user_timer_new(SlirpTimerCb cb, void *cb_opaque, void *opaque)
{
	struct user_timer *t = user_timer_add(opaque);
	t->cb = cb;
	t->cb_opaque = cb_opaque;
	return t;
}

static void *user_timer_new_opaque(SlirpTimerId id, void *cb_opaque, void *opaque)
{
	struct user_timer *t = user_timer_add(opaque);
	t->id = id;
	t->cb_opaque = cb_opaque;
	return t;
}

static void user_timer_free(void *timer, void *opaque)
{
	struct user_net *u = opaque;
	for (struct user_timer **pp = &u->timers; *pp; pp = &(*pp)->next)
		if (*pp == timer) {
			*pp = ((struct user_timer *)timer)->next;
			free(timer);
			return;
		}
}

static void user_timer_mod(void *timer, int64_t expire_ms, void *opaque)
{
	(void)opaque;
	((struct user_timer *)timer)->expire_ms = expire_ms;
}

static void user_nop_fd(int fd, void *opaque)
{
	(void)fd;
	(void)opaque;
}

static void user_notify(void *opaque)
{
	(void)opaque; /* the loop re-reads slirp's state after every call anyway */
}

static const SlirpCb user_callbacks = {
	.send_packet = user_send_packet,
	.guest_error = user_guest_error,
	.clock_get_ns = user_clock_ns,
	.timer_new = user_timer_new,
	.timer_free = user_timer_free,
	.timer_mod = user_timer_mod,
	.register_poll_fd = user_nop_fd,
	.unregister_poll_fd = user_nop_fd,
	.notify = user_notify,
	.timer_new_opaque = user_timer_new_opaque,
};

static int user_add_poll(int fd, int events, void *opaque)
{
	struct user_net *u = opaque;
	if (u->nr_pfds == USER_MAX_FDS) {
		u->overflow = true;
		return -1;
	}
	short ev = 0;
	if (events & SLIRP_POLL_IN)
		ev |= POLLIN;
	if (events & SLIRP_POLL_OUT)
		ev |= POLLOUT;
	if (events & SLIRP_POLL_PRI)
		ev |= POLLPRI;
	u->pfds[u->nr_pfds] = (struct pollfd){ .fd = fd, .events = ev };
	return (int)u->nr_pfds++;
}

static int user_get_revents(int idx, void *opaque)
{
	struct user_net *u = opaque;
	if (idx < 0 || (unsigned)idx >= u->nr_pfds)
		return 0;
	short r = u->pfds[idx].revents;
	return ((r & POLLIN) ? SLIRP_POLL_IN : 0) | ((r & POLLOUT) ? SLIRP_POLL_OUT : 0) |
	       ((r & POLLPRI) ? SLIRP_POLL_PRI : 0) | ((r & POLLERR) ? SLIRP_POLL_ERR : 0) |
	       ((r & POLLHUP) ? SLIRP_POLL_HUP : 0);
}

static void user_on_event(void *opaque, int fd, uint32_t events);

static void user_unwatch(struct user_net *u, unsigned i)
{
	u->nr_watched--;
	u->watched[i] = u->watched[u->nr_watched];
	u->watched_events[i] = u->watched_events[u->nr_watched];
}

/* Watch fd for ev: epoll_ctl only when it is new or its events changed. false if it cannot be
 * watched. */
static bool user_watch(struct user_net *u, int fd, uint32_t ev)
{
	unsigned i = 0;
	while (i < u->nr_watched && u->watched[i] != fd)
		i++;
	bool known = i < u->nr_watched;
	if (known && u->watched_events[i] == ev)
		return true;
	/* A socket closed and reopened under the same number left epoll: add it again. */
	if (known && event_loop_modify(u->loop, fd, ev) == 0) {
		u->watched_events[i] = ev;
		return true;
	}
	if (known) {
		event_loop_remove(u->loop, fd);
		user_unwatch(u, i);
	}
	if (event_loop_add(u->loop, fd, ev, user_on_event, u) < 0)
		return false;
	u->watched[u->nr_watched] = fd;
	u->watched_events[u->nr_watched++] = ev;
	return true;
}

/* Arm the timerfd for `next` (ms, -1: never) unless it already is. */
static void user_arm(struct user_net *u, int64_t next, int64_t now)
{
	if (next == u->armed_ms && (next < 0 || next > now))
		return;
	struct itimerspec its = { 0 };
	if (next >= 0) {
		int64_t d = next > now ? next - now : 1;
		its.it_value.tv_sec = d / 1000;
		its.it_value.tv_nsec = (d % 1000) * 1000000;
	}
	timerfd_settime(u->timer_fd, 0, &its, NULL);
	u->armed_ms = next;
}

/* Mirror slirp's sockets into the event loop and arm the timer for its next deadline. */
static void user_sync(struct user_net *u)
{
	uint32_t timeout = UINT32_MAX;
	u->nr_pfds = 0;
	u->overflow = false;
	slirp_pollfds_fill(u->slirp, &timeout, user_add_poll, u);
	/* Stop watching sockets slirp no longer has. */
	for (unsigned i = 0; i < u->nr_watched;) {
		bool keep = false;
		for (unsigned j = 0; j < u->nr_pfds && !keep; j++)
			keep = u->pfds[j].fd == u->watched[i];
		if (keep) {
			i++;
			continue;
		}
		event_loop_remove(u->loop, u->watched[i]);
		user_unwatch(u, i);
	}
	for (unsigned j = 0; j < u->nr_pfds; j++) {
		uint32_t ev = ((u->pfds[j].events & (POLLIN | POLLPRI)) ? EPOLLIN | EPOLLPRI : 0) |
			      ((u->pfds[j].events & POLLOUT) ? EPOLLOUT : 0);
		if (!user_watch(u, u->pfds[j].fd, ev))
			timeout = timeout > 10 ? 10 : timeout; /* cannot watch it: poll soon */
	}
	if (u->overflow && timeout > 10)
		timeout = 10;
	int64_t now = user_clock_ns(NULL) / 1000000;
	int64_t next = timeout == UINT32_MAX ? -1 : now + timeout;
	for (struct user_timer *t = u->timers; t; t = t->next)
		if (t->expire_ms >= 0 && (next < 0 || t->expire_ms < next))
			next = t->expire_ms;
	user_arm(u, next, now);
}

/* Let slirp handle its sockets and due timers, then sync. The sockets are the last sync's set:
 * every call into slirp is followed by a sync before the loop runs again, so the poll indexes
 * slirp remembers are that fill's. A socket event (fd >= 0) hands slirp what epoll said about
 * that socket, no system call; the others report through epoll in their turn. The timer
 * (fd < 0) takes every socket's state with poll(), for those epoll could not watch. */
static void user_run(struct user_net *u, int fd, uint32_t events)
{
	int n = 0;
	for (unsigned i = 0; i < u->nr_pfds; i++) {
		u->pfds[i].revents = 0;
		if (u->pfds[i].fd != fd)
			continue;
		u->pfds[i].revents = (short)(((events & EPOLLIN) ? POLLIN : 0) |
					     ((events & EPOLLOUT) ? POLLOUT : 0) |
					     ((events & EPOLLPRI) ? POLLPRI : 0) |
					     ((events & EPOLLERR) ? POLLERR : 0) |
					     ((events & EPOLLHUP) ? POLLHUP : 0));
		n = 1;
	}
	if (fd < 0)
		n = poll(u->pfds, u->nr_pfds, 0);
	slirp_pollfds_poll(u->slirp, n < 0, user_get_revents, u);
	int64_t now = user_clock_ns(NULL) / 1000000;
	bool fired;
	do { /* a callback may free or re-arm timers: rescan after each one */
		fired = false;
		for (struct user_timer *t = u->timers; t; t = t->next) {
			if (t->expire_ms < 0 || t->expire_ms > now)
				continue;
			t->expire_ms = -1;
			if (t->cb)
				t->cb(t->cb_opaque);
			else
				slirp_handle_timer(u->slirp, t->id, t->cb_opaque);
			fired = true;
			break;
		}
	} while (fired);
	user_sync(u);
}

static void user_on_event(void *opaque, int fd, uint32_t events)
{
	user_run(opaque, fd, events);
}

static void user_on_timer(void *opaque, int fd, uint32_t events)
{
	uint64_t expirations;
	(void)events;
	if (read(fd, &expirations, sizeof(expirations)) < 0) {
		/* spurious wake-up: nothing to read */
	}
	user_run(opaque, -1, 0);
}

static ssize_t user_transmit(struct net_backend *be, unsigned queue, const struct iovec *iov,
			     unsigned cnt)
{
	struct user_net *u = (struct user_net *)be;
	(void)queue;
	if (cnt != 1 || iov[0].iov_len > INT32_MAX)
		return -EINVAL;
	slirp_input(u->slirp, iov[0].iov_base, (int)iov[0].iov_len);
	return (ssize_t)iov[0].iov_len; /* user_flush syncs once the batch is done */
}

static void user_flush(struct net_backend *be)
{
	user_sync((struct user_net *)be);
}

static void user_destroy(struct net_backend *be)
{
	struct user_net *u = (struct user_net *)be;
	for (unsigned i = 0; i < u->nr_watched; i++)
		event_loop_remove(u->loop, u->watched[i]);
	if (u->timer_fd >= 0) {
		event_loop_remove(u->loop, u->timer_fd);
		close(u->timer_fd);
	}
	if (u->slirp)
		slirp_cleanup(u->slirp);
	while (u->timers) {
		struct user_timer *t = u->timers;
		u->timers = t->next;
		free(t);
	}
	free(u);
}

static const struct net_backend_ops user_ops = {
	.transmit = user_transmit,
	.flush = user_flush,
	.destroy = user_destroy,
};

struct net_backend *net_user_open(const struct net_config *nc, struct event_loop *loop,
				  char *err, size_t err_len)
{
	struct user_net *u = calloc(1, sizeof(*u));
	if (!u) {
		snprintf(err, err_len, "--net user: out of memory");
		return NULL;
	}
	u->be.ops = &user_ops;
	u->be.nr_queues = 1;
	u->be.fds[0] = -1;
	u->be.mtu = nc->mtu ? nc->mtu : 1500;
	/* libslirp takes and makes whole frames: the device completes the guest's partial
	 * checksums before slirp_input and validates what slirp sends (net/csum.c). */
	u->be.offloads = NET_OFFLOAD_CSUM;
	snprintf(u->be.name, sizeof(u->be.name), "user");
	u->loop = loop;
	u->armed_ms = -1;
	u->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (u->timer_fd < 0 || event_loop_add(loop, u->timer_fd, EPOLLIN, user_on_timer, u) < 0) {
		snprintf(err, err_len, "--net user: timer: %s", strerror(errno));
		if (u->timer_fd >= 0)
			close(u->timer_fd);
		u->timer_fd = -1;
		user_destroy(&u->be);
		return NULL;
	}
	unsigned mtu = nc->mtu ? nc->mtu : 1500;
	SlirpConfig cfg = { .version = 4, .in_enabled = true, .if_mtu = mtu, .if_mru = mtu };
	inet_pton(AF_INET, "10.0.2.0", &cfg.vnetwork);
	inet_pton(AF_INET, "255.255.255.0", &cfg.vnetmask);
	inet_pton(AF_INET, "10.0.2.2", &cfg.vhost);
	inet_pton(AF_INET, USER_GUEST_ADDR, &cfg.vdhcp_start);
	inet_pton(AF_INET, "10.0.2.3", &cfg.vnameserver);
	cfg.vhostname = "vmm";
	u->slirp = slirp_new(&cfg, &user_callbacks, u);
	if (!u->slirp) {
		snprintf(err, err_len, "--net user: libslirp could not start (check libslirp's version)");
		user_destroy(&u->be);
		return NULL;
	}
	for (unsigned i = 0; i < nc->nr_hostfwd; i++) {
		const struct net_hostfwd *f = &nc->hostfwd[i];
		struct in_addr host = { f->host_addr }, guest = { f->guest_addr };
		if (!f->host_addr)
			inet_pton(AF_INET, "127.0.0.1", &host);
		if (!f->guest_addr)
			inet_pton(AF_INET, USER_GUEST_ADDR, &guest);
		if (slirp_add_hostfwd(u->slirp, f->udp, host, f->host_port, guest, f->guest_port) < 0) {
			char addr[INET_ADDRSTRLEN];
			inet_ntop(AF_INET, &host, addr, sizeof(addr));
			snprintf(err, err_len, "--net user: hostfwd=%s:%s:%u: cannot listen there: %s (pick a free host port)",
				 f->udp ? "udp" : "tcp", addr, f->host_port,
				 errno ? strerror(errno) : "address in use");
			user_destroy(&u->be);
			return NULL;
		}
	}
	user_sync(u);
	return &u->be;
}

#endif
