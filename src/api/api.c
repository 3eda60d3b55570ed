/* Routes of the control API. Firecracker's subset (docs/vmm.1, API section): GET /, PUT
 * /boot-source, GET|PUT|PATCH /machine-config, PUT /drives/{id}, PUT /network-interfaces/{id},
 * PUT /actions, PATCH /vm. vmm's own: GET /vmm, GET /vmm/stats, PUT /vmm/stop, PUT /vmm/kill.
 * Every body is parsed strictly: unknown fields, wrong types and wrong states are 400s. */
#include "api/api.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void api_error(struct api_response *resp, int status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	struct json_writer w;
	json_writer_init(&w, resp->body, sizeof(resp->body));
	json_begin_object(&w);
	json_key(&w, "fault_message");
	json_string(&w, msg);
	json_end_object(&w);
	resp->status = status;
	resp->len = w.len;
}

static void api_no_content(struct api_response *resp)
{
	resp->status = 204;
	resp->len = 0;
}

static const char *api_state_name(enum api_state s)
{
	return s == API_STATE_NOT_STARTED ? "Not started" : s == API_STATE_PAUSED ? "Paused" : "Running";
}

/* Drive and interface ids: what Firecracker accepts, and safe in a path and a message. */
static bool api_valid_id(const char *id)
{
	size_t n = strlen(id);
	if (n == 0 || n >= API_MAX_ID)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= 'A' && id[i] <= 'Z') ||
		      (id[i] >= '0' && id[i] <= '9') || id[i] == '_' || id[i] == '-'))
			return false;
	return true;
}

/* A body that must be one JSON object whose keys all appear in `allowed` (NULL-terminated). */
static int api_parse_object(const struct http_request *req, struct json_doc *doc,
			    const char *const *allowed, struct api_response *resp)
{
	char err[128];
	if (req->body_len == 0) {
		api_error(resp, 400, "the request needs a JSON body");
		return -1;
	}
	if (json_parse(doc, req->body, req->body_len, err, sizeof(err)) < 0) {
		api_error(resp, 400, "bad JSON body: %s", err);
		return -1;
	}
	if (doc->tok[0].type != JSON_OBJECT) {
		api_error(resp, 400, "the body must be a JSON object");
		return -1;
	}
	unsigned k = 1;
	for (uint32_t i = 0; i < doc->tok[0].count; i++, k = doc->tok[k + 1].next) {
		bool known = false;
		for (const char *const *a = allowed; *a && !known; a++)
			known = json_string_is(doc, k, *a);
		if (!known) {
			char key[64];
			if (json_get_string(doc, k, key, sizeof(key)) < 0)
				strcpy(key, "?");
			api_error(resp, 400, "unknown field '%s'", key);
			return -1;
		}
	}
	return 0;
}

/* Field helpers: 1 when present and valid, 0 when absent, -1 (response filled) when invalid. */
static int api_field_string(const struct json_doc *doc, const char *key, char *out, size_t size,
			    struct api_response *resp)
{
	int v = json_object_get(doc, 0, key);
	if (v < 0)
		return 0;
	if (json_get_string(doc, (unsigned)v, out, size) < 0) {
		api_error(resp, 400, "%s: expected a string of at most %zu bytes", key, size - 1);
		return -1;
	}
	return 1;
}

static int api_field_bool(const struct json_doc *doc, const char *key, bool *out,
			  struct api_response *resp)
{
	int v = json_object_get(doc, 0, key);
	if (v < 0)
		return 0;
	if (json_get_bool(doc, (unsigned)v, out) < 0) {
		api_error(resp, 400, "%s: expected true or false", key);
		return -1;
	}
	return 1;
}

