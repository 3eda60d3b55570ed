#!/usr/bin/env bash
# The default Linux guest (guest/linux: Debian's stock cloud kernel + busybox) on the software CPU
# (--accel emu): boots to a shell with 1 and 2 vCPUs (the second one exercises SIPI bring-up and
# LOCK-prefixed instructions between vCPU threads), runs `ls /`, `cat /proc/cpuinfo` and `dmesg`,
# each with status 0; with 1 vCPU `vmm stop` (the ACPI power button, which the guest's acpid turns
# into a poweroff) ends vmm with status 0, with 2 `poweroff -f` does. In both, vmm-dbgtest checks
# the CPU's debug registers and single step through ptrace (execute breakpoint, write watchpoint,
# PTRACE_SINGLESTEP), as on a real CPU. Both start without the kernel's decompressor (vmm
# decompresses the LZ4 payload): the 1-vCPU boot with KASLR, the 2-vCPU one with nokaslr, each
# checked against /proc/kallsyms and /proc/iomem; and two more starts, stopped at their first
# instruction, have different KASLR addresses. The limits are generous (a boot
# takes 1-2 minutes on a 2-core machine); nothing is timed, the boot time is only reported.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/console.bash"
KERNEL=$ROOT/guest/linux/out/vmlinuz
INITRD=$ROOT/guest/linux/out/initramfs.cpio.gz
export VMM_RUNTIME_DIR=$TMP/run
if ! "$VMM" --version | grep -q 'backends:.*emu'; then
	skip linux_on_emu "the software CPU is not built into this vmm"
	exit 0
fi
if [ ! -f "$KERNEL" ] || [ ! -f "$INITRD" ]; then
	if [ "${CI:-}" = true ]; then fail linux_on_emu "guest/linux/out is missing (make guest)"; else skip linux_on_emu "guest/linux/out is missing (make guest)"; fi
	exit 0
fi

# A guest/linux/out built before the guest ran acpid ignores the power button: say so once (and
# power both boots off from inside) rather than wait for a stop that cannot come.
stop_by=vmm_stop
if ! gzip -dc "$INITRD" | cpio -t --quiet 2>/dev/null | grep -qx 'etc/acpi/PWRF/00000080'; then
	fail linux_emu_guest_handles_power_button "$INITRD has no acpid rule: it predates it (run make guest)"
	stop_by=poweroff
fi
has_dbgtest=
if gzip -dc "$INITRD" | cpio -t --quiet 2>/dev/null | grep -qx 'bin/vmm-dbgtest'; then
	has_dbgtest=yes
else
	fail linux_emu_ptrace_debug_registers "$INITRD has no vmm-dbgtest: it predates it (run make guest)"
fi

