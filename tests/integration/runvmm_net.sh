#!/usr/bin/env bash
# runvmm's network set-up (net = bridge=BR, net = nat=SUBNET), all of it inside a network namespace
# this test creates: the bridge is created when missing and each VM's TAP is one of its ports; NAT
# adds the gateway address, forwarding and an nftables masquerade table; everything runvmm made
# stays while one VM uses it and is gone after the last one ends (stop, SIGTERM to runvmm, SIGKILL
# to the monitor, `runvmm run`), while a bridge runvmm did not make stays. Bad definitions are one
# line naming file and line. The guests are the count fixture on KVM (no traffic: net_linux.sh
# sends Linux's across a bridge).
. "$(dirname "$0")/lib.sh"
COUNT=$ROOT/build/tests/fixtures/count.bzImage
RUNVMM=$ROOT/tools/runvmm
NS=vmmrn$$
export VMM_RUNTIME_DIR=$TMP/run VMMPATH=$ROOT HOME=$TMP/home
mkdir -p "$HOME"
trap 'ip netns pids "$NS" 2>/dev/null | xargs -r kill -KILL; for n in "$NS" "${NS}g" "${NS}o"; do ip netns del "$n" 2>/dev/null; done; rm -rf "$TMP"' EXIT

if [ "$(id -u)" -ne 0 ] || ! ip netns add "$NS" 2>/dev/null; then
	skip runvmm_net "needs root and a network namespace"
	exit 0
fi
ip -n "$NS" link set lo up
if ! ip netns exec "$NS" nft list tables >/dev/null 2>&1; then
	skip runvmm_net "nft does not work here (install nftables)"
	exit 0
fi
require_kvm runvmm_net || exit 0

rv() { ip netns exec "$NS" "$RUNVMM" "$@"; } # runvmm in the namespace
links() { ip -n "$NS" -br link | awk '{print $1}' | sed 's/@.*//' | grep -vx lo | sort | tr '\n' ' '; }
ports() { ip -n "$NS" -br link show master "$1" 2>/dev/null | awk '{print $1}' | sed 's/@.*//' | sort | tr '\n' ' '; }
tables() { ip netns exec "$NS" nft list tables 2>/dev/null | tr '\n' ' '; }
forwarding() { ip netns exec "$NS" cat /proc/sys/net/ipv4/ip_forward; }
wait_for() { for _ in $(seq 100); do eval "$1" && return 0; sleep 0.1; done; return 1; }
# nothing_left NAME [LINKS]: only lo (and LINKS) in the namespace, no nftables table, forwarding
# as it was, an empty runtime directory, no monitor left in the namespace
nothing_left() {
	local want=${2:-} l t r p
	wait_for "[ -z \"\$(ls -A $VMM_RUNTIME_DIR)\" ]"
	l=$(links) t=$(tables) r=$(ls -A "$VMM_RUNTIME_DIR") p=$(ip netns pids "$NS")
	if [ "$l" = "$want" ] && [ -z "$t" ] && [ "$(forwarding)" = "$forward0" ] && [ -z "$r" ] && [ -z "$p" ]; then
		ok "$1"
	else
		fail "$1" "links '$l' (want '$want'), tables '$t', ip_forward $(forwarding) (was $forward0), runtime dir '$r', pids '$p'"
	fi
}
forward0=$(forwarding)

# bad NAME RC-TEXT PATTERN: `runvmm start a` fails with exactly one line matching PATTERN and
# leaves nothing behind
bad() {
	printf '[a]\nkernel = %s\n%s\n' "$COUNT" "$2" >"$TMP/bad.rc"
	VMMRC=$TMP/bad.rc rv start a >/dev/null 2>"$TMP/bad.err"
	local rc=$? n
	n=$(wc -l <"$TMP/bad.err")
	if [ $rc -ne 0 ] && [ "$n" -eq 1 ] && grep -q -- "$3" "$TMP/bad.err" && [ -z "$(links)" ] &&
		[ -z "$(ls -A "$VMM_RUNTIME_DIR" 2>/dev/null)" ]; then
		ok "$1"
	else
		fail "$1" "status $rc, $n lines: $(cat "$TMP/bad.err"); links '$(links)'; left: $(ls -A "$VMM_RUNTIME_DIR" 2>/dev/null)"
	fi
}
bad net_bad_bridge_name "net = bridge=a-name-far-too-long" "bad.rc:3: net = bridge=a-name-far-too-long: .* is not an interface name"
bad net_bridge_not_a_bridge "net = bridge=lo" "bad.rc:3: lo exists and is not a bridge"
bad net_nat_not_a_subnet "net = nat=10.0.300.0/24" "bad.rc:3: net = nat=10.0.300.0/24: not an IPv4 subnet"
bad net_nat_host_bits "net = nat=10.0.100.1/24" "bad.rc:3: .*host bits are set (use nat=10.0.100.0/24)"
bad net_unknown_mode "net = vde" "bad.rc:3: net = vde: unknown mode"

