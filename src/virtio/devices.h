/* The VM's PCI host bridge and the virtio devices on it, created from the configuration. */
#ifndef VMM_VIRTIO_DEVICES_H
#define VMM_VIRTIO_DEVICES_H

#include <stdio.h>

struct vm;
struct pci_acpi_info;

/* Create the host bridge and every configured device; prints one line and returns a negative
 * errno on failure (e.g. a disk image that cannot be used). Main thread. */
int virtio_devices_init(struct vm *vm);
/* After every vCPU has stopped. */
void virtio_devices_destroy(struct vm *vm);
/* What ACPI must describe (MCFG, PCI0), or NULL without PCI. */
const struct pci_acpi_info *virtio_devices_acpi(struct vm *vm);

/* The index-th -n NIC, or NULL (tests and stats). */
struct virtio_net;
struct virtio_net *virtio_devices_net(struct vm *vm, unsigned index);

/* virtio-rng (rng.c): NULL after printing why. */
struct pci_host;
void *virtio_rng_create(struct vm *vm, struct pci_host *host);
void virtio_rng_destroy(void *rng);
void virtio_rng_format_stats(void *rng, FILE *out);

/* Per-device counters (requests, bytes, errors) for --stats and the control socket. */
void virtio_devices_format_stats(struct vm *vm, FILE *out);

#endif
