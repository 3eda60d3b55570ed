/* virtio-blk end to end without a guest: the test plays the driver through the PCI config space
 * and BAR accesses a vCPU would make, and runs the event loop as the main thread does. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pci/pci.h"
#include "test.h"
#include "virtio/devices.h"
#include "virtio/virtio_pci.h"
#include "vm.h"

#define DESC 0x100000
#define AVAIL 0x101000
#define USED 0x102000
#define HDR 0x110000
#define DATA 0x120000
#define STATUS 0x130000
#define QSIZE 16

static unsigned msi_count;
static int fake_msi(struct vm *vm, uint64_t a, uint32_t d)
{
	(void)vm, (void)a, (void)d;
	msi_count++;
	return 0;
}
static const struct cpu_backend fake_backend = { .name = "fake", .irq_msi = fake_msi };

struct rig {
	struct vm vm;
	struct event_loop loop;
	char img[64];
	uint64_t bar;
	uint16_t avail_idx;
};

static void mmio_w(struct rig *r, uint64_t a, uint64_t v, unsigned size) { bus_access(&r->vm.mmio, a, &v, size, true); }
static uint64_t mmio_r(struct rig *r, uint64_t a, unsigned size)
{
	uint64_t v = 0;
	bus_access(&r->vm.mmio, a, &v, size, false);
	return v;
}

/* Find the first virtio-blk function on bus 0 through ECAM; its BAR 0. */
static uint64_t find_blk(struct rig *r)
{
	for (unsigned dev = 0; dev < 32; dev++) {
		uint64_t cfg = PCI_ECAM_BASE + (dev << 15);
		if (mmio_r(r, cfg, 4) == 0x10421AF4)
			return mmio_r(r, cfg + 0x10, 4) & ~0xFull;
	}
	return 0;
}

static int rig_init_idle(struct rig *r, const char *opts, bool idle_hooks)
{
	memset(r, 0, sizeof(*r));
	r->vm.idle_hooks_run = idle_hooks; /* as a backend's vm_init sets it */
	strcpy(r->img, "/tmp/vmm-test-blk.XXXXXX");
	int fd = mkstemp(r->img);
	if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
		return -1;
	char pattern[512];
	memset(pattern, 0x5A, sizeof(pattern));
	if (pwrite(fd, pattern, sizeof(pattern), 512 * 3) != 512)
		return -1;
	close(fd);
	struct vm *vm = &r->vm;
	char err[256], arg[128];
	snprintf(arg, sizeof(arg), "%s%s", r->img, opts);
	if (config_parse_disk(&vm->cfg.disks[0], arg, err, sizeof(err)) < 0)
		return -1;
	vm->cfg.nr_disks = 1;
	vm->nr_vcpus = 1;
	vm->backend = &fake_backend;
	bus_init(&vm->pio, "pio");
	bus_init(&vm->mmio, "mmio");
	event_loop_init(&r->loop);
	vm->loop = &r->loop;
	if (memory_init(&vm->mem, 64ull << 20) < 0 || virtio_devices_init(vm) < 0)
		return -1;
	r->bar = find_blk(r);
	return r->bar ? 0 : -1;
}

static int rig_init(struct rig *r, const char *opts)
{
	return rig_init_idle(r, opts, false);
}

static void rig_free(struct rig *r)
{
	virtio_devices_destroy(&r->vm);
	memory_destroy(&r->vm.mem);
	bus_destroy(&r->vm.pio);
	bus_destroy(&r->vm.mmio);
	event_loop_destroy(&r->loop);
	unlink(r->img);
}

