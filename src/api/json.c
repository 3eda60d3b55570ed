/* Strict JSON (RFC 8259): no comments, no trailing commas, no leading zeros, no control
 * characters or invalid UTF-8 in strings, one value per document. Recursive descent bounded by
 * JSON_MAX_DEPTH; tokens bounded by JSON_MAX_TOKENS. */
#include "api/json.h"

#include <stdio.h>
#include <string.h>

struct json_parser {
	struct json_doc *doc;
	size_t pos;
	char *err;
	size_t err_len;
};

static int json_fail(struct json_parser *p, const char *what)
{
	snprintf(p->err, p->err_len, "%s at byte %zu", what, p->pos);
	return -1;
}

static void json_skip_space(struct json_parser *p)
{
	const char *t = p->doc->text;
	while (p->pos < p->doc->len &&
	       (t[p->pos] == ' ' || t[p->pos] == '\t' || t[p->pos] == '\n' || t[p->pos] == '\r'))
		p->pos++;
}

static int json_new_token(struct json_parser *p, enum json_type type)
{
	struct json_doc *d = p->doc;
	if (d->count == JSON_MAX_TOKENS)
		return json_fail(p, "too many values");
	d->tok[d->count] = (struct json_token){ .type = type, .start = (uint32_t)p->pos };
	return (int)d->count++;
}

static int json_hex4(const char *s)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 (RFC 3629 §4). */
static size_t json_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3
		     : (c & 0xF8) == 0xF0 ? 4 : 0;
	if (!len || len > n || c == 0xC0 || c == 0xC1 || c > 0xF4)
		return 0;
	for (size_t i = 1; i < len; i++)
		if ((s[i] & 0xC0) != 0x80)
			return 0;
	if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) ||
	    (c == 0xF4 && s[1] > 0x8F))
		return 0; /* overlong, surrogate or above U+10FFFF */
	return len;
}

static int json_parse_string(struct json_parser *p, enum json_type type)
{
	const char *t = p->doc->text;
	p->pos++; /* the opening quote */
	int idx = json_new_token(p, type);
	if (idx < 0)
		return -1;
	while (p->pos < p->doc->len) {
		unsigned char c = (unsigned char)t[p->pos];
		if (c == '"') {
			struct json_token *tok = &p->doc->tok[idx];
			tok->len = (uint32_t)(p->pos - tok->start);
			tok->next = p->doc->count;
			p->pos++;
			return idx;
		}
		if (c < 0x20)
			return json_fail(p, "control character in a string");
		if (c == '\\') {
			if (p->pos + 1 >= p->doc->len)
				break;
			char e = t[p->pos + 1];
			if (e == 'u') {
				if (p->pos + 6 > p->doc->len || json_hex4(t + p->pos + 2) < 0)
					return json_fail(p, "bad \\u escape");
				p->pos += 6;
			} else if (strchr("\"\\/bfnrt", e) && e) {
				p->pos += 2;
			} else {
				return json_fail(p, "bad escape");
			}
			continue;
		}
		size_t n = json_utf8_len((const unsigned char *)t + p->pos, p->doc->len - p->pos);
		if (!n)
			return json_fail(p, "invalid UTF-8");
		p->pos += n;
	}
	return json_fail(p, "unterminated string");
}

static bool json_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int json_parse_number(struct json_parser *p)
{
	const char *t = p->doc->text;
	size_t n = p->doc->len;
	int idx = json_new_token(p, JSON_NUMBER);
	if (idx < 0)
		return -1;
	if (p->pos < n && t[p->pos] == '-')
		p->pos++;
	if (p->pos >= n || !json_is_digit(t[p->pos]))
		return json_fail(p, "bad number");
	if (t[p->pos] == '0' && p->pos + 1 < n && json_is_digit(t[p->pos + 1]))
		return json_fail(p, "leading zero in a number");
	while (p->pos < n && json_is_digit(t[p->pos]))
		p->pos++;
	if (p->pos < n && t[p->pos] == '.') {
		p->pos++;
		if (p->pos >= n || !json_is_digit(t[p->pos]))
			return json_fail(p, "bad fraction");
		while (p->pos < n && json_is_digit(t[p->pos]))
			p->pos++;
	}
	if (p->pos < n && (t[p->pos] == 'e' || t[p->pos] == 'E')) {
		p->pos++;
		if (p->pos < n && (t[p->pos] == '+' || t[p->pos] == '-'))
			p->pos++;
		if (p->pos >= n || !json_is_digit(t[p->pos]))
			return json_fail(p, "bad exponent");
		while (p->pos < n && json_is_digit(t[p->pos]))
			p->pos++;
	}
	struct json_token *tok = &p->doc->tok[idx];
	tok->len = (uint32_t)(p->pos - tok->start);
	tok->next = p->doc->count;
	return idx;
}

