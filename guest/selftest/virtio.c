/* Minimal virtio-pci driver (virtio 1.2 §3.1, §4.1). See virtio.h. */
#include "virtio.h"
#include "apic.h"
#include "interrupts.h"
#include "layout.h"
#include "lib.h"
#include "timer.h"

/* Capability types (§4.1.4). */
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR 3
#define CAP_DEVICE 4

#define MSIX_CONTROL 2
#define MSIX_ENABLE 0x8000
#define MSIX_TABLE 4
#define MSI_ADDRESS 0xFEE00000u
#define NO_VECTOR 0xFFFF
#define RESET_POLLS 1000

static struct virtq_rings rings[VIRTIO_MAX_DEVICES];
static struct virtio_dev *by_vector[2 * VIRTIO_MAX_DEVICES];

static void virtio_interrupt(const struct interrupt_frame *frame)
{
	unsigned slot = (unsigned)(frame->vector - VECTOR_VIRTIO_BASE);

	if (slot < ARRAY_SIZE(by_vector) && by_vector[slot]) {
		if (slot & 1)
			by_vector[slot]->config_irqs++;
		else
			by_vector[slot]->queue_irqs++;
	}
	lapic_eoi();
}

/* The address a virtio capability points at, or 0 if its BAR is not a memory BAR. */
static uint64_t cap_address(const struct pci_func *f, uint8_t cap)
{
	uint8_t bar = mmio_read8(f->cfg + cap + 4);
	uint64_t base = bar < 6 ? pci_bar_address(f, bar) : 0;

	return base ? base + mmio_read32(f->cfg + cap + 8) : 0;
}

