/*
 * selftest.diskbench=1: the disk benchmark of bench/disk-kvm, seen from the guest. Six
 * workloads against the first virtio-blk, each for selftest.diskbench_ms (default 5000):
 * sequential read and write with 1 MiB requests at queue depth 1, 4 KiB random read and write
 * at depth 1 and 32, each printed as one line
 *   selftest: diskbench: MODE bs=B qd=Q ops=N bytes=N us=N MBps=X.X iops=N errors=N kicks=N
 * (MB = 10^6 bytes, like guest/linux/diskio.c, so the same script reads both).
 *
 * The driver loop costs the guest as little as possible, since on kvm-pvm the guest's CPL 0
 * code is emulated: it runs at CPL 3 (ring3.c; selftest.diskbench_cpl=0 keeps it at CPL 0),
 * every slot's three descriptors (header, data, status) are written once, a completion only
 * rewrites the header's sector and re-publishes the same head, the data is neither copied nor
 * looked at, the used ring is polled (used_event is kept far ahead: no interrupts) and the
 * queue is notified only when avail_event asks for it (VIRTIO_F_EVENT_IDX). Time is the TSC,
 * calibrated against the ACPI PM timer, which both vmm and QEMU's q35 provide.
 *
 * selftest.diskbench_verify=1 (for the integration test, not for figures) checks the data: the
 * host fills each 4 KiB block of the image with its block number in its first 8 bytes, reads
 * check that every block read holds its number (or the number with DISKBENCH_STAMP set, once
 * written), writes put that stamped number into every block they write.
 */
#include "check.h"
#include "console.h"
#include "lib.h"
#include "timer.h"
#include "ring3.h"
#include "virtio.h"

#define BLK_T_IN 0
#define BLK_T_OUT 1
#define SECTOR 512u
#define BLOCK 4096u
#define SEQ_BYTES (1u << 20)
#define MAX_DEPTH 32
#define DESCS_PER_SLOT 3
#define DEFAULT_MS 5000
#define CALIBRATE_US 50000
#define STALL_SECONDS 5 /* no completion for this long: the device is stuck */
#define DISKBENCH_STAMP 0x8000000000000000ull
/* Data buffers: guest-physical, identity-mapped, above the kernel, checked against E820. */
#define BUFFER_BASE (8 * MiB)
#define BUFFER_SIZE (SEQ_BYTES > MAX_DEPTH * BLOCK ? SEQ_BYTES : MAX_DEPTH * BLOCK)

struct blk_header {
	uint32_t type, reserved;
	uint64_t sector;
};

/* One workload, shared between the kernel and the CPL 3 loop. */
struct job {
	/* set up by the kernel */
	struct virtq_rings *rings;
	uint16_t qsize;
	uint64_t notify; /* queue 0's notify address */
	unsigned depth;
	bool write, random, verify;
	uint32_t bytes; /* per request */
	uint64_t blocks; /* request-sized blocks on the disk */
	uint64_t next; /* sequential: next block */
	uint64_t rng; /* random: xorshift64 state */
	uint64_t run_tsc; /* submit new requests for this long */
	uint64_t stall_tsc;
	/* results */
	uint64_t ops, errors, kicks, bad_data, elapsed_tsc;
	bool stalled, bad_used;
};

static struct virtio_dev devs[VIRTIO_MAX_DEVICES];
static struct blk_header headers[MAX_DEPTH] __attribute__((aligned(64)));
static volatile uint8_t statuses[MAX_DEPTH] __attribute__((aligned(64)));
static struct job job;
static char err[160];

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

/* TSC ticks per second, measured over CALIBRATE_US of the PM timer. */
static uint64_t tsc_calibrate(void)
{
	uint32_t pm0 = pmtimer_read();
	uint64_t tsc0 = rdtsc(), pm_ticks = 0;
	uint32_t last = pm0;

	while (pm_ticks < (uint64_t)PM_TIMER_HZ * CALIBRATE_US / 1000000) {
		uint32_t now = pmtimer_read();

		pm_ticks += (now - last) & pmtimer_mask();
		last = now;
	}
	return (rdtsc() - tsc0) * PM_TIMER_HZ / pm_ticks;
}

