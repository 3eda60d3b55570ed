/* Kernel loaders: bzImage (Linux/x86 boot protocol, 64-bit entry) and ELF vmlinux (PVH entry).
 * Parsing is pure (unit-tested on malformed input); loading writes into guest RAM only through
 * memory.h's checked functions. */
#ifndef VMM_BOOT_H
#define VMM_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/state.h"
#include "memory.h"

/* Fixed guest-physical addresses (docs/platform.md). */
#define BOOT_GDT_ADDR 0x500ull
#define BOOT_PVH_INFO_ADDR 0x1000ull
#define BOOT_PVH_MODLIST_ADDR 0x1080ull
#define BOOT_PVH_MEMMAP_ADDR 0x1100ull
#define BOOT_ZERO_PAGE_ADDR 0x7000ull
#define BOOT_PML4_ADDR 0x9000ull
#define BOOT_CMDLINE_ADDR 0x20000ull
#define BOOT_EBDA_START 0x9FC00ull
#define BOOT_HIGH_START 0x100000ull /* 1 MiB: where kernels load */
#define BOOT_ACPI_ADDR 0xE0000ull
#define BOOT_ECAM_START 0xE0000000ull /* = PCI_ECAM_BASE */
#define BOOT_ECAM_SIZE 0x10000000ull

#define E820_RAM 1
#define E820_RESERVED 2
#define E820_MAX_ENTRIES 8

struct e820_entry {
	uint64_t addr, size;
	uint32_t type;
};

/* The guest's memory map for this RAM layout. Returns the number of entries. */
unsigned e820_build(const struct guest_memory *mem, struct e820_entry *out, unsigned max);

enum kernel_format { KERNEL_BZIMAGE, KERNEL_ELF_PVH };

struct bzimage_info {
	uint16_t version;
	size_t setup_size; /* bytes of the real-mode part, the protected-mode part follows */
	uint32_t init_size; /* memory the kernel needs from its load address */
	uint32_t initrd_addr_max;
	uint32_t cmdline_size; /* including the NUL */
	uint16_t xloadflags;
	size_t header_end; /* file offset where the setup header ends */
};

#define ELF_MAX_SEGMENTS 16
struct elf_segment {
	uint64_t offset, paddr, filesz, memsz;
};
struct elf_info {
	uint32_t pvh_entry;
	unsigned nr_segments;
	struct elf_segment segments[ELF_MAX_SEGMENTS];
	uint64_t end; /* highest paddr + memsz */
};

/* 0 or -1 with a one-line reason in err. */
int bzimage_parse(const uint8_t *data, size_t size, struct bzimage_info *info, char *err,
		  size_t err_len);
int elf_parse(const uint8_t *data, size_t size, struct elf_info *info, char *err, size_t err_len);

/* What the loader needs besides the kernel file. */
struct boot_params_in {
	const uint8_t *kernel;
	size_t kernel_size;
	const uint8_t *initrd;
	size_t initrd_size;
	const char *cmdline;
	uint64_t rsdp_addr;
};

/* Load into guest RAM and fill vCPU 0's entry state. 0 or -1 with a reason in err. */
int boot_load(struct guest_memory *mem, const struct boot_params_in *in, struct cpu_state *state,
	      char *err, size_t err_len);

#endif
