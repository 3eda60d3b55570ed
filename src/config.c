/* Command-line parsing: pure, so it is unit-tested (tests/unit/test_config.c). */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/server.h"
#include "trace.h"

#define CONFIG_DEFAULT_MEM (256ull << 20)
#define CONFIG_MAX_CPUS 64

int config_parse_size(const char *text, uint64_t *out)
{
	if (!text || !*text || *text == '-')
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long value = strtoull(text, &end, 10);
	if (errno || end == text)
		return errno == ERANGE ? -ERANGE : -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: return -EINVAL;
	}
	if (*end == 'i' && shift) /* accept "MiB"-style too */
		end++;
	if ((*end == 'B' || *end == 'b') && shift)
		end++;
	if (*end != '\0')
		return -EINVAL;
	if (shift && value > (~0ull >> shift))
		return -ERANGE;
	*out = value << shift;
	return 0;
}

static int append_cmdline(struct vm_config *cfg, const char *arg, char *err, unsigned err_len)
{
	size_t used = strlen(cfg->cmdline), len = strlen(arg);
	if (used + len + 2 > sizeof(cfg->cmdline)) {
		snprintf(err, err_len, "kernel arguments: longer than %d bytes (shorten them)",
			 CONFIG_MAX_CMDLINE - 1);
		return -1;
	}
	if (used)
		cfg->cmdline[used++] = ' ';
	memcpy(cfg->cmdline + used, arg, len + 1);
	return 0;
}

/* The seed's "vmm vmlinux maxcpus=2": maxcpus= also sets the vCPU count unless -c was given. */
static int apply_maxcpus(struct vm_config *cfg, const char *arg, char *err, unsigned err_len)
{
	if (strncmp(arg, "maxcpus=", 8) != 0 || cfg->cpus_given)
		return 0;
	char *end;
	long n = strtol(arg + 8, &end, 10);
	if (*end || end == arg + 8 || n < 1 || n > CONFIG_MAX_CPUS) {
		snprintf(err, err_len, "%s: not a vCPU count (use maxcpus=1..%d)", arg,
			 CONFIG_MAX_CPUS);
		return -1;
	}
	cfg->nr_cpus = (unsigned)n;
	return 0;
}

static int parse_cpus(struct vm_config *cfg, const char *text, char *err, unsigned err_len)
{
	char *end;
	long n = strtol(text, &end, 10);
	if (*end || end == text || n < 1 || n > CONFIG_MAX_CPUS) {
		snprintf(err, err_len, "--cpus %s: not a vCPU count (use 1 to %d)", text,
			 CONFIG_MAX_CPUS);
		return -1;
	}
	cfg->nr_cpus = (unsigned)n;
	cfg->cpus_given = true;
	return 0;
}

static int parse_memory(struct vm_config *cfg, const char *text, char *err, unsigned err_len)
{
	uint64_t size;
	if (config_parse_size(text, &size) < 0) {
		snprintf(err, err_len, "--memory %s: not a size (use e.g. 256M or 2G)", text);
		return -1;
	}
	cfg->mem_size = size;
	return 0;
}

static int parse_accel(struct vm_config *cfg, const char *text, char *err, unsigned err_len)
{
	if (!strcmp(text, "auto"))
		cfg->accel = ACCEL_AUTO;
	else if (!strcmp(text, "kvm"))
		cfg->accel = ACCEL_KVM;
	else if (!strcmp(text, "emu"))
		cfg->accel = ACCEL_EMU;
	else {
		snprintf(err, err_len, "--accel %s: unknown accelerator (use kvm, emu or auto)", text);
		return -1;
	}
	return 0;
}

/* Up to 10 ms: beyond that a busy poll costs a host CPU for longer than a wake-up ever takes. */
#define CONFIG_POLL_MAX_US 10000u

