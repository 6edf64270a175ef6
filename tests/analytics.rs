//! Aggregate queries against a real server: totals equal a recount from the raw reports
//! (after amendments and retractions, from counters and from scans, before and after a
//! counter rebuild), small cells are withheld and cannot be worked out from margins,
//! only analysts may ask, and the CLI draws a chart.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{
    TestPki, TestServer, aggregate, analyst, import, node, operator, regional, retraction,
    sample_report, sign,
};
use tidemark::{
    client::ClientIdentity,
    pb::{self, analytics_client::AnalyticsClient},
};
use tonic::Code;

const STATES: [&str; 3] = ["AUS", "IDN", "THA"];

// ---------------------------------------------------------------------------------
// An independent recount from the raw reports the test sent.
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Dim {
    Month,
    Quarter,
    Year,
    State,
    Category,
    Origin,
    Transit,
    Destination,
    Route,
    Nationality,
    Modus,
    Event,
    Vessel,
    LocationCountry,
    SeaArea,
}

const EVERY_DIM: [Dim; 15] = [
    Dim::Month,
    Dim::Quarter,
    Dim::Year,
    Dim::State,
    Dim::Category,
    Dim::Origin,
    Dim::Transit,
    Dim::Destination,
    Dim::Route,
    Dim::Nationality,
    Dim::Modus,
    Dim::Event,
    Dim::Vessel,
    Dim::LocationCountry,
    Dim::SeaArea,
];

impl Dim {
    fn to_pb(self) -> i32 {
        use pb::Dimension as D;
        (match self {
            Self::Month => D::Month,
            Self::Quarter => D::Quarter,
            Self::Year => D::Year,
            Self::State => D::ReportingState,
            Self::Category => D::Category,
            Self::Origin => D::Origin,
            Self::Transit => D::Transit,
            Self::Destination => D::Destination,
            Self::Route => D::Route,
            Self::Nationality => D::Nationality,
            Self::Modus => D::ModusOperandi,
            Self::Event => D::MaritimeEvent,
            Self::Vessel => D::VesselType,
            Self::LocationCountry => D::LocationCountry,
            Self::SeaArea => D::SeaArea,
        }) as i32
    }
}

fn or_none(code: &str) -> String {
    if code.is_empty() {
        "none".into()
    } else {
        code.into()
    }
}

fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_lowercase()
        .replace('_', "-")
}

/// The labels of `r` along `dim`, each with the persons it counts there (`None`: all).
fn labels(r: &pb::Report, dim: Dim) -> Vec<(String, Option<u64>)> {
    let date = &r.incident_date;
    let (year, month): (u32, u32) = (date[..4].parse().unwrap(), date[5..7].parse().unwrap());
    let route = r.route.clone().unwrap_or_default();
    let location = r.location.clone().unwrap_or_default();
    let one = |s: String| vec![(s, None)];
    let smuggling = match &r.details {
        Some(pb::report::Details::Smuggling(s)) => Some(s.clone()),
        _ => None,
    };
    let maritime = match &r.details {
        Some(pb::report::Details::Maritime(m)) => Some(m.clone()),
        _ => None,
    };
    match dim {
        Dim::Month => one(date[..7].to_owned()),
        Dim::Quarter => one(format!("{year}-Q{}", (month - 1) / 3 + 1)),
        Dim::Year => one(year.to_string()),
        Dim::State => one(r.reporting_state.clone()),
        Dim::Category => one(if smuggling.is_some() {
            "smuggling-incident".into()
        } else {
            "maritime-movement".into()
        }),
        Dim::Origin => one(or_none(&route.origin)),
        Dim::Destination => one(or_none(&route.intended_destination)),
        Dim::Route => one(format!(
            "{}>{}",
            if route.origin.is_empty() {
                "?"
            } else {
                &route.origin
            },
            if route.intended_destination.is_empty() {
                "?"
            } else {
                &route.intended_destination
            }
        )),
        Dim::Transit => {
            let mut t = route.transit.clone();
            t.sort();
            t.dedup();
            if t.is_empty() {
                one("none".into())
            } else {
                t.into_iter().map(|c| (c, None)).collect()
            }
        }
        Dim::Nationality => {
            let p = r.persons.clone().unwrap_or_default();
            let mut out: Vec<(String, Option<u64>)> = p
                .by_nationality
                .iter()
                .map(|n| (n.nationality.clone(), Some(u64::from(n.count))))
                .collect();
            let counted: u64 = p.by_nationality.iter().map(|n| u64::from(n.count)).sum();
            let rest = u64::from(p.total) - counted;
            if rest > 0 || out.is_empty() {
                out.push(("unknown".into(), Some(rest)));
            }
            out
        }
        Dim::Modus => one(smuggling.map_or("none".into(), |s| {
            short(
                pb::ModusOperandi::try_from(s.modus_operandi)
                    .unwrap()
                    .as_str_name(),
                "MODUS_OPERANDI_",
            )
        })),
        Dim::Event => one(maritime.clone().map_or("none".into(), |m| {
            short(
                pb::MaritimeEvent::try_from(m.event).unwrap().as_str_name(),
                "MARITIME_EVENT_",
            )
        })),
        Dim::Vessel => one(maritime.map_or("none".into(), |m| {
            short(
                pb::VesselType::try_from(m.vessel_type)
                    .unwrap()
                    .as_str_name(),
                "VESSEL_TYPE_",
            )
        })),
        Dim::LocationCountry => one(or_none(&location.country)),
        Dim::SeaArea => one(if location.sea_area == 0 {
            "none".into()
        } else {
            short(
                pb::SeaArea::try_from(location.sea_area)
                    .unwrap()
                    .as_str_name(),
                "SEA_AREA_",
            )
        }),
    }
}

/// reports, persons, deaths, missing, minors, unaccompanied, facilitators arrested.
fn sums(r: &pb::Report) -> [u64; 7] {
    let p = r.persons.clone().unwrap_or_default();
    let arrested = match &r.details {
        Some(pb::report::Details::Smuggling(s)) => s.facilitators_arrested,
        _ => 0,
    };
    [
        1,
        p.total.into(),
        p.deaths.into(),
        p.missing.into(),
        p.minors.into(),
        p.unaccompanied_minors.into(),
        arrested.into(),
    ]
}

