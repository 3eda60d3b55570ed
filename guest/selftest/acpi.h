/* ACPI table discovery and the few facts the checks need (ACPI 6.x §5.2). */
#ifndef SELFTEST_ACPI_H
#define SELFTEST_ACPI_H

#include <stdbool.h>
#include <stdint.h>

#include "layout.h"

#define ACPI_MAX_OVERRIDES 16

struct acpi_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	uint32_t creator_id;
	uint32_t creator_revision;
} __attribute__((packed));

struct acpi_irq_override {
	uint8_t source; /* ISA IRQ */
	uint32_t gsi;
	uint16_t flags; /* MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2 */
};

struct acpi_info {
	char error[160]; /* first problem found; "" if none */
	uint64_t rsdp;
	bool rsdp_from_scan;
	const struct acpi_header *root; /* XSDT, or RSDT for revision-0 RSDPs */
	const struct acpi_header *fadt, *madt, *dsdt;
	uint32_t table_count;

	/* FADT */
	uint16_t pm1a_control_port;
	uint16_t pm_timer_port;
	bool pm_timer_32bit;

	/* DSDT \_S5_ */
	bool have_s5;
	uint8_t s5_sleep_type;

	/* MADT */
	uint64_t lapic_address;
	uint32_t cpu_count; /* enabled Local APIC / x2APIC entries */
	uint32_t cpu_apic_ids[MAX_CPUS];
	uint64_t ioapic_address; /* 0 if none */
	uint32_t ioapic_gsi_base;
	uint32_t override_count;
	struct acpi_irq_override overrides[ACPI_MAX_OVERRIDES];
};

/* Finds and validates every table; false (and acpi->error) on the first inconsistency,
 * but fills in as much as it could so later checks can still run. */
bool acpi_load(struct acpi_info *acpi, uint64_t rsdp_hint);

/* GSI and MPS flags for an ISA IRQ: the MADT override if any, else identity, edge, high. */
void acpi_isa_irq_route(const struct acpi_info *acpi, uint8_t irq, uint32_t *gsi, uint16_t *flags);

/* Writes SLP_TYP(S5) | SLP_EN to PM1a_CNT. Returns only if the platform ignored it. */
void acpi_poweroff(const struct acpi_info *acpi);

#endif
