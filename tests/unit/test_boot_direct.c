/* The direct bzImage path: the relocation table (relocs.c), KASLR placement (kaslr.c), and
 * boot_load() on a small LZ4 bzImage laid out as Linux's build lays one out (an ELF kernel, its
 * relocation table, the decompressed size), with KASLR, with nokaslr, with the decompressor
 * forced, and with payloads it must leave to the kernel. */
#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "boot/boot.h"
#include "boot/lz4.h"
#include "test.h"

#define LINK_VADDR 0xFFFFFFFF81000000ull /* __START_KERNEL_map + 16 MiB */
#define PREF 0x1000000ull

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}
static uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}
static uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* A table as relocs writes it: 0, 64-bit, 0, inverse 32-bit, 0, 32-bit (after `pad` words). */
static size_t make_table(uint8_t *t, unsigned pad, const uint32_t *r64, unsigned n64,
			 const uint32_t *inv, unsigned ninv, const uint32_t *r32, unsigned n32)
{
	size_t n = 0;
	for (unsigned i = 0; i < pad; i++)
		put32(t + 4 * n++, 0x81000000 + i);
	put32(t + 4 * n++, 0);
	for (unsigned i = 0; i < n64; i++)
		put32(t + 4 * n++, r64[i]);
	put32(t + 4 * n++, 0);
	for (unsigned i = 0; i < ninv; i++)
		put32(t + 4 * n++, inv[i]);
	put32(t + 4 * n++, 0);
	for (unsigned i = 0; i < n32; i++)
		put32(t + 4 * n++, r32[i]);
	return n * 4;
}

static void relocs_table_is_found_from_the_end(void)
{
	uint8_t t[256];
	const uint32_t a[] = { 0x81000010, 0x81000020 }, b[] = { 0x81000030 },
		       c[] = { 0x81000040, 0x81000048, 0x81000050 };
	size_t len = make_table(t, 3, a, 2, b, 1, c, 3);
	struct kernel_relocs r;
	CHECK_EQ(relocs_parse(t, len, &r), 0);
	CHECK_EQ(r.n64, 2);
	CHECK_EQ(r.n_inv32, 1);
	CHECK_EQ(r.n32, 3);
	CHECK(r.table == t + 12); /* the padding words are not part of it */
	CHECK_EQ(relocs_parse(t, len - 1, &r), -EINVAL);
	CHECK_EQ(relocs_parse(t + 16, len - 16, &r), -ENOENT); /* the first zero cut off */
	len = make_table(t, 0, NULL, 0, NULL, 0, NULL, 0);
	CHECK_EQ(relocs_parse(t, len, &r), 0);
	CHECK(r.n64 == 0 && r.n_inv32 == 0 && r.n32 == 0);
}

static void relocs_add_and_subtract_the_offset(void)
{
	uint8_t image[0x1000] = { 0 }, t[64];
	put64(image + 0x10, LINK_VADDR + 0x123);
	put32(image + 0x20, (uint32_t)(LINK_VADDR + 0x456));
	put32(image + 0x30,
	      (uint32_t)-0x1000); /* an inverse field: something minus a kernel address */
	const uint32_t a[] = { 0x81000010 }, b[] = { 0x81000030 }, c[] = { 0x81000020 };
	size_t len = make_table(t, 0, a, 1, b, 1, c, 1);
	struct kernel_relocs r;
	CHECK_EQ(relocs_parse(t, len, &r), 0);
	CHECK_EQ(relocs_apply(&r, image, sizeof(image), LINK_VADDR, 0x2400000), 0);
	CHECK_EQ(get64(image + 0x10), LINK_VADDR + 0x123 + 0x2400000);
	CHECK_EQ(get32(image + 0x20), (uint32_t)(LINK_VADDR + 0x456 + 0x2400000));
	CHECK_EQ(get32(image + 0x30), (uint32_t)(-0x1000 - 0x2400000));
}

