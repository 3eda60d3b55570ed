/* virtio-net (virtio 1.2 §5.1): queue pairs (receiveq N = 2N, transmitq N = 2N+1) and a
 * control queue, on a network backend (src/net/net.h).
 *
 * Data path (TAP): frames carry struct virtio_net_hdr_v1 (12 bytes) on both sides, so the TAP
 * reads into and writes from guest buffers directly (readv/writev, no copy). Transmit copies only
 * the 12-byte header, checks it, and hands the guest's payload buffers to writev. Receive pops
 * enough chains for the largest frame the TAP may hand over (64 KiB with guest TSO, one MTU
 * frame otherwise), readv's into all of them, returns the ones the frame filled (num_buffers
 * with MRG_RXBUF) and keeps the rest for the next frame. Every kick and every readable TAP
 * handles a batch of frames and sends at most one interrupt; EVENT_IDX decides whether even
 * that is needed.
 *
 * Push backends (user mode) take and give plain frames: transmit copies the frame once (and
 * completes a partial checksum there, VIRTIO_NET_F_CSUM); a received frame is copied into the
 * guest's buffers, marked DATA_VALID when its TCP/UDP checksum checked out (GUEST_CSUM).
 *
 * The guest is hostile: a frame too short for the header, larger than negotiated, or with a
 * header the negotiated features do not allow is dropped and counted; so is a receive chain
 * with readable buffers or too small for a header. Malformed rings (loops, addresses outside
 * RAM) are the virtqueue's business and mark the device NEEDS_RESET. A backend that fails
 * (TAP deleted under us) is reported once and the link goes down for the guest. */
#include "virtio/net.h"

#include <errno.h>
#include <linux/virtio_net.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "net/net.h"
#include "trace.h"
#include "virtio/virtio_pci.h"
#include "vm.h"

#define NET_QUEUE_SIZE 256
#define NET_HDR_LEN 12 /* struct virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size,
			  csum_start, csum_offset, num_buffers (§5.1.6) */
#define NET_MTU 1500
#define NET_ETH_HLEN 14
#define NET_VLAN_HLEN 4
#define NET_MAX_GSO_FRAME (65535 + NET_ETH_HLEN + NET_VLAN_HLEN)
#define NET_CHAIN_IOV 64 /* buffers in one chain: Linux "big packets" use MAX_SKB_FRAGS + 2 */
#define NET_RX_POOL 64 /* chains held for one frame (64 KiB in 1536-byte mergeable buffers) */
#define NET_RX_IOV 1024 /* IOV_MAX: what one readv takes */
#define NET_BATCH 256 /* frames per kick or wake-up before giving others a turn */
#define NET_MAC_TABLE 64
/* Push backends (user mode) hand over frames the guest may have no buffers for yet: up to this
 * many wait, in order, for the next receive kick. Dropping them instead makes libslirp's TCP wait
 * for a retransmission time-out whenever a slow guest falls behind (QEMU queues them too). */
#define NET_RX_BACKLOG 256
#define NET_CONFIG_SIZE 24

struct net_chain {
	uint16_t head;
	unsigned nr;
	uint64_t len;
	struct iovec iov[NET_CHAIN_IOV];
};

struct net_pair {
	struct virtio_net *net;
	unsigned index;
	struct net_chain pool[NET_RX_POOL]; /* popped receive chains not used yet, FIFO */
	unsigned pool_first, pool_count;
	bool polling; /* the backend fd is watched for EPOLLIN */
	bool in_loop;
};

struct virtio_net {
	struct virtio_device vdev;
	struct vm *vm;
	struct net_backend *be;
	char name[24];
	uint8_t config[NET_CONFIG_SIZE];
	uint8_t mac[6];
	unsigned max_pairs, active_pairs;
	bool started; /* offloads and queues set up for the negotiated features */
	bool link_failed;
	bool in_transmit; /* main thread inside the backend's transmit with the lock held */
	uint64_t rx_need; /* bytes of guest buffer one received frame may need, header included */
	uint64_t tx_max; /* largest frame the guest may send, header excluded */
	/* Receive filter (§5.1.6.5.1, .2). */
	bool promisc, allmulti, alluni, uni_overflow, multi_overflow;
	unsigned nr_uni, nr_multi;
	uint8_t uni[NET_MAC_TABLE][6], multi[NET_MAC_TABLE][6];
	struct net_pair *pairs;
	struct iovec rx_iov[NET_RX_IOV];
	struct iovec tx_iov[NET_CHAIN_IOV + 1];
	struct net_chain tx_chain;
	uint8_t ctrl_buf[8192]; /* one control command: MAC tables up to ~680 entries */
	uint8_t *frame; /* push backends: a linear copy of one transmitted frame */
	/* Push backends: received frames waiting for guest buffers, a ring of copies. */
	struct net_pending {
		uint8_t *data;
		size_t len;
	} backlog[NET_RX_BACKLOG];
	unsigned backlog_first, backlog_count;
	struct virtio_net_stats stats;
};

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static bool net_has(const struct virtio_net *net, unsigned bit)
{
	return virtio_device_has_feature(&net->vdev, bit);
}

/* The link's MTU: the backend's (user mode's mtu=), else Ethernet's. */
static unsigned net_mtu(const struct virtio_net *net)
{
	return net->be->mtu ? net->be->mtu : NET_MTU;
}

static unsigned net_ctrl_queue(const struct virtio_net *net)
{
	/* §5.1.2: controlq is 2N with MQ, otherwise 2. */
	return net_has(net, VIRTIO_NET_F_MQ) ? 2 * net->max_pairs : 2;
}

