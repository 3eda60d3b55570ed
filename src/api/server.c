/* The control socket's connections: non-blocking, read into a fixed buffer, one request parsed
 * at a time (pipelined requests wait their turn), responses queued and written as the socket
 * takes them. A malformed request gets its 4xx and the connection is closed. */
#include "api/server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

bool api_valid_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 64 || name[0] == '.')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		      (name[i] >= '0' && name[i] <= '9') || strchr("._-", name[i])))
			return false;
	return true;
}

int api_runtime_dir(char *out, size_t size, char *err, size_t err_len)
{
	const char *env = getenv("VMM_RUNTIME_DIR"), *xdg = getenv("XDG_RUNTIME_DIR");
	int n;
	if (env && env[0])
		n = snprintf(out, size, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(out, size, "/run/vmm");
	else if (xdg && xdg[0] == '/')
		n = snprintf(out, size, "%s/vmm", xdg);
	else
		n = snprintf(out, size, "/tmp/vmm-%u", (unsigned)geteuid());
	if (n < 0 || (size_t)n >= size) {
		snprintf(err, err_len, "runtime directory: path too long (set VMM_RUNTIME_DIR)");
		return -1;
	}
	return 0;
}

int api_socket_path(const char *name, char *out, size_t size, char *err, size_t err_len)
{
	if (strchr(name, '/')) {
		if (strlen(name) >= size) {
			snprintf(err, err_len, "%s: socket path too long (at most %zu bytes)", name, size - 1);
			return -1;
		}
		strcpy(out, name);
		return 0;
	}
	if (!api_valid_name(name)) {
		snprintf(err, err_len, "%.80s: not a VM name (use letters, digits, '.', '_' and '-')", name);
		return -1;
	}
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	if (api_runtime_dir(dir, sizeof(dir), err, err_len) < 0)
		return -1;
	int n = snprintf(out, size, "%s/%s.sock", dir, name);
	if (n < 0 || (size_t)n >= size) {
		snprintf(err, err_len, "%s: socket path too long (shorten the name or VMM_RUNTIME_DIR)", name);
		return -1;
	}
	return 0;
}

static int api_fill_addr(struct sockaddr_un *addr, const char *path)
{
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(addr->sun_path))
		return -ENAMETOOLONG;
	strcpy(addr->sun_path, path);
	return 0;
}

int api_socket_alive(const char *path)
{
	struct sockaddr_un addr;
	if (api_fill_addr(&addr, path) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int ret = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
	int saved = errno;
	close(fd);
	if (ret == 0)
		return 1;
	if (saved == ECONNREFUSED || saved == ENOENT)
		return 0;
	errno = saved;
	return -1;
}

static void api_conn_close(struct api_server *s, struct api_conn *c)
{
	event_loop_remove(s->loop, c->fd);
	close(c->fd);
	c->fd = -1;
}

/* Write what is queued; close when done and the connection is closing. True when everything
 * was written and the connection stays open. */
static bool api_conn_flush(struct api_server *s, struct api_conn *c)
{
	while (c->out_done < c->out_len) {
		ssize_t n = write(c->fd, c->out + c->out_done, c->out_len - c->out_done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			event_loop_modify(s->loop, c->fd, EPOLLOUT);
			return false;
		}
		if (n <= 0) {
			api_conn_close(s, c);
			return false;
		}
		c->out_done += (size_t)n;
	}
	c->out_len = c->out_done = 0;
	if (c->closing) {
		api_conn_close(s, c);
		return false;
	}
	event_loop_modify(s->loop, c->fd, EPOLLIN);
	return true;
}

static void api_conn_respond(struct api_conn *c, int status, const char *body, size_t len,
			     bool keep_alive)
{
	c->out_len = http_format_response(c->out, sizeof(c->out), status, body, len, keep_alive);
	c->out_done = 0;
	if (!keep_alive)
		c->closing = true;
}

/* Handle every complete request in the buffer (one response queued at a time). */
static void api_conn_process(struct api_server *s, struct api_conn *c)
{
	while (c->out_len == 0 && !c->closing) {
		struct http_request req;
		const char *why;
		long n = http_parse_request(c->in, c->in_len, &req, &why);
		if (n == 0) {
			if (req.expect_continue && !c->sent_continue) {
				static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
				memcpy(c->out, cont, sizeof(cont) - 1);
				c->out_len = sizeof(cont) - 1;
				c->sent_continue = true;
			}
			return;
		}
		struct api_response *resp = malloc(sizeof(*resp));
		if (!resp) {
			c->closing = true;
			return;
		}
		if (n < 0) {
			api_error(resp, (int)-n, "%s", why);
			api_conn_respond(c, resp->status, resp->body, resp->len, false);
			trace_event(s, TRACE_CONTROL, TRACE_HOST, "api: malformed request -> %d: %s",
				    resp->status, why);
		} else {
			api_handle(s->api, &req, resp);
			api_conn_respond(c, resp->status, resp->body, resp->len, req.keep_alive);
			trace_event(s, TRACE_CONTROL, TRACE_HOST, "api: %s %s -> %d", req.method,
				    req.target, resp->status);
			memmove(c->in, c->in + n, c->in_len - (size_t)n);
			c->in_len -= (size_t)n;
			c->sent_continue = false;
		}
		free(resp);
	}
}

static void api_on_conn(void *opaque, int fd, uint32_t events)
{
	struct api_server *s = opaque;
	struct api_conn *c = NULL;
	for (int i = 0; i < API_MAX_CONNECTIONS && !c; i++)
		if (s->conns[i].fd == fd)
			c = &s->conns[i];
	if (!c)
		return;
	if ((events & EPOLLIN) && c->in_len < sizeof(c->in)) {
		ssize_t n = read(fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			api_conn_close(s, c);
			return;
		}
		if (n > 0)
			c->in_len += (size_t)n;
	} else if ((events & (EPOLLHUP | EPOLLERR)) && !(events & EPOLLOUT)) {
		api_conn_close(s, c);
		return;
	}
	/* Answer the requests in the buffer one by one, as the socket takes the responses. The
	 * buffer holds the largest valid request, so a full buffer always parses (or fails). */
	for (;;) {
		if (c->out_len == 0)
			api_conn_process(s, c);
		if ((c->out_len == 0 && !c->closing) || !api_conn_flush(s, c))
			break;
	}
}

static void api_on_accept(void *opaque, int fd, uint32_t events)
{
	struct api_server *s = opaque;
	(void)events;
	int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (c < 0)
		return;
	for (int i = 0; i < API_MAX_CONNECTIONS; i++) {
		struct api_conn *conn = &s->conns[i];
		if (conn->fd >= 0)
			continue;
		conn->fd = c;
		conn->in_len = conn->out_len = conn->out_done = 0;
		conn->sent_continue = conn->closing = false;
		if (event_loop_add(s->loop, c, EPOLLIN, api_on_conn, s) < 0) {
			close(c);
			conn->fd = -1;
		}
		return;
	}
	static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
				   "Content-Length: 54\r\nConnection: close\r\n\r\n"
				   "{\"fault_message\": \"too many connections; retry later\"}";
	if (write(c, busy, sizeof(busy) - 1) < 0) {
		/* the client will see the connection close */
	}
	close(c);
}

/* Create the default runtime directory (0700) when the socket lives in it. */
static void api_make_parent(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)], err[64];
	if (api_runtime_dir(dir, sizeof(dir), err, sizeof(err)) < 0)
		return;
	size_t n = strlen(dir);
	if (!strncmp(path, dir, n) && path[n] == '/' && !strchr(path + n + 1, '/'))
		mkdir(dir, 0700);
}

