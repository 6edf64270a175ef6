//! Aggregate latency: Tidemark's write-time counters and its scan of the columnar
//! projection, against SQLite (same run) and DuckDB (`benches/duckdb_compare.py`) running
//! the equivalent GROUP BY over the same rows.
//!
//! `cargo bench --bench aggregate [-- --reports 1000000 --runs 200 --store PATH
//! --export DIR --cache-mib N --only TEXT]`
//!
//! With `--store PATH`, a store loaded by an earlier run is reused (loading a million
//! reports takes minutes); a missing or empty one is loaded and kept there, with the
//! receipt key that signs its transparency log in `PATH.receipt-key.pem`. With
//! `--export DIR`, the rows and our p50s are written to `DIR` for the DuckDB script:
//! `python3 benches/duckdb_compare.py DIR` (after `pip install duckdb`).
//!
//! Loads synthetic reports from 20 states through the real submission path (verify,
//! validate, group commit with the counters), prints the server's start-up time and the
//! projection's size per report and the resident set after start-up and after a scan,
//! copies the same rows (month, quarter, state, origin, destination, vessel type,
//! persons, deaths) into an SQLite file, and measures p50/p99 of:
//! - `--by month,route --metric persons --from 2024-01 --to 2024-12` (counters);
//! - `--by quarter,state,origin --metric reports,persons,deaths` (counters, 3 dimensions);
//! - `--by origin,vessel-type --metric persons` (two counted dimensions: a scan);
//! - `--by year,state --metric persons --nationality AFG` (a scan);
//! - `--by origin --metric persons --bbox -10,110,0,125` (a scan);
//! - `--by route --metric fee` (fee quartiles per currency: a scan).
//!
//! Tidemark's figure is the whole in-process answer — snapshot, table, margins,
//! disclosure control (perturbed, as a state analyst gets it), response — and, for the
//! first query, also the full gRPC call over mTLS as the regional analyst. SQLite's and
//! DuckDB's are the bare GROUP BY (no margins, no suppression); SQLite's without and
//! with a covering index.
//!
//! For each query it also prints what disclosure control costs: the mean absolute
//! relative error of the perturbed figures on cells of at least 20 reports, and the
//! share of cells withheld without and with perturbation, and a digest of the exact and
//! the perturbed answer: two builds that must answer alike (a speed-up) print the same.

mod common;

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use rusqlite::Connection;
use tidemark::{
    Store,
    analytics::{self, AggregateQuery, Audience, Settings},
    client,
    config::AnalyticsConfig,
    identity::Role,
    internals::month_of_day,
    pb::{self, analytics_client::AnalyticsClient},
    server::Server,
};
use tokio::net::TcpListener;

struct Query {
    name: &'static str,
    request: pb::AggregateRequest,
    /// SQLite's GROUP BY, its covering index, month bounds for `?1` and `?2` when it
    /// has them, and the result column holding SUM(persons); `None` for the shapes only
    /// compared with DuckDB.
    sqlite: Option<Sqlite>,
    /// The same GROUP BY for DuckDB over the exported rows (`benches/duckdb_compare.py`).
    duckdb: &'static str,
}

struct Sqlite {
    sql: &'static str,
    index: &'static str,
    months: Option<(u32, u32)>,
    /// The column of `SUM(persons)`; `COUNT(*)` is the one before it.
    persons_column: usize,
}

/// Every query the bench times.
fn queries() -> Vec<Query> {
    let mut all = grouped_queries();
    all.extend(filtered_queries());
    all
}

