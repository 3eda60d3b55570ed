/* diskio: a small disk load generator for the guest's tools disk and for the host baseline of
 * bench/disk (fio from Debian drags in Ceph, RDMA and Gluster libraries). Built static, so one
 * binary runs in the busybox guest and on the host on the same image file.
 *
 *   diskio MODE FILE [-b BYTES] [-q DEPTH] [-t SECONDS] [-s BYTES]
 *
 * MODE is read, write (sequential) or randread, randwrite (uniform random, block-aligned offsets).
 * The file is opened O_DIRECT; requests go through Linux native AIO (io_submit/io_getevents,
 * called directly: no libaio), DEPTH of them in flight at once. A run lasts SECONDS (default 10),
 * wraps around the first BYTES of the file (-s, default the whole file), and prints one line:
 *   diskio: MODE bs=B qd=Q ops=N bytes=N seconds=S MBps=X iops=Y errors=E
 * with MB = 10^6 bytes. Exit status 0 when every request succeeded, 1 when some failed (the
 * line is still printed: the ENOSPC test counts the errors), 2 on bad arguments or setup. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define DISKIO_MAX_DEPTH 256
#define DISKIO_ALIGN 4096
#define DISKIO_HUGE (2u << 20)

struct diskio_job {
	int write;
	int random;
	uint64_t block;	 /* bytes per request */
	unsigned depth;	 /* requests in flight */
	double seconds;	 /* run time */
	uint64_t region; /* bytes of the file used, a multiple of block */
	uint64_t next;	 /* next sequential offset */
	uint64_t rng;	 /* xorshift64 state */
};

struct diskio_result {
	uint64_t ops, bytes, errors;
	double seconds;
};

static double diskio_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int diskio_parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	}
	if (*end)
		return -1;
	*out = v;
	return 0;
}

static uint64_t diskio_offset(struct diskio_job *job)
{
	uint64_t blocks = job->region / job->block, off;
	if (job->random) {
		job->rng ^= job->rng << 13;
		job->rng ^= job->rng >> 7;
		job->rng ^= job->rng << 17;
		return (job->rng % blocks) * job->block;
	}
	off = job->next;
	job->next = (job->next + job->block) % (blocks * job->block);
	return off;
}

static void diskio_prepare(struct diskio_job *job, int fd, struct iocb *cb, void *buf)
{
	memset(cb, 0, sizeof(*cb));
	cb->aio_fildes = fd;
	cb->aio_lio_opcode = job->write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
	cb->aio_buf = (uintptr_t)buf;
	cb->aio_nbytes = job->block;
	cb->aio_offset = diskio_offset(job);
	cb->aio_data = (uintptr_t)cb;
}

/* Keeps DEPTH requests in flight until the time is up, then drains them. */
static int diskio_run(struct diskio_job *job, int fd, char *bufs, struct diskio_result *res)
{
	aio_context_t ctx = 0;
	struct iocb cbs[DISKIO_MAX_DEPTH], *list[DISKIO_MAX_DEPTH];
	struct io_event events[DISKIO_MAX_DEPTH];
	unsigned inflight = 0, i;
	double start, end;

	if (syscall(SYS_io_setup, job->depth, &ctx) < 0) {
		fprintf(stderr, "diskio: io_setup: %s\n", strerror(errno));
		return -1;
	}
	for (i = 0; i < job->depth; i++) {
		diskio_prepare(job, fd, &cbs[i], bufs + (uint64_t)i * job->block);
		list[i] = &cbs[i];
	}
	start = diskio_now();
	end = start + job->seconds;
	if (syscall(SYS_io_submit, ctx, (long)job->depth, list) != (long)job->depth) {
		fprintf(stderr, "diskio: io_submit: %s\n", strerror(errno));
		return -1;
	}
	inflight = job->depth;
	while (inflight > 0) {
		long n = syscall(SYS_io_getevents, ctx, 1L, (long)inflight, events, NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "diskio: io_getevents: %s\n", strerror(errno));
			return -1;
		}
		int more = diskio_now() < end;
		long again = 0;
		for (long k = 0; k < n; k++) {
			struct iocb *cb = (struct iocb *)(uintptr_t)events[k].data;
			if (events[k].res == (int64_t)job->block) {
				res->ops++;
				res->bytes += job->block;
			} else {
				res->errors++;
			}
			inflight--;
			if (more) {
				diskio_prepare(job, fd, cb, (void *)(uintptr_t)cb->aio_buf);
				list[again++] = cb;
			}
		}
		if (again && syscall(SYS_io_submit, ctx, again, list) != again) {
			fprintf(stderr, "diskio: io_submit: %s\n", strerror(errno));
			return -1;
		}
		inflight += again;
	}
	res->seconds = diskio_now() - start;
	syscall(SYS_io_destroy, ctx);
	return 0;
}

