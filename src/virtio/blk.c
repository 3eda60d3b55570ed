/* virtio-blk (virtio 1.2 §5.2) on a raw image file or block device.
 *
 * Requests are parsed on the main thread (queue kicks), their I/O runs asynchronously
 * (block_io.c) and completes on the main thread, which writes the status byte and returns the
 * chain. FLUSH is fdatasync: its status is written only after the data is on stable storage. */
#include "virtio/blk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "virtio/block_io.h"
#include "virtio/virtio_pci.h"
#include "vm.h"

/* Feature bits (§5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status (§5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1

#define BLK_SECTOR 512ull
#define BLK_QUEUE_SIZE 256
/* Data segments per request: with the header and the status, a chain as long as the queue
 * (§2.7.5.3.1), as QEMU offers. With 126, a guest's 1 MiB O_DIRECT request in pairs of
 * contiguous pages (128 segments) reached the device as two requests, each with its own
 * round trip through the guest's block layer. */
#define BLK_SEG_MAX (BLK_QUEUE_SIZE - 2)
#define BLK_SIZE_MAX (1u << 20) /* bytes per segment */
#define BLK_MAX_DISCARD_SEGS 16
#define BLK_MAX_DISCARD_SECTORS (1u << 30) /* 512 GiB per request */
#define BLK_CONFIG_SIZE 60 /* up to write_zeroes_may_unmap and its padding */

struct blk_request {
	struct block_io_request io; /* first: block_io hands it back */
	struct virtio_blk *blk;
	unsigned queue;
	uint16_t head;
	uint32_t type;
	uint8_t *status;
	uint32_t written; /* bytes written into the guest's buffers, status byte included */
	unsigned first_in, nr_in; /* the chain's writable buffers in iov[] (memory_written) */
	uint64_t generation;
	uint64_t submitted_ns; /* when its I/O was handed to block_io (stats) */
	struct blk_request *next_free;
	void *bounce; /* cache=none and unaligned guest buffers */
	struct iovec *guest_iov; /* where a bounced read goes */
	unsigned guest_iovcnt;
	struct {
		uint64_t sector;
		uint32_t num_sectors, flags;
	} ranges[BLK_MAX_DISCARD_SEGS];
	unsigned nr_ranges, next_range;
	/* Not cleared when the request is reused (blk_request_get): filled before use. */
	struct iovec iov[BLK_SEG_MAX + 2]; /* the chain as popped */
	struct iovec data[BLK_SEG_MAX + 2]; /* the data part of it */
	struct iovec bounce_iov;
};

struct virtio_blk {
	struct virtio_device vdev;
	struct vm *vm;
	uint8_t config[BLK_CONFIG_SIZE];
	char name[24];
	char path[CONFIG_MAX_PATH];
	int fd; /* the image; O_DIRECT with cache=none */
	int fd_buffered; /* cache=none only: for requests whose offset or length is unaligned */
	bool ro, direct;
	uint64_t sectors;
	unsigned dio_align;
	char serial[VIRTIO_BLK_ID_BYTES];
	struct block_io *io;
	uint64_t generation; /* bumped by reset: completions of older requests are dropped */
	unsigned inflight;
	/* Finished requests kept for reuse: no calloc of 4 KiB per request. At most as many as
	 * were ever in flight at once, which the queues' sizes bound. */
	struct blk_request *free_requests;
	uint64_t reads, writes, flushes, errors; /* stats */
	uint64_t bytes_read, bytes_written;
	/* Requests whose host I/O finished, and their time from submission to completion (the
	 * host's share of a request's latency, next to the guest's own work). */
	uint64_t io_completed, io_ns;
	/* Paced completions (blk_on_io()): finished reads and writes not handed to the guest
	 * yet, oldest first; `held_any` is read by the idle hook without the lock. */
	struct block_io_request *held, **held_tail;
	bool held_any;
	int pace_timer; /* timerfd: the longest a completion is held */
	uint64_t paced_batches, paced_held; /* stats: batches split, completions held */
	uint64_t released_kick, released_idle, released_timer; /* stats: what handed them over */
};

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

/* A request with its fields up to the iovec arrays cleared. Lock held. */
static struct blk_request *blk_request_get(struct virtio_blk *blk)
{
	struct blk_request *req = blk->free_requests;
	if (!req)
		return malloc(sizeof(*req));
	blk->free_requests = req->next_free;
	return req;
}

