/* PCI host bridge, configuration space, BAR placement and MSI-X. See pci.h. */
#include "pci/pci.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "trace.h"

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) | (uint32_t)get16(p + 2) << 16; }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

void pci_device_init(struct pci_device *dev, const char *name, uint16_t vendor, uint16_t device,
		     uint32_t class_code, uint8_t revision, uint16_t subsys_vendor, uint16_t subsys_id)
{
	memset(dev, 0, sizeof(*dev));
	dev->name = name;
	put16(dev->config + PCI_VENDOR_ID, vendor);
	put16(dev->config + PCI_DEVICE_ID, device);
	dev->config[PCI_REVISION_ID] = revision;
	dev->config[PCI_CLASS_PROG] = (uint8_t)class_code;
	dev->config[PCI_CLASS_PROG + 1] = (uint8_t)(class_code >> 8);
	dev->config[PCI_CLASS_PROG + 2] = (uint8_t)(class_code >> 16);
	put16(dev->config + PCI_SUBSYSTEM_VENDOR_ID, subsys_vendor);
	put16(dev->config + PCI_SUBSYSTEM_ID, subsys_id);
	/* Command: I/O, memory, bus master, INTx disable. Interrupt line: scratch for the OS. */
	put16(dev->wmask + PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
						PCI_COMMAND_INTX_DISABLE);
	dev->wmask[PCI_INTERRUPT_LINE] = 0xFF;
	dev->next_cap = 0x40;
	pthread_mutex_init(&dev->msix_lock, NULL);
}

int pci_device_add_bar(struct pci_device *dev, unsigned bar, uint64_t size, bool is64,
		       pci_bar_io_fn io)
{
	if (bar >= PCI_NR_BARS || (is64 && bar + 1 >= PCI_NR_BARS) || size < 16 ||
	    (size & (size - 1)) || (!is64 && size > (1ull << 31)) || dev->bars[bar].size)
		return -EINVAL;
	dev->bars[bar] = (struct pci_bar){ .size = size, .is64 = is64, .io = io, .dev = dev,
					   .index = bar };
	put32(dev->config + PCI_BAR0 + 4 * bar, is64 ? PCI_BAR_MEM_64 : 0);
	return 0;
}

uint8_t pci_device_add_capability(struct pci_device *dev, uint8_t id, uint8_t len)
{
	unsigned at = align_up(dev->next_cap, 4);
	if (len < 2 || at + len > PCI_CONFIG_SIZE)
		return 0;
	dev->config[at] = id;
	dev->config[at + 1] = 0;
	/* Append at the end of the list, so capabilities appear in the order they were added. */
	uint8_t *link = &dev->config[PCI_CAPABILITY_LIST];
	while (*link)
		link = &dev->config[*link + 1];
	*link = (uint8_t)at;
	put16(dev->config + PCI_STATUS, get16(dev->config + PCI_STATUS) | PCI_STATUS_CAP_LIST);
	dev->next_cap = (uint8_t)(at + len < PCI_CONFIG_SIZE ? at + len : 0xFF);
	return (uint8_t)at;
}

static void pci_msix_table_io(struct pci_device *dev, unsigned bar, uint64_t offset, void *data,
			      unsigned size, bool is_write);

