/* Output of check results in the fixed line format the integration tests match. */
#include "check.h"
#include "console.h"
#include "lib.h"

static uint32_t checks_passed, checks_failed;

void check_ok(const char *name)
{
	checks_passed++;
	console_printf("selftest: ok - %s\n", name);
}

void check_fail(const char *name, const char *fmt, ...)
{
	char detail[256];
	va_list ap;

	va_start(ap, fmt);
	vformat(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	checks_failed++;
	console_printf("selftest: FAIL - %s: %s\n", name, detail);
}

void check_note(const char *fmt, ...)
{
	char text[256];
	va_list ap;

	va_start(ap, fmt);
	vformat(text, sizeof(text), fmt, ap);
	va_end(ap);
	console_printf("selftest: # %s\n", text);
}

void check_summary(void)
{
	console_printf("selftest: %u passed, %u failed\n", checks_passed, checks_failed);
}
