/* The gdb stub's command interpreter: one packet in, at most one reply out, and what the server
 * must do next (resume, detach, kill). It reaches the guest only through gdb_target_ops, so it is
 * unit-tested and fuzzed against a fake target. Threads are 1-based on the wire (vCPU i is
 * thread i + 1). */
#ifndef VMM_GDB_PROTOCOL_H
#define VMM_GDB_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/backend.h"
#include "gdb/packet.h"
#include "gdb/x86.h"

#define GDB_MAX_SW_BREAKPOINTS 64

struct gdb_target_ops {
	unsigned (*nr_threads)(void *target);
	int (*get_state)(void *target, unsigned thread, struct cpu_state *st);
	int (*set_state)(void *target, unsigned thread, const struct cpu_state *st);
	/* Guest-virtual memory as `thread` sees it; return the bytes done (stops at a hole). */
	size_t (*read_memory)(void *target, unsigned thread, uint64_t addr, void *buf, size_t len);
	size_t (*write_memory)(void *target, unsigned thread, uint64_t addr, const void *buf,
			       size_t len);
};

/* Why the guest stopped, as the stop reply tells gdb. */
struct gdb_stop {
	unsigned thread; /* 0-based vCPU */
	uint8_t signal; /* 5 SIGTRAP, 2 SIGINT */
	enum { GDB_STOP_PLAIN, GDB_STOP_SWBREAK, GDB_STOP_HWBREAK, GDB_STOP_WATCH,
	       GDB_STOP_AWATCH } kind;
	uint64_t addr; /* watchpoints: the watched address */
};

enum gdb_action { GDB_ACTION_NONE, GDB_ACTION_RESUME, GDB_ACTION_DETACH, GDB_ACTION_KILL };

struct gdb_session {
	const struct gdb_target_ops *ops;
	void *target;
	enum gdb_x86_mode mode;
	bool can_debug; /* the backend has set_guest_debug: breakpoints and stepping work */
	bool sw_via_hw; /* place software breakpoints in debug registers (int3 unusable) */
	bool no_ack; /* QStartNoAckMode accepted */
	bool swbreak_feature, hwbreak_feature; /* gdb understands these stop reasons */
	unsigned thread_g, thread_c; /* 0-based; Hg / Hc */
	struct gdb_stop stop;
	int step_thread; /* set with GDB_ACTION_RESUME: the vCPU to single-step, or -1 */
	struct {
		bool used;
		uint64_t addr;
		uint8_t orig;
	} sw[GDB_MAX_SW_BREAKPOINTS];
	struct {
		bool used, from_z0;
		uint64_t addr;
		enum cpu_hw_break type;
		uint8_t len;
	} hw[CPU_DEBUG_MAX_HW];
	char xml[8192];
	size_t xml_len;
};

void gdb_session_init(struct gdb_session *s, const struct gdb_target_ops *ops, void *target,
		      enum gdb_x86_mode mode, bool can_debug, bool sw_via_hw);
/* Handle one packet (NUL-terminated payload of len bytes). The reply (payload, not framed) goes
 * to reply[0..*reply_len); *reply_len == SIZE_MAX means "send nothing" (resume, kill). */
enum gdb_action gdb_session_handle(struct gdb_session *s, const char *pkt, size_t len, char *reply,
				   size_t cap, size_t *reply_len);
/* The stop reply for s->stop ("T05swbreak:;thread:1;"). */
size_t gdb_session_stop_reply(const struct gdb_session *s, char *reply, size_t cap);
/* The debug controls every vCPU gets on resume (single_step is the caller's, per vCPU). */
void gdb_session_debug(const struct gdb_session *s, struct cpu_debug *d);
/* Classify a DEBUG exit of vCPU `thread` into s->stop. */
void gdb_session_set_stop(struct gdb_session *s, unsigned thread, const struct vcpu_exit *exit);
/* Take every software breakpoint out of guest memory and forget all breakpoints (detach). */
void gdb_session_remove_all(struct gdb_session *s);

#endif
