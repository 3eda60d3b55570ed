/* Booting a bzImage without running its decompressor: the monitor decompresses the payload
 * (LZ4 only: the other formats would need a library or much more code), lays the ELF kernel out
 * as arch/x86/boot/compressed/misc.c does, chooses physical and virtual addresses as its KASLR
 * code does (kaslr.c), applies the relocation table (relocs.c), and the vCPU starts at the
 * kernel's own startup_64 in the state the 64-bit boot protocol promises (boot.c). On the
 * software CPU the decompressor costs ~2 s of emulated time; here it costs ~0.2 s of host time.
 * Anything unexpected sends the kernel back to decompressing itself, with the reason traced. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "boot/boot.h"
#include "boot/lz4.h"

#define KERNEL_START_MAP 0xFFFFFFFF80000000ull /* __START_KERNEL_map */
#define KERNEL_IMAGE_AREA (1ull << 30) /* KERNEL_IMAGE_SIZE with CONFIG_RANDOMIZE_BASE */
#define MIN_KERNEL_ALIGN (2ull << 20) /* the kernel maps itself with 2 MiB pages */
#define KASLR_PHYS_MIN_CAP (512ull << 20) /* kaslr.c: the minimum is at most 512 MiB */
#define DIRECT_PHYS_LIMIT (4ull << 30) /* the boot page tables map the first 4 GiB */
#define LOADFLAG_KASLR (1u << 1)

static uint32_t direct_get32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t direct_align_up(uint64_t v, uint64_t align)
{
	return (v + align - 1) & ~(align - 1);
}

/* CONFIG_PHYSICAL_ALIGN: the step of both KASLR choices. */
static uint64_t direct_align(const struct bzimage_info *bz)
{
	return bz->relocatable ? bz->kernel_alignment : MIN_KERNEL_ALIGN;
}

/* The compressor, from the payload's magic (what the kernel's Makefile can produce). */
static const char *direct_payload_format(const uint8_t *p, size_t len)
{
	static const struct {
		const char *name;
		uint8_t magic[6];
		size_t len;
	} formats[] = {
		{ "lz4", { 0x02, 0x21, 0x4C, 0x18 }, 4 },
		{ "gzip", { 0x1F, 0x8B }, 2 },
		{ "xz", { 0xFD, '7', 'z', 'X', 'Z', 0 }, 6 },
		{ "zstd", { 0x28, 0xB5, 0x2F, 0xFD }, 4 },
		{ "bzip2", { 'B', 'Z', 'h' }, 3 },
		{ "lzo", { 0x89, 'L', 'Z', 'O' }, 4 },
		{ "lzma", { 0x5D, 0 }, 2 },
	};
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
		if (len >= formats[i].len && !memcmp(p, formats[i].magic, formats[i].len))
			return formats[i].name;
	return "unknown";
}

/* A word of the command line equal to word, or starting with word when it ends in '='; a
 * pointer just past the match, or NULL. */
static const char *direct_cmdline_find(const char *cmdline, const char *word)
{
	size_t len = strlen(word);
	bool value = len && word[len - 1] == '=';
	for (const char *p = cmdline; *p;) {
		while (*p == ' ' || *p == '\t')
			p++;
		size_t n = strcspn(p, " \t");
		if ((n == len || (value && n > len)) && !strncmp(p, word, len))
			return p + len;
		p += n;
	}
	return NULL;
}

/* mem=SIZE[KMGTPE] limits the RAM the kernel uses: keep the kernel below it (kaslr.c does). */
static uint64_t direct_mem_limit(const char *cmdline)
{
	const char *v = direct_cmdline_find(cmdline, "mem=");
	if (!v)
		return ~0ull;
	char *end;
	uint64_t size = strtoull(v, &end, 0);
	const char *suffixes = "KMGTPE";
	const char *s = *end ? strchr(suffixes, *end & ~0x20) : NULL;
	if (s)
		size <<= 10 * (s - suffixes + 1);
	return size ? size : ~0ull;
}

/* Check the ELF kernel against the header and find how much memory it spans from pref_address. */
static int direct_check_layout(const struct bzimage_info *bz, struct direct_kernel *dk,
			       uint64_t *extent, struct boot_report *report)
{
	uint64_t end = 0;
	for (unsigned i = 0; i < dk->elf.nr_segments; i++) {
		const struct elf_segment *s = &dk->elf.segments[i];
		if (s->paddr < bz->pref_address ||
		    s->paddr + s->memsz - bz->pref_address > (1ull << 32)) {
			snprintf(report->note, sizeof(report->note),
				 "segment at 0x%llx is not above pref_address 0x%llx",
				 (unsigned long long)s->paddr,
				 (unsigned long long)bz->pref_address);
			return -1;
		}
		if (s->paddr + s->memsz - bz->pref_address > end)
			end = s->paddr + s->memsz - bz->pref_address;
	}
	if (dk->elf.entry < bz->pref_address || dk->elf.entry - bz->pref_address >= end) {
		snprintf(report->note, sizeof(report->note),
			 "entry point 0x%llx outside the kernel",
			 (unsigned long long)dk->elf.entry);
		return -1;
	}
	*extent = end;
	return 0;
}

