/*
 * The network bench (selftest.net=1; bench/net-kvm runs it): the same guest binary measures
 * any monitor's virtio-net data path with next to no guest work per frame (netdev.c). Against
 * bench/netpeer.c, a UDP program on the host side of the TAP or behind user-mode networking:
 *
 *   ping  ICMP echo requests to the peer address (the host kernel, or libslirp itself for
 *         10.0.2.2), one at a time, round trip on the guest's clock
 *   echo  UDP datagrams the peer program sends back, one at a time
 *   tx    MTU-size UDP datagrams (1472 bytes of payload, 1514-byte frames) sent back to back;
 *         the peer counts what arrives and when (its clock), the guest asks for the count
 *   rx    the guest asks the peer for a burst of MTU-size datagrams and counts what arrives
 *
 * The clock is the TSC, calibrated against the ACPI PM timer that both vmm and QEMU provide.
 * Results are "netbench: WHAT key=value ..." lines, checks are "selftest: ok - netbench-WHAT".
 */
#include "check.h"
#include "console.h"
#include "lib.h"
#include "netdev.h"
#include "ring3.h"
#include "timer.h"

#define ETH_ARP 0x0806
#define ETH_IP 0x0800
#define IP_ICMP 1
#define IP_UDP 17
#define ETH_HLEN 14
#define IP_HLEN 20
#define UDP_HLEN 8
#define HEADERS (ETH_HLEN + IP_HLEN + UDP_HLEN)
#define UDP_PAYLOAD_MAX (NETDEV_FRAME_MAX - HEADERS) /* 1472 */
#define GUEST_PORT 40000
#define DEFAULT_PORT 7777
#define DEFAULT_FRAMES 20000
#define DEFAULT_ROUNDS 200
#define MAX_ROUNDS 10000
#define REPLY_MS 1000 /* a lost request or reply costs this much */
#define RX_IDLE_MS 300 /* a burst is over when nothing arrived for this long */
#define CALIBRATE_PM_TICKS (PM_TIMER_HZ / 20) /* 50 ms */

/* The bench protocol's payload (bench/netpeer.c has the same): little-endian fields. */
#define PROTO_MAGIC 0x31424E56u /* "VNB1" */
enum proto_op {
	OP_ECHO = 'e',
	OP_RESET = 'r',
	OP_DATA = 'd',
	OP_QUERY = 'q',
	OP_BURST = 'b'
};
struct proto {
	uint32_t magic;
	uint8_t op, pad[3];
	uint32_t seq, count;
	uint64_t v0, v1, v2; /* query answer: frames, payload bytes, ns from first to last */
} __attribute__((packed));

struct bench {
	struct netdev nd;
	uint32_t ip, peer; /* network byte order */
	uint16_t port;
	uint8_t peer_mac[6];
	bool peer_known;
	uint64_t tsc_khz;
	/* What the receive handler is waiting for. */
	uint8_t want_op; /* OP_* or IP_ICMP */
	uint32_t want_seq;
	bool got;
	uint32_t stray; /* answers that were not the awaited one (late, duplicated) */
	uint64_t got_tsc;
	struct proto answer;
	/* rx phase */
	uint64_t rx_frames, rx_first, rx_last;
	uint16_t ip_id;
};

/* What the CPL 3 part has to say, printed once back at CPL 0 (no port I/O at CPL 3): lines
 * tagged 'N' (a netbench line), 'O' (check NAME passed), 'F' (NAME: detail failed). */
static char report[4096];
static unsigned report_len;

static void report_add(char tag, const char *fmt, va_list ap)
{
	if (report_len + 2 >= sizeof(report))
		return;
	report[report_len++] = tag;
	report_len +=
		(unsigned)vformat(report + report_len, sizeof(report) - report_len - 1, fmt, ap);
	if (report_len > sizeof(report) - 2)
		report_len = sizeof(report) - 2;
	report[report_len++] = '\n';
	report[report_len] = 0;
}

