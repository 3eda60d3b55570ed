#!/usr/bin/env bash
# -t/--trace, --trace-file, --stats and the debug port on a self-test boot (with a disk, so the
# PCI, virtio and block paths run): every category yields its lines, the counts add up.
. "$(dirname "$0")/lib.sh"
require_kvm trace || exit 0

truncate -s 1M "$TMP/disk.img"
run_vmm "$TMP/all.out" "$TMP/all.err" --accel kvm -m 64M -t all --trace-file "$TMP/trace" --stats \
	-d "$TMP/disk.img" "$SELFTEST_BZ" selftest.quick=1 selftest.virtio=1
if [ "$RC" -ne 0 ] || ! grep -aq '^selftest: [1-9][0-9]* passed, 0 failed' "$TMP/all.out"; then
	fail trace_all_boot "status $RC: $(tail -c 300 "$TMP/all.err")"
else
	ok trace_all_boot
fi

# category NAME REGEX [TEST]: at least one line of that category matching REGEX.
category() {
	local n name=${3:-trace_$1_lines}
	n=$(grep -Ec "^ *[0-9]+\.[0-9]{9} (vcpu[0-9]+|host) +$1 +$2" "$TMP/trace")
	if [ "$n" -gt 0 ]; then ok "$name"; else fail "$name" "no '$1' line matching '$2'"; fi
}
category boot 'creating the VM: 1 vCPUs, 64 MiB, backend kvm'
category boot 'debug port mark [0-9.]+ "selftest: checks done"' trace_boot_debug_port_marks
category exit 'io rip 0x[0-9a-f]+ port 0x3f8'
category pio 'out port 0x3f8 size 1 value 0x[0-9a-f]+ serial'
category pio 'in port 0x608 size 4 value 0x[0-9a-f]+ acpi-pm-timer' trace_pio_reads_have_values
category mmio '(read|write) gpa 0xe0000000 size [124] value 0x[0-9a-f]+ pci-ecam'
category pci 'config read 00:00.0 reg 0x000 size 2 value 0x1b36'
category virtio 'virtio-blk0 queue 0: notified'
category irq '(gsi 4 raise|msi address 0xfee)'
category blk 'virtio-blk0 (read|write) sector [0-9]+ bytes [0-9]+'
# The trace went to the file only: stderr holds the stats, not trace lines.
if grep -Eq '^ *[0-9]+\.[0-9]{9} (vcpu|host)' "$TMP/all.err"; then
	fail trace_file_only "trace lines on stderr despite --trace-file"
else
	ok trace_file_only
fi
# Timestamps never go backwards within one thread.
if awk '{ if ($1 < last[$2]) bad = 1; last[$2] = $1 } END { exit bad }' "$TMP/trace"; then
	ok trace_monotonic_per_thread
else
	fail trace_monotonic_per_thread "a timestamp went backwards"
fi

# Only the asked categories; default is no trace at all.
run_vmm "$TMP/pio.out" "$TMP/pio.err" --accel kvm -m 64M -t pio "$SELFTEST_BZ" selftest.quick=1
others=$(grep -E '^ *[0-9]+\.[0-9]{9} ' "$TMP/pio.err" | awk '$3 != "pio"' | head -1)
if [ "$RC" -eq 0 ] && grep -Eq ' pio +out port 0x3f8' "$TMP/pio.err" && [ -z "$others" ]; then
	ok trace_only_selected_category_to_stderr
else
	fail trace_only_selected_category_to_stderr "status $RC; stray: $others"
fi
run_vmm "$TMP/none.out" "$TMP/none.err" --accel kvm -m 64M "$SELFTEST_BZ" selftest.quick=1
if grep -Eq '^ *[0-9]+\.[0-9]{9} ' "$TMP/none.err"; then fail trace_off_by_default "trace lines without -t"; else ok trace_off_by_default; fi

# --stats: serial-port exits after the console lines, exits consistent with the per-range counts.
st=$TMP/all.err
serial=$(awk '/^  0x3f8-0x3ff +serial/ { gsub(",", ""); print $4 + $6 }' "$st")
io_exits=$(grep '^vcpu0: exits' "$st" | grep -o '[( ]io [0-9]*' | awk '{ print $2 }')
pio_sum=$(awk '/^pio ranges/ { on = 1; next } /^mmio ranges/ { on = 0 } on { gsub(",", ""); for (i = 1; i <= NF; i++) if ($i == "reads" || $i == "writes") s += $(i + 1) } END { print s + 0 }' "$st")
if [ "${serial:-0}" -gt 0 ] && [ -n "$io_exits" ] && [ "$io_exits" -gt 0 ]; then
	ok stats_serial_exits_counted
else
	fail stats_serial_exits_counted "serial accesses '${serial:-}', io exits '${io_exits:-}'"
fi
# Each port exit is one access, claimed or not, except string I/O: the self-test's string-io
# check moves 94 items with 8 instructions, which KVM may report several items to an exit.
if [ -n "$io_exits" ] && [ "$pio_sum" -ge "$io_exits" ] && [ $((pio_sum - io_exits)) -le 86 ]; then
	ok stats_pio_ranges_add_up_to_io_exits
else
	fail stats_pio_ranges_add_up_to_io_exits "ranges $pio_sum, io exits ${io_exits:-none}"
fi
grep -Eq '^vcpu0: .* in guest [0-9.]+ s \([0-9.]+%\), in monitor [0-9.]+ s' "$st" && ok stats_time_split || fail stats_time_split "$(grep '^vcpu0' "$st")"
grep -Eq '^interrupts injected:.* msi [1-9]' "$st" && ok stats_msis_counted || fail stats_msis_counted "$(grep '^interrupts' "$st")"
grep -Eq '^    /.*disk.img: reads [0-9]+ \([0-9]+ bytes\), writes [0-9]+ \([0-9]+ bytes\), flushes [1-9]' "$st" && ok stats_disk_counters || fail stats_disk_counters "$(grep -A3 '^devices' "$st")"
# Boot marks from the debug port, in order, with times.
if grep -Eq '^ +[0-9]+\.[0-9]{6} +\+[0-9]+\.[0-9]{6} +selftest: entered' "$st" &&
	grep -A2 'selftest: entered' "$st" | tail -1 | grep -q 'selftest: checks done'; then
	ok stats_boot_marks
else
	fail stats_boot_marks "$(grep -A4 '^boot marks' "$st")"
fi

run_vmm "$TMP/bad.out" "$TMP/bad.err" -t nonsense "$SELFTEST_BZ"
[ "$RC" -eq 2 ] && grep -q "unknown category 'nonsense'" "$TMP/bad.err" && ok trace_bad_category_is_usage_error || fail trace_bad_category_is_usage_error "status $RC: $(cat "$TMP/bad.err")"
run_vmm "$TMP/bad.out" "$TMP/bad.err" -t pio --trace-file /nonexistent/dir/t "$SELFTEST_BZ"
[ "$RC" -eq 1 ] && grep -q "trace-file" "$TMP/bad.err" && ok trace_file_unwritable_is_error || fail trace_file_unwritable_is_error "status $RC: $(cat "$TMP/bad.err")"
