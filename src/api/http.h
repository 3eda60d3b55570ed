/* A small strict HTTP/1.1 request parser (RFC 9112) and response writer for the control socket.
 * Only what API clients send: a request line, header fields, and a body with Content-Length. */
#ifndef VMM_API_HTTP_H
#define VMM_API_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_MAX_HEAD 8192 /* request line and header fields */
#define HTTP_MAX_BODY 51200 /* Firecracker's payload limit */
#define HTTP_MAX_TARGET 256

struct http_request {
	char method[8];
	char target[HTTP_MAX_TARGET];
	const char *body; /* points into the parsed buffer */
	size_t body_len;
	bool keep_alive;
	bool expect_continue; /* "Expect: 100-continue": the client waits before sending the body */
};

/* Parse one request at the start of buf[0..len).
 * > 0: a complete request of that many bytes is in *req;
 *   0: more bytes are needed (req->expect_continue tells whether the head is complete and the
 *      client waits for "100 Continue");
 * < 0: the negative HTTP status to answer with (400, 413, 414, 431, 501, 505); *why says why. */
long http_parse_request(const char *buf, size_t len, struct http_request *req, const char **why);

/* The reason phrase of a status code ("Bad Request"). */
const char *http_reason(int status);

/* Format a response head and body into out; the length written, or 0 if it does not fit. */
size_t http_format_response(char *out, size_t size, int status, const char *body,
			    size_t body_len, bool keep_alive);

#endif
