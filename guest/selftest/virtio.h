/*
 * A minimal virtio 1.x driver over the modern PCI transport (virtio 1.2 §4.1): one split
 * virtqueue per device, completions by MSI-X to a LAPIC vector, every wait bounded. The rings
 * are exposed so the hostile checks can write whatever they like into them.
 */
#ifndef SELFTEST_VIRTIO_H
#define SELFTEST_VIRTIO_H

#include <stdbool.h>
#include <stdint.h>

#include "pci.h"

#define VIRTIO_VENDOR 0x1AF4
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG 4
#define VIRTIO_MAX_DEVICES 4

#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_BLK_F_RO 5

#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED 0x80

/* struct virtio_pci_common_cfg offsets (§4.1.4.3), for the drivers here. */
#define COMMON_DFSELECT 0x00
#define COMMON_DF 0x04
#define COMMON_GFSELECT 0x08
#define COMMON_GF 0x0C
#define COMMON_MSIX 0x10
#define COMMON_STATUS 0x14
#define COMMON_Q_SELECT 0x16
#define COMMON_Q_SIZE 0x18
#define COMMON_Q_MSIX 0x1A
#define COMMON_Q_ENABLE 0x1C
#define COMMON_Q_NOFF 0x1E
#define COMMON_Q_DESC 0x20
#define COMMON_Q_AVAIL 0x28
#define COMMON_Q_USED 0x30

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4

#define VIRTQ_SIZE 256 /* what we ask for (the device may offer less) */

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail {
	uint16_t flags, idx;
	uint16_t ring[VIRTQ_SIZE];
	uint16_t used_event;
};

struct virtq_used {
	uint16_t flags, idx;
	struct {
		uint32_t id, len;
	} ring[VIRTQ_SIZE];
	uint16_t avail_event;
};

/* One page each, so any size up to VIRTQ_SIZE fits. */
struct virtq_rings {
	struct virtq_desc desc[VIRTQ_SIZE];
	union {
		struct virtq_avail avail;
		uint8_t avail_page[4096];
	};
	union {
		struct virtq_used used;
		uint8_t used_page[4096];
	};
} __attribute__((aligned(4096)));

struct virtio_dev {
	struct pci_func pci;
	unsigned index; /* in the order found */
	uint16_t type;  /* VIRTIO_ID_* */
	uint64_t common, isr, device, notify; /* BAR addresses of the structures */
	uint32_t notify_multiplier;
	uint64_t msix_table;
	uint8_t msix_cap;
	uint8_t queue_vector; /* LAPIC vectors */
	uint8_t config_vector;
	uint64_t offered, features; /* device features, negotiated features */
	uint16_t qsize;
	uint64_t notify_address; /* of queue 0 */
	struct virtq_rings *rings;
	uint16_t avail_idx; /* next avail->idx we publish */
	uint16_t used_seen; /* used entries consumed */
	volatile uint32_t queue_irqs, config_irqs;
};

/* Enumerates bus 0 and fills devs with every virtio device (modern ids 0x1040 + type, or
 * transitional 0x1000 + ...). Returns how many; sets err on failure to map one. */
unsigned virtio_find(const struct acpi_info *acpi, uint32_t apic_id, struct virtio_dev *devs,
		     unsigned max, char *err, unsigned err_size);

/* Reset, negotiate (VERSION_1 plus `want` ∩ offered), MSI-X vectors, queue 0 of `qsize`
 * entries, DRIVER_OK. false and err on any refusal. */
bool virtio_start(struct virtio_dev *d, uint64_t want, uint16_t qsize, char *err,
		  unsigned err_size);
/* The same with queue 0's descriptor table at desc_gpa (0: ours), for the hostile checks. */
bool virtio_start_at(struct virtio_dev *d, uint64_t want, uint16_t qsize, uint64_t desc_gpa,
		     char *err, unsigned err_size);
/* Writes 0 to the status and waits (bounded) until it reads 0. */
bool virtio_reset(struct virtio_dev *d);
uint8_t virtio_status(const struct virtio_dev *d);
uint8_t virtio_read_config8(const struct virtio_dev *d, unsigned offset);
uint32_t virtio_read_config32(const struct virtio_dev *d, unsigned offset);

/* Publish head in the available ring (avail->idx += 1) and notify queue 0. */
void virtio_submit(struct virtio_dev *d, uint16_t head);
/* Publish idx as avail->idx as is (hostile use), then notify. */
void virtio_publish_raw(struct virtio_dev *d, uint16_t idx);
void virtio_kick(struct virtio_dev *d);

enum virtio_wait { VIRTIO_USED, VIRTIO_NEEDS_RESET, VIRTIO_TIMEOUT };
/* Waits for the next used entry (its id and len) or NEEDS_RESET, at most timeout_ms. */
enum virtio_wait virtio_wait(struct virtio_dev *d, uint32_t timeout_ms, uint32_t *id,
			     uint32_t *len);

#endif