static int api_field_uint(const struct json_doc *doc, const char *key, uint64_t min,
			  uint64_t max, uint64_t *out, struct api_response *resp)
{
	int v = json_object_get(doc, 0, key);
	if (v < 0)
		return 0;
	if (json_get_uint(doc, (unsigned)v, max, out) < 0 || *out < min) {
		api_error(resp, 400, "%s: expected an integer from %llu to %llu", key,
			  (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	return 1;
}

/* A host file the monitor will open: it must exist and be a regular file or block device. */
static int api_check_file(const char *what, const char *path, bool block_ok,
			  struct api_response *resp)
{
	struct stat st;
	if (path[0] == '\0') {
		api_error(resp, 400, "%s: empty path", what);
		return -1;
	}
	if (stat(path, &st) < 0) {
		api_error(resp, 400, "%s %s: %s", what, path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode) && !(block_ok && S_ISBLK(st.st_mode))) {
		api_error(resp, 400, "%s %s: not a regular file", what, path);
		return -1;
	}
	return 0;
}

static bool api_require_not_started(struct api *api, struct api_response *resp)
{
	if (api->ops->state(api->opaque) == API_STATE_NOT_STARTED)
		return true;
	api_error(resp, 400, "The requested operation is not supported after starting the microVM.");
	return false;
}

static void api_put_boot_source(struct api *api, const struct http_request *req,
				struct api_response *resp)
{
	static const char *const fields[] = { "kernel_image_path", "boot_args", "initrd_path", NULL };
	struct json_doc doc;
	struct api_machine *m = &api->machine;
	char kernel[CONFIG_MAX_PATH], initrd[CONFIG_MAX_PATH] = "", args[CONFIG_MAX_CMDLINE] = "";
	if (!api_require_not_started(api, resp) || api_parse_object(req, &doc, fields, resp) < 0)
		return;
	int k = api_field_string(&doc, "kernel_image_path", kernel, sizeof(kernel), resp);
	if (k == 0)
		api_error(resp, 400, "kernel_image_path is required");
	if (k <= 0 || api_field_string(&doc, "initrd_path", initrd, sizeof(initrd), resp) < 0 ||
	    api_field_string(&doc, "boot_args", args, sizeof(args) - 64, resp) < 0 ||
	    api_check_file("kernel_image_path", kernel, false, resp) < 0 ||
	    (initrd[0] && api_check_file("initrd_path", initrd, false, resp) < 0))
		return;
	strcpy(m->kernel, kernel);
	strcpy(m->initrd, initrd);
	strcpy(m->boot_args, args);
	api_no_content(resp);
}

static void api_get_machine_config(struct api *api, struct api_response *resp)
{
	struct json_writer w;
	json_writer_init(&w, resp->body, sizeof(resp->body));
	json_begin_object(&w);
	json_key(&w, "vcpu_count");
	json_uint(&w, api->machine.vcpus);
	json_key(&w, "mem_size_mib");
	json_uint(&w, api->machine.mem_mib);
	json_key(&w, "smt");
	json_bool(&w, false);
	json_key(&w, "track_dirty_pages");
	json_bool(&w, false);
	json_key(&w, "huge_pages");
	json_string(&w, "None");
	json_end_object(&w);
	resp->status = 200;
	resp->len = w.len;
}

/* PUT needs both sizes (as Firecracker's does); PATCH changes what it names. */
static void api_set_machine_config(struct api *api, const struct http_request *req,
				   struct api_response *resp, bool patch)
{
	static const char *const fields[] = { "vcpu_count", "mem_size_mib", "smt", "track_dirty_pages",
					      "huge_pages", "cpu_template", NULL };
	struct json_doc doc;
	uint64_t vcpus = api->machine.vcpus, mem = api->machine.mem_mib;
	bool smt = false, dirty = false;
	char text[32];
	if (!api_require_not_started(api, resp) || api_parse_object(req, &doc, fields, resp) < 0)
		return;
	int have_cpus = api_field_uint(&doc, "vcpu_count", 1, 64, &vcpus, resp);
	if (have_cpus < 0)
		return;
	int have_mem = api_field_uint(&doc, "mem_size_mib", 64, 1ull << 24, &mem, resp);
	if (have_mem < 0 || api_field_bool(&doc, "smt", &smt, resp) < 0 ||
	    api_field_bool(&doc, "track_dirty_pages", &dirty, resp) < 0)
		return;
	if (!patch && (!have_cpus || !have_mem))
		return api_error(resp, 400, "vcpu_count and mem_size_mib are required (or use PATCH)");
	if (smt || dirty)
		return api_error(resp, 400, "%s is not supported by vmm (leave it false)",
				 smt ? "smt" : "track_dirty_pages");
	int r = api_field_string(&doc, "huge_pages", text, sizeof(text), resp);
	if (r < 0 || (r > 0 && strcmp(text, "None")))
		return r < 0 ? (void)0 : api_error(resp, 400, "huge_pages: only \"None\" is supported");
	r = api_field_string(&doc, "cpu_template", text, sizeof(text), resp);
	if (r < 0 || (r > 0 && strcmp(text, "None")))
		return r < 0 ? (void)0 : api_error(resp, 400, "cpu_template: only \"None\" is supported");
	api->machine.vcpus = (unsigned)vcpus;
	api->machine.mem_mib = mem;
	api_no_content(resp);
}

static void api_put_drive(struct api *api, const char *id, const struct http_request *req,
			  struct api_response *resp)
{
	static const char *const fields[] = { "drive_id", "path_on_host", "is_root_device",
					      "is_read_only", "cache_type", "io_engine", "partuuid",
					      "rate_limiter", NULL };
	struct json_doc doc;
	struct api_drive d = { 0 };
	char body_id[API_MAX_ID], text[32];
	struct api_machine *m = &api->machine;
	if (!api_require_not_started(api, resp) || api_parse_object(req, &doc, fields, resp) < 0)
		return;
	int r = api_field_string(&doc, "drive_id", body_id, sizeof(body_id), resp);
	if (r <= 0 || strcmp(body_id, id))
		return r < 0 ? (void)0 : api_error(resp, 400, "drive_id must be given and equal the id in the path (%s)", id);
	strcpy(d.id, id);
	r = api_field_string(&doc, "path_on_host", d.path, sizeof(d.path), resp);
	if (r == 0)
		api_error(resp, 400, "path_on_host is required");
	if (r <= 0)
		return;
	r = api_field_bool(&doc, "is_root_device", &d.root, resp);
	if (r == 0)
		api_error(resp, 400, "is_root_device is required");
	if (r <= 0 || api_field_bool(&doc, "is_read_only", &d.ro, resp) < 0)
		return;
	if (json_object_get(&doc, 0, "partuuid") >= 0 || json_object_get(&doc, 0, "rate_limiter") >= 0)
		return api_error(resp, 400, "partuuid and rate_limiter are not supported by vmm");
	r = api_field_string(&doc, "cache_type", text, sizeof(text), resp);
	if (r < 0 || (r > 0 && strcmp(text, "Unsafe") && strcmp(text, "Writeback")))
		return r < 0 ? (void)0 : api_error(resp, 400, "cache_type: use \"Unsafe\" or \"Writeback\"");
	r = api_field_string(&doc, "io_engine", text, sizeof(text), resp);
	if (r < 0 || (r > 0 && strcmp(text, "Sync") && strcmp(text, "Async")))
		return r < 0 ? (void)0 : api_error(resp, 400, "io_engine: use \"Sync\" or \"Async\"");
	if (api_check_file("path_on_host", d.path, true, resp) < 0)
		return;
	unsigned slot = m->nr_drives;
	for (unsigned i = 0; i < m->nr_drives; i++) {
		if (!strcmp(m->drives[i].id, id))
			slot = i; /* PUT replaces */
		else if (d.root && m->drives[i].root)
			return api_error(resp, 400, "drive %s is already the root device", m->drives[i].id);
	}
	if (slot == CONFIG_MAX_DISKS)
		return api_error(resp, 400, "more than %d drives", CONFIG_MAX_DISKS);
	m->drives[slot] = d;
	if (slot == m->nr_drives)
		m->nr_drives++;
	api_no_content(resp);
}

static void api_put_network(struct api *api, const char *id, const struct http_request *req,
			    struct api_response *resp)
{
	static const char *const fields[] = { "iface_id", "host_dev_name", "guest_mac",
					      "rx_rate_limiter", "tx_rate_limiter", NULL };
	struct json_doc doc;
	char body_id[API_MAX_ID], dev[32] = "", mac[32] = "", err[256];
	if (!api_require_not_started(api, resp) || api_parse_object(req, &doc, fields, resp) < 0)
		return;
	if (!api->ops->add_network)
		return api_error(resp, 400, "network interfaces are not supported by this vmm yet");
	int r = api_field_string(&doc, "iface_id", body_id, sizeof(body_id), resp);
	if (r <= 0 || strcmp(body_id, id))
		return r < 0 ? (void)0 : api_error(resp, 400, "iface_id must be given and equal the id in the path (%s)", id);
	r = api_field_string(&doc, "host_dev_name", dev, sizeof(dev), resp);
	if (r == 0)
		api_error(resp, 400, "host_dev_name is required");
	if (r <= 0 || api_field_string(&doc, "guest_mac", mac, sizeof(mac), resp) < 0)
		return;
	if (api->ops->add_network(api->opaque, id, dev, mac, err, sizeof(err)) < 0)
		return api_error(resp, 400, "%s", err);
	api_no_content(resp);
}

static void api_put_actions(struct api *api, const struct http_request *req,
			    struct api_response *resp)
{
	static const char *const fields[] = { "action_type", "payload", NULL };
	struct json_doc doc;
	char action[32], err[256];
	if (api_parse_object(req, &doc, fields, resp) < 0)
		return;
	int r = api_field_string(&doc, "action_type", action, sizeof(action), resp);
	if (r == 0)
		api_error(resp, 400, "action_type is required");
	if (r <= 0)
		return;
	enum api_state state = api->ops->state(api->opaque);
	if (!strcmp(action, "InstanceStart")) {
		if (!api_require_not_started(api, resp))
			return;
		if (!api->machine.kernel[0])
			return api_error(resp, 400, "no kernel: PUT /boot-source first");
		if (api->ops->start(api->opaque, err, sizeof(err)) < 0)
			return api_error(resp, 400, "%s", err);
		return api_no_content(resp);
	}
	if (!strcmp(action, "SendCtrlAltDel")) {
		if (state == API_STATE_NOT_STARTED)
			return api_error(resp, 400, "the microVM is not running");
		api->ops->power_button(api->opaque);
		return api_no_content(resp);
	}
	if (!strcmp(action, "FlushMetrics"))
		return api_error(resp, 400, "vmm keeps no metrics file (use GET /vmm/stats)");
	api_error(resp, 400, "unknown action_type '%s' (use InstanceStart or SendCtrlAltDel)", action);
}

static void api_patch_vm(struct api *api, const struct http_request *req,
			 struct api_response *resp)
{
	static const char *const fields[] = { "state", NULL };
	struct json_doc doc;
	char state[16];
	if (api_parse_object(req, &doc, fields, resp) < 0)
		return;
	int r = api_field_string(&doc, "state", state, sizeof(state), resp);
	bool pause = r > 0 && !strcmp(state, "Paused");
	if (r <= 0 || (!pause && strcmp(state, "Resumed")))
		return r < 0 ? (void)0 : api_error(resp, 400, "state: use \"Paused\" or \"Resumed\"");
	if (api->ops->state(api->opaque) == API_STATE_NOT_STARTED)
		return api_error(resp, 400, "the microVM is not running");
	if (api->ops->pause(api->opaque, pause) < 0)
		return api_error(resp, 400, "the microVM is stopping");
	api_no_content(resp);
}

static void api_get_root(struct api *api, struct api_response *resp, bool own)
{
	struct json_writer w;
	json_writer_init(&w, resp->body, sizeof(resp->body));
	json_begin_object(&w);
	json_key(&w, "id");
	json_string(&w, api->id);
	json_key(&w, "state");
	json_string(&w, api_state_name(api->ops->state(api->opaque)));
	json_key(&w, "vmm_version");
	json_string(&w, VMM_VERSION);
	json_key(&w, "app_name");
	json_string(&w, "vmm");
	if (own) {
		json_key(&w, "vcpu_count");
		json_uint(&w, api->machine.vcpus);
		json_key(&w, "mem_size_mib");
		json_uint(&w, api->machine.mem_mib);
		json_key(&w, "kernel_image_path");
		json_string(&w, api->machine.kernel);
		api->ops->info(api->opaque, &w);
	}
	json_end_object(&w);
	resp->status = w.overflow ? 500 : 200;
	resp->len = w.len;
}

/* GET /vmm/stats/text: {"report": "..."}, the text `vmm stat` shows. */
static void api_get_stats_text(struct api *api, struct api_response *resp)
{
	if (!api->ops->report)
		return api_error(resp, 501, "text statistics are not available");
	char *text = malloc(API_MAX_RESPONSE / 2);
	if (!text)
		return api_error(resp, 500, "out of memory");
	api->ops->report(api->opaque, text, API_MAX_RESPONSE / 2);
	struct json_writer w;
	json_writer_init(&w, resp->body, sizeof(resp->body));
	json_begin_object(&w);
	json_key(&w, "report");
	json_string(&w, text);
	json_end_object(&w);
	free(text);
	if (w.overflow)
		return api_error(resp, 500, "the statistics do not fit in a response");
	resp->status = 200;
	resp->len = w.len;
}

static void api_get_stats(struct api *api, struct api_response *resp)
{
	struct json_writer w;
	json_writer_init(&w, resp->body, sizeof(resp->body));
	json_begin_object(&w);
	api->ops->stats(api->opaque, &w);
	json_end_object(&w);
	if (w.overflow)
		return api_error(resp, 500, "the statistics do not fit in a response");
	resp->status = 200;
	resp->len = w.len;
}

/* /vmm/stop and /vmm/kill take no body, or an empty JSON object. */
static bool api_empty_body(const struct http_request *req, struct api_response *resp)
{
	static const char *const none[] = { NULL };
	struct json_doc doc;
	return req->body_len == 0 || api_parse_object(req, &doc, none, resp) == 0;
}

/* "/drives/ID" → ID, validated; NULL (response filled) when the path is not of that form. */
static const char *api_path_id(const char *target, const char *prefix, struct api_response *resp)
{
	size_t n = strlen(prefix);
	if (strncmp(target, prefix, n))
		return NULL;
	const char *id = target + n;
	if (!api_valid_id(id)) {
		api_error(resp, 400, "bad id '%.64s' in the path (letters, digits, _ and -, at most %d)",
			  id, API_MAX_ID - 1);
		return "";
	}
	return id;
}

void api_handle(struct api *api, const struct http_request *req, struct api_response *resp)
{
	const char *m = req->method, *t = req->target, *id;
	resp->status = 0;
	bool get = !strcmp(m, "GET"), put = !strcmp(m, "PUT"), patch = !strcmp(m, "PATCH");
	if (!strcmp(t, "/") && get)
		api_get_root(api, resp, false);
	else if (!strcmp(t, "/boot-source") && put)
		api_put_boot_source(api, req, resp);
	else if (!strcmp(t, "/machine-config") && get)
		api_get_machine_config(api, resp);
	else if (!strcmp(t, "/machine-config") && (put || patch))
		api_set_machine_config(api, req, resp, patch);
	else if (put && (id = api_path_id(t, "/drives/", resp)))
		*id ? api_put_drive(api, id, req, resp) : (void)0;
	else if (put && (id = api_path_id(t, "/network-interfaces/", resp)))
		*id ? api_put_network(api, id, req, resp) : (void)0;
	else if (!strcmp(t, "/actions") && put)
		api_put_actions(api, req, resp);
	else if (!strcmp(t, "/vm") && patch)
		api_patch_vm(api, req, resp);
	else if (!strcmp(t, "/vmm") && get)
		api_get_root(api, resp, true);
	else if (!strcmp(t, "/vmm/stats") && get)
		api_get_stats(api, resp);
	else if (!strcmp(t, "/vmm/stats/text") && get)
		api_get_stats_text(api, resp);
	else if (!strcmp(t, "/vmm/stop") && put) {
		if (api_empty_body(req, resp)) {
			if (api->ops->state(api->opaque) == API_STATE_NOT_STARTED)
				api->ops->kill(api->opaque); /* nothing to shut down: just end */
			else
				api->ops->power_button(api->opaque);
			api_no_content(resp);
		}
	} else if (!strcmp(t, "/vmm/kill") && put) {
		if (api_empty_body(req, resp)) {
			api->ops->kill(api->opaque);
			api_no_content(resp);
		}
	} else
		api_error(resp, 400, "Invalid request method and/or path: %s %s.", m, t);
}

int api_machine_to_config(const struct api_machine *m, struct vm_config *cfg, char *err,
			  size_t err_len)
{
	cfg->kernel_path = m->kernel;
	cfg->initrd_path = m->initrd[0] ? m->initrd : NULL;
	cfg->nr_cpus = m->vcpus;
	cfg->cpus_given = true;
	cfg->mem_size = m->mem_mib << 20;
	cfg->nr_disks = 0;
	const char *root = "";
	/* The root device first, so it is /dev/vda as in Firecracker; then the others in order. */
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < m->nr_drives; i++) {
			const struct api_drive *d = &m->drives[i];
			if (d->root != (pass == 0))
				continue;
			struct disk_config *dc = &cfg->disks[cfg->nr_disks++];
			memset(dc, 0, sizeof(*dc));
			snprintf(dc->path, sizeof(dc->path), "%s", d->path);
			dc->ro = d->ro;
			snprintf(dc->serial, sizeof(dc->serial), "%s", d->id);
			if (d->root)
				root = d->ro ? "root=/dev/vda ro" : "root=/dev/vda rw";
		}
	}
	int n = snprintf(cfg->cmdline, sizeof(cfg->cmdline), "%s%s%s", m->boot_args,
			 m->boot_args[0] && root[0] ? " " : "", root);
	if (n < 0 || (size_t)n >= sizeof(cfg->cmdline)) {
		snprintf(err, err_len, "boot_args: too long");
		return -1;
	}
	return 0;
}
