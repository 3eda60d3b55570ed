/* The ACPI description of the PCI host bridge, used by acpi.c when the VM has PCI. */
#ifndef VMM_PCI_ACPI_H
#define VMM_PCI_ACPI_H

#include <stddef.h>
#include <stdint.h>

#include "acpi/aml.h"

struct pci_acpi_info {
	uint64_t ecam_base;
	uint8_t bus_end;
	uint64_t mmio32_base, mmio32_size;
	uint64_t mmio64_base, mmio64_size; /* size 0: no 64-bit window */
};

/* Scope (\_SB) { Device (PCI0) {...} Device (MRES) {...} } */
void pci_acpi_write_dsdt(struct aml *a, const struct pci_acpi_info *pci);

/* The MCFG table after its 36-byte header. */
#define PCI_ACPI_MCFG_BODY (8 + 16)
size_t pci_acpi_mcfg_body(uint8_t *out, const struct pci_acpi_info *pci);

#endif
