/* i8042 keyboard controller, only as far as a PC without a keyboard needs: the status register
 * reads "nothing to read, ready to accept", and command 0xFE (pulse the reset line) resets. */
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "vm.h"

#define I8042_CMD_RESET 0xFE

struct i8042 {
	struct vm *vm;
};

static void i8042_data_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	(void)owner;
	(void)offset;
	if (!is_write)
		memset(data, 0, size); /* no keyboard: nothing to read */
}

static void i8042_command_io(void *owner, uint64_t offset, void *data, unsigned size,
			     bool is_write)
{
	struct i8042 *k = owner;
	(void)offset;
	if (!is_write)
		memset(data, 0, size); /* status: output buffer empty, input buffer empty */
	else if (size == 1 && *(uint8_t *)data == I8042_CMD_RESET)
		vm_request_stop(k->vm, VM_STATUS_REBOOT);
}

void *i8042_create(struct vm *vm)
{
	struct i8042 *k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->vm = vm;
	/* 0x61-0x63 (PIT/speaker side ports) are not the i8042's: two separate ranges. */
	if (bus_register(&vm->pio, 0x60, 1, k, i8042_data_io, "i8042-data") < 0 ||
	    bus_register(&vm->pio, 0x64, 1, k, i8042_command_io, "i8042-command") < 0) {
		bus_unregister(&vm->pio, 0x60, k);
		free(k);
		return NULL;
	}
	return k;
}
