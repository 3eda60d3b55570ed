/* What the loader told us, normalised from either boot protocol and copied out of low memory. */
#ifndef SELFTEST_BOOTINFO_H
#define SELFTEST_BOOTINFO_H

#include <stdbool.h>
#include <stdint.h>

#define E820_RAM 1
#define E820_MAX 128
#define CMDLINE_MAX 4096

struct e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
};

struct boot_info {
	uint32_t kind;           /* BOOT_KIND_* */
	const char *kind_name;   /* "pvh", "linux32", "linux64" */
	uint64_t source;         /* physical address of hvm_start_info or boot_params */
	char problem[160];       /* first inconsistency in what the loader gave us; "" if none */
	char cmdline[CMDLINE_MAX];
	bool have_cmdline;
	uint32_t e820_count;
	struct e820_entry e820[E820_MAX];
	uint64_t rsdp;           /* 0 when the loader did not say */
};

void bootinfo_collect(struct boot_info *info, uint32_t kind, uint64_t source);

#endif
