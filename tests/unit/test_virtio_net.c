/* virtio-net end to end without a guest: the test plays the driver through ECAM and BAR
 * accesses as a vCPU would, runs the event loop as the main thread does, and plays the host
 * side either through a socketpair standing in for a TAP (hostile chains, filters, control
 * queue, link failure) or through a real TAP in a network namespace of its own, where the host
 * kernel answers a ping from the test's "guest". */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/virtio_net.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/net.h"
#include "pci/pci.h"
#include "test.h"
#include "virtio/devices.h"
#include "virtio/net.h"
#include "virtio/virtio_pci.h"
#include "vm.h"

#define QSIZE 16
#define RING(q) (0x100000ull + (uint64_t)(q) * 0x10000)
#define BUF(q, i) (0x400000ull + (uint64_t)(q) * 0x100000 + (uint64_t)(i) * 0x10000)

static const struct cpu_backend fake_backend = { .name = "fake" };

struct rig {
	struct vm vm;
	struct event_loop loop;
	struct pci_host host;
	bool own_host;
	struct virtio_net *net;
	int peer; /* the host side of the fake TAP */
	uint64_t bar;
	uint16_t avail_idx[3], used_seen[3];
	struct net_backend *be; /* the device's backend */
};

static void mmio_w(struct rig *r, uint64_t a, uint64_t v, unsigned size) { bus_access(&r->vm.mmio, a, &v, size, true); }
static uint64_t mmio_r(struct rig *r, uint64_t a, unsigned size)
{
	uint64_t v = 0;
	bus_access(&r->vm.mmio, a, &v, size, false);
	return v;
}

static uint64_t find_net(struct rig *r)
{
	for (unsigned dev = 0; dev < 32; dev++) {
		uint64_t cfg = PCI_ECAM_BASE + (dev << 15);
		if (mmio_r(r, cfg, 4) == 0x10411AF4) {
			mmio_w(r, cfg + 4, 0x6, 2); /* memory decoding and bus mastering */
			return mmio_r(r, cfg + 0x10, 4) & ~0xFull;
		}
	}
	return 0;
}

static int msi_none(void *opaque, uint64_t a, uint32_t d)
{
	(void)opaque, (void)a, (void)d;
	return 0;
}

static void rig_base(struct rig *r)
{
	memset(r, 0, sizeof(*r));
	r->peer = -1;
	r->vm.nr_vcpus = 1;
	r->vm.backend = &fake_backend;
	bus_init(&r->vm.pio, "pio");
	bus_init(&r->vm.mmio, "mmio");
	event_loop_init(&r->loop);
	r->vm.loop = &r->loop;
	memory_init(&r->vm.mem, 64ull << 20);
}

/* Fake TAP: a datagram socketpair, one frame per datagram, with the virtio-net header. */
static ssize_t pair_transmit(struct net_backend *be, unsigned q, const struct iovec *iov, unsigned cnt)
{
	ssize_t n = writev(be->fds[q], iov, (int)cnt);
	return n < 0 ? -errno : n;
}
static void pair_destroy(struct net_backend *be)
{
	close(be->fds[0]);
	free(be);
}
static const struct net_backend_ops pair_ops = { .transmit = pair_transmit, .destroy = pair_destroy };

/* A rig whose VM is called vm_name (--name), or unnamed (NULL). */
/* The device for --net OPTS on backend be, on a PCI host of its own; its BAR found. */
static int rig_attach(struct rig *r, const char *opts, struct net_backend *be)
{
	struct net_config nc;
	char err[256];
	if (config_parse_net(&nc, opts, err, sizeof(err)) < 0)
		return -1;
	if (pci_host_init(&r->host, &r->vm.pio, &r->vm.mmio, 1ull << 36, msi_none, r) < 0)
		return -1;
	r->own_host = true;
	r->be = be;
	r->net = virtio_net_create_on(&r->vm, &r->host, &nc, 0, be);
	if (!r->net)
		return -1;
	r->bar = find_net(r);
	return r->bar ? 0 : -1;
}

static int rig_init_fake_named(struct rig *r, const char *opts, const char *vm_name)
{
	rig_base(r);
	r->vm.cfg.name = vm_name;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	int big = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	struct net_backend *be = calloc(1, sizeof(*be));
	be->ops = &pair_ops;
	snprintf(be->name, sizeof(be->name), "pair");
	be->nr_queues = 1;
	be->fds[0] = sv[0];
	be->vnet_hdr = true;
	be->offloads = NET_OFFLOAD_CSUM | NET_OFFLOAD_TSO4 | NET_OFFLOAD_TSO6;
	r->peer = sv[1];
	return rig_attach(r, opts, be);
}

static int rig_init_fake(struct rig *r, const char *opts)
{
	return rig_init_fake_named(r, opts, NULL);
}

static void rig_free(struct rig *r)
{
	if (r->own_host) {
		pci_host_destroy(&r->host);
		virtio_net_destroy(r->net);
	} else {
		virtio_devices_destroy(&r->vm);
	}
	if (r->peer >= 0)
		close(r->peer);
	memory_destroy(&r->vm.mem);
	bus_destroy(&r->vm.pio);
	bus_destroy(&r->vm.mmio);
	event_loop_destroy(&r->loop);
}

static uint64_t device_features(struct rig *r)
{
	uint64_t c = r->bar + VIRTIO_BAR_COMMON, f = 0;
	for (unsigned i = 0; i < 2; i++) {
		mmio_w(r, c + 0x00, i, 4);
		f |= mmio_r(r, c + 0x04, 4) << (32 * i);
	}
	return f;
}

/* §3.1.1 with queues 0 (rx), 1 (tx), 2 (control). */
static uint8_t driver_start(struct rig *r, uint64_t features)
{
	uint64_t c = r->bar + VIRTIO_BAR_COMMON;
	mmio_w(r, c + 0x14, 0, 1);
	memset(r->avail_idx, 0, sizeof(r->avail_idx));
	memset(r->used_seen, 0, sizeof(r->used_seen));
	for (unsigned q = 0; q < 3; q++)
		memset(memory_gpa_to_host(&r->vm.mem, RING(q), 0x3000), 0, 0x3000);
	mmio_w(r, c + 0x14, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER, 1);
	features |= 1ull << VIRTIO_F_VERSION_1;
	for (unsigned i = 0; i < 2; i++) {
		mmio_w(r, c + 0x08, i, 4);
		mmio_w(r, c + 0x0C, (uint32_t)(features >> (32 * i)), 4);
	}
	mmio_w(r, c + 0x14, 0x0B, 1);
	for (unsigned q = 0; q < 3; q++) {
		mmio_w(r, c + 0x16, q, 2);
		mmio_w(r, c + 0x18, QSIZE, 2);
		mmio_w(r, c + 0x20, RING(q), 4);
		mmio_w(r, c + 0x24, 0, 4);
		mmio_w(r, c + 0x28, RING(q) + 0x1000, 4);
		mmio_w(r, c + 0x30, RING(q) + 0x2000, 4);
		mmio_w(r, c + 0x1C, 1, 2);
	}
	mmio_w(r, c + 0x14, 0x0F, 1);
	event_loop_run_once(&r->loop, 10);
	return (uint8_t)mmio_r(r, c + 0x14, 1);
}

