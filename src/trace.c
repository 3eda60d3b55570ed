/* Trace lines: "<seconds since start> <vcpuN|host> <category> <text>". */
#include "trace.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const trace_names[TRACE_NR_CATEGORIES] = {
	[TRACE_BOOT] = "boot", [TRACE_EXIT] = "exit", [TRACE_PIO] = "pio",
	[TRACE_MMIO] = "mmio", [TRACE_PCI] = "pci",   [TRACE_VIRTIO] = "virtio",
	[TRACE_IRQ] = "irq",   [TRACE_NET] = "net",   [TRACE_BLK] = "blk",
	[TRACE_CONTROL] = "control",
};

const char *trace_category_name(enum trace_category cat)
{
	return (unsigned)cat < TRACE_NR_CATEGORIES ? trace_names[cat] : "?";
}

uint64_t trace_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void trace_write(const struct trace *t, enum trace_category cat, int vcpu, const char *fmt, ...)
{
	char line[512];
	uint64_t ns = trace_now_ns() - t->start_ns;
	char who[16];
	if (vcpu >= 0)
		snprintf(who, sizeof(who), "vcpu%d", vcpu);
	else
		snprintf(who, sizeof(who), "host");
	int n = snprintf(line, sizeof(line), "%5llu.%09llu %-6s %-7s ",
			 (unsigned long long)(ns / 1000000000ull),
			 (unsigned long long)(ns % 1000000000ull), who, trace_category_name(cat));
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2; /* truncated: still one whole line */
	line[len++] = '\n';
	ssize_t w = write(t->fd, line, len);
	(void)w; /* a trace that cannot be written must not stop the VM */
}

int trace_parse_categories(const char *text, uint32_t *mask, char *err, unsigned err_len)
{
	uint32_t m = 0;
	const char *p = text;
	if (!*p) {
		snprintf(err, err_len, "--trace: no category given");
		return -1;
	}
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		bool remove = len > 0 && *p == '-';
		const char *w = remove ? p + 1 : p;
		size_t wl = remove ? len - 1 : len;
		uint32_t bit = 0;
		if (wl == 3 && !strncmp(w, "all", 3))
			bit = TRACE_ALL;
		for (unsigned c = 0; !bit && c < TRACE_NR_CATEGORIES; c++)
			if (strlen(trace_names[c]) == wl && !strncmp(w, trace_names[c], wl))
				bit = 1u << c;
		if (!bit) {
			snprintf(err, err_len,
				 "--trace: unknown category '%.*s' (use a comma list of boot, exit, pio, mmio, pci, virtio, irq, net, blk, control, or all)",
				 (int)len, p);
			return -1;
		}
		m = remove ? m & ~bit : m | bit;
		if (!comma)
			break;
		p = comma + 1; /* an empty word after a comma is an unknown category */
	}
	*mask = m;
	return 0;
}
