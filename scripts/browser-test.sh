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
readonly TLS_SERVER_LOG=$WORK_DIR/tls-server.log
readonly PKI_DIR=$WORK_DIR/pki
readonly NSS_HOME=$WORK_DIR/nss-home
readonly SERVER_CONFIG=$WORK_DIR/server.toml
readonly PLAYWRIGHT_VERSION=1

server_pid=
tls_server_pid=
cleanup() {
    [[ -z $server_pid ]] || stop_process "$server_pid"
    [[ -z $tls_server_pid ]] || stop_process "$tls_server_pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_apt_package chromium chromium
ensure_apt_package node nodejs
ensure_apt_package openssl openssl
ensure_apt_package certutil libnss3-tools
mkdir -p "$WORK_DIR"
if [[ ! -d $WORK_DIR/node_modules/playwright-core ]]; then
    info "npm install playwright-core@$PLAYWRIGHT_VERSION into $WORK_DIR"
    # The browser is Debian's: playwright must not download one of its own.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund \
        --prefix "$WORK_DIR" "playwright-core@$PLAYWRIGHT_VERSION" \
        || die "npm install playwright-core failed"
fi

info "building the example server (release, with TLS)"
cargo build --release --features tls --example server \
    || die "cargo build --release --features tls --example server failed"
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
    tests/browser/origin.mjs tests/browser/http2.mjs "$WORK_DIR/"
timeout 120 node "$WORK_DIR/chat.mjs" "http://127.0.0.1:$port/" "$WORK_DIR/chat.png" \
    || die "the chat browser test failed (server log: $SERVER_LOG)"
timeout 120 node "$WORK_DIR/recovery.mjs" "http://127.0.0.1:$port/" "$WORK_DIR/recovery.png" \
    || die "the recovery browser test failed (server log: $SERVER_LOG)"
timeout 120 node "$WORK_DIR/origin.mjs" "http://127.0.0.1:$port/" \
    || die "the origin browser test failed (server log: $SERVER_LOG)"
# The server's side of it: the refusal is in its log, with its status.
grep -q 'websocket handshake refused status=403 path="/ws"' "$SERVER_LOG" \
    || die "the server did not log the cross-origin refusal (server log: $SERVER_LOG)"

# WebSockets over HTTP/2. A CA for this run, and a certificate for 127.0.0.1 it signs.
rm -rf "$PKI_DIR" "$NSS_HOME"
mkdir -p "$PKI_DIR" "$NSS_HOME/.pki/nssdb"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=estuary browser test CA" -keyout "$PKI_DIR/ca.key" -out "$PKI_DIR/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    2>/dev/null || die "openssl could not make the test CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$PKI_DIR/server.key" -out "$PKI_DIR/server.csr" 2>/dev/null \
    || die "openssl could not make the server key"
printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$PKI_DIR/server.ext"
openssl x509 -req -in "$PKI_DIR/server.csr" -CA "$PKI_DIR/ca.pem" -CAkey "$PKI_DIR/ca.key" \
    -CAcreateserial -days 2 -extfile "$PKI_DIR/server.ext" -out "$PKI_DIR/server.pem" \
    2>/dev/null || die "openssl could not sign the server certificate"
# Chromium on Linux trusts the roots in $HOME/.pki/nssdb: a store of this test's own.
certutil -d "sql:$NSS_HOME/.pki/nssdb" -N --empty-password \
    || die "certutil could not create the NSS store"
certutil -d "sql:$NSS_HOME/.pki/nssdb" -A -t "C,," -n "estuary browser test CA" \
    -i "$PKI_DIR/ca.pem" || die "certutil could not add the test CA"
printf '[tls]\ncert = "%s"\nkey = "%s"\n' "$PWD/$PKI_DIR/server.pem" "$PWD/$PKI_DIR/server.key" \
    >"$WORK_DIR/tls.toml"

tls_port=$(free_port) || die "could not find a free port on 127.0.0.1"
# Debug logs for estuary: every socket's lines carry its span, which names its HTTP version.
RUST_LOG=info,estuary=debug "$(cargo_target_dir)/release/examples/server" \
    --config "$WORK_DIR/tls.toml" --bind "127.0.0.1:$tls_port" >"$TLS_SERVER_LOG" 2>&1 </dev/null &
tls_server_pid=$!
if ! wait_for_port 127.0.0.1 "$tls_port" 30 "$tls_server_pid"; then
    tail -n 40 "$TLS_SERVER_LOG" || true
    die "the example server with [tls] did not start on 127.0.0.1:$tls_port"
fi
HOME="$PWD/$NSS_HOME" timeout 120 node "$WORK_DIR/http2.mjs" "https://127.0.0.1:$tls_port/" \
    || die "the HTTP/2 browser test failed (server log: $TLS_SERVER_LOG)"
# The server's side of it: the echo session ran on an HTTP/2 stream.
grep -q 'http=HTTP/2.0.*websocket closed' "$TLS_SERVER_LOG" \
    || die "the server did not log an HTTP/2 WebSocket session (server log: $TLS_SERVER_LOG)"
info "browser: the page's WebSocket went over HTTP/2, as the server's log shows"
