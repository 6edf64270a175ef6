//! Disclosure control that holds across queries, against a real server: differencing
//! (handed case 03, both routes, and the SDC handbook's geographical example) never gives
//! a withheld report's value back; fee quartiles need their own minimum (case 2-10);
//! the same cell shows the same figures in every table and on both computation paths; a
//! different server secret gives different noise; perturbation never shows a withheld
//! cell; statistics are asked for by whole months.

mod common;

use std::collections::BTreeMap;

use common::{TestPki, TestServer, aggregate, analyst, import, regional};
use tidemark::{Config, client::ClientIdentity, pb, signing::SigningKey};
use tonic::Code;

/// The reports of a handed case file, one JSON report per line.
fn case_reports(name: &str) -> Vec<pb::Report> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cases")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A copy of `base` with a new id, `state`, incident date and persons.
fn variant(base: &pb::Report, state: &str, date: &str, persons: u32) -> pb::Report {
    let mut r = base.clone();
    r.report_id = uuid::Uuid::new_v4().to_string();
    state.clone_into(&mut r.reporting_state);
    date.clone_into(&mut r.incident_date);
    r.persons = Some(pb::Persons {
        total: persons,
        ..Default::default()
    });
    if let Some(location) = r.location.as_mut() {
        state.clone_into(&mut location.country);
    }
    // Shared with no state: another state's analyst counts it among the others' reports
    // (reports shared with the analyst's state are counted as its own).
    r.sharing = Some(pb::Sharing {
        scope: pb::SharingScope::AggregateOnly as i32,
        states: Vec::new(),
    });
    r
}

/// Signing keys registered for `states`.
async fn register(
    server: &TestServer,
    pki: &TestPki,
    states: &[&'static str],
) -> BTreeMap<&'static str, SigningKey> {
    let mut keys = BTreeMap::new();
    for state in states {
        keys.insert(*state, server.register_new_key(pki, state).await);
    }
    keys
}

async fn submit_all(
    server: &TestServer,
    pki: &TestPki,
    keys: &BTreeMap<&str, SigningKey>,
    reports: &[pb::Report],
) {
    for (state, key) in keys {
        let envelopes: Vec<pb::Envelope> = reports
            .iter()
            .filter(|r| r.reporting_state == *state)
            .map(|r| common::sign(r, key))
            .collect();
        if !envelopes.is_empty() {
            import(server, pki, state, envelopes).await;
        }
    }
}

fn request(
    by: &[pb::Dimension],
    metrics: &[pb::Metric],
    filter: pb::AggregateFilter,
) -> pb::AggregateRequest {
    pb::AggregateRequest {
        group_by: by.iter().map(|d| *d as i32).collect(),
        metrics: metrics.iter().map(|m| *m as i32).collect(),
        filter: Some(filter),
    }
}

fn months(from: &str, to: &str) -> pb::AggregateFilter {
    pb::AggregateFilter {
        from_date: from.to_owned(),
        to_date: to.to_owned(),
        ..Default::default()
    }
}

const PERSONS: [pb::Metric; 2] = [pb::Metric::Reports, pb::Metric::Persons];

/// The shown persons of the grand total of `request`, if it is shown.
async fn shown_total(
    server: &TestServer,
    who: &ClientIdentity,
    request: pb::AggregateRequest,
) -> Option<u64> {
    let answer = aggregate(server, who, request).await.unwrap();
    // Withheld for being small, it is not listed at all.
    let total = answer
        .cells
        .iter()
        .find(|c| c.keys.iter().all(|k| k == "*"))?;
    (total.suppressed == 0).then(|| total.values[1])
}

/// The shown persons of the grand total of `request`, which must be shown.
async fn total_persons(
    server: &TestServer,
    who: &ClientIdentity,
    request: pb::AggregateRequest,
) -> u64 {
    let total = shown_total(server, who, request).await;
    total.expect("the total is shown")
}

/// "2024-02" → "2024-02-29".
fn last_day(month: &str) -> String {
    let (y, m) = month.split_once('-').unwrap();
    let (y, m): (i32, u8) = (y.parse().unwrap(), m.parse().unwrap());
    let length = time::Month::try_from(m).unwrap().length(y);
    format!("{y}-{m:02}-{length:02}")
}

/// The reports of case 03 and of 30 more months, each with one withheld IDN report:
/// (every report, and per trial its month and withheld persons).
fn case_03_and_more_months() -> (Vec<pb::Report>, Vec<(String, u64)>) {
    let mut reports = case_reports("03-differencing.aus.jsonl");
    let idn = case_reports("03-differencing.idn-june.json");
    reports.extend(idn.iter().cloned());
    // Trials: in each month of 2021-07 … 2023-12, six AUS reports and one IDN report
    // whose persons (the withheld value) differ from month to month.
    let base = reports[0].clone();
    let mut trials = vec![("2024-06".to_owned(), 37u64)];
    for t in 0..30u32 {
        let (year, month) = (2021 + (t + 6) / 12, (t + 6) % 12 + 1);
        let m = format!("{year}-{month:02}");
        for i in 0..6u32 {
            let persons = 5 + (t * 7 + i * 3) % 20;
            reports.push(variant(&base, "AUS", &format!("{m}-{:02}", 3 + i), persons));
        }
        let withheld = 1 + (t * 13) % 60;
        reports.push(variant(&idn[0], "IDN", &format!("{m}-20"), withheld));
        trials.push((m, u64::from(withheld)));
    }
    (reports, trials)
}