# gdb on Linux, in the 1-vCPU boot: the address comes from the guest's own /proc/kallsyms (Debian's
# System.map is a placeholder; the real one is in the 283 MB -dbg package; `grep -m 1` because
# reading all of kallsyms takes minutes on the software CPU), so gdb attaches to the running guest
# at its shell: a breakpoint on ksys_sync that `sync` in the guest hits, the return address read
# from the kernel stack (a guest-virtual address), a step, a watchpoint on the next stack slot,
# which the next push or call writes, then detach, and the shell goes on.
linux_gdb() { # NAME PORT
	local name=$1 port=$2 sync
	run_cmd "${name}_kallsyms" 'grep -m 1 -w ksys_sync /proc/kallsyms' 'ksys_sync'
	sync=$(tr -d '\r' <"$TMP/${name}_kallsyms.cmdlog" | awk '$3 == "ksys_sync" { print $1 }' | head -1)
	if [ -z "$sync" ] || [ "$sync" = 0000000000000000 ]; then
		fail "${name}_gdb" "no address in /proc/kallsyms: $(tail -c 300 "$TMP/${name}_kallsyms.cmdlog")"
		return
	fi
	cat >"$TMP/$name.gdb" <<EOF2
set pagination off
set confirm off
target remote 127.0.0.1:$port
break *0x$sync
continue
info registers rip
x/gx \$rsp
stepi
info registers rip
delete
watch -l *(long *)(\$rsp - 8)
continue
delete
detach
EOF2
	timeout 300 gdb -batch -nx -x "$TMP/$name.gdb" >"$TMP/$name.gdb.log" 2>&1 &
	local gdb_pid=$! i
	# Once gdb has attached the guest is stopped, so the line waits in the console pipe until
	# gdb has set its breakpoint and continued.
	for i in $(seq 600); do grep -q 'gdb: attached' "$CONSOLE_LOG.err" && break; sleep 0.1; done
	console_send 'sync; echo "synced-$((6*7))"'
	wait "$gdb_pid"
	local log=$TMP/$name.gdb.log first second
	first=$(awk '$1 == "rip" { print $2 }' "$log" | sed -n 1p)
	second=$(awk '$1 == "rip" { print $2 }' "$log" | sed -n 2p)
	[ "$first" = "0x$sync" ] && ok "${name}_gdb_breakpoint_from_kallsyms_hit" ||
		fail "${name}_gdb_breakpoint_from_kallsyms_hit" "rip $first, want 0x$sync: $(tail -5 "$log" | tr '\n' '|')"
	grep -Eq '^0x[0-9a-f]+:[[:space:]]+0xffffffff[0-9a-f]{8}$' "$log" && ok "${name}_gdb_reads_kernel_stack" ||
		fail "${name}_gdb_reads_kernel_stack" "no kernel return address at \$rsp: $(tail -5 "$log" | tr '\n' '|')"
	if [ -n "$second" ] && [ "$second" != "$first" ]; then
		ok "${name}_gdb_step"
	else
		fail "${name}_gdb_step" "rip $first then $second"
	fi
	grep -q "New value = " "$log" && ok "${name}_gdb_watchpoint_on_kernel_stack" ||
		fail "${name}_gdb_watchpoint_on_kernel_stack" "$(tail -6 "$log" | tr '\n' '|')"
	grep -q "detached" "$log" && console_expect "synced-42" 120 && ok "${name}_gdb_detach_guest_goes_on" ||
		fail "${name}_gdb_detach_guest_goes_on" "$(tail -3 "$log" | tr '\n' '|') $(tail -c 300 "$CONSOLE_LOG")"
	console_expect "# " 60
}
gdb_port=$((20000 + RANDOM % 20000))