static void desc(struct rig *r, unsigned q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		 uint16_t next)
{
	struct virtq_desc d = { addr, len, flags, next };
	memory_write(&r->vm.mem, RING(q) + 16 * i, &d, 16);
}

static void offer(struct rig *r, unsigned q, uint16_t head, bool kick)
{
	memory_write(&r->vm.mem, RING(q) + 0x1000 + 4 + 2 * (r->avail_idx[q] % QSIZE), &head, 2);
	r->avail_idx[q]++;
	memory_write(&r->vm.mem, RING(q) + 0x1000 + 2, &r->avail_idx[q], 2);
	if (kick)
		mmio_w(r, r->bar + VIRTIO_BAR_NOTIFY + VIRTIO_NOTIFY_MULTIPLIER * q, q, 2);
}

static uint16_t used_idx(struct rig *r, unsigned q)
{
	uint16_t v;
	memory_read(&r->vm.mem, RING(q) + 0x2000 + 2, &v, 2);
	return v;
}

/* Run the loop until queue q's used index reaches want (or 2 s pass). */
static void run_until_used(struct rig *r, unsigned q, uint16_t want)
{
	for (int i = 0; i < 200 && used_idx(r, q) != want; i++)
		event_loop_run_once(&r->loop, 10);
}

static void used_elem(struct rig *r, unsigned q, unsigned n, uint32_t *id, uint32_t *len)
{
	memory_read(&r->vm.mem, RING(q) + 0x2000 + 4 + 8 * (n % QSIZE), id, 4);
	memory_read(&r->vm.mem, RING(q) + 0x2000 + 8 + 8 * (n % QSIZE), len, 4);
}

static size_t make_frame(uint8_t *f, const uint8_t *dst, size_t len)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, "\x52\x54\x00\xAA\xBB\xCC", 6);
	f[12] = 0x88, f[13] = 0xB5; /* local experimental ethertype */
	for (size_t i = 14; i < len; i++)
		f[i] = (uint8_t)(i * 7);
	return len;
}

static const uint8_t bcast[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };

/* Transmit one frame (header + payload) as a chain of descriptors at head 0 of queue 1. */
static void tx_frame(struct rig *r, const uint8_t *hdr, unsigned hdr_len, const uint8_t *frame,
		     size_t len)
{
	memory_write(&r->vm.mem, BUF(1, 0), hdr, hdr_len);
	if (len) /* frame may be NULL */
		memory_write(&r->vm.mem, BUF(1, 1), frame, len);
	desc(r, 1, 0, BUF(1, 0), hdr_len, len ? VIRTQ_DESC_F_NEXT : 0, 1);
	desc(r, 1, 1, BUF(1, 1), (uint32_t)len, 0, 0);
	offer(r, 1, 0, true);
	run_until_used(r, 1, r->avail_idx[1]);
}

static void test_virtio_net_config_and_features(void)
{
	struct rig r;
	CHECK_EQ(rig_init_fake(&r, "tap,mac=52:54:00:12:34:56"), 0);
	uint8_t cfg[12];
	for (unsigned i = 0; i < 12; i++)
		cfg[i] = (uint8_t)mmio_r(&r, r.bar + VIRTIO_BAR_DEVICE + i, 1);
	CHECK(!memcmp(cfg, "\x52\x54\x00\x12\x34\x56", 6));
	CHECK_EQ(cfg[6] | cfg[7] << 8, VIRTIO_NET_S_LINK_UP);
	CHECK_EQ(cfg[8] | cfg[9] << 8, 1); /* max_virtqueue_pairs */
	CHECK_EQ(cfg[10] | cfg[11] << 8, 1500); /* mtu */
	uint64_t f = device_features(&r);
	unsigned want[] = { VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_HOST_TSO4,
			    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_STATUS,
			    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU, VIRTIO_NET_F_CTRL_VQ,
			    VIRTIO_NET_F_CTRL_RX, VIRTIO_RING_F_EVENT_IDX, VIRTIO_F_VERSION_1 };
	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		CHECK(f & (1ull << want[i]));
	CHECK(!(f & (1ull << VIRTIO_NET_F_MQ))); /* one queue pair */
	rig_free(&r);
	/* Without mac= the MAC is stable, locally administered and unicast. */
	uint8_t a[6], b[6], c[6];
	net_default_mac("vm-one", 0, a);
	net_default_mac("vm-one", 0, b);
	net_default_mac("vm-one", 1, c);
	CHECK(!memcmp(a, b, 6) && memcmp(a, c, 6));
	CHECK((a[0] & 3) == 2);
}

static void test_virtio_net_default_mac_and_tap_name_follow_the_vm_name(void)
{
	/* The guest sees the MAC derived from --name: the same on every run of that VM. */
	struct rig r;
	uint8_t want[6], other[6], cfg[6];
	CHECK_EQ(rig_init_fake_named(&r, "tap", "web"), 0);
	for (unsigned i = 0; i < 6; i++)
		cfg[i] = (uint8_t)mmio_r(&r, r.bar + VIRTIO_BAR_DEVICE + i, 1);
	rig_free(&r);
	net_default_mac("web", 0, want);
	net_default_mac("db", 0, other);
	CHECK(!memcmp(cfg, want, 6));
	CHECK(memcmp(want, other, 6));

	char name[NET_IFNAME_SIZE];
	net_tap_default_name("web", 0, name);
	CHECK(!strcmp(name, "web-0"));
	net_tap_default_name("vmm-4194303", 7, name);
	CHECK(!strcmp(name, "vmm-4194303-7"));
	net_tap_default_name("abcdefghijklm", 1, name); /* 15 characters: fits exactly */
	CHECK(!strcmp(name, "abcdefghijklm-1"));
	/* Longer: cut, with the whole name's hash, so two long names sharing a start differ. */
	char other_name[NET_IFNAME_SIZE];
	net_tap_default_name("production-database-1", 2, name);
	net_tap_default_name("production-database-2", 2, other_name);
	CHECK_EQ(strlen(name), 15);
	CHECK(!strncmp(name, "productio", 9) && !strcmp(name + 13, "-2"));
	CHECK(strcmp(name, other_name));
	net_tap_default_name("production-database-1", 2, other_name);
	CHECK(!strcmp(name, other_name)); /* stable */
}