/// The shapes SQLite is compared on too.
fn grouped_queries() -> Vec<Query> {
    let month = |y: u32, m: u32| y * 12 + m - 1;
    vec![
        Query {
            name: "month x route, persons, 2024",
            request: pb::AggregateRequest {
                group_by: vec![pb::Dimension::Month as i32, pb::Dimension::Route as i32],
                metrics: vec![pb::Metric::Persons as i32],
                filter: Some(pb::AggregateFilter {
                    from_date: "2024-01-01".into(),
                    to_date: "2024-12-31".into(),
                    ..Default::default()
                }),
            },
            sqlite: Some(Sqlite {
                sql: "SELECT month, origin, destination, COUNT(*), SUM(persons) FROM reports \
                      WHERE month BETWEEN ?1 AND ?2 GROUP BY month, origin, destination",
                index: "CREATE INDEX q1 ON reports (month, origin, destination, persons)",
                months: Some((month(2024, 1), month(2024, 12))),
                persons_column: 4,
            }),
            duckdb: "SELECT month, origin, destination, COUNT(*), SUM(persons) FROM reports \
                     WHERE year = 2024 GROUP BY month, origin, destination",
        },
        Query {
            name: "quarter x state x origin, reports/persons/deaths",
            request: pb::AggregateRequest {
                group_by: vec![
                    pb::Dimension::Quarter as i32,
                    pb::Dimension::ReportingState as i32,
                    pb::Dimension::Origin as i32,
                ],
                metrics: vec![
                    pb::Metric::Reports as i32,
                    pb::Metric::Persons as i32,
                    pb::Metric::Deaths as i32,
                ],
                filter: None,
            },
            sqlite: Some(Sqlite {
                sql: "SELECT quarter, state, origin, COUNT(*), SUM(persons), SUM(deaths) \
                      FROM reports GROUP BY quarter, state, origin",
                index: "CREATE INDEX q3 ON reports (quarter, state, origin, persons, deaths)",
                months: None,
                persons_column: 4,
            }),
            duckdb: "SELECT quarter, state, origin, COUNT(*), SUM(persons), SUM(deaths) \
                     FROM reports GROUP BY quarter, state, origin",
        },
        Query {
            name: "origin x vessel type, persons (scan)",
            request: pb::AggregateRequest {
                group_by: vec![
                    pb::Dimension::Origin as i32,
                    pb::Dimension::VesselType as i32,
                ],
                metrics: vec![pb::Metric::Persons as i32],
                filter: None,
            },
            sqlite: Some(Sqlite {
                sql: "SELECT origin, vessel, COUNT(*), SUM(persons) FROM reports \
                      GROUP BY origin, vessel",
                index: "CREATE INDEX qs ON reports (origin, vessel, persons)",
                months: None,
                persons_column: 3,
            }),
            duckdb: "SELECT origin, vessel, COUNT(*), SUM(persons) FROM reports \
                     GROUP BY origin, vessel",
        },
    ]
}

/// The shapes only a scan answers, compared with DuckDB only.
fn filtered_queries() -> Vec<Query> {
    vec![
        Query {
            name: "year x state, persons, nationality AFG (scan)",
            request: pb::AggregateRequest {
                group_by: vec![
                    pb::Dimension::Year as i32,
                    pb::Dimension::ReportingState as i32,
                ],
                metrics: vec![pb::Metric::Persons as i32],
                filter: Some(pb::AggregateFilter {
                    nationalities: vec!["AFG".into()],
                    ..Default::default()
                }),
            },
            sqlite: None,
            duckdb: "SELECT year, state, COUNT(*), SUM(persons) FROM reports \
                     WHERE list_contains(nationalities, 'AFG') GROUP BY year, state",
        },
        Query {
            name: "origin, persons, bounding box (scan)",
            request: pb::AggregateRequest {
                group_by: vec![pb::Dimension::Origin as i32],
                metrics: vec![pb::Metric::Persons as i32],
                filter: Some(pb::AggregateFilter {
                    bbox: Some(pb::BoundingBox {
                        min_latitude: -10.0,
                        min_longitude: 110.0,
                        max_latitude: 0.0,
                        max_longitude: 125.0,
                    }),
                    ..Default::default()
                }),
            },
            sqlite: None,
            duckdb: "SELECT origin, COUNT(*), SUM(persons) FROM reports \
                     WHERE latitude BETWEEN -10 AND 0 AND longitude BETWEEN 110 AND 125 \
                     GROUP BY origin",
        },
        Query {
            name: "route, fee quartiles",
            request: pb::AggregateRequest {
                group_by: vec![pb::Dimension::Route as i32],
                metrics: vec![pb::Metric::FeePerPerson as i32],
                filter: None,
            },
            sqlite: None,
            duckdb: "SELECT origin, destination, fee_currency, COUNT(*), \
                     quantile_cont(fee_amount, [0.25, 0.5, 0.75]) FROM reports \
                     WHERE fee_currency IS NOT NULL \
                     GROUP BY origin, destination, fee_currency",
        },
    ]
}