static void blk_request_put(struct virtio_blk *blk, struct blk_request *req)
{
	free(req->bounce);
	req->bounce = NULL;
	req->next_free = blk->free_requests;
	blk->free_requests = req;
}

/* Return the chain with its status; the interrupt is sent by the caller's batch. Lock held. */
static void blk_finish(struct blk_request *req, uint8_t status)
{
	struct virtio_blk *blk = req->blk;
	*req->status = status;
	if (status != VIRTIO_BLK_S_OK)
		blk->errors++;
	virtq_written(&blk->vdev.queues[req->queue].vq, req->iov + req->first_in, req->nr_in);
	virtq_push(&blk->vdev.queues[req->queue].vq, req->head, req->written + 1);
	blk_request_put(blk, req);
}

static bool blk_aligned(const struct virtio_blk *blk, uint64_t offset, const struct iovec *iov,
			unsigned cnt, bool *memory_ok)
{
	uint64_t a = blk->dio_align;
	bool ok = offset % a == 0;
	*memory_ok = true;
	for (unsigned i = 0; i < cnt; i++) {
		if (iov[i].iov_len % a)
			ok = false;
		if ((uintptr_t)iov[i].iov_base % a)
			*memory_ok = false;
	}
	return ok;
}

/* Set up an O_DIRECT-safe read or write: the guest's buffers when aligned, a bounce buffer when
 * only the memory is unaligned, the buffered descriptor when the range itself is unaligned. */
static int blk_prepare_rw(struct blk_request *req, bool is_write, uint64_t offset, uint64_t len)
{
	struct virtio_blk *blk = req->blk;
	req->io.fd = blk->fd;
	if (!blk->direct)
		return 0;
	bool memory_ok;
	if (!blk_aligned(blk, offset, req->io.iov, req->io.iovcnt, &memory_ok)) {
		req->io.fd = blk->fd_buffered;
		return 0;
	}
	if (memory_ok)
		return 0;
	if (posix_memalign(&req->bounce, blk->dio_align, len))
		return -ENOMEM;
	if (is_write) {
		uint64_t done = 0;
		for (unsigned i = 0; i < req->io.iovcnt; i++) {
			memcpy((uint8_t *)req->bounce + done, req->io.iov[i].iov_base, req->io.iov[i].iov_len);
			done += req->io.iov[i].iov_len;
		}
	}
	req->guest_iov = req->io.iov;
	req->guest_iovcnt = req->io.iovcnt;
	req->bounce_iov = (struct iovec){ req->bounce, len };
	req->io.iov = &req->bounce_iov;
	req->io.iovcnt = 1;
	return 0;
}

/* Next discard/write-zeroes range as one fallocate; false when all are done. */
static bool blk_next_range(struct blk_request *req)
{
	if (req->next_range == req->nr_ranges)
		return false;
	struct virtio_blk *blk = req->blk;
	const typeof(req->ranges[0]) *r = &req->ranges[req->next_range++];
	req->io.op = BLOCK_IO_FALLOCATE;
	req->io.fd = blk->direct ? blk->fd_buffered : blk->fd;
	req->io.offset = r->sector * BLK_SECTOR;
	req->io.len = (uint64_t)r->num_sectors * BLK_SECTOR;
	/* Discard punches a hole; write-zeroes asks for zeroed blocks (§5.2.6.2). */
	req->io.mode = req->type == VIRTIO_BLK_T_DISCARD ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
							   : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
	return true;
}

static bool blk_range_ok(const struct virtio_blk *blk, uint64_t sector, uint64_t bytes)
{
	return bytes % BLK_SECTOR == 0 && sector <= blk->sectors &&
	       bytes / BLK_SECTOR <= blk->sectors - sector;
}

