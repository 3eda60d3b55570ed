/* HTTP/1.1 requests (RFC 9112): CRLF line endings only, no obsolete line folding, no chunked
 * bodies (501), Content-Length up to HTTP_MAX_BODY (413), head up to HTTP_MAX_HEAD (431). */
#include "api/http.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 §5.6.2 tchar */
static bool http_is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Header field values: visible characters, space and tab (RFC 9110 §5.5). */
static bool http_is_field_char(char c)
{
	unsigned char u = (unsigned char)c;
	return u == ' ' || u == '\t' || (u > 0x20 && u != 0x7F);
}

static const char *http_find_crlf(const char *s, const char *end)
{
	for (const char *p = s; p + 1 < end; p++)
		if (p[0] == '\r' && p[1] == '\n')
			return p;
	return NULL;
}

static long http_error(const char **why, const char *text, int status)
{
	*why = text;
	return -status;
}

static bool http_token_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && !strncasecmp(s, word, len);
}

/* Does a comma-separated header value contain `word` (case-insensitively)? */
static bool http_list_has(const char *v, size_t len, const char *word)
{
	size_t i = 0;
	while (i < len) {
		while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t start = i;
		while (i < len && v[i] != ',')
			i++;
		size_t end = i;
		while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
			end--;
		if (end > start && http_token_is(v + start, end - start, word))
			return true;
	}
	return false;
}

static long http_parse_request_line(const char *s, const char *eol, struct http_request *req,
				    bool *http10, const char **why)
{
	const char *sp1 = memchr(s, ' ', (size_t)(eol - s));
	if (!sp1 || sp1 == s)
		return http_error(why, "malformed request line", 400);
	size_t mlen = (size_t)(sp1 - s);
	if (mlen >= sizeof(req->method))
		return http_error(why, "unknown method", 501);
	for (size_t i = 0; i < mlen; i++)
		if (!http_is_tchar(s[i]))
			return http_error(why, "malformed method", 400);
	memcpy(req->method, s, mlen);
	req->method[mlen] = '\0';
	const char *target = sp1 + 1;
	const char *sp2 = memchr(target, ' ', (size_t)(eol - target));
	if (!sp2 || sp2 == target)
		return http_error(why, "malformed request line", 400);
	size_t tlen = (size_t)(sp2 - target);
	/* origin-form only; curl sends "/path", some clients send "http://localhost/path" */
	if (tlen > 7 && !strncmp(target, "http://", 7)) {
		const char *slash = memchr(target + 7, '/', tlen - 7);
		if (!slash)
			return http_error(why, "malformed request target", 400);
		tlen -= (size_t)(slash - target);
		target = slash;
	}
	if (target[0] != '/')
		return http_error(why, "the request target must start with /", 400);
	if (tlen >= HTTP_MAX_TARGET)
		return http_error(why, "request target too long", 414);
	for (size_t i = 0; i < tlen; i++)
		if ((unsigned char)target[i] <= 0x20 || (unsigned char)target[i] >= 0x7F)
			return http_error(why, "bad character in the request target", 400);
	memcpy(req->target, target, tlen);
	req->target[tlen] = '\0';
	const char *version = sp2 + 1;
	size_t vlen = (size_t)(eol - version);
	if (vlen == 8 && !memcmp(version, "HTTP/1.1", 8))
		*http10 = false;
	else if (vlen == 8 && !memcmp(version, "HTTP/1.0", 8))
		*http10 = true;
	else if (vlen >= 5 && !memcmp(version, "HTTP/", 5))
		return http_error(why, "HTTP version not supported (use HTTP/1.1)", 505);
	else
		return http_error(why, "malformed request line", 400);
	return 0;
}