static void __attribute__((format(printf, 1, 2))) out(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	report_add('N', fmt, ap);
	va_end(ap);
}

static void __attribute__((format(printf, 1, 2))) passed(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	report_add('O', fmt, ap);
	va_end(ap);
}

/* "NAME\tdetail" */
static void __attribute__((format(printf, 1, 2))) failed(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	report_add('F', fmt, ap);
	va_end(ap);
}

/* At CPL 0: the report as netbench lines and check results. */
static void report_print(void)
{
	char *line = report;

	while (*line) {
		char *end = line;
		while (*end && *end != '\n')
			end++;
		char tag = *line;
		*end = 0;
		if (tag == 'N') {
			console_printf("netbench: %s\n", line + 1);
		} else if (tag == 'O') {
			check_ok(line + 1);
		} else {
			char *tab = line + 1;
			while (*tab && *tab != '\t')
				tab++;
			if (*tab)
				*tab++ = 0;
			check_fail(line + 1, "%s", tab);
		}
		line = end + 1;
	}
	report_len = 0;
	report[0] = 0;
}

static struct virtio_dev devs[VIRTIO_MAX_DEVICES];
static uint64_t samples[MAX_ROUNDS];
static uint8_t bulk[NETDEV_HDR + NETDEV_FRAME_MAX] __attribute__((aligned(64)));
static struct bench bench;

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

/* TSC ticks per millisecond, measured over 50 ms of the PM timer. */
static uint64_t tsc_calibrate(void)
{
	uint32_t start = pmtimer_read(), mask = pmtimer_mask();
	uint64_t t0 = rdtsc();
	uint32_t elapsed;

	do
		elapsed = (pmtimer_read() - start) & mask;
	while (elapsed < CALIBRATE_PM_TICKS);
	uint64_t t1 = rdtsc();
	return (t1 - t0) * PM_TIMER_HZ / elapsed / 1000;
}

static uint64_t ticks_to_ns(const struct bench *b, uint64_t ticks)
{
	return ticks * 1000000 / b->tsc_khz;
}

static void put16be(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}
static uint16_t get16be(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* RFC 1071 checksum. */
static uint16_t checksum(const uint8_t *p, unsigned len)
{
	uint32_t sum = 0;

	for (unsigned i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xFFFF) + (sum >> 16);
	return (uint16_t)~sum;
}

static void eth_header(const struct bench *b, uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, b->nd.mac, 6);
	put16be(f + 12, type);
}

/* IPv4 header at f + ETH_HLEN for `payload` bytes after it. */
static void ip_header(struct bench *b, uint8_t *f, uint8_t proto, unsigned payload)
{
	uint8_t *ip = f + ETH_HLEN;

	ip[0] = 0x45;
	ip[1] = 0;
	put16be(ip + 2, (uint16_t)(IP_HLEN + payload));
	put16be(ip + 4, b->ip_id++);
	put16be(ip + 6, 0x4000); /* don't fragment */
	ip[8] = 64;
	ip[9] = proto;
	put16be(ip + 10, 0);
	memcpy(ip + 12, &b->ip, 4);
	memcpy(ip + 16, &b->peer, 4);
	put16be(ip + 10, checksum(ip, IP_HLEN));
}

/* A UDP datagram to the peer program carrying `p` padded to `size` bytes; the frame's length. */
static unsigned udp_frame(struct bench *b, uint8_t *f, const struct proto *p, unsigned size)
{
	uint8_t *udp = f + ETH_HLEN + IP_HLEN;

	eth_header(b, f, b->peer_mac, ETH_IP);
	ip_header(b, f, IP_UDP, UDP_HLEN + size);
	put16be(udp, GUEST_PORT);
	put16be(udp + 2, b->port);
	put16be(udp + 4, (uint16_t)(UDP_HLEN + size));
	put16be(udp + 6, 0); /* no checksum (IPv4 allows it) */
	memset(udp + UDP_HLEN, 0, size);
	memcpy(udp + UDP_HLEN, p, sizeof(*p));
	return HEADERS + size;
}