/* ---- the loop (CPL 3): memory, MMIO and rdtsc only ---- */

static uint64_t job_block(struct job *j)
{
	if (!j->random) {
		uint64_t b = j->next;

		j->next = j->next + 1 == j->blocks ? 0 : j->next + 1;
		return b;
	}
	j->rng ^= j->rng << 13;
	j->rng ^= j->rng >> 7;
	j->rng ^= j->rng << 17;
	return j->rng % j->blocks;
}

static uint64_t *slot_data(const struct job *j, unsigned slot)
{
	return (uint64_t *)(BUFFER_BASE + (uint64_t)slot * j->bytes);
}

/* Point the slot's header at a new block; in verify mode, stamp what a write carries. */
static void slot_prepare(struct job *j, unsigned slot)
{
	uint64_t block = job_block(j);

	headers[slot].sector = block * (j->bytes / SECTOR);
	if (j->verify && j->write) {
		uint64_t *data = slot_data(j, slot), first = block * (j->bytes / BLOCK);

		for (unsigned k = 0; k < j->bytes / BLOCK; k++)
			data[k * (BLOCK / 8)] = (first + k) | DISKBENCH_STAMP;
	}
}

static void slot_check(struct job *j, unsigned slot)
{
	const uint64_t *data = slot_data(j, slot);
	uint64_t first = headers[slot].sector / (BLOCK / SECTOR);

	for (unsigned k = 0; k < j->bytes / BLOCK; k++) {
		uint64_t v = data[k * (BLOCK / 8)];

		if ((v & ~DISKBENCH_STAMP) != first + k)
			j->bad_data++;
	}
}

static void job_publish(struct job *j, volatile struct virtq_avail *avail, uint16_t old,
			uint16_t idx)
{
	/* After the used ring's qsize entries (§2.7.10), wherever qsize puts it. */
	volatile uint16_t *avail_event =
		(volatile uint16_t *)((uintptr_t)&j->rings->used + 4 + 8 * (uintptr_t)j->qsize);

	__atomic_thread_fence(__ATOMIC_RELEASE);
	avail->idx = idx;
	__atomic_thread_fence(__ATOMIC_SEQ_CST); /* idx visible before we read avail_event */
	/* §2.7.10: notify if avail_event lies in [old, idx). */
	if ((uint16_t)(idx - *avail_event - 1) < (uint16_t)(idx - old)) {
		*(volatile uint16_t *)j->notify = 0;
		j->kicks++;
	}
}

static void job_loop(void *arg)
{
	struct job *j = arg;
	volatile struct virtq_avail *avail = &j->rings->avail;
	volatile struct virtq_used *used = &j->rings->used;
	volatile uint16_t *used_event =
		(volatile uint16_t *)((uintptr_t)avail + 4 + 2 * (uintptr_t)j->qsize);
	uint16_t avail_idx = avail->idx, used_seen = used->idx;
	unsigned inflight = 0;

	uint64_t start = rdtsc(), end = start + j->run_tsc, last_progress = start;
	*used_event = (uint16_t)(used_seen + 0x8000); /* no interrupts: we poll */
	for (unsigned s = 0; s < j->depth; s++) {
		slot_prepare(j, s);
		avail->ring[avail_idx++ % j->qsize] = (uint16_t)(s * DESCS_PER_SLOT);
		inflight++;
	}
	job_publish(j, avail, used_seen, avail_idx);
	while (inflight) {
		uint16_t now_used = used->idx;

		if (now_used == used_seen) {
			if (rdtsc() - last_progress > j->stall_tsc) {
				j->stalled = true;
				break;
			}
			__asm__ volatile("pause");
			continue;
		}
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		uint64_t now = rdtsc();
		uint16_t old = avail_idx;
		last_progress = now;
		while (used_seen != now_used) {
			uint32_t id = used->ring[used_seen % j->qsize].id;
			unsigned slot = id / DESCS_PER_SLOT;

			used_seen++;
			if (id % DESCS_PER_SLOT || slot >= j->depth) {
				j->bad_used = true;
				inflight = 0;
				break;
			}
			j->ops++;
			if (statuses[slot] != 0)
				j->errors++;
			else if (j->verify && !j->write)
				slot_check(j, slot);
			if (now < end) {
				statuses[slot] = 0xFF;
				slot_prepare(j, slot);
				avail->ring[avail_idx++ % j->qsize] = (uint16_t)id;
			} else {
				inflight--;
			}
		}
		*used_event = (uint16_t)(used_seen + 0x8000);
		if (avail_idx != old)
			job_publish(j, avail, old, avail_idx);
	}
	j->elapsed_tsc = rdtsc() - start;
}

