/* pvpanic, QEMU's ISA variant at 0x505: the guest announces a panic by writing bit 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "vm.h"

#define PVPANIC_PANICKED (1u << 0)
#define PVPANIC_CRASH_LOADED (1u << 1)

struct pvpanic {
	struct vm *vm;
};

static void pvpanic_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct pvpanic *p = owner;
	(void)offset;
	if (!is_write) {
		memset(data, 0, size);
		*(uint8_t *)data = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED; /* supported events */
		return;
	}
	uint8_t v = *(uint8_t *)data;
	if (v & PVPANIC_PANICKED) {
		fprintf(stderr, "vmm: guest panicked (pvpanic)\n");
		vm_request_stop(p->vm, VM_STATUS_PANIC);
	} else if (v & PVPANIC_CRASH_LOADED) {
		fprintf(stderr, "vmm: guest crashed, its crash kernel is taking over (pvpanic)\n");
	}
}

void *pvpanic_create(struct vm *vm)
{
	struct pvpanic *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->vm = vm;
	if (bus_register(&vm->pio, 0x505, 1, p, pvpanic_io, "pvpanic") < 0) {
		free(p);
		return NULL;
	}
	return p;
}