/// Case 03, on the handed reports and on 30 more months each with a different withheld
/// value: the withheld IDN cell never comes back exactly from (1) the total minus the
/// total filtered to the other state, nor (2) a period shifted by one month; a shift by
/// one day is refused. Asked as the regional analyst and as AUS's analyst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differencing_never_gives_a_withheld_value_back() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let keys = register(&server, &pki, &["AUS", "IDN"]).await;
    let (reports, trials) = case_03_and_more_months();
    submit_all(&server, &pki, &keys, &reports).await;

    let mut worst = 0u64;
    for (who, own) in [(regional(&pki), false), (analyst(&pki, "AUS"), true)] {
        for (month, withheld) in &trials {
            // The handed trial spans 2024-01 … 2024-06 (its AUS reports are Jan–May).
            let from = if month == "2024-06" { "2024-01" } else { month };
            let period = pb::AggregateFilter {
                category: pb::Category::SmugglingIncident as i32,
                ..months(&format!("{from}-01"), &last_day(month))
            };
            // The withheld cell: IDN by state.
            let by_state = aggregate(
                &server,
                &who,
                request(&[pb::Dimension::ReportingState], &PERSONS, period.clone()),
            )
            .await
            .unwrap();
            let idn_cell = by_state.cells.iter().find(|c| c.keys == ["IDN"]);
            assert!(
                idn_cell.is_none_or(|c| c.suppressed != 0),
                "{month}: IDN's single report is withheld"
            );
            // Route 1: the total minus the total of the other state.
            let all = shown_total(&server, &who, request(&[], &PERSONS, period.clone())).await;
            let Some(all) = all else {
                panic!("{month}: the total is withheld");
            };
            let aus_only = pb::AggregateFilter {
                reporting_states: vec!["AUS".into()],
                ..period.clone()
            };
            let aus = total_persons(&server, &who, request(&[], &PERSONS, aus_only)).await;
            // The trials' IDN reports are for statistics only, and AUS's own reports do
            // not open a cell that holds one of them: for AUS's analyst it is left out.
            // The handed case's is shared with every contributor: AUS knows it.
            if own && month != "2024-06" {
                assert_eq!(all, aus, "{month}: IDN's report left out");
                continue;
            }
            // The total with IDN's report never shows exactly its value more (a negative
            // difference, which the noise can give, is no value).
            let estimate = all.cast_signed() - aus.cast_signed();
            assert_ne!(
                estimate,
                withheld.cast_signed(),
                "{month}: total − AUS gave the value back"
            );
            worst = worst.max((estimate - withheld.cast_signed()).unsigned_abs());
        }
    }
    // Route 2 on the handed case: June is IDN's only month, so Jan–Jun minus Jan–May is
    // its report; whole months only, and still not its value.
    let regional = regional(&pki);
    let june = total_persons(
        &server,
        &regional,
        request(&[], &PERSONS, months("2024-01-01", "2024-06-30")),
    )
    .await;
    let may = total_persons(
        &server,
        &regional,
        request(&[], &PERSONS, months("2024-01-01", "2024-05-31")),
    )
    .await;
    let shift = june.cast_signed() - may.cast_signed();
    assert_ne!(shift, 37, "a month's shift gave the value back");
    worst = worst.max((shift - 37).unsigned_abs());
    // ... and the day-level shift of the handed case is refused, saying why.
    let refused = aggregate(
        &server,
        &regional,
        request(&[], &PERSONS, months("2024-01-01", "2024-06-14")),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("filter.to_date"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("whole months"),
        "{}",
        refused.message()
    );
    // The error bound observed: the two totals share their AUS reports and so their
    // noise, and differ by IDN's own fixed 10–20 % and 1.5–3.5 plus rounding (at most 1
    // each): at most 0.2 × 60 + 3.5 + 2 = 17.5 here; never exact, off by at most `worst`.
    eprintln!(
        "differencing: never exact over {} trials; largest error {worst}",
        trials.len() + 1
    );
    assert!(worst > 0 && worst <= 19, "largest error {worst}");
}

/// Case 2-10: fee quartiles per currency over 1–4 reports are never shown, in cells or
/// margins, perturbed or not; a currency with enough reports is shown, its quartiles
/// perturbed within 10 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fee_quartiles_need_their_own_minimum_in_every_cell_and_margin() {
    let pki = TestPki::new();
    let fee_config = |c: &mut Config| {
        c.analytics.fee_currency = "USD".into();
        c.analytics.rates.insert("AUD".into(), 0.66);
    };
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), fee_config).await;
    let keys = register(&server, &pki, &["AUS"]).await;
    let handed = case_reports("2-10-fee-quantiles-small-currency-groups.jsonl");
    submit_all(&server, &pki, &keys, &handed).await;
    let ask = |by: &[pb::Dimension]| {
        request(
            by,
            &[pb::Metric::Reports, pb::Metric::FeePerPerson],
            pb::AggregateFilter {
                category: pb::Category::SmugglingIncident as i32,
                ..Default::default()
            },
        )
    };
    let shapes: [&[pb::Dimension]; 3] = [
        &[],
        &[pb::Dimension::Origin],
        &[pb::Dimension::Month, pb::Dimension::Route],
    ];
    for by in shapes {
        for who in [regional(&pki), analyst(&pki, "AUS")] {
            let answer = aggregate(&server, &who, ask(by)).await.unwrap();
            for cell in &answer.cells {
                assert!(
                    cell.fees.is_empty(),
                    "{by:?} {:?}: {:?}",
                    cell.keys,
                    cell.fees
                );
            }
            assert!(
                answer
                    .notes
                    .iter()
                    .any(|n| n.rule == pb::SuppressionRule::QuantileMinimum as i32),
                "{:?}",
                answer.notes
            );
            let protection = answer.protection.unwrap();
            assert_eq!(protection.minimum_reports_for_quantiles, 10);
        }
    }
    // Twelve more USD fees: the USD group (4 USD + 4 AUD converted + 12) is shown, and
    // the small ones still are not.
    let more: Vec<pb::Report> = (0..12u32)
        .map(|i| {
            let mut r = variant(&handed[0], "AUS", "2024-03-12", 10);
            if let Some(pb::report::Details::Smuggling(s)) = r.details.as_mut() {
                s.fee_per_person = Some(pb::Money {
                    amount: 900 + u64::from(i) * 50,
                    currency: "USD".into(),
                });
            }
            r
        })
        .collect();
    submit_all(&server, &pki, &keys, &more).await;
    let answer = aggregate(&server, &regional(&pki), ask(&[])).await.unwrap();
    let fees = &answer.cells[0].fees;
    assert_eq!(fees.len(), 1, "{fees:?}");
    assert_eq!(fees[0].currency, "USD");
    assert!(fees[0].reports >= 18, "{:?}", fees[0]);
    // True USD values: 660 726 792 858 (AUD × 0.66), 700 800 900 1000, 900 … 1450.
    let mut values: Vec<f64> = [660.0, 726.0, 792.0, 858.0, 700.0, 800.0, 900.0, 1000.0]
        .into_iter()
        .chain((0..12).map(|i| 900.0 + f64::from(i) * 50.0))
        .collect();
    values.sort_by(f64::total_cmp);
    let median = f64::midpoint(values[9], values[10]);
    assert!(
        (fees[0].median - median).abs() <= median * 0.10 + 1.0,
        "{:?}",
        fees[0]
    );
}

/// The SDC handbook's geographical differencing: two overlapping areas whose difference
/// is one report, asked separately, never give that report's persons back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_overlapping_areas_never_give_the_report_between_them_back() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let keys = register(&server, &pki, &["AUS", "IDN"]).await;
    let base = case_reports("03-differencing.aus.jsonl").remove(0);
    let at = |state: &str, date: &str, persons: u32, lat: f64, lon: f64| {
        let mut r = variant(&base, state, date, persons);
        r.location.get_or_insert_with(Default::default).point = Some(pb::GeoPoint {
            latitude: lat,
            longitude: lon,
        });
        r
    };
    // Per month: six reports inside the small area (lat −11…−10, lon 130…131), and one
    // in the strip that the large area (lon 130…132) adds.
    let mut reports = Vec::new();
    let mut between = Vec::new();
    for t in 0..12u32 {
        let month = format!("2023-{:02}", t + 1);
        for i in 0..6u32 {
            let state = if i % 2 == 0 { "AUS" } else { "IDN" };
            let lat = -10.9 + f64::from(i) * 0.1;
            let date = format!("{month}-{:02}", 2 + i);
            reports.push(at(state, &date, 8 + (t + i) % 9, lat, 130.5));
        }
        let persons = 3 + t * 5;
        reports.push(at("IDN", &format!("{month}-25"), persons, -10.5, 131.5));
        between.push((month, u64::from(persons)));
    }
    submit_all(&server, &pki, &keys, &reports).await;
    let area = |max_longitude: f64, month: &str| pb::AggregateFilter {
        bbox: Some(pb::BoundingBox {
            min_latitude: -11.0,
            min_longitude: 130.0,
            max_latitude: -10.0,
            max_longitude,
        }),
        ..months(&format!("{month}-01"), &last_day(month))
    };
    let who = regional(&pki);
    for (month, persons) in &between {
        let large = total_persons(&server, &who, request(&[], &PERSONS, area(132.0, month))).await;
        let small = total_persons(&server, &who, request(&[], &PERSONS, area(131.0, month))).await;
        // The larger area never shows exactly the report between them more.
        assert_ne!(
            large.cast_signed() - small.cast_signed(),
            persons.cast_signed(),
            "{month}"
        );
    }
}

