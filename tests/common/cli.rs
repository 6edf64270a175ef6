//! Running the `tidemark` binary the tests were built with, as a user would.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");

/// Runs `tidemark ARGS` (off the async runtime's threads) and returns what it did.
pub async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap()
}

/// Runs `tidemark ARGS` with `input` on its standard input, through a pipe.
pub async fn run_piped(args: Vec<String>, input: Vec<u8>) -> Output {
    use std::io::Write;
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        out
    })
    .await
    .unwrap()
}

/// Runs `tidemark ARGS` with standard input redirected from the file `input` (as a
/// shell's `< FILE` does: a regular file, not a pipe), read from where `input` stands.
pub async fn run_redirected(args: Vec<String>, input: std::fs::File) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN).args(&args).stdin(input).output().unwrap()
    })
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