/* ---- set-up and reporting (CPL 0) ---- */

static bool buffer_is_ram(const struct selftest *t)
{
	extern char _end[];

	if ((uint64_t)_end > BUFFER_BASE)
		return false;
	for (unsigned i = 0; i < t->boot.e820_count; i++) {
		const struct e820_entry *e = &t->boot.e820[i];

		if (e->type == E820_RAM && e->addr <= BUFFER_BASE &&
		    e->addr + e->size >= BUFFER_BASE + BUFFER_SIZE)
			return true;
	}
	return false;
}

/* The slots' descriptors, written once: header (readable), data, status (writable). */
static void slots_build(struct virtio_dev *d, const struct job *j)
{
	for (unsigned s = 0; s < j->depth; s++) {
		struct virtq_desc *desc = &d->rings->desc[s * DESCS_PER_SLOT];

		headers[s] = (struct blk_header){ j->write ? BLK_T_OUT : BLK_T_IN, 0, 0 };
		statuses[s] = 0xFF;
		desc[0] = (struct virtq_desc){ (uint64_t)&headers[s], sizeof(headers[s]),
					       VIRTQ_DESC_F_NEXT,
					       (uint16_t)(s * DESCS_PER_SLOT + 1) };
		desc[1] = (struct virtq_desc){ (uint64_t)slot_data(j, s), j->bytes,
					       (uint16_t)(VIRTQ_DESC_F_NEXT |
							  (j->write ? 0 : VIRTQ_DESC_F_WRITE)),
					       (uint16_t)(s * DESCS_PER_SLOT + 2) };
		desc[2] = (struct virtq_desc){ (uint64_t)&statuses[s], 1, VIRTQ_DESC_F_WRITE, 0 };
	}
}

struct workload {
	const char *mode;
	bool write, random;
	uint32_t bytes;
	unsigned depth;
};

static const struct workload workloads[] = {
	{ "read", false, false, SEQ_BYTES, 1 }, { "write", true, false, SEQ_BYTES, 1 },
	{ "randread", false, true, BLOCK, 1 },	{ "randread", false, true, BLOCK, MAX_DEPTH },
	{ "randwrite", true, true, BLOCK, 1 },	{ "randwrite", true, true, BLOCK, MAX_DEPTH },
};