/* Parse one chain and start its I/O, or answer it at once. false: the queue is broken. */
static bool blk_handle_chain(struct virtio_blk *blk, unsigned q, struct blk_request *req,
			     const struct virtq_chain *chain)
{
	struct virtq *vq = &blk->vdev.queues[q].vq;
	struct {
		uint32_t type, reserved;
		uint64_t sector;
	} hdr;
	/* §5.2.6: a readable header of 16 bytes first, a writable status byte last. */
	if (chain->out_len < sizeof(hdr)) {
		virtq_fail(vq, "block request without a readable 16-byte header");
		return false;
	}
	if (chain->in_len < 1 || chain->iov[chain->nr_out + chain->nr_in - 1].iov_len < 1) {
		virtq_fail(vq, "block request without a writable status byte");
		return false;
	}
	virtq_chain_read(chain, 0, &hdr, sizeof(hdr));
	req->blk = blk;
	req->queue = q;
	req->head = chain->head;
	req->first_in = chain->nr_out;
	req->nr_in = chain->nr_in;
	req->type = hdr.type;
	req->generation = blk->generation;
	const struct iovec *last = &chain->iov[chain->nr_out + chain->nr_in - 1];
	req->status = (uint8_t *)last->iov_base + last->iov_len - 1;

	/* The data: readable bytes after the header (OUT), or writable bytes before the status. */
	unsigned nd = 0;
	uint64_t data_len = 0;
	if (hdr.type == VIRTIO_BLK_T_IN || hdr.type == VIRTIO_BLK_T_GET_ID) {
		for (unsigned i = chain->nr_out; i < chain->nr_out + chain->nr_in; i++) {
			size_t l = chain->iov[i].iov_len - (&chain->iov[i] == last ? 1 : 0);
			if (l)
				req->data[nd++] = (struct iovec){ chain->iov[i].iov_base, l };
			data_len += l;
		}
	} else {
		uint64_t skip = sizeof(hdr);
		for (unsigned i = 0; i < chain->nr_out; i++) {
			uint64_t l = chain->iov[i].iov_len;
			if (skip >= l) {
				skip -= l;
				continue;
			}
			req->data[nd++] = (struct iovec){ (uint8_t *)chain->iov[i].iov_base + skip, l - skip };
			data_len += l - skip;
			skip = 0;
		}
	}
	req->io.iov = req->data;
	req->io.iovcnt = nd;
	uint64_t offset = hdr.sector * BLK_SECTOR;

	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT: {
		bool is_write = hdr.type == VIRTIO_BLK_T_OUT;
		if ((is_write && blk->ro) || !blk_range_ok(blk, hdr.sector, data_len) ||
		    blk_prepare_rw(req, is_write, offset, data_len) < 0) {
			blk_finish(req, VIRTIO_BLK_S_IOERR);
			return true;
		}
		if (data_len == 0) {
			blk_finish(req, VIRTIO_BLK_S_OK);
			return true;
		}
		req->io.op = is_write ? BLOCK_IO_WRITE : BLOCK_IO_READ;
		req->io.offset = offset;
		if (!is_write)
			req->written = (uint32_t)data_len;
		is_write ? blk->writes++ : blk->reads++;
		*(is_write ? &blk->bytes_written : &blk->bytes_read) += data_len;
		trace_event(blk->vm, TRACE_BLK, TRACE_HOST, "%s %s sector %llu bytes %llu", blk->name,
			    is_write ? "write" : "read", (unsigned long long)hdr.sector,
			    (unsigned long long)data_len);
		break;
	}
	case VIRTIO_BLK_T_FLUSH:
		if (blk->ro) {
			blk_finish(req, VIRTIO_BLK_S_OK);
			return true;
		}
		req->io.op = BLOCK_IO_FLUSH;
		req->io.fd = blk->fd;
		blk->flushes++;
		break;
	case VIRTIO_BLK_T_GET_ID: {
		/* §5.2.6: 20 bytes, NUL-padded (no terminator when all 20 are used). */
		uint64_t done = 0;
		for (unsigned i = 0; i < nd && done < VIRTIO_BLK_ID_BYTES; i++) {
			uint64_t n = req->data[i].iov_len < VIRTIO_BLK_ID_BYTES - done
					     ? req->data[i].iov_len : VIRTIO_BLK_ID_BYTES - done;
			memcpy(req->data[i].iov_base, blk->serial + done, n);
			done += n;
		}
		req->written = (uint32_t)done;
		blk_finish(req, VIRTIO_BLK_S_OK);
		return true;
	}
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES: {
		/* Segments of {le64 sector, le32 num_sectors, le32 flags} (§5.2.6). */
		uint64_t n = data_len / 16;
		if (blk->ro || data_len % 16 || n == 0 || n > BLK_MAX_DISCARD_SEGS) {
			blk_finish(req, VIRTIO_BLK_S_IOERR);
			return true;
		}
		virtq_chain_read(chain, sizeof(hdr), req->ranges, data_len);
		req->nr_ranges = (unsigned)n;
		for (unsigned i = 0; i < n; i++) {
			uint32_t flags = req->ranges[i].flags;
			bool bad_flags = hdr.type == VIRTIO_BLK_T_DISCARD
						 ? flags != 0
						 : (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != 0;
			if (bad_flags) {
				blk_finish(req, VIRTIO_BLK_S_UNSUPP);
				return true;
			}
			if (req->ranges[i].num_sectors > BLK_MAX_DISCARD_SECTORS ||
			    !blk_range_ok(blk, req->ranges[i].sector,
					  (uint64_t)req->ranges[i].num_sectors * BLK_SECTOR)) {
				blk_finish(req, VIRTIO_BLK_S_IOERR);
				return true;
			}
		}
		blk_next_range(req);
		break;
	}
	default:
		blk_finish(req, VIRTIO_BLK_S_UNSUPP);
		return true;
	}
	blk->inflight++;
	req->submitted_ns = trace_now_ns();
	block_io_submit(blk->io, &req->io);
	return true;
}

