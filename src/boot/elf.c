/* ELF vmlinux parsing: PT_LOAD segments and the PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY). */
#include <elf.h>
#include <stdio.h>
#include <string.h>

#include "boot/boot.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18

/* Walk one PT_NOTE segment for the "Xen" note of type PHYS32_ENTRY. */
static int elf_find_pvh_note(const uint8_t *note, uint64_t len, uint32_t *entry)
{
	uint64_t pos = 0;
	while (len - pos >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh;
		memcpy(&nh, note + pos, sizeof(nh));
		uint64_t name_len = (nh.n_namesz + 3ull) & ~3ull, desc_len = (nh.n_descsz + 3ull) & ~3ull;
		pos += sizeof(nh);
		if (name_len > len - pos || desc_len > len - pos - name_len)
			return 0;
		if (nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY && nh.n_namesz == 4 &&
		    !memcmp(note + pos, "Xen", 4) && nh.n_descsz >= 4) {
			memcpy(entry, note + pos + name_len, 4);
			return 1;
		}
		pos += name_len + desc_len;
	}
	return 0;
}

static int elf_add_segment(struct elf_info *info, const Elf64_Phdr *ph, size_t size, char *err,
			   size_t err_len)
{
	if (ph->p_offset > size || ph->p_filesz > size - ph->p_offset || ph->p_filesz > ph->p_memsz ||
	    ph->p_paddr + ph->p_memsz < ph->p_paddr) {
		snprintf(err, err_len, "truncated or corrupt ELF kernel (segment outside the file)");
		return -1;
	}
	if (info->nr_segments == ELF_MAX_SEGMENTS) {
		snprintf(err, err_len, "ELF kernel has more than %d loadable segments",
			 ELF_MAX_SEGMENTS);
		return -1;
	}
	info->segments[info->nr_segments++] = (struct elf_segment){
		ph->p_offset, ph->p_paddr, ph->p_filesz, ph->p_memsz
	};
	if (ph->p_paddr + ph->p_memsz > info->end)
		info->end = ph->p_paddr + ph->p_memsz;
	return 0;
}

static uint64_t elf_max(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

int elf_parse_image(const uint8_t *data, size_t size, struct elf_info *info, char *err,
		    size_t err_len)
{
	memset(info, 0, sizeof(*info));
	Elf64_Ehdr eh;
	if (size < sizeof(eh) || memcmp(data, ELFMAG, SELFMAG) != 0) {
		snprintf(err, err_len, "not an ELF file");
		return -1;
	}
	memcpy(&eh, data, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64) {
		snprintf(err, err_len, "not an x86-64 ELF kernel");
		return -1;
	}
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > size ||
	    (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > size - eh.e_phoff) {
		snprintf(err, err_len, "truncated or corrupt ELF kernel (program headers)");
		return -1;
	}
	info->entry = eh.e_entry;
	info->file_end =
		elf_max(sizeof(eh), eh.e_phoff + (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr));
	/* The section headers, when inside the file, are part of it (a stripped vmlinux ends
	 * with them); what follows is not ELF (the relocation table of a bzImage payload). */
	uint64_t sh_end = eh.e_shoff + (uint64_t)eh.e_shnum * eh.e_shentsize;
	if (eh.e_shoff && eh.e_shoff <= size && sh_end >= eh.e_shoff && sh_end <= size)
		info->file_end = elf_max(info->file_end, sh_end);
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;
		memcpy(&ph, data + eh.e_phoff + (size_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_LOAD && ph.p_memsz) {
			if (elf_add_segment(info, &ph, size, err, err_len) < 0)
				return -1;
			info->file_end = elf_max(info->file_end, ph.p_offset + ph.p_filesz);
		} else if (ph.p_type == PT_NOTE && !info->has_pvh_entry) {
			if (ph.p_offset > size || ph.p_filesz > size - ph.p_offset) {
				snprintf(err, err_len, "truncated or corrupt ELF kernel (notes)");
				return -1;
			}
			info->has_pvh_entry = elf_find_pvh_note(data + ph.p_offset, ph.p_filesz,
								&info->pvh_entry);
		}
	}
	if (!info->nr_segments) {
		snprintf(err, err_len, "ELF kernel has no loadable segments");
		return -1;
	}
	return 0;
}

int elf_parse(const uint8_t *data, size_t size, struct elf_info *info, char *err, size_t err_len)
{
	if (elf_parse_image(data, size, info, err, err_len) < 0)
		return -1;
	if (!info->has_pvh_entry) {
		snprintf(err, err_len,
			 "ELF kernel has no PVH entry note (use the bzImage, or a vmlinux built "
			 "with CONFIG_PVH=y)");
		return -1;
	}
	return 0;
}
