/* kvmclock for the software CPU: the KVM paravirtual clock ABI (Linux
 * Documentation/virt/kvm/x86/msr.rst, arch/x86/include/asm/pvclock-abi.h), so that the guest
 * reads time from a virtual TSC it never has to calibrate.
 *
 * The virtual TSC is the emu core's (system.c, emu_read_tsc): 1 GHz, one tick per nanosecond of
 * the host's CLOCK_MONOTONIC, plus the vCPU's TSC offset (MSR 0x10 writes). 1 GHz was chosen
 * over the host TSC's rate because it is exact and needs no measuring: the scale is mul = 2^31,
 * shift = 1, with no rounding error ever, every vCPU reads the same clock, and it does not
 * depend on the host having an invariant TSC. A guest that reads TSC directly sees 1 GHz in
 * the kvmclock scale (Linux takes its tsc_khz from kvmclock) and so never calibrates.
 *
 * The functions are pure: they fill a struct in guest memory through a host pointer the
 * integrator obtained by mapping the guest-physical address (memory_gpa_to_host(), checked for
 * the whole struct) from:
 * - MSR_KVM_SYSTEM_TIME_NEW (0x4b564d01; the old 0x12 is the same): bit 0 enables, the rest is
 *   the guest-physical address of this vCPU's struct pvclock_vcpu_time_info (32 bytes).
 *   Fill it at the MSR write, and again whenever the relation between TSC and system time
 *   changes for this vCPU: a TSC write (offset change), the end of a pause (vm_resuming, with
 *   PVCLOCK_GUEST_STOPPED), a migration. Between those nothing needs updating: the 1 GHz TSC
 *   and the system time advance together exactly.
 * - MSR_KVM_WALL_CLOCK_NEW (0x4b564d00; the old 0x11 is the same): a write gives the
 *   guest-physical address of a struct pvclock_wall_clock, filled once, at the write, with the
 *   wall-clock time at which system time was 0.
 *
 * Update protocol (both structs): version is made odd, the fields are written, version is made
 * even again, with release ordering between the steps; the guest retries while version is odd
 * or changed under it.
 *
 * Thread safety: the MSR writes come from the vCPU's own thread; the wall clock struct may be
 * shared by all vCPUs, which the version protocol covers for readers, not for two concurrent
 * writers (the integrator serialises those, e.g. with a VM-wide lock). */
#ifndef VMM_CPU_EMU_PVCLOCK_H
#define VMM_CPU_EMU_PVCLOCK_H

#include <stdbool.h>
#include <stdint.h>

#define MSR_KVM_WALL_CLOCK 0x11
#define MSR_KVM_SYSTEM_TIME 0x12
#define MSR_KVM_WALL_CLOCK_NEW 0x4b564d00
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define KVM_SYSTEM_TIME_ENABLE 1ull /* bit 0 of the system time MSR */

#define PVCLOCK_TSC_STABLE_BIT (1u << 0)
#define PVCLOCK_GUEST_STOPPED (1u << 1)

#define PVCLOCK_EMU_TSC_HZ 1000000000ull /* the emu core's virtual TSC */

struct pvclock_vcpu_time_info {
	uint32_t version;
	uint32_t pad0;
	uint64_t tsc_timestamp;
	uint64_t system_time;
	uint32_t tsc_to_system_mul;
	int8_t tsc_shift;
	uint8_t flags;
	uint8_t pad[2];
} __attribute__((packed));
_Static_assert(sizeof(struct pvclock_vcpu_time_info) == 32, "pvclock ABI");

struct pvclock_wall_clock {
	uint32_t version;
	uint32_t sec;
	uint32_t nsec;
} __attribute__((packed));
_Static_assert(sizeof(struct pvclock_wall_clock) == 12, "pvclock ABI");

/* One time sample of a vCPU: its TSC and the system time (ns) at the same instant. */
struct pvclock_sample {
	uint64_t tsc;
	uint64_t system_ns;
	uint64_t tsc_hz; /* PVCLOCK_EMU_TSC_HZ for the software CPU */
	uint8_t flags; /* PVCLOCK_TSC_STABLE_BIT | ... */
};

/* The guest's scale for a TSC of `tsc_hz`: ns = ((delta << shift, or >> -shift) * mul) >> 32,
 * with mul in [2^31, 2^32). -EINVAL for 0 or rates that do not fit the format. */
int pvclock_scale(uint64_t tsc_hz, uint32_t *mul, int8_t *shift);

/* Parse the system time MSR: whether it enables the clock, and the struct's address. A
 * misaligned address (not 8-byte aligned: Linux uses a cache-line aligned per-CPU struct) is
 * refused with false, as an unusable page would be; the MSR write itself still succeeds. */
bool pvclock_system_time_msr(uint64_t value, uint64_t *gpa);

/* Fill the vCPU's time info at `guest` (a host pointer to the 32 bytes, 8-byte aligned) with
 * `sample`, using the version protocol. 0, or -EINVAL (bad rate or alignment: nothing written). */
int pvclock_update_time_info(void *guest, const struct pvclock_sample *sample);

/* Fill the wall clock at `guest` (12 bytes, 4-byte aligned): `boot_wall_ns` is the wall-clock
 * time (ns since the epoch, CLOCK_REALTIME) at which system time was 0. 0 or -EINVAL. */
int pvclock_update_wall_clock(void *guest, uint64_t boot_wall_ns);

/* The guest's side, for tests and for the monitor's own consistency checks: the system time
 * the struct gives for TSC value `tsc` (Linux's pvclock_clocksource_read without the retry). */
uint64_t pvclock_read_ns(const struct pvclock_vcpu_time_info *info, uint64_t tsc);

#endif