static void relocs_outside_the_image_leave_it_untouched(void)
{
	uint8_t image[0x1000], copy[0x1000], t[64];
	for (size_t i = 0; i < sizeof(image); i++)
		image[i] = (uint8_t)i;
	memcpy(copy, image, sizeof(image));
	struct kernel_relocs r;
	/* A good 32-bit entry, then a 64-bit one whose last bytes pass the end. */
	const uint32_t a[] = { 0x81000FFC }, c[] = { 0x81000100 };
	CHECK_EQ(relocs_parse(t, make_table(t, 0, a, 1, NULL, 0, c, 1), &r), 0);
	CHECK_EQ(relocs_apply(&r, image, sizeof(image), LINK_VADDR, 0x200000), -EINVAL);
	CHECK(!memcmp(image, copy, sizeof(image)));
	const uint32_t below[] = { 0x80FFFFFC }, user[] = { 0x00001000 };
	CHECK_EQ(relocs_parse(t, make_table(t, 0, NULL, 0, NULL, 0, below, 1), &r), 0);
	CHECK_EQ(relocs_check(&r, sizeof(image), LINK_VADDR), -EINVAL);
	CHECK_EQ(relocs_parse(t, make_table(t, 0, NULL, 0, user, 1, NULL, 0), &r), 0);
	CHECK_EQ(relocs_check(&r, sizeof(image), LINK_VADDR), -EINVAL);
	CHECK(!memcmp(image, copy, sizeof(image)));
}

static const struct e820_entry test_map[] = {
	{ 0, 0x9FC00, E820_RAM },
	{ 0x9FC00, 0x60400, E820_RESERVED },
	{ 0x100000, (512ull << 20) - 0x100000, E820_RAM },
	{ 0xE0000000, 0x10000000, E820_RESERVED },
};

static void kaslr_physical_slots_avoid_what_they_must(void)
{
	const uint64_t mib = 1ull << 20;
	struct boot_range avoid[] = { { 500 * mib, 12 * mib }, { 0x20000, 100 }, { 0x7000, 4096 } };
	struct kaslr_phys_request req = { .map = test_map,
					  .nr_map = 4,
					  .avoid = avoid,
					  .nr_avoid = 3,
					  .min = 16 * mib,
					  .limit = 4ull << 30,
					  .image_size = 56 * mib,
					  .align = 2 * mib };
	/* RAM from 16 MiB to the initrd at 500 MiB: 1 + (500 - 16 - 56) / 2 slots. */
	CHECK_EQ(kaslr_phys_slots(&req), 215);
	uint64_t addr;
	CHECK_EQ(kaslr_choose_phys(&req, 0, &addr), 0);
	CHECK_EQ(addr, 16 * mib);
	CHECK_EQ(kaslr_choose_phys(&req, 214, &addr), 0);
	CHECK_EQ(addr, 444 * mib);
	CHECK_EQ(kaslr_choose_phys(&req, 215, &addr), 0);
	CHECK_EQ(addr, 16 * mib);
	for (uint64_t r = 0; r < 1000; r += 7) {
		CHECK_EQ(kaslr_choose_phys(&req, r * 0x9E3779B97F4A7C15ull, &addr), 0);
		CHECK(addr % (2 * mib) == 0 && addr >= 16 * mib && addr + 56 * mib <= 500 * mib);
		CHECK(kaslr_fits(&req, addr));
	}
	/* An avoided range in the middle splits the RAM in two. */
	avoid[1] = (struct boot_range){ 200 * mib + 5, 1 };
	CHECK_EQ(kaslr_phys_slots(&req), (1 + (200 - 16 - 56) / 2) + (1 + (500 - 202 - 56) / 2));
	CHECK(!kaslr_fits(&req, 190 * mib));
	CHECK(!kaslr_fits(&req, 17 * mib)); /* not aligned */
	CHECK(!kaslr_fits(&req, 460 * mib)); /* runs into the initrd */
	req.limit = 60 * mib; /* mem= */
	CHECK_EQ(kaslr_phys_slots(&req), 0);
	CHECK_EQ(kaslr_choose_phys(&req, 5, &addr), -ENOSPC);
}

static void kaslr_virtual_offset_stays_in_the_image_area(void)
{
	const uint64_t mib = 1ull << 20;
	uint64_t seen_low = ~0ull, seen_high = 0;
	for (uint64_t r = 0; r < 5000; r++) {
		uint64_t v = kaslr_choose_virt(16 * mib, 56 * mib, 2 * mib, 1024 * mib, r);
		CHECK(v % (2 * mib) == 0 && v >= 16 * mib && v + 56 * mib <= 1024 * mib);
		seen_low = v < seen_low ? v : seen_low;
		seen_high = v > seen_high ? v : seen_high;
	}
	CHECK_EQ(seen_low, 16 * mib);
	CHECK_EQ(seen_high, 968 * mib);
	CHECK_EQ(kaslr_choose_virt(16 * mib, 2000 * mib, 2 * mib, 1024 * mib, 77), 16 * mib);
}