static uint64_t diskio_file_size(int fd)
{
	struct stat st;
	uint64_t size = 0;
	if (fstat(fd, &st) < 0)
		return 0;
	if (S_ISBLK(st.st_mode))
		return ioctl(fd, BLKGETSIZE64, &size) < 0 ? 0 : size;
	return st.st_size;
}

static int diskio_usage(void)
{
	fprintf(stderr, "usage: diskio read|write|randread|randwrite FILE [-b BYTES] [-q DEPTH] "
			"[-t SECONDS] [-s BYTES]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct diskio_job job = {.block = 0, .depth = 1, .seconds = 10, .rng = 0x9e3779b97f4a7c15ull};
	struct diskio_result res = {0};
	const char *mode, *path;
	uint64_t size;
	int fd, opt;

	if (argc < 3)
		return diskio_usage();
	mode = argv[1];
	path = argv[2];
	if (!strcmp(mode, "read") || !strcmp(mode, "write"))
		job.block = 1 << 20;
	else if (!strcmp(mode, "randread") || !strcmp(mode, "randwrite"))
		job.block = 4096, job.random = 1;
	else
		return diskio_usage();
	job.write = strstr(mode, "write") != NULL;
	optind = 3;
	while ((opt = getopt(argc, argv, "b:q:t:s:")) != -1) {
		uint64_t v;
		switch (opt) {
		case 'b':
			if (diskio_parse_size(optarg, &job.block) || !job.block || job.block % DISKIO_ALIGN)
				return fprintf(stderr, "diskio: -b must be a multiple of 4096\n"), 2;
			break;
		case 'q':
			if (diskio_parse_size(optarg, &v) || v < 1 || v > DISKIO_MAX_DEPTH)
				return fprintf(stderr, "diskio: -q must be 1..%d\n", DISKIO_MAX_DEPTH), 2;
			job.depth = v;
			break;
		case 't':
			job.seconds = atof(optarg);
			if (job.seconds <= 0)
				return fprintf(stderr, "diskio: -t must be positive\n"), 2;
			break;
		case 's':
			if (diskio_parse_size(optarg, &job.region))
				return fprintf(stderr, "diskio: bad -s\n"), 2;
			break;
		default:
			return diskio_usage();
		}
	}
	fd = open(path, (job.write ? O_RDWR : O_RDONLY) | O_DIRECT);
	if (fd < 0)
		return fprintf(stderr, "diskio: %s: %s\n", path, strerror(errno)), 2;
	size = diskio_file_size(fd);
	if (!job.region || job.region > size)
		job.region = size;
	job.region -= job.region % job.block;
	if (job.region < job.block)
		return fprintf(stderr, "diskio: %s is smaller than one block\n", path), 2;

	/* 2 MiB-aligned and, where the kernel allows, on transparent huge pages, like the guest RAM
	 * of vmm and QEMU: an O_DIRECT request then pins one page and goes to the disk in large
	 * pieces, instead of one segment per 4 KiB page (which halves 1 MiB throughput here). */
	size_t bytes = (job.block * job.depth + DISKIO_HUGE - 1) / DISKIO_HUGE * DISKIO_HUGE;
	char *bufs = aligned_alloc(DISKIO_HUGE, bytes);
	if (!bufs)
		return fprintf(stderr, "diskio: out of memory\n"), 2;
	madvise(bufs, bytes, MADV_HUGEPAGE); /* a hint: without THP, 4 KiB pages it is */
	for (uint64_t i = 0; i < job.block * job.depth; i++)
		bufs[i] = (char)(i * 131 + (i >> 12) + 1); /* no zero pages to optimise away */
	if (diskio_run(&job, fd, bufs, &res) < 0)
		return 2;
	printf("diskio: %s bs=%llu qd=%u ops=%llu bytes=%llu seconds=%.3f MBps=%.1f iops=%.0f "
	       "errors=%llu\n",
	       mode, (unsigned long long)job.block, job.depth, (unsigned long long)res.ops,
	       (unsigned long long)res.bytes, res.seconds, res.bytes / res.seconds / 1e6,
	       res.ops / res.seconds, (unsigned long long)res.errors);
	return res.errors ? 1 : 0;
}
