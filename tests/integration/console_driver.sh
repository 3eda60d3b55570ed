#!/usr/bin/env bash
# The console driver used by the Linux-guest tests (console.bash), checked on the echo fixture.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/console.bash"
require_kvm console_driver || exit 0
console_start "$TMP/echo.log" "$ROOT/build/tests/fixtures/echo.bzImage"
if console_expect "echo: ready" 30; then ok driver_sees_boot_line; else fail driver_sees_boot_line "$(cat "$TMP/echo.log")"; fi
console_send "hello, echo"
if console_expect "hello, echo" 30; then ok driver_types_and_reads_back; else fail driver_types_and_reads_back "$(cat "$TMP/echo.log")"; fi
printf 'q' >&"$CONSOLE_IN"
console_wait 30
if [ "$CONSOLE_STATUS" -eq 0 ]; then ok driver_waits_for_exit; else fail driver_waits_for_exit "status $CONSOLE_STATUS"; fi
