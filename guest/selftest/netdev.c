/* The bench's virtio-net driver (virtio 1.2 §4.1, §5.1). See netdev.h. */
#include "netdev.h"
#include "lib.h"

#define NO_VECTOR 0xFFFF
#define NET_F_MAC 5
#define RX_BUFFER 2048 /* ≥ header + 1514 + a VLAN tag, what a device without MRG_RXBUF wants */

static struct virtq_rings net_rings[2];
static uint8_t rx_buffers[VIRTQ_SIZE][RX_BUFFER] __attribute__((aligned(4096)));
static uint8_t tx_small[VIRTQ_SIZE][NETDEV_SMALL] __attribute__((aligned(64)));

static void write64(uint64_t address, uint64_t value)
{
	mmio_write32(address, (uint32_t)value);
	mmio_write32(address + 4, (uint32_t)(value >> 32));
}

/* used_event sits after the available ring, avail_event after the used ring (§2.7.10). */
static volatile uint16_t *used_event(struct netdev_ring *r)
{
	return (volatile uint16_t *)&r->rings->avail.ring[0] + r->size;
}

static volatile uint16_t *avail_event(struct netdev_ring *r)
{
	return (volatile uint16_t *)((volatile uint8_t *)&r->rings->used.ring[0] + 8u * r->size);
}

static bool setup_queue(struct virtio_dev *d, struct netdev_ring *r, uint16_t index)
{
	uint64_t common = d->common;

	mmio_write16(common + COMMON_Q_SELECT, index);
	uint16_t max = mmio_read16(common + COMMON_Q_SIZE);
	if (max == 0)
		return false;
	memset(r, 0, sizeof(*r));
	r->rings = &net_rings[index];
	memset(r->rings, 0, sizeof(*r->rings));
	r->index = index;
	r->size = max < VIRTQ_SIZE ? max : VIRTQ_SIZE;
	mmio_write16(common + COMMON_Q_SIZE, r->size);
	mmio_write16(common + COMMON_Q_MSIX, NO_VECTOR); /* we poll: no interrupts (§4.1.5.1.2) */
	write64(common + COMMON_Q_DESC, (uint64_t)r->rings->desc);
	write64(common + COMMON_Q_AVAIL, (uint64_t)&r->rings->avail);
	write64(common + COMMON_Q_USED, (uint64_t)&r->rings->used);
	r->notify =
		d->notify + (uint64_t)mmio_read16(common + COMMON_Q_NOFF) * d->notify_multiplier;
	mmio_write16(common + COMMON_Q_ENABLE, 1);
	return true;
}

/* Publish avail_idx; kick only if the device asked for it (§2.7.10: vring_need_event). */
static void publish(struct netdev *n, struct netdev_ring *r)
{
	volatile struct virtq_avail *avail = &r->rings->avail;
	uint16_t old = r->published, now = r->avail_idx;

	if (old == now)
		return;
	*used_event(r) = (uint16_t)(r->used_seen + 0x7FFF); /* no interrupts wanted, ever */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	avail->idx = now;
	r->published = now;
	__atomic_thread_fence(__ATOMIC_SEQ_CST); /* the store above before reading avail_event */
	bool kick = n->event_idx ? (uint16_t)(now - *avail_event(r) - 1) < (uint16_t)(now - old)
				 : !(r->rings->used.flags & 1 /* VIRTQ_USED_F_NO_NOTIFY */);
	if (kick) {
		mmio_write16(r->notify, r->index);
		r->kicks++;
	}
}

