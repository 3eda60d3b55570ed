/* What the user asked for: parsed from the command line, validated before anything is created. */
#ifndef VMM_CONFIG_H
#define VMM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

enum accel_kind { ACCEL_AUTO, ACCEL_KVM, ACCEL_EMU };
enum reboot_action { REBOOT_EXIT, REBOOT_RESTART };

#define CONFIG_MAX_CMDLINE 4096
#define CONFIG_MAX_DISKS 16
#define CONFIG_MAX_PATH 1024

enum disk_cache { DISK_CACHE_WRITEBACK, DISK_CACHE_NONE };

/* -d FILE[,ro][,serial=ID][,cache=none|writeback] */
struct disk_config {
	char path[CONFIG_MAX_PATH];
	bool ro;
	char serial[21]; /* virtio-blk GET_ID: up to 20 bytes */
	enum disk_cache cache;
};

struct vm_config {
	const char *kernel_path;
	const char *initrd_path;
	char cmdline[CONFIG_MAX_CMDLINE]; /* user's kernel arguments, joined with spaces */
	uint64_t mem_size;
	unsigned nr_cpus;
	bool cpus_given; /* -c was given: maxcpus= in the kernel arguments does not override it */
	enum accel_kind accel;
	enum reboot_action reboot;
	bool keep;
	bool show_help, show_version;
	struct disk_config disks[CONFIG_MAX_DISKS]; /* -d, in order: vda, vdb, ... */
	unsigned nr_disks;
	char simscsi_prefix[CONFIG_MAX_PATH]; /* simscsi=PREFIX: attach PREFIXa, PREFIXb... */
};

/* Parse one -d value into d. 0, or -1 with one line in err. */
int config_parse_disk(struct disk_config *d, const char *text, char *err, unsigned err_len);

/* Parse "256M", "1G", "65536K", "1073741824" (bytes). 0 or -EINVAL / -ERANGE. */
int config_parse_size(const char *text, uint64_t *out);

/* Parse argv (without the program name and without the "run" word). On error returns -1 and
 * writes one line "what: why (how to fix)" into err. */
int config_parse_args(struct vm_config *cfg, int argc, char **argv, char *err, unsigned err_len);

#endif
