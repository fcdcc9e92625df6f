#!/usr/bin/env bash
# Autobahn TestSuite, client side: kosoku's fuzzing server serves every case but
# EXCLUDED_CASES (none: permessage-deflate's 12.* and 13.* included),
# examples/autobahn_client.rs drives estuary::client through them (getCaseCount,
# runCase echoing every message, updateReports), and this script fails unless
# exactly kosoku's other cases ran and every one is OK or INFORMATIONAL, in its
# behavior and its closing handshake (scripts/autobahn_report.py).
#
# Environment:
#   AUTOBAHN_TIMEOUT     seconds the client's run may take (default 900)
#
# Reports: target/autobahn/client/index.html (open it in a browser), index.json.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# kosoku -x patterns; the report expects kosoku's case list less these. Empty: all
# 517 cases of kosoku 0.1.0.
readonly EXCLUDED_CASES=()
readonly START_TIMEOUT=30
readonly RUN_TIMEOUT=${AUTOBAHN_TIMEOUT:-900}
# How long kosoku may take to write its reports once the client is done.
readonly REPORT_TIMEOUT=120
readonly WORK_DIR=target/autobahn
readonly OUT_DIR=$WORK_DIR/client
readonly KOSOKU_LOG=$WORK_DIR/fuzzingserver.log

kosoku_pid=
client_pid=

cleanup() {
    [[ -z $client_pid ]] || stop_process "$client_pid"
    [[ -z $kosoku_pid ]] || stop_process "$kosoku_pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_kosoku_log() {
    info "---- last 40 lines of $KOSOKU_LOG ----"
    tail -n 40 "$KOSOKU_LOG" || true
    info "---- end of kosoku log ----"
}

ensure_venv
ensure_apt_package timeout coreutils

info "building the Autobahn client driver (release)"
cargo build --release --features client --example autobahn_client \
    || die "cargo build --release --features client --example autobahn_client failed"
driver="$(cargo_target_dir)/release/examples/autobahn_client"
[[ -x $driver ]] || die "the build left no executable at $driver"

mkdir -p "$WORK_DIR"
rm -rf "$OUT_DIR"
port=$(free_port) || die "could not find a free port on 127.0.0.1"

exclude_args=()
for pattern in "${EXCLUDED_CASES[@]}"; do
    exclude_args+=(-x "$pattern")
done
info "starting: kosoku -m fuzzingserver 127.0.0.1:$port, excluded: ${EXCLUDED_CASES[*]:-none} (log: $KOSOKU_LOG)"
"$VENV/bin/kosoku" -m fuzzingserver "127.0.0.1:$port" "${exclude_args[@]}" -o "$OUT_DIR" \
    >"$KOSOKU_LOG" 2>&1 </dev/null &
kosoku_pid=$!
if ! wait_for_port 127.0.0.1 "$port" "$START_TIMEOUT" "$kosoku_pid"; then
    show_kosoku_log
    die "kosoku's fuzzing server did not start listening on 127.0.0.1:$port"
fi

info "$driver --url ws://127.0.0.1:$port (limit ${RUN_TIMEOUT}s)"
started=$SECONDS
client_status=0
# In the background so that a TERM or INT reaches the traps at once.
timeout "$RUN_TIMEOUT" "$driver" --url "ws://127.0.0.1:$port" --agent estuary &
client_pid=$!
wait "$client_pid" || client_status=$?
client_pid=
info "the client finished in $((SECONDS - started))s (exit status $client_status)"
if [[ $client_status == 124 ]]; then
    die "the client did not finish within ${RUN_TIMEOUT}s (AUTOBAHN_TIMEOUT)"
fi

# kosoku writes the reports and exits once the client has asked for updateReports;
# its exit status is 1 when a case failed, which the report check below explains.
kosoku_status=0
timeout "$REPORT_TIMEOUT" tail --pid="$kosoku_pid" -f /dev/null || true
if kill -0 "$kosoku_pid" 2>/dev/null; then
    show_kosoku_log
    die "kosoku did not exit within ${REPORT_TIMEOUT}s of the client's run"
fi
wait "$kosoku_pid" || kosoku_status=$?
kosoku_pid=
info "kosoku exited (status $kosoku_status)"
if [[ ! -f $OUT_DIR/index.json ]]; then
    show_kosoku_log
    die "kosoku wrote no $OUT_DIR/index.json (exit status $kosoku_status)"
fi

"$PYTHON" scripts/autobahn_report.py "$OUT_DIR" client "${exclude_args[@]}"
((client_status == 0)) || die "the client driver failed (exit status $client_status, see above)"
