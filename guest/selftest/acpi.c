/*
 * ACPI: RSDP -> XSDT -> FADT (-> DSDT), MADT. Every table's checksum is verified. All tables
 * must lie below 4 GiB, where our identity mapping reaches.
 */
#include "acpi.h"
#include "io.h"
#include "lib.h"

#define RSDP_V1_LENGTH 20
#define RSDP_V2_LENGTH 36
#define TABLE_LENGTH_LIMIT (16 * MiB) /* guards the checksum loop against garbage lengths */
#define SCAN_START 0xE0000
#define SCAN_END 0x100000

/* FADT field offsets (ACPI 6.x §5.2.9) */
#define FADT_DSDT 40
#define FADT_PM1A_CNT_BLK 64
#define FADT_PM_TMR_BLK 76
#define FADT_PM_TMR_LEN 91
#define FADT_FLAGS 112
#define FADT_X_DSDT 140
#define FADT_FLAG_TMR_VAL_EXT (1u << 8)

/* MADT (§5.2.12) */
#define MADT_LAPIC_ADDRESS 36
#define MADT_ENTRIES 44
#define MADT_LOCAL_APIC 0
#define MADT_IO_APIC 1
#define MADT_IRQ_OVERRIDE 2
#define MADT_LOCAL_X2APIC 9
#define MADT_CPU_ENABLED 1u

/* AML opcodes used to read \_S5_ (§20.3) */
#define AML_ZERO 0x00
#define AML_ONE 0x01
#define AML_BYTE_PREFIX 0x0A
#define AML_PACKAGE 0x12

#define PM1_SLP_TYP_SHIFT 10
#define PM1_SLP_EN (1u << 13)

