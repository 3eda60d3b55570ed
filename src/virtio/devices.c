/* Creates the PCI host bridge and the virtio devices of a VM (docs/platform.md). */
#include "virtio/devices.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pci/pci.h"
#include "pci/pci_acpi.h"
#include "vm.h"

struct virtio_devices {
	struct pci_host host;
	struct pci_acpi_info acpi;
};

static int virtio_devices_msi(void *opaque, uint64_t address, uint32_t data)
{
	struct vm *vm = opaque;
	return vm->backend->irq_msi ? vm->backend->irq_msi(vm, address, data) : -ENOSYS;
}

int virtio_devices_init(struct vm *vm)
{
	struct virtio_devices *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	vm->virtio = d;
	/* The 64-bit window starts at the first GiB boundary above all RAM. */
	uint64_t top = MEMORY_HIGH_BASE;
	for (unsigned i = 0; i < vm->mem.nr_regions; i++)
		if (vm->mem.regions[i].gpa + vm->mem.regions[i].size > top)
			top = vm->mem.regions[i].gpa + vm->mem.regions[i].size;
	top = (top + (1ull << 30) - 1) & ~((1ull << 30) - 1);
	int ret = pci_host_init(&d->host, &vm->pio, &vm->mmio, top, virtio_devices_msi, vm);
	if (ret < 0) {
		fprintf(stderr, "vmm: PCI host bridge: %s\n", strerror(-ret));
		return ret;
	}
	d->acpi = (struct pci_acpi_info){ .ecam_base = PCI_ECAM_BASE, .bus_end = 255,
					  .mmio32_base = PCI_MMIO32_BASE,
					  .mmio32_size = PCI_MMIO32_SIZE, .mmio64_base = top,
					  .mmio64_size = PCI_MMIO64_SIZE };
	return 0;
}

void virtio_devices_destroy(struct vm *vm)
{
	struct virtio_devices *d = vm->virtio;
	if (!d)
		return;
	pci_host_destroy(&d->host);
	free(d);
	vm->virtio = NULL;
}

const struct pci_acpi_info *virtio_devices_acpi(struct vm *vm)
{
	return vm->virtio ? &vm->virtio->acpi : NULL;
}
