#!/usr/bin/env bash
# The self-test guest's disk benchmark (selftest.diskbench=1, what bench/disk-kvm runs), with
# tiny workloads and its data check on: every workload prints its line with requests done and no
# errors, reads find each 4 KiB block's number where the host put it, and writes leave the
# guest's stamp in the image. Once with the driver loop at CPL 3 (the default) and once at CPL 0.
# Nothing here is timed: the figures are only checked to be there.
. "$(dirname "$0")/lib.sh"
require_kvm diskbench_selftest || exit 0

BLOCKS=2048 # 8 MiB: the 1 MiB workloads wrap around it several times
MODES=("read bs=1048576 qd=1" "write bs=1048576 qd=1" "randread bs=4096 qd=1" "randread bs=4096 qd=32"
	"randwrite bs=4096 qd=1" "randwrite bs=4096 qd=32")

# numbered IMAGE: each 4 KiB block starts with its number (64-bit little-endian), zeros after.
numbered() {
	python3 - "$1" "$BLOCKS" <<'PY'
import struct, sys
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        f.write(struct.pack("<Q", i) + bytes(4088))
PY
}

# blocks_state IMAGE: "STAMPED BAD" — blocks carrying the guest's stamp, blocks holding neither
# their number nor the stamped number.
blocks_state() {
	python3 - "$1" "$BLOCKS" <<'PY'
import struct, sys
stamped = bad = 0
stamp = 1 << 63  # DISKBENCH_STAMP in guest/selftest/diskbench.c
with open(sys.argv[1], "rb") as f:
    for i in range(int(sys.argv[2])):
        v = struct.unpack("<Q", f.read(4096)[:8])[0]
        if v == i | stamp:
            stamped += 1
        elif v != i:
            bad += 1
print(stamped, bad)
PY
}

for cpl in 3 0; do
	name=diskbench_cpl$cpl
	numbered "$TMP/$name.img"
	run_vmm "$TMP/$name.out" "$TMP/$name.err" --accel kvm -m 64M -d "$TMP/$name.img,cache=none" \
		"$SELFTEST_BZ" selftest.quick=1 selftest.diskbench=1 selftest.diskbench_ms=100 \
		selftest.diskbench_verify=1 "selftest.diskbench_cpl=$cpl"
	if [ "$RC" -ne 0 ] || ! grep -aq '^selftest: ok - diskbench$' "$TMP/$name.out"; then
		fail "$name" "status $RC; $(grep -a 'FAIL\|diskbench' "$TMP/$name.out" | head -5) $(tail -c 300 "$TMP/$name.err")"
		continue
	fi
	ok "$name"
	grep -aq "^selftest: # diskbench: .* loop at CPL $cpl, 100 ms per workload, verifying data" "$TMP/$name.out" &&
		ok "${name}_setup_line" || fail "${name}_setup_line" "$(grep -a '# diskbench' "$TMP/$name.out")"
	missing=()
	for m in "${MODES[@]}"; do
		grep -aqE "^selftest: diskbench: $m ops=[1-9][0-9]* bytes=[0-9]+ us=[0-9]+ MBps=[0-9]+\.[0-9] iops=[0-9]+ errors=0 kicks=[1-9][0-9]*\$" \
			"$TMP/$name.out" || missing+=("$m")
	done
	[ ${#missing[@]} -eq 0 ] && ok "${name}_six_figures" ||
		fail "${name}_six_figures" "no good line for: ${missing[*]}; got: $(grep -a '^selftest: diskbench:' "$TMP/$name.out")"
	read -r stamped bad < <(blocks_state "$TMP/$name.img")
	[ "$bad" -eq 0 ] && [ "$stamped" -gt 0 ] && ok "${name}_image_data" ||
		fail "${name}_image_data" "$stamped blocks stamped by the guest, $bad blocks with wrong data"
done
