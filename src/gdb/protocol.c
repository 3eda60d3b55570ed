/* GDB remote protocol commands (gdb manual, appendix "Remote Serial Protocol": "Packets",
 * "Stop Reply Packets", "General Query Packets", "Target Description Format"). Every number and
 * length in a packet is checked before use; unknown packets get the empty reply. */
#include "gdb/protocol.h"

#include <stdio.h>
#include <string.h>

#define GDB_MAX_MEM (GDB_PACKET_MAX / 2 - 16) /* an 'm' reply is two hex digits per byte */

void gdb_session_init(struct gdb_session *s, const struct gdb_target_ops *ops, void *target,
		      enum gdb_x86_mode mode, bool can_debug, bool sw_via_hw)
{
	memset(s, 0, sizeof(*s));
	s->ops = ops;
	s->target = target;
	s->mode = mode;
	s->can_debug = can_debug;
	s->sw_via_hw = sw_via_hw;
	s->step_thread = -1;
	s->stop = (struct gdb_stop){ .thread = 0, .signal = 5, .kind = GDB_STOP_PLAIN };
	s->xml_len = gdb_x86_target_xml(mode, s->xml, sizeof(s->xml));
}

static size_t put(char *reply, size_t cap, const char *text)
{
	size_t n = strlen(text);
	if (n >= cap)
		n = cap - 1;
	memcpy(reply, text, n);
	return n;
}

