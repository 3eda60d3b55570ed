/* bzImage parsing: the setup header of the Linux/x86 boot protocol
 * (Documentation/arch/x86/boot.rst, "The real-mode kernel header"). */
#include <stdio.h>
#include <string.h>

#include "boot/boot.h"

#define HDR_SETUP_SECTS 0x1F1
#define HDR_BOOT_FLAG 0x1FE
#define HDR_JUMP 0x200
#define HDR_MAGIC 0x202
#define HDR_VERSION 0x206
#define HDR_LOADFLAGS 0x211
#define HDR_INITRD_ADDR_MAX 0x22C
#define HDR_KERNEL_ALIGNMENT 0x230
#define HDR_RELOCATABLE 0x234
#define HDR_XLOADFLAGS 0x236
#define HDR_CMDLINE_SIZE 0x238
#define HDR_PAYLOAD_OFFSET 0x248
#define HDR_PAYLOAD_LENGTH 0x24C
#define HDR_PREF_ADDRESS 0x258
#define HDR_INIT_SIZE 0x260
#define XLF_KERNEL_64 (1u << 0)

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return get16(p) | (uint32_t)get16(p + 2) << 16; }

int bzimage_parse(const uint8_t *data, size_t size, struct bzimage_info *info, char *err,
		  size_t err_len)
{
	memset(info, 0, sizeof(*info));
	if (size < 0x264 || memcmp(data + HDR_MAGIC, "HdrS", 4) != 0 ||
	    get16(data + HDR_BOOT_FLAG) != 0xAA55) {
		snprintf(err, err_len, "not a bzImage (no \"HdrS\" setup header)");
		return -1;
	}
	info->version = get16(data + HDR_VERSION);
	if (info->version < 0x020C) {
		snprintf(err, err_len, "boot protocol %u.%02u is too old (need 2.12 or newer)",
			 (unsigned)info->version >> 8, (unsigned)info->version & 0xFF);
		return -1;
	}
	info->xloadflags = get16(data + HDR_XLOADFLAGS);
	if (!(info->xloadflags & XLF_KERNEL_64)) {
		snprintf(err, err_len, "not a 64-bit kernel (no 64-bit entry point in the header)");
		return -1;
	}
	unsigned sects = data[HDR_SETUP_SECTS] ? data[HDR_SETUP_SECTS] : 4;
	info->setup_size = (size_t)(sects + 1) * 512;
	info->header_end = HDR_JUMP + 2 + data[HDR_JUMP + 1];
	if (info->setup_size >= size || info->header_end > info->setup_size) {
		snprintf(err, err_len, "truncated bzImage (%zu bytes, setup alone needs %zu)", size,
			 info->setup_size);
		return -1;
	}
	info->initrd_addr_max = get32(data + HDR_INITRD_ADDR_MAX);
	info->cmdline_size = get32(data + HDR_CMDLINE_SIZE);
	info->init_size = get32(data + HDR_INIT_SIZE);
	info->loadflags = data[HDR_LOADFLAGS];
	info->relocatable = data[HDR_RELOCATABLE] != 0;
	info->kernel_alignment = get32(data + HDR_KERNEL_ALIGNMENT);
	info->pref_address =
		get32(data + HDR_PREF_ADDRESS) | (uint64_t)get32(data + HDR_PREF_ADDRESS + 4) << 32;
	info->payload_offset = get32(data + HDR_PAYLOAD_OFFSET);
	info->payload_length = get32(data + HDR_PAYLOAD_LENGTH);
	size_t payload = size - info->setup_size;
	if (info->init_size < payload)
		info->init_size = (uint32_t)payload;
	return 0;
}