static void test_virtio_net_tx_reaches_backend_zero_copy(void)
{
	struct rig r;
	CHECK_EQ(rig_init_fake(&r, "tap"), 0);
	CHECK_EQ(driver_start(&r, (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_HOST_TSO4) |
				      (1ull << VIRTIO_RING_F_EVENT_IDX)),
		 0x0F);
	uint8_t frame[3000], hdr[12] = { 0 }, got[4000];
	make_frame(frame, bcast, 1000);
	tx_frame(&r, hdr, 12, frame, 1000);
	CHECK_EQ(read(r.peer, got, sizeof(got)), 1012);
	CHECK(!memcmp(got + 12, frame, 1000));
	/* A TSO frame with a partial checksum passes with its header. */
	hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	hdr[1] = VIRTIO_NET_HDR_GSO_TCPV4;
	hdr[2] = 54, hdr[4] = 0xA8, hdr[5] = 0x05; /* hdr_len 54, gso_size 1448 */
	hdr[6] = 34, hdr[8] = 16; /* csum_start, csum_offset */
	make_frame(frame, bcast, 3000);
	tx_frame(&r, hdr, 12, frame, 3000);
	CHECK_EQ(read(r.peer, got, sizeof(got)), 3012);
	CHECK(!memcmp(got, hdr, 10));
	/* EVENT_IDX: the device asked to be kicked at the next buffer (avail_event). */
	uint16_t avail_event;
	memory_read(&r.vm.mem, RING(1) + 0x2000 + 4 + 8 * QSIZE, &avail_event, 2);
	CHECK_EQ(avail_event, r.avail_idx[1]);
	struct virtio_net_stats st;
	virtio_net_get_stats(r.net, &st);
	CHECK_EQ(st.tx_packets, 2);
	CHECK_EQ(st.tx_dropped, 0);
	rig_free(&r);
}