fn fee(r: &pb::Report) -> Option<(String, u64)> {
    match &r.details {
        Some(pb::report::Details::Smuggling(s)) => s
            .fee_per_person
            .as_ref()
            .map(|f| (f.currency.clone(), f.amount)),
        _ => None,
    }
}

#[derive(Default, Debug)]
struct Expected {
    sums: [u64; 7],
    fees: BTreeMap<String, Vec<u64>>,
    /// The reporting states of the cell's reports (the single-state flag).
    states: std::collections::BTreeSet<String>,
}

/// Every cell and margin ("*") of a grouping of `reports`.
fn recount(reports: &[&pb::Report], dims: &[Dim]) -> HashMap<Vec<String>, Expected> {
    let mut out: HashMap<Vec<String>, Expected> = HashMap::new();
    for r in reports {
        for mask in 0..(1u32 << dims.len()) {
            // Per position: the labels (or "*").
            let choices: Vec<Vec<(String, Option<u64>)>> = dims
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    if mask & (1 << i) != 0 {
                        vec![("*".to_owned(), None)]
                    } else {
                        labels(r, *d)
                    }
                })
                .collect();
            let mut combos: Vec<(Vec<String>, Option<u64>)> = vec![(Vec::new(), None)];
            for choice in &choices {
                combos = combos
                    .into_iter()
                    .flat_map(|(key, persons)| {
                        choice.iter().map(move |(label, p)| {
                            let mut key = key.clone();
                            key.push(label.clone());
                            (key, p.or(persons))
                        })
                    })
                    .collect();
            }
            for (key, persons) in combos {
                let e = out.entry(key).or_default();
                e.states.insert(r.reporting_state.clone());
                let mut s = sums(r);
                if let Some(p) = persons {
                    s = [1, p, 0, 0, 0, 0, 0];
                } else if let Some((currency, amount)) = fee(r) {
                    e.fees.entry(currency).or_default().push(amount);
                }
                for (t, v) in e.sums.iter_mut().zip(s) {
                    *t += v;
                }
            }
        }
    }
    out
}

/// Type 7 quantile of sorted values.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn quantile(sorted: &[u64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p;
    let lo = h.floor() as usize;
    let frac = h - lo as f64;
    let low = sorted[lo] as f64;
    if frac == 0.0 {
        low
    } else {
        low + frac * (sorted[lo + 1] as f64 - low)
    }
}

const ALL_SUMS: [pb::Metric; 7] = [
    pb::Metric::Reports,
    pb::Metric::Persons,
    pb::Metric::Deaths,
    pb::Metric::Missing,
    pb::Metric::Minors,
    pb::Metric::UnaccompaniedMinors,
    pb::Metric::FacilitatorsArrested,
];

/// Asks for `dims` under `filter` and checks every cell against the recount of the
/// reports `keep` accepts (the sums, then the fee quartiles, which a scan answers);
/// returns where the sums came from.
async fn check(
    server: &TestServer,
    who: &ClientIdentity,
    live: &[&pb::Report],
    dims: &[Dim],
    filter: pb::AggregateFilter,
    keep: impl Fn(&pb::Report) -> bool,
) -> String {
    let by_nationality = dims.iter().any(|d| matches!(d, Dim::Nationality));
    // A table of maritime movements alone has no smuggling-only metrics (facilitators,
    // fees): the server refuses them.
    let maritime = filter.category == pb::Category::MaritimeMovement as i32
        || (filter.category == 0 && (filter.vessel_type != 0 || filter.maritime_event != 0));
    let metrics: Vec<pb::Metric> = if by_nationality {
        vec![pb::Metric::Reports, pb::Metric::Persons]
    } else if maritime {
        ALL_SUMS[..6].to_vec()
    } else {
        ALL_SUMS.to_vec()
    };
    let ask = |metrics: Vec<pb::Metric>| pb::AggregateRequest {
        group_by: dims.iter().map(|d| d.to_pb()).collect(),
        metrics: metrics.iter().map(|m| *m as i32).collect(),
        filter: Some(filter.clone()),
    };
    let response = aggregate(server, who, ask(metrics.clone())).await.unwrap();
    let kept: Vec<&pb::Report> = live.iter().copied().filter(|r| keep(r)).collect();
    let expected = recount(&kept, dims);
    assert!(!kept.is_empty(), "the filter keeps some reports");
    assert_eq!(
        response.cells.len(),
        expected.len(),
        "cells of {dims:?} ({})",
        response.source
    );
    for cell in &response.cells {
        let e = expected
            .get(&cell.keys)
            .unwrap_or_else(|| panic!("unexpected cell {:?} for {dims:?}", cell.keys));
        assert_eq!(cell.suppressed, 0, "nothing is withheld at minimum 1");
        assert_eq!(
            cell.single_state,
            e.states.len() == 1,
            "{dims:?} {:?} ({}): reports of {:?}",
            cell.keys,
            response.source,
            e.states
        );
        let want = e.sums[..metrics.len()].to_vec();
        assert_eq!(
            cell.values, want,
            "{dims:?} {:?} ({})",
            cell.keys, response.source
        );
    }
    if !by_nationality && !maritime {
        let fees = aggregate(server, who, ask(vec![pb::Metric::FeePerPerson]))
            .await
            .unwrap();
        assert_eq!(fees.source, "scan", "fee quartiles are read from a scan");
        assert_eq!(fees.cells.len(), expected.len(), "cells of {dims:?} (fees)");
        for cell in &fees.cells {
            check_fees(cell, &expected[&cell.keys]);
        }
    }
    response.source
}

