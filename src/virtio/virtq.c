/* Split virtqueues, device side (virtio 1.2 §2.7). See virtq.h for the threat model.
 *
 * Guest memory is shared with running vCPUs: each descriptor is copied once into a local
 * variable and only the copy is checked and used, so the guest cannot change it in between. */
#include "virtio/virtq.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define AVAIL_FLAGS 0
#define AVAIL_IDX 1
#define AVAIL_RING 2 /* in uint16_t units */

void virtq_init(struct virtq *vq, const struct guest_memory *mem, const char *name)
{
	memset(vq, 0, sizeof(*vq));
	vq->mem = mem;
	vq->name = name;
}

void virtq_reset(struct virtq *vq)
{
	virtq_init(vq, vq->mem, vq->name);
}

void virtq_fail(struct virtq *vq, const char *why)
{
	vq->errors++;
	if (vq->broken)
		return;
	vq->broken = true;
	fprintf(stderr, "vmm: %s: %s (device needs reset)\n", vq->name, why);
}

static int virtq_bad(struct virtq *vq, const char *why)
{
	virtq_fail(vq, why);
	return -EIO;
}

int virtq_enable(struct virtq *vq, uint16_t max_size)
{
	uint64_t n = vq->size;
	if (n == 0 || n > max_size || (n & (n - 1)))
		return -EINVAL;
	if ((vq->desc_gpa & 15) || (vq->avail_gpa & 1) || (vq->used_gpa & 3))
		return -EINVAL; /* §2.7: alignment 16, 2, 4 */
	/* §2.7: descriptor table 16·n, available ring 6 + 2·n, used ring 6 + 8·n bytes. */
	vq->desc = memory_gpa_to_host(vq->mem, vq->desc_gpa, 16 * n);
	vq->avail = memory_gpa_to_host(vq->mem, vq->avail_gpa, 6 + 2 * n);
	vq->used = memory_gpa_to_host(vq->mem, vq->used_gpa, 6 + 8 * n);
	if (!vq->desc || !vq->avail || !vq->used) {
		vq->desc = NULL;
		vq->avail = NULL;
		vq->used = NULL;
		return -EINVAL;
	}
	vq->last_avail = vq->used_idx = vq->signalled_used = 0;
	vq->signalled_valid = false;
	vq->broken = false;
	vq->enabled = true;
	return 0;
}

static uint16_t load16(const uint16_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

int virtq_pop(struct virtq *vq, struct virtq_chain *c)
{
	if (vq->broken)
		return -EIO;
	if (!vq->enabled)
		return 0;
	uint16_t avail_idx = load16(&vq->avail[AVAIL_IDX]);
	uint16_t pending = (uint16_t)(avail_idx - vq->last_avail);
	if (pending == 0)
		return 0;
	if (pending > vq->size)
		return virtq_bad(vq, "available index runs more than the queue size ahead");
	uint16_t head = load16(&vq->avail[AVAIL_RING + vq->last_avail % vq->size]);
	if (head >= vq->size)
		return virtq_bad(vq, "available ring names a descriptor beyond the queue size");

	c->head = head;
	c->mem = vq->mem;
	c->nr_out = c->nr_in = 0;
	c->out_len = c->in_len = 0;
	const uint8_t *table = (const uint8_t *)vq->desc;
	uint32_t table_size = vq->size, idx = head;
	uint32_t budget = vq->size; /* §2.7.5.3.1: no chain is longer than the queue (loops) */
	bool in_indirect = false;
	for (;;) {
		if (budget-- == 0)
			return virtq_bad(vq, "descriptor chain longer than the queue (a loop?)");
		struct virtq_desc d;
		memcpy(&d, table + 16 * (size_t)idx, sizeof(d));
		if (d.flags & VIRTQ_DESC_F_INDIRECT) { /* §2.7.5.3 */
			if (!vq->indirect)
				return virtq_bad(vq, "indirect descriptor without INDIRECT_DESC");
			if (in_indirect)
				return virtq_bad(vq, "indirect table inside an indirect table");
			if (d.flags & VIRTQ_DESC_F_NEXT)
				return virtq_bad(vq, "indirect descriptor with NEXT set");
			if (d.len == 0 || d.len % 16 || d.len / 16 > VIRTQ_MAX_SIZE)
				return virtq_bad(vq, "indirect table length is not a multiple of 16");
			table = memory_gpa_to_host(vq->mem, d.addr, d.len);
			if (!table)
				return virtq_bad(vq, "indirect table outside guest RAM");
			table_size = budget = d.len / 16;
			idx = 0;
			in_indirect = true;
			continue;
		}
		if (d.len) {
			void *p = memory_gpa_to_host(vq->mem, d.addr, d.len);
			if (!p)
				return virtq_bad(vq, "buffer outside guest RAM");
			bool writable = d.flags & VIRTQ_DESC_F_WRITE;
			if (!writable && c->nr_in)
				return virtq_bad(vq, "readable buffer after a writable one");
			if (c->nr_out + c->nr_in >= c->cap) {
				virtq_fail(vq, "chain has more buffers than the device allows");
				return -ENOBUFS;
			}
			c->iov[c->nr_out + c->nr_in] = (struct iovec){ p, d.len };
			if (writable) {
				c->nr_in++;
				c->in_len += d.len;
			} else {
				c->nr_out++;
				c->out_len += d.len;
			}
		}
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= table_size)
			return virtq_bad(vq, "descriptor chain points beyond its table");
		idx = d.next;
	}
	vq->last_avail++;
	vq->chains++;
	return 1;
}

