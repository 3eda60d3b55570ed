#!/usr/bin/env bash
# The gdb stub (-g, --gdb-wait) with the real gdb in batch mode against the self-test guest's
# ELF, on the software CPU and on KVM: connect, registers, a breakpoint on a symbol, continue,
# step, memory, a watchpoint, threads, detach, and the guest then finishes. Plus what batch gdb
# cannot do (Ctrl-C, hostile packets, kill) through a raw client.
. "$(dirname "$0")/lib.sh"
if ! command -v gdb >/dev/null; then
	if [ "${CI:-}" = true ]; then fail gdb "gdb is not installed (tools/setup installs it)"; else skip gdb "gdb is not installed (apt-get install gdb)"; fi
	exit 0
fi
port=$((20000 + RANDOM % 20000))

# start_vmm NAME ARGS...: vmm on backend $ACCEL in the background, its pid in VMM_PID.
start_vmm() {
	local name=$1; shift
	timeout -s KILL 60 "$VMM" --accel "$ACCEL" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" </dev/null &
	VMM_PID=$!
}
wait_vmm() { wait "$VMM_PID"; RC=$?; }
hw_virt() { grep -qE '^flags.* (vmx|svm)' /proc/cpuinfo; }

# The same real-gdb batch session on each backend: connect, registers (general, x87, SSE, written
# and read back across a step), threads, a breakpoint on a symbol, continue, step, memory, a
# watchpoint, a hardware breakpoint, detach, and the guest then finishes. On kvm-pvm (KVM
# without VMX/SVM) the host emulates guest CPL0 code and its emulator does not check data
# breakpoints: no watchpoint there (Z2 is accepted, no debug exit ever comes).
gdb_session() { # ACCEL WATCH(yes|no)
	ACCEL=$1
	local t=gdb_$1 watch=$2
	{
		printf 'set pagination off\nset confirm off\ntarget remote 127.0.0.1:%s\n' "$port"
		printf 'info registers rip\ninfo threads\nbreak boot_main\ncontinue\ninfo registers rip\n'
		printf 'stepi\ninfo registers rip\nx/s 0x20000\n'
		printf 'p/x $fctrl\np $mxcsr\nset $xmm1.v4_int32[2] = 0x5eed\nset $st0 = 2.5\nstepi\n'
		printf 'p/x $xmm1.v4_int32[2]\np $st0\ndelete\n'
		[ "$watch" = yes ] && printf 'watch checks_passed\ncontinue\ndelete\n'
		printf 'hbreak check_summary\ncontinue\ninfo registers rip\ndelete\ndetach\n'
	} >"$TMP/$t.gdb"
	start_vmm "$t" -m 64M -c 2 -g "$port" --gdb-wait "$SELFTEST_BZ" selftest.quick=1 selftest.cpus=2
	timeout 60 gdb -batch -nx -x "$TMP/$t.gdb" "$SELFTEST_ELF" >"$TMP/$t.log" 2>&1
	wait_vmm
	log=$TMP/$t.log
	check ${t}_connect_held_at_first_instruction 'rip +0x100200 .*linux_entry64' "rip not at the bzImage entry"
	check ${t}_all_vcpus_are_threads 'Thread 2 \(vCPU 1\)' "no second thread"
	check ${t}_breakpoint_on_symbol_hit 'Breakpoint 1, (0x[0-9a-f]+ in )?boot_main' "breakpoint not reported"
	check ${t}_single_step 'rip +0x10044[1-9a-f] ' "stepi did not move one instruction past boot_main"
	check ${t}_read_memory '0x20000:[[:space:]]+"console=ttyS0 selftest.quick=1' "command line not read"
	check ${t}_x87_sse_registers '^\$[0-9]+ = 0x37f$' "fctrl is not FNINIT's 0x37f"
	check ${t}_mxcsr '\[ IM DM ZM OM UM PM \]' "mxcsr is not the reset value"
	check ${t}_xmm_written_kept_over_a_step '^\$[0-9]+ = 0x5eed$' "xmm1 written from gdb did not survive a step"
	check ${t}_st0_written_kept_over_a_step '^\$[0-9]+ = 2.5$' "st0 written from gdb did not survive a step"
	if [ "$watch" = yes ]; then
		check ${t}_watchpoint_hit 'New value = 1' "watchpoint on checks_passed not reported"
	else
		skip ${t}_watchpoint_hit "no VMX/SVM (kvm-pvm): guest CPL0 code is emulated by the host, whose emulator does not check data breakpoints"
	fi
	check ${t}_hardware_breakpoint 'Breakpoint [0-9]+, (0x[0-9a-f]+ in )?check_summary' "hbreak check_summary not reported"
	check ${t}_detach 'Inferior 1 \(Remote target\) detached' "no detach"
	if [ "$RC" -eq 0 ] && grep -aq '^selftest: [1-9][0-9]* passed, 0 failed' "$TMP/$t.out"; then
		ok ${t}_guest_completes_after_detach
	else
		fail ${t}_guest_completes_after_detach "status $RC: $(tail -c 300 "$TMP/$t.err")"
	fi
	# Software breakpoints are int3 patched into guest memory. On kvm-pvm int3 in guest CPL0 is a
	# KVM emulation failure, so the stub puts gdb's breakpoints in the debug registers instead.
	if [ "$ACCEL" = emu ] || hw_virt; then
		grep -q 'breakpoints use the 4 debug registers' "$TMP/$t.err" &&
			fail ${t}_int3_breakpoints "debug registers used instead of int3" || ok ${t}_int3_breakpoints
	else
		grep -q 'breakpoints use the 4 debug registers' "$TMP/$t.err" && ok ${t}_breakpoints_in_debug_registers_on_kvm_pvm ||
			fail ${t}_breakpoints_in_debug_registers_on_kvm_pvm "$(cat "$TMP/$t.err")"
		skip ${t}_int3_breakpoints "no VMX/SVM (kvm-pvm): int3 in guest CPL0 is emulated by the host and fails with a KVM emulation failure"
	fi

	# 32-bit mode: the ELF's PVH entry is 32-bit protected mode; gdb gets an i386 description.
	printf 'set pagination off\ntarget remote 127.0.0.1:%s\ninfo registers eip cr0\np $xmm7\ndetach\n' "$port" >"$TMP/$t-32.gdb"
	start_vmm "$t-32" -m 64M -g "$port" --gdb-wait "$SELFTEST_ELF" selftest.quick=1
	timeout 60 gdb -batch -nx -x "$TMP/$t-32.gdb" >"$TMP/$t-32.log" 2>&1
	wait_vmm
	local entry
	entry=$(readelf -h "$SELFTEST_ELF" | awk '/Entry point/ { print $4 }')
	if grep -Eq "^eip +$entry " "$TMP/$t-32.log" && grep -q 'v4_int32' "$TMP/$t-32.log" && [ "$RC" -eq 0 ]; then
		ok ${t}_32bit_registers
	else
		fail ${t}_32bit_registers "status $RC, want eip $entry and xmm7: $(tr '\n' '|' <"$TMP/$t-32.log")"
	fi

	# Ctrl-C and hostile packets against the echo fixture, which polls the UART forever.
	local scenario
	for scenario in interrupt hostile; do
		start_vmm "$t-$scenario" -m 64M -g "$port" "$ECHO"
		timeout 30 python3 "$(dirname "$0")/gdb_client.py" "$port" "$scenario" >"$TMP/$t-$scenario.log" 2>&1 ||
			fail "${t}_$scenario" "$(tail -3 "$TMP/$t-$scenario.log")"
		sed -n "s/^ok - gdb_/ok - ${t}_/p" "$TMP/$t-$scenario.log"
		if kill -0 "$VMM_PID" 2>/dev/null; then ok "${t}_${scenario}_monitor_alive"; else fail "${t}_${scenario}_monitor_alive" "vmm died: $(tail -3 "$TMP/$t-$scenario.err")"; fi
		kill -TERM "$VMM_PID" 2>/dev/null
		wait_vmm
	done
}
check() { # name regex what
	if grep -Eq "$2" "$log"; then ok "$1"; else fail "$1" "$3: $(grep -v '^$' "$log" | tail -5 | tr '\n' '|')"; fi
}
ECHO=$ROOT/build/tests/fixtures/echo.bzImage

