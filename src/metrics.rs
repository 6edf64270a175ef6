//! Prometheus metrics: what an operator's dashboards and alerts read.
//!
//! One registry per server, with the `prometheus-client` crate (the Prometheus project's
//! Rust client). The gRPC families use the names of the go-grpc-prometheus middleware
//! that existing dashboards expect (`grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_handling_seconds`); Tidemark's own are
//! prefixed `tidemark_`. No label takes unbounded values: services, methods, codes,
//! outcomes, refusal reasons and categories only — never report ids, principals or
//! serials. Served as text (OpenMetrics 1.0) by `server::metrics_http`.

use std::sync::{Arc, atomic::AtomicI64};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

/// A gRPC method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The full service name, e.g. `tidemark.v1.Exchange`.
    pub grpc_service: String,
    /// The method, e.g. `Submit`.
    pub grpc_method: String,
}

/// A gRPC method and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    /// The full service name.
    pub grpc_service: String,
    /// The method.
    pub grpc_method: String,
    /// The status code's name, e.g. `OK`, `PERMISSION_DENIED`.
    pub grpc_code: String,
}

/// What became of a submission.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubmissionLabels {
    /// `accepted`, `duplicate` or `refused`.
    outcome: &'static str,
    /// For a refusal, its kind (a fixed set); empty otherwise.
    reason: &'static str,
}

/// A category of reports.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: &'static str,
}

/// A reporting state and a category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateCategoryLabels {
    state: String,
    category: &'static str,
}

/// A state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// What a scrape reads from the store and the trust state, besides the counters.
#[derive(Debug, Default)]
pub struct Readings {
    /// Size of the store file.
    pub store_bytes: u64,
    /// The server certificate's `not_after`, Unix seconds.
    pub server_not_after: i64,
    /// Live reports per (state, category label).
    pub reports: Vec<(String, &'static str, u64)>,
    /// Per state, the earliest `not_after` of its unrevoked certificates issued here.
    pub certificates: Vec<(String, i64)>,
    /// When the published CRL was issued (`thisUpdate`), Unix seconds, if there is one.
    pub crl_issued: Option<i64>,
    /// Quarters whose aggregate counter rows are not yet caught up with their months.
    pub quarters_behind: u64,
    /// Now, Unix seconds.
    pub now: i64,
}

/// A refused TLS handshake, or a connection closed by the server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    /// A fixed set, e.g. `no_certificate`, `tls_error`, `timeout`.
    reason: &'static str,
}

