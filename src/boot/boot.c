/* Loading a kernel into guest RAM and building vCPU 0's entry state, for both entry protocols. */
#include <stdio.h>
#include <string.h>

#include "boot/boot.h"

/* Offsets in struct boot_params (the "zero page"), Documentation/arch/x86/zero-page.rst. */
#define ZP_ACPI_RSDP_ADDR 0x070
#define ZP_EXT_RAMDISK_IMAGE 0x0C0
#define ZP_EXT_RAMDISK_SIZE 0x0C4
#define ZP_EXT_CMD_LINE_PTR 0x0C8
#define ZP_E820_ENTRIES 0x1E8
#define ZP_HDR 0x1F1
#define ZP_VID_MODE 0x1FA
#define ZP_TYPE_OF_LOADER 0x210
#define ZP_LOADFLAGS 0x211
#define ZP_RAMDISK_IMAGE 0x218
#define ZP_RAMDISK_SIZE 0x21C
#define ZP_CMD_LINE_PTR 0x228
#define ZP_E820_TABLE 0x2D0
#define ZP_SIZE 4096

#define PVH_MAGIC 0x336ec578u

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

static void boot_flat_segment(struct cpu_segment *s, uint16_t sel, uint8_t type, bool code64)
{
	*s = (struct cpu_segment){ .base = 0, .limit = 0xFFFFFFFF, .selector = sel, .type = type,
				   .present = 1, .dpl = 0, .db = code64 ? 0 : 1, .s = 1,
				   .l = code64, .g = 1 };
}

/* Flat segments as if loaded from the GDT at BOOT_GDT_ADDR: code 0x10, data 0x18. */
static int boot_write_gdt(struct guest_memory *mem, struct cpu_state *st, bool long_mode)
{
	uint64_t gdt[4] = { 0, 0, long_mode ? 0x00AF9B000000FFFFull : 0x00CF9B000000FFFFull,
			    0x00CF93000000FFFFull };
	if (memory_write(mem, BOOT_GDT_ADDR, gdt, sizeof(gdt)) < 0)
		return -1;
	st->gdt = (struct cpu_dtable){ .base = BOOT_GDT_ADDR, .limit = sizeof(gdt) - 1 };
	st->idt = (struct cpu_dtable){ 0, 0 };
	boot_flat_segment(&st->seg[SEG_CS], 0x10, 0xB, long_mode);
	for (int s = SEG_ES; s <= SEG_GS; s++)
		if (s != SEG_CS)
			boot_flat_segment(&st->seg[s], 0x18, 0x3, false);
	st->seg[SEG_TR] = (struct cpu_segment){ .limit = 0xFFFF, .type = 0xB, .present = 1 };
	st->seg[SEG_LDTR] = (struct cpu_segment){ .limit = 0xFFFF, .type = 0x2, .present = 1 };
	st->rflags = 0x2;
	return 0;
}

/* Identity map of the first 4 GiB with 2 MiB pages, for the 64-bit entry. */
static int boot_write_page_tables(struct guest_memory *mem)
{
	uint8_t *pml4 = memory_gpa_to_host(mem, BOOT_PML4_ADDR, 6 * 4096);
	if (!pml4)
		return -1;
	memset(pml4, 0, 6 * 4096);
	uint8_t *pdpt = pml4 + 4096, *pd = pml4 + 2 * 4096;
	put64(pml4, (BOOT_PML4_ADDR + 4096) | 3);
	for (uint64_t i = 0; i < 4; i++) {
		put64(pdpt + i * 8, (BOOT_PML4_ADDR + (2 + i) * 4096) | 3);
		for (uint64_t j = 0; j < 512; j++)
			put64(pd + (i * 512 + j) * 8, ((i << 30) | (j << 21)) | 0x83);
	}
	return 0;
}