static int parse_poll_max(struct vm_config *cfg, const char *text, char *err, unsigned err_len)
{
	char *end;
	errno = 0;
	unsigned long us = strtoul(text, &end, 10);
	cfg->poll_always = !strcmp(end, ",always");
	if (cfg->poll_always)
		end += strlen(end);
	if (!*text || *end || errno || text[0] == '-' || us > CONFIG_POLL_MAX_US) {
		snprintf(err, err_len,
			 "--poll-max-us %s: not a number of microseconds from 0 to %u (0 turns "
			 "polling off), optionally followed by ,always",
			 text, CONFIG_POLL_MAX_US);
		return -1;
	}
	cfg->poll_max_ns = (uint32_t)us * 1000u;
	return 0;
}

static int parse_reboot(struct vm_config *cfg, const char *text, char *err, unsigned err_len)
{
	if (!strcmp(text, "exit"))
		cfg->reboot = REBOOT_EXIT;
	else if (!strcmp(text, "restart"))
		cfg->reboot = REBOOT_RESTART;
	else {
		snprintf(err, err_len, "--reboot=%s: unknown action (use exit or restart)", text);
		return -1;
	}
	return 0;
}

static int parse_kernel_decompress(struct vm_config *cfg, const char *text, char *err,
				   unsigned err_len)
{
	if (!strcmp(text, "host"))
		cfg->decompress_in_guest = false;
	else if (!strcmp(text, "guest"))
		cfg->decompress_in_guest = true;
	else {
		snprintf(err, err_len, "--kernel-decompress %s: unknown place (use host or guest)",
			 text);
		return -1;
	}
	return 0;
}

int config_parse_disk(struct disk_config *d, const char *text, char *err, unsigned err_len)
{
	memset(d, 0, sizeof(*d));
	const char *comma = strchr(text, ',');
	size_t len = comma ? (size_t)(comma - text) : strlen(text);
	if (len == 0 || len >= sizeof(d->path)) {
		snprintf(err, err_len, "--disk %s: %s (use -d FILE[,ro][,serial=ID][,cache=none])",
			 text, len ? "path too long" : "no file given");
		return -1;
	}
	memcpy(d->path, text, len);
	while (comma) {
		const char *opt = comma + 1;
		comma = strchr(opt, ',');
		size_t n = comma ? (size_t)(comma - opt) : strlen(opt);
		if (n == 2 && !strncmp(opt, "ro", 2)) {
			d->ro = true;
		} else if (n > 7 && !strncmp(opt, "serial=", 7) && n - 7 <= 20) {
			memcpy(d->serial, opt + 7, n - 7);
		} else if (n == 10 && !strncmp(opt, "cache=none", 10)) {
			d->cache = DISK_CACHE_NONE;
		} else if (n == 15 && !strncmp(opt, "cache=writeback", 15)) {
			d->cache = DISK_CACHE_WRITEBACK;
		} else {
			snprintf(err, err_len, "--disk %s: unknown option '%.*s' (use ro, serial=ID of at most 20 characters, cache=none or cache=writeback)",
				 text, (int)n, opt);
			return -1;
		}
	}
	return 0;
}

static int parse_disk(struct vm_config *cfg, const char *text, char *err, unsigned err_len)
{
	if (cfg->nr_disks == CONFIG_MAX_DISKS) {
		snprintf(err, err_len, "--disk %s: more than %d disks (attach fewer)", text,
			 CONFIG_MAX_DISKS);
		return -1;
	}
	if (config_parse_disk(&cfg->disks[cfg->nr_disks], text, err, err_len) < 0)
		return -1;
	cfg->nr_disks++;
	return 0;
}

int config_parse_gdb(struct vm_config *cfg, const char *text, char *err, unsigned err_len)
{
	const char *colon = strrchr(text, ':');
	const char *port = colon ? colon + 1 : text;
	size_t host_len = colon ? (size_t)(colon - text) : 0;
	char *end;
	long n = strtol(port, &end, 10);
	if (*end || end == port || n < 1 || n > 65535 || host_len >= sizeof(cfg->gdb_host)) {
		snprintf(err, err_len, "--gdb %s: not [HOST:]PORT (use e.g. -g 1234 or -g 0.0.0.0:1234)",
			 text);
		return -1;
	}
	if (host_len) {
		memcpy(cfg->gdb_host, text, host_len);
		cfg->gdb_host[host_len] = '\0';
	} else {
		strcpy(cfg->gdb_host, "127.0.0.1"); /* loopback only unless asked */
	}
	cfg->gdb_port = (uint16_t)n;
	return 0;
}