/* The driver's initialisation sequence (§3.1.1) with one queue of `size`. */
static uint8_t driver_start_size(struct rig *r, uint16_t size)
{
	uint64_t c = r->bar + VIRTIO_BAR_COMMON;
	mmio_w(r, c + 0x14, 0, 1);
	mmio_w(r, c + 0x14, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER, 1);
	mmio_w(r, c + 0x08, 1, 4);
	mmio_w(r, c + 0x0C, 1, 4); /* VERSION_1 */
	mmio_w(r, c + 0x08, 0, 4);
	mmio_w(r, c + 0x0C, 1u << VIRTIO_RING_F_INDIRECT_DESC, 4);
	mmio_w(r, c + 0x14, 0x0B, 1);
	mmio_w(r, c + 0x16, 0, 2);
	mmio_w(r, c + 0x18, size, 2);
	mmio_w(r, c + 0x20, DESC, 4);
	mmio_w(r, c + 0x24, 0, 4);
	mmio_w(r, c + 0x28, AVAIL, 4);
	mmio_w(r, c + 0x30, USED, 4);
	mmio_w(r, c + 0x1C, 1, 2);
	mmio_w(r, c + 0x14, 0x0F, 1);
	return (uint8_t)mmio_r(r, c + 0x14, 1);
}

static uint8_t driver_start(struct rig *r)
{
	return driver_start_size(r, QSIZE);
}
static uint8_t driver_start64(struct rig *r)
{
	return driver_start_size(r, 64);
}

static void desc(struct rig *r, unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	struct virtq_desc d = { addr, len, flags, next };
	memory_write(&r->vm.mem, DESC + 16 * i, &d, 16);
}

/* Make the chain at descriptor 0 available, notify, and let the main loop finish it: its status
 * byte (0xEE when the device never answered). */
