/* virtio-rng (virtio 1.2 §5.4): one queue of device-writable buffers filled from getrandom(). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "virtio/devices.h"
#include "virtio/virtio_pci.h"

#define RNG_QUEUE_SIZE 256
#define RNG_MAX_PER_REQUEST (64u << 10) /* the guest asks for little; bound what one kick costs */

struct virtio_rng {
	struct virtio_device vdev;
	struct iovec iov[16];
	uint64_t bytes; /* stats */
};

static void rng_queue_notify(struct virtio_device *vdev, unsigned q)
{
	struct virtio_rng *rng = vdev->opaque;
	struct virtq *vq = &vdev->queues[q].vq;
	struct virtq_chain chain = { .iov = rng->iov, .cap = 16 };
	int r;
	do {
		while ((r = virtq_pop(vq, &chain)) > 0) {
			uint32_t written = 0;
			for (unsigned i = chain.nr_out; i < chain.nr_out + chain.nr_in; i++) {
				size_t want = chain.iov[i].iov_len;
				if (want > RNG_MAX_PER_REQUEST - written)
					want = RNG_MAX_PER_REQUEST - written;
				ssize_t n = want ? getrandom(chain.iov[i].iov_base, want, 0) : 0;
				if (n <= 0)
					break;
				written += (uint32_t)n;
			}
			rng->bytes += written;
			virtq_written(vq, chain.iov + chain.nr_out, chain.nr_in);
			virtq_push(vq, chain.head, written);
		}
	} while (r == 0 && virtq_enable_notify(vq));
	virtio_device_notify_queue(vdev, q);
}

static void rng_format_stats(struct virtio_device *vdev, FILE *out)
{
	struct virtio_rng *rng = vdev->opaque;
	fprintf(out, "    entropy: %llu bytes\n", (unsigned long long)rng->bytes);
}

static const struct virtio_device_ops rng_ops = { .queue_notify = rng_queue_notify,
						  .format_stats = rng_format_stats };

void virtio_rng_format_stats(void *opaque, FILE *out)
{
	struct virtio_rng *rng = opaque;
	virtio_device_format_stats(&rng->vdev, out);
}

void *virtio_rng_create(struct vm *vm, struct pci_host *host)
{
	struct virtio_rng *rng = calloc(1, sizeof(*rng));
	if (!rng)
		return NULL;
	rng->vdev = (struct virtio_device){ .name = "virtio-rng", .device_type = 4,
					    .class_code = 0xFF0000, .nr_queues = 1,
					    .queue_max_size = RNG_QUEUE_SIZE, .ops = &rng_ops,
					    .opaque = rng };
	int ret = virtio_device_init(&rng->vdev, vm, host);
	if (ret < 0) {
		fprintf(stderr, "vmm: virtio-rng: %s\n", strerror(-ret));
		virtio_device_destroy(&rng->vdev);
		free(rng);
		return NULL;
	}
	return rng;
}

void virtio_rng_destroy(void *opaque)
{
	struct virtio_rng *rng = opaque;
	if (!rng)
		return;
	virtio_device_destroy(&rng->vdev);
	free(rng);
}
