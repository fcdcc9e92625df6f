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
