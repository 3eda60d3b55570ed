/* The gdb stub's server: socket, thread, and the target operations on the VM. The protocol
 * itself is gdb/protocol.c; framing gdb/packet.c.
 *
 * States: no client (the guest runs, or is held by --gdb-wait); attached and stopped (every vCPU
 * parked, gdb reads and writes state); attached and running (gdb resumed the guest, the thread
 * waits for a debug exit, a Ctrl-C byte, or the VM's end). */
#include "gdb/gdb.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gdb/protocol.h"
#include "vm.h"

#define GDB_STATUS_KILLED 137 /* 128 + SIGKILL: gdb's "kill" ends the VM as it would a process */

struct gdb_server {
	struct vm *vm;
	int listen_fd, client_fd, wake_fd;
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t lock; /* guards running, stop_pending, stop_exit, stop_vcpu, quit */
	bool running; /* gdb resumed the guest: a debug exit stops it again */
	bool stop_pending; /* a vCPU reported a debug exit not yet handled by the thread */
	struct vcpu_exit stop_exit;
	unsigned stop_vcpu;
	bool quit;

	struct gdb_parser parser;
	struct gdb_session session;
	char reply[GDB_PACKET_MAX + 1];
	char out[2 * GDB_PACKET_MAX + 8]; /* the framed last packet, kept for a NAK's resend */
	size_t out_len;
};

/* ---- target operations on the VM ---- */

static unsigned gdb_nr_threads(void *target)
{
	struct gdb_server *g = target;
	return g->vm->nr_vcpus;
}

static int gdb_get_state(void *target, unsigned thread, struct cpu_state *st)
{
	struct gdb_server *g = target;
	if (thread >= g->vm->nr_vcpus)
		return -EINVAL;
	return g->vm->backend->vcpu_get_state(&g->vm->vcpus[thread], st);
}

static int gdb_set_state(void *target, unsigned thread, const struct cpu_state *st)
{
	struct gdb_server *g = target;
	if (thread >= g->vm->nr_vcpus)
		return -EINVAL;
	return g->vm->backend->vcpu_set_state(&g->vm->vcpus[thread], st);
}

static bool gdb_read_phys(void *opaque, uint64_t pa, void *buf, size_t len)
{
	struct vm *vm = opaque;
	void *host = memory_gpa_to_host(&vm->mem, pa, len);
	if (!host)
		return false;
	memcpy(buf, host, len);
	return true;
}

/* Guest-virtual to host, one page at most: the thread's page tables; where they map nothing,
 * the address taken as physical (gdb often asks for addresses below the kernel's mapping). */
static uint8_t *gdb_map(struct gdb_server *g, const struct cpu_state *st, uint64_t va, size_t len)
{
	uint64_t pa;
	if (gdb_x86_translate(st, va, &pa, gdb_read_phys, g->vm) < 0)
		pa = va;
	return memory_gpa_to_host(&g->vm->mem, pa, len);
}

static size_t gdb_access(void *target, unsigned thread, uint64_t addr, void *buf, size_t len,
			 bool is_write)
{
	struct gdb_server *g = target;
	struct cpu_state st;
	if (gdb_get_state(g, thread, &st) < 0)
		return 0;
	size_t done = 0;
	while (done < len) {
		uint64_t va = addr + done;
		size_t chunk = 4096 - (size_t)(va & 4095);
		if (chunk > len - done)
			chunk = len - done;
		uint8_t *host = gdb_map(g, &st, va, chunk);
		if (!host)
			break;
		if (is_write) {
			memcpy(host, (const uint8_t *)buf + done, chunk);
			memory_written(&g->vm->mem, host, chunk); /* breakpoints, patched code */
		} else
			memcpy((uint8_t *)buf + done, host, chunk);
		done += chunk;
	}
	return done;
}

static size_t gdb_read_memory(void *target, unsigned thread, uint64_t addr, void *buf, size_t len)
{
	return gdb_access(target, thread, addr, buf, len, false);
}

static size_t gdb_write_memory(void *target, unsigned thread, uint64_t addr, const void *buf,
			       size_t len)
{
	return gdb_access(target, thread, addr, (void *)buf, len, true);
}

static const struct gdb_target_ops gdb_vm_ops = {
	.nr_threads = gdb_nr_threads,
	.get_state = gdb_get_state,
	.set_state = gdb_set_state,
	.read_memory = gdb_read_memory,
	.write_memory = gdb_write_memory,
};

/* ---- the connection ---- */