/// A cell's fee quartiles against the recount's amounts.
fn check_fees(cell: &pb::Cell, e: &Expected) {
    let currencies: Vec<&String> = cell.fees.iter().map(|f| &f.currency).collect();
    assert_eq!(
        currencies,
        e.fees.keys().collect::<Vec<_>>(),
        "{:?}",
        cell.keys
    );
    for f in &cell.fees {
        let mut values = e.fees[&f.currency].clone();
        values.sort_unstable();
        assert_eq!(f.reports, values.len() as u64);
        for (got, p) in [
            (f.first_quartile, 0.25),
            (f.median, 0.5),
            (f.third_quartile, 0.75),
        ] {
            assert!((got - quantile(&values, p)).abs() < 1e-6, "{:?}", cell.keys);
        }
    }
}

/// Every dimension and metric, single and combined, filtered and not, on both paths.
async fn check_everything(server: &TestServer, pki: &TestPki, live: &[&pb::Report]) {
    let who = regional(pki);
    let all = pb::AggregateFilter::default;
    for dim in EVERY_DIM {
        let source = check(server, &who, live, &[dim], all(), |_| true).await;
        assert_eq!(source, "counters", "{dim:?} is a counted dimension");
    }
    for dims in [
        vec![Dim::Month, Dim::Route],
        vec![Dim::Quarter, Dim::State, Dim::Origin],
        vec![Dim::Year, Dim::Category, Dim::Transit],
        vec![Dim::Year, Dim::Nationality],
    ] {
        let source = check(server, &who, live, &dims, all(), |_| true).await;
        assert_eq!(source, "counters", "{dims:?}");
    }
    for dims in [
        vec![Dim::Origin, Dim::Vessel],
        vec![Dim::Year, Dim::Transit, Dim::Nationality],
        vec![Dim::Route, Dim::SeaArea, Dim::Category],
    ] {
        let source = check(server, &who, live, &dims, all(), |_| true).await;
        assert_eq!(source, "scan", "{dims:?} has two counted dimensions");
    }
    check_filters(server, &who, live).await;
    check_every_scan(server, &who, live).await;
}

/// Filters: whole months and reporting states from the counters (quarter rows and month
/// rows); a route or a bounding box by a scan.
async fn check_filters(server: &TestServer, who: &ClientIdentity, live: &[&pb::Report]) {
    let all = pb::AggregateFilter::default;
    let months = pb::AggregateFilter {
        category: pb::Category::SmugglingIncident as i32,
        from_date: "2021-03-01".into(),
        to_date: "2023-10-31".into(),
        reporting_states: vec!["AUS".into(), "THA".into()],
        ..all()
    };
    let in_months = |r: &pb::Report| {
        matches!(r.details, Some(pb::report::Details::Smuggling(_)))
            && r.incident_date.as_str() >= "2021-03-01"
            && r.incident_date.as_str() <= "2023-10-31"
            && r.reporting_state != "IDN"
    };
    let source = check(
        server,
        who,
        live,
        &[Dim::Month, Dim::Destination],
        months.clone(),
        in_months,
    )
    .await;
    assert_eq!(source, "counters");
    // Split by quarter or year: quarter rows for the whole quarters, month rows for
    // March and October (the range starts and ends inside a quarter).
    for dims in [
        vec![Dim::Quarter, Dim::Origin],
        vec![Dim::Year, Dim::State, Dim::Nationality],
    ] {
        let source = check(server, who, live, &dims, months.clone(), in_months).await;
        assert_eq!(source, "counters", "{dims:?}");
    }
    let via_afg = pb::AggregateFilter {
        route_countries: vec!["AFG".into()],
        ..months
    };
    let in_months_via_afg = |r: &pb::Report| {
        let route = r.route.clone().unwrap_or_default();
        in_months(r)
            && (route.origin == "AFG"
                || route.intended_destination == "AFG"
                || route.transit.iter().any(|t| t == "AFG"))
    };
    let source = check(
        server,
        who,
        live,
        &[Dim::Quarter, Dim::Modus],
        via_afg,
        in_months_via_afg,
    )
    .await;
    assert_eq!(source, "scan");
    let through_idn = pb::AggregateFilter {
        route_countries: vec!["IDN".into()],
        ..all()
    };
    let via = |r: &pb::Report| {
        let route = r.route.clone().unwrap_or_default();
        route.origin == "IDN"
            || route.intended_destination == "IDN"
            || route.transit.iter().any(|t| t == "IDN")
    };
    let source = check(server, who, live, &[Dim::Year], through_idn, via).await;
    assert_eq!(source, "scan");
    let bbox = pb::AggregateFilter {
        bbox: Some(pb::BoundingBox {
            min_latitude: -5.0,
            min_longitude: 100.0,
            max_latitude: 5.0,
            max_longitude: 115.0,
        }),
        ..all()
    };
    let inside = |r: &pb::Report| {
        r.location.as_ref().and_then(|l| l.point).is_some_and(|p| {
            (-5.0..=5.0).contains(&p.latitude) && (100.0..=115.0).contains(&p.longitude)
        })
    };
    let source = check(server, who, live, &[Dim::SeaArea], bbox, inside).await;
    assert_eq!(source, "scan");
}

