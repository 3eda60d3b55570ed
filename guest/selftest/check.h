/* Result reporting and the state the checks share. */
#ifndef SELFTEST_CHECK_H
#define SELFTEST_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "acpi.h"
#include "args.h"
#include "bootinfo.h"

struct selftest {
	struct boot_info boot;
	struct selftest_args args;
	struct acpi_info acpi;
	uint32_t bsp_apic_id;
};

/* "selftest: ok - NAME" */
void check_ok(const char *name);
/* "selftest: FAIL - NAME: detail" */
void check_fail(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "selftest: # text": diagnostics for humans; test scripts ignore these lines. */
void check_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "selftest: N passed, N failed" */
void check_summary(void);

/* Unexpected exception: report it as a failure, print the summary and end the run. */
void selftest_abort(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* The checks, in the order main.c runs them (each prints its own result lines). */
void check_bootinfo(struct selftest *t);
void check_e820(struct selftest *t);
void check_highmem(struct selftest *t);
void check_acpi(struct selftest *t);
void check_acpi_madt(struct selftest *t);
void check_acpi_s5(struct selftest *t);
void check_cpuid(struct selftest *t);
void check_cpuid_out_of_range(struct selftest *t);
void check_bsp_apic_id(struct selftest *t);
void check_uart(struct selftest *t);
void check_pmtimer(struct selftest *t);
void check_lapic_timer(struct selftest *t);
void check_ioapic(struct selftest *t);
void check_smp(struct selftest *t);
void check_smc(struct selftest *t); /* after check_smp: starts an AP again */
void check_rtc(struct selftest *t);
void check_string_io(struct selftest *t);
void check_debug_registers(struct selftest *t);
void check_virtio(struct selftest *t); /* only with selftest.virtio=1 or selftest.hostile=1 */
void check_netbench(struct selftest *t); /* only with selftest.net=1 (netbench.c) */
void check_diskbench(struct selftest *t); /* only with selftest.diskbench=1 */

/* checks_smc.c: write `mov eax, value; ret` at code, and call it. */
void smc_write_return(volatile uint8_t *code, uint32_t value);
uint32_t smc_call(const void *code);

#endif
