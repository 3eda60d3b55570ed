/* Freestanding replacements for the libc functions we use (gcc may also emit calls to them). */
#include "lib.h"

void *memcpy(void *dst, const void *src, size_t len)
{
	uint8_t *d = dst;
	const uint8_t *s = src;

	while (len--)
		*d++ = *s++;
	return dst;
}

void *memset(void *dst, int value, size_t len)
{
	uint8_t *d = dst;

	while (len--)
		*d++ = (uint8_t)value;
	return dst;
}

int memcmp(const void *a, const void *b, size_t len)
{
	const uint8_t *x = a, *y = b;

	for (size_t i = 0; i < len; i++)
		if (x[i] != y[i])
			return x[i] - y[i];
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

size_t strnlen(const char *s, size_t max)
{
	size_t n = 0;

	while (n < max && s[n])
		n++;
	return n;
}

bool str_starts_with(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return false;
	return true;
}

bool str_copy_bounded(char *dst, size_t dst_size, const char *src, size_t max)
{
	size_t n = strnlen(src, max);
	size_t copy = n < dst_size - 1 ? n : dst_size - 1;

	memcpy(dst, src, copy);
	dst[copy] = '\0';
	return n < max && n < dst_size;
}

bool parse_uint(const char *text, size_t len, uint64_t *value)
{
	uint64_t v = 0;

	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9' || v > UINT64_MAX / 10)
			return false;
		v = v * 10 + (uint64_t)(text[i] - '0');
	}
	*value = v;
	return true;
}

bool parse_size(const char *text, size_t len, uint64_t *value)
{
	unsigned shift = 0;

	if (len > 0) {
		switch (text[len - 1]) {
		case 'K': case 'k': shift = 10; break;
		case 'M': case 'm': shift = 20; break;
		case 'G': case 'g': shift = 30; break;
		case 'T': case 't': shift = 40; break;
		}
	}
	if (shift && !parse_uint(text, len - 1, value))
		return false;
	if (!shift && !parse_uint(text, len, value))
		return false;
	if (*value > (UINT64_MAX >> shift))
		return false;
	*value <<= shift;
	return true;
}

/* Output buffer for vformat: always NUL-terminated, counts what would have been written. */
struct format_out {
	char *buf;
	size_t size;
	size_t len;
};

static void out_char(struct format_out *out, char c)
{
	if (out->len + 1 < out->size)
		out->buf[out->len] = c;
	out->len++;
}

static void out_number(struct format_out *out, uint64_t v, unsigned base, int width, char pad,
		       bool negative)
{
	char digits[24];
	int n = 0;

	do {
		digits[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	if (negative)
		digits[n++] = '-';
	while (width-- > n)
		out_char(out, pad);
	while (n)
		out_char(out, digits[--n]);
}

/* precision < 0: the whole string; else at most that many characters */
static void out_string(struct format_out *out, const char *s, int width, int precision)
{
	int n = (int)(precision < 0 ? strlen(s) : strnlen(s, (size_t)precision));

	for (int i = n; i < width; i++)
		out_char(out, ' ');
	for (int i = 0; i < n; i++)
		out_char(out, s[i]);
}

/* Handles one conversion after '%'; returns the position after it. */
static const char *format_one(struct format_out *out, const char *fmt, va_list *ap)
{
	char pad = ' ';
	int width = 0, precision = -1, longs = 0;

	if (*fmt == '0')
		pad = *fmt++;
	while (*fmt >= '0' && *fmt <= '9')
		width = width * 10 + (*fmt++ - '0');
	if (*fmt == '.') {
		precision = 0;
		while (*++fmt >= '0' && *fmt <= '9')
			precision = precision * 10 + (*fmt - '0');
	}
	while (*fmt == 'l')
		longs++, fmt++;

	switch (*fmt) {
	case 'd': {
		int64_t v = longs ? va_arg(*ap, int64_t) : va_arg(*ap, int);
		out_number(out, v < 0 ? -(uint64_t)v : (uint64_t)v, 10, width, pad, v < 0);
		break;
	}
	case 'u':
		out_number(out, longs ? va_arg(*ap, uint64_t) : va_arg(*ap, unsigned), 10, width,
			   pad, false);
		break;
	case 'x':
		out_number(out, longs ? va_arg(*ap, uint64_t) : va_arg(*ap, unsigned), 16, width,
			   pad, false);
		break;
	case 'p':
		out_string(out, "0x", 0, -1);
		out_number(out, (uint64_t)va_arg(*ap, void *), 16, width, pad, false);
		break;
	case 's': {
		const char *s = va_arg(*ap, const char *);
		out_string(out, s ? s : "(null)", width, precision);
		break;
	}
	case 'c':
		out_char(out, (char)va_arg(*ap, int));
		break;
	case '\0':
		return fmt;
	default:
		out_char(out, *fmt);
	}
	return fmt + 1;
}

int vformat(char *buf, size_t size, const char *fmt, va_list ap)
{
	struct format_out out = { buf, size, 0 };
	va_list args;

	va_copy(args, ap);
	while (*fmt) {
		if (*fmt != '%')
			out_char(&out, *fmt++);
		else
			fmt = format_one(&out, fmt + 1, &args);
	}
	va_end(args);
	if (size)
		buf[out.len < size ? out.len : size - 1] = '\0';
	return (int)out.len;
}

int format(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vformat(buf, size, fmt, ap);
	va_end(ap);
	return n;
}
