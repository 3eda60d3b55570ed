#!/usr/bin/env bash
# The integration tests again with the monitor built with AddressSanitizer and UBSan (`make asan`):
# any memory error or leak on these paths, error paths included, fails the run.
. "$(dirname "$0")/lib.sh"
ASAN_VMM=$ROOT/build-asan/vmm
if [ ! -x "$ASAN_VMM" ]; then
	fail sanitizers "$ASAN_VMM is missing (make asan)"
	exit 0
fi
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for t in bad_input console selftest_kvm virtio_selftest api; do
	VMM=$ASAN_VMM bash "$ROOT/tests/integration/$t.sh" | sed -E 's/^(ok|FAIL|SKIP) - /\1 - asan_/'
done
