#!/usr/bin/env bash
# The default Linux guest (guest/linux: Debian's stock cloud kernel + busybox) on the software CPU
# (--accel emu): boots to a shell with 1 and 2 vCPUs (the second one exercises SIPI bring-up and
# LOCK-prefixed instructions between vCPU threads), runs `ls /`, `cat /proc/cpuinfo` and `dmesg`,
# each with status 0; with 1 vCPU `vmm stop` (the ACPI power button, which the guest's acpid turns
# into a poweroff) ends vmm with status 0, with 2 `poweroff -f` does. The limits are generous (a boot
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

# run_cmd NAME COMMAND CHECK: runs COMMAND in the guest's shell, its output into a marked block;
# passes when the status is 0 and CHECK (a grep -E pattern) matches the output.
run_cmd() {
	local name=$1 cmd=$2 check=$3 out
	: >"$TMP/$name.cmdlog"
	local saved=$CONSOLE_LOG
	CONSOLE_LOG=$TMP/$name.cmdlog
	# The markers are computed by the shell, so the echoed command line never matches them.
	console_send "echo \"begin-\$((6*7))\"; $cmd; echo \"status-\$?-done-\$((6*7))\""
	if ! console_expect "-done-42" 120; then
		CONSOLE_LOG=$saved
		cat "$TMP/$name.cmdlog" >>"$CONSOLE_LOG"
		fail "$name" "no end marker within 120 s: $(tail -c 400 "$TMP/$name.cmdlog")"
		return 1
	fi
	CONSOLE_LOG=$saved
	cat "$TMP/$name.cmdlog" >>"$CONSOLE_LOG"
	out=$(tr -d '\r' <"$TMP/$name.cmdlog" | sed -n '/begin-42$/,/status-.*-done-42/p')
	if ! grep -q 'status-0-done-42' <<<"$out"; then
		fail "$name" "status not 0: $(tail -c 300 <<<"$out")"
	elif ! grep -qE -- "$check" <<<"$out"; then
		fail "$name" "output does not match '$check': $(tail -c 300 <<<"$out")"
	else
		ok "$name"
	fi
}

for cpus in 1 2; do
	name=linux_emu_${cpus}cpu
	start=$SECONDS
	console_start "$TMP/$name.log" --name "$name" --accel emu -c $cpus -m 512M -i "$INITRD" "$KERNEL" panic=-1
	if ! console_expect "init: ready" 300 || ! console_expect "# " 60; then
		fail "${name}_boots_to_shell" "no shell after $((SECONDS - start)) s: $(tail -c 600 "$TMP/$name.log") $(tail -c 300 "$TMP/$name.log.err")"
		console_kill
		continue
	fi
	ok "${name}_boots_to_shell"
	echo "# $name: shell after $((SECONDS - start)) s"
	console_send 'stty -echo'
	console_expect "# " 60
	run_cmd "${name}_ls" 'ls /' '(^| )proc( |$)'
	run_cmd "${name}_cpuinfo" 'cat /proc/cpuinfo; echo "cpus=$(grep -c ^processor /proc/cpuinfo)"' "^cpus=$cpus\$"
	if [ "$cpus" -gt 1 ]; then
		run_cmd "${name}_dmesg" 'dmesg' "smp: Brought up 1 node, $cpus CPUs"
	else
		run_cmd "${name}_dmesg" 'dmesg' 'Linux version'
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
done