/* LZ4 legacy stream of literal-only blocks: valid, if not small. */
static size_t lz4_literal_stream(const uint8_t *in, size_t len, uint8_t *out)
{
	size_t n = 4;
	put32(out, LZ4_LEGACY_MAGIC);
	for (size_t pos = 0; pos < len; pos += 65536) {
		size_t chunk = len - pos < 65536 ? len - pos : 65536, b = n + 4;
		out[b++] = 0xF0;
		size_t rest = chunk - 15;
		for (; rest >= 255; rest -= 255)
			out[b++] = 255;
		out[b++] = (uint8_t)rest;
		memcpy(out + b, in + pos, chunk);
		b += chunk;
		put32(out + n, (uint32_t)(b - n - 4));
		n = b;
	}
	return n;
}

/* The decompressed payload: an ELF kernel of one PT_LOAD at PREF (0x3000 bytes, 0x1000 of them
 * bss) with an address in each kind of relocated field, then its relocation table. */
static size_t make_vmlinux(uint8_t *f)
{
	memset(f, 0, 0x4000);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)f;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_machine = EM_X86_64;
	eh->e_entry = PREF + 0x40;
	eh->e_phoff = sizeof(*eh);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = 1;
	Elf64_Phdr *ph = (Elf64_Phdr *)(f + sizeof(*eh));
	*ph = (Elf64_Phdr){ .p_type = PT_LOAD,
			    .p_offset = 0x1000,
			    .p_paddr = PREF,
			    .p_vaddr = LINK_VADDR,
			    .p_filesz = 0x2000,
			    .p_memsz = 0x3000 };
	uint8_t *text = f + 0x1000;
	memset(text, 0x90, 0x2000);
	put64(text + 0x100, LINK_VADDR + 0x1234);
	put32(text + 0x200, (uint32_t)(LINK_VADDR + 0x40));
	put32(text + 0x300, 0x1000);
	const uint32_t a[] = { 0x81000100 }, b[] = { 0x81000300 }, c[] = { 0x81000200 };
	return 0x3000 + make_table(f + 0x3000, 0, a, 1, b, 1, c, 1);
}

/* The bzImage: one setup sector and header, then the payload and its size. */
static uint8_t *make_lz4_bzimage(size_t *size)
{
	uint8_t *vmlinux = malloc(0x4000), *k = calloc(1, 0x10000);
	size_t vlen = make_vmlinux(vmlinux);
	size_t plen = lz4_literal_stream(vmlinux, vlen, k + 1024);
	put32(k + 1024 + plen, (uint32_t)vlen);
	plen += 4;
	k[0x1F1] = 1;
	k[0x1FE] = 0x55;
	k[0x1FF] = 0xAA;
	k[0x200] = 0xEB;
	k[0x201] = 0x6A;
	memcpy(k + 0x202, "HdrS", 4);
	put32(k + 0x206, 0x020F);
	k[0x211] = 1;
	put32(k + 0x22C, 0x7FFFFFFF);
	put32(k + 0x230, 0x200000); /* kernel_alignment */
	k[0x234] = 1; /* relocatable */
	put32(k + 0x236, 3);
	put32(k + 0x238, 2048);
	put32(k + 0x248, 0); /* payload_offset */
	put32(k + 0x24C, (uint32_t)plen);
	put64(k + 0x258, PREF);
	put32(k + 0x260, 0x400000); /* init_size */
	*size = 1024 + plen;
	free(vmlinux);
	return k;
}

static void direct_boot_with_kaslr_relocates_and_sets_the_flag(void)
{
	struct guest_memory mem;
	CHECK(memory_init(&mem, 256ull << 20) == 0);
	size_t size;
	uint8_t *k = make_lz4_bzimage(&size), initrd[100] = { 1 };
	struct boot_params_in in = { .kernel = k,
				     .kernel_size = size,
				     .cmdline = "console=ttyS0",
				     .initrd = initrd,
				     .initrd_size = sizeof(initrd),
				     .random = { 12345, 678 } };
	struct cpu_state st;
	struct boot_report rep;
	char err[256];
	CHECK_EQ(boot_load(&mem, &in, &st, &rep, err, sizeof(err)), 0);
	CHECK(rep.direct && rep.kaslr && !strcmp(rep.format, "lz4"));
	CHECK_EQ(rep.decompressed, 0x3000 + 6 * 4);
	CHECK(rep.phys % 0x200000 == 0 && rep.phys >= PREF && rep.phys + 0x400000 <= (256u << 20));
	CHECK(rep.virt_offset % 0x200000 == 0 && rep.virt_offset + PREF + 0x400000 <= (1u << 30));
	CHECK_EQ(st.rip, rep.phys + 0x40);
	CHECK_EQ(st.gpr[CPU_RSI], BOOT_ZERO_PAGE_ADDR);
	CHECK(st.efer & EFER_LMA && st.seg[SEG_CS].l);
	uint8_t *img = memory_gpa_to_host(&mem, rep.phys, 0x3000);
	CHECK_EQ(get64(img + 0x100), LINK_VADDR + 0x1234 + rep.virt_offset);
	CHECK_EQ(get32(img + 0x200), (uint32_t)(LINK_VADDR + 0x40 + rep.virt_offset));
	CHECK_EQ(get32(img + 0x300), (uint32_t)(0x1000 - rep.virt_offset));
	CHECK(img[0] == 0x90 && img[0x1FFF] == 0x90 && img[0x2000] == 0 && img[0x2FFF] == 0);
	uint8_t *zp = memory_gpa_to_host(&mem, BOOT_ZERO_PAGE_ADDR, 4096);
	CHECK(zp[0x211] & 2); /* KASLR_FLAG */
	uint32_t rd = get32(zp + 0x218);
	CHECK(rd >= rep.phys + 0x400000 || rd + sizeof(initrd) <= rep.phys);
	/* Other random numbers, other places. */
	struct boot_report rep2;
	in.random[0] = 999;
	in.random[1] = 4242;
	CHECK_EQ(boot_load(&mem, &in, &st, &rep2, err, sizeof(err)), 0);
	CHECK(rep2.phys != rep.phys && rep2.virt_offset != rep.virt_offset);
	free(k);
	memory_destroy(&mem);
}

