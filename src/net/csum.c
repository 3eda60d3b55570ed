/* Internet checksums (RFC 1071) for the device's checksum offloads on backends that take plain
 * frames (user mode): completing a transmitted frame's partial checksum (virtio 1.2 §5.1.6.2,
 * VIRTIO_NET_F_CSUM) and validating a received frame's TCP/UDP checksum before telling the
 * driver it was (§5.1.6.4, VIRTIO_NET_HDR_F_DATA_VALID). Everything here reads frames the guest
 * or the network made: every offset is checked against the frame's length. */
#include <string.h>

#include "net/net.h"

#define ETH_HLEN 14
#define ETH_P_IPV4 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

uint64_t net_csum_add(uint64_t sum, const uint8_t *p, size_t len)
{
	/* Big-endian 16-bit words, summed 32 bits at a time into 64 bits: the carries are
	 * folded back in at the end (RFC 1071 §2: the sum is independent of byte order and
	 * of the word size as long as carries wrap around). */
	while (len >= 4) {
		sum += (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
		p += 4;
		len -= 4;
	}
	if (len >= 2) {
		sum += (uint32_t)p[0] << 8 | p[1];
		p += 2;
		len -= 2;
	}
	if (len)
		sum += (uint32_t)p[0] << 8; /* an odd last byte is padded with zero */
	return sum;
}

uint16_t net_csum_fold(uint64_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xFFFF) + (sum >> 16);
	return (uint16_t)sum;
}

int net_csum_complete(uint8_t *frame, size_t len, size_t start, size_t offset)
{
	if (start > len || offset > len - start || len - start - offset < 2)
		return -1;
	/* The field holds the pseudo-header's sum (Linux's CHECKSUM_PARTIAL): summing over it
	 * includes it, and the complement of the total goes in its place. */
	uint16_t c = (uint16_t)~net_csum_fold(net_csum_add(0, frame + start, len - start));
	frame[start + offset] = (uint8_t)(c >> 8);
	frame[start + offset + 1] = (uint8_t)c;
	return 0;
}

/* Sum of the TCP/UDP pseudo-header's fields (RFC 793 §3.1, RFC 8200 §8.1). */
static uint64_t pseudo_sum(const uint8_t *src, const uint8_t *dst, size_t addr_len, uint8_t proto,
			   size_t l4_len)
{
	uint64_t sum = net_csum_add(0, src, addr_len);
	sum = net_csum_add(sum, dst, addr_len);
	return sum + proto + (l4_len & 0xFFFF) + (l4_len >> 16);
}

bool net_csum_l4_valid(const uint8_t *frame, size_t len)
{
	if (len < ETH_HLEN)
		return false;
	const uint8_t *ip = frame + ETH_HLEN;
	size_t left = len - ETH_HLEN;
	const uint8_t *l4;
	size_t l4_len;
	uint8_t proto;
	uint64_t sum;
	switch (be16(frame + 12)) {
	case ETH_P_IPV4: {
		if (left < 20 || (ip[0] >> 4) != 4)
			return false;
		size_t ihl = (size_t)(ip[0] & 0xF) * 4, total = be16(ip + 2);
		/* Whole datagrams only: a fragment's checksum covers data it does not hold. */
		if (ihl < 20 || total < ihl || total > left || (be16(ip + 6) & 0x3FFF))
			return false;
		proto = ip[9];
		l4 = ip + ihl;
		l4_len = total - ihl;
		sum = pseudo_sum(ip + 12, ip + 16, 4, proto, l4_len);
		break;
	}
	case ETH_P_IPV6: {
		if (left < 40 || (ip[0] >> 4) != 6)
			return false;
		size_t payload = be16(ip + 4);
		if (payload > left - 40)
			return false;
		proto = ip[6]; /* extension headers are not followed: not validated */
		l4 = ip + 40;
		l4_len = payload;
		sum = pseudo_sum(ip + 8, ip + 24, 16, proto, l4_len);
		break;
	}
	default:
		return false;
	}
	if (proto == IPPROTO_TCP_) {
		if (l4_len < 20)
			return false;
	} else if (proto == IPPROTO_UDP_) {
		/* A UDP datagram without a checksum (0, IPv4 only) has nothing to validate. */
		if (l4_len < 8 || be16(l4 + 4) != l4_len || be16(l4 + 6) == 0)
			return false;
	} else {
		return false;
	}
	return net_csum_fold(net_csum_add(sum, l4, l4_len)) == 0xFFFF;
}
