/* The PC platform's legacy devices, created in one place (docs/platform.md). */
#include <errno.h>
#include <stdlib.h>

#include "devices/devices.h"
#include "vm.h"

int devices_init(struct vm *vm, int console_out_fd)
{
	struct devices *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	vm->devices = d;
	d->com1 = serial_create(vm, 0x3F8, 4, console_out_fd);
	d->pm = acpi_pm_create(vm);
	d->rtc = rtc_create(vm);
	d->i8042 = i8042_create(vm);
	d->pvpanic = pvpanic_create(vm);
	d->post = post_create(vm);
	d->debug_port = debug_port_create(vm);
	if (!d->com1 || !d->pm || !d->rtc || !d->i8042 || !d->pvpanic || !d->post ||
	    !d->debug_port)
		return -ENOMEM;
	return 0;
}

/* Called after every vCPU thread has stopped, so no device callback can run any more. */
void devices_destroy(struct vm *vm)
{
	struct devices *d = vm->devices;
	if (!d)
		return;
	serial_destroy(d->com1);
	acpi_pm_destroy(d->pm);
	free(d->rtc);
	free(d->i8042);
	free(d->pvpanic);
	free(d->post);
	debug_port_destroy(d->debug_port);
	free(d);
	vm->devices = NULL;
}