long http_parse_request(const char *buf, size_t len, struct http_request *req, const char **why)
{
	memset(req, 0, sizeof(*req));
	*why = "";
	const char *end = buf + len;
	/* RFC 9112 §2.2: ignore empty lines before the request line */
	const char *s = buf;
	while (end - s >= 2 && s[0] == '\r' && s[1] == '\n')
		s += 2;
	const char *head_limit = buf + (len < HTTP_MAX_HEAD ? len : HTTP_MAX_HEAD);
	const char *eol = http_find_crlf(s, head_limit);
	if (!eol) {
		if (len >= HTTP_MAX_HEAD)
			return http_error(why, "request line too long", 431);
		if (memchr(s, '\n', (size_t)(end - s)))
			return http_error(why, "lines must end with CRLF", 400);
		return 0;
	}
	bool http10 = false;
	long ret = http_parse_request_line(s, eol, req, &http10, why);
	if (ret < 0)
		return ret;
	bool have_length = false, close = http10, keep_alive = false;
	unsigned long long content_length = 0;
	for (s = eol + 2;;) {
		eol = http_find_crlf(s, head_limit);
		if (!eol) {
			if (len >= HTTP_MAX_HEAD)
				return http_error(why, "header fields too large", 431);
			if (memchr(s, '\n', (size_t)(end - s)))
				return http_error(why, "lines must end with CRLF", 400);
			return 0;
		}
		if (eol == s)
			break; /* the empty line ends the head */
		if (*s == ' ' || *s == '\t')
			return http_error(why, "obsolete line folding", 400);
		const char *colon = memchr(s, ':', (size_t)(eol - s));
		if (!colon || colon == s)
			return http_error(why, "malformed header field", 400);
		for (const char *p = s; p < colon; p++)
			if (!http_is_tchar(*p))
				return http_error(why, "malformed header field name", 400);
		const char *v = colon + 1;
		for (const char *p = v; p < eol; p++)
			if (!http_is_field_char(*p))
				return http_error(why, "bad character in a header field", 400);
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		const char *vend = eol;
		while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
			vend--;
		size_t name_len = (size_t)(colon - s), vlen = (size_t)(vend - v);
		if (http_token_is(s, name_len, "content-length")) {
			unsigned long long n = 0;
			if (!vlen || vlen > 12)
				return http_error(why, "bad Content-Length", 400);
			for (size_t i = 0; i < vlen; i++) {
				if (v[i] < '0' || v[i] > '9')
					return http_error(why, "bad Content-Length", 400);
				n = n * 10 + (unsigned)(v[i] - '0');
			}
			if (have_length && n != content_length)
				return http_error(why, "conflicting Content-Length fields", 400);
			have_length = true;
			content_length = n;
		} else if (http_token_is(s, name_len, "transfer-encoding")) {
			return http_error(why, "Transfer-Encoding is not supported (send Content-Length)", 501);
		} else if (http_token_is(s, name_len, "connection")) {
			close |= http_list_has(v, vlen, "close");
			keep_alive |= http_list_has(v, vlen, "keep-alive");
		} else if (http_token_is(s, name_len, "expect")) {
			if (!http_token_is(v, vlen, "100-continue"))
				return http_error(why, "unsupported expectation", 417);
			req->expect_continue = true;
		}
		s = eol + 2;
	}
	if (content_length > HTTP_MAX_BODY)
		return http_error(why, "body larger than 51200 bytes", 413);
	size_t head_len = (size_t)(eol + 2 - buf);
	req->keep_alive = http10 ? keep_alive && !close : !close;
	if (len - head_len < content_length)
		return 0; /* the body is still coming */
	req->expect_continue = false;
	req->body = buf + head_len;
	req->body_len = (size_t)content_length;
	return (long)(head_len + content_length);
}

const char *http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 417: return "Expectation Failed";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}

size_t http_format_response(char *out, size_t size, int status, const char *body,
			    size_t body_len, bool keep_alive)
{
	int n;
	if (status == 204)
		n = snprintf(out, size, "HTTP/1.1 204 No Content\r\nServer: vmm\r\n%s\r\n",
			     keep_alive ? "" : "Connection: close\r\n");
	else
		n = snprintf(out, size,
			     "HTTP/1.1 %d %s\r\nServer: vmm\r\nContent-Type: application/json\r\n"
			     "Content-Length: %zu\r\n%s\r\n",
			     status, http_reason(status), body_len,
			     keep_alive ? "" : "Connection: close\r\n");
	if (n < 0 || (size_t)n >= size)
		return 0;
	if (status == 204)
		return (size_t)n;
	if ((size_t)n + body_len > size)
		return 0;
	memcpy(out + n, body, body_len);
	return (size_t)n + body_len;
}