/* The payload from the setup header, its format, and its size once decompressed (the kernel's
 * build appends it as a little-endian u32). */
static int direct_find_payload(const struct boot_params_in *in, const struct bzimage_info *bz,
			       const uint8_t **payload, size_t *len, uint32_t *out_len,
			       struct boot_report *report)
{
	size_t rest = in->kernel_size - bz->setup_size;
	if (!bz->payload_length) {
		snprintf(report->note, sizeof(report->note), "no payload in the setup header");
		return -1;
	}
	if (bz->payload_offset > rest || bz->payload_length > rest - bz->payload_offset ||
	    bz->payload_length < 8) {
		snprintf(report->note, sizeof(report->note), "payload outside the file");
		return -1;
	}
	*payload = in->kernel + bz->setup_size + bz->payload_offset;
	*len = bz->payload_length - 4;
	*out_len = direct_get32(*payload + *len);
	report->format = direct_payload_format(*payload, *len);
	if (strcmp(report->format, "lz4")) {
		snprintf(report->note, sizeof(report->note), "%s payload", report->format);
		return -1;
	}
	/* The kernel decompresses in place within init_size: a larger claim is not a kernel. */
	if (!*out_len || *out_len > bz->init_size) {
		snprintf(report->note, sizeof(report->note),
			 "decompressed size %u does not fit init_size %u", *out_len, bz->init_size);
		return -1;
	}
	return 0;
}

static int direct_check_header(const struct bzimage_info *bz, struct boot_report *report)
{
	uint64_t align = bz->kernel_alignment;
	if (bz->pref_address < BOOT_HIGH_START || bz->pref_address % MIN_KERNEL_ALIGN ||
	    bz->pref_address >= DIRECT_PHYS_LIMIT) {
		snprintf(report->note, sizeof(report->note), "pref_address 0x%llx",
			 (unsigned long long)bz->pref_address);
		return -1;
	}
	if (bz->relocatable &&
	    (align < MIN_KERNEL_ALIGN || align & (align - 1) || align > (1u << 30))) {
		snprintf(report->note, sizeof(report->note), "kernel_alignment 0x%llx",
			 (unsigned long long)align);
		return -1;
	}
	return 0;
}

int direct_prepare(const struct boot_params_in *in, const struct bzimage_info *bz,
		   struct direct_kernel *dk, struct boot_report *report)
{
	memset(dk, 0, sizeof(*dk));
	const uint8_t *payload;
	size_t len, got;
	uint32_t out_len;
	if (direct_check_header(bz, report) < 0 ||
	    direct_find_payload(in, bz, &payload, &len, &out_len, report) < 0)
		return -1;
	dk->data = malloc(out_len);
	if (!dk->data) {
		snprintf(report->note, sizeof(report->note), "no memory for %u bytes", out_len);
		return -1;
	}
	dk->size = out_len;
	int ret = lz4_legacy_decode(payload, len, dk->data, out_len, &got);
	if (ret < 0 || got != out_len) {
		snprintf(report->note, sizeof(report->note), "lz4 payload: %s",
			 ret == -ENOSPC || (!ret && got != out_len)
				 ? "size differs from its trailer"
				 : "corrupt");
		goto fail;
	}
	char err[128];
	uint64_t extent;
	if (elf_parse_image(dk->data, dk->size, &dk->elf, err, sizeof(err)) < 0) {
		snprintf(report->note, sizeof(report->note), "decompressed payload: %s", err);
		goto fail;
	}
	if (direct_check_layout(bz, dk, &extent, report) < 0)
		goto fail;
	dk->extent = extent;
	dk->image_size =
		direct_align_up(extent > bz->init_size ? extent : bz->init_size, MIN_KERNEL_ALIGN);
	/* Without a table the kernel was built without KASLR: it runs where it was linked. */
	dk->has_relocs = dk->elf.file_end < dk->size &&
			 relocs_parse(dk->data + dk->elf.file_end, dk->size - dk->elf.file_end,
				      &dk->relocs) == 0;
	if (dk->has_relocs &&
	    relocs_check(&dk->relocs, extent, KERNEL_START_MAP + bz->pref_address) < 0) {
		snprintf(report->note, sizeof(report->note), "relocation outside the kernel");
		goto fail;
	}
	report->decompressed = dk->size;
	return 0;
fail:
	direct_free(dk);
	return -1;
}

