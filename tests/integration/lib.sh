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

# expect_error NAME STATUS PATTERN ARGS...: `vmm ARGS` exits with STATUS and prints exactly one line
# on stderr (besides the accel notice), matching PATTERN. VMM_PREFIX, an array, runs vmm under
# another command (e.g. `ip netns exec NS`).
VMM_PREFIX=()
expect_error() {
	local name=$1 want=$2 pattern=$3; shift 3
	timeout -s KILL "${VMM_TIMEOUT:-120}" "${VMM_PREFIX[@]}" "$VMM" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
	RC=$?
	local lines
	lines=$(grep -vc '^vmm: accel:' "$TMP/err")
	if [ "$RC" -ne "$want" ]; then
		fail "$name" "status $RC, expected $want; stderr: $(head -c 300 "$TMP/err")"
	elif [ "$lines" -ne 1 ]; then
		fail "$name" "expected one line on stderr, got $lines: $(head -c 300 "$TMP/err")"
	elif ! grep -q -- "$pattern" "$TMP/err"; then
		fail "$name" "stderr does not match '$pattern': $(cat "$TMP/err")"
	else
		ok "$name"
	fi
}

# selftest_boot NAME STATUS IMAGE VMM-ARGS -- GUEST-ARGS: boots the self-test guest on the backend
# $ACCEL; expects the exit status and, for a normal run,
# the guest's own "N passed, 0 failed" with N > 0.
selftest_boot() {
	local name=$1 want=$2 image=$3; shift 3
	local args=() guest=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=("$1"); shift; done
	[ "${1:-}" = -- ] && shift
	guest=("$@")
	run_vmm "$TMP/$name.out" "$TMP/$name.err" --accel "$ACCEL" "${args[@]}" "$image" "${guest[@]}"
	local summary
	summary=$(grep -a '^selftest: [0-9]* passed, [0-9]* failed' "$TMP/$name.out")
	if [ "$RC" -ne "$want" ]; then
		fail "$name" "status $RC, expected $want; $(grep -a FAIL "$TMP/$name.out" | head -3) $(tail -c 300 "$TMP/$name.err")"
	elif [ "$want" -eq 0 ] && ! [[ "$summary" =~ ^selftest:\ [1-9][0-9]*\ passed,\ 0\ failed ]]; then
		fail "$name" "guest says '${summary:-nothing}': $(grep -a 'FAIL' "$TMP/$name.out" | head -5)"
	else
		ok "$name"
	fi
}

# notify_exits_test NAME ACCEL IOEVENTFD-FUNCTION TIMEOUT GUEST-ARGS...: queue notifications go
# through the backend's ioeventfd, so the self-test guest's notify writes never reach the monitor
# as MMIO exits (virtio_bar_io in the notify region), yet the queues are kicked (virtio_on_kick).
# Counted with gdb breakpoints, once as built and once with IOEVENTFD-FUNCTION made to fail
# (-ENOSYS), when the writes must arrive as exits again.
notify_exits_test() {
	local name=$1 accel=$2 ioeventfd=$3 limit=$4 run out
	local -A mmio kicks passed
	shift 4
	if ! command -v gdb >/dev/null; then
		skip "$name" "gdb is not installed"
		return
	fi
	for run in with without; do
		out=$TMP/$name-$run
		{
			echo "set pagination off"; echo "set confirm off"
			echo "handle all nostop noprint pass"
			printf 'break virtio_bar_io if offset >= 0x3000 && is_write\ncommands\nsilent\nprintf "COUNT-NOTIFY-MMIO\\n"\ncontinue\nend\n'
			printf 'break virtio_on_kick\ncommands\nsilent\nprintf "COUNT-KICK\\n"\ncontinue\nend\n'
			[ $run = with ] || printf 'break %s\ncommands\nsilent\nreturn (int)-38\ncontinue\nend\n' "$ioeventfd"
			echo run
		} >"$out.gdb"
		truncate -s 1M "$out.img"
		timeout -s KILL "$limit" gdb -q -batch -x "$out.gdb" --args "$VMM" --accel "$accel" -m 64M \
			-d "$out.img" "$SELFTEST_BZ" "$@" selftest.virtio=1 >"$out.gdbout" 2>&1 </dev/null
		mmio[$run]=$(grep -c '^COUNT-NOTIFY-MMIO' "$out.gdbout")
		kicks[$run]=$(grep -c '^COUNT-KICK' "$out.gdbout")
		passed[$run]=$(grep -ac 'passed, 0 failed' "$out.gdbout")
	done
	echo "# notify writes reaching the monitor as MMIO exits: ${mmio[with]} with ioeventfd" \
		"(${kicks[with]} kicks), ${mmio[without]} without (${kicks[without]} kicks)"
	if [ "${passed[with]}" -ne 1 ] || [ "${passed[without]}" -ne 1 ]; then
		fail "$name" "a guest run under gdb failed: $(grep -a 'FAIL\|passed' "$TMP/$name"-*.gdbout | head -4)"
	elif [ "${mmio[with]}" -eq 0 ] && [ "${kicks[with]}" -gt 0 ] && [ "${mmio[without]}" -gt 0 ]; then
		ok "$name"
	else
		fail "$name" "with ioeventfd: ${mmio[with]} notify MMIO exits, ${kicks[with]} kicks; without: ${mmio[without]} exits"
	fi
}
