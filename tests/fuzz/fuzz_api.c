/* libFuzzer target: arbitrary bytes as control-socket input (`make fuzz`, then
 * build-fuzz/fuzz_api -max_total_time=60 [corpus dir]). Each input goes through the HTTP
 * parser (as many pipelined requests as it holds), the routes with a fake VM, and on its own
 * through the JSON parser. ASan/UBSan catch any access out of bounds or undefined arithmetic;
 * the parsers must only ever return errors. */
#include <stdint.h>
#include <string.h>

#include "api/api.h"
#include "api/http.h"
#include "api/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static enum api_state fuzz_state_value;
static enum api_state fuzz_state(void *o) { (void)o; return fuzz_state_value; }
static int fuzz_start(void *o, char *err, size_t n) { (void)o; (void)err; (void)n; return 0; }
static int fuzz_pause(void *o, bool p) { (void)o; (void)p; return 0; }
static void fuzz_void(void *o) { (void)o; }
static void fuzz_info(void *o, struct json_writer *w) { (void)o; json_key(w, "x"); json_uint(w, 1); }

static const struct api_ops fuzz_ops = { .state = fuzz_state, .start = fuzz_start,
					 .pause = fuzz_pause, .power_button = fuzz_void,
					 .kill = fuzz_void, .info = fuzz_info, .stats = fuzz_info };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct json_doc doc;
	static struct api_response resp;
	static struct api api;
	char err[128];
	json_parse(&doc, (const char *)data, size, err, sizeof(err));
	api = (struct api){ .id = "fuzz", .ops = &fuzz_ops, .machine = { .vcpus = 1, .mem_mib = 64 } };
	fuzz_state_value = size && (data[0] & 1) ? API_STATE_RUNNING : API_STATE_NOT_STARTED;
	size_t off = 0;
	while (off < size) {
		struct http_request req;
		const char *why;
		long n = http_parse_request((const char *)data + off, size - off, &req, &why);
		if (n <= 0)
			break;
		api_handle(&api, &req, &resp);
		if (resp.len > sizeof(resp.body))
			__builtin_trap();
		off += (size_t)n;
	}
	return 0;
}
