#!/usr/bin/env bash
# Networking with a Linux guest (issue 5): over a TAP the guest pings the host and fetches a file
# over TCP; two guests on a Linux bridge reach each other; with user-mode networking the guest
# gets its address by DHCP, fetches from a server on the host's loopback, and a host client
# reaches a server in the guest through hostfwd. All addresses live in namespaces made here.
# Needs a backend that runs Linux: KVM on a host with VMX/SVM, or the software CPU.
. "$(dirname "$0")/lib.sh"

VMLINUZ=$ROOT/guest/linux/out/vmlinuz
INITRD=$ROOT/guest/linux/out/initramfs.cpio.gz
TESTS="net_linux_tap_ping_and_tcp net_linux_bridge_two_guests net_linux_user_dhcp_fetch_hostfwd"
skip_all() { for t in $TESTS; do skip "$t" "$1"; done; exit 0; }

# Which backend can run a stock Linux kernel here?
ACCEL=
if grep -qwE 'vmx|svm' /proc/cpuinfo && kvm_usable; then
	ACCEL=kvm
else
	emu_says=$("$VMM" --accel emu "$ROOT/guest/selftest/selftest.bzImage" 2>&1 </dev/null | grep -m1 'accel emu')
	if [ -n "$emu_says" ]; then
		skip_all "no backend here runs Linux: /proc/cpuinfo has no vmx/svm (this /dev/kvm cannot run stock kernels) and ${emu_says#vmm: }"
	fi
	ACCEL=emu
fi
[ -f "$VMLINUZ" ] && [ -f "$INITRD" ] || skip_all "no Linux guest: run 'make guest' (guest/linux/out/)"
if [ "$ACCEL" = emu ] && ! emu_linux_probe "$VMLINUZ" "$INITRD"; then
	skip_all "$EMU_LINUX_WHY"
fi
NS=vmmnl$$
cleanup() {
	for p in $(jobs -p); do kill "$p" 2>/dev/null; done
	ip netns del "$NS" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$NS" && ip -n "$NS" link set lo up || skip_all "cannot create a network namespace"

# guest_start N ARGS...: boot guest N with its console on fifos; guest_send/guest_wait drive it.
guest_start() {
	local n=$1; shift
	mkfifo "$TMP/in$n"
	: >"$TMP/out$n"
	ip netns exec "$NS" timeout -s KILL 600 "$VMM" --accel "$ACCEL" -m 512M "$@" -i "$INITRD" "$VMLINUZ" \
		quiet panic=-1 <"$TMP/in$n" >"$TMP/out$n" 2>"$TMP/err$n" &
	exec {fd}>"$TMP/in$n"
	eval "GUEST_FD$n=$fd"
	guest_wait "$n" "init: ready" 300 && guest_wait "$n" "# " 60 || return 1
	guest_send "$n" "stty -echo cols 1000"
	sleep 1
}
guest_send() { local fd; eval "fd=\$GUEST_FD$1"; printf '%s\n' "$2" >&"$fd"; }
guest_wait() { # N PATTERN SECONDS
	for _ in $(seq $(($3 * 10))); do grep -q -- "$2" "$TMP/out$1" && return 0; sleep 0.1; done
	return 1
}
# guest_run N CMD MARK SECONDS: run CMD, then echo MARK-$?; succeed if it printed MARK-0.
guest_run() {
	guest_send "$1" "$2; echo $3-\$((\$?+100))"
	guest_wait "$1" "$3-100" "$4"
}
guest_stop() { guest_send "$1" "poweroff -f"; }

# A file for the guests to fetch, served from the namespace's side of the link.
head -c 100000 /dev/urandom >"$TMP/blob"
sum=$(md5sum <"$TMP/blob" | cut -d' ' -f1)
mkdir -p "$TMP/www" && cp "$TMP/blob" "$TMP/www/blob"

# TAP: static address, ping, TCP fetch.
ip -n "$NS" tuntap add mode tap name vmmt0 && ip -n "$NS" addr add 10.77.0.1/24 dev vmmt0 &&
	ip -n "$NS" link set vmmt0 up
ip netns exec "$NS" busybox httpd -f -p 10.77.0.1:8000 -h "$TMP/www" &
if guest_start 1 -n tap=vmmt0 &&
	guest_run 1 "ip link set eth0 up && ip addr add 10.77.0.2/24 dev eth0 && ping -c 3 -W 5 10.77.0.1" ping 60 &&
	guest_run 1 "wget -q -O /tmp/b http://10.77.0.1:8000/blob && md5sum /tmp/b | grep -q $sum" tcp 120; then
	ok net_linux_tap_ping_and_tcp
else
	fail net_linux_tap_ping_and_tcp "console: $(tail -c 400 "$TMP/out1" | tr -d '\r'); $(cat "$TMP/err1")"
fi
guest_stop 1

# Bridge: two guests on TAPs enslaved to one bridge reach each other.
ip -n "$NS" link add vmmbr0 type bridge && ip -n "$NS" link set vmmbr0 up
for t in vmmb1 vmmb2; do
	ip -n "$NS" tuntap add mode tap name $t && ip -n "$NS" link set $t master vmmbr0 up
done
if guest_start 2 -n tap=vmmb1 && guest_start 3 -n tap=vmmb2 &&
	guest_run 2 "ip link set eth0 up && ip addr add 10.78.0.2/24 dev eth0" a 30 &&
	guest_run 3 "ip link set eth0 up && ip addr add 10.78.0.3/24 dev eth0 && ping -c 3 -W 5 10.78.0.2" b 60; then
	ok net_linux_bridge_two_guests
else
	fail net_linux_bridge_two_guests "console: $(tail -c 300 "$TMP/out3" | tr -d '\r')"
fi
guest_stop 2
guest_stop 3

# User mode: DHCP, a server on the host's loopback (10.0.2.2 is the host), and hostfwd inwards.
ip netns exec "$NS" busybox httpd -f -p 127.0.0.1:8001 -h "$TMP/www" &
if guest_start 4 -n user,hostfwd=tcp::18081-:8080 &&
	guest_run 4 "ip link set eth0 up && udhcpc -i eth0 -q -n" dhcp 60 &&
	guest_run 4 "wget -q -O /tmp/b http://10.0.2.2:8001/blob && md5sum /tmp/b | grep -q $sum" fetch 120 &&
	guest_run 4 "mkdir -p /tmp/w && echo hello-from-guest >/tmp/w/i && httpd -p 8080 -h /tmp/w" srv 30 &&
	ip netns exec "$NS" bash -c 'exec 3<>/dev/tcp/127.0.0.1/18081; printf "GET /i HTTP/1.0\r\n\r\n" >&3; cat <&3' |
	grep -q hello-from-guest; then
	ok net_linux_user_dhcp_fetch_hostfwd
else
	fail net_linux_user_dhcp_fetch_hostfwd "console: $(tail -c 300 "$TMP/out4" | tr -d '\r')"
fi
guest_stop 4