void virtq_written(const struct virtq *vq, const struct iovec *iov, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		memory_written(vq->mem, iov[i].iov_base, iov[i].iov_len);
}

void virtq_push(struct virtq *vq, uint16_t head, uint32_t written)
{
	if (!vq->enabled || vq->broken)
		return;
	uint8_t *elem = vq->used + 4 + 8 * (size_t)(vq->used_idx % vq->size);
	uint32_t id = head;
	memcpy(elem, &id, 4);
	memcpy(elem + 4, &written, 4);
	vq->used_idx++;
	/* The element must be visible before the index that publishes it (§2.7.8). */
	__atomic_store_n((uint16_t *)(vq->used + 2), vq->used_idx, __ATOMIC_RELEASE);
}

bool virtq_should_notify(struct virtq *vq)
{
	if (!vq->enabled || vq->broken)
		return false;
	/* Our used index store must be ordered before reading the driver's suppression state. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!vq->event_idx)
		return !(load16(&vq->avail[AVAIL_FLAGS]) & VIRTQ_AVAIL_F_NO_INTERRUPT);
	bool valid = vq->signalled_valid;
	uint16_t old = vq->signalled_used, new_idx = vq->used_idx;
	vq->signalled_used = new_idx;
	vq->signalled_valid = true;
	if (!valid)
		return true;
	uint16_t used_event = load16(&vq->avail[AVAIL_RING + vq->size]);
	/* §2.7.10: interrupt if used_event lies in [old, new). */
	return (uint16_t)(new_idx - used_event - 1) < (uint16_t)(new_idx - old);
}

bool virtq_enable_notify(struct virtq *vq)
{
	if (!vq->enabled || vq->broken)
		return false;
	if (vq->event_idx)
		__atomic_store_n((uint16_t *)(vq->used + 4 + 8 * (size_t)vq->size), vq->last_avail,
				 __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return load16(&vq->avail[AVAIL_IDX]) != vq->last_avail;
}

uint64_t virtq_chain_read(const struct virtq_chain *c, uint64_t offset, void *dst, uint64_t len)
{
	uint64_t done = 0;
	for (unsigned i = 0; i < c->nr_out && done < len; i++) {
		uint64_t l = c->iov[i].iov_len;
		if (offset >= l) {
			offset -= l;
			continue;
		}
		uint64_t n = l - offset < len - done ? l - offset : len - done;
		memcpy((uint8_t *)dst + done, (uint8_t *)c->iov[i].iov_base + offset, n);
		done += n;
		offset = 0;
	}
	return done;
}

uint64_t virtq_chain_write(const struct virtq_chain *c, uint64_t offset, const void *src,
			   uint64_t len)
{
	uint64_t done = 0;
	for (unsigned i = c->nr_out; i < c->nr_out + c->nr_in && done < len; i++) {
		uint64_t l = c->iov[i].iov_len;
		if (offset >= l) {
			offset -= l;
			continue;
		}
		uint64_t n = l - offset < len - done ? l - offset : len - done;
		memcpy((uint8_t *)c->iov[i].iov_base + offset, (const uint8_t *)src + done, n);
		if (c->mem)
			memory_written(c->mem, (uint8_t *)c->iov[i].iov_base + offset, n);
		done += n;
		offset = 0;
	}
	return done;
}
