/* libFuzzer target: the input is the payload of a bzImage (`make fuzz`, then
 * build-fuzz/fuzz_boot -max_total_time=60 [corpus dir]). The setup header around it is valid and
 * LZ4 (the direct path, src/boot/direct.c), the first input byte chooses the kernel arguments
 * (KASLR or nokaslr), so the LZ4 decoder, the ELF parser, the relocation table and the placement
 * all see hostile bytes; ASan/UBSan catch any access outside the buffers or guest RAM. boot_load
 * may refuse the image or fall back to the kernel's own decompressor, nothing else. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "boot/boot.h"
#include "boot/lz4.h"

#define FUZZ_RAM (128ull << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct guest_memory mem;
	static int ready;
	if (!ready) {
		if (memory_init(&mem, FUZZ_RAM) < 0)
			return 0;
		ready = 1;
	}
	if (size < 1 || size > (1u << 20))
		return 0;
	/* One setup sector and the header, the LZ4 magic, then the input as the rest of the payload
	 * (its last 4 bytes are the decompressed size, as the kernel's build appends it). */
	size_t kernel_size = 1024 + 4 + size - 1;
	uint8_t *k = calloc(1, kernel_size);
	if (!k)
		return 0;
	k[0x1F1] = 1;
	k[0x1FE] = 0x55;
	k[0x1FF] = 0xAA;
	k[0x201] = 0x6A;
	memcpy(k + 0x202, "HdrS", 4);
	fuzz_put32(k + 0x206, 0x020F);
	fuzz_put32(k + 0x22C, 0x7FFFFFFF);
	fuzz_put32(k + 0x230, 0x200000);
	k[0x234] = 1;
	fuzz_put32(k + 0x236, 3);
	fuzz_put32(k + 0x238, 2048);
	fuzz_put32(k + 0x24C, (uint32_t)(4 + size - 1));
	fuzz_put32(k + 0x258, 0x1000000);
	fuzz_put32(k + 0x260, 0x4000000);
	fuzz_put32(k + 1024, LZ4_LEGACY_MAGIC);
	memcpy(k + 1028, data + 1, size - 1);
	struct boot_params_in in = { .kernel = k,
				     .kernel_size = kernel_size,
				     .cmdline = data[0] & 1 ? "nokaslr" : "console=ttyS0",
				     .random = { data[0], (uint64_t)data[0] << 7 } };
	struct cpu_state st;
	struct boot_report rep;
	char err[256];
	if (boot_load(&mem, &in, &st, &rep, err, sizeof(err)) < -1)
		abort();
	free(k);
	return 0;
}