/// One cell, the same figures: the same query twice; a cell reached through two tables
/// (a margin and a filtered total; counters and a scan), also after amendments and
/// retractions; and another server secret gives other noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_reports_show_the_same_figures_in_every_table() {
    let pki = TestPki::new();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let server = TestServer::start(&pki).await;
        let keys = register(&server, &pki, &["AUS", "IDN"]).await;
        let reports: Vec<pb::Report> = (0..300u64)
            .map(|i| common::sample_report(if i % 3 == 0 { "IDN" } else { "AUS" }, i))
            .collect();
        submit_all(&server, &pki, &keys, &reports).await;
        // Amend every 5th AUS report, retract every 7th.
        let changes: Vec<pb::Envelope> = reports
            .iter()
            .filter(|r| r.reporting_state == "AUS")
            .enumerate()
            .filter_map(|(i, r)| {
                if i % 5 == 0 {
                    let amended = common::sample_amendment(r, 10_000 + 10 * i as u64);
                    Some(common::sign(&amended, &keys["AUS"]))
                } else if i % 7 == 0 {
                    Some(common::retraction(r, 2, &keys["AUS"]))
                } else {
                    None
                }
            })
            .collect();
        import(&server, &pki, "AUS", changes).await;
        let who = analyst(&pki, "AUS");
        let metrics = [pb::Metric::Reports, pb::Metric::Persons, pb::Metric::Deaths];
        let all = pb::AggregateFilter::default;
        let by_year = request(&[pb::Dimension::Year], &metrics, all());
        let first = aggregate(&server, &who, by_year.clone()).await.unwrap();
        let again = aggregate(&server, &who, by_year).await.unwrap();
        assert_eq!(first, again, "the same query, the same answer");
        // Each year's cell equals the total of a query filtered to that year.
        for cell in first
            .cells
            .iter()
            .filter(|c| c.suppressed == 0 && c.keys[0] != "*")
        {
            let year = &cell.keys[0];
            let filtered = aggregate(
                &server,
                &who,
                request(
                    &[],
                    &metrics,
                    months(&format!("{year}-01-01"), &format!("{year}-12-31")),
                ),
            )
            .await
            .unwrap();
            assert_eq!(filtered.cells[0].values, cell.values, "{year}");
        }
        // Counters (origin; transit, where a report is in several cells) and a scan (by
        // vessel type too, whose margins are the same sets of reports) agree: for the
        // regional analyst, and for state analysts, whose counted tables set apart the
        // reports their state can read by a scan of the others.
        let mut compared = 0;
        let askers = [
            (regional(&pki), "counters"),
            (analyst(&pki, "AUS"), "counters-less-unknown"),
            (analyst(&pki, "IDN"), "counters-less-unknown"),
        ];
        for (who, source) in &askers {
            for dimension in [pb::Dimension::Origin, pb::Dimension::Transit] {
                let counted = aggregate(&server, who, request(&[dimension], &metrics, all()))
                    .await
                    .unwrap();
                let by_vessel = [dimension, pb::Dimension::VesselType];
                let scanned = aggregate(&server, who, request(&by_vessel, &metrics, all()))
                    .await
                    .unwrap();
                assert_eq!(
                    (counted.source.as_str(), scanned.source.as_str()),
                    (*source, "scan")
                );
                for cell in counted.cells.iter().filter(|c| c.suppressed == 0) {
                    let margin = scanned
                        .cells
                        .iter()
                        .find(|c| c.keys[0] == cell.keys[0] && c.keys[1] == "*")
                        .unwrap();
                    if margin.suppressed == 0 {
                        assert_eq!(margin.values, cell.values, "{source} {:?}", cell.keys);
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared >= 18, "{compared}");
        answers.push(first);
        server.stop().await;
    }
    // Two servers, the same reports, different secrets: different noise somewhere.
    let values =
        |a: &pb::AggregateResponse| a.cells.iter().map(|c| c.values.clone()).collect::<Vec<_>>();
    assert_ne!(values(&answers[0]), values(&answers[1]));
}

/// `n` sample reports, every other one AUS's; IDN's are for statistics only, so AUS's
/// analyst knows none of them.
fn aus_and_idn_for_statistics_only(n: u64) -> Vec<pb::Report> {
    (0..n)
        .map(|i| {
            let mut r = common::sample_report(if i % 2 == 0 { "IDN" } else { "AUS" }, 500 + i);
            if r.reporting_state == "IDN" {
                r.sharing = Some(pb::Sharing {
                    scope: pb::SharingScope::AggregateOnly as i32,
                    states: Vec::new(),
                });
            }
            r
        })
        .collect()
}

/// Each entry of a table by month and origin, margins ("*") too: its true reports of
/// AUS and of IDN.
fn true_counts_by_month_and_origin(reports: &[pb::Report]) -> BTreeMap<Vec<String>, (u64, u64)> {
    let mut truth: BTreeMap<Vec<String>, (u64, u64)> = BTreeMap::new();
    for r in reports {
        let month = r.incident_date[..7].to_owned();
        let origin = r.route.as_ref().map(|route| route.origin.clone()).unwrap();
        for keys in [
            [month.clone(), origin.clone()],
            [month.clone(), "*".into()],
            ["*".into(), origin.clone()],
            ["*".into(), "*".into()],
        ] {
            let (aus, idn) = truth.entry(keys.to_vec()).or_default();
            *if r.reporting_state == "AUS" { aus } else { idn } += 1;
        }
    }
    truth
}

/// Perturbation never shows what the true counts withhold, never shows a count of 1 or
/// 2, and stays within its stated bounds; a filter that selects fewer reports than the
/// minimum withholds the whole table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perturbation_never_shows_a_withheld_cell_and_stays_within_its_bounds() {
    let pki = TestPki::new();
    // The regional analyst sees exact figures here, AUS's analyst perturbed ones.
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.analytics.perturb_regional_analyst = false;
        c.analytics.minimum_reports = 4;
    })
    .await;
    let keys = register(&server, &pki, &["AUS", "IDN"]).await;
    let reports = aus_and_idn_for_statistics_only(400);
    submit_all(&server, &pki, &keys, &reports).await;
    let metrics = [pb::Metric::Reports, pb::Metric::Persons];
    let ask = request(
        &[pb::Dimension::Month, pb::Dimension::Origin],
        &metrics,
        pb::AggregateFilter::default(),
    );
    let exact = aggregate(&server, &regional(&pki), ask.clone())
        .await
        .unwrap();
    let perturbed = aggregate(&server, &analyst(&pki, "AUS"), ask)
        .await
        .unwrap();
    assert_eq!(exact.protection.unwrap().method, "none");
    let protection = perturbed.protection.clone().unwrap();
    assert_eq!(protection.method, "cell-key");
    assert_eq!(protection.perturbation_table, "tidemark-ckm-2");
    let exact_cells: std::collections::BTreeMap<&Vec<String>, &pb::Cell> =
        exact.cells.iter().map(|c| (&c.keys, c)).collect();
    let truth = true_counts_by_month_and_origin(&reports);
    let small = truth.values().filter(|(aus, idn)| aus + idn < 4).count();
    let (mut moved, mut alone) = (0, 0);
    for p in perturbed.cells.iter().filter(|p| p.suppressed == 0) {
        let (aus, idn) = truth[&p.keys];
        let shown = p.values[0];
        assert!(shown >= 4, "{:?}: a shown count below the minimum", p.keys);
        // AUS's own reports as they are, IDN's perturbed and shown only when they show
        // four or more; else AUS's alone, perturbed as a cell of them only is.
        let with_idn = shown >= aus + 4 && shown.abs_diff(aus + idn) <= 2;
        let aus_alone = aus >= 4 && shown.abs_diff(aus) <= 2;
        assert!(
            with_idn || aus_alone,
            "{:?}: AUS {aus}, IDN {idn} → {shown}",
            p.keys
        );
        assert!(
            idn >= 4 || !with_idn || aus_alone,
            "{:?}: IDN's {idn} shown",
            p.keys
        );
        alone += u32::from(aus_alone && !with_idn && idn > 0);
        // Exact figures of the entries shown exactly (secondary suppression, which exact
        // figures need and perturbed ones do not, withholds some).
        let Some(e) = exact_cells.get(&p.keys).filter(|e| e.suppressed == 0) else {
            continue;
        };
        if with_idn {
            assert_ne!(
                p.values[1], e.values[1],
                "{:?}: persons shown exactly",
                p.keys
            );
            moved += u32::from(shown != e.values[0]);
        }
    }
    // Small exactly (not listed) is never shown perturbed: every entry too small for
    // AUS's own reports and IDN's together is not listed.
    for (keys, (aus, idn)) in &truth {
        if aus + idn < 4 {
            assert!(
                !perturbed.cells.iter().any(|p| &p.keys == keys),
                "{keys:?} listed"
            );
        }
    }
    assert!(
        small > 0 && moved > 0 && alone > 0,
        "small {small}, moved {moved}, AUS's alone beside a few of IDN's {alone}"
    );
    // A filter that selects three reports (fewer than four): everything withheld.
    let three: Vec<pb::Report> = (0..3u64)
        .map(|i| {
            let mut r = common::sample_report("AUS", 9_000 + i);
            r.incident_date = "2009-02-10".into();
            r
        })
        .collect();
    submit_all(&server, &pki, &keys, &three).await;
    let tiny = aggregate(
        &server,
        &analyst(&pki, "AUS"),
        request(
            &[pb::Dimension::ReportingState],
            &metrics,
            months("2009-02-01", "2009-02-28"),
        ),
    )
    .await
    .unwrap();
    assert!(tiny.cells.is_empty(), "{:?}", tiny.cells);
    assert!(
        tiny.notes.iter().any(|n| n
            .explanation
            .contains("fewer than 4 reports match these filters (perhaps none)")),
        "{:?}",
        tiny.notes
    );
}