static void blk_complete(void *opaque, struct block_io_request *io);

/* Hand every held completion to the guest (without the interrupt: the caller sends it). Lock
 * held. `count`: the stat of what released them. */
static void blk_release(struct virtio_blk *blk, uint64_t *count)
{
	struct block_io_request *list = blk->held;
	if (!list)
		return;
	blk->held = NULL;
	blk->held_tail = &blk->held;
	__atomic_store_n(&blk->held_any, false, __ATOMIC_RELAXED);
	struct itimerspec off = { 0 };
	timerfd_settime(blk->pace_timer, 0, &off, NULL);
	if (count)
		(*count)++;
	while (list) {
		struct block_io_request *next = list->next;
		blk_complete(blk, list);
		list = next;
	}
}

static void blk_notify_all(struct virtio_blk *blk)
{
	for (unsigned q = 0; q < blk->vdev.nr_queues; q++)
		virtio_device_notify_queue(&blk->vdev, q);
}

static void blk_queue_notify(struct virtio_device *vdev, unsigned q)
{
	struct virtio_blk *blk = vdev->opaque;
	struct virtq *vq = &vdev->queues[q].vq;
	int r;
	bool released = blk->held != NULL;
	blk_release(blk, &blk->released_kick); /* the guest is done with the first part */
	block_io_plug(blk->io);
	do {
		for (;;) {
			struct blk_request *req = blk_request_get(blk);
			if (!req) {
				r = 1;
				break; /* retried at the next kick */
			}
			memset(req, 0, offsetof(struct blk_request, iov));
			struct virtq_chain chain = { .iov = req->iov, .cap = BLK_SEG_MAX + 2 };
			r = virtq_pop(vq, &chain);
			if (r <= 0) {
				blk_request_put(blk, req);
				break;
			}
			if (!blk_handle_chain(blk, q, req, &chain)) {
				blk_request_put(blk, req);
				r = -EIO;
				break;
			}
		}
	} while (r == 0 && virtq_enable_notify(vq));
	block_io_unplug(blk->io);
	if (released) /* held completions of any queue */
		blk_notify_all(blk);
	else
		virtio_device_notify_queue(vdev, q);
}

