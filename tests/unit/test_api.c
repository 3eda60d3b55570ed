/* The control API's parsers and routes with good and malformed input: HTTP requests (limits,
 * framing, versions), JSON (strictness, escapes, depth, numbers), and the Firecracker routes'
 * 4xx answers for unknown fields, wrong types and wrong states. */
#include <string.h>

#include "api/api.h"
#include "api/http.h"
#include "api/json.h"
#include "test.h"

static long parse(const char *text, struct http_request *req)
{
	const char *why;
	return http_parse_request(text, strlen(text), req, &why);
}

static void http_accepts_requests_with_and_without_bodies(void)
{
	struct http_request r;
	const char *get = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
	CHECK_EQ(parse(get, &r), strlen(get));
	CHECK(!strcmp(r.method, "GET") && !strcmp(r.target, "/") && r.keep_alive && r.body_len == 0);
	const char *put = "PUT /actions HTTP/1.1\r\ncontent-length: 2\r\nConnection: close\r\n\r\n{}";
	CHECK_EQ(parse(put, &r), strlen(put));
	CHECK(r.body_len == 2 && !memcmp(r.body, "{}", 2) && !r.keep_alive);
	const char *abs = "GET http://localhost/vm HTTP/1.0\r\n\r\n";
	CHECK_EQ(parse(abs, &r), strlen(abs));
	CHECK(!strcmp(r.target, "/vm") && !r.keep_alive);
	/* pipelined: only the first request is consumed */
	const char *two = "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
	CHECK_EQ(parse(two, &r), strlen(two) / 2);
}

static void http_waits_for_more_bytes(void)
{
	struct http_request r;
	CHECK_EQ(parse("", &r), 0);
	CHECK_EQ(parse("GET / HTTP/1.1\r", &r), 0);
	CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: x\r\n", &r), 0);
	CHECK_EQ(parse("PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}", &r), 0);
	CHECK(!r.expect_continue);
	CHECK_EQ(parse("PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n", &r), 0);
	CHECK(r.expect_continue);
}

