/* Guest RAM: one anonymous mapping, split around the 32-bit MMIO hole (docs/platform.md). */
#include "memory.h"

#include <errno.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MEMORY_HUGE_PAGE (2ull << 20)

/* size bytes of anonymous memory starting on a 2 MiB boundary, so that every 2 MiB of guest
 * RAM can be one huge page (and one huge mapping in KVM); older kernels do not align large
 * anonymous mappings by themselves. NULL and errno on failure. */
static uint8_t *memory_map_aligned(uint64_t size)
{
	uint8_t *raw = mmap(NULL, size + MEMORY_HUGE_PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	uintptr_t start =
		((uintptr_t)raw + MEMORY_HUGE_PAGE - 1) & ~(uintptr_t)(MEMORY_HUGE_PAGE - 1);
	uint8_t *base = (uint8_t *)start;
	if (base > raw)
		munmap(raw, (size_t)(base - raw));
	if (raw + size + MEMORY_HUGE_PAGE > base + size)
		munmap(base + size, (size_t)(raw + size + MEMORY_HUGE_PAGE - (base + size)));
	return base;
}

int memory_init(struct guest_memory *mem, uint64_t size)
{
	memset(mem, 0, sizeof(*mem));
	if (size < MEMORY_MIN_SIZE || (size & 0xFFFF) != 0)
		return -EINVAL;
	/* Anonymous private memory, not a memfd: hosts commonly allow transparent huge pages for
	 * anonymous memory but not for shmem (shmem_enabled "never" by default), and huge pages
	 * make the guest's DMA buffers physically contiguous, which O_DIRECT disk I/O on them
	 * needs to pin and to merge into few large requests (1 MiB reads: 2-4x faster here). */
	uint8_t *base = memory_map_aligned(size);
	if (!base)
		return -errno;
	/* Guest RAM is mostly untouched at start: let THP back it where the host allows. */
	madvise(base, size, MADV_HUGEPAGE);
	madvise(base, size, MADV_DONTDUMP);
	mem->base = base;
	mem->size = size;
	uint64_t low = size < MEMORY_LOW_LIMIT ? size : MEMORY_LOW_LIMIT;
	mem->regions[0] = (struct memory_region){ .gpa = 0, .size = low, .host = mem->base };
	mem->nr_regions = 1;
	if (size > low) {
		mem->regions[1] = (struct memory_region){
			.gpa = MEMORY_HIGH_BASE, .size = size - low, .host = mem->base + low
		};
		mem->nr_regions = 2;
	}
	return 0;
}

void memory_destroy(struct guest_memory *mem)
{
	memory_code_destroy(&mem->code);
	if (mem->base)
		munmap(mem->base, mem->size);
	mem->base = NULL;
}

void *memory_gpa_to_host(const struct guest_memory *mem, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < mem->nr_regions; i++) {
		const struct memory_region *r = &mem->regions[i];
		/* Written so that no sum can overflow: gpa and len are guest-controlled. */
		if (gpa >= r->gpa && gpa - r->gpa <= r->size && len <= r->size - (gpa - r->gpa))
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

int memory_write(const struct guest_memory *mem, uint64_t gpa, const void *src, uint64_t len)
{
	void *dst = memory_gpa_to_host(mem, gpa, len);
	if (!dst)
		return -EFAULT;
	memcpy(dst, src, len);
	memory_written(mem, dst, len);
	return 0;
}

int memory_read(const struct guest_memory *mem, uint64_t gpa, void *dst, uint64_t len)
{
	const void *src = memory_gpa_to_host(mem, gpa, len);
	if (!src)
		return -EFAULT;
	memcpy(dst, src, len);
	return 0;
}

uint64_t memory_low_end(const struct guest_memory *mem)
{
	return mem->regions[0].size;
}

/* ---- code pages (memory.h) ---- */

int memory_code_init(struct memory_code_pages *cp, uint8_t *base, uint64_t size)
{
	memset(cp, 0, sizeof(*cp));
	cp->version = calloc((size + 4095) / 4096, sizeof(*cp->version));
	if (!cp->version)
		return -ENOMEM;
	cp->base = base;
	cp->nr_pages = (size + 4095) / 4096;
	/* Without it (kernels before 4.14) a write racing with the first decode of its page
	 * could be missed: see memory.h. */
	cp->membarrier =
		syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
	return 0;
}

void memory_code_destroy(struct memory_code_pages *cp)
{
	free(cp->version);
	cp->version = NULL;
}

uint32_t memory_code_mark(struct memory_code_pages *cp, uint32_t *word)
{
	uint32_t v = __atomic_load_n(word, __ATOMIC_ACQUIRE);

	for (;;) {
		if ((v & MEMORY_CODE_SETTLED) == MEMORY_CODE_SETTLED)
			return v;
		if (!(v & MEMORY_CODE_DECODED)) {
			if (!__atomic_compare_exchange_n(word, &v, v | MEMORY_CODE_DECODED, false,
							 __ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
				continue;
			v |= MEMORY_CODE_DECODED;
			__atomic_store_n(&cp->marks, cp->marks + 1, __ATOMIC_RELAXED);
		}
		/* Marked (by us or by a decoder still in its membarrier): every write from before
		 * the mark is visible after this, every write after it bumps the version. */
		if (cp->membarrier)
			syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
		if (__atomic_compare_exchange_n(word, &v, v | MEMORY_CODE_SETTLED, false,
						__ATOMIC_SEQ_CST, __ATOMIC_ACQUIRE))
			return v | MEMORY_CODE_SETTLED;
		/* A writer bumped it meanwhile, or another decoder settled it: look again. */
	}
}

void memory_code_bump(uint32_t *word)
{
	uint32_t v = __atomic_load_n(word, __ATOMIC_RELAXED);

	/* Only while marked: when another writer bumped it first, it is unmarked already. */
	while ((v & MEMORY_CODE_DECODED) &&
	       !__atomic_compare_exchange_n(word, &v, (v | MEMORY_CODE_SETTLED) + 1, false,
					    __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
		;
}

void memory_written(const struct guest_memory *mem, const void *host, uint64_t len)
{
	memory_code_written(&mem->code, host, len);
}

void memory_code_written(const struct memory_code_pages *cp, const void *host, uint64_t len)
{
	const uint8_t *p = host;

	if (!cp->version || !len)
		return;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	for (uint64_t i = (uint64_t)(p - cp->base) >> 12;
	     i <= (uint64_t)(p + len - 1 - cp->base) >> 12; i++)
		if (__atomic_load_n(&cp->version[i], __ATOMIC_RELAXED) & MEMORY_CODE_DECODED)
			memory_code_bump(&cp->version[i]);
}
