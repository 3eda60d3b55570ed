/* The control socket: a Unix stream socket served from the main thread's event loop. */
#ifndef VMM_API_SERVER_H
#define VMM_API_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/un.h>

#include "api/api.h"
#include "event_loop.h"
#include "trace.h"

#define API_MAX_CONNECTIONS 8
#define API_CONN_BUFFER (HTTP_MAX_HEAD + HTTP_MAX_BODY)

struct api_conn {
	int fd; /* -1: free */
	size_t in_len, out_len, out_done;
	bool sent_continue, closing;
	char in[API_CONN_BUFFER];
	char out[API_MAX_RESPONSE + 256];
};

struct api_server {
	int listen_fd;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct event_loop *loop;
	struct api *api;
	struct api_conn conns[API_MAX_CONNECTIONS];
	struct trace trace; /* -t control: one line per request (set by control_open; off when 0) */
};

/* The directory of the default sockets: $VMM_RUNTIME_DIR, /run/vmm for root,
 * $XDG_RUNTIME_DIR/vmm, or /tmp/vmm-UID. 0, or -1 with one line in err. */
int api_runtime_dir(char *out, size_t size, char *err, size_t err_len);
/* NAME: 1–64 of letters, digits, '.', '_', '-', not starting with '.'. */
bool api_valid_name(const char *name);
/* The socket path of VM `name`: a path when it contains '/', else RUNTIME_DIR/NAME.sock. */
int api_socket_path(const char *name, char *out, size_t size, char *err, size_t err_len);

/* Listen on `path` (mode 0600). A stale socket (nobody listening) is replaced; a live one is an
 * error. 0, or -1 with one line in err. */
int api_server_open(struct api_server *s, const char *path, struct event_loop *loop,
		    struct api *api, char *err, size_t err_len);
/* Close every connection and the listener; remove the socket file unless keep. */
void api_server_close(struct api_server *s, bool keep);
/* Send what is still queued on each connection (before the process exits). */
void api_server_flush(struct api_server *s);

/* Is something listening on the socket at path? 1 yes, 0 no (stale or missing), -1 other error
 * (errno set). */
int api_socket_alive(const char *path);

#endif
