/* -n/--net option values: tap[=IFNAME][,mac=MAC][,queues=N] and
 * user[,mac=MAC][,mtu=N][,hostfwd=tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT...]. Pure parsing, unit-tested
 * in tests/unit/test_config.c and test_net.c. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "net/net.h"

#define NET_USAGE                                         \
	"use -n tap[=IFNAME][,mac=MAC][,queues=N] or -n " \
	"user[,mtu=N][,hostfwd=tcp::HOSTPORT-:GUESTPORT]"

int net_parse_mac(const char *text, size_t len, uint8_t mac[6])
{
	/* Exactly six two-digit hex bytes separated by ':' (or '-'): 17 characters. */
	if (len != 17)
		return -1;
	for (unsigned i = 0; i < 6; i++) {
		const char *p = text + 3 * i;
		unsigned v = 0;
		for (unsigned j = 0; j < 2; j++) {
			char c = p[j];
			unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
				     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
				     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16u;
			if (d == 16)
				return -1;
			v = v * 16 + d;
		}
		if (i < 5 && p[2] != ':' && p[2] != '-')
			return -1;
		mac[i] = (uint8_t)v;
	}
	return 0;
}

static int parse_port(const char *text, size_t len, uint16_t *port)
{
	char buf[8];
	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, text, len);
	buf[len] = '\0';
	char *end;
	long v = strtol(buf, &end, 10);
	if (*end || v < 1 || v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

static int parse_addr(const char *text, size_t len, uint32_t *addr)
{
	char buf[INET_ADDRSTRLEN];
	*addr = 0;
	if (len == 0)
		return 0;
	if (len >= sizeof(buf))
		return -1;
	memcpy(buf, text, len);
	buf[len] = '\0';
	struct in_addr a;
	if (inet_pton(AF_INET, buf, &a) != 1)
		return -1;
	*addr = a.s_addr;
	return 0;
}

/* "[ADDR]:PORT" (or just "PORT" on the host side, as in "tcp:2222-:22"). */
static int parse_endpoint(const char *text, size_t len, uint32_t *addr, uint16_t *port)
{
	const char *colon = memchr(text, ':', len);
	if (!colon) {
		*addr = 0;
		return parse_port(text, len, port);
	}
	size_t alen = (size_t)(colon - text);
	return parse_addr(text, alen, addr) < 0 ? -1
						: parse_port(colon + 1, len - alen - 1, port);
}

int net_parse_hostfwd(const char *text, size_t len, struct net_hostfwd *fwd)
{
	memset(fwd, 0, sizeof(*fwd));
	if (len > 4 && !strncmp(text, "tcp:", 4)) {
		text += 4;
		len -= 4;
	} else if (len > 4 && !strncmp(text, "udp:", 4)) {
		fwd->udp = true;
		text += 4;
		len -= 4;
	} else {
		return -1;
	}
	const char *dash = memchr(text, '-', len);
	if (!dash)
		return -1;
	size_t hlen = (size_t)(dash - text);
	return parse_endpoint(text, hlen, &fwd->host_addr, &fwd->host_port) < 0 ||
			       parse_endpoint(dash + 1, len - hlen - 1, &fwd->guest_addr,
					      &fwd->guest_port) < 0
		       ? -1
		       : 0;
}

int config_parse_net(struct net_config *n, const char *text, char *err, unsigned err_len)
{
	memset(n, 0, sizeof(*n));
	n->queues = 1;
	const char *comma = strchr(text, ',');
	size_t len = comma ? (size_t)(comma - text) : strlen(text);
	if (len >= 3 && !strncmp(text, "tap", 3) && (len == 3 || text[3] == '=')) {
		n->kind = NET_TAP;
		size_t nlen = len > 4 ? len - 4 : 0;
		if (len == 4 || nlen >= sizeof(n->ifname) || memchr(text + 4, '/', nlen)) {
			snprintf(err, err_len, "--net %s: '%.*s' is not an interface name (give at most 15 characters, or tap alone to create one)",
				 text, (int)nlen, text + 4);
			return -1;
		}
		memcpy(n->ifname, text + 4, nlen);
	} else if (len == 4 && !strncmp(text, "user", 4)) {
		n->kind = NET_USER;
		n->mtu = CONFIG_NET_USER_MTU;
	} else {
		snprintf(err, err_len, "--net %s: unknown network type '%.*s' (" NET_USAGE ")", text,
			 (int)len, text);
		return -1;
	}
	while (comma) {
		const char *opt = comma + 1;
		comma = strchr(opt, ',');
		size_t olen = comma ? (size_t)(comma - opt) : strlen(opt);
		if (olen > 4 && !strncmp(opt, "mac=", 4)) {
			if (net_parse_mac(opt + 4, olen - 4, n->mac) < 0) {
				snprintf(err, err_len, "--net %s: '%.*s' is not a MAC address (use six hex bytes, e.g. mac=52:54:00:12:34:56)",
					 text, (int)(olen - 4), opt + 4);
				return -1;
			}
			if (n->mac[0] & 1) {
				snprintf(err, err_len, "--net %s: %.*s is a multicast address (use a unicast MAC: even first byte, e.g. 52:54:00:12:34:56)",
					 text, (int)(olen - 4), opt + 4);
				return -1;
			}
			n->has_mac = true;
		} else if (olen > 7 && !strncmp(opt, "queues=", 7) && n->kind == NET_TAP) {
			char buf[8] = { 0 }, *end;
			memcpy(buf, opt + 7, olen - 7 < 7 ? olen - 7 : 7);
			long q = strtol(buf, &end, 10);
			if (olen - 7 >= 7 || *end || end == buf || q < 1 || q > CONFIG_MAX_NET_QUEUES) {
				snprintf(err, err_len, "--net %s: queues=%.*s is not a queue count (use 1 to %d)",
					 text, (int)(olen - 7), opt + 7, CONFIG_MAX_NET_QUEUES);
				return -1;
			}
			n->queues = (unsigned)q;
		} else if (olen > 4 && !strncmp(opt, "mtu=", 4) && n->kind == NET_USER) {
			char buf[8] = { 0 }, *end;
			memcpy(buf, opt + 4, olen - 4 < 7 ? olen - 4 : 7);
			long m = strtol(buf, &end, 10);
			if (olen - 4 >= 7 || *end || end == buf || m < CONFIG_NET_MTU_MIN ||
			    m > CONFIG_NET_USER_MTU) {
				snprintf(err, err_len,
					 "--net %s: mtu=%.*s is not an MTU (use %d to %d bytes)",
					 text, (int)(olen - 4), opt + 4, CONFIG_NET_MTU_MIN,
					 CONFIG_NET_USER_MTU);
				return -1;
			}
			n->mtu = (unsigned)m;
		} else if (olen > 8 && !strncmp(opt, "hostfwd=", 8) && n->kind == NET_USER) {
			if (n->nr_hostfwd == CONFIG_MAX_HOSTFWD) {
				snprintf(err, err_len, "--net %s: more than %d hostfwd rules (forward fewer ports)",
					 text, CONFIG_MAX_HOSTFWD);
				return -1;
			}
			if (net_parse_hostfwd(opt + 8, olen - 8, &n->hostfwd[n->nr_hostfwd]) < 0) {
				snprintf(err, err_len, "--net %s: '%.*s' is not a forwarding rule (use hostfwd=tcp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, e.g. hostfwd=tcp::2222-:22)",
					 text, (int)olen, opt);
				return -1;
			}
			n->nr_hostfwd++;
		} else {
			snprintf(err, err_len, "--net %s: unknown option '%.*s' for %s (%s)", text,
				 (int)olen, opt, n->kind == NET_TAP ? "tap" : "user",
				 n->kind == NET_TAP ? "tap takes mac= and queues="
						    : "user takes mac=, mtu= and hostfwd=");
			return -1;
		}
	}
	return 0;
}

static uint64_t net_name_hash(const char *name, unsigned index)
{
	/* FNV-1a over the name and the NIC's index: stable for the same VM and NIC. */
	uint64_t h = 0xcbf29ce484222325ull;
	for (const char *p = name; p && *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	return (h ^ index) * 0x100000001b3ull;
}

void net_default_mac(const char *vm_name, unsigned index, uint8_t mac[6])
{
	uint64_t h = net_name_hash(vm_name, index);
	/* 52:54:xx: locally administered (bit 1), unicast (bit 0 clear). */
	mac[0] = 0x52;
	mac[1] = 0x54;
	for (unsigned i = 2; i < 6; i++)
		mac[i] = (uint8_t)(h >> (8 * (i - 2) + 16));
}

void net_tap_default_name(const char *vm_name, unsigned index, char out[NET_IFNAME_SIZE])
{
	char suffix[16];
	size_t slen = (size_t)snprintf(suffix, sizeof(suffix), "-%u", index % 1000);
	size_t nlen = strlen(vm_name);
	if (nlen + slen >= NET_IFNAME_SIZE) {
		/* Too long for an interface name (15 characters): keep the start and add 4 hex
		 * digits of the whole name's hash, so two long names with the same start still get
		 * different TAPs. */
		nlen = NET_IFNAME_SIZE - 1 - 4 - slen;
		char hash[8];
		snprintf(hash, sizeof(hash), "%04x", (unsigned)(net_name_hash(vm_name, 0) >> 48));
		memcpy(out + nlen, hash, 4);
		memcpy(out, vm_name, nlen);
		nlen += 4;
	} else {
		memcpy(out, vm_name, nlen);
	}
	memcpy(out + nlen, suffix, slen + 1);
}