size_t gdb_session_stop_reply(const struct gdb_session *s, char *reply, size_t cap)
{
	char reason[48] = "";
	if (s->stop.kind == GDB_STOP_SWBREAK && s->swbreak_feature)
		snprintf(reason, sizeof(reason), "swbreak:;");
	else if (s->stop.kind == GDB_STOP_HWBREAK && s->hwbreak_feature)
		snprintf(reason, sizeof(reason), "hwbreak:;");
	else if (s->stop.kind == GDB_STOP_WATCH)
		snprintf(reason, sizeof(reason), "watch:%llx;", (unsigned long long)s->stop.addr);
	else if (s->stop.kind == GDB_STOP_AWATCH)
		snprintf(reason, sizeof(reason), "awatch:%llx;", (unsigned long long)s->stop.addr);
	int n = snprintf(reply, cap, "T%02x%sthread:%x;", s->stop.signal, reason, s->stop.thread + 1);
	return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

void gdb_session_debug(const struct gdb_session *s, struct cpu_debug *d)
{
	memset(d, 0, sizeof(*d));
	for (unsigned i = 0; i < GDB_MAX_SW_BREAKPOINTS; i++)
		d->sw_breakpoints |= s->sw[i].used;
	for (unsigned i = 0; i < CPU_DEBUG_MAX_HW; i++)
		if (s->hw[i].used) {
			d->hw[d->nr_hw].addr = s->hw[i].addr;
			d->hw[d->nr_hw].type = s->hw[i].type;
			d->hw[d->nr_hw].len = s->hw[i].len;
			d->nr_hw++;
		}
	d->enabled = d->sw_breakpoints || d->nr_hw;
}

void gdb_session_set_stop(struct gdb_session *s, unsigned thread, const struct vcpu_exit *exit)
{
	s->stop = (struct gdb_stop){ .thread = thread, .signal = 5, .kind = GDB_STOP_PLAIN };
	if (exit->debug.exception == 3) {
		s->stop.kind = GDB_STOP_SWBREAK;
		return;
	}
	/* #DB: DR6 bits 0-3 name the debug register that matched, in gdb_session_debug's order. */
	unsigned slot = 0;
	for (unsigned i = 0; i < CPU_DEBUG_MAX_HW; i++) {
		if (!s->hw[i].used)
			continue;
		if (exit->debug.dr6 & (1ull << slot)) {
			s->stop.addr = s->hw[i].addr;
			s->stop.kind = s->hw[i].type == CPU_HW_EXEC
					       ? (s->hw[i].from_z0 ? GDB_STOP_SWBREAK : GDB_STOP_HWBREAK)
				       : s->hw[i].type == CPU_HW_WRITE ? GDB_STOP_WATCH
								       : GDB_STOP_AWATCH;
			return;
		}
		slot++;
	}
}

/* "addr,len" (both hex); advances *p past them. */
static bool parse_addr_len(const char **p, uint64_t *addr, uint64_t *len)
{
	return gdb_parse_hex(p, addr) && *(*p)++ == ',' && gdb_parse_hex(p, len);
}

/* A thread id: "-1" (all), "0" (any) or a hex id; *thread = 0-based, or -1 for all/any. */
static bool parse_thread(const struct gdb_session *s, const char *p, int *thread)
{
	uint64_t id;
	if (p[0] == '-' && p[1] == '1' && p[2] == '\0') {
		*thread = -1;
		return true;
	}
	if (p[0] == 'p') /* multiprocess form pPID.TID: take the TID */
		return false;
	if (!gdb_parse_hex(&p, &id) || *p)
		return false;
	if (id == 0) {
		*thread = -1;
		return true;
	}
	if (id > s->ops->nr_threads(s->target))
		return false;
	*thread = (int)(id - 1);
	return true;
}

static size_t reply_regs(struct gdb_session *s, char *reply, size_t cap)
{
	struct cpu_state st;
	if (s->ops->get_state(s->target, s->thread_g, &st) < 0)
		return put(reply, cap, "E14");
	size_t o = 0;
	uint8_t bytes[16];
	for (unsigned r = 0; r < gdb_x86_nr_regs(s->mode); r++) {
		unsigned size = gdb_x86_reg_size(s->mode, r);
		if (o + 2 * size >= cap)
			break;
		gdb_x86_reg_get(s->mode, &st, r, bytes);
		o += gdb_hex_encode(bytes, size, reply + o);
	}
	return o;
}

static size_t write_regs(struct gdb_session *s, const char *hex, size_t len, char *reply,
			 size_t cap)
{
	struct cpu_state st;
	if (s->ops->get_state(s->target, s->thread_g, &st) < 0)
		return put(reply, cap, "E14");
	size_t off = 0;
	uint8_t bytes[16];
	for (unsigned r = 0; r < gdb_x86_nr_regs(s->mode); r++) {
		unsigned size = gdb_x86_reg_size(s->mode, r);
		if (off + 2 * size > len) /* gdb may send fewer registers than it knows */
			break;
		if (!gdb_hex_decode(hex + off, size, bytes))
			return put(reply, cap, "E22");
		gdb_x86_reg_set(s->mode, &st, r, bytes);
		off += 2 * size;
	}
	return put(reply, cap, s->ops->set_state(s->target, s->thread_g, &st) < 0 ? "E14" : "OK");
}

static size_t reply_one_reg(struct gdb_session *s, const char *p, char *reply, size_t cap)
{
	uint64_t n;
	struct cpu_state st;
	if (!gdb_parse_hex(&p, &n) || *p || n >= gdb_x86_nr_regs(s->mode))
		return put(reply, cap, "E22");
	if (s->ops->get_state(s->target, s->thread_g, &st) < 0)
		return put(reply, cap, "E14");
	uint8_t bytes[16];
	unsigned size = gdb_x86_reg_size(s->mode, (unsigned)n);
	gdb_x86_reg_get(s->mode, &st, (unsigned)n, bytes);
	return gdb_hex_encode(bytes, size, reply);
}

static size_t write_one_reg(struct gdb_session *s, const char *p, char *reply, size_t cap)
{
	uint64_t n;
	struct cpu_state st;
	uint8_t bytes[16];
	if (!gdb_parse_hex(&p, &n) || *p++ != '=' || n >= gdb_x86_nr_regs(s->mode))
		return put(reply, cap, "E22");
	unsigned size = gdb_x86_reg_size(s->mode, (unsigned)n);
	if (strlen(p) != 2 * size || !gdb_hex_decode(p, size, bytes))
		return put(reply, cap, "E22");
	if (s->ops->get_state(s->target, s->thread_g, &st) < 0)
		return put(reply, cap, "E14");
	if (!gdb_x86_reg_set(s->mode, &st, (unsigned)n, bytes))
		return put(reply, cap, "OK"); /* read-only here: accepted, unchanged */
	return put(reply, cap, s->ops->set_state(s->target, s->thread_g, &st) < 0 ? "E14" : "OK");
}

static size_t read_mem(struct gdb_session *s, const char *p, char *reply, size_t cap)
{
	uint64_t addr, len;
	uint8_t buf[GDB_MAX_MEM];
	if (!parse_addr_len(&p, &addr, &len) || *p)
		return put(reply, cap, "E22");
	if (len > sizeof(buf))
		len = sizeof(buf); /* gdb asks again for the rest */
	if (2 * len >= cap)
		len = (cap - 1) / 2;
	size_t done = s->ops->read_memory(s->target, s->thread_g, addr, buf, (size_t)len);
	if (done == 0 && len)
		return put(reply, cap, "E14");
	/* Show gdb the original bytes under our int3s, as if they were not there. */
	for (unsigned i = 0; i < GDB_MAX_SW_BREAKPOINTS; i++)
		if (s->sw[i].used && s->sw[i].addr - addr < done)
			buf[s->sw[i].addr - addr] = s->sw[i].orig;
	return gdb_hex_encode(buf, done, reply);
}

static size_t write_mem(struct gdb_session *s, const char *p, size_t plen, bool binary,
			char *reply, size_t cap)
{
	const char *start = p;
	uint64_t addr, len;
	uint8_t buf[GDB_PACKET_MAX];
	if (!parse_addr_len(&p, &addr, &len) || *p++ != ':')
		return put(reply, cap, "E22");
	size_t avail = plen - (size_t)(p - start);
	if (len > sizeof(buf) || (binary ? avail != len : avail != 2 * len))
		return put(reply, cap, "E22");
	if (binary)
		memcpy(buf, p, (size_t)len);
	else if (!gdb_hex_decode(p, (size_t)len, buf))
		return put(reply, cap, "E22");
	size_t done = s->ops->write_memory(s->target, s->thread_g, addr, buf, (size_t)len);
	return put(reply, cap, done == len ? "OK" : "E14");
}

static int find_sw(const struct gdb_session *s, uint64_t addr)
{
	for (int i = 0; i < GDB_MAX_SW_BREAKPOINTS; i++)
		if (s->sw[i].used && s->sw[i].addr == addr)
			return i;
	return -1;
}

static int find_hw(const struct gdb_session *s, uint64_t addr, enum cpu_hw_break type, uint8_t len)
{
	for (int i = 0; i < CPU_DEBUG_MAX_HW; i++)
		if (s->hw[i].used && s->hw[i].addr == addr && s->hw[i].type == type &&
		    s->hw[i].len == len)
			return i;
	return -1;
}

static const char *insert_hw(struct gdb_session *s, uint64_t addr, enum cpu_hw_break type,
			     uint8_t len, bool from_z0)
{
	if (find_hw(s, addr, type, len) >= 0)
		return "OK";
	for (int i = 0; i < CPU_DEBUG_MAX_HW; i++)
		if (!s->hw[i].used) {
			s->hw[i].used = true;
			s->hw[i].from_z0 = from_z0;
			s->hw[i].addr = addr;
			s->hw[i].type = type;
			s->hw[i].len = len;
			return "OK";
		}
	return "E28"; /* ENOSPC: four debug registers */
}

/* Z/z TYPE,ADDR,KIND. */
static size_t breakpoint(struct gdb_session *s, const char *p, bool insert, char *reply, size_t cap)
{
	uint64_t type, addr, kind;
	if (!gdb_parse_hex(&p, &type) || *p++ != ',' || !parse_addr_len(&p, &addr, &kind))
		return put(reply, cap, "E22");
	/* Conditions and commands (";X...") are gdb-side options we do not evaluate: ignore them. */
	if (*p && *p != ';')
		return put(reply, cap, "E22");
	if (type > 4 || type == 3)
		return put(reply, cap, ""); /* read-only watchpoints: x86 cannot; gdb falls back */
	if (!s->can_debug)
		return put(reply, cap, "E01");
	if (type == 0 && !s->sw_via_hw) {
		int i = find_sw(s, addr);
		if (!insert) {
			if (i >= 0) {
				s->ops->write_memory(s->target, s->thread_g, addr, &s->sw[i].orig, 1);
				s->sw[i].used = false;
			}
			return put(reply, cap, "OK");
		}
		if (i >= 0)
			return put(reply, cap, "OK");
		for (i = 0; i < GDB_MAX_SW_BREAKPOINTS && s->sw[i].used; i++)
			;
		if (i == GDB_MAX_SW_BREAKPOINTS)
			return put(reply, cap, "E28");
		uint8_t orig, int3 = 0xCC;
		if (s->ops->read_memory(s->target, s->thread_g, addr, &orig, 1) != 1 ||
		    s->ops->write_memory(s->target, s->thread_g, addr, &int3, 1) != 1)
			return put(reply, cap, "E14");
		s->sw[i].used = true;
		s->sw[i].addr = addr;
		s->sw[i].orig = orig;
		return put(reply, cap, "OK");
	}
	enum cpu_hw_break hw_type = type <= 1 ? CPU_HW_EXEC : type == 2 ? CPU_HW_WRITE : CPU_HW_ACCESS;
	uint8_t len = hw_type == CPU_HW_EXEC ? 1 : (uint8_t)kind;
	if (hw_type != CPU_HW_EXEC && ((len != 1 && len != 2 && len != 4 && len != 8) ||
				       (addr & (len - 1)))) /* debug registers need alignment */
		return put(reply, cap, "E22");
	if (insert)
		return put(reply, cap, insert_hw(s, addr, hw_type, len, type == 0));
	int i = find_hw(s, addr, hw_type, len);
	if (i >= 0)
		s->hw[i].used = false;
	return put(reply, cap, "OK");
}

void gdb_session_remove_all(struct gdb_session *s)
{
	for (unsigned i = 0; i < GDB_MAX_SW_BREAKPOINTS; i++)
		if (s->sw[i].used) {
			s->ops->write_memory(s->target, s->thread_g, s->sw[i].addr, &s->sw[i].orig, 1);
			s->sw[i].used = false;
		}
	memset(s->hw, 0, sizeof(s->hw));
}

/* vCont;ACTION[:TID];...: we resume every vCPU; the one given 's' is single-stepped. */
static enum gdb_action vcont(struct gdb_session *s, const char *p, char *reply, size_t cap,
			     size_t *reply_len)
{
	int step = -1;
	while (*p == ';') {
		p++;
		char action = *p++;
		if (action == 'C' || action == 'S') { /* signal number: ignored for a machine */
			uint64_t sig;
			if (!gdb_parse_hex(&p, &sig))
				goto bad;
			action = action == 'C' ? 'c' : 's';
		}
		int thread = -1;
		if (*p == ':') {
			char tid[24];
			size_t n = 0;
			p++;
			while (*p && *p != ';' && n < sizeof(tid) - 1)
				tid[n++] = *p++;
			tid[n] = '\0';
			if (!parse_thread(s, tid, &thread))
				goto bad;
		}
		if (action == 's') {
			if (step < 0)
				step = thread >= 0 ? thread : (int)s->thread_c;
		} else if (action != 'c' && action != 't') {
			goto bad;
		}
	}
	if (*p)
		goto bad;
	if (step >= 0 && !s->can_debug) {
		*reply_len = put(reply, cap, "E01");
		return GDB_ACTION_NONE;
	}
	s->step_thread = step;
	*reply_len = SIZE_MAX;
	return GDB_ACTION_RESUME;
bad:
	*reply_len = put(reply, cap, "E22");
	return GDB_ACTION_NONE;
}

static size_t xfer_features(struct gdb_session *s, const char *p, char *reply, size_t cap)
{
	static const char annex[] = "target.xml:";
	uint64_t off, len;
	if (strncmp(p, annex, sizeof(annex) - 1))
		return put(reply, cap, "E00");
	p += sizeof(annex) - 1;
	if (!parse_addr_len(&p, &off, &len) || *p || !s->xml_len)
		return put(reply, cap, "E22");
	if (off >= s->xml_len)
		return put(reply, cap, "l");
	size_t n = s->xml_len - (size_t)off;
	if (n > len)
		n = (size_t)len;
	if (n > cap - 2)
		n = cap - 2;
	/* The XML has no '$', '#', '}' or '*': no escaping needed beyond the framing's. */
	reply[0] = (size_t)off + n >= s->xml_len ? 'l' : 'm';
	memcpy(reply + 1, s->xml + off, n);
	return n + 1;
}

static size_t query(struct gdb_session *s, const char *p, char *reply, size_t cap)
{
	if (!strncmp(p, "qSupported", 10)) {
		s->swbreak_feature = strstr(p, "swbreak+") != NULL;
		s->hwbreak_feature = strstr(p, "hwbreak+") != NULL;
		char text[160];
		snprintf(text, sizeof(text),
			 "PacketSize=%x;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+;QStartNoAckMode+",
			 GDB_PACKET_MAX);
		return put(reply, cap, text);
	}
	if (!strncmp(p, "qXfer:features:read:", 20))
		return xfer_features(s, p + 20, reply, cap);
	if (!strcmp(p, "qfThreadInfo")) {
		size_t o = put(reply, cap, "m");
		unsigned n = s->ops->nr_threads(s->target);
		for (unsigned i = 0; i < n && o + 12 < cap; i++) {
			int w = snprintf(reply + o, cap - o, "%s%x", i ? "," : "", i + 1);
			o += w > 0 ? (size_t)w : 0;
		}
		return o;
	}
	if (!strcmp(p, "qsThreadInfo"))
		return put(reply, cap, "l");
	if (!strcmp(p, "qC")) {
		int n = snprintf(reply, cap, "QC%x", s->thread_g + 1);
		return n > 0 ? (size_t)n : 0;
	}
	if (!strncmp(p, "qAttached", 9))
		return put(reply, cap, "1");
	if (!strncmp(p, "qThreadExtraInfo,", 17)) {
		int thread;
		if (!parse_thread(s, p + 17, &thread) || thread < 0)
			return put(reply, cap, "E22");
		char text[32];
		snprintf(text, sizeof(text), "vCPU %d", thread);
		return gdb_hex_encode(text, strlen(text), reply);
	}
	if (!strncmp(p, "qSymbol", 7))
		return put(reply, cap, "OK");
	return put(reply, cap, ""); /* not supported */
}

enum gdb_action gdb_session_handle(struct gdb_session *s, const char *pkt, size_t len, char *reply,
				   size_t cap, size_t *reply_len)
{
	*reply_len = 0;
	if (len == 0 || cap < 64)
		return GDB_ACTION_NONE;
	const char *p = pkt + 1;
	int thread;
	switch (pkt[0]) {
	case '?':
		*reply_len = gdb_session_stop_reply(s, reply, cap);
		return GDB_ACTION_NONE;
	case 'g':
		*reply_len = reply_regs(s, reply, cap);
		return GDB_ACTION_NONE;
	case 'G':
		*reply_len = write_regs(s, p, len - 1, reply, cap);
		return GDB_ACTION_NONE;
	case 'p':
		*reply_len = reply_one_reg(s, p, reply, cap);
		return GDB_ACTION_NONE;
	case 'P':
		*reply_len = write_one_reg(s, p, reply, cap);
		return GDB_ACTION_NONE;
	case 'm':
		*reply_len = read_mem(s, p, reply, cap);
		return GDB_ACTION_NONE;
	case 'M':
		*reply_len = write_mem(s, p, len - 1, false, reply, cap);
		return GDB_ACTION_NONE;
	case 'X':
		*reply_len = write_mem(s, p, len - 1, true, reply, cap);
		return GDB_ACTION_NONE;
	case 'c':
	case 's':
	case 'C':
	case 'S': {
		/* Resuming at another address ("c ADDR") is not supported: gdb sets $pc instead. */
		bool step = pkt[0] == 's' || pkt[0] == 'S';
		if (step && !s->can_debug) {
			*reply_len = put(reply, cap, "E01");
			return GDB_ACTION_NONE;
		}
		s->step_thread = step ? (int)s->thread_c : -1;
		*reply_len = SIZE_MAX;
		return GDB_ACTION_RESUME;
	}
	case 'v':
		if (!strcmp(pkt, "vCont?")) {
			*reply_len = put(reply, cap, "vCont;c;C;s;S");
			return GDB_ACTION_NONE;
		}
		if (!strncmp(pkt, "vCont;", 6))
			return vcont(s, pkt + 5, reply, cap, reply_len);
		if (!strncmp(pkt, "vKill", 5)) {
			*reply_len = put(reply, cap, "OK");
			return GDB_ACTION_KILL;
		}
		*reply_len = put(reply, cap, "");
		return GDB_ACTION_NONE;
	case 'H':
		if ((pkt[1] != 'g' && pkt[1] != 'c') || !parse_thread(s, pkt + 2, &thread)) {
			*reply_len = put(reply, cap, "E22");
			return GDB_ACTION_NONE;
		}
		if (thread >= 0)
			*(pkt[1] == 'g' ? &s->thread_g : &s->thread_c) = (unsigned)thread;
		*reply_len = put(reply, cap, "OK");
		return GDB_ACTION_NONE;
	case 'T':
		*reply_len = put(reply, cap, parse_thread(s, p, &thread) && thread >= 0 ? "OK" : "E22");
		return GDB_ACTION_NONE;
	case 'q':
		*reply_len = query(s, pkt, reply, cap);
		return GDB_ACTION_NONE;
	case 'Q':
		if (!strcmp(pkt, "QStartNoAckMode")) {
			s->no_ack = true;
			*reply_len = put(reply, cap, "OK");
		} else {
			*reply_len = put(reply, cap, "");
		}
		return GDB_ACTION_NONE;
	case 'Z':
	case 'z':
		*reply_len = breakpoint(s, p, pkt[0] == 'Z', reply, cap);
		return GDB_ACTION_NONE;
	case 'D':
		*reply_len = put(reply, cap, "OK");
		return GDB_ACTION_DETACH;
	case 'k':
		*reply_len = SIZE_MAX;
		return GDB_ACTION_KILL;
	default:
		*reply_len = put(reply, cap, "");
		return GDB_ACTION_NONE;
	}
}
