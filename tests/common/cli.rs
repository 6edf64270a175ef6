//! Running the `tidemark` binary the tests were built with, as a user would.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

/// Runs `tidemark ARGS` (off the async runtime's threads) and returns what it did.
pub async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap()
}

/// Runs `tidemark ARGS`; it must succeed (else the test fails showing its stderr).
/// Returns its stdout.
pub async fn run_ok(args: Vec<String>) -> String {
    let out = run(args).await;
    assert_ok(&out);
    String::from_utf8(out.stdout).unwrap()
}

/// The command succeeded; if not, show what it said.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Owned arguments.
pub fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