/* One finished I/O, on the main thread with the device lock held. */
static void blk_complete(void *opaque, struct block_io_request *io)
{
	struct blk_request *req = (struct blk_request *)io;
	struct virtio_blk *blk = opaque;
	if (req->generation != blk->generation) { /* the driver reset the device meanwhile */
		blk_request_put(blk, req);
		return;
	}
	int64_t res = io->result;
	if (io->op == BLOCK_IO_FALLOCATE && res == -EOPNOTSUPP && req->type == VIRTIO_BLK_T_WRITE_ZEROES &&
	    io->mode == (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)) {
		/* No ZERO_RANGE here (e.g. tmpfs): a punched hole reads as zeroes too. */
		req->next_range--;
		blk_next_range(req);
		io->mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
		block_io_submit(blk->io, io);
		return;
	}
	if (res >= 0 && io->op == BLOCK_IO_FALLOCATE && blk_next_range(req)) {
		block_io_submit(blk->io, io);
		return;
	}
	blk->inflight--;
	blk->io_completed++;
	blk->io_ns += trace_now_ns() - req->submitted_ns;
	if (res >= 0 && req->bounce && io->op == BLOCK_IO_READ) {
		uint64_t done = 0;
		for (unsigned i = 0; i < req->guest_iovcnt; i++) {
			memcpy(req->guest_iov[i].iov_base, (uint8_t *)req->bounce + done,
			       req->guest_iov[i].iov_len);
			done += req->guest_iov[i].iov_len;
		}
	}
	if (res < 0) {
		/* Host I/O errors (EIO, ENOSPC...) reach the guest as IOERR; the monitor goes on. */
		req->written = 0;
		blk_finish(req, VIRTIO_BLK_S_IOERR);
	} else {
		blk_finish(req, VIRTIO_BLK_S_OK);
	}
}

/* Pacing. The host often finishes a whole batch of the guest's requests at once (this host's
 * disk: 32 random 4 KiB writes all within ~15 us, ~400 us after they were submitted). Handed
 * over together, they make a guest that reaps whatever has completed and submits as much again
 * (Linux AIO, fio, databases) run lock-step: it completes and resubmits all 32 while the disk
 * has nothing to do, then waits for all 32 with nothing to do itself. When at least
 * BLK_PACE_MIN reads and writes finish together, the older half goes to the guest at once and
 * the rest when the guest is done with those: at its next queue notify (it has submitted new
 * requests, which then overlap with its completion of the second half), when a vCPU goes idle
 * (a guest that waits for all of them loses only an interrupt: vm.h's idle hooks), or after
 * BLK_PACE_MAX_NS at most. Only where the backend runs idle hooks (the software CPU, whose
 * guest spends ~25 us per request on its side: on KVM it is a few and nothing would overlap).
 * 4 KiB random writes at depth 32, the software CPU, interleaved: see the commit. */
#define BLK_PACE_MIN 8
#define BLK_PACE_MAX_NS 500000

/* Append `io` to the list whose tail pointer is at `opaque` (a struct block_io_request ***):
 * block_io_reap()'s callback for the reaped list, and how completions join the held one. */
static void blk_list_append(void *opaque, struct block_io_request *io)
{
	struct block_io_request ***tail = opaque;
	io->next = NULL;
	**tail = io;
	*tail = &io->next;
}

static bool blk_pace_candidate(const struct block_io_request *io)
{
	return io->op == BLOCK_IO_READ || io->op == BLOCK_IO_WRITE;
}

/* Completions just reaped (`list`, `n` of them), with nothing held (the caller released it):
 * the guest gets them all, or the older half of the reads and writes now and the rest held.
 * Lock held. */
static void blk_complete_batch(struct virtio_blk *blk, struct block_io_request *list, unsigned n)
{
	unsigned candidates = 0, give = n;
	for (struct block_io_request *io = list; io; io = io->next)
		candidates += blk_pace_candidate(io);
	if (blk->pace_timer >= 0 && candidates >= BLK_PACE_MIN)
		give = candidates / 2;
	while (list) {
		struct block_io_request *next = list->next;
		if (give || !blk_pace_candidate(list)) {
			give -= give && blk_pace_candidate(list);
			blk_complete(blk, list);
		} else {
			blk_list_append(&blk->held_tail, list);
			blk->paced_held++;
		}
		list = next;
	}
	if (blk->held) {
		struct itimerspec at = { .it_value = { .tv_nsec = BLK_PACE_MAX_NS } };
		timerfd_settime(blk->pace_timer, 0, &at, NULL);
		blk->paced_batches++;
		__atomic_store_n(&blk->held_any, true, __ATOMIC_RELEASE);
	}
}

