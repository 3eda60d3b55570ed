/* Kernel loaders: bzImage and ELF/PVH parsing with malformed and truncated input, E820, and what
 * boot_load() writes into guest memory. */
#include <elf.h>
#include <stdlib.h>
#include <string.h>

#include "boot/boot.h"
#include "test.h"

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* A minimal valid 64-bit bzImage: 1 setup sector + header, then `payload` bytes. */
static uint8_t *make_bzimage(size_t payload, size_t *size)
{
	*size = 1024 + payload;
	uint8_t *k = calloc(1, *size);
	k[0x1F1] = 1;
	put16(k + 0x1FE, 0xAA55);
	k[0x200] = 0xEB;
	k[0x201] = 0x66;
	memcpy(k + 0x202, "HdrS", 4);
	put16(k + 0x206, 0x020F);
	k[0x211] = 1;
	put32(k + 0x214, 0x100000);
	put32(k + 0x22C, 0x7FFFFFFF);
	put16(k + 0x236, 3);
	put32(k + 0x238, 2048);
	put32(k + 0x260, 0x200000);
	memset(k + 1024, 0x90, payload);
	return k;
}

static void bzimage_valid_header_parses(void)
{
	size_t size;
	uint8_t *k = make_bzimage(4096, &size);
	struct bzimage_info bz;
	char err[256];
	CHECK(bzimage_parse(k, size, &bz, err, sizeof(err)) == 0);
	CHECK_EQ(bz.setup_size, 1024);
	CHECK_EQ(bz.version, 0x020F);
	CHECK_EQ(bz.cmdline_size, 2048);
	CHECK_EQ(bz.init_size, 0x200000);
	free(k);
}

static void bzimage_malformed_headers_are_refused(void)
{
	size_t size;
	struct bzimage_info bz;
	char err[256];
	uint8_t *k = make_bzimage(4096, &size);
	memcpy(k + 0x202, "Hdrs", 4);
	CHECK(bzimage_parse(k, size, &bz, err, sizeof(err)) < 0 && strstr(err, "not a bzImage"));
	free(k);
	k = make_bzimage(4096, &size);
	put16(k + 0x206, 0x0204);
	CHECK(bzimage_parse(k, size, &bz, err, sizeof(err)) < 0 && strstr(err, "too old"));
	free(k);
	k = make_bzimage(4096, &size);
	put16(k + 0x236, 0);
	CHECK(bzimage_parse(k, size, &bz, err, sizeof(err)) < 0 && strstr(err, "64-bit"));
	free(k);
	k = make_bzimage(4096, &size);
	k[0x1F1] = 200; /* setup claims more than the file */
	CHECK(bzimage_parse(k, size, &bz, err, sizeof(err)) < 0 && strstr(err, "truncated"));
	free(k);
}

static void bzimage_truncated_anywhere_is_refused_or_parsed_safely(void)
{
	size_t size;
	uint8_t *k = make_bzimage(16, &size);
	struct bzimage_info bz;
	char err[256];
	for (size_t cut = 0; cut <= 1024; cut++) {
		/* every cut inside the setup part must be refused, never read past the end */
		uint8_t *copy = malloc(cut ? cut : 1);
		memcpy(copy, k, cut);
		CHECK(bzimage_parse(copy, cut, &bz, err, sizeof(err)) < 0);
		free(copy);
	}
	free(k);
}

/* An ELF64 with one PT_LOAD at 1 MiB and a PT_NOTE holding the PVH entry. */
static uint8_t *make_elf(bool with_note, size_t *size)
{
	*size = 4096;
	uint8_t *f = calloc(1, *size);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)f;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_machine = EM_X86_64;
	eh->e_phoff = sizeof(*eh);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = 2;
	Elf64_Phdr *ph = (Elf64_Phdr *)(f + sizeof(*eh));
	ph[0] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = 1024, .p_paddr = 0x100000,
			      .p_filesz = 512, .p_memsz = 8192 };
	ph[1] = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = 512, .p_filesz = 20 };
	uint8_t *n = f + 512;
	put32(n, 4);
	put32(n + 4, 4);
	put32(n + 8, with_note ? 18 : 17);
	memcpy(n + 12, "Xen", 4);
	put32(n + 16, 0x100040);
	memset(f + 1024, 0xCC, 512);
	return f;
}

