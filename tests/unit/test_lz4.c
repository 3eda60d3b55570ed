/* LZ4 legacy decoding (src/boot/lz4.c): round trips through a small greedy compressor written
 * here from the block format, hand-made blocks for each rule, and hostile input — truncated
 * anywhere, offsets before the start, output overflow, oversize blocks — refused without reading
 * or writing outside the buffers (run under ASan by `make asan`). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "boot/lz4.h"
#include "test.h"

static size_t put_length(uint8_t *out, size_t len)
{
	size_t n = 0;
	for (; len >= 255; len -= 255)
		out[n++] = 255;
	out[n++] = (uint8_t)len;
	return n;
}

/* One sequence: literals then (if match_len) a match; returns bytes written. */
static size_t put_sequence(uint8_t *out, const uint8_t *lit, size_t lit_len, size_t offset,
			   size_t match_len)
{
	size_t n = 1;
	size_t ml = match_len ? match_len - 4 : 0;
	out[0] = (uint8_t)((lit_len < 15 ? lit_len : 15) << 4 | (ml < 15 ? ml : 15));
	if (lit_len >= 15)
		n += put_length(out + n, lit_len - 15);
	memcpy(out + n, lit, lit_len);
	n += lit_len;
	if (!match_len)
		return n;
	out[n++] = (uint8_t)offset;
	out[n++] = (uint8_t)(offset >> 8);
	if (ml >= 15)
		n += put_length(out + n, ml - 15);
	return n;
}

/* A greedy compressor: a 4-byte hash table, matches within 64 KiB, the last 5 bytes literal. */
static size_t compress_block(const uint8_t *in, size_t len, uint8_t *out)
{
	static uint32_t table[4096];
	memset(table, 0xFF, sizeof(table));
	size_t ip = 0, anchor = 0, n = 0;
	while (len >= 12 && ip + 12 <= len) {
		uint32_t v;
		memcpy(&v, in + ip, 4);
		uint32_t h = (v * 2654435761u) >> 20, cand = table[h];
		table[h] = (uint32_t)ip;
		if (cand == 0xFFFFFFFFu || ip - cand > 65535 || memcmp(in + cand, in + ip, 4)) {
			ip++;
			continue;
		}
		size_t m = 4;
		while (ip + m + 5 < len && in[cand + m] == in[ip + m])
			m++;
		n += put_sequence(out + n, in + anchor, ip - anchor, ip - cand, m);
		ip += m;
		anchor = ip;
	}
	return n + put_sequence(out + n, in + anchor, len - anchor, 0, 0);
}

/* A legacy stream of blocks of at most block bytes of input each. */
static uint8_t *compress_legacy(const uint8_t *in, size_t len, size_t block, size_t *out_len)
{
	uint8_t *out = malloc(16 + len + len / 8 + (len / block + 1) * 32);
	size_t n = 4;
	uint32_t magic = LZ4_LEGACY_MAGIC;
	memcpy(out, &magic, 4);
	for (size_t pos = 0; pos < len; pos += block) {
		size_t chunk = len - pos < block ? len - pos : block;
		uint32_t size = (uint32_t)compress_block(in + pos, chunk, out + n + 4);
		memcpy(out + n, &size, 4);
		n += 4 + size;
	}
	*out_len = n;
	return out;
}

/* Text-like data with repeats, runs and noise: every kind of sequence. */
static uint8_t *sample(size_t len, unsigned seed)
{
	uint8_t *d = malloc(len);
	srand(seed);
	for (size_t i = 0; i < len; i++) {
		int kind = (int)((i / 997) % 4);
		if (kind == 0)
			d[i] = (uint8_t)("the kernel decompresses itself "[i % 31]);
		else if (kind == 1)
			d[i] = 0;
		else if (kind == 2 && i >= 300)
			d[i] = d[i - 300];
		else
			d[i] = (uint8_t)rand();
	}
	return d;
}