static void direct_boot_with_nokaslr_runs_as_linked(void)
{
	struct guest_memory mem;
	CHECK(memory_init(&mem, 128ull << 20) == 0);
	size_t size;
	uint8_t *k = make_lz4_bzimage(&size);
	k[0x211] |= 2; /* a stale KASLR_FLAG in the file is cleared, as the decompressor does */
	struct boot_params_in in = { .kernel = k,
				     .kernel_size = size,
				     .cmdline = "console=ttyS0 nokaslr quiet",
				     .random = { 5, 6 } };
	struct cpu_state st;
	struct boot_report rep;
	char err[256];
	CHECK_EQ(boot_load(&mem, &in, &st, &rep, err, sizeof(err)), 0);
	CHECK(rep.direct && !rep.kaslr);
	CHECK_EQ(rep.phys, PREF);
	CHECK_EQ(rep.virt_offset, 0);
	CHECK_EQ(st.rip, PREF + 0x40);
	uint8_t *img = memory_gpa_to_host(&mem, PREF, 0x3000);
	CHECK_EQ(get64(img + 0x100), LINK_VADDR + 0x1234);
	CHECK_EQ(get32(img + 0x300), 0x1000);
	CHECK(!(((uint8_t *)memory_gpa_to_host(&mem, BOOT_ZERO_PAGE_ADDR, 4096))[0x211] & 2));
	/* "nokaslrx" or "xnokaslr" are other words */
	in.cmdline = "nokaslrx xnokaslr";
	CHECK_EQ(boot_load(&mem, &in, &st, &rep, err, sizeof(err)), 0);
	CHECK(rep.kaslr);
	/* memmap= reserves RAM the kernel's KASLR would avoid: the physical address stays as
	 * linked, the virtual offset is still random. */
	in.cmdline = "memmap=1M$0x3000000";
	CHECK_EQ(boot_load(&mem, &in, &st, &rep, err, sizeof(err)), 0);
	CHECK(rep.direct && rep.kaslr && rep.phys == PREF && rep.virt_offset != 0);
	/* mem= below pref_address + the image: nowhere to go, the kernel decompresses itself. */
	in.cmdline = "nokaslr mem=16M";
	CHECK_EQ(boot_load(&mem, &in, &st, &rep, err, sizeof(err)), 0);
	CHECK(!rep.direct && strstr(rep.note, "no room"));
	CHECK_EQ(st.rip, 0x100200);
	free(k);
	memory_destroy(&mem);
}

