/* virtio-net (virtio 1.2 §5.1) on a network backend (src/net/: TAP or user-mode). */
#ifndef VMM_VIRTIO_NET_H
#define VMM_VIRTIO_NET_H

#include <stdint.h>
#include <stdio.h>

#include "config.h"

struct vm;
struct pci_host;
struct virtio_net;
struct net_backend;

struct virtio_net_stats {
	uint64_t tx_packets, tx_bytes, tx_dropped; /* dropped: short, oversized, bad header */
	uint64_t rx_packets, rx_bytes, rx_dropped; /* dropped: no buffers, too large, bad chain */
	uint64_t rx_filtered; /* not for our MAC filter */
	/* Push backends (user mode): partial checksums completed on transmit, received frames
	 * whose checksum was validated for the driver (DATA_VALID). */
	uint64_t tx_csum_done, rx_csum_valid;
	uint64_t ctrl_ok, ctrl_err;
	uint64_t backend_errors;
	bool link_up;
};

/* Open the backend of nc and put the device on the PCI bus. NULL after printing one line
 * `vmm: --net ...: why (fix)`. Main thread. */
struct virtio_net *virtio_net_create(struct vm *vm, struct pci_host *host,
				     const struct net_config *nc, unsigned index);
/* The same on a backend already opened (unit tests); takes ownership of be. */
struct virtio_net *virtio_net_create_on(struct vm *vm, struct pci_host *host,
					const struct net_config *nc, unsigned index,
					struct net_backend *be);
/* After the vCPUs stopped; closes the backend (a TAP it created goes away unless -k). */
void virtio_net_destroy(struct virtio_net *net);
void virtio_net_get_stats(struct virtio_net *net, struct virtio_net_stats *out);
void virtio_net_format_stats(struct virtio_net *net, FILE *out); /* --stats (any thread) */

#endif