/* Waits (polling the device) for room in the transmit ring; false after REPLY_MS. */
static uint8_t *tx_buffer(struct bench *b)
{
	uint64_t deadline = rdtsc() + REPLY_MS * b->tsc_khz;
	uint8_t *buf;

	while (!(buf = netdev_tx_small(&b->nd)) && rdtsc() < deadline)
		cpu_relax();
	return buf;
}

static bool send_proto(struct bench *b, const struct proto *p)
{
	uint8_t *buf = tx_buffer(b);

	if (!buf)
		return false;
	netdev_tx_commit_small(&b->nd, udp_frame(b, buf + NETDEV_HDR, p, sizeof(*p)));
	netdev_tx_flush(&b->nd);
	return true;
}

static void send_arp(struct bench *b, uint16_t op, const uint8_t *to_mac, uint32_t to_ip)
{
	static const uint8_t broadcast[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
	uint8_t *buf = tx_buffer(b);

	if (!buf)
		return;
	uint8_t *f = buf + NETDEV_HDR, *a = f + ETH_HLEN;
	eth_header(b, f, op == 1 ? broadcast : to_mac, ETH_ARP);
	put16be(a, 1); /* Ethernet */
	put16be(a + 2, ETH_IP);
	a[4] = 6;
	a[5] = 4;
	put16be(a + 6, op);
	memcpy(a + 8, b->nd.mac, 6);
	memcpy(a + 14, &b->ip, 4);
	if (op == 1)
		memset(a + 18, 0, 6);
	else
		memcpy(a + 18, to_mac, 6);
	memcpy(a + 24, &to_ip, 4);
	netdev_tx_commit_small(&b->nd, 60); /* the minimum Ethernet frame, padding included */
	netdev_tx_flush(&b->nd);
}

static void on_arp(struct bench *b, const uint8_t *a, unsigned len)
{
	uint32_t sender, target;

	if (len < 28 || get16be(a) != 1 || get16be(a + 2) != ETH_IP)
		return;
	memcpy(&sender, a + 14, 4);
	memcpy(&target, a + 24, 4);
	if (get16be(a + 6) == 1 && target == b->ip)
		send_arp(b, 2, a + 8, sender);
	if (sender == b->peer) {
		memcpy(b->peer_mac, a + 8, 6);
		b->peer_known = true;
	}
}

static void on_udp(struct bench *b, const uint8_t *udp, unsigned len)
{
	struct proto p;

	if (len < UDP_HLEN + sizeof(p) || get16be(udp + 2) != GUEST_PORT)
		return;
	memcpy(&p, udp + UDP_HLEN, sizeof(p));
	if (p.magic != PROTO_MAGIC)
		return;
	if (p.op == OP_DATA) {
		b->rx_last = rdtsc();
		if (b->rx_frames++ == 0)
			b->rx_first = b->rx_last;
		return;
	}
	if (p.op == b->want_op && p.seq == b->want_seq && !b->got) {
		b->got_tsc = rdtsc();
		b->answer = p;
		b->got = true;
	} else {
		b->stray++;
	}
}

static void on_icmp(struct bench *b, const uint8_t *icmp, unsigned len)
{
	/* An echo reply (type 0) with our identifier and the sequence number we wait for. */
	if (len < 8 || icmp[0] != 0)
		return;
	if (b->want_op == IP_ICMP && !b->got && get16be(icmp + 4) == 0x564D &&
	    get16be(icmp + 6) == (uint16_t)b->want_seq) {
		b->got_tsc = rdtsc();
		b->got = true;
	} else {
		b->stray++;
	}
}

static void on_frame(const uint8_t *f, unsigned len, void *arg)
{
	struct bench *b = arg;

	if (len < ETH_HLEN)
		return;
	uint16_t type = get16be(f + 12);
	const uint8_t *ip = f + ETH_HLEN;
	len -= ETH_HLEN;
	if (type == ETH_ARP) {
		on_arp(b, ip, len);
		return;
	}
	if (type != ETH_IP || len < IP_HLEN || (ip[0] >> 4) != 4 || memcmp(ip + 16, &b->ip, 4))
		return;
	unsigned ihl = (ip[0] & 15) * 4u, total = get16be(ip + 2);
	if (ihl < IP_HLEN || total > len || total < ihl)
		return;
	if (ip[9] == IP_UDP)
		on_udp(b, ip + ihl, total - ihl);
	else if (ip[9] == IP_ICMP)
		on_icmp(b, ip + ihl, total - ihl);
}

/* Polls until the awaited answer arrived; false after REPLY_MS. */
static bool wait_answer(struct bench *b)
{
	uint64_t deadline = rdtsc() + REPLY_MS * b->tsc_khz;

	while (!b->got) {
		if (!netdev_poll(&b->nd, on_frame, b)) {
			if (rdtsc() > deadline)
				return false;
			cpu_relax();
		}
	}
	return true;
}

static void expect(struct bench *b, uint8_t op, uint32_t seq)
{
	b->want_op = op;
	b->want_seq = seq;
	b->got = false;
}

/* A request the peer answers with the same op and seq; three tries. */
static bool request(struct bench *b, struct proto *p)
{
	static uint32_t seq;

	p->magic = PROTO_MAGIC;
	for (unsigned attempt = 0; attempt < 3; attempt++) {
		p->seq = ++seq;
		expect(b, p->op, p->seq);
		if (send_proto(b, p) && wait_answer(b))
			return true;
	}
	return false;
}

static bool resolve_peer(struct bench *b)
{
	for (unsigned attempt = 0; attempt < 5 && !b->peer_known; attempt++) {
		uint64_t deadline = rdtsc() + REPLY_MS * b->tsc_khz;

		send_arp(b, 1, 0, b->peer);
		while (!b->peer_known && rdtsc() < deadline)
			if (!netdev_poll(&b->nd, on_frame, b))
				cpu_relax();
	}
	return b->peer_known;
}

static void sort(uint64_t *v, unsigned n)
{
	for (unsigned gap = n / 2; gap; gap /= 2) /* Shell sort: n is at most MAX_ROUNDS */
		for (unsigned i = gap; i < n; i++)
			for (unsigned j = i; j >= gap && v[j - gap] > v[j]; j -= gap) {
				uint64_t t = v[j];
				v[j] = v[j - gap];
				v[j - gap] = t;
			}
}

/* Round trips: ICMP echo (icmp) or the peer's UDP echo. */
static void bench_rtt(struct bench *b, const struct selftest *t, bool icmp)
{
	const char *name = icmp ? "netbench-ping" : "netbench-echo";
	unsigned rounds = t->args.net_rounds ? t->args.net_rounds : DEFAULT_ROUNDS, n = 0, lost = 0;
	b->stray = 0;

	if (rounds > MAX_ROUNDS)
		rounds = MAX_ROUNDS;
	for (unsigned i = 0; i < rounds + 5; i++) { /* 5 rounds to warm up, not counted */
		uint8_t *buf = tx_buffer(b);
		uint64_t start;

		if (!buf)
			break;
		uint8_t *f = buf + NETDEV_HDR;
		unsigned len;
		if (icmp) {
			uint8_t *m = f + ETH_HLEN + IP_HLEN;
			eth_header(b, f, b->peer_mac, ETH_IP);
			ip_header(b, f, IP_ICMP, 8 + 32);
			memset(m, 0, 8 + 32);
			m[0] = 8; /* echo request */
			put16be(m + 4, 0x564D);
			put16be(m + 6, (uint16_t)i);
			put16be(m + 2, checksum(m, 8 + 32));
			len = HEADERS - UDP_HLEN + 8 + 32;
			expect(b, IP_ICMP, (uint16_t)i);
		} else {
			struct proto p = { .magic = PROTO_MAGIC,
					   .op = OP_ECHO,
					   .seq = 0x10000 + i };
			len = udp_frame(b, f, &p, sizeof(p));
			expect(b, OP_ECHO, p.seq);
		}
		start = rdtsc();
		netdev_tx_commit_small(&b->nd, len);
		netdev_tx_flush(&b->nd);
		if (!wait_answer(b))
			lost++;
		else if (i >= 5)
			samples[n++] = b->got_tsc - start;
	}
	if (n == 0) {
		failed("%s\tno answers from %u requests", name, rounds + 5);
		return;
	}
	sort(samples, n);
	out("%s rounds=%u lost=%u stray=%u median_ns=%lu min_ns=%lu p90_ns=%lu",
	    icmp ? "ping" : "echo", n, lost, b->stray, ticks_to_ns(b, samples[n / 2]),
	    ticks_to_ns(b, samples[0]), ticks_to_ns(b, samples[n * 9 / 10]));
	passed("%s", name);
}

static void print_rate(const char *what, uint64_t frames, uint64_t bytes, uint64_t ns,
		       const char *extra)
{
	uint64_t us = ns / 1000 ? ns / 1000 : 1;

	out("%s frames=%lu bytes=%lu us=%lu fps=%lu mbps=%lu.%lu%s", what, frames, bytes, us,
	    frames * 1000000 / us, bytes / us, bytes * 10 / us % 10, extra);
}

/* Guest → host: frames back to back from one prepared frame, the peer counts them. */
static void bench_tx(struct bench *b, unsigned frames)
{
	struct proto p = { .op = OP_RESET };
	char extra[80];

	if (!request(b, &p)) {
		failed("netbench-tx\tthe peer did not answer a reset");
		return;
	}
	struct proto d = { .magic = PROTO_MAGIC, .op = OP_DATA };
	unsigned total = NETDEV_HDR + udp_frame(b, bulk + NETDEV_HDR, &d, UDP_PAYLOAD_MAX);
	uint64_t start = rdtsc(), kicks = b->nd.tx.kicks;
	unsigned queued = 0;
	while (queued < frames) {
		unsigned n = netdev_tx_bulk(&b->nd, bulk, total, frames - queued);
		queued += n;
		if (n)
			netdev_tx_flush(&b->nd);
		else
			cpu_relax();
		netdev_poll(&b->nd, on_frame, b); /* ARP requests from the host, if any */
	}
	uint64_t deadline = rdtsc() + REPLY_MS * b->tsc_khz;
	while (netdev_tx_pending(&b->nd) && rdtsc() < deadline)
		cpu_relax();
	uint64_t sent_ns = ticks_to_ns(b, rdtsc() - start);
	/* Let the host side drain its socket, then ask what arrived. */
	for (deadline = rdtsc() + 100 * b->tsc_khz; rdtsc() < deadline;)
		netdev_poll(&b->nd, on_frame, b);
	format(extra, sizeof(extra), " kicks=%lu", b->nd.tx.kicks - kicks);
	print_rate("tx-guest", frames, (uint64_t)frames * UDP_PAYLOAD_MAX, sent_ns, extra);
	p = (struct proto){ .op = OP_QUERY };
	if (!request(b, &p)) {
		failed("netbench-tx\tthe peer did not answer the query");
		return;
	}
	format(extra, sizeof(extra), " lost=%lu",
	       frames - (b->answer.v0 < frames ? b->answer.v0 : frames));
	print_rate("tx", b->answer.v0, b->answer.v1, b->answer.v2, extra);
	if (b->answer.v0 == 0)
		failed("netbench-tx\tthe peer received nothing");
	else
		passed("netbench-tx");
}

/* Host → guest: ask for a burst, count what arrives until RX_IDLE_MS without any. */
static void bench_rx(struct bench *b, unsigned frames)
{
	struct proto p = { .op = OP_BURST, .count = frames, .v0 = UDP_PAYLOAD_MAX };
	char extra[40];

	b->rx_frames = 0;
	if (!request(b, &p)) { /* the peer acknowledges, then sends */
		failed("netbench-rx\tthe peer did not answer the burst request");
		return;
	}
	uint64_t idle = RX_IDLE_MS * b->tsc_khz, last_seen = rdtsc();
	while (b->rx_frames < frames && rdtsc() - last_seen < idle) {
		uint64_t before = b->rx_frames;
		netdev_poll(&b->nd, on_frame, b);
		if (b->rx_frames != before)
			last_seen = b->rx_last;
		else
			cpu_relax();
	}
	if (b->rx_frames < 2) {
		failed("netbench-rx\t%lu frames arrived of %u", b->rx_frames, frames);
		return;
	}
	/* From the first frame to the last: frames - 1 intervals. */
	format(extra, sizeof(extra), " lost=%lu",
	       frames - (b->rx_frames < frames ? b->rx_frames : frames));
	print_rate("rx", b->rx_frames - 1, (b->rx_frames - 1) * UDP_PAYLOAD_MAX,
		   ticks_to_ns(b, b->rx_last - b->rx_first), extra);
	passed("netbench-rx");
}

static struct virtio_dev *find_net(struct selftest *t)
{
	char err[120];
	unsigned n =
		virtio_find(&t->acpi, t->bsp_apic_id, devs, VIRTIO_MAX_DEVICES, err, sizeof(err));

	for (unsigned i = 0; i < n; i++)
		if (devs[i].type == VIRTIO_ID_NET)
			return &devs[i];
	check_fail("netbench-init", "no virtio-net device%s%s", err[0] ? ": " : "", err);
	return 0;
}

/* The measurements, at CPL 3. */
static void bench_run(void *arg)
{
	const struct selftest *t = arg;
	struct bench *b = &bench;

	if (!resolve_peer(b)) {
		failed("netbench-arp\tno ARP reply from the peer");
		return;
	}
	passed("netbench-arp");
	unsigned frames = t->args.net_frames ? t->args.net_frames : DEFAULT_FRAMES;
	bench_rtt(b, t, true);
	bench_rtt(b, t, false);
	bench_tx(b, frames);
	bench_rx(b, frames);
	out("kicks rx=%lu tx=%lu", b->nd.rx.kicks, b->nd.tx.kicks);
}

void check_netbench(struct selftest *t)
{
	struct bench *b = &bench;
	char err[120];

	if (!t->args.net)
		return;
	if (!t->args.net_ip || !t->args.net_peer || !pmtimer_present()) {
		check_fail("netbench-init",
			   "needs selftest.net_ip=, selftest.net_peer= and a PM timer");
		return;
	}
	struct virtio_dev *d = find_net(t);
	if (!d)
		return;
	memset(b, 0, sizeof(*b));
	b->ip = t->args.net_ip;
	b->peer = t->args.net_peer;
	b->port = (uint16_t)(t->args.net_port ? t->args.net_port : DEFAULT_PORT);
	b->tsc_khz = tsc_calibrate();
	if (!netdev_start(&b->nd, d, err, sizeof(err))) {
		check_fail("netbench-init", "%s", err);
		return;
	}
	console_printf("netbench: clock tsc_khz=%lu (calibrated against the ACPI PM timer), loops "
		       "at CPL %u\n",
		       b->tsc_khz, t->args.net_cpl0 ? 0 : 3);
	check_ok("netbench-init");
	if (t->args.net_cpl0) {
		bench_run(t);
	} else {
		ring3_setup();
		ring3_run(bench_run, t);
	}
	report_print();
}
