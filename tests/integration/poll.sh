#!/usr/bin/env bash
# --poll-max-us on the software CPU: the self-test guest with a virtio disk (its checks halt for
# the LAPIC timer and wait for disk interrupts) passes with polling off and with polling always
# on (,always: whatever this busy host's load), and --stats shows that the polling path ran, or
# that it did not. The window's growth and shrinking are unit-tested (test_poll_window).
# cache=none: the guest's reads then wait for the host's disk (tens of us or more), so it halts
# for their interrupts; from the host's page cache they finished so fast on a fast host (Intel
# Xeon, session 9) that the guest halted once or twice in all, some runs never after a notify.
. "$(dirname "$0")/lib.sh"
if ! "$VMM" --version 2>/dev/null | grep -q 'emu'; then
	skip poll "this vmm is built without the software CPU"
	exit 0
fi
ACCEL=emu
truncate -s 1M "$TMP/poll.img"
for mode in off always; do
	case $mode in off) opt=0 ;; always) opt=10000,always ;; esac
	selftest_boot "poll_${mode}_selftest_passes" 0 "$SELFTEST_BZ" --stats --poll-max-us "$opt" \
		-m 64M -d "$TMP/poll.img,cache=none" -- selftest.mem=64M selftest.quick=1 selftest.virtio=1
	for check in lapic-timer ioapic virtio-blk0-read virtio-blk0-write virtio-blk0-msix; do
		grep -aq "ok - $check\$" "$TMP/poll_${mode}_selftest_passes.out" ||
			fail "poll_${mode}_$check" "$(grep -a -- "$check" "$TMP/poll_${mode}_selftest_passes.out")"
	done
done
# "vcpu0: N HLT, halt polls: C caught the event, S slept after polling, B did not poll ..."
polls() { # ERR-FILE: caught + slept of the vCPU's halt polls
	sed -n 's/.*halt polls: \([0-9]*\) caught the event, \([0-9]*\) slept after polling.*/\1 \2/p' "$1" |
		awk '{n += $1 + $2} END {print n + 0}'
}
err_off=$TMP/poll_off_selftest_passes.err err_on=$TMP/poll_always_selftest_passes.err
if grep -q 'halt polls:' "$err_off" && [ "$(polls "$err_off")" -eq 0 ] && ! grep -q '^event loop polls' "$err_off"; then
	ok poll_off_never_polls
else
	fail poll_off_never_polls "$(grep -a 'halt polls\|event loop polls' "$err_off" || echo 'no halt poll counters')"
fi
if [ "$(polls "$err_on")" -gt 0 ] && grep -q '^event loop polls for replies: ' "$err_on"; then
	ok poll_always_polls_halts_after_a_notify
else
	fail poll_always_polls_halts_after_a_notify "$(grep -a 'HLT\|event loop polls' "$err_on" || echo 'no counters')"
fi
