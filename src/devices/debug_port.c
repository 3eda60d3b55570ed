/* The boot-profiling debug port (docs/platform.md): the guest writes a line of text, one byte at
 * a time, to port 0x402; at its newline the monitor records the line with the time since the
 * process started. Writes of 2 or 4 bytes record a numeric code at once. --stats and the trace
 * (category boot) show the marks, so each stage of a boot can be timed from the monitor's side.
 * Port 0x80 is not used: Linux writes it for I/O delays. Reads return 0xE9, as QEMU's debugcon
 * does, so a guest can tell the port is there. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "devices/devices.h"
#include "vm.h"

#define DEBUG_PORT_READBACK 0xE9

struct debug_mark {
	uint64_t ns; /* since process start */
	char text[DEBUG_PORT_LINE_MAX + 1];
};

struct debug_port {
	struct vm *vm;
	pthread_mutex_t lock; /* guards everything below: vCPUs write, the stats reader reads */
	char line[DEBUG_PORT_LINE_MAX + 1];
	unsigned line_len;
	struct debug_mark marks[DEBUG_PORT_MAX_MARKS];
	unsigned nr_marks;
	uint64_t dropped; /* marks beyond DEBUG_PORT_MAX_MARKS */
};

static void debug_port_mark(struct debug_port *d, const char *text)
{
	uint64_t ns = trace_now_ns() - d->vm->trace.start_ns;
	if (d->nr_marks < DEBUG_PORT_MAX_MARKS) {
		struct debug_mark *m = &d->marks[d->nr_marks++];
		m->ns = ns;
		snprintf(m->text, sizeof(m->text), "%s", text);
	} else {
		d->dropped++;
	}
	trace_event(d->vm, TRACE_BOOT, TRACE_HOST, "debug port mark %llu.%06llu \"%s\"",
		    (unsigned long long)(ns / 1000000000ull),
		    (unsigned long long)(ns % 1000000000ull / 1000), text);
}

static void debug_port_io(void *owner, uint64_t offset, void *data, unsigned size, bool is_write)
{
	struct debug_port *d = owner;
	(void)offset;
	if (!is_write) {
		memset(data, DEBUG_PORT_READBACK, size);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (size == 1) {
		char c = *(char *)data;
		if (c == '\n') {
			d->line[d->line_len] = '\0';
			debug_port_mark(d, d->line);
			d->line_len = 0;
		} else if (c >= 0x20 && c < 0x7F && d->line_len < DEBUG_PORT_LINE_MAX) {
			d->line[d->line_len++] = c; /* longer lines are cut; control bytes dropped */
		}
	} else {
		uint32_t code = 0;
		memcpy(&code, data, size < 4 ? size : 4);
		char text[24];
		snprintf(text, sizeof(text), "code 0x%x", code);
		debug_port_mark(d, text);
	}
	pthread_mutex_unlock(&d->lock);
}

struct debug_port *debug_port_create(struct vm *vm)
{
	struct debug_port *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->vm = vm;
	pthread_mutex_init(&d->lock, NULL);
	if (bus_register(&vm->pio, DEBUG_PORT, 1, d, debug_port_io, "debug-port") < 0) {
		debug_port_destroy(d);
		return NULL;
	}
	return d;
}

void debug_port_destroy(struct debug_port *d)
{
	if (!d)
		return;
	pthread_mutex_destroy(&d->lock);
	free(d);
}

/* The marks with the time between consecutive ones: how long each stage of the boot took. */
void debug_port_format(struct debug_port *d, FILE *out)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	fprintf(out, "boot marks (debug port 0x%x; seconds since the process started, +since the previous mark):\n",
		DEBUG_PORT);
	uint64_t prev = 0;
	for (unsigned i = 0; i < d->nr_marks; i++) {
		const struct debug_mark *m = &d->marks[i];
		fprintf(out, "  %4llu.%06llu  +%llu.%06llu  %s\n",
			(unsigned long long)(m->ns / 1000000000ull),
			(unsigned long long)(m->ns % 1000000000ull / 1000),
			(unsigned long long)((m->ns - prev) / 1000000000ull),
			(unsigned long long)((m->ns - prev) % 1000000000ull / 1000), m->text);
		prev = m->ns;
	}
	if (!d->nr_marks)
		fprintf(out, "  (none: the guest wrote no line to port 0x%x)\n", DEBUG_PORT);
	if (d->dropped)
		fprintf(out, "  %llu more marks dropped (more than %d)\n",
			(unsigned long long)d->dropped, DEBUG_PORT_MAX_MARKS);
	pthread_mutex_unlock(&d->lock);
}