static void blk_on_io(void *opaque, int fd, uint32_t events)
{
	struct virtio_blk *blk = opaque;
	struct block_io_request *list = NULL, **tail = &list;
	(void)fd;
	(void)events;
	pthread_mutex_lock(&blk->vdev.lock);
	unsigned n = block_io_reap(blk->io, blk_list_append, &tail);
	if (n) {
		/* More finished while some were held: the guest is slow to come back for them. */
		blk_release(blk, &blk->released_timer);
		blk_complete_batch(blk, list, n);
		blk_notify_all(blk);
	}
	/* No event_loop_expect() for the completions: on this 2-core host a main thread that
	 * spins for them holds the core the io_uring worker needs to do the read while the vCPU
	 * runs the guest on the other (4 KiB reads at depth 1 with the loop polling: 0.78, 0.89
	 * and 0.96 of the IOPS without, three interleaved rounds of bench/disk). */
	pthread_mutex_unlock(&blk->vdev.lock);
}

/* No pacing from here on: the timer out of the loop and closed. */
static void blk_pace_close(struct virtio_blk *blk)
{
	if (blk->pace_timer < 0)
		return;
	event_loop_remove(blk->vm->loop, blk->pace_timer);
	close(blk->pace_timer);
	blk->pace_timer = -1;
}

static void blk_on_pace_timer(void *opaque, int fd, uint32_t events)
{
	struct virtio_blk *blk = opaque;
	uint64_t expirations;
	(void)events;
	if (read(fd, &expirations, sizeof(expirations)) < 0) {
		/* not expired after all (disarmed meanwhile) */
	}
	pthread_mutex_lock(&blk->vdev.lock);
	if (blk->held) {
		blk_release(blk, &blk->released_timer);
		blk_notify_all(blk);
	}
	pthread_mutex_unlock(&blk->vdev.lock);
}

/* A vCPU goes idle (vm.h): the guest waits, so whatever is held is due. Its thread. */
static bool blk_on_idle(void *opaque)
{
	struct virtio_blk *blk = opaque;
	bool released = false;
	if (!__atomic_load_n(&blk->held_any, __ATOMIC_ACQUIRE))
		return false;
	pthread_mutex_lock(&blk->vdev.lock);
	if (blk->held) {
		blk_release(blk, &blk->released_idle);
		blk_notify_all(blk);
		released = true;
	}
	pthread_mutex_unlock(&blk->vdev.lock);
	return released;
}

/* §2.4: wait for the I/O the old driver started (it may still write guest memory), drop it. */
static void blk_reset(struct virtio_device *vdev)
{
	struct virtio_blk *blk = vdev->opaque;
	blk->generation++;
	blk_release(blk, NULL); /* dropped: their generation is gone */
	block_io_drain(blk->io);
	block_io_reap(blk->io, blk_complete, blk);
	blk->inflight = 0;
}

static void blk_format_stats(struct virtio_device *vdev, FILE *out)
{
	struct virtio_blk *blk = vdev->opaque;
	fprintf(out, "    %s: reads %llu (%llu bytes), writes %llu (%llu bytes), flushes %llu, errors %llu, in flight %u\n",
		blk->path, (unsigned long long)blk->reads, (unsigned long long)blk->bytes_read,
		(unsigned long long)blk->writes, (unsigned long long)blk->bytes_written,
		(unsigned long long)blk->flushes, (unsigned long long)blk->errors, blk->inflight);
	fprintf(out,
		"      host I/O: %llu requests completed, %llu us from submission to completion "
		"(%.1f us each)\n",
		(unsigned long long)blk->io_completed, (unsigned long long)(blk->io_ns / 1000),
		blk->io_completed ? (double)blk->io_ns / 1e3 / (double)blk->io_completed : 0.0);
	fprintf(out,
		"      paced: %llu batches split, %llu completions held, released by notify %llu, "
		"idle vCPU %llu, timer or more completions %llu\n",
		(unsigned long long)blk->paced_batches, (unsigned long long)blk->paced_held,
		(unsigned long long)blk->released_kick, (unsigned long long)blk->released_idle,
		(unsigned long long)blk->released_timer);
}

static const struct virtio_device_ops blk_ops = { .queue_notify = blk_queue_notify,
						  .reset = blk_reset,
						  .format_stats = blk_format_stats };

void virtio_blk_format_stats(struct virtio_blk *blk, FILE *out)
{
	virtio_device_format_stats(&blk->vdev, out);
}

/* Another process that has the image open (the lock holder, in practice): OFD locks report no
 * pid through F_OFD_GETLK, and /proc/locks shows -1 for them, so look through /proc/PID/fd.
 * 0 when none is found. */
