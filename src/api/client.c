/* `vmm ls|status|stop|kill|pause|resume|console`: clients of the control socket. A socket that
 * nobody listens on belongs to a monitor that died: it is removed, never listed. */
#include "api/client.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "api/http.h"
#include "api/json.h"
#include "api/server.h"

#define CLIENT_MAX_RESPONSE (API_MAX_RESPONSE + 1024)

struct client_response {
	int status;
	char raw[CLIENT_MAX_RESPONSE + 1];
	const char *body;
	size_t body_len;
};

/* One request on a new connection. 0, or -errno (ECONNREFUSED/ENOENT: nobody listens). */
static int client_request(const char *path, const char *method, const char *target,
			  const char *body, struct client_response *r)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	r->status = 0; /* no answer yet, whatever the failure below */
	r->body = NULL;
	r->body_len = 0;
	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	memcpy(addr.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	struct timeval tv = { .tv_sec = 10 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	char req[1024];
	size_t blen = body ? strlen(body) : 0;
	int n = snprintf(req, sizeof(req),
			 "%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
			 "Connection: close\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
			 method, target, blen, body ? body : "");
	if (n < 0 || (size_t)n >= sizeof(req) || write(fd, req, (size_t)n) != n) {
		close(fd);
		return -EIO;
	}
	size_t len = 0;
	for (;;) {
		ssize_t got = read(fd, r->raw + len, CLIENT_MAX_RESPONSE - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		len += (size_t)got;
		if (len == CLIENT_MAX_RESPONSE)
			break;
	}
	close(fd);
	r->raw[len] = '\0';
	const char *head_end = strstr(r->raw, "\r\n\r\n");
	if (len < 12 || strncmp(r->raw, "HTTP/1.1 ", 9) || !head_end)
		return -EPROTO;
	r->status = atoi(r->raw + 9);
	r->body = head_end + 4;
	r->body_len = len - (size_t)(r->body - r->raw);
	return 0;
}

/* The fault_message of an error response, or the whole body. */
static void client_fault(const struct client_response *r, char *out, size_t size)
{
	struct json_doc doc;
	char err[64];
	int v;
	if (json_parse(&doc, r->body, r->body_len, err, sizeof(err)) == 0 &&
	    (v = json_object_get(&doc, 0, "fault_message")) >= 0 &&
	    json_get_string(&doc, (unsigned)v, out, size) == 0)
		return;
	snprintf(out, size, "HTTP status %d", r->status);
}

static int client_resolve(const char *name, char *path, size_t size)
{
	char err[256];
	if (api_socket_path(name, path, size, err, sizeof(err)) < 0) {
		fprintf(stderr, "vmm: %s\n", err);
		return -1;
	}
	return 0;
}

/* Send one request to VM `name`; prints one line and returns -1 on any failure. */
static int client_call(const char *name, const char *method, const char *target,
		       const char *body, struct client_response *r)
{
	char path[108];
	if (client_resolve(name, path, sizeof(path)) < 0)
		return -1;
	int ret = client_request(path, method, target, body, r);
	if (ret == -ECONNREFUSED || ret == -ENOENT) {
		struct stat st;
		if (ret == -ECONNREFUSED && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(path); /* stale: its monitor is gone */
		fprintf(stderr, "vmm: %s: no such VM running (vmm ls lists them)\n", name);
		return -1;
	}
	if (ret < 0) {
		fprintf(stderr, "vmm: %s: %s (is %s a vmm control socket?)\n", name, strerror(-ret), path);
		return -1;
	}
	if (r->status >= 300) {
		char msg[512];
		client_fault(r, msg, sizeof(msg));
		fprintf(stderr, "vmm: %s: %s\n", name, msg);
		return -1;
	}
	return 0;
}

struct client_vm_info {
	char id[65], state[16], console[64];
	uint64_t vcpus, mem_mib, pid;
};

static int client_parse_info(const struct client_response *r, struct client_vm_info *info)
{
	struct json_doc doc;
	char err[64];
	memset(info, 0, sizeof(*info));
	if (json_parse(&doc, r->body, r->body_len, err, sizeof(err)) < 0)
		return -1;
	int v;
	if ((v = json_object_get(&doc, 0, "id")) < 0 || json_get_string(&doc, (unsigned)v, info->id, sizeof(info->id)) < 0 ||
	    (v = json_object_get(&doc, 0, "state")) < 0 || json_get_string(&doc, (unsigned)v, info->state, sizeof(info->state)) < 0)
		return -1;
	if ((v = json_object_get(&doc, 0, "vcpu_count")) >= 0)
		json_get_uint(&doc, (unsigned)v, UINT64_MAX, &info->vcpus);
	if ((v = json_object_get(&doc, 0, "mem_size_mib")) >= 0)
		json_get_uint(&doc, (unsigned)v, UINT64_MAX, &info->mem_mib);
	if ((v = json_object_get(&doc, 0, "pid")) >= 0)
		json_get_uint(&doc, (unsigned)v, UINT64_MAX, &info->pid);
	if ((v = json_object_get(&doc, 0, "console")) >= 0)
		json_get_string(&doc, (unsigned)v, info->console, sizeof(info->console));
	return 0;
}

static int client_ls(bool as_json)
{
	char dir[108], err[256];
	if (api_runtime_dir(dir, sizeof(dir), err, sizeof(err)) < 0) {
		fprintf(stderr, "vmm: %s\n", err);
		return 1;
	}
	DIR *d = opendir(dir);
	struct dirent **names = NULL;
	int count = d ? scandir(dir, &names, NULL, alphasort) : 0;
	if (d)
		closedir(d);
	if (as_json)
		printf("[");
	else
		printf("%-20s %-12s %5s %9s %8s  %s\n", "NAME", "STATE", "VCPUS", "MEMORY", "PID", "CONSOLE");
	bool first = true;
	for (int i = 0; i < count; i++) {
		const char *n = names[i]->d_name;
		size_t len = strlen(n);
		char path[sizeof(dir) + 256 + 2], name[80];
		if (len < 6 || len - 5 >= sizeof(name) || strcmp(n + len - 5, ".sock")) {
			free(names[i]);
			continue;
		}
		memcpy(name, n, len - 5);
		name[len - 5] = '\0';
		struct client_response *r = malloc(sizeof(*r));
		struct client_vm_info info;
		snprintf(path, sizeof(path), "%s/%s", dir, n);
		struct stat st;
		int ret = !r || lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode) ? -EINVAL
			  : client_request(path, "GET", "/vmm", NULL, r);
		if (ret == -ECONNREFUSED)
			unlink(path); /* a dead monitor's socket: remove it, do not list it */
		if (ret == 0 && r->status == 200 && client_parse_info(r, &info) == 0) {
			if (as_json) {
				char buf[512];
				struct json_writer w;
				json_writer_init(&w, buf, sizeof(buf));
				json_begin_object(&w);
				json_key(&w, "name");
				json_string(&w, name);
				json_key(&w, "state");
				json_string(&w, info.state);
				json_key(&w, "vcpu_count");
				json_uint(&w, info.vcpus);
				json_key(&w, "mem_size_mib");
				json_uint(&w, info.mem_mib);
				json_key(&w, "pid");
				json_uint(&w, info.pid);
				json_key(&w, "api_sock");
				json_string(&w, path);
				json_key(&w, "console");
				json_string(&w, info.console);
				json_end_object(&w);
				printf("%s%s", first ? "" : ",", buf);
			} else {
				printf("%-20s %-12s %5llu %6lluMiB %8llu  %s\n", name, info.state,
				       (unsigned long long)info.vcpus, (unsigned long long)info.mem_mib,
				       (unsigned long long)info.pid, info.console[0] ? info.console : "-");
			}
			first = false;
		}
		free(r);
		free(names[i]);
	}
	free(names);
	if (as_json)
		printf("]\n");
	return 0;
}

/* Wait until nobody listens on VM name's socket any more. */
static int client_wait_gone(const char *name, int seconds)
{
	char path[108];
	if (client_resolve(name, path, sizeof(path)) < 0)
		return 1;
	for (int i = 0; i < seconds * 20; i++) {
		if (api_socket_alive(path) != 1)
			return 0;
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "vmm: %s: still running after %d s (vmm kill %s ends it at once)\n", name,
		seconds, name);
	return 1;
}

static int client_status(const char *name, bool as_json)
{
	struct client_response *r = malloc(sizeof(*r));
	struct client_vm_info info;
	int status = 1;
	if (r && client_call(name, "GET", "/vmm", NULL, r) == 0) {
		if (as_json) {
			printf("%.*s\n", (int)r->body_len, r->body);
			status = 0;
		} else if (client_parse_info(r, &info) == 0) {
			printf("%s: %s, %llu vCPUs, %llu MiB, pid %llu%s%s\n", info.id, info.state,
			       (unsigned long long)info.vcpus, (unsigned long long)info.mem_mib,
			       (unsigned long long)info.pid, info.console[0] ? ", console " : "",
			       info.console);
			status = 0;
		}
	}
	free(r);
	return status;
}

/* vmm stat NAME: the statistics --stats prints at exit, read live; --watch repeats every
 * `interval` seconds (clearing the screen on a terminal) until the VM ends or the user stops it. */
static int client_stat(const char *name, unsigned interval)
{
	struct client_response *r = malloc(sizeof(*r));
	char *text = malloc(CLIENT_MAX_RESPONSE);
	int status = 1;
	bool clear = interval && isatty(STDOUT_FILENO);
	for (unsigned shown = 0; r && text; shown++) {
		struct json_doc doc;
		char err[64];
		int v;
		if (client_call(name, "GET", "/vmm/stats/text", NULL, r) < 0 ||
		    json_parse(&doc, r->body, r->body_len, err, sizeof(err)) < 0 ||
		    (v = json_object_get(&doc, 0, "report")) < 0 ||
		    json_get_string(&doc, (unsigned)v, text, CLIENT_MAX_RESPONSE) < 0) {
			status = shown ? 0 : 1; /* a VM that ended while watched is a normal end */
			break;
		}
		printf("%s%s", clear ? "\033[H\033[2J" : "", text);
		fflush(stdout);
		status = 0;
		if (!interval)
			break;
		sleep(interval);
	}
	free(text);
	free(r);
	return status;
}

/* Attach the terminal to the VM's console pty; Ctrl-] detaches. */
static int client_console(const char *name)
{
	struct client_response *r = malloc(sizeof(*r));
	struct client_vm_info info;
	if (!r || client_call(name, "GET", "/vmm", NULL, r) < 0 || client_parse_info(r, &info) < 0) {
		free(r);
		return 1;
	}
	free(r);
	if (!info.console[0]) {
		fprintf(stderr, "vmm: %s: has no console pty (start it with --console-pty, as runvmm start does)\n", name);
		return 1;
	}
	int fd = open(info.console, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "vmm: %s: console %s: %s\n", name, info.console, strerror(errno));
		return 1;
	}
	struct termios saved, raw;
	bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
	if (tty) {
		raw = saved;
		cfmakeraw(&raw);
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw);
		fprintf(stderr, "vmm: attached to %s's console (Ctrl-] detaches)\r\n", name);
	}
	struct pollfd p[2] = { { .fd = STDIN_FILENO, .events = POLLIN }, { .fd = fd, .events = POLLIN } };
	int status = 0;
	bool in_open = true;
	for (;;) {
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		char buf[4096];
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(fd, buf, sizeof(buf));
			if (n <= 0)
				break; /* the monitor is gone */
			if (write(STDOUT_FILENO, buf, (size_t)n) < 0)
				break;
		}
		if (in_open && (p[0].revents & (POLLIN | POLLHUP))) {
			ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n <= 0) {
				in_open = false; /* keep showing the console until the VM ends */
				p[0].fd = -1;
				continue;
			}
			char *detach = tty ? memchr(buf, 0x1d, (size_t)n) : NULL;
			size_t len = detach ? (size_t)(detach - buf) : (size_t)n;
			if (len && write(fd, buf, len) < 0)
				break;
			if (detach)
				break;
		}
	}
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
		fprintf(stderr, "\nvmm: detached from %s's console\n", name);
	}
	close(fd);
	return status;
}

