/* Creates the PCI host bridge and the virtio devices of a VM (docs/platform.md). */
#include "virtio/devices.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pci/pci.h"
#include "pci/pci_acpi.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "vm.h"

struct virtio_devices {
	struct pci_host host;
	struct pci_acpi_info acpi;
	struct virtio_blk *disks[CONFIG_MAX_DISKS];
	unsigned nr_disks;
	void *rng;
	struct virtio_net *nets[CONFIG_MAX_NICS];
	unsigned nr_nets;
};

/* -d disks in order, then the seed's simscsi=PREFIX: PREFIXa, PREFIXb, ... while they exist. */
static int virtio_devices_add_disks(struct vm *vm, struct virtio_devices *d)
{
	struct disk_config extra;
	const struct vm_config *cfg = &vm->cfg;
	unsigned total = cfg->nr_disks;
	for (unsigned i = 0; i < total + 26 && d->nr_disks < CONFIG_MAX_DISKS; i++) {
		const struct disk_config *dc = &cfg->disks[i < total ? i : 0];
		if (i >= total) {
			if (!cfg->simscsi_prefix[0])
				break;
			memset(&extra, 0, sizeof(extra));
			size_t n = strnlen(cfg->simscsi_prefix, sizeof(extra.path) - 2);
			memcpy(extra.path, cfg->simscsi_prefix, n);
			extra.path[n] = (char)('a' + (i - total));
			if (access(extra.path, F_OK) != 0)
				break;
			dc = &extra;
		}
		d->disks[d->nr_disks] = virtio_blk_create(vm, &d->host, dc, d->nr_disks);
		if (!d->disks[d->nr_disks])
			return -EINVAL;
		d->nr_disks++;
	}
	return 0;
}

static int virtio_devices_msi(void *opaque, uint64_t address, uint32_t data)
{
	struct vm *vm = opaque;
	return vm_irq_msi(vm, address, data);
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
	d->host.trace = &vm->trace;
	d->acpi = (struct pci_acpi_info){ .ecam_base = PCI_ECAM_BASE, .bus_end = 255,
					  .mmio32_base = PCI_MMIO32_BASE,
					  .mmio32_size = PCI_MMIO32_SIZE, .mmio64_base = top,
					  .mmio64_size = PCI_MMIO64_SIZE };
	ret = virtio_devices_add_disks(vm, d);
	if (ret < 0)
		return ret;
	d->rng = virtio_rng_create(vm, &d->host);
	if (!d->rng)
		return -ENOMEM;
	/* -n NICs (and simeth=) in order: eth0, eth1, ... in the guest. */
	for (unsigned i = 0; i < vm->cfg.nr_nets; i++) {
		d->nets[i] = virtio_net_create(vm, &d->host, &vm->cfg.nets[i], i);
		if (!d->nets[i])
			return -EINVAL;
		d->nr_nets++;
	}
	return 0;
}

void virtio_devices_destroy(struct vm *vm)
{
	struct virtio_devices *d = vm->virtio;
	if (!d)
		return;
	/* The host first: it walks the PCI devices, which live inside the virtio devices. */
	pci_host_destroy(&d->host);
	for (unsigned i = 0; i < d->nr_disks; i++)
		virtio_blk_destroy(d->disks[i]);
	virtio_rng_destroy(d->rng);
	for (unsigned i = 0; i < d->nr_nets; i++)
		virtio_net_destroy(d->nets[i]);
	free(d);
	vm->virtio = NULL;
}

const struct pci_acpi_info *virtio_devices_acpi(struct vm *vm)
{
	return vm->virtio ? &vm->virtio->acpi : NULL;
}

struct virtio_net *virtio_devices_net(struct vm *vm, unsigned index)
{
	return vm->virtio && index < vm->virtio->nr_nets ? vm->virtio->nets[index] : NULL;
}

void virtio_devices_format_stats(struct vm *vm, FILE *out)
{
	struct virtio_devices *d = vm->virtio;
	if (!d)
		return;
	for (unsigned i = 0; i < d->nr_disks; i++)
		virtio_blk_format_stats(d->disks[i], out);
	if (d->rng)
		virtio_rng_format_stats(d->rng, out);
	for (unsigned i = 0; i < d->nr_nets; i++)
		virtio_net_format_stats(d->nets[i], out);
}
