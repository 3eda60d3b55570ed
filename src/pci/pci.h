/* PCI: one host bridge (segment 0, bus 0) with configuration space through ports 0xCF8/0xCFC
 * (mechanism #1) and through the PCIe ECAM window, BARs placed by the monitor in the 32-bit MMIO
 * window (or the 64-bit window above RAM), and MSI-X (PCI Local Bus 3.0 §6.8.2).
 *
 * Only conventional type-0 functions at function 0 of bus 0; no INTx (devices use MSI-X).
 * docs/platform.md holds the addresses. */
#ifndef VMM_PCI_H
#define VMM_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "bus.h"

#define PCI_MMIO32_BASE 0xC0000000ull
#define PCI_MMIO32_SIZE 0x20000000ull
#define PCI_ECAM_BASE 0xE0000000ull
#define PCI_ECAM_SIZE 0x10000000ull /* 256 buses × 32 devices × 8 functions × 4 KiB */
#define PCI_MMIO64_SIZE (16ull << 30)
#define PCI_CONFIG_ADDRESS_PORT 0xCF8
#define PCI_CONFIG_DATA_PORT 0xCFC
#define PCI_MAX_DEVICES 32
#define PCI_NR_BARS 6
#define PCI_CONFIG_SIZE 256

/* Configuration header offsets (type 0). */
#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_REVISION_ID 0x08
#define PCI_CLASS_PROG 0x09
#define PCI_HEADER_TYPE 0x0E
#define PCI_BAR0 0x10
#define PCI_SUBSYSTEM_VENDOR_ID 0x2C
#define PCI_SUBSYSTEM_ID 0x2E
#define PCI_ROM_ADDRESS 0x30
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3C
#define PCI_INTERRUPT_PIN 0x3D

#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS_CAP_LIST 0x10

#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11

#define PCI_BAR_MEM_64 0x4
#define PCI_BAR_MEM_PREFETCH 0x8

/* MSI-X (PCI 3.0 §6.8.2): message control bits, table entry layout. */
#define PCI_MSIX_FLAGS_ENABLE 0x8000
#define PCI_MSIX_FLAGS_MASKALL 0x4000
#define PCI_MSIX_ENTRY_SIZE 16
#define PCI_MSIX_ENTRY_CTRL_MASKBIT 0x1
#define PCI_MSIX_MAX_VECTORS 128
#define PCI_MSIX_BAR_SIZE 0x1000 /* table at 0, pending-bit array at PCI_MSIX_PBA_OFFSET */
#define PCI_MSIX_PBA_OFFSET 0x800

struct pci_device;
struct pci_host;

/* Access to a memory BAR; offset is relative to the BAR. Called from vCPU threads. */
typedef void (*pci_bar_io_fn)(struct pci_device *dev, unsigned bar, uint64_t offset, void *data,
			      unsigned size, bool is_write);
/* A BAR appeared at addr (mapped true) or went away (mapped false): ioeventfds follow it. */
typedef void (*pci_bar_map_fn)(struct pci_device *dev, unsigned bar, uint64_t addr, bool mapped);
/* A device-owned stretch of configuration space (e.g. virtio's PCI-cfg access window). */
typedef void (*pci_config_fn)(struct pci_device *dev, unsigned offset, void *data, unsigned size,
			      bool is_write);

struct pci_bar {
	uint64_t size; /* power of two, 0 = unused */
	bool is64, prefetch;
	pci_bar_io_fn io;
	/* What is registered on the MMIO bus now. */
	bool mapped;
	uint64_t mapped_addr;
	struct pci_device *dev; /* back pointer for the bus callback */
	unsigned index;
};

struct pci_msix {
	unsigned nr_vectors; /* 0: no MSI-X */
	unsigned bar;
	uint8_t cap; /* capability offset */
	uint32_t table[PCI_MSIX_MAX_VECTORS][4]; /* addr lo, addr hi, data, vector control */
	uint64_t pending[PCI_MSIX_MAX_VECTORS / 64];
	uint64_t sent, dropped; /* stats */
};