static int parse_net(struct vm_config *cfg, const char *text, char *err, unsigned err_len)
{
	if (cfg->nr_nets == CONFIG_MAX_NICS) {
		snprintf(err, err_len, "--net %s: more than %d network interfaces (attach fewer)", text,
			 CONFIG_MAX_NICS);
		return -1;
	}
	if (config_parse_net(&cfg->nets[cfg->nr_nets], text, err, err_len) < 0)
		return -1;
	cfg->nr_nets++;
	return 0;
}

/* The name becomes a socket file name and a directory name in RUNTIME_DIR: a bad one is bad usage
 * (status 2), found before anything is created. */
static int parse_name(struct vm_config *cfg, const char *arg, char *err, unsigned err_len)
{
	if (!api_valid_name(arg)) {
		snprintf(err, err_len,
			 "--name %.80s: not a VM name (use 1 to 64 letters, digits, '.', '_' and '-', not starting with '.')",
			 arg);
		return -1;
	}
	cfg->name = arg;
	return 0;
}

enum {
	OPT_ACCEL = 256,
	OPT_REBOOT,
	OPT_VERSION,
	OPT_TRACE_FILE,
	OPT_STATS,
	OPT_GDB_WAIT,
	OPT_KERNEL_DECOMPRESS,
	OPT_POLL_MAX
};

/* The control socket and the console's other ends (src/api/, docs/vmm.1). */
enum { OPT_NAME = 300, OPT_API_SOCK, OPT_CONSOLE_PTY, OPT_CONSOLE_LOG };

static const struct option config_options[] = {
	{ "memory", required_argument, NULL, 'm' },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "api-sock", required_argument, NULL, OPT_API_SOCK },
	{ "console-pty", no_argument, NULL, OPT_CONSOLE_PTY },
	{ "console-log", required_argument, NULL, OPT_CONSOLE_LOG },
	{ "cpus", required_argument, NULL, 'c' },
	{ "initrd", required_argument, NULL, 'i' },
	{ "disk", required_argument, NULL, 'd' },
	{ "net", required_argument, NULL, 'n' },
	{ "keep", no_argument, NULL, 'k' },
	{ "help", no_argument, NULL, 'h' },
	{ "accel", required_argument, NULL, OPT_ACCEL },
	{ "reboot", required_argument, NULL, OPT_REBOOT },
	{ "kernel-decompress", required_argument, NULL, OPT_KERNEL_DECOMPRESS },
	{ "poll-max-us", required_argument, NULL, OPT_POLL_MAX },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ "trace", required_argument, NULL, 't' },
	{ "trace-file", required_argument, NULL, OPT_TRACE_FILE },
	{ "stats", no_argument, NULL, OPT_STATS },
	{ "gdb", required_argument, NULL, 'g' },
	{ "gdb-wait", no_argument, NULL, OPT_GDB_WAIT },
	{ NULL, 0, NULL, 0 },
};

static int parse_option(struct vm_config *cfg, int opt, const char *arg, int bad_opt,
			const char *bad_word, char *err, unsigned err_len)
{
	switch (opt) {
	case 'm': return parse_memory(cfg, arg, err, err_len);
	case 'c': return parse_cpus(cfg, arg, err, err_len);
	case OPT_NAME: return parse_name(cfg, arg, err, err_len);
	case OPT_API_SOCK: cfg->api_sock = arg; return 0;
	case OPT_CONSOLE_PTY: cfg->console_pty = true; return 0;
	case OPT_CONSOLE_LOG: cfg->console_log = arg; return 0;
	case 'i': cfg->initrd_path = arg; return 0;
	case 'd': return parse_disk(cfg, arg, err, err_len);
	case 'n': return parse_net(cfg, arg, err, err_len);
	case 'k': cfg->keep = true; return 0;
	case 'h': cfg->show_help = true; return 0;
	case OPT_ACCEL: return parse_accel(cfg, arg, err, err_len);
	case OPT_REBOOT: return parse_reboot(cfg, arg, err, err_len);
	case OPT_KERNEL_DECOMPRESS:
		return parse_kernel_decompress(cfg, arg, err, err_len);
	case OPT_POLL_MAX:
		return parse_poll_max(cfg, arg, err, err_len);
	case OPT_VERSION: cfg->show_version = true; return 0;
	case 't': return trace_parse_categories(arg, &cfg->trace_mask, err, err_len);
	case OPT_TRACE_FILE: cfg->trace_path = arg; return 0;
	case OPT_STATS: cfg->stats = true; return 0;
	case 'g': return config_parse_gdb(cfg, arg, err, err_len);
	case OPT_GDB_WAIT: cfg->gdb_wait = true; return 0;
	case ':':
		snprintf(err, err_len, "%s: needs a value (see vmm --help)", bad_word);
		return -1;
	default:
		if (bad_opt && bad_opt != '?')
			snprintf(err, err_len, "-%c: unknown option (see vmm --help)", bad_opt);
		else
			snprintf(err, err_len, "%s: unknown option (see vmm --help)", bad_word);
		return -1;
	}
}