static void elf_pvh_note_and_segments_parse(void)
{
	size_t size;
	uint8_t *f = make_elf(true, &size);
	struct elf_info e;
	char err[256];
	CHECK(elf_parse(f, size, &e, err, sizeof(err)) == 0);
	CHECK_EQ(e.pvh_entry, 0x100040);
	CHECK_EQ(e.nr_segments, 1);
	CHECK_EQ(e.end, 0x100000 + 8192);
	free(f);
}

static void elf_malformed_is_refused(void)
{
	size_t size;
	struct elf_info e;
	char err[256];
	uint8_t *f = make_elf(false, &size);
	CHECK(elf_parse(f, size, &e, err, sizeof(err)) < 0 && strstr(err, "PVH"));
	free(f);
	f = make_elf(true, &size);
	((Elf64_Ehdr *)f)->e_phnum = 60000; /* program headers beyond the file */
	CHECK(elf_parse(f, size, &e, err, sizeof(err)) < 0 && strstr(err, "truncated"));
	free(f);
	f = make_elf(true, &size);
	((Elf64_Phdr *)(f + sizeof(Elf64_Ehdr)))[0].p_filesz = 1u << 30;
	CHECK(elf_parse(f, size, &e, err, sizeof(err)) < 0 && strstr(err, "outside the file"));
	free(f);
	f = make_elf(true, &size);
	put32(f + 512, 0xFFFFFFF0); /* note name size beyond the segment */
	CHECK(elf_parse(f, size, &e, err, sizeof(err)) < 0);
	free(f);
	f = make_elf(true, &size);
	((Elf64_Ehdr *)f)->e_machine = EM_386;
	CHECK(elf_parse(f, size, &e, err, sizeof(err)) < 0 && strstr(err, "x86-64"));
	for (size_t cut = 0; cut < 600; cut++)
		CHECK(elf_parse(f, cut, &e, err, sizeof(err)) < 0);
	free(f);
}

static void e820_describes_ram_around_the_hole(void)
{
	struct guest_memory mem;
	struct e820_entry map[E820_MAX_ENTRIES];
	CHECK(memory_init(&mem, 256ull << 20) == 0);
	unsigned n = e820_build(&mem, map, E820_MAX_ENTRIES);
	CHECK_EQ(n, 4);
	CHECK(map[0].addr == 0 && map[0].size == 0x9FC00 && map[0].type == E820_RAM);
	CHECK(map[1].addr == 0x9FC00 && map[1].type == E820_RESERVED);
	CHECK(map[2].addr == 0x100000 && map[2].addr + map[2].size == 256ull << 20);
	CHECK(map[3].addr == 0xE0000000 && map[3].size == 0x10000000 && map[3].type == E820_RESERVED);
	memory_destroy(&mem);

	CHECK(memory_init(&mem, 5ull << 30) == 0);
	n = e820_build(&mem, map, E820_MAX_ENTRIES);
	CHECK_EQ(n, 5);
	CHECK_EQ(map[2].addr + map[2].size, MEMORY_LOW_LIMIT);
	CHECK(map[4].addr == 1ull << 32 && map[4].size == (5ull << 30) - MEMORY_LOW_LIMIT);
	uint64_t ram = 0;
	for (unsigned i = 0; i < n; i++)
		ram += map[i].type == E820_RAM ? map[i].size : 0;
	CHECK_EQ(ram, (5ull << 30) - (0x100000 - 0x9FC00));
	memory_destroy(&mem);
}