static int boot_write_cmdline(struct guest_memory *mem, const char *cmdline, uint64_t limit,
			      char *err, size_t err_len)
{
	size_t len = strlen(cmdline) + 1;
	if (len > limit) {
		snprintf(err, err_len, "kernel command line: %zu bytes, the kernel accepts %llu", len - 1,
			 (unsigned long long)limit - 1);
		return -1;
	}
	return memory_write(mem, BOOT_CMDLINE_ADDR, cmdline, len);
}

/* Highest page-aligned address for the initrd below `max_end`, above `kernel_end`. */
static int boot_place_initrd(struct guest_memory *mem, const struct boot_params_in *in,
			     uint64_t kernel_end, uint64_t max_end, uint64_t *addr, char *err,
			     size_t err_len)
{
	uint64_t top = memory_low_end(mem) < max_end ? memory_low_end(mem) : max_end;
	if (in->initrd_size > top || ((top - in->initrd_size) & ~0xFFFull) < kernel_end) {
		snprintf(err, err_len,
			 "initrd: %zu bytes do not fit below %llu MiB after the kernel (give more memory with -m)",
			 in->initrd_size, (unsigned long long)(top >> 20));
		return -1;
	}
	*addr = (top - in->initrd_size) & ~0xFFFull;
	return memory_write(mem, *addr, in->initrd, in->initrd_size);
}

static void boot_write_e820(struct guest_memory *mem, uint8_t *zp)
{
	struct e820_entry map[E820_MAX_ENTRIES];
	unsigned n = e820_build(mem, map, E820_MAX_ENTRIES);
	zp[ZP_E820_ENTRIES] = (uint8_t)n;
	for (unsigned i = 0; i < n; i++) {
		put64(zp + ZP_E820_TABLE + i * 20, map[i].addr);
		put64(zp + ZP_E820_TABLE + i * 20 + 8, map[i].size);
		put32(zp + ZP_E820_TABLE + i * 20 + 16, map[i].type);
	}
}

/* Decompress on the host when the payload allows it (direct.c); false with the reason in
 * report->note when the kernel is to decompress itself. */
static bool boot_direct_prepare(struct guest_memory *mem, const struct boot_params_in *in,
				const struct bzimage_info *bz, struct direct_kernel *dk,
				struct boot_report *report)
{
	if (in->decompress_in_guest) {
		snprintf(report->note, sizeof(report->note), "--kernel-decompress guest");
		return false;
	}
	/* Checked before decompressing too: it bounds what a hostile header makes vmm allocate. */
	if (bz->pref_address + bz->init_size > memory_low_end(mem) ||
	    direct_prepare(in, bz, dk, report) < 0 ||
	    bz->pref_address + dk->image_size > memory_low_end(mem)) {
		uint64_t need = dk->data ? dk->image_size : bz->init_size;
		if (!report->note[0])
			snprintf(report->note, sizeof(report->note),
				 "%llu MiB from 0x%llx do not fit in RAM below 4 GiB",
				 (unsigned long long)need >> 20,
				 (unsigned long long)bz->pref_address);
		direct_free(dk);
		return false;
	}
	return true;
}

/* The protected-mode part at 1 MiB, entered at its startup_64: the kernel decompresses and
 * places itself. */
static int boot_write_compressed(struct guest_memory *mem, const struct boot_params_in *in,
				 const struct bzimage_info *bz, char *err, size_t err_len)
{
	if (BOOT_HIGH_START + bz->init_size > memory_low_end(mem)) {
		snprintf(
			err, err_len,
			"kernel needs %u MiB from 1 MiB, more than the guest has (use a larger -m)",
			bz->init_size >> 20);
		return -1;
	}
	return memory_write(mem, BOOT_HIGH_START, in->kernel + bz->setup_size,
			    in->kernel_size - bz->setup_size);
}

