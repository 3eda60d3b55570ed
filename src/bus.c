/* Device address spaces: a sorted array searched by bisection. Few ranges, read-mostly. */
#include "bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void bus_init(struct bus *bus, const char *name)
{
	memset(bus, 0, sizeof(*bus));
	bus->name = name;
	pthread_rwlock_init(&bus->lock, NULL);
}

void bus_destroy(struct bus *bus)
{
	free(bus->ranges);
	bus->ranges = NULL;
	bus->nr_ranges = bus->cap_ranges = 0;
	pthread_rwlock_destroy(&bus->lock);
}

/* Index of the first range whose end is above addr (the only candidate that can contain it). */
static unsigned bus_find(const struct bus *bus, uint64_t addr)
{
	unsigned lo = 0, hi = bus->nr_ranges;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		const struct bus_range *r = &bus->ranges[mid];
		if (addr - r->base < r->len || addr < r->base)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

int bus_register(struct bus *bus, uint64_t base, uint64_t len, void *owner, bus_io_fn io,
		 const char *name)
{
	if (len == 0 || base + len - 1 < base)
		return -EINVAL;
	int ret = 0;
	pthread_rwlock_wrlock(&bus->lock);
	unsigned i = bus_find(bus, base);
	if (i < bus->nr_ranges && bus->ranges[i].base <= base + len - 1) {
		ret = -EEXIST;
		goto out;
	}
	if (bus->nr_ranges == bus->cap_ranges) {
		unsigned cap = bus->cap_ranges ? bus->cap_ranges * 2 : 16;
		struct bus_range *n = realloc(bus->ranges, cap * sizeof(*n));
		if (!n) {
			ret = -ENOMEM;
			goto out;
		}
		bus->ranges = n;
		bus->cap_ranges = cap;
	}
	memmove(&bus->ranges[i + 1], &bus->ranges[i], (bus->nr_ranges - i) * sizeof(*bus->ranges));
	bus->ranges[i] = (struct bus_range){ base, len, owner, io, name, 0, 0 };
	bus->nr_ranges++;
out:
	pthread_rwlock_unlock(&bus->lock);
	return ret;
}

int bus_unregister(struct bus *bus, uint64_t base, void *owner)
{
	int ret = -ENOENT;
	pthread_rwlock_wrlock(&bus->lock);
	unsigned i = bus_find(bus, base);
	if (i < bus->nr_ranges && bus->ranges[i].base == base && bus->ranges[i].owner == owner) {
		memmove(&bus->ranges[i], &bus->ranges[i + 1],
			(bus->nr_ranges - i - 1) * sizeof(*bus->ranges));
		bus->nr_ranges--;
		ret = 0;
	}
	pthread_rwlock_unlock(&bus->lock);
	return ret;
}

bool bus_access(struct bus *bus, uint64_t addr, void *data, unsigned size, bool is_write)
{
	return bus_dispatch(bus, addr, data, size, is_write, NULL);
}

bool bus_dispatch(struct bus *bus, uint64_t addr, void *data, unsigned size, bool is_write,
		  const char **name)
{
	pthread_rwlock_rdlock(&bus->lock);
	unsigned i = bus_find(bus, addr);
	if (i < bus->nr_ranges && addr >= bus->ranges[i].base) {
		struct bus_range *range = &bus->ranges[i];
		__atomic_fetch_add(is_write ? &range->writes : &range->reads, 1, __ATOMIC_RELAXED);
		struct bus_range r = *range;
		pthread_rwlock_unlock(&bus->lock);
		if (name)
			*name = r.name;
		r.io(r.owner, addr - r.base, data, size, is_write);
		return true;
	}
	pthread_rwlock_unlock(&bus->lock);
	if (name)
		*name = NULL;
	if (is_write) {
		__atomic_fetch_add(&bus->unclaimed_writes, 1, __ATOMIC_RELAXED);
	} else {
		memset(data, 0xFF, size);
		__atomic_fetch_add(&bus->unclaimed_reads, 1, __ATOMIC_RELAXED);
	}
	return false;
}
