#!/usr/bin/env bash
# `vmm stat NAME`: the statistics of a running VM, live through its control socket, consistent
# with what the guest did (a guest that prints has serial-port exits), and --watch refreshing.
. "$(dirname "$0")/lib.sh"
export VMM_RUNTIME_DIR=$TMP/run
mkdir -p "$VMM_RUNTIME_DIR"
COUNT=$ROOT/build/tests/fixtures/count.bzImage
name=stat$$
# The console's input stays open (a sleep) while the VM runs; the sleep is ended with the VM, or
# waiting for the VM would wait for it too (a minute).
(echo $BASHPID >"$TMP/feeder.pid"; exec sleep 60) | "$VMM" --name "$name" "$COUNT" >"$TMP/console" 2>"$TMP/err" &
pid=$!
for _ in $(seq 100); do [ -s "$TMP/console" ] && break; sleep 0.1; done
"$VMM" stat "$name" >"$TMP/stat1"
rc=$?
serial=$(awk '/ serial /{for (i=1;i<=NF;i++) if ($i=="writes") {gsub(",","",$(i+1)); print $(i+1)}}' "$TMP/stat1")
if [ $rc -eq 0 ] && grep -q '^vmm statistics:' "$TMP/stat1" && grep -q '^vcpu0: exits [1-9]' "$TMP/stat1"; then
	ok stat_reports_a_running_vm
else
	fail stat_reports_a_running_vm "status $rc: $(head -5 "$TMP/stat1")"
fi
if [ "${serial:-0}" -gt 0 ]; then ok stat_counts_serial_writes_of_a_printing_guest; else fail stat_counts_serial_writes_of_a_printing_guest "serial writes '${serial}'"; fi
timeout 5 "$VMM" stat --watch 1 "$name" >"$TMP/watch"
n=$(grep -c '^vmm statistics:' "$TMP/watch")
if [ "$n" -ge 3 ]; then ok stat_watch_refreshes; else fail stat_watch_refreshes "$n reports in 5 s"; fi
"$VMM" kill "$name" >/dev/null 2>&1
kill "$(cat "$TMP/feeder.pid")" 2>/dev/null
wait $pid
"$VMM" stat "$name" >/dev/null 2>"$TMP/gone"
rc=$?
if [ $rc -ne 0 ] && grep -q "no such VM running" "$TMP/gone"; then ok stat_of_a_gone_vm_says_so; else fail stat_of_a_gone_vm_says_so "status $rc: $(cat "$TMP/gone")"; fi
# On the software CPU, `vmm stat` counts the guest's #UD for instructions not implemented while
# it runs (the echo fixture's 'u' runs VZEROUPPER twice).
if "$VMM" --version 2>/dev/null | grep -q 'emu'; then
	name=statemu$$
	(echo $BASHPID >"$TMP/feeder-emu.pid"; printf u; exec sleep 60) |
		"$VMM" --name "$name" --accel emu "$ROOT/build/tests/fixtures/echo.bzImage" >"$TMP/console-emu" 2>"$TMP/err-emu" &
	pid=$!
	for _ in $(seq 300); do grep -aq "ud: 2" "$TMP/console-emu" && break; sleep 0.1; done
	"$VMM" stat "$name" >"$TMP/stat-emu"
	if grep -q '^software CPU: #UD for instructions not implemented (or invalid) 2$' "$TMP/stat-emu"; then
		ok stat_counts_ud_on_the_software_cpu
	else
		fail stat_counts_ud_on_the_software_cpu "$(grep -a 'software CPU' "$TMP/stat-emu" || tail -c 300 "$TMP/console-emu")"
	fi
	"$VMM" kill "$name" >/dev/null 2>&1
	kill "$(cat "$TMP/feeder-emu.pid")" 2>/dev/null
	wait $pid || true # killed: its status is not what this checks
else
	skip stat_counts_ud_on_the_software_cpu "this vmm is built without the software CPU"
fi