static int boot_load_bzimage(struct guest_memory *mem, const struct boot_params_in *in,
			     struct cpu_state *st, struct boot_report *report, char *err,
			     size_t err_len)
{
	struct bzimage_info bz;
	if (bzimage_parse(in->kernel, in->kernel_size, &bz, err, err_len) < 0)
		return -1;
	struct direct_kernel dk = { 0 };
	bool direct = boot_direct_prepare(mem, in, &bz, &dk, report);
	/* Where the kernel lies until it runs, which the initrd must stay clear of. */
	uint64_t kernel_end =
		direct ? bz.pref_address + dk.image_size : BOOT_HIGH_START + bz.init_size;
	if (!direct && boot_write_compressed(mem, in, &bz, err, err_len) < 0)
		return -1;

	int ret = -1;
	uint8_t *zp = memory_gpa_to_host(mem, BOOT_ZERO_PAGE_ADDR, ZP_SIZE);
	memset(zp, 0, ZP_SIZE);
	memcpy(zp + ZP_HDR, in->kernel + ZP_HDR, bz.header_end - ZP_HDR);
	put16(zp + ZP_VID_MODE, 0xFFFF);
	zp[ZP_TYPE_OF_LOADER] = 0xFF;
	uint64_t limit = bz.cmdline_size ? bz.cmdline_size : 256;
	if (boot_write_cmdline(mem, in->cmdline, limit, err, err_len) < 0)
		goto out;
	put32(zp + ZP_CMD_LINE_PTR, (uint32_t)BOOT_CMDLINE_ADDR);
	put32(zp + ZP_EXT_CMD_LINE_PTR, 0);
	put64(zp + ZP_ACPI_RSDP_ADDR, in->rsdp_addr);
	uint64_t initrd_addr = 0;
	if (in->initrd) {
		uint64_t max = (uint64_t)bz.initrd_addr_max + 1;
		if (boot_place_initrd(mem, in, kernel_end, max, &initrd_addr, err, err_len) < 0)
			goto out;
		put32(zp + ZP_RAMDISK_IMAGE, (uint32_t)initrd_addr);
		put32(zp + ZP_RAMDISK_SIZE, (uint32_t)in->initrd_size);
		put32(zp + ZP_EXT_RAMDISK_IMAGE, (uint32_t)(initrd_addr >> 32));
		put32(zp + ZP_EXT_RAMDISK_SIZE, (uint32_t)((uint64_t)in->initrd_size >> 32));
	}
	boot_write_e820(mem, zp);
	uint64_t entry = BOOT_HIGH_START + 0x200;
	if (direct) {
		/* What the kernel's KASLR code keeps clear (arch/x86/boot/compressed/kaslr.c). */
		const struct boot_range avoid[] = {
			{ initrd_addr, in->initrd ? in->initrd_size : 0 },
			{ BOOT_CMDLINE_ADDR, strlen(in->cmdline) + 1 },
			{ BOOT_ZERO_PAGE_ADDR, ZP_SIZE },
		};
		if (direct_place(mem, in, &bz, &dk, avoid, 3, &entry, report) < 0) {
			/* The initrd is clear of 1 MiB + init_size too: fall back. */
			entry = BOOT_HIGH_START + 0x200;
			if (boot_write_compressed(mem, in, &bz, err, err_len) < 0)
				goto out;
		}
		zp[ZP_LOADFLAGS] = direct_loadflags(zp[ZP_LOADFLAGS], report);
	}
	if (boot_write_page_tables(mem) < 0 || boot_write_gdt(mem, st, true) < 0)
		goto out;
	/* boot.rst, "64-bit Boot Protocol": long mode, identity-mapped, RSI = boot_params; the
	 * decompressed kernel's own startup_64 expects the same (arch/x86/kernel/head_64.S). */
	st->cr0 = CR0_PE | CR0_ET | CR0_PG;
	st->cr3 = BOOT_PML4_ADDR;
	st->cr4 = CR4_PAE;
	st->efer = EFER_LME | EFER_LMA;
	st->rip = entry;
	st->gpr[CPU_RSI] = BOOT_ZERO_PAGE_ADDR;
	ret = 0;
out:
	direct_free(&dk);
	return ret;
}

