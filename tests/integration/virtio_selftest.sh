#!/usr/bin/env bash
# The self-test guest's own virtio-pci driver on KVM: virtio-blk reads, writes, get-id, flush and
# read-only refusals, virtio-rng, then the hostile driver (selftest.hostile=1). The image files are
# checked from the host afterwards, and a SIGKILL right after the guest's flush loses nothing.
. "$(dirname "$0")/lib.sh"
require_kvm virtio_selftest || exit 0

HOSTILE_CASES=11 # virtio-hostile-* checks that must each break the device once
GUEST=(selftest.quick=1 selftest.cpus=1)

# The sector the guest writes on disk N: "selftest-blkN-s1" repeated to 512 bytes.
pattern() { local i; for i in $(seq 32); do printf 'selftest-blk%s-s1' "$1"; done; }
sector_is_pattern() { # IMAGE DISK
	cmp -s <(dd if="$1" bs=512 skip=1 count=1 2>/dev/null) <(pattern "$2")
}
blank() { # NAME SIZE: a raw image with a marker in sector 0
	truncate -s "$2" "$TMP/$1"
	printf 'MARK-%-11s' "$1" | dd of="$TMP/$1" conv=notrunc 2>/dev/null
}

# guest NAME ARGS...: a run that must end with status 0 and "N passed, 0 failed".
guest() {
	local name=$1; shift
	local args=() g=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=("$1"); shift; done
	[ "${1:-}" = -- ] && shift
	g=("$@")
	run_vmm "$TMP/$name.out" "$TMP/$name.err" --accel kvm -m 64M "${args[@]}" "$SELFTEST_BZ" \
		"${GUEST[@]}" "${g[@]}"
	local summary
	summary=$(grep -a '^selftest: [0-9]* passed, [0-9]* failed' "$TMP/$name.out")
	if [ "$RC" -ne 0 ]; then
		fail "$name" "status $RC; $(grep -a FAIL "$TMP/$name.out" | head -3) $(tail -c 300 "$TMP/$name.err")"
	elif ! [[ "$summary" =~ ^selftest:\ [1-9][0-9]*\ passed,\ 0\ failed ]]; then
		fail "$name" "guest says '${summary:-nothing}': $(grep -a FAIL "$TMP/$name.out" | head -5)"
	else
		ok "$name"
		return 0
	fi
	return 1
}
has() { grep -aq "^selftest: ok - $2\$" "$TMP/$1.out"; }

# One disk, with a serial: the normal checks, then the hostile guest against it.
blank one.img 1M
if guest one_disk_hostile -d "$TMP/one.img,serial=vmm-disk-0" -- selftest.virtio=1 \
	selftest.hostile=1 selftest.disks=1 selftest.serials=vmm-disk-0; then
	n=$(grep -ac '^selftest: ok - virtio-hostile-' "$TMP/one_disk_hostile.out")
	[ "$n" -eq $((HOSTILE_CASES + 1)) ] && ok hostile_cases_all_pass ||
		fail hostile_cases_all_pass "$n of $((HOSTILE_CASES + 1)) virtio-hostile checks passed"
	# One log line per broken queue, and nothing else on stderr.
	breaks=$(grep -c '(device needs reset)$' "$TMP/one_disk_hostile.err")
	other=$(grep -vc '(device needs reset)$\|^vmm: accel:' "$TMP/one_disk_hostile.err")
	[ "$breaks" -eq "$HOSTILE_CASES" ] && [ "$other" -eq 0 ] && ok hostile_one_line_each ||
		fail hostile_one_line_each "$breaks needs-reset lines, $other others: $(head -c 400 "$TMP/one_disk_hostile.err")"
	grep -aq 'sector 0 starts "MARK-one.img' "$TMP/one_disk_hostile.out" && ok guest_read_sector_0 ||
		fail guest_read_sector_0 "$(grep -a 'sector 0' "$TMP/one_disk_hostile.out")"
	sector_is_pattern "$TMP/one.img" 0 && ok image_has_guest_write ||
		fail image_has_guest_write "sector 1 of the image: $(dd if="$TMP/one.img" bs=512 skip=1 count=1 2>/dev/null | head -c 32 | od -c | head -2)"
	has one_disk_hostile virtio-rng && ok rng_returns_bytes || fail rng_returns_bytes "no virtio-rng line"
fi

# Two disks in command-line order, each with its serial; both written. Two vCPUs: each disk has
# two queues, the driver uses the first.
blank a.img 1M
blank b.img 2M
if guest two_disks -c 2 -d "$TMP/a.img,serial=first" -d "$TMP/b.img,serial=second" -- \
	selftest.cpus=2 selftest.virtio=1 selftest.disks=2 selftest.serials=first,second; then
	sector_is_pattern "$TMP/a.img" 0 && sector_is_pattern "$TMP/b.img" 1 && ok two_disks_images_written ||
		fail two_disks_images_written "sector 1 of a.img or b.img does not hold the guest's pattern"
	grep -aq 'virtio-blk1: sector 0 starts "MARK-b.img' "$TMP/two_disks.out" && ok two_disks_in_order ||
		fail two_disks_in_order "$(grep -a 'sector 0' "$TMP/two_disks.out")"
	# Code changed under the CPU that runs it, as selftest_emu.sh checks on the software CPU.
	for check in smc-alias smc-cross-cpu virtio-blk0-dma-into-code; do
		has two_disks "$check" && ok "kvm_$check" || fail "kvm_$check" "$(grep -a -- "$check" "$TMP/two_disks.out")"
	done