static void memory_lookup_rejects_ranges_outside_ram(void)
{
	struct guest_memory mem;
	CHECK(memory_init(&mem, 5ull << 30) == 0);
	CHECK(memory_gpa_to_host(&mem, 0, 4096) != NULL);
	CHECK(memory_gpa_to_host(&mem, MEMORY_LOW_LIMIT - 4096, 4096) != NULL);
	CHECK(memory_gpa_to_host(&mem, MEMORY_LOW_LIMIT - 4096, 4097) == NULL);
	CHECK(memory_gpa_to_host(&mem, MEMORY_LOW_LIMIT, 1) == NULL);
	CHECK(memory_gpa_to_host(&mem, 0xFEE00000, 4) == NULL);
	CHECK(memory_gpa_to_host(&mem, 1ull << 32, 16) != NULL);
	CHECK(memory_gpa_to_host(&mem, (1ull << 32) + (2ull << 30) - 1, 2) == NULL);
	CHECK(memory_gpa_to_host(&mem, ~0ull, 2) == NULL);
	CHECK(memory_gpa_to_host(&mem, 4096, ~0ull) == NULL);
	CHECK(memory_gpa_to_host(&mem, 4096, ~0ull - 4000) == NULL);
	memory_destroy(&mem);
	CHECK(memory_init(&mem, 1ull << 20) < 0); /* below the minimum */
}

static void bzimage_load_fills_boot_params(void)
{
	struct guest_memory mem;
	CHECK(memory_init(&mem, 128ull << 20) == 0);
	size_t size;
	uint8_t *k = make_bzimage(4096, &size);
	uint8_t initrd[5000];
	memset(initrd, 0xAB, sizeof(initrd));
	struct boot_params_in in = { .kernel = k, .kernel_size = size, .initrd = initrd,
				     .initrd_size = sizeof(initrd), .cmdline = "console=ttyS0 quiet",
				     .rsdp_addr = 0xE0000 };
	struct cpu_state st;
	char err[256];
	CHECK(boot_load(&mem, &in, &st, NULL, err, sizeof(err)) == 0);
	uint8_t *zp = memory_gpa_to_host(&mem, BOOT_ZERO_PAGE_ADDR, 4096);
	CHECK(!memcmp(zp + 0x202, "HdrS", 4));
	CHECK_EQ(get32(zp + 0x228), BOOT_CMDLINE_ADDR);
	CHECK(!strcmp((char *)memory_gpa_to_host(&mem, BOOT_CMDLINE_ADDR, 1), "console=ttyS0 quiet"));
	CHECK_EQ(get64(zp + 0x070), 0xE0000);
	CHECK_EQ(zp[0x1E8], 4); /* with the ECAM reservation */
	uint32_t rd = get32(zp + 0x218);
	CHECK(rd % 4096 == 0 && rd + sizeof(initrd) <= (128u << 20) && rd >= 0x100000 + 0x200000);
	CHECK_EQ(get32(zp + 0x21C), sizeof(initrd));
	CHECK(!memcmp(memory_gpa_to_host(&mem, rd, sizeof(initrd)), initrd, sizeof(initrd)));
	CHECK(!memcmp(memory_gpa_to_host(&mem, 0x100000, 16), k + 1024, 16));
	CHECK_EQ(st.rip, 0x100200);
	CHECK_EQ(st.gpr[CPU_RSI], BOOT_ZERO_PAGE_ADDR);
	CHECK(st.efer & EFER_LMA);
	CHECK(st.seg[SEG_CS].l == 1 && st.seg[SEG_CS].selector == 0x10);
	/* page tables identity-map the first 4 GiB with 2 MiB pages */
	uint64_t pml4 = get64(memory_gpa_to_host(&mem, BOOT_PML4_ADDR, 8));
	CHECK_EQ(pml4 & ~0xFFFull, BOOT_PML4_ADDR + 4096);
	uint64_t pde = get64(memory_gpa_to_host(&mem, BOOT_PML4_ADDR + 2 * 4096 + 8 * 2047, 8));
	CHECK_EQ(pde, (3ull << 30) + (511ull << 21) + 0x83);
	free(k);
	memory_destroy(&mem);
}

