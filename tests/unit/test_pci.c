/* PCI host bridge: configuration mechanisms, BAR sizing and placement, MSI-X. */
#include <errno.h>
#include <string.h>

#include "acpi/acpi.h"
#include "pci/pci.h"
#include "pci/pci_acpi.h"
#include "test.h"

struct fake {
	struct bus pio, mmio;
	struct pci_host host;
	struct pci_device dev;
	unsigned msi_count;
	uint64_t msi_addr;
	uint32_t msi_data;
	unsigned bar_reads, bar_map_events;
	uint64_t last_offset;
};

static int fake_msi(void *opaque, uint64_t address, uint32_t data)
{
	struct fake *f = opaque;
	f->msi_count++;
	f->msi_addr = address;
	f->msi_data = data;
	return 0;
}

static void fake_bar_io(struct pci_device *dev, unsigned bar, uint64_t offset, void *data,
			unsigned size, bool is_write)
{
	struct fake *f = dev->opaque;
	(void)bar;
	f->last_offset = offset;
	if (!is_write) {
		f->bar_reads++;
		memset(data, 0xAB, size);
	}
}

static void fake_bar_map(struct pci_device *dev, unsigned bar, uint64_t addr, bool mapped)
{
	struct fake *f = dev->opaque;
	(void)bar;
	(void)addr;
	(void)mapped;
	f->bar_map_events++;
}

static void fake_init(struct fake *f)
{
	memset(f, 0, sizeof(*f));
	bus_init(&f->pio, "pio");
	bus_init(&f->mmio, "mmio");
	CHECK_EQ(pci_host_init(&f->host, &f->pio, &f->mmio, 0x200000000ull, fake_msi, f), 0);
	pci_device_init(&f->dev, "test", 0x1AF4, 0x1042, 0x018000, 1, 0x1AF4, 0x42);
	f->dev.opaque = f;
	f->dev.bar_map = fake_bar_map;
	CHECK_EQ(pci_device_add_bar(&f->dev, 0, 0x4000, false, fake_bar_io), 0);
	CHECK_EQ(pci_device_add_msix(&f->dev, 1, 4), 0);
	CHECK_EQ(pci_device_add_bar(&f->dev, 2, 0x100000, true, fake_bar_io), 0);
	CHECK_EQ(pci_device_register(&f->host, &f->dev), 0);
}

static void fake_destroy(struct fake *f)
{
	pci_host_destroy(&f->host);
	bus_destroy(&f->pio);
	bus_destroy(&f->mmio);
}

static uint32_t cf8_read(struct fake *f, unsigned devfn, unsigned reg, unsigned size)
{
	uint32_t addr = 0x80000000u | devfn << 8 | (reg & 0xFC), v = 0;
	bus_access(&f->pio, 0xCF8, &addr, 4, true);
	bus_access(&f->pio, 0xCFC + (reg & 3), &v, size, false);
	return v;
}

static void cf8_write(struct fake *f, unsigned devfn, unsigned reg, uint32_t v, unsigned size)
{
	uint32_t addr = 0x80000000u | devfn << 8 | (reg & 0xFC);
	bus_access(&f->pio, 0xCF8, &addr, 4, true);
	bus_access(&f->pio, 0xCFC + (reg & 3), &v, size, true);
}

static uint32_t ecam_read(struct fake *f, unsigned bus, unsigned devfn, unsigned reg)
{
	uint32_t v = 0;
	bus_access(&f->mmio, PCI_ECAM_BASE + ((uint64_t)bus << 20) + (devfn << 12) + reg, &v, 4, false);
	return v;
}

static void ecam_write(struct fake *f, unsigned devfn, unsigned reg, uint32_t v)
{
	bus_access(&f->mmio, PCI_ECAM_BASE + (devfn << 12) + reg, &v, 4, true);
}

