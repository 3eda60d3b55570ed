/* ACPI tables: checksums, the pointers between them, MADT contents, the DSDT's AML. */
#include <string.h>

#include "acpi/acpi.h"
#include "acpi/aml.h"
#include "test.h"

#define BASE 0xE0000ull
static uint8_t area[0x20000];

static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static uint8_t *at(uint64_t gpa) { return area + (gpa - BASE); }

static uint8_t *find_table(const char *sig)
{
	uint8_t *xsdt = at(get64(area + 24));
	uint32_t n = (get32(xsdt + 4) - 36) / 8;
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *t = at(get64(xsdt + 36 + 8 * i));
		if (!memcmp(t, sig, 4))
			return t;
	}
	return NULL;
}

static void tables_have_valid_checksums_and_links(void)
{
	struct acpi_config cfg = { .nr_cpus = 4, .ioapic_id = 4 };
	long len = acpi_build(area, sizeof(area), BASE, &cfg);
	CHECK(len > 0);
	CHECK(!memcmp(area, "RSD PTR ", 8));
	CHECK_EQ(acpi_checksum(area, 20), 0);
	CHECK_EQ(acpi_checksum(area, 36), 0);
	CHECK_EQ(area[15], 2);
	uint8_t *xsdt = at(get64(area + 24));
	CHECK(!memcmp(xsdt, "XSDT", 4));
	CHECK_EQ(acpi_checksum(xsdt, get32(xsdt + 4)), 0);
	uint8_t *fadt = find_table("FACP"), *madt = find_table("APIC");
	CHECK(fadt && madt);
	if (!fadt || !madt)
		return;
	CHECK_EQ(acpi_checksum(fadt, get32(fadt + 4)), 0);
	CHECK_EQ(acpi_checksum(madt, get32(madt + 4)), 0);
	uint8_t *dsdt = at(get64(fadt + 140));
	CHECK(!memcmp(dsdt, "DSDT", 4));
	CHECK_EQ(acpi_checksum(dsdt, get32(dsdt + 4)), 0);
	CHECK_EQ(get32(fadt + 40), get64(fadt + 140));
	CHECK(!memcmp(at(get32(fadt + 36)), "FACS", 4));
	CHECK_EQ(get32(fadt + 64), ACPI_PM1_CNT_PORT);
	CHECK_EQ(get64(fadt + 116 + 4), ACPI_RESET_PORT);
	CHECK_EQ(fadt[128], ACPI_RESET_VALUE);
}

static void madt_lists_every_cpu_and_the_ioapic(void)
{
	for (unsigned cpus = 1; cpus <= 64; cpus *= 2) {
		struct acpi_config cfg = { .nr_cpus = cpus, .ioapic_id = (uint8_t)cpus };
		CHECK(acpi_build(area, sizeof(area), BASE, &cfg) > 0);
		uint8_t *madt = find_table("APIC");
		CHECK(madt != NULL);
		if (!madt)
			return;
		uint32_t len = get32(madt + 4), lapics = 0, ioapics = 0;
		for (uint32_t off = 44; off + 2 <= len && madt[off + 1]; off += madt[off + 1]) {
			if (madt[off] == 0 && (get32(madt + off + 4) & 1)) {
				CHECK_EQ(madt[off + 3], lapics);
				lapics++;
			}
			if (madt[off] == 1) {
				ioapics++;
				CHECK_EQ(get32(madt + off + 4), ACPI_IOAPIC_ADDR);
			}
		}
		CHECK_EQ(lapics, cpus);
		CHECK_EQ(ioapics, 1);
	}
}

static void dsdt_has_s5_and_pvpanic(void)
{
	struct acpi_config cfg = { .nr_cpus = 1, .ioapic_id = 1 };
	CHECK(acpi_build(area, sizeof(area), BASE, &cfg) > 0);
	uint8_t *fadt = find_table("FACP");
	uint8_t *dsdt = at(get64(fadt + 140));
	uint32_t len = get32(dsdt + 4);
	const uint8_t s5[] = { 0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00 };
	CHECK(memmem(dsdt + 36, len - 36, s5, sizeof(s5)) != NULL);
	CHECK(memmem(dsdt + 36, len - 36, "QEMU0001", 8) != NULL);
	const uint8_t io[] = { 0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01 };
	CHECK(memmem(dsdt + 36, len - 36, io, sizeof(io)) != NULL);
}

static void aml_package_lengths_use_the_short_forms(void)
{
	uint8_t buf[8192];
	struct aml a;
	aml_init(&a, buf, sizeof(buf));
	size_t m = aml_open(&a, (const uint8_t[]){ 0x12 }, 1);
	aml_bytes(&a, "abc", 3);
	aml_close(&a, m);
	CHECK_EQ(a.len, 5);
	CHECK(buf[0] == 0x12 && buf[1] == 4 && !memcmp(buf + 2, "abc", 3));
	aml_init(&a, buf, sizeof(buf));
	m = aml_open(&a, (const uint8_t[]){ 0x10 }, 1);
	uint8_t body[100] = { 0 };
	aml_bytes(&a, body, sizeof(body));
	aml_close(&a, m);
	CHECK_EQ(a.len, 1 + 2 + 100);
	CHECK_EQ(buf[1], 0x40 | (102 & 0xF));
	CHECK_EQ(buf[2], 102 >> 4);
	aml_init(&a, buf, 3);
	aml_bytes(&a, "abcd", 4);
	CHECK(a.overflow);
	aml_init(&a, buf, sizeof(buf));
	aml_integer(&a, 0x1234);
	CHECK(buf[0] == 0x0B && buf[1] == 0x34 && buf[2] == 0x12);
}

static void too_small_a_buffer_is_an_error(void)
{
	struct acpi_config cfg = { .nr_cpus = 2, .ioapic_id = 2 };
	CHECK(acpi_build(area, 100, BASE, &cfg) < 0);
}

int main(void)
{
	RUN_TEST(tables_have_valid_checksums_and_links);
	RUN_TEST(madt_lists_every_cpu_and_the_ioapic);
	RUN_TEST(dsdt_has_s5_and_pvpanic);
	RUN_TEST(aml_package_lengths_use_the_short_forms);
	RUN_TEST(too_small_a_buffer_is_an_error);
	return TEST_EXIT();
}