cat >"$TMP/vmmrc" <<EOF
[b1]
kernel = $COUNT
memory = 64M
net = bridge=vmmbr0
[b2]
kernel = $COUNT
memory = 64M
net = bridge=vmmbr0
[own]
kernel = $COUNT
memory = 64M
net = bridge=vmmown0
[n1]
kernel = $COUNT
memory = 64M
net = nat=10.99.7.0/24
[n2]
kernel = $COUNT
memory = 64M
net = nat=10.99.7.0/24
[toobig]
kernel = $COUNT
memory = 100T
net = nat=10.99.7.0/24
EOF
export VMMRC=$TMP/vmmrc
runner() { cat "$VMM_RUNTIME_DIR/$1.d/runner"; }
tap_of() { echo "vmm$(runner "$1")n0"; }

# Bridge: created for the first VM, both TAPs are its ports, it stays for the second.
rv start b1 >/dev/null && rv start b2 >/dev/null || fail bridge_vms_start "$(cat "$VMM_RUNTIME_DIR"/*.d/log 2>/dev/null | tail -5)"
t1=$(tap_of b1) t2=$(tap_of b2)
want=$(printf '%s\n' "$t1" "$t2" | sort | tr '\n' ' ')
if wait_for "[ \"\$(ports vmmbr0)\" = \"$want\" ]" && ip -n "$NS" link show vmmbr0 | grep -q "[<,]UP[,>]"; then
	ok bridge_created_with_both_taps
else
	fail bridge_created_with_both_taps "ports of vmmbr0: '$(ports vmmbr0)', want '$want'; links: $(links)"
fi
rv stop b1 >/dev/null
if [ "$(ports vmmbr0)" = "$t2 " ]; then ok bridge_stays_while_a_vm_uses_it
else fail bridge_stays_while_a_vm_uses_it "ports '$(ports vmmbr0)', links '$(links)'"; fi
rv stop b2 >/dev/null
nothing_left bridge_gone_after_last_vm

# A bridge of the user's own is used and stays.
ip -n "$NS" link add vmmown0 type bridge
rv start own >/dev/null
t=$(tap_of own)
wait_for "[ \"\$(ports vmmown0)\" = \"$t \" ]" && ok own_bridge_used || fail own_bridge_used "ports '$(ports vmmown0)'"
rv stop own >/dev/null
nothing_left own_bridge_left_alone "vmmown0 "
ip -n "$NS" link del vmmown0

# NAT: bridge with the gateway address, forwarding on, a masquerade table; all gone after the last.
br=vmmnat-0a630700
rv start n1 >/dev/null && rv start n2 >/dev/null || fail nat_vms_start "$(cat "$VMM_RUNTIME_DIR"/*.d/log 2>/dev/null | tail -5)"
t1=$(tap_of n1) t2=$(tap_of n2)
want=$(printf '%s\n' "$t1" "$t2" | sort | tr '\n' ' ')
rules=$(ip netns exec "$NS" nft list table ip "vmm-$br" 2>&1)
if wait_for "[ \"\$(ports $br)\" = \"$want\" ]" && ip -n "$NS" addr show "$br" | grep -q "inet 10.99.7.1/24" &&
	[ "$(forwarding)" = 1 ] && grep -q "ip saddr 10.99.7.0/24 ip daddr != 10.99.7.0/24 masquerade" <<<"$rules"; then
	ok nat_bridge_address_forwarding_masquerade
else
	fail nat_bridge_address_forwarding_masquerade "ports '$(ports "$br")' want '$want'; $(ip -n "$NS" -br addr show "$br"); ip_forward $(forwarding); $rules"
