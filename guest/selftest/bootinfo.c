/*
 * Reads hvm_start_info (PVH) or boot_params (Linux boot protocol) into struct boot_info.
 * Everything is copied, because the loader's structures sit in low memory that smp.c later
 * reuses for the AP trampoline.
 */
#include "bootinfo.h"
#include "layout.h"
#include "lib.h"

/* PVH: xen/include/public/arch-x86/hvm/start_info.h */
#define HVM_START_MAGIC 0x336ec578
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr; /* version >= 1 */
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

/* Linux boot_params ("zero page") offsets: Documentation/arch/x86/zero-page.rst, boot.rst */
#define BP_ACPI_RSDP_ADDR 0x070
#define BP_EXT_CMD_LINE_PTR 0x0C8
#define BP_E820_ENTRIES 0x1E8
#define BP_BOOT_FLAG 0x1FE
#define BP_HEADER 0x202
#define BP_VERSION 0x206
#define BP_CMD_LINE_PTR 0x228
#define BP_CMDLINE_SIZE 0x238
#define BP_E820_TABLE 0x2D0
#define BP_E820_ENTRY_SIZE 20
#define SETUP_HEADER_MAGIC 0x53726448 /* "HdrS" */

/* Everything below 4 GiB is identity-mapped; the loader has no business putting us higher. */
#define MAPPED_LIMIT (4 * GiB)

static void bootinfo_problem(struct boot_info *info, const char *what, uint64_t value)
{
	if (!info->problem[0])
		format(info->problem, sizeof(info->problem), "%s (0x%lx)", what, value);
}

static void bootinfo_copy_cmdline(struct boot_info *info, uint64_t address, size_t max)
{
	if (address == 0 || address >= MAPPED_LIMIT) {
		bootinfo_problem(info, "no usable command line pointer", address);
		return;
	}
	info->have_cmdline = true;
	if (!str_copy_bounded(info->cmdline, sizeof(info->cmdline), (const char *)address, max))
		bootinfo_problem(info, "command line not NUL-terminated within its size", max);
}

static void bootinfo_add_e820(struct boot_info *info, uint64_t addr, uint64_t size, uint32_t type)
{
	if (info->e820_count >= E820_MAX) {
		bootinfo_problem(info, "too many memory map entries", info->e820_count);
		return;
	}
	info->e820[info->e820_count++] = (struct e820_entry){ addr, size, type };
}

static void bootinfo_from_pvh(struct boot_info *info, const struct hvm_start_info *start)
{
	if (start->magic != HVM_START_MAGIC)
		bootinfo_problem(info, "hvm_start_info magic", start->magic);
	if (start->version < 1) {
		bootinfo_problem(info, "hvm_start_info version < 1 has no memory map", start->version);
		return;
	}
	bootinfo_copy_cmdline(info, start->cmdline_paddr, CMDLINE_MAX);
	info->rsdp = start->rsdp_paddr;
	if (start->memmap_paddr == 0 || start->memmap_paddr >= MAPPED_LIMIT) {
		bootinfo_problem(info, "hvm_start_info memmap_paddr", start->memmap_paddr);
		return;
	}
	const struct hvm_memmap_entry *map = (const void *)start->memmap_paddr;
	/* One entry past E820_MAX is read so that an oversized map is reported, not truncated. */
	for (uint32_t i = 0; i < start->memmap_entries && i <= E820_MAX; i++)
		bootinfo_add_e820(info, map[i].addr, map[i].size, map[i].type);
}

static uint32_t bp_read32(const uint8_t *bp, unsigned offset)
{
	uint32_t v;

	memcpy(&v, bp + offset, sizeof(v));
	return v;
}

static uint64_t bp_read64(const uint8_t *bp, unsigned offset)
{
	uint64_t v;

	memcpy(&v, bp + offset, sizeof(v));
	return v;
}

static void bootinfo_from_boot_params(struct boot_info *info, const uint8_t *bp)
{
	uint16_t boot_flag = (uint16_t)bp_read32(bp, BP_BOOT_FLAG);
	uint16_t version = (uint16_t)bp_read32(bp, BP_VERSION);

	if (bp_read32(bp, BP_HEADER) != SETUP_HEADER_MAGIC)
		bootinfo_problem(info, "boot_params.hdr.header is not HdrS", bp_read32(bp, BP_HEADER));
	if (boot_flag != 0xAA55)
		bootinfo_problem(info, "boot_params.hdr.boot_flag", boot_flag);
	if (version < 0x020F)
		bootinfo_problem(info, "boot_params.hdr.version", version);

	uint64_t cmdline = bp_read32(bp, BP_CMD_LINE_PTR) |
			   (uint64_t)bp_read32(bp, BP_EXT_CMD_LINE_PTR) << 32;
	uint32_t cmdline_size = bp_read32(bp, BP_CMDLINE_SIZE);
	if (cmdline_size == 0 || cmdline_size >= CMDLINE_MAX)
		cmdline_size = CMDLINE_MAX - 1;
	bootinfo_copy_cmdline(info, cmdline, cmdline_size + 1);

	info->rsdp = bp_read64(bp, BP_ACPI_RSDP_ADDR);

	uint8_t entries = bp[BP_E820_ENTRIES];
	for (unsigned i = 0; i < entries && i < E820_MAX; i++) {
		const uint8_t *e = bp + BP_E820_TABLE + i * BP_E820_ENTRY_SIZE;
		bootinfo_add_e820(info, bp_read64(e, 0), bp_read64(e, 8), bp_read32(e, 16));
	}
}

void bootinfo_collect(struct boot_info *info, uint32_t kind, uint64_t source)
{
	memset(info, 0, sizeof(*info));
	info->kind = kind;
	info->source = source;
	if (source == 0 || source >= MAPPED_LIMIT) {
		info->kind_name = "unknown";
		bootinfo_problem(info, "boot structure address", source);
		return;
	}
	if (kind == BOOT_KIND_PVH) {
		info->kind_name = "pvh";
		bootinfo_from_pvh(info, (const struct hvm_start_info *)source);
	} else {
		info->kind_name = kind == BOOT_KIND_LINUX64 ? "linux64" : "linux32";
		bootinfo_from_boot_params(info, (const uint8_t *)source);
	}
}
