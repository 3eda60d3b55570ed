#!/usr/bin/env bash
# Disk images: refused before boot with one clear line when unusable, locked against a second
# monitor, and accepted (with simscsi=PREFIX too) when fine; the guest still boots with them.
. "$(dirname "$0")/lib.sh"

KERNEL=$SELFTEST_BZ

truncate -s 16M "$TMP/disk.img"
: >"$TMP/empty.img"
mkdir "$TMP/dir"
head -c 100 /dev/zero >"$TMP/tiny.img"

expect_error disk_missing 1 "vmm: disk $TMP/missing.img: No such file" -d "$TMP/missing.img" "$KERNEL"
expect_error disk_directory 1 "vmm: disk $TMP/dir: Is a directory" -d "$TMP/dir" "$KERNEL"
expect_error disk_empty 1 "vmm: disk $TMP/empty.img: is empty" -d "$TMP/empty.img" "$KERNEL"
expect_error disk_smaller_than_a_sector 1 "smaller than one 512-byte sector" -d "$TMP/tiny.img" "$KERNEL"
expect_error disk_bad_option 2 "unknown option 'bogus'" -d "$TMP/disk.img,bogus" "$KERNEL"
if [ "$(id -u)" -ne 0 ]; then
	cp "$TMP/disk.img" "$TMP/noperm.img" && chmod 0400 "$TMP/noperm.img"
	expect_error disk_unwritable 1 "attach it read-only with ,ro" -d "$TMP/noperm.img" "$KERNEL"
else
	skip disk_unwritable "root can write any file"
fi

if require_kvm disk_locked_against_a_second_monitor && [ -f "$ROOT/build/tests/fixtures/echo.bzImage" ]; then
	# The echo guest runs until its console input ends: hold the disk open for 3 seconds.
	(sleep 3 | timeout 4 "$VMM" -d "$TMP/disk.img" "$ROOT/build/tests/fixtures/echo.bzImage" \
		>"$TMP/holder.out" 2>&1) &
	holder=$!
	for _ in $(seq 50); do grep -q ready "$TMP/holder.out" 2>/dev/null && break; sleep 0.1; done
	expect_error disk_locked_against_a_second_monitor 1 "disk $TMP/disk.img: in use by process [0-9]" \
		-d "$TMP/disk.img" "$KERNEL"
	expect_error disk_ro_refused_while_written 1 "in use by process" -d "$TMP/disk.img,ro" "$KERNEL"
	{ wait "$holder"; } 2>/dev/null
fi

if require_kvm disks_attach_and_guest_boots; then
	cp "$TMP/disk.img" "$TMP/simb"
	cp "$TMP/disk.img" "$TMP/sima"
	run_vmm "$TMP/out" "$TMP/err" -d "$TMP/disk.img,ro,serial=abc" -d "$TMP/empty2.img,cache=writeback" \
		"$KERNEL" 2>/dev/null
	[ "$RC" -eq 1 ] && ok disk_second_missing_refused || fail disk_second_missing_refused "status $RC"
	run_vmm "$TMP/out" "$TMP/err" -d "$TMP/disk.img,ro,serial=abc" "$KERNEL" "simscsi=$TMP/sim"
	if [ "$RC" -eq 0 ] && grep -q "passed, 0 failed" "$TMP/out"; then
		ok disks_attach_and_guest_boots
	else
		fail disks_attach_and_guest_boots "status $RC: $(tail -c 300 "$TMP/err")"
	fi
	if grep -q "simscsi" "$TMP/out"; then
		fail simscsi_not_passed_to_guest "the guest saw simscsi= on its command line"
	else
		ok simscsi_not_passed_to_guest
	fi
fi
