#!/bin/sh
# run.sh FLUENT_BIT [RUNS] [RELOADS]: RUNS times (default 10), start Fluent Bit with
# fluent-bit.yaml (no Go plugin) and --enable-hot-reload as the Helm chart does, POST
# /api/v2/reload RELOADS times (default 2, 0 for none) 3 s apart, then SIGTERM. Prints the
# backtrace of every run that crashed and the count. Needs curl. FORWARD_PORT and HTTP_PORT
# default to 25881 and 25880; KEEP=1 keeps the logs.
fb=${1:?usage: run.sh FLUENT_BIT [RUNS] [RELOADS]}
runs=${2:-10}
reloads=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap '[ -n "$KEEP" ] && echo "logs in $work" || rm -rf "$work"' EXIT
export FORWARD_PORT=${FORWARD_PORT:-25881} HTTP_PORT=${HTTP_PORT:-25880}
crashed=0
i=1
while [ "$i" -le "$runs" ]; do
  log="$work/run$i.log"
  export STORAGE_PATH="$work/storage$i"
  mkdir -p "$STORAGE_PATH"
  "$fb" --enable-hot-reload -c "$here/fluent-bit.yaml" >"$log" 2>&1 &
  pid=$!
  sleep 2
  r=1
  while [ "$r" -le "$reloads" ]; do
    curl -s -o /dev/null -X POST -d '' "http://127.0.0.1:$HTTP_PORT/api/v2/reload"
    sleep 3
    r=$((r + 1))
  done
  kill -TERM "$pid" 2>/dev/null
  wait "$pid"
  rc=$?
  if grep -q 'caught signal (SIGSEGV)' "$log"; then
    crashed=$((crashed + 1))
    echo "run $i: exit status $rc after $(grep -c 'successful reload done' "$log") reload(s):"
    grep -A 12 'caught signal (SIGSEGV)' "$log"
  elif [ "$rc" -ne 0 ]; then
    echo "run $i: exit status $rc without a crash (a port in use?): $(tail -1 "$log")"
  fi
  i=$((i + 1))
done
echo "$crashed of $runs runs crashed ($("$fb" --version | head -1), $reloads reload(s) each)"
