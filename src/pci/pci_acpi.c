/* How ACPI describes the PCI host bridge: the MCFG table (PCI Firmware 3.2 §4.1.2) and, in the
 * DSDT, the host bridge device with its resource windows (ACPI 6.5 §6.4.3.5 address space
 * descriptors) and a motherboard-resource device that reserves the ECAM window. */
#include "pci/pci_acpi.h"

#include <string.h>

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

/* EISA id "PNPxxxx" as a 32-bit integer (compressed vendor, then the product nibbles). */
static uint32_t eisa_id(const char *id)
{
	uint16_t vendor = (uint16_t)(((id[0] - 0x40) & 0x1F) << 10 | ((id[1] - 0x40) & 0x1F) << 5 |
				     ((id[2] - 0x40) & 0x1F));
	uint32_t product = 0;
	for (int i = 3; i < 7; i++) {
		char c = id[i];
		product = product << 4 | (uint32_t)(c <= '9' ? c - '0' : c - 'A' + 10);
	}
	return (uint32_t)(vendor >> 8) | (uint32_t)(vendor & 0xFF) << 8 |
	       (product >> 8 & 0xFF) << 16 | (product & 0xFF) << 24;
}

static void aml_name_integer(struct aml *a, const char *name, uint64_t v)
{
	aml_byte(a, 0x08); /* NameOp */
	aml_name_string(a, name);
	aml_integer(a, v);
}

/* Word address space descriptor: bus numbers (type 2) or I/O (type 1), producer, min/max fixed. */
static void res_word(uint8_t *p, uint8_t type, uint8_t type_flags, uint16_t min, uint16_t max)
{
	memset(p, 0, 16);
	p[0] = 0x88;
	put16(p + 1, 13);
	p[3] = type;
	p[4] = 0x0C; /* _MAF | _MIF, producer */
	p[5] = type_flags;
	put16(p + 8, min);
	put16(p + 10, max);
	put16(p + 14, (uint16_t)(max - min + 1));
}

static void res_dword_memory(uint8_t *p, uint32_t base, uint32_t size)
{
	memset(p, 0, 26);
	p[0] = 0x87;
	put16(p + 1, 23);
	p[3] = 0; /* memory */
	p[4] = 0x0C;
	p[5] = 0x01; /* read/write, non-cacheable */
	put32(p + 10, base);
	put32(p + 14, base + size - 1);
	put32(p + 22, size);
}

static void res_qword_memory(uint8_t *p, uint64_t base, uint64_t size)
{
	memset(p, 0, 46);
	p[0] = 0x8A;
	put16(p + 1, 43);
	p[3] = 0;
	p[4] = 0x0C;
	p[5] = 0x01;
	put64(p + 14, base);
	put64(p + 22, base + size - 1);
	put64(p + 38, size);
}

static void aml_resource_template(struct aml *a, const uint8_t *res, size_t len)
{
	aml_byte(a, 0x08);
	aml_name_string(a, "_CRS");
	size_t buf = aml_open(a, (const uint8_t[]){ 0x11 }, 1); /* BufferOp */
	aml_integer(a, len + 2);
	aml_bytes(a, res, len);
	aml_bytes(a, (const uint8_t[]){ 0x79, 0 }, 2); /* end tag */
	aml_close(a, buf);
}

void pci_acpi_write_dsdt(struct aml *a, const struct pci_acpi_info *pci)
{
	size_t scope = aml_open(a, (const uint8_t[]){ 0x10 }, 1); /* Scope (\_SB) */
	aml_name_string(a, "\\_SB_");

	size_t dev = aml_open(a, (const uint8_t[]){ 0x5B, 0x82 }, 2); /* Device (PCI0) */
	aml_name_string(a, "PCI0");
	aml_name_integer(a, "_HID", eisa_id("PNP0A08")); /* PCI Express root bridge */
	aml_name_integer(a, "_CID", eisa_id("PNP0A03")); /* compatible: PCI root bridge */
	aml_name_integer(a, "_SEG", 0);
	aml_name_integer(a, "_BBN", 0);
	aml_name_integer(a, "_UID", 0);
	uint8_t res[16 + 10 + 16 + 16 + 26 + 46];
	uint8_t *p = res;
	res_word(p, 2, 0, 0, pci->bus_end);
	p += 16;
	/* IO (Decode16, 0xCF8, 0xCF8, 1, 8): the configuration ports the bridge itself uses. */
	memcpy(p, (const uint8_t[]){ 0x47, 1, 0xF8, 0x0C, 0xF8, 0x0C, 1, 8 }, 8);
	p += 8;
	res_word(p, 1, 0x03, 0x0000, 0x0CF7);
	p += 16;
	res_word(p, 1, 0x03, 0x0D00, 0xFFFF);
	p += 16;
	res_dword_memory(p, (uint32_t)pci->mmio32_base, (uint32_t)pci->mmio32_size);
	p += 26;
	if (pci->mmio64_size) {
		res_qword_memory(p, pci->mmio64_base, pci->mmio64_size);
		p += 46;
	}
	aml_resource_template(a, res, (size_t)(p - res));
	aml_close(a, dev);

	/* Device (MRES): the ECAM window is a motherboard resource, so the OS trusts MCFG. */
	dev = aml_open(a, (const uint8_t[]){ 0x5B, 0x82 }, 2);
	aml_name_string(a, "MRES");
	aml_name_integer(a, "_HID", eisa_id("PNP0C02"));
	aml_name_integer(a, "_UID", 1);
	uint8_t mem[12] = { 0x86, 9, 0, 0 }; /* Memory32Fixed, read-only */
	put32(mem + 4, (uint32_t)pci->ecam_base);
	put32(mem + 8, (uint32_t)((pci->bus_end + 1u) << 20));
	aml_resource_template(a, mem, sizeof(mem));
	aml_close(a, dev);

	aml_close(a, scope);
}

size_t pci_acpi_mcfg_body(uint8_t *out, const struct pci_acpi_info *pci)
{
	memset(out, 0, PCI_ACPI_MCFG_BODY);
	/* 8 reserved bytes, then one allocation: base, segment 0, buses 0..bus_end. */
	put64(out + 8, pci->ecam_base);
	put16(out + 16, 0);
	out[18] = 0;
	out[19] = pci->bus_end;
	return PCI_ACPI_MCFG_BODY;
}