static const char client_usage[] =
	"usage: vmm ls [--json]\n"
	"       vmm status [--json] NAME\n"
	"       vmm stat [--watch [SECONDS]] NAME  exits, devices, interrupts, boot marks (live)\n"
	"       vmm stop [--no-wait] NAME     press the ACPI power button and wait for the VM to end\n"
	"       vmm kill NAME                 end the VM at once\n"
	"       vmm pause NAME | resume NAME\n"
	"       vmm console NAME              attach to the console pty (Ctrl-] detaches)\n"
	"NAME is a VM's --name (its socket in the runtime directory) or a socket path.\n";

bool client_is_command(const char *word)
{
	static const char *const words[] = { "ls", "status", "stat", "stop", "kill", "pause", "resume",
					     "console", NULL };
	for (const char *const *w = words; *w; w++)
		if (!strcmp(word, *w))
			return true;
	return false;
}

int client_main(int argc, char **argv)
{
	const char *cmd = argv[0], *name = NULL;
	bool as_json = false, wait = true;
	unsigned watch = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json") && (!strcmp(cmd, "ls") || !strcmp(cmd, "status")))
			as_json = true;
		else if (!strcmp(argv[i], "--watch") && !strcmp(cmd, "stat")) {
			watch = 1;
			char *end;
			unsigned long s = i + 1 < argc ? strtoul(argv[i + 1], &end, 10) : 0;
			if (i + 1 < argc && *end == '\0' && s >= 1 && s <= 3600) {
				watch = (unsigned)s;
				i++;
			}
		}
		else if (!strcmp(argv[i], "--no-wait") && !strcmp(cmd, "stop"))
			wait = false;
		else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			fputs(client_usage, stdout);
			return 0;
		} else if (argv[i][0] == '-' || name) {
			fprintf(stderr, "vmm %s: %s: unexpected argument (see vmm %s --help)\n", cmd, argv[i], cmd);
			return 2;
		} else
			name = argv[i];
	}
	if (!strcmp(cmd, "ls"))
		return name ? (fprintf(stderr, "vmm ls: takes no NAME (see vmm ls --help)\n"), 2) : client_ls(as_json);
	if (!name) {
		fprintf(stderr, "vmm %s: no VM name given (usage: vmm %s NAME; vmm ls lists them)\n", cmd, cmd);
		return 2;
	}
	/* A NAME with a '/' is a socket path (e.g. one given to --api-sock); anything else must be a
	 * name a VM can have, or it is bad usage. */
	if (!strchr(name, '/') && !api_valid_name(name)) {
		fprintf(stderr, "vmm %s: %.80s: not a VM name (use letters, digits, '.', '_' and '-', or a socket path)\n",
			cmd, name);
		return 2;
	}
	if (!strcmp(cmd, "status"))
		return client_status(name, as_json);
	if (!strcmp(cmd, "stat"))
		return client_stat(name, watch);
	if (!strcmp(cmd, "console"))
		return client_console(name);
	struct client_response *r = malloc(sizeof(*r));
	int status = 1;
	if (!r)
		return 1;
	if (!strcmp(cmd, "stop"))
		status = client_call(name, "PUT", "/vmm/stop", NULL, r) < 0 ? 1 : wait ? client_wait_gone(name, 60) : 0;
	else if (!strcmp(cmd, "kill"))
		status = client_call(name, "PUT", "/vmm/kill", NULL, r) < 0 ? 1 : client_wait_gone(name, 10);
	else if (!strcmp(cmd, "pause"))
		status = client_call(name, "PATCH", "/vm", "{\"state\": \"Paused\"}", r) < 0;
	else if (!strcmp(cmd, "resume"))
		status = client_call(name, "PATCH", "/vm", "{\"state\": \"Resumed\"}", r) < 0;
	free(r);
	return status;
}
