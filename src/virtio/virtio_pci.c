/* virtio 1.x modern PCI transport (virtio 1.2 §4.1). See virtio_pci.h. */
#include "virtio/virtio_pci.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "vm.h"

#define VIRTIO_PCI_VENDOR 0x1AF4
#define VIRTIO_PCI_DEVICE_BASE 0x1040 /* + device type: modern-only devices (§4.1.2) */

/* Capability types (§4.1.4). */
#define VIRTIO_PCI_CAP_COMMON_CFG 1
#define VIRTIO_PCI_CAP_NOTIFY_CFG 2
#define VIRTIO_PCI_CAP_ISR_CFG 3
#define VIRTIO_PCI_CAP_DEVICE_CFG 4
#define VIRTIO_PCI_CAP_PCI_CFG 5

/* struct virtio_pci_common_cfg (§4.1.4.3) offsets. */
enum {
	COMMON_DFSELECT = 0x00,
	COMMON_DF = 0x04,
	COMMON_GFSELECT = 0x08,
	COMMON_GF = 0x0C,
	COMMON_MSIX = 0x10,
	COMMON_NUMQ = 0x12,
	COMMON_STATUS = 0x14,
	COMMON_CFGGENERATION = 0x15,
	COMMON_Q_SELECT = 0x16,
	COMMON_Q_SIZE = 0x18,
	COMMON_Q_MSIX = 0x1A,
	COMMON_Q_ENABLE = 0x1C,
	COMMON_Q_NOFF = 0x1E,
	COMMON_Q_DESCLO = 0x20,
	COMMON_Q_DESCHI = 0x24,
	COMMON_Q_AVAILLO = 0x28,
	COMMON_Q_AVAILHI = 0x2C,
	COMMON_Q_USEDLO = 0x30,
	COMMON_Q_USEDHI = 0x34,
	COMMON_SIZE = 0x38,
};

#define TRANSPORT_FEATURES                                                                      \
	((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX) |                       \
	 (1ull << VIRTIO_RING_F_INDIRECT_DESC))

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) | (uint32_t)get16(p + 2) << 16; }

static uint64_t virtio_all_features(const struct virtio_device *vdev)
{
	return vdev->device_features | TRANSPORT_FEATURES;
}

bool virtio_device_has_feature(const struct virtio_device *vdev, unsigned bit)
{
	return vdev->driver_features & (1ull << bit);
}

static struct virtio_queue *virtio_selected_queue(struct virtio_device *vdev)
{
	return vdev->queue_select < vdev->nr_queues ? &vdev->queues[vdev->queue_select] : NULL;
}

static void virtio_send_vector(struct virtio_device *vdev, uint16_t vector)
{
	vdev->interrupts++;
	if (vector != VIRTIO_MSI_NO_VECTOR)
		pci_msix_notify(&vdev->pci, vector);
	/* Without MSI-X there is no interrupt: the platform has no INTx for PCI (pci.h). The ISR
	 * bit still tells a polling driver what happened. */
}

void virtio_device_notify_queue(struct virtio_device *vdev, unsigned q)
{
	struct virtio_queue *vq = &vdev->queues[q];
	if (!virtq_should_notify(&vq->vq))
		return;
	trace_event(vdev->vm, TRACE_VIRTIO, TRACE_HOST, "%s queue %u: used ring updated, interrupt",
		    vdev->name, q);
	vdev->isr |= 1;
	virtio_send_vector(vdev, vq->msix_vector);
}

void virtio_device_config_changed(struct virtio_device *vdev)
{
	vdev->config_generation++;
	vdev->isr |= 2; /* configuration change (§4.1.4.5) */
	if (vdev->status & VIRTIO_STATUS_DRIVER_OK)
		virtio_send_vector(vdev, vdev->config_msix_vector);
}