int pci_device_add_msix(struct pci_device *dev, unsigned bar, unsigned nr_vectors)
{
	if (nr_vectors == 0 || nr_vectors > PCI_MSIX_MAX_VECTORS)
		return -EINVAL;
	int ret = pci_device_add_bar(dev, bar, PCI_MSIX_BAR_SIZE, false, pci_msix_table_io);
	if (ret < 0)
		return ret;
	uint8_t cap = pci_device_add_capability(dev, PCI_CAP_ID_MSIX, 12);
	if (!cap)
		return -ENOSPC;
	put16(dev->config + cap + 2, (uint16_t)(nr_vectors - 1));
	put16(dev->wmask + cap + 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
	put32(dev->config + cap + 4, 0 | bar); /* table at offset 0 of the BAR */
	put32(dev->config + cap + 8, PCI_MSIX_PBA_OFFSET | bar);
	dev->msix.nr_vectors = nr_vectors;
	dev->msix.bar = bar;
	dev->msix.cap = cap;
	for (unsigned i = 0; i < nr_vectors; i++)
		dev->msix.table[i][3] = PCI_MSIX_ENTRY_CTRL_MASKBIT; /* masked at reset (§6.8.2.9) */
	return 0;
}

uint64_t pci_bar_address(const struct pci_device *dev, unsigned bar)
{
	uint64_t addr = get32(dev->config + PCI_BAR0 + 4 * bar) & ~0xFull;
	if (dev->bars[bar].is64)
		addr |= (uint64_t)get32(dev->config + PCI_BAR0 + 4 * (bar + 1)) << 32;
	return addr;
}

static void pci_bar_bus_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pci_bar *b = owner;
	b->io(b->dev, b->index, offset, data, size, is_write);
}

/* Make the MMIO bus match the BARs and the command register. Called with config_lock held. */
static void pci_device_update_mappings(struct pci_device *dev)
{
	struct pci_host *host = dev->host;
	bool decode = get16(dev->config + PCI_COMMAND) & PCI_COMMAND_MEMORY;
	for (unsigned i = 0; i < PCI_NR_BARS; i++) {
		struct pci_bar *b = &dev->bars[i];
		if (!b->size)
			continue;
		uint64_t addr = pci_bar_address(dev, i);
		bool want = decode && addr != 0 && addr + b->size > addr;
		if (b->mapped && (!want || b->mapped_addr != addr)) {
			bus_unregister(host->mmio, b->mapped_addr, b);
			b->mapped = false;
			if (dev->bar_map)
				dev->bar_map(dev, i, b->mapped_addr, false);
		}
		/* A BAR the guest put over another range (or over the sizing pattern while decode
		 * is on) simply does not decode, as on a real bus with a conflict. */
		if (want && !b->mapped &&
		    bus_register(host->mmio, addr, b->size, b, pci_bar_bus_io, dev->name) == 0) {
			b->mapped = true;
			b->mapped_addr = addr;
			if (dev->bar_map)
				dev->bar_map(dev, i, addr, true);
		}
	}
}

/* Re-impose the size alignment and flag bits of every BAR after the guest wrote to one. */
static void pci_device_normalise_bars(struct pci_device *dev)
{
	for (unsigned i = 0; i < PCI_NR_BARS; i++) {
		struct pci_bar *b = &dev->bars[i];
		uint8_t *lo = dev->config + PCI_BAR0 + 4 * i;
		if (!b->size) {
			bool upper = i > 0 && dev->bars[i - 1].size && dev->bars[i - 1].is64;
			if (!upper)
				put32(lo, 0);
			continue;
		}
		uint32_t flags = (b->is64 ? PCI_BAR_MEM_64 : 0) | (b->prefetch ? PCI_BAR_MEM_PREFETCH : 0);
		uint64_t mask = ~(b->size - 1);
		put32(lo, (get32(lo) & (uint32_t)mask & ~0xFu) | flags);
		if (b->is64)
			put32(lo + 4, get32(lo + 4) & (uint32_t)(mask >> 32));
	}
}

static void pci_msix_deliver_pending(struct pci_device *dev);

static void pci_device_config_write(struct pci_device *dev, unsigned reg, const uint8_t *data,
				    unsigned size)
{
	bool bars = false, command = false, msix = false;
	unsigned msix_ctl = dev->msix.nr_vectors ? dev->msix.cap + 2u : 0;
	for (unsigned i = 0; i < size && reg + i < PCI_CONFIG_SIZE; i++) {
		unsigned r = reg + i;
		if (r >= PCI_BAR0 && r < PCI_BAR0 + 4 * PCI_NR_BARS) {
			dev->config[r] = data[i];
			bars = true;
			continue;
		}
		dev->config[r] = (uint8_t)((dev->config[r] & ~dev->wmask[r]) | (data[i] & dev->wmask[r]));
		command |= r == PCI_COMMAND || r == PCI_COMMAND + 1;
		msix |= msix_ctl && (r == msix_ctl || r == msix_ctl + 1);
	}
	if (bars)
		pci_device_normalise_bars(dev);
	if (bars || command)
		pci_device_update_mappings(dev);
	if (msix)
		pci_msix_deliver_pending(dev);
}

