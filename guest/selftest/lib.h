/* The few C library pieces a freestanding kernel needs. */
#ifndef SELFTEST_LIB_H
#define SELFTEST_LIB_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define KiB 1024ul
#define MiB (1024ul * 1024)
#define GiB (1024ul * 1024 * 1024)

void *memcpy(void *dst, const void *src, size_t len);
void *memset(void *dst, int value, size_t len);
int memcmp(const void *a, const void *b, size_t len);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
bool str_starts_with(const char *s, const char *prefix);

/* Copy a NUL-terminated string of at most `max` bytes; false when it was not terminated. */
bool str_copy_bounded(char *dst, size_t dst_size, const char *src, size_t max);

/* "256M", "5G", "4096", "64K": true and *value on success. */
bool parse_size(const char *text, size_t len, uint64_t *value);
bool parse_uint(const char *text, size_t len, uint64_t *value);

/* printf subset: %s %c %d %u %x %p with l/ll, zero padding, width and %.Ns. */
int vformat(char *buf, size_t size, const char *fmt, va_list ap);
int format(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