/// Copies one row per live report into an SQLite table.
fn copy_to_sqlite(store: &Store, path: &std::path::Path) -> Connection {
    let db = Connection::open(path).unwrap();
    db.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -524288;
         CREATE TABLE reports (month INTEGER, quarter INTEGER, state TEXT, origin TEXT,
           destination TEXT, vessel INTEGER, persons INTEGER, deaths INTEGER);",
    )
    .unwrap();
    let snapshot = store.snapshot().unwrap();
    let tx = db.unchecked_transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO reports VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
            .unwrap();
        for category in [
            pb::Category::SmugglingIncident,
            pb::Category::MaritimeMovement,
        ] {
            for key in snapshot
                .by_date(category as i32, i32::MIN, i32::MAX, None)
                .unwrap()
            {
                let (_, _, id) = key.unwrap();
                let head = snapshot.head(id).unwrap().unwrap();
                let summary = head.summary.unwrap();
                let facts = summary.facts.unwrap();
                let month = month_of_day(summary.incident_day);
                insert
                    .execute(rusqlite::params![
                        month,
                        (month / 12) * 4 + (month % 12) / 3,
                        head.state,
                        facts.origin,
                        facts.destination,
                        summary.vessel_type,
                        facts.persons,
                        facts.deaths,
                    ])
                    .unwrap();
            }
        }
    }
    tx.commit().unwrap();
    db
}