fi
# Traffic through the NAT: a stand-in guest (namespace G, a veth on the bridge, 10.99.7.50 with
# the gateway 10.99.7.1) pings a host in namespace O that has no route back to 10.99.7.0/24, so a
# reply comes only if runvmm's masquerading and forwarding work. (A veth and not a VM, because the
# count guest has no network stack; net_linux.sh sends Linux's traffic across a bridge.)
if command -v busybox >/dev/null && busybox ping -h 2>&1 | grep -q -- -W; then
	ip netns add "${NS}g" && ip netns add "${NS}o"
	ip -n "$NS" link add vmmvg type veth peer name eth0 netns "${NS}g"
	ip -n "$NS" link set vmmvg master "$br" up
	ip -n "${NS}g" link set eth0 up
	# DHCP first: runvmm's udhcpd leases an address of the subnet with the gateway as router
	printf '#!/bin/sh\n[ "$1" = bound ] && echo "$ip $router $subnet" >%s/lease\nexit 0\n' "$TMP" >"$TMP/dhcp.sh"
	chmod +x "$TMP/dhcp.sh"
	ip netns exec "${NS}g" busybox udhcpc -i eth0 -n -q -t 10 -T 2 -s "$TMP/dhcp.sh" >"$TMP/udhcpc" 2>&1
	if grep -Eq '^10\.99\.7\.([2-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-4]) 10\.99\.7\.1 255\.255\.255\.0$' "$TMP/lease" 2>/dev/null; then
		ok nat_dhcp_leases_an_address
	else
		fail nat_dhcp_leases_an_address "lease '$(cat "$TMP/lease" 2>/dev/null)': $(tail -3 "$TMP/udhcpc")"
	fi
	ip -n "${NS}g" addr add 10.99.7.50/24 dev eth0
	ip -n "${NS}g" route add default via 10.99.7.1
	ip -n "$NS" link add vmmvo type veth peer name eth0 netns "${NS}o"
	ip -n "$NS" addr add 192.0.2.2/24 dev vmmvo && ip -n "$NS" link set vmmvo up
	ip -n "${NS}o" addr add 192.0.2.1/24 dev eth0 && ip -n "${NS}o" link set eth0 up
	if ip netns exec "${NS}g" busybox ping -c 3 -W 5 192.0.2.1 >"$TMP/ping" 2>&1; then
		ok nat_masquerades_traffic
	else
		fail nat_masquerades_traffic "$(cat "$TMP/ping")"
	fi
	ip -n "$NS" link del vmmvg; ip -n "$NS" link del vmmvo
	ip netns del "${NS}g"; ip netns del "${NS}o"
else
	skip nat_masquerades_traffic "needs busybox ping"
fi

rv stop n1 >/dev/null
if [ "$(ports "$br")" = "$t2 " ] && [ -n "$(tables)" ] && [ "$(forwarding)" = 1 ]; then ok nat_stays_while_a_vm_uses_it
else fail nat_stays_while_a_vm_uses_it "ports '$(ports "$br")', tables '$(tables)'"; fi
rv stop n2 >/dev/null
nothing_left nat_gone_after_last_vm

# Other exit paths: SIGTERM to the supervising runvmm, SIGKILL to the monitor itself.
rv start n1 >/dev/null
wait_for "[ -n \"\$(ports $br)\" ]"
kill -TERM "$(runner n1)"
nothing_left nat_gone_after_sigterm_to_runvmm
rv start n1 >/dev/null
wait_for "[ -n \"\$(ports $br)\" ]"
kill -KILL "$(cat "$VMM_RUNTIME_DIR/n1.d/pid")"
nothing_left nat_gone_after_sigkill_to_vmm

# SIGINT to the monitor, a guest panic (the count guest panics on 'p'), a monitor error (more memory
# than the host has: the bridge and table are made, then undone when the monitor fails).
rv start n1 >/dev/null
wait_for "[ -n \"\$(ports $br)\" ]"
kill -INT "$(cat "$VMM_RUNTIME_DIR/n1.d/pid")"
nothing_left nat_gone_after_sigint_to_vmm
rv start n1 >/dev/null
wait_for "[ -n \"\$(ports $br)\" ]"
printf p | timeout 5 "$VMM" console n1 >/dev/null 2>&1
nothing_left nat_gone_after_guest_panic
rv start toobig >/dev/null 2>"$TMP/toobig.err"
rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$TMP/toobig.err")" -eq 1 ] &&
	grep -q "toobig did not start: vmm: .*more than the host" "$TMP/toobig.err" && ok monitor_error_reported || fail monitor_error_reported "status $rc: $(cat "$TMP/toobig.err")"
nothing_left nat_gone_after_monitor_error

# runvmm run (foreground): the count guest powers off on 'q' once its TAP is on the bridge.
(
	for _ in $(seq 100); do [ -n "$(ports vmmbr0)" ] && break; sleep 0.1; done
	ports vmmbr0 >"$TMP/run.ports"
	printf q
) | rv run b1 >"$TMP/run.out" 2>&1
rc=$?
if [ $rc -eq 0 ] && grep -q "^vmm.*n0 $" "$TMP/run.ports"; then ok run_attaches_tap
else fail run_attaches_tap "status $rc, ports '$(cat "$TMP/run.ports")': $(tail -3 "$TMP/run.out")"; fi
nothing_left run_leaves_nothing

# runvmm run, ended by SIGTERM to runvmm: it passes it on to the monitor and cleans up.
sleep 60 | ip netns exec "$NS" "$RUNVMM" run n1 >"$TMP/run2.out" 2>&1 &
wait_for "[ -n \"\$(ports $br)\" ]"
kill -TERM "$(runner n1)"
wait_for "[ -z \"\$(ls -A $VMM_RUNTIME_DIR)\" ]"
nothing_left run_sigterm_leaves_nothing