fi

# A read-only disk next to a writable one: the guest's write is refused and the file unchanged;
# the hostile guest attacks the writable disk, and the read-only one keeps answering.
blank ro.img 1M
blank rw.img 1M
cp "$TMP/ro.img" "$TMP/ro.orig"
if guest ro_disk -d "$TMP/ro.img,ro,serial=ro" -d "$TMP/rw.img" -- selftest.virtio=1 selftest.hostile=1 \
	selftest.disks=2 selftest.serials=ro,; then
	has ro_disk virtio-blk0-ro-write-refused && ok ro_write_answered_ioerr ||
		fail ro_write_answered_ioerr "$(grep -a 'virtio-blk0' "$TMP/ro_disk.out" | head -5)"
	cmp -s "$TMP/ro.img" "$TMP/ro.orig" && ok ro_image_unchanged || fail ro_image_unchanged "ro.img changed"
	sector_is_pattern "$TMP/rw.img" 1 && ok rw_next_to_ro_written || fail rw_next_to_ro_written "rw.img sector 1"
fi

# Durability: the guest writes and flushes, holds; SIGKILL as soon as it reports the flush done.
durable() { # NAME DISK-OPTIONS
	local name=$1 opts=$2
	blank "$name.img" 1M
	"$VMM" --accel kvm -m 64M -d "$TMP/$name.img$opts" "$SELFTEST_BZ" "${GUEST[@]}" selftest.virtio=1 \
		selftest.hold=1 >"$TMP/$name.out" 2>"$TMP/$name.err" </dev/null &
	local pid=$! i
	for i in $(seq 300); do
		grep -aq '^selftest: ok - virtio-blk0-flush' "$TMP/$name.out" && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	local rc=$?
	if ! grep -aq '^selftest: ok - virtio-blk0-flush' "$TMP/$name.out"; then
		fail "$name" "the guest never reported the flush (status $rc): $(grep -a FAIL "$TMP/$name.out" | head -3) $(tail -c 300 "$TMP/$name.err")"
	elif [ "$rc" -ne 137 ]; then
		fail "$name" "vmm ended with status $rc before it was killed"
	elif ! sector_is_pattern "$TMP/$name.img" 0; then
		fail "$name" "after SIGKILL the image does not hold the flushed sector"
	else
		ok "$name"
	fi
}
durable sigkill_after_flush_writeback ""
# O_DIRECT needs a filesystem that has it (tmpfs only since Linux 6.6).
if dd if=/dev/zero of="$TMP/direct.probe" bs=4096 count=1 oflag=direct 2>/dev/null; then
	durable sigkill_after_flush_cache_none ",cache=none"
else
	skip sigkill_after_flush_cache_none "$TMP does not support O_DIRECT"
fi

# Queue notifications go through KVM_IOEVENTFD (kvm_ioeventfd), not MMIO exits (lib.sh).
notify_exits_test notify_without_mmio_exits kvm kvm_ioeventfd 120 "${GUEST[@]}"

# SIGKILL leaves the host's page cache alone, so the test above cannot tell a flush that reached
# the disk from one that did not: check that the guest's FLUSH became an fdatasync of the image
# (an io_uring FSYNC, or the fdatasync system call of the thread-pool engine), seen by perf.
if ! command -v perf >/dev/null; then
	skip flush_is_fdatasync "perf is not installed"
else
	blank fl.img 1M
	if ! perf record -q -o "$TMP/perf.data" -e io_uring:io_uring_submit_req \
		-e syscalls:sys_enter_fdatasync -- "$VMM" --accel kvm -m 64M -d "$TMP/fl.img" "$SELFTEST_BZ" \
		"${GUEST[@]}" selftest.virtio=1 >"$TMP/fl.out" 2>"$TMP/fl.err" </dev/null; then
		skip flush_is_fdatasync "perf cannot record io_uring / syscall tracepoints here: $(tail -c 200 "$TMP/fl.err")"
	else
		syncs=$(perf script -i "$TMP/perf.data" 2>/dev/null | grep -c 'opcode FSYNC\|sys_enter_fdatasync')
		flushes=$(grep -ac '^selftest: ok - virtio-blk0-flush' "$TMP/fl.out")
		[ "$flushes" -eq 1 ] && [ "$syncs" -eq 1 ] && ok flush_is_fdatasync ||
			fail flush_is_fdatasync "$flushes guest flushes, $syncs fdatasync/FSYNC operations"
	fi
fi
