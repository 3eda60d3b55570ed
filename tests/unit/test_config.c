/* Command-line parsing: sizes, options, the seed's maxcpus=, and the one-line errors. */
#include <string.h>

#include "config.h"
#include "test.h"

static int parse(struct vm_config *cfg, char *err, const char *const *args, int n)
{
	return config_parse_args(cfg, n, (char **)args, err, 256);
}

static void sizes_accept_units_and_reject_junk(void)
{
	uint64_t v;
	CHECK(config_parse_size("256M", &v) == 0 && v == 256ull << 20);
	CHECK(config_parse_size("2G", &v) == 0 && v == 2ull << 30);
	CHECK(config_parse_size("65536k", &v) == 0 && v == 64ull << 20);
	CHECK(config_parse_size("512MiB", &v) == 0 && v == 512ull << 20);
	CHECK(config_parse_size("1048576", &v) == 0 && v == 1048576);
	CHECK(config_parse_size("", &v) < 0);
	CHECK(config_parse_size("M", &v) < 0);
	CHECK(config_parse_size("-1G", &v) < 0);
	CHECK(config_parse_size("12X", &v) < 0);
	CHECK(config_parse_size("1.5G", &v) < 0);
	CHECK(config_parse_size("99999999999999999999", &v) < 0);
	CHECK(config_parse_size("20000000000T", &v) < 0);
}

static void defaults_and_kernel_arguments(void)
{
	struct vm_config c;
	char err[256];
	const char *a[] = { "bzImage", "quiet", "root=/dev/vda" };
	CHECK(parse(&c, err, a, 3) == 0);
	CHECK(!strcmp(c.kernel_path, "bzImage"));
	CHECK_EQ(c.mem_size, 256ull << 20);
	CHECK_EQ(c.nr_cpus, 1);
	CHECK(c.accel == ACCEL_AUTO);
	CHECK(!strcmp(c.cmdline, "quiet root=/dev/vda"));
}

static void options_before_the_kernel(void)
{
	struct vm_config c;
	char err[256];
	const char *a[] = { "-m", "1G", "--cpus", "2", "-i", "initrd.img", "--accel", "emu",
			    "-k", "--reboot=restart", "vmlinux", "-m", "not-an-option" };
	CHECK(parse(&c, err, a, 13) == 0);
	CHECK_EQ(c.mem_size, 1ull << 30);
	CHECK_EQ(c.nr_cpus, 2);
	CHECK(!strcmp(c.initrd_path, "initrd.img"));
	CHECK(c.accel == ACCEL_EMU);
	CHECK(c.keep);
	CHECK(c.reboot == REBOOT_RESTART);
	/* everything after the kernel belongs to the kernel */
	CHECK(!strcmp(c.cmdline, "-m not-an-option"));
}

static void maxcpus_sets_the_count_unless_cpus_given(void)
{
	struct vm_config c;
	char err[256];
	const char *a[] = { "vmlinux", "maxcpus=2" };
	CHECK(parse(&c, err, a, 2) == 0);
	CHECK_EQ(c.nr_cpus, 2);
	CHECK(!strcmp(c.cmdline, "maxcpus=2"));
	const char *b[] = { "-c", "3", "vmlinux", "maxcpus=2" };
	CHECK(parse(&c, err, b, 4) == 0);
	CHECK_EQ(c.nr_cpus, 3);
	const char *bad[] = { "vmlinux", "maxcpus=0" };
	CHECK(parse(&c, err, bad, 2) < 0);
	CHECK(strstr(err, "maxcpus=0") != NULL);
}