static bool virtio_map(struct virtio_dev *d, uint32_t apic_id, char *err, unsigned err_size)
{
	const struct pci_func *f = &d->pci;
	uint8_t cap = 0;

	while ((cap = pci_find_cap(f, PCI_CAP_ID_VNDR, cap))) {
		uint8_t type = mmio_read8(f->cfg + cap + 3);
		uint64_t address = cap_address(f, cap);

		if (type == CAP_COMMON && !d->common)
			d->common = address;
		else if (type == CAP_ISR && !d->isr)
			d->isr = address;
		else if (type == CAP_DEVICE && !d->device)
			d->device = address;
		else if (type == CAP_NOTIFY && !d->notify) {
			d->notify = address;
			d->notify_multiplier = mmio_read32(f->cfg + cap + 16);
		}
	}
	d->msix_cap = pci_find_cap(f, PCI_CAP_ID_MSIX, 0);
	if (!d->common || !d->isr || !d->notify || !d->msix_cap) {
		format(err, err_size, "%02x.%x: missing capability (common %lx isr %lx notify %lx msix %x)",
		       f->dev, f->fn, d->common, d->isr, d->notify, d->msix_cap);
		return false;
	}
	uint32_t table = mmio_read32(f->cfg + d->msix_cap + MSIX_TABLE);
	uint64_t base = pci_bar_address(f, table & 7);
	if (!base) {
		format(err, err_size, "%02x.%x: MSI-X table BAR %u unmapped", f->dev, f->fn, table & 7);
		return false;
	}
	d->msix_table = base + (table & ~7u);
	d->queue_vector = (uint8_t)(VECTOR_VIRTIO_BASE + 2 * d->index);
	d->config_vector = (uint8_t)(d->queue_vector + 1);
	d->rings = &rings[d->index];
	by_vector[2 * d->index] = d;
	by_vector[2 * d->index + 1] = d;
	interrupts_set_handler(d->queue_vector, virtio_interrupt);
	interrupts_set_handler(d->config_vector, virtio_interrupt);
	/* Memory decoding and bus mastering on, INTx off (there is none anyway). */
	mmio_write16(f->cfg + PCI_COMMAND, mmio_read16(f->cfg + PCI_COMMAND) | PCI_COMMAND_MEMORY |
						   PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
	/* MSI-X entries 0 (configuration) and 1 (queue 0) to our vectors on this CPU. */
	for (unsigned e = 0; e < 2; e++) {
		uint64_t entry = d->msix_table + 16 * e;

		mmio_write32(entry + 0, MSI_ADDRESS | apic_id << 12);
		mmio_write32(entry + 4, 0);
		mmio_write32(entry + 8, e ? d->queue_vector : d->config_vector);
		mmio_write32(entry + 12, 0); /* unmasked */
	}
	uint64_t control = f->cfg + d->msix_cap + MSIX_CONTROL;
	mmio_write16(control, mmio_read16(control) | MSIX_ENABLE);
	return true;
}

unsigned virtio_find(const struct acpi_info *acpi, uint32_t apic_id, struct virtio_dev *devs,
		     unsigned max, char *err, unsigned err_size)
{
	struct pci_func funcs[32];
	unsigned n = 0;

	err[0] = 0;
	if (!pci_init(acpi, err, err_size))
		return 0;
	unsigned count = pci_scan(funcs, ARRAY_SIZE(funcs));
	for (unsigned i = 0; i < count && n < max && n < VIRTIO_MAX_DEVICES; i++) {
		const struct pci_func *f = &funcs[i];
		uint16_t type;

		if (f->vendor != VIRTIO_VENDOR || f->device < 0x1000 || f->device > 0x107F)
			continue;
		type = f->device >= 0x1040 ? f->device - 0x1040 : 0;
		if (f->device < 0x1040) /* transitional: the subsystem id is the type */
			type = mmio_read16(f->cfg + 0x2E);
		memset(&devs[n], 0, sizeof(devs[n]));
		devs[n].pci = *f;
		devs[n].index = n;
		devs[n].type = type;
		if (!virtio_map(&devs[n], apic_id, err, err_size))
			return n;
		n++;
	}
	return n;
}

uint8_t virtio_status(const struct virtio_dev *d)
{
	return mmio_read8(d->common + COMMON_STATUS);
}

uint8_t virtio_read_config8(const struct virtio_dev *d, unsigned offset)
{
	return d->device ? mmio_read8(d->device + offset) : 0xFF;
}

uint32_t virtio_read_config32(const struct virtio_dev *d, unsigned offset)
{
	return d->device ? mmio_read32(d->device + offset) : 0xFFFFFFFF;
}

bool virtio_reset(struct virtio_dev *d)
{
	mmio_write8(d->common + COMMON_STATUS, 0);
	for (unsigned i = 0; i < RESET_POLLS; i++) /* §4.1.4.3.2: reset is done when it reads 0 */
		if (virtio_status(d) == 0)
			return true;
	return false;
}

static void set_status(struct virtio_dev *d, uint8_t bits)
{
	mmio_write8(d->common + COMMON_STATUS, virtio_status(d) | bits);
}

static void write64(uint64_t address, uint64_t value)
{
	mmio_write32(address, (uint32_t)value);
	mmio_write32(address + 4, (uint32_t)(value >> 32));
}

bool virtio_start(struct virtio_dev *d, uint64_t want, uint16_t qsize, char *err,
		  unsigned err_size)
{
	return virtio_start_at(d, want, qsize, 0, err, err_size);
}

bool virtio_start_at(struct virtio_dev *d, uint64_t want, uint16_t qsize, uint64_t desc_gpa,
		     char *err, unsigned err_size)
{
	if (!virtio_reset(d)) {
		format(err, err_size, "status did not read 0 after reset");
		return false;
	}
	set_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	set_status(d, VIRTIO_STATUS_DRIVER);
	mmio_write32(d->common + COMMON_DFSELECT, 0);
	d->offered = mmio_read32(d->common + COMMON_DF);
	mmio_write32(d->common + COMMON_DFSELECT, 1);
	d->offered |= (uint64_t)mmio_read32(d->common + COMMON_DF) << 32;
	if (!(d->offered & (1ull << VIRTIO_F_VERSION_1))) {
		format(err, err_size, "device does not offer VERSION_1 (features 0x%lx)", d->offered);
		return false;
	}
	d->features = (want | 1ull << VIRTIO_F_VERSION_1) & d->offered;
	mmio_write32(d->common + COMMON_GFSELECT, 0);
	mmio_write32(d->common + COMMON_GF, (uint32_t)d->features);
	mmio_write32(d->common + COMMON_GFSELECT, 1);
	mmio_write32(d->common + COMMON_GF, (uint32_t)(d->features >> 32));
	set_status(d, VIRTIO_STATUS_FEATURES_OK);
	if (!(virtio_status(d) & VIRTIO_STATUS_FEATURES_OK)) {
		format(err, err_size, "device refused features 0x%lx", d->features);
		return false;
	}
	mmio_write16(d->common + COMMON_MSIX, 0);
	if (mmio_read16(d->common + COMMON_MSIX) != 0) {
		format(err, err_size, "configuration MSI-X vector not accepted");
		return false;
	}
	mmio_write16(d->common + COMMON_Q_SELECT, 0);
	uint16_t max = mmio_read16(d->common + COMMON_Q_SIZE);
	if (max == 0) {
		format(err, err_size, "queue 0 does not exist");
		return false;
	}
	d->qsize = qsize < max ? qsize : max;
	if (d->qsize == 0)
		d->qsize = 1;
	memset(d->rings, 0, sizeof(*d->rings));
	d->avail_idx = d->used_seen = 0;
	mmio_write16(d->common + COMMON_Q_SIZE, d->qsize);
	mmio_write16(d->common + COMMON_Q_MSIX, 1);
	if (mmio_read16(d->common + COMMON_Q_MSIX) != 1) {
		format(err, err_size, "queue MSI-X vector not accepted");
		return false;
	}
	write64(d->common + COMMON_Q_DESC, desc_gpa ? desc_gpa : (uint64_t)d->rings->desc);
	write64(d->common + COMMON_Q_AVAIL, (uint64_t)&d->rings->avail);
	write64(d->common + COMMON_Q_USED, (uint64_t)&d->rings->used);
	d->notify_address = d->notify + (uint64_t)mmio_read16(d->common + COMMON_Q_NOFF) *
						d->notify_multiplier;
	mmio_write16(d->common + COMMON_Q_ENABLE, 1);
	set_status(d, VIRTIO_STATUS_DRIVER_OK);
	uint8_t status = virtio_status(d);
	if ((status & (VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_NEEDS_RESET)) !=
	    VIRTIO_STATUS_DRIVER_OK) {
		format(err, err_size, "status 0x%x after DRIVER_OK", status);
		return false;
	}
	return true;
}

void virtio_kick(struct virtio_dev *d)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	mmio_write16(d->notify_address, 0); /* queue index 0 (§4.1.5.2) */
}

