#!/usr/bin/env bash
# Networking (issue 5): TAP devices created, named, brought up and removed by the monitor (normal
# exit, SIGTERM), kept with -k, existing TAPs left alone, simeth=, user-mode networking's port
# forwarding, one clear line for bad input; and, where a backend can run Linux, a Linux guest
# that pings and fetches over a TAP, across a bridge, and through user-mode networking.
# Everything happens in network namespaces this script creates; no other address is used.
. "$(dirname "$0")/lib.sh"

KERNEL=$SELFTEST_BZ
ECHO=$ROOT/build/tests/fixtures/echo.bzImage
NS=vmmnet$$
cleanup_ns() { ip netns del "$NS" 2>/dev/null; ip netns del "${NS}b" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup_ns EXIT

VMM_PREFIX=(ip netns exec "$NS") # every vmm of this test runs in its namespace

# Options are checked before anything else: no namespace or KVM needed.
if ip netns add "$NS" 2>/dev/null; then
	ip -n "$NS" link set lo up
else
	skip net_host_side "cannot create a network namespace (needs root and iproute2)"
	exit 0
fi
expect_error net_malformed_mac 2 "is not a MAC address" -n tap,mac=52:54:00:zz:00:01 "$KERNEL"
expect_error net_multicast_mac 2 "is a multicast address" -n tap,mac=01:00:5e:00:00:01 "$KERNEL"
expect_error net_bad_queue_count 2 "not a queue count" -n tap,queues=0 "$KERNEL"
expect_error net_unknown_type 2 "unknown network type" -n bridge "$KERNEL"
expect_error net_bad_hostfwd 2 "not a forwarding rule" -n user,hostfwd=tcp:99999-:80 "$KERNEL"
expect_error net_bad_user_mtu 2 "mtu=65536 is not an MTU (use 68 to 65520 bytes)" -n user,mtu=65536 "$KERNEL"

require_kvm net_tap_lifecycle || exit 0

expect_error net_ifname_exists_not_a_tap 1 "lo exists and is not a TAP device" -n tap=lo "$KERNEL"
ip -n "$NS" link add vmmveth0 type veth peer name vmmveth1
expect_error net_veth_is_not_a_tap 1 "vmmveth0 exists and is not a TAP device but veth" -n tap=vmmveth0 "$KERNEL"
ip -n "$NS" tuntap add mode tun name vmmtun0
expect_error net_tun_is_not_a_tap 1 "not a TAP device but a TUN" -n tap=vmmtun0 "$KERNEL"

# No permission for /dev/net/tun: a mode-000 node over it, and root without CAP_DAC_OVERRIDE.
if command -v setpriv >/dev/null && command -v unshare >/dev/null && mknod "$TMP/tun" c 10 200 2>/dev/null; then
	chmod 000 "$TMP/tun"
	timeout -s KILL 60 unshare -m bash -c "mount --bind '$TMP/tun' /dev/net/tun && exec ip netns exec '$NS' setpriv --bounding-set=-dac_override,-dac_read_search '$VMM' -n tap '$KERNEL'" \
		>"$TMP/out" 2>"$TMP/err" </dev/null
	RC=$?
	if [ "$RC" -eq 1 ] && [ "$(grep -vc '^vmm: accel:' "$TMP/err")" -eq 1 ] &&
		grep -q "/dev/net/tun: Permission denied (run as root" "$TMP/err"; then
		ok net_no_permission_for_dev_net_tun
	else
		fail net_no_permission_for_dev_net_tun "status $RC: $(cat "$TMP/err")"
	fi
else
	skip net_no_permission_for_dev_net_tun "needs setpriv, unshare and mknod"
fi

# run_bg ARGS...: vmm with the echo guest in the netns, running until killed; sets PID.
run_bg() {
	sleep 30 | ip netns exec "$NS" "$VMM" "$@" "$ECHO" >"$TMP/bg.out" 2>"$TMP/bg.err" &
	PID=$!
}
wait_link() { # name: up to 5 s for it to appear
	for _ in $(seq 50); do ip -n "$NS" link show "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}
gone_link() {
	for _ in $(seq 50); do ip -n "$NS" link show "$1" >/dev/null 2>&1 || return 0; sleep 0.1; done
	return 1
}

# start_vm ARGS...: vmm with the echo guest in the netns, its console input on a fifo (CON) so the
# test can make the guest power off ('q'); sets PID.
start_vm() {
	rm -f "$TMP/con" && mkfifo "$TMP/con"
	ip netns exec "$NS" "$VMM" "$@" "$ECHO" <"$TMP/con" >"$TMP/bg.out" 2>"$TMP/bg.err" &
	PID=$!
	exec {CON}>"$TMP/con"
}

# TAPs made by the monitor are named after the VM: vmm-PID-INDEX without --name, NAME-INDEX with it.
run_bg -n tap -n tap
name="vmm-$PID-0"
if wait_link "$name" && ip -n "$NS" -d link show "$name" | grep -q "tun type tap.*vnet_hdr on" &&
	ip -n "$NS" link show "$name" | grep -q "[<,]UP[,>]" && wait_link "vmm-$PID-1"; then
	created=yes
	ok net_tap_created_named_after_the_vm_and_up
else
	created=no
	fail net_tap_created_named_after_the_vm_and_up "no $name: $(ip -n "$NS" -br link; cat "$TMP/bg.err")"
fi
kill -TERM "$PID"
wait "$PID" 2>/dev/null
if [ $created = yes ] && gone_link "$name" && gone_link "vmm-$PID-1"; then ok net_tap_removed_after_sigterm
else fail net_tap_removed_after_sigterm "created: $created; $name still exists or was never made"; fi

# A normal exit: the guest powers off through ACPI, the monitor exits 0, the TAP goes with it.
vm=nt$$
start_vm --name "$vm" -n tap
created=no
wait_link "$vm-0" && created=yes
printf q >&"$CON"
exec {CON}>&-
wait "$PID"
RC=$?
if [ $created = yes ] && [ $RC -eq 0 ] && gone_link "$vm-0"; then
	ok net_tap_named_after_vm_name_removed_at_normal_exit
else
	fail net_tap_named_after_vm_name_removed_at_normal_exit "created: $created, status $RC: $(ip -n "$NS" -br link; cat "$TMP/bg.err")"
fi

# -k keeps it (persistent), and a later monitor uses it as an existing TAP.
# After SIGTERM and after a normal exit.
run_bg -k -n tap=vmmkeep0
wait_link vmmkeep0
kill -TERM "$PID"; wait "$PID" 2>/dev/null
sleep 0.3
start_vm -k --name "$vm" -n tap
wait_link "$vm-0"
printf q >&"$CON"
exec {CON}>&-
wait "$PID"
RC=$?
sleep 0.3
if ip -n "$NS" -d link show vmmkeep0 2>/dev/null | grep -q "persist on" && [ $RC -eq 0 ] &&
	ip -n "$NS" -d link show "$vm-0" 2>/dev/null | grep -q "persist on"; then
	ok net_tap_kept_with_k
else
	fail net_tap_kept_with_k "vmmkeep0 or $vm-0 is gone or not persistent (status $RC): $(ip -n "$NS" -br link)"
fi
ip -n "$NS" link del vmmkeep0 2>/dev/null
ip -n "$NS" link del "$vm-0" 2>/dev/null

# An existing TAP is used as it is: not brought up, not deleted, and simeth= means the same.
ip -n "$NS" tuntap add mode tap name vmmold0
run_bg -n tap=vmmold0,mac=52:54:00:12:34:56
sleep 1
state=$(ip -n "$NS" link show vmmold0)
kill -TERM "$PID"; wait "$PID" 2>/dev/null
sleep 0.3
if ip -n "$NS" link show vmmold0 >/dev/null 2>&1 && ! echo "$state" | grep -q "[<,]UP[,>]" &&
	! grep -q "vmm:.*vmmold0" "$TMP/bg.err"; then
	ok net_existing_tap_used_and_left_alone
else
	fail net_existing_tap_used_and_left_alone "state: $state; $(cat "$TMP/bg.err")"
fi
timeout -s KILL 60 ip netns exec "$NS" "$VMM" "$KERNEL" simeth=vmmold0 >"$TMP/out" 2>"$TMP/err" </dev/null
RC=$?
if [ "$RC" -eq 0 ] && ! grep -q simeth "$TMP/out" && ip -n "$NS" link show vmmold0 >/dev/null 2>&1; then
	ok net_simeth_attaches_the_tap_and_is_not_passed_to_the_guest
else
	fail net_simeth_attaches_the_tap_and_is_not_passed_to_the_guest "status $RC: $(tail -c 300 "$TMP/err")"
fi

# User-mode networking: the forwarded host port listens while the VM runs; a taken port is refused.
if "$VMM" -n user "$KERNEL" 2>&1 </dev/null | grep -q "not built into this vmm"; then
	skip net_user_hostfwd_listens "user-mode networking not built in (libslirp-dev missing)"
else
	run_bg -n user,hostfwd=tcp::18080-:80
	listening=no
	for _ in $(seq 30); do
		ip netns exec "$NS" ss -ltn 2>/dev/null | grep -q "127.0.0.1:18080" && { listening=yes; break; }
		sleep 0.1
	done
	# A client connecting does not upset the monitor (nothing answers in this guest).
	ip netns exec "$NS" bash -c 'exec 3<>/dev/tcp/127.0.0.1/18080; exec 3>&-' 2>/dev/null
	sleep 0.3
	alive=$(kill -0 "$PID" 2>/dev/null && echo yes)
	expect_error net_user_hostfwd_port_taken 1 "cannot listen there" -n user,hostfwd=tcp::18080-:80 "$KERNEL"
	kill -TERM "$PID"; wait "$PID" 2>/dev/null
	if [ "$listening" = yes ] && [ "$alive" = yes ]; then ok net_user_hostfwd_listens
	else fail net_user_hostfwd_listens "listening=$listening alive=$alive: $(cat "$TMP/bg.err")"; fi
fi
