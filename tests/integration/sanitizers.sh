#!/usr/bin/env bash
# The unit tests and integration tests again with the monitor built with AddressSanitizer and
# UBSan (`make asan`): any memory error or leak on these paths, error paths included, fails the run.
. "$(dirname "$0")/lib.sh"
ASAN_VMM=$ROOT/build-asan/vmm
if [ ! -x "$ASAN_VMM" ]; then
	fail sanitizers "$ASAN_VMM is missing (make asan)"
	exit 0
fi
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# The unit tests too (~20 s), all but test_emu_diff: under ASan its millions of generated cases
# take over ten minutes, and the same code paths run in test_emu_jit and test_emu_system.
for t in "$ROOT"/tests/unit/test_*.c; do
	name=$(basename "$t" .c)
	[ "$name" = test_emu_diff ] && continue
	bin=$ROOT/build-asan/tests/unit/$name
	if [ ! -x "$bin" ]; then
		fail "asan_$name" "$bin is missing (make asan)"
		continue
	fi
	"$bin" 2>&1 | sed -E 's/^(ok|FAIL|SKIP) - /\1 - asan_/'
	rc=${PIPESTATUS[0]}
	[ "$rc" -eq 0 ] || fail "asan_$name" "exited with status $rc (see the sanitizer report above)"
done
for t in bad_input console selftest_kvm virtio_selftest api; do
	VMM=$ASAN_VMM bash "$ROOT/tests/integration/$t.sh" | sed -E 's/^(ok|FAIL|SKIP) - /\1 - asan_/'
done
