/* GDB remote protocol framing (gdb manual, "Overview" and "Binary data" of the Remote Protocol
 * appendix): checksums are the sum of the payload bytes modulo 256, as two hex digits. */
#include "gdb/packet.h"

#include <string.h>

void gdb_parser_init(struct gdb_parser *p)
{
	p->state = GDB_P_IDLE;
	p->len = 0;
	p->sum = 0;
	p->overflow = false;
	p->buf[0] = '\0';
}

int gdb_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void gdb_parser_put(struct gdb_parser *p, uint8_t byte)
{
	if (p->len < GDB_PACKET_MAX)
		p->buf[p->len++] = (char)byte;
	else
		p->overflow = true;
}

enum gdb_input gdb_parser_feed(struct gdb_parser *p, uint8_t byte)
{
	switch (p->state) {
	case GDB_P_IDLE:
		if (byte == '$') {
			p->state = GDB_P_BODY;
			p->len = 0;
			p->sum = 0;
			p->overflow = false;
			return GDB_IN_NONE;
		}
		if (byte == 0x03)
			return GDB_IN_INTERRUPT;
		if (byte == '+')
			return GDB_IN_ACK;
		if (byte == '-')
			return GDB_IN_NAK;
		return GDB_IN_NONE; /* noise between packets is ignored */
	case GDB_P_BODY:
		if (byte == '#') {
			p->state = GDB_P_CSUM1;
			return GDB_IN_NONE;
		}
		if (byte == '$') { /* a new packet starts: the old one was cut short */
			p->len = 0;
			p->sum = 0;
			p->overflow = false;
			return GDB_IN_NONE;
		}
		p->sum = (uint8_t)(p->sum + byte);
		if (byte == '}')
			p->state = GDB_P_ESCAPE;
		else
			gdb_parser_put(p, byte);
		return GDB_IN_NONE;
	case GDB_P_ESCAPE:
		p->sum = (uint8_t)(p->sum + byte);
		gdb_parser_put(p, byte ^ 0x20);
		p->state = GDB_P_BODY;
		return GDB_IN_NONE;
	case GDB_P_CSUM1: {
		int v = gdb_hex_value((char)byte);
		if (v < 0) { /* not a checksum: the packet is bad */
			p->state = GDB_P_IDLE;
			p->len = 0;
			return GDB_IN_BAD_CHECKSUM;
		}
		p->want = (uint8_t)(v << 4);
		p->state = GDB_P_CSUM2;
		return GDB_IN_NONE;
	}
	case GDB_P_CSUM2: {
		int v = gdb_hex_value((char)byte);
		p->state = GDB_P_IDLE;
		p->buf[p->len < GDB_PACKET_MAX ? p->len : GDB_PACKET_MAX] = '\0';
		if (v < 0 || (uint8_t)(p->want | v) != p->sum) {
			p->len = 0;
			return GDB_IN_BAD_CHECKSUM;
		}
		if (p->overflow) {
			p->len = 0;
			return GDB_IN_OVERFLOW;
		}
		return GDB_IN_PACKET;
	}
	}
	p->state = GDB_P_IDLE;
	return GDB_IN_NONE;
}

size_t gdb_packet_encode(const void *payload, size_t len, char *out, size_t cap)
{
	const uint8_t *in = payload;
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	uint8_t sum = 0;
	if (cap < 4)
		return 0;
	out[o++] = '$';
	for (size_t i = 0; i < len; i++) {
		uint8_t c = in[i];
		bool esc = c == '$' || c == '#' || c == '}' || c == '*';
		if (o + (esc ? 2 : 1) + 3 > cap)
			return 0;
		if (esc) {
			out[o++] = '}';
			sum = (uint8_t)(sum + '}');
			c ^= 0x20;
		}
		out[o++] = (char)c;
		sum = (uint8_t)(sum + c);
	}
	out[o++] = '#';
	out[o++] = hex[sum >> 4];
	out[o++] = hex[sum & 15];
	return o;
}

size_t gdb_hex_encode(const void *data, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	const uint8_t *d = data;
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	return 2 * len;
}

bool gdb_hex_decode(const char *hex, size_t len, void *out)
{
	uint8_t *o = out;
	for (size_t i = 0; i < len; i++) {
		int hi = gdb_hex_value(hex[2 * i]), lo = hi < 0 ? -1 : gdb_hex_value(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		o[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

bool gdb_parse_hex(const char **s, uint64_t *value)
{
	uint64_t v = 0;
	unsigned n = 0;
	int d;
	while ((d = gdb_hex_value(**s)) >= 0) {
		if (++n > 16)
			return false;
		v = v << 4 | (uint64_t)d;
		(*s)++;
	}
	*value = v;
	return n > 0;
}
