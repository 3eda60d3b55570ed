/* Split virtqueues (virtio 1.2 §2.7), device side. Everything in the rings is written by the
 * guest and is treated as hostile: every index, length, address and chain is checked, and a
 * queue that breaks the rules is marked broken (the transport then sets NEEDS_RESET).
 *
 * Not thread-safe: the owner serialises calls (the virtio device lock). */
#ifndef VMM_VIRTQ_H
#define VMM_VIRTQ_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "memory.h"

#define VIRTQ_MAX_SIZE 32768

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq {
	const struct guest_memory *mem;
	const char *name; /* for the one log line when it breaks */
	uint16_t size;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	bool event_idx; /* VIRTIO_RING_F_EVENT_IDX negotiated */
	bool indirect; /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
	bool enabled, broken;
	/* Host views of the rings, valid while enabled. */
	struct virtq_desc *desc;
	uint16_t *avail; /* flags, idx, ring[size], used_event */
	uint8_t *used; /* flags, idx, {id, len}[size], avail_event */
	uint16_t last_avail; /* next avail entry to take */
	uint16_t used_idx; /* our copy of used->idx */
	uint16_t signalled_used; /* used_idx at the last interrupt */
	bool signalled_valid;
	uint64_t chains, errors; /* stats */
};

/* One chain, mapped into host memory: readable buffers first, then writable ones. */
struct virtq_chain {
	uint16_t head;
	unsigned nr_out, nr_in; /* readable (driver → device), writable (device → driver) */
	uint64_t out_len, in_len;
	unsigned cap; /* entries in iov */
	struct iovec *iov; /* [0, nr_out) readable, [nr_out, nr_out + nr_in) writable */
	const struct guest_memory *mem; /* set by virtq_pop(), for virtq_chain_write() */
};

void virtq_init(struct virtq *vq, const struct guest_memory *mem, const char *name);
/* Check size (a power of two ≤ max) and ring addresses (aligned, entirely in RAM) and start the
 * queue. 0, or -EINVAL (the queue stays disabled). */
int virtq_enable(struct virtq *vq, uint16_t max_size);
/* Back to the reset state; no pointer into guest memory survives. */
void virtq_reset(struct virtq *vq);

/* Take the next available chain. 1: a chain in *chain; 0: nothing available; -EIO: the ring or
 * the chain is malformed (vq->broken is set and one line logged); -ENOBUFS: the chain needs more
 * than chain->cap buffers (vq->broken is set too: the driver ignored the advertised limits). */
int virtq_pop(struct virtq *vq, struct virtq_chain *chain);
/* Return a chain to the driver with `written` bytes written into its writable buffers. */
void virtq_push(struct virtq *vq, uint16_t head, uint32_t written);
/* After pushes: does the driver want an interrupt (EVENT_IDX / NO_INTERRUPT)? */
bool virtq_should_notify(struct virtq *vq);
/* Done with the queue for now: with EVENT_IDX publish avail_event; returns true if more chains
 * arrived meanwhile (the caller processes again instead of waiting for a kick). */
bool virtq_enable_notify(struct virtq *vq);
/* Mark broken with one log line (devices call this for bad request layouts). */
void virtq_fail(struct virtq *vq, const char *why);
/* The device wrote into these buffers of guest RAM (before it pushes their chain): code the
 * software CPU decoded there is stale (memory_written()). virtq_chain_write() does it itself. */
void virtq_written(const struct virtq *vq, const struct iovec *iov, unsigned n);

/* Copy helpers over a chain's readable / writable buffers; return bytes copied. */
uint64_t virtq_chain_read(const struct virtq_chain *c, uint64_t offset, void *dst, uint64_t len);
uint64_t virtq_chain_write(const struct virtq_chain *c, uint64_t offset, const void *src,
			   uint64_t len);

#endif