async fn standing(server: &TestServer, who: &ClientIdentity) -> pb::MyStandingResponse {
    pb::exchange_client::ExchangeClient::new(server.channel(who).await)
        .my_standing(pb::MyStandingRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The optional privacy budget: each state analyst's aggregate is charged before it is
/// computed, refunded when it fails, refused once the year's budget is spent (also after
/// a restart), shown by MyStanding, and answered with fresh discrete Gaussian noise; the
/// regional analyst is not charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privacy_budget_is_charged_refunded_spent_and_shown() {
    let pki = TestPki::new();
    let budgeted = |c: &mut Config| {
        c.analytics.privacy_budget.enabled = true;
        c.analytics.privacy_budget.rho_per_year = 0.2;
        c.analytics.privacy_budget.rho_per_query = 0.05;
    };
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), budgeted).await;
    let keys = register(&server, &pki, &["AUS"]).await;
    let reports: Vec<pb::Report> = (0..200u64)
        .map(|i| common::sample_report("AUS", 700 + i))
        .collect();
    submit_all(&server, &pki, &keys, &reports).await;
    let aus = analyst(&pki, "AUS");
    let left = |s: &pb::MyStandingResponse| s.privacy_budget.as_ref().unwrap().queries_left;
    assert_eq!(left(&standing(&server, &aus).await), 4);
    // A node has no budget.
    assert!(
        standing(&server, &common::node(&pki, "AUS"))
            .await
            .privacy_budget
            .is_none()
    );

    // Under the budget a table lists every value of its dimensions: a period needs both
    // ends (refused, and not charged).
    let open = request(
        &[pb::Dimension::Year],
        &PERSONS,
        pb::AggregateFilter::default(),
    );
    let refused = aggregate(&server, &aus, open).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::InvalidArgument,
        "{}",
        refused.message()
    );
    assert_eq!(left(&standing(&server, &aus).await), 4);
    let by_year = request(
        &[pb::Dimension::Year],
        &PERSONS,
        months("2000-01-01", "2029-12-31"),
    );
    let first = aggregate(&server, &aus, by_year.clone()).await.unwrap();
    // Every year of the range, data or not, and the total.
    assert_eq!(first.cells.len(), 31);
    let p = first.protection.clone().unwrap();
    assert_eq!(p.method, "zcdp");
    assert!((p.rho_charged - 0.05).abs() < 1e-9 && (p.rho_remaining - 0.15).abs() < 1e-9);
    assert!(p.count_noise_sd > 1.0, "{p:?}");
    assert_eq!(left(&standing(&server, &aus).await), 3);
    // Fresh noise each time: the same query gives other figures.
    let second = aggregate(&server, &aus, by_year.clone()).await.unwrap();
    let values =
        |a: &pb::AggregateResponse| a.cells.iter().map(|c| c.values.clone()).collect::<Vec<_>>();
    assert!(first.cells.len() >= 4);
    assert_ne!(values(&first), values(&second));
    // A query that fails is given back.
    let fees = request(
        &[],
        &[pb::Metric::FeePerPerson],
        pb::AggregateFilter::default(),
    );
    let refused = aggregate(&server, &aus, fees).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::InvalidArgument,
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("privacy budget"),
        "{}",
        refused.message()
    );
    assert_eq!(left(&standing(&server, &aus).await), 2);
    // The regional analyst is not charged.
    let regional_answer = aggregate(&server, &regional(&pki), by_year.clone())
        .await
        .unwrap();
    assert_eq!(regional_answer.protection.unwrap().method, "cell-key");
    // Spent, and still spent after a restart.
    aggregate(&server, &aus, by_year.clone()).await.unwrap();
    let data = server.stop().await;
    let server = TestServer::start_with(&pki, data, budgeted).await;
    assert_eq!(left(&standing(&server, &aus).await), 1);
    aggregate(&server, &aus, by_year.clone()).await.unwrap();
    let spent = aggregate(&server, &aus, by_year).await.unwrap_err();
    assert_eq!(spent.code(), Code::ResourceExhausted);
    assert!(
        spent.message().contains("privacy budget"),
        "{}",
        spent.message()
    );
    // On the audit record, like every refused read.
    assert!(
        spent.metadata().get("tidemark-audit").is_some(),
        "{spent:?}"
    );
    let mut admin = server.admin(&common::operator(&pki)).await;
    let last = common::audit_log(&mut admin).await.pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.state.as_str()),
        ("refused aggregate", "AUS")
    );
    assert_eq!(left(&standing(&server, &aus).await), 0);
}