static void test_pci_host_bridge_seen_through_cf8_and_ecam(void)
{
	struct fake f;
	fake_init(&f);
	CHECK_EQ(cf8_read(&f, 0, 0, 4), 0x00081B36);
	CHECK_EQ(ecam_read(&f, 0, 0, 0), 0x00081B36);
	CHECK_EQ(cf8_read(&f, 0, 0x0A, 2), 0x0600); /* class: host bridge */
	uint32_t a = 0x80001234, back = 0;
	bus_access(&f.pio, 0xCF8, &a, 4, true);
	bus_access(&f.pio, 0xCF8, &back, 4, false);
	CHECK_EQ(back, 0x80001234u & 0x80FFFFFCu);
	fake_destroy(&f);
}

static void test_pci_absent_functions_read_all_ones(void)
{
	struct fake f;
	fake_init(&f);
	CHECK_EQ(cf8_read(&f, 31 << 3, 0, 4), 0xFFFFFFFF);
	CHECK_EQ(cf8_read(&f, (1 << 3) | 1, 0, 4), 0xFFFFFFFF); /* function 1 of a device */
	CHECK_EQ(ecam_read(&f, 1, 1 << 3, 0), 0xFFFFFFFF); /* bus 1 */
	CHECK_EQ(ecam_read(&f, 0, 1 << 3, 0x100), 0); /* extended space of a present device */
	uint32_t disabled = 0x00000800, v = 0; /* enable bit clear */
	bus_access(&f.pio, 0xCF8, &disabled, 4, true);
	bus_access(&f.pio, 0xCFC, &v, 4, false);
	CHECK_EQ(v, 0xFFFFFFFF);
	fake_destroy(&f);
}

