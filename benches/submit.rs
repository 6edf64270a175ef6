//! Submit throughput over mTLS against a trivial RPC on the same server.
//!
//! `cargo bench --bench submit [-- --seconds 3 --rounds 3 --levels 1,16,64]`
//!
//! Starts a real server on 127.0.0.1:0 (temp PKI, temp store), pre-signs ~1 KiB
//! reports, then for each concurrency level measures, in the same run:
//! - the baseline: `WhoAmI` (authenticated, no payload, no store) calls/s;
//! - signed, validated, durable `Submit` calls/s;
//!
//! and prints the ratio. Client and server share this machine's cores, so the absolute
//! numbers are a floor; the ratio is the figure to compare between runs.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use prost::Message;
use tidemark::{
    KeyRecord,
    client::{self},
    country::CountryCode,
    envelope::{self, REPORT_PAYLOAD_TYPE},
    identity::Role,
    pb::{self, exchange_client::ExchangeClient},
    sample,
    server::Server,
    signing::SigningKey,
};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Target size of a report payload.
const REPORT_BYTES: usize = 1024;
/// Connections the load is spread over (calls multiplex on each).
const CONNECTIONS: usize = 4;

struct Options {
    seconds: u64,
    levels: Vec<usize>,
    rounds: usize,
}

fn options() -> Options {
    let mut opts = Options {
        seconds: 3,
        levels: vec![1, 16, 64],
        rounds: 3,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--seconds" => {
                opts.seconds = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(5);
                i += 1;
            }
            "--levels" => {
                opts.levels = args
                    .get(i + 1)
                    .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
                    .unwrap_or_default();
                i += 1;
            }
            "--rounds" => {
                opts.rounds = args
                    .get(i + 1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(3)
                    .max(1);
                i += 1;
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    opts
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = options();
    let bench = common::BenchPki::new();
    let config = bench.config.clone();

    let aus = CountryCode::parse("AUS").unwrap();
    let (signing, _) = SigningKey::generate().unwrap();
    let server = Server::build(config).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let public = signing.public_key();
    server
        .store()
        .register_signing_key(&KeyRecord::new(
            public.key_id(),
            "AUS",
            public.raw(),
            now - 60,
            0,
            now,
        ))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));

    let identity = bench.client(Role::Node(aus), "bench-1");
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(client::connect(&endpoint, &identity).await.unwrap());
    }

    let max_level = opts.levels.iter().copied().max().unwrap_or(1);
    let pool_size = 200_000.max(max_level * 100);
    eprintln!("pre-signing {pool_size} reports of ~{REPORT_BYTES} bytes…");
    let pool = Arc::new(presign(pool_size, &signing));
    let next = Arc::new(AtomicUsize::new(0));

    println!(
        "Submit vs WhoAmI over mTLS, {} s per measurement, {} rounds, {CONNECTIONS} connections",
        opts.seconds, opts.rounds
    );
    println!(
        "{:>11} {:>14} {:>14} {:>7}",
        "concurrency", "WhoAmI/s", "Submit/s", "ratio"
    );
    for &level in &opts.levels {
        let duration = Duration::from_secs(opts.seconds);
        let mut ratios = Vec::new();
        for _ in 0..opts.rounds {
            let baseline = drive(&channels, level, duration, |mut c, _| async move {
                c.who_am_i(pb::WhoAmIRequest {}).await.is_ok()
            })
            .await;
            let (pool, next) = (pool.clone(), next.clone());
            let submits = drive(&channels, level, duration, move |mut c, _| {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let envelope = pool.get(index).cloned();
                async move {
                    let Some(envelope) = envelope else {
                        eprintln!("the pool of pre-signed reports ran out: use fewer --seconds or --rounds");
                        return false;
                    };
                    c.submit(pb::SubmitRequest {
                        envelope: Some(envelope), ..Default::default()
                    })
                    .await
                    .is_ok()
                }
            })
            .await;
            println!(
                "{level:>11} {baseline:>14.0} {submits:>14.0} {:>6.2}x",
                submits / baseline
            );
            ratios.push(submits / baseline);
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "{level:>11} median ratio over {} rounds: {:.2}x",
            opts.rounds,
            ratios[ratios.len() / 2]
        );
    }
    let _ = stop.send(());
    let _ = server_task.await;
}

/// Signed ~1 KiB sample reports, each with its own id.
fn presign(count: usize, key: &SigningKey) -> Vec<pb::Envelope> {
    let mut rng = sample::Rng::new(42);
    (0..count)
        .map(|_| {
            let mut report = sample::report(&mut rng, "AUS");
            let size = report.encoded_len();
            if size < REPORT_BYTES {
                report.narrative.push_str(&" ".repeat(REPORT_BYTES - size));
            }
            envelope::sign(REPORT_PAYLOAD_TYPE, report.encode_to_vec(), key)
        })
        .collect()
}

/// Runs `level` concurrent callers for `duration`; returns successful calls per second.
/// A failed call stops the benchmark: a fast error is not throughput.
async fn drive<F, Fut>(channels: &[Channel], level: usize, duration: Duration, call: F) -> f64
where
    F: Fn(ExchangeClient<Channel>, usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..level {
        let client = ExchangeClient::new(channels[worker % channels.len()].clone());
        let (call, done) = (call.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < duration {
                assert!(
                    call(client.clone(), worker).await,
                    "a call failed during the benchmark"
                );
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    #[allow(clippy::cast_precision_loss)] // call counts are far below 2^52
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    rate
}