int config_parse_args(struct vm_config *cfg, int argc, char **argv, char *err, unsigned err_len)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->mem_size = CONFIG_DEFAULT_MEM;
	cfg->nr_cpus = 1;
	cfg->trace_fd = STDERR_FILENO;
	/* Polling off unless asked: on this 2-core host it measured no better on bench/net and
	 * worse on 4 KiB disk reads at depth 1 (bench/README, session 7). */
	cfg->poll_max_ns = 0;
	err[0] = '\0';

	/* getopt wants argv[0]; "+" stops at the kernel path so kernel arguments pass untouched. */
	char *args[argc + 2];
	args[0] = "vmm";
	memcpy(args + 1, argv, sizeof(char *) * (size_t)argc);
	args[argc + 1] = NULL;
	optind = 0;
	opterr = 0;
	int opt;
	while ((opt = getopt_long(argc + 1, args, "+:m:c:i:d:n:kht:g:", config_options, NULL)) != -1) {
		const char *word = args[optind - 1];
		if (parse_option(cfg, opt, optarg, optopt, word, err, err_len) < 0)
			return -1;
	}
	if (cfg->show_help || cfg->show_version)
		return 0;
	if (cfg->gdb_wait && !cfg->gdb_port) {
		snprintf(err, err_len, "--gdb-wait: needs --gdb [HOST:]PORT (add e.g. -g 1234)");
		return -1;
	}
	/* No kernel with --api-sock or --name: it comes through the control socket. */
	if (optind > argc && !cfg->api_sock && !cfg->name) {
		snprintf(err, err_len, "no kernel given (usage: vmm run [OPTIONS] KERNEL [ARGS...])");
		return -1;
	}
	cfg->kernel_path = args[optind];
	for (int i = optind + 1; i <= argc; i++) {
		/* The seed's simscsi=PREFIX is the monitor's, not the kernel's (virtio/devices.c). */
		if (!strncmp(args[i], "simscsi=", 8) &&
		    strlen(args[i] + 8) + 2 <= sizeof(cfg->simscsi_prefix)) {
			strcpy(cfg->simscsi_prefix, args[i] + 8);
			continue;
		}
		/* The seed's simeth=IFNAME: a TAP NIC, as -n tap=IFNAME (src/net/). */
		if (!strncmp(args[i], "simeth=", 7)) {
			char net[32];
			snprintf(net, sizeof(net), "tap=%.20s", args[i] + 7);
			if (strlen(args[i] + 7) > 15 || parse_net(cfg, net, err, err_len) < 0) {
				snprintf(err, err_len, "%s: not an interface name (use simeth=IFNAME with at most 15 characters)",
					 args[i]);
				return -1;
			}
			continue;
		}
		if (append_cmdline(cfg, args[i], err, err_len) < 0 ||
		    apply_maxcpus(cfg, args[i], err, err_len) < 0)
			return -1;
	}
	return 0;
}

void config_vm_name(const struct vm_config *cfg, char *out, size_t len)
{
	if (cfg->name)
		snprintf(out, len, "%s", cfg->name);
	else
		snprintf(out, len, "vmm-%d", (int)getpid());
}
