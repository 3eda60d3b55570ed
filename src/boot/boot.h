/* Kernel loaders: bzImage (Linux/x86 boot protocol, 64-bit entry) and ELF vmlinux (PVH entry).
 * Parsing is pure (unit-tested on malformed input); loading writes into guest RAM only through
 * memory.h's checked functions. */
#ifndef VMM_BOOT_H
#define VMM_BOOT_H

#include <stdbool.h>
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
	uint8_t loadflags;
	bool relocatable; /* relocatable_kernel: may run at any kernel_alignment multiple */
	uint32_t kernel_alignment;
	uint64_t pref_address; /* where it was linked to run (LOAD_PHYSICAL_ADDR) */
	uint32_t payload_offset, payload_length; /* the compressed kernel, from setup_size on */
};

#define ELF_MAX_SEGMENTS 16
struct elf_segment {
	uint64_t offset, paddr, filesz, memsz;
};
struct elf_info {
	bool has_pvh_entry;
	uint32_t pvh_entry;
	uint64_t entry; /* e_entry */
	uint64_t file_end; /* end of the headers, tables and segments in the file */
	unsigned nr_segments;
	struct elf_segment segments[ELF_MAX_SEGMENTS];
	uint64_t end; /* highest paddr + memsz */
};

/* 0 or -1 with a one-line reason in err. */
int bzimage_parse(const uint8_t *data, size_t size, struct bzimage_info *info, char *err,
		  size_t err_len);
int elf_parse(const uint8_t *data, size_t size, struct elf_info *info, char *err, size_t err_len);
/* The same without requiring the PVH note (a kernel entered at its ELF entry point). */
int elf_parse_image(const uint8_t *data, size_t size, struct elf_info *info, char *err,
		    size_t err_len);

/* Relocation table of a KASLR-capable x86-64 kernel (relocs.c). */
struct kernel_relocs {
	const uint8_t *table; /* from its first zero word to the end of the region */
	size_t table_len;
	size_t n64, n_inv32, n32;
};
/* Find the table at the end of [data, data + len). -ENOENT: no table there. */
int relocs_parse(const uint8_t *data, size_t len, struct kernel_relocs *r);
/* 0 when every field lies inside image_size bytes linked at virtual image_vaddr, else -EINVAL. */
int relocs_check(const struct kernel_relocs *r, size_t image_size, uint64_t image_vaddr);
/* Add delta to each field (image linked to run at virtual image_vaddr); -EINVAL, with image
 * untouched, when any field lies outside it. */
int relocs_apply(const struct kernel_relocs *r, uint8_t *image, size_t image_size,
		 uint64_t image_vaddr, uint64_t delta);

/* KASLR placement (kaslr.c). */
struct boot_range {
	uint64_t start, size;
};
struct kaslr_phys_request {
	const struct e820_entry *map;
	unsigned nr_map;
	const struct boot_range *avoid;
	unsigned nr_avoid;
	uint64_t min, limit; /* the image lies in [min, limit) */
	uint64_t image_size, align; /* align: a power of two */
};
/* Aligned addresses where the image fits in RAM and overlaps nothing to avoid. */
uint64_t kaslr_phys_slots(const struct kaslr_phys_request *req);
/* One of them, by random; -ENOSPC when there is none. */
int kaslr_choose_phys(const struct kaslr_phys_request *req, uint64_t random, uint64_t *addr);
/* Whether addr itself is such a slot. */
bool kaslr_fits(const struct kaslr_phys_request *req, uint64_t addr);
/* A virtual address min + k * align with the image inside [0, area), by random. */
uint64_t kaslr_choose_virt(uint64_t min, uint64_t image_size, uint64_t align, uint64_t area,
			   uint64_t random);

/* What the loader needs besides the kernel file. */
struct boot_params_in {
	const uint8_t *kernel;
	size_t kernel_size;
	const uint8_t *initrd;
	size_t initrd_size;
	const char *cmdline;
	uint64_t rsdp_addr;
	bool decompress_in_guest; /* --kernel-decompress guest: never decompress a bzImage here */
	uint64_t random[2]; /* for KASLR: physical and virtual choice */
};

/* How a kernel was loaded, for --trace boot. */
struct boot_report {
	bool direct; /* payload decompressed here, kernel entered at its own startup_64 */
	const char *format; /* payload format: "lz4", "gzip", ..., or "" */
	char note[160]; /* why the kernel decompresses itself, or what the direct path chose */
	uint64_t phys; /* where the decompressed kernel starts */
	uint64_t virt_offset; /* KASLR virtual offset (0: as linked) */
	bool kaslr;
	size_t decompressed; /* bytes */
};

/* Load into guest RAM and fill vCPU 0's entry state. 0 or -1 with a reason in err. */
int boot_load(struct guest_memory *mem, const struct boot_params_in *in, struct cpu_state *state,
	      struct boot_report *report, char *err, size_t err_len);

/* The direct path for a bzImage (direct.c): its decompressed kernel, checked, ready to place. */
struct direct_kernel {
	uint8_t *data; /* decompressed payload (ELF, then the relocation table), malloc'd */
	size_t size;
	struct elf_info elf;
	struct kernel_relocs relocs;
	bool has_relocs;
	uint64_t extent; /* bytes the PT_LOAD segments span from pref_address */
	uint64_t image_size; /* memory it needs there: extent or init_size, 2 MiB aligned */
};
/* 0 and dk ready, or -1 with the reason in report->note (the kernel then decompresses itself). */
int direct_prepare(const struct boot_params_in *in, const struct bzimage_info *bz,
		   struct direct_kernel *dk, struct boot_report *report);
/* Choose the addresses (KASLR unless nokaslr or no relocation table), copy the segments,
 * relocate. 0 and the entry point, or -1 with a reason in report->note. */
int direct_place(struct guest_memory *mem, const struct boot_params_in *in,
		 const struct bzimage_info *bz, struct direct_kernel *dk,
		 const struct boot_range *avoid, unsigned nr_avoid, uint64_t *entry,
		 struct boot_report *report);
void direct_free(struct direct_kernel *dk);
/* The setup header's loadflags as the kernel's decompressor leaves them (KASLR_FLAG). */
uint8_t direct_loadflags(uint8_t loadflags, const struct boot_report *report);

#endif
