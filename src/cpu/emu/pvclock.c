/* kvmclock structures for the software CPU: see pvclock.h. */
#include "cpu/emu/pvclock.h"

#include <errno.h>

#define NSEC_PER_SEC 1000000000ull

int pvclock_scale(uint64_t tsc_hz, uint32_t *mul, int8_t *shift)
{
	/* ns per tick × 2^32 = 1e9 × 2^32 / hz; pick the shift that puts its top bit at bit 31. */
	unsigned __int128 num = (unsigned __int128)NSEC_PER_SEC << 32;
	uint64_t q;
	int top, s;

	if (!tsc_hz)
		return -EINVAL;
	q = (uint64_t)(num / tsc_hz); /* < 2^63 */
	if (!q)
		return -EINVAL;
	top = 63 - __builtin_clzll(q);
	s = top - 31;
	if (s >= 0)
		*mul = (uint32_t)(num / ((unsigned __int128)tsc_hz << s));
	else
		*mul = (uint32_t)((num << -s) / tsc_hz);
	*shift = (int8_t)s;
	return 0;
}

bool pvclock_system_time_msr(uint64_t value, uint64_t *gpa)
{
	*gpa = value & ~KVM_SYSTEM_TIME_ENABLE;
	return (value & KVM_SYSTEM_TIME_ENABLE) && !(*gpa & 7);
}

/* Stores into guest memory that another vCPU thread may be reading: atomic, naturally
 * aligned (the caller checked the struct's alignment). */
static void store32(uint8_t *p, uint32_t v)
{
	__atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED);
}

static void store64(uint8_t *p, uint64_t v)
{
	__atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
}

static void store8(uint8_t *p, uint8_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* Make the version odd (an update is under way), the caller writes, then even again. The
 * guest may have left anything in the field before the first update: an odd value is taken as
 * the start of a sequence. */
static uint32_t version_begin(uint8_t *version)
{
	uint32_t v = __atomic_load_n((uint32_t *)version, __ATOMIC_RELAXED);

	if (v & 1)
		v++;
	store32(version, v + 1);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	return v + 2;
}

static void version_end(uint8_t *version, uint32_t v)
{
	__atomic_thread_fence(__ATOMIC_RELEASE);
	store32(version, v);
}

int pvclock_update_time_info(void *guest, const struct pvclock_sample *sample)
{
	uint8_t *p = guest;
	uint32_t mul, version;
	int8_t shift;

	if (((uintptr_t)guest & 7) || pvclock_scale(sample->tsc_hz, &mul, &shift))
		return -EINVAL;
	version = version_begin(p + 0);
	store64(p + 8, sample->tsc); /* tsc_timestamp */
	store64(p + 16, sample->system_ns); /* system_time */
	store32(p + 24, mul); /* tsc_to_system_mul */
	store8(p + 28, (uint8_t)shift); /* tsc_shift */
	store8(p + 29, sample->flags);
	version_end(p + 0, version);
	return 0;
}

int pvclock_update_wall_clock(void *guest, uint64_t boot_wall_ns)
{
	uint8_t *p = guest;
	uint32_t version;

	if ((uintptr_t)guest & 3)
		return -EINVAL;
	version = version_begin(p + 0);
	store32(p + 4, (uint32_t)(boot_wall_ns / NSEC_PER_SEC));
	store32(p + 8, (uint32_t)(boot_wall_ns % NSEC_PER_SEC));
	version_end(p + 0, version);
	return 0;
}

uint64_t pvclock_read_ns(const struct pvclock_vcpu_time_info *info, uint64_t tsc)
{
	uint64_t delta = tsc - info->tsc_timestamp;

	if (info->tsc_shift < 0)
		delta >>= -info->tsc_shift;
	else
		delta <<= info->tsc_shift;
	return info->system_time +
	       (uint64_t)(((unsigned __int128)delta * info->tsc_to_system_mul) >> 32);
}
