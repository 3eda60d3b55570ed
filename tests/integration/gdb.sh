#!/usr/bin/env bash
# The gdb stub (-g, --gdb-wait) with the real gdb in batch mode against the self-test guest's
# ELF: connect, registers, a breakpoint on a symbol, continue, step, memory, a watchpoint,
# threads, detach, and the guest then finishes. Plus what batch gdb cannot do (Ctrl-C, hostile
# packets, kill) through a raw client.
. "$(dirname "$0")/lib.sh"
require_kvm gdb || exit 0
if ! command -v gdb >/dev/null; then
	if [ "${CI:-}" = true ]; then fail gdb "gdb is not installed (tools/setup installs it)"; else skip gdb "gdb is not installed (apt-get install gdb)"; fi
	exit 0
fi
port=$((20000 + RANDOM % 20000))

# start_vmm NAME ARGS...: vmm in the background, its pid in VMM_PID.
start_vmm() {
	local name=$1; shift
	timeout -s KILL 60 "$VMM" --accel kvm "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" </dev/null &
	VMM_PID=$!
}
wait_vmm() { wait "$VMM_PID"; RC=$?; }

cat >"$TMP/session.gdb" <<EOF2
set pagination off
set confirm off
target remote 127.0.0.1:$port
info registers rip
info threads
break boot_main
continue
info registers rip
stepi
info registers rip
x/s 0x20000
delete
detach
EOF2
start_vmm session -m 64M -c 2 -g "$port" --gdb-wait "$SELFTEST_BZ" selftest.quick=1 selftest.cpus=2
timeout 60 gdb -batch -nx -x "$TMP/session.gdb" "$SELFTEST_ELF" >"$TMP/gdb.log" 2>&1
wait_vmm
log=$TMP/gdb.log
check() { # name regex what
	if grep -Eq "$2" "$log"; then ok "$1"; else fail "$1" "$3: $(grep -v '^$' "$log" | tail -5 | tr '\n' '|')"; fi
}
check gdb_connect_held_at_first_instruction 'rip +0x100200 .*linux_entry64' "rip not at the bzImage entry"
check gdb_all_vcpus_are_threads 'Thread 2 \(vCPU 1\)' "no second thread"
check gdb_breakpoint_on_symbol_hit 'Breakpoint 1, (0x[0-9a-f]+ in )?boot_main' "breakpoint not reported"
check gdb_single_step 'rip +0x10044[1-9a-f] ' "stepi did not move one instruction past boot_main"
check gdb_read_memory '0x20000:[[:space:]]+"console=ttyS0 selftest.quick=1' "command line not read"
check gdb_detach 'Inferior 1 \(Remote target\) detached' "no detach"
if [ "$RC" -eq 0 ] && grep -aq '^selftest: [1-9][0-9]* passed, 0 failed' "$TMP/session.out"; then
	ok gdb_guest_completes_after_detach
else
	fail gdb_guest_completes_after_detach "status $RC: $(tail -c 300 "$TMP/session.err")"
fi

# Software breakpoints are int3 patched into guest memory, which needs hardware virtualisation:
# on kvm-pvm (no VMX/SVM) the host emulates guest kernel code and int3 there is an emulation
# failure, so the stub puts gdb's breakpoints in the debug registers instead (checked above).
if grep -qE '^flags.* (vmx|svm)' /proc/cpuinfo; then
	grep -q 'breakpoints use the 4 debug registers' "$TMP/session.err" &&
		fail gdb_int3_breakpoints "debug registers used despite VMX/SVM" || ok gdb_int3_breakpoints
else
	grep -q 'breakpoints use the 4 debug registers' "$TMP/session.err" && ok gdb_breakpoints_in_debug_registers_on_kvm_pvm ||
		fail gdb_breakpoints_in_debug_registers_on_kvm_pvm "$(cat "$TMP/session.err")"
	skip gdb_int3_breakpoints "no VMX/SVM (kvm-pvm): int3 in guest CPL0 is emulated by the host and fails with a KVM emulation failure"
fi

