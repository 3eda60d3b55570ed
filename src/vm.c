/* VM lifecycle: create (memory, backend, devices, firmware tables, kernel, vCPUs), run, destroy. */
#include "vm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "acpi/acpi.h"
#include "boot/boot.h"
#include "devices/devices.h"
#include "gdb/gdb.h"
#include "vcpu.h"
#include "virtio/devices.h"

void vm_request_stop(struct vm *vm, enum vm_status status)
{
	bool expected = false;
	if (!atomic_compare_exchange_strong(&vm->stopping, &expected, true))
		return; /* the first reason to stop wins */
	atomic_store(&vm->status, (int)status);
	pthread_mutex_lock(&vm->pause_lock); /* wake parked vCPUs so they can exit */
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
	uint64_t one = 1;
	if (write(vm->stop_fd, &one, sizeof(one)) < 0) {
		/* cannot fail for an eventfd below its maximum */
	}
}

void vm_pause_begin(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	bool was_paused = atomic_exchange(&vm->paused, true);
	pthread_mutex_unlock(&vm->pause_lock);
	if (!was_paused)
		for (unsigned i = 0; i < vm->nr_vcpus; i++)
			vm->backend->vcpu_kick(&vm->vcpus[i]);
}

void vm_pause(struct vm *vm)
{
	vm_pause_begin(vm);
	pthread_mutex_lock(&vm->pause_lock);
	while (vm->parked < vm->nr_vcpus && !atomic_load(&vm->stopping))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	bool first = !vm->pause_complete;
	vm->pause_complete = true;
	pthread_mutex_unlock(&vm->pause_lock);
	if (first && vm->backend->vm_paused)
		vm->backend->vm_paused(vm);
}

void vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	bool was_paused = atomic_load(&vm->paused), complete = vm->pause_complete;
	pthread_mutex_unlock(&vm->pause_lock);
	if (!was_paused)
		return;
	if (complete && vm->backend->vm_resuming)
		vm->backend->vm_resuming(vm);
	pthread_mutex_lock(&vm->pause_lock);
	atomic_store(&vm->paused, false);
	vm->pause_complete = false;
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

int vm_add_idle_hook(struct vm *vm, bool (*fn)(void *opaque), void *opaque)
{
	if (vm->nr_idle_hooks >= VM_MAX_IDLE_HOOKS)
		return -ENOSPC;
	vm->idle_hooks[vm->nr_idle_hooks++] = (struct vm_idle_hook){ .fn = fn, .opaque = opaque };
	return 0;
}

bool vm_run_idle_hooks(struct vm *vm)
{
	bool any = false;
	for (unsigned i = 0; i < vm->nr_idle_hooks; i++)
		any |= vm->idle_hooks[i].fn(vm->idle_hooks[i].opaque);
	return any;
}

int vm_irq_line(struct vm *vm, unsigned gsi, bool level)
{
	if (level)
		__atomic_fetch_add(&vm->irq_stats.raised[gsi < STATS_MAX_GSI ? gsi : STATS_MAX_GSI], 1,
				   __ATOMIC_RELAXED);
	trace_event(vm, TRACE_IRQ, TRACE_HOST, "gsi %u %s", gsi, level ? "raise" : "lower");
	return vm->backend->irq_line(vm, gsi, level);
}

int vm_irq_msi(struct vm *vm, uint64_t address, uint32_t data)
{
	__atomic_fetch_add(&vm->irq_stats.msis, 1, __ATOMIC_RELAXED);
	trace_event(vm, TRACE_IRQ, TRACE_HOST, "msi address 0x%llx data 0x%x",
		    (unsigned long long)address, data);
	return vm->backend->irq_msi ? vm->backend->irq_msi(vm, address, data) : -ENOSYS;
}

int vm_irq_pulse(struct vm *vm, unsigned gsi)
{
	int ret = vm_irq_line(vm, gsi, true);
	return ret < 0 ? ret : vm_irq_line(vm, gsi, false);
}

static int vm_build_acpi(struct vm *vm, uint64_t *rsdp)
{
	const size_t area = 0x100000 - BOOT_ACPI_ADDR;
	uint8_t *buf = memory_gpa_to_host(&vm->mem, BOOT_ACPI_ADDR, area);
	struct acpi_config cfg = { .nr_cpus = vm->nr_vcpus, .ioapic_id = (uint8_t)vm->nr_vcpus,
				   .pci = virtio_devices_acpi(vm) };
	if (!buf || acpi_build(buf, area, BOOT_ACPI_ADDR, &cfg) < 0) {
		fprintf(stderr, "vmm: ACPI tables do not fit below 1 MiB\n");
		return -ENOSPC;
	}
	*rsdp = BOOT_ACPI_ADDR;
	return 0;
}

/* Which way a bzImage starts: --trace boot shows it (README, "Boot"). */
static void vm_trace_boot_path(struct vm *vm, const struct boot_report *rep, uint64_t ns)
{
	if (rep->direct)
		trace_event(
			vm, TRACE_BOOT, TRACE_HOST,
			"kernel: %s payload decompressed by vmm (%zu bytes, %.3f s); startup_64 at "
			"physical 0x%llx, virtual offset 0x%llx (%s)",
			rep->format, rep->decompressed, ns / 1e9, (unsigned long long)rep->phys,
			(unsigned long long)rep->virt_offset, rep->note);
	else if (rep->note[0])
		trace_event(vm, TRACE_BOOT, TRACE_HOST,
			    "kernel: decompresses itself in the guest (%s)", rep->note);
}