/* Watch (or stop watching) a pair's backend fd: off while the guest has no buffers for it. */
static void net_poll(struct virtio_net *net, unsigned pair, bool on)
{
	struct net_pair *p = &net->pairs[pair];
	if (!p->in_loop || p->polling == on)
		return;
	if (event_loop_modify(net->vm->loop, net->be->fds[pair], on ? EPOLLIN : 0) == 0)
		p->polling = on;
}

/* The backend failed: say so once, take the link down, stop using it. Lock held. */
static void net_backend_failed(struct virtio_net *net, const char *op, int err)
{
	net->stats.backend_errors++;
	if (net->link_failed)
		return;
	net->link_failed = true;
	trace_event(net->vm, TRACE_NET, TRACE_HOST, "%s: link down: %s %s: %s", net->name,
		    net->be->name, op, strerror(err));
	fprintf(stderr, "vmm: %s: %s: %s: %s (link down for the guest)\n", net->name, net->be->name,
		op, strerror(err));
	for (unsigned i = 0; i < net->max_pairs; i++) {
		struct net_pair *p = &net->pairs[i];
		if (p->in_loop) {
			event_loop_remove(net->vm->loop, net->be->fds[i]);
			p->in_loop = p->polling = false;
		}
	}
	put16(net->config + 6, 0); /* status: link down */
	virtio_device_config_changed(&net->vdev);
}

/* Set the backend up for what the driver negotiated; once after DRIVER_OK. Lock held. */
static void net_start(struct virtio_net *net)
{
	if (net->started)
		return;
	net->started = true;
	unsigned off = 0;
	if (net_has(net, VIRTIO_NET_F_GUEST_CSUM)) {
		off |= NET_OFFLOAD_CSUM;
		if (net_has(net, VIRTIO_NET_F_GUEST_TSO4))
			off |= NET_OFFLOAD_TSO4;
		if (net_has(net, VIRTIO_NET_F_GUEST_TSO6))
			off |= NET_OFFLOAD_TSO6;
		if (net_has(net, VIRTIO_NET_F_GUEST_ECN))
			off |= NET_OFFLOAD_TSO_ECN;
		if (net_has(net, VIRTIO_NET_F_GUEST_UFO))
			off |= NET_OFFLOAD_UFO;
	}
	if (net->be->ops->set_offloads && net->be->ops->set_offloads(net->be, off) < 0)
		off = 0; /* the TAP then checksums and segments everything itself */
	bool big_rx = off & (NET_OFFLOAD_TSO4 | NET_OFFLOAD_TSO6 | NET_OFFLOAD_UFO);
	net->rx_need = NET_HDR_LEN + (big_rx ? NET_MAX_GSO_FRAME : NET_MTU + NET_ETH_HLEN + NET_VLAN_HLEN);
	bool big_tx = net_has(net, VIRTIO_NET_F_HOST_TSO4) || net_has(net, VIRTIO_NET_F_HOST_TSO6) ||
		      net_has(net, VIRTIO_NET_F_HOST_UFO);
	net->tx_max = big_tx ? NET_MAX_GSO_FRAME : net_mtu(net) + NET_ETH_HLEN + NET_VLAN_HLEN;
	net->active_pairs = 1;
	if (net->be->ops->set_active_queues)
		net->be->ops->set_active_queues(net->be, 1);
	trace_event(net->vm, TRACE_NET, TRACE_HOST,
		    "%s: started on %s: offloads 0x%x, receive room %llu, largest send %llu", net->name,
		    net->be->name, off, (unsigned long long)net->rx_need,
		    (unsigned long long)net->tx_max);
}

/* ---- Receive ---- */

static bool net_mac_in(const uint8_t (*table)[6], unsigned n, const uint8_t *mac)
{
	for (unsigned i = 0; i < n; i++)
		if (!memcmp(table[i], mac, 6))
			return true;
	return false;
}

