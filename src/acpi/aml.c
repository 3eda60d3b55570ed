/* AML writer. PkgLength (ACPI 6.5 §20.2.4) is written in its 4-byte form while the body is
 * unknown, then shrunk to the smallest encoding by moving the body. */
#include "acpi/aml.h"

#include <string.h>

void aml_init(struct aml *a, uint8_t *buf, size_t cap)
{
	a->buf = buf;
	a->len = 0;
	a->cap = cap;
	a->overflow = 0;
}

void aml_bytes(struct aml *a, const void *data, size_t len)
{
	if (a->overflow || len > a->cap - a->len) {
		a->overflow = 1;
		return;
	}
	memcpy(a->buf + a->len, data, len);
	a->len += len;
}

void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

/* Names are 4-character segments; a leading '\' is the root prefix. Short segments pad with '_'. */
void aml_name_string(struct aml *a, const char *name)
{
	if (*name == '\\') {
		aml_byte(a, '\\');
		name++;
	}
	char seg[4] = { '_', '_', '_', '_' };
	for (int i = 0; i < 4 && name[i]; i++)
		seg[i] = name[i];
	aml_bytes(a, seg, 4);
}

void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0 || v == 1) {
		aml_byte(a, (uint8_t)v); /* ZeroOp, OneOp */
		return;
	}
	uint8_t op = v <= 0xFF ? 0x0A : v <= 0xFFFF ? 0x0B : v <= 0xFFFFFFFF ? 0x0C : 0x0E;
	unsigned n = op == 0x0A ? 1 : op == 0x0B ? 2 : op == 0x0C ? 4 : 8;
	aml_byte(a, op);
	for (unsigned i = 0; i < n; i++)
		aml_byte(a, (uint8_t)(v >> (8 * i)));
}

void aml_string(struct aml *a, const char *s)
{
	aml_byte(a, 0x0D);
	aml_bytes(a, s, strlen(s) + 1);
}

size_t aml_open(struct aml *a, const uint8_t *op, size_t op_len)
{
	aml_bytes(a, op, op_len);
	size_t mark = a->len;
	aml_bytes(a, "\0\0\0\0", 4);
	return mark;
}

void aml_close(struct aml *a, size_t mark)
{
	if (a->overflow)
		return;
	size_t body = a->len - (mark + 4);
	/* The encoded length counts the PkgLength bytes themselves. */
	unsigned n = body + 1 <= 63 ? 1 : body + 2 <= 0xFFF ? 2 : body + 3 <= 0xFFFFF ? 3 : 4;
	size_t total = body + n;
	memmove(a->buf + mark + n, a->buf + mark + 4, body);
	if (n == 1) {
		a->buf[mark] = (uint8_t)total;
	} else {
		a->buf[mark] = (uint8_t)(((n - 1) << 6) | (total & 0xF));
		for (unsigned i = 1; i < n; i++)
			a->buf[mark + i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
	}
	a->len = mark + n + body;
}
