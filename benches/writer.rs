//! The store's writer alone: verified reports appended with group commit, no TLS, no
//! gRPC — the serial stage of a submission (`docs/architecture.md`, "What is not built
//! yet").
//!
//! `cargo bench --bench writer [-- --reports 20000 --in-flight 64 --rounds 3]`
//!
//! Makes a store in a temp dir with the 20 synthetic states' keys registered, verifies
//! `--reports` synthetic ~1 KiB reports per round up front (Ed25519, validation,
//! digests: not timed), then appends them with `--in-flight` appends waiting at a time
//! and prints, per round, reports/s and the writer thread's CPU time per report (user +
//! system, from `/proc/self/task/<tid>/stat`: the figure to compare between builds, as
//! it moves far less than a rate does on a shared machine). Rounds append to the same
//! store, so later rounds write into larger tables.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use prost::Message;
use tidemark::{
    Store,
    envelope::{self, REPORT_PAYLOAD_TYPE},
    internals, sample,
};

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reports = common::arg("--reports", 20_000);
    let in_flight = common::arg("--in-flight", 64).max(1);
    let rounds = common::arg("--rounds", 3).max(1);
    let bench = common::BenchPki::new();
    let config = bench.config.clone();
    let store = Store::open(&config.store).unwrap();
    let states = common::nodes_of_states(&store);
    let (writer, thread) = common::start_writer(&config, &store);
    let writer_tid = writer_thread_id();

    eprintln!("writer alone: {reports} reports per round, {in_flight} in flight");
    println!("round   reports/s   writer CPU µs/report");
    let mut rng = sample::Rng::new(sample::seed_for(11, "writer"));
    for round in 1..=rounds {
        let mut batch = Vec::with_capacity(reports);
        for i in 0..reports {
            let (state, key, peer) = &states[i % states.len()];
            let report = sample::report(&mut rng, state);
            let signed = envelope::sign(REPORT_PAYLOAD_TYPE, report.encode_to_vec(), key);
            let now = time::OffsetDateTime::now_utc();
            batch.push(internals::verify_submission(Some(&signed), peer, &store, now).unwrap());
        }
        let cpu_before = thread_cpu(writer_tid);
        let started = Instant::now();
        let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
        let mut tasks = Vec::with_capacity(reports);
        for new in batch {
            let permit = permits.clone().acquire_owned().await.unwrap();
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                writer.append(new).await.unwrap();
                drop(permit);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed();
        let cpu = thread_cpu(writer_tid).saturating_sub(cpu_before);
        #[allow(clippy::cast_precision_loss)]
        let n = reports as f64;
        println!(
            "{round:>5} {:>11.0} {:>22.1}",
            n / elapsed.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n
        );
    }
    drop(writer);
    thread.stop().await;
}

/// The id of this process's thread named `tidemark-writer` (a thread takes its name once
/// it runs, so this looks again for a while).
fn writer_thread_id() -> u32 {
    for _ in 0..1000 {
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.trim() == "tidemark-writer" {
                return task.file_name().unwrap().to_str().unwrap().parse().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("no thread named tidemark-writer");
}

/// User plus system CPU time of thread `tid` so far (`proc(5)`: fields 14 and 15 of
/// `stat`, in clock ticks; 100 a second on Linux).
fn thread_cpu(tid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // The command name is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // `after` starts at field 3 (state), so fields 14 and 15 are at 11 and 12.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}