static int vm_load_kernel(struct vm *vm, const struct vm_images *img)
{
	uint64_t rsdp;
	int ret = vm_build_acpi(vm, &rsdp);
	if (ret < 0)
		return ret;
	char cmdline[CONFIG_MAX_CMDLINE + 64];
	snprintf(cmdline, sizeof(cmdline), "console=ttyS0%s%s", vm->cfg.cmdline[0] ? " " : "",
		 vm->cfg.cmdline);
	struct boot_params_in in = { .kernel = img->kernel,
				     .kernel_size = img->kernel_size,
				     .initrd = img->initrd,
				     .initrd_size = img->initrd_size,
				     .cmdline = cmdline,
				     .rsdp_addr = rsdp,
				     .decompress_in_guest = vm->cfg.decompress_in_guest };
	/* KASLR's two choices (physical, virtual). getrandom() of 16 bytes does not fail once the
	 * host's pool is ready; if it did, the clock still differs from boot to boot. */
	if (getrandom(in.random, sizeof(in.random), 0) != (ssize_t)sizeof(in.random))
		in.random[0] = in.random[1] = trace_now_ns();
	struct boot_report rep;
	char err[256];
	uint64_t t0 = trace_now_ns();
	if (boot_load(&vm->mem, &in, &vm->boot_state, &rep, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmm: %s: %s\n", vm->cfg.kernel_path, err);
		return -EINVAL;
	}
	trace_event(vm, TRACE_BOOT, TRACE_HOST, "kernel %s loaded (%zu bytes), initrd %zu bytes",
		    vm->cfg.kernel_path, img->kernel_size, img->initrd_size);
	vm_trace_boot_path(vm, &rep, trace_now_ns() - t0);
	return 0;
}

static int vm_create_vcpus(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		struct vcpu *v = &vm->vcpus[i];
		v->vm = vm;
		v->index = i;
		int ret = vm->backend->vcpu_init(v);
		if (ret < 0)
			return ret;
	}
	/* Only the boot CPU starts at the kernel entry; the others wait for INIT/SIPI. */
	return vm->backend->vcpu_set_state(&vm->vcpus[0], &vm->boot_state);
}

struct vm *vm_create(const struct vm_config *cfg, const struct cpu_backend *backend,
		     const struct vm_images *img, struct event_loop *loop, int console_out_fd)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		return NULL;
	vm->cfg = *cfg;
	vm->loop = loop;
	vm->trace = (struct trace){ .mask = cfg->trace_mask, .fd = cfg->trace_fd,
				    .start_ns = cfg->start_ns };
	trace_event(vm, TRACE_BOOT, TRACE_HOST, "creating the VM: %u vCPUs, %llu MiB, backend %s",
		    cfg->nr_cpus, (unsigned long long)(cfg->mem_size >> 20), backend->name);
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_cond_init(&vm->pause_cond, NULL);
	vm->backend = backend;
	vm->nr_vcpus = cfg->nr_cpus;
	vm->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	bus_init(&vm->pio, "pio");
	bus_init(&vm->mmio, "mmio");
	int ret = vm->stop_fd < 0 ? -errno : memory_init(&vm->mem, cfg->mem_size);
	if (ret < 0) {
		fprintf(stderr, "vmm: guest memory (%llu MiB): %s (use a smaller -m)\n",
			(unsigned long long)(cfg->mem_size >> 20), strerror(-ret));
		goto fail;
	}
	/* Each step prints its own message. */
	if (backend->vm_init(vm) < 0 || devices_init(vm, console_out_fd) < 0 ||
	    virtio_devices_init(vm) < 0 || vm_load_kernel(vm, img) < 0 || vm_create_vcpus(vm) < 0)
		goto fail;
	vm->created_ns = trace_now_ns();
	trace_event(vm, TRACE_BOOT, TRACE_HOST, "VM created; entry rip 0x%llx",
		    (unsigned long long)vm->boot_state.rip);
	return vm;
fail:
	vm_destroy(vm);
	return NULL;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	gdb_stop(vm);
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		if (vm->vcpus[i].vm && vm->backend->vcpu_destroy)
			vm->backend->vcpu_destroy(&vm->vcpus[i]);
	virtio_devices_destroy(vm);
	devices_destroy(vm);
	if (vm->backend)
		vm->backend->vm_destroy(vm);
	memory_destroy(&vm->mem);
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	if (vm->stop_fd >= 0)
		close(vm->stop_fd);
	pthread_mutex_destroy(&vm->pause_lock);
	pthread_cond_destroy(&vm->pause_cond);
	free(vm);
}

int vm_start_vcpus(struct vm *vm)
{
	if (vm->cfg.gdb_port && !vm->gdb && gdb_start(vm) < 0) {
		vm_request_stop(vm, VM_STATUS_ERROR);
		return -EADDRINUSE;
	}
	vm->started_ns = trace_now_ns();
	trace_event(vm, TRACE_BOOT, TRACE_HOST, "starting %u vCPUs", vm->nr_vcpus);
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		int ret = vcpu_start(&vm->vcpus[i]);
		if (ret < 0) {
			fprintf(stderr, "vmm: starting vCPU %u: %s\n", i, strerror(-ret));
			vm_request_stop(vm, VM_STATUS_ERROR);
			return ret;
		}
	}
	return 0;
}

void vm_stop_vcpus(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		vm->backend->vcpu_kick(&vm->vcpus[i]);
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		vcpu_join(&vm->vcpus[i]);
}
