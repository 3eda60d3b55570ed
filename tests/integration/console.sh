#!/usr/bin/env bash
# The console and the ways a VM ends, with a tiny echo kernel (tests/fixtures/echo_kernel.S) on
# KVM: input reaches the guest without loss, the Ctrl-A escape, and every exit status.
. "$(dirname "$0")/lib.sh"
ECHO=$ROOT/build/tests/fixtures/echo.bzImage
require_kvm console || exit 0

# feed NAME INPUT-COMMAND -- VMM-ARGS: runs vmm with the command's output on stdin; sets RC.
feed() {
	local name=$1 input=$2; shift 2
	bash -c "$input" | timeout -s KILL 60 "$VMM" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
	RC=${PIPESTATUS[1]}
}
check() { # name want-status [grep-pattern-on-stdout]
	local name=$1 want=$2 pattern=${3:-}
	if [ "$RC" -ne "$want" ]; then
		fail "$name" "status $RC, expected $want: $(tail -c 400 "$TMP/$name.err")"
	elif [ -n "$pattern" ] && ! grep -q -- "$pattern" "$TMP/$name.out"; then
		fail "$name" "output lacks '$pattern': $(head -c 300 "$TMP/$name.out")"
	else
		ok "$name"
	fi
}

feed input_is_echoed "printf 'hello, echo\nq'" "$ECHO"
check input_is_echoed 0 "hello, echo"

feed poweroff_exits_0 "printf q" "$ECHO"
check poweroff_exits_0 0 "echo: ready"

feed panic_exits_4 "printf p" "$ECHO"
check panic_exits_4 4
grep -q "guest panicked" "$TMP/panic_exits_4.err" && ok panic_is_reported || fail panic_is_reported "$(cat "$TMP/panic_exits_4.err")"

feed reset_exits_3 "printf r" "$ECHO"
check reset_exits_3 3

feed triple_fault_exits_5 "printf t" "$ECHO"
check triple_fault_exits_5 5
if grep -q "triple fault" "$TMP/triple_fault_exits_5.err" && grep -q "rip 0000000000100" "$TMP/triple_fault_exits_5.err"; then
	ok triple_fault_dumps_registers
else
	fail triple_fault_dumps_registers "$(cat "$TMP/triple_fault_exits_5.err")"
fi

feed ctrl_a_x_quits_with_7 "printf 'ab'; sleep 0.5; printf '\001x'; sleep 30" "$ECHO"
check ctrl_a_x_quits_with_7 7 "ab"

feed ctrl_a_a_sends_ctrl_a "printf 'A\001aB'; sleep 0.5; printf q" "$ECHO"
if [ "$RC" -eq 0 ] && grep -q "$(printf 'A\001B')" "$TMP/ctrl_a_a_sends_ctrl_a.out"; then
	ok ctrl_a_a_sends_ctrl_a
else
	fail ctrl_a_a_sends_ctrl_a "status $RC; output: $(od -c "$TMP/ctrl_a_a_sends_ctrl_a.out" | head -3)"
fi

# More input than the UART FIFO holds: the rest waits in the pipe, nothing is lost.
feed large_input_is_not_lost "head -c 20000 /dev/zero | tr '\\0' 'b'; printf q" "$ECHO"
n=$(tr -cd b <"$TMP/large_input_is_not_lost.out" | wc -c)
if [ "$RC" -eq 0 ] && [ "$n" -eq 20000 ]; then ok large_input_is_not_lost; else fail large_input_is_not_lost "status $RC, $n of 20000 bytes echoed"; fi

feed reboot_restart_boots_again "printf r; sleep 1; printf q" --reboot=restart "$ECHO"
ready=$(grep -c "echo: ready" "$TMP/reboot_restart_boots_again.out")
if [ "$RC" -eq 0 ] && [ "$ready" -eq 2 ] && grep -q "restarting" "$TMP/reboot_restart_boots_again.err"; then
	ok reboot_restart_boots_again
else
	fail reboot_restart_boots_again "status $RC, booted $ready times: $(cat "$TMP/reboot_restart_boots_again.err")"
fi

# SIGTERM and SIGINT stop the VM with 128+N.
for sig in TERM INT; do
	(sleep 60) | "$VMM" "$ECHO" >"$TMP/sig.out" 2>"$TMP/sig.err" &
	pid=$!
	for _ in $(seq 50); do grep -q "echo: ready" "$TMP/sig.out" && break; sleep 0.1; done
	kill -$sig $pid
	wait $pid
	rc=$?
	want=$((128 + $(kill -l $sig)))
	if [ $rc -eq $want ]; then ok "sig${sig,,}_exits_$want"; else fail "sig${sig,,}_exits_$want" "status $rc: $(cat "$TMP/sig.err")"; fi
done

# A terminal on stdin is put in raw mode and restored afterwards, on a normal exit and on Ctrl-A x.
if command -v script >/dev/null; then
	for keys in q "$(printf '\001x')"; do
		script -qec "stty -g >$TMP/before; $VMM $ECHO; stty -g >$TMP/after" /dev/null \
			< <(sleep 1; printf '%s' "$keys"; sleep 1) >"$TMP/tty.out" 2>&1
		if [ -s "$TMP/before" ] && cmp -s "$TMP/before" "$TMP/after"; then
			ok "terminal_restored_after_$(printf '%s' "$keys" | od -An -c | tr -d ' \\')"
		else
			fail terminal_restored "stty before $(cat "$TMP/before" 2>/dev/null) after $(cat "$TMP/after" 2>/dev/null)"
		fi
	done
else
	skip terminal_restored "no script(1) to make a pty"
fi