void pci_config_access(struct pci_host *host, unsigned bus, unsigned devfn, unsigned reg,
		       void *data, unsigned size, bool is_write)
{
	struct pci_device *dev = NULL;
	if (bus == 0 && (devfn & 7) == 0 && (devfn >> 3) < PCI_MAX_DEVICES)
		dev = host->devices[devfn >> 3];
	uint8_t *bytes = data;
	pthread_mutex_lock(&host->config_lock);
	if (!dev) {
		if (!is_write)
			memset(data, 0xFF, size);
	} else if (dev->config_hook && reg >= dev->hook_start && reg < dev->hook_end) {
		dev->config_hook(dev, reg, data, size, is_write);
	} else if (is_write) {
		pci_device_config_write(dev, reg, bytes, size);
	} else {
		for (unsigned i = 0; i < size; i++)
			bytes[i] = reg + i < PCI_CONFIG_SIZE ? dev->config[reg + i] : 0;
	}
	pthread_mutex_unlock(&host->config_lock);
	if (host->trace && (host->trace->mask >> TRACE_PCI) & 1u) {
		unsigned long long v = 0;
		for (unsigned i = 0; i < size && i < 8; i++)
			v |= (unsigned long long)bytes[i] << (8 * i);
		trace_write(host->trace, TRACE_PCI, TRACE_HOST, "config %s %02x:%02x.%x reg 0x%03x size %u value 0x%llx%s",
			    is_write ? "write" : "read", bus, devfn >> 3, devfn & 7, reg, size, v,
			    dev ? "" : " (no device)");
	}
}

/* Mechanism #1: 0xCF8 holds enable(31) | bus(23:16) | device(15:11) | function(10:8) | reg(7:2). */
static void pci_address_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pci_host *host = owner;
	(void)offset;
	if (size != 4) { /* byte accesses to 0xCF8 are not part of mechanism #1 */
		if (!is_write)
			memset(data, 0xFF, size);
		return;
	}
	pthread_mutex_lock(&host->config_lock);
	if (is_write)
		host->config_address = get32(data) & 0x80FFFFFCu;
	else
		put32(data, host->config_address);
	pthread_mutex_unlock(&host->config_lock);
}

static void pci_data_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pci_host *host = owner;
	pthread_mutex_lock(&host->config_lock);
	uint32_t addr = host->config_address;
	pthread_mutex_unlock(&host->config_lock);
	if (!(addr & 0x80000000u) || offset + size > 4) {
		if (!is_write)
			memset(data, 0xFF, size);
		return;
	}
	pci_config_access(host, (addr >> 16) & 0xFF, (addr >> 8) & 0xFF,
			  (addr & 0xFC) + (unsigned)offset, data, size, is_write);
}

/* PCIe ECAM: bus(27:20) | device(19:15) | function(14:12) | register(11:0). */
static void pci_ecam_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pci_host *host = owner;
	unsigned reg = offset & 0xFFF;
	if (size > 4 || reg + size > 0x1000) { /* no 8-byte or page-crossing configuration cycles */
		__atomic_fetch_add(&host->bad_config_accesses, 1, __ATOMIC_RELAXED);
		if (!is_write)
			memset(data, 0xFF, size);
		return;
	}
	pci_config_access(host, (unsigned)(offset >> 20) & 0xFF, (unsigned)(offset >> 12) & 0xFF, reg,
			  data, size, is_write);
}