/* Runs one workload; false (and a FAIL line) when the device misbehaved. */
static bool run_workload(const struct selftest *t, struct virtio_dev *d, const struct workload *w,
			 uint64_t capacity, uint64_t tsc_hz, bool user)
{
	uint64_t ms = t->args.diskbench_ms ? t->args.diskbench_ms : DEFAULT_MS;

	job = (struct job){
		.rings = d->rings,
		.qsize = d->qsize,
		.notify = d->notify_address,
		.depth = w->depth,
		.write = w->write,
		.random = w->random,
		.verify = t->args.diskbench_verify,
		.bytes = w->bytes,
		.blocks = capacity * SECTOR / w->bytes,
		.rng = 0x9E3779B97F4A7C15ull,
		.run_tsc = tsc_hz / 1000 * ms,
		.stall_tsc = tsc_hz * STALL_SECONDS,
	};
	slots_build(d, &job);
	if (user)
		ring3_run(job_loop, &job);
	else
		job_loop(&job);
	uint64_t us = job.elapsed_tsc * 1000000 / tsc_hz, bytes = job.ops * w->bytes;
	if (us == 0)
		us = 1;
	uint64_t mbps10 = bytes * 10 / us;
	console_printf("selftest: diskbench: %s bs=%u qd=%u ops=%lu bytes=%lu us=%lu MBps=%lu.%lu "
		       "iops=%lu errors=%lu kicks=%lu\n",
		       w->mode, w->bytes, w->depth, job.ops, bytes, us, mbps10 / 10, mbps10 % 10,
		       job.ops * 1000000 / us, job.errors, job.kicks);
	if (job.stalled || job.bad_used || job.errors || job.bad_data) {
		check_fail("diskbench", "%s qd=%u: %s%s%lu errors, %lu blocks with wrong data",
			   w->mode, w->depth, job.stalled ? "no completion for 5 s, " : "",
			   job.bad_used ? "bad used entry, " : "", job.errors, job.bad_data);
		return false;
	}
	return true;
}

static struct virtio_dev *first_blk(const struct selftest *t)
{
	unsigned n =
		virtio_find(&t->acpi, t->bsp_apic_id, devs, VIRTIO_MAX_DEVICES, err, sizeof(err));

	if (err[0])
		return 0;
	for (unsigned i = 0; i < n; i++)
		if (devs[i].type == VIRTIO_ID_BLOCK)
			return &devs[i];
	format(err, sizeof(err), "no virtio-blk device among %u virtio devices", n);
	return 0;
}

void check_diskbench(struct selftest *t)
{
	if (!t->args.diskbench)
		return;
	if (!pmtimer_present()) {
		check_fail("diskbench", "no PM timer to calibrate the TSC with");
		return;
	}
	if (!buffer_is_ram(t)) {
		check_fail("diskbench",
			   "no E820 RAM at 0x%lx-0x%lx for the buffers (use -m 64M or more)",
			   BUFFER_BASE, BUFFER_BASE + BUFFER_SIZE);
		return;
	}
	struct virtio_dev *d = first_blk(t);
	if (!d || !virtio_start(d, 1ull << VIRTIO_F_EVENT_IDX, VIRTQ_SIZE, err, sizeof(err))) {
		check_fail("diskbench", "%s", err);
		return;
	}
	uint64_t capacity = virtio_read_config32(d, 0) | (uint64_t)virtio_read_config32(d, 4) << 32;
	if (d->qsize < MAX_DEPTH * DESCS_PER_SLOT || capacity < SEQ_BYTES / SECTOR ||
	    !(d->features & (1ull << VIRTIO_F_EVENT_IDX))) {
		check_fail("diskbench",
			   "queue of %u, %lu sectors, features 0x%lx: need %u entries, "
			   "1 MiB and EVENT_IDX",
			   d->qsize, capacity, d->features, MAX_DEPTH * DESCS_PER_SLOT);
		return;
	}
	bool user = !t->args.diskbench_cpl0;
	if (user)
		ring3_setup();
	uint64_t tsc_hz = tsc_calibrate();
	check_note("diskbench: virtio-blk %02x.%x, %lu sectors, queue %u, TSC %lu kHz, loop at CPL "
		   "%u, "
		   "%u ms per workload%s",
		   d->pci.dev, d->pci.fn, capacity, d->qsize, tsc_hz / 1000, user ? 3 : 0,
		   t->args.diskbench_ms ? t->args.diskbench_ms : DEFAULT_MS,
		   t->args.diskbench_verify ? ", verifying data" : "");
	for (unsigned i = 0; i < ARRAY_SIZE(workloads); i++)
		if (!run_workload(t, d, &workloads[i], capacity, tsc_hz, user))
			return;
	check_ok("diskbench");
}
