/* The device bus: registration, overlap refusal, dispatch by address, unclaimed accesses. */
#include <errno.h>
#include <string.h>

#include "bus.h"
#include "test.h"

struct probe {
	uint64_t last_offset;
	unsigned calls;
	uint8_t value;
};

static void probe_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct probe *p = owner;
	p->calls++;
	p->last_offset = offset;
	if (is_write)
		p->value = *(uint8_t *)data;
	else
		memset(data, p->value, size);
}

static void ranges_dispatch_by_address(void)
{
	struct bus bus;
	struct probe a = { 0 }, b = { 0 };
	bus_init(&bus, "test");
	CHECK(bus_register(&bus, 0x3F8, 8, &a, probe_io, "a") == 0);
	CHECK(bus_register(&bus, 0x70, 2, &b, probe_io, "b") == 0);
	uint8_t v = 0x5A;
	CHECK(bus_access(&bus, 0x3FB, &v, 1, true));
	CHECK(a.calls == 1 && a.last_offset == 3 && a.value == 0x5A);
	uint32_t r = 0;
	CHECK(bus_access(&bus, 0x71, &r, 4, false));
	CHECK(b.calls == 1 && b.last_offset == 1);
	CHECK(!bus_access(&bus, 0x400, &r, 4, false));
	CHECK_EQ(r, 0xFFFFFFFF);
	CHECK(!bus_access(&bus, 0x3F7, &v, 1, true));
	CHECK_EQ(bus.unclaimed_reads, 1);
	CHECK_EQ(bus.unclaimed_writes, 1);
	bus_destroy(&bus);
}

static void overlaps_and_empty_ranges_are_refused(void)
{
	struct bus bus;
	struct probe a = { 0 };
	bus_init(&bus, "test");
	CHECK(bus_register(&bus, 0x1000, 0x100, &a, probe_io, "a") == 0);
	CHECK(bus_register(&bus, 0x10FF, 1, &a, probe_io, "x") == -EEXIST);
	CHECK(bus_register(&bus, 0xF00, 0x101, &a, probe_io, "x") == -EEXIST);
	CHECK(bus_register(&bus, 0x1080, 2, &a, probe_io, "x") == -EEXIST);
	CHECK(bus_register(&bus, 0xF00, 0x100, &a, probe_io, "below") == 0);
	CHECK(bus_register(&bus, 0x1100, 0x100, &a, probe_io, "above") == 0);
	CHECK(bus_register(&bus, 0x5000, 0, &a, probe_io, "empty") == -EINVAL);
	CHECK(bus_register(&bus, ~0ull - 2, 8, &a, probe_io, "wraps") == -EINVAL);
	CHECK(bus_register(&bus, ~0ull, 1, &a, probe_io, "last") == 0);
	uint8_t v;
	CHECK(bus_access(&bus, ~0ull, &v, 1, false));
	bus_destroy(&bus);
}

static void many_ranges_stay_sorted(void)
{
	struct bus bus;
	static struct probe p[200];
	bus_init(&bus, "test");
	for (unsigned i = 0; i < 200; i++) /* registered in a scrambled order */
		CHECK(bus_register(&bus, ((i * 73) % 200) * 0x10, 0x10, &p[(i * 73) % 200], probe_io, "p") == 0);
	for (unsigned i = 0; i < 200; i++) {
		uint8_t v = (uint8_t)i;
		CHECK(bus_access(&bus, i * 0x10 + 5, &v, 1, true));
		CHECK(p[i].value == (uint8_t)i && p[i].last_offset == 5);
	}
	CHECK(bus_unregister(&bus, 0x50, &p[5]) == 0);
	uint8_t v;
	CHECK(!bus_access(&bus, 0x55, &v, 1, false));
	CHECK(bus_unregister(&bus, 0x50, &p[5]) == -ENOENT);
	bus_destroy(&bus);
}

int main(void)
{
	RUN_TEST(ranges_dispatch_by_address);
	RUN_TEST(overlaps_and_empty_ranges_are_refused);
	RUN_TEST(many_ranges_stay_sorted);
	return TEST_EXIT();
}