static void gdb_send_raw(struct gdb_server *g, const char *data, size_t len)
{
	while (len && g->client_fd >= 0) {
		ssize_t n = send(g->client_fd, data, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* the reader sees the connection end */
		data += n;
		len -= (size_t)n;
	}
}

static void gdb_send_packet(struct gdb_server *g, const char *payload, size_t len)
{
	g->out_len = gdb_packet_encode(payload, len, g->out, sizeof(g->out));
	gdb_send_raw(g, g->out, g->out_len);
}

/* Every vCPU gets the session's breakpoints; the one being stepped, single-step too. */
static void gdb_apply_debug(struct gdb_server *g, int step_thread)
{
	struct vm *vm = g->vm;
	struct cpu_debug d;
	gdb_session_debug(&g->session, &d);
	if (!vm->backend->set_guest_debug)
		return;
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		struct cpu_debug v = d;
		v.single_step = (int)i == step_thread;
		v.enabled |= v.single_step;
		int ret = vm->backend->set_guest_debug(&vm->vcpus[i], &v);
		if (ret < 0)
			fprintf(stderr, "vmm: gdb: vCPU %u: setting debug controls: %s\n", i,
				strerror(-ret));
	}
}

static void gdb_resume(struct gdb_server *g)
{
	gdb_apply_debug(g, g->session.step_thread);
	pthread_mutex_lock(&g->lock);
	g->running = true;
	g->stop_pending = false;
	pthread_mutex_unlock(&g->lock);
	trace_event(g->vm, TRACE_CONTROL, TRACE_HOST, "gdb: resume%s",
		    g->session.step_thread >= 0 ? " (single step)" : "");
	vm_resume(g->vm);
}

/* Stop the guest (all vCPUs parked) and tell gdb why. */
static void gdb_report_stop(struct gdb_server *g, bool interrupted)
{
	vm_pause(g->vm);
	pthread_mutex_lock(&g->lock);
	bool had_exit = g->stop_pending;
	struct vcpu_exit exit = g->stop_exit;
	unsigned vcpu = g->stop_vcpu;
	g->running = false;
	g->stop_pending = false;
	pthread_mutex_unlock(&g->lock);
	if (had_exit) {
		gdb_session_set_stop(&g->session, vcpu, &exit);
	} else if (interrupted) {
		g->session.stop = (struct gdb_stop){ .thread = g->session.thread_g, .signal = 2,
						     .kind = GDB_STOP_PLAIN };
	}
	g->session.thread_g = g->session.thread_c = g->session.stop.thread;
	size_t n = gdb_session_stop_reply(&g->session, g->reply, sizeof(g->reply));
	trace_event(g->vm, TRACE_CONTROL, TRACE_HOST, "gdb: stopped: %.*s", (int)n, g->reply);
	gdb_send_packet(g, g->reply, n);
}

/* On a kvm-pvm host (KVM without VMX/SVM) guest kernel code is emulated by the host, and an int3
 * in it ends in a KVM emulation failure instead of a debug exit: there, gdb's software
 * breakpoints go into the debug registers instead (at most four, shared with hbreak/watch). */
static bool gdb_int3_usable(const struct vm *vm)
{
	if (strcmp(vm->backend->name, "kvm") != 0)
		return true;
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return true;
	char line[4096];
	bool hw_virt = false, seen = false;
	while (!seen && fgets(line, sizeof(line), f))
		if (!strncmp(line, "flags", 5)) {
			seen = true;
			hw_virt = strstr(line, " vmx") || strstr(line, " svm");
		}
	fclose(f);
	return !seen || hw_virt;
}

static void gdb_attach(struct gdb_server *g, int fd)
{
	struct vm *vm = g->vm;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	g->client_fd = fd;
	gdb_parser_init(&g->parser);
	vm_pause(vm);
	struct cpu_state st;
	bool long_mode = vm->backend->vcpu_get_state(&vm->vcpus[0], &st) == 0 &&
			 (st.efer & EFER_LMA);
	bool int3 = gdb_int3_usable(vm);
	gdb_session_init(&g->session, &gdb_vm_ops, g, long_mode ? GDB_X86_64 : GDB_X86_32,
			 vm->backend->set_guest_debug != NULL, !int3);
	pthread_mutex_lock(&g->lock);
	g->running = false;
	g->stop_pending = false;
	pthread_mutex_unlock(&g->lock);
	fprintf(stderr, "vmm: gdb: attached; the guest is stopped%s\n",
		int3 ? "" : " (no VMX/SVM: breakpoints use the 4 debug registers)");
	trace_event(vm, TRACE_CONTROL, TRACE_HOST, "gdb: attached (%s registers), rip 0x%llx",
		    long_mode ? "64-bit" : "32-bit", (unsigned long long)st.rip);
}

