#!/usr/bin/env bash
# The one test command: installs what is missing, then runs every suite.
# Every step runs even when an earlier one failed, so one run shows all that is
# wrong; the run fails if any step did. The last line is `N passed, N failed`,
# counting steps, for CI to read.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

passed=()
failed=()
timings=()

# step NAME COMMAND...: run COMMAND as one step of the run. It runs in a
# subshell with errexit live (not under `if`, which would switch errexit off
# inside it), so a step that is a function stops at its first failing command.
step() {
    local name=$1 started=$SECONDS status verdict=ok
    shift
    banner "$name"
    set +e
    (
        set -e
        "$@"
    )
    status=$?
    set -e
    if ((status == 0)); then
        passed+=("$name")
    else
        failed+=("$name")
        verdict="FAILED (exit status $status)"
        printf '\nFAILED: step "%s" (exit status %s), see the output above\n' "$name" "$status" >&2
    fi
    timings+=("$(printf '%-10s %5ss  %s' "$name" $((SECONDS - started)) "$verdict")")
}

setup() {
    ensure_apt_package timeout coreutils
    ensure_apt_package taskset util-linux
    # tests/cluster.rs and the example server's [redis] test start their own.
    ensure_apt_package redis-server redis-server
    ensure_venv
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt \
        || die "cargo fmt is missing, and rustup could not add the rustfmt component"
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy \
        || die "cargo clippy is missing, and rustup could not add the clippy component"
    info "tools: $(cargo --version), $("$PYTHON" --version)," \
        "kosoku $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("kosoku"))')"
}

step setup setup
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets --all-features -- -D warnings
step doc env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps
# `cargo publish --dry-run` of every publishable crate, which must print no warning but
# the dry run's own (a missing manifest field, a file left out, a dirty tree).
publish_dry_run() {
    local log
    log=$(mktemp)
    cargo publish --dry-run --workspace 2>&1 | tee "$log"
    local warnings
    warnings=$(grep '^warning:' "$log" | grep -v '^warning: aborting upload due to dry run$' || true)
    rm -f "$log"
    if [[ -n $warnings ]]; then
        printf 'cargo publish --dry-run warned:\n%s\n' "$warnings" >&2
        return 1
    fi
}

# The minimum supported Rust version, as far as one toolchain can check it: no
# dependency needs a newer Rust than Cargo.toml's rust-version says, and no use of the
# standard library is newer than it.
msrv() {
    python3 scripts/msrv.py
    cargo clippy --workspace --all-features --lib -- -D clippy::incompatible_msrv
}

step publish publish_dry_run
step msrv msrv
step test cargo test --workspace --all-features --no-fail-fast
step autobahn scripts/autobahn-server.sh
step autobahn-client scripts/autobahn-client.sh
step browser scripts/browser-test.sh

banner "summary"
printf '%s\n' "${timings[@]}"
if ((${#failed[@]})); then
    info "failed steps: ${failed[*]}"
fi
printf '%d passed, %d failed\n' "${#passed[@]}" "${#failed[@]}"
((${#failed[@]} == 0))