void direct_free(struct direct_kernel *dk)
{
	free(dk->data);
	dk->data = NULL;
}

/* The physical address: a random slot (KASLR), else pref_address. */
static int direct_choose_phys(struct guest_memory *mem, const struct boot_params_in *in,
			      const struct bzimage_info *bz, const struct direct_kernel *dk,
			      const struct boot_range *avoid, unsigned nr_avoid, bool kaslr,
			      uint64_t *phys, struct boot_report *report)
{
	struct e820_entry map[E820_MAX_ENTRIES];
	uint64_t limit = direct_mem_limit(in->cmdline);
	struct kaslr_phys_request req = {
		.map = map,
		.nr_map = e820_build(mem, map, E820_MAX_ENTRIES),
		.avoid = avoid,
		.nr_avoid = nr_avoid,
		.image_size = dk->image_size,
		.align = direct_align(bz),
		.limit = limit < DIRECT_PHYS_LIMIT ? limit : DIRECT_PHYS_LIMIT,
	};
	uint64_t min =
		bz->pref_address < KASLR_PHYS_MIN_CAP ? bz->pref_address : KASLR_PHYS_MIN_CAP;
	req.min = direct_align_up(min, req.align);
	*phys = bz->pref_address;
	/* memmap= reserves ranges the kernel's decompressor would avoid: do not guess them. */
	if (kaslr && bz->relocatable && !direct_cmdline_find(in->cmdline, "memmap=") &&
	    kaslr_choose_phys(&req, in->random[0], phys) == 0)
		return 0;
	if (!kaslr_fits(&req, *phys)) {
		snprintf(report->note, sizeof(report->note),
			 "no room for %llu MiB at 0x%llx (use a larger -m)",
			 (unsigned long long)dk->image_size >> 20, (unsigned long long)*phys);
		return -1;
	}
	return 0;
}

int direct_place(struct guest_memory *mem, const struct boot_params_in *in,
		 const struct bzimage_info *bz, struct direct_kernel *dk,
		 const struct boot_range *avoid, unsigned nr_avoid, uint64_t *entry,
		 struct boot_report *report)
{
	bool kaslr =
		dk->has_relocs && bz->relocatable && !direct_cmdline_find(in->cmdline, "nokaslr");
	uint64_t phys, virt = bz->pref_address;
	if (direct_choose_phys(mem, in, bz, dk, avoid, nr_avoid, kaslr, &phys, report) < 0)
		return -1;
	uint8_t *image = memory_gpa_to_host(mem, phys, dk->image_size);
	if (!image) {
		snprintf(report->note, sizeof(report->note), "kernel outside RAM at 0x%llx",
			 (unsigned long long)phys);
		return -1;
	}
	/* parse_elf() in misc.c: each PT_LOAD at its offset from pref_address. */
	for (unsigned i = 0; i < dk->elf.nr_segments; i++) {
		const struct elf_segment *s = &dk->elf.segments[i];
		uint8_t *dst = image + (s->paddr - bz->pref_address);
		memcpy(dst, dk->data + s->offset, s->filesz);
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	if (kaslr) {
		virt = kaslr_choose_virt(bz->pref_address, dk->image_size, direct_align(bz),
					 KERNEL_IMAGE_AREA, in->random[1]);
		/* Checked by direct_prepare(): cannot fail here. */
		if (relocs_apply(&dk->relocs, image, dk->extent,
				 KERNEL_START_MAP + bz->pref_address, virt - bz->pref_address) < 0)
			return -1;
	}
	*entry = phys + (dk->elf.entry - bz->pref_address);
	report->direct = true;
	report->kaslr = kaslr;
	report->phys = phys;
	report->virt_offset = virt - bz->pref_address;
	const char *why = kaslr		     ? "KASLR"
			  : !dk->has_relocs  ? "no relocation table: runs as linked"
			  : !bz->relocatable ? "not relocatable: runs as linked"
					     : "nokaslr";
	snprintf(report->note, sizeof(report->note), "%s", why);
	return 0;
}

/* The setup header's loadflags as the kernel's decompressor leaves them. */
uint8_t direct_loadflags(uint8_t loadflags, const struct boot_report *report)
{
	return report->kaslr ? loadflags | LOADFLAG_KASLR : loadflags & ~LOADFLAG_KASLR;
}