static void acpi_error(struct acpi_info *acpi, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void acpi_error(struct acpi_info *acpi, const char *fmt, ...)
{
	va_list ap;

	if (acpi->error[0])
		return;
	va_start(ap, fmt);
	vformat(acpi->error, sizeof(acpi->error), fmt, ap);
	va_end(ap);
}

static uint8_t acpi_sum(const void *p, uint32_t len)
{
	const uint8_t *b = p;
	uint8_t sum = 0;

	while (len--)
		sum += *b++;
	return sum;
}

static uint32_t read32(const void *base, unsigned offset)
{
	uint32_t v;

	memcpy(&v, (const uint8_t *)base + offset, sizeof(v));
	return v;
}

static uint64_t read64(const void *base, unsigned offset)
{
	uint64_t v;

	memcpy(&v, (const uint8_t *)base + offset, sizeof(v));
	return v;
}

static bool rsdp_valid(uint64_t address)
{
	const uint8_t *p = (const uint8_t *)address;

	return !memcmp(p, "RSD PTR ", 8) && acpi_sum(p, RSDP_V1_LENGTH) == 0;
}

/* Legacy discovery: the RSDP is on a 16-byte boundary in the BIOS area (§5.2.5.1). */
static uint64_t rsdp_scan(void)
{
	for (uint64_t a = SCAN_START; a < SCAN_END; a += 16)
		if (rsdp_valid(a))
			return a;
	return 0;
}

static bool acpi_find_rsdp(struct acpi_info *acpi, uint64_t hint)
{
	if (hint && hint < 4 * GiB && rsdp_valid(hint)) {
		acpi->rsdp = hint;
		return true;
	}
	if (hint)
		acpi_error(acpi, "boot info RSDP address 0x%lx holds no valid RSDP", hint);
	acpi->rsdp = rsdp_scan();
	acpi->rsdp_from_scan = true;
	if (!acpi->rsdp)
		acpi_error(acpi, "no RSDP in 0xE0000-0xFFFFF");
	return acpi->rsdp != 0;
}

/* A table address from another table: mapped, plausible length, matching checksum. */
static const struct acpi_header *acpi_table(struct acpi_info *acpi, uint64_t address,
					    const char *what)
{
	const struct acpi_header *t = (const void *)address;

	if (address == 0 || address >= 4 * GiB) {
		acpi_error(acpi, "%s at 0x%lx is not below 4 GiB", what, address);
		return 0;
	}
	if (t->length < sizeof(*t) || t->length > TABLE_LENGTH_LIMIT ||
	    address + t->length > 4 * GiB) {
		acpi_error(acpi, "%s at 0x%lx has bad length %u", what, address, t->length);
		return 0;
	}
	if (acpi_sum(t, t->length) != 0) {
		acpi_error(acpi, "%s (%.4s) checksum bad", what, t->signature);
		return 0;
	}
	return t;
}

static const struct acpi_header *acpi_root(struct acpi_info *acpi)
{
	const uint8_t *rsdp = (const uint8_t *)acpi->rsdp;
	uint8_t revision = rsdp[15];

	if (revision < 2)
		return acpi_table(acpi, read32(rsdp, 16), "RSDT");
	uint32_t length = read32(rsdp, 20);
	if (length < RSDP_V2_LENGTH || acpi_sum(rsdp, length) != 0) {
		acpi_error(acpi, "RSDP extended checksum bad (length %u)", length);
		return 0;
	}
	const struct acpi_header *xsdt = acpi_table(acpi, read64(rsdp, 24), "XSDT");
	if (xsdt && memcmp(xsdt->signature, "XSDT", 4))
		acpi_error(acpi, "XSDT signature is %.4s", xsdt->signature);
	return xsdt;
}

static void acpi_parse_fadt(struct acpi_info *acpi, const struct acpi_header *fadt)
{
	uint64_t dsdt = read32(fadt, FADT_DSDT);

	if (fadt->length >= FADT_X_DSDT + 8 && read64(fadt, FADT_X_DSDT))
		dsdt = read64(fadt, FADT_X_DSDT);
	acpi->dsdt = acpi_table(acpi, dsdt, "DSDT");
	if (acpi->dsdt && memcmp(acpi->dsdt->signature, "DSDT", 4))
		acpi_error(acpi, "FADT DSDT pointer leads to %.4s", acpi->dsdt->signature);
	acpi->pm1a_control_port = (uint16_t)read32(fadt, FADT_PM1A_CNT_BLK);
	if (((const uint8_t *)fadt)[FADT_PM_TMR_LEN] == 4)
		acpi->pm_timer_port = (uint16_t)read32(fadt, FADT_PM_TMR_BLK);
	if (fadt->length >= FADT_FLAGS + 4)
		acpi->pm_timer_32bit = read32(fadt, FADT_FLAGS) & FADT_FLAG_TMR_VAL_EXT;
}

static void madt_add_cpu(struct acpi_info *acpi, uint32_t apic_id, uint32_t flags)
{
	if (!(flags & MADT_CPU_ENABLED))
		return;
	if (acpi->cpu_count < MAX_CPUS)
		acpi->cpu_apic_ids[acpi->cpu_count] = apic_id;
	acpi->cpu_count++;
}

static void madt_add_override(struct acpi_info *acpi, const uint8_t *e)
{
	if (e[2] != 0 || acpi->override_count >= ACPI_MAX_OVERRIDES) /* bus 0 = ISA */
		return;
	acpi->overrides[acpi->override_count++] = (struct acpi_irq_override){
		.source = e[3], .gsi = read32(e, 4), .flags = (uint16_t)(e[8] | e[9] << 8)
	};
}

static void acpi_parse_madt(struct acpi_info *acpi, const struct acpi_header *madt)
{
	const uint8_t *base = (const uint8_t *)madt;

	acpi->lapic_address = read32(madt, MADT_LAPIC_ADDRESS);
	for (uint32_t off = MADT_ENTRIES; off + 2 <= madt->length;) {
		const uint8_t *e = base + off;
		uint8_t type = e[0], len = e[1];

		if (len < 2 || off + len > madt->length) {
			acpi_error(acpi, "MADT entry at offset %u has bad length %u", off, len);
			return;
		}
		if (type == MADT_LOCAL_APIC && len >= 8)
			madt_add_cpu(acpi, e[3], read32(e, 4));
		else if (type == MADT_LOCAL_X2APIC && len >= 16)
			madt_add_cpu(acpi, read32(e, 4), read32(e, 8));
		else if (type == MADT_IO_APIC && len >= 12 && !acpi->ioapic_address) {
			acpi->ioapic_address = read32(e, 4);
			acpi->ioapic_gsi_base = read32(e, 8);
		} else if (type == MADT_IRQ_OVERRIDE && len >= 10)
			madt_add_override(acpi, e);
		off += len;
	}
}

/* Decodes the integer at p: ZeroOp, OneOp or BytePrefix n. */
static bool aml_small_integer(const uint8_t *p, const uint8_t *end, uint8_t *value)
{
	if (p < end && (*p == AML_ZERO || *p == AML_ONE)) {
		*value = *p;
		return true;
	}
	if (p + 1 < end && *p == AML_BYTE_PREFIX) {
		*value = p[1];
		return true;
	}
	return false;
}

/* Name(_S5_, Package(n) { SLP_TYPa, ... }): find the name, then the first package element. */
static void acpi_parse_s5(struct acpi_info *acpi, const struct acpi_header *dsdt)
{
	const uint8_t *p = (const uint8_t *)dsdt + sizeof(*dsdt);
	const uint8_t *end = (const uint8_t *)dsdt + dsdt->length;

	for (; p + 4 < end; p++) {
		if (memcmp(p, "_S5_", 4) || p[4] != AML_PACKAGE)
			continue;
		const uint8_t *q = p + 5;
		q += 1 + (*q >> 6); /* PkgLength: bits 7:6 of the lead byte count extra bytes */
		q += 1;             /* NumElements */
		acpi->have_s5 = aml_small_integer(q, end, &acpi->s5_sleep_type);
		return;
	}
}

static void acpi_walk_root(struct acpi_info *acpi, const struct acpi_header *root)
{
	unsigned entry_size = memcmp(root->signature, "XSDT", 4) ? 4 : 8;
	uint32_t count = (root->length - sizeof(*root)) / entry_size;

	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *entry = (const uint8_t *)root + sizeof(*root) + i * entry_size;
		uint64_t address = entry_size == 8 ? read64(entry, 0) : read32(entry, 0);
		const struct acpi_header *t = acpi_table(acpi, address, "table");

		if (!t)
			continue;
		acpi->table_count++;
		if (!memcmp(t->signature, "FACP", 4) && !acpi->fadt)
			acpi->fadt = t;
		else if (!memcmp(t->signature, "APIC", 4) && !acpi->madt)
			acpi->madt = t;
	}
}