/// Every dimension through the scan of the columnar projection (a content filter makes
/// any query a scan), and each content filter alone.
async fn check_every_scan(server: &TestServer, who: &ClientIdentity, live: &[&pb::Report]) {
    let all = pb::AggregateFilter::default;
    let afghans = pb::AggregateFilter {
        nationalities: vec!["AFG".into(), "SOM".into()],
        ..all()
    };
    let has_afghans = |r: &pb::Report| {
        r.persons.as_ref().is_some_and(|p| {
            p.by_nationality
                .iter()
                .any(|n| n.nationality == "AFG" || n.nationality == "SOM")
        })
    };
    for dim in EVERY_DIM {
        let source = check(server, who, live, &[dim], afghans.clone(), has_afghans).await;
        assert_eq!(source, "scan", "{dim:?} under a nationality filter");
    }
    let smuggling = |r: &pb::Report| match &r.details {
        Some(pb::report::Details::Smuggling(s)) => Some(s.clone()),
        _ => None,
    };
    let maritime = |r: &pb::Report| match &r.details {
        Some(pb::report::Details::Maritime(m)) => Some(m.clone()),
        _ => None,
    };
    let by_boat = pb::ModusOperandi::Sea as i32;
    let source = check(
        server,
        who,
        live,
        &[Dim::Month, Dim::State],
        pb::AggregateFilter {
            modus_operandi: by_boat,
            ..all()
        },
        |r| smuggling(r).is_some_and(|s| s.modus_operandi == by_boat),
    )
    .await;
    assert_eq!(source, "scan");
    let wooden = pb::VesselType::WoodenBoat as i32;
    let source = check(
        server,
        who,
        live,
        &[Dim::Route, Dim::Event],
        pb::AggregateFilter {
            vessel_type: wooden,
            ..all()
        },
        |r| maritime(r).is_some_and(|m| m.vessel_type == wooden),
    )
    .await;
    assert_eq!(source, "scan");
    let rescue = pb::MaritimeEvent::Rescue as i32;
    let source = check(
        server,
        who,
        live,
        &[Dim::Quarter, Dim::Transit, Dim::Vessel],
        pb::AggregateFilter {
            maritime_event: rescue,
            ..all()
        },
        |r| maritime(r).is_some_and(|m| m.event == rescue),
    )
    .await;
    assert_eq!(source, "scan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_equal_a_recount_of_the_raw_reports_through_amendments_and_retractions() {
    let pki = TestPki::new();
    // Exact figures (the regional analyst unperturbed): this checks the internals that
    // perturbation starts from.
    let exact = |c: &mut tidemark::Config| {
        c.analytics.minimum_reports = 1;
        c.analytics.minimum_reports_for_quantiles = 1;
        c.analytics.perturb_regional_analyst = false;
    };
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), exact).await;
    let mut latest: BTreeMap<String, Option<pb::Report>> = BTreeMap::new();
    let mut first_key = None;
    let start = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
    for (s, code) in STATES.iter().enumerate() {
        let key = server.register_new_key(&pki, code).await;
        let originals: Vec<pb::Report> = (0..1_000)
            .map(|i| sample_report(code, 10_000 * s as u64 + i))
            .collect();
        import(
            &server,
            &pki,
            code,
            originals.iter().map(|r| sign(r, &key)).collect(),
        )
        .await;
        // Every 7th report is amended with entirely different content (of its category);
        // every 11th is retracted, amended ones included.
        let mut changes = Vec::new();
        for (i, original) in originals.iter().enumerate() {
            let mut current = original.clone();
            if i % 7 == 0 {
                let amended = common::sample_amendment(original, 900_000 + 10 * i as u64);
                changes.push(sign(&amended, &key));
                current = amended;
            }
            if i % 11 == 0 {
                changes.push(retraction(&current, current.version + 1, &key));
                latest.insert(current.report_id.clone(), None);
            } else {
                latest.insert(current.report_id.clone(), Some(current));
            }
        }
        import(&server, &pki, code, changes).await;
        first_key.get_or_insert(key);
    }
    let live: Vec<&pb::Report> = latest.values().flatten().collect();
    assert!(live.len() > 2_500, "{}", live.len());
    check_everything(&server, &pki, &live).await;

    // Counters rebuilt from the envelopes (what an upgrade does) give the same answers.
    let data = server.stop().await;
    let store = common::open_store_after_stop(&data).await;
    let counted = store.rebuild_counters().unwrap();
    assert_eq!(counted, live.len() as u64);
    drop(store);
    let server = TestServer::start_with(&pki, data, exact).await;
    check_everything(&server, &pki, &live).await;

    // AUS's key found compromised since before its first report: every report whose
    // latest version it signed leaves the aggregates; one signed again as its next
    // version under a new key counts again.
    let compromised = first_key.unwrap();
    server
        .admin(&operator(&pki))
        .await
        .revoke_signing_key(pb::RevokeSigningKeyRequest {
            key_id: compromised.key_id().to_owned(),
            reason: "key-compromise".into(),
            compromised_at_unix: start,
        })
        .await
        .unwrap();
    let key = server.register_new_key(&pki, STATES[0]).await;
    let mut again = Vec::new();
    for (i, report) in latest.values_mut().enumerate() {
        let Some(r) = report.as_mut().filter(|r| r.reporting_state == STATES[0]) else {
            continue;
        };
        if i % 3 == 0 {
            r.version += 1;
            again.push(sign(r, &key));
        } else {
            *report = None;
        }
    }
    import(&server, &pki, STATES[0], again).await;
    let live: Vec<&pb::Report> = latest.values().flatten().collect();
    check_everything(&server, &pki, &live).await;
    let data = server.stop().await;
    let store = common::open_store_after_stop(&data).await;
    assert_eq!(store.rebuild_counters().unwrap(), live.len() as u64);
    drop(store);
    let server = TestServer::start_with(&pki, data, exact).await;
    check_everything(&server, &pki, &live).await;
}

// ---------------------------------------------------------------------------------
// Disclosure control.
// ---------------------------------------------------------------------------------

/// A report of `code` on the route `origin` → `destination`, in `category`.
fn routed(code: &str, seed: u64, maritime: bool, origin: &str, destination: &str) -> pb::Report {
    let mut r = (0..1_000)
        .map(|i| sample_report(code, seed * 1_000 + i))
        .find(|r| matches!(r.details, Some(pb::report::Details::Maritime(_))) == maritime)
        .unwrap();
    let route = r.route.get_or_insert_with(Default::default);
    route.origin = origin.into();
    route.intended_destination = destination.into();
    route.transit.clear();
    r
}

/// Entries per line: along each axis, the entries that share every other key.
fn lines(cells: &[pb::Cell], axis: usize) -> BTreeMap<Vec<String>, Vec<&pb::Cell>> {
    let mut out: BTreeMap<Vec<String>, Vec<&pb::Cell>> = BTreeMap::new();
    for cell in cells {
        let mut id = cell.keys.clone();
        id[axis] = String::new();
        out.entry(id).or_default().push(cell);
    }
    out
}