/// Every metric a server keeps.
pub struct Metrics {
    registry: Registry,
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    handling: Family<MethodLabels, Histogram>,
    submissions: Family<SubmissionLabels, Counter>,
    batch_size: Histogram,
    commit_seconds: Histogram,
    audit_records: Counter,
    refusals_unrecorded: Counter,
    reads_over_budget: Counter,
    lookups_over_budget: Counter,
    give_to_get_refusals: Family<CategoryLabels, Counter>,
    handshakes_refused: Family<HandshakeLabels, Counter>,
    pending_handshakes: Gauge<i64, AtomicI64>,
    open_connections: Gauge<i64, AtomicI64>,
    connections_closed: Family<HandshakeLabels, Counter>,
    store_bytes: Gauge<i64, AtomicI64>,
    quarters_behind: Gauge<i64, AtomicI64>,
    server_certificate_expiry: Gauge<i64, AtomicI64>,
    reports: Family<StateCategoryLabels, Gauge<i64, AtomicI64>>,
    certificate_expiry: Family<StateLabels, Gauge<i64, AtomicI64>>,
    crl_age: Gauge<i64, AtomicI64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, registered and at zero.
    pub fn new() -> Self {
        let seconds = || Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]);
        let metrics = Self {
            registry: Registry::default(),
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(seconds),
            submissions: Family::default(),
            batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            commit_seconds: seconds(),
            audit_records: Counter::default(),
            refusals_unrecorded: Counter::default(),
            reads_over_budget: Counter::default(),
            lookups_over_budget: Counter::default(),
            give_to_get_refusals: Family::default(),
            handshakes_refused: Family::default(),
            pending_handshakes: Gauge::default(),
            open_connections: Gauge::default(),
            connections_closed: Family::default(),
            store_bytes: Gauge::default(),
            quarters_behind: Gauge::default(),
            server_certificate_expiry: Gauge::default(),
            reports: Family::default(),
            certificate_expiry: Family::default(),
            crl_age: Gauge::default(),
        };
        metrics.register()
    }

    fn register(mut self) -> Self {
        self.register_calls();
        self.register_state();
        self
    }

    /// Counts of calls, submissions, writes and refusals.
    fn register_calls(&mut self) {
        let r = &mut self.registry;
        r.register(
            "grpc_server_started",
            "RPCs started on the server",
            self.started.clone(),
        );
        r.register(
            "grpc_server_handled",
            "RPCs completed on the server, by status code",
            self.handled.clone(),
        );
        r.register_with_unit(
            "grpc_server_handling",
            "Time from the start of an RPC to its status",
            Unit::Seconds,
            self.handling.clone(),
        );
        r.register(
            "tidemark_submissions",
            "Envelopes submitted (Submit and Import), by outcome and refusal reason",
            self.submissions.clone(),
        );
        r.register(
            "tidemark_writer_batch_size",
            "Jobs (envelopes, audit records, budget charges) per committed write batch",
            self.batch_size.clone(),
        );
        r.register_with_unit(
            "tidemark_writer_commit",
            "Time to apply and durably commit one write batch",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        r.register(
            "tidemark_audit_records",
            "Audit records written",
            self.audit_records.clone(),
        );
        r.register(
            "tidemark_refusals_unrecorded",
            "Refusals answered without an audit record because their caller had used up its \
             budget of refusal records (see server/refusals.rs)",
            self.refusals_unrecorded.clone(),
        );
        r.register(
            "tidemark_reads_over_budget",
            "Reads refused RESOURCE_EXHAUSTED because their caller had started \
             limits.reads_per_minute_per_principal reads on record in the last minute",
            self.reads_over_budget.clone(),
        );
        r.register(
            "tidemark_lookups_over_budget",
            "MyStanding, AccessToMyData and GetEntries calls refused RESOURCE_EXHAUSTED \
             because their caller had made limits.lookups_per_minute_per_principal of them \
             in the last minute",
            self.lookups_over_budget.clone(),
        );
        r.register(
            "tidemark_give_to_get_refusals",
            "Reads refused because the caller's state lacks standing, by category",
            self.give_to_get_refusals.clone(),
        );
    }

    /// Connections, the store, certificates and the CRL.
    fn register_state(&mut self) {
        let r = &mut self.registry;
        r.register(
            "tidemark_handshakes_refused",
            "TLS handshakes refused, by reason",
            self.handshakes_refused.clone(),
        );
        r.register(
            "tidemark_pending_handshakes",
            "Connections accepted whose TLS handshake is not through yet (at most \
             limits.max_pending_handshakes; past it one is closed to make room, counted as \
             tidemark_handshakes_refused{reason=\"evicted\"})",
            self.pending_handshakes.clone(),
        );
        r.register(
            "tidemark_open_connections",
            "Connections through their TLS handshake and not yet closed",
            self.open_connections.clone(),
        );
        r.register(
            "tidemark_connections_closed",
            "Connections closed because their client certificate's rights lapsed, by \
             reason (revoked, expired, suspended, untrusted: its CA left the bundle or a CA \
             certificate of its chain expired; \
             too_many_connections: over limits.max_connections_per_principal)",
            self.connections_closed.clone(),
        );
        r.register_with_unit(
            "tidemark_store",
            "Size of the store file",
            Unit::Bytes,
            self.store_bytes.clone(),
        );
        r.register(
            "tidemark_counter_quarters_behind",
            "Quarters (per category) whose aggregate counter rows the writer has yet to \
             bring up to date with their months; they are read from month rows meanwhile",
            self.quarters_behind.clone(),
        );
        r.register_with_unit(
            "tidemark_server_certificate_expiry",
            "Time until the server certificate expires (negative once expired)",
            Unit::Seconds,
            self.server_certificate_expiry.clone(),
        );
        r.register(
            "tidemark_reports",
            "Live (latest, unretracted) reports, by reporting state and category",
            self.reports.clone(),
        );
        r.register_with_unit(
            "tidemark_client_certificate_expiry",
            "Time until the first of a state's unrevoked certificates issued by this server \
             expires (negative once expired)",
            Unit::Seconds,
            self.certificate_expiry.clone(),
        );
        r.register_with_unit(
            "tidemark_crl_age",
            "Time since the published CRL's thisUpdate, which is set 5 minutes before it is \
             signed (for clocks that run behind): about 300 just after a re-signing",
            Unit::Seconds,
            self.crl_age.clone(),
        );
    }

    /// An RPC began.
    pub fn rpc_started(&self, method: &MethodLabels) {
        self.started.get_or_create(method).inc();
    }

    /// An RPC ended with `code` after `seconds`.
    pub fn rpc_handled(&self, method: &MethodLabels, code: &str, seconds: f64) {
        self.handled
            .get_or_create(&HandledLabels {
                grpc_service: method.grpc_service.clone(),
                grpc_method: method.grpc_method.clone(),
                grpc_code: code.to_owned(),
            })
            .inc();
        self.handling.get_or_create(method).observe(seconds);
    }

    /// A submission was accepted (`duplicate`: it had been before).
    pub fn submission_accepted(&self, duplicate: bool) {
        let outcome = if duplicate { "duplicate" } else { "accepted" };
        self.submissions
            .get_or_create(&SubmissionLabels {
                outcome,
                reason: "",
            })
            .inc();
    }

    /// A submission was refused for `reason` (one of a fixed set).
    pub fn submission_refused(&self, reason: &'static str) {
        self.submissions
            .get_or_create(&SubmissionLabels {
                outcome: "refused",
                reason,
            })
            .inc();
    }

    /// A write batch of `jobs` committed in `seconds`.
    pub fn batch_committed(&self, jobs: usize, seconds: f64) {
        // Batches are at most a few thousand jobs: exact in an f64.
        #[allow(clippy::cast_precision_loss)]
        self.batch_size.observe(jobs as f64);
        self.commit_seconds.observe(seconds);
    }

    /// An audit record was written.
    pub fn audit_written(&self) {
        self.audit_records.inc();
    }

    /// A refusal was answered without its audit record (its caller's budget was spent).
    pub fn refusal_unrecorded(&self) {
        self.refusals_unrecorded.inc();
    }

    /// A read was refused because its caller's budget of reads on record was spent.
    pub fn read_over_budget(&self) {
        self.reads_over_budget.inc();
    }

    /// A lookup was refused because its caller's budget of lookups was spent.
    pub fn lookup_over_budget(&self) {
        self.lookups_over_budget.inc();
    }

    /// A read was refused for want of standing in `category`.
    pub fn give_to_get_refused(&self, category: &'static str) {
        self.give_to_get_refusals
            .get_or_create(&CategoryLabels { category })
            .inc();
    }

    /// A TLS handshake was refused for `reason` (one of a fixed set).
    pub fn handshake_refused(&self, reason: &'static str) {
        self.handshakes_refused
            .get_or_create(&HandshakeLabels { reason })
            .inc();
    }

    /// `n` TLS handshakes are pending.
    pub fn pending_handshakes(&self, n: usize) {
        self.pending_handshakes
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A connection is through its handshake; open until the value returned is dropped.
    pub fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.clone())
    }

    /// A connection was closed because its certificate's rights lapsed for `reason`.
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&HandshakeLabels { reason })
            .inc();
    }

    /// The families as OpenMetrics text, with the gauges set from `readings`.
    pub fn encode(&self, readings: &Readings) -> String {
        let now = readings.now;
        self.store_bytes
            .set(i64::try_from(readings.store_bytes).unwrap_or(i64::MAX));
        self.quarters_behind
            .set(i64::try_from(readings.quarters_behind).unwrap_or(i64::MAX));
        self.server_certificate_expiry
            .set(readings.server_not_after.saturating_sub(now));
        self.reports.clear();
        for (state, category, n) in &readings.reports {
            self.reports
                .get_or_create(&StateCategoryLabels {
                    state: state.clone(),
                    category,
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.certificate_expiry.clear();
        for (state, not_after) in &readings.certificates {
            self.certificate_expiry
                .get_or_create(&StateLabels {
                    state: state.clone(),
                })
                .set(not_after.saturating_sub(now));
        }
        if let Some(issued) = readings.crl_issued {
            self.crl_age.set(now.saturating_sub(issued));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One open connection, counted in `tidemark_open_connections` until dropped.
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.dec();
    }
}
