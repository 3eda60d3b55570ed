/* --stats and the control socket's stats request: everything the monitor counts, as text. */
#include "stats.h"

#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "virtio/devices.h"
#include "vm.h"

static const char *const exit_names[STATS_EXIT_REASONS] = {
	[VCPU_EXIT_NONE] = "kick",	   [VCPU_EXIT_IO] = "io",	[VCPU_EXIT_MMIO] = "mmio",
	[VCPU_EXIT_HLT] = "hlt",	   [VCPU_EXIT_SHUTDOWN] = "shutdown",
	[VCPU_EXIT_RESET] = "reset",	   [VCPU_EXIT_POWEROFF] = "poweroff",
	[VCPU_EXIT_INTERNAL] = "internal", [VCPU_EXIT_DEBUG] = "debug",
};

const char *stats_exit_name(unsigned reason)
{
	return reason < STATS_EXIT_REASONS && exit_names[reason] ? exit_names[reason] : "?";
}

static double stats_seconds(uint64_t ns)
{
	return (double)ns / 1e9;
}

static void stats_format_vcpus(struct vm *vm, FILE *out)
{
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		struct vcpu_stats *s = &vm->vcpus[i].stats;
		uint64_t total = 0;
		for (unsigned r = 0; r < STATS_EXIT_REASONS; r++)
			total += stats_load(s->exits[r]);
		fprintf(out, "vcpu%u: exits %llu (", i, (unsigned long long)total);
		const char *sep = "";
		for (unsigned r = 0; r < STATS_EXIT_REASONS; r++) {
			uint64_t n = stats_load(s->exits[r]);
			if (n) {
				fprintf(out, "%s%s %llu", sep, exit_names[r], (unsigned long long)n);
				sep = ", ";
			}
		}
		uint64_t guest = stats_load(s->guest_ns), monitor = stats_load(s->monitor_ns),
			 paused = stats_load(s->paused_ns);
		double busy = (double)(guest + monitor);
		fprintf(out, "); in guest %.6f s (%.1f%%), in monitor %.6f s, paused %.6f s\n",
			stats_seconds(guest), busy > 0 ? 100.0 * (double)guest / busy : 0.0,
			stats_seconds(monitor), stats_seconds(paused));
	}
}

static void stats_format_bus(struct bus *bus, FILE *out)
{
	pthread_rwlock_rdlock(&bus->lock);
	fprintf(out, "%s ranges (reads/writes dispatched):\n", bus->name);
	for (unsigned i = 0; i < bus->nr_ranges; i++) {
		const struct bus_range *r = &bus->ranges[i];
		uint64_t reads = __atomic_load_n(&r->reads, __ATOMIC_RELAXED);
		uint64_t writes = __atomic_load_n(&r->writes, __ATOMIC_RELAXED);
		if (!reads && !writes)
			continue;
		char span[48];
		snprintf(span, sizeof(span), "%#llx-%#llx", (unsigned long long)r->base,
			 (unsigned long long)(r->base + r->len - 1));
		fprintf(out, "  %-23s %-18s reads %llu, writes %llu\n", span, r->name ? r->name : "?",
			(unsigned long long)reads, (unsigned long long)writes);
	}
	fprintf(out, "  unclaimed: reads %llu, writes %llu\n",
		(unsigned long long)__atomic_load_n(&bus->unclaimed_reads, __ATOMIC_RELAXED),
		(unsigned long long)__atomic_load_n(&bus->unclaimed_writes, __ATOMIC_RELAXED));
	pthread_rwlock_unlock(&bus->lock);
}

static void stats_format_irqs(struct vm *vm, FILE *out)
{
	fprintf(out, "interrupts injected:");
	for (unsigned g = 0; g <= STATS_MAX_GSI; g++) {
		uint64_t n = __atomic_load_n(&vm->irq_stats.raised[g], __ATOMIC_RELAXED);
		if (n)
			fprintf(out, " gsi%s%u %llu,", g == STATS_MAX_GSI ? ">=" : " ", g,
				(unsigned long long)n);
	}
	fprintf(out, " msi %llu\n",
		(unsigned long long)__atomic_load_n(&vm->irq_stats.msis, __ATOMIC_RELAXED));
}

void stats_format(struct vm *vm, FILE *out)
{
	uint64_t now = trace_now_ns();
	fprintf(out, "vmm statistics: backend %s, %u vCPUs, %.6f s since the process started\n",
		vm->backend->name, vm->nr_vcpus, stats_seconds(now - vm->trace.start_ns));
	fprintf(out, "monitor set-up: VM created at %.6f s, vCPUs started at %.6f s\n",
		stats_seconds(vm->created_ns - vm->trace.start_ns),
		stats_seconds(vm->started_ns ? vm->started_ns - vm->trace.start_ns : 0));
	stats_format_vcpus(vm, out);
	stats_format_bus(&vm->pio, out);
	stats_format_bus(&vm->mmio, out);
	stats_format_irqs(vm, out);
	if (vm->backend->format_stats)
		vm->backend->format_stats(vm, out);
	if (vm->loop && vm->loop->poll.max_ns) {
		fprintf(out, "event loop polls for replies: ");
		poll_window_format(&vm->loop->poll, out);
		fputc('\n', out);
	}
	if (vm->virtio) {
		fprintf(out, "devices:\n");
		virtio_devices_format_stats(vm, out);
	}
	if (vm->devices)
		debug_port_format(vm->devices->debug_port, out);
}

size_t stats_format_buffer(struct vm *vm, char *buf, size_t len)
{
	char *text = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&text, &size);
	if (!f) {
		if (len)
			buf[0] = '\0';
		return 0;
	}
	stats_format(vm, f);
	fclose(f);
	if (len) {
		size_t n = size < len - 1 ? size : len - 1;
		memcpy(buf, text, n);
		buf[n] = '\0';
	}
	free(text);
	return size;
}
