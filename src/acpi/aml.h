/* A small AML (ACPI Machine Language) writer for the DSDT: enough for names, packages, devices
 * and resource templates. ACPI 6.5 §20 (AML specification). */
#ifndef VMM_AML_H
#define VMM_AML_H

#include <stddef.h>
#include <stdint.h>

struct aml {
	uint8_t *buf;
	size_t len, cap;
	int overflow; /* set when a write did not fit; the result is then unusable */
};

void aml_init(struct aml *a, uint8_t *buf, size_t cap);
void aml_bytes(struct aml *a, const void *data, size_t len);
void aml_byte(struct aml *a, uint8_t b);
void aml_name_string(struct aml *a, const char *name); /* "\\_SB_", "PEVT", "_HID" */
void aml_integer(struct aml *a, uint64_t value);
void aml_string(struct aml *a, const char *s);
/* A PkgLength-prefixed construct: aml_open() writes the opcode bytes and reserves the length;
 * aml_close() fills it in once the body is written. Nesting is by the returned mark. */
size_t aml_open(struct aml *a, const uint8_t *op, size_t op_len);
void aml_close(struct aml *a, size_t mark);

#endif
