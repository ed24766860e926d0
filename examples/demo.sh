#!/bin/sh
# `make demo`: the seed's split example (7.2.4). Starts examples/server.lua in
# the background, waits until its port accepts connections, runs
# examples/client.lua, stops the server by its pid and exits with the client's
# status.  usage: examples/demo.sh [host [port]]   (default 127.0.0.1 7000)
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# SPRINGRUN_BIN: another build of the CLI (make test SANITIZE=1 sets the
# sanitizer build's)
BIN=${SPRINGRUN_BIN:-"$ROOT/bin/springrun"}
HOST=${1:-127.0.0.1}
PORT=${2:-7000}

SERVER=
WAIT=$(mktemp)
cleanup() {
  rm -f "$WAIT"
  if [ -n "$SERVER" ] && kill -0 "$SERVER" 2>/dev/null; then
    kill "$SERVER" 2>/dev/null
    wait "$SERVER" 2>/dev/null
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One connect attempt per run (luv, no shell /dev/tcp): exit 0 when it accepted.
cat >"$WAIT" <<'LUA'
local uv = require "luv"
local tcp, ok = uv.new_tcp(), false
tcp:connect(arg[1], tonumber(arg[2]), function(err) ok = err == nil; tcp:close() end)
uv.run()
os.exit(ok and 0 or 1)
LUA

# Something else already listening there would answer instead of our server.
if "$BIN" "$WAIT" "$HOST" "$PORT" 2>/dev/null; then
  echo "demo: $HOST:$PORT is already in use; try: sh examples/demo.sh $HOST <port>" >&2
  exit 1
fi

"$BIN" "$ROOT/examples/server.lua" "$HOST" "$PORT" &
SERVER=$!

tries=0
until "$BIN" "$WAIT" "$HOST" "$PORT" 2>/dev/null; do
  if ! kill -0 "$SERVER" 2>/dev/null; then
    wait "$SERVER"
    echo "demo: the server exited (status $?) before $HOST:$PORT accepted connections" >&2
    exit 1
  fi
  tries=$((tries + 1))
  if [ "$tries" -ge 100 ]; then
    echo "demo: $HOST:$PORT did not accept connections within 10 s" >&2
    exit 1
  fi
  sleep 0.1
done

"$BIN" "$ROOT/examples/client.lua" "$HOST" "$PORT"
status=$?
exit $status
