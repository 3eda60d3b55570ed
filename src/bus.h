/* An address space of devices: one for port I/O, one for MMIO.
 *
 * A device registers [base, base + len) with one callback. The vCPU run loop turns every I/O exit
 * into one bus_access() call; it never names a device. */
#ifndef VMM_BUS_H
#define VMM_BUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* offset is relative to the range's base; data is `size` bytes, little-endian. */
typedef void (*bus_io_fn)(void *owner, uint64_t offset, void *data, unsigned size, bool is_write);

struct bus_range {
	uint64_t base, len;
	void *owner;
	bus_io_fn io;
	const char *name;
	uint64_t reads, writes; /* accesses dispatched to this range (atomic: vCPUs share the lock) */
};

struct bus {
	const char *name;
	pthread_rwlock_t lock; /* guards ranges: registration may happen while vCPUs run */
	struct bus_range *ranges; /* sorted by base, never overlapping */
	unsigned nr_ranges, cap_ranges;
	uint64_t unclaimed_reads, unclaimed_writes;
};

void bus_init(struct bus *bus, const char *name);
void bus_destroy(struct bus *bus);
/* 0, -EEXIST if it overlaps a registered range, -EINVAL for an empty range, -ENOMEM. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, void *owner, bus_io_fn io,
		 const char *name);
int bus_unregister(struct bus *bus, uint64_t base, void *owner);
/* Dispatch one access. Unclaimed reads return all ones. Returns true when a device claimed it. */
bool bus_access(struct bus *bus, uint64_t addr, void *data, unsigned size, bool is_write);
/* The same, and *name = the claiming range's name (NULL when unclaimed), for traces. */
bool bus_dispatch(struct bus *bus, uint64_t addr, void *data, unsigned size, bool is_write,
		  const char **name);

#endif