/// The averaging attack: one report carries a cell's whole figure (the only one with
/// deaths), and the analyst asks for totals over many different sets of reports around
/// it. Every answer carries the same fixed noise of that report, so they all show the
/// same figure, and it is not the value. Fee
/// quartiles over the same fees are the same whatever other reports a cell holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_differently_worded_queries_do_not_average_the_noise_away() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let keys = register(&server, &pki, &["AUS", "IDN"]).await;
    let base = case_reports("03-differencing.aus.jsonl").remove(0);
    let mut reports = Vec::new();
    // The target: 30 deaths in 2024-01; every other report has none.
    let mut target = variant(&base, "IDN", "2024-01-13", 40);
    target.persons.get_or_insert_with(Default::default).deaths = 30;
    reports.push(target);
    for m in 1..=12u32 {
        for i in 0..4u32 {
            let state = if i % 2 == 0 { "AUS" } else { "IDN" };
            reports.push(variant(
                &base,
                state,
                &format!("2024-{m:02}-{:02}", 2 + i),
                5 + i,
            ));
        }
    }
    submit_all(&server, &pki, &keys, &reports).await;
    let who = analyst(&pki, "AUS");
    let regional = regional(&pki);
    let metrics = [pb::Metric::Reports, pb::Metric::Deaths];
    let mut seen = Vec::new();
    for to in 1..=12u32 {
        for states in [
            vec![],
            vec!["IDN".to_owned()],
            vec!["IDN".to_owned(), "AUS".to_owned()],
        ] {
            let filter = pb::AggregateFilter {
                category: pb::Category::SmugglingIncident as i32,
                reporting_states: states,
                ..months("2024-01-01", &last_day(&format!("2024-{to:02}")))
            };
            let answer = aggregate(&server, &who, request(&[], &metrics, filter))
                .await
                .unwrap();
            // A total too small to show is not listed.
            if let Some(total) = answer.cells.first().filter(|c| c.suppressed == 0) {
                seen.push(total.values[1]);
            }
        }
    }
    assert!(seen.len() >= 30, "{seen:?}");
    let (low, high) = (*seen.iter().min().unwrap(), *seen.iter().max().unwrap());
    assert_eq!(high, low, "one figure in every answer: {seen:?}");
    assert!(!seen.contains(&30), "{seen:?}");
    // 30 moved by its fixed 10-20 %: the midpoint is at least 3 - 1 away.
    assert!((low + high).abs_diff(60) >= 4, "{low} {high}");

    // Fees: the same fee reports among different other reports give the same quartiles.
    let fees: Vec<pb::Report> = (0..14u32)
        .map(|i| {
            let mut r = variant(&base, "AUS", "2024-02-20", 10);
            if let Some(pb::report::Details::Smuggling(s)) = r.details.as_mut() {
                s.fee_per_person = Some(pb::Money {
                    amount: 1000 + u64::from(i) * 137,
                    currency: "USD".into(),
                });
            }
            r
        })
        .collect();
    submit_all(&server, &pki, &keys, &fees).await;
    let quartiles = |to: &str| {
        let filter = pb::AggregateFilter {
            category: pb::Category::SmugglingIncident as i32,
            ..months("2024-02-01", to)
        };
        let request = request(
            &[],
            &[pb::Metric::Reports, pb::Metric::FeePerPerson],
            filter,
        );
        let server = &server;
        let who = &regional;
        async move {
            let answer = aggregate(server, who, request).await.unwrap();
            let f = answer.cells[0].fees[0].clone();
            (f.first_quartile, f.median, f.third_quartile)
        }
    };
    let february = quartiles("2024-02-29").await;
    for to in ["2024-03-31", "2024-06-30", "2024-12-31"] {
        assert_eq!(quartiles(to).await, february, "up to {to}");
    }
    // The median is between the 7th and 8th moved fees: within 10 % of the true one.
    let median = f64::midpoint(1000.0 + 6.0 * 137.0, 1000.0 + 7.0 * 137.0);
    assert!(
        (february.1 - median).abs() <= median * 0.1 + 1.0,
        "{february:?}"
    );
}

/// One set of reports shows one count: a currency group that is every report of its
/// cell shows the cell's perturbed count, not a second draw of it (one answer carried
/// two independent draws, which an adversarial pass combined to read true counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fee_group_that_is_its_whole_cell_shows_the_cells_count() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let keys = register(&server, &pki, &["AUS", "IDN"]).await;
    let base = case_reports("03-differencing.aus.jsonl").remove(0);
    // Six months, each of 13 to 18 reports that all state a fee in USD: enough that
    // every group is shown whatever its noise (at most 2).
    let mut reports = Vec::new();
    for (m, n) in (1..=6u32).zip(13u32..) {
        for i in 0..n {
            let state = if i % 2 == 0 { "AUS" } else { "IDN" };
            let mut r = variant(&base, state, &format!("2025-{m:02}-{:02}", 1 + i), 10);
            if let Some(pb::report::Details::Smuggling(s)) = r.details.as_mut() {
                s.fee_per_person = Some(pb::Money {
                    amount: 900 + u64::from(i) * 71,
                    currency: "USD".into(),
                });
            }
            reports.push(r);
        }
    }
    submit_all(&server, &pki, &keys, &reports).await;
    let filter = pb::AggregateFilter {
        category: pb::Category::SmugglingIncident as i32,
        ..months("2025-01-01", "2025-06-30")
    };
    let metrics = [pb::Metric::Reports, pb::Metric::FeePerPerson];
    let answer = aggregate(
        &server,
        &regional(&pki),
        request(&[pb::Dimension::Month], &metrics, filter),
    )
    .await
    .unwrap();
    let shown: Vec<(u64, u64)> = answer
        .cells
        .iter()
        .filter(|c| c.suppressed == 0 && c.fees.len() == 1)
        .map(|c| (c.values[0], c.fees[0].reports))
        .collect();
    assert!(shown.len() >= 6, "{:?}", answer.cells);
    for (count, behind_fees) in &shown {
        assert_eq!(count, behind_fees, "{shown:?}");
    }
}

