#!/usr/bin/env bash
# make image-test: builds the stand-in base images when missing (standins.sh), the image for
# each Fluent Bit line (FLUENT_BIT_VERSIONS, default "5.1.1 4.2.8") and the plugin-only image,
# then for each line:
#   - runs the compose demo as the README says (docker compose up --build, or podman-compose)
#     and checks that the three sample detections arrive in mailpit, that the published
#     http://localhost:8025 serves them, and that each verifies with `smtpout verify`;
#   - runs the image with a read-only root filesystem, as UID 65532, with ledger_dir mounted,
#     and checks the same three emails arrive, verified, and the ledger is written by 65532;
#   - prints one summary line: emails, verified, image size, plugin size, build time.
# Exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
. test/image/engine.sh

VERSIONS=${FLUENT_BIT_VERSIONS:-"5.1.1 4.2.8"}
PROJECT=smtpout-imagetest
UI=http://localhost:8025
WAIT=${IMAGE_TEST_WAIT:-180}   # seconds to wait for the three emails (a loaded machine is slow)
export DEMO_DIR=$root/demo SMTP_HOST=unused   # for `smtpout verify -c demo/fluent-bit.conf`

make -s smtpout mailpit
./test/image/standins.sh

work=$(mktemp -d)
ro_ctr="" mp_pid=""
cleanup() {
  [ -z "$ro_ctr" ] || "$ENGINE" rm -f "$ro_ctr" >/dev/null 2>&1 || true
  [ -z "$mp_pid" ] || kill "$mp_pid" 2>/dev/null || true
  $COMPOSE -p "$PROJECT" down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "image-test $v: FAILED: $*" >&2; return 1; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }

# wait_emails API N: waits until the mailpit at API holds N messages; prints their IDs.
wait_emails() {
  local api=$1 n=$2 deadline=$((SECONDS + WAIT)) total=0
  while [ $SECONDS -lt $deadline ]; do
    total=$(curl -fsS "$api/api/v1/messages?limit=50" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["messages_count"])' 2>/dev/null || echo 0)
    [ "$total" -ge "$n" ] && break
    sleep 1
  done
  sleep 2 # anything beyond N (a duplicate) has time to arrive and fail the count below
  curl -fsS "$api/api/v1/messages?limit=50" | python3 -c 'import json,sys; [print(m["ID"]) for m in json.load(sys.stdin)["messages"]]'
}

