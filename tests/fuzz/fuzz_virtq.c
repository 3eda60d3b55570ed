/* libFuzzer target: random rings for the split-virtqueue code (`make fuzz`, then
 * build-fuzz/fuzz_virtq -close_fd_mask=2 -max_total_time=60 [corpus dir]; the mask hides the
 * one log line per broken queue). ASan/UBSan catch any access outside
 * guest RAM or undefined arithmetic; the virtqueue must only ever return errors. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "virtio/virtq.h"

#define FUZZ_RAM (64ull << 20)
#define FUZZ_WINDOW 0x10000 /* the input lands in the first 64 KiB of guest RAM */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct guest_memory mem;
	static int ready;
	if (!ready) {
		if (memory_init(&mem, FUZZ_RAM) < 0)
			return 0;
		ready = 1;
	}
	if (size < 8)
		return 0;
	/* Header: queue size exponent, flags, and the three ring offsets (in 16-byte units). */
	uint16_t qsize = (uint16_t)(1u << (data[0] % 9)); /* 1..256 */
	bool indirect = data[1] & 1, event_idx = data[1] & 2;
	uint64_t desc = (uint64_t)(data[2] | data[3] << 8) * 16 % FUZZ_WINDOW;
	uint64_t avail = (uint64_t)(data[4] | data[5] << 8) * 2 % FUZZ_WINDOW;
	uint64_t used = (uint64_t)(data[6] | data[7] << 8) * 4 % FUZZ_WINDOW;
	memset(mem.base, 0, FUZZ_WINDOW);
	memcpy(mem.base, data + 8, size - 8 < FUZZ_WINDOW ? size - 8 : FUZZ_WINDOW);

	struct virtq vq;
	virtq_init(&vq, &mem, "fuzz");
	vq.size = qsize;
	vq.desc_gpa = desc;
	vq.avail_gpa = avail;
	vq.used_gpa = used;
	vq.indirect = indirect;
	vq.event_idx = event_idx;
	if (virtq_enable(&vq, 256) < 0)
		return 0;
	struct iovec iov[64];
	struct virtq_chain chain = { .iov = iov, .cap = 64 };
	uint8_t scratch[64];
	for (int round = 0; round < 2 * qsize + 2; round++) {
		int r = virtq_pop(&vq, &chain);
		if (r <= 0)
			break;
		/* Touch every mapped byte the way a device would. */
		uint64_t n = virtq_chain_read(&chain, 0, scratch, sizeof(scratch));
		for (unsigned i = 0; i < chain.nr_out + chain.nr_in; i++)
			for (size_t b = 0; b < chain.iov[i].iov_len; b += 4096)
				((volatile uint8_t *)chain.iov[i].iov_base)[b];
		virtq_chain_write(&chain, chain.in_len > 8 ? chain.in_len - 8 : 0, scratch, n);
		virtq_push(&vq, chain.head, (uint32_t)chain.in_len);
		virtq_should_notify(&vq);
		virtq_enable_notify(&vq);
	}
	virtq_reset(&vq);
	return 0;
}