/// No row or column of a two-dimensional table holds exactly one withheld entry, the
/// unlisted small cell `small` counted as withheld on its row and column.
fn no_line_gives_one_away(cells: &[pb::Cell], small: [&str; 2]) {
    for axis in 0..2 {
        for (line, members) in lines(cells, axis) {
            let mut small_line = small.map(str::to_owned).to_vec();
            small_line[axis] = String::new();
            let withheld = members.iter().filter(|c| c.suppressed != 0).count()
                + usize::from(line == small_line);
            assert_ne!(
                withheld, 1,
                "line {line:?} along axis {axis} gives one away"
            );
        }
    }
}

/// Imports `n` reports per (maritime?, origin, destination), alternating AUS and IDN so
/// that only deliberately single-state cells are flagged.
async fn import_routes(server: &TestServer, pki: &TestPki, routes: &[(bool, &str, &str, u64)]) {
    let aus = server.register_new_key(pki, "AUS").await;
    let idn = server.register_new_key(pki, "IDN").await;
    let mut seed = 0;
    let mut rows = Vec::new();
    for (maritime, origin, destination, n) in routes {
        for _ in 0..*n {
            seed += 1;
            let code = if seed % 2 == 0 { "AUS" } else { "IDN" };
            rows.push((code, routed(code, seed, *maritime, origin, destination)));
        }
    }
    for (code, key) in [("AUS", &aus), ("IDN", &idn)] {
        let envelopes = rows
            .iter()
            .filter(|(c, _)| *c == code)
            .map(|(_, r)| sign(r, key))
            .collect();
        import(server, pki, code, envelopes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_cells_are_withheld_with_enough_others_that_margins_do_not_reveal_them() {
    let pki = TestPki::new();
    // Suppression on exact figures (perturbation is tested in tests/disclosure.rs).
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.analytics.perturb_regional_analyst = false;
    })
    .await;
    import_routes(
        &server,
        &pki,
        &[
            // Smuggling by origin: AFG 2, MMR 1, IRN 3 (the threshold), LKA 10.
            (false, "AFG", "AUS", 2),
            (false, "MMR", "AUS", 1),
            (false, "IRN", "AUS", 3),
            (false, "LKA", "AUS", 10),
            // Maritime by origin × destination: AFG>AUS 2; the rest larger.
            (true, "AFG", "AUS", 2),
            (true, "AFG", "NZL", 5),
            (true, "IRN", "AUS", 6),
            (true, "IRN", "NZL", 7),
            (true, "LKA", "AUS", 9),
            (true, "LKA", "NZL", 8),
        ],
    )
    .await;
    let who = regional(&pki);
    let ask = |dims: Vec<pb::Dimension>, category: pb::Category| pb::AggregateRequest {
        group_by: dims.into_iter().map(|d| d as i32).collect(),
        metrics: vec![pb::Metric::Reports as i32, pb::Metric::Persons as i32],
        filter: Some(pb::AggregateFilter {
            category: category as i32,
            ..Default::default()
        }),
    };

    // One dimension: the two small cells hide each other; the threshold cell is shown.
    let one = aggregate(
        &server,
        &who,
        ask(vec![pb::Dimension::Origin], pb::Category::SmugglingIncident),
    )
    .await
    .unwrap();
    let cell = |keys: &[&str]| {
        one.cells
            .iter()
            .find(|c| c.keys == keys)
            .unwrap_or_else(|| panic!("no cell {keys:?}"))
            .clone()
    };
    // Small cells are not listed, as empty ones are not: nor does the note count them.
    for small in ["AFG", "MMR"] {
        assert!(
            one.cells.iter().all(|c| c.keys != [small]),
            "{small} listed"
        );
    }
    assert_eq!(cell(&["IRN"]).suppressed, 0, "exactly the minimum is shown");
    assert_eq!(cell(&["IRN"]).values[0], 3);
    assert_eq!(cell(&["LKA"]).values[0], 10);
    assert_eq!(cell(&["*"]).values[0], 16);
    assert!(
        one.notes
            .iter()
            .any(|n| n.rule == pb::SuppressionRule::SmallCell as i32 && n.cells == 0),
        "{:?}",
        one.notes
    );

    // Two dimensions: AFG>AUS (2 reports) is withheld, and every row and column that
    // holds a withheld entry holds at least two, so no margin minus the shown cells
    // gives it back.
    let two = aggregate(
        &server,
        &who,
        ask(
            vec![pb::Dimension::Origin, pb::Dimension::Destination],
            pb::Category::MaritimeMovement,
        ),
    )
    .await
    .unwrap();
    assert!(
        two.cells.iter().all(|c| c.keys != ["AFG", "AUS"]),
        "small cell listed"
    );
    let secondary = two
        .cells
        .iter()
        .filter(|c| c.suppressed == pb::SuppressionRule::Secondary as i32)
        .count();
    assert!(secondary >= 3, "a 2-D cell needs at least three partners");
    no_line_gives_one_away(&two.cells, ["AFG", "AUS"]);
    // The shown numbers are right.
    let shown = |keys: [&str; 2]| {
        two.cells
            .iter()
            .find(|c| c.keys == keys)
            .map(|c| c.values.first().copied())
    };
    assert_eq!(shown(["*", "*"]), Some(Some(37)));
    assert!(
        two.notes
            .iter()
            .any(|n| n.rule == pb::SuppressionRule::Secondary as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_state_cells_are_flagged_and_withheld_when_configured() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.analytics.suppress_single_state = true;
        c.analytics.perturb_regional_analyst = false;
    })
    .await;
    let aus = server.register_new_key(&pki, "AUS").await;
    let idn = server.register_new_key(&pki, "IDN").await;
    let only_aus: Vec<pb::Envelope> = (0..4)
        .map(|i| sign(&routed("AUS", 100 + i, false, "AFG", "AUS"), &aus))
        .collect();
    import(&server, &pki, "AUS", only_aus).await;
    let mixed_aus: Vec<pb::Envelope> = (0..3)
        .map(|i| sign(&routed("AUS", 200 + i, false, "IRN", "AUS"), &aus))
        .collect();
    import(&server, &pki, "AUS", mixed_aus).await;
    let mixed_idn: Vec<pb::Envelope> = (0..3)
        .map(|i| sign(&routed("IDN", 300 + i, false, "IRN", "AUS"), &idn))
        .collect();
    import(&server, &pki, "IDN", mixed_idn).await;
    let by_origin = aggregate(
        &server,
        &regional(&pki),
        pb::AggregateRequest {
            group_by: vec![pb::Dimension::Origin as i32],
            metrics: vec![pb::Metric::Reports as i32],
            filter: None,
        },
    )
    .await
    .unwrap();
    // AFG's cell, all AUS's, is not listed (as a small or empty one is not), and the
    // note says so without a count.
    assert!(by_origin.cells.iter().all(|c| c.keys != ["AFG"]));
    assert!(
        by_origin
            .notes
            .iter()
            .any(|n| n.rule == pb::SuppressionRule::Dominance as i32 && n.cells == 0)
    );
    let irn = by_origin.cells.iter().find(|c| c.keys == ["IRN"]).unwrap();
    // IRN would give AFG away (total − IRN), so it is withheld too (exact figures).
    assert_eq!(irn.suppressed, pb::SuppressionRule::Secondary as i32);
    let total = by_origin.cells.iter().find(|c| c.keys == ["*"]).unwrap();
    assert_eq!(total.values, [10]);
    assert!(!total.single_state);
    // A table of one state's reports is empty, and its note says that may be why — not
    // only that few reports match (seven of AUS's do).
    let only_aus = aggregate(
        &server,
        &regional(&pki),
        pb::AggregateRequest {
            group_by: vec![pb::Dimension::Origin as i32],
            metrics: vec![pb::Metric::Reports as i32],
            filter: Some(pb::AggregateFilter {
                reporting_states: vec!["AUS".to_owned()],
                ..Default::default()
            }),
        },
    )
    .await
    .unwrap();
    assert!(only_aus.cells.is_empty(), "{:?}", only_aus.cells);
    assert!(
        only_aus
            .notes
            .iter()
            .any(|n| n.explanation.contains("all come from one state")),
        "{:?}",
        only_aus.notes
    );
}

// ---------------------------------------------------------------------------------
// Who may ask, and the audit.
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_analysts_aggregate_and_state_analysts_need_standing() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "AUS").await;
    let smuggling: Vec<pb::Envelope> = (0..5)
        .map(|i| sign(&routed("AUS", 400 + i, false, "AFG", "AUS"), &key))
        .collect();
    import(&server, &pki, "AUS", smuggling).await;
    let request = |category: pb::Category, states: &[&str]| pb::AggregateRequest {
        group_by: vec![pb::Dimension::Year as i32],
        metrics: vec![pb::Metric::Reports as i32],
        filter: Some(pb::AggregateFilter {
            category: category as i32,
            reporting_states: states.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }),
    };
    let all = || request(pb::Category::Unspecified, &[]);

    // A state analyst without standing is refused with the precise reason.
    let refused = aggregate(&server, &analyst(&pki, "IDN"), all())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("IDN has contributed 0 smuggling-incident reports in the last 365 days"),
        "{}",
        refused.message()
    );
    // ... but may aggregate its own state's reports.
    aggregate(
        &server,
        &analyst(&pki, "IDN"),
        request(pb::Category::Unspecified, &["IDN"]),
    )
    .await
    .unwrap();
    // AUS stands in smuggling but not in maritime movements.
    let aus = analyst(&pki, "AUS");
    let ok = aggregate(&server, &aus, request(pb::Category::SmugglingIncident, &[]))
        .await
        .unwrap();
    // A state analyst's figures are always perturbed: within 2 of the true 5.
    let total = ok.cells.iter().find(|c| c.keys == ["*"]).unwrap();
    assert!(total.values[0].abs_diff(5) <= 2, "{:?}", total.values);
    assert_eq!(ok.protection.unwrap().method, "cell-key");
    let refused = aggregate(&server, &aus, all()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("maritime-movement"),
        "{}",
        refused.message()
    );
    // The regional analyst may aggregate everything.
    aggregate(&server, &regional(&pki), all()).await.unwrap();
    // Nodes and operators may not.
    for who in [node(&pki, "AUS"), operator(&pki)] {
        let status = aggregate(&server, &who, all()).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains("analyst certificate"),
            "{}",
            status.message()
        );
    }
    // Every aggregate query is on the audit log with its parameters and the owners
    // whose reports it counted; refusals too.
    let log = common::audit_log(&mut server.admin(&operator(&pki)).await).await;
    let aggregates: Vec<&pb::AuditEntry> = log.iter().filter(|e| e.action == "aggregate").collect();
    assert_eq!(aggregates.len(), 3, "{aggregates:?}");
    let regional_entry = aggregates
        .iter()
        .find(|e| e.principal.contains("/regional/analyst/"))
        .unwrap();
    assert_eq!(regional_entry.count, 5);
    assert_eq!(regional_entry.by_owner.get("AUS"), Some(&5));
    assert!(
        regional_entry.detail.contains("DIMENSION_YEAR"),
        "{}",
        regional_entry.detail
    );
    // Two for standing, two for the wrong role: a refused aggregate, whatever the reason.
    assert_eq!(
        log.iter()
            .filter(|e| e.action == "refused aggregate")
            .count(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_suspended_analysts_and_oversized_requests_are_refused() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.limits.max_message_bytes = 16 * 1024;
    })
    .await;
    let request = || pb::AggregateRequest {
        group_by: vec![pb::Dimension::Year as i32],
        metrics: vec![pb::Metric::Reports as i32],
        filter: None,
    };
    let admin = || async { server.admin(&operator(&pki)).await };

    // A revoked analyst certificate fails on its open connection.
    let who = regional(&pki);
    let mut open = AnalyticsClient::new(server.channel(&who).await);
    open.aggregate(request()).await.unwrap();
    let serial = server
        .exchange(&who)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate_serial;
    admin()
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial,
            reason: "key-compromise".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let status = open.aggregate(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    assert!(status.message().contains("revoked"), "{}", status.message());

    // A suspended state's analyst is refused, even for its own reports.
    admin()
        .await
        .enrol_state(pb::StateRequest {
            state: "IDN".into(),
        })
        .await
        .unwrap();
    admin()
        .await
        .suspend_state(pb::StateRequest {
            state: "IDN".into(),
        })
        .await
        .unwrap();
    let own = pb::AggregateRequest {
        filter: Some(pb::AggregateFilter {
            reporting_states: vec!["IDN".into()],
            ..Default::default()
        }),
        ..request()
    };
    let status = aggregate(&server, &analyst(&pki, "IDN"), own)
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("suspended"),
        "{}",
        status.message()
    );

    // A request larger than the server accepts.
    let oversized = pb::AggregateRequest {
        filter: Some(pb::AggregateFilter {
            reporting_states: vec!["AUS".into(); 8_000],
            ..Default::default()
        }),
        ..request()
    };
    let status = aggregate(&server, &analyst(&pki, "AUS"), oversized)
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
}

