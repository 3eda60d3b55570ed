#!/usr/bin/env bash
# The self-test guest on the KVM backend: through both loaders, with 1, 2 and 4 vCPUs and memory
# below, at and above the 32-bit hole; every way it can end.
. "$(dirname "$0")/lib.sh"
require_kvm selftest_kvm || exit 0

ACCEL=kvm
# Data breakpoints: kvm-pvm (no VMX/SVM) emulates guest CPL 0 code in the host, whose emulator
# does not check them (as gdb.sh's watchpoint).
watch=()
if grep -qE '^flags.* (vmx|svm)' /proc/cpuinfo; then
	watch=(selftest.watch=1)
else
	skip kvm_debug_data_breakpoints "no VMX/SVM (kvm-pvm): guest CPL0 code is emulated by the host, whose emulator does not check data breakpoints"
fi

for image in bzImage elf; do
	img=$ROOT/guest/selftest/selftest.$image
	selftest_boot "${image}_1cpu_256M" 0 "$img" -m 256M -c 1 -- selftest.mem=256M selftest.cpus=1 selftest.quick=1 "${watch[@]}"
	selftest_boot "${image}_2cpus_64M" 0 "$img" -m 64M -c 2 -- selftest.mem=64M selftest.cpus=2 selftest.quick=1
	selftest_boot "${image}_2cpus_5G_above_the_hole" 0 "$img" -m 5G -c 2 -- selftest.mem=5G selftest.cpus=2 selftest.quick=1
done
selftest_boot bzImage_4cpus_3G 0 "$ROOT/guest/selftest/selftest.bzImage" -m 3G -c 4 -- selftest.mem=3G selftest.cpus=4
# The seed's form: no "run", maxcpus= sets the vCPU count.
selftest_boot seed_maxcpus_form 0 "$SELFTEST_BZ" -- maxcpus=2 selftest.cpus=2 selftest.quick=1
grep -aq "ok - highmem" "$TMP/bzImage_2cpus_5G_above_the_hole.out" && ok highmem_checked_at_5G || fail highmem_checked_at_5G "no highmem check in the 5G run"
grep -aq "ok - smp" "$TMP/bzImage_4cpus_3G.out" && ok four_aps_came_up || fail four_aps_came_up "$(grep -a smp "$TMP/bzImage_4cpus_3G.out")"
# The same CPU checks the software CPU passes (selftest_emu.sh), with the host CPU's answers.
for check in string-io fault-frame-rf debug-exec-breakpoint debug-single-step ${watch[@]:+debug-data-breakpoints}; do
	grep -aq "ok - $check" "$TMP/bzImage_1cpu_256M.out" && ok "kvm_$check" || fail "kvm_$check" "$(grep -a -- "$check" "$TMP/bzImage_1cpu_256M.out")"
done
# A wrong expectation must be caught by the guest: proves the checks can fail.
run_vmm "$TMP/wrong.out" "$TMP/wrong.err" --accel kvm -m 256M "$SELFTEST_BZ" selftest.mem=512M selftest.quick=1
grep -aq "FAIL - e820" "$TMP/wrong.out" && ok guest_detects_wrong_memory_size || fail guest_detects_wrong_memory_size "$(grep -a e820 "$TMP/wrong.out")"

selftest_boot panic_exits_4 4 "$SELFTEST_BZ" -- selftest.panic=1 selftest.quick=1
selftest_boot reboot_exits_3 3 "$SELFTEST_BZ" -- selftest.reboot=1 selftest.quick=1
selftest_boot triple_fault_exits_5 5 "$SELFTEST_ELF" -- selftest.triple=1 selftest.quick=1