int pci_device_register(struct pci_host *host, struct pci_device *dev)
{
	unsigned slot = 0;
	while (slot < PCI_MAX_DEVICES && host->devices[slot])
		slot++;
	if (slot == PCI_MAX_DEVICES)
		return -ENOSPC;
	for (unsigned i = 0; i < PCI_NR_BARS; i++) {
		struct pci_bar *b = &dev->bars[i];
		if (!b->size)
			continue;
		uint64_t *next = b->is64 ? &host->mmio64_next : &host->mmio32_next;
		uint64_t limit = b->is64 ? host->mmio64_base + PCI_MMIO64_SIZE
					 : PCI_MMIO32_BASE + PCI_MMIO32_SIZE;
		uint64_t addr = align_up(*next, b->size);
		if (addr + b->size > limit)
			return -ENOSPC;
		*next = addr + b->size;
		put32(dev->config + PCI_BAR0 + 4 * i, (uint32_t)addr);
		if (b->is64)
			put32(dev->config + PCI_BAR0 + 4 * (i + 1), (uint32_t)(addr >> 32));
	}
	pci_device_normalise_bars(dev);
	dev->host = host;
	dev->slot = slot;
	pthread_mutex_lock(&host->config_lock);
	/* Firmware leaves memory decoding on, so simple guests can use the BARs as placed. */
	put16(dev->config + PCI_COMMAND, get16(dev->config + PCI_COMMAND) | PCI_COMMAND_MEMORY);
	host->devices[slot] = dev;
	pci_device_update_mappings(dev);
	pthread_mutex_unlock(&host->config_lock);
	return 0;
}

int pci_host_init(struct pci_host *host, struct bus *pio, struct bus *mmio, uint64_t mmio64_base,
		  pci_msi_fn msi, void *msi_opaque)
{
	memset(host, 0, sizeof(*host));
	host->pio = pio;
	host->mmio = mmio;
	host->msi = msi;
	host->msi_opaque = msi_opaque;
	host->mmio32_next = PCI_MMIO32_BASE;
	host->mmio64_base = host->mmio64_next = mmio64_base;
	pthread_mutex_init(&host->config_lock, NULL);
	/* 00:00.0: a PCIe host bridge (Red Hat's ID for a generic virtual host bridge). */
	pci_device_init(&host->bridge, "pci-host", 0x1B36, 0x0008, 0x060000, 0, 0x1AF4, 0x1100);
	int ret = pci_device_register(host, &host->bridge);
	if (ret == 0)
		ret = bus_register(pio, PCI_CONFIG_ADDRESS_PORT, 1, host, pci_address_io, "pci-address");
	if (ret == 0)
		ret = bus_register(pio, PCI_CONFIG_DATA_PORT, 4, host, pci_data_io, "pci-data");
	if (ret == 0)
		ret = bus_register(mmio, PCI_ECAM_BASE, PCI_ECAM_SIZE, host, pci_ecam_io, "pci-ecam");
	return ret;
}

void pci_host_destroy(struct pci_host *host)
{
	bus_unregister(host->pio, PCI_CONFIG_ADDRESS_PORT, host);
	bus_unregister(host->pio, PCI_CONFIG_DATA_PORT, host);
	bus_unregister(host->mmio, PCI_ECAM_BASE, host);
	for (unsigned s = 0; s < PCI_MAX_DEVICES; s++) {
		struct pci_device *dev = host->devices[s];
		if (!dev)
			continue;
		for (unsigned i = 0; i < PCI_NR_BARS; i++)
			if (dev->bars[i].mapped)
				bus_unregister(host->mmio, dev->bars[i].mapped_addr, &dev->bars[i]);
		pthread_mutex_destroy(&dev->msix_lock);
		host->devices[s] = NULL;
	}
	pthread_mutex_destroy(&host->config_lock);
}

/* ---- MSI-X ---- */

/* The control word changes only under config_lock; readers elsewhere load its bytes atomically
 * (a race with the guest toggling it is the guest's own race, as on hardware). */
static uint16_t pci_msix_control(struct pci_device *dev)
{
	const uint8_t *p = dev->config + dev->msix.cap + 2;
	return (uint16_t)(__atomic_load_n(&p[0], __ATOMIC_RELAXED) |
			  __atomic_load_n(&p[1], __ATOMIC_RELAXED) << 8);
}

