/* The gdb stub's pure parts: framing and checksums, the command interpreter against a fake
 * target, register layout and the page-table walk. */
#include <stdlib.h>
#include <string.h>

#include "gdb/packet.h"
#include "gdb/protocol.h"
#include "gdb/x86.h"
#include "test.h"

static enum gdb_input feed(struct gdb_parser *p, const char *s, size_t n)
{
	enum gdb_input last = GDB_IN_NONE;
	for (size_t i = 0; i < n; i++) {
		enum gdb_input r = gdb_parser_feed(p, (uint8_t)s[i]);
		if (r != GDB_IN_NONE)
			last = r;
	}
	return last;
}

static void framing_checksums_escapes_and_acks(void)
{
	static struct gdb_parser p;
	gdb_parser_init(&p);
	CHECK_EQ(feed(&p, "$g#67", 5), GDB_IN_PACKET);
	CHECK(p.len == 1 && !strcmp(p.buf, "g"));
	CHECK_EQ(feed(&p, "$g#68", 5), GDB_IN_BAD_CHECKSUM);
	CHECK_EQ(feed(&p, "$g#zz", 5), GDB_IN_BAD_CHECKSUM);
	CHECK_EQ(feed(&p, "+", 1), GDB_IN_ACK);
	CHECK_EQ(feed(&p, "-", 1), GDB_IN_NAK);
	CHECK_EQ(feed(&p, "\x03", 1), GDB_IN_INTERRUPT);
	/* "}]" is an escaped '}' (0x7d ^ 0x20 = 0x5d): the checksum covers the raw bytes. */
	char framed[64];
	size_t n = gdb_packet_encode("X1,1:}#$*", 9, framed, sizeof(framed));
	CHECK(n > 0);
	CHECK(memchr(framed + 1, '$', n - 1) == NULL);
	CHECK_EQ(feed(&p, framed, n), GDB_IN_PACKET);
	CHECK(p.len == 9 && !memcmp(p.buf, "X1,1:}#$*", 9));
	CHECK_EQ(gdb_packet_encode("OK", 2, framed, sizeof(framed)), 6);
	CHECK(!memcmp(framed, "$OK#9a", 6));
	CHECK_EQ(gdb_packet_encode("OK", 2, framed, 5), 0); /* does not fit: nothing */
	/* A '$' inside a packet restarts; noise between packets is ignored. */
	CHECK_EQ(feed(&p, "xx$abc$g#67", 11), GDB_IN_PACKET);
	CHECK(!strcmp(p.buf, "g"));
}

static void overlong_packets_are_dropped_whole(void)
{
	static struct gdb_parser p;
	gdb_parser_init(&p);
	size_t n = GDB_PACKET_MAX + 100;
	char *big = malloc(n + 8);
	big[0] = '$';
	memset(big + 1, 'a', n);
	unsigned sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += 'a';
	snprintf(big + n + 1, 4, "#%02x", sum & 0xFF);
	CHECK_EQ(feed(&p, big, n + 4), GDB_IN_OVERFLOW);
	CHECK_EQ(p.len, 0);
	CHECK_EQ(feed(&p, "$g#67", 5), GDB_IN_PACKET); /* and the next one is fine */
	free(big);
}

static void hex_numbers_are_bounded(void)
{
	const char *s = "1234abcd,10";
	uint64_t v;
	CHECK(gdb_parse_hex(&s, &v) && v == 0x1234abcd && *s == ',');
	s = "11112222333344445";
	CHECK(!gdb_parse_hex(&s, &v)); /* 17 digits */
	s = "xyz";
	CHECK(!gdb_parse_hex(&s, &v));
	uint8_t b[2];
	CHECK(gdb_hex_decode("0aFf", 2, b) && b[0] == 0x0a && b[1] == 0xff);
	CHECK(!gdb_hex_decode("0g", 1, b));
	CHECK(!gdb_hex_decode("0", 1, b));
}

/* A fake machine: two vCPUs, 64 KiB of "virtual = physical" memory. */
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
	*st = ((struct fake *)t)->st[n];
	return 0;
}
static int fake_set(void *t, unsigned n, const struct cpu_state *st)
{
	((struct fake *)t)->st[n] = *st;
	return 0;
}
static size_t fake_access(struct fake *f, uint64_t a, void *buf, size_t len, bool w)
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
	return fake_access(t, a, buf, len, false);
}
static size_t fake_write(void *t, unsigned n, uint64_t a, const void *buf, size_t len)
{
	(void)n;
	return fake_access(t, a, (void *)buf, len, true);
}
static const struct gdb_target_ops fake_ops = { fake_threads, fake_get, fake_set, fake_read,
						fake_write };

static char reply[GDB_PACKET_MAX + 1];
static size_t reply_len;