static void http_refuses_malformed_requests(void)
{
	struct http_request r;
	CHECK_EQ(parse("GET / HTTP/1.1\n\n", &r), -400); /* bare LF */
	CHECK_EQ(parse("GET  / HTTP/1.1\r\n\r\n", &r), -400);
	CHECK_EQ(parse("GET /\r\n\r\n", &r), -400);
	CHECK_EQ(parse("GET x HTTP/1.1\r\n\r\n", &r), -400);
	CHECK_EQ(parse("GET / HTTP/2.0\r\n\r\n", &r), -505);
	CHECK_EQ(parse("GET / FTP/1.1\r\n\r\n", &r), -400);
	CHECK_EQ(parse("G(T / HTTP/1.1\r\n\r\n", &r), -400);
	CHECK_EQ(parse("VERYLONGMETHOD / HTTP/1.1\r\n\r\n", &r), -501);
	CHECK_EQ(parse("GET / HTTP/1.1\r\nNoColon\r\n\r\n", &r), -400);
	CHECK_EQ(parse("GET / HTTP/1.1\r\n: empty\r\n\r\n", &r), -400);
	CHECK_EQ(parse("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", &r), -400);
	CHECK_EQ(parse("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", &r), -400);
	CHECK_EQ(parse("PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &r), -400);
	CHECK_EQ(parse("PUT / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", &r), -400);
	CHECK_EQ(parse("PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", &r), -400);
	CHECK_EQ(parse("PUT / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n", &r), -400);
	CHECK_EQ(parse("PUT / HTTP/1.1\r\nContent-Length: 51201\r\n\r\n", &r), -413);
	CHECK_EQ(parse("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", &r), -501);
	CHECK_EQ(parse("PUT / HTTP/1.1\r\nExpect: magic\r\n\r\n", &r), -417);
	static char big[HTTP_MAX_HEAD + 64];
	memset(big, 'a', sizeof(big) - 1);
	memcpy(big, "GET /", 5);
	CHECK_EQ(parse(big, &r), -431);
	char target[400];
	memset(target, 'a', sizeof(target));
	memcpy(target, "GET /", 5);
	strcpy(target + 300, " HTTP/1.1\r\n\r\n");
	CHECK_EQ(parse(target, &r), -414);
}

static int jparse(struct json_doc *d, const char *text)
{
	char err[128];
	return json_parse(d, text, strlen(text), err, sizeof(err));
}

static void json_reads_values(void)
{
	static struct json_doc d;
	char s[64];
	uint64_t n;
	bool b;
	CHECK(jparse(&d, " {\"a\": [1, 2, {\"b\": null}], \"c\": \"x\\n\\u00e9\\ud83d\\ude00\", \"d\": true, \"n\": 42} ") == 0);
	int a = json_object_get(&d, 0, "a");
	CHECK(a > 0 && d.tok[a].type == JSON_ARRAY && d.tok[a].count == 3);
	int c = json_object_get(&d, 0, "c");
	CHECK(c > 0 && json_get_string(&d, (unsigned)c, s, sizeof(s)) == 0 &&
	      !strcmp(s, "x\n\xc3\xa9\xf0\x9f\x98\x80"));
	CHECK(json_get_bool(&d, (unsigned)json_object_get(&d, 0, "d"), &b) == 0 && b);
	CHECK(json_get_uint(&d, (unsigned)json_object_get(&d, 0, "n"), 100, &n) == 0 && n == 42);
	CHECK(json_get_uint(&d, (unsigned)json_object_get(&d, 0, "n"), 41, &n) < 0);
	CHECK(json_object_get(&d, 0, "missing") < 0);
	CHECK(json_get_string(&d, (unsigned)c, s, 4) < 0); /* does not fit */
	CHECK(jparse(&d, "[-0.5e+3, 0, 1E2]") == 0);
	CHECK(json_get_uint(&d, 1, UINT64_MAX, &n) < 0); /* negative, fraction */
	CHECK(jparse(&d, "18446744073709551616") == 0 && json_get_uint(&d, 0, UINT64_MAX, &n) < 0);
	CHECK(jparse(&d, "\"a\\u0000b\"") == 0 && json_get_string(&d, 0, s, sizeof(s)) < 0);
	CHECK(jparse(&d, "\"\\udc00\"") == 0 && json_get_string(&d, 0, s, sizeof(s)) < 0);
}

static void json_refuses_what_rfc_8259_refuses(void)
{
	static struct json_doc d;
	const char *bad[] = { "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "'a'",
			      "01", "1.", ".5", "-", "1e", "+1", "tru", "nul", "[1 2]", "\"\\x\"",
			      "\"\\u12\"", "\"a\tb\"", "\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"",
			      "{\"a\":1,\"a\":2}", "1 2", "[] x", "/* */ 1", "\"unterminated",
			      "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (jparse(&d, bad[i]) == 0) {
			printf("  accepted: %s\n", bad[i]);
			test_failed_checks++;
		}
	char many[2000];
	strcpy(many, "[");
	for (int i = 0; i < 300; i++)
		strcat(many, i ? ",1" : "1");
	strcat(many, "]");
	CHECK(jparse(&d, many) < 0); /* more than JSON_MAX_TOKENS */
}

static void json_writer_escapes_and_overflows(void)
{
	char buf[64];
	struct json_writer w;
	json_writer_init(&w, buf, sizeof(buf));
	json_begin_object(&w);
	json_key(&w, "a");
	json_string(&w, "q\"\\\n");
	json_key(&w, "b");
	json_begin_array(&w);
	json_uint(&w, 1);
	json_bool(&w, false);
	json_end_array(&w);
	json_end_object(&w);
	CHECK(!w.overflow && !strcmp(buf, "{\"a\":\"q\\\"\\\\\\u000a\",\"b\":[1,false]}"));
	json_writer_init(&w, buf, 8);
	json_string(&w, "much too long");
	CHECK(w.overflow && strlen(buf) < 8);
}

/* A fake VM for the routes. */
struct fake {
	enum api_state state;
	int starts, pauses, resumes, buttons, kills;
};

static enum api_state fake_state(void *o) { return ((struct fake *)o)->state; }
static int fake_start(void *o, char *err, size_t n)
{
	(void)err;
	(void)n;
	((struct fake *)o)->starts++;
	((struct fake *)o)->state = API_STATE_RUNNING;
	return 0;
}
static int fake_pause(void *o, bool p)
{
	struct fake *f = o;
	p ? f->pauses++ : f->resumes++;
	f->state = p ? API_STATE_PAUSED : API_STATE_RUNNING;
	return 0;
}
static void fake_button(void *o) { ((struct fake *)o)->buttons++; }
static void fake_kill(void *o) { ((struct fake *)o)->kills++; }
static void fake_info(void *o, struct json_writer *w)
{
	(void)o;
	json_key(w, "pid");
	json_uint(w, 1);
}

static const struct api_ops fake_ops = { .state = fake_state, .start = fake_start,
					 .pause = fake_pause, .power_button = fake_button,
					 .kill = fake_kill, .info = fake_info, .stats = fake_info };

static int call(struct api *api, const char *method, const char *target, const char *body,
		struct api_response *resp)
{
	struct http_request req = { .body = body, .body_len = body ? strlen(body) : 0 };
	strcpy(req.method, method);
	strcpy(req.target, target);
	api_handle(api, &req, resp);
	return resp->status;
}

static bool fault_has(struct api_response *r, const char *text)
{
	r->body[r->len] = '\0';
	return strstr(r->body, "\"fault_message\"") && strstr(r->body, text);
}

static void routes_follow_firecracker(void)
{
	static struct api_response r;
	struct fake f = { 0 };
	struct api api = { .id = "t", .ops = &fake_ops, .opaque = &f, .machine = { .vcpus = 1, .mem_mib = 128 } };
	CHECK_EQ(call(&api, "GET", "/", NULL, &r), 200);
	r.body[r.len] = '\0';
	CHECK(strstr(r.body, "\"state\":\"Not started\"") && strstr(r.body, "\"id\":\"t\""));
	CHECK_EQ(call(&api, "PUT", "/actions", "{\"action_type\": \"InstanceStart\"}", &r), 400);
	CHECK(fault_has(&r, "boot-source"));
	CHECK_EQ(call(&api, "PUT", "/boot-source", "{\"kernel_image_path\": \"/nonexistent\"}", &r), 400);
	CHECK(fault_has(&r, "No such file"));
	CHECK_EQ(call(&api, "PUT", "/boot-source", "{\"kernel_image_path\": \"/etc/hostname\", \"x\": 1}", &r), 400);
	CHECK(fault_has(&r, "unknown field 'x'"));
	CHECK_EQ(call(&api, "PUT", "/boot-source", "{\"kernel_image_path\": 7}", &r), 400);
	CHECK_EQ(call(&api, "PUT", "/boot-source", "[1]", &r), 400);
	CHECK_EQ(call(&api, "PUT", "/boot-source", "{", &r), 400);
	CHECK(fault_has(&r, "bad JSON"));
	CHECK_EQ(call(&api, "PUT", "/boot-source", "{\"kernel_image_path\": \"/etc/hostname\", \"boot_args\": \"quiet\"}", &r), 204);
	CHECK_EQ(call(&api, "PUT", "/machine-config", "{\"vcpu_count\": 2}", &r), 400);
	CHECK_EQ(call(&api, "PUT", "/machine-config", "{\"vcpu_count\": 0, \"mem_size_mib\": 256}", &r), 400);
	CHECK_EQ(call(&api, "PUT", "/machine-config", "{\"vcpu_count\": 2, \"mem_size_mib\": 256, \"smt\": true}", &r), 400);
	CHECK_EQ(call(&api, "PUT", "/machine-config", "{\"vcpu_count\": 2, \"mem_size_mib\": 256}", &r), 204);
	CHECK_EQ(call(&api, "PATCH", "/machine-config", "{\"mem_size_mib\": 512}", &r), 204);
	CHECK(api.machine.vcpus == 2 && api.machine.mem_mib == 512);
	CHECK_EQ(call(&api, "PUT", "/drives/root fs", "{}", &r), 400);
	CHECK_EQ(call(&api, "PUT", "/drives/rootfs", "{\"drive_id\": \"other\", \"path_on_host\": \"/etc/hostname\", \"is_root_device\": true}", &r), 400);
	CHECK_EQ(call(&api, "PUT", "/drives/rootfs", "{\"drive_id\": \"rootfs\", \"path_on_host\": \"/etc/hostname\", \"is_root_device\": true, \"is_read_only\": true}", &r), 204);
	CHECK_EQ(call(&api, "PUT", "/drives/second", "{\"drive_id\": \"second\", \"path_on_host\": \"/etc/hostname\", \"is_root_device\": true}", &r), 400);
	CHECK(fault_has(&r, "already the root device"));
	CHECK_EQ(call(&api, "PUT", "/network-interfaces/eth0", "{\"iface_id\": \"eth0\", \"host_dev_name\": \"tap0\"}", &r), 400);
	CHECK(fault_has(&r, "not supported"));
	CHECK_EQ(call(&api, "PATCH", "/vm", "{\"state\": \"Paused\"}", &r), 400);
	CHECK_EQ(call(&api, "DELETE", "/", NULL, &r), 400);
	CHECK(fault_has(&r, "Invalid request method and/or path"));
	CHECK_EQ(call(&api, "PUT", "/actions", "{\"action_type\": \"InstanceStart\"}", &r), 204);
	CHECK_EQ(f.starts, 1);
	CHECK_EQ(call(&api, "PUT", "/boot-source", "{\"kernel_image_path\": \"/etc/hostname\"}", &r), 400);
	CHECK(fault_has(&r, "after starting"));
	CHECK_EQ(call(&api, "PUT", "/actions", "{\"action_type\": \"InstanceStart\"}", &r), 400);
	CHECK_EQ(call(&api, "PATCH", "/vm", "{\"state\": \"Frozen\"}", &r), 400);
	CHECK_EQ(call(&api, "PATCH", "/vm", "{\"state\": \"Paused\"}", &r), 204);
	CHECK_EQ(call(&api, "GET", "/", NULL, &r), 200);
	r.body[r.len] = '\0';
	CHECK(strstr(r.body, "\"state\":\"Paused\""));
	CHECK_EQ(call(&api, "PATCH", "/vm", "{\"state\": \"Resumed\"}", &r), 204);
	CHECK(f.pauses == 1 && f.resumes == 1);
	CHECK_EQ(call(&api, "PUT", "/actions", "{\"action_type\": \"SendCtrlAltDel\"}", &r), 204);
	CHECK_EQ(call(&api, "PUT", "/vmm/stop", NULL, &r), 204);
	CHECK_EQ(call(&api, "PUT", "/vmm/kill", "{\"now\": true}", &r), 400);
	CHECK_EQ(call(&api, "PUT", "/vmm/kill", "{}", &r), 204);
	CHECK(f.buttons == 2 && f.kills == 1);
}

static void machine_config_puts_the_root_drive_first(void)
{
	struct api_machine m = { .kernel = "k", .boot_args = "quiet", .vcpus = 2, .mem_mib = 128, .nr_drives = 2 };
	strcpy(m.drives[0].id, "data");
	strcpy(m.drives[0].path, "/d");
	strcpy(m.drives[1].id, "rootfs");
	strcpy(m.drives[1].path, "/r");
	m.drives[1].root = true;
	static struct vm_config cfg;
	char err[128];
	CHECK(api_machine_to_config(&m, &cfg, err, sizeof(err)) == 0);
	CHECK(cfg.nr_disks == 2 && !strcmp(cfg.disks[0].path, "/r") && !strcmp(cfg.disks[1].path, "/d"));
	CHECK(!strcmp(cfg.cmdline, "quiet root=/dev/vda rw"));
	CHECK(cfg.nr_cpus == 2 && cfg.mem_size == 128ull << 20);
}

int main(void)
{
	RUN_TEST(http_accepts_requests_with_and_without_bodies);
	RUN_TEST(http_waits_for_more_bytes);
	RUN_TEST(http_refuses_malformed_requests);
	RUN_TEST(json_reads_values);
	RUN_TEST(json_refuses_what_rfc_8259_refuses);
	RUN_TEST(json_writer_escapes_and_overflows);
	RUN_TEST(routes_follow_firecracker);
	RUN_TEST(machine_config_puts_the_root_drive_first);
	return TEST_EXIT();
}
