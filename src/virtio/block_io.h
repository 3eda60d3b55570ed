/* Asynchronous file I/O for block devices: io_uring (liburing, when built with HAVE_LIBURING and
 * the kernel allows it) or a small thread pool. Requests are submitted from the main thread;
 * block_io_fd() becomes readable when some have completed, and block_io_reap() hands them back
 * on the main thread. A vCPU never waits for the disk. */
#ifndef VMM_BLOCK_IO_H
#define VMM_BLOCK_IO_H

#include <stdint.h>
#include <sys/uio.h>

enum block_io_op { BLOCK_IO_READ, BLOCK_IO_WRITE, BLOCK_IO_FLUSH, BLOCK_IO_FALLOCATE };

struct block_io_request {
	enum block_io_op op;
	int fd;
	uint64_t offset;
	struct iovec *iov;
	unsigned iovcnt;
	uint64_t len; /* FALLOCATE: length; mode below */
	int mode;
	int64_t result; /* bytes transferred (READ/WRITE, all of them or an error) or 0; -errno */
	struct block_io_request *next; /* owned by block_io while submitted */
};

struct block_io;

/* name: for thread names. NULL on failure. */
struct block_io *block_io_create(const char *name);
void block_io_destroy(struct block_io *io); /* waits for submitted requests */
int block_io_fd(struct block_io *io);
const char *block_io_engine(struct block_io *io); /* "io_uring" or "threads" */
void block_io_submit(struct block_io *io, struct block_io_request *req);
/* Between plug and unplug, io_uring submissions are queued and entered with one system call at
 * the unplug: a driver that publishes 32 requests at once costs one io_uring_enter, not 32.
 * (The thread pool starts each request at once either way.) */
void block_io_plug(struct block_io *io);
void block_io_unplug(struct block_io *io);
/* Hand every completed request to done(); returns how many. Main thread. */
unsigned block_io_reap(struct block_io *io, void (*done)(void *opaque, struct block_io_request *),
		       void *opaque);
/* Wait until no submitted request is still executing (they then wait for block_io_reap). */
void block_io_drain(struct block_io *io);

#endif