static enum gdb_action cmd(struct gdb_session *s, const char *p)
{
	enum gdb_action a = gdb_session_handle(s, p, strlen(p), reply, sizeof(reply), &reply_len);
	if (reply_len != SIZE_MAX)
		reply[reply_len] = '\0';
	return a;
}

static void commands_against_a_fake_target(void)
{
	static struct fake f;
	static struct gdb_session s;
	memset(&f, 0, sizeof(f));
	f.st[0].gpr[CPU_RAX] = 0x1122334455667788ull;
	f.st[0].rip = 0x1000;
	f.st[1].rip = 0x2000;
	gdb_session_init(&s, &fake_ops, &f, GDB_X86_64, true, false);
	cmd(&s, "qSupported:multiprocess+;swbreak+;hwbreak+");
	CHECK(strstr(reply, "PacketSize=4000") && strstr(reply, "qXfer:features:read+"));
	cmd(&s, "qXfer:features:read:target.xml:0,40");
	CHECK(reply[0] == 'm' && strstr(reply, "<?xml"));
	cmd(&s, "qfThreadInfo");
	CHECK(!strcmp(reply, "m1,2"));
	cmd(&s, "g");
	CHECK_EQ(reply_len, 2 * gdb_x86_regs_size(GDB_X86_64));
	CHECK(!strncmp(reply, "8877665544332211", 16)); /* rax, little-endian */
	cmd(&s, "p10"); /* rip */
	CHECK(!strcmp(reply, "0010000000000000"));
	cmd(&s, "Hg2");
	cmd(&s, "p10");
	CHECK(!strcmp(reply, "0020000000000000"));
	cmd(&s, "P10=0030000000000000");
	CHECK(!strcmp(reply, "OK") && f.st[1].rip == 0x3000);
	cmd(&s, "Hg3");
	CHECK(!strcmp(reply, "E22"));
	cmd(&s, "M100,4:deadbeef");
	CHECK(!strcmp(reply, "OK") && f.mem[0x100] == 0xde && f.mem[0x103] == 0xef);
	cmd(&s, "m100,4");
	CHECK(!strcmp(reply, "deadbeef"));
	cmd(&s, "m100,zz");
	CHECK(!strcmp(reply, "E22"));
	cmd(&s, "mffffffffffffffff,4");
	CHECK(!strcmp(reply, "E14"));
	/* A software breakpoint patches int3 but reads back the original byte. */
	cmd(&s, "Z0,101,1");
	CHECK(!strcmp(reply, "OK") && f.mem[0x101] == 0xCC);
	cmd(&s, "m100,2");
	CHECK(!strcmp(reply, "dead"));
	cmd(&s, "z0,101,1");
	CHECK(!strcmp(reply, "OK") && f.mem[0x101] == 0xad);
	/* Hardware: four slots; watchpoints must be aligned. */
	for (int i = 0; i < 4; i++) {
		char z[32];
		snprintf(z, sizeof(z), "Z1,%x,1", 0x200 + i);
		cmd(&s, z);
		CHECK(!strcmp(reply, "OK"));
	}
	cmd(&s, "Z2,300,4");
	CHECK(!strcmp(reply, "E28"));
	cmd(&s, "z1,200,1");
	cmd(&s, "Z2,301,4");
	CHECK(!strcmp(reply, "E22"));
	cmd(&s, "Z2,300,4");
	CHECK(!strcmp(reply, "OK"));
	struct cpu_debug d;
	gdb_session_debug(&s, &d);
	CHECK(d.enabled && d.nr_hw == 4 && !d.sw_breakpoints);
	struct vcpu_exit ex = { .reason = VCPU_EXIT_DEBUG };
	ex.debug.exception = 1;
	ex.debug.dr6 = 1u << 0; /* DR0: the freed first slot now holds the watchpoint */
	gdb_session_set_stop(&s, 1, &ex);
	gdb_session_stop_reply(&s, reply, sizeof(reply));
	CHECK(!strcmp(reply, "T05watch:300;thread:2;"));
	CHECK_EQ(cmd(&s, "vCont;s:1;c"), GDB_ACTION_RESUME);
	CHECK(reply_len == SIZE_MAX && s.step_thread == 0);
	CHECK_EQ(cmd(&s, "c"), GDB_ACTION_RESUME);
	CHECK(s.step_thread == -1);
	CHECK_EQ(cmd(&s, "vCont;x"), GDB_ACTION_NONE);
	CHECK_EQ(cmd(&s, "D"), GDB_ACTION_DETACH);
	CHECK_EQ(cmd(&s, "k"), GDB_ACTION_KILL);
	cmd(&s, "qUnknownThing");
	CHECK(reply_len == 0);
	/* With int3 unusable, Z0 takes a debug register. */
	gdb_session_remove_all(&s);
	gdb_session_init(&s, &fake_ops, &f, GDB_X86_64, true, true);
	cmd(&s, "Z0,101,1");
	CHECK(!strcmp(reply, "OK") && f.mem[0x101] == 0xad);
	gdb_session_debug(&s, &d);
	CHECK(d.nr_hw == 1 && d.hw[0].type == CPU_HW_EXEC && d.hw[0].addr == 0x101);
	/* Without the backend op, breakpoints and steps are refused, not faked. */
	gdb_session_init(&s, &fake_ops, &f, GDB_X86_64, false, false);
	cmd(&s, "Z0,101,1");
	CHECK(!strcmp(reply, "E01"));
	CHECK_EQ(cmd(&s, "s"), GDB_ACTION_NONE);
}