gdb_session emu yes
if kvm_usable; then
	gdb_session kvm "$(hw_virt && echo yes || echo no)"
else
	require_kvm gdb_kvm
fi

# kill: gdb's "kill" ends the VM as it would a process.
start_vmm kill -m 64M -g "$port" "$ECHO"
timeout 30 python3 "$(dirname "$0")/gdb_client.py" "$port" kill >"$TMP/kill.log" 2>&1
wait_vmm
[ "$RC" -eq 137 ] && ok gdb_kill_ends_vm_with_137 || fail gdb_kill_ends_vm_with_137 "status $RC: $(tail -2 "$TMP/kill.err")"

# A port in use is a clear error.
busy=$((port + 1))
python3 -c "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', $busy)); s.listen(); open('$TMP/listening', 'w'); time.sleep(10)" &
holder=$!
for _ in $(seq 100); do [ -e "$TMP/listening" ] && break; sleep 0.1; done # python starts slowly under load
run_vmm "$TMP/busy.out" "$TMP/busy.err" --accel "$ACCEL" -m 64M -g "$busy" "$SELFTEST_BZ" selftest.quick=1
[ "$RC" -eq 1 ] && grep -q "pick another port" "$TMP/busy.err" && ok gdb_port_in_use_is_error || fail gdb_port_in_use_is_error "status $RC: $(cat "$TMP/busy.err")"
kill "$holder" 2>/dev/null
wait