/* What the direct path leaves to the kernel's own decompressor: the old entry at 1 MiB. */
static void direct_boot_falls_back_to_the_decompressor(void)
{
	struct guest_memory mem;
	CHECK(memory_init(&mem, 128ull << 20) == 0);
	size_t size;
	uint8_t *k = make_lz4_bzimage(&size);
	struct boot_params_in in = {
		.kernel = k, .kernel_size = size, .cmdline = "x", .decompress_in_guest = true
	};
	struct cpu_state st;
	struct boot_report rep;
	char err[256];
	CHECK_EQ(boot_load(&mem, &in, &st, &rep, err, sizeof(err)), 0);
	CHECK(!rep.direct && strstr(rep.note, "--kernel-decompress guest"));
	CHECK_EQ(st.rip, 0x100200);
	CHECK(!memcmp(memory_gpa_to_host(&mem, 0x100000, 64), k + 1024, 64));
	in.decompress_in_guest = false;
	struct {
		size_t at; /* 0: the last byte of the payload's size */
		uint8_t byte;
		const char *note;
	} cases[] = {
		{ 1024, 0x1F, "unknown payload" }, /* magic 1F 21 4C 18 */
		{ 1025, 0x8B, "gzip payload" }, /* 1F 8B: gzip */
		{ 0x24D, 0x10, "outside the file" }, /* payload_length + 4 KiB */
		{ 1032, 0x00, "corrupt" }, /* first token: a match at offset 0xFFFF */
		{ 0, 0x10, "does not fit init_size" }, /* decompressed size + 256 MiB */
		{ 0x234, 0, "not relocatable: runs as linked" }, /* loaded directly, at pref */
		{ 0x258, 0x10, "pref_address" }, /* pref_address 16 MiB + 16 B */
		{ 0x231, 0x10, "kernel_alignment" }, /* 0x201000 */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint8_t *c = malloc(size);
		memcpy(c, k, size);
		if (cases[i].at == 1025)
			c[1024] = 0x1F;
		if (cases[i].at == 0x24D)
			c[0x24D] += 0x10;
		else
			c[cases[i].at ? cases[i].at : size - 1] = cases[i].byte;
		in.kernel = c;
		CHECK_EQ(boot_load(&mem, &in, &st, &rep, err, sizeof(err)), 0);
		if (cases[i].at == 0x234)
			CHECK(rep.direct && !rep.kaslr && rep.phys == PREF &&
			      st.rip == PREF + 0x40);
		else
			CHECK(!rep.direct && st.rip == 0x100200);
		if (!strstr(rep.note, cases[i].note)) {
			printf("  case %zu: note '%s'\n", i, rep.note);
			CHECK(strstr(rep.note, cases[i].note));
		}
		free(c);
	}
	/* init_size (50 MiB) from pref_address passes the end of 64 MiB of RAM: not decompressed at
	 * all, while 1 MiB + init_size still fits for the kernel's own decompressor. */
	memory_destroy(&mem);
	CHECK(memory_init(&mem, 64ull << 20) == 0);
	put32(k + 0x260, 50u << 20);
	in.kernel = k;
	CHECK_EQ(boot_load(&mem, &in, &st, &rep, err, sizeof(err)), 0);
	CHECK(!rep.direct && rep.decompressed == 0 && strstr(rep.note, "do not fit"));
	CHECK_EQ(st.rip, 0x100200);
	free(k);
	memory_destroy(&mem);
}

/* Cut anywhere, a byte changed anywhere: loaded one way or the other, or refused, never a
 * crash (ASan in `make asan` checks the bounds). */
static void direct_boot_survives_damaged_images(void)
{
	struct guest_memory mem;
	CHECK(memory_init(&mem, 128ull << 20) == 0);
	size_t size;
	uint8_t *k = make_lz4_bzimage(&size);
	struct boot_params_in in = { .cmdline = "x", .random = { 1, 2 } };
	struct cpu_state st;
	struct boot_report rep;
	char err[256];
	uint8_t *c = malloc(size);
	srand(7);
	for (int round = 0; round < 3000; round++) {
		memcpy(c, k, size);
		size_t at = 0x1F1 + (size_t)rand() % (size - 0x1F1);
		c[at] = (uint8_t)rand();
		in.kernel = c;
		in.kernel_size = round % 3 ? size : 0x1F1 + (size_t)rand() % (size - 0x1F1);
		int ret = boot_load(&mem, &in, &st, &rep, err, sizeof(err));
		CHECK(ret == 0 || ret == -1);
	}
	free(c);
	free(k);
	memory_destroy(&mem);
}

int main(void)
{
	RUN_TEST(relocs_table_is_found_from_the_end);
	RUN_TEST(relocs_add_and_subtract_the_offset);
	RUN_TEST(relocs_outside_the_image_leave_it_untouched);
	RUN_TEST(kaslr_physical_slots_avoid_what_they_must);
	RUN_TEST(kaslr_virtual_offset_stays_in_the_image_area);
	RUN_TEST(direct_boot_with_kaslr_relocates_and_sets_the_flag);
	RUN_TEST(direct_boot_with_nokaslr_runs_as_linked);
	RUN_TEST(direct_boot_falls_back_to_the_decompressor);
	RUN_TEST(direct_boot_survives_damaged_images);
	return TEST_EXIT();
}