static bool phys_read(void *opaque, uint64_t pa, void *buf, size_t len)
{
	uint8_t *mem = opaque;
	if (pa + len > (1u << 20))
		return false;
	memcpy(buf, mem + pa, len);
	return true;
}

static void page_walk_four_level_with_large_pages(void)
{
	uint8_t *mem = calloc(1, 1u << 20);
	uint64_t *pml4 = (uint64_t *)(mem + 0x1000), *pdpt = (uint64_t *)(mem + 0x2000),
		 *pd = (uint64_t *)(mem + 0x3000), *pt = (uint64_t *)(mem + 0x4000);
	uint64_t va = 0xFFFF800000000000ull; /* PML4 index 256 */
	pml4[256] = 0x2000 | 3;
	pdpt[0] = 0x3000 | 3;
	pd[0] = 0x4000 | 3; /* 4 KiB pages */
	pt[1] = 0x7000 | 3;
	pd[1] = 0x200000 | 0x83; /* a 2 MiB page */
	struct cpu_state st = { .cr0 = CR0_PG | CR0_PE, .cr3 = 0x1000, .cr4 = CR4_PAE,
				.efer = EFER_LMA | EFER_LME };
	uint64_t pa;
	CHECK(gdb_x86_translate(&st, va + 0x1234, &pa, phys_read, mem) == 0 && pa == 0x7234);
	CHECK(gdb_x86_translate(&st, va + 0x200000 + 0x12345, &pa, phys_read, mem) == 0 &&
	      pa == 0x212345);
	CHECK(gdb_x86_translate(&st, va + 0x2000, &pa, phys_read, mem) < 0); /* pt[2] absent */
	CHECK(gdb_x86_translate(&st, 0x1000, &pa, phys_read, mem) < 0); /* pml4[0] absent */
	st.cr0 = CR0_PE; /* no paging: physical */
	CHECK(gdb_x86_translate(&st, 0x1234, &pa, phys_read, mem) == 0 && pa == 0x1234);
	/* 32-bit paging with a 4 MiB page */
	uint32_t *pd32 = (uint32_t *)(mem + 0x5000);
	pd32[1] = 0x00800000 | 0x83;
	struct cpu_state st32 = { .cr0 = CR0_PG | CR0_PE, .cr3 = 0x5000, .cr4 = 1u << 4 };
	CHECK(gdb_x86_translate(&st32, 0x00401234, &pa, phys_read, mem) == 0 && pa == 0x00801234);
	free(mem);
}

static void registers_round_trip_in_both_modes(void)
{
	struct cpu_state st = { 0 };
	uint8_t b[16];
	for (int mode = GDB_X86_64; mode <= GDB_X86_32; mode++) {
		unsigned n = gdb_x86_nr_regs(mode);
		size_t total = 0;
		for (unsigned r = 0; r < n; r++)
			total += gdb_x86_reg_size(mode, r);
		CHECK_EQ(total, gdb_x86_regs_size(mode));
		char xml[8192];
		CHECK(gdb_x86_target_xml(mode, xml, sizeof(xml)) > 0);
		CHECK(strstr(xml, "org.gnu.gdb.i386.sse") != NULL);
		CHECK(strstr(xml, "org.gnu.gdb.i386.core") != NULL);
		CHECK_EQ(gdb_x86_target_xml(mode, xml, 100), 0);
	}
	st.gpr[CPU_RCX] = 0xAAAAAAAA00000000ull;
	memcpy(b, "\x11\x22\x33\x44", 4);
	CHECK(gdb_x86_reg_set(GDB_X86_32, &st, 1, b)); /* ecx: the upper half stays */
	CHECK_EQ(st.gpr[CPU_RCX], 0xAAAAAAAA44332211ull);
	CHECK(!gdb_x86_reg_set(GDB_X86_64, &st, 18, b)); /* cs: read-only */
	CHECK_EQ(gdb_x86_reg_size(GDB_X86_64, 1000), 0);
}

