/* virtio-blk: a raw image file or block device as a virtio block device (virtio 1.2 §5.2). */
#ifndef VMM_VIRTIO_BLK_H
#define VMM_VIRTIO_BLK_H

#include <stdio.h>

#include "config.h"

struct vm;
struct pci_host;
struct virtio_blk;

/* Open, check and lock the image and put the device on the PCI bus. NULL after printing one
 * line `vmm: disk FILE: why (fix)`. Main thread. */
struct virtio_blk *virtio_blk_create(struct vm *vm, struct pci_host *host,
				     const struct disk_config *d, unsigned index);
/* After the vCPUs stopped; waits for I/O in flight, releases the image lock. */
void virtio_blk_destroy(struct virtio_blk *blk);
const char *virtio_blk_engine(struct virtio_blk *blk); /* "io_uring" or "threads" */
void virtio_blk_format_stats(struct virtio_blk *blk, FILE *out); /* --stats (any thread) */

#endif
