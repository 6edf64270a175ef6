//! What hostile load does to legitimate clients.
//!
//! `cargo bench --bench abuse [-- --samples 200 --stalled 1000 --subscriptions 1000]`
//!
//! Starts a real server on 127.0.0.1:0 (temp PKI, temp store) and measures, in one run,
//! p50/p99 of (a) a new connection + first WhoAmI and (b) Submit at 16 in flight:
//! - unloaded;
//! - with `--stalled` TCP connections from 127.0.0.2 that send nothing (each re-opened a
//!   second after the server closes it, so the pressure lasts the whole measurement);
//! - with `--subscriptions` idle Subscribe streams open (spread over principals of 16).
//!
//! It prints each scenario's figures and its ratio to the unloaded run (the figure to
//! compare; absolute numbers on 2 shared cores are a floor).

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{BenchPki, arg, ms, percentile};
use prost::Message;
use tidemark::{
    Store,
    client::{self, ClientIdentity},
    country::CountryCode,
    envelope::{self, REPORT_PAYLOAD_TYPE},
    identity::Role,
    pb::{self, exchange_client::ExchangeClient},
    sample,
    server::Server,
    signing::SigningKey,
};
use tokio::net::{TcpListener, TcpSocket};

/// Submits measured per scenario.
const SUBMITS: usize = 800;
const IN_FLIGHT: usize = 16;

struct Figures {
    connect: (Duration, Duration),
    submit: (Duration, Duration),
}

