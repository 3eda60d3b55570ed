/*
 * virtio devices through our own driver (virtio.c): virtio-blk reads, writes, get-id, flush and
 * the read-only answer; virtio-rng bytes; then the hostile driver, whose malformed rings must
 * make the device answer with an error or set NEEDS_RESET, after which a reset brings it back.
 */
#include "check.h"
#include "lib.h"
#include "timer.h"
#include "virtio.h"

#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_T_GET_ID 8
#define BLK_S_OK 0
#define BLK_S_IOERR 1
#define BLK_S_UNSUPP 2
#define BLK_ID_BYTES 20
#define SECTOR 512
#define PATTERN_SECTOR 1
#define CODE_SECTOR 2 /* check_dma_into_code() */
#define WAIT_MS 2000
#define HOSTILE_WAIT_MS 1000
#define NOT_RAM 0x10000000000ull /* 1 TiB: far above any RAM these tests give the guest */
#define LONG_CHAIN 300 /* buffers in one indirect table: more than the device's 256 (seg_max + 2) */
#define RNG_BYTES 64
#define TIMED_READS 32
#define LOOP_QUEUE_SIZE 16 /* small, so the loop is caught as a loop before the buffer limit */
#define BLK_FEATURES                                                                           \
	(1ull << VIRTIO_F_INDIRECT_DESC | 1ull << VIRTIO_F_EVENT_IDX | 1ull << VIRTIO_BLK_F_RO)

struct blk_header {
	uint32_t type, reserved;
	uint64_t sector;
};

static struct virtio_dev devs[VIRTIO_MAX_DEVICES];
static unsigned nr_devs;
static struct blk_header header;
static uint8_t data[4096] __attribute__((aligned(4096)));
static uint8_t scratch[SECTOR] __attribute__((aligned(512)));
static uint8_t dma_code[4096] __attribute__((aligned(4096))); /* code the device overwrites */
static volatile uint8_t status_byte;
static struct virtq_desc table_a[8] __attribute__((aligned(16)));
static struct virtq_desc table_b[8] __attribute__((aligned(16)));
static struct virtq_desc long_table[LONG_CHAIN] __attribute__((aligned(16)));
static char err[160];

enum result { DONE, NEEDS_RESET, TIMEOUT, BAD_USED };

static const char *result_name(enum result r)
{
	return r == NEEDS_RESET ? "device needs reset" : r == TIMEOUT ? "no answer" : "bad used entry";
}

static void desc_set(struct virtq_desc *d, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	*d = (struct virtq_desc){ addr, len, flags, next };
}

/* Submit the chain at head 0, wait for it; DONE with the status byte in *status. */
static enum result run_chain(struct virtio_dev *d, uint32_t *len)
{
	uint32_t id = 0, l = 0;

	status_byte = 0xFF;
	virtio_submit(d, 0);
	enum virtio_wait w = virtio_wait(d, WAIT_MS, &id, &l);
	if (w == VIRTIO_TIMEOUT)
		return TIMEOUT;
	if (w == VIRTIO_NEEDS_RESET)
		return NEEDS_RESET;
	if (len)
		*len = l;
	return id == 0 ? DONE : BAD_USED;
}

/* One block request: header, data (len bytes at buf, device-writable for IN and GET_ID),
 * status; through an indirect table when asked. */
static enum result blk_request(struct virtio_dev *d, uint32_t type, uint64_t sector, void *buf,
			       uint32_t len, bool indirect, uint8_t *status)
{
	struct virtq_desc *t = indirect ? table_a : d->rings->desc;
	uint16_t data_flags = type == BLK_T_IN || type == BLK_T_GET_ID ? VIRTQ_DESC_F_WRITE : 0;
	unsigned n = 0;

	header = (struct blk_header){ type, 0, sector };
	desc_set(&t[n], (uint64_t)&header, sizeof(header), VIRTQ_DESC_F_NEXT, (uint16_t)(n + 1));
	n++;
	if (len) {
		desc_set(&t[n], (uint64_t)buf, len, data_flags | VIRTQ_DESC_F_NEXT, (uint16_t)(n + 1));
		n++;
	}
	desc_set(&t[n], (uint64_t)&status_byte, 1, VIRTQ_DESC_F_WRITE, 0);
	n++;
	if (indirect)
		desc_set(&d->rings->desc[0], (uint64_t)table_a, 16 * n, VIRTQ_DESC_F_INDIRECT, 0);
	enum result r = run_chain(d, 0);
	*status = status_byte;
	return r;
}

