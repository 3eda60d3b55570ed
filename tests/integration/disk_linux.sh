#!/usr/bin/env bash
# Disks and entropy with the default Linux guest (issue 4), all in one boot (a boot costs 1-2
# minutes on the software CPU): five disks in the order given, with their serials; mkfs.ext4 on a
# blank image, files written, read back after dropping the caches, unmounted, then checked from the
# host with e2fsck and debugfs; a read-only disk the guest sees read-only and cannot change; a disk
# whose image lives on a 4 MiB tmpfs, so that guest writes hit ENOSPC: the guest gets I/O errors and
# the monitor keeps running; virtio-rng as the guest's hwrng; and last the durability test: data
# written and fsynced (a FLUSH) in the guest, the monitor killed with SIGKILL, the data in the image.
# Runs on KVM where the host has VMX/SVM, on the software CPU elsewhere. The tools disk
# (guest/linux/out/tools.img) brings Debian's mke2fs. The kernel starts through its own
# decompressor here (--kernel-decompress guest), the one boot that does. Nothing is timed.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/console.bash"
KERNEL=$ROOT/guest/linux/out/vmlinuz
INITRD=$ROOT/guest/linux/out/initramfs.cpio.gz
TOOLS=$ROOT/guest/linux/out/tools.img
TESTS="disk_linux_boots disk_linux_decompressor_forced disk_linux_order_and_serials disk_linux_queue_limits disk_linux_mkfs_ext4_files disk_linux_ro_disk
disk_linux_enospc_reaches_guest disk_linux_virtio_rng disk_linux_raw_write_fsync_read_back
disk_linux_sigkill_after_fsync_keeps_data disk_linux_stat_host_io_time disk_linux_ext4_checked_from_host"
skip_all() { for t in $TESTS; do if [ "${CI:-}" = true ]; then fail "$t" "$1"; else skip "$t" "$1"; fi; done; exit 0; }

if grep -qwE 'vmx|svm' /proc/cpuinfo && kvm_usable; then
	ACCEL=kvm
elif "$VMM" --version | grep -q 'backends:.*emu'; then
	ACCEL=emu
else
	skip_all "no backend here runs Linux: no VMX/SVM and the software CPU is not built in"
fi
for f in "$KERNEL" "$INITRD" "$TOOLS"; do
	[ -f "$f" ] || skip_all "$f is missing (make guest)"
done
for t in debugfs e2fsck; do
	command -v $t >/dev/null || PATH=$PATH:/sbin:/usr/sbin
	command -v $t >/dev/null || skip_all "$t is missing (apt-get install e2fsprogs)"
done

