/* PCI configuration space through the PCIe ECAM window the ACPI MCFG table describes. */
#ifndef SELFTEST_PCI_H
#define SELFTEST_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "acpi.h"
#include "io.h"

#define PCI_VENDOR_ID 0x00
#define PCI_DEVICE_ID 0x02
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_HEADER_TYPE 0x0E
#define PCI_BAR0 0x10
#define PCI_CAPABILITY_LIST 0x34
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_COMMAND_INTX_DISABLE 0x400
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_CAP_ID_VNDR 0x09
#define PCI_CAP_ID_MSIX 0x11

struct pci_func {
	uint64_t cfg; /* ECAM address of its configuration space */
	uint8_t bus, dev, fn;
	uint16_t vendor, device;
};

static inline uint8_t mmio_read8(uint64_t a) { return *(volatile uint8_t *)a; }
static inline uint16_t mmio_read16(uint64_t a) { return *(volatile uint16_t *)a; }
static inline void mmio_write8(uint64_t a, uint8_t v) { *(volatile uint8_t *)a = v; }
static inline void mmio_write16(uint64_t a, uint16_t v) { *(volatile uint16_t *)a = v; }

/* Finds MCFG and the ECAM window of segment 0 bus 0; false (and a reason in err) if none. */
bool pci_init(const struct acpi_info *acpi, char *err, unsigned err_size);
/* Every function on bus 0, at most max; returns how many. */
unsigned pci_scan(struct pci_func *out, unsigned max);
/* Memory BAR n's address (64-bit BARs combined); 0 if it is not a memory BAR. */
uint64_t pci_bar_address(const struct pci_func *f, unsigned bar);
/* First capability with this id after `after` (0: from the start); 0 if none. */
uint8_t pci_find_cap(const struct pci_func *f, uint8_t id, uint8_t after);

#endif
