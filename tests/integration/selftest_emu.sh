#!/usr/bin/env bash
# The self-test guest on the software CPU (--accel emu): both loaders (the 64-bit Linux boot
# protocol and the PVH entry in 32-bit protected mode), 1 and 2 vCPUs (the AP comes up through
# INIT/SIPI in real mode), memory above the 32-bit hole, and every way it can end. Needs no
# /dev/kvm.
. "$(dirname "$0")/lib.sh"
if ! "$VMM" --version 2>/dev/null | grep -q 'emu'; then
	skip selftest_emu "this vmm is built without the software CPU"
	exit 0
fi

ACCEL=emu

for image in bzImage elf; do
	img=$ROOT/guest/selftest/selftest.$image
	selftest_boot "emu_${image}_1cpu_256M" 0 "$img" -m 256M -c 1 -- selftest.mem=256M selftest.cpus=1 selftest.quick=1 selftest.watch=1
	selftest_boot "emu_${image}_2cpus_64M" 0 "$img" -m 64M -c 2 -- selftest.mem=64M selftest.cpus=2 selftest.quick=1
	selftest_boot "emu_${image}_2cpus_5G_above_the_hole" 0 "$img" -m 5G -c 2 -- selftest.mem=5G selftest.cpus=2 selftest.quick=1
done
selftest_boot emu_bzImage_4cpus_3G 0 "$SELFTEST_BZ" -m 3G -c 4 -- selftest.mem=3G selftest.cpus=4
# Code changed under the CPU that runs it: through a second mapping, by the other vCPU, by a
# disk read into it (the decoded blocks must be dropped: memory.h's code-page tracking).
truncate -s 1M "$TMP/smc.img"
selftest_boot emu_bzImage_2cpus_smc 0 "$SELFTEST_BZ" -m 64M -c 2 -d "$TMP/smc.img" -- selftest.mem=64M selftest.cpus=2 selftest.quick=1 selftest.virtio=1
for check in smc-alias smc-cross-cpu virtio-blk0-dma-into-code; do
	grep -aq "ok - $check\$" "$TMP/emu_bzImage_2cpus_smc.out" && ok "emu_$check" || fail "emu_$check" "$(grep -a -- "$check" "$TMP/emu_bzImage_2cpus_smc.out")"
done
grep -aq "ok - highmem" "$TMP/emu_bzImage_2cpus_5G_above_the_hole.out" && ok emu_highmem_checked_at_5G || fail emu_highmem_checked_at_5G "no highmem check in the 5G run"
grep -aq "ok - smp" "$TMP/emu_bzImage_4cpus_3G.out" && ok emu_four_aps_came_up || fail emu_four_aps_came_up "$(grep -a smp "$TMP/emu_bzImage_4cpus_3G.out")"
for check in lapic-timer lapic-timer-spin ioapic cpuid-kvmclock string-io fault-frame-rf debug-exec-breakpoint debug-data-breakpoints debug-single-step; do
	grep -aq "ok - $check" "$TMP/emu_bzImage_1cpu_256M.out" && ok "emu_$check" || fail "emu_$check" "$(grep -a -- "$check" "$TMP/emu_bzImage_1cpu_256M.out")"
done
# No instruction the self-test guest runs may be missing from the software CPU.
if grep -aq '#UD' "$TMP"/emu_*.err; then
	fail emu_no_unimplemented_instructions "$(grep -ah '#UD' "$TMP"/emu_*.err | sort -u | head -3)"
else
	ok emu_no_unimplemented_instructions
fi
# An instruction the software CPU does not implement (VEX VZEROUPPER, run twice at one place
# by the echo fixture's 'u') raises #UD in the guest, whose handler steps over it: counted
# twice, logged once with its bytes and RIP, and the guest goes on ('q' powers off).
printf uq | timeout -s KILL 60 "$VMM" --accel emu --stats "$ROOT/build/tests/fixtures/echo.bzImage" \
	>"$TMP/ud.out" 2>"$TMP/ud.err"
RC=$?
if [ "$RC" -eq 0 ] && grep -aq "ud: 2" "$TMP/ud.out" &&
	[ "$(grep -c '#UD (not implemented or invalid) at rip 0x1[0-9a-f]* (cs 0x10, 64-bit): c5 f8 77 ' "$TMP/ud.err")" -eq 1 ] &&
	grep -q '^vmm: emu: 2 #UD for instructions not implemented' "$TMP/ud.err"; then
	ok emu_unimplemented_instruction_is_ud_counted_logged_once
else
	fail emu_unimplemented_instruction_is_ud_counted_logged_once "status $RC: $(cat "$TMP/ud.out" "$TMP/ud.err" | head -c 600)"
fi
# --stats (the same text as `vmm stat`) counts them too; the self-test guest has none.
if grep -q '^software CPU: #UD for instructions not implemented (or invalid) 2$' "$TMP/ud.err"; then
	ok emu_stats_count_ud
else
	fail emu_stats_count_ud "$(grep -a 'software CPU' "$TMP/ud.err" || echo 'no software CPU line')"
fi
# A wrong expectation must be caught by the guest: proves the checks can fail.
run_vmm "$TMP/wrong.out" "$TMP/wrong.err" --accel emu -m 256M "$SELFTEST_BZ" selftest.mem=512M selftest.quick=1
grep -aq "FAIL - e820" "$TMP/wrong.out" && ok emu_guest_detects_wrong_memory_size || fail emu_guest_detects_wrong_memory_size "$(grep -a e820 "$TMP/wrong.out")"

selftest_boot emu_panic_exits_4 4 "$SELFTEST_BZ" -- selftest.panic=1 selftest.quick=1
selftest_boot emu_reboot_exits_3 3 "$SELFTEST_BZ" -- selftest.reboot=1 selftest.quick=1
selftest_boot emu_triple_fault_exits_5 5 "$SELFTEST_ELF" -- selftest.triple=1 selftest.quick=1

# Queue notifications on the software CPU go through its ioeventfd table (emu_ioeventfd), not
# MMIO exits (lib.sh).
notify_exits_test emu_notify_without_mmio_exits emu emu_ioeventfd 300 selftest.quick=1 selftest.cpus=1
