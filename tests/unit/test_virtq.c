/* Split virtqueues fed hostile rings directly: every malformed ring must end in an error and a
 * broken queue, never in a host access outside guest RAM (run under `make asan` too). */
#include <errno.h>
#include <string.h>

#include "test.h"
#include "virtio/virtq.h"

#define QSIZE 8
#define DESC_GPA 0x1000
#define AVAIL_GPA 0x2000
#define USED_GPA 0x3000
#define BUF_GPA 0x10000
#define TABLE_GPA 0x20000

struct ring {
	struct guest_memory mem;
	struct virtq vq;
	struct iovec iov[16];
	struct virtq_chain chain;
};

static void ring_setup(struct ring *r, bool indirect, bool event_idx)
{
	memset(r, 0, sizeof(*r));
	CHECK_EQ(memory_init(&r->mem, 64ull << 20), 0);
	virtq_init(&r->vq, &r->mem, "test-queue");
	r->vq.size = QSIZE;
	r->vq.desc_gpa = DESC_GPA;
	r->vq.avail_gpa = AVAIL_GPA;
	r->vq.used_gpa = USED_GPA;
	r->vq.indirect = indirect;
	r->vq.event_idx = event_idx;
	CHECK_EQ(virtq_enable(&r->vq, 256), 0);
	r->chain.iov = r->iov;
	r->chain.cap = 16;
}

static void ring_free(struct ring *r)
{
	memory_destroy(&r->mem);
}

static void set_desc_at(struct ring *r, uint64_t table, unsigned i, uint64_t addr, uint32_t len,
			uint16_t flags, uint16_t next)
{
	struct virtq_desc d = { addr, len, flags, next };
	memory_write(&r->mem, table + 16 * i, &d, sizeof(d));
}

static void set_desc(struct ring *r, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	set_desc_at(r, DESC_GPA, i, addr, len, flags, next);
}

/* Offer head as available entry number `slot` and move avail->idx to idx. */
static void offer(struct ring *r, unsigned slot, uint16_t head, uint16_t idx)
{
	memory_write(&r->mem, AVAIL_GPA + 4 + 2 * (slot % QSIZE), &head, 2);
	memory_write(&r->mem, AVAIL_GPA + 2, &idx, 2);
}

static uint16_t used_idx(struct ring *r)
{
	uint16_t v = 0;
	memory_read(&r->mem, USED_GPA + 2, &v, 2);
	return v;
}

static void test_virtq_good_chain_round_trip(void)
{
	struct ring r;
	ring_setup(&r, false, false);
	CHECK_EQ(virtq_pop(&r.vq, &r.chain), 0); /* nothing offered */
	memory_write(&r.mem, BUF_GPA, "hello", 5);
	set_desc(&r, 3, BUF_GPA, 5, VIRTQ_DESC_F_NEXT, 5);
	set_desc(&r, 5, BUF_GPA + 0x100, 64, VIRTQ_DESC_F_WRITE, 0);
	offer(&r, 0, 3, 1);
	CHECK_EQ(virtq_pop(&r.vq, &r.chain), 1);
	CHECK_EQ(r.chain.head, 3);
	CHECK_EQ(r.chain.nr_out, 1);
	CHECK_EQ(r.chain.nr_in, 1);
	CHECK_EQ(r.chain.out_len, 5);
	CHECK_EQ(r.chain.in_len, 64);
	char buf[8] = { 0 };
	CHECK_EQ(virtq_chain_read(&r.chain, 1, buf, 8), 4);
	CHECK(!memcmp(buf, "ello", 4));
	CHECK_EQ(virtq_chain_write(&r.chain, 60, "abcdefgh", 8), 4);
	virtq_push(&r.vq, r.chain.head, 4);
	CHECK_EQ(used_idx(&r), 1);
	uint32_t elem[2];
	memory_read(&r.mem, USED_GPA + 4, elem, 8);
	CHECK_EQ(elem[0], 3);
	CHECK_EQ(elem[1], 4);
	CHECK(virtq_should_notify(&r.vq));
	CHECK_EQ(virtq_pop(&r.vq, &r.chain), 0);
	CHECK(!r.vq.broken);
	ring_free(&r);
}

static void test_virtq_rejects_bad_queue_setup(void)
{
	struct ring r;
	ring_setup(&r, false, false);
	virtq_reset(&r.vq);
	CHECK(!r.vq.enabled);
	r.vq.size = 6; /* not a power of two */
	r.vq.desc_gpa = DESC_GPA;
	r.vq.avail_gpa = AVAIL_GPA;
	r.vq.used_gpa = USED_GPA;
	CHECK_EQ(virtq_enable(&r.vq, 256), -EINVAL);
	r.vq.size = 512; /* above the device's maximum */
	CHECK_EQ(virtq_enable(&r.vq, 256), -EINVAL);
	r.vq.size = 0;
	CHECK_EQ(virtq_enable(&r.vq, 256), -EINVAL);
	r.vq.size = QSIZE;
	r.vq.desc_gpa = DESC_GPA + 8; /* misaligned */
	CHECK_EQ(virtq_enable(&r.vq, 256), -EINVAL);
	r.vq.desc_gpa = (64ull << 20) - 64; /* runs off the end of RAM */
	CHECK_EQ(virtq_enable(&r.vq, 256), -EINVAL);
	r.vq.desc_gpa = 0xC0000000; /* the MMIO hole */
	CHECK_EQ(virtq_enable(&r.vq, 256), -EINVAL);
	r.vq.desc_gpa = DESC_GPA;
	r.vq.used_gpa = ~0ull - 3; /* wraps */
	CHECK_EQ(virtq_enable(&r.vq, 256), -EINVAL);
	CHECK(!r.vq.enabled);
	CHECK_EQ(virtq_pop(&r.vq, &r.chain), 0);
	ring_free(&r);
}