static void fill_pattern(uint8_t *buf, unsigned disk)
{
	char unit[17];

	format(unit, sizeof(unit), "selftest-blk%u-s%u", disk, PATTERN_SECTOR);
	for (unsigned i = 0; i < SECTOR; i++)
		buf[i] = (uint8_t)unit[i % 16];
}

/* name-with-disk helper: "virtio-blk0-read" */
static const char *name_of(char *buf, unsigned size, unsigned disk, const char *what)
{
	format(buf, size, "virtio-blk%u-%s", disk, what);
	return buf;
}

/* Expected serial for disk i from selftest.serials=A,B,...; NULL if not given. */
static bool expected_serial(const struct selftest *t, unsigned i, char *out, unsigned size)
{
	const char *s = t->args.serials;

	if (!t->args.have_serials)
		return false;
	for (unsigned k = 0; k < i; k++) {
		while (*s && *s != ',')
			s++;
		if (*s)
			s++;
	}
	unsigned n = 0;
	while (s[n] && s[n] != ',' && n + 1 < size) {
		out[n] = s[n];
		n++;
	}
	out[n] = 0;
	return true;
}

/* A sector holding code is read into a page that already ran other code: the CPU must run
 * what the device wrote (the software CPU decodes the page again). */
static void check_dma_into_code(struct virtio_dev *d, unsigned disk)
{
	char name[40];
	uint8_t status = 0xFF;
	uint32_t before, after;
	enum result r;

	name_of(name, sizeof(name), disk, "dma-into-code");
	smc_write_return(dma_code, 1);
	before = smc_call(dma_code);
	memset(scratch, 0xCC, SECTOR); /* int3 after the code */
	smc_write_return(scratch, 2);
	r = blk_request(d, BLK_T_OUT, CODE_SECTOR, scratch, SECTOR, false, &status);
	if (r == DONE && status == BLK_S_OK)
		r = blk_request(d, BLK_T_IN, CODE_SECTOR, dma_code, SECTOR, false, &status);
	if (r != DONE || status != BLK_S_OK) {
		check_fail(name, "sector %u: %s, status %u", CODE_SECTOR,
			   r == DONE ? "answered" : result_name(r), status);
		return;
	}
	after = smc_call(dma_code);
	if (before != 1 || after != 2)
		check_fail(name, "returned %u, then %u after the read; expected 1, then 2", before,
			   after);
	else
		check_ok(name);
}