static void test_pci_device_identity_and_capabilities(void)
{
	struct fake f;
	fake_init(&f);
	unsigned devfn = f.dev.slot << 3;
	CHECK_EQ(f.dev.slot, 1);
	CHECK_EQ(ecam_read(&f, 0, devfn, 0), 0x10421AF4);
	CHECK_EQ(ecam_read(&f, 0, devfn, 0x2C), 0x00421AF4);
	CHECK(cf8_read(&f, devfn, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
	unsigned cap = cf8_read(&f, devfn, PCI_CAPABILITY_LIST, 1);
	CHECK_EQ(cap, 0x40);
	CHECK_EQ(cf8_read(&f, devfn, cap, 1), PCI_CAP_ID_MSIX);
	CHECK_EQ(cf8_read(&f, devfn, cap + 2, 2), 3); /* table size - 1 */
	CHECK_EQ(cf8_read(&f, devfn, cap + 4, 4), 1); /* table in BAR 1 at 0 */
	CHECK_EQ(cf8_read(&f, devfn, cap + 8, 4), PCI_MSIX_PBA_OFFSET | 1);
	/* Read-only fields stay put. */
	cf8_write(&f, devfn, 0, 0x12345678, 4);
	CHECK_EQ(cf8_read(&f, devfn, 0, 4), 0x10421AF4);
	fake_destroy(&f);
}

static void test_pci_bar_sizing_and_placement(void)
{
	struct fake f;
	fake_init(&f);
	unsigned devfn = f.dev.slot << 3;
	uint32_t bar0 = ecam_read(&f, 0, devfn, PCI_BAR0);
	CHECK(bar0 >= PCI_MMIO32_BASE && bar0 < PCI_MMIO32_BASE + PCI_MMIO32_SIZE);
	CHECK_EQ(bar0 & 0x3FFF, 0);
	/* 64-bit BAR in the window above RAM, aligned to its size. */
	uint64_t bar2 = pci_bar_address(&f.dev, 2);
	CHECK_EQ(bar2, 0x200000000ull);
	CHECK_EQ(ecam_read(&f, 0, devfn, PCI_BAR0 + 8) & 0xF, PCI_BAR_MEM_64);
	/* Sizing as an OS does it: decode off, all ones, read, restore. */
	ecam_write(&f, devfn, PCI_COMMAND, 0);
	ecam_write(&f, devfn, PCI_BAR0, 0xFFFFFFFF);
	CHECK_EQ(ecam_read(&f, 0, devfn, PCI_BAR0), 0xFFFFC000);
	ecam_write(&f, devfn, PCI_BAR0 + 8, 0xFFFFFFFF);
	ecam_write(&f, devfn, PCI_BAR0 + 12, 0xFFFFFFFF);
	CHECK_EQ(ecam_read(&f, 0, devfn, PCI_BAR0 + 8), 0xFFF00004);
	CHECK_EQ(ecam_read(&f, 0, devfn, PCI_BAR0 + 12), 0xFFFFFFFF);
	ecam_write(&f, devfn, PCI_BAR0 + 8, 0);
	ecam_write(&f, devfn, PCI_BAR0 + 12, 2);
	/* Unused BARs and the ROM BAR read 0 whatever is written. */
	ecam_write(&f, devfn, PCI_BAR0 + 20, 0xFFFFFFFF);
	CHECK_EQ(ecam_read(&f, 0, devfn, PCI_BAR0 + 20), 0);
	ecam_write(&f, devfn, PCI_ROM_ADDRESS, 0xFFFFFFFF);
	CHECK_EQ(ecam_read(&f, 0, devfn, PCI_ROM_ADDRESS), 0);
	/* Moved BAR decodes at the new place once memory decoding is back on. */
	ecam_write(&f, devfn, PCI_BAR0, 0xD0000000);
	uint32_t v = 0;
	bus_access(&f.mmio, 0xD0000010, &v, 4, false);
	CHECK_EQ(v, 0xFFFFFFFF); /* decode off */
	ecam_write(&f, devfn, PCI_COMMAND, PCI_COMMAND_MEMORY);
	bus_access(&f.mmio, 0xD0000010, &v, 4, false);
	CHECK_EQ(v, 0xABABABAB);
	CHECK_EQ(f.last_offset, 0x10);
	bus_access(&f.mmio, bar0 + 0x10, &v, 4, false);
	CHECK_EQ(v, 0xFFFFFFFF); /* the old place is gone */
	bus_access(&f.mmio, 0x200000000ull, &v, 4, false);
	CHECK_EQ(v, 0xABABABAB);
	CHECK(f.bar_map_events >= 4);
	fake_destroy(&f);
}

static void msix_write(struct fake *f, unsigned vector, unsigned word, uint32_t v)
{
	uint64_t table = pci_bar_address(&f->dev, 1);
	bus_access(&f->mmio, table + vector * 16 + word * 4, &v, 4, true);
}

static void test_pci_msix_mask_pending_and_delivery(void)
{
	struct fake f;
	fake_init(&f);
	unsigned devfn = f.dev.slot << 3, cap = f.dev.msix.cap;
	CHECK_EQ(pci_msix_notify(&f.dev, 0), -ENOENT); /* MSI-X off */
	ecam_write(&f, devfn, cap, (uint32_t)(PCI_MSIX_FLAGS_ENABLE) << 16);
	CHECK(pci_msix_enabled(&f.dev));
	msix_write(&f, 2, 0, 0xFEE00000);
	msix_write(&f, 2, 1, 0);
	msix_write(&f, 2, 2, 0x41);
	CHECK_EQ(pci_msix_notify(&f.dev, 2), 0); /* still masked (reset state): pending */
	CHECK_EQ(f.msi_count, 0);
	uint64_t pba = pci_bar_address(&f.dev, 1) + PCI_MSIX_PBA_OFFSET;
	uint32_t bits = 0;
	bus_access(&f.mmio, pba, &bits, 4, false);
	CHECK_EQ(bits, 1u << 2);
	msix_write(&f, 2, 3, 0); /* unmask: the pending message goes out */
	CHECK_EQ(f.msi_count, 1);
	CHECK_EQ(f.msi_addr, 0xFEE00000);
	CHECK_EQ(f.msi_data, 0x41);
	/* Function mask holds everything back until cleared. */
	ecam_write(&f, devfn, cap, (uint32_t)(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) << 16);
	pci_msix_notify(&f.dev, 2);
	CHECK_EQ(f.msi_count, 1);
	ecam_write(&f, devfn, cap, (uint32_t)PCI_MSIX_FLAGS_ENABLE << 16);
	CHECK_EQ(f.msi_count, 2);
	CHECK_EQ(pci_msix_notify(&f.dev, 4), -ENOENT); /* no such vector */
	/* Odd-sized table accesses are ignored. */
	uint8_t b = 0x55;
	bus_access(&f.mmio, pci_bar_address(&f.dev, 1) + 2 * 16 + 8, &b, 1, true);
	CHECK_EQ(f.dev.msix.table[2][2], 0x41);
	fake_destroy(&f);
}

static const uint8_t *acpi_find(const uint8_t *buf, uint64_t gpa, const char *sig)
{
	const uint8_t *rsdp = buf;
	uint64_t xsdt_gpa = 0;
	memcpy(&xsdt_gpa, rsdp + 24, 8);
	const uint8_t *xsdt = buf + (xsdt_gpa - gpa);
	uint32_t len;
	memcpy(&len, xsdt + 4, 4);
	for (uint32_t off = 36; off + 8 <= len; off += 8) {
		uint64_t t;
		memcpy(&t, xsdt + off, 8);
		if (!memcmp(buf + (t - gpa), sig, 4))
			return buf + (t - gpa);
	}
	return NULL;
}

static void test_pci_acpi_mcfg_and_host_bridge_device(void)
{
	static uint8_t buf[0x20000];
	struct pci_acpi_info info = { .ecam_base = PCI_ECAM_BASE, .bus_end = 255,
				      .mmio32_base = PCI_MMIO32_BASE, .mmio32_size = PCI_MMIO32_SIZE,
				      .mmio64_base = 1ull << 34, .mmio64_size = PCI_MMIO64_SIZE };
	struct acpi_config cfg = { .nr_cpus = 2, .ioapic_id = 2, .pci = &info };
	CHECK(acpi_build(buf, sizeof(buf), 0xE0000, &cfg) > 0);
	const uint8_t *mcfg = acpi_find(buf, 0xE0000, "MCFG");
	CHECK(mcfg != NULL);
	if (mcfg) {
		uint32_t len;
		uint64_t base;
		memcpy(&len, mcfg + 4, 4);
		memcpy(&base, mcfg + 44, 8);
		CHECK_EQ(len, 60);
		CHECK_EQ(acpi_checksum(mcfg, len), 0);
		CHECK_EQ(base, PCI_ECAM_BASE);
		CHECK_EQ(mcfg[55], 255); /* end bus */
	}
	const uint8_t *fadt = acpi_find(buf, 0xE0000, "FACP");
	CHECK(fadt != NULL);
	if (fadt) {
		uint64_t dsdt_gpa;
		uint32_t len;
		memcpy(&dsdt_gpa, fadt + 140, 8);
		const uint8_t *dsdt = buf + (dsdt_gpa - 0xE0000);
		memcpy(&len, dsdt + 4, 4);
		CHECK_EQ(acpi_checksum(dsdt, len), 0);
		CHECK(memmem(dsdt, len, "PCI0", 4) != NULL);
		CHECK(memmem(dsdt, len, "\x41\xD0\x0A\x08", 4) != NULL); /* EISAID PNP0A08 */
		CHECK(memmem(dsdt, len, "\x41\xD0\x0C\x02", 4) != NULL); /* PNP0C02 for ECAM */
		const uint8_t dword_mem[] = { 0x87, 23, 0, 0, 0x0C, 0x01 };
		CHECK(memmem(dsdt, len, dword_mem, sizeof(dword_mem)) != NULL);
	}
	/* Without PCI: no MCFG. */
	cfg.pci = NULL;
	CHECK(acpi_build(buf, sizeof(buf), 0xE0000, &cfg) > 0);
	CHECK(acpi_find(buf, 0xE0000, "MCFG") == NULL);
}

int main(void)
{
	RUN_TEST(test_pci_host_bridge_seen_through_cf8_and_ecam);
	RUN_TEST(test_pci_absent_functions_read_all_ones);
	RUN_TEST(test_pci_device_identity_and_capabilities);
	RUN_TEST(test_pci_bar_sizing_and_placement);
	RUN_TEST(test_pci_msix_mask_pending_and_delivery);
	RUN_TEST(test_pci_acpi_mcfg_and_host_bridge_device);
	return TEST_EXIT();
}
