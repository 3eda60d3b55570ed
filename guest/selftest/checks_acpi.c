/* ACPI checks: tables and checksums, the CPUs in the MADT, the \_S5_ object for poweroff. */
#include "check.h"
#include "lib.h"
#include "timer.h"

void check_acpi(struct selftest *t)
{
	struct acpi_info *a = &t->acpi;
	bool ok = acpi_load(a, t->boot.rsdp);

	check_note("acpi: RSDP 0x%lx (%s), %u tables, PM1a_CNT 0x%x, PM_TMR 0x%x", a->rsdp,
		   a->rsdp_from_scan ? "found by scan" : "from boot info", a->table_count,
		   a->pm1a_control_port, a->pm_timer_port);
	if (ok && !a->dsdt)
		check_fail("acpi", "no DSDT");
	else if (ok)
		check_ok("acpi");
	else
		check_fail("acpi", "%s", a->error);
	if (a->pm_timer_port)
		pmtimer_setup(a->pm_timer_port, a->pm_timer_32bit);
}

static bool madt_ids_distinct(const struct acpi_info *a, uint32_t *duplicate)
{
	uint32_t n = a->cpu_count < MAX_CPUS ? a->cpu_count : MAX_CPUS;

	for (uint32_t i = 0; i < n; i++) {
		for (uint32_t j = 0; j < i; j++) {
			if (a->cpu_apic_ids[i] == a->cpu_apic_ids[j]) {
				*duplicate = a->cpu_apic_ids[i];
				return false;
			}
		}
	}
	return true;
}

void check_acpi_madt(struct selftest *t)
{
	const struct acpi_info *a = &t->acpi;
	uint32_t duplicate;

	if (!a->madt)
		check_fail("acpi-madt", "no MADT");
	else if (a->cpu_count == 0)
		check_fail("acpi-madt", "no enabled Local APIC entries");
	else if (t->args.cpus && a->cpu_count != t->args.cpus)
		check_fail("acpi-madt", "%u enabled CPUs, expected %u (selftest.cpus)", a->cpu_count,
			   t->args.cpus);
	else if (a->cpu_count > MAX_CPUS)
		check_fail("acpi-madt", "%u CPUs, this test handles %u", a->cpu_count, MAX_CPUS);
	else if (!madt_ids_distinct(a, &duplicate))
		check_fail("acpi-madt", "APIC id %u listed twice", duplicate);
	else if (!a->ioapic_address)
		check_fail("acpi-madt", "no IOAPIC entry");
	else
		check_ok("acpi-madt");
}

void check_acpi_s5(struct selftest *t)
{
	const struct acpi_info *a = &t->acpi;

	if (!a->dsdt)
		check_fail("acpi-s5", "no DSDT");
	else if (!a->have_s5)
		check_fail("acpi-s5", "no \\_S5_ package with an integer first element in the DSDT");
	else if (!a->pm1a_control_port)
		check_fail("acpi-s5", "FADT has no PM1a control block");
	else
		check_ok("acpi-s5");
}
