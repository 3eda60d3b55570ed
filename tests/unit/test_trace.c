/* Tracing, statistics and their options: category lists, the line format, -g/--gdb-wait. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "trace.h"
#include "test.h"

static void categories_parse_lists_all_and_removal(void)
{
	uint32_t m = 0;
	char err[256];
	CHECK(trace_parse_categories("pio", &m, err, sizeof(err)) == 0 && m == 1u << TRACE_PIO);
	CHECK(trace_parse_categories("pio,mmio,irq", &m, err, sizeof(err)) == 0 &&
	      m == ((1u << TRACE_PIO) | (1u << TRACE_MMIO) | (1u << TRACE_IRQ)));
	CHECK(trace_parse_categories("all", &m, err, sizeof(err)) == 0 && m == TRACE_ALL);
	CHECK(trace_parse_categories("all,-exit", &m, err, sizeof(err)) == 0 &&
	      m == (TRACE_ALL & ~(1u << TRACE_EXIT)));
	CHECK(trace_parse_categories("control,net,blk,virtio,pci,boot", &m, err, sizeof(err)) == 0);
	CHECK(trace_parse_categories("pio,bogus", &m, err, sizeof(err)) < 0 && strstr(err, "bogus"));
	CHECK(trace_parse_categories("", &m, err, sizeof(err)) < 0);
	CHECK(trace_parse_categories("pio,", &m, err, sizeof(err)) < 0);
	CHECK(trace_parse_categories("pi", &m, err, sizeof(err)) < 0);
}

static void a_trace_line_has_time_vcpu_category_and_text(void)
{
	char path[] = "/tmp/vmm-trace-test.XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	struct trace t = { .mask = TRACE_ALL, .fd = fd, .start_ns = trace_now_ns() };
	trace_write(&t, TRACE_PIO, 3, "out port 0x%x", 0x3f8);
	trace_write(&t, TRACE_BOOT, TRACE_HOST, "%s", "started");
	char big[2000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	trace_write(&t, TRACE_IRQ, 0, "%s", big); /* cut, but still one line */
	char buf[4096] = { 0 };
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	CHECK(n > 0);
	CHECK(strstr(buf, " vcpu3  pio     out port 0x3f8\n") != NULL);
	CHECK(strstr(buf, " host   boot    started\n") != NULL);
	unsigned lines = 0;
	for (char *p = buf; *p; p++)
		lines += *p == '\n';
	CHECK_EQ(lines, 3);
	CHECK(buf[0] == ' ' || (buf[0] >= '0' && buf[0] <= '9'));
	close(fd);
	unlink(path);
}

static int parse(struct vm_config *cfg, char *err, const char *const *args, int n)
{
	return config_parse_args(cfg, n, (char **)args, err, 256);
}

static void options_trace_stats_and_gdb(void)
{
	struct vm_config cfg;
	char err[256];
	const char *a1[] = { "-t", "pio,irq", "--trace-file", "/tmp/x", "--stats", "-g", "1234",
			     "--gdb-wait", "k" };
	CHECK(parse(&cfg, err, a1, 9) == 0);
	CHECK_EQ(cfg.trace_mask, (1u << TRACE_PIO) | (1u << TRACE_IRQ));
	CHECK(cfg.trace_path && !strcmp(cfg.trace_path, "/tmp/x"));
	CHECK(cfg.stats && cfg.gdb_wait && cfg.gdb_port == 1234);
	CHECK(!strcmp(cfg.gdb_host, "127.0.0.1"));
	CHECK_EQ(cfg.trace_fd, STDERR_FILENO);
	const char *a2[] = { "--gdb", "0.0.0.0:4321", "k" };
	CHECK(parse(&cfg, err, a2, 3) == 0 && cfg.gdb_port == 4321 && !strcmp(cfg.gdb_host, "0.0.0.0"));
	const char *a3[] = { "--gdb-wait", "k" };
	CHECK(parse(&cfg, err, a3, 2) < 0 && strstr(err, "--gdb"));
	const char *a4[] = { "-g", "99999", "k" };
	CHECK(parse(&cfg, err, a4, 3) < 0);
	const char *a5[] = { "-g", "host:", "k" };
	CHECK(parse(&cfg, err, a5, 3) < 0);
	const char *a6[] = { "--trace", "nothing", "k" };
	CHECK(parse(&cfg, err, a6, 3) < 0 && strstr(err, "nothing"));
	const char *a7[] = { "k" };
	CHECK(parse(&cfg, err, a7, 1) == 0 && cfg.trace_mask == 0 && !cfg.stats && !cfg.gdb_port);
}

int main(void)
{
	RUN_TEST(categories_parse_lists_all_and_removal);
	RUN_TEST(a_trace_line_has_time_vcpu_category_and_text);
	RUN_TEST(options_trace_stats_and_gdb);
	return TEST_EXIT();
}
