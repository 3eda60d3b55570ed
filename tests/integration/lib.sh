# Shared helpers for integration tests: result lines in the format tests/run counts.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VMM=${VMM:-$ROOT/build/vmm}
SELFTEST_BZ=${SELFTEST_BZ:-$ROOT/guest/selftest/selftest.bzImage}
SELFTEST_ELF=${SELFTEST_ELF:-$ROOT/guest/selftest/selftest.elf}
TMP=$(mktemp -d /tmp/vmm-it.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

ok() { echo "ok - $1"; }
fail() { echo "FAIL - $1: $2"; }
skip() { echo "SKIP - $1: $2"; }

# /dev/kvm usable? Under CI=true its absence is a failure, not a skip (issue 2).
kvm_usable() {
	[ -r /dev/kvm ] && [ -w /dev/kvm ]
}
require_kvm() { # test-name
	if kvm_usable; then return 0; fi
	if [ "${CI:-}" = true ]; then fail "$1" "/dev/kvm is not usable on this CI machine"; else skip "$1" "/dev/kvm is not usable here"; fi
	return 1
}

# run_vmm OUT ERR ARGS...: runs vmm with a time limit; sets RC.
run_vmm() {
	local out=$1 err=$2; shift 2
	timeout -s KILL "${VMM_TIMEOUT:-120}" "$VMM" "$@" >"$out" 2>"$err" </dev/null
	RC=$?
}
