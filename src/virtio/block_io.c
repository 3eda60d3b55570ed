/* Asynchronous block I/O: io_uring where available, otherwise a pool of worker threads. */
#include "virtio/block_io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#ifdef HAVE_LIBURING
#include <liburing.h>
#define BLOCK_IO_RING_ENTRIES 256
#endif

#define BLOCK_IO_THREADS 4

struct block_io {
	int efd; /* completions are signalled here */
	bool uring;
	pthread_mutex_t lock; /* guards the lists and counters below */
	pthread_cond_t work, idle;
	struct block_io_request *pending, **pending_tail; /* threads: waiting for a worker */
	struct block_io_request *done, **done_tail; /* finished, not yet reaped */
	unsigned executing; /* submitted and not finished */
	bool stopping;
	bool plugged, unsubmitted; /* io_uring: queued SQEs wait for the unplug */
	pthread_t threads[BLOCK_IO_THREADS];
	unsigned nr_threads;
	char name[16];
#ifdef HAVE_LIBURING
	struct io_uring ring;
	struct block_io_request *overflow, **overflow_tail; /* the ring was full */
#endif
};

static void list_append(struct block_io_request ***tail, struct block_io_request *req)
{
	req->next = NULL;
	**tail = req;
	*tail = &req->next;
}

/* ---- worker threads ---- */

static int64_t block_io_execute(struct block_io_request *r)
{
	switch (r->op) {
	case BLOCK_IO_READ:
	case BLOCK_IO_WRITE: {
		/* Loop over short transfers; iov is consumed as we go (it belongs to the request). */
		int64_t total = 0;
		struct iovec *iov = r->iov;
		unsigned cnt = r->iovcnt;
		while (cnt) {
			ssize_t n = r->op == BLOCK_IO_READ ? preadv(r->fd, iov, (int)cnt, (off_t)(r->offset + total))
							   : pwritev(r->fd, iov, (int)cnt, (off_t)(r->offset + total));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return -errno;
			if (n == 0)
				return -EIO; /* end of file inside the image: it shrank under us */
			total += n;
			while (cnt && (size_t)n >= iov->iov_len) {
				n -= (ssize_t)iov->iov_len;
				iov++;
				cnt--;
			}
			if (cnt) {
				iov->iov_base = (uint8_t *)iov->iov_base + n;
				iov->iov_len -= (size_t)n;
			}
		}
		return total;
	}
	case BLOCK_IO_FLUSH:
		return fdatasync(r->fd) < 0 ? -errno : 0;
	case BLOCK_IO_FALLOCATE:
		return fallocate(r->fd, r->mode, (off_t)r->offset, (off_t)r->len) < 0 ? -errno : 0;
	}
	return -EINVAL;
}

static void block_io_signal(struct block_io *io)
{
	uint64_t one = 1;
	if (write(io->efd, &one, sizeof(one)) < 0) {
		/* the counter is far from full; nothing to do */
	}
}

static void *block_io_worker(void *arg)
{
	struct block_io *io = arg;
	pthread_setname_np(pthread_self(), io->name);
	pthread_mutex_lock(&io->lock);
	for (;;) {
		while (!io->pending && !io->stopping)
			pthread_cond_wait(&io->work, &io->lock);
		struct block_io_request *r = io->pending;
		if (!r)
			break; /* stopping, nothing left */
		io->pending = r->next;
		if (!io->pending)
			io->pending_tail = &io->pending;
		pthread_mutex_unlock(&io->lock);
		r->result = block_io_execute(r);
		pthread_mutex_lock(&io->lock);
		list_append(&io->done_tail, r);
		if (--io->executing == 0)
			pthread_cond_broadcast(&io->idle);
		block_io_signal(io);
	}
	pthread_mutex_unlock(&io->lock);
	return NULL;
}

/* ---- io_uring ---- */

#ifdef HAVE_LIBURING
/* Queue one request on the ring; false when the ring is full. */
static bool block_io_uring_queue(struct block_io *io, struct block_io_request *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
	if (!sqe)
		return false;
	switch (r->op) {
	case BLOCK_IO_READ: io_uring_prep_readv(sqe, r->fd, r->iov, r->iovcnt, r->offset); break;
	case BLOCK_IO_WRITE: io_uring_prep_writev(sqe, r->fd, r->iov, r->iovcnt, r->offset); break;
	case BLOCK_IO_FLUSH: io_uring_prep_fsync(sqe, r->fd, IORING_FSYNC_DATASYNC); break;
	case BLOCK_IO_FALLOCATE: io_uring_prep_fallocate(sqe, r->fd, r->mode, r->offset, r->len); break;
	}
	io_uring_sqe_set_data(sqe, r);
	return true;
}

static uint64_t block_io_expected(const struct block_io_request *r)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < r->iovcnt; i++)
		n += r->iov[i].iov_len;
	return n;
}