/// Aggregate requests that must be refused, each with the field it must name.
fn bad_requests() -> Vec<(pb::AggregateRequest, &'static str)> {
    let all = || pb::AggregateRequest {
        group_by: vec![pb::Dimension::Year as i32],
        metrics: vec![pb::Metric::Reports as i32],
        filter: None,
    };
    vec![
        (
            pb::AggregateRequest {
                metrics: vec![],
                ..all()
            },
            "metrics",
        ),
        (
            pb::AggregateRequest {
                group_by: vec![1, 4, 5, 6],
                ..all()
            },
            "group_by",
        ),
        (
            pb::AggregateRequest {
                group_by: vec![pb::Dimension::Nationality as i32],
                metrics: vec![pb::Metric::Deaths as i32],
                ..all()
            },
            "metrics",
        ),
        (
            pb::AggregateRequest {
                group_by: vec![pb::Dimension::Month as i32, pb::Dimension::Year as i32],
                ..all()
            },
            "group_by",
        ),
        (
            pb::AggregateRequest {
                metrics: vec![
                    pb::Metric::Reports as i32,
                    pb::Metric::Persons as i32,
                    pb::Metric::Reports as i32,
                ],
                ..all()
            },
            "metrics",
        ),
        (
            pb::AggregateRequest {
                filter: Some(pb::AggregateFilter {
                    vessel_type: 98,
                    ..Default::default()
                }),
                ..all()
            },
            "filter.vessel_type",
        ),
        (
            pb::AggregateRequest {
                filter: Some(pb::AggregateFilter {
                    from_date: "2024-06-15".into(),
                    ..Default::default()
                }),
                ..all()
            },
            "filter.from_date",
        ),
        (
            pb::AggregateRequest {
                filter: Some(pb::AggregateFilter {
                    to_date: "2024-02-28".into(),
                    ..Default::default()
                }),
                ..all()
            },
            "filter.to_date",
        ),
    ]
}