static uint8_t offer_head0(struct rig *r)
{
	uint8_t st = 0xEE;
	uint16_t head = 0;
	memory_write(&r->vm.mem, AVAIL + 4 + 2 * (r->avail_idx % QSIZE), &head, 2);
	r->avail_idx++;
	memory_write(&r->vm.mem, AVAIL + 2, &r->avail_idx, 2);
	mmio_w(r, r->bar + VIRTIO_BAR_NOTIFY, 0, 2);
	uint16_t used = 0;
	for (int i = 0; i < 50 && used != r->avail_idx; i++) {
		event_loop_run_once(&r->loop, 100);
		memory_read(&r->vm.mem, USED + 2, &used, 2);
		if (mmio_r(r, r->bar + VIRTIO_BAR_COMMON + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET)
			break;
	}
	memory_read(&r->vm.mem, STATUS, &st, 1);
	return st;
}

/* Offer the 3-descriptor request at head 0 and let the main loop finish it. */
static uint8_t submit(struct rig *r, uint32_t type, uint64_t sector, uint32_t len,
		      bool data_writable)
{
	struct {
		uint32_t type, reserved;
		uint64_t sector;
	} hdr = { type, 0, sector };
	memory_write(&r->vm.mem, HDR, &hdr, 16);
	uint8_t st = 0xEE;
	memory_write(&r->vm.mem, STATUS, &st, 1);
	desc(r, 0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
	desc(r, 1, DATA, len, VIRTQ_DESC_F_NEXT | (data_writable ? VIRTQ_DESC_F_WRITE : 0), 2);
	desc(r, 2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
	return offer_head0(r);
}

static void test_virtio_blk_read_write_flush_get_id(void)
{
	struct rig r;
	CHECK_EQ(rig_init(&r, ",serial=disk-one"), 0);
	CHECK_EQ(driver_start(&r), 0x0F);
	CHECK_EQ(mmio_r(&r, r.bar + VIRTIO_BAR_DEVICE, 8), (1 << 20) / 512); /* capacity */
	uint8_t buf[1024];
	CHECK_EQ(submit(&r, 0, 3, 512, true), 0);
	memory_read(&r.vm.mem, DATA, buf, 512);
	CHECK(buf[0] == 0x5A && buf[511] == 0x5A);
	memset(buf, 0xC3, sizeof(buf));
	memory_write(&r.vm.mem, DATA, buf, 1024);
	CHECK_EQ(submit(&r, 1, 10, 1024, false), 0);
	CHECK_EQ(submit(&r, 4, 0, 0, false) , 0); /* flush: header + status only uses desc 1 len 0 */
	int fd = open(r.img, O_RDONLY);
	uint8_t back[1024] = { 0 };
	CHECK_EQ(pread(fd, back, 1024, 5120), 1024);
	CHECK(!memcmp(back, buf, 1024));
	close(fd);
	CHECK_EQ(submit(&r, 8, 0, 20, true), 0);
	memory_read(&r.vm.mem, DATA, buf, 20);
	CHECK(!memcmp(buf, "disk-one", 9));
	CHECK_EQ(submit(&r, 0, 2047, 1024, true), 1); /* past the end: IOERR */
	CHECK_EQ(submit(&r, 99, 0, 16, true), 2); /* unknown type: UNSUPP */
	CHECK(msi_count == 0); /* MSI-X never enabled by this driver: no interrupts */
	/* The read, the write and the flush went to the host; GET_ID and the refused ones did not. */
	char *stats = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&stats, &len);
	virtio_devices_format_stats(&r.vm, f);
	fclose(f);
	CHECK(strstr(stats, "reads 1 (512 bytes), writes 1 (1024 bytes), flushes 1, errors 2") !=
	      NULL);
	CHECK(strstr(stats, "host I/O: 3 requests completed, ") != NULL);
	free(stats);
	rig_free(&r);
}

static void test_virtio_blk_read_only_refuses_writes(void)
{
	struct rig r;
	CHECK_EQ(rig_init(&r, ",ro"), 0);
	CHECK_EQ(driver_start(&r), 0x0F);
	CHECK_EQ(submit(&r, 1, 0, 512, false), 1);
	CHECK_EQ(submit(&r, 0, 3, 512, true), 0);
	rig_free(&r);
}

static void test_virtio_blk_hostile_requests_need_reset(void)
{
	struct rig r;
	CHECK_EQ(rig_init(&r, ""), 0);
	CHECK_EQ(driver_start(&r), 0x0F);
	/* Header in a write-only buffer: not a request the device can read. */
	desc(&r, 0, HDR, 16, VIRTQ_DESC_F_WRITE, 0);
	uint16_t head = 0;
	memory_write(&r.vm.mem, AVAIL + 4, &head, 2);
	r.avail_idx = 1;
	memory_write(&r.vm.mem, AVAIL + 2, &r.avail_idx, 2);
	mmio_w(&r, r.bar + VIRTIO_BAR_NOTIFY, 0, 2);
	event_loop_run_once(&r.loop, 100);
	uint8_t status = (uint8_t)mmio_r(&r, r.bar + 0x14, 1);
	CHECK(status & VIRTIO_STATUS_NEEDS_RESET);
	/* Reset brings it back; a data buffer outside RAM breaks it again. */
	r.avail_idx = 0;
	memset(memory_gpa_to_host(&r.vm.mem, AVAIL, 4096), 0, 4096);
	memset(memory_gpa_to_host(&r.vm.mem, USED, 4096), 0, 4096);
	CHECK_EQ(driver_start(&r), 0x0F);
	struct { uint32_t type, reserved; uint64_t sector; } hdr = { 0, 0, 0 };
	memory_write(&r.vm.mem, HDR, &hdr, 16);
	desc(&r, 0, HDR, 16, VIRTQ_DESC_F_NEXT, 1);
	desc(&r, 1, 0xD0000000, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	desc(&r, 2, STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
	memory_write(&r.vm.mem, AVAIL + 4, &head, 2);
	r.avail_idx = 1;
	memory_write(&r.vm.mem, AVAIL + 2, &r.avail_idx, 2);
	mmio_w(&r, r.bar + VIRTIO_BAR_NOTIFY, 0, 2);
	event_loop_run_once(&r.loop, 100);
	CHECK(mmio_r(&r, r.bar + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET);
	/* Enabling a queue with a ring outside RAM also needs a reset, and reset clears it. */
	mmio_w(&r, r.bar + 0x14, 0, 1);
	CHECK_EQ(mmio_r(&r, r.bar + 0x14, 1), 0);
	rig_free(&r);
}

/* An indirect read of `segs` 512-byte data segments from sector 0 (header, segments, status). */
static uint8_t read_segments(struct rig *r, unsigned segs)
{
	struct {
		uint32_t type, reserved;
		uint64_t sector;
	} hdr = { 0, 0, 0 };
	memory_write(&r->vm.mem, HDR, &hdr, 16);
	uint8_t st = 0xEE;
	memory_write(&r->vm.mem, STATUS, &st, 1);
	const uint64_t table = 0x140000, data = 0x200000;
	for (unsigned i = 0; i < segs + 2; i++) {
		struct virtq_desc d = { data + 512 * (i - 1), 512,
					VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, (uint16_t)(i + 1) };
		if (i == 0)
			d = (struct virtq_desc){ HDR, 16, VIRTQ_DESC_F_NEXT, 1 };
		else if (i == segs + 1)
			d = (struct virtq_desc){ STATUS, 1, VIRTQ_DESC_F_WRITE, 0 };
		memory_write(&r->vm.mem, table + 16 * i, &d, 16);
	}
	desc(r, 0, table, 16 * (segs + 2), VIRTQ_DESC_F_INDIRECT, 0);
	return offer_head0(r);
}

/* seg_max is the queue size less the header and status (QEMU's value): the guest's block layer
 * sends a 1 MiB request in 254 segments as one request. A request of seg_max segments is served;
 * one more breaks the queue (the driver ignored the limit). */
static void test_virtio_blk_seg_max_is_queue_size_less_two(void)
{
	struct rig r;
	CHECK_EQ(rig_init(&r, ""), 0);
	CHECK_EQ(driver_start(&r), 0x0F);
	uint64_t c = r.bar + VIRTIO_BAR_COMMON;
	mmio_w(&r, c + 0x16, 0, 2);
	uint32_t seg_max = (uint32_t)mmio_r(&r, r.bar + VIRTIO_BAR_DEVICE + 12, 4);
	CHECK_EQ(seg_max, 254);
	CHECK(mmio_r(&r, c + 0x18, 2) == QSIZE); /* the driver's size; the maximum was 256 */
	CHECK_EQ(read_segments(&r, seg_max), 0);
	uint8_t *data = memory_gpa_to_host(&r.vm.mem, 0x200000 + 512 * 3, 512);
	CHECK(data && data[0] == 0x5A && data[511] == 0x5A); /* sector 3 of the image */
	CHECK(!(mmio_r(&r, c + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET));
	CHECK_EQ(read_segments(&r, seg_max + 1), 0xEE);
	CHECK(mmio_r(&r, c + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET);
	rig_free(&r);
}

/* Make `n` 512-byte reads available at once (heads 3 * i, data and status of their own) and
 * notify; the main loop takes the notify, and the host finishes them all together (reads from
 * the host's page cache complete as io_uring submits them). */
static void offer_reads(struct rig *r, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct {
			uint32_t type, reserved;
			uint64_t sector;
		} hdr = { 0, 0, 2 * i };
		uint16_t head = (uint16_t)(3 * i);
		uint8_t st = 0xEE;
		memory_write(&r->vm.mem, HDR + 16 * i, &hdr, 16);
		memory_write(&r->vm.mem, STATUS + i, &st, 1);
		desc(r, 3 * i, HDR + 16 * i, 16, VIRTQ_DESC_F_NEXT, (uint16_t)(3 * i + 1));
		desc(r, 3 * i + 1, DATA + 512 * i, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
		     (uint16_t)(3 * i + 2));
		desc(r, 3 * i + 2, STATUS + i, 1, VIRTQ_DESC_F_WRITE, 0);
		memory_write(&r->vm.mem, AVAIL + 4 + 2 * (r->avail_idx % 64), &head, 2);
		r->avail_idx++;
	}
	memory_write(&r->vm.mem, AVAIL + 2, &r->avail_idx, 2);
	mmio_w(r, r->bar + VIRTIO_BAR_NOTIFY, 0, 2);
	event_loop_run_once(&r->loop, 100); /* the notify */
}

static uint16_t used_idx(struct rig *r)
{
	uint16_t used = 0;
	memory_read(&r->vm.mem, USED + 2, &used, 2);
	return used;
}

/* The image's first 64 KiB written, so that they are in the host's page cache (holes there are
 * not: a read of one may go to an io_uring worker and finish on its own). */
static void cache_image(struct rig *r)
{
	static uint8_t bytes[64 << 10];
	int fd = open(r->img, O_WRONLY);
	CHECK(fd >= 0 && pwrite(fd, bytes, sizeof(bytes), 0) == (ssize_t)sizeof(bytes));
	if (fd >= 0)
		close(fd);
}

/* The main loop until the used index moves (at most ~1 s). */
static uint16_t run_until_used(struct rig *r, uint16_t from)
{
	for (int i = 0; i < 10 && used_idx(r) == from; i++)
		event_loop_run_once(&r->loop, 100);
	return used_idx(r);
}

/* Pacing (blk.c): 16 reads that finish together reach the guest as 8, then 8 more when the
 * guest notifies again, when a vCPU goes idle, or after the time limit. */
static void test_virtio_blk_paces_batches_that_finish_together(void)
{
	struct rig r;
	uint8_t st[16];
	CHECK_EQ(rig_init_idle(&r, "", true), 0);
	cache_image(&r);
	CHECK_EQ(r.vm.nr_idle_hooks, 1u);
	CHECK_EQ(driver_start64(&r), 0x0F);
	offer_reads(&r, 16);
	CHECK_EQ(run_until_used(&r, 0), 8);
	CHECK(vm_run_idle_hooks(&r.vm)); /* an idle vCPU gets the rest */
	CHECK_EQ(used_idx(&r), 16);
	memory_read(&r.vm.mem, STATUS, st, 16);
	for (unsigned i = 0; i < 16; i++)
		CHECK_EQ(st[i], 0);
	CHECK(!vm_run_idle_hooks(&r.vm)); /* nothing held: nothing to do */

	offer_reads(&r, 16); /* by a notify: the guest submitted more */
	CHECK_EQ(run_until_used(&r, 16), 24);
	offer_reads(&r, 1); /* its notify hands over the 8 held before its own */
	CHECK_EQ(used_idx(&r), 32);
	CHECK_EQ(run_until_used(&r, 32), 33);

	offer_reads(&r, 16); /* by the time limit: the main loop alone */
	CHECK_EQ(run_until_used(&r, 33), 41);
	CHECK_EQ(run_until_used(&r, 41), 49);
	char *stats = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&stats, &len);
	virtio_devices_format_stats(&r.vm, f);
	fclose(f);
	CHECK(strstr(stats, "paced: 3 batches split, 24 completions held, released by notify 1, "
			    "idle vCPU 1, timer or more completions 1") != NULL);
	free(stats);
	rig_free(&r);

	/* Without idle hooks (KVM) nothing is held. */
	CHECK_EQ(rig_init_idle(&r, "", false), 0);
	cache_image(&r);
	CHECK_EQ(driver_start64(&r), 0x0F);
	offer_reads(&r, 16);
	CHECK_EQ(run_until_used(&r, 0), 16);
	rig_free(&r);
}

int main(void)
{
	RUN_TEST(test_virtio_blk_read_write_flush_get_id);
	RUN_TEST(test_virtio_blk_read_only_refuses_writes);
	RUN_TEST(test_virtio_blk_hostile_requests_need_reset);
	RUN_TEST(test_virtio_blk_seg_max_is_queue_size_less_two);
	RUN_TEST(test_virtio_blk_paces_batches_that_finish_together);
	return TEST_EXIT();
}