int api_server_open(struct api_server *s, const char *path, struct event_loop *loop,
		    struct api *api, char *err, size_t err_len)
{
	struct sockaddr_un addr;
	memset(s, 0, sizeof(*s));
	s->listen_fd = -1;
	s->loop = loop;
	s->api = api;
	for (int i = 0; i < API_MAX_CONNECTIONS; i++)
		s->conns[i].fd = -1;
	if (api_fill_addr(&addr, path) < 0) {
		snprintf(err, err_len, "--api-sock %s: path too long (at most %zu bytes)", path,
			 sizeof(addr.sun_path) - 1);
		return -1;
	}
	api_make_parent(path);
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, err_len, "--api-sock %s: exists and is not a socket (remove it or pick another path)", path);
			return -1;
		}
		if (api_socket_alive(path) == 1) {
			snprintf(err, err_len, "--api-sock %s: another vmm is serving it (pick another --name, or stop that VM)", path);
			return -1;
		}
		unlink(path); /* stale: its monitor died without removing it */
	}
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	mode_t old = umask(0177); /* the socket file is created 0600 */
	int ret = s->listen_fd < 0 ? -1 : bind(s->listen_fd, (struct sockaddr *)&addr, sizeof(addr));
	umask(old);
	if (ret < 0 || listen(s->listen_fd, 16) < 0) {
		snprintf(err, err_len, "--api-sock %s: %s (check that the directory exists and is writable)",
			 path, strerror(errno));
		if (ret == 0)
			unlink(path);
		if (s->listen_fd >= 0)
			close(s->listen_fd);
		s->listen_fd = -1;
		return -1;
	}
	strcpy(s->path, path);
	ret = event_loop_add(loop, s->listen_fd, EPOLLIN, api_on_accept, s);
	if (ret < 0) {
		snprintf(err, err_len, "--api-sock %s: event loop: %s", path, strerror(-ret));
		api_server_close(s, false);
		return -1;
	}
	return 0;
}

void api_server_flush(struct api_server *s)
{
	for (int i = 0; i < API_MAX_CONNECTIONS; i++) {
		struct api_conn *c = &s->conns[i];
		if (c->fd >= 0 && c->out_len > c->out_done) {
			int fl = fcntl(c->fd, F_GETFL);
			fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK); /* small: it fits the socket buffer */
			if (write(c->fd, c->out + c->out_done, c->out_len - c->out_done) < 0) {
				/* the client went away */
			}
			c->out_len = c->out_done = 0;
		}
	}
}

void api_server_close(struct api_server *s, bool keep)
{
	if (s->listen_fd < 0)
		return;
	api_server_flush(s);
	for (int i = 0; i < API_MAX_CONNECTIONS; i++)
		if (s->conns[i].fd >= 0)
			api_conn_close(s, &s->conns[i]);
	event_loop_remove(s->loop, s->listen_fd);
	close(s->listen_fd);
	s->listen_fd = -1;
	if (!keep)
		unlink(s->path);
}
