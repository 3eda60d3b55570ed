/* Guest-physical memory: one host mapping, split around the 32-bit MMIO hole.
 *
 * Every guest address the monitor touches goes through memory_gpa_to_host(), which returns NULL for
 * any range that is not entirely guest RAM. Nothing else computes host pointers from guest addresses. */
#ifndef VMM_MEMORY_H
#define VMM_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#define MEMORY_LOW_LIMIT 0xC0000000ull /* start of the 32-bit MMIO hole */
#define MEMORY_HIGH_BASE 0x100000000ull /* RAM above the hole starts here */
#define MEMORY_MIN_SIZE (64ull << 20)

struct memory_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *host;
};

struct guest_memory {
	uint8_t *base; /* one mapping holding every region back to back */
	uint64_t size; /* total RAM in bytes */
	unsigned nr_regions;
	struct memory_region regions[2];
};

/* Lay out and map `size` bytes of RAM. Returns 0 or a negative errno. */
int memory_init(struct guest_memory *mem, uint64_t size);
void memory_destroy(struct guest_memory *mem);

/* Host pointer for [gpa, gpa + len) if the whole range is RAM in one region, else NULL. */
void *memory_gpa_to_host(const struct guest_memory *mem, uint64_t gpa, uint64_t len);

/* Copy to/from guest RAM; 0 or -EFAULT when the range is not RAM. */
int memory_write(const struct guest_memory *mem, uint64_t gpa, const void *src, uint64_t len);
int memory_read(const struct guest_memory *mem, uint64_t gpa, void *dst, uint64_t len);

/* End of the RAM below the hole (exclusive). */
uint64_t memory_low_end(const struct guest_memory *mem);

#endif
