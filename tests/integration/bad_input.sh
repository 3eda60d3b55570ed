#!/usr/bin/env bash
# Bad input from the user: one clear line on stderr naming the problem, and a non-zero status.
. "$(dirname "$0")/lib.sh"

KERNEL=$SELFTEST_BZ
printf 'not a kernel at all, just text\n%.0s' {1..100} >"$TMP/text"
head -c 700 "$KERNEL" >"$TMP/truncated"
: >"$TMP/empty"
mkdir "$TMP/dir"
head -c $((80 << 20)) /dev/zero >"$TMP/big-initrd"

expect_error unknown_option 2 "--frobnicate: unknown option" --frobnicate "$KERNEL"
expect_error no_kernel_given 2 "no kernel given" -m 256M
expect_error cpus_zero 2 "--cpus 0" -c 0 "$KERNEL"
expect_error cpus_too_many 2 "use 1 to 64" -c 1000 "$KERNEL"
expect_error maxcpus_garbage 2 "maxcpus=lots" "$KERNEL" maxcpus=lots
expect_error memory_not_a_size 2 "not a size" -m lots "$KERNEL"
expect_error memory_too_small 1 "too small" -m 16M "$KERNEL"
expect_error memory_too_large 1 "more than the host" -m 100T "$KERNEL"
expect_error bad_accel 2 "use kvm, emu or auto" --accel xen "$KERNEL"
expect_error bad_vm_name_slash 2 "--name a/b: not a VM name" --name a/b "$KERNEL"
expect_error bad_vm_name_dot 2 "--name .hidden: not a VM name" --name .hidden "$KERNEL"
expect_error bad_vm_name_too_long 2 "not a VM name (use 1 to 64" --name "$(printf 'x%.0s' {1..65})"
expect_error client_bad_vm_name 2 "vmm stop: .hidden: not a VM name" stop .hidden
expect_error missing_kernel 1 "No such file or directory" "$TMP/nonexistent"
expect_error kernel_is_directory 1 "is a directory" "$TMP/dir"
expect_error kernel_is_empty 1 "is empty" "$TMP/empty"
expect_error not_a_kernel 1 "not a kernel" "$TMP/text"
expect_error truncated_kernel 1 "truncated bzImage" "$TMP/truncated"
expect_error missing_initrd 1 "initrd.*No such file" -i "$TMP/nope" "$KERNEL"
if kvm_usable; then
	expect_error initrd_too_big 1 "initrd:.*do not fit" -m 64M -i "$TMP/big-initrd" "$KERNEL"
else
	require_kvm initrd_too_big
fi
chmod 000 "$TMP/text"
if [ "$(id -u)" -ne 0 ]; then
	expect_error unreadable_kernel 1 "Permission denied" "$TMP/text"
else
	# root reads anything: check the message path as an unprivileged user when one exists
	if id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null; then
		chmod 755 "$TMP"
		setpriv --reuid=nobody --regid=nogroup --clear-groups "$VMM" "$TMP/text" >"$TMP/out" 2>"$TMP/err" </dev/null
		rc=$?
		if [ $rc -eq 1 ] && grep -q "Permission denied" "$TMP/err"; then ok unreadable_kernel; else fail unreadable_kernel "status $rc: $(cat "$TMP/err")"; fi
		# and /dev/kvm without permission says how to fix it
		setpriv --reuid=nobody --regid=nogroup --clear-groups "$VMM" --accel kvm "$KERNEL" >"$TMP/out" 2>"$TMP/err" </dev/null
		rc=$?
		if [ $rc -eq 1 ] && grep -q "/dev/kvm: permission denied (add yourself to the kvm group" "$TMP/err"; then ok kvm_permission_denied; else fail kvm_permission_denied "status $rc: $(cat "$TMP/err")"; fi
	else
		skip unreadable_kernel "no unprivileged user to test with"
	fi
fi
# --help and --version succeed and print to stdout
if "$VMM" --help | grep -q "usage: vmm" && "$VMM" --version | grep -q "^vmm "; then ok help_and_version; else fail help_and_version "no usage/version on stdout"; fi
