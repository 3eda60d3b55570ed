#!/usr/bin/env bash
# Networking with Linux guests (issue 5), two boots: guest 1 has three NICs (eth0: a TAP, eth1: a
# TAP on a Linux bridge, eth2: user-mode networking), guest 2 one (two queue pairs on a multi-queue
# TAP on the same bridge). Over
# its TAP guest 1 pings the host and fetches a file over TCP; the two guests reach each other
# across the bridge; with user-mode networking guest 1 gets its address by DHCP, fetches from a
# server on the host's loopback, and a host client reaches a server in it through hostfwd. The
# MACs are the ones derived from --name, or mac=. All addresses live in a namespace made here.
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
NS=vmmnl$$
cleanup() {
	for p in $(jobs -p); do kill "$p" 2>/dev/null; done
	ip netns del "$NS" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$NS" && ip -n "$NS" link set lo up || skip_all "cannot create a network namespace"

# A guest that died makes writes to its console fail instead of killing this script.
trap '' PIPE

# guest_launch N ARGS...: boot guest N with its console on fifos; guest_ready waits for its shell,
# guest_send/guest_wait drive it. The waits are generous: with other work on the machine a boot on
# the software CPU can take many minutes; a guest that dies ends the wait at once.
guest_launch() {
	local n=$1; shift
	mkfifo "$TMP/in$n"
	: >"$TMP/out$n"
	ip netns exec "$NS" "$VMM" --accel "$ACCEL" -m 512M "$@" -i "$INITRD" "$VMLINUZ" \
		quiet panic=-1 <"$TMP/in$n" >"$TMP/out$n" 2>"$TMP/err$n" &
	eval "GUEST_PID$n=$!"
	exec {fd}>"$TMP/in$n"
	eval "GUEST_FD$n=$fd"
}
guest_ready() {
	guest_wait "$1" "init: ready" 1800 && guest_wait "$1" "# " 60 || return 1
	guest_send "$1" "stty -echo cols 1000"
	sleep 1
}
guest_send() { local fd; eval "fd=\$GUEST_FD$1"; printf '%s\n' "$2" >&"$fd"; }
guest_wait() { # N PATTERN SECONDS
	local pid
	eval "pid=\$GUEST_PID$1"
	for _ in $(seq $(($3 * 10))); do
		grep -q -- "$2" "$TMP/out$1" && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	grep -q -- "$2" "$TMP/out$1"
}
# guest_run N CMD MARK SECONDS: run CMD, then echo MARK-$?; succeed if it printed MARK-0.
guest_run() {
	guest_send "$1" "$2; echo $3-\$((\$?+100))"
	guest_wait "$1" "$3-100" "$4"
}
guest_stop() { guest_send "$1" "poweroff -f"; }

# default_mac NAME INDEX: the MAC vmm gives NIC INDEX of VM NAME without mac= (FNV-1a of the name,
# then of the index; src/net/net_config.c), computed independently here.
default_mac() {
	python3 -c 'import sys
h = 0xcbf29ce484222325
for c in sys.argv[1].encode() + bytes([int(sys.argv[2])]):
    h = ((h ^ c) * 0x100000001b3) % 2**64
print("52:54:" + ":".join("%02x" % ((h >> (16 + 8 * i)) & 255) for i in range(4)))' "$1" "$2"
}

# A file for the guests to fetch, served from the namespace's side of the link.
head -c 100000 /dev/urandom >"$TMP/blob"
sum=$(md5sum <"$TMP/blob" | cut -d' ' -f1)
mkdir -p "$TMP/www" && cp "$TMP/blob" "$TMP/www/blob"

# The host side: a TAP with an address and a web server; a bridge with two TAPs; a web server on
# the loopback for user-mode networking (where the guest sees the host as 10.0.2.2).
ip -n "$NS" tuntap add mode tap name vmmt0 && ip -n "$NS" addr add 10.77.0.1/24 dev vmmt0 &&
	ip -n "$NS" link set vmmt0 up
ip netns exec "$NS" busybox httpd -f -p 10.77.0.1:8000 -h "$TMP/www" &
ip -n "$NS" link add vmmbr0 type bridge && ip -n "$NS" link set vmmbr0 up
ip -n "$NS" tuntap add mode tap name vmmb1 && ip -n "$NS" link set vmmb1 master vmmbr0 up
ip -n "$NS" tuntap add mode tap name vmmb2 multi_queue && ip -n "$NS" link set vmmb2 master vmmbr0 up
ip netns exec "$NS" busybox httpd -f -p 127.0.0.1:8001 -h "$TMP/www" &

# Both guests boot at once.
guest_launch 1 --name "nl$$" -n tap=vmmt0 -n tap=vmmb1 -n user,mac=52:54:00:ab:cd:ef,hostfwd=tcp::18081-:8080
guest_launch 2 -c 2 -n tap=vmmb2,queues=2 # two vCPUs: Linux then uses both queue pairs
up1=no up2=no
guest_ready 1 && up1=yes
guest_ready 2 && up2=yes

# TAP: static address, ping, TCP fetch; the MACs of the two TAP NICs are the ones from --name.
if [ $up1 = yes ] &&
	guest_run 1 "grep -qx $(default_mac "nl$$" 0) /sys/class/net/eth0/address && grep -qx $(default_mac "nl$$" 1) /sys/class/net/eth1/address" tapmac 30 &&
	guest_run 1 "ip link set eth0 up && ip addr add 10.77.0.2/24 dev eth0 && ping -c 3 -W 5 10.77.0.1" tapping 60 &&
	guest_run 1 "wget -q -O /tmp/b http://10.77.0.1:8000/blob && md5sum /tmp/b | grep -q $sum" tapfetch 120; then
	ok net_linux_tap_ping_and_tcp
else
	fail net_linux_tap_ping_and_tcp "console: $(tail -c 400 "$TMP/out1" | tr -d '\r'); $(cat "$TMP/err1")"
fi

# Bridge: guest 1's second NIC and guest 2 on TAPs enslaved to one bridge reach each other; guest
# 2's NIC has two queue pairs on a multi-queue TAP, and Linux takes both.
if [ $up1 = yes ] && [ $up2 = yes ] &&
	guest_run 1 "ip link set eth1 up && ip addr add 10.78.0.2/24 dev eth1" bra 30 &&
	guest_run 2 "[ \$(ls /sys/class/net/eth0/queues | grep -c rx-) = 2 ]" brmq 30 &&
	guest_run 2 "ip link set eth0 up && ip addr add 10.78.0.3/24 dev eth0 && ping -c 3 -W 5 10.78.0.2" brb 60; then
	ok net_linux_bridge_two_guests
else
	fail net_linux_bridge_two_guests "console: $(tail -c 300 "$TMP/out1" | tr -d '\r') / $(tail -c 300 "$TMP/out2" | tr -d '\r'); $(cat "$TMP/err1" "$TMP/err2")"
fi
guest_stop 2

# User mode: DHCP, a server on the host's loopback (10.0.2.2 is the host), and hostfwd inwards,
# both ways with 100 KB on the link's MTU of 65520 and the device's checksum offload (a checksum
# it completed or validated wrongly stalls the transfer).
if [ $up1 = yes ] &&
	guest_run 1 "grep -qx 52:54:00:ab:cd:ef /sys/class/net/eth2/address && grep -qx 65520 /sys/class/net/eth2/mtu" usermac 30 &&
	guest_run 1 "ip link set eth2 up && udhcpc -i eth2 -q -n" dhcp 60 &&
	guest_run 1 "wget -q -O /tmp/c http://10.0.2.2:8001/blob && md5sum /tmp/c | grep -q $sum" userfetch 120 &&
	guest_run 1 "mkdir -p /tmp/w && echo hello-from-guest >/tmp/w/i && cp /tmp/c /tmp/w/blob && httpd -p 8080 -h /tmp/w" usersrv 30 &&
	ip netns exec "$NS" bash -c 'exec 3<>/dev/tcp/127.0.0.1/18081; printf "GET /i HTTP/1.0\r\n\r\n" >&3; cat <&3' |
	grep -q hello-from-guest &&
	[ "$(ip netns exec "$NS" busybox wget -q -O - http://127.0.0.1:18081/blob | md5sum | cut -d' ' -f1)" = "$sum" ]; then
	ok net_linux_user_dhcp_fetch_hostfwd
else
	fail net_linux_user_dhcp_fetch_hostfwd "console: $(tail -c 300 "$TMP/out1" | tr -d '\r'); $(cat "$TMP/err1")"
fi
guest_stop 1
