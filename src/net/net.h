/* Network backends: where a virtio-net device's frames go on the host.
 *
 * A TAP backend (tap.c) has one fd per queue pair; frames carry the 12-byte virtio-net header
 * (IFF_VNET_HDR) so checksum and segmentation offloads pass through, and the device reads and
 * writes them with readv/writev straight from/into guest buffers. The user-mode backend
 * (slirp.c) has no fd: it takes whole frames without a header and pushes received frames
 * through the receive callback. Backends run on the main thread only. */
#ifndef VMM_NET_H
#define VMM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "config.h"

struct event_loop;
struct net_backend;

/* TUNSETOFFLOAD flags (linux/if_tun.h): what the receiver of TAP frames can take. */
#define NET_OFFLOAD_CSUM 0x01
#define NET_OFFLOAD_TSO4 0x02
#define NET_OFFLOAD_TSO6 0x04
#define NET_OFFLOAD_TSO_ECN 0x08
#define NET_OFFLOAD_UFO 0x10

struct net_backend_ops {
	/* One frame (header first when vnet_hdr). Bytes sent, or a negative errno. */
	ssize_t (*transmit)(struct net_backend *be, unsigned queue, const struct iovec *iov,
			    unsigned cnt);
	/* After a batch of transmits (one kick's worth): catch up on what they changed. User mode
	 * re-syncs libslirp's sockets and timers with the event loop here, once per batch instead
	 * of once per frame. Optional. */
	void (*flush)(struct net_backend *be);
	/* Which offloads the device's reader accepts (NET_OFFLOAD_*). 0 or a negative errno. */
	int (*set_offloads)(struct net_backend *be, unsigned flags);
	/* Only queues [0, active) carry traffic (multiqueue TAP: detach the others). */
	int (*set_active_queues)(struct net_backend *be, unsigned active);
	void (*destroy)(struct net_backend *be);
};

struct net_backend {
	const struct net_backend_ops *ops;
	char name[40]; /* "tap vmm-1234-0", "user" */
	unsigned nr_queues;
	int fds[CONFIG_MAX_NET_QUEUES]; /* readable frames per queue; -1 for push backends */
	bool vnet_hdr; /* frames carry struct virtio_net_hdr_v1 (12 bytes) */
	/* NET_OFFLOAD_* this backend can turn on. A push backend (no vnet_hdr) may only name
	 * NET_OFFLOAD_CSUM: the device then completes and validates checksums itself (csum.c). */
	unsigned offloads;
	unsigned mtu; /* the link's MTU the guest is told (VIRTIO_NET_F_MTU); 0: 1500 */
	/* Push backends: the device's receive function, set by the device. */
	void (*receive)(void *opaque, const void *frame, size_t len);
	void *receive_opaque;
};

/* tap.c: open the TAP of nc, or create it as nc->ifname or, without one, `default_name`.
 * NULL after writing one line "what: why (fix)" into err. */
struct net_backend *net_tap_open(const struct net_config *nc, const char *default_name, bool keep,
				 char *err, size_t err_len);
/* slirp.c: user-mode networking, driven by loop. NULL with one line in err. */
struct net_backend *net_user_open(const struct net_config *nc, struct event_loop *loop,
				  char *err, size_t err_len);

/* csum.c: Internet checksums (RFC 1071). */
/* Add the big-endian 16-bit words of p (an odd last byte padded with zero) to sum. */
uint64_t net_csum_add(uint64_t sum, const uint8_t *p, size_t len);
/* Fold a sum's carries into 16 bits (not complemented). */
uint16_t net_csum_fold(uint64_t sum);
/* Complete a partial checksum (virtio's NEEDS_CSUM): the complement of the sum from `start` to
 * the end of the frame, stored at start + offset. -1 when that does not fit in len. */
int net_csum_complete(uint8_t *frame, size_t len, size_t start, size_t offset);
/* Whether an Ethernet frame holds a whole IPv4/IPv6 TCP or UDP datagram whose checksum is
 * right (pseudo-header included). false for anything else, or when it is wrong. */
bool net_csum_l4_valid(const uint8_t *frame, size_t len);

/* net_config.c */
int net_parse_mac(const char *text, size_t len, uint8_t mac[6]);
int net_parse_hostfwd(const char *text, size_t len, struct net_hostfwd *fwd);
/* A stable, locally administered unicast MAC from the VM's name and the NIC's index. */
void net_default_mac(const char *vm_name, unsigned index, uint8_t mac[6]);
/* The TAP the monitor creates for NIC `index` of VM `vm_name`: "NAME-INDEX", or, when that is
 * longer than an interface name may be, the name's start, 4 hex digits of its hash, "-INDEX". */
#define NET_IFNAME_SIZE 16 /* IFNAMSIZ */
void net_tap_default_name(const char *vm_name, unsigned index, char out[NET_IFNAME_SIZE]);

#endif
