#!/usr/bin/env bash
# The default Linux guest (guest/linux: Debian's stock cloud kernel + busybox) on the KVM backend:
# boots to a shell with 1 and 2 vCPUs, runs commands, powers off with status 0. Runs where the host
# has VMX/SVM; elsewhere it skips, saying why.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/console.bash"
KERNEL=$ROOT/guest/linux/out/vmlinuz
INITRD=$ROOT/guest/linux/out/initramfs.cpio.gz
if ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
	skip linux_on_kvm "the host has no VMX/SVM: its /dev/kvm cannot run a stock Linux kernel"
	exit 0
fi
require_kvm linux_on_kvm || exit 0
if [ ! -f "$KERNEL" ] || [ ! -f "$INITRD" ]; then
	if [ "${CI:-}" = true ]; then fail linux_on_kvm "guest/linux/out is missing (make guest)"; else skip linux_on_kvm "guest/linux/out is missing (make guest)"; fi
	exit 0
fi
for cpus in 1 2; do
	name=linux_kvm_${cpus}cpu
	console_start "$TMP/$name.log" --accel kvm -c $cpus -m 512M -i "$INITRD" "$KERNEL" panic=-1
	if ! console_expect "init: ready" 120 || ! console_expect "# " 60; then
		fail "$name" "no shell: $(tail -c 600 "$TMP/$name.log")"
		console_kill
		continue
	fi
	console_send 'stty -echo; grep -c ^processor /proc/cpuinfo; echo "done-$((40+2))"'
	if console_expect "done-42" 60 && grep -q "^$cpus" <(tr -d '\r' <"$TMP/$name.log"); then
		ok "${name}_sees_its_cpus"
	else
		fail "${name}_sees_its_cpus" "$(tail -c 400 "$TMP/$name.log")"
	fi
	console_send 'ls / >/dev/null && dmesg | grep -q "Linux version" && echo "ok-$((1+1))"'
	if console_expect "ok-2" 60; then ok "${name}_runs_commands"; else fail "${name}_runs_commands" "$(tail -c 400 "$TMP/$name.log")"; fi
	console_send 'poweroff -f'
	console_wait 60
	if [ "$CONSOLE_STATUS" -eq 0 ]; then ok "${name}_poweroff_exits_0"; else fail "${name}_poweroff_exits_0" "status $CONSOLE_STATUS"; fi
done
