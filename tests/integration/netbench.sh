#!/usr/bin/env bash
# The self-test guest's network bench mode (selftest.net=1, what bench/net-kvm runs) works on
# every backend here, over a TAP and over user-mode networking, with tiny counts: every phase
# passes and prints its line with sane values. Nothing is timed.
. "$(dirname "$0")/lib.sh"

NS=vmmnb$$
PEER=$ROOT/build/tests/netpeer
trap 'kill "$PEER_PID" 2>/dev/null; ip netns del "$NS" 2>/dev/null; rm -rf "$TMP"' EXIT
if ! ip netns add "$NS" 2>/dev/null; then
	skip netbench "cannot create a network namespace (needs root and iproute2)"
	exit 0
fi
ip -n "$NS" link set lo up
ip -n "$NS" tuntap add mode tap name nbtap0 && ip -n "$NS" addr add 10.78.0.1/24 dev nbtap0 &&
	ip -n "$NS" link set nbtap0 up || { fail netbench "cannot make a TAP in the namespace"; exit 0; }
mkdir -p "$(dirname "$PEER")"
${CC:-cc} -O2 -Wall -Wextra -Werror -std=gnu11 -o "$PEER" "$ROOT/bench/netpeer.c" || { fail netbench "bench/netpeer.c does not build"; exit 0; }
ip netns exec "$NS" "$PEER" 7788 600 >"$TMP/peer.log" &
PEER_PID=$!

FRAMES=300
ROUNDS=10
# check NAME LOG: every phase passed, and its line says what it should.
check() {
	local name=$1 log=$2 why=""
	for phase in init arp ping echo tx rx; do
		grep -aq "^selftest: ok - netbench-$phase\$" "$log" || why+="netbench-$phase did not pass; "
	done
	grep -aq '^selftest: [0-9]* passed, 0 failed' "$log" || why+="failures: $(grep -a FAIL "$log" | head -3); "
	for rtt in ping echo; do
		# rounds counted, none lost, a median between 0 and 1 s
		grep -aEq "^netbench: $rtt rounds=$ROUNDS lost=0 stray=[0-9]+ median_ns=[1-9][0-9]{0,8} " "$log" ||
			why+="bad $rtt line: $(grep -a "^netbench: $rtt " "$log"); "
	done
	# the host counted every frame the guest sent (no drops expected at this size)
	grep -aEq "^netbench: tx frames=$FRAMES bytes=$((FRAMES * 1472)) us=[0-9]+ fps=[1-9][0-9]* mbps=[0-9.]+ lost=0\$" "$log" ||
		why+="bad tx line: $(grep -a '^netbench: tx ' "$log"); "
	# some of the burst arrived (a burst may overrun the host's queues: loss is allowed)
	grep -aEq "^netbench: rx frames=[1-9][0-9]* bytes=[0-9]+ us=[0-9]+ fps=[1-9][0-9]* mbps=[0-9.]+ lost=[0-9]+\$" "$log" ||
		why+="bad rx line: $(grep -a '^netbench: rx ' "$log"); "
	if [ -z "$why" ]; then ok "$name"; else fail "$name" "$why"; fi
}

accels=(emu)
kvm_usable && accels+=(kvm)
for accel in "${accels[@]}"; do
	for mode in tap user; do
		if [ $mode = tap ]; then
			nic=tap=nbtap0 ip=10.78.0.2 peer=10.78.0.1
		else
			nic=user ip=10.0.2.15 peer=10.0.2.2
		fi
		log=$TMP/$accel-$mode.log
		timeout -s KILL 300 ip netns exec "$NS" "$VMM" run --accel "$accel" -m 64M -n "$nic" "$SELFTEST_BZ" \
			selftest.quick=1 selftest.net=1 selftest.net_ip=$ip selftest.net_peer=$peer \
			selftest.net_port=7788 selftest.net_frames=$FRAMES selftest.net_rounds=$ROUNDS \
			>"$log" 2>"$TMP/err" </dev/null
		check "netbench_${accel}_$mode" "$log"
	done
done