static void bzimage_load_refuses_what_does_not_fit(void)
{
	struct guest_memory mem;
	CHECK(memory_init(&mem, 64ull << 20) == 0);
	size_t size;
	uint8_t *k = make_bzimage(4096, &size);
	size_t big = 70u << 20;
	uint8_t *initrd = calloc(1, big);
	struct boot_params_in in = { .kernel = k, .kernel_size = size, .initrd = initrd,
				     .initrd_size = big, .cmdline = "x" };
	struct cpu_state st;
	char err[256];
	CHECK(boot_load(&mem, &in, &st, NULL, err, sizeof(err)) < 0 && strstr(err, "initrd"));
	in.initrd = NULL;
	in.initrd_size = 0;
	char *longline = malloc(3000);
	memset(longline, 'a', 2999);
	longline[2999] = 0;
	in.cmdline = longline; /* the header's cmdline_size is 2048 */
	CHECK(boot_load(&mem, &in, &st, NULL, err, sizeof(err)) < 0 && strstr(err, "command line"));
	put32(k + 0x260, 200u << 20); /* init_size larger than RAM */
	in.cmdline = "x";
	CHECK(boot_load(&mem, &in, &st, NULL, err, sizeof(err)) < 0 && strstr(err, "-m"));
	const uint8_t junk[64] = { 1, 2, 3 };
	in.kernel = junk;
	in.kernel_size = sizeof(junk);
	CHECK(boot_load(&mem, &in, &st, NULL, err, sizeof(err)) < 0 && strstr(err, "not a kernel"));
	free(longline);
	free(initrd);
	free(k);
	memory_destroy(&mem);
}

static void pvh_load_fills_start_info(void)
{
	struct guest_memory mem;
	CHECK(memory_init(&mem, 64ull << 20) == 0);
	size_t size;
	uint8_t *f = make_elf(true, &size);
	uint8_t initrd[100] = { 7 };
	struct boot_params_in in = { .kernel = f, .kernel_size = size, .initrd = initrd,
				     .initrd_size = sizeof(initrd), .cmdline = "hello",
				     .rsdp_addr = 0xE0000 };
	struct cpu_state st;
	char err[256];
	CHECK(boot_load(&mem, &in, &st, NULL, err, sizeof(err)) == 0);
	uint8_t *si = memory_gpa_to_host(&mem, BOOT_PVH_INFO_ADDR, 64);
	CHECK_EQ(get32(si), 0x336ec578);
	CHECK_EQ(get32(si + 4), 1);
	CHECK_EQ(get32(si + 12), 1); /* one module: the initrd */
	CHECK_EQ(get64(si + 24), BOOT_CMDLINE_ADDR);
	CHECK_EQ(get64(si + 32), 0xE0000);
	CHECK_EQ(get32(si + 48), 4);
	CHECK_EQ(st.rip, 0x100040);
	CHECK_EQ(st.gpr[CPU_RBX], BOOT_PVH_INFO_ADDR);
	CHECK(!(st.cr0 & CR0_PG) && (st.cr0 & CR0_PE));
	uint8_t *seg = memory_gpa_to_host(&mem, 0x100000, 8192);
	CHECK(seg[0] == 0xCC && seg[511] == 0xCC && seg[512] == 0 && seg[8191] == 0);
	free(f);
	memory_destroy(&mem);
}

int main(void)
{
	RUN_TEST(bzimage_valid_header_parses);
	RUN_TEST(bzimage_malformed_headers_are_refused);
	RUN_TEST(bzimage_truncated_anywhere_is_refused_or_parsed_safely);
	RUN_TEST(elf_pvh_note_and_segments_parse);
	RUN_TEST(elf_malformed_is_refused);
	RUN_TEST(e820_describes_ram_around_the_hole);
	RUN_TEST(memory_lookup_rejects_ranges_outside_ram);
	RUN_TEST(bzimage_load_fills_boot_params);
	RUN_TEST(bzimage_load_refuses_what_does_not_fit);
	RUN_TEST(pvh_load_fills_start_info);
	return TEST_EXIT();
}
