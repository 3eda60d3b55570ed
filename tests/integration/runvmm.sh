#!/usr/bin/env bash
# runvmm with a test vmmrc (VMMRC, never the tester's ~/.vmmrc): bad definitions are one line
# naming file and line; two named VMs start in the background, are listed, one is paused and
# resumed (its console log stops and resumes while the other's goes on), the console attaches,
# both stop cleanly, and nothing is left behind.
. "$(dirname "$0")/lib.sh"
COUNT=$ROOT/build/tests/fixtures/count.bzImage
RUNVMM=$ROOT/tools/runvmm
export VMM_RUNTIME_DIR=$TMP/run VMMPATH=$ROOT
export HOME=$TMP/home # runvmm must not need (or touch) the tester's home
mkdir -p "$HOME"
require_kvm runvmm || exit 0

wait_for() { for _ in $(seq 100); do eval "$1" && return 0; sleep 0.1; done; return 1; }
lines() { local n; n=$(grep -c '^count: [0-9]' "$1" 2>/dev/null); echo "${n:-0}"; }

# bad NAME RC-TEXT PATTERN [COMMAND...]: runvmm fails with exactly one line matching PATTERN
bad() {
	local name=$1 text=$2 pattern=$3; shift 3
	printf '%s\n' "$text" >"$TMP/bad.rc"
	VMMRC=$TMP/bad.rc "$RUNVMM" "$@" >"$TMP/bad.out" 2>"$TMP/bad.err"
	local rc=$? n
	n=$(wc -l <"$TMP/bad.err")
	if [ $rc -ne 0 ] && [ "$n" -eq 1 ] && grep -q -- "$pattern" "$TMP/bad.err"; then ok "$name"; else fail "$name" "status $rc, $n lines: $(cat "$TMP/bad.err")"; fi
}
bad unknown_key "[a]
kernel = $COUNT
colour = red" "bad.rc:3: unknown key 'colour'" start a
bad missing_kernel "[a]
memory = 128M" "bad.rc:1: VM 'a' has no kernel" start a
bad duplicate_name "[a]
kernel = $COUNT
[a]
kernel = $COUNT" "bad.rc:3: VM 'a' is already defined at .*bad.rc:1" start a
bad kernel_not_found "[a]
kernel = nowhere/bzImage" "bad.rc:2: kernel .*nowhere/bzImage: no such readable file" start a
bad key_outside_section "kernel = $COUNT" "bad.rc:1: 'kernel' outside a \[NAME\] section" ls
bad garbage_line "[a]
this is not ini" "bad.rc:2: expected \[NAME\] or KEY = VALUE" ls
bad bad_memory "[a]
kernel = $COUNT
memory = lots" "bad.rc:3: memory = lots: not a size" start a
bad unknown_vm "[a]
kernel = $COUNT" "no VM named 'b'" start b

# Two VMs; relative paths are relative to the file.
mkdir -p "$TMP/conf"
ln -s "$COUNT" "$TMP/conf/count.bzImage"
cat >"$TMP/conf/vmmrc" <<EOF
# two small VMs that keep printing
[alpha]
kernel = count.bzImage
memory = 64M
cpus = 1

[beta]
kernel = $COUNT
memory = 128M
keep = no
EOF
export VMMRC=$TMP/conf/vmmrc
"$RUNVMM" start alpha >"$TMP/start.out" 2>&1 && "$RUNVMM" start beta >>"$TMP/start.out" 2>&1 &&
	ok start_two_vms || fail start_two_vms "$(cat "$TMP/start.out")"
