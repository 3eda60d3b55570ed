/* LZ4 block and legacy-frame decoding (lz4's doc/lz4_Block_format.md; the legacy frame is
 * described in doc/lz4_Frame_format.md, "Legacy frame"). */
#include <errno.h>
#include <string.h>

#include "boot/lz4.h"

/* A length nibble of 15 continues in the following bytes, each added, until one is below 255. */
static int lz4_read_length(const uint8_t *in, size_t in_len, size_t *pos, size_t *len)
{
	uint8_t byte;
	do {
		if (*pos >= in_len)
			return -EINVAL;
		byte = in[(*pos)++];
		*len += byte;
	} while (byte == 255);
	return 0;
}

/* Copy a match of len bytes from offset bytes back; it may overlap what it writes (a run). */
static void lz4_copy_match(uint8_t *out, size_t pos, size_t offset, size_t len)
{
	const uint8_t *src = out + pos - offset;
	uint8_t *dst = out + pos;
	if (offset >= len) {
		memcpy(dst, src, len);
		return;
	}
	for (size_t i = 0; i < len; i++)
		dst[i] = src[i];
}

int lz4_block_decode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap,
		     size_t *out_len)
{
	size_t ip = 0, op = 0;
	*out_len = 0;
	for (;;) {
		if (ip >= in_len)
			return -EINVAL; /* a block ends with a sequence of literals, never empty */
		uint8_t token = in[ip++];
		size_t literals = token >> 4;
		if (literals == 15 && lz4_read_length(in, in_len, &ip, &literals) < 0)
			return -EINVAL;
		if (literals > in_len - ip)
			return -EINVAL;
		if (literals > out_cap - op)
			return -ENOSPC;
		if (literals)
			memcpy(out + op, in + ip, literals);
		ip += literals;
		op += literals;
		if (ip == in_len)
			break; /* the last sequence has no match */
		if (in_len - ip < 2)
			return -EINVAL;
		size_t offset = in[ip] | (size_t)in[ip + 1] << 8;
		ip += 2;
		if (offset == 0 || offset > op)
			return -EINVAL;
		size_t match = token & 15;
		if (match == 15 && lz4_read_length(in, in_len, &ip, &match) < 0)
			return -EINVAL;
		match += 4; /* the minimum match */
		if (match > out_cap - op)
			return -ENOSPC;
		lz4_copy_match(out, op, offset, match);
		op += match;
	}
	*out_len = op;
	return 0;
}

static uint32_t lz4_get32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int lz4_legacy_decode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap,
		      size_t *out_len)
{
	*out_len = 0;
	if (in_len < 4 || lz4_get32(in) != LZ4_LEGACY_MAGIC)
		return -EINVAL;
	size_t ip = 4, op = 0;
	while (ip < in_len) {
		if (in_len - ip < 4)
			return -EINVAL;
		uint32_t size = lz4_get32(in + ip);
		ip += 4;
		if (size == LZ4_LEGACY_MAGIC)
			continue;
		if (size == 0 || size > in_len - ip)
			return -EINVAL;
		size_t room = out_cap - op, produced;
		int ret = lz4_block_decode(
			in + ip, size, out + op,
			room < LZ4_LEGACY_BLOCK_MAX ? room : LZ4_LEGACY_BLOCK_MAX, &produced);
		/* Running out of the 8 MiB a block may hold is malformed input, not a full buffer. */
		if (ret == -ENOSPC && room > LZ4_LEGACY_BLOCK_MAX)
			ret = -EINVAL;
		if (ret < 0)
			return ret;
		ip += size;
		op += produced;
	}
	*out_len = op;
	return 0;
}