# verify_emails API DIR ID...: saves each message's raw source into DIR and verifies them all.
verify_emails() {
  local api=$1 dir=$2 id
  shift 2
  mkdir -p "$dir"
  for id in "$@"; do curl -fsS -o "$dir/$id.eml" "$api/api/v1/message/$id/raw"; done
  ./smtpout verify -c demo/fluent-bit.conf "$dir"/*.eml
}

# Build: the plugin-only image once (the .so does not depend on the Fluent Bit line), then the
# full image per line. --network host: the build fetches Go modules, and on these machines only
# the host's network reaches the module proxy (a no-op for the cache keys: the compose build
# below reuses these layers).
start=$SECONDS
"$ENGINE" build -q --network host --target plugin -t smtpout-plugin . >/dev/null
plugin_build=$((SECONDS - start))
plugin_ctr=$("$ENGINE" create smtpout-plugin /smtpout.so)
"$ENGINE" export "$plugin_ctr" | tar -C "$work" -x
"$ENGINE" rm "$plugin_ctr" >/dev/null
files=$(cd "$work" && find . -mindepth 1 | sort | tr '\n' ' ')
[ "$files" = "./LICENSE ./smtpout.so " ] || { v=plugin; fail "smtpout-plugin holds $files, want exactly /LICENSE /smtpout.so"; }
plugin_size=$(stat -c %s "$work/smtpout.so")
glibc=$(objdump -T "$work/smtpout.so" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
echo "image-test: smtpout-plugin: /smtpout.so ($(mb "$plugin_size"), needs $glibc) and /LICENSE, built in $plugin_build s"
[ "$(printf '%s\n' "$glibc" GLIBC_2.36 | sort -V | tail -n 1)" = GLIBC_2.36 ] || { v=plugin; fail "smtpout.so needs $glibc, newer than the 2.36 of Fluent Bit 4.2.0's image"; }
rm -f "$work/smtpout.so" "$work/LICENSE"

line() {
  v=$1
  local start build size ids n verified ro_ids ro_n ro_verified api port smtp owner
  start=$SECONDS
  "$ENGINE" build -q --network host --build-arg "FLUENT_BIT_VERSION=$v" -t "smtpout:$v" . >/dev/null
  build=$((SECONDS - start))
  size=$("$ENGINE" image inspect "smtpout:$v" --format '{{.Size}}')

  # The compose demo, as the README starts it.
  FLUENT_BIT_VERSION=$v $COMPOSE -p "$PROJECT" up --build -d >"$work/compose-$v.log" 2>&1 \
    || { cat "$work/compose-$v.log" >&2; fail "compose up"; }
  ids=$(wait_emails "$UI" 3)
  n=$(echo "$ids" | grep -c . || true)
  $COMPOSE -p "$PROJECT" logs fluent-bit >"$work/fluent-bit-$v.log" 2>&1 || true
  if [ "$n" -ne 3 ]; then tail -n 40 "$work/fluent-bit-$v.log" >&2; fail "compose demo: $n emails in mailpit, want 3"; fi
  curl -fsS "$UI/" | grep -qi '<html' || fail "$UI/ does not serve mailpit's page"
  # shellcheck disable=SC2086
  verify_emails "$UI" "$work/demo-$v" $ids >"$work/verify-$v.txt" || { cat "$work/verify-$v.txt" >&2; fail "smtpout verify"; }
  verified=$(grep -c ': ok$' "$work/verify-$v.txt" || true)
  if grep -E '\[(error| warn)\]' "$work/fluent-bit-$v.log" >&2; then
    fail "the demo logged warnings or errors (a new user must see none)"
  fi
  $COMPOSE -p "$PROJECT" down >/dev/null 2>&1

  # Read-only root, UID 65532, ledger_dir mounted, the configuration mounted over the default.
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  smtp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  api=http://127.0.0.1:$port
  bin/mailpit --listen "127.0.0.1:$port" --smtp "127.0.0.1:$smtp" --database "$work/mailpit-$v.db" \
    --smtp-tls-cert demo/tls/mailpit.pem --smtp-tls-key demo/tls/mailpit-key.pem --smtp-require-tls \
    --smtp-auth-accept-any --smtp-disable-rdns --disable-version-check >"$work/mailpit-$v.log" 2>&1 &
  mp_pid=$!
  mkdir -p "$work/ledger-$v"
  chown 65532:65532 "$work/ledger-$v"
  ro_ctr=$("$ENGINE" run -d --read-only --user 65532:65532 --network host -e "SMTP_HOST=localhost:$smtp" \
    -v "$root/test/image/fluent-bit-readonly.conf:/fluent-bit/etc/fluent-bit.conf:ro" \
    -v "$work/ledger-$v:/var/lib/smtpout" "smtpout:$v")
  ro_ids=$(wait_emails "$api" 3)
  ro_n=$(echo "$ro_ids" | grep -c . || true)
  "$ENGINE" stop -t 10 "$ro_ctr" >/dev/null
  "$ENGINE" logs "$ro_ctr" >"$work/readonly-$v.log" 2>&1
  "$ENGINE" rm "$ro_ctr" >/dev/null; ro_ctr=""
  if [ "$ro_n" -ne 3 ]; then tail -n 40 "$work/readonly-$v.log" >&2; fail "read-only run: $ro_n emails, want 3"; fi
  # shellcheck disable=SC2086
  verify_emails "$api" "$work/readonly-$v" $ro_ids >"$work/verify-ro-$v.txt" || { cat "$work/verify-ro-$v.txt" >&2; fail "smtpout verify (read-only run)"; }
  ro_verified=$(grep -c ': ok$' "$work/verify-ro-$v.txt" || true)
  kill "$mp_pid"; wait "$mp_pid" 2>/dev/null || true; mp_pid=""
  # (but for the one the stop itself causes)
  if grep -E '\[(error| warn)\]' "$work/readonly-$v.log" | grep -v 'service will shutdown in max' >&2; then
    fail "the read-only run logged warnings or errors"
  fi
  owner=$(find "$work/ledger-$v" -type f -printf '%u:%g %p\n' | awk '{print $1}' | sort -u | tr '\n' ' ')
  [ "$owner" = "65532:65532 " ] || fail "ledger_dir files owned by '$owner', want only 65532:65532 (files: $(ls -R "$work/ledger-$v"))"

  echo "image-test $v: $n emails, $verified verified (compose demo); read-only root as UID 65532 with ledger_dir: $ro_n emails, $ro_verified verified; image $(mb "$size"), plugin $(mb "$plugin_size"), build $build s (+ $plugin_build s for the plugin stage, shared by both lines)"
}

# The first failure stops the run (set -e) and the trap cleans up.
for v in $VERSIONS; do
  line "$v"
done