static int json_parse_literal(struct json_parser *p, const char *word, enum json_type type,
			      bool value)
{
	size_t len = strlen(word);
	if (p->doc->len - p->pos < len || memcmp(p->doc->text + p->pos, word, len))
		return json_fail(p, "unexpected character");
	int idx = json_new_token(p, type);
	if (idx < 0)
		return -1;
	p->pos += len;
	p->doc->tok[idx].len = (uint32_t)len;
	p->doc->tok[idx].value = value;
	p->doc->tok[idx].next = p->doc->count;
	return idx;
}

/* Two keys of one object equal, byte for byte (escaped keys compare as written: strict enough
 * for a request body, where keys are plain ASCII names). */
static bool json_same_key(const struct json_doc *d, unsigned a, unsigned b)
{
	return d->tok[a].len == d->tok[b].len &&
	       !memcmp(d->text + d->tok[a].start, d->text + d->tok[b].start, d->tok[a].len);
}

static int json_parse_value(struct json_parser *p, unsigned depth);

static int json_parse_container(struct json_parser *p, unsigned depth, bool object)
{
	if (depth >= JSON_MAX_DEPTH)
		return json_fail(p, "nested too deeply");
	int idx = json_new_token(p, object ? JSON_OBJECT : JSON_ARRAY);
	if (idx < 0)
		return -1;
	const char *t = p->doc->text;
	char close = object ? '}' : ']';
	p->pos++;
	json_skip_space(p);
	if (p->pos < p->doc->len && t[p->pos] == close) {
		p->pos++;
		p->doc->tok[idx].next = p->doc->count;
		return idx;
	}
	for (;;) {
		json_skip_space(p);
		if (object) {
			if (p->pos >= p->doc->len || t[p->pos] != '"')
				return json_fail(p, "expected a key");
			int key = json_parse_string(p, JSON_STRING);
			if (key < 0)
				return -1;
			for (unsigned k = (unsigned)idx + 1; k < (unsigned)key; k = p->doc->tok[k + 1].next)
				if (json_same_key(p->doc, k, (unsigned)key))
					return json_fail(p, "repeated key");
			json_skip_space(p);
			if (p->pos >= p->doc->len || t[p->pos] != ':')
				return json_fail(p, "expected ':'");
			p->pos++;
		}
		if (json_parse_value(p, depth + 1) < 0)
			return -1;
		p->doc->tok[idx].count++;
		json_skip_space(p);
		if (p->pos < p->doc->len && t[p->pos] == ',') {
			p->pos++;
			continue;
		}
		if (p->pos < p->doc->len && t[p->pos] == close) {
			p->pos++;
			p->doc->tok[idx].next = p->doc->count;
			return idx;
		}
		return json_fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

static int json_parse_value(struct json_parser *p, unsigned depth)
{
	json_skip_space(p);
	if (p->pos >= p->doc->len)
		return json_fail(p, "unexpected end");
	switch (p->doc->text[p->pos]) {
	case '{': return json_parse_container(p, depth, true);
	case '[': return json_parse_container(p, depth, false);
	case '"': return json_parse_string(p, JSON_STRING);
	case 't': return json_parse_literal(p, "true", JSON_BOOL, true);
	case 'f': return json_parse_literal(p, "false", JSON_BOOL, false);
	case 'n': return json_parse_literal(p, "null", JSON_NULL, false);
	default: return json_parse_number(p);
	}
}

int json_parse(struct json_doc *doc, const char *text, size_t len, char *err, size_t err_len)
{
	struct json_parser p = { .doc = doc, .err = err, .err_len = err_len };
	doc->text = text;
	doc->len = len;
	doc->count = 0;
	if (len > UINT32_MAX / 2) {
		snprintf(err, err_len, "document too large");
		return -1;
	}
	if (json_parse_value(&p, 0) < 0)
		return -1;
	json_skip_space(&p);
	if (p.pos != len)
		return json_fail(&p, "unexpected text after the value");
	return 0;
}

int json_object_get(const struct json_doc *doc, unsigned obj, const char *key)
{
	if (obj >= doc->count || doc->tok[obj].type != JSON_OBJECT)
		return -1;
	unsigned k = obj + 1;
	for (uint32_t i = 0; i < doc->tok[obj].count; i++, k = doc->tok[k + 1].next)
		if (json_string_is(doc, k, key))
			return (int)k + 1;
	return -1;
}

bool json_string_is(const struct json_doc *doc, unsigned idx, const char *s)
{
	if (idx >= doc->count)
		return false;
	const struct json_token *t = &doc->tok[idx];
	return t->type == JSON_STRING && strlen(s) == t->len &&
	       !memcmp(doc->text + t->start, s, t->len);
}

/* Append code point cp as UTF-8; -1 when it does not fit (one byte is kept for the NUL). */
static int json_put_utf8(char *out, size_t size, size_t *n, unsigned cp)
{
	char b[4];
	size_t len;
	if (cp < 0x80) {
		b[0] = (char)cp;
		len = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xC0 | cp >> 6);
		b[1] = (char)(0x80 | (cp & 0x3F));
		len = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xE0 | cp >> 12);
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		b[2] = (char)(0x80 | (cp & 0x3F));
		len = 3;
	} else {
		b[0] = (char)(0xF0 | cp >> 18);
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
		b[3] = (char)(0x80 | (cp & 0x3F));
		len = 4;
	}
	if (*n + len + 1 > size)
		return -1;
	memcpy(out + *n, b, len);
	*n += len;
	return 0;
}

