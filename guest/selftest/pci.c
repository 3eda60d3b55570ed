/* ECAM configuration access and bus-0 enumeration (PCI Firmware 3.2 §4.1.2 for MCFG). */
#include "pci.h"
#include "lib.h"

#define MCFG_ENTRIES 44 /* header (36) + 8 reserved bytes */
#define MCFG_ENTRY_SIZE 16
#define ECAM_LIMIT (4ull << 30) /* our identity map covers the first 4 GiB */

static uint64_t ecam_base;

bool pci_init(const struct acpi_info *acpi, char *err, unsigned err_size)
{
	const struct acpi_header *root = acpi->root;
	const struct acpi_header *mcfg = 0;

	ecam_base = 0;
	if (!root) {
		format(err, err_size, "no ACPI root table");
		return false;
	}
	unsigned entry_size = memcmp(root->signature, "XSDT", 4) ? 4 : 8;
	uint32_t count = (root->length - sizeof(*root)) / entry_size;
	for (uint32_t i = 0; i < count && !mcfg; i++) {
		const uint8_t *e = (const uint8_t *)root + sizeof(*root) + i * entry_size;
		uint64_t address = 0;

		memcpy(&address, e, entry_size);
		if (address && address < ECAM_LIMIT &&
		    !memcmp(((const struct acpi_header *)address)->signature, "MCFG", 4))
			mcfg = (const struct acpi_header *)address;
	}
	if (!mcfg) {
		format(err, err_size, "no MCFG table in the %.4s", root->signature);
		return false;
	}
	for (uint32_t off = MCFG_ENTRIES; off + MCFG_ENTRY_SIZE <= mcfg->length;
	     off += MCFG_ENTRY_SIZE) {
		const uint8_t *e = (const uint8_t *)mcfg + off;
		uint64_t base;
		uint16_t segment;

		memcpy(&base, e, 8);
		memcpy(&segment, e + 8, 2);
		if (segment == 0 && e[10] == 0) { /* start bus 0 */
			ecam_base = base;
			break;
		}
	}
	if (!ecam_base || ecam_base >= ECAM_LIMIT) {
		format(err, err_size, "MCFG has no usable window for segment 0 bus 0 (0x%lx)",
		       ecam_base);
		ecam_base = 0;
		return false;
	}
	return true;
}

unsigned pci_scan(struct pci_func *out, unsigned max)
{
	unsigned n = 0;

	for (uint8_t dev = 0; dev < 32 && ecam_base; dev++) {
		for (uint8_t fn = 0; fn < 8 && n < max; fn++) {
			uint64_t cfg = ecam_base + ((uint64_t)dev << 15) + ((uint64_t)fn << 12);
			uint16_t vendor = mmio_read16(cfg + PCI_VENDOR_ID);

			if (vendor == 0xFFFF) {
				if (fn == 0)
					break;
				continue;
			}
			out[n++] = (struct pci_func){ .cfg = cfg, .bus = 0, .dev = dev, .fn = fn,
						      .vendor = vendor,
						      .device = mmio_read16(cfg + PCI_DEVICE_ID) };
			if (fn == 0 && !(mmio_read8(cfg + PCI_HEADER_TYPE) & 0x80))
				break; /* not multi-function */
		}
	}
	return n;
}

uint64_t pci_bar_address(const struct pci_func *f, unsigned bar)
{
	uint32_t low = mmio_read32(f->cfg + PCI_BAR0 + 4 * bar);

	if (low & 1)
		return 0; /* I/O BAR */
	uint64_t address = low & ~0xFull;
	if ((low & 0x6) == 0x4 && bar < 5)
		address |= (uint64_t)mmio_read32(f->cfg + PCI_BAR0 + 4 * (bar + 1)) << 32;
	return address;
}

uint8_t pci_find_cap(const struct pci_func *f, uint8_t id, uint8_t after)
{
	if (!(mmio_read16(f->cfg + PCI_STATUS) & PCI_STATUS_CAP_LIST))
		return 0;
	uint8_t p = after ? mmio_read8(f->cfg + after + 1) : mmio_read8(f->cfg + PCI_CAPABILITY_LIST);
	for (unsigned guard = 0; p >= 0x40 && guard < 48; guard++) {
		p &= 0xFC;
		if (mmio_read8(f->cfg + p) == id)
			return p;
		p = mmio_read8(f->cfg + p + 1);
	}
	return 0;
}