static void lz4_round_trip_of_mixed_data(void)
{
	const size_t len = 3 << 20;
	uint8_t *data = sample(len, 1), *out = malloc(len);
	size_t clen, olen;
	uint8_t *c = compress_legacy(data, len, 1 << 20, &clen);
	CHECK(clen < len);
	CHECK_EQ(lz4_legacy_decode(c, clen, out, len, &olen), 0);
	CHECK_EQ(olen, len);
	CHECK(memcmp(out, data, len) == 0);
	free(c);
	free(out);
	free(data);
}

static void lz4_overlapping_match_is_a_run(void)
{
	uint8_t blk[64], out[64];
	size_t n = put_sequence(blk, (const uint8_t *)"ab", 2, 2, 20);
	n += put_sequence(blk + n, (const uint8_t *)"xyz12", 5, 0, 0);
	size_t olen;
	CHECK_EQ(lz4_block_decode(blk, n, out, sizeof(out), &olen), 0);
	CHECK_EQ(olen, 27);
	CHECK(memcmp(out,
		     "ababababababababababab"
		     "xyz12",
		     27) == 0);
}

static void lz4_long_lengths_use_extra_bytes(void)
{
	/* 300 literals (15 + 255 + 30) and a match of 600 (4 + 15 + 255 + 255 + 71). */
	uint8_t lit[300], blk[700], out[1000];
	for (int i = 0; i < 300; i++)
		lit[i] = (uint8_t)i;
	size_t n = put_sequence(blk, lit, 300, 300, 600);
	n += put_sequence(blk + n, lit, 5, 0, 0);
	size_t olen;
	CHECK_EQ(lz4_block_decode(blk, n, out, sizeof(out), &olen), 0);
	CHECK_EQ(olen, 905);
	CHECK(memcmp(out + 300, lit, 300) == 0 && memcmp(out + 600, lit, 300) == 0);
}

static void lz4_offset_before_the_start_is_refused(void)
{
	uint8_t blk[32], out[64];
	size_t olen;
	size_t n = put_sequence(blk, (const uint8_t *)"abc", 3, 4, 8); /* 4 back from 3 */
	n += put_sequence(blk + n, (const uint8_t *)"12345", 5, 0, 0);
	CHECK_EQ(lz4_block_decode(blk, n, out, sizeof(out), &olen), -EINVAL);
	n = put_sequence(blk, (const uint8_t *)"abc", 3, 0, 8); /* offset 0 */
	blk[n - 2] = blk[n - 1] = 0;
	n += put_sequence(blk + n, (const uint8_t *)"12345", 5, 0, 0);
	CHECK_EQ(lz4_block_decode(blk, n, out, sizeof(out), &olen), -EINVAL);
}

/* Blocks are independent: a match in the second block may not reach into the first. */
static void lz4_blocks_do_not_reach_back(void)
{
	uint8_t s[64], out[64];
	uint32_t magic = LZ4_LEGACY_MAGIC, size;
	memcpy(s, &magic, 4);
	size = (uint32_t)put_sequence(s + 8, (const uint8_t *)"abcdefgh", 8, 0, 0);
	memcpy(s + 4, &size, 4);
	size_t n = 8 + size, blk = n + 4;
	size = (uint32_t)put_sequence(s + blk, (const uint8_t *)"x", 1, 4, 4);
	size += (uint32_t)put_sequence(s + blk + size, (const uint8_t *)"12345", 5, 0, 0);
	memcpy(s + n, &size, 4);
	size_t olen;
	CHECK_EQ(lz4_legacy_decode(s, blk + size, out, sizeof(out), &olen), -EINVAL);
}

static void lz4_output_overflow_is_refused(void)
{
	const size_t len = 100000;
	uint8_t *data = sample(len, 2), *out = malloc(len);
	size_t clen, olen;
	uint8_t *c = compress_legacy(data, len, 40000, &clen);
	CHECK_EQ(lz4_legacy_decode(c, clen, out, len, &olen), 0);
	for (size_t cap = 0; cap < len; cap += 977)
		CHECK_EQ(lz4_legacy_decode(c, clen, out, cap, &olen), -ENOSPC);
	CHECK_EQ(lz4_legacy_decode(c, clen, out, len - 1, &olen), -ENOSPC);
	free(c);
	free(out);
	free(data);
}

