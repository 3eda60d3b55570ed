/* Port 0x80, the POST code port: Linux writes it for I/O delays. Claiming it keeps those writes
 * out of the "unclaimed port" counts and traces. */
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "vm.h"

struct post {
	uint8_t last; /* the last code written, as a POST card would show */
};

static void post_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct post *p = owner;
	(void)offset;
	if (is_write)
		p->last = *(uint8_t *)data;
	else
		memset(data, p->last, size);
}

void *post_create(struct vm *vm)
{
	struct post *p = calloc(1, sizeof(*p));
	if (p && bus_register(&vm->pio, 0x80, 1, p, post_io, "post") < 0) {
		free(p);
		p = NULL;
	}
	return p;
}
