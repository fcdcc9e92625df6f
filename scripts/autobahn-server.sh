#!/usr/bin/env bash
# Autobahn TestSuite, server side: kosoku's fuzzing client drives the example
# server's /echo route (scripts/autobahn-server.toml) through every case but
# EXCLUDED_CASES (none: permessage-deflate's 12.* and 13.* included), and this
# script fails unless exactly kosoku's other cases ran and every one is OK or
# INFORMATIONAL, in its behavior and its closing handshake
# (scripts/autobahn_report.py).
#
# Environment:
#   AUTOBAHN_SERVER_CMD  run this command instead of building the example server;
#                        it gets `--bind 127.0.0.1:PORT` appended and must echo on
#                        /echo (e.g. to check a reference server the same way)
#   AUTOBAHN_TIMEOUT     seconds the kosoku run may take (default 900)
#
# Reports: target/autobahn/server/index.html (open it in a browser), index.json.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# kosoku -x patterns; the report expects kosoku's case list less these. Empty: all
# 517 cases of kosoku 0.1.0.
readonly EXCLUDED_CASES=()
readonly START_TIMEOUT=30
readonly RUN_TIMEOUT=${AUTOBAHN_TIMEOUT:-900}
readonly WORK_DIR=target/autobahn
readonly OUT_DIR=$WORK_DIR/server
readonly SERVER_LOG=$WORK_DIR/server.log

server_pid=
kosoku_pid=

cleanup() {
    [[ -z $kosoku_pid ]] || stop_process "$kosoku_pid"
    [[ -z $server_pid ]] || stop_process "$server_pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_server_log() {
    info "---- last 40 lines of $SERVER_LOG ----"
    tail -n 40 "$SERVER_LOG" || true
    info "---- end of server log ----"
}

ensure_venv
ensure_apt_package timeout coreutils

if [[ -n ${AUTOBAHN_SERVER_CMD:-} ]]; then
    read -ra server_cmd <<<"$AUTOBAHN_SERVER_CMD"
    info "server under test: $AUTOBAHN_SERVER_CMD (from AUTOBAHN_SERVER_CMD)"
else
    info "building the example server (release)"
    cargo build --release --example server || die "cargo build --release --example server failed"
    server_cmd=("$(cargo_target_dir)/release/examples/server" --config scripts/autobahn-server.toml)
    [[ -x ${server_cmd[0]} ]] || die "the build left no executable at ${server_cmd[0]}"
fi

mkdir -p "$WORK_DIR"
rm -rf "$OUT_DIR"
port=$(free_port) || die "could not find a free port on 127.0.0.1"
url="ws://127.0.0.1:$port/echo"

info "starting: ${server_cmd[*]} --bind 127.0.0.1:$port (log: $SERVER_LOG)"
"${server_cmd[@]}" --bind "127.0.0.1:$port" >"$SERVER_LOG" 2>&1 </dev/null &
server_pid=$!
if ! wait_for_port 127.0.0.1 "$port" "$START_TIMEOUT" "$server_pid"; then
    show_server_log
    die "the server under test did not start listening on 127.0.0.1:$port"
fi

exclude_args=()
for pattern in "${EXCLUDED_CASES[@]}"; do
    exclude_args+=(-x "$pattern")
done
info "kosoku $url (parallelism 8, excluded: ${EXCLUDED_CASES[*]:-none}, limit ${RUN_TIMEOUT}s)"
started=$SECONDS
kosoku_status=0
# In the background so that a TERM or INT reaches the traps at once, not when
# kosoku is done.
timeout "$RUN_TIMEOUT" "$VENV/bin/kosoku" "$url" -p 8 "${exclude_args[@]}" -o "$OUT_DIR" &
kosoku_pid=$!
wait "$kosoku_pid" || kosoku_status=$?
kosoku_pid=
info "kosoku finished in $((SECONDS - started))s (exit status $kosoku_status)"

if ! kill -0 "$server_pid" 2>/dev/null; then
    show_server_log
    die "the server under test exited during the run"
fi
if [[ $kosoku_status == 124 ]]; then
    die "kosoku did not finish within ${RUN_TIMEOUT}s (AUTOBAHN_TIMEOUT)"
fi
[[ -f $OUT_DIR/index.json ]] \
    || die "kosoku wrote no $OUT_DIR/index.json (exit status $kosoku_status)"

"$PYTHON" scripts/autobahn_report.py "$OUT_DIR" server "${exclude_args[@]}"