fn p50_p99(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

async fn new_connection_and_call(endpoint: &str, identity: &ClientIdentity) -> Duration {
    let start = Instant::now();
    let channel = client::connect(endpoint, identity).await.unwrap();
    ExchangeClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap();
    start.elapsed()
}

async fn measure(
    endpoint: &str,
    node: &ClientIdentity,
    key: &Arc<SigningKey>,
    samples: usize,
    seed: &mut u64,
) -> Figures {
    let mut connects = Vec::with_capacity(samples);
    for _ in 0..samples {
        connects.push(new_connection_and_call(endpoint, node).await);
    }
    let channel = client::connect(endpoint, node).await.unwrap();
    let mut envelopes = Vec::with_capacity(SUBMITS);
    let mut rng = sample::Rng::new(*seed);
    *seed += 1;
    for _ in 0..SUBMITS {
        let mut report = sample::report(&mut rng, "AUS");
        report.report_id = uuid::Uuid::new_v4().to_string();
        envelopes.push(envelope::sign(
            REPORT_PAYLOAD_TYPE,
            report.encode_to_vec(),
            key,
        ));
    }
    let queue = Arc::new(std::sync::Mutex::new(envelopes));
    let mut workers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (queue, channel) = (queue.clone(), channel.clone());
        workers.push(tokio::spawn(async move {
            let mut exchange = ExchangeClient::new(channel);
            let mut times = Vec::new();
            loop {
                let Some(envelope) = queue.lock().unwrap().pop() else {
                    return times;
                };
                let start = Instant::now();
                exchange
                    .submit(pb::SubmitRequest {
                        envelope: Some(envelope),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                times.push(start.elapsed());
            }
        }));
    }
    let mut submits = Vec::new();
    for w in workers {
        submits.extend(w.await.unwrap());
    }
    Figures {
        connect: p50_p99(connects),
        submit: p50_p99(submits),
    }
}

/// Keeps `count` connections from 127.0.0.2 open and silent, re-opening each a second
/// after the server closes it, until `stop` is set.
fn stall(addr: std::net::SocketAddr, count: usize, stop: &Arc<AtomicBool>) {
    for _ in 0..count {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                if let Ok(mut tcp) = socket.connect(addr).await {
                    let mut byte = [0u8; 1];
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        tokio::io::AsyncReadExt::read(&mut tcp, &mut byte),
                    )
                    .await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

fn print(name: &str, f: &Figures, base: &Figures) {
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "{name:<28} connect+WhoAmI p50 {:>7.2} ms p99 {:>7.2} ms (×{:.2} / ×{:.2})   \
         Submit@{IN_FLIGHT} p50 {:>7.2} ms p99 {:>7.2} ms (×{:.2} / ×{:.2})",
        ms(f.connect.0),
        ms(f.connect.1),
        ratio(f.connect.0, base.connect.0),
        ratio(f.connect.1, base.connect.1),
        ms(f.submit.0),
        ms(f.submit.1),
        ratio(f.submit.0, base.submit.0),
        ratio(f.submit.1, base.submit.1),
    );
}

#[tokio::main]
async fn main() {
    let samples = arg("--samples", 200);
    let stalled = arg("--stalled", 1000);
    let subscriptions = arg("--subscriptions", 1000);
    let mut pki = BenchPki::new();
    pki.config.limits.max_subscriptions_per_principal = 16;
    let store = Store::open(&pki.config.store).unwrap();
    let (key, _) = SigningKey::generate().unwrap();
    let (idn_key, _) = SigningKey::generate().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    common::register_key(&store, "AUS", &key, now);
    common::register_key(&store, "IDN", &idn_key, now);
    drop(store);
    let server = Server::build(pki.config.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.run(listener, std::future::pending()));
    let endpoint = format!("https://{addr}");
    let node = pki.client(Role::Node(CountryCode::parse("AUS").unwrap()), "bench");
    let key = Arc::new(key);
    let mut seed = 1;

    // Warm up, then the unloaded baseline.
    measure(&endpoint, &node, &key, samples / 4, &mut seed).await;
    let base = measure(&endpoint, &node, &key, samples, &mut seed).await;
    print("unloaded", &base, &base);

    let stop = Arc::new(AtomicBool::new(false));
    stall(addr, stalled, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let under_stall = measure(&endpoint, &node, &key, samples, &mut seed).await;
    stop.store(true, Ordering::Relaxed);
    print(
        &format!("{stalled} stalled connections"),
        &under_stall,
        &base,
    );

    // Idle subscriptions of AUS reports, held by IDN nodes, 16 per principal. AUS's own
    // submissions then each wake every subscription. IDN contributes first, to stand.
    let idn_node = pki.client(Role::Node(CountryCode::parse("IDN").unwrap()), "idn");
    let mut idn_exchange =
        ExchangeClient::new(client::connect(&endpoint, &idn_node).await.unwrap());
    let mut rng = sample::Rng::new(99);
    loop {
        let report = sample::report(&mut rng, "IDN");
        if matches!(report.details, Some(pb::report::Details::Maritime(_))) {
            let envelope = envelope::sign(REPORT_PAYLOAD_TYPE, report.encode_to_vec(), &idn_key);
            idn_exchange
                .submit(pb::SubmitRequest {
                    envelope: Some(envelope),
                    ..Default::default()
                })
                .await
                .unwrap();
            break;
        }
    }
    let mut streams = Vec::new();
    for n in 0..subscriptions.div_ceil(16) {
        let idn = pki.client(
            Role::Node(CountryCode::parse("IDN").unwrap()),
            &format!("idn-{n}"),
        );
        let channel = client::connect(&endpoint, &idn).await.unwrap();
        for _ in 0..16.min(subscriptions - streams.len()) {
            let mut exchange = ExchangeClient::new(channel.clone());
            let stream = exchange
                .subscribe(pb::QueryRequest {
                    category: pb::Category::MaritimeMovement as i32,
                    route_countries: vec!["ATA".into()],
                    ..Default::default()
                })
                .await;
            streams.push(stream.unwrap().into_inner());
        }
    }
    let under_subscriptions = measure(&endpoint, &node, &key, samples, &mut seed).await;
    print(
        &format!("{} idle subscriptions", streams.len()),
        &under_subscriptions,
        &base,
    );
}
