/*
 * The self-test guest: runs every check, prints a summary and ends the machine the way the
 * command line asks (ACPI poweroff by default).
 */
#include "check.h"
#include "console.h"
#include "interrupts.h"
#include "io.h"
#include "lib.h"
#include "timer.h"

#define PVPANIC_PORT 0x505
#define PVPANIC_PANICKED 0x01
#define I8042_COMMAND 0x64
#define I8042_RESET 0xFE
#define RESET_CONTROL 0xCF9
#define RESET_CONTROL_VALUE 0x06
/* Writes that end the machine may take effect a little later: wait before calling it failed. */
#define END_GRACE_US 200000

static struct selftest test;

/* One check per line, in the order they run. */
/* clang-format off */
static void (*const checks[])(struct selftest *) = {
	check_bootinfo,
	check_e820,
	check_highmem,
	check_acpi,
	check_acpi_madt,
	check_acpi_s5,
	check_cpuid,
	check_cpuid_out_of_range,
	check_bsp_apic_id,
	check_uart,
	check_pmtimer,
	check_lapic_timer,
	check_ioapic,
	check_smp,
	check_smc,
	check_rtc,
	check_string_io,
	check_debug_registers,
	check_virtio,
	check_netbench,
	check_diskbench,
};
/* clang-format on */

static void __attribute__((noreturn)) selftest_end(const struct selftest *t)
{
	const char *how;

	irq_disable();
	tick_stop();
	if (t->args.hold) {
		console_printf("selftest: # holding (selftest.hold=1)\n");
		cpu_park();
	}
	if (t->args.triple)
		interrupts_triple_fault();
	if (t->args.panic) {
		how = "pvpanic";
		outb(PVPANIC_PORT, PVPANIC_PANICKED);
	} else if (t->args.reboot) {
		how = "reset";
		outb(I8042_COMMAND, I8042_RESET);
		delay_us(END_GRACE_US);
		outb(RESET_CONTROL, RESET_CONTROL_VALUE);
	} else {
		how = "ACPI poweroff";
		acpi_poweroff(&t->acpi);
	}
	delay_us(END_GRACE_US);
	console_printf("selftest: error: %s did not stop the machine; halting\n", how);
	cpu_park();
}

void selftest_abort(const char *fmt, ...)
{
	char detail[200];
	va_list ap;

	va_start(ap, fmt);
	vformat(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	check_fail("exception", "%s", detail);
	check_summary();
	selftest_end(&test);
}

/* A boot mark: one line to the monitor's debug port (docs/platform.md), timed by the monitor. */
#define DEBUG_PORT 0x402
static void boot_mark(const char *text)
{
	while (*text)
		outb(DEBUG_PORT, (uint8_t)*text++);
	outb(DEBUG_PORT, '\n');
}

void boot_main(uint32_t kind, uint64_t source);
void boot_main(uint32_t kind, uint64_t source)
{
	boot_mark("selftest: entered");
	console_init();
	interrupts_init();
	bootinfo_collect(&test.boot, kind, source);
	args_parse(&test.args, test.boot.cmdline);
	boot_mark("selftest: checks start");
	for (unsigned i = 0; i < ARRAY_SIZE(checks); i++)
		checks[i](&test);
	boot_mark("selftest: checks done");
	check_summary();
	selftest_end(&test);
}
