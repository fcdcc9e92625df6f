# shellcheck shell=bash
# Shared helpers for the scripts in scripts/. Source it; don't run it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# After sourcing, the working directory is the repository root and REPO_ROOT,
# VENV and PYTHON are set.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT" || exit 1

VENV="$REPO_ROOT/target/venv"
PYTHON="$VENV/bin/python"

# The Python packages every suite's venv holds (PyPI names): h2 is the HTTP/2 client
# that tests/http2.rs drives WebSockets over HTTP/2 with (tests/http2/ws_over_h2.py).
VENV_PACKAGES=(kosoku websockets h2)

export DEBIAN_FRONTEND=noninteractive
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

banner() {
    printf '\n==== %s ====\n' "$*"
}

info() {
    printf '%s\n' "$*"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

_apt_updated=0

# apt_install PACKAGE...: install Debian packages, refreshing the package index
# once per script run, and only when something actually needs installing.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "cannot install $*: no apt-get on this machine"
    if [[ $_apt_updated == 0 ]]; then
        info "apt-get update (to install $*)"
        apt-get update -qq || die "apt-get update failed (needed to install $*)"
        _apt_updated=1
    fi
    info "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}

# ensure_apt_package BINARY PACKAGE: install the Debian PACKAGE unless BINARY is
# already on PATH.
ensure_apt_package() {
    local binary=$1 package=$2
    command -v "$binary" >/dev/null 2>&1 && return 0
    apt_install "$package"
    command -v "$binary" >/dev/null 2>&1 \
        || die "installed $package but $binary is still not on PATH"
}

# ensure_venv: create target/venv if it is missing or broken, and pip-install
# whichever of VENV_PACKAGES it lacks. A no-op (well under a second) when all
# is in place.
ensure_venv() {
    ensure_apt_package python3 python3
    if [[ -x $PYTHON ]] && ! "$PYTHON" -c '' 2>/dev/null; then
        info "$VENV is broken (its Python moved?); recreating it"
        rm -rf "$VENV"
    fi
    if [[ ! -x $PYTHON ]]; then
        # Debian's own python3 ships venv without ensurepip.
        python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
        info "creating $VENV"
        mkdir -p "$(dirname "$VENV")"
        python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi
    local listed missing
    listed=$("$PYTHON" -c '
import sys
from importlib.metadata import PackageNotFoundError, version
missing = []
for name in sys.argv[1:]:
    try:
        version(name)
    except PackageNotFoundError:
        missing.append(name)
print(" ".join(missing))
' "${VENV_PACKAGES[@]}") || die "could not list the packages installed in $VENV"
    read -ra missing <<<"$listed"
    if ((${#missing[@]})); then
        info "pip install into $VENV: ${missing[*]}"
        "$PYTHON" -m pip install --quiet "${missing[@]}" || die "pip install ${missing[*]} failed"
    fi
}

# free_port: print a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    python3 -c '
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
'
}

# wait_for_port HOST PORT TIMEOUT_SECONDS [PID]: wait until HOST:PORT accepts a
# TCP connection. Fails after the timeout, or as soon as PID (the process that
# should be listening) has exited.
wait_for_port() {
    local host=$1 port=$2 timeout=$3 pid=${4:-}
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            info "process $pid exited before $host:$port accepted connections"
            return 1
        fi
        sleep 0.1
    done
    info "$host:$port did not accept connections within ${timeout}s"
    return 1
}

# stop_process PID: end a process this script started: SIGTERM, a few seconds
# for a graceful exit, then SIGKILL; reaps it.
stop_process() {
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in {1..50}; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# cargo_target_dir: where cargo puts build output (honours CARGO_TARGET_DIR and
# .cargo/config.toml).
cargo_target_dir() {
    cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}