# The direct start of the bzImage (src/boot/direct.c): vmm decompressed the LZ4 payload, and the
# trace says where it put the kernel; the running kernel agrees (its _text in /proc/kallsyms at
# 0xffffffff81000000 + the virtual offset, "Kernel code" in /proc/iomem at the physical address).
# MODE: KASLR (random, any offset) or nokaslr (as linked: 16 MiB, offset 0).
direct_boot_check() { # NAME TRACE MODE
	local name=$1 trace=$2 mode=$3 line phys off text code
	line=$(grep -m 1 'kernel: lz4 payload decompressed by vmm' "$trace")
	if ! [[ "$line" =~ startup_64\ at\ physical\ (0x[0-9a-f]+),\ virtual\ offset\ (0x[0-9a-f]+)\ \((.*)\)$ ]]; then
		fail "${name}_direct_boot_traced" "no direct start in the trace: $(grep -m 2 'kernel' "$trace")"
		return
	fi
	phys=${BASH_REMATCH[1]} off=${BASH_REMATCH[2]}
	[ "${BASH_REMATCH[3]}" = "$mode" ] && ok "${name}_direct_boot_traced_$mode" ||
		fail "${name}_direct_boot_traced_$mode" "$line"
	if [ "$mode" = nokaslr ] && { [ $((phys)) -ne $((0x1000000)) ] || [ $((off)) -ne 0 ]; }; then
		fail "${name}_nokaslr_runs_as_linked" "$line"
	fi
	run_cmd "${name}_kernel_where_vmm_put_it" 'grep -m 1 -w _text /proc/kallsyms; grep -m 1 "Kernel code" /proc/iomem' '_text' || return
	text=$(awk '$3 == "_text" { print $1 }' <<<"$RUN_OUT")
	code=$(sed -n 's/^ *\([0-9a-f]*\)-[0-9a-f]* : Kernel code.*/\1/p' <<<"$RUN_OUT")
	if [ -n "$text" ] && [ -n "$code" ] && [ $((16#$text)) -eq $((0xffffffff81000000 + off)) ] &&
		[ $((16#$code)) -eq $((phys)) ]; then
		ok "${name}_kernel_at_traced_addresses"
	else
		fail "${name}_kernel_at_traced_addresses" "trace: physical $phys, offset $off; guest: _text ${text:-?}, Kernel code ${code:-?}"
	fi
}

# KASLR's choices differ from one start to the next: two loads of the kernel, each held at its
# first instruction (--gdb-wait) once the trace has its line, then stopped. (The chance that two
# random starts agree on both addresses is about 1 in 100000.)
kaslr_differs_between_starts() {
	local i pid got=()
	for i in 1 2; do
		"$VMM" --accel emu -m 512M -g $((gdb_port + i)) --gdb-wait --api-sock none -t boot \
			--trace-file "$TMP/kaslr$i.trace" -i "$INITRD" "$KERNEL" </dev/null >/dev/null 2>&1 &
		pid=$!
		for _ in $(seq 600); do grep -q 'VM created' "$TMP/kaslr$i.trace" 2>/dev/null && break; sleep 0.1; done
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		got+=("$(sed -n 's/.*startup_64 at \(physical 0x[0-9a-f]*, virtual offset 0x[0-9a-f]*\) (KASLR)$/\1/p' "$TMP/kaslr$i.trace")")
	done
	if [ -n "${got[0]}" ] && [ -n "${got[1]}" ] && [ "${got[0]}" != "${got[1]}" ]; then
		ok linux_emu_kaslr_differs_between_starts
	else
		fail linux_emu_kaslr_differs_between_starts "first '${got[0]}', second '${got[1]}': $(grep -h kernel "$TMP"/kaslr*.trace | head -2)"
	fi
}
kaslr_differs_between_starts

# Whether this vmm has user-mode networking (libslirp) built in.
has_user_net() {
	"$VMM" --accel emu -m 64M -n user /nonexistent 2>&1 | grep -qv 'not built'
}

# In the traced boot: disk reads and writes, the NIC up with a DHCP lease, a control request.
trace_linux_guest_work() {
	local name=$1
	run_cmd "${name}_trace_disk_io" 'dd if=/dev/vda of=/dev/null bs=4k count=16 && echo x | dd of=/dev/vda bs=512 seek=7 conv=fsync && echo disk-ok' '^disk-ok$'
	if [[ " ${trace_args[*]} " == *" -n user "* ]]; then
		run_cmd "${name}_trace_dhcp" 'ip link set eth0 up && udhcpc -i eth0 -q -n' 'lease of'
	fi
	"$VMM" status "$name" >"$TMP/status.out" 2>&1 || fail "${name}_trace_status" "$(cat "$TMP/status.out")"
}

# trace_linux_check NAME TRACE STATS: every category has its lines for a Linux boot; --stats
# counts serial-port exits after the console's lines.
trace_linux_check() {
	local name=$1 trace=$2 stats=$3 label cat re n c
	# LABEL|CATEGORY|REGEX
	local -a checks=(
		"create|boot|creating the VM: 2 vCPUs, 512 MiB, backend emu"
		"mark|boot|debug port mark [0-9.]+ \"/init started\""
		"serial|exit|io rip 0x[0-9a-f]+ port 0x3f8"
		"serial|pio|out port 0x3f8 size 1 value 0x[0-9a-f]+ serial"
		"access|mmio|(read|write) gpa 0x[0-9a-f]+ size [1248] value 0x[0-9a-f]+ "
		"config|pci|config (read|write) 00:[0-9a-f]{2}\\.0 reg 0x[0-9a-f]+ size [124] value"
		"notify|virtio|virtio-blk0 queue [0-9]+: notified"
		"raise|irq|(gsi [0-9]+ raise|msi address 0xfee)"
		"read|blk|virtio-blk0 read sector [0-9]+ bytes [0-9]+"
		"write|blk|virtio-blk0 write sector [0-9]+ bytes [0-9]+"
		"api|control|api: GET /vmm -> 200"
	)
	if [[ " ${trace_args[*]} " == *" -n user "* ]]; then
		checks+=("start|net|virtio-net0: started on user" "tx|net|virtio-net0 tx queue 1: [0-9]+ bytes"
			 "rx|net|virtio-net0 rx queue 0: [0-9]+ bytes in [0-9]+ buffers")
	fi
	for c in "${checks[@]}"; do
		IFS='|' read -r label cat re <<<"$c"
		n=$(grep -Ec "^ *[0-9]+\\.[0-9]{9} (vcpu[0-9]+|host) +$cat +$re" "$trace")
		if [ "$n" -gt 0 ]; then
			ok "${name}_trace_${cat}_$label"
		else
			fail "${name}_trace_${cat}_$label" "no '$cat' line matching '$re' in $(wc -l <"$trace") lines"
		fi
	done
	n=$(awk '/^  0x3f8-0x3ff +serial/ { gsub(",", ""); print $4 + $6 }' "$stats")
	if [ "${n:-0}" -gt 0 ]; then ok "${name}_stats_serial_exits"; else fail "${name}_stats_serial_exits" "$(grep -m3 -i serial "$stats")"; fi
}

for cpus in 1 2; do
	name=linux_emu_${cpus}cpu
	start=$SECONDS
	gdb_args=() trace_args=() kernel_args=(panic=-1) kaslr_mode=KASLR
	[ "$cpus" -eq 1 ] && command -v gdb >/dev/null && gdb_args=(-g "$gdb_port")
	# The 1-vCPU boot starts with KASLR (traced), the 2-vCPU one with nokaslr.
	[ "$cpus" -eq 1 ] && trace_args=(-t boot --trace-file "$TMP/$name.trace")
	[ "$cpus" -eq 2 ] && kernel_args+=(nokaslr) && kaslr_mode=nokaslr
	# The 2-vCPU boot also traces every category, with a disk and (when built in) a user-mode
	# NIC, so that each category has its events: trace_linux_check below.
	if [ "$cpus" -eq 2 ]; then
		truncate -s 8M "$TMP/trace-disk.img"
		trace_args=(-t all --trace-file "$TMP/$name.trace" --stats -d "$TMP/trace-disk.img")
		has_user_net && trace_args+=(-n user)
	fi
	console_start "$TMP/$name.log" --name "$name" --accel emu -c $cpus -m 512M "${gdb_args[@]}" "${trace_args[@]}" -i "$INITRD" "$KERNEL" "${kernel_args[@]}"
	if ! console_expect "init: ready" 900 || ! console_expect "# " 60; then
		fail "${name}_boots_to_shell" "no shell after $((SECONDS - start)) s: $(tail -c 600 "$TMP/$name.log") $(tail -c 300 "$TMP/$name.log.err")"
		console_kill
		continue
	fi
	ok "${name}_boots_to_shell"
	echo "# $name: shell after $((SECONDS - start)) s"
	# An MSR the kernel expects to exist that the CPU refuses shows in its log (rdmsr/wrmsr #GP).
	if grep -a 'unchecked MSR access' "$TMP/$name.log" >"$TMP/$name.msr"; then
		fail "${name}_no_msr_errors" "$(head -c 400 "$TMP/$name.msr")"
	else
		ok "${name}_no_msr_errors"
	fi
	console_send 'stty -echo'
	console_expect "# " 60
	run_cmd "${name}_ls" 'ls /' '(^| )proc( |$)'
	run_cmd "${name}_cpuinfo" 'cat /proc/cpuinfo; echo "cpus=$(grep -c ^processor /proc/cpuinfo)"' "^cpus=$cpus\$"
	if [ "$cpus" -gt 1 ]; then
		run_cmd "${name}_dmesg" 'dmesg' "smp: Brought up 1 node, $cpus CPUs"
	else
		run_cmd "${name}_dmesg" 'dmesg' 'Linux version'
	fi
	# The guest's debug registers and TF through Linux's ptrace/hw_breakpoint (vmm-dbgtest).
	if [ -n "$has_dbgtest" ]; then
		run_cmd "${name}_ptrace_debug_registers" 'vmm-dbgtest; echo "dbgtest=$?"' '^dbgtest=0$'
	fi
	direct_boot_check "$name" "$TMP/$name.trace" "$kaslr_mode"
	if [ "$cpus" -eq 2 ]; then
		trace_linux_guest_work "$name"
	fi
	if [ ${#gdb_args[@]} -gt 0 ]; then
		gdb_start=$SECONDS
		linux_gdb "$name" "$gdb_port"
		echo "# $name: gdb session $((SECONDS - gdb_start)) s"
	fi
	if [ "$cpus" -eq 1 ] && [ $stop_by = vmm_stop ]; then
		how=vmm_stop
		"$VMM" stop --no-wait "$name" >"$TMP/stop.out" 2>&1 || fail "${name}_vmm_stop_accepted" "$(cat "$TMP/stop.out")"
	else
		how=poweroff
		console_send 'poweroff -f'
	fi
	console_wait 120
	if [ "$CONSOLE_STATUS" -eq 0 ]; then
		ok "${name}_${how}_exits_0"
	else
		fail "${name}_${how}_exits_0" "status $CONSOLE_STATUS: $(tail -c 300 "$TMP/$name.log") $(tail -c 300 "$TMP/$name.log.err")"
	fi
	echo "# $name: $((SECONDS - start)) s from start to exit"
	[ "$cpus" -eq 2 ] && trace_linux_check "$name" "$TMP/$name.trace" "$TMP/$name.log.err"
done