static int boot_load_elf(struct guest_memory *mem, const struct boot_params_in *in,
			 struct cpu_state *st, char *err, size_t err_len)
{
	struct elf_info elf;
	if (elf_parse(in->kernel, in->kernel_size, &elf, err, err_len) < 0)
		return -1;
	for (unsigned i = 0; i < elf.nr_segments; i++) {
		const struct elf_segment *s = &elf.segments[i];
		uint8_t *dst = memory_gpa_to_host(mem, s->paddr, s->memsz);
		if (!dst || s->paddr < BOOT_HIGH_START) {
			snprintf(err, err_len,
				 "ELF kernel segment at 0x%llx (%llu bytes) is outside guest RAM (use a larger -m)",
				 (unsigned long long)s->paddr, (unsigned long long)s->memsz);
			return -1;
		}
		memcpy(dst, in->kernel + s->offset, s->filesz);
		memset(dst + s->filesz, 0, s->memsz - s->filesz);
	}
	if (boot_write_cmdline(mem, in->cmdline, 4096, err, err_len) < 0)
		return -1;

	/* PVH boot ABI: struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h). */
	uint8_t *si = memory_gpa_to_host(mem, BOOT_PVH_INFO_ADDR, 0x100 + 64 * 24);
	memset(si, 0, 0x100 + 64 * 24);
	put32(si + 0, PVH_MAGIC);
	put32(si + 4, 1); /* version 1: has the memory map */
	put64(si + 24, BOOT_CMDLINE_ADDR);
	put64(si + 32, in->rsdp_addr);
	if (in->initrd) {
		uint64_t addr;
		if (boot_place_initrd(mem, in, (elf.end + 0xFFF) & ~0xFFFull, ~0ull, &addr, err,
				      err_len) < 0)
			return -1;
		uint8_t *mod = si + (BOOT_PVH_MODLIST_ADDR - BOOT_PVH_INFO_ADDR);
		put64(mod, addr);
		put64(mod + 8, in->initrd_size);
		put32(si + 12, 1);
		put64(si + 16, BOOT_PVH_MODLIST_ADDR);
	}
	struct e820_entry map[E820_MAX_ENTRIES];
	unsigned n = e820_build(mem, map, E820_MAX_ENTRIES);
	uint8_t *mm = si + (BOOT_PVH_MEMMAP_ADDR - BOOT_PVH_INFO_ADDR);
	for (unsigned i = 0; i < n; i++) {
		put64(mm + i * 24, map[i].addr);
		put64(mm + i * 24 + 8, map[i].size);
		put32(mm + i * 24 + 16, map[i].type);
	}
	put64(si + 40, BOOT_PVH_MEMMAP_ADDR);
	put32(si + 48, n);
	if (boot_write_gdt(mem, st, false) < 0)
		return -1;
	/* 32-bit protected mode, paging off, EBX = start info. */
	st->cr0 = CR0_PE | CR0_ET;
	st->rip = elf.pvh_entry;
	st->gpr[CPU_RBX] = BOOT_PVH_INFO_ADDR;
	return 0;
}

int boot_load(struct guest_memory *mem, const struct boot_params_in *in, struct cpu_state *st,
	      struct boot_report *report, char *err, size_t err_len)
{
	struct boot_report unused;
	if (!report)
		report = &unused;
	memset(report, 0, sizeof(*report));
	report->format = "";
	memset(st, 0, sizeof(*st));
	cpu_state_reset_defaults(st);
	if (in->kernel_size >= 0x206 && !memcmp(in->kernel + 0x202, "HdrS", 4))
		return boot_load_bzimage(mem, in, st, report, err, err_len);
	if (in->kernel_size >= 4 && !memcmp(in->kernel, "\177ELF", 4))
		return boot_load_elf(mem, in, st, err, err_len);
	snprintf(err, err_len, "not a kernel (neither a bzImage nor an ELF vmlinux)");
	return -1;
}
