/* The virtio 1.x modern PCI transport (virtio 1.2 §4.1), written once for every device type.
 *
 * A device type (blk.c, rng.c) fills a virtio_device with its id, features, config space and
 * callbacks and calls virtio_device_init(). Queue notifications arrive as eventfd events on the
 * main loop (from KVM_IOEVENTFD when the backend has it, otherwise from the notify MMIO write),
 * so queue processing always runs on the main thread with vdev->lock held. Register accesses
 * come from vCPU threads and take the same lock. */
#ifndef VMM_VIRTIO_PCI_H
#define VMM_VIRTIO_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "pci/pci.h"
#include "virtio/virtq.h"

struct vm;

/* Feature bits (virtio 1.2 §6). */
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32

/* Device status (§2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

#define VIRTIO_MSI_NO_VECTOR 0xFFFF
#define VIRTIO_MAX_QUEUES 64

/* BAR 0 layout: one region per capability. */
#define VIRTIO_BAR_COMMON 0x0000
#define VIRTIO_BAR_ISR 0x1000
#define VIRTIO_BAR_DEVICE 0x2000
#define VIRTIO_BAR_NOTIFY 0x3000
#define VIRTIO_BAR_SIZE 0x4000
#define VIRTIO_NOTIFY_MULTIPLIER 4
#define VIRTIO_MSIX_BAR 2

struct virtio_device;

struct virtio_device_ops {
	/* The driver kicked queue q (DRIVER_OK, queue enabled, not broken). Main thread, lock held. */
	void (*queue_notify)(struct virtio_device *vdev, unsigned q);
	/* The driver reset the device: forget every request (lock held; may wait for I/O). */
	void (*reset)(struct virtio_device *vdev);
	/* Optional: the device type's own counters, one line (lock held). */
	void (*format_stats)(struct virtio_device *vdev, FILE *out);
};

struct virtio_queue {
	struct virtio_device *vdev;
	unsigned index;
	struct virtq vq;
	uint16_t msix_vector;
	int kick_fd; /* eventfd: notify writes and KVM_IOEVENTFD */
	bool ioeventfd; /* registered with the backend at ioeventfd_addr */
	uint64_t ioeventfd_addr;
	char name[40];
};

struct virtio_device {
	/* Filled by the device type before virtio_device_init(). */
	const char *name; /* "virtio-blk0" */
	uint16_t device_type; /* 2 block, 4 entropy */
	uint32_t class_code;
	uint64_t device_features; /* its own; the transport adds VERSION_1, EVENT_IDX, INDIRECT */
	unsigned nr_queues;
	uint16_t queue_max_size;
	uint8_t *config; /* device configuration space, read-only to the guest */
	uint32_t config_size;
	const struct virtio_device_ops *ops;
	void *opaque;

	/* Transport state. */
	struct vm *vm;
	pthread_mutex_t lock; /* guards everything below and the device type's queue state */
	uint64_t driver_features;
	uint32_t device_feature_select, driver_feature_select;
	uint16_t config_msix_vector, queue_select;
	uint8_t status, config_generation, isr;
	struct virtio_queue *queues;
	struct pci_device pci;
	uint64_t kicks, interrupts, resets; /* stats */
};

/* Register on the VM's PCI host and its event loop. Main thread. 0 or a negative errno. */
int virtio_device_init(struct virtio_device *vdev, struct vm *vm, struct pci_host *host);
/* After the vCPUs stopped: unhook the eventfds from the loop and the backend. */
void virtio_device_destroy(struct virtio_device *vdev);

/* Negotiated? (lock held) */
bool virtio_device_has_feature(const struct virtio_device *vdev, unsigned bit);
/* After pushing used buffers on queue q: interrupt the driver if it wants one (lock held). */
void virtio_device_notify_queue(struct virtio_device *vdev, unsigned q);
/* The device changed its configuration space (e.g. link status): new generation and a
 * configuration interrupt (lock held). */
void virtio_device_config_changed(struct virtio_device *vdev);
/* The device cannot go on: NEEDS_RESET and a configuration interrupt (lock held). */
void virtio_device_set_needs_reset(struct virtio_device *vdev);
/* Transport, queue and device-type counters for --stats / the control socket (takes the lock). */
void virtio_device_format_stats(struct virtio_device *vdev, FILE *out);

#endif