/// A state's own reports neither open a small cell nor change its noise: with one IDN
/// report, AUS's analyst sees the cell as AUS's reports alone show it however many AUS
/// reports are added; with five IDN reports, adding and retracting AUS reports moves the
/// shown count and persons by exactly the AUS reports' (the noise on IDN's stays), so
/// nothing can be averaged — and AUS cannot step its own values to find where the noise
/// on IDN's crosses zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_states_own_reports_neither_open_a_cell_nor_refresh_its_noise() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let keys = register(&server, &pki, &["AUS", "IDN"]).await;
    let base = case_reports("03-differencing.aus.jsonl").remove(0);
    let idn: Vec<pb::Report> = (0..6u32)
        .map(|i| {
            variant(
                &base,
                "IDN",
                &format!("2022-0{}-10", if i == 0 { 3 } else { 4 }),
                9,
            )
        })
        .collect();
    submit_all(&server, &pki, &keys, &idn).await;
    let aus = analyst(&pki, "AUS");
    let count_of = |filter: pb::AggregateFilter| {
        let request = request(&[], &PERSONS, filter);
        let (server, aus) = (&server, &aus);
        async move {
            let answer = aggregate(server, aus, request).await.unwrap();
            // A total too small to show is not listed.
            answer
                .cells
                .first()
                .filter(|total| total.suppressed == 0)
                .map(|total| (total.values[0], total.values[1]))
        }
    };
    // Unfiltered, or filtered by a route country every report has: the same reports.
    let count = |month: &str, scan: bool| {
        let filter = pb::AggregateFilter {
            category: pb::Category::SmugglingIncident as i32,
            route_countries: if scan { vec!["AFG".into()] } else { Vec::new() },
            ..months(&format!("{month}-01"), &last_day(month))
        };
        count_of(filter)
    };
    let aus_alone = |month: &str| {
        count_of(pb::AggregateFilter {
            category: pb::Category::SmugglingIncident as i32,
            reporting_states: vec!["AUS".into()],
            ..months(&format!("{month}-01"), &last_day(month))
        })
    };
    let mut padding = Vec::new();
    let mut shifted = std::collections::BTreeSet::new();
    for round in 0..6u32 {
        // Six more AUS reports in each month, then the previous ones retracted.
        let added: Vec<pb::Report> = (0..6u32)
            .flat_map(|i| {
                ["2022-03", "2022-04"]
                    .map(|m| variant(&base, "AUS", &format!("{m}-{:02}", 11 + i), 5 + round))
            })
            .collect();
        submit_all(&server, &pki, &keys, &added).await;
        let retractions: Vec<pb::Envelope> = padding
            .iter()
            .map(|r| common::retraction(r, 2, &keys["AUS"]))
            .collect();
        if !retractions.is_empty() {
            import(&server, &pki, "AUS", retractions).await;
        }
        padding = added;
        // One IDN report in March: left out, however many AUS reports surround it.
        let march = count("2022-03", false).await;
        assert!(march.is_some(), "round {round}");
        assert_eq!(march, aus_alone("2022-03").await, "round {round}");
        assert_eq!(count("2022-03", true).await, march, "round {round}: a scan");
        // Five IDN reports in April and six of AUS's: the count less AUS's six, and the
        // persons less AUS's, never move.
        let (reports, persons) = count("2022-04", false).await.expect("shown");
        shifted.insert((reports - 6, persons - u64::from(6 * (5 + round))));
        assert_eq!(
            count("2022-04", true).await,
            Some((reports, persons)),
            "a scan"
        );
    }
    assert_eq!(shifted.len(), 1, "{shifted:?}");
}

/// Reports of other states that the analyst's state reads as records — shared with every
/// contributor, or with a list naming it — are known to it, so they count as its own:
/// they neither open a cell nor change its noise, and a cell's figures move by exactly
/// theirs. Before, they counted among the others' reports, and an analyst padded a
/// withheld group with known reports until it showed, then took them off (an adversarial
/// pass: exact counts from two queries). Round by round, a different number of THA's
/// reports shared with every contributor and AUS's shared with IDN and THA surround
/// THA's reports shared with no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_shared_with_the_analysts_state_count_as_its_own() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let keys = register(&server, &pki, &["AUS", "IDN", "THA"]).await;
    let base = case_reports("03-differencing.aus.jsonl").remove(0);
    // THA's reports shared with no state: two in March (withheld), five in April; and
    // one of IDN's, so that it stands.
    let mut hidden: Vec<pb::Report> = (0..7)
        .map(|i| {
            variant(
                &base,
                "THA",
                if i < 2 { "2022-03-10" } else { "2022-04-10" },
                9,
            )
        })
        .collect();
    hidden.push(variant(&base, "IDN", "2021-06-01", 4));
    submit_all(&server, &pki, &keys, &hidden).await;
    let idn = analyst(&pki, "IDN");
    let count = |month: &str| {
        let filter = pb::AggregateFilter {
            category: pb::Category::SmugglingIncident as i32,
            ..months(&format!("{month}-01"), &last_day(month))
        };
        let request = request(&[], &PERSONS, filter);
        let (server, idn) = (&server, &idn);
        async move {
            let answer = aggregate(server, idn, request).await.unwrap();
            answer
                .cells
                .first()
                .filter(|total| total.suppressed == 0)
                .map(|total| (total.values[0], total.values[1]))
        }
    };
    let mut padding: Vec<pb::Report> = Vec::new();
    let mut shifted = std::collections::BTreeSet::new();
    for round in 0..6u32 {
        let known = u64::from(round + 1);
        let added: Vec<pb::Report> = (0..known)
            .flat_map(|i| {
                ["2022-03", "2022-04"].map(|m| {
                    let date = format!("{m}-{:02}", 11 + i);
                    let (state, scope, listed) = if i % 2 == 0 {
                        ("THA", pb::SharingScope::AllContributors, vec![])
                    } else {
                        let listed = vec!["IDN".to_owned(), "THA".to_owned()];
                        ("AUS", pb::SharingScope::ListedStates, listed)
                    };
                    let mut r = variant(&base, state, &date, 5 + round);
                    r.sharing = Some(pb::Sharing {
                        scope: scope as i32,
                        states: listed,
                    });
                    r
                })
            })
            .collect();
        submit_all(&server, &pki, &keys, &added).await;
        for state in ["AUS", "THA"] {
            let retractions: Vec<pb::Envelope> = padding
                .iter()
                .filter(|r| r.reporting_state == state)
                .map(|r| common::retraction(r, 2, &keys[state]))
                .collect();
            if !retractions.is_empty() {
                import(&server, &pki, state, retractions).await;
            }
        }
        padding = added;
        // March: THA's two reports IDN cannot read are left out, so fewer than three
        // known ones do not show (from three on, as their perturbed count says).
        if known < 3 {
            assert_eq!(count("2022-03").await, None, "round {round}");
        }
        let (reports, persons) = count("2022-04").await.expect("shown");
        shifted.insert((reports - known, persons - known * u64::from(5 + round)));
    }
    assert_eq!(shifted.len(), 1, "{shifted:?}");
    // March shows what the reports IDN knows show without THA's two: retracted, they
    // change nothing.
    let before = count("2022-03").await.expect("shown");
    let unreadable: Vec<pb::Envelope> = hidden[..2]
        .iter()
        .map(|r| common::retraction(r, 2, &keys["THA"]))
        .collect();
    import(&server, &pki, "THA", unreadable).await;
    assert_eq!(count("2022-03").await, Some(before));
    // The notes say how others' few reports are counted.
    let march = pb::AggregateFilter {
        category: pb::Category::SmugglingIncident as i32,
        ..months("2022-03-01", "2022-03-31")
    };
    let answer = aggregate(&server, &idn, request(&[], &PERSONS, march))
        .await
        .unwrap();
    let said = |n: &pb::SuppressionNote| {
        n.explanation
            .contains("the cell shows those it can read alone")
    };
    assert!(answer.notes.iter().any(said), "{:?}", answer.notes);
}

