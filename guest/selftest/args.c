/* Parses "selftest.key=value" words; other words belong to someone else and are ignored. */
#include "args.h"
#include "lib.h"

#define PREFIX "selftest."

static bool args_flag(const char *value, size_t len, bool *flag)
{
	uint64_t v;

	if (!parse_uint(value, len, &v) || v > 1)
		return false;
	*flag = v == 1;
	return true;
}

/* "10.77.0.2" into network byte order (first octet in the low byte, as it sits in memory). */
static bool args_ipv4(const char *value, size_t len, uint32_t *ip)
{
	uint32_t out = 0;
	size_t start = 0;

	for (unsigned octet = 0; octet < 4; octet++) {
		size_t end = start;
		uint64_t v;

		while (end < len && value[end] != '.')
			end++;
		if (end == start || (octet < 3) != (end < len) ||
		    !parse_uint(value + start, end - start, &v) || v > 255)
			return false;
		out |= (uint32_t)v << (8 * octet);
		start = end + 1;
	}
	*ip = out;
	return true;
}

static bool args_count(const char *value, size_t len, uint32_t max, uint32_t *out)
{
	uint64_t v;

	if (!parse_uint(value, len, &v) || v == 0 || v > max)
		return false;
	*out = (uint32_t)v;
	return true;
}

static bool args_apply(struct selftest_args *args, const char *key, size_t key_len,
		       const char *value, size_t value_len)
{
	uint64_t v;

#define KEY_IS(name) (key_len == sizeof(name) - 1 && !memcmp(key, name, key_len))
	if (KEY_IS("mem"))
		return parse_size(value, value_len, &args->mem) && args->mem > 0;
	if (KEY_IS("cpus")) {
		if (!parse_uint(value, value_len, &v) || v == 0 || v > 4096)
			return false;
		args->cpus = (uint32_t)v;
		return true;
	}
	if (KEY_IS("panic"))
		return args_flag(value, value_len, &args->panic);
	if (KEY_IS("triple"))
		return args_flag(value, value_len, &args->triple);
	if (KEY_IS("reboot"))
		return args_flag(value, value_len, &args->reboot);
	if (KEY_IS("quick"))
		return args_flag(value, value_len, &args->quick);
	if (KEY_IS("virtio"))
		return args_flag(value, value_len, &args->virtio);
	if (KEY_IS("hostile"))
		return args_flag(value, value_len, &args->hostile);
	if (KEY_IS("hold"))
		return args_flag(value, value_len, &args->hold);
	if (KEY_IS("net"))
		return args_flag(value, value_len, &args->net);
	if (KEY_IS("net_cpl0"))
		return args_flag(value, value_len, &args->net_cpl0);
	if (KEY_IS("net_ip"))
		return args_ipv4(value, value_len, &args->net_ip);
	if (KEY_IS("net_peer"))
		return args_ipv4(value, value_len, &args->net_peer);
	if (KEY_IS("net_port"))
		return args_count(value, value_len, 65535, &args->net_port);
	if (KEY_IS("net_frames"))
		return args_count(value, value_len, 100000000, &args->net_frames);
	if (KEY_IS("net_rounds"))
		return args_count(value, value_len, 100000, &args->net_rounds);
	if (KEY_IS("watch"))
		return args_flag(value, value_len, &args->watch);
	if (KEY_IS("disks")) {
		if (!parse_uint(value, value_len, &v) || v > 32)
			return false;
		args->disks = (uint32_t)v;
		args->disks_given = true;
		return true;
	}
	if (KEY_IS("serials")) {
		if (value_len >= sizeof(args->serials))
			return false;
		memcpy(args->serials, value, value_len);
		args->serials[value_len] = 0;
		args->have_serials = true;
		return true;
	}
	if (KEY_IS("diskbench"))
		return args_flag(value, value_len, &args->diskbench);
	if (KEY_IS("diskbench_verify"))
		return args_flag(value, value_len, &args->diskbench_verify);
	if (KEY_IS("diskbench_ms")) {
		if (!parse_uint(value, value_len, &v) || v == 0 || v > 600000)
			return false;
		args->diskbench_ms = (uint32_t)v;
		return true;
	}
	if (KEY_IS("diskbench_cpl")) {
		if (!parse_uint(value, value_len, &v) || (v != 0 && v != 3))
			return false;
		args->diskbench_cpl0 = v == 0;
		return true;
	}
#undef KEY_IS
	return false;
}

static void args_word(struct selftest_args *args, const char *word, size_t len)
{
	const size_t prefix_len = sizeof(PREFIX) - 1;
	size_t eq = prefix_len;

	if (len <= prefix_len || !str_starts_with(word, PREFIX))
		return;
	while (eq < len && word[eq] != '=')
		eq++;
	if (eq < len && args_apply(args, word + prefix_len, eq - prefix_len, word + eq + 1,
				   len - eq - 1))
		return;
	if (!args->error[0]) {
		char copy[64];

		str_copy_bounded(copy, sizeof(copy), word, len);
		format(args->error, sizeof(args->error), "bad argument '%s'", copy);
	}
}

void args_parse(struct selftest_args *args, const char *cmdline)
{
	memset(args, 0, sizeof(*args));
	while (*cmdline) {
		size_t len = 0;

		while (*cmdline == ' ' || *cmdline == '\t' || *cmdline == '\n')
			cmdline++;
		while (cmdline[len] && cmdline[len] != ' ' && cmdline[len] != '\t' &&
		       cmdline[len] != '\n')
			len++;
		if (len)
			args_word(args, cmdline, len);
		cmdline += len;
	}
}