/// Runs SQLite's SQL `runs` times; returns the latencies, sorted, the groups of at least the
/// disclosure minimum of reports (those a table lists), and the persons of all.
fn time_sql(db: &Connection, q: &Sqlite, runs: usize) -> (Vec<Duration>, usize, u64) {
    let minimum = i64::from(AnalyticsConfig::default().minimum_reports);
    let mut latencies = Vec::with_capacity(runs);
    let (mut groups, mut persons) = (0, 0);
    for _ in 0..runs {
        let t = Instant::now();
        let mut statement = db.prepare_cached(q.sql).unwrap();
        let mut rows = match q.months {
            Some((from, to)) => statement.query([from, to]).unwrap(),
            None => statement.query([]).unwrap(),
        };
        (groups, persons) = (0, 0);
        while let Some(row) = rows.next().unwrap() {
            if row.get::<_, i64>(q.persons_column - 1).unwrap() >= minimum {
                groups += 1;
            }
            persons += u64::try_from(row.get::<_, i64>(q.persons_column).unwrap()).unwrap();
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();
    (latencies, groups, persons)
}

/// Runs the aggregate in-process `runs` times, each on a fresh snapshot, as `audience`
/// gets it (perturbed: the regional analyst's answers are by default).
fn time_ours(store: &Store, q: &Query, runs: usize, audience: Audience) -> Vec<Duration> {
    let query = AggregateQuery::from_request(&q.request).unwrap();
    let settings = Settings::new(&AnalyticsConfig::default());
    let mut latencies = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let snapshot = store.snapshot().unwrap();
        let projection = || store.projection();
        analytics::aggregate((&snapshot, projection), &query, &settings, audience).unwrap();
        latencies.push(t.elapsed());
    }
    latencies.sort();
    latencies
}

/// The answer to `request` for `audience`, on an exchange that perturbs the regional
/// analyst's answers or not.
fn answer(
    store: &Store,
    request: &pb::AggregateRequest,
    audience: Audience,
    perturb_regional_analyst: bool,
) -> pb::AggregateResponse {
    let query = AggregateQuery::from_request(request).unwrap();
    let settings = Settings::new(&AnalyticsConfig {
        perturb_regional_analyst,
        ..AnalyticsConfig::default()
    });
    let snapshot = store.snapshot().unwrap();
    let projection = || store.projection();
    analytics::aggregate((&snapshot, projection), &query, &settings, audience)
        .unwrap()
        .response
}

/// The audience of the timed and perturbed answers: the analyst of the first state.
fn analyst() -> Audience {
    Audience::StateAnalyst(common::STATES[0].parse().unwrap())
}

/// The exact answer: suppression only.
fn exact(store: &Store, request: &pb::AggregateRequest) -> pb::AggregateResponse {
    answer(store, request, Audience::RegionalAnalyst, false)
}

/// What disclosure control costs on one table (figures far below 2^52: exact in f64): the
/// mean absolute relative error of each metric over cells (margins included) of at least
/// 20 reports shown in both answers; the same errors weighted by the cells' exact values
/// (Σ|error| / Σ value: a sparse magnitude such as deaths has many cells whose few deaths
/// come from one or two reports, and those must move by 10-20 % and never show exactly);
/// and the share of cells withheld without and with perturbation.
#[allow(clippy::cast_precision_loss)]
fn utility(store: &Store, request: &pb::AggregateRequest) -> String {
    // Reports first, to know each cell's size.
    let mut request = request.clone();
    request.metrics.retain(|m| *m != pb::Metric::Reports as i32);
    request.metrics.insert(0, pb::Metric::Reports as i32);
    let exact = exact(store, &request);
    let perturbed = answer(store, &request, analyst(), true);
    // Per metric: Σ relative error, cells, Σ |error|, Σ exact value.
    let mut errors = vec![(0.0f64, 0u32, 0.0f64, 0.0f64); request.metrics.len()];
    let mut lost = 0;
    // The perturbed answer may list fewer cells (one of fewer reports than the minimum is
    // not listed): cells are matched by their keys.
    let shown: std::collections::HashMap<&Vec<String>, &pb::Cell> =
        perturbed.cells.iter().map(|c| (&c.keys, c)).collect();
    for e in &exact.cells {
        if e.suppressed != 0 || e.values[0] < 20 {
            continue;
        }
        let Some(p) = shown.get(&e.keys).filter(|p| p.suppressed == 0) else {
            lost += 1;
            continue;
        };
        for (i, (sum, n, off, total)) in errors.iter_mut().enumerate() {
            if e.values[i] > 0 {
                let error = e.values[i].abs_diff(p.values[i]) as f64;
                *sum += error / e.values[i] as f64;
                *n += 1;
                *off += error;
                *total += e.values[i] as f64;
            }
        }
    }
    let withheld = |r: &pb::AggregateResponse| {
        100.0 * r.cells.iter().filter(|c| c.suppressed != 0).count() as f64 / r.cells.len() as f64
    };
    let names: Vec<String> = exact
        .metrics
        .iter()
        .zip(&errors)
        .map(|(m, (sum, n, off, total))| {
            format!(
                "{} {:.2} % ({n} cells; weighted {:.2} %)",
                analytics::metric_name(*m),
                100.0 * sum / f64::from((*n).max(1)),
                100.0 * off / total.max(1.0)
            )
        })
        .collect();
    format!(
        "mean |error| on cells of >= 20 reports: {}; withheld {:.1} % exact, {:.1} % perturbed \
         ({lost} cells of >= 20 reports newly withheld)",
        names.join(", "),
        withheld(&exact),
        withheld(&perturbed)
    )
}

fn line(label: &str, sorted: &[Duration]) -> String {
    format!(
        "  {label:<34} p50 {:>9.3} ms   p99 {:>9.3} ms   ({} runs)",
        common::ms(common::percentile(sorted, 0.5)),
        common::ms(common::percentile(sorted, 0.99)),
        sorted.len()
    )
}

/// Times one query ours and (when it has SQL for it) SQLite's ways, prints the figures;
/// returns a summary line and our p50 in milliseconds.
fn measure(store: &Store, db: &Connection, q: &Query, runs: usize) -> (String, f64) {
    let ours = time_ours(store, q, runs, Audience::RegionalAnalyst);
    // A state analyst's tables set apart the reports its state can read, which only a scan
    // can tell (the counters keep no sharing scopes).
    let state_analyst = time_ours(store, q, runs, analyst());
    let response = exact(store, &q.request);
    println!(
        "\n{} — {} cells and margins, {} withheld, from {}",
        q.name,
        response.cells.len(),
        response.cells.iter().filter(|c| c.suppressed != 0).count(),
        response.source
    );
    println!("{}", line("tidemark (in-process), regional", &ours));
    println!(
        "{}",
        line("tidemark (in-process), a state's", &state_analyst)
    );
    // Builds that should answer alike (a speed-up) must print the same digests.
    let perturbed = answer(store, &q.request, analyst(), true);
    println!(
        "  answers: exact {}, perturbed {}",
        digest(&response),
        digest(&perturbed)
    );
    let p50 = |s: &[Duration]| common::percentile(s, 0.5).as_secs_f64();
    let mut summary = format!(
        "{}: tidemark {:.3} ms (a state analyst {:.3} ms)",
        q.name,
        p50(&ours) * 1e3,
        p50(&state_analyst) * 1e3
    );
    if let Some(sqlite) = &q.sqlite {
        // The same rows: interior cells (a table lists those of at least the minimum of
        // reports) and persons must match SQLite's groups.
        let interior = response
            .cells
            .iter()
            .filter(|c| c.keys.iter().all(|k| k != "*"))
            .count();
        let total = response
            .cells
            .iter()
            .find(|c| c.keys.iter().all(|k| k == "*"))
            .unwrap();
        let persons_at = q
            .request
            .metrics
            .iter()
            .position(|m| *m == pb::Metric::Persons as i32)
            .unwrap();
        let (plain, groups, persons) = time_sql(db, sqlite, runs.min(10));
        assert_eq!(groups, interior, "{}: same groups", q.name);
        // (A small store can have its grand total withheld: dominance, say.)
        if total.suppressed == 0 {
            assert_eq!(
                total.values[persons_at], persons,
                "{}: same persons",
                q.name
            );
        } else {
            println!("  (the grand total is withheld: persons not compared)");
        }
        db.execute_batch(sqlite.index).unwrap();
        let (indexed, _, _) = time_sql(db, sqlite, runs.min(50));
        println!("{}", line("sqlite, no index", &plain));
        println!("{}", line("sqlite, covering index", &indexed));
        let _ = write!(
            summary,
            "; sqlite {:.1} ms without index ({:.1}x), {:.1} ms with ({:.1}x)",
            p50(&plain) * 1e3,
            p50(&plain) / p50(&ours),
            p50(&indexed) * 1e3,
            p50(&indexed) / p50(&ours),
        );
    }
    if !q
        .request
        .metrics
        .contains(&(pb::Metric::FeePerPerson as i32))
    {
        println!("  {}", utility(store, &q.request));
    }
    (summary, p50(&ours) * 1e3)
}

/// Writes one CSV row per live report (what the queries group and filter by) and our
/// figures, for `benches/duckdb_compare.py`.
fn export(store: &Store, dir: &std::path::Path, ours: &[(&Query, f64)]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut out = csv::Writer::from_path(dir.join("reports.csv")).unwrap();
    out.write_record([
        "month",
        "quarter",
        "year",
        "state",
        "origin",
        "destination",
        "vessel",
        "persons",
        "deaths",
        "latitude",
        "longitude",
        "fee_currency",
        "fee_amount",
        "nationalities",
    ])
    .unwrap();
    let snapshot = store.snapshot().unwrap();
    for entry in snapshot.heads().unwrap() {
        let (_, head) = entry.unwrap();
        if head.retracted {
            continue;
        }
        let summary = head.summary.unwrap();
        let facts = summary.facts.unwrap();
        let month = month_of_day(summary.incident_day);
        let point = |v: f64| {
            if summary.has_point {
                v.to_string()
            } else {
                String::new()
            }
        };
        out.write_record([
            month.to_string(),
            ((month / 12) * 4 + (month % 12) / 3).to_string(),
            (month / 12).to_string(),
            head.state,
            facts.origin,
            facts.destination,
            summary.vessel_type.to_string(),
            facts.persons.to_string(),
            facts.deaths.to_string(),
            point(summary.latitude),
            point(summary.longitude),
            facts.fee_currency.clone(),
            if facts.fee_currency.is_empty() {
                String::new()
            } else {
                facts.fee_amount.to_string()
            },
            summary.nationalities.join(";"),
        ])
        .unwrap();
    }
    out.flush().unwrap();
    let figures: Vec<serde_json::Value> = ours
        .iter()
        .map(|(q, ms)| serde_json::json!({"name": q.name, "duckdb": q.duckdb, "tidemark_p50_ms": ms}))
        .collect();
    std::fs::write(
        dir.join("tidemark.json"),
        serde_json::to_string_pretty(&figures).unwrap(),
    )
    .unwrap();
    eprintln!(
        "exported the rows and our figures to {}: run python3 benches/duckdb_compare.py {}",
        dir.display(),
        dir.display()
    );
}

/// The first 16 hex digits of the SHA-256 of an answer's protobuf encoding.
fn digest(response: &pb::AggregateResponse) -> String {
    use prost::Message;
    let sha = ring::digest::digest(&ring::digest::SHA256, &response.encode_to_vec());
    hex::encode(&sha.as_ref()[..8])
}

/// The resident set size of this process, from /proc (Linux), in MiB.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Loads `reports` into the store named by `--store` (or the bench's temp dir) unless it
/// already holds some; returns how many envelopes it held before.
async fn prepare_store(config: &mut tidemark::config::Config, reports: usize) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = args
        .iter()
        .position(|a| a == "--store")
        .and_then(|i| args.get(i + 1))
    {
        config.store.path = path.into();
        // The store's transparency log is signed with the receipt key it was made with:
        // keep that key beside the store, and use it again on the next run.
        let kept = std::path::PathBuf::from(format!("{path}.receipt-key.pem"));
        if !kept.exists() {
            std::fs::copy(&config.signing.receipt_key, &kept).unwrap();
        }
        config.signing.receipt_key = kept;
    }
    let existing = Store::open(&config.store)
        .unwrap()
        .envelope_count()
        .unwrap();
    if existing == 0 {
        let started = Instant::now();
        common::load(config, reports).await;
        eprintln!(
            "loaded {reports} reports from {} states in {:.1} s",
            common::STATES.len(),
            started.elapsed().as_secs_f64()
        );
    } else {
        eprintln!(
            "using the {existing} reports already in {}",
            config.store.path.display()
        );
    }
    existing
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let reports = common::arg("--reports", 1_000_000);
    let runs = common::arg("--runs", 200);
    let bench = common::BenchPki::new();
    let mut config = bench.config.clone();
    let existing = prepare_store(&mut config, reports).await;
    // The store's page cache (redb), which most of the resident set is.
    config.store.cache_mib = common::arg("--cache-mib", config.store.cache_mib);
    let store_cache_mib = config.store.cache_mib;
    // It times answers, not the limit on reads a minute (`--runs` Aggregate RPCs in a row).
    config.limits.reads_per_minute_per_principal = 1_000_000;
    let started = Instant::now();
    let server = Server::build(config).unwrap();
    let store = server.store().clone();
    report_start(&store, started.elapsed(), store_cache_mib);
    // `--only TEXT`: the queries whose name holds it (SQLite is loaded only if one of
    // them is compared with it).
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let queries: Vec<Query> = queries()
        .into_iter()
        .filter(|q| only.as_ref().is_none_or(|o| q.name.contains(o.as_str())))
        .collect();
    let started = Instant::now();
    let path = bench.dir.path().join("baseline.sqlite");
    let db = if queries.iter().any(|q| q.sqlite.is_some()) {
        copy_to_sqlite(&store, &path)
    } else {
        Connection::open(&path).unwrap()
    };
    eprintln!(
        "copied the same rows to SQLite in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!(
        "{} reports from {} states; SQLite {} (bundled)",
        if existing > 0 {
            existing
        } else {
            reports as u64
        },
        common::STATES.len(),
        rusqlite::version()
    );
    let mut summary = Vec::new();
    let mut ours = Vec::new();
    for q in &queries {
        let (line, p50) = measure(&store, &db, q, runs);
        summary.push(line);
        ours.push((q, p50));
    }
    if let Some(dir) = args
        .iter()
        .position(|a| a == "--export")
        .and_then(|i| args.get(i + 1))
    {
        export(&store, std::path::Path::new(dir), &ours);
    }
    // Disclosure control's cost on a table of every additive metric, too.
    let every_metric = pb::AggregateRequest {
        group_by: vec![
            pb::Dimension::Month as i32,
            pb::Dimension::ReportingState as i32,
        ],
        metrics: analytics::METRICS
            .iter()
            .filter(|m| m.1 != pb::Metric::FeePerPerson)
            .map(|m| m.1 as i32)
            .collect(),
        filter: None,
    };
    println!(
        "\nmonth x state, every additive metric:\n  {}",
        utility(&store, &every_metric)
    );

    if let Some(first) = queries.first() {
        time_rpc(server, &bench, first, runs).await;
    }
    println!("\nsummary (p50, ratio = sqlite / tidemark):");
    for s in summary {
        println!("  {s}");
    }
}

