/* ACPI 6.5 tables (§5.2). Built once at start into the 0xE0000 area so that both the boot-params
 * pointer and the legacy RSDP scan find them. */
#include "acpi/acpi.h"

#include <string.h>

#include "acpi/aml.h"
#include "pci/pci_acpi.h"

#define ACPI_OEM_ID "VMMLOL"
#define ACPI_OEM_TABLE "VMMPLAT0"
#define ACPI_HDR_LEN 36

struct acpi_writer {
	uint8_t *buf;
	size_t cap, len;
	uint64_t gpa;
};

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

uint8_t acpi_checksum(const uint8_t *data, size_t len)
{
	uint8_t sum = 0;
	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + data[i]);
	return sum;
}

/* Reserve len bytes aligned to align; NULL when out of space. */
static uint8_t *acpi_alloc(struct acpi_writer *w, size_t len, size_t align)
{
	size_t at = (w->len + align - 1) & ~(align - 1);
	if (at > w->cap || len > w->cap - at)
		return NULL;
	memset(w->buf + at, 0, len);
	w->len = at + len;
	return w->buf + at;
}

static uint64_t acpi_gpa(const struct acpi_writer *w, const uint8_t *p)
{
	return w->gpa + (uint64_t)(p - w->buf);
}

static void acpi_header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
	memcpy(t, sig, 4);
	put32(t + 4, len);
	t[8] = rev;
	memcpy(t + 10, ACPI_OEM_ID, 6);
	memcpy(t + 16, ACPI_OEM_TABLE, 8);
	put32(t + 24, 1);
	memcpy(t + 28, "VMML", 4);
	put32(t + 32, 1);
}

static void acpi_seal(uint8_t *t)
{
	uint32_t len = (uint32_t)(t[4] | t[5] << 8 | t[6] << 16 | (uint32_t)t[7] << 24);
	t[9] = 0;
	t[9] = (uint8_t)(0x100 - acpi_checksum(t, len));
}

/* Generic Address Structure (§5.2.3.2) for a system I/O port block. */
static void acpi_gas_io(uint8_t *p, uint16_t port, uint8_t bits)
{
	p[0] = 1; /* system I/O */
	p[1] = bits;
	p[2] = 0;
	p[3] = bits >= 32 ? 3 : bits >= 16 ? 2 : 1; /* access size: dword, word, byte */
	put64(p + 4, port);
}

static uint8_t *acpi_build_dsdt(struct acpi_writer *w, const struct acpi_config *cfg)
{
	uint8_t aml_buf[1024];
	struct aml a;
	aml_init(&a, aml_buf, sizeof(aml_buf));
	/* Name (_S5, Package () { 5, 5, 0, 0 }): SLP_TYPa/b for soft-off (§7.4.2). */
	aml_byte(&a, 0x08);
	aml_name_string(&a, "_S5_");
	size_t pkg = aml_open(&a, (const uint8_t[]){ 0x12 }, 1);
	aml_byte(&a, 4);
	aml_integer(&a, ACPI_S5_TYPE);
	aml_integer(&a, ACPI_S5_TYPE);
	aml_integer(&a, 0);
	aml_integer(&a, 0);
	aml_close(&a, pkg);
	/* Scope (\_SB) { Device (PEVT) { _HID "QEMU0001", _CRS IO 0x505 } }: the pvpanic device
	 * as QEMU describes it, so Linux's pvpanic driver binds to it. */
	size_t scope = aml_open(&a, (const uint8_t[]){ 0x10 }, 1);
	aml_name_string(&a, "\\_SB_");
	size_t dev = aml_open(&a, (const uint8_t[]){ 0x5B, 0x82 }, 2);
	aml_name_string(&a, "PEVT");
	aml_byte(&a, 0x08);
	aml_name_string(&a, "_HID");
	aml_string(&a, "QEMU0001");
	aml_byte(&a, 0x08);
	aml_name_string(&a, "_CRS");
	size_t buf = aml_open(&a, (const uint8_t[]){ 0x11 }, 1);
	const uint8_t io[] = { 0x47, 0x01, ACPI_PVPANIC_PORT & 0xFF, ACPI_PVPANIC_PORT >> 8,
			       ACPI_PVPANIC_PORT & 0xFF, ACPI_PVPANIC_PORT >> 8, 1, 1, 0x79, 0 };
	aml_integer(&a, sizeof(io));
	aml_bytes(&a, io, sizeof(io));
	aml_close(&a, buf);
	aml_close(&a, dev);
	aml_close(&a, scope);
	if (cfg->pci)
		pci_acpi_write_dsdt(&a, cfg->pci);
	if (a.overflow)
		return NULL;
	uint8_t *t = acpi_alloc(w, ACPI_HDR_LEN + a.len, 16);
	if (!t)
		return NULL;
	acpi_header(t, "DSDT", (uint32_t)(ACPI_HDR_LEN + a.len), 2);
	memcpy(t + ACPI_HDR_LEN, aml_buf, a.len);
	acpi_seal(t);
	return t;
}