/* Breakpoints out of memory, debug controls off, the guest running, the socket closed. */
static void gdb_detach(struct gdb_server *g, const char *why)
{
	if (g->client_fd < 0)
		return;
	vm_pause(g->vm); /* a no-op when stopped; memory is only patched with every vCPU parked */
	gdb_session_remove_all(&g->session);
	g->session.step_thread = -1;
	gdb_apply_debug(g, -1);
	pthread_mutex_lock(&g->lock);
	g->running = false;
	g->stop_pending = false;
	pthread_mutex_unlock(&g->lock);
	close(g->client_fd);
	g->client_fd = -1;
	fprintf(stderr, "vmm: gdb: %s; the guest runs on\n", why);
	trace_event(g->vm, TRACE_CONTROL, TRACE_HOST, "gdb: %s", why);
	vm_resume(g->vm);
}

static void gdb_handle_packet(struct gdb_server *g)
{
	if (!g->session.no_ack)
		gdb_send_raw(g, "+", 1);
	size_t n;
	trace_event(g->vm, TRACE_CONTROL, TRACE_HOST, "gdb: packet %.60s%s", g->parser.buf,
		    g->parser.len > 60 ? "..." : "");
	enum gdb_action action = gdb_session_handle(&g->session, g->parser.buf, g->parser.len,
						    g->reply, sizeof(g->reply), &n);
	if (n != SIZE_MAX)
		gdb_send_packet(g, g->reply, n);
	switch (action) {
	case GDB_ACTION_RESUME:
		gdb_resume(g);
		break;
	case GDB_ACTION_DETACH:
		gdb_detach(g, "detached");
		break;
	case GDB_ACTION_KILL:
		fprintf(stderr, "vmm: gdb: kill: stopping the VM\n");
		gdb_session_remove_all(&g->session);
		close(g->client_fd);
		g->client_fd = -1;
		vm_request_stop(g->vm, (enum vm_status)GDB_STATUS_KILLED);
		break;
	case GDB_ACTION_NONE:
		break;
	}
}

static void gdb_read_client(struct gdb_server *g)
{
	uint8_t buf[4096];
	ssize_t n = recv(g->client_fd, buf, sizeof(buf), 0);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		gdb_detach(g, "connection closed");
		return;
	}
	for (ssize_t i = 0; i < n && g->client_fd >= 0; i++) {
		switch (gdb_parser_feed(&g->parser, buf[i])) {
		case GDB_IN_PACKET:
			gdb_handle_packet(g);
			break;
		case GDB_IN_BAD_CHECKSUM:
			gdb_send_raw(g, "-", 1);
			break;
		case GDB_IN_OVERFLOW:
			/* Too long to be ours: acknowledge it and say so, rather than loop on resends. */
			gdb_send_raw(g, "+", 1);
			gdb_send_packet(g, "E22", 3);
			break;
		case GDB_IN_INTERRUPT: {
			pthread_mutex_lock(&g->lock);
			bool running = g->running;
			pthread_mutex_unlock(&g->lock);
			if (running)
				gdb_report_stop(g, true);
			break;
		}
		case GDB_IN_NAK:
			if (!g->session.no_ack)
				gdb_send_raw(g, g->out, g->out_len);
			break;
		case GDB_IN_ACK:
		case GDB_IN_NONE:
			break;
		}
	}
}