void virtio_publish_raw(struct virtio_dev *d, uint16_t idx)
{
	volatile struct virtq_avail *avail = &d->rings->avail;

	avail->used_event = d->used_seen; /* EVENT_IDX: interrupt for the next used entry */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	avail->idx = idx;
	virtio_kick(d);
}

void virtio_submit(struct virtio_dev *d, uint16_t head)
{
	volatile struct virtq_avail *avail = &d->rings->avail;

	avail->ring[d->avail_idx % d->qsize] = head;
	d->avail_idx++;
	virtio_publish_raw(d, d->avail_idx);
}

struct wait_state {
	struct virtio_dev *d;
	bool needs_reset;
};

static bool used_or_broken(void *arg)
{
	struct wait_state *w = arg;
	volatile struct virtq_used *used = &w->d->rings->used;

	if (used->idx != w->d->used_seen)
		return true;
	w->needs_reset = virtio_status(w->d) & VIRTIO_STATUS_NEEDS_RESET;
	return w->needs_reset;
}

enum virtio_wait virtio_wait(struct virtio_dev *d, uint32_t timeout_ms, uint32_t *id,
			     uint32_t *len)
{
	struct wait_state w = { d, false };
	volatile struct virtq_used *used = &d->rings->used;

	if (!wait_until(used_or_broken, &w, timeout_ms))
		return VIRTIO_TIMEOUT;
	if (used->idx == d->used_seen)
		return VIRTIO_NEEDS_RESET;
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	*id = used->ring[d->used_seen % d->qsize].id;
	*len = used->ring[d->used_seen % d->qsize].len;
	d->used_seen++;
	return VIRTIO_USED;
}
