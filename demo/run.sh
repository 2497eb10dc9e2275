#!/usr/bin/env bash
# make demo: build smtpout.so, start mailpit on 127.0.0.1, run Fluent Bit with the demo pipeline,
# and show where the emails are. Needs a fluent-bit binary ($FLUENT_BIT or on PATH); without one
# it says so and points at `docker compose up --build`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
smtp_port=${DEMO_SMTP_PORT:-1465}
ui_port=${DEMO_UI_PORT:-8025}

fb=${FLUENT_BIT:-$(command -v fluent-bit || true)}
if [ -z "$fb" ] || [ ! -x "$fb" ]; then
  echo "make demo: no fluent-bit binary found (set FLUENT_BIT=/path/to/fluent-bit or put it on PATH)."
  echo "Without one, run the same demo in Docker:  docker compose up --build   then open http://localhost:${ui_port}"
  exit 1
fi

make -s smtpout.so mailpit
mailpit=${MAILPIT:-$root/bin/mailpit}
work=$(mktemp -d)
cleanup() { kill "${fb_pid:-}" "${mp_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

"$mailpit" --smtp "127.0.0.1:${smtp_port}" --listen "127.0.0.1:${ui_port}" \
  --smtp-tls-cert "$root/demo/tls/mailpit.pem" --smtp-tls-key "$root/demo/tls/mailpit-key.pem" --smtp-require-tls \
  --smtp-auth-accept-any --disable-version-check --smtp-disable-rdns --database "$work/mailpit.db" \
  >"$work/mailpit.log" 2>&1 &
mp_pid=$!
for _ in $(seq 1 50); do
  if curl -fsS "http://127.0.0.1:${ui_port}/readyz" >/dev/null 2>&1; then break; fi
  sleep 0.2
done

echo "mailpit: http://127.0.0.1:${ui_port}  (SMTP with implicit TLS on 127.0.0.1:${smtp_port})"
DEMO_DIR="$root/demo" SMTP_HOST="localhost:${smtp_port}" \
  "$fb" -e "$root/smtpout.so" -c "$root/demo/fluent-bit.conf" &
fb_pid=$!
echo "fluent-bit is running (pid $fb_pid); three sample detections are on their way."
echo "Open http://127.0.0.1:${ui_port} to read them. Press Ctrl-C to stop."
wait "$fb_pid"