/// Aggregate requests asking for what only the other category's reports have, each with
/// the field it must name.
fn bad_category_requests() -> Vec<(pb::AggregateRequest, &'static str)> {
    let all = || pb::AggregateRequest {
        group_by: vec![pb::Dimension::Year as i32],
        metrics: vec![pb::Metric::Reports as i32],
        filter: None,
    };
    vec![
        // A metric only the other category's reports record.
        (
            pb::AggregateRequest {
                metrics: vec![pb::Metric::FeePerPerson as i32],
                filter: Some(pb::AggregateFilter {
                    category: pb::Category::MaritimeMovement as i32,
                    ..Default::default()
                }),
                ..all()
            },
            "metrics",
        ),
        // Fields that only one category's reports have: of the other category than
        // the one asked for, or of both categories (no report has both).
        (
            pb::AggregateRequest {
                filter: Some(pb::AggregateFilter {
                    category: pb::Category::SmugglingIncident as i32,
                    vessel_type: pb::VesselType::WoodenBoat as i32,
                    ..Default::default()
                }),
                ..all()
            },
            "filter.vessel_type",
        ),
        (
            pb::AggregateRequest {
                filter: Some(pb::AggregateFilter {
                    modus_operandi: pb::ModusOperandi::Sea as i32,
                    maritime_event: pb::MaritimeEvent::Rescue as i32,
                    ..Default::default()
                }),
                ..all()
            },
            "filter.maritime_event",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_aggregate_requests_are_invalid_arguments_naming_the_field() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.analytics.max_cells = 10;
    })
    .await;
    let all = || pb::AggregateRequest {
        group_by: vec![pb::Dimension::Year as i32],
        metrics: vec![pb::Metric::Reports as i32],
        filter: None,
    };
    // Bad requests name the field.
    for (bad, field) in bad_requests().into_iter().chain(bad_category_requests()) {
        let status = aggregate(&server, &regional(&pki), bad)
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    // A table too large to return says how to make it smaller (counting the cells it
    // would list: enough reports that more than ten months hold three or more).
    let key = server.register_new_key(&pki, "AUS").await;
    let reports = (0..300).map(|i| sign(&sample_report("AUS", 700 + i), &key));
    import(&server, &pki, "AUS", reports.collect()).await;
    let big = pb::AggregateRequest {
        group_by: vec![pb::Dimension::Month as i32],
        ..all()
    };
    let status = aggregate(&server, &regional(&pki), big).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("at most 10"),
        "{}",
        status.message()
    );
}

// ---------------------------------------------------------------------------------
// The command line and its chart.
// ---------------------------------------------------------------------------------

/// Writes `<dir>/<stem>.pem`, `.key` and `ca.pem` so that `--as <dir>/<stem>` works.
fn write_profile(dir: &std::path::Path, stem: &str, who: &ClientIdentity) -> String {
    std::fs::write(dir.join(format!("{stem}.pem")), who.cert_pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), who.key_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), who.ca_pem()).unwrap();
    dir.join(stem).display().to_string()
}