bool acpi_load(struct acpi_info *acpi, uint64_t rsdp_hint)
{
	memset(acpi, 0, sizeof(*acpi));
	if (!acpi_find_rsdp(acpi, rsdp_hint))
		return false;
	acpi->root = acpi_root(acpi);
	if (!acpi->root)
		return false;
	acpi_walk_root(acpi, acpi->root);
	if (acpi->fadt)
		acpi_parse_fadt(acpi, acpi->fadt);
	else
		acpi_error(acpi, "no FADT (FACP) in the root table");
	if (acpi->madt)
		acpi_parse_madt(acpi, acpi->madt);
	else
		acpi_error(acpi, "no MADT (APIC) in the root table");
	if (acpi->dsdt)
		acpi_parse_s5(acpi, acpi->dsdt);
	return !acpi->error[0];
}

void acpi_isa_irq_route(const struct acpi_info *acpi, uint8_t irq, uint32_t *gsi, uint16_t *flags)
{
	*gsi = irq;
	*flags = 0; /* conforms to the bus: ISA is edge-triggered, active high */
	for (uint32_t i = 0; i < acpi->override_count; i++) {
		if (acpi->overrides[i].source == irq) {
			*gsi = acpi->overrides[i].gsi;
			*flags = acpi->overrides[i].flags;
		}
	}
}

void acpi_poweroff(const struct acpi_info *acpi)
{
	if (!acpi->have_s5 || !acpi->pm1a_control_port)
		return;
	outw(acpi->pm1a_control_port,
	     (uint16_t)(acpi->s5_sleep_type << PM1_SLP_TYP_SHIFT | PM1_SLP_EN));
}
