/* ACPI tables for the platform of docs/platform.md: RSDP, XSDT, FADT, FACS, MADT, DSDT. */
#ifndef VMM_ACPI_H
#define VMM_ACPI_H

#include <stddef.h>
#include <stdint.h>

#define ACPI_PM1_EVT_PORT 0x600
#define ACPI_PM1_CNT_PORT 0x604
#define ACPI_PM_TMR_PORT 0x608
#define ACPI_RESET_PORT 0xCF9
#define ACPI_RESET_VALUE 0x06
#define ACPI_SCI_IRQ 9
#define ACPI_S5_TYPE 5
#define ACPI_PVPANIC_PORT 0x505
#define ACPI_IOAPIC_ADDR 0xFEC00000u
#define ACPI_LAPIC_ADDR 0xFEE00000u

struct pci_acpi_info;

struct acpi_config {
	unsigned nr_cpus;
	uint8_t ioapic_id;
	const struct pci_acpi_info *pci; /* NULL: no PCI host bridge (no MCFG, no PCI0) */
};

/* Write the tables into buf, which the guest sees at guest-physical address gpa. The RSDP comes
 * first (offset 0). Returns the bytes used, or -1 when cap is too small. */
long acpi_build(uint8_t *buf, size_t cap, uint64_t gpa, const struct acpi_config *cfg);

/* Sum of bytes (tables are valid when the sum over their length is 0). */
uint8_t acpi_checksum(const uint8_t *data, size_t len);

#endif