A=$VMM_RUNTIME_DIR/alpha.d/log B=$VMM_RUNTIME_DIR/beta.d/log
wait_for "[ \$(lines $A) -gt 5 ] && [ \$(lines $B) -gt 5 ]" && ok both_consoles_logged || fail both_consoles_logged "$(ls -R "$VMM_RUNTIME_DIR")"
"$RUNVMM" start alpha >/dev/null 2>"$TMP/again.err"
[ $? -ne 0 ] && [ "$(wc -l <"$TMP/again.err")" -eq 1 ] && grep -q "vmmrc:2: VM 'alpha' is already running" "$TMP/again.err" && ok already_running_refused || fail already_running_refused "$(cat "$TMP/again.err")"
"$RUNVMM" ls >"$TMP/ls" 2>&1
grep -q "^alpha *Running" "$TMP/ls" && grep -q "^beta *Running" "$TMP/ls" && ok ls_shows_both || fail ls_shows_both "$(cat "$TMP/ls")"
"$VMM" ls >"$TMP/vls"
[ "$(grep -c Running "$TMP/vls")" -eq 2 ] && ok vmm_ls_shows_both || fail vmm_ls_shows_both "$(cat "$TMP/vls")"

"$RUNVMM" pause alpha
sleep 0.3
a1=$(lines "$A") b1=$(lines "$B")
sleep 1
a2=$(lines "$A") b2=$(lines "$B")
[ "$a1" -eq "$a2" ] && [ "$b2" -gt $((b1 + 10)) ] && ok paused_console_stops_other_goes_on || fail paused_console_stops_other_goes_on "alpha $a1→$a2, beta $b1→$b2"
"$RUNVMM" ls | grep -q "^alpha *Paused" && ok ls_shows_paused || fail ls_shows_paused "$("$RUNVMM" ls)"
"$RUNVMM" resume alpha
sleep 1
a3=$(lines "$A")
[ "$a3" -gt $((a2 + 10)) ] && ok resumed_console_goes_on || fail resumed_console_goes_on "alpha $a2→$a3"

# The console: attach (not a terminal here: it relays until the time limit), see the counter.
timeout 1 "$VMM" console alpha </dev/null >"$TMP/console.out" 2>&1
grep -aq "count: [0-9]" "$TMP/console.out" && ok console_attaches || fail console_attaches "$(head -c 200 "$TMP/console.out")"
"$RUNVMM" log beta | grep -q "count: " && ok log_shows_console || fail log_shows_console "$("$RUNVMM" log beta 2>&1 | head -3)"

"$RUNVMM" stop alpha >"$TMP/stop.out" 2>&1 && "$RUNVMM" stop beta >>"$TMP/stop.out" 2>&1 &&
	ok stop_both || fail stop_both "$(cat "$TMP/stop.out")"
left=$(ls -A "$VMM_RUNTIME_DIR")
[ -z "$left" ] && ok nothing_left_behind || fail nothing_left_behind "$left"
pgrep -f "$TMP/conf/vmmrc" >/dev/null && fail no_processes_left "$(pgrep -af "$TMP/conf")" || ok no_processes_left

# keep: -k leaves the state directory and its log after the VM ends.
"$RUNVMM" -k start beta >/dev/null 2>&1
wait_for "[ \$(lines $B) -gt 2 ]"
"$RUNVMM" stop beta >/dev/null 2>&1
if [ -f "$B" ] && grep -q "beta exited with status 0" "$B"; then ok keep_leaves_log; else fail keep_leaves_log "$(ls -R "$VMM_RUNTIME_DIR")"; fi
rm -rf "$VMM_RUNTIME_DIR/beta.d"

# A VM killed by a signal to its supervisor is cleaned up as well.
"$RUNVMM" start alpha >/dev/null 2>&1
wait_for "[ \$(lines $A) -gt 2 ]"
"$RUNVMM" kill alpha >/dev/null 2>&1
wait_for "[ -z \"\$(ls -A $VMM_RUNTIME_DIR)\" ]" && ok kill_cleans_up || fail kill_cleans_up "$(ls -A "$VMM_RUNTIME_DIR")"

# run: in the foreground, the exit status is the VM's.
printf q | "$RUNVMM" run beta >"$TMP/run.out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q "count: ready" "$TMP/run.out" && [ -z "$(ls -A "$VMM_RUNTIME_DIR")" ] && ok run_in_foreground || fail run_in_foreground "status $rc: $(tail -3 "$TMP/run.out")"
