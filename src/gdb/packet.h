/* GDB remote serial protocol framing: "$payload#cs", acks, the 0x03 interrupt byte, binary
 * escapes ("}" then byte ^ 0x20). Pure and strictly bounded: a packet longer than
 * GDB_PACKET_MAX is dropped whole and reported, never written past the buffer. Unit-tested
 * (tests/unit/test_gdb.c) and fuzzed (tests/fuzz/fuzz_gdb.c). */
#ifndef VMM_GDB_PACKET_H
#define VMM_GDB_PACKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GDB_PACKET_MAX 16384 /* payload bytes, as announced in qSupported (PacketSize=4000) */

enum gdb_input {
	GDB_IN_NONE, /* byte consumed, nothing complete yet */
	GDB_IN_PACKET, /* a packet with a good checksum: payload in parser.buf[0..len) */
	GDB_IN_BAD_CHECKSUM, /* a complete packet whose checksum is wrong: send '-' */
	GDB_IN_OVERFLOW, /* a complete packet longer than GDB_PACKET_MAX: dropped */
	GDB_IN_INTERRUPT, /* 0x03 outside a packet: stop the target */
	GDB_IN_ACK, /* '+' */
	GDB_IN_NAK, /* '-': resend the last packet */
};

struct gdb_parser {
	enum { GDB_P_IDLE, GDB_P_BODY, GDB_P_ESCAPE, GDB_P_CSUM1, GDB_P_CSUM2 } state;
	uint8_t sum; /* running checksum of the raw bytes between '$' and '#' */
	uint8_t want; /* the checksum the packet carries */
	bool overflow;
	size_t len;
	char buf[GDB_PACKET_MAX + 1]; /* unescaped payload, NUL-terminated for convenience */
};

void gdb_parser_init(struct gdb_parser *p);
enum gdb_input gdb_parser_feed(struct gdb_parser *p, uint8_t byte);

/* Frame payload as "$...#cs", escaping '$', '#', '}' and '*'. Returns the framed length, or 0
 * when it does not fit in cap. */
size_t gdb_packet_encode(const void *payload, size_t len, char *out, size_t cap);

/* Hex helpers. gdb_hex_value: 0-15, or -1. */
int gdb_hex_value(char c);
/* Encode len bytes as 2*len hex digits (no NUL); returns 2*len. */
size_t gdb_hex_encode(const void *data, size_t len, char *out);
/* Decode exactly 2*len hex digits into out; false on a non-hex digit. */
bool gdb_hex_decode(const char *hex, size_t len, void *out);
/* Parse a hex number at *s (at most 16 digits), advancing *s; false if no digit or too long. */
bool gdb_parse_hex(const char **s, uint64_t *value);

#endif