static long blk_lock_holder(int fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return 0;
	DIR *proc = opendir("/proc");
	if (!proc)
		return 0;
	long found = 0;
	struct dirent *p;
	while (!found && (p = readdir(proc))) {
		long pid = strtol(p->d_name, NULL, 10);
		if (pid <= 0 || pid == getpid())
			continue;
		char dir[64];
		snprintf(dir, sizeof(dir), "/proc/%ld/fd", pid);
		DIR *fds = opendir(dir);
		struct dirent *f;
		while (fds && !found && (f = readdir(fds))) {
			struct stat fs;
			if (fstatat(dirfd(fds), f->d_name, &fs, 0) == 0 && fs.st_ino == st.st_ino &&
			    fs.st_dev == st.st_dev)
				found = pid;
		}
		if (fds)
			closedir(fds);
	}
	closedir(proc);
	return found;
}

static int blk_fail(const char *path, const char *why, const char *fix)
{
	fprintf(stderr, "vmm: disk %s: %s (%s)\n", path, why, fix);
	return -EINVAL;
}

/* Open, check and lock the image; one line `vmm: disk FILE: why (fix)` on failure. */
static int blk_open(struct virtio_blk *blk, const struct disk_config *d)
{
	int flags = (d->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	blk->fd = open(d->path, flags | (d->cache == DISK_CACHE_NONE ? O_DIRECT : 0));
	if (blk->fd < 0) {
		int err = errno;
		if (err == EINVAL && d->cache == DISK_CACHE_NONE)
			return blk_fail(d->path, "the filesystem does not support O_DIRECT",
					"use cache=writeback");
		return blk_fail(d->path, strerror(err),
				err == ENOENT ? "give the path of an existing raw image; create one with truncate -s 1G FILE"
				: err == EISDIR ? "give the path of an image file, not a directory"
				: err == EACCES || err == EROFS ? "check its permissions, or attach it read-only with ,ro"
				: "check the path");
	}
	struct stat st;
	if (fstat(blk->fd, &st) < 0)
		return blk_fail(d->path, strerror(errno), "check the path");
	uint64_t size = (uint64_t)st.st_size;
	if (S_ISDIR(st.st_mode))
		return blk_fail(d->path, "is a directory", "give the path of an image file");
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(blk->fd, BLKGETSIZE64, &size) < 0)
			return blk_fail(d->path, strerror(errno), "check the block device");
	} else if (!S_ISREG(st.st_mode)) {
		return blk_fail(d->path, "is not a regular file or block device", "give a raw image file");
	}
	if (size < BLK_SECTOR)
		return blk_fail(d->path, size ? "is smaller than one 512-byte sector" : "is empty",
				"give it a size, e.g. truncate -s 1G FILE");
	blk->sectors = size / BLK_SECTOR;
	/* An image written by this VM must not be written or read by another one meanwhile. */
	struct flock lk = { .l_type = d->ro ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET };
	if (fcntl(blk->fd, F_OFD_SETLK, &lk) < 0) {
		int err = errno;
		if (err != EAGAIN && err != EACCES)
			return blk_fail(d->path, strerror(err), "use a filesystem that supports locks");
		long holder = blk_lock_holder(blk->fd);
		char why[96];
		if (holder)
			snprintf(why, sizeof(why), "in use by process %ld (another vmm?)", holder);
		else
			snprintf(why, sizeof(why), "in use by another process");
		return blk_fail(d->path, why, d->ro ? "stop the process writing it"
						    : "stop the other user, or attach it read-only with ,ro");
	}
	blk->direct = d->cache == DISK_CACHE_NONE;
	blk->dio_align = 512;
	if (blk->direct) {
		struct statx sx;
		if (statx(blk->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
		    (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align > 512)
			blk->dio_align = sx.stx_dio_offset_align > sx.stx_dio_mem_align
						 ? sx.stx_dio_offset_align : sx.stx_dio_mem_align;
		blk->fd_buffered = open(d->path, flags);
		if (blk->fd_buffered < 0)
			return blk_fail(d->path, strerror(errno), "check the path");
	}
	return 0;
}

static void blk_build_config(struct virtio_blk *blk, unsigned nr_queues)
{
	uint8_t *c = blk->config;
	put64(c + 0, blk->sectors); /* capacity, in 512-byte sectors */
	put32(c + 8, BLK_SIZE_MAX);
	put32(c + 12, BLK_SEG_MAX);
	put32(c + 20, blk->dio_align); /* blk_size: O_DIRECT alignment makes the guest align */
	put16(c + 34, (uint16_t)nr_queues);
	put32(c + 36, BLK_MAX_DISCARD_SECTORS);
	put32(c + 40, BLK_MAX_DISCARD_SEGS);
	put32(c + 44, 1);
	put32(c + 48, BLK_MAX_DISCARD_SECTORS);
	put32(c + 52, BLK_MAX_DISCARD_SEGS);
	c[56] = 1; /* write_zeroes_may_unmap */
}

void virtio_blk_destroy(struct virtio_blk *blk)
{
	if (!blk)
		return;
	if (blk->io) {
		event_loop_remove(blk->vm->loop, block_io_fd(blk->io));
		block_io_destroy(blk->io);
	}
	while (blk->held) { /* the guest is gone: nothing to hand over */
		struct block_io_request *next = blk->held->next;
		blk_request_put(blk, (struct blk_request *)blk->held);
		blk->held = next;
	}
	blk_pace_close(blk);
	virtio_device_destroy(&blk->vdev);
	while (blk->free_requests) {
		struct blk_request *req = blk->free_requests;
		blk->free_requests = req->next_free;
		free(req);
	}
	if (blk->fd >= 0)
		close(blk->fd); /* also drops the OFD lock */
	if (blk->fd_buffered >= 0)
		close(blk->fd_buffered);
	free(blk);
}

struct virtio_blk *virtio_blk_create(struct vm *vm, struct pci_host *host,
				     const struct disk_config *d, unsigned index)
{
	struct virtio_blk *blk = calloc(1, sizeof(*blk));
	if (!blk)
		return NULL;
	blk->fd = blk->fd_buffered = blk->pace_timer = -1;
	blk->vm = vm;
	blk->held_tail = &blk->held;
	snprintf(blk->name, sizeof(blk->name), "virtio-blk%u", index);
	snprintf(blk->path, sizeof(blk->path), "%s", d->path);
	memcpy(blk->serial, d->serial, strnlen(d->serial, VIRTIO_BLK_ID_BYTES));
	blk->ro = d->ro;
	if (blk_open(blk, d) < 0) {
		virtio_blk_destroy(blk);
		return NULL;
	}
	/* Multiqueue: one queue per vCPU (the guest maps them to CPUs). */
	unsigned nr_queues = vm->nr_vcpus < VIRTIO_MAX_QUEUES ? vm->nr_vcpus : VIRTIO_MAX_QUEUES;
	blk_build_config(blk, nr_queues);
	uint64_t features = (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
			    (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH) |
			    (1ull << VIRTIO_BLK_F_MQ);
	features |= blk->ro ? 1ull << VIRTIO_BLK_F_RO
			    : (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
	blk->vdev = (struct virtio_device){ .name = blk->name, .device_type = 2,
					    .class_code = 0x010000, .device_features = features,
					    .nr_queues = nr_queues, .queue_max_size = BLK_QUEUE_SIZE,
					    .config = blk->config, .config_size = BLK_CONFIG_SIZE,
					    .ops = &blk_ops, .opaque = blk };
	blk->io = block_io_create(blk->name);
	int ret = blk->io ? event_loop_add(vm->loop, block_io_fd(blk->io), EPOLLIN, blk_on_io, blk)
			  : -ENOMEM;
	if (ret == 0 && vm->idle_hooks_run) {
		blk->pace_timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		ret = blk->pace_timer < 0 ? -errno
					  : event_loop_add(vm->loop, blk->pace_timer, EPOLLIN,
							   blk_on_pace_timer, blk);
		if (ret == 0)
			ret = vm_add_idle_hook(vm, blk_on_idle, blk);
		if (ret < 0) { /* no pacing, the disk works without it */
			blk_pace_close(blk);
			ret = 0;
		}
	}
	if (ret == 0)
		ret = virtio_device_init(&blk->vdev, vm, host);
	if (ret < 0) {
		fprintf(stderr, "vmm: disk %s: %s\n", d->path, strerror(-ret));
		virtio_blk_destroy(blk);
		return NULL;
	}
	return blk;
}

const char *virtio_blk_engine(struct virtio_blk *blk)
{
	return block_io_engine(blk->io);
}