/* §5.1.6.5.1/2: does the driver want a frame for this destination? */
static bool net_filter_accepts(const struct virtio_net *net, const uint8_t *dst)
{
	static const uint8_t bcast[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
	if (net->promisc || !memcmp(dst, bcast, 6))
		return true;
	if (dst[0] & 1)
		return net->allmulti || net->multi_overflow ||
		       net_mac_in(net->multi, net->nr_multi, dst);
	return !memcmp(dst, net->mac, 6) || net->alluni || net->uni_overflow ||
	       net_mac_in(net->uni, net->nr_uni, dst);
}

static struct net_chain *net_pool_at(struct net_pair *p, unsigned i)
{
	return &p->pool[(p->pool_first + i) % NET_RX_POOL];
}

/* Pop receive chains until the pool holds `need` bytes (or one chain without MRG_RXBUF).
 * Returns the bytes the pool holds; *full: it cannot grow any more. Unusable chains are
 * returned empty and counted. */
static uint64_t net_rx_fill(struct virtio_net *net, struct net_pair *p, uint64_t need, bool *full)
{
	struct virtq *vq = &net->vdev.queues[2 * p->index].vq;
	bool mrg = net_has(net, VIRTIO_NET_F_MRG_RXBUF);
	uint64_t have = 0;
	unsigned iovs = 0;
	for (unsigned i = 0; i < p->pool_count; i++) {
		have += net_pool_at(p, i)->len;
		iovs += net_pool_at(p, i)->nr;
	}
	for (;;) {
		*full = p->pool_count == NET_RX_POOL || p->pool_count >= vq->size ||
			iovs + NET_CHAIN_IOV > NET_RX_IOV || (!mrg && p->pool_count == 1);
		if (have >= need || *full)
			break;
		struct net_chain *c = net_pool_at(p, p->pool_count);
		struct virtq_chain chain = { .iov = c->iov, .cap = NET_CHAIN_IOV };
		if (virtq_pop(vq, &chain) <= 0)
			break;
		if (chain.nr_out || chain.in_len < NET_HDR_LEN || chain.in_len > UINT32_MAX) {
			/* §5.1.6.3: receive buffers are device-writable and hold a header. */
			net->stats.rx_dropped++;
			virtq_push(vq, chain.head, 0);
			continue;
		}
		c->head = chain.head;
		c->nr = chain.nr_in;
		c->len = chain.in_len;
		have += c->len;
		iovs += c->nr;
		p->pool_count++;
	}
	return have;
}

/* Copy `len` bytes at `offset` of the pooled chains' buffers (in pool order) into dst. */
static void net_pool_read(struct net_pair *p, uint64_t offset, void *dst, size_t len)
{
	uint8_t *out = dst;
	for (unsigned i = 0; i < p->pool_count && len; i++) {
		struct net_chain *c = net_pool_at(p, i);
		for (unsigned j = 0; j < c->nr && len; j++) {
			if (offset >= c->iov[j].iov_len) {
				offset -= c->iov[j].iov_len;
				continue;
			}
			size_t n = c->iov[j].iov_len - offset < len ? c->iov[j].iov_len - offset : len;
			memcpy(out, (uint8_t *)c->iov[j].iov_base + offset, n);
			out += n;
			len -= n;
			offset = 0;
		}
	}
}

static void net_pool_write(struct net_pair *p, uint64_t offset, const void *src, size_t len)
{
	const uint8_t *in = src;
	for (unsigned i = 0; i < p->pool_count && len; i++) {
		struct net_chain *c = net_pool_at(p, i);
		for (unsigned j = 0; j < c->nr && len; j++) {
			if (offset >= c->iov[j].iov_len) {
				offset -= c->iov[j].iov_len;
				continue;
			}
			size_t n = c->iov[j].iov_len - offset < len ? c->iov[j].iov_len - offset : len;
			memcpy((uint8_t *)c->iov[j].iov_base + offset, in, n);
			in += n;
			len -= n;
			offset = 0;
		}
	}
}

/* A frame of `total` bytes (header included) is in the pool's buffers: give the driver the
 * chains it filled, with num_buffers in the first one's header. */
static void net_rx_complete(struct virtio_net *net, struct net_pair *p, uint64_t total)
{
	struct virtq *vq = &net->vdev.queues[2 * p->index].vq;
	uint64_t left = total;
	uint16_t used = 0;
	for (unsigned i = 0; i < p->pool_count && left; i++, used++)
		left -= net_pool_at(p, i)->len < left ? net_pool_at(p, i)->len : left;
	uint8_t nb[2];
	put16(nb, used);
	net_pool_write(p, 10, nb, 2); /* num_buffers (§5.1.6.4) */
	left = total;
	for (uint16_t i = 0; i < used; i++) {
		struct net_chain *c = net_pool_at(p, 0);
		uint32_t n = (uint32_t)(c->len < left ? c->len : left);
		virtq_written(vq, c->iov, c->nr);
		virtq_push(vq, c->head, n);
		left -= n;
		p->pool_first = (p->pool_first + 1) % NET_RX_POOL;
		p->pool_count--;
	}
	net->stats.rx_packets++;
	net->stats.rx_bytes += total - NET_HDR_LEN;
	trace_event(net->vm, TRACE_NET, TRACE_HOST, "%s rx queue %u: %llu bytes in %u buffers",
		    net->name, 2 * p->index, (unsigned long long)(total - NET_HDR_LEN), used);
}

/* No buffers: wait for the driver's next kick on the receive queue (EVENT_IDX: ask for it).
 * Returns true if buffers arrived meanwhile. */
static bool net_rx_wait_for_buffers(struct virtio_net *net, struct net_pair *p)
{
	struct virtq *vq = &net->vdev.queues[2 * p->index].vq;
	if (virtq_enable_notify(vq))
		return true;
	net_poll(net, p->index, false);
	return false;
}

static bool net_ready(const struct virtio_net *net)
{
	return (net->vdev.status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(net->vdev.status & VIRTIO_STATUS_NEEDS_RESET) && !net->link_failed;
}

/* Read frames from a TAP queue straight into the guest's buffers. Lock held. */
static void net_rx_tap(struct virtio_net *net, unsigned pair)
{
	struct net_pair *p = &net->pairs[pair];
	struct virtq *vq = &net->vdev.queues[2 * pair].vq;
	if (!net_ready(net) || !vq->enabled || pair >= net->active_pairs) {
		net_poll(net, pair, false);
		return;
	}
	net_start(net);
	uint16_t used_before = vq->used_idx;
	for (unsigned budget = NET_BATCH; budget; budget--) {
		bool full;
		uint64_t have = net_rx_fill(net, p, net->rx_need, &full);
		if (vq->broken)
			return;
		/* Too little for the largest frame the backend may hand over: wait for the driver
		 * to add buffers, unless it cannot (the pool holds all it can): then take what
		 * there is, and a frame that does not fit is dropped. */
		if (have == 0 || (have < net->rx_need && !full)) {
			if (net_rx_wait_for_buffers(net, p))
				continue;
			break;
		}
		unsigned n = 0;
		for (unsigned i = 0; i < p->pool_count; i++) {
			struct net_chain *c = net_pool_at(p, i);
			memcpy(net->rx_iov + n, c->iov, c->nr * sizeof(struct iovec));
			n += c->nr;
		}
		ssize_t got = readv(net->be->fds[pair], net->rx_iov, (int)n);
		if (got < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			if (errno == EFAULT || errno == EINVAL || errno == EMSGSIZE) {
				net->stats.rx_dropped++; /* one frame the buffers could not take */
				continue;
			}
			net_backend_failed(net, "read", errno);
			return;
		}
		if (got == 0) { /* a TAP never reads empty: the backend went away */
			net_backend_failed(net, "read", EPIPE);
			return;
		}
		if ((uint64_t)got > have || got < NET_HDR_LEN + NET_ETH_HLEN) {
			net->stats.rx_dropped++; /* truncated or runt: the buffers are reused */
			continue;
		}
		uint8_t dst[6] = { 0 };
		net_pool_read(p, NET_HDR_LEN, dst, 6);
		if (!net_filter_accepts(net, dst)) {
			net->stats.rx_filtered++;
			continue;
		}
		net_rx_complete(net, p, (uint64_t)got);
	}
	/* Nothing used (the TAP had nothing, or the pass only took buffers): nothing to signal.
	 * With EVENT_IDX that is the driver's check too, without it every pass would interrupt. */
	if (vq->used_idx != used_before)
		virtio_device_notify_queue(&net->vdev, 2 * pair);
}

/* Push backends: put one frame (no header) into the guest's receive buffers. 1 done; 0 the
 * buffers there are too few for now (notifications are then on: the driver's next kick says
 * when there are more); -1 it can never fit (the pool is as large as it gets), dropped. */
static int net_rx_deliver(struct virtio_net *net, const void *frame, size_t len)
{
	struct net_pair *p = &net->pairs[0];
	struct virtq *vq = &net->vdev.queues[0].vq;
	for (;;) {
		bool full;
		uint64_t have = net_rx_fill(net, p, NET_HDR_LEN + len, &full);
		if (have >= NET_HDR_LEN + len)
			break;
		if (full && have) {
			net->stats.rx_dropped++;
			return -1;
		}
		if (vq->broken || !virtq_enable_notify(vq))
			return 0;
	}
	uint8_t hdr[NET_HDR_LEN] = { 0 };
	/* §5.1.6.4.1: DATA_VALID only for a checksum the device validated itself. */
	if (net_has(net, VIRTIO_NET_F_GUEST_CSUM) && net_csum_l4_valid(frame, len)) {
		hdr[0] = VIRTIO_NET_HDR_F_DATA_VALID;
		net->stats.rx_csum_valid++;
	}
	net_pool_write(p, 0, hdr, sizeof(hdr));
	net_pool_write(p, NET_HDR_LEN, frame, len);
	net_rx_complete(net, p, NET_HDR_LEN + len);
	return 1;
}

static void net_backlog_clear(struct virtio_net *net)
{
	for (; net->backlog_count; net->backlog_count--) {
		free(net->backlog[net->backlog_first].data);
		net->backlog_first = (net->backlog_first + 1) % NET_RX_BACKLOG;
	}
	net->backlog_first = 0;
}

/* Deliver waiting frames, oldest first, while the guest has buffers for them. Lock held. */
static void net_backlog_flush(struct virtio_net *net)
{
	bool delivered = false;
	while (net->backlog_count && net_ready(net)) {
		struct net_pending *f = &net->backlog[net->backlog_first];
		int r = net_rx_deliver(net, f->data, f->len);
		if (r == 0)
			break;
		free(f->data);
		net->backlog_first = (net->backlog_first + 1) % NET_RX_BACKLOG;
		net->backlog_count--;
		delivered |= r > 0;
	}
	if (delivered)
		virtio_device_notify_queue(&net->vdev, 0);
}

/* Keep a copy of a frame the guest has no room for yet; drop it if the backlog is full. */
static void net_backlog_add(struct virtio_net *net, const void *frame, size_t len)
{
	uint8_t *copy = net->backlog_count < NET_RX_BACKLOG ? malloc(len) : NULL;
	if (!copy) {
		net->stats.rx_dropped++; /* the backend's TCP retransmits */
		return;
	}
	memcpy(copy, frame, len);
	struct net_pending *f = &net->backlog[(net->backlog_first + net->backlog_count) % NET_RX_BACKLOG];
	*f = (struct net_pending){ .data = copy, .len = len };
	net->backlog_count++;
}

/* Push backends: one frame (no header) from the backend. Main thread, lock not held unless
 * called from within our own transmit. */
static void net_receive_frame(void *opaque, const void *frame, size_t len)
{
	struct virtio_net *net = opaque;
	bool lock = !net->in_transmit;
	if (lock)
		pthread_mutex_lock(&net->vdev.lock);
	struct virtq *vq = &net->vdev.queues[0].vq;
	if (!net_ready(net) || !vq->enabled) {
		net->stats.rx_dropped++;
	} else if (len < NET_ETH_HLEN || len > NET_MAX_GSO_FRAME) {
		net->stats.rx_dropped++;
	} else if (!net_filter_accepts(net, frame)) {
		net->stats.rx_filtered++;
	} else {
		net_start(net);
		net_backlog_flush(net);
		int r = net->backlog_count ? 0 : net_rx_deliver(net, frame, len);
		if (r > 0)
			virtio_device_notify_queue(&net->vdev, 0);
		else if (r == 0)
			net_backlog_add(net, frame, len);
	}
	if (lock)
		pthread_mutex_unlock(&net->vdev.lock);
}

static void net_on_readable(void *opaque, int fd, uint32_t events)
{
	struct net_pair *p = opaque;
	struct virtio_net *net = p->net;
	(void)fd;
	(void)events;
	pthread_mutex_lock(&net->vdev.lock);
	net_rx_tap(net, p->index);
	if (net->vdev.queues[2 * p->index].vq.broken)
		virtio_device_set_needs_reset(&net->vdev);
	pthread_mutex_unlock(&net->vdev.lock);
}

/* ---- Transmit ---- */

/* Is this header one the negotiated features allow for a frame of `len` bytes? (§5.1.6.2.1) */
static bool net_tx_header_ok(const struct virtio_net *net, const uint8_t *h, uint64_t len)
{
	uint8_t flags = h[0], gso = h[1];
	uint16_t hdr_len = get16(h + 2), gso_size = get16(h + 4);
	uint16_t csum_start = get16(h + 6), csum_offset = get16(h + 8);
	if (flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM)
		return false;
	if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) {
		if (!net_has(net, VIRTIO_NET_F_CSUM) ||
		    (uint64_t)csum_start + csum_offset + 2 > len)
			return false;
	}
	if ((gso & VIRTIO_NET_HDR_GSO_ECN) && !net_has(net, VIRTIO_NET_F_HOST_ECN))
		return false;
	switch (gso & ~VIRTIO_NET_HDR_GSO_ECN) {
	case VIRTIO_NET_HDR_GSO_NONE: return !(gso & VIRTIO_NET_HDR_GSO_ECN);
	case VIRTIO_NET_HDR_GSO_TCPV4: if (!net_has(net, VIRTIO_NET_F_HOST_TSO4)) return false; break;
	case VIRTIO_NET_HDR_GSO_TCPV6: if (!net_has(net, VIRTIO_NET_F_HOST_TSO6)) return false; break;
	case VIRTIO_NET_HDR_GSO_UDP: if (!net_has(net, VIRTIO_NET_F_HOST_UFO)) return false; break;
	default: return false;
	}
	/* Segmentation needs a checksum to fill in, a segment size and headers inside the frame. */
	return (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && gso_size && hdr_len <= len;
}

/* One transmit chain: check it and send it. Lock held. */
static void net_tx_one(struct virtio_net *net, unsigned pair, const struct virtq_chain *c)
{
	if (c->nr_in || c->out_len < NET_HDR_LEN + NET_ETH_HLEN ||
	    c->out_len - NET_HDR_LEN > net->tx_max) {
		net->stats.tx_dropped++; /* writable buffers, too short, or larger than negotiated */
		trace_event(net->vm, TRACE_NET, TRACE_HOST,
			    "%s tx queue %u: dropped a chain of %llu bytes (%s)", net->name,
			    2 * pair + 1, (unsigned long long)c->out_len,
			    c->nr_in ? "writable buffers" : "too short or too long");
		return;
	}
	uint64_t len = c->out_len - NET_HDR_LEN;
	uint8_t hdr[NET_HDR_LEN];
	/* One copy of the header: the guest may change its own afterwards, not what we checked. */
	virtq_chain_read(c, 0, hdr, NET_HDR_LEN);
	if (!net_tx_header_ok(net, hdr, len)) {
		net->stats.tx_dropped++;
		trace_event(net->vm, TRACE_NET, TRACE_HOST, "%s tx queue %u: dropped: bad header",
			    net->name, 2 * pair + 1);
		return;
	}
	put16(hdr + 10, 0); /* num_buffers means nothing on transmit */
	/* The payload: the guest's buffers after the header, untouched. */
	unsigned n = 0;
	uint64_t skip = NET_HDR_LEN;
	if (net->be->vnet_hdr)
		net->tx_iov[n++] = (struct iovec){ hdr, NET_HDR_LEN };
	for (unsigned i = 0; i < c->nr_out; i++) {
		size_t l = c->iov[i].iov_len;
		if (skip >= l) {
			skip -= l;
			continue;
		}
		net->tx_iov[n++] = (struct iovec){ (uint8_t *)c->iov[i].iov_base + skip, l - skip };
		skip = 0;
	}
	ssize_t sent;
	net->in_transmit = true;
	if (net->be->vnet_hdr) {
		sent = net->be->ops->transmit(net->be, pair, net->tx_iov, n);
	} else {
		/* Push backends take a linear frame (and no offloads were offered to need one). */
		uint64_t done = 0;
		for (unsigned i = 0; i < n; i++) {
			memcpy(net->frame + done, net->tx_iov[i].iov_base, net->tx_iov[i].iov_len);
			done += net->tx_iov[i].iov_len;
		}
		/* The device's part of VIRTIO_NET_F_CSUM: the checksum the guest left to it. */
		if ((hdr[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) &&
		    net_csum_complete(net->frame, done, get16(hdr + 6), get16(hdr + 8)) == 0)
			net->stats.tx_csum_done++;
		struct iovec one = { net->frame, done };
		sent = net->be->ops->transmit(net->be, pair, &one, 1);
	}
	net->in_transmit = false;
	if (sent >= 0) {
		net->stats.tx_packets++;
		net->stats.tx_bytes += len;
		trace_event(net->vm, TRACE_NET, TRACE_HOST, "%s tx queue %u: %llu bytes", net->name,
			    2 * pair + 1, (unsigned long long)len);
	} else if (sent == -EAGAIN || sent == -ENOBUFS || sent == -EINVAL || sent == -EFAULT ||
		   sent == -EMSGSIZE || sent == -EINTR) {
		net->stats.tx_dropped++; /* host queue full, or the host kernel refused the header */
	} else {
		net_backend_failed(net, "write", (int)-sent);
	}
}

static void net_tx(struct virtio_net *net, unsigned pair)
{
	unsigned q = 2 * pair + 1;
	struct virtq *vq = &net->vdev.queues[q].vq;
	struct virtq_chain chain = { .iov = net->tx_chain.iov, .cap = NET_CHAIN_IOV };
	unsigned budget = NET_BATCH;
	uint16_t used_before = vq->used_idx;
	int r;
	net_start(net);
	do {
		while (budget && (r = virtq_pop(vq, &chain)) > 0) {
			if (net->link_failed || pair >= net->active_pairs)
				net->stats.tx_dropped++;
			else
				net_tx_one(net, pair, &chain);
			virtq_push(vq, chain.head, 0);
			budget--;
		}
		if (!budget) {
			/* More may be waiting: come back after the other fds had their turn. */
			uint64_t one = 1;
			if (write(net->vdev.queues[q].kick_fd, &one, sizeof(one)) < 0) {
				/* a wake-up is pending anyway */
			}
			break;
		}
	} while (r == 0 && virtq_enable_notify(vq));
	if (net->be->ops->flush) {
		net->in_transmit = true; /* frames it hands back arrive with the lock held */
		net->be->ops->flush(net->be);
		net->in_transmit = false;
	}
	if (vq->used_idx != used_before) { /* as in net_rx_tap(): only when chains were used */
		virtio_device_notify_queue(&net->vdev, q);
		event_loop_expect(net->vm->loop); /* a reply may follow: poll for it */
	}
}

/* ---- Control queue (§5.1.6.5) ---- */

static uint8_t net_ctrl_mac_table(struct virtio_net *net, const uint8_t *d, uint64_t len)
{
	/* Two tables: le32 entries, then entries × 6 bytes; unicast first, then multicast. */
	uint64_t off = 0;
	uint32_t counts[2];
	uint64_t starts[2];
	for (unsigned t = 0; t < 2; t++) {
		if (off + 4 > len)
			return VIRTIO_NET_ERR;
		memcpy(&counts[t], d + off, 4);
		starts[t] = off + 4;
		if ((uint64_t)counts[t] * 6 > len - off - 4)
			return VIRTIO_NET_ERR;
		off += 4 + (uint64_t)counts[t] * 6;
	}
	if (off != len)
		return VIRTIO_NET_ERR;
	net->uni_overflow = counts[0] > NET_MAC_TABLE;
	net->nr_uni = net->uni_overflow ? 0 : counts[0];
	memcpy(net->uni, d + starts[0], (size_t)net->nr_uni * 6);
	net->multi_overflow = counts[1] > NET_MAC_TABLE;
	net->nr_multi = net->multi_overflow ? 0 : counts[1];
	memcpy(net->multi, d + starts[1], (size_t)net->nr_multi * 6);
	return VIRTIO_NET_OK;
}

static uint8_t net_ctrl_command(struct virtio_net *net, uint8_t class, uint8_t cmd,
				const uint8_t *d, uint64_t len)
{
	switch (class) {
	case VIRTIO_NET_CTRL_RX: {
		if (!net_has(net, VIRTIO_NET_F_CTRL_RX) || len != 1)
			return VIRTIO_NET_ERR;
		bool on = d[0] != 0;
		switch (cmd) {
		case VIRTIO_NET_CTRL_RX_PROMISC: net->promisc = on; return VIRTIO_NET_OK;
		case VIRTIO_NET_CTRL_RX_ALLMULTI: net->allmulti = on; return VIRTIO_NET_OK;
		case VIRTIO_NET_CTRL_RX_ALLUNI: net->alluni = on; return VIRTIO_NET_OK;
		default: return VIRTIO_NET_ERR; /* NOMULTI, NOUNI, NOBCAST: CTRL_RX_EXTRA not offered */
		}
	}
	case VIRTIO_NET_CTRL_MAC:
		if (cmd == VIRTIO_NET_CTRL_MAC_TABLE_SET && net_has(net, VIRTIO_NET_F_CTRL_RX))
			return net_ctrl_mac_table(net, d, len);
		if (cmd == VIRTIO_NET_CTRL_MAC_ADDR_SET && net_has(net, VIRTIO_NET_F_CTRL_MAC_ADDR) &&
		    len == 6 && !(d[0] & 1)) {
			memcpy(net->mac, d, 6);
			memcpy(net->config, d, 6);
			return VIRTIO_NET_OK;
		}
		return VIRTIO_NET_ERR;
	case VIRTIO_NET_CTRL_MQ: {
		if (cmd != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET || !net_has(net, VIRTIO_NET_F_MQ) || len != 2)
			return VIRTIO_NET_ERR;
		uint16_t pairs = get16(d);
		if (pairs < 1 || pairs > net->max_pairs)
			return VIRTIO_NET_ERR;
		if (net->be->ops->set_active_queues &&
		    net->be->ops->set_active_queues(net->be, pairs) < 0)
			return VIRTIO_NET_ERR;
		unsigned old = net->active_pairs;
		net->active_pairs = pairs;
		for (unsigned i = old; i < pairs; i++)
			net_poll(net, i, true);
		return VIRTIO_NET_OK;
	}
	default:
		return VIRTIO_NET_ERR;
	}
}

static void net_ctrl(struct virtio_net *net, unsigned q)
{
	struct virtq *vq = &net->vdev.queues[q].vq;
	struct virtq_chain chain = { .iov = net->tx_chain.iov, .cap = NET_CHAIN_IOV };
	uint8_t *buf = net->ctrl_buf;
	int r;
	do {
		while ((r = virtq_pop(vq, &chain)) > 0) {
			uint8_t ack = VIRTIO_NET_ERR;
			if (chain.in_len < 1) {
				net->stats.ctrl_err++; /* nowhere to answer: drop */
				virtq_push(vq, chain.head, 0);
				continue;
			}
			if (chain.out_len >= 2 && chain.out_len <= sizeof(net->ctrl_buf)) {
				virtq_chain_read(&chain, 0, buf, chain.out_len);
				ack = net_ctrl_command(net, buf[0], buf[1], buf + 2, chain.out_len - 2);
			}
			trace_event(net->vm, TRACE_NET, TRACE_HOST, "%s ctrl class %u command %u: %s",
				    net->name, chain.out_len >= 2 ? buf[0] : 0,
				    chain.out_len >= 2 ? buf[1] : 0, ack == VIRTIO_NET_OK ? "ok" : "error");
			if (ack == VIRTIO_NET_OK)
				net->stats.ctrl_ok++;
			else
				net->stats.ctrl_err++;
			virtq_chain_write(&chain, 0, &ack, 1);
			virtq_push(vq, chain.head, 1);
		}
	} while (r == 0 && virtq_enable_notify(vq));
	virtio_device_notify_queue(&net->vdev, q);
}

/* ---- Transport callbacks ---- */

static void net_queue_notify(struct virtio_device *vdev, unsigned q)
{
	struct virtio_net *net = vdev->opaque;
	net_start(net);
	if (net_has(net, VIRTIO_NET_F_CTRL_VQ) && q == net_ctrl_queue(net)) {
		net_ctrl(net, q);
		return;
	}
	unsigned pair = q / 2;
	if (pair >= net->max_pairs || (!net_has(net, VIRTIO_NET_F_MQ) && pair > 0))
		return;
	if (q & 1) {
		net_tx(net, pair);
	} else if (net->be->fds[pair] >= 0) {
		/* New receive buffers: watch the TAP again and take what is waiting. */
		if (!net->link_failed && pair < net->active_pairs) {
			net_poll(net, pair, true);
			net_rx_tap(net, pair);
		}
	} else if (pair == 0) {
		/* New receive buffers for a push backend's waiting frames. */
		net_backlog_flush(net);
	}
}

static void net_reset(struct virtio_device *vdev)
{
	struct virtio_net *net = vdev->opaque;
	for (unsigned i = 0; i < net->max_pairs; i++) {
		net->pairs[i].pool_first = net->pairs[i].pool_count = 0;
		net_poll(net, i, false);
	}
	net_backlog_clear(net); /* frames for the driver that is gone */
	net->started = false;
	net->active_pairs = 1;
	net->promisc = true; /* until the driver sets a filter */
	net->allmulti = net->alluni = net->uni_overflow = net->multi_overflow = false;
	net->nr_uni = net->nr_multi = 0;
	memcpy(net->config, net->mac, 6);
}

/* --stats: what the guest sent and got, per frame, with the transport's kicks and interrupts
 * above it (exits and interrupts per packet). Lock held by the caller. */
static void net_format_stats(struct virtio_device *vdev, FILE *out)
{
	struct virtio_net *net = vdev->opaque;
	const struct virtio_net_stats *s = &net->stats;
	fprintf(out,
		"    %s, mtu %u, link %s: tx %llu frames (%llu bytes, %llu dropped), rx %llu "
		"frames (%llu bytes, %llu dropped, %llu filtered), control ok %llu, errors %llu, "
		"backend errors %llu\n",
		net->be->name, net_mtu(net), net->link_failed ? "down" : "up",
		(unsigned long long)s->tx_packets, (unsigned long long)s->tx_bytes,
		(unsigned long long)s->tx_dropped, (unsigned long long)s->rx_packets,
		(unsigned long long)s->rx_bytes, (unsigned long long)s->rx_dropped,
		(unsigned long long)s->rx_filtered, (unsigned long long)s->ctrl_ok,
		(unsigned long long)s->ctrl_err, (unsigned long long)s->backend_errors);
	if (net->be->offloads & NET_OFFLOAD_CSUM && !net->be->vnet_hdr)
		fprintf(out, "    checksums completed for the guest %llu, validated for it %llu\n",
			(unsigned long long)s->tx_csum_done, (unsigned long long)s->rx_csum_valid);
}

void virtio_net_format_stats(struct virtio_net *net, FILE *out)
{
	virtio_device_format_stats(&net->vdev, out);
}

static const struct virtio_device_ops net_ops = {
	.queue_notify = net_queue_notify,
	.reset = net_reset,
	.format_stats = net_format_stats,
};

void virtio_net_destroy(struct virtio_net *net)
{
	if (!net)
		return;
	if (net->pairs)
		for (unsigned i = 0; i < net->max_pairs; i++)
			if (net->pairs[i].in_loop)
				event_loop_remove(net->vm->loop, net->be->fds[i]);
	virtio_device_destroy(&net->vdev);
	if (net->be)
		net->be->ops->destroy(net->be);
	net_backlog_clear(net);
	free(net->pairs);
	free(net->frame);
	free(net);
}

void virtio_net_get_stats(struct virtio_net *net, struct virtio_net_stats *out)
{
	pthread_mutex_lock(&net->vdev.lock);
	*out = net->stats;
	out->link_up = !net->link_failed;
	pthread_mutex_unlock(&net->vdev.lock);
}

struct virtio_net *virtio_net_create_on(struct vm *vm, struct pci_host *host,
					const struct net_config *nc, unsigned index,
					struct net_backend *be)
{
	struct virtio_net *net = calloc(1, sizeof(*net));
	if (!net) {
		be->ops->destroy(be);
		return NULL;
	}
	net->vm = vm;
	net->be = be;
	net->max_pairs = be->nr_queues;
	snprintf(net->name, sizeof(net->name), "virtio-net%u", index);
	if (nc->has_mac) {
		memcpy(net->mac, nc->mac, 6);
	} else {
		char vm_name[72];
		config_vm_name(&vm->cfg, vm_name, sizeof(vm_name));
		net_default_mac(vm_name, index, net->mac);
	}
	net->pairs = calloc(net->max_pairs, sizeof(*net->pairs));
	net->frame = be->vnet_hdr ? NULL : malloc(NET_MAX_GSO_FRAME);
	if (!net->pairs || (!be->vnet_hdr && !net->frame))
		goto fail;
	/* Configuration space (§5.1.4): mac, status, max_virtqueue_pairs, mtu. */
	memcpy(net->config, net->mac, 6);
	put16(net->config + 6, VIRTIO_NET_S_LINK_UP);
	put16(net->config + 8, (uint16_t)net->max_pairs);
	put16(net->config + 10, (uint16_t)net_mtu(net));
	uint64_t f = (1ull << VIRTIO_NET_F_MAC) | (1ull << VIRTIO_NET_F_MTU) |
		     (1ull << VIRTIO_NET_F_STATUS) | (1ull << VIRTIO_NET_F_MRG_RXBUF) |
		     (1ull << VIRTIO_NET_F_CTRL_VQ) | (1ull << VIRTIO_NET_F_CTRL_RX) |
		     (1ull << VIRTIO_NET_F_CTRL_MAC_ADDR);
	if (net->max_pairs > 1)
		f |= 1ull << VIRTIO_NET_F_MQ;
	if (be->offloads & NET_OFFLOAD_CSUM)
		f |= (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_GUEST_CSUM);
	if (be->vnet_hdr && (be->offloads & NET_OFFLOAD_CSUM)) {
		if (be->offloads & NET_OFFLOAD_TSO4)
			f |= (1ull << VIRTIO_NET_F_HOST_TSO4) | (1ull << VIRTIO_NET_F_GUEST_TSO4);
		if (be->offloads & NET_OFFLOAD_TSO6)
			f |= (1ull << VIRTIO_NET_F_HOST_TSO6) | (1ull << VIRTIO_NET_F_GUEST_TSO6);
		if (be->offloads & NET_OFFLOAD_TSO_ECN)
			f |= (1ull << VIRTIO_NET_F_HOST_ECN) | (1ull << VIRTIO_NET_F_GUEST_ECN);
		if (be->offloads & NET_OFFLOAD_UFO)
			f |= (1ull << VIRTIO_NET_F_HOST_UFO) | (1ull << VIRTIO_NET_F_GUEST_UFO);
	}
	net->vdev = (struct virtio_device){ .name = net->name, .device_type = 1,
					    .class_code = 0x020000, .device_features = f,
					    .nr_queues = 2 * net->max_pairs + 1,
					    .queue_max_size = NET_QUEUE_SIZE, .config = net->config,
					    .config_size = NET_CONFIG_SIZE, .ops = &net_ops,
					    .opaque = net };
	net_reset(&net->vdev);
	int ret = virtio_device_init(&net->vdev, vm, host);
	if (ret < 0) {
		fprintf(stderr, "vmm: %s: %s\n", net->name, strerror(-ret));
		goto fail;
	}
	for (unsigned i = 0; i < net->max_pairs; i++) {
		struct net_pair *p = &net->pairs[i];
		p->net = net;
		p->index = i;
		if (be->fds[i] < 0)
			continue;
		ret = event_loop_add(vm->loop, be->fds[i], 0, net_on_readable, p);
		if (ret < 0) {
			fprintf(stderr, "vmm: %s: event loop: %s\n", net->name, strerror(-ret));
			goto fail;
		}
		p->in_loop = true;
	}
	be->receive = net_receive_frame;
	be->receive_opaque = net;
	return net;
fail:
	virtio_net_destroy(net);
	return NULL;
}

struct virtio_net *virtio_net_create(struct vm *vm, struct pci_host *host,
				     const struct net_config *nc, unsigned index)
{
	char err[512], vm_name[72], tap_name[NET_IFNAME_SIZE];
	struct net_backend *be;
	config_vm_name(&vm->cfg, vm_name, sizeof(vm_name));
	if (nc->kind == NET_TAP) {
		net_tap_default_name(vm_name, index, tap_name);
		be = net_tap_open(nc, tap_name, vm->cfg.keep, err, sizeof(err));
	} else {
		be = net_user_open(nc, vm->loop, err, sizeof(err));
	}
	if (!be) {
		fprintf(stderr, "vmm: %s\n", err);
		return NULL;
	}
	return virtio_net_create_on(vm, host, nc, index, be);
}