static uint8_t *acpi_build_fadt(struct acpi_writer *w, uint64_t facs, uint64_t dsdt)
{
	const uint32_t len = 276;
	uint8_t *t = acpi_alloc(w, len, 16);
	if (!t)
		return NULL;
	acpi_header(t, "FACP", len, 6);
	put32(t + 36, (uint32_t)facs);
	put32(t + 40, (uint32_t)dsdt);
	put16(t + 46, ACPI_SCI_IRQ);
	/* SMI_CMD (48) stays 0: the platform is always in ACPI mode. */
	put32(t + 56, ACPI_PM1_EVT_PORT);
	put32(t + 64, ACPI_PM1_CNT_PORT);
	put32(t + 76, ACPI_PM_TMR_PORT);
	t[88] = 4; /* PM1_EVT_LEN */
	t[89] = 2; /* PM1_CNT_LEN */
	t[91] = 4; /* PM_TMR_LEN */
	put16(t + 96, 101); /* C2 not supported */
	put16(t + 98, 1001); /* C3 not supported */
	t[108] = 0x32; /* CMOS century register */
	put16(t + 109, 1u << 2); /* IAPC_BOOT_ARCH: no VGA; no 8042 keyboard to probe */
	/* Flags: WBINVD, PROC_C1, SLP_BUTTON (none), RESET_REG_SUP. */
	put32(t + 112, (1u << 0) | (1u << 2) | (1u << 5) | (1u << 10));
	acpi_gas_io(t + 116, ACPI_RESET_PORT, 8);
	t[128] = ACPI_RESET_VALUE;
	t[131] = 5; /* FADT minor version */
	put64(t + 140, dsdt);
	acpi_gas_io(t + 148, ACPI_PM1_EVT_PORT, 32);
	acpi_gas_io(t + 172, ACPI_PM1_CNT_PORT, 16);
	acpi_gas_io(t + 208, ACPI_PM_TMR_PORT, 32);
	acpi_seal(t);
	return t;
}