static void check_blk(struct selftest *t, struct virtio_dev *d, unsigned disk)
{
	char name[40], serial[BLK_ID_BYTES + 1];
	uint8_t status = 0xFF;
	enum result r;

	if (!virtio_start(d, BLK_FEATURES, VIRTQ_SIZE, err, sizeof(err))) {
		check_fail(name_of(name, sizeof(name), disk, "init"), "%s", err);
		return;
	}
	bool ro = d->features & (1ull << VIRTIO_BLK_F_RO);
	uint64_t capacity = virtio_read_config32(d, 0) |
			    (uint64_t)virtio_read_config32(d, 4) << 32;
	check_note("virtio-blk%u: %02x.%x, %lu sectors, features 0x%lx%s, queue %u", disk,
		   d->pci.dev, d->pci.fn, capacity, d->features, ro ? ", read-only" : "", d->qsize);
	check_ok(name_of(name, sizeof(name), disk, "init"));

	r = blk_request(d, BLK_T_IN, 0, data, SECTOR, false, &status);
	if (r != DONE || status != BLK_S_OK) {
		check_fail(name_of(name, sizeof(name), disk, "read"), "sector 0: %s, status %u",
			   r == DONE ? "answered" : result_name(r), status);
		return;
	}
	char text[17];
	for (unsigned i = 0; i < 16; i++)
		text[i] = data[i] >= 0x20 && data[i] < 0x7F ? (char)data[i] : '.';
	text[16] = 0;
	check_note("virtio-blk%u: sector 0 starts \"%s\"", disk, text);
	check_ok(name_of(name, sizeof(name), disk, "read"));

	fill_pattern(scratch, disk);
	r = blk_request(d, BLK_T_OUT, PATTERN_SECTOR, scratch, SECTOR, false, &status);
	if (ro) {
		if (r == DONE && status == BLK_S_IOERR)
			check_ok(name_of(name, sizeof(name), disk, "ro-write-refused"));
		else
			check_fail(name_of(name, sizeof(name), disk, "ro-write-refused"),
				   "write to a read-only disk: %s, status %u",
				   r == DONE ? "answered" : result_name(r), status);
	} else if (r != DONE || status != BLK_S_OK) {
		check_fail(name_of(name, sizeof(name), disk, "write"), "%s, status %u",
			   r == DONE ? "answered" : result_name(r), status);
		return;
	} else {
		/* Read it back through an indirect table into a buffer that held something else. */
		memset(data, 0xEE, SECTOR);
		r = blk_request(d, BLK_T_IN, PATTERN_SECTOR, data, SECTOR, true, &status);
		if (r != DONE || status != BLK_S_OK || memcmp(data, scratch, SECTOR))
			check_fail(name_of(name, sizeof(name), disk, "write"),
				   "read back (indirect): %s, status %u, data %s",
				   r == DONE ? "answered" : result_name(r), status,
				   memcmp(data, scratch, SECTOR) ? "differs" : "same");
		else
			check_ok(name_of(name, sizeof(name), disk, "write"));
	}

	if (!ro)
		check_dma_into_code(d, disk);

	r = blk_request(d, BLK_T_IN, capacity, data, SECTOR, false, &status);
	if (r == DONE && status == BLK_S_IOERR)
		check_ok(name_of(name, sizeof(name), disk, "past-end"));
	else
		check_fail(name_of(name, sizeof(name), disk, "past-end"),
			   "read of sector %lu: %s, status %u", capacity,
			   r == DONE ? "answered" : result_name(r), status);

	memset(data, 0, BLK_ID_BYTES + 1);
	r = blk_request(d, BLK_T_GET_ID, 0, data, BLK_ID_BYTES, false, &status);
	data[BLK_ID_BYTES] = 0;
	if (r != DONE || status != BLK_S_OK)
		check_fail(name_of(name, sizeof(name), disk, "get-id"), "%s, status %u",
			   r == DONE ? "answered" : result_name(r), status);
	else if (expected_serial(t, disk, serial, sizeof(serial)) &&
		 (strnlen((const char *)data, BLK_ID_BYTES) != strlen(serial) ||
		  memcmp(data, serial, strlen(serial))))
		check_fail(name_of(name, sizeof(name), disk, "get-id"), "id '%s', expected '%s'",
			   (const char *)data, serial);
	else {
		check_note("virtio-blk%u: id '%s'", disk, (const char *)data);
		check_ok(name_of(name, sizeof(name), disk, "get-id"));
	}

	r = blk_request(d, BLK_T_FLUSH, 0, 0, 0, false, &status);
	if (r != DONE || status != BLK_S_OK)
		check_fail(name_of(name, sizeof(name), disk, "flush"), "%s, status %u",
			   r == DONE ? "answered" : result_name(r), status);
	else
		check_ok(name_of(name, sizeof(name), disk, "flush"));

	/* For humans: the round trip of a 512-byte read (notify, host I/O, MSI-X, wake-up). */
	if (pmtimer_present()) {
		uint32_t start = pmtimer_read();
		unsigned done = 0;
		while (done < TIMED_READS &&
		       blk_request(d, BLK_T_IN, 0, data, SECTOR, false, &status) == DONE)
			done++;
		uint64_t ticks = (pmtimer_read() - start) & pmtimer_mask();
		if (done)
			check_note("virtio-blk%u: %u reads of 512 bytes, %lu us each", disk, done,
				   ticks * 1000000 / PM_TIMER_HZ / done);
	}
	if (d->queue_irqs)
		check_ok(name_of(name, sizeof(name), disk, "msix"));
	else
		check_fail(name_of(name, sizeof(name), disk, "msix"),
			   "no completion interrupt on vector 0x%x", d->queue_vector);
}

