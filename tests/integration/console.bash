# Driving a guest's serial console from a test: start vmm on fifos, wait for text, type lines.
#   console_start LOG VMM-ARGS...   starts vmm in the background (CONSOLE_PID)
#   console_expect TEXT [SECONDS]   waits until the output ends with TEXT; 1 on time-out or EOF
#   console_send LINE               types LINE and Enter
#   console_wait [SECONDS]          waits for vmm to exit; sets CONSOLE_STATUS (124: time-out)
#   console_kill                    ends vmm (SIGKILL) if it still runs
#   run_cmd NAME CMD CHECK [SECONDS] runs a shell command in a Linux guest, prints ok/FAIL (below)
# Source lib.sh first (for $VMM and $TMP).

console_start() {
	CONSOLE_LOG=$1
	shift
	: >"$CONSOLE_LOG"
	mkfifo "$TMP/console.in.$$" "$TMP/console.out.$$"
	"$VMM" "$@" <"$TMP/console.in.$$" >"$TMP/console.out.$$" 2>"$CONSOLE_LOG.err" &
	CONSOLE_PID=$!
	exec {CONSOLE_IN}>"$TMP/console.in.$$" {CONSOLE_OUT}<"$TMP/console.out.$$"
	rm -f "$TMP/console.in.$$" "$TMP/console.out.$$"
}

console_expect() {
	local want=$1 limit=${2:-120} buf="" c deadline
	deadline=$((SECONDS + limit))
	while [ $SECONDS -lt $deadline ]; do
		if IFS= read -r -N 1 -t 1 c <&"$CONSOLE_OUT"; then
			printf '%s' "$c" >>"$CONSOLE_LOG"
			buf+=$c
			[ ${#buf} -le 8192 ] || buf=${buf: -4096}
			[[ $buf == *"$want" ]] && return 0
		elif [ $? -le 128 ]; then
			return 1 # EOF: vmm has exited
		fi
	done
	return 1
}

console_send() {
	printf '%s\n' "$1" >&"$CONSOLE_IN"
}

console_wait() {
	local limit=${1:-60} deadline
	deadline=$((SECONDS + limit))
	# keep reading so vmm never blocks on a full pipe
	while kill -0 "$CONSOLE_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
		timeout 1 cat <&"$CONSOLE_OUT" >>"$CONSOLE_LOG" 2>/dev/null
	done
	if kill -0 "$CONSOLE_PID" 2>/dev/null; then
		CONSOLE_STATUS=124
		console_kill
	else
		wait "$CONSOLE_PID"
		CONSOLE_STATUS=$?
	fi
	cat <&"$CONSOLE_OUT" >>"$CONSOLE_LOG" 2>/dev/null
	exec {CONSOLE_IN}>&- {CONSOLE_OUT}<&-
}

console_kill() {
	kill -KILL "$CONSOLE_PID" 2>/dev/null
	wait "$CONSOLE_PID" 2>/dev/null
}

# Can some backend of this vmm run a stock Linux kernel here? Prints the reason when not.
linux_backend() {
	if grep -qwE 'vmx|svm' /proc/cpuinfo; then
		echo kvm
	elif "$VMM" --version | grep -q 'backends:.*emu'; then
		echo emu
	else
		echo "none: the host has no VMX/SVM (its /dev/kvm cannot run stock Linux kernels) and the software CPU is not built in"
		return 1
	fi
}

# run_cmd NAME COMMAND CHECK [SECONDS]: runs COMMAND in the guest's shell, its output into a marked
# block (left in RUN_OUT); passes when the status is 0 and CHECK (a grep -E pattern) matches the
# output. SECONDS (default 120) bounds the wait for the end marker.
run_cmd() {
	local name=$1 cmd=$2 check=$3 limit=${4:-120} out
	: >"$TMP/$name.cmdlog"
	local saved=$CONSOLE_LOG
	CONSOLE_LOG=$TMP/$name.cmdlog
	# The markers are computed by the shell, so the echoed command line never matches them.
	console_send "echo \"begin-\$((6*7))\"; $cmd; echo \"status-\$?-done-\$((6*7))\""
	RUN_OUT=
	if ! console_expect "-done-42" "$limit"; then
		CONSOLE_LOG=$saved
		cat "$TMP/$name.cmdlog" >>"$CONSOLE_LOG"
		fail "$name" "no end marker within $limit s: $(tail -c 400 "$TMP/$name.cmdlog")"
		return 1
	fi
	CONSOLE_LOG=$saved
	cat "$TMP/$name.cmdlog" >>"$CONSOLE_LOG"
	out=$(tr -d '\r' <"$TMP/$name.cmdlog" | sed -n '/begin-42$/,/status-.*-done-42/p')
	RUN_OUT=$out
	if ! grep -q 'status-0-done-42' <<<"$out"; then
		fail "$name" "status not 0: $(tail -c 300 <<<"$out")"
		return 1
	elif ! grep -qE -- "$check" <<<"$out"; then
		fail "$name" "output does not match '$check': $(tail -c 300 <<<"$out")"
		return 1
	else
		ok "$name"
	fi
}