static uint8_t *acpi_build_madt(struct acpi_writer *w, const struct acpi_config *cfg)
{
	uint32_t len = 44 + 8 * cfg->nr_cpus + 12 + 2 * 10 + 6;
	uint8_t *t = acpi_alloc(w, len, 16);
	if (!t)
		return NULL;
	acpi_header(t, "APIC", len, 5);
	put32(t + 36, ACPI_LAPIC_ADDR);
	put32(t + 40, 1); /* PCAT_COMPAT: 8259s present (masked by the guest) */
	uint8_t *p = t + 44;
	for (unsigned i = 0; i < cfg->nr_cpus; i++, p += 8) {
		p[0] = 0; /* Processor Local APIC */
		p[1] = 8;
		p[2] = (uint8_t)i; /* ACPI processor UID */
		p[3] = (uint8_t)i; /* APIC id */
		put32(p + 4, 1); /* enabled */
	}
	p[0] = 1; /* I/O APIC */
	p[1] = 12;
	p[2] = cfg->ioapic_id;
	put32(p + 4, ACPI_IOAPIC_ADDR);
	put32(p + 8, 0);
	p += 12;
	/* Interrupt source overrides: ISA IRQ 0 is GSI 2; the SCI is level, active high. */
	const struct { uint8_t irq; uint32_t gsi; uint16_t flags; } iso[2] = {
		{ 0, 2, 0 }, { ACPI_SCI_IRQ, ACPI_SCI_IRQ, 0x000D } };
	for (int i = 0; i < 2; i++, p += 10) {
		p[0] = 2;
		p[1] = 10;
		p[2] = 0;
		p[3] = iso[i].irq;
		put32(p + 4, iso[i].gsi);
		put16(p + 8, iso[i].flags);
	}
	p[0] = 4; /* Local APIC NMI on LINT1 of every processor */
	p[1] = 6;
	p[2] = 0xFF;
	put16(p + 3, 0);
	p[5] = 1;
	acpi_seal(t);
	return t;
}

long acpi_build(uint8_t *buf, size_t cap, uint64_t gpa, const struct acpi_config *cfg)
{
	struct acpi_writer w = { buf, cap, 0, gpa };
	uint8_t *rsdp = acpi_alloc(&w, 36, 16);
	const uint32_t nr_tables = cfg->pci ? 3 : 2;
	uint8_t *xsdt = acpi_alloc(&w, ACPI_HDR_LEN + nr_tables * 8, 16);
	uint8_t *facs = acpi_alloc(&w, 64, 64);
	uint8_t *dsdt = acpi_build_dsdt(&w, cfg);
	if (!rsdp || !xsdt || !facs || !dsdt)
		return -1;
	memcpy(facs, "FACS", 4);
	put32(facs + 4, 64);
	facs[32] = 2; /* version */
	uint8_t *fadt = acpi_build_fadt(&w, acpi_gpa(&w, facs), acpi_gpa(&w, dsdt));
	uint8_t *madt = acpi_build_madt(&w, cfg);
	if (!fadt || !madt)
		return -1;
	acpi_header(xsdt, "XSDT", ACPI_HDR_LEN + nr_tables * 8, 1);
	put64(xsdt + ACPI_HDR_LEN, acpi_gpa(&w, fadt));
	put64(xsdt + ACPI_HDR_LEN + 8, acpi_gpa(&w, madt));
	if (cfg->pci) { /* MCFG: where the PCIe ECAM window is */
		uint8_t *mcfg = acpi_alloc(&w, ACPI_HDR_LEN + PCI_ACPI_MCFG_BODY, 16);
		if (!mcfg)
			return -1;
		acpi_header(mcfg, "MCFG", ACPI_HDR_LEN + PCI_ACPI_MCFG_BODY, 1);
		pci_acpi_mcfg_body(mcfg + ACPI_HDR_LEN, cfg->pci);
		acpi_seal(mcfg);
		put64(xsdt + ACPI_HDR_LEN + 16, acpi_gpa(&w, mcfg));
	}
	acpi_seal(xsdt);
	/* RSDP (§5.2.5.3), revision 2: the first 20 bytes and all 36 each sum to zero. */
	memcpy(rsdp, "RSD PTR ", 8);
	memcpy(rsdp + 9, ACPI_OEM_ID, 6);
	rsdp[15] = 2;
	put32(rsdp + 20, 36);
	put64(rsdp + 24, acpi_gpa(&w, xsdt));
	rsdp[8] = (uint8_t)(0x100 - acpi_checksum(rsdp, 20));
	rsdp[32] = (uint8_t)(0x100 - acpi_checksum(rsdp, 36));
	return (long)w.len;
}