/* Each case: one malformed ring, -EIO, the queue stays broken. */
static void expect_broken(struct ring *r)
{
	CHECK_EQ(virtq_pop(&r->vq, &r->chain), -EIO);
	CHECK(r->vq.broken);
	CHECK_EQ(virtq_pop(&r->vq, &r->chain), -EIO);
	virtq_push(&r->vq, 0, 0); /* ignored */
	CHECK_EQ(used_idx(r), 0);
	ring_free(r);
}

static void test_virtq_buffer_outside_ram(void)
{
	struct ring r;
	ring_setup(&r, false, false);
	set_desc(&r, 0, 0xD0000000, 512, 0, 0);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	ring_setup(&r, false, false);
	set_desc(&r, 0, (64ull << 20) - 16, 32, 0, 0); /* straddles the end of RAM */
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	ring_setup(&r, false, false);
	set_desc(&r, 0, ~0ull - 15, 0xFFFFFFFF, VIRTQ_DESC_F_WRITE, 0); /* address + len wraps */
	offer(&r, 0, 0, 1);
	expect_broken(&r);
}

static void test_virtq_looping_chain(void)
{
	struct ring r;
	ring_setup(&r, false, false);
	set_desc(&r, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc(&r, 1, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	ring_setup(&r, false, false);
	set_desc(&r, 2, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 2); /* points at itself */
	offer(&r, 0, 2, 1);
	expect_broken(&r);
}

static void test_virtq_chain_as_long_as_queue_is_fine_longer_is_not(void)
{
	struct ring r;
	ring_setup(&r, false, false);
	for (unsigned i = 0; i < QSIZE; i++)
		set_desc(&r, i, BUF_GPA, 8, i + 1 < QSIZE ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	offer(&r, 0, 0, 1);
	CHECK_EQ(virtq_pop(&r.vq, &r.chain), 1);
	CHECK_EQ(r.chain.nr_out, QSIZE);
	ring_free(&r);
	/* Zero-length descriptors still count towards the limit. */
	ring_setup(&r, false, false);
	for (unsigned i = 0; i < QSIZE; i++)
		set_desc(&r, i, 0, 0, VIRTQ_DESC_F_NEXT, (uint16_t)((i + 1) % QSIZE));
	offer(&r, 0, 0, 1);
	expect_broken(&r);
}

static void test_virtq_bad_indices(void)
{
	struct ring r;
	ring_setup(&r, false, false);
	offer(&r, 0, QSIZE, 1); /* head beyond the table */
	expect_broken(&r);
	ring_setup(&r, false, false);
	set_desc(&r, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 200); /* next beyond the table */
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	ring_setup(&r, false, false);
	set_desc(&r, 0, BUF_GPA, 16, 0, 0);
	offer(&r, 0, 0, QSIZE + 1); /* avail idx more than a queue ahead */
	expect_broken(&r);
	ring_setup(&r, false, false);
	offer(&r, 0, 0, 0xFFFF); /* "behind": same as far ahead in 16-bit arithmetic */
	expect_broken(&r);
}

static void test_virtq_indirect_rules(void)
{
	struct ring r;
	/* A good indirect table: readable + writable. */
	ring_setup(&r, true, false);
	set_desc_at(&r, TABLE_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc_at(&r, TABLE_GPA, 1, BUF_GPA + 64, 1, VIRTQ_DESC_F_WRITE, 0);
	set_desc(&r, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(&r, 0, 0, 1);
	CHECK_EQ(virtq_pop(&r.vq, &r.chain), 1);
	CHECK_EQ(r.chain.nr_out, 1);
	CHECK_EQ(r.chain.nr_in, 1);
	ring_free(&r);
	/* Not negotiated. */
	ring_setup(&r, false, false);
	set_desc(&r, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	/* Nested. */
	ring_setup(&r, true, false);
	set_desc_at(&r, TABLE_GPA, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	set_desc(&r, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	/* Length not a multiple of 16, zero, or outside RAM. */
	ring_setup(&r, true, false);
	set_desc(&r, 0, TABLE_GPA, 24, VIRTQ_DESC_F_INDIRECT, 0);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	ring_setup(&r, true, false);
	set_desc(&r, 0, TABLE_GPA, 0, VIRTQ_DESC_F_INDIRECT, 0);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	ring_setup(&r, true, false);
	set_desc(&r, 0, 0xE0000000, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	/* INDIRECT together with NEXT. */
	ring_setup(&r, true, false);
	set_desc(&r, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	/* A loop inside the table. */
	ring_setup(&r, true, false);
	set_desc_at(&r, TABLE_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc_at(&r, TABLE_GPA, 1, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
	set_desc(&r, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
	/* next beyond the table's own length. */
	ring_setup(&r, true, false);
	set_desc_at(&r, TABLE_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 2);
	set_desc(&r, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
}

static void test_virtq_readable_after_writable(void)
{
	struct ring r;
	ring_setup(&r, false, false);
	set_desc(&r, 0, BUF_GPA, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
	set_desc(&r, 1, BUF_GPA, 16, 0, 0);
	offer(&r, 0, 0, 1);
	expect_broken(&r);
}

static void test_virtq_more_buffers_than_the_device_takes(void)
{
	struct ring r;
	ring_setup(&r, false, false);
	r.chain.cap = 2;
	for (unsigned i = 0; i < 3; i++)
		set_desc(&r, i, BUF_GPA, 8, i < 2 ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	offer(&r, 0, 0, 1);
	CHECK_EQ(virtq_pop(&r.vq, &r.chain), -ENOBUFS);
	CHECK(r.vq.broken);
	ring_free(&r);
}

static void test_virtq_interrupt_suppression(void)
{
	struct ring r;
	uint16_t v;
	/* Without EVENT_IDX: the NO_INTERRUPT flag. */
	ring_setup(&r, false, false);
	v = VIRTQ_AVAIL_F_NO_INTERRUPT;
	memory_write(&r.mem, AVAIL_GPA, &v, 2);
	set_desc(&r, 0, BUF_GPA, 8, VIRTQ_DESC_F_WRITE, 0);
	offer(&r, 0, 0, 1);
	CHECK_EQ(virtq_pop(&r.vq, &r.chain), 1);
	virtq_push(&r.vq, 0, 8);
	CHECK(!virtq_should_notify(&r.vq));
	ring_free(&r);
	/* With EVENT_IDX: interrupt only when used_event is crossed. */
	ring_setup(&r, false, true);
	v = 2; /* used_event: interrupt once used idx passes 2 */
	memory_write(&r.mem, AVAIL_GPA + 4 + 2 * QSIZE, &v, 2);
	for (unsigned i = 0; i < 4; i++) {
		set_desc(&r, i, BUF_GPA, 8, VIRTQ_DESC_F_WRITE, 0);
		offer(&r, i, (uint16_t)i, (uint16_t)(i + 1));
	}
	bool notified[4];
	for (unsigned i = 0; i < 4; i++) {
		CHECK_EQ(virtq_pop(&r.vq, &r.chain), 1);
		virtq_push(&r.vq, r.chain.head, 0);
		notified[i] = virtq_should_notify(&r.vq);
	}
	CHECK(notified[0]); /* first ever: always */
	CHECK(!notified[1]);
	CHECK(notified[2]); /* used idx went 2 → 3, crossing used_event 2 */
	CHECK(!notified[3]);
	/* enable_notify publishes avail_event and reports work that raced in. */
	CHECK(!virtq_enable_notify(&r.vq));
	memory_read(&r.mem, USED_GPA + 4 + 8 * QSIZE, &v, 2);
	CHECK_EQ(v, 4);
	set_desc(&r, 4, BUF_GPA, 8, VIRTQ_DESC_F_WRITE, 0);
	offer(&r, 4, 4, 5);
	CHECK(virtq_enable_notify(&r.vq));
	ring_free(&r);
}

static void test_virtq_reset_forgets_everything(void)
{
	struct ring r;
	ring_setup(&r, false, false);
	set_desc(&r, 0, 0xD0000000, 8, 0, 0);
	offer(&r, 0, 0, 1);
	CHECK_EQ(virtq_pop(&r.vq, &r.chain), -EIO);
	virtq_reset(&r.vq);
	CHECK(!r.vq.broken && !r.vq.enabled && !r.vq.desc && !r.vq.avail && !r.vq.used);
	CHECK_EQ(r.vq.last_avail, 0);
	CHECK_EQ(r.vq.size, 0);
	CHECK_EQ(virtq_pop(&r.vq, &r.chain), 0);
	ring_free(&r);
}

int main(void)
{
	RUN_TEST(test_virtq_good_chain_round_trip);
	RUN_TEST(test_virtq_rejects_bad_queue_setup);
	RUN_TEST(test_virtq_buffer_outside_ram);
	RUN_TEST(test_virtq_looping_chain);
	RUN_TEST(test_virtq_chain_as_long_as_queue_is_fine_longer_is_not);
	RUN_TEST(test_virtq_bad_indices);
	RUN_TEST(test_virtq_indirect_rules);
	RUN_TEST(test_virtq_readable_after_writable);
	RUN_TEST(test_virtq_more_buffers_than_the_device_takes);
	RUN_TEST(test_virtq_interrupt_suppression);
	RUN_TEST(test_virtq_reset_forgets_everything);
	return TEST_EXIT();
}