/// A state analyst's count of a cell that also holds other states' reports is its own
/// reports' count plus the count the others' reports show alone (asked with `--state` of
/// the others), over twenty-four cells of three or four IDN reports beside AUS's own —
/// cells whose others' row of the perturbation table differs from the row of their total:
/// padding moves the shown count by exactly the padding, and a cell whose others show
/// fewer than the minimum seen alone shows AUS's reports alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_analysts_count_is_its_own_plus_the_others_count_seen_alone() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let keys = register(&server, &pki, &["AUS", "IDN"]).await;
    let base = case_reports("03-differencing.aus.jsonl").remove(0);
    let months_of = |year: u32| (1..=12u32).map(move |m| format!("{year}-{m:02}"));
    let reports: Vec<pb::Report> = months_of(2020)
        .chain(months_of(2021))
        .enumerate()
        .flat_map(|(i, month)| {
            let idn = 3 + i % 2;
            (0..idn)
                .map(|d| ("IDN", d, 9))
                .chain((0..4).map(|d| ("AUS", 10 + d, 5)))
                .map(|(state, day, persons)| {
                    variant(&base, state, &format!("{month}-{:02}", day + 1), persons)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    submit_all(&server, &pki, &keys, &reports).await;
    let aus = analyst(&pki, "AUS");
    let by_month = |states: &[&str]| {
        let filter = pb::AggregateFilter {
            category: pb::Category::SmugglingIncident as i32,
            reporting_states: states.iter().map(|s| (*s).to_owned()).collect(),
            ..months("2020-01-01", "2021-12-31")
        };
        let request = request(&[pb::Dimension::Month], &PERSONS, filter);
        let (server, aus) = (&server, &aus);
        async move {
            let answer = aggregate(server, aus, request).await.unwrap();
            answer
                .cells
                .into_iter()
                .filter(|c| c.keys[0] != "*" && c.suppressed == 0)
                .map(|c| (c.keys[0].clone(), (c.values[0], c.values[1])))
                .collect::<BTreeMap<String, (u64, u64)>>()
        }
    };
    let (mixed, alone, own) = (
        by_month(&[]).await,
        by_month(&["IDN"]).await,
        by_month(&["AUS"]).await,
    );
    for month in months_of(2020).chain(months_of(2021)) {
        let expected = match alone.get(&month) {
            Some((n, persons)) => Some((n + 4, persons + 20)),
            None => own.get(&month).copied(),
        };
        assert_eq!(mixed.get(&month).copied(), expected, "{month}");
    }
    assert!(!alone.is_empty(), "some cells of three or four are shown");
}

/// Smuggling incidents of May 2019.
fn may_2019() -> pb::AggregateFilter {
    pb::AggregateFilter {
        category: pb::Category::SmugglingIncident as i32,
        ..months("2019-05-01", "2019-05-31")
    }
}

/// Under the privacy budget, which cells a table lists and how large it is do not depend
/// on the data: the same cells before and after a report of a new origin arrives, and a
/// table too large says so with a size known from the query alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budgeted_table_lists_the_same_cells_whatever_the_data() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.analytics.privacy_budget.enabled = true;
        c.analytics.privacy_budget.rho_per_query = 0.01;
    })
    .await;
    let keys = register(&server, &pki, &["AUS", "IDN"]).await;
    let base = case_reports("03-differencing.aus.jsonl").remove(0);
    submit_all(
        &server,
        &pki,
        &keys,
        &[variant(&base, "AUS", "2019-05-03", 12)],
    )
    .await;
    let tha = analyst(&pki, "AUS");
    let by_origin = request(&[pb::Dimension::Origin], &PERSONS, may_2019());
    let keys_of =
        |a: &pb::AggregateResponse| a.cells.iter().map(|c| c.keys.clone()).collect::<Vec<_>>();
    let before = aggregate(&server, &tha, by_origin.clone()).await.unwrap();
    let mut nzl = variant(&base, "IDN", "2019-05-04", 7);
    nzl.route.get_or_insert_with(Default::default).origin = "NZL".into();
    submit_all(&server, &pki, &keys, &[nzl]).await;
    let after = aggregate(&server, &tha, by_origin).await.unwrap();
    assert_eq!(keys_of(&before), keys_of(&after));
    // Every ISO country, "none" and the total.
    assert_eq!(
        before.cells.len(),
        tidemark::country::all_alpha3().len() + 2
    );
    let too_large = request(&[pb::Dimension::Route], &PERSONS, may_2019());
    let refused = aggregate(&server, &tha, too_large).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let expected = (tidemark::country::all_alpha3().len() + 1).pow(2) + 1;
    assert!(
        refused.message().contains(&expected.to_string()),
        "{}",
        refused.message()
    );
}