static bool rng_works(struct virtio_dev *d, const char **why)
{
	uint32_t len = 0;

	memset(data, 0, RNG_BYTES);
	desc_set(&d->rings->desc[0], (uint64_t)data, RNG_BYTES, VIRTQ_DESC_F_WRITE, 0);
	enum result r = run_chain(d, &len);
	if (r != DONE) {
		*why = result_name(r);
		return false;
	}
	unsigned nonzero = 0;
	for (unsigned i = 0; i < RNG_BYTES; i++)
		nonzero += data[i] != 0;
	if (len == 0 || len > RNG_BYTES || nonzero < RNG_BYTES / 4) {
		*why = "no random bytes";
		return false;
	}
	return true;
}

static void check_rng(struct virtio_dev *d)
{
	const char *why = "";

	if (!virtio_start(d, 1ull << VIRTIO_F_EVENT_IDX, 16, err, sizeof(err)))
		check_fail("virtio-rng", "%s", err);
	else if (!rng_works(d, &why))
		check_fail("virtio-rng", "%s", why);
	else
		check_ok("virtio-rng");
}

/* ---- the hostile driver ---- */

enum hostile_case {
	H_OUTSIDE_RAM,
	H_OVERSIZED,
	H_LOOP,
	H_TOO_MANY_BUFFERS,
	H_INDIRECT_LOOP,
	H_NESTED_INDIRECT,
	H_WRITE_ONLY_HEADER,
	H_AVAIL_JUMP,
	H_HEAD_OUT_OF_RANGE,
	H_RING_OUTSIDE_RAM,
	H_QUEUE_SIZE_3,
	H_COUNT
};

static const char *const hostile_names[H_COUNT] = {
	"virtio-hostile-outside-ram",     "virtio-hostile-oversized-length",
	"virtio-hostile-loop",            "virtio-hostile-too-many-buffers",
	"virtio-hostile-indirect-loop",   "virtio-hostile-nested-indirect",
	"virtio-hostile-write-only-header", "virtio-hostile-avail-jump",
	"virtio-hostile-head-out-of-range", "virtio-hostile-ring-outside-ram",
	"virtio-hostile-queue-size-3",
};

