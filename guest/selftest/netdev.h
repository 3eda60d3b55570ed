/*
 * A virtio-net driver built for measuring the device, not for generality (selftest.net=1):
 * receive queue 0 and transmit queue 1, 256 entries each, no interrupts at all (both queues'
 * MSI-X vectors are VIRTIO_MSI_NO_VECTOR: the driver polls the used rings), EVENT_IDX so it
 * kicks only when the device asked for it, every receive buffer posted up front and re-posted in
 * batches, transmit descriptors pointing at frames built once. One buffer per frame (no
 * MRG_RXBUF, no offloads): each buffer holds the 12-byte virtio_net_hdr_v1 and a whole frame.
 */
#ifndef SELFTEST_NETDEV_H
#define SELFTEST_NETDEV_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio.h"

#define VIRTIO_ID_NET 1
#define NETDEV_HDR 12 /* struct virtio_net_hdr_v1 (virtio 1.2 §5.1.6) */
#define NETDEV_FRAME_MAX 1514 /* Ethernet header + 1500-byte MTU */
#define NETDEV_SMALL 128 /* per-slot buffer for small frames (ARP, ICMP, control) */

struct netdev_ring {
	struct virtq_rings *rings;
	uint16_t size;
	uint16_t avail_idx; /* entries we have made available */
	uint16_t published; /* avail->idx as last written */
	uint16_t used_seen; /* used entries consumed */
	uint64_t notify; /* notify address of this queue */
	uint16_t index;
	uint64_t kicks;
};

struct netdev {
	struct virtio_dev *dev;
	bool event_idx;
	uint8_t mac[6];
	struct netdev_ring rx, tx;
};

/* Reset, negotiate VERSION_1 (+ EVENT_IDX, MAC when offered), both queues without vectors,
 * DRIVER_OK, every receive buffer posted. false and err on any refusal. */
bool netdev_start(struct netdev *n, struct virtio_dev *d, char *err, unsigned err_size);

/* Calls handle(frame, len, arg) for every received frame (virtio header stripped), re-posts
 * the buffers (one kick at most). Returns how many frames there were. */
unsigned netdev_poll(struct netdev *n,
		     void (*handle)(const uint8_t *frame, unsigned len, void *arg), void *arg);

/* A small transmit buffer for the next slot (header zeroed, frame to be written after it), or
 * 0 if the ring is full of frames the device has not taken yet. */
uint8_t *netdev_tx_small(struct netdev *n);
/* Queue the small buffer just returned, holding a frame of len bytes. */
void netdev_tx_commit_small(struct netdev *n, unsigned len);
/* Queue the prepared frame at buf (header included, total bytes), as often as there is room,
 * at most max times. Returns how many were queued. */
unsigned netdev_tx_bulk(struct netdev *n, const void *buf, unsigned total, unsigned max);
/* Make queued frames available to the device and kick it if it wants a kick. */
void netdev_tx_flush(struct netdev *n);
/* Transmit entries the device has not returned yet. */
unsigned netdev_tx_pending(struct netdev *n);

#endif