void virtio_device_set_needs_reset(struct virtio_device *vdev)
{
	if (vdev->status & VIRTIO_STATUS_NEEDS_RESET)
		return;
	vdev->status |= VIRTIO_STATUS_NEEDS_RESET;
	vdev->isr |= 2; /* configuration change (§4.1.4.5) */
	if (vdev->status & VIRTIO_STATUS_DRIVER_OK)
		virtio_send_vector(vdev, vdev->config_msix_vector);
}

/* §2.4: back to the initial state; nothing of the old driver survives. Lock held. */
static void virtio_device_reset(struct virtio_device *vdev)
{
	if (vdev->ops->reset)
		vdev->ops->reset(vdev);
	vdev->driver_features = 0;
	vdev->device_feature_select = vdev->driver_feature_select = 0;
	vdev->config_msix_vector = VIRTIO_MSI_NO_VECTOR;
	vdev->queue_select = 0;
	vdev->status = 0;
	vdev->isr = 0;
	vdev->resets++;
	for (unsigned i = 0; i < vdev->nr_queues; i++) {
		struct virtio_queue *q = &vdev->queues[i];
		virtq_reset(&q->vq);
		q->vq.size = vdev->queue_max_size;
		q->msix_vector = VIRTIO_MSI_NO_VECTOR;
		uint64_t stale;
		if (read(q->kick_fd, &stale, sizeof(stale)) < 0) {
			/* nothing pending: fine */
		}
	}
}

/* The common configuration structure as the guest would read it now. Lock held. */
static void virtio_common_image(struct virtio_device *vdev, uint8_t *img)
{
	memset(img, 0, COMMON_SIZE);
	uint64_t features = virtio_all_features(vdev);
	put32(img + COMMON_DFSELECT, vdev->device_feature_select);
	put32(img + COMMON_DF, vdev->device_feature_select < 2
				       ? (uint32_t)(features >> (32 * vdev->device_feature_select))
				       : 0);
	put32(img + COMMON_GFSELECT, vdev->driver_feature_select);
	put32(img + COMMON_GF, vdev->driver_feature_select < 2
				       ? (uint32_t)(vdev->driver_features >> (32 * vdev->driver_feature_select))
				       : 0);
	put16(img + COMMON_MSIX, vdev->config_msix_vector);
	put16(img + COMMON_NUMQ, (uint16_t)vdev->nr_queues);
	img[COMMON_STATUS] = vdev->status;
	img[COMMON_CFGGENERATION] = vdev->config_generation;
	put16(img + COMMON_Q_SELECT, vdev->queue_select);
	struct virtio_queue *q = virtio_selected_queue(vdev);
	if (!q)
		return; /* §4.1.4.3: queue_size 0 for a queue that does not exist */
	put16(img + COMMON_Q_SIZE, q->vq.size);
	put16(img + COMMON_Q_MSIX, q->msix_vector);
	put16(img + COMMON_Q_ENABLE, q->vq.enabled);
	put16(img + COMMON_Q_NOFF, (uint16_t)q->index);
	put32(img + COMMON_Q_DESCLO, (uint32_t)q->vq.desc_gpa);
	put32(img + COMMON_Q_DESCHI, (uint32_t)(q->vq.desc_gpa >> 32));
	put32(img + COMMON_Q_AVAILLO, (uint32_t)q->vq.avail_gpa);
	put32(img + COMMON_Q_AVAILHI, (uint32_t)(q->vq.avail_gpa >> 32));
	put32(img + COMMON_Q_USEDLO, (uint32_t)q->vq.used_gpa);
	put32(img + COMMON_Q_USEDHI, (uint32_t)(q->vq.used_gpa >> 32));
}