static void test_virtio_net_hostile_tx_dropped_and_counted(void)
{
	struct rig r;
	CHECK_EQ(rig_init_fake(&r, "tap"), 0);
	CHECK_EQ(driver_start(&r, 1ull << VIRTIO_NET_F_CSUM), 0x0F); /* no TSO negotiated */
	uint8_t frame[70000], hdr[12] = { 0 }, got[4000];
	make_frame(frame, bcast, sizeof(frame));
	unsigned dropped = 0;
	tx_frame(&r, hdr, 8, NULL, 0); /* chain shorter than the header */
	dropped++;
	tx_frame(&r, hdr, 12, NULL, 0); /* a header and no Ethernet frame */
	dropped++;
	tx_frame(&r, hdr, 12, frame, 1600); /* larger than the MTU without HOST_TSO */
	dropped++;
	tx_frame(&r, hdr, 12, frame, sizeof(frame)); /* larger than any frame */
	dropped++;
	hdr[1] = VIRTIO_NET_HDR_GSO_TCPV4; /* TSO not negotiated */
	hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
	tx_frame(&r, hdr, 12, frame, 100);
	dropped++;
	hdr[1] = 5; /* no such GSO type */
	tx_frame(&r, hdr, 12, frame, 100);
	dropped++;
	hdr[1] = 0;
	hdr[6] = 99, hdr[8] = 1; /* checksum beyond the frame */
	tx_frame(&r, hdr, 12, frame, 100);
	dropped++;
	hdr[0] = 0x80, hdr[6] = hdr[8] = 0; /* unknown flag */
	tx_frame(&r, hdr, 12, frame, 100);
	dropped++;
	/* A transmit chain with a device-writable buffer. */
	hdr[0] = 0;
	memory_write(&r.vm.mem, BUF(1, 0), hdr, 12);
	desc(&r, 1, 0, BUF(1, 0), 12, VIRTQ_DESC_F_NEXT, 1);
	desc(&r, 1, 1, BUF(1, 1), 100, VIRTQ_DESC_F_WRITE, 0);
	offer(&r, 1, 0, true);
	run_until_used(&r, 1, r.avail_idx[1]);
	dropped++;
	CHECK_EQ(used_idx(&r, 1), dropped);
	CHECK_EQ(read(r.peer, got, sizeof(got)), -1); /* nothing reached the host */
	struct virtio_net_stats st;
	virtio_net_get_stats(r.net, &st);
	CHECK_EQ(st.tx_dropped, dropped);
	CHECK(!(mmio_r(&r, r.bar + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET));
	/* And the device still works. */
	tx_frame(&r, hdr, 12, frame, 200);
	CHECK_EQ(read(r.peer, got, sizeof(got)), 212);
	rig_free(&r);
}

/* Offer n receive buffers of `size` bytes (one descriptor each). */
static void rx_offer(struct rig *r, unsigned n, uint32_t size, bool kick)
{
	for (unsigned i = 0; i < n; i++) {
		unsigned d = r->avail_idx[0] % QSIZE;
		desc(r, 0, d, BUF(0, d), size, VIRTQ_DESC_F_WRITE, 0);
		offer(r, 0, (uint16_t)d, kick && i == n - 1);
	}
}

/* The transport's interrupt count for the device (its --stats line). */
static unsigned long long device_interrupts(struct rig *r)
{
	char *text = NULL;
	size_t size = 0;
	unsigned long long n = ~0ull;
	FILE *f = open_memstream(&text, &size);
	virtio_net_format_stats(r->net, f);
	fclose(f);
	const char *at = strstr(text, "interrupts ");
	if (at)
		n = strtoull(at + 11, NULL, 10);
	free(text);
	return n;
}

/* New receive buffers while the TAP has nothing to read: no interrupt (without EVENT_IDX the
 * driver suppresses nothing itself, so an empty pass must not signal); a frame then gets one. */
static void test_virtio_net_rx_interrupt_only_with_frames(void)
{
	struct rig r;
	CHECK_EQ(rig_init_fake(&r, "tap"), 0);
	CHECK_EQ(driver_start(&r, 1ull << VIRTIO_NET_F_MRG_RXBUF), 0x0F);
	unsigned long long before = device_interrupts(&r);
	rx_offer(&r, 4, 2048, true);
	for (int i = 0; i < 5; i++)
		event_loop_run_once(&r.loop, 10);
	CHECK_EQ(used_idx(&r, 0), 0);
	CHECK_EQ(device_interrupts(&r), before);
	uint8_t pkt[12 + 100] = { 0 };
	make_frame(pkt + 12, bcast, 100);
	CHECK_EQ(write(r.peer, pkt, sizeof(pkt)), (ssize_t)sizeof(pkt));
	run_until_used(&r, 0, 1);
	CHECK_EQ(used_idx(&r, 0), 1);
	CHECK_EQ(device_interrupts(&r), before + 1);
	rig_free(&r);
}

static void test_virtio_net_rx_mergeable_buffers(void)
{
	struct rig r;
	CHECK_EQ(rig_init_fake(&r, "tap"), 0);
	CHECK_EQ(driver_start(&r, (1ull << VIRTIO_NET_F_GUEST_CSUM) | (1ull << VIRTIO_NET_F_GUEST_TSO4) |
				      (1ull << VIRTIO_NET_F_MRG_RXBUF)),
		 0x0F);
	rx_offer(&r, QSIZE, 8192, true); /* 128 KiB: room for a 64 KiB frame */
	uint8_t pkt[12 + 20000] = { 0 }, back[20000];
	make_frame(pkt + 12, bcast, 20000);
	CHECK_EQ(write(r.peer, pkt, sizeof(pkt)), (ssize_t)sizeof(pkt));
	run_until_used(&r, 0, 3);
	CHECK_EQ(used_idx(&r, 0), 3); /* 20012 bytes in three 8 KiB buffers */
	uint32_t id, len, total = 0;
	for (unsigned i = 0; i < 3; i++) {
		used_elem(&r, 0, i, &id, &len);
		CHECK_EQ(id, i);
		total += len;
	}
	CHECK_EQ(total, sizeof(pkt));
	uint16_t num_buffers;
	memory_read(&r.vm.mem, BUF(0, 0) + 10, &num_buffers, 2);
	CHECK_EQ(num_buffers, 3);
	memory_read(&r.vm.mem, BUF(0, 0) + 12, back, 8180);
	memory_read(&r.vm.mem, BUF(0, 1), back + 8180, 8192);
	memory_read(&r.vm.mem, BUF(0, 2), back + 8180 + 8192, 20000 - 8180 - 8192);
	CHECK(!memcmp(back, pkt + 12, 20000));
	/* Two more frames in one wake-up: the rest of the held buffers serve them. */
	CHECK_EQ(write(r.peer, pkt, 1000), 1000);
	CHECK_EQ(write(r.peer, pkt, 1000), 1000);
	run_until_used(&r, 0, 5);
	CHECK_EQ(used_idx(&r, 0), 5);
	struct virtio_net_stats st;
	virtio_net_get_stats(r.net, &st);
	CHECK_EQ(st.rx_packets, 3);
	rig_free(&r);
}

/* Fake push backend (as user mode): no fd, no header; frames come through be->receive, and
 * the last frame transmitted is kept. */
struct push_be {
	struct net_backend be; /* first */
	uint8_t last[70000];
	size_t last_len;
	unsigned sent;
};
static ssize_t push_transmit(struct net_backend *be, unsigned q, const struct iovec *iov, unsigned cnt)
{
	struct push_be *p = (struct push_be *)be;
	(void)q;
	if (cnt != 1 || iov[0].iov_len > sizeof(p->last))
		return -EINVAL;
	memcpy(p->last, iov[0].iov_base, iov[0].iov_len);
	p->last_len = iov[0].iov_len;
	p->sent++;
	return (ssize_t)iov[0].iov_len;
}
static void push_destroy(struct net_backend *be) { free(be); }
static const struct net_backend_ops push_ops = { .transmit = push_transmit, .destroy = push_destroy };

/* A push backend with these offloads (NET_OFFLOAD_CSUM or 0) and MTU (0: the default). */
static int rig_init_push_with(struct rig *r, unsigned offloads, unsigned mtu)
{
	rig_base(r);
	struct push_be *p = calloc(1, sizeof(*p));
	struct net_backend *be = &p->be;
	be->ops = &push_ops;
	snprintf(be->name, sizeof(be->name), "push");
	be->nr_queues = 1;
	be->fds[0] = -1;
	be->offloads = offloads;
	be->mtu = mtu;
	return rig_attach(r, "user", be);
}

static int rig_init_push(struct rig *r)
{
	return rig_init_push_with(r, 0, 0);
}

static void test_virtio_net_push_frames_wait_for_buffers_in_order(void)
{
	struct rig r;
	CHECK_EQ(rig_init_push(&r), 0);
	CHECK_EQ(driver_start(&r, 1ull << VIRTIO_NET_F_MRG_RXBUF), 0x0F);
	rx_offer(&r, 2, 2048, true);
	/* Five frames, room for two: three wait (none dropped) and come, in order, when the
	 * driver adds buffers; a frame arriving meanwhile goes behind them. */
	uint8_t f[1000];
	make_frame(f, bcast, sizeof(f));
	for (unsigned i = 0; i < 5; i++) {
		f[20] = (uint8_t)i;
		r.be->receive(r.be->receive_opaque, f, sizeof(f));
	}
	CHECK_EQ(used_idx(&r, 0), 2);
	struct virtio_net_stats st;
	virtio_net_get_stats(r.net, &st);
	CHECK_EQ(st.rx_dropped, 0);
	rx_offer(&r, 2, 2048, true);
	run_until_used(&r, 0, 4);
	CHECK_EQ(used_idx(&r, 0), 4);
	f[20] = 5;
	r.be->receive(r.be->receive_opaque, f, sizeof(f));
	rx_offer(&r, 4, 2048, true);
	run_until_used(&r, 0, 6);
	CHECK_EQ(used_idx(&r, 0), 6);
	for (unsigned i = 0; i < 6; i++) {
		uint32_t id, len;
		uint8_t got;
		used_elem(&r, 0, i, &id, &len);
		CHECK_EQ(len, 12 + sizeof(f));
		memory_read(&r.vm.mem, BUF(0, id) + 12 + 20, &got, 1);
		CHECK_EQ(got, i);
	}
	/* More than the backlog holds while the guest gives no buffers: the excess is dropped. */
	for (unsigned i = 0; i < 300; i++)
		r.be->receive(r.be->receive_opaque, f, sizeof(f));
	virtio_net_get_stats(r.net, &st);
	CHECK_EQ(st.rx_dropped, 300 - 2 - 256); /* the 2 buffers left took two */
	rig_free(&r);
}

static void test_virtio_net_rx_hostile_chains_dropped(void)
{
	struct rig r;
	CHECK_EQ(rig_init_fake(&r, "tap"), 0);
	CHECK_EQ(driver_start(&r, 1ull << VIRTIO_NET_F_MRG_RXBUF), 0x0F);
	/* A readable receive buffer, then one too small for the header, then a good one. */
	desc(&r, 0, 0, BUF(0, 0), 2048, 0, 0);
	offer(&r, 0, 0, false);
	desc(&r, 0, 1, BUF(0, 1), 8, VIRTQ_DESC_F_WRITE, 0);
	offer(&r, 0, 1, false);
	desc(&r, 0, 2, BUF(0, 2), 2048, VIRTQ_DESC_F_WRITE, 0);
	offer(&r, 0, 2, true);
	uint8_t pkt[12 + 100] = { 0 };
	make_frame(pkt + 12, bcast, 100);
	CHECK_EQ(write(r.peer, pkt, sizeof(pkt)), (ssize_t)sizeof(pkt));
	run_until_used(&r, 0, 3);
	CHECK_EQ(used_idx(&r, 0), 3);
	uint32_t id, len;
	used_elem(&r, 0, 0, &id, &len);
	CHECK(id == 0 && len == 0);
	used_elem(&r, 0, 1, &id, &len);
	CHECK(id == 1 && len == 0);
	used_elem(&r, 0, 2, &id, &len);
	CHECK(id == 2 && len == sizeof(pkt));
	/* (A frame larger than the buffers is dropped because a TAP's read returns the frame's
	 * full length, drivers/net/tun.c; a socketpair cannot show that, so no case here.) */
	struct virtio_net_stats st;
	virtio_net_get_stats(r.net, &st);
	CHECK_EQ(st.rx_dropped, 2);
	CHECK_EQ(st.rx_packets, 1);
	CHECK(!(mmio_r(&r, r.bar + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET));
	rig_free(&r);
}

/* Send one control command; returns the ack byte. */
static uint8_t ctrl(struct rig *r, uint8_t class, uint8_t cmd, const void *data, uint32_t len)
{
	uint8_t buf[512] = { class, cmd }, ack = 0xEE;
	if (len)
		memcpy(buf + 2, data, len);
	memory_write(&r->vm.mem, BUF(2, 0), buf, len + 2);
	memory_write(&r->vm.mem, BUF(2, 1), &ack, 1);
	desc(r, 2, 0, BUF(2, 0), len + 2, VIRTQ_DESC_F_NEXT, 1);
	desc(r, 2, 1, BUF(2, 1), 1, VIRTQ_DESC_F_WRITE, 0);
	offer(r, 2, 0, true);
	run_until_used(r, 2, r->avail_idx[2]);
	memory_read(&r->vm.mem, BUF(2, 1), &ack, 1);
	return ack;
}

static void test_virtio_net_control_queue_and_filter(void)
{
	struct rig r;
	CHECK_EQ(rig_init_fake(&r, "tap,mac=52:54:00:00:00:01"), 0);
	CHECK_EQ(driver_start(&r, (1ull << VIRTIO_NET_F_CTRL_VQ) | (1ull << VIRTIO_NET_F_CTRL_RX) |
				      (1ull << VIRTIO_NET_F_CTRL_MAC_ADDR) |
				      (1ull << VIRTIO_NET_F_MRG_RXBUF)),
		 0x0F);
	uint8_t off = 0, on = 1;
	CHECK_EQ(ctrl(&r, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, &off, 1), VIRTIO_NET_OK);
	CHECK_EQ(ctrl(&r, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, &off, 1), VIRTIO_NET_OK);
	CHECK_EQ(ctrl(&r, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_NOBCAST, &on, 1), VIRTIO_NET_ERR);
	const uint8_t on_long[2] = { 1, 0 }; /* one byte more than the command takes */
	CHECK_EQ(ctrl(&r, VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC, on_long, 2),
		 VIRTIO_NET_ERR);
	/* MAC table: one extra unicast address, one multicast. */
	uint8_t table[4 + 6 + 4 + 6] = { 1, 0, 0, 0, 0x52, 0x54, 0, 0, 0, 2, 1, 0, 0, 0,
					  0x01, 0x00, 0x5E, 0, 0, 1 };
	CHECK_EQ(ctrl(&r, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table, sizeof(table)),
		 VIRTIO_NET_OK);
	table[0] = 9; /* claims more entries than it holds */
	CHECK_EQ(ctrl(&r, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET, table, sizeof(table)),
		 VIRTIO_NET_ERR);
	table[0] = 1;
	CHECK_EQ(ctrl(&r, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, "\x01\x00", 2),
		 VIRTIO_NET_ERR); /* MQ not negotiated */
	CHECK_EQ(ctrl(&r, 77, 0, NULL, 0), VIRTIO_NET_ERR);
	CHECK_EQ(ctrl(&r, VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET,
		      "\x52\x54\x00\x00\x00\x07", 6), VIRTIO_NET_OK);
	CHECK_EQ(mmio_r(&r, r.bar + VIRTIO_BAR_DEVICE + 5, 1), 7);
	/* The filter: ours, the table's, broadcast and the listed multicast in; others out. */
	rx_offer(&r, 8, 2048, true);
	static const uint8_t dsts[][6] = {
		{ 0x52, 0x54, 0, 0, 0, 7 }, { 0x52, 0x54, 0, 0, 0, 2 }, { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF },
		{ 0x01, 0x00, 0x5E, 0, 0, 1 }, { 0x52, 0x54, 0, 0, 0, 9 }, { 0x01, 0x00, 0x5E, 0, 0, 9 },
		{ 0x52, 0x54, 0, 0, 0, 1 }, /* the old address: replaced by ADDR_SET */
	};
	uint8_t pkt[12 + 64] = { 0 };
	for (unsigned i = 0; i < sizeof(dsts) / sizeof(dsts[0]); i++) {
		make_frame(pkt + 12, dsts[i], 64);
		CHECK_EQ(write(r.peer, pkt, sizeof(pkt)), (ssize_t)sizeof(pkt));
	}
	for (int i = 0; i < 20; i++)
		event_loop_run_once(&r.loop, 5);
	struct virtio_net_stats st;
	virtio_net_get_stats(r.net, &st);
	CHECK_EQ(st.rx_packets, 4);
	CHECK_EQ(st.rx_filtered, 3);
	CHECK_EQ(st.ctrl_ok, 4);
	CHECK_EQ(st.ctrl_err, 5);
	rig_free(&r);
}

static void test_virtio_net_backend_failure_takes_link_down(void)
{
	struct rig r;
	CHECK_EQ(rig_init_fake(&r, "tap"), 0);
	CHECK_EQ(driver_start(&r, 1ull << VIRTIO_NET_F_STATUS), 0x0F);
	uint8_t gen = (uint8_t)mmio_r(&r, r.bar + VIRTIO_BAR_COMMON + 0x15, 1);
	close(r.peer); /* the "TAP" goes away */
	r.peer = -1;
	uint8_t frame[100], hdr[12] = { 0 };
	make_frame(frame, bcast, 100);
	tx_frame(&r, hdr, 12, frame, 100);
	tx_frame(&r, hdr, 12, frame, 100); /* reported once; later frames dropped */
	CHECK_EQ(mmio_r(&r, r.bar + VIRTIO_BAR_DEVICE + 6, 2), 0); /* link down */
	CHECK(mmio_r(&r, r.bar + VIRTIO_BAR_COMMON + 0x15, 1) != gen);
	CHECK(mmio_r(&r, r.bar + VIRTIO_BAR_ISR, 1) & 2); /* configuration change */
	struct virtio_net_stats st;
	virtio_net_get_stats(r.net, &st);
	CHECK(!st.link_up);
	CHECK_EQ(st.backend_errors, 1);
	CHECK_EQ(st.tx_dropped, 1);
	CHECK(!(mmio_r(&r, r.bar + 0x14, 1) & VIRTIO_STATUS_NEEDS_RESET));
	rig_free(&r);
}

/* ---- A real TAP, in a network namespace of this test's own ---- */

static uint16_t ip_checksum(const uint8_t *p, size_t len)
{
	uint32_t sum = 0;
	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)(p[len - 1] << 8);
	while (sum >> 16)
		sum = (sum & 0xFFFF) + (sum >> 16);
	return (uint16_t)~sum;
}

/* Ethernet + IPv4 + ICMP echo request from 10.99.0.2 (the "guest") to 10.99.0.1 (the host). */
static size_t make_ping(uint8_t *f, const uint8_t *dst_mac, const uint8_t *src_mac)
{
	memset(f, 0, 98);
	memcpy(f, dst_mac, 6);
	memcpy(f + 6, src_mac, 6);
	f[12] = 0x08, f[13] = 0x00;
	uint8_t *ip = f + 14;
	ip[0] = 0x45, ip[3] = 84, ip[8] = 64, ip[9] = 1;
	memcpy(ip + 12, "\x0a\x63\x00\x02\x0a\x63\x00\x01", 8);
	uint16_t c = ip_checksum(ip, 20);
	ip[10] = (uint8_t)(c >> 8), ip[11] = (uint8_t)c;
	uint8_t *icmp = ip + 20;
	icmp[0] = 8, icmp[4] = 0x12, icmp[5] = 0x34, icmp[7] = 1;
	memcpy(icmp + 8, "vmm-virtio-net-ping-test", 24);
	c = ip_checksum(icmp, 64);
	icmp[2] = (uint8_t)(c >> 8), icmp[3] = (uint8_t)c;
	return 98;
}

static void test_virtio_net_real_tap_answers_ping_in_netns(void)
{
	pid_t child = fork();
	if (child == 0) {
		/* In a child: the namespace dies with it and the rest of the tests are untouched. */
		if (unshare(CLONE_NEWNET) < 0) {
			printf("SKIP - test_virtio_net_real_tap_answers_ping_in_netns: unshare(CLONE_NEWNET): %s\n",
			       strerror(errno));
			_exit(0);
		}
		struct rig r;
		rig_base(&r);
		char err[256];
		CHECK_EQ(config_parse_net(&r.vm.cfg.nets[0], "tap=vmmtest0,mac=52:54:00:99:00:02", err,
					  sizeof(err)), 0);
		r.vm.cfg.nr_nets = 1;
		CHECK_EQ(virtio_devices_init(&r.vm), 0);
		r.net = virtio_devices_net(&r.vm, 0);
		r.bar = find_net(&r);
		CHECK(r.net && r.bar);
		if (!r.net || !r.bar)
			_exit(1);
		CHECK_EQ(system("ip link set lo up && ip addr add 10.99.0.1/24 dev vmmtest0 && "
				"ip neigh add 10.99.0.2 lladdr 52:54:00:99:00:02 dev vmmtest0"), 0);
		uint64_t f = device_features(&r) & ((1ull << VIRTIO_NET_F_MRG_RXBUF) |
						    (1ull << VIRTIO_NET_F_CSUM) |
						    (1ull << VIRTIO_NET_F_GUEST_CSUM) |
						    (1ull << VIRTIO_NET_F_HOST_TSO4) |
						    (1ull << VIRTIO_NET_F_GUEST_TSO4) |
						    (1ull << VIRTIO_RING_F_EVENT_IDX));
		CHECK_EQ(driver_start(&r, f), 0x0F);
		rx_offer(&r, QSIZE, 8192, true);
		/* The host's MAC on the TAP, from sysfs of this namespace's view (ioctl). */
		uint8_t host_mac[6] = { 0 };
		FILE *p = popen("cat /sys/class/net/vmmtest0/address 2>/dev/null || ip -br link show vmmtest0 | awk '{print $3}'", "r");
		unsigned m[6];
		if (p && fscanf(p, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) == 6)
			for (unsigned i = 0; i < 6; i++)
				host_mac[i] = (uint8_t)m[i];
		if (p)
			pclose(p);
		uint8_t frame[98], hdr[12] = { 0 };
		make_ping(frame, host_mac, (const uint8_t *)"\x52\x54\x00\x99\x00\x02");
		bool replied = false;
		for (int attempt = 0; attempt < 3 && !replied; attempt++) {
			tx_frame(&r, hdr, 12, frame, sizeof(frame));
			for (int i = 0; i < 100 && !replied; i++) {
				event_loop_run_once(&r.loop, 10);
				uint16_t used = used_idx(&r, 0);
				for (uint16_t u = r.used_seen[0]; u != used; u++) {
					uint32_t id, len;
					uint8_t got[200];
					used_elem(&r, 0, u, &id, &len);
					memory_read(&r.vm.mem, BUF(0, id), got, len < 200 ? len : 200);
					/* An IPv4 ICMP echo reply (type 0) carrying our payload. */
					if (len >= 12 + 98 && got[12 + 12] == 8 && got[12 + 13] == 0 &&
					    got[12 + 23] == 1 && got[12 + 34] == 0 &&
					    !memcmp(got + 12 + 42, "vmm-virtio-net-ping-test", 24))
						replied = true;
				}
				r.used_seen[0] = used;
			}
		}
		CHECK(replied);
		struct virtio_net_stats st;
		virtio_net_get_stats(r.net, &st);
		CHECK(st.tx_packets >= 1 && st.rx_packets >= 1);
		rig_free(&r);
		_exit(test_failed_checks ? 1 : 0);
	}
	int status = 0;
	waitpid(child, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The checksum of data the test sums its own way: 16-bit big-endian words, one at a time. */
static uint16_t naive_csum(const uint8_t *p, size_t len, uint32_t start)
{
	uint32_t sum = start;
	for (size_t i = 0; i < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | (i + 1 < len ? p[i + 1] : 0));
	while (sum >> 16)
		sum = (sum & 0xFFFF) + (sum >> 16);
	return (uint16_t)sum;
}

/* An Ethernet frame with an IPv4 (ip6 false) or IPv6 header and a UDP (or TCP) datagram of
 * `payload` bytes whose checksum is right. Returns the frame's length. */
static size_t make_ip_frame(uint8_t *f, bool ip6, bool tcp, size_t payload)
{
	size_t iph = ip6 ? 40 : 20, l4h = tcp ? 20 : 8, l4_len = l4h + payload;
	memset(f, 0, 14 + iph + l4_len);
	make_frame(f, bcast, 14);
	f[12] = ip6 ? 0x86 : 0x08, f[13] = ip6 ? 0xDD : 0x00;
	uint8_t *ip = f + 14, *l4 = ip + iph;
	uint8_t proto = tcp ? 6 : 17;
	uint32_t pseudo = proto + (uint32_t)l4_len;
	if (ip6) {
		ip[0] = 0x60;
		ip[4] = (uint8_t)(l4_len >> 8), ip[5] = (uint8_t)l4_len;
		ip[6] = proto, ip[7] = 64;
		for (unsigned i = 0; i < 32; i++)
			ip[8 + i] = (uint8_t)(0x20 + i * 3);
		pseudo += naive_csum(ip + 8, 32, 0);
	} else {
		ip[0] = 0x45;
		ip[2] = (uint8_t)((20 + l4_len) >> 8), ip[3] = (uint8_t)(20 + l4_len);
		ip[8] = 64, ip[9] = proto;
		memcpy(ip + 12, "\x0a\x00\x02\x02\x0a\x00\x02\x0f", 8);
		pseudo += naive_csum(ip + 12, 8, 0);
	}
	l4[0] = 0x13, l4[1] = 0x89, l4[2] = 0xC3, l4[3] = 0x51; /* ports */
	if (tcp)
		l4[12] = 0x50, l4[13] = 0x10; /* data offset 5, ACK */
	else
		l4[4] = (uint8_t)(l4_len >> 8), l4[5] = (uint8_t)l4_len;
	for (size_t i = 0; i < payload; i++)
		l4[l4h + i] = (uint8_t)(i * 13 + 5);
	uint16_t c = (uint16_t)~naive_csum(l4, l4_len, pseudo);
	unsigned at = tcp ? 16 : 6;
	l4[at] = (uint8_t)(c >> 8), l4[at + 1] = (uint8_t)c;
	return 14 + iph + l4_len;
}

static void test_net_csum_complete_and_validate(void)
{
	uint8_t f[2000];
	for (unsigned kind = 0; kind < 4; kind++) {
		bool ip6 = kind & 1, tcp = kind & 2;
		for (size_t payload = 0; payload < 6; payload++) { /* odd and even lengths */
			size_t len = make_ip_frame(f, ip6, tcp, payload + 1000);
			CHECK(net_csum_l4_valid(f, len));
			/* Any flipped bit in the datagram or its addresses is caught. */
			f[len - 1] ^= 0x40;
			CHECK(!net_csum_l4_valid(f, len));
			f[len - 1] ^= 0x40;
			f[14 + (ip6 ? 8 : 12)] ^= 1;
			CHECK(!net_csum_l4_valid(f, len));
			f[14 + (ip6 ? 8 : 12)] ^= 1;
			/* Completing from the pseudo-header sum gives back the same checksum. */
			size_t l4 = 14 + (ip6 ? 40 : 20), at = l4 + (tcp ? 16 : 6);
			uint8_t want[2] = { f[at], f[at + 1] };
			uint32_t pseudo =
				(tcp ? 6 : 17) + (uint32_t)(len - l4) +
				(ip6 ? naive_csum(f + 22, 32, 0) : naive_csum(f + 26, 8, 0));
			uint16_t partial = naive_csum(NULL, 0, pseudo);
			f[at] = (uint8_t)(partial >> 8), f[at + 1] = (uint8_t)partial;
			CHECK_EQ(net_csum_complete(f, len, l4, at - l4), 0);
			CHECK(f[at] == want[0] && f[at + 1] == want[1]);
		}
	}
	/* Not validated: truncated or lying lengths, fragments, other protocols, no UDP checksum. */
	size_t len = make_ip_frame(f, false, false, 100);
	CHECK(!net_csum_l4_valid(f, len - 1)); /* IP total length beyond the frame */
	CHECK(!net_csum_l4_valid(f, 20));
	f[20] = 0x20; /* more fragments */
	CHECK(!net_csum_l4_valid(f, len));
	f[20] = 0;
	f[23] = 1; /* ICMP */
	CHECK(!net_csum_l4_valid(f, len));
	f[23] = 17;
	f[14] = 0x4F; /* header length 60 */
	CHECK(!net_csum_l4_valid(f, len));
	f[14] = 0x45;
	f[40] = f[41] = 0; /* UDP without a checksum */
	CHECK(!net_csum_l4_valid(f, len));
	len = make_ip_frame(f, true, true, 10);
	f[18] = 0xFF; /* IPv6 payload length beyond the frame */
	CHECK(!net_csum_l4_valid(f, len));
	CHECK(!net_csum_l4_valid(f, 13));
	/* Completing outside the frame is refused. */
	CHECK_EQ(net_csum_complete(f, 100, 99, 0), -1);
	CHECK_EQ(net_csum_complete(f, 100, 98, 1), -1);
	CHECK_EQ(net_csum_complete(f, 100, 200, 0), -1);
	CHECK_EQ(net_csum_complete(f, 100, 98, 0), 0);
}

static void test_virtio_net_push_backend_checksum_offload_and_mtu(void)
{
	struct rig r;
	CHECK_EQ(rig_init_push_with(&r, NET_OFFLOAD_CSUM, 65520), 0);
	struct push_be *pb = (struct push_be *)r.be;
	uint64_t f = device_features(&r);
	CHECK(f & (1ull << VIRTIO_NET_F_CSUM));
	CHECK(f & (1ull << VIRTIO_NET_F_GUEST_CSUM));
	CHECK(!(f & (1ull << VIRTIO_NET_F_HOST_TSO4))); /* no segmentation without a TAP */
	CHECK(!(f & (1ull << VIRTIO_NET_F_GUEST_TSO4)));
	CHECK_EQ(mmio_r(&r, r.bar + VIRTIO_BAR_DEVICE + 10, 2), 65520);
	CHECK_EQ(driver_start(&r, (1ull << VIRTIO_NET_F_CSUM) | (1ull << VIRTIO_NET_F_GUEST_CSUM) |
					  (1ull << VIRTIO_NET_F_MRG_RXBUF)),
		 0x0F);
	/* Transmit: the partial checksum left to the device is completed before the backend. */
	static uint8_t frame[65600];
	uint8_t hdr[12] = { VIRTIO_NET_HDR_F_NEEDS_CSUM };
	size_t len = make_ip_frame(frame, false, true, 60000); /* fits the MTU, not 1500 */
	uint8_t want[2] = { frame[50], frame[51] };
	uint32_t pseudo = 6 + (uint32_t)(len - 34) + naive_csum(frame + 26, 8, 0);
	uint16_t partial = naive_csum(NULL, 0, pseudo);
	frame[50] = (uint8_t)(partial >> 8), frame[51] = (uint8_t)partial;
	hdr[6] = 34, hdr[8] = 16; /* csum_start: the TCP header; csum_offset: its checksum */
	tx_frame(&r, hdr, 12, frame, len);
	CHECK_EQ(pb->sent, 1);
	CHECK_EQ(pb->last_len, len);
	CHECK(pb->last[50] == want[0] && pb->last[51] == want[1]);
	CHECK(net_csum_l4_valid(pb->last, pb->last_len));
	/* Larger than the MTU: dropped. */
	tx_frame(&r, (uint8_t[12]){ 0 }, 12, frame, 65520 + 14 + 4 + 1);
	CHECK_EQ(pb->sent, 1);
	/* Receive: DATA_VALID only on frames whose checksum the device checked. */
	rx_offer(&r, 3, 2048, true);
	len = make_ip_frame(frame, true, false, 500);
	r.be->receive(r.be->receive_opaque, frame, len);
	frame[len - 1] ^= 1; /* wrong checksum */
	r.be->receive(r.be->receive_opaque, frame, len);
	make_frame(frame, bcast, 300); /* not IP */
	r.be->receive(r.be->receive_opaque, frame, 300);
	CHECK_EQ(used_idx(&r, 0), 3);
	uint8_t flags[3];
	for (unsigned i = 0; i < 3; i++) {
		uint32_t id, l;
		used_elem(&r, 0, i, &id, &l);
		memory_read(&r.vm.mem, BUF(0, id), &flags[i], 1);
	}
	CHECK_EQ(flags[0], VIRTIO_NET_HDR_F_DATA_VALID);
	CHECK_EQ(flags[1], 0);
	CHECK_EQ(flags[2], 0);
	struct virtio_net_stats st;
	virtio_net_get_stats(r.net, &st);
	CHECK_EQ(st.tx_csum_done, 1);
	CHECK_EQ(st.rx_csum_valid, 1);
	CHECK_EQ(st.tx_dropped, 1);
	/* A driver that did not take GUEST_CSUM never sees DATA_VALID. */
	CHECK_EQ(driver_start(&r, 1ull << VIRTIO_NET_F_MRG_RXBUF), 0x0F);
	rx_offer(&r, 1, 2048, true);
	len = make_ip_frame(frame, false, false, 100);
	r.be->receive(r.be->receive_opaque, frame, len);
	CHECK_EQ(used_idx(&r, 0), 1);
	memory_read(&r.vm.mem, BUF(0, 0), &flags[0], 1);
	CHECK_EQ(flags[0], 0);
	rig_free(&r);
	/* Without the offload (and MTU) the backend gets neither. */
	CHECK_EQ(rig_init_push(&r), 0);
	f = device_features(&r);
	CHECK(!(f & (1ull << VIRTIO_NET_F_CSUM)) && !(f & (1ull << VIRTIO_NET_F_GUEST_CSUM)));
	CHECK_EQ(mmio_r(&r, r.bar + VIRTIO_BAR_DEVICE + 10, 2), 1500);
	rig_free(&r);
}

static void test_net_user_mtu_option(void)
{
	struct net_config nc;
	char err[256];
	CHECK_EQ(config_parse_net(&nc, "user", err, sizeof(err)), 0);
	CHECK_EQ(nc.mtu, CONFIG_NET_USER_MTU);
	CHECK_EQ(config_parse_net(&nc, "user,mtu=1500,hostfwd=tcp::2222-:22", err, sizeof(err)), 0);
	CHECK_EQ(nc.mtu, 1500);
	CHECK_EQ(config_parse_net(&nc, "user,mtu=68", err, sizeof(err)), 0);
	CHECK_EQ(nc.mtu, 68);
	const char *bad[] = { "user,mtu=67",  "user,mtu=65521",	   "user,mtu=",
			      "user,mtu=15x", "user,mtu=99999999", "tap,mtu=1500" };
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		CHECK_EQ(config_parse_net(&nc, bad[i], err, sizeof(err)), -1);
		CHECK(strstr(err, "mtu") != NULL);
	}
}

int main(void)
{
	RUN_TEST(test_virtio_net_config_and_features);
	RUN_TEST(test_virtio_net_default_mac_and_tap_name_follow_the_vm_name);
	RUN_TEST(test_virtio_net_tx_reaches_backend_zero_copy);
	RUN_TEST(test_virtio_net_hostile_tx_dropped_and_counted);
	RUN_TEST(test_virtio_net_rx_mergeable_buffers);
	RUN_TEST(test_virtio_net_rx_interrupt_only_with_frames);
	RUN_TEST(test_virtio_net_push_frames_wait_for_buffers_in_order);
	RUN_TEST(test_net_csum_complete_and_validate);
	RUN_TEST(test_virtio_net_push_backend_checksum_offload_and_mtu);
	RUN_TEST(test_net_user_mtu_option);
	RUN_TEST(test_virtio_net_rx_hostile_chains_dropped);
	RUN_TEST(test_virtio_net_control_queue_and_filter);
	RUN_TEST(test_virtio_net_backend_failure_takes_link_down);
	if (getuid() != 0 || access("/dev/net/tun", R_OK | W_OK) != 0)
		printf("SKIP - test_virtio_net_real_tap_answers_ping_in_netns: needs root and /dev/net/tun\n");
	else
		RUN_TEST(test_virtio_net_real_tap_answers_ping_in_netns);
	return TEST_EXIT();
}
