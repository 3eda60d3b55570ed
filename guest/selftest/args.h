/* The selftest.* command-line arguments: what the integration test tells us to expect. */
#ifndef SELFTEST_ARGS_H
#define SELFTEST_ARGS_H

#include <stdbool.h>
#include <stdint.h>

struct selftest_args {
	uint64_t mem; /* selftest.mem=SIZE: total E820 RAM; 0 = not given */
	uint32_t cpus; /* selftest.cpus=N; 0 = not given */
	bool panic; /* selftest.panic=1: end with a pvpanic write */
	bool triple; /* selftest.triple=1: end with a triple fault */
	bool reboot; /* selftest.reboot=1: end with a reset */
	bool quick; /* selftest.quick=1: skip the slow checks */
	bool virtio; /* selftest.virtio=1: drive the virtio devices */
	bool hostile; /* selftest.hostile=1: then attack a virtio-blk device */
	bool hold; /* selftest.hold=1: after the summary, halt instead of ending */
	bool watch; /* selftest.watch=1: check data breakpoints (kvm-pvm has none) */
	bool disks_given;
	uint32_t disks; /* selftest.disks=N: virtio-blk devices expected */
	bool have_serials;
	char serials[96]; /* selftest.serials=A,B,...: get-id of each disk in order */
	bool net; /* selftest.net=1: the network bench (netbench.c) instead of nothing */
	uint32_t net_ip, net_peer; /* selftest.net_ip=, net_peer=: IPv4, network byte order */
	uint32_t net_port; /* selftest.net_port=N: the host peer's UDP port */
	uint32_t net_frames; /* selftest.net_frames=N: frames per throughput run */
	bool net_cpl0; /* selftest.net_cpl0=1: the bench loops at CPL 0 instead of 3 */
	uint32_t net_rounds; /* selftest.net_rounds=N: round trips per latency run */
	bool diskbench; /* selftest.diskbench=1: the disk benchmark (diskbench.c) */
	uint32_t diskbench_ms; /* selftest.diskbench_ms=N: per workload; 0 = the default */
	bool diskbench_verify; /* selftest.diskbench_verify=1: check the data (tests) */
	bool diskbench_cpl0; /* selftest.diskbench_cpl=0: run the loop at CPL 0 (default 3) */
	char error[96]; /* first argument we could not understand; "" if none */
};

void args_parse(struct selftest_args *args, const char *cmdline);

#endif
