/* bench/netpeer PORT [SECONDS]: the host side of the self-test guest's network bench
 * (guest/selftest/netbench.c, run by bench/net-kvm). One UDP socket on 0.0.0.0:PORT answering
 * the guest's requests:
 *   'e' echo        the datagram goes back as it is
 *   'r' reset       zero the sink's counters, answer
 *   'd' data        counted: frames, payload bytes, time of the first and the last
 *   'q' query       answer with frames, bytes and nanoseconds from the first to the last
 *   'b' burst       answer, then send COUNT datagrams of V0 bytes to the requester back to back
 * Exits after SECONDS (default 600) so a lost guest never leaves it behind; one summary line
 * per burst on stdout. */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PROTO_MAGIC 0x31424E56u /* "VNB1" */
#define MAX_DATAGRAM 65536

struct proto {
	uint32_t magic;
	uint8_t op, pad[3];
	uint32_t seq, count;
	uint64_t v0, v1, v2;
} __attribute__((packed));

struct sink {
	uint64_t frames, bytes, first_ns, last_ns;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + (uint64_t)ts.tv_nsec;
}

static void burst(int s, const struct proto *req, const struct sockaddr_in *to)
{
	static uint8_t data[MAX_DATAGRAM];
	size_t size = req->v0 > 1472 ? 1472 : (size_t)req->v0; /* one MTU-size datagram at most */
	if (size < sizeof(struct proto))
		size = sizeof(struct proto);
	struct proto d = { .magic = PROTO_MAGIC, .op = 'd' };
	uint64_t sent = 0, refused = 0, start = now_ns();
	for (uint32_t i = 0; i < req->count; i++) {
		d.seq = i;
		memcpy(data, &d, sizeof(d));
		if (sendto(s, data, size, 0, (const struct sockaddr *)to, sizeof(*to)) < 0)
			refused++; /* ENOBUFS and the like: the host's queue is full, like a drop */
		else
			sent++;
	}
	printf("netpeer: burst of %u x %zu bytes: %llu sent, %llu refused, %.1f ms\n", req->count,
	       size, (unsigned long long)sent, (unsigned long long)refused,
	       (double)(now_ns() - start) / 1e6);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: netpeer PORT [SECONDS]\n");
		return 2;
	}
	int port = atoi(argv[1]), seconds = argc > 2 ? atoi(argv[2]) : 600;
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	int big = 8 << 20;
	struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (s < 0 || bind(s, (struct sockaddr *)&me, sizeof(me)) < 0) {
		perror("netpeer: socket");
		return 1;
	}
	/* A deep receive queue, so the sink's own scheduling loses nothing (root: FORCE). */
	if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) < 0)
		setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	struct timeval tv = { .tv_sec = 1 };
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	static uint8_t buf[MAX_DATAGRAM];
	struct sink sink = { 0 };
	uint64_t end = now_ns() + (uint64_t)seconds * 1000000000;
	while (now_ns() < end) {
		struct sockaddr_in from;
		socklen_t from_len = sizeof(from);
		ssize_t n = recvfrom(s, buf, sizeof(buf), 0, (struct sockaddr *)&from, &from_len);
		struct proto p;
		if (n < (ssize_t)sizeof(p))
			continue;
		memcpy(&p, buf, sizeof(p));
		if (p.magic != PROTO_MAGIC)
			continue;
		switch (p.op) {
		case 'd':
			sink.last_ns = now_ns();
			if (sink.frames++ == 0)
				sink.first_ns = sink.last_ns;
			sink.bytes += (uint64_t)n;
			continue;
		case 'e':
			sendto(s, buf, (size_t)n, 0, (struct sockaddr *)&from, from_len);
			continue;
		case 'r':
			sink = (struct sink){ 0 };
			break;
		case 'q':
			p.v0 = sink.frames;
			p.v1 = sink.bytes;
			/* frames - 1 intervals between the first and the last, scaled to all frames so
			 * the rate is frames / time like the guest's figures */
			p.v2 = sink.frames > 1 ? (sink.last_ns - sink.first_ns) * sink.frames /
							 (sink.frames - 1)
					       : 0;
			break;
		case 'b':
			break;
		default:
			continue;
		}
		sendto(s, &p, sizeof(p), 0, (struct sockaddr *)&from, from_len);
		if (p.op == 'b')
			burst(s, &p, &from);
	}
	return 0;
}