/* Called with msix_lock held. */
static bool pci_msix_try_send(struct pci_device *dev, unsigned v, uint16_t control)
{
	struct pci_msix *m = &dev->msix;
	if ((control & PCI_MSIX_FLAGS_MASKALL) || (m->table[v][3] & PCI_MSIX_ENTRY_CTRL_MASKBIT)) {
		m->pending[v / 64] |= 1ull << (v % 64);
		return false;
	}
	m->pending[v / 64] &= ~(1ull << (v % 64));
	uint64_t addr = m->table[v][0] | (uint64_t)m->table[v][1] << 32;
	if (dev->host->msi(dev->host->msi_opaque, addr, m->table[v][2]) < 0)
		m->dropped++;
	else
		m->sent++;
	return true;
}

/* After an unmask (function or vector): send what became deliverable. */
static void pci_msix_deliver_pending(struct pci_device *dev)
{
	struct pci_msix *m = &dev->msix;
	uint16_t control = pci_msix_control(dev);
	pthread_mutex_lock(&dev->msix_lock);
	if (control & PCI_MSIX_FLAGS_ENABLE)
		for (unsigned v = 0; v < m->nr_vectors; v++)
			if (m->pending[v / 64] & (1ull << (v % 64)))
				pci_msix_try_send(dev, v, control);
	pthread_mutex_unlock(&dev->msix_lock);
}

bool pci_msix_enabled(struct pci_device *dev)
{
	return dev->msix.nr_vectors && (pci_msix_control(dev) & PCI_MSIX_FLAGS_ENABLE);
}

int pci_msix_notify(struct pci_device *dev, unsigned vector)
{
	struct pci_msix *m = &dev->msix;
	if (vector >= m->nr_vectors)
		return -ENOENT;
	uint16_t control = pci_msix_control(dev);
	if (!(control & PCI_MSIX_FLAGS_ENABLE))
		return -ENOENT;
	pthread_mutex_lock(&dev->msix_lock);
	pci_msix_try_send(dev, vector, control);
	pthread_mutex_unlock(&dev->msix_lock);
	return 0;
}

static void pci_msix_table_io(struct pci_device *dev, unsigned bar, uint64_t offset, void *data,
			      unsigned size, bool is_write)
{
	struct pci_msix *m = &dev->msix;
	(void)bar;
	/* Table and PBA are accessed as aligned dwords or qwords (§6.8.2). */
	if ((size != 4 && size != 8) || (offset & (size - 1))) {
		if (!is_write)
			memset(data, 0xFF, size);
		return;
	}
	pthread_mutex_lock(&dev->msix_lock);
	for (unsigned part = 0; part < size / 4; part++) {
		uint64_t off = offset + 4 * part;
		uint8_t *d = (uint8_t *)data + 4 * part;
		if (off < (uint64_t)m->nr_vectors * PCI_MSIX_ENTRY_SIZE) {
			unsigned v = (unsigned)(off / PCI_MSIX_ENTRY_SIZE), w = (unsigned)(off % 16) / 4;
			if (!is_write) {
				put32(d, m->table[v][w]);
				continue;
			}
			m->table[v][w] = w == 3 ? get32(d) & PCI_MSIX_ENTRY_CTRL_MASKBIT : get32(d);
			if (w == 3 && !(m->table[v][3] & PCI_MSIX_ENTRY_CTRL_MASKBIT) &&
			    (m->pending[v / 64] & (1ull << (v % 64)))) {
				uint16_t control = pci_msix_control(dev);
				if (control & PCI_MSIX_FLAGS_ENABLE)
					pci_msix_try_send(dev, v, control);
			}
		} else if (off >= PCI_MSIX_PBA_OFFSET &&
			   off < PCI_MSIX_PBA_OFFSET + (m->nr_vectors + 63) / 64 * 8) {
			unsigned word = (unsigned)(off - PCI_MSIX_PBA_OFFSET) / 4;
			if (!is_write)
				put32(d, (uint32_t)(m->pending[word / 2] >> (32 * (word % 2))));
		} else if (!is_write) {
			put32(d, 0);
		}
	}
	pthread_mutex_unlock(&dev->msix_lock);
}