/* Move finished CQEs to the done list; wait for at least one if `wait`. */
static void block_io_uring_collect(struct block_io *io, bool wait)
{
	struct io_uring_cqe *cqe;
	while ((wait ? io_uring_wait_cqe(&io->ring, &cqe) : io_uring_peek_cqe(&io->ring, &cqe)) == 0) {
		struct block_io_request *r = io_uring_cqe_get_data(cqe);
		r->result = cqe->res;
		/* A short transfer inside the image means it shrank: an I/O error for the guest. */
		if ((r->op == BLOCK_IO_READ || r->op == BLOCK_IO_WRITE) && r->result >= 0 &&
		    (uint64_t)r->result != block_io_expected(r))
			r->result = -EIO;
		io_uring_cqe_seen(&io->ring, cqe);
		list_append(&io->done_tail, r);
		io->executing--;
		wait = false;
	}
	/* Room on the ring again: resubmit what did not fit. */
	bool queued = false;
	while (io->overflow && block_io_uring_queue(io, io->overflow)) {
		io->overflow = io->overflow->next;
		queued = true;
	}
	if (!io->overflow)
		io->overflow_tail = &io->overflow;
	if (queued)
		io_uring_submit(&io->ring);
}
#endif

/* ---- interface ---- */

struct block_io *block_io_create(const char *name)
{
	struct block_io *io = calloc(1, sizeof(*io));
	if (!io)
		return NULL;
	snprintf(io->name, sizeof(io->name), "%s", name);
	pthread_mutex_init(&io->lock, NULL);
	pthread_cond_init(&io->work, NULL);
	pthread_cond_init(&io->idle, NULL);
	io->pending_tail = &io->pending;
	io->done_tail = &io->done;
	io->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (io->efd < 0) {
		free(io);
		return NULL;
	}
#ifdef HAVE_LIBURING
	io->overflow_tail = &io->overflow;
	if (io_uring_queue_init(BLOCK_IO_RING_ENTRIES, &io->ring, 0) == 0) {
		if (io_uring_register_eventfd(&io->ring, io->efd) == 0) {
			io->uring = true;
			return io;
		}
		io_uring_queue_exit(&io->ring);
	}
	/* io_uring unavailable (old kernel, seccomp, sysctl): the thread pool does the work. */
#endif
	for (; io->nr_threads < BLOCK_IO_THREADS; io->nr_threads++)
		if (pthread_create(&io->threads[io->nr_threads], NULL, block_io_worker, io) != 0)
			break;
	if (io->nr_threads == 0) {
		close(io->efd);
		free(io);
		return NULL;
	}
	return io;
}

const char *block_io_engine(struct block_io *io)
{
	return io->uring ? "io_uring" : "threads";
}

int block_io_fd(struct block_io *io)
{
	return io->efd;
}

void block_io_submit(struct block_io *io, struct block_io_request *req)
{
	pthread_mutex_lock(&io->lock);
	io->executing++;
#ifdef HAVE_LIBURING
	if (io->uring) {
		if (io->overflow || !block_io_uring_queue(io, req))
			list_append(&io->overflow_tail, req);
		else if (io->plugged)
			io->unsubmitted = true;
		else
			io_uring_submit(&io->ring);
		pthread_mutex_unlock(&io->lock);
		return;
	}
#endif
	list_append(&io->pending_tail, req);
	pthread_cond_signal(&io->work);
	pthread_mutex_unlock(&io->lock);
}

void block_io_plug(struct block_io *io)
{
	pthread_mutex_lock(&io->lock);
	io->plugged = true;
	pthread_mutex_unlock(&io->lock);
}

void block_io_unplug(struct block_io *io)
{
	pthread_mutex_lock(&io->lock);
	io->plugged = false;
#ifdef HAVE_LIBURING
	if (io->uring && io->unsubmitted)
		io_uring_submit(&io->ring);
#endif
	io->unsubmitted = false;
	pthread_mutex_unlock(&io->lock);
}

unsigned block_io_reap(struct block_io *io, void (*done)(void *opaque, struct block_io_request *),
		       void *opaque)
{
	uint64_t count;
	if (read(io->efd, &count, sizeof(count)) < 0) {
		/* nothing signalled: there may still be requests collected by a drain */
	}
	pthread_mutex_lock(&io->lock);
#ifdef HAVE_LIBURING
	if (io->uring)
		block_io_uring_collect(io, false);
#endif
	struct block_io_request *list = io->done;
	io->done = NULL;
	io->done_tail = &io->done;
	pthread_mutex_unlock(&io->lock);
	unsigned n = 0;
	while (list) {
		struct block_io_request *next = list->next;
		done(opaque, list);
		list = next;
		n++;
	}
	return n;
}

void block_io_drain(struct block_io *io)
{
	pthread_mutex_lock(&io->lock);
#ifdef HAVE_LIBURING
	if (io->uring) {
		if (io->unsubmitted) /* never wait for requests the kernel was not given */
			io_uring_submit(&io->ring);
		io->unsubmitted = false;
		while (io->executing)
			block_io_uring_collect(io, true);
		pthread_mutex_unlock(&io->lock);
		return;
	}
#endif
	while (io->executing)
		pthread_cond_wait(&io->idle, &io->lock);
	pthread_mutex_unlock(&io->lock);
}

void block_io_destroy(struct block_io *io)
{
	if (!io)
		return;
	block_io_drain(io);
	pthread_mutex_lock(&io->lock);
	io->stopping = true;
	pthread_cond_broadcast(&io->work);
	pthread_mutex_unlock(&io->lock);
	for (unsigned i = 0; i < io->nr_threads; i++)
		pthread_join(io->threads[i], NULL);
#ifdef HAVE_LIBURING
	if (io->uring)
		io_uring_queue_exit(&io->ring);
#endif
	close(io->efd);
	pthread_cond_destroy(&io->work);
	pthread_cond_destroy(&io->idle);
	pthread_mutex_destroy(&io->lock);
	free(io);
}
