/* The API's operations on the real VM (struct api_ops), called from the main thread's event
 * loop. Pause and resume take effect before the response is sent: vm_pause returns once every
 * vCPU is parked outside the guest. */
#include "api/control.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/devices.h"
#include "stats.h"
#include "vm.h"

static enum api_state control_state(void *opaque)
{
	struct control *c = opaque;
	if (!c->started)
		return API_STATE_NOT_STARTED;
	return c->vm && atomic_load(&c->vm->paused) ? API_STATE_PAUSED : API_STATE_RUNNING;
}

static int control_start(void *opaque, char *err, size_t err_len)
{
	struct control *c = opaque;
	if (api_machine_to_config(&c->api.machine, c->cfg, err, err_len) < 0)
		return -1;
	if (c->create(c->opaque, err, err_len) < 0) {
		if (!err[0])
			snprintf(err, err_len, "the VM could not be created (the monitor's standard error says why)");
		return -1;
	}
	c->started = true;
	return 0;
}

static int control_pause(void *opaque, bool pause)
{
	struct control *c = opaque;
	if (!c->vm || atomic_load(&c->vm->stopping))
		return -1;
	if (pause)
		vm_pause(c->vm);
	else
		vm_resume(c->vm);
	return 0;
}

static void control_power_button(void *opaque)
{
	struct control *c = opaque;
	if (c->vm)
		acpi_pm_power_button(c->vm->devices->pm);
}

static void control_kill(void *opaque)
{
	struct control *c = opaque;
	if (c->vm) {
		vm_request_stop(c->vm, CONTROL_STATUS_KILLED);
	} else if (!c->quit) {
		c->quit = true;
		c->quit_status = c->started ? CONTROL_STATUS_KILLED : 0;
	}
}

static void control_info(void *opaque, struct json_writer *w)
{
	struct control *c = opaque;
	json_key(w, "pid");
	json_uint(w, (uint64_t)getpid());
	json_key(w, "api_sock");
	json_string(w, c->serving ? c->server.path : "");
	json_key(w, "console");
	json_string(w, c->relay.pty_path);
}

static void control_stats(void *opaque, struct json_writer *w)
{
	struct control *c = opaque;
	json_key(w, "state");
	enum api_state s = control_state(c);
	json_string(w, s == API_STATE_NOT_STARTED ? "Not started" : s == API_STATE_PAUSED ? "Paused"
											   : "Running");
	json_key(w, "vcpus");
	json_begin_array(w);
	for (unsigned i = 0; c->vm && i < c->vm->nr_vcpus; i++) {
		struct vcpu *v = &c->vm->vcpus[i];
		json_begin_object(w);
		json_key(w, "index");
		json_uint(w, i);
		/* counters of running vCPU threads: relaxed reads, each value is whole */
		json_key(w, "exits");
		json_uint(w, __atomic_load_n(&v->exits_total, __ATOMIC_RELAXED));
		json_key(w, "io_exits");
		json_uint(w, __atomic_load_n(&v->exits_io, __ATOMIC_RELAXED));
		json_key(w, "mmio_exits");
		json_uint(w, __atomic_load_n(&v->exits_mmio, __ATOMIC_RELAXED));
		json_end_object(w);
	}
	json_end_array(w);
}

static size_t control_report(void *opaque, char *buf, size_t len)
{
	struct control *c = opaque;
	if (!c->vm)
		return (size_t)snprintf(buf, len, "not started\n");
	return stats_format_buffer(c->vm, buf, len);
}

