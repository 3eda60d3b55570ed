/* What the user asked for: parsed from the command line, validated before anything is created. */
#ifndef VMM_CONFIG_H
#define VMM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum accel_kind { ACCEL_AUTO, ACCEL_KVM, ACCEL_EMU };
enum reboot_action { REBOOT_EXIT, REBOOT_RESTART };

#define CONFIG_MAX_CMDLINE 4096
#define CONFIG_MAX_DISKS 16
#define CONFIG_MAX_PATH 1024
#define CONFIG_MAX_NICS 8
#define CONFIG_MAX_HOSTFWD 8
#define CONFIG_MAX_NET_QUEUES 16

enum disk_cache { DISK_CACHE_WRITEBACK, DISK_CACHE_NONE };

/* -d FILE[,ro][,serial=ID][,cache=none|writeback] */
struct disk_config {
	char path[CONFIG_MAX_PATH];
	bool ro;
	char serial[21]; /* virtio-blk GET_ID: up to 20 bytes */
	enum disk_cache cache;
};

/* -n tap[=IFNAME][,mac=MAC][,queues=N] | user[,mac=MAC][,mtu=N][,hostfwd=tcp:[ADDR]:PORT-[ADDR]:PORT...] */
enum net_kind { NET_TAP, NET_USER };
struct net_hostfwd {
	bool udp;
	uint32_t host_addr, guest_addr; /* network order; 0: 127.0.0.1 and the DHCP address */
	uint16_t host_port, guest_port;
};
struct net_config {
	enum net_kind kind;
	char ifname[16]; /* tap: an existing TAP to use, or "" to create one named after the VM */
	bool has_mac;
	uint8_t mac[6];
	unsigned queues; /* queue pairs, 1..CONFIG_MAX_NET_QUEUES */
	struct net_hostfwd hostfwd[CONFIG_MAX_HOSTFWD];
	unsigned nr_hostfwd;
	unsigned mtu; /* user: the link's MTU (CONFIG_NET_USER_MTU unless mtu=) */
};
/* User mode's default MTU: libslirp's largest, as slirp4netns and passt use; the link only
 * exists between the guest and the monitor, and every 1500-byte frame the guest does not have
 * to make or take saves it the per-packet work of its network stack. */
#define CONFIG_NET_USER_MTU 65520
#define CONFIG_NET_MTU_MIN 68

struct vm_config {
	const char *kernel_path;
	const char *initrd_path;
	char cmdline[CONFIG_MAX_CMDLINE]; /* user's kernel arguments, joined with spaces */
	uint64_t mem_size;
	unsigned nr_cpus;
	bool cpus_given; /* -c was given: maxcpus= in the kernel arguments does not override it */
	enum accel_kind accel;
	enum reboot_action reboot;
	bool decompress_in_guest; /* --kernel-decompress guest: a bzImage always runs its decompressor */
	bool keep;
	bool show_help, show_version;
	/* --name, --api-sock (NULL: the default socket; "none": no socket), --console-pty,
	 * --console-log (src/api/, main.c) */
	const char *name, *api_sock, *console_log;
	bool console_pty;
	struct disk_config disks[CONFIG_MAX_DISKS]; /* -d, in order: vda, vdb, ... */
	unsigned nr_disks;
	char simscsi_prefix[CONFIG_MAX_PATH]; /* simscsi=PREFIX: attach PREFIXa, PREFIXb... */
	struct net_config nets[CONFIG_MAX_NICS]; /* -n and the seed's simeth=IFNAME, in order */
	unsigned nr_nets;

	/* Seeing inside: -t/--trace, --trace-file, --stats, -g/--gdb, --gdb-wait. */
	uint32_t trace_mask; /* 1 << enum trace_category */
	const char *trace_path; /* NULL: stderr */
	bool stats;
	char gdb_host[64]; /* "" when -g was not given; default 127.0.0.1 */
	uint16_t gdb_port;
	bool gdb_wait;
	/* --poll-max-us: the cap of the adaptive busy-poll windows (poll_window.h) of a halted
	 * software-CPU vCPU and of the event loop waiting for a reply; 0: never poll. */
	uint32_t poll_max_ns;
	bool poll_always; /* ,always: poll even while the host has more runnable threads than CPUs */
	/* Resolved by main once for every run of the VM, not parsed: */
	int trace_fd; /* the open --trace-file, or stderr */
	uint64_t start_ns; /* CLOCK_MONOTONIC at process start (trace and debug-port times) */
};

/* Parse one -d value into d. 0, or -1 with one line in err. */
int config_parse_disk(struct disk_config *d, const char *text, char *err, unsigned err_len);

/* Parse one -n value into n (src/net/net_config.c). 0, or -1 with one line in err. */
int config_parse_net(struct net_config *n, const char *text, char *err, unsigned err_len);

/* Parse "256M", "1G", "65536K", "1073741824" (bytes). 0 or -EINVAL / -ERANGE. */
int config_parse_size(const char *text, uint64_t *out);

/* Parse -g's "[HOST:]PORT" (HOST defaults to 127.0.0.1). 0, or -1 with one line in err. */
int config_parse_gdb(struct vm_config *cfg, const char *text, char *err, unsigned err_len);

/* Parse argv (without the program name and without the "run" word). On error returns -1 and
 * writes one line "what: why (how to fix)" into err. */
int config_parse_args(struct vm_config *cfg, int argc, char **argv, char *err, unsigned err_len);

/* The VM's name: --name, or "vmm-PID". It names the control socket and created TAPs and seeds
 * default MACs, so every place that needs it gets the same one. */
void config_vm_name(const struct vm_config *cfg, char *out, size_t len);

#endif