# The disks: vda blank (mkfs.ext4), vdb random bytes (raw writes, SIGKILL), vdc random bytes
# (read-only), vdd sparse 64 MiB on a 4 MiB tmpfs (ENOSPC), vde the tools disk (read-only).
truncate -s 64M "$TMP/ext4.img"
head -c 16M /dev/urandom >"$TMP/raw.img"
head -c 4M /dev/urandom >"$TMP/ro.img"
ro_sum=$(md5sum <"$TMP/ro.img")
mkdir "$TMP/full"
cleanup() {
	console_kill 2>/dev/null
	umount "$TMP/full" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
mount -t tmpfs -o size=4m vmm-enospc "$TMP/full" || skip_all "cannot mount a tmpfs for the ENOSPC disk (needs root)"
truncate -s 64M "$TMP/full/full.img"

export VMM_RUNTIME_DIR=$TMP/run
name=disklinux$$
start=$SECONDS
# This boot also runs the kernel's own decompressor (--kernel-decompress guest), which the other
# Linux boots skip: disk_linux_decompressor_forced.
console_start "$TMP/boot.log" --accel "$ACCEL" --name "$name" -m 512M \
	--kernel-decompress guest -t boot --trace-file "$TMP/boot.trace" \
	-d "$TMP/ext4.img,serial=ext4-disk" -d "$TMP/raw.img,serial=raw-disk,cache=none" \
	-d "$TMP/ro.img,ro,serial=ro-disk" -d "$TMP/full/full.img,serial=full-disk" -d "$TOOLS,ro" \
	-i "$INITRD" "$KERNEL" quiet panic=-1
# A bound for a hung boot, not a timing: a loaded 2-core machine has taken 5 minutes.
if ! console_expect "init: ready" 900 || ! console_expect "# " 60; then
	fail disk_linux_boots "no shell after $((SECONDS - start)) s: $(tail -c 400 "$TMP/boot.log" | tr -d '\r') $(tail -c 200 "$TMP/boot.log.err")"
	TESTS=${TESTS#disk_linux_boots }
	skip_all "the guest did not boot"
fi
ok disk_linux_boots
if grep -q 'kernel: decompresses itself in the guest (--kernel-decompress guest)' "$TMP/boot.trace" &&
	! grep -q 'decompressed by vmm' "$TMP/boot.trace"; then
	ok disk_linux_decompressor_forced
else
	fail disk_linux_decompressor_forced "$(grep -m 2 'kernel' "$TMP/boot.trace")"
fi
echo "# disk_linux: shell after $((SECONDS - start)) s on $ACCEL"
console_send 'stty -echo cols 1000'
console_expect "# " 60

# Order and serials: /dev/vdX in the order of -d, each with its serial and size (512-byte sectors).
run_cmd disk_linux_order_and_serials 'for d in vda vdb vdc vdd vde; do echo "disk $d $(cat /sys/block/$d/serial) $(cat /sys/block/$d/size) ro=$(cat /sys/block/$d/ro)"; done' \
	'disk vda ext4-disk 131072 ro=0' && {
	for want in 'disk vdb raw-disk 32768 ro=0' 'disk vdc ro-disk 8192 ro=1' 'disk vdd full-disk 131072 ro=0' 'disk vde .*16384 ro=1'; do
		grep -qxE "$want" <<<"$RUN_OUT" || fail disk_linux_order_and_serials "no line '$want' in: $RUN_OUT"
	done
}

# The limits the guest's block layer took from the device: 254 segments a request (the queue's 256
# descriptors less header and status, as QEMU offers; 126 split 1 MiB requests in two), 1 MiB each.
run_cmd disk_linux_queue_limits 'echo "limits $(cat /sys/block/vdb/queue/max_segments) $(cat /sys/block/vdb/queue/max_segment_size)"' \
	'^limits 254 1048576$'

# ext4: mkfs on the blank disk, a small and a 2.5 MiB file, read back from the disk (caches
# dropped), unmounted so the host can read it.
run_cmd disk_linux_mkfs_ext4_files 'mkdir -p /tools /mnt/e && mount -o ro /dev/vde /tools &&
/tools/bin/mkfs.ext4 -q -L vmmtest /dev/vda && mount /dev/vda /mnt/e &&
echo hello-from-the-guest >/mnt/e/hello.txt && mkdir /mnt/e/dir &&
dd if=/dev/urandom of=/mnt/e/dir/blob bs=64k count=40 2>/dev/null && sync &&
md5sum /mnt/e/dir/blob >/tmp/blob.md5 && echo 3 >/proc/sys/vm/drop_caches &&
md5sum -c /tmp/blob.md5 && echo "blob-md5 $(cut -d" " -f1 /tmp/blob.md5)" &&
cat /mnt/e/hello.txt && umount /mnt/e' '^hello-from-the-guest$' 300
blob_md5=$(sed -n 's/^blob-md5 \([0-9a-f]*\)$/\1/p' <<<"$RUN_OUT")

# Read-only: the guest sees it read-only, a write fails, a read works.
run_cmd disk_linux_ro_disk 'blockdev --getro /dev/vdc && ! dd if=/dev/zero of=/dev/vdc bs=4096 count=1 oflag=direct 2>&1 &&
dd if=/dev/vdc of=/dev/null bs=64k count=4 iflag=direct 2>/dev/null && echo ro-read-ok' '^1$' &&
	[ "$(md5sum <"$TMP/ro.img")" = "$ro_sum" ] || fail disk_linux_ro_disk "ro.img changed"
[ -n "${RUN_OUT:-}" ] && ! grep -q ro-read-ok <<<"$RUN_OUT" && fail disk_linux_ro_disk "no read from the ro disk: $RUN_OUT"

# ENOSPC: 16 MiB of direct writes to an image on a 4 MiB tmpfs fail with I/O errors in the guest;
# then the guest and the monitor go on: the start of the disk still reads, the shell answers.
run_cmd disk_linux_enospc_reaches_guest 'if dd if=/dev/urandom of=/dev/vdd bs=1M count=16 oflag=direct 2>/tmp/dd.err; then echo dd-succeeded; fi;
cat /tmp/dd.err; dd if=/dev/vdd of=/dev/null bs=1M count=1 iflag=direct 2>/dev/null && dmesg | grep -c "I/O error, dev vdd"' \
	'I/O error' 300
if [ -n "${RUN_OUT:-}" ] && grep -q dd-succeeded <<<"$RUN_OUT"; then
	fail disk_linux_enospc_reaches_guest "the write to a full disk succeeded: $RUN_OUT"
fi
if ! kill -0 "$CONSOLE_PID" 2>/dev/null; then
	fail disk_linux_enospc_reaches_guest "the monitor is gone: $(tail -c 300 "$TMP/boot.log.err")"
fi

# Entropy: virtio-rng is the guest's hwrng and gives bytes; the crng is initialised.
run_cmd disk_linux_virtio_rng 'cat /sys/class/misc/hw_random/rng_current &&
dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tx1 | grep -q "[1-9a-f]" && echo hwrng-gives-bytes &&
dmesg | grep -E "random: crng init done|virtio_rng"' '^hwrng-gives-bytes$' &&
	{ grep -qx 'virtio_rng.0' <<<"$RUN_OUT" || fail disk_linux_virtio_rng "rng_current is not virtio_rng.0: $RUN_OUT"; }
echo "# disk_linux: guest's crng line: $(grep -m1 'crng init' <<<"${RUN_OUT:-}")"

# Durability: 1 MiB of the guest's random bytes written at 1 MiB into vdb with fsync (the guest
# sends a FLUSH), read back direct, their md5 printed; then the monitor dies by SIGKILL.
run_cmd disk_linux_raw_write_fsync_read_back 'dd if=/dev/urandom of=/tmp/pattern bs=64k count=16 2>/dev/null &&
dd if=/tmp/pattern of=/dev/vdb bs=64k seek=16 conv=fsync 2>/dev/null && sync &&
dd if=/dev/vdb bs=64k skip=16 count=16 iflag=direct 2>/dev/null | md5sum | sed "s/ .*//;s/^/direct-md5 /" &&
echo "pattern-md5 $(md5sum </tmp/pattern | cut -d" " -f1)"' '^direct-md5 [0-9a-f]+$' 300
guest_md5=$(sed -n 's/^pattern-md5 \([0-9a-f]*\)$/\1/p' <<<"${RUN_OUT:-}")
direct_md5=$(sed -n 's/^direct-md5 \([0-9a-f]*\)$/\1/p' <<<"${RUN_OUT:-}")
"$VMM" stat "$name" >"$TMP/stat" 2>&1
kill -KILL "$CONSOLE_PID"
wait "$CONSOLE_PID" 2>/dev/null
host_md5=$(dd if="$TMP/raw.img" bs=64k skip=16 count=16 2>/dev/null | md5sum | cut -d' ' -f1)
flushes=$(sed -n "s|.*$TMP/raw.img: .*flushes \([0-9]*\),.*|\1|p" "$TMP/stat")
if [ -z "$guest_md5" ] || [ "$guest_md5" != "$host_md5" ] || [ "$direct_md5" != "$host_md5" ]; then
	fail disk_linux_sigkill_after_fsync_keeps_data "guest wrote $guest_md5, read back $direct_md5, image has $host_md5"
elif [ "${flushes:-0}" -lt 1 ]; then
	fail disk_linux_sigkill_after_fsync_keeps_data "the guest sent no FLUSH: $(cat "$TMP/stat")"
else
	ok disk_linux_sigkill_after_fsync_keeps_data
fi
# The host's share of each request (vmm stat: the line after the disk's own).
io_done=$(awk -v img="$TMP/raw.img: reads" 'found { print $3; exit } index($0, img) { found = 1 }' "$TMP/stat")
if [ "${io_done:-0}" -ge 2 ] && grep -q "host I/O: $io_done requests completed, [0-9]* us from submission to completion" "$TMP/stat"; then
	ok disk_linux_stat_host_io_time
else
	fail disk_linux_stat_host_io_time "no host I/O line after raw.img's: $(grep -A1 raw.img "$TMP/stat")"
fi
errors=$(sed -n "s|.*$TMP/full/full.img: .*errors \([0-9]*\),.*|\1|p" "$TMP/stat")
[ "${errors:-0}" -ge 1 ] || fail disk_linux_enospc_reaches_guest "the monitor counted no error on full.img: $(cat "$TMP/stat")"

# The ext4 image, from the host: consistent, with the guest's files.
if [ -z "$blob_md5" ]; then
	fail disk_linux_ext4_checked_from_host "the guest made no file system"
elif ! e2fsck -fn "$TMP/ext4.img" >"$TMP/fsck" 2>&1; then
	fail disk_linux_ext4_checked_from_host "e2fsck: $(tail -5 "$TMP/fsck")"
elif [ "$(debugfs -R 'cat /hello.txt' "$TMP/ext4.img" 2>/dev/null)" != hello-from-the-guest ]; then
	fail disk_linux_ext4_checked_from_host "hello.txt: $(debugfs -R 'cat /hello.txt' "$TMP/ext4.img" 2>&1 | head -3)"
elif [ "$(debugfs -R 'cat /dir/blob' "$TMP/ext4.img" 2>/dev/null | md5sum | cut -d' ' -f1)" != "$blob_md5" ]; then
	fail disk_linux_ext4_checked_from_host "dir/blob differs from what the guest wrote"
else
	ok disk_linux_ext4_checked_from_host
fi
echo "# disk_linux: $((SECONDS - start)) s from start to the end"
