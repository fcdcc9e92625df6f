//! Python peers: scripts run with the venv `scripts/test.sh` makes (`target/venv`, with
//! the `websockets` and `h2` packages and kosoku), so that a test talks to a WebSocket
//! implementation nobody here wrote.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The venv's Python. Fails, saying how to make it, when the venv is not there: a test
/// that needs a real peer never skips for want of one.
pub fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let python = target.join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh (its setup step makes the venv) or \
         `source scripts/lib.sh && ensure_venv`",
        python.display()
    );
    python
}

/// Runs `script` with `args` in the venv's Python, within `limit`, and returns its
/// stdout; fails the test with its stderr if it fails.
pub async fn run(script: &str, args: &[String], limit: Duration) -> String {
    let python = python();
    let script = script.to_owned();
    let args = args.to_vec();
    let output = tokio::time::timeout(
        limit,
        tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg("-c")
                .arg(script)
                .args(args)
                .output()
                .expect("runs python")
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("the Python peer did not finish within {limit:?}"))
    .expect("the Python peer's thread");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the Python peer failed ({}):\n{}\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
