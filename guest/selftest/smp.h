/* Application processor start-up with INIT / SIPI / SIPI. */
#ifndef SELFTEST_SMP_H
#define SELFTEST_SMP_H

#include <stdbool.h>
#include <stdint.h>

#include "bootinfo.h"

/* The real-mode trampoline page: below 1 MiB, clear of the IVT/BDA and of what the loader left
 * that we still read (we copy it all before SMP starts). */
#define TRAMPOLINE_PAGE 0x8000

/* Checks that TRAMPOLINE_PAGE is usable RAM by the E820 map and copies the trampoline there. */
bool smp_prepare_trampoline(const struct boot_info *boot, char *why, unsigned why_size);

/* Work for the next AP that starts: called after it reported, on its own stack (NULL: none). */
extern void (*volatile ap_task)(void);

/* Starts the AP with this APIC id and waits for it to report; false on timeout.
 * *reported_id receives the APIC id the AP read from its own LAPIC. */
bool smp_start_ap(uint32_t apic_id, uint32_t *reported_id);

#endif