/* Cut anywhere: refused, or (cut at a block boundary) a shorter prefix of the data. */
static void lz4_truncated_anywhere_is_refused_or_a_prefix(void)
{
	const size_t len = 20000;
	uint8_t *data = sample(len, 3), *out = malloc(len);
	size_t clen, olen;
	uint8_t *c = compress_legacy(data, len, 5000, &clen);
	for (size_t cut = 0; cut < clen; cut++) {
		uint8_t *t = malloc(cut ? cut : 1);
		memcpy(t, c, cut);
		int ret = lz4_legacy_decode(t, cut, out, len, &olen);
		CHECK(ret == -EINVAL || (ret == 0 && olen < len && !memcmp(out, data, olen)));
		free(t);
	}
	free(c);
	free(out);
	free(data);
}

static void lz4_bad_frames_are_refused(void)
{
	uint8_t s[16] = { 0x02, 0x21, 0x4C, 0x19 }, out[16];
	size_t olen;
	CHECK_EQ(lz4_legacy_decode(s, 4, out, sizeof(out), &olen), -EINVAL); /* bad magic */
	s[3] = 0x18;
	CHECK_EQ(lz4_legacy_decode(s, 4, out, sizeof(out), &olen), 0); /* no blocks */
	CHECK_EQ(olen, 0);
	CHECK_EQ(lz4_legacy_decode(s, 8, out, sizeof(out), &olen), -EINVAL); /* empty block */
	uint32_t big = 0x7FFFFFFF;
	memcpy(s + 4, &big, 4);
	CHECK_EQ(lz4_legacy_decode(s, 16, out, sizeof(out), &olen), -EINVAL); /* past the end */
	/* A block of 9 MiB of zeros decodes to more than the 8 MiB a legacy block holds. */
	uint8_t *blk = malloc(64 + (9 << 20) / 255); /* the match length takes 37 KB of 255s */
	size_t n = put_sequence(blk, (const uint8_t *)"\0", 1, 1, 9 << 20);
	n += put_sequence(blk + n, (const uint8_t *)"\0\0\0\0\0", 5, 0, 0);
	uint8_t *st = malloc(8 + n), *big_out = malloc(10 << 20);
	memcpy(st, s, 4);
	uint32_t size = (uint32_t)n;
	memcpy(st + 4, &size, 4);
	memcpy(st + 8, blk, n);
	CHECK_EQ(lz4_legacy_decode(st, 8 + n, big_out, 10 << 20, &olen), -EINVAL);
	CHECK_EQ(lz4_block_decode(blk, n, big_out, 10 << 20, &olen), 0);
	free(st);
	free(big_out);
	free(blk);
}

/* Random bytes after a valid magic: never a crash (ASan checks the bounds). */
static void lz4_random_input_never_escapes_the_buffers(void)
{
	uint8_t in[512], out[4096];
	size_t olen;
	srand(4);
	for (int round = 0; round < 20000; round++) {
		size_t len = 8 + (size_t)rand() % (sizeof(in) - 8);
		for (size_t i = 0; i < len; i++)
			in[i] = (uint8_t)rand();
		uint32_t magic = LZ4_LEGACY_MAGIC, size = (uint32_t)(len - 8);
		memcpy(in, &magic, 4);
		memcpy(in + 4, &size, 4);
		int ret = lz4_legacy_decode(in, len, out, sizeof(out), &olen);
		CHECK(ret == 0 || ret == -EINVAL || ret == -ENOSPC);
		CHECK(olen <= sizeof(out));
	}
}

int main(void)
{
	RUN_TEST(lz4_round_trip_of_mixed_data);
	RUN_TEST(lz4_overlapping_match_is_a_run);
	RUN_TEST(lz4_long_lengths_use_extra_bytes);
	RUN_TEST(lz4_offset_before_the_start_is_refused);
	RUN_TEST(lz4_blocks_do_not_reach_back);
	RUN_TEST(lz4_output_overflow_is_refused);
	RUN_TEST(lz4_truncated_anywhere_is_refused_or_a_prefix);
	RUN_TEST(lz4_bad_frames_are_refused);
	RUN_TEST(lz4_random_input_never_escapes_the_buffers);
	return TEST_EXIT();
}