/* PUT /network-interfaces/{id}: a TAP NIC, as -n tap=HOST_DEV[,mac=GUEST_MAC] (src/net/). */
static int control_add_network(void *opaque, const char *id, const char *host_dev,
			       const char *mac, char *err, size_t err_len)
{
	struct control *c = opaque;
	struct vm_config *cfg = c->cfg;
	char text[96];
	struct net_config n;
	if (strlen(host_dev) > 15 || strlen(mac) > 17 || strchr(host_dev, ',')) {
		snprintf(err, err_len, "host_dev_name: at most 15 characters, no commas; guest_mac: aa:bb:cc:dd:ee:ff");
		return -1;
	}
	snprintf(text, sizeof(text), "tap=%s%s%s", host_dev, mac[0] ? ",mac=" : "", mac);
	if (config_parse_net(&n, text, err, (unsigned)err_len) < 0)
		return -1;
	unsigned slot = cfg->nr_nets;
	for (unsigned i = 0; i < cfg->nr_nets; i++)
		if (!strcmp(c->net_ids[i], id))
			slot = i; /* PUT replaces */
	if (slot == CONFIG_MAX_NICS) {
		snprintf(err, err_len, "more than %d network interfaces", CONFIG_MAX_NICS);
		return -1;
	}
	cfg->nets[slot] = n;
	snprintf(c->net_ids[slot], sizeof(c->net_ids[slot]), "%s", id);
	if (slot == cfg->nr_nets)
		cfg->nr_nets++;
	return 0;
}

static const struct api_ops control_ops = {
	.state = control_state,
	.start = control_start,
	.pause = control_pause,
	.power_button = control_power_button,
	.kill = control_kill,
	.info = control_info,
	.stats = control_stats,
	.report = control_report,
	.add_network = control_add_network,
};

int control_open(struct control *c, struct vm_config *cfg, struct event_loop *loop,
		 int (*create)(void *opaque, char *err, size_t err_len), void *opaque, char *err,
		 size_t err_len)
{
	memset(c, 0, sizeof(*c));
	c->cfg = cfg;
	c->create = create;
	c->opaque = opaque;
	c->keep = cfg->keep;
	c->started = cfg->kernel_path != NULL;
	config_vm_name(cfg, c->name, sizeof(c->name));

	/* What GET /machine-config reports for a VM configured on the command line. */
	struct api_machine *m = &c->api.machine;
	m->vcpus = cfg->nr_cpus;
	m->mem_mib = cfg->mem_size >> 20;
	snprintf(m->kernel, sizeof(m->kernel), "%s", cfg->kernel_path ? cfg->kernel_path : "");
	c->api.id = c->name;
	c->api.ops = &control_ops;
	c->api.opaque = c;

	if (console_relay_open(&c->relay, cfg->console_pty, cfg->console_log, loop, err, err_len) < 0)
		return -1;
	if (cfg->api_sock && !strcmp(cfg->api_sock, "none"))
		return 0;
	char path[sizeof(c->server.path)];
	bool explicit = cfg->api_sock || cfg->name;
	int ret = cfg->api_sock ? snprintf(path, sizeof(path), "%s", cfg->api_sock) < (int)sizeof(path) ? 0 : -1
				: api_socket_path(c->name, path, sizeof(path), err, err_len);
	if (ret < 0 && cfg->api_sock)
		snprintf(err, err_len, "--api-sock %s: path too long (at most %zu bytes)", cfg->api_sock,
			 sizeof(path) - 1);
	if (ret == 0)
		ret = api_server_open(&c->server, path, loop, &c->api, err, err_len);
	if (ret == 0) /* the API is served before there is a VM, so it has a trace of its own */
		c->server.trace = (struct trace){ .mask = cfg->trace_mask, .fd = cfg->trace_fd,
						  .start_ns = cfg->start_ns };
	if (ret < 0 && explicit) {
		console_relay_close(&c->relay);
		return -1;
	}
	if (ret < 0)
		fprintf(stderr, "vmm: control socket: %s (continuing without one)\n", err);
	c->serving = ret == 0;
	return 0;
}

void control_close(struct control *c)
{
	if (c->serving)
		api_server_close(&c->server, c->keep);
	c->serving = false;
	console_relay_close(&c->relay);
}
