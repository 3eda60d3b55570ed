#!/usr/bin/env bash
# The control socket: Firecracker's getting-started sequence with curl boots the self-test guest;
# pause/resume stop and restart a guest that keeps printing; vmm ls/status/stop/kill; stale
# sockets; malformed requests; and clean-up (socket gone) on every way the monitor ends.
. "$(dirname "$0")/lib.sh"
COUNT=$ROOT/build/tests/fixtures/count.bzImage
export VMM_RUNTIME_DIR=$TMP/run # never the tester's own /run/vmm
mkdir -p "$VMM_RUNTIME_DIR"
command -v curl >/dev/null || { skip api "no curl"; exit 0; }
require_kvm api || exit 0

# api SOCK METHOD PATH [BODY]: prints the status code, the body goes to $TMP/body
api() {
	local sock=$1 method=$2 path=$3 body=${4:-}
	if [ -n "$body" ]; then
		curl -s -o "$TMP/body" -w '%{http_code}' --unix-socket "$sock" -X "$method" \
			-H 'Accept: application/json' -H 'Content-Type: application/json' \
			"http://localhost$path" -d "$body"
	else
		curl -s -o "$TMP/body" -w '%{http_code}' --unix-socket "$sock" -X "$method" "http://localhost$path"
	fi
}
wait_for() { # CONDITION-COMMAND: up to 10 s
	for _ in $(seq 100); do eval "$1" && return 0; sleep 0.1; done
	return 1
}
lines() { local n; n=$(grep -c '^count: [0-9]' "$1" 2>/dev/null); echo "${n:-0}"; }

# --- Firecracker's getting-started sequence, with a drive, boots the self-test guest ---
S=$TMP/fc.sock
truncate -s 1M "$TMP/rootfs.img"
timeout -s KILL 60 "$VMM" --api-sock "$S" >"$TMP/fc.out" 2>"$TMP/fc.err" </dev/null &
pid=$!
wait_for "[ -S $S ]" || fail fc_socket_appears "no socket after 10 s: $(cat "$TMP/fc.err")"
mode=$(stat -c %a "$S")
[ "$mode" = 600 ] && ok socket_mode_0600 || fail socket_mode_0600 "mode $mode"
c0=$(api "$S" GET /)
grep -q '"state":"Not started"' "$TMP/body" && [ "$c0" = 200 ] && ok get_root_not_started || fail get_root_not_started "$c0 $(cat "$TMP/body")"
c1=$(api "$S" PUT /boot-source "{\"kernel_image_path\": \"$SELFTEST_BZ\", \"boot_args\": \"selftest.quick=1 selftest.cpus=2 selftest.mem=256M\"}")
c2=$(api "$S" PUT /drives/rootfs "{\"drive_id\": \"rootfs\", \"path_on_host\": \"$TMP/rootfs.img\", \"is_root_device\": true, \"is_read_only\": false}")
c3=$(api "$S" PUT /machine-config '{"vcpu_count": 2, "mem_size_mib": 256}')
c4=$(api "$S" GET /machine-config)
grep -q '"vcpu_count":2' "$TMP/body" && grep -q '"mem_size_mib":256' "$TMP/body" && ok get_machine_config || fail get_machine_config "$(cat "$TMP/body")"
c5=$(api "$S" PUT /actions '{"action_type": "InstanceStart"}')
wait $pid
rc=$?
if [ "$c1$c2$c3$c4$c5" = 204204204200204 ] && [ $rc -eq 0 ] &&
	grep -aq '^selftest: [1-9][0-9]* passed, 0 failed' "$TMP/fc.out"; then
	ok firecracker_sequence_boots_selftest
else
	fail firecracker_sequence_boots_selftest "codes $c1 $c2 $c3 $c4 $c5, status $rc: $(grep -a 'FAIL\|passed' "$TMP/fc.out" | head -3) $(tail -c 300 "$TMP/fc.err")"
fi
[ ! -e "$S" ] && ok socket_removed_after_poweroff || fail socket_removed_after_poweroff "$S is still there"

