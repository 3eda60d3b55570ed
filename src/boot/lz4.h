/* LZ4 legacy frames, the format of a Linux bzImage built with CONFIG_KERNEL_LZ4 (`lz4 -l`): the
 * magic 0x184C2102, then blocks, each a little-endian u32 compressed size and an LZ4 block
 * (lz4's doc/lz4_Block_format.md) that decodes to at most 8 MiB on its own (no references into an
 * earlier block). The input is a user's file: every length and offset is checked, nothing is read
 * or written outside the two buffers. */
#ifndef VMM_BOOT_LZ4_H
#define VMM_BOOT_LZ4_H

#include <stddef.h>
#include <stdint.h>

#define LZ4_LEGACY_MAGIC 0x184C2102u
#define LZ4_LEGACY_BLOCK_MAX (8u << 20)

/* Decode one block into out (capacity out_cap). 0 and *out_len, -EINVAL for malformed input
 * (truncated, a match offset of 0 or before the start of out), -ENOSPC when the output would
 * exceed out_cap. */
int lz4_block_decode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap,
		     size_t *out_len);

/* Decode a whole legacy stream (magic included; a magic where a block size is expected starts a
 * concatenated frame). Same results as lz4_block_decode, plus -EINVAL for a bad magic, an empty
 * or truncated block, or a block larger than 8 MiB. */
int lz4_legacy_decode(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_cap,
		      size_t *out_len);

#endif
