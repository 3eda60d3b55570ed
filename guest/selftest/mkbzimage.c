/*
 * Host tool: builds selftest.bzImage from the real-mode setup (bzsetup.bin, whose size is a
 * multiple of 512) and the loadable bytes of selftest.elf, which must start at KERNEL_BASE.
 * Patches the header fields that depend on sizes: setup_sects, syssize and init_size.
 *
 * usage: mkbzimage bzsetup.bin selftest.elf selftest.bzImage
 */
#include <elf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout.h"

#define SECTOR 512
#define HDR_SETUP_SECTS 0x1F1
#define HDR_SYSSIZE 0x1F4
#define HDR_INIT_SIZE 0x260
#define PAGE 4096

struct buffer {
	uint8_t *data;
	size_t len;
};

static __attribute__((noreturn)) void die(const char *what, const char *why)
{
	fprintf(stderr, "mkbzimage: %s: %s\n", what, why);
	exit(1);
}

static struct buffer read_file(const char *path)
{
	struct buffer b = { 0, 0 };
	FILE *f = fopen(path, "rb");

	if (!f)
		die(path, "cannot open");
	if (fseek(f, 0, SEEK_END) || (long)(b.len = (size_t)ftell(f)) < 0 || fseek(f, 0, SEEK_SET))
		die(path, "cannot size");
	b.data = malloc(b.len ? b.len : 1);
	if (!b.data || fread(b.data, 1, b.len, f) != b.len)
		die(path, "cannot read");
	fclose(f);
	return b;
}

static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

/* The bytes from KERNEL_BASE to the end of the last PT_LOAD's file data; *mem_size gets the
 * full memory footprint including .bss and stacks. */
static struct buffer elf_payload(const char *path, uint64_t *mem_size)
{
	struct buffer elf = read_file(path), out = { 0, 0 };
	Elf64_Ehdr eh;
	uint64_t file_end = KERNEL_BASE, mem_end = KERNEL_BASE;

	if (elf.len < sizeof(eh))
		die(path, "too small for an ELF header");
	memcpy(&eh, elf.data, sizeof(eh));
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh.e_machine != EM_X86_64 || eh.e_phentsize != sizeof(Elf64_Phdr) ||
	    eh.e_phoff + (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > elf.len)
		die(path, "not an x86-64 ELF64 file");
	for (unsigned pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < eh.e_phnum; i++) {
			Elf64_Phdr ph;

			memcpy(&ph, elf.data + eh.e_phoff + i * sizeof(ph), sizeof(ph));
			if (ph.p_type != PT_LOAD)
				continue;
			if (ph.p_paddr < KERNEL_BASE || ph.p_offset + ph.p_filesz > elf.len)
				die(path, "PT_LOAD below KERNEL_BASE or past the end of the file");
			if (pass == 0) {
				if (ph.p_paddr + ph.p_filesz > file_end)
					file_end = ph.p_paddr + ph.p_filesz;
				if (ph.p_paddr + ph.p_memsz > mem_end)
					mem_end = ph.p_paddr + ph.p_memsz;
			} else {
				memcpy(out.data + (ph.p_paddr - KERNEL_BASE),
				       elf.data + ph.p_offset, ph.p_filesz);
			}
		}
		if (pass == 0) {
			out.len = (file_end - KERNEL_BASE + 15) & ~15ull; /* syssize counts 16s */
			out.data = calloc(1, out.len ? out.len : 1);
			if (!out.data)
				die(path, "out of memory");
		}
	}
	free(elf.data);
	*mem_size = mem_end - KERNEL_BASE;
	return out;
}

int main(int argc, char **argv)
{
	struct buffer setup, payload;
	uint64_t mem_size;
	FILE *out;

	if (argc != 4) {
		fprintf(stderr, "usage: mkbzimage bzsetup.bin selftest.elf selftest.bzImage\n");
		return 2;
	}
	setup = read_file(argv[1]);
	if (setup.len < 2 * SECTOR || setup.len % SECTOR || setup.len / SECTOR - 1 > 255)
		die(argv[1], "setup must be 2 to 256 whole sectors");
	payload = elf_payload(argv[2], &mem_size);
	setup.data[HDR_SETUP_SECTS] = (uint8_t)(setup.len / SECTOR - 1);
	put32(setup.data + HDR_SYSSIZE, (uint32_t)(payload.len / 16));
	put32(setup.data + HDR_INIT_SIZE, (uint32_t)((mem_size + PAGE - 1) & ~(uint64_t)(PAGE - 1)));

	out = fopen(argv[3], "wb");
	if (!out || fwrite(setup.data, 1, setup.len, out) != setup.len ||
	    fwrite(payload.data, 1, payload.len, out) != payload.len || fclose(out))
		die(argv[3], "cannot write");
	free(setup.data);
	free(payload.data);
	return 0;
}