static void virtio_write_status(struct virtio_device *vdev, uint8_t value)
{
	if (value == 0) {
		virtio_device_reset(vdev);
		return;
	}
	uint8_t old = vdev->status;
	uint8_t next = (uint8_t)(value | (old & VIRTIO_STATUS_NEEDS_RESET));
	if ((next & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		/* §3.1.1: accept only a subset of what we offered, and only the modern interface. */
		bool ok = !(vdev->driver_features & ~virtio_all_features(vdev)) &&
			  virtio_device_has_feature(vdev, VIRTIO_F_VERSION_1);
		if (!ok)
			next &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
	}
	if ((next & VIRTIO_STATUS_DRIVER_OK) && !(next & VIRTIO_STATUS_FEATURES_OK))
		next &= (uint8_t)~VIRTIO_STATUS_DRIVER_OK; /* out of order: not started */
	vdev->status = next;
	if ((next & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK)) {
		/* Buffers may have been made available before DRIVER_OK: look at every queue. */
		uint64_t one = 1;
		for (unsigned i = 0; i < vdev->nr_queues; i++)
			if (vdev->queues[i].vq.enabled && write(vdev->queues[i].kick_fd, &one, 8) < 0) {
				/* counter full: a wake-up is pending anyway */
			}
	}
}

static void virtio_queue_enable(struct virtio_device *vdev, struct virtio_queue *q)
{
	if (q->vq.enabled)
		return;
	q->vq.event_idx = virtio_device_has_feature(vdev, VIRTIO_RING_F_EVENT_IDX);
	q->vq.indirect = virtio_device_has_feature(vdev, VIRTIO_RING_F_INDIRECT_DESC);
	if (virtq_enable(&q->vq, vdev->queue_max_size) < 0) {
		fprintf(stderr, "vmm: %s: driver enabled a queue with a bad size or ring address (device needs reset)\n",
			q->name);
		virtio_device_set_needs_reset(vdev);
	}
}

/* Apply the new value of every field the write touched. Lock held. */
static void virtio_common_write(struct virtio_device *vdev, unsigned off, const uint8_t *data,
				unsigned size)
{
	uint8_t img[COMMON_SIZE];
	virtio_common_image(vdev, img);
	memcpy(img + off, data, size);
	struct virtio_queue *q = virtio_selected_queue(vdev);
	bool queue_writable = q && !q->vq.enabled;
	bool features_writable = !(vdev->status & VIRTIO_STATUS_FEATURES_OK);
	/* The writable fields and their widths; a field changes only if the write touched it. */
	static const uint8_t fields[][2] = {
		{ COMMON_DFSELECT, 4 }, { COMMON_GFSELECT, 4 }, { COMMON_GF, 4 }, { COMMON_MSIX, 2 },
		{ COMMON_STATUS, 1 }, { COMMON_Q_SELECT, 2 }, { COMMON_Q_SIZE, 2 }, { COMMON_Q_MSIX, 2 },
		{ COMMON_Q_ENABLE, 2 }, { COMMON_Q_DESCLO, 8 }, { COMMON_Q_AVAILLO, 8 },
		{ COMMON_Q_USEDLO, 8 },
	};
	for (unsigned i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		unsigned f = fields[i][0];
		if (f + fields[i][1] <= off || f >= off + size)
			continue;
		switch (f) {
		case COMMON_DFSELECT: vdev->device_feature_select = get32(img + f); break;
		case COMMON_GFSELECT: vdev->driver_feature_select = get32(img + f); break;
		case COMMON_GF:
			if (features_writable && vdev->driver_feature_select < 2) {
				unsigned shift = 32 * vdev->driver_feature_select;
				vdev->driver_features &= ~(0xFFFFFFFFull << shift);
				vdev->driver_features |= (uint64_t)get32(img + f) << shift;
			}
			break;
		case COMMON_MSIX: {
			uint16_t v = get16(img + f);
			/* §4.1.5.1.2: a vector we cannot use reads back as NO_VECTOR. */
			vdev->config_msix_vector = v < vdev->pci.msix.nr_vectors ? v : VIRTIO_MSI_NO_VECTOR;
			break;
		}
		case COMMON_STATUS: virtio_write_status(vdev, img[f]); break;
		case COMMON_Q_SELECT: vdev->queue_select = get16(img + f); break;
		case COMMON_Q_SIZE: if (queue_writable) q->vq.size = get16(img + f); break;
		case COMMON_Q_MSIX:
			if (q) {
				uint16_t v = get16(img + f);
				q->msix_vector = v < vdev->pci.msix.nr_vectors ? v : VIRTIO_MSI_NO_VECTOR;
			}
			break;
		case COMMON_Q_ENABLE:
			if (q && get16(img + f) == 1)
				virtio_queue_enable(vdev, q);
			break;
		case COMMON_Q_DESCLO:
			if (queue_writable)
				q->vq.desc_gpa = get32(img + COMMON_Q_DESCLO) |
						 (uint64_t)get32(img + COMMON_Q_DESCHI) << 32;
			break;
		case COMMON_Q_AVAILLO:
			if (queue_writable)
				q->vq.avail_gpa = get32(img + COMMON_Q_AVAILLO) |
						  (uint64_t)get32(img + COMMON_Q_AVAILHI) << 32;
			break;
		case COMMON_Q_USEDLO:
			if (queue_writable)
				q->vq.used_gpa = get32(img + COMMON_Q_USEDLO) |
						 (uint64_t)get32(img + COMMON_Q_USEDHI) << 32;
			break;
		default: break;
		}
	}
}

static void virtio_bar_io(struct pci_device *pci, unsigned bar, uint64_t offset, void *data,
			  unsigned size, bool is_write)
{
	struct virtio_device *vdev = pci->opaque;
	uint8_t *bytes = data;
	(void)bar;
	if (offset >= VIRTIO_BAR_NOTIFY) {
		/* §4.1.4.4: the queue is the one whose notify address this is. */
		uint64_t q = (offset - VIRTIO_BAR_NOTIFY) / VIRTIO_NOTIFY_MULTIPLIER;
		if (is_write && q < vdev->nr_queues) {
			uint64_t one = 1;
			if (write(vdev->queues[q].kick_fd, &one, sizeof(one)) < 0) {
				/* counter full: a wake-up is pending anyway */
			}
		} else if (!is_write) {
			memset(data, 0, size);
		}
		return;
	}
	pthread_mutex_lock(&vdev->lock);
	if (offset < VIRTIO_BAR_COMMON + COMMON_SIZE) {
		unsigned off = (unsigned)offset;
		if (off + size > COMMON_SIZE) {
			if (!is_write)
				memset(data, 0, size);
		} else if (is_write) {
			virtio_common_write(vdev, off, bytes, size);
		} else {
			uint8_t img[COMMON_SIZE];
			virtio_common_image(vdev, img);
			memcpy(data, img + off, size);
		}
	} else if (offset >= VIRTIO_BAR_ISR && offset < VIRTIO_BAR_ISR + 4) {
		if (!is_write) {
			memset(data, 0, size);
			bytes[0] = vdev->isr; /* §4.1.4.5: reading clears it */
			vdev->isr = 0;
		}
	} else if (offset >= VIRTIO_BAR_DEVICE && offset < VIRTIO_BAR_DEVICE + vdev->config_size) {
		uint64_t off = offset - VIRTIO_BAR_DEVICE;
		if (!is_write) {
			memset(data, 0, size);
			memcpy(data, vdev->config + off,
			       off + size <= vdev->config_size ? size : vdev->config_size - off);
		}
	} else if (!is_write) {
		memset(data, 0, size);
	}
	pthread_mutex_unlock(&vdev->lock);
}

/* §4.1.4.9: VIRTIO_PCI_CAP_PCI_CFG, a window into BAR 0 through configuration space. Called
 * with the PCI configuration lock held, for accesses to its pci_cfg_data field. */
static void virtio_pci_cfg_access(struct pci_device *pci, unsigned reg, void *data, unsigned size,
				  bool is_write)
{
	unsigned cap = pci->hook_start - 16;
	uint8_t bar = pci->config[cap + 4];
	uint32_t offset = get32(pci->config + cap + 8), length = get32(pci->config + cap + 12);
	if (bar != 0 || reg != pci->hook_start || size != length ||
	    (length != 1 && length != 2 && length != 4) || offset >= VIRTIO_BAR_SIZE ||
	    (offset & (length - 1))) {
		if (!is_write)
			memset(data, 0, size);
		return;
	}
	virtio_bar_io(pci, 0, offset, data, size, is_write);
}

static uint8_t virtio_add_cap(struct pci_device *pci, uint8_t type, uint32_t offset, uint32_t len,
			      uint8_t cap_len)
{
	uint8_t cap = pci_device_add_capability(pci, PCI_CAP_ID_VNDR, cap_len);
	if (!cap)
		return 0;
	pci->config[cap + 2] = cap_len;
	pci->config[cap + 3] = type;
	pci->config[cap + 4] = 0; /* BAR 0 */
	put32(pci->config + cap + 8, offset);
	put32(pci->config + cap + 12, len);
	return cap;
}

static void virtio_bar_map(struct pci_device *pci, unsigned bar, uint64_t addr, bool mapped)
{
	struct virtio_device *vdev = pci->opaque;
	struct vm *vm = vdev->vm;
	if (bar != 0 || !vm->backend->ioeventfd)
		return;
	for (unsigned i = 0; i < vdev->nr_queues; i++) {
		struct virtio_queue *q = &vdev->queues[i];
		if (q->ioeventfd) {
			vm->backend->ioeventfd(vm, q->ioeventfd_addr, q->kick_fd, false);
			q->ioeventfd = false;
		}
		if (mapped) {
			q->ioeventfd_addr = addr + VIRTIO_BAR_NOTIFY + VIRTIO_NOTIFY_MULTIPLIER * i;
			q->ioeventfd = vm->backend->ioeventfd(vm, q->ioeventfd_addr, q->kick_fd, true) == 0;
		}
	}
}

static void virtio_on_kick(void *opaque, int fd, uint32_t events)
{
	struct virtio_queue *q = opaque;
	struct virtio_device *vdev = q->vdev;
	uint64_t count;
	(void)events;
	if (read(fd, &count, sizeof(count)) < 0)
		return;
	pthread_mutex_lock(&vdev->lock);
	vdev->kicks++;
	trace_event(vdev->vm, TRACE_VIRTIO, TRACE_HOST, "%s queue %u: notified", vdev->name,
		    q->index);
	if ((vdev->status & VIRTIO_STATUS_DRIVER_OK) && !(vdev->status & VIRTIO_STATUS_NEEDS_RESET) &&
	    q->vq.enabled) {
		vdev->ops->queue_notify(vdev, q->index);
		if (q->vq.broken)
			virtio_device_set_needs_reset(vdev);
	}
	pthread_mutex_unlock(&vdev->lock);
}

int virtio_device_init(struct virtio_device *vdev, struct vm *vm, struct pci_host *host)
{
	if (vdev->nr_queues == 0 || vdev->nr_queues > VIRTIO_MAX_QUEUES ||
	    vdev->config_size > VIRTIO_BAR_NOTIFY - VIRTIO_BAR_DEVICE)
		return -EINVAL;
	vdev->vm = vm;
	pthread_mutex_init(&vdev->lock, NULL);
	struct pci_device *pci = &vdev->pci;
	pci_device_init(pci, vdev->name, VIRTIO_PCI_VENDOR,
			(uint16_t)(VIRTIO_PCI_DEVICE_BASE + vdev->device_type), vdev->class_code,
			1 /* revision ≥ 1: modern (§4.1.2.1) */, VIRTIO_PCI_VENDOR,
			(uint16_t)(0x40 + vdev->device_type));
	pci->opaque = vdev;
	pci->bar_map = virtio_bar_map;
	int ret = pci_device_add_bar(pci, 0, VIRTIO_BAR_SIZE, false, virtio_bar_io);
	if (ret == 0)
		ret = pci_device_add_msix(pci, VIRTIO_MSIX_BAR, vdev->nr_queues + 1);
	if (ret < 0)
		return ret;
	uint8_t notify = virtio_add_cap(pci, VIRTIO_PCI_CAP_NOTIFY_CFG, VIRTIO_BAR_NOTIFY,
					VIRTIO_NOTIFY_MULTIPLIER * vdev->nr_queues, 20);
	if (!virtio_add_cap(pci, VIRTIO_PCI_CAP_COMMON_CFG, VIRTIO_BAR_COMMON, COMMON_SIZE, 16) ||
	    !notify || !virtio_add_cap(pci, VIRTIO_PCI_CAP_ISR_CFG, VIRTIO_BAR_ISR, 4, 16))
		return -ENOSPC;
	put32(pci->config + notify + 16, VIRTIO_NOTIFY_MULTIPLIER);
	if (vdev->config_size &&
	    !virtio_add_cap(pci, VIRTIO_PCI_CAP_DEVICE_CFG, VIRTIO_BAR_DEVICE, vdev->config_size, 16))
		return -ENOSPC;
	uint8_t cfg = virtio_add_cap(pci, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 20);
	if (!cfg)
		return -ENOSPC;
	/* bar, offset and length of the window are the driver's to set. */
	pci->wmask[cfg + 4] = 0xFF;
	memset(pci->wmask + cfg + 8, 0xFF, 8);
	pci->hook_start = cfg + 16u;
	pci->hook_end = cfg + 20u;
	pci->config_hook = virtio_pci_cfg_access;

	vdev->queues = calloc(vdev->nr_queues, sizeof(*vdev->queues));
	if (!vdev->queues)
		return -ENOMEM;
	for (unsigned i = 0; i < vdev->nr_queues; i++)
		vdev->queues[i].kick_fd = -1;
	for (unsigned i = 0; i < vdev->nr_queues; i++) {
		struct virtio_queue *q = &vdev->queues[i];
		q->vdev = vdev;
		q->index = i;
		snprintf(q->name, sizeof(q->name), "%s queue %u", vdev->name, i);
		virtq_init(&q->vq, &vm->mem, q->name);
		q->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (q->kick_fd < 0)
			return -errno;
		ret = event_loop_add(vm->loop, q->kick_fd, EPOLLIN, virtio_on_kick, q);
		if (ret < 0) {
			close(q->kick_fd);
			q->kick_fd = -1;
			return ret;
		}
	}
	virtio_device_reset(vdev);
	vdev->resets = 0;
	return pci_device_register(host, pci);
}

void virtio_device_destroy(struct virtio_device *vdev)
{
	struct vm *vm = vdev->vm;
	if (!vdev->queues || !vm)
		return;
	for (unsigned i = 0; i < vdev->nr_queues; i++) {
		struct virtio_queue *q = &vdev->queues[i];
		if (q->ioeventfd)
			vm->backend->ioeventfd(vm, q->ioeventfd_addr, q->kick_fd, false);
		if (q->kick_fd >= 0) {
			event_loop_remove(vm->loop, q->kick_fd);
			close(q->kick_fd);
		}
	}
	free(vdev->queues);
	vdev->queues = NULL;
	pthread_mutex_destroy(&vdev->lock);
}

void virtio_device_format_stats(struct virtio_device *vdev, FILE *out)
{
	pthread_mutex_lock(&vdev->lock);
	fprintf(out, "  %s (00:%02x.0): kicks %llu, interrupts %llu, resets %llu, status 0x%x\n",
		vdev->name, vdev->pci.slot,
		(unsigned long long)vdev->kicks, (unsigned long long)vdev->interrupts,
		(unsigned long long)vdev->resets, vdev->status);
	for (unsigned i = 0; i < vdev->nr_queues; i++)
		fprintf(out, "    queue %u: chains %llu, errors %llu\n", i,
			(unsigned long long)vdev->queues[i].vq.chains,
			(unsigned long long)vdev->queues[i].vq.errors);
	if (vdev->ops->format_stats)
		vdev->ops->format_stats(vdev, out);
	pthread_mutex_unlock(&vdev->lock);
}