/* The x87/SSE registers from the FXSAVE image: gdb's full tag word from the abridged one (by the
 * registers' contents, TOP-relative), the FIP/FDP halves, XMM bytes, MXCSR; and back. */
static unsigned reg_index(enum gdb_x86_mode mode, const char *name)
{
	char xml[16384];
	gdb_x86_target_xml(mode, xml, sizeof(xml));
	unsigned n = 0;
	for (const char *p = xml; (p = strstr(p, "<reg name=\"")); p++, n++)
		if (!strncmp(p + 11, name, strlen(name)) && p[11 + strlen(name)] == '"')
			return n;
	return ~0u;
}

static void fpu_and_sse_registers_from_the_fxsave_image(void)
{
	struct cpu_state st = { 0 };
	uint8_t b[16];
	static const uint8_t one[10] = { 0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f }; /* 1.0 */
	st.fpu.fsw = 6u << 11; /* TOP = 6: ST(0) is R6, ST(1) R7, ST(2) R0 */
	st.fpu.ftw = 0x41; /* R6 and R0 in use */
	memcpy(st.fpu.st[0], one, 10); /* R6: valid */
	/* ST(2) = R0: zero */
	st.fpu.fip = 0x0000001100401234ull;
	st.fpu.fdp = 0x0000002200405678ull;
	st.fpu.fop = 0xfdb; /* only 11 bits exist */
	st.fpu.mxcsr = 0x1f80;
	st.fpu.mxcsr_mask = 0xffbf;
	st.fpu.xmm[15][0] = 0xaa;
	st.fpu.xmm[15][15] = 0x55;
	unsigned ftag = reg_index(GDB_X86_64, "ftag"), xmm15 = reg_index(GDB_X86_64, "xmm15"),
		 st0 = reg_index(GDB_X86_64, "st0"), mxcsr = reg_index(GDB_X86_64, "mxcsr");
	CHECK(ftag != ~0u && xmm15 != ~0u && st0 != ~0u && mxcsr != ~0u);
	gdb_x86_reg_get(GDB_X86_64, &st, ftag, b);
	CHECK_EQ(b[0] | b[1] << 8, 0xcffd); /* R0 zero (01), R6 valid (00), others empty (11) */
	gdb_x86_reg_get(GDB_X86_64, &st, reg_index(GDB_X86_64, "fiseg"), b);
	CHECK_EQ(b[0], 0x11);
	gdb_x86_reg_get(GDB_X86_64, &st, reg_index(GDB_X86_64, "fooff"), b);
	CHECK_EQ(b[0] | b[1] << 8 | b[2] << 16, 0x405678);
	gdb_x86_reg_get(GDB_X86_64, &st, reg_index(GDB_X86_64, "fop"), b);
	CHECK_EQ(b[0] | b[1] << 8, 0x7db);
	gdb_x86_reg_get(GDB_X86_64, &st, xmm15, b);
	CHECK(gdb_x86_reg_size(GDB_X86_64, xmm15) == 16 && b[0] == 0xaa && b[15] == 0x55);
	gdb_x86_reg_get(GDB_X86_64, &st, st0, b);
	CHECK(gdb_x86_reg_size(GDB_X86_64, st0) == 10 && !memcmp(b, one, 10));
	/* 32-bit mode has xmm0-7 only. */
	CHECK(reg_index(GDB_X86_32, "xmm7") != ~0u && reg_index(GDB_X86_32, "xmm8") == ~0u);
	/* Writes: the tag word back to the abridged form, MXCSR's reserved bits refused. */
	b[0] = 0xff, b[1] = 0x3f; /* R7 in use only */
	CHECK(gdb_x86_reg_set(GDB_X86_64, &st, ftag, b));
	CHECK_EQ(st.fpu.ftw, 0x80);
	memcpy(b, "\xff\xff\x00\x00", 4);
	CHECK(gdb_x86_reg_set(GDB_X86_64, &st, mxcsr, b));
	CHECK_EQ(st.fpu.mxcsr, 0xffbf);
	memset(b, 0x77, 16);
	CHECK(gdb_x86_reg_set(GDB_X86_64, &st, xmm15, b));
	CHECK_EQ(st.fpu.xmm[15][7], 0x77);
}

int main(void)
{
	RUN_TEST(framing_checksums_escapes_and_acks);
	RUN_TEST(fpu_and_sse_registers_from_the_fxsave_image);
	RUN_TEST(overlong_packets_are_dropped_whole);
	RUN_TEST(hex_numbers_are_bounded);
	RUN_TEST(commands_against_a_fake_target);
	RUN_TEST(page_walk_four_level_with_large_pages);
	RUN_TEST(registers_round_trip_in_both_modes);
	return TEST_EXIT();
}