# --- bad requests get their 4xx and leave the monitor serving ---
S=$TMP/bad.sock
"$VMM" --api-sock "$S" >/dev/null 2>"$TMP/bad.err" </dev/null &
pid=$!
wait_for "[ -S $S ]"
check_code() { # name want got
	if [ "$2" = "$3" ] && grep -q fault_message "$TMP/body"; then ok "$1"; else fail "$1" "status $3, expected $2: $(cat "$TMP/body")"; fi
}
check_code unknown_field_400 400 "$(api "$S" PUT /machine-config '{"vcpu_count": 1, "mem_size_mib": 128, "colour": "red"}')"
check_code bad_json_400 400 "$(api "$S" PUT /machine-config '{"vcpu_count": 1,')"
check_code wrong_type_400 400 "$(api "$S" PUT /machine-config '{"vcpu_count": "two", "mem_size_mib": 128}')"
check_code missing_kernel_400 400 "$(api "$S" PUT /boot-source '{"kernel_image_path": "/nonexistent/bzImage"}')"
check_code start_unconfigured_400 400 "$(api "$S" PUT /actions '{"action_type": "InstanceStart"}')"
check_code pause_before_start_400 400 "$(api "$S" PATCH /vm '{"state": "Paused"}')"
check_code unknown_path_400 400 "$(api "$S" GET /nowhere)"
check_code network_bad_mac_400 400 "$(api "$S" PUT /network-interfaces/eth0 '{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "nonsense"}')"
c=$(api "$S" PUT /network-interfaces/eth0 '{"iface_id": "eth0", "host_dev_name": "vmmapi0", "guest_mac": "06:00:ac:10:00:02"}')
[ "$c" = 204 ] && ok network_interface_accepted || fail network_interface_accepted "$c $(cat "$TMP/body")"
head -c 60000 /dev/zero | tr '\0' ' ' >"$TMP/big"
check_code oversized_body_413 413 "$(curl -s -o "$TMP/body" -w '%{http_code}' --unix-socket "$S" -X PUT http://localhost/boot-source -H 'Expect:' --data-binary @"$TMP/big")"
# bare LF line endings, sent raw
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"GET / HTTP/1.1\nHost: x\n\n"); print(s.recv(200).decode())' "$S" >"$TMP/raw" 2>&1
grep -q '^HTTP/1.1 400' "$TMP/raw" && ok bare_lf_request_400 || fail bare_lf_request_400 "$(head -1 "$TMP/raw")"
c=$(api "$S" GET /)
[ "$c" = 200 ] && kill -0 $pid && ok monitor_survives_bad_requests || fail monitor_survives_bad_requests "GET / gives $c"
# a second monitor on a live socket is refused
"$VMM" --api-sock "$S" >/dev/null 2>"$TMP/second.err" </dev/null
rc=$?
[ $rc -eq 1 ] && grep -q "another vmm is serving it" "$TMP/second.err" && ok live_socket_refused || fail live_socket_refused "status $rc: $(cat "$TMP/second.err")"
kill -TERM $pid
wait $pid
rc=$?
[ $rc -eq 143 ] && [ ! -e "$S" ] && ok sigterm_while_waiting_cleans_up || fail sigterm_while_waiting_cleans_up "status $rc, socket $(ls "$S" 2>&1)"

# --- a named VM that keeps printing: pause, resume, status, ls, stop ---
"$VMM" --name counter --accel kvm "$COUNT" >"$TMP/count.out" 2>"$TMP/count.err" </dev/null &
pid=$!
S=$VMM_RUNTIME_DIR/counter.sock
wait_for "[ -S $S ] && [ \$(lines $TMP/count.out) -gt 5 ]" || fail counter_runs "$(cat "$TMP/count.err")"
"$VMM" status counter >"$TMP/status" 2>&1 && grep -q "counter: Running" "$TMP/status" && ok status_running || fail status_running "$(cat "$TMP/status")"
t0=$(date +%s%N)
"$VMM" pause counter
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
[ $ms -lt 1000 ] && ok "pause_takes_${ms}ms" || fail pause_is_fast "${ms} ms"
"$VMM" status counter | grep -q "Paused" && ok status_paused || fail status_paused "$("$VMM" status counter 2>&1)"
sleep 0.3
n1=$(lines "$TMP/count.out")
sleep 1
n2=$(lines "$TMP/count.out")
[ "$n1" -eq "$n2" ] && ok console_stops_while_paused || fail console_stops_while_paused "$n1 then $n2 lines"
"$VMM" ls >"$TMP/ls" && grep -q "^counter *Paused" "$TMP/ls" && ok ls_lists_paused_vm || fail ls_lists_paused_vm "$(cat "$TMP/ls")"
"$VMM" ls --json | jq -e '.[] | select(.name == "counter" and .state == "Paused")' >/dev/null 2>&1 &&
	ok ls_json || fail ls_json "$("$VMM" ls --json)"