struct pci_device {
	struct pci_host *host;
	const char *name;
	unsigned slot;
	void *opaque; /* the device model's own state */
	uint8_t config[PCI_CONFIG_SIZE]; /* little-endian, as the guest sees it */
	uint8_t wmask[PCI_CONFIG_SIZE]; /* bits the guest may change (BARs are handled apart) */
	uint8_t next_cap; /* where the next capability goes */
	struct pci_bar bars[PCI_NR_BARS];
	pci_bar_map_fn bar_map;
	/* [hook_start, hook_end) of configuration space is passed to config_hook after the write. */
	unsigned hook_start, hook_end;
	pci_config_fn config_hook;
	struct pci_msix msix;
	pthread_mutex_t msix_lock; /* guards msix: table writes (vCPUs) vs. interrupts (loop) */
};

/* Sends an MSI; the VM's backend (irq_msi), or a fake in tests. */
typedef int (*pci_msi_fn)(void *opaque, uint64_t address, uint32_t data);

struct pci_host {
	struct bus *pio, *mmio;
	pci_msi_fn msi;
	void *msi_opaque;
	pthread_mutex_t config_lock; /* guards config_address and every configuration access */
	uint32_t config_address; /* port 0xCF8 */
	struct pci_device *devices[PCI_MAX_DEVICES];
	struct pci_device bridge; /* 00:00.0 */
	uint64_t mmio32_next, mmio64_base, mmio64_next;
	uint64_t bad_config_accesses;
	const struct trace *trace; /* the VM's (category pci), or NULL */
};

/* Registers 0xCF8/0xCFC on pio and the ECAM window on mmio; the 64-bit window starts at
 * mmio64_base (above RAM). 0 or a negative errno. */
int pci_host_init(struct pci_host *host, struct bus *pio, struct bus *mmio, uint64_t mmio64_base,
		  pci_msi_fn msi, void *msi_opaque);
void pci_host_destroy(struct pci_host *host);

/* Start a function: identity fields, INTx pin none. The caller then adds BARs and capabilities
 * and calls pci_device_register(). */
void pci_device_init(struct pci_device *dev, const char *name, uint16_t vendor, uint16_t device,
		     uint32_t class_code, uint8_t revision, uint16_t subsys_vendor, uint16_t subsys_id);
/* A memory BAR of `size` bytes (a power of two, at least 16). 0 or -EINVAL. */
int pci_device_add_bar(struct pci_device *dev, unsigned bar, uint64_t size, bool is64,
		       pci_bar_io_fn io);
/* Append a capability of len bytes with the given id; returns its offset (0 when full). */
uint8_t pci_device_add_capability(struct pci_device *dev, uint8_t id, uint8_t len);
/* MSI-X with nr_vectors vectors, its table and PBA in BAR `bar` (PCI_MSIX_BAR_SIZE bytes). */
int pci_device_add_msix(struct pci_device *dev, unsigned bar, unsigned nr_vectors);
/* Place the BARs (as firmware would), take a slot, and become visible. 0 or a negative errno. */
int pci_device_register(struct pci_host *host, struct pci_device *dev);

/* Send MSI-X vector `vector` (or mark it pending while masked). 0, or -ENOENT when MSI-X is off
 * or the vector does not exist (the caller falls back or drops the interrupt). */
int pci_msix_notify(struct pci_device *dev, unsigned vector);
bool pci_msix_enabled(struct pci_device *dev);

/* Configuration access by bus/device/function/register, as both mechanisms do it. Reads of
 * absent functions return all ones. Exposed for tests. */
void pci_config_access(struct pci_host *host, unsigned bus, unsigned devfn, unsigned reg,
		       void *data, unsigned size, bool is_write);

/* Current guest-programmed address of a BAR (without the flag bits). */
uint64_t pci_bar_address(const struct pci_device *dev, unsigned bar);

#endif
