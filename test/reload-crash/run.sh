#!/bin/sh
# Builds the minimal Go output and runs Fluent Bit with it, sending SIGHUP (hot reload)
# RELOADS times, SLEEP seconds apart; reports whether Fluent Bit survived.
#   ./run.sh /path/to/fluent-bit [WORKERS (1)] [RELOADS (3)]
# Exit status 0: survived every reload; 1: Fluent Bit died (its log is printed).
set -u
FB=${1:?usage: $0 /path/to/fluent-bit [WORKERS] [RELOADS]}
WORKERS=${2:-1}
RELOADS=${3:-3}
SLEEP=${SLEEP:-2.5}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$here" && CGO_ENABLED=1 go build -buildmode=c-shared -o "$work/out_min.so" .) || exit 2
export WORKERS
"$FB" -e "$work/out_min.so" -c "$here/fluent-bit.conf" >"$work/fluent-bit.log" 2>&1 &
pid=$!
# Output worker threads are named flb-out-NAME-wN: Workers 1 should mean one.
workers() { cat /proc/"$pid"/task/*/comm 2>/dev/null | grep -c '^flb-out-'; }
sleep "$SLEEP"
i=1
while [ "$i" -le "$RELOADS" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    echo "output worker threads: $(workers)"
    echo "SIGHUP $i"
    kill -HUP "$pid"
    sleep "$SLEEP"
    i=$((i + 1))
done
if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid"
    rc=$?
    echo "Workers $WORKERS: survived $RELOADS reload(s) ($(grep -c 'successful reload done' "$work/fluent-bit.log") successful), exit status $rc after SIGTERM"
    exit 0
fi
wait "$pid"
rc=$?
echo "Workers $WORKERS: Fluent Bit died (exit status $rc) after $(grep -c 'successful reload done' "$work/fluent-bit.log") successful reload(s); its log:"
cat "$work/fluent-bit.log"
exit 1
