/* A minimal unit-test harness: each CHECK prints nothing on success; each TEST prints one line
 * "ok - name" or "FAIL - name: ..." that tests/run counts. */
#ifndef VMM_TEST_H
#define VMM_TEST_H

#include <stdio.h>

static int test_failed_checks;
static int test_total_failed;

#define CHECK(cond)                                                                            \
	do {                                                                                   \
		if (!(cond)) {                                                                 \
			printf("  check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);       \
			test_failed_checks++;                                                  \
		}                                                                              \
	} while (0)

#define CHECK_EQ(a, b)                                                                         \
	do {                                                                                   \
		unsigned long long _a = (unsigned long long)(a), _b = (unsigned long long)(b);   \
		if (_a != _b) {                                                                \
			printf("  check failed: %s == %s (0x%llx != 0x%llx) (%s:%d)\n", #a, #b,   \
			       _a, _b, __FILE__, __LINE__);                                    \
			test_failed_checks++;                                                  \
		}                                                                              \
	} while (0)

#define RUN_TEST(fn)                                                                           \
	do {                                                                                   \
		test_failed_checks = 0;                                                        \
		fn();                                                                          \
		if (test_failed_checks) {                                                      \
			printf("FAIL - %s\n", #fn);                                            \
			test_total_failed++;                                                   \
		} else {                                                                       \
			printf("ok - %s\n", #fn);                                              \
		}                                                                              \
	} while (0)

#define TEST_EXIT() (test_total_failed ? 1 : 0)

#endif
