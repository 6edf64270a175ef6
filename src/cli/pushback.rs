//! Waiting out a server's pushback: a call refused RESOURCE_EXHAUSTED with a
//! `grpc-retry-pushback-ms` (gRFC A6) — its caller's budget of reads or lookups is spent
//! for now — is made again once that time has passed, so that a long command continues
//! rather than ends half-written.

use std::{future::Future, time::Duration};

/// Makes a call with `call`, waiting out the server's pushback a few times, at most two
/// minutes each; says on stderr what it waits for (`what`: "reads", "lookups").
pub(super) async fn waiting_out<T, Fut: Future<Output = Result<T, tonic::Status>>>(
    what: &str,
    mut call: impl FnMut() -> Fut,
) -> Result<T, tonic::Status> {
    for _ in 0..5 {
        match call().await {
            Err(status) if pushback(&status).is_some() => {
                let wait = pushback(&status).unwrap_or_default();
                errln!(
                    "the server's budget of {what} for this certificate is spent for now; \
                     continuing in {}",
                    tidemark::clock::format_wait(wait)
                );
                tokio::time::sleep(wait).await;
            }
            answered => return answered,
        }
    }
    call().await
}

/// How long the server asks a refused call to wait, if it says so and it is at most two
/// minutes.
fn pushback(status: &tonic::Status) -> Option<Duration> {
    let ms: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    (status.code() == tonic::Code::ResourceExhausted && ms <= 120_000)
        .then(|| Duration::from_millis(ms))
}
