# Driving a guest's serial console from a test: start vmm on fifos, wait for text, type lines.
#   console_start LOG VMM-ARGS...   starts vmm in the background (CONSOLE_PID)
#   console_expect TEXT [SECONDS]   waits until the output ends with TEXT; 1 on time-out or EOF
#   console_send LINE               types LINE and Enter
#   console_wait [SECONDS]          waits for vmm to exit; sets CONSOLE_STATUS (124: time-out)
#   console_kill                    ends vmm (SIGKILL) if it still runs
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