static void errors_name_the_problem(void)
{
	struct vm_config c;
	char err[256];
	const char *none[] = { "-m", "1G" };
	CHECK(parse(&c, err, none, 2) < 0 && strstr(err, "no kernel given"));
	const char *zero[] = { "-c", "0", "k" };
	CHECK(parse(&c, err, zero, 3) < 0 && strstr(err, "--cpus 0"));
	const char *many[] = { "-c", "65", "k" };
	CHECK(parse(&c, err, many, 3) < 0 && strstr(err, "1 to 64"));
	const char *mem[] = { "-m", "lots", "k" };
	CHECK(parse(&c, err, mem, 3) < 0 && strstr(err, "--memory lots"));
	const char *unknown[] = { "--frobnicate", "k" };
	CHECK(parse(&c, err, unknown, 2) < 0 && strstr(err, "--frobnicate: unknown option"));
	const char *ushort[] = { "-z", "k" };
	CHECK(parse(&c, err, ushort, 2) < 0 && strstr(err, "-z: unknown option"));
	const char *missing[] = { "-m" };
	CHECK(parse(&c, err, missing, 1) < 0 && strstr(err, "needs a value"));
	const char *accel[] = { "--accel", "xen", "k" };
	CHECK(parse(&c, err, accel, 3) < 0 && strstr(err, "use kvm, emu or auto"));
	const char *reboot[] = { "--reboot", "maybe", "k" };
	CHECK(parse(&c, err, reboot, 3) < 0 && strstr(err, "exit or restart"));
	const char *decompress[] = { "--kernel-decompress", "bios", "k" };
	CHECK(parse(&c, err, decompress, 3) < 0 && strstr(err, "use host or guest"));
	const char *host[] = { "--kernel-decompress=host", "k" };
	CHECK(parse(&c, err, host, 2) == 0 && !c.decompress_in_guest);
	const char *guest[] = { "--kernel-decompress", "guest", "k" };
	CHECK(parse(&c, err, guest, 3) == 0 && c.decompress_in_guest);
	const char *slash[] = { "--name", "a/b", "k" };
	CHECK(parse(&c, err, slash, 3) < 0 && strstr(err, "--name a/b: not a VM name"));
	const char *dot[] = { "--name", ".a", "k" };
	CHECK(parse(&c, err, dot, 3) < 0 && strstr(err, "not a VM name"));
	const char *good[] = { "--name", "web-1.test_a", "k" };
	CHECK(parse(&c, err, good, 3) == 0 && !strcmp(c.name, "web-1.test_a"));
	const char *dflt[] = { "k" };
	CHECK(parse(&c, err, dflt, 1) == 0 && c.poll_max_ns == 0);
	const char *off[] = { "--poll-max-us", "0", "k" };
	CHECK(parse(&c, err, off, 3) == 0 && c.poll_max_ns == 0);
	const char *poll[] = { "--poll-max-us=50", "k" };
	CHECK(parse(&c, err, poll, 2) == 0 && c.poll_max_ns == 50000);
	const char *big[] = { "--poll-max-us", "10001", "k" };
	CHECK(parse(&c, err, big, 3) < 0 && strstr(err, "--poll-max-us 10001: not a number"));
	const char *neg[] = { "--poll-max-us", "-5", "k" };
	CHECK(parse(&c, err, neg, 3) < 0 && strstr(err, "0 turns polling off"));
	const char *always[] = { "--poll-max-us", "100,always", "k" };
	CHECK(parse(&c, err, always, 3) == 0 && c.poll_max_ns == 100000 && c.poll_always);
	CHECK(parse(&c, err, poll, 2) == 0 && !c.poll_always);
	const char *sometimes[] = { "--poll-max-us", "100,sometimes", "k" };
	CHECK(parse(&c, err, sometimes, 3) < 0 && strstr(err, "optionally followed by ,always"));
	const char *word[] = { "--poll-max-us", "fast", "k" };
	CHECK(parse(&c, err, word, 3) < 0 && strstr(err, "--poll-max-us fast"));
}

static void help_and_version_need_no_kernel(void)
{
	struct vm_config c;
	char err[256];
	const char *h[] = { "--help" };
	CHECK(parse(&c, err, h, 1) == 0 && c.show_help);
	const char *v[] = { "--version" };
	CHECK(parse(&c, err, v, 1) == 0 && c.show_version);
}

static void overlong_command_line_is_refused(void)
{
	struct vm_config c;
	char err[256];
	static char big[CONFIG_MAX_CMDLINE + 10];
	memset(big, 'x', sizeof(big) - 1);
	const char *a[] = { "k", big };
	CHECK(parse(&c, err, a, 2) < 0 && strstr(err, "longer than"));
}

int main(void)
{
	RUN_TEST(sizes_accept_units_and_reject_junk);
	RUN_TEST(defaults_and_kernel_arguments);
	RUN_TEST(options_before_the_kernel);
	RUN_TEST(maxcpus_sets_the_count_unless_cpus_given);
	RUN_TEST(errors_name_the_problem);
	RUN_TEST(help_and_version_need_no_kernel);
	RUN_TEST(overlong_command_line_is_refused);
	return TEST_EXIT();
}