int json_get_string(const struct json_doc *doc, unsigned idx, char *out, size_t size)
{
	if (idx >= doc->count || doc->tok[idx].type != JSON_STRING || size == 0)
		return -1;
	const char *s = doc->text + doc->tok[idx].start;
	size_t len = doc->tok[idx].len, n = 0;
	for (size_t i = 0; i < len;) {
		unsigned cp;
		if (s[i] != '\\') {
			if (n + 2 > size)
				return -1;
			out[n++] = s[i++];
			continue;
		}
		char e = s[i + 1]; /* the parser checked every escape */
		i += 2;
		switch (e) {
		case 'b': cp = '\b'; break;
		case 'f': cp = '\f'; break;
		case 'n': cp = '\n'; break;
		case 'r': cp = '\r'; break;
		case 't': cp = '\t'; break;
		case 'u':
			cp = (unsigned)json_hex4(s + i);
			i += 4;
			if (cp >= 0xD800 && cp < 0xDC00) { /* a high surrogate needs its low half */
				if (i + 6 > len || s[i] != '\\' || s[i + 1] != 'u')
					return -1;
				unsigned lo = (unsigned)json_hex4(s + i + 2);
				if (lo < 0xDC00 || lo > 0xDFFF)
					return -1;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				i += 6;
			} else if (cp >= 0xDC00 && cp < 0xE000) {
				return -1;
			}
			break;
		default: cp = (unsigned char)e; break;
		}
		if (cp == 0 || json_put_utf8(out, size, &n, cp) < 0)
			return -1;
	}
	out[n] = '\0';
	return 0;
}

int json_get_uint(const struct json_doc *doc, unsigned idx, uint64_t max, uint64_t *out)
{
	if (idx >= doc->count || doc->tok[idx].type != JSON_NUMBER)
		return -1;
	const char *s = doc->text + doc->tok[idx].start;
	uint64_t v = 0;
	for (uint32_t i = 0; i < doc->tok[idx].len; i++) {
		if (!json_is_digit(s[i]))
			return -1; /* a sign, fraction or exponent */
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int json_get_bool(const struct json_doc *doc, unsigned idx, bool *out)
{
	if (idx >= doc->count || doc->tok[idx].type != JSON_BOOL)
		return -1;
	*out = doc->tok[idx].value;
	return 0;
}

/* --- writer --- */

static void json_put(struct json_writer *w, const char *s, size_t n)
{
	if (w->overflow || w->len + n + 1 > w->size) {
		w->overflow = true;
		return;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = '\0';
}

static void json_put_char(struct json_writer *w, char c)
{
	json_put(w, &c, 1);
}

/* A comma before every value but the first of a container (keys carry it in objects). */
static void json_before_value(struct json_writer *w)
{
	if (!w->first[w->depth])
		json_put_char(w, ',');
	w->first[w->depth] = false;
}

void json_writer_init(struct json_writer *w, char *buf, size_t size)
{
	*w = (struct json_writer){ .buf = buf, .size = size };
	w->first[0] = true;
	if (size)
		buf[0] = '\0';
}

static void json_open(struct json_writer *w, char c)
{
	json_before_value(w);
	json_put_char(w, c);
	if (w->depth == JSON_MAX_DEPTH) {
		w->overflow = true;
		return;
	}
	w->first[++w->depth] = true;
}

static void json_close(struct json_writer *w, char c)
{
	json_put_char(w, c);
	if (w->depth)
		w->depth--;
}

void json_begin_object(struct json_writer *w) { json_open(w, '{'); }
void json_end_object(struct json_writer *w) { json_close(w, '}'); }
void json_begin_array(struct json_writer *w) { json_open(w, '['); }
void json_end_array(struct json_writer *w) { json_close(w, ']'); }

static void json_put_quoted(struct json_writer *w, const char *s)
{
	json_put_char(w, '"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			json_put(w, esc, 2);
		} else if (c < 0x20 || c == 0x7F) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			json_put(w, esc, 6);
		} else {
			json_put_char(w, (char)c);
		}
	}
	json_put_char(w, '"');
}

void json_key(struct json_writer *w, const char *key)
{
	json_before_value(w);
	json_put_quoted(w, key);
	json_put_char(w, ':');
	w->first[w->depth] = true; /* the value that follows takes no comma */
}

void json_string(struct json_writer *w, const char *s)
{
	json_before_value(w);
	json_put_quoted(w, s);
}

void json_uint(struct json_writer *w, uint64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
	json_before_value(w);
	json_put(w, num, (size_t)n);
}

void json_bool(struct json_writer *w, bool v)
{
	json_before_value(w);
	json_put(w, v ? "true" : "false", v ? 4 : 5);
}
