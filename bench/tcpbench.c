/* bench/tcpbench: the TCP client and server of bench/net, one static binary for the host and
 * the guest. All times it prints come from the clock of the side that prints them; bench/net
 * only uses the host's.
 *
 *   tcpbench sink PORT             serve: per connection, read to EOF, print "BYTES USEC" (first
 *                                  byte to EOF), answer the byte count (8 bytes) and close
 *   tcpbench echo PORT             serve: per connection, send back every byte until EOF
 *   tcpbench send HOST PORT BYTES  connect, send BYTES, shut down the sending side, wait for the
 *                                  sink's answer; print "BYTES USEC" (first byte to the answer)
 *   tcpbench rr HOST PORT COUNT    connect, COUNT times send one byte and wait for it to come
 *                                  back; print "COUNT MEDIAN_USEC MIN_USEC MAX_USEC"
 *
 * Servers handle one connection at a time and run until killed. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (64 * 1024)

static uint64_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void die(const char *what)
{
	fprintf(stderr, "tcpbench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void set_nodelay(int fd)
{
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		die("TCP_NODELAY");
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int listen_on(const char *port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		die("socket");
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("bind");
	if (listen(s, 4) < 0)
		die("listen");
	return s;
}

static int connect_to(const char *host, const char *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
		fprintf(stderr, "tcpbench: %s: not an IPv4 address\n", host);
		exit(2);
	}
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		die("socket");
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	return s;
}

static void serve_sink_one(int c, char *buf)
{
	uint64_t bytes = 0, t0 = 0;
	ssize_t n;
	while ((n = read(c, buf, BUF_SIZE)) > 0 || (n < 0 && errno == EINTR)) {
		if (n <= 0)
			continue;
		if (!bytes)
			t0 = now_usec();
		bytes += (uint64_t)n;
	}
	uint64_t t1 = now_usec();
	if (write_all(c, &bytes, sizeof(bytes)) == 0) {
		printf("%llu %llu\n", (unsigned long long)bytes,
		       (unsigned long long)(bytes ? t1 - t0 : 0));
		fflush(stdout);
	}
}

static void serve_echo_one(int c, char *buf)
{
	set_nodelay(c);
	ssize_t n;
	while ((n = read(c, buf, BUF_SIZE)) > 0 || (n < 0 && errno == EINTR))
		if (n > 0 && write_all(c, buf, (size_t)n) < 0)
			break;
}

static _Noreturn void serve(const char *port, void (*one)(int, char *))
{
	static char buf[BUF_SIZE];
	int s = listen_on(port);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		one(c, buf);
		close(c);
	}
}

static int send_bytes(const char *host, const char *port, uint64_t total)
{
	static char buf[BUF_SIZE];
	int s = connect_to(host, port);
	uint64_t t0 = now_usec();
	for (uint64_t left = total; left;) {
		size_t len = left < BUF_SIZE ? (size_t)left : BUF_SIZE;
		if (write_all(s, buf, len) < 0)
			die("send");
		left -= len;
	}
	if (shutdown(s, SHUT_WR) < 0)
		die("shutdown");
	uint64_t got = 0;
	size_t have = 0;
	while (have < sizeof(got)) {
		ssize_t n = read(s, (char *)&got + have, sizeof(got) - have);
		if (n <= 0)
			die("reading the sink's answer");
		have += (size_t)n;
	}
	uint64_t t1 = now_usec();
	if (got != total) {
		fprintf(stderr, "tcpbench: the sink got %llu bytes of %llu\n", (unsigned long long)got,
			(unsigned long long)total);
		return 1;
	}
	printf("%llu %llu\n", (unsigned long long)total, (unsigned long long)(t1 - t0));
	return 0;
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int round_trips(const char *host, const char *port, unsigned count)
{
	int s = connect_to(host, port);
	set_nodelay(s);
	uint64_t *t = calloc(count, sizeof(*t));
	if (!t)
		die("calloc");
	for (unsigned i = 0; i < count; i++) {
		char c = (char)i;
		uint64_t t0 = now_usec();
		if (write_all(s, &c, 1) < 0)
			die("send");
		ssize_t n;
		while ((n = read(s, &c, 1)) < 0 && errno == EINTR)
			;
		if (n != 1)
			die("echo");
		t[i] = now_usec() - t0;
	}
	qsort(t, count, sizeof(*t), compare_u64);
	printf("%u %llu %llu %llu\n", count, (unsigned long long)t[count / 2],
	       (unsigned long long)t[0], (unsigned long long)t[count - 1]);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "sink"))
		serve(argv[2], serve_sink_one);
	if (argc == 3 && !strcmp(argv[1], "echo"))
		serve(argv[2], serve_echo_one);
	if (argc == 5 && !strcmp(argv[1], "send"))
		return send_bytes(argv[2], argv[3], strtoull(argv[4], NULL, 0));
	if (argc == 5 && !strcmp(argv[1], "rr") && atoi(argv[4]) > 0)
		return round_trips(argv[2], argv[3], (unsigned)atoi(argv[4]));
	fprintf(stderr, "usage: tcpbench sink PORT | echo PORT | send HOST PORT BYTES | rr HOST PORT COUNT\n");
	return 2;
}