# Watchpoints (debug registers on data): on kvm-pvm the host emulates guest CPL0 code and its
# emulator does not check data breakpoints, so no debug exit ever comes there.
if grep -qE '^flags.* (vmx|svm)' /proc/cpuinfo; then
	printf 'set pagination off\nset confirm off\ntarget remote 127.0.0.1:%s\nwatch checks_passed\ncontinue\ndelete\ndetach\n' "$port" >"$TMP/watch.gdb"
	start_vmm watch -m 64M -g "$port" --gdb-wait "$SELFTEST_BZ" selftest.quick=1
	timeout 60 gdb -batch -nx -x "$TMP/watch.gdb" "$SELFTEST_ELF" >"$TMP/watch.log" 2>&1
	wait_vmm
	grep -q 'New value = 1' "$TMP/watch.log" && [ "$RC" -eq 0 ] && ok gdb_watchpoint_hit ||
		fail gdb_watchpoint_hit "status $RC: $(tail -3 "$TMP/watch.log" | tr '\n' '|')"
else
	skip gdb_watchpoint_hit "no VMX/SVM (kvm-pvm): guest CPL0 code is emulated by the host, whose emulator does not check data breakpoints (Z2 is accepted, no debug exit comes)"
fi

# 32-bit mode: the ELF's PVH entry is 32-bit protected mode; gdb gets an i386 description.
cat >"$TMP/32.gdb" <<EOF2
set pagination off
target remote 127.0.0.1:$port
info registers eip cr0
detach
EOF2
start_vmm elf32 -m 64M -g "$port" --gdb-wait "$SELFTEST_ELF" selftest.quick=1
timeout 60 gdb -batch -nx -x "$TMP/32.gdb" >"$TMP/gdb32.log" 2>&1
wait_vmm
entry=$(readelf -h "$SELFTEST_ELF" | awk '/Entry point/ { print $4 }')
if grep -Eq "^eip +$entry " "$TMP/gdb32.log" && [ "$RC" -eq 0 ]; then
	ok gdb_32bit_registers
else
	fail gdb_32bit_registers "status $RC, want eip $entry: $(tr '\n' '|' <"$TMP/gdb32.log")"
fi

# Ctrl-C, hostile packets and kill against the echo fixture, which polls the UART forever.
ECHO=$ROOT/build/tests/fixtures/echo.bzImage
for scenario in interrupt hostile; do
	start_vmm "$scenario" -m 64M -g "$port" "$ECHO"
	timeout 30 python3 "$(dirname "$0")/gdb_client.py" "$port" "$scenario" >"$TMP/$scenario.log" 2>&1 ||
		fail "gdb_$scenario" "$(tail -3 "$TMP/$scenario.log")"
	cat "$TMP/$scenario.log" | grep '^ok - '
	if kill -0 "$VMM_PID" 2>/dev/null; then ok "gdb_${scenario}_monitor_alive"; else fail "gdb_${scenario}_monitor_alive" "vmm died: $(tail -3 "$TMP/$scenario.err")"; fi
	kill -TERM "$VMM_PID" 2>/dev/null
	wait_vmm
done
start_vmm kill -m 64M -g "$port" "$ECHO"
timeout 30 python3 "$(dirname "$0")/gdb_client.py" "$port" kill >"$TMP/kill.log" 2>&1
wait_vmm
[ "$RC" -eq 137 ] && ok gdb_kill_ends_vm_with_137 || fail gdb_kill_ends_vm_with_137 "status $RC: $(tail -2 "$TMP/kill.err")"

# A port in use is a clear error.
busy=$((port + 1))
python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', $busy)); s.listen(); time.sleep(3)" &
sleep 0.3
run_vmm "$TMP/busy.out" "$TMP/busy.err" --accel kvm -m 64M -g "$busy" "$SELFTEST_BZ" selftest.quick=1
[ "$RC" -eq 1 ] && grep -q "pick another port" "$TMP/busy.err" && ok gdb_port_in_use_is_error || fail gdb_port_in_use_is_error "status $RC: $(cat "$TMP/busy.err")"
wait