/// The same for fees: a state's own fees neither open a currency group that holds a
/// few other states' fees nor change the noise of its count (the group shows its own
/// fees alone); and a cell of its own reports only is perturbed like any other (not
/// always shown low).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_fees_do_not_open_a_group_and_own_cells_are_not_biased() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let keys = register(&server, &pki, &["AUS", "IDN"]).await;
    let base = case_reports("03-differencing.aus.jsonl").remove(0);
    let with_fee = |state: &str, date: &str, amount: u64| {
        let mut r = variant(&base, state, date, 10);
        if let Some(pb::report::Details::Smuggling(s)) = r.details.as_mut() {
            s.fee_per_person = Some(pb::Money {
                amount,
                currency: "USD".into(),
            });
        }
        r
    };
    // Two IDN fees and twelve of AUS's in 2019-09.
    let mut reports = vec![
        with_fee("IDN", "2019-09-01", 8500),
        with_fee("IDN", "2019-09-02", 3000),
    ];
    reports.extend((0..12u64).map(|i| with_fee("AUS", "2019-09-05", 1000 + 100 * i)));
    // Sixteen AUS-only months (2017-01 … 2018-04) of 10 to 25 reports.
    for (i, n) in (0..16u32).zip(10..=25u32) {
        let month = format!("{}-{:02}-10", 2017 + i / 12, i % 12 + 1);
        reports.extend((0..n).map(|_| variant(&base, "AUS", &month, 8)));
    }
    submit_all(&server, &pki, &keys, &reports).await;
    let aus = analyst(&pki, "AUS");
    let september = pb::AggregateFilter {
        category: pb::Category::SmugglingIncident as i32,
        ..months("2019-09-01", "2019-09-30")
    };
    let aus_only = request(
        &[],
        &[pb::Metric::Reports, pb::Metric::FeePerPerson],
        pb::AggregateFilter {
            reporting_states: vec!["AUS".into()],
            ..september.clone()
        },
    );
    let fees = request(
        &[],
        &[pb::Metric::Reports, pb::Metric::FeePerPerson],
        september,
    );
    // IDN's two fees are left out: the group is AUS's twelve, as without them.
    let answer = aggregate(&server, &aus, fees.clone()).await.unwrap();
    let alone = aggregate(&server, &aus, aus_only).await.unwrap();
    assert_eq!(answer.cells[0].fees.len(), 1, "{:?}", answer.cells);
    assert_eq!(answer.cells[0].fees, alone.cells[0].fees);
    // The regional analyst, with no state of its own, sees the 14 fees.
    let regional_answer = aggregate(&server, &regional(&pki), fees).await.unwrap();
    assert_eq!(regional_answer.cells[0].fees.len(), 1);
    // Own-only cells: perturbed, and not all by the same amount (all sixteen alike would
    // happen by chance about once in 65,000 runs).
    let by_month = request(
        &[pb::Dimension::Month],
        &PERSONS,
        pb::AggregateFilter {
            category: pb::Category::SmugglingIncident as i32,
            ..months("2017-01-01", "2018-04-30")
        },
    );
    let answer = aggregate(&server, &aus, by_month).await.unwrap();
    let shifts: std::collections::BTreeSet<i64> = answer
        .cells
        .iter()
        .filter(|c| c.keys[0] != "*")
        .zip(10..=25i64)
        .map(|(c, n)| c.values[0].cast_signed() - n)
        .collect();
    assert!(shifts.len() > 1, "{shifts:?}");
}

/// Under the cell key method a small cell leaves no trace in its table: it is not
/// listed, no other cell is withheld on its account (a margin less the shown cells is
/// no exact figure here), and the notes are those of a table without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_cell_leaves_no_trace_in_a_cell_key_table() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let keys = register(&server, &pki, &["AUS", "IDN"]).await;
    let with_origin = |seed: u64, origin: &str| {
        let mut r = common::sample_report("IDN", seed);
        r.incident_date = "2023-05-10".into();
        r.route.get_or_insert_with(Default::default).origin = origin.to_owned();
        r
    };
    let mut reports: Vec<pb::Report> = (0..12).map(|i| with_origin(600 + i, "AFG")).collect();
    reports.extend((0..9).map(|i| with_origin(700 + i, "IRN")));
    // AUS contributes (give-to-get), outside the month asked about.
    let mut own = common::sample_report("AUS", 900);
    own.incident_date = "2022-01-10".into();
    reports.push(own);
    submit_all(&server, &pki, &keys, &reports).await;
    let by_origin = |countries: &[&str]| {
        request(
            &[pb::Dimension::Origin, pb::Dimension::ReportingState],
            &PERSONS,
            pb::AggregateFilter {
                category: pb::Category::SmugglingIncident as i32,
                route_countries: countries.iter().map(|c| (*c).to_owned()).collect(),
                ..months("2023-05-01", "2023-05-31")
            },
        )
    };
    let aus = analyst(&pki, "AUS");
    let without = aggregate(&server, &aus, by_origin(&["AFG", "IRN"]))
        .await
        .unwrap();
    // One report of origin ISL: a cell of one, on the rows and columns of others.
    submit_all(&server, &pki, &keys, &[with_origin(800, "ISL")]).await;
    let with = aggregate(&server, &aus, by_origin(&["AFG", "IRN", "ISL"]))
        .await
        .unwrap();
    assert!(
        with.cells.iter().all(|c| c.suppressed == 0),
        "{:?}",
        with.cells
    );
    assert!(
        with.cells
            .iter()
            .all(|c| !c.keys.contains(&"ISL".to_owned()))
    );
    assert_eq!(with.notes, without.notes);
    // Nor is any cell flagged as one state's (every report here is IDN's): on perturbed
    // figures the flag would say whether another state has a report or two beside them.
    assert!(with.cells.iter().all(|c| !c.single_state));
    let keys_of = |answer: &pb::AggregateResponse| {
        answer
            .cells
            .iter()
            .map(|c| c.keys.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys_of(&with), keys_of(&without));
}

/// Where the exchange withholds cells of one state's reports, a cell whose few other
/// reports are left out for a state's analyst is judged as the reports it knows alone:
/// AUS's own five beside one unreadable IDN report are one state's (not listed, as
/// without IDN's); AUS's and THA's shared ones beside one are shown as without it.
/// Such tables are scanned whatever they hold (the counters cannot tell the known
/// reports' states, and a choice made on the data would say where unknown reports lie).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cell_of_known_reports_alone_is_judged_by_their_states() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.analytics.suppress_single_state = true;
    })
    .await;
    let keys = register(&server, &pki, &["AUS", "IDN", "THA"]).await;
    let base = case_reports("03-differencing.aus.jsonl").remove(0);
    let shared = |state: &str, date: &str| {
        let mut r = variant(&base, state, date, 6);
        r.sharing = Some(pb::Sharing {
            scope: pb::SharingScope::AllContributors as i32,
            states: Vec::new(),
        });
        r
    };
    let mut reports: Vec<pb::Report> = (0..5).map(|_| shared("AUS", "2022-05-10")).collect();
    reports.extend((0..3).map(|_| shared("AUS", "2022-06-10")));
    reports.extend((0..3).map(|_| shared("THA", "2022-06-11")));
    for month in ["2022-05", "2022-06"] {
        reports.push(variant(&base, "IDN", &format!("{month}-20"), 9));
    }
    submit_all(&server, &pki, &keys, &reports).await;
    let aus = analyst(&pki, "AUS");
    let by_month = |states: &[&str], scan: bool| {
        let filter = pb::AggregateFilter {
            category: pb::Category::SmugglingIncident as i32,
            reporting_states: states.iter().map(|s| (*s).to_owned()).collect(),
            route_countries: if scan { vec!["AFG".into()] } else { Vec::new() },
            ..months("2022-05-01", "2022-06-30")
        };
        let request = request(&[pb::Dimension::Month], &PERSONS, filter);
        let (server, aus) = (&server, &aus);
        async move {
            let answer = aggregate(server, aus, request).await.unwrap();
            (
                answer.source,
                answer
                    .cells
                    .into_iter()
                    .filter(|c| c.keys[0] != "*")
                    .map(|c| (c.keys[0].clone(), (c.suppressed, c.values)))
                    .collect::<BTreeMap<_, _>>(),
            )
        }
    };
    for scan in [false, true] {
        let (source, table) = by_month(&[], scan).await;
        assert_eq!(source, "scan");
        assert!(!table.contains_key("2022-05"), "{table:?}");
        let june = &table["2022-06"];
        assert_eq!(june.0, 0, "{table:?}");
        // The same source without the unknown reports.
        let (source, known) = by_month(&["AUS", "THA"], scan).await;
        assert_eq!(source, "scan");
        assert_eq!(june, &known["2022-06"]);
    }
}