/// Runs `tidemark aggregate` against `server` as `profile`.
async fn aggregate_cli(server: &TestServer, profile: &str, args: &[&str]) -> std::process::Output {
    let mut all: Vec<String> = vec![
        "aggregate".into(),
        "--endpoint".into(),
        server.endpoint(),
        "--as".into(),
        profile.to_owned(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(&all)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The trimmed text of every `<text>` element of an SVG document.
fn svg_texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_a_table_and_draws_an_svg_chart_that_names_the_metric() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "AUS").await;
    let reports: Vec<pb::Envelope> = (0..40)
        .map(|i| sign(&sample_report("AUS", 500 + i), &key))
        .collect();
    import(&server, &pki, "AUS", reports).await;
    let dir = tempfile::TempDir::new().unwrap();
    let profile = write_profile(dir.path(), "regional", &regional(&pki));
    let chart = dir.path().join("chart.svg").display().to_string();
    let bars = dir.path().join("bars.svg").display().to_string();

    // A period: a time series.
    let args = [
        "--by",
        "year",
        "--metric",
        "persons,deaths",
        "--chart",
        &chart,
    ];
    let out = aggregate_cli(&server, &profile, &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("year"), "{table}");
    assert!(table.contains("(all)"), "{table}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts = svg_texts(&doc);
    assert!(
        texts.iter().any(|t| t == "persons (number of people)"),
        "the value axis names the metric and its unit: {texts:?}"
    );
    assert!(texts.iter().any(|t| t == "year"), "{texts:?}");
    assert!(
        texts.iter().any(|t| t.starts_with("Persons by year")),
        "{texts:?}"
    );
    assert!(
        doc.descendants().any(|n| n.has_tag_name("polyline")),
        "a line is drawn"
    );

    // Otherwise bars; and CSV marks withheld cells by rule.
    let args = ["--by", "origin", "--format", "csv", "--chart", &bars];
    let out = aggregate_cli(&server, &profile, &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.starts_with("origin,reports,withheld,single_state"),
        "{csv}"
    );
    // CSV has no place for the protection: it is named on stderr, to cite it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("protection: cell key method, perturbation table")
            && !stderr.contains("no reports match"),
        "{stderr}"
    );
    let svg = std::fs::read_to_string(&bars).unwrap();
    let texts = svg_texts(&roxmltree::Document::parse(&svg).unwrap());
    assert!(
        texts.iter().any(|t| t == "reports (number of reports)"),
        "{texts:?}"
    );

    // Content filters make it a scan; JSON is the API's proto3 JSON.
    let args = [
        "--by",
        "year",
        "--vessel-type",
        "wooden-boat",
        "--format",
        "json",
    ];
    let out = aggregate_cli(&server, &profile, &args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["source"], "scan", "{json}");
    assert!(
        json["cells"].as_array().is_some_and(|c| !c.is_empty()),
        "{json}"
    );

    // A node is refused with the reason.
    let node_profile = write_profile(dir.path(), "aus-node", &node(&pki, "AUS"));
    let out = aggregate_cli(&server, &node_profile, &["--by", "year"]).await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("analyst certificate"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_too_few_or_no_reports_match_gets_one_answer_in_every_format() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "AUS").await;
    let reports = (0..5).map(|i| sign(&sample_report("AUS", 700 + i), &key));
    import(&server, &pki, "AUS", reports.collect()).await;
    let idn = server.register_new_key(&pki, "IDN").await;
    let two = (0..2).map(|i| sign(&sample_report("IDN", 710 + i), &idn));
    import(&server, &pki, "IDN", two.collect()).await;
    let dir = tempfile::TempDir::new().unwrap();
    let profile = write_profile(dir.path(), "regional", &regional(&pki));
    for format in ["table", "csv", "json"] {
        // None match; two (IDN's) match: told apart, the answer would say that IDN has
        // reports matching whatever filter is added next.
        let none = ["--by", "year", "--from", "1990-01-01", "--to", "1990-12-31"];
        let two = ["--by", "year", "--state", "IDN"];
        let mut outputs = Vec::new();
        for filter in [&none[..], &two[..]] {
            let mut args = filter.to_vec();
            args.extend(["--format", format]);
            let out = aggregate_cli(&server, &profile, &args).await;
            assert!(out.status.success());
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                said.contains("fewer than 3 reports match these filters (perhaps none)"),
                "{format}: {said}"
            );
            outputs.push((out.stdout, out.stderr));
        }
        assert_eq!(outputs[0], outputs[1], "{format}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_to_chart_leaves_an_existing_chart_alone() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "AUS").await;
    // Two reports: every cell is under the minimum of 3, so every cell is withheld.
    let reports: Vec<pb::Envelope> = (0..2)
        .map(|i| sign(&sample_report("AUS", 700 + i), &key))
        .collect();
    import(&server, &pki, "AUS", reports).await;
    let dir = tempfile::TempDir::new().unwrap();
    let profile = write_profile(dir.path(), "regional", &regional(&pki));
    let chart = dir.path().join("chart.svg").display().to_string();
    // Nothing to draw: refused, and an existing chart file is left as it was.
    std::fs::write(&chart, "<svg>keep</svg>").unwrap();
    for by in ["origin", "month"] {
        let args = ["--by", by, "--chart", &chart];
        let out = aggregate_cli(&server, &profile, &args).await;
        assert!(!out.status.success(), "{by}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("nothing to chart"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read_to_string(&chart).unwrap(), "<svg>keep</svg>");
    }
    // Listed cells whose fees are too few for quartiles: said as such, not as withheld.
    let more: Vec<pb::Envelope> = (0..6)
        .map(|i| sign(&sample_report("AUS", 710 + i), &key))
        .collect();
    import(&server, &pki, "AUS", more).await;
    let args = ["--by", "state", "--metric", "fee", "--chart", &chart];
    let out = aggregate_cli(&server, &profile, &args).await;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("fee quartiles") && !said.contains("withheld"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(&chart).unwrap(), "<svg>keep</svg>");
}
