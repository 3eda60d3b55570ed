/* A small strict JSON reader (RFC 8259) and writer for the control socket. The reader fills a
 * fixed token table; strings are decoded on request. Limits keep a hostile body harmless. */
#ifndef VMM_API_JSON_H
#define VMM_API_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_TOKENS 256
#define JSON_MAX_DEPTH 16

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json_token {
	enum json_type type;
	uint32_t start, len; /* the token's text in the input (strings: without the quotes) */
	uint32_t count; /* objects: members; arrays: elements */
	uint32_t next; /* index of the first token after this value and everything inside it */
	bool value; /* JSON_BOOL */
};

struct json_doc {
	const char *text;
	size_t len;
	struct json_token tok[JSON_MAX_TOKENS];
	unsigned count;
};

/* Parse text[0..len) as one JSON value with nothing but white space around it. 0, or -1 with
 * one line in err (what and where). Objects with a repeated key are refused. */
int json_parse(struct json_doc *doc, const char *text, size_t len, char *err, size_t err_len);

/* The value of member `key` of the object at token `obj`: its index, or -1. */
int json_object_get(const struct json_doc *doc, unsigned obj, const char *key);
/* Iterate members: the key token of the first member is obj + 1; the next key is
 * tok[key + 1].next. */

/* Decode the string token at idx into out (UTF-8, NUL-terminated). -1 if it is not a string, has
 * an escaped NUL, or does not fit. */
int json_get_string(const struct json_doc *doc, unsigned idx, char *out, size_t size);
/* An unsigned integer without fraction or exponent, at most max. -1 otherwise. */
int json_get_uint(const struct json_doc *doc, unsigned idx, uint64_t max, uint64_t *out);
int json_get_bool(const struct json_doc *doc, unsigned idx, bool *out);
/* Compare a key or string token with a plain ASCII string (no escapes in the token). */
bool json_string_is(const struct json_doc *doc, unsigned idx, const char *s);

/* Writer into a fixed buffer; `overflow` is set instead of writing past the end. Commas are
 * placed automatically. */
struct json_writer {
	char *buf;
	size_t size, len;
	bool overflow;
	unsigned depth;
	bool first[JSON_MAX_DEPTH + 1];
};

void json_writer_init(struct json_writer *w, char *buf, size_t size);
void json_begin_object(struct json_writer *w);
void json_end_object(struct json_writer *w);
void json_begin_array(struct json_writer *w);
void json_end_array(struct json_writer *w);
void json_key(struct json_writer *w, const char *key); /* in an object, before each value */
void json_string(struct json_writer *w, const char *s);
void json_uint(struct json_writer *w, uint64_t v);
void json_bool(struct json_writer *w, bool v);

#endif