static void *gdb_thread(void *arg)
{
	struct gdb_server *g = arg;
	pthread_setname_np(pthread_self(), "gdb");
	for (;;) {
		struct pollfd fds[2] = {
			{ .fd = g->client_fd >= 0 ? g->client_fd : g->listen_fd, .events = POLLIN },
			{ .fd = g->wake_fd, .events = POLLIN },
		};
		if (poll(fds, 2, -1) < 0 && errno != EINTR)
			break;
		if (fds[1].revents & POLLIN) {
			uint64_t v;
			if (read(g->wake_fd, &v, sizeof(v)) < 0) {
				/* nothing to read: the flags below say what happened */
			}
			pthread_mutex_lock(&g->lock);
			bool quit = g->quit, stop = g->stop_pending && g->running;
			pthread_mutex_unlock(&g->lock);
			if (quit)
				break;
			if (stop && g->client_fd >= 0)
				gdb_report_stop(g, false);
		}
		if (!(fds[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		if (g->client_fd >= 0) {
			gdb_read_client(g);
			continue;
		}
		int fd = accept4(g->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			gdb_attach(g, fd);
	}
	if (g->client_fd >= 0) { /* the VM ended: "W" with its exit status, as for a process */
		char text[8];
		int status = atomic_load(&g->vm->status);
		snprintf(text, sizeof(text), "W%02x", status & 0xFF);
		gdb_send_packet(g, text, strlen(text));
		close(g->client_fd);
		g->client_fd = -1;
	}
	return NULL;
}

static int gdb_listen(struct gdb_server *g, const char *host, uint16_t port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV }, *res = NULL;
	char service[8];
	snprintf(service, sizeof(service), "%u", port);
	int err = getaddrinfo(host, service, &hints, &res);
	if (err) {
		fprintf(stderr, "vmm: --gdb %s:%u: %s (give an address of this host)\n", host, port,
			gai_strerror(err));
		return -EINVAL;
	}
	int ret = -EADDRNOTAVAIL;
	for (struct addrinfo *a = res; a; a = a->ai_next) {
		int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1) == 0) {
			g->listen_fd = fd;
			ret = 0;
			break;
		}
		ret = -errno;
		close(fd);
	}
	freeaddrinfo(res);
	if (ret < 0)
		fprintf(stderr, "vmm: --gdb %s:%u: %s (pick another port)\n", host, port,
			strerror(-ret));
	return ret;
}

int gdb_start(struct vm *vm)
{
	struct gdb_server *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->vm = vm;
	g->listen_fd = g->client_fd = -1;
	pthread_mutex_init(&g->lock, NULL);
	g->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int ret = g->wake_fd < 0 ? -errno : gdb_listen(g, vm->cfg.gdb_host, vm->cfg.gdb_port);
	if (ret == 0) {
		ret = -pthread_create(&g->thread, NULL, gdb_thread, g);
		g->thread_started = ret == 0;
	}
	vm->gdb = g;
	if (ret < 0) {
		gdb_stop(vm);
		return ret;
	}
	if (vm->cfg.gdb_wait) {
		vm_pause_begin(vm); /* the vCPUs park before their first instruction */
		fprintf(stderr, "vmm: gdb: waiting for gdb on %s:%u (target remote %s:%u)\n",
			vm->cfg.gdb_host, vm->cfg.gdb_port, vm->cfg.gdb_host, vm->cfg.gdb_port);
	}
	trace_event(vm, TRACE_CONTROL, TRACE_HOST, "gdb: listening on %s:%u", vm->cfg.gdb_host,
		    vm->cfg.gdb_port);
	return 0;
}

void gdb_stop(struct vm *vm)
{
	struct gdb_server *g = vm->gdb;
	if (!g)
		return;
	if (g->thread_started) {
		pthread_mutex_lock(&g->lock);
		g->quit = true;
		pthread_mutex_unlock(&g->lock);
		uint64_t one = 1;
		if (write(g->wake_fd, &one, sizeof(one)) < 0) {
			/* cannot fail below the eventfd's maximum */
		}
		pthread_join(g->thread, NULL);
	}
	if (g->client_fd >= 0)
		close(g->client_fd);
	if (g->listen_fd >= 0)
		close(g->listen_fd);
	if (g->wake_fd >= 0)
		close(g->wake_fd);
	pthread_mutex_destroy(&g->lock);
	free(g);
	vm->gdb = NULL;
}

bool gdb_vcpu_debug_exit(struct vcpu *vcpu, const struct vcpu_exit *exit)
{
	struct gdb_server *g = vcpu->vm->gdb;
	if (!g)
		return true;
	pthread_mutex_lock(&g->lock);
	bool report = g->running && !g->stop_pending;
	if (report) {
		g->stop_pending = true;
		g->stop_exit = *exit;
		g->stop_vcpu = vcpu->index;
	}
	pthread_mutex_unlock(&g->lock);
	trace_event(vcpu->vm, TRACE_CONTROL, vcpu->index, "gdb: debug exit #%s at 0x%llx, dr6 0x%llx",
		    exit->debug.exception == 3 ? "BP" : "DB", (unsigned long long)exit->debug.pc,
		    (unsigned long long)exit->debug.dr6);
	if (report) {
		vm_pause_begin(vcpu->vm);
		uint64_t one = 1;
		if (write(g->wake_fd, &one, sizeof(one)) < 0) {
			/* cannot fail below the eventfd's maximum */
		}
	}
	return true;
}
