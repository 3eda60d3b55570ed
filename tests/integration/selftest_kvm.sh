#!/usr/bin/env bash
# The self-test guest on the KVM backend: through both loaders, with 1, 2 and 4 vCPUs and memory
# below, at and above the 32-bit hole; every way it can end.
. "$(dirname "$0")/lib.sh"
require_kvm selftest_kvm || exit 0

# boot NAME STATUS IMAGE VMM-ARGS -- GUEST-ARGS: expects the exit status and, for a normal run,
# the guest's own "N passed, 0 failed" with N > 0.
boot() {
	local name=$1 want=$2 image=$3; shift 3
	local args=() guest=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=("$1"); shift; done
	[ "${1:-}" = -- ] && shift
	guest=("$@")
	run_vmm "$TMP/$name.out" "$TMP/$name.err" --accel kvm "${args[@]}" "$image" "${guest[@]}"
	local summary
	summary=$(grep -a '^selftest: [0-9]* passed, [0-9]* failed' "$TMP/$name.out")
	if [ "$RC" -ne "$want" ]; then
		fail "$name" "status $RC, expected $want; $(grep -a FAIL "$TMP/$name.out" | head -3) $(tail -c 300 "$TMP/$name.err")"
	elif [ "$want" -eq 0 ] && ! [[ "$summary" =~ ^selftest:\ [1-9][0-9]*\ passed,\ 0\ failed ]]; then
		fail "$name" "guest says '${summary:-nothing}': $(grep -a 'FAIL' "$TMP/$name.out" | head -5)"
	else
		ok "$name"
	fi
}

for image in bzImage elf; do
	img=$ROOT/guest/selftest/selftest.$image
	boot "${image}_1cpu_256M" 0 "$img" -m 256M -c 1 -- selftest.mem=256M selftest.cpus=1 selftest.quick=1
	boot "${image}_2cpus_64M" 0 "$img" -m 64M -c 2 -- selftest.mem=64M selftest.cpus=2 selftest.quick=1
	boot "${image}_2cpus_5G_above_the_hole" 0 "$img" -m 5G -c 2 -- selftest.mem=5G selftest.cpus=2 selftest.quick=1
done
boot bzImage_4cpus_3G 0 "$ROOT/guest/selftest/selftest.bzImage" -m 3G -c 4 -- selftest.mem=3G selftest.cpus=4
# The seed's form: no "run", maxcpus= sets the vCPU count.
boot seed_maxcpus_form 0 "$SELFTEST_BZ" -- maxcpus=2 selftest.cpus=2 selftest.quick=1
grep -aq "ok - highmem" "$TMP/bzImage_2cpus_5G_above_the_hole.out" && ok highmem_checked_at_5G || fail highmem_checked_at_5G "no highmem check in the 5G run"
grep -aq "ok - smp" "$TMP/bzImage_4cpus_3G.out" && ok four_aps_came_up || fail four_aps_came_up "$(grep -a smp "$TMP/bzImage_4cpus_3G.out")"
# A wrong expectation must be caught by the guest: proves the checks can fail.
run_vmm "$TMP/wrong.out" "$TMP/wrong.err" --accel kvm -m 256M "$SELFTEST_BZ" selftest.mem=512M selftest.quick=1
grep -aq "FAIL - e820" "$TMP/wrong.out" && ok guest_detects_wrong_memory_size || fail guest_detects_wrong_memory_size "$(grep -a e820 "$TMP/wrong.out")"

boot panic_exits_4 4 "$SELFTEST_BZ" -- selftest.panic=1 selftest.quick=1
boot reboot_exits_3 3 "$SELFTEST_BZ" -- selftest.reboot=1 selftest.quick=1
boot triple_fault_exits_5 5 "$SELFTEST_ELF" -- selftest.triple=1 selftest.quick=1
