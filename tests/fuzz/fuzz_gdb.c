/* libFuzzer target: arbitrary bytes from "the network side" through the gdb stub's framing and
 * command interpreter, against a fake two-vCPU target with 64 KiB of memory. Any crash, overflow
 * (ASan) or undefined behaviour (UBSan) is a bug. make fuzz; build-fuzz/fuzz_gdb -max_total_time=60 */
#include <stdint.h>
#include <string.h>

#include "gdb/packet.h"
#include "gdb/protocol.h"

struct fake {
	struct cpu_state st[2];
	uint8_t mem[65536];
};

static unsigned fake_threads(void *t)
{
	(void)t;
	return 2;
}
static int fake_get(void *t, unsigned n, struct cpu_state *st)
{
	if (n >= 2)
		__builtin_trap(); /* the interpreter must never pass a bad thread */
	*st = ((struct fake *)t)->st[n];
	return 0;
}
static int fake_set(void *t, unsigned n, const struct cpu_state *st)
{
	if (n >= 2)
		__builtin_trap();
	((struct fake *)t)->st[n] = *st;
	return 0;
}
static size_t fake_access(struct fake *f, uint64_t a, void *buf, size_t len, int w)
{
	if (a >= sizeof(f->mem))
		return 0;
	if (len > sizeof(f->mem) - a)
		len = sizeof(f->mem) - a;
	if (w)
		memcpy(f->mem + a, buf, len);
	else
		memcpy(buf, f->mem + a, len);
	return len;
}
static size_t fake_read(void *t, unsigned n, uint64_t a, void *buf, size_t len)
{
	(void)n;
	return fake_access(t, a, buf, len, 0);
}
static size_t fake_write(void *t, unsigned n, uint64_t a, const void *buf, size_t len)
{
	(void)n;
	return fake_access(t, a, (void *)buf, len, 1);
}
static const struct gdb_target_ops fake_ops = { fake_threads, fake_get, fake_set, fake_read,
						fake_write };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fake f;
	static struct gdb_parser parser;
	static struct gdb_session session;
	static char reply[GDB_PACKET_MAX + 1];
	static char framed[2 * GDB_PACKET_MAX + 8];
	memset(&f, 0, sizeof(f));
	gdb_parser_init(&parser);
	/* The first byte picks the mode and whether int3 or debug registers serve Z0. */
	uint8_t flags = size ? data[0] : 0;
	gdb_session_init(&session, &fake_ops, &f, flags & 1 ? GDB_X86_32 : GDB_X86_64, flags & 2,
			 flags & 4);
	for (size_t i = size ? 1 : 0; i < size; i++) {
		if (gdb_parser_feed(&parser, data[i]) != GDB_IN_PACKET)
			continue;
		if (parser.len > GDB_PACKET_MAX || parser.buf[parser.len] != '\0')
			__builtin_trap();
		size_t n;
		gdb_session_handle(&session, parser.buf, parser.len, reply, sizeof(reply), &n);
		if (n != SIZE_MAX) {
			if (n > GDB_PACKET_MAX)
				__builtin_trap();
			gdb_packet_encode(reply, n, framed, sizeof(framed));
		}
	}
	struct cpu_debug d;
	gdb_session_debug(&session, &d);
	if (d.nr_hw > CPU_DEBUG_MAX_HW)
		__builtin_trap();
	gdb_session_remove_all(&session);
	return 0;
}