/// Prints the start-up time, the projection's size and the resident set after a scan.
#[allow(clippy::cast_precision_loss)]
fn report_start(store: &Store, took: Duration, cache_mib: usize) {
    {
        let projection = store.projection().unwrap();
        let per_report = projection.bytes() as f64 / projection.rows().max(1) as f64;
        println!(
            "server built in {:.2} s ({cache_mib} MiB page cache), with the columnar \
             projection of {} reports: {:.1} MiB, {per_report:.1} bytes per report",
            took.as_secs_f64(),
            projection.rows(),
            projection.bytes() as f64 / (1024.0 * 1024.0),
        );
    }
    if let Some(rss) = rss_mib() {
        println!("resident set after start-up: {rss:.0} MiB");
    }
    time_ours(store, &queries()[2], 3, analyst());
    if let Some(rss) = rss_mib() {
        println!("resident set after a scan (before SQLite is loaded): {rss:.0} MiB");
    }
}

/// Times `q` end to end: gRPC over mTLS as the regional analyst, audited.
async fn time_rpc(server: Server, bench: &common::BenchPki, q: &Query, runs: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    let analyst = bench.client(Role::RegionalAnalyst, "regional-1");
    let mut rpc = AnalyticsClient::new(client::connect(&endpoint, &analyst).await.unwrap());
    let mut latencies = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        rpc.aggregate(q.request.clone()).await.unwrap();
        latencies.push(t.elapsed());
    }
    latencies.sort();
    println!("\n{} over gRPC + mTLS (audited):", q.name);
    println!("{}", line("tidemark Aggregate RPC", &latencies));
    let _ = stop.send(());
    let _ = server_task.await;
}
