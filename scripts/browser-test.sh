#!/usr/bin/env bash
# The chat demo in a real browser: Debian's Chromium, driven by playwright-core,
# opens the example server's chat page twice and checks that a message typed in one
# page appears in the other; then that a page whose socket dropped shows the lines said
# meanwhile once it reconnects, marked as recovered (the server keeps history in every
# channel); then a page served from another port tries to open the chat socket and must
# be refused with 403 (the default config allows only the server's own pages), while the
# server's own page opens it. Installs chromium and playwright-core when missing.
#
# Screenshots: target/browser/chat.png, target/browser/recovery.png
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

readonly WORK_DIR=target/browser
readonly SERVER_LOG=$WORK_DIR/server.log
readonly SERVER_CONFIG=$WORK_DIR/server.toml
readonly PLAYWRIGHT_VERSION=1

server_pid=
cleanup() {
    [[ -z $server_pid ]] || stop_process "$server_pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_apt_package chromium chromium
ensure_apt_package node nodejs
mkdir -p "$WORK_DIR"
if [[ ! -d $WORK_DIR/node_modules/playwright-core ]]; then
    info "npm install playwright-core@$PLAYWRIGHT_VERSION into $WORK_DIR"
    # The browser is Debian's: playwright must not download one of its own.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund \
        --prefix "$WORK_DIR" "playwright-core@$PLAYWRIGHT_VERSION" \
        || die "npm install playwright-core failed"
fi

info "building the example server (release)"
cargo build --release --example server || die "cargo build --release --example server failed"
port=$(free_port) || die "could not find a free port on 127.0.0.1"
# The defaults, and history in every channel, so that the chat page recovers what it
# missed.
cat >"$SERVER_CONFIG" <<'TOML'
[hub.channels."*"]
history_size = 100
history_ttl = "10m"
TOML
"$(cargo_target_dir)/release/examples/server" --config "$SERVER_CONFIG" --bind "127.0.0.1:$port" \
    >"$SERVER_LOG" 2>&1 </dev/null &
server_pid=$!
if ! wait_for_port 127.0.0.1 "$port" 30 "$server_pid"; then
    tail -n 40 "$SERVER_LOG" || true
    die "the example server did not start on 127.0.0.1:$port"
fi

# ES modules resolve packages next to the importing file, so run a copy from beside
# node_modules.
cp tests/browser/launch.mjs tests/browser/chat.mjs tests/browser/recovery.mjs \
    tests/browser/origin.mjs "$WORK_DIR/"
timeout 120 node "$WORK_DIR/chat.mjs" "http://127.0.0.1:$port/" "$WORK_DIR/chat.png" \
    || die "the chat browser test failed (server log: $SERVER_LOG)"
timeout 120 node "$WORK_DIR/recovery.mjs" "http://127.0.0.1:$port/" "$WORK_DIR/recovery.png" \
    || die "the recovery browser test failed (server log: $SERVER_LOG)"
timeout 120 node "$WORK_DIR/origin.mjs" "http://127.0.0.1:$port/" \
    || die "the origin browser test failed (server log: $SERVER_LOG)"
# The server's side of it: the refusal is in its log, with its status.
grep -q 'websocket handshake refused status=403 path="/ws"' "$SERVER_LOG" \
    || die "the server did not log the cross-origin refusal (server log: $SERVER_LOG)"
