/* Guest-physical memory: one host mapping, split around the 32-bit MMIO hole.
 *
 * Every guest address the monitor touches goes through memory_gpa_to_host(), which returns NULL for
 * any range that is not entirely guest RAM. Nothing else computes host pointers from guest addresses. */
#ifndef VMM_MEMORY_H
#define VMM_MEMORY_H

#include <stdbool.h>
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

/* Code-page tracking, for the software CPU's decoded blocks (src/cpu/emu/cpu.c): one 32-bit
 * version per 4 KiB page of RAM, indexed by host address (the regions lie back to back in one
 * mapping). Its low two bits: DECODED, some vCPU is decoding or has decoded code from the page
 * since it was last written; SETTLED, and the page's writes before that are all visible. A
 * block records the version (both bits set) it was decoded under and is valid while the page
 * still has it. Every writer of guest RAM calls memory_code_store() or memory_written() after
 * its write; a write to a DECODED page clears both bits and adds 4, so the page's blocks are
 * decoded again and later writes cost one load and a test until code is decoded there again.
 *
 * Ordering against another thread's write (cross-modifying code, DMA): a writer stores and
 * then loads the version; a decoder sets DECODED (a locked compare-and-swap) and then reads
 * the bytes. A host CPU may let the writer's load pass its own store (store buffer), so both
 * could miss each other; after DECODED is set the decoder therefore runs membarrier() (every
 * thread of the process executes a full barrier) before it sets SETTLED and reads the bytes:
 * a writer's store from before it is then visible, and a writer's load after it sees DECODED
 * and bumps the version. */
#define MEMORY_CODE_DECODED 1u
#define MEMORY_CODE_SETTLED 3u
struct memory_code_pages {
	uint8_t *base; /* host address of page 0 */
	uint64_t nr_pages;
	uint32_t *version; /* NULL: not tracked (KVM runs the guest) */
	bool membarrier; /* membarrier(PRIVATE_EXPEDITED) is registered */
	uint64_t marks; /* statistics: pages marked DECODED (relaxed atomics) */
};

struct guest_memory {
	uint8_t *base; /* one mapping holding every region back to back */
	uint64_t size; /* total RAM in bytes */
	unsigned nr_regions;
	struct memory_region regions[2];
	struct memory_code_pages code;
};

/* Lay out and map `size` bytes of RAM. Returns 0 or a negative errno. */
int memory_init(struct guest_memory *mem, uint64_t size);
void memory_destroy(struct guest_memory *mem);

/* Host pointer for [gpa, gpa + len) if the whole range is RAM in one region, else NULL. */
void *memory_gpa_to_host(const struct guest_memory *mem, uint64_t gpa, uint64_t len);

/* Copy to/from guest RAM; 0 or -EFAULT when the range is not RAM. */
int memory_write(const struct guest_memory *mem, uint64_t gpa, const void *src, uint64_t len);
/* (memory_write() calls memory_written().) */
int memory_read(const struct guest_memory *mem, uint64_t gpa, void *dst, uint64_t len);

/* End of the RAM below the hole (exclusive). */
uint64_t memory_low_end(const struct guest_memory *mem);

/* Start tracking code pages in `cp` for `size` bytes of RAM at host address `base` (the
 * software CPU does, for guest RAM or a test's). 0 or -ENOMEM. */
int memory_code_init(struct memory_code_pages *cp, uint8_t *base, uint64_t size);
void memory_code_destroy(struct memory_code_pages *cp);
/* The version word of the page holding `host` (inside the tracked RAM). */
static inline uint32_t *memory_code_word(const struct memory_code_pages *cp, const void *host)
{
	return &cp->version[(uint64_t)((const uint8_t *)host - cp->base) >> 12];
}
/* About to decode code from the page of `word`: mark it DECODED and SETTLED (above). Returns
 * the version to record in the block; read the bytes after this. */
uint32_t memory_code_mark(struct memory_code_pages *cp, uint32_t *word);
/* The page of `word` was written while DECODED: a new version, unmarked. */
void memory_code_bump(uint32_t *word);
/* After a store into the one page holding `host`: one load and a test unless code was decoded
 * there. The compiler barrier keeps the load after the store (the host CPU is handled by
 * memory_code_mark()). */
static inline void memory_code_store(const struct memory_code_pages *cp, const void *host)
{
	uint32_t *word = memory_code_word(cp, host);

	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(word, __ATOMIC_RELAXED) & MEMORY_CODE_DECODED)
		memory_code_bump(word);
}
/* After the monitor wrote [host, host + len) of guest RAM (a device's DMA, a loader, gdb,
 * kvmclock): no decoded block there stays valid. Nothing when code is not tracked. */
void memory_written(const struct guest_memory *mem, const void *host, uint64_t len);
/* The same for the RAM that `cp` tracks (tests with their own RAM). */
void memory_code_written(const struct memory_code_pages *cp, const void *host, uint64_t len);

#endif