/* Builds the bad request; returns the avail index to publish. */
static uint16_t hostile_build(struct virtio_dev *d, enum hostile_case c)
{
	struct virtq_desc *desc = d->rings->desc;
	uint64_t st = (uint64_t)&status_byte, buf = (uint64_t)data;

	header = (struct blk_header){ BLK_T_IN, 0, 0 };
	desc_set(&desc[0], (uint64_t)&header, sizeof(header), VIRTQ_DESC_F_NEXT, 1);
	desc_set(&desc[1], buf, SECTOR, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	desc_set(&desc[2], st, 1, VIRTQ_DESC_F_WRITE, 0);
	d->rings->avail.ring[d->avail_idx % d->qsize] = 0;
	switch (c) {
	case H_OUTSIDE_RAM:
		desc[1].addr = NOT_RAM;
		break;
	case H_OVERSIZED:
		desc[1].len = 0xFFFFFE00; /* starts in RAM, runs far past its end */
		break;
	case H_LOOP:
		desc[2].flags |= VIRTQ_DESC_F_NEXT;
		desc[2].next = 1; /* 0 → 1 → 2 → 1 → ... */
		break;
	case H_TOO_MANY_BUFFERS:
		/* Indirect: a direct chain that long would be longer than the queue (another rule). */
		header.type = BLK_T_OUT;
		desc_set(&long_table[0], (uint64_t)&header, sizeof(header), VIRTQ_DESC_F_NEXT, 1);
		for (uint16_t i = 1; i < LONG_CHAIN - 1; i++)
			desc_set(&long_table[i], buf, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(i + 1));
		desc_set(&long_table[LONG_CHAIN - 1], st, 1, VIRTQ_DESC_F_WRITE, 0);
		desc_set(&desc[0], (uint64_t)long_table, sizeof(long_table), VIRTQ_DESC_F_INDIRECT,
			 0);
		break;
	case H_INDIRECT_LOOP:
		desc_set(&table_a[0], (uint64_t)&header, sizeof(header), VIRTQ_DESC_F_NEXT, 1);
		desc_set(&table_a[1], buf, SECTOR, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
		desc_set(&table_a[2], st, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3);
		desc_set(&table_a[3], st, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
		desc_set(&desc[0], (uint64_t)table_a, 4 * 16, VIRTQ_DESC_F_INDIRECT, 0);
		break;
	case H_NESTED_INDIRECT:
		desc_set(&table_b[0], (uint64_t)&header, sizeof(header), VIRTQ_DESC_F_NEXT, 1);
		desc_set(&table_b[1], st, 1, VIRTQ_DESC_F_WRITE, 0);
		desc_set(&table_a[0], (uint64_t)table_b, 2 * 16, VIRTQ_DESC_F_INDIRECT, 0);
		desc_set(&desc[0], (uint64_t)table_a, 16, VIRTQ_DESC_F_INDIRECT, 0);
		break;
	case H_WRITE_ONLY_HEADER:
		desc[0].flags |= VIRTQ_DESC_F_WRITE;
		break;
	case H_AVAIL_JUMP:
		return (uint16_t)(d->avail_idx + d->qsize + 1);
	case H_HEAD_OUT_OF_RANGE:
		d->rings->avail.ring[d->avail_idx % d->qsize] = (uint16_t)(d->qsize + 3);
		break;
	case H_RING_OUTSIDE_RAM:
	case H_QUEUE_SIZE_3:
	case H_COUNT:
		break;
	}
	return (uint16_t)(d->avail_idx + 1);
}

static void hostile_case(struct virtio_dev *d, enum hostile_case c)
{
	const char *name = hostile_names[c];
	uint32_t id, len;
	uint8_t status;

	enum virtio_wait w;
	uint32_t config_irqs = d->config_irqs;
	status_byte = 0xFF;
	if (c == H_RING_OUTSIDE_RAM || c == H_QUEUE_SIZE_3) {
		/* Refused when the queue is enabled: the start must fail with NEEDS_RESET. */
		bool started = virtio_start_at(d, BLK_FEATURES, c == H_QUEUE_SIZE_3 ? 3 : VIRTQ_SIZE,
					       c == H_RING_OUTSIDE_RAM ? NOT_RAM : 0, err,
					       sizeof(err));
		if (started || !(virtio_status(d) & VIRTIO_STATUS_NEEDS_RESET)) {
			check_fail(name, "queue enable accepted (status 0x%x)", virtio_status(d));
			return;
		}
		w = VIRTIO_NEEDS_RESET;
	} else {
		if (!virtio_start(d, BLK_FEATURES, c == H_LOOP ? LOOP_QUEUE_SIZE : VIRTQ_SIZE, err,
				  sizeof(err))) {
			check_fail(name, "setting up: %s", err);
			return;
		}
		uint16_t idx = hostile_build(d, c);
		d->avail_idx = idx;
		virtio_publish_raw(d, idx);
		w = virtio_wait(d, HOSTILE_WAIT_MS, &id, &len);
	}
	status = status_byte;
	if (w == VIRTIO_TIMEOUT) {
		check_fail(name, "neither NEEDS_RESET nor an answer within %u ms (status 0x%x)",
			   HOSTILE_WAIT_MS, virtio_status(d));
		return;
	}
	if (w == VIRTIO_USED && (status == BLK_S_OK || status == 0xFF)) {
		check_fail(name, "the device carried out the request (status %u, len %u)", status, len);
		return;
	}
	const char *how = w == VIRTIO_USED ? "error status" : "NEEDS_RESET";
	if (w == VIRTIO_NEEDS_RESET && d->config_irqs == config_irqs && c < H_RING_OUTSIDE_RAM)
		check_note("%s: NEEDS_RESET without a configuration interrupt", name);
	/* Reset, start again, and the device must work. */
	if (!virtio_start(d, BLK_FEATURES, VIRTQ_SIZE, err, sizeof(err))) {
		check_fail(name, "%s, then after reset: %s", how, err);
		return;
	}
	enum result r = blk_request(d, BLK_T_IN, 0, data, SECTOR, false, &status);
	if (r != DONE || status != BLK_S_OK) {
		check_fail(name, "%s, then after reset a read: %s, status %u", how,
			   r == DONE ? "answered" : result_name(r), status);
		return;
	}
	check_note("%s: %s, device works after reset", name, how);
	check_ok(name);
}

static void check_hostile(struct virtio_dev *victim)
{
	for (unsigned c = 0; c < H_COUNT; c++)
		hostile_case(victim, (enum hostile_case)c);
	/* Every other device still answers. */
	bool all = true;
	for (unsigned i = 0; i < nr_devs; i++) {
		struct virtio_dev *d = &devs[i];
		const char *why = "";
		uint8_t status = 0xFF;

		if (d->type == VIRTIO_ID_RNG) {
			if (!rng_works(d, &why)) {
				check_fail("virtio-hostile-others-alive", "virtio-rng: %s", why);
				all = false;
			}
		} else if (d != victim && d->type == VIRTIO_ID_BLOCK) {
			enum result r = blk_request(d, BLK_T_IN, 0, data, SECTOR, false, &status);
			if (r != DONE || status != BLK_S_OK) {
				check_fail("virtio-hostile-others-alive", "device %u: %s, status %u",
					   i, r == DONE ? "answered" : result_name(r), status);
				all = false;
			}
		}
	}
	if (all)
		check_ok("virtio-hostile-others-alive");
}

void check_virtio(struct selftest *t)
{
	unsigned blks = 0, rngs = 0;
	struct virtio_dev *victim = 0;

	if (!t->args.virtio && !t->args.hostile)
		return;
	nr_devs = virtio_find(&t->acpi, t->bsp_apic_id, devs, VIRTIO_MAX_DEVICES, err, sizeof(err));
	if (err[0]) {
		check_fail("virtio-find", "%s", err);
		return;
	}
	for (unsigned i = 0; i < nr_devs; i++) {
		blks += devs[i].type == VIRTIO_ID_BLOCK;
		rngs += devs[i].type == VIRTIO_ID_RNG;
	}
	if (rngs != 1 || (t->args.disks_given && blks != t->args.disks)) {
		check_fail("virtio-find", "%u virtio-blk (expected %u), %u virtio-rng (expected 1)",
			   blks, t->args.disks_given ? t->args.disks : blks, rngs);
		return;
	}
	check_note("virtio: %u block devices, %u entropy", blks, rngs);
	check_ok("virtio-find");
	unsigned disk = 0;
	for (unsigned i = 0; i < nr_devs; i++) {
		if (devs[i].type != VIRTIO_ID_BLOCK)
			continue;
		check_blk(t, &devs[i], disk++);
		if (!victim && !(devs[i].offered & (1ull << VIRTIO_BLK_F_RO)))
			victim = &devs[i];
	}
	for (unsigned i = 0; i < nr_devs; i++)
		if (devs[i].type == VIRTIO_ID_RNG)
			check_rng(&devs[i]);
	if (!t->args.hostile)
		return;
	if (!victim) {
		for (unsigned i = 0; i < nr_devs && !victim; i++)
			if (devs[i].type == VIRTIO_ID_BLOCK)
				victim = &devs[i];
	}
	if (!victim)
		check_fail("virtio-hostile", "no virtio-blk device to attack");
	else
		check_hostile(victim);
}