c=$(api "$S" PATCH /vm '{"state": "Resumed"}')
sleep 1
n3=$(lines "$TMP/count.out")
[ "$c" = 204 ] && [ "$n3" -gt $((n2 + 10)) ] && ok console_resumes || fail console_resumes "status $c; $n2 then $n3 lines"
c=$(api "$S" GET /vmm/stats)
jq -e '.vcpus[0].exits > 0' "$TMP/body" >/dev/null 2>&1 && ok stats_count_exits || fail stats_count_exits "$c $(cat "$TMP/body")"
"$VMM" stop counter
wait $pid
rc=$?
[ $rc -eq 0 ] && [ ! -e "$S" ] && ok stop_presses_power_button_and_cleans_up || fail stop_presses_power_button_and_cleans_up "status $rc: $(tail -c 300 "$TMP/count.err")"

# --- stale sockets: a SIGKILLed monitor's socket is removed by ls, never listed ---
"$VMM" --name stale "$COUNT" >/dev/null 2>&1 </dev/null &
pid=$!
wait_for "[ -S $VMM_RUNTIME_DIR/stale.sock ]"
kill -KILL $pid
wait $pid 2>/dev/null
"$VMM" ls >"$TMP/ls"
if ! grep -q stale "$TMP/ls" && [ ! -e "$VMM_RUNTIME_DIR/stale.sock" ]; then ok stale_socket_removed_not_listed; else fail stale_socket_removed_not_listed "$(cat "$TMP/ls"; ls "$VMM_RUNTIME_DIR")"; fi
"$VMM" status stale >/dev/null 2>"$TMP/st.err"
[ $? -eq 1 ] && grep -q "no such VM running" "$TMP/st.err" && ok status_of_missing_vm || fail status_of_missing_vm "$(cat "$TMP/st.err")"
# a stale socket of a dead monitor does not stop a new one of the same name
"$VMM" --name stale "$COUNT" >/dev/null 2>&1 </dev/null &
pid=$!
wait_for "[ -S $VMM_RUNTIME_DIR/stale.sock ]"
kill -KILL $pid
wait $pid 2>/dev/null
"$VMM" --name stale "$COUNT" >/dev/null 2>"$TMP/reuse.err" </dev/null &
pid=$!
wait_for "\"$VMM\" status stale >/dev/null 2>&1" && ok stale_socket_replaced || fail stale_socket_replaced "$(cat "$TMP/reuse.err")"
"$VMM" kill stale
wait $pid
rc=$?
[ $rc -eq 8 ] && [ ! -e "$VMM_RUNTIME_DIR/stale.sock" ] && ok kill_exits_8_and_cleans_up || fail kill_exits_8_and_cleans_up "status $rc"

# --- clean-up on every exit path: nothing left in the runtime directory ---
exit_path() { # name want-status how (sigint|sigterm|panic|error|poweroff)
	local name=$1 want=$2 how=$3 log=$TMP/$1
	mkfifo "$log.in"
	local kernel=$COUNT
	[ "$how" = error ] && kernel=$TMP/rootfs.img # not a kernel: the monitor fails
	"$VMM" --name "$name" --console-log "$log.console" "$kernel" <"$log.in" >"$log.out" 2>"$log.err" &
	local pid=$!
	exec 9>"$log.in"
	if [ "$how" != error ]; then wait_for "[ \$(lines $log.console) -gt 2 ]"; fi
	case $how in
	sigint) kill -INT $pid ;;
	sigterm) kill -TERM $pid ;;
	panic) printf p >&9 ;;
	poweroff) printf q >&9 ;;
	esac
	wait $pid
	local rc=$?
	exec 9>&-
	local left
	left=$(ls -A "$VMM_RUNTIME_DIR")
	if [ $rc -eq "$want" ] && [ -z "$left" ]; then ok "cleanup_after_$name"; else fail "cleanup_after_$name" "status $rc (want $want), left: $left; $(tail -c 200 "$log.err")"; fi
}
exit_path poweroff 0 poweroff
exit_path sigint 130 sigint
exit_path sigterm 143 sigterm
exit_path panic 4 panic
exit_path error 1 error
[ -z "$(ls -A "$VMM_RUNTIME_DIR")" ] && ok nothing_left_behind || fail nothing_left_behind "$(ls -A "$VMM_RUNTIME_DIR")"