bool netdev_start(struct netdev *n, struct virtio_dev *d, char *err, unsigned err_size)
{
	uint64_t common = d->common;

	memset(n, 0, sizeof(*n));
	n->dev = d;
	if (!virtio_reset(d)) {
		format(err, err_size, "status did not read 0 after reset");
		return false;
	}
	mmio_write8(common + COMMON_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	mmio_write8(common + COMMON_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	mmio_write32(common + COMMON_DFSELECT, 0);
	uint64_t offered = mmio_read32(common + COMMON_DF);
	mmio_write32(common + COMMON_DFSELECT, 1);
	offered |= (uint64_t)mmio_read32(common + COMMON_DF) << 32;
	uint64_t want = 1ull << VIRTIO_F_VERSION_1 | 1ull << VIRTIO_F_EVENT_IDX | 1ull << NET_F_MAC;
	if (!(offered & 1ull << VIRTIO_F_VERSION_1)) {
		format(err, err_size, "no VERSION_1 (features 0x%lx)", offered);
		return false;
	}
	d->features = want & offered;
	n->event_idx = d->features & 1ull << VIRTIO_F_EVENT_IDX;
	mmio_write32(common + COMMON_GFSELECT, 0);
	mmio_write32(common + COMMON_GF, (uint32_t)d->features);
	mmio_write32(common + COMMON_GFSELECT, 1);
	mmio_write32(common + COMMON_GF, (uint32_t)(d->features >> 32));
	mmio_write8(common + COMMON_STATUS,
		    mmio_read8(common + COMMON_STATUS) | VIRTIO_STATUS_FEATURES_OK);
	if (!(mmio_read8(common + COMMON_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
		format(err, err_size, "features 0x%lx refused", d->features);
		return false;
	}
	mmio_write16(common + COMMON_MSIX, NO_VECTOR);
	if (!setup_queue(d, &n->rx, 0) || !setup_queue(d, &n->tx, 1)) {
		format(err, err_size, "receive or transmit queue missing");
		return false;
	}
	for (unsigned i = 0; i < 6; i++)
		n->mac[i] = (d->features & 1ull << NET_F_MAC)
				    ? virtio_read_config8(d, i)
				    : (uint8_t[]){ 0x52, 0x54, 0, 0x12, 0x34, 0x56 }[i];
	/* Every receive buffer available before the device starts. */
	for (uint16_t i = 0; i < n->rx.size; i++) {
		n->rx.rings->desc[i] = (struct virtq_desc){ (uint64_t)rx_buffers[i], RX_BUFFER,
							    VIRTQ_DESC_F_WRITE, 0 };
		n->rx.rings->avail.ring[i] = i;
	}
	n->rx.avail_idx = n->rx.size;
	n->rx.rings->avail.idx = n->rx.size;
	n->rx.published = n->rx.size;
	*used_event(&n->rx) = 0x7FFF;
	*used_event(&n->tx) = 0x7FFF;
	mmio_write8(common + COMMON_STATUS,
		    mmio_read8(common + COMMON_STATUS) | VIRTIO_STATUS_DRIVER_OK);
	uint8_t status = mmio_read8(common + COMMON_STATUS);
	if ((status & (VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET)) !=
	    VIRTIO_STATUS_DRIVER_OK) {
		format(err, err_size, "status 0x%x after DRIVER_OK", status);
		return false;
	}
	mmio_write16(n->rx.notify, 0); /* buffers are there */
	return true;
}

unsigned netdev_poll(struct netdev *n,
		     void (*handle)(const uint8_t *frame, unsigned len, void *arg), void *arg)
{
	struct netdev_ring *r = &n->rx;
	volatile struct virtq_used *used = &r->rings->used;
	uint16_t idx = used->idx;
	unsigned count = 0;

	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	while (r->used_seen != idx) {
		uint32_t id = used->ring[r->used_seen % r->size].id;
		uint32_t len = used->ring[r->used_seen % r->size].len;

		r->used_seen++;
		if (id >= r->size)
			continue; /* a device bug: that buffer is lost, the rest go on */
		if (len > NETDEV_HDR && len <= RX_BUFFER)
			handle(rx_buffers[id] + NETDEV_HDR, len - NETDEV_HDR, arg);
		r->rings->avail.ring[r->avail_idx % r->size] = (uint16_t)id;
		r->avail_idx++;
		count++;
	}
	publish(n, r);
	return count;
}

static void tx_reclaim(struct netdev *n)
{
	n->tx.used_seen =
		n->tx.rings->used.idx; /* frames complete in order: only the count counts */
}

unsigned netdev_tx_pending(struct netdev *n)
{
	tx_reclaim(n);
	return (uint16_t)(n->tx.avail_idx - n->tx.used_seen);
}

static bool tx_room(struct netdev *n)
{
	if ((uint16_t)(n->tx.avail_idx - n->tx.used_seen) < n->tx.size)
		return true;
	tx_reclaim(n);
	return (uint16_t)(n->tx.avail_idx - n->tx.used_seen) < n->tx.size;
}

static void tx_queue(struct netdev *n, uint64_t address, unsigned total)
{
	struct netdev_ring *r = &n->tx;
	uint16_t slot = r->avail_idx % r->size;

	r->rings->desc[slot] = (struct virtq_desc){ address, total, 0, 0 };
	r->rings->avail.ring[slot] = slot;
	r->avail_idx++;
}

uint8_t *netdev_tx_small(struct netdev *n)
{
	if (!tx_room(n))
		return 0;
	uint8_t *buf = tx_small[n->tx.avail_idx % n->tx.size];
	memset(buf, 0, NETDEV_HDR);
	return buf;
}

void netdev_tx_commit_small(struct netdev *n, unsigned len)
{
	tx_queue(n, (uint64_t)tx_small[n->tx.avail_idx % n->tx.size], NETDEV_HDR + len);
}

unsigned netdev_tx_bulk(struct netdev *n, const void *buf, unsigned total, unsigned max)
{
	unsigned queued = 0;

	while (queued < max && tx_room(n)) {
		tx_queue(n, (uint64_t)buf, total);
		queued++;
	}
	return queued;
}

void netdev_tx_flush(struct netdev *n)
{
	publish(n, &n->tx);
}
