//! Server configuration: the TOML file, its defaults, and how command-line flags
//! override it. `tidemark serve --print-config` prints the effective configuration.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::tls::ServerTlsFiles;

/// The trust domain of the development PKI and of a server without a config file.
pub const DEFAULT_TRUST_DOMAIN: &str = "tidemark.local";
/// Where `tidemark serve` listens by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// Everything `tidemark serve` needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// The SPIFFE trust domain that client certificates must name.
    pub trust_domain: String,
    /// Certificate and key files.
    pub tls: TlsConfig,
    /// The server's receipt signing key.
    pub signing: SigningConfig,
    /// Where the data lives.
    pub store: StoreConfig,
    /// Sizes, counts and timeouts that bound what one client can take.
    pub limits: Limits,
    /// Give-to-get rules.
    pub policy: PolicyConfig,
    /// Disclosure control of aggregates.
    pub analytics: AnalyticsConfig,
    /// The transparency log.
    pub log: LogConfig,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsConfig,
    /// Start a store restored from a backup although the CRL file or the access journal
    /// (which carry the trust changes made since the backup) is missing: set only by
    /// `tidemark serve --trust-files-lost`, never in a file.
    #[serde(skip)]
    pub trust_files_lost: bool,
}

/// The Prometheus metrics endpoint (plain HTTP, `GET /metrics`; see README "Operating").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address and port of the plain-HTTP listener; empty: no metrics endpoint. It
    /// carries no exchange data but should not be public: keep it on loopback or a
    /// monitoring network. An IP address and port ("127.0.0.1:9464"); anything else is
    /// refused at start, as is an address that is taken (`tidemark serve` without a
    /// config file or `--metrics-listen` warns instead, and runs without metrics, when
    /// this default is taken).
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".to_owned(),
        }
    }
}

/// The transparency log (see `docs/transparency.md`). Its checkpoints are signed with
/// the receipt key (`signing.receipt_key`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The log's origin: the first line of every checkpoint and the name of its note key
    /// (C2SP tlog-checkpoint). Empty: `<trust_domain>/log`. Choose it once: witnesses
    /// remember it.
    pub origin: String,
}

/// Certificate and key files of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA certificate(s), PEM, that client certificates must chain to.
    pub ca: PathBuf,
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// The server's private key, PEM (PKCS#8).
    pub key: PathBuf,
    /// The exchange CA's private key. When present the server issues certificates from
    /// CSRs and signs the CRL; without it, revocation is enforced per call only.
    pub ca_key: Option<PathBuf>,
    /// Where the server publishes its CRL (PEM).
    pub crl: PathBuf,
    /// Partner CAs of the bundle, each by its name (RFC 4514, as `whoami` and `openssl
    /// x509 -noout -subject -nameopt rfc2253` write it) with the states whose nodes and
    /// analysts it may vouch for (ISO 3166-1 alpha-3). Every other CA of the bundle is
    /// the exchange's own and vouches for every principal, operators included.
    pub partner_cas: std::collections::BTreeMap<String, Vec<String>>,
    /// The configuration file `partner_cas` was read from, if any: a reload of the TLS
    /// files (`Admin.ReloadTls`, SIGHUP) reads the list again from it, so that a partner
    /// CA added to the bundle is never trusted as the exchange's own. Set by `serve
    /// --config`, never in a file.
    #[serde(skip)]
    pub partner_cas_from: Option<PathBuf>,
}

/// The server's own signing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Ed25519 private key (PKCS#8 PEM) that signs receipts.
    pub receipt_key: PathBuf,
}

impl Default for SigningConfig {
    fn default() -> Self {
        Self::in_dir(Path::new("certs"))
    }
}

impl SigningConfig {
    /// The receipt key `receipt.key` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            receipt_key: dir.join("receipt.key"),
        }
    }
}

/// Give-to-get: how much a state must contribute to read others' reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Whether contributions in one category also open the other (default: no,
    /// Prüm-style, per category).
    pub cross_category: bool,
    /// The rule for reading smuggling-incident reports.
    pub smuggling_incident: CategoryRule,
    /// The rule for reading maritime-movement reports.
    pub maritime_movement: CategoryRule,
    /// DANGER, tests only: grants every read whatever the state contributed, while the
    /// transparency log still states the rules above. It exists so that a test can show
    /// `tidemark audit verify-reciprocity` catching reads the rules did not allow. Never
    /// set it on a real exchange.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub danger_grant_reads_without_contributing: bool,
}

/// The rule for one category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CategoryRule {
    /// Trailing window, in days, over which contributions count.
    pub window_days: u32,
    /// Accepted, non-retracted reports needed in the window: at least 1 (give-to-get is
    /// what the exchange is; nothing turns it off in a real deployment).
    pub minimum: u32,
}

impl Default for CategoryRule {
    fn default() -> Self {
        Self {
            window_days: 365,
            minimum: 1,
        }
    }
}

/// Disclosure control and currency conversion for aggregate queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// A cell with fewer reports than this is withheld (small-cell suppression), judged
    /// on both its true and its perturbed count.
    pub minimum_reports: u32,
    /// Fee quartiles are shown only over at least this many reports of one currency
    /// (order statistics give single values back far more easily than counts do); the
    /// larger of this and `minimum_reports` applies.
    pub minimum_reports_for_quantiles: u32,
    /// Whether the regional analyst's answers are perturbed by the cell key method too
    /// (a state analyst's always are). Turning it off gives the regional analyst exact
    /// figures — and everything exact figures give back: two answers that differ by one
    /// report (case 03), a margin along transit or nationality less the cells shown, an
    /// exact quartile that is one report's fee. Suppression then protects each table
    /// against its own margins only (docs/disclosure.md, "Exact figures").
    pub perturb_regional_analyst: bool,
    /// Withhold cells whose reports all come from one state (they are always flagged).
    pub suppress_single_state: bool,
    /// The currency fees are converted to; empty: fees are given per currency.
    pub fee_currency: String,
    /// Units of `fee_currency` per unit of each other currency, e.g. `AUD = 0.66`.
    /// Fees in a currency without a rate are given in that currency.
    pub rates: std::collections::BTreeMap<String, f64>,
    /// Most cells and margins one aggregate answer may hold; larger tables are refused
    /// with RESOURCE_EXHAUSTED (keep the answer well under `limits.max_message_bytes`).
    pub max_cells: usize,
    /// A differential-privacy budget per state analyst (off by default).
    pub privacy_budget: PrivacyBudgetConfig,
}

/// A zero-concentrated differential privacy (zCDP) budget per state analyst certificate
/// (SPIFFE ID) and calendar year: each aggregate charges `rho_per_query` before it is
/// computed (and is refunded if it fails), and its figures carry discrete Gaussian noise
/// calibrated to that charge instead of the cell key method's. See docs/disclosure.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyBudgetConfig {
    /// Whether state analysts' aggregates are answered under the budget.
    pub enabled: bool,
    /// ρ each state analyst may spend per calendar year (UTC).
    pub rho_per_year: f64,
    /// ρ one aggregate costs, split evenly over the metrics it asks for.
    pub rho_per_query: f64,
    /// Each report's contribution to a sum (persons, deaths, …) is capped at this, which
    /// bounds what one report can change (the sensitivity).
    pub contribution_cap: u32,
}

impl Default for PrivacyBudgetConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            rho_per_year: 1.0,
            rho_per_query: 0.05,
            contribution_cap: 100,
        }
    }
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            minimum_reports: 3,
            minimum_reports_for_quantiles: 10,
            perturb_regional_analyst: true,
            suppress_single_state: false,
            fee_currency: String::new(),
            rates: std::collections::BTreeMap::new(),
            max_cells: 50_000,
            privacy_budget: PrivacyBudgetConfig::default(),
        }
    }
}

/// The embedded redb store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The store file; created with its directory if missing.
    pub path: PathBuf,
    /// redb's own page cache, in MiB (the OS page cache holds the rest of the file). The
    /// default, 80, keeps a server with a million reports under 200 MiB resident, the
    /// aggregate projection's 60 MiB included: a full cache takes more memory than its
    /// size, since each 4 KiB page is allocated with a header and the allocator
    /// (mimalloc) rounds that up to its next size class (`cargo bench --bench aggregate
    /// -- --cache-mib N` on 1M reports: 171, 187, 215 and 249 MiB resident at 64, 80, 96
    /// and 128, with the same query times). More makes reads of a large store faster
    /// (`cargo bench --bench reads -- --cache-mib N`: a full sync of 100k reports ran 16 %
    /// faster at 256 than at 64, indexed queries the same).
    pub cache_mib: usize,
    /// Most submissions committed in one write transaction (group commit).
    pub max_batch: usize,
}

/// The longest any time limit of the configuration may be, in seconds: a year.
pub const MAX_SECS: u64 = 365 * 24 * 60 * 60;
/// The most any count of the configuration (streams, connections, items, cells, …) may be.
pub const MAX_COUNT: u64 = 10_000_000;
/// The smallest `limits.max_message_bytes`: 4 KiB, room for a report's envelope and
/// the answers that carry one (a smaller limit fails every call).
pub const MIN_MESSAGE_BYTES: u64 = 4 * 1024;

/// The largest `limits.max_message_bytes`: 1 GiB.
pub const MAX_MESSAGE_BYTES: u64 = 1 << 30;
/// The largest `store.cache_mib`: 1 TiB.
pub const MAX_CACHE_MIB: u64 = 1 << 20;
/// The longest give-to-get window, in days: a century.
pub const MAX_WINDOW_DAYS: u64 = 36_500;

/// Limits on connections and messages. Every one is set explicitly rather than left to
/// library defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest decoded gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub max_concurrent_streams: u32,
    /// A unary call not answered within it is answered `DEADLINE_EXCEEDED`; an import
    /// takes envelopes for as long, then ends part-way with `DEADLINE_EXCEEDED` and the
    /// counts of what it took (stored and answered for, however long that takes).
    pub request_timeout_secs: u64,
    /// HTTP/2 keepalive ping interval.
    pub keepalive_interval_secs: u64,
    /// A connection whose keepalive ping is not answered within this is closed.
    pub keepalive_timeout_secs: u64,
    /// A TLS handshake that takes longer is abandoned; so is a connection that sends
    /// nothing for as long after its handshake.
    pub handshake_timeout_secs: u64,
    /// A new connection that sends nothing for this long is closed (a TLS client sends
    /// its hello at once), so connections that stall cannot hold handshake slots.
    pub first_byte_timeout_ms: u64,
    /// Connections accepted but not yet through the TLS handshake, in all; past this one
    /// is closed to make room for a new one: one of the client address group holding the
    /// most (its oldest that has sent nothing, else its oldest).
    pub max_pending_handshakes: usize,
    /// The same, per client address group (an IPv4 address, an IPv6 /64): past it a
    /// new connection from the group is closed at once, so one address cannot take
    /// every slot.
    pub max_pending_handshakes_per_address: usize,
    /// Subscribe streams one principal may hold open at once; more are refused with
    /// RESOURCE_EXHAUSTED.
    pub max_subscriptions_per_principal: usize,
    /// Connections one principal (certificate SPIFFE ID) may hold open at once; one more
    /// is closed as soon as its handshake is done (each holds a file descriptor).
    pub max_connections_per_principal: usize,
    /// Queries, syncs and aggregates one principal may have in progress at once; more are
    /// refused with RESOURCE_EXHAUSTED (each holds a server thread while its caller
    /// reads, or a core while it is computed). However many analysts ask, the server
    /// computes as many aggregates at once as it has cores, and one analyst's next only
    /// once its last is done: the others wait their turn.
    pub max_reads_per_principal: usize,
    /// Reads that go on the audit record (and so into the transparency log) one
    /// principal may start a minute: Query, Sync, Subscribe, Aggregate and the
    /// operator's listings, audit pages and backups. Up to this many at once, then one
    /// every `60 / n` seconds; past it a read is refused with RESOURCE_EXHAUSTED and a
    /// `grpc-retry-pushback-ms` saying when to try again, so a caller in a loop cannot
    /// grow the store and the log without bound.
    pub reads_per_minute_per_principal: u32,
    /// Lookups one principal may make a minute: MyStanding, AccessToMyData and
    /// GetEntries. They are not on the audit record, but each reads the store in
    /// proportion to what it covers (the caller's contributions, its access list, a
    /// range of the log), so each costs one, and one more for each 1,000 records it
    /// read. Up to this many at once, then one every `60 / n` seconds;
    /// past it a lookup is refused with RESOURCE_EXHAUSTED and a
    /// `grpc-retry-pushback-ms` saying when to try again, so a caller in a loop cannot
    /// take the server's cores from every other state.
    pub lookups_per_minute_per_principal: u32,
    /// Most envelopes in one Import stream.
    pub max_import_items: usize,
    /// A query, sync, subscription or backup whose caller takes nothing for this long is
    /// ended with DEADLINE_EXCEEDED (what was sent is on record), so a caller that stops
    /// reading cannot hold a server thread or a backup copy.
    pub read_stall_secs: u64,
    /// A query or sync that has been sending for this long ends with DEADLINE_EXCEEDED
    /// (what was sent is on record; its caller continues after the last cursor or
    /// sequence it received), so a caller that reads slowly but steadily cannot hold a
    /// server thread and one of its reads without end. (No read holds a store snapshot
    /// while it waits for its caller.)
    pub max_read_secs: u64,
    /// On shutdown, in-flight calls get this long to finish before connections are cut.
    pub shutdown_grace_secs: u64,
    /// A connection whose client certificate is revoked or expires, or whose state is
    /// suspended, is closed this long after (calls in progress are told why first; a
    /// state reinstated within it keeps its connections).
    pub lapsed_connection_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // Invariant: the constant is a valid socket address.
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            tls: TlsConfig::default(),
            signing: SigningConfig::default(),
            store: StoreConfig::default(),
            limits: Limits::default(),
            policy: PolicyConfig::default(),
            analytics: AnalyticsConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            trust_files_lost: false,
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self::in_dir(Path::new("certs"))
    }
}

impl TlsConfig {
    /// The file names the development PKI uses, inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca_key: Some(dir.join("ca.key")),
            crl: dir.join("crl.pem"),
            partner_cas: std::collections::BTreeMap::new(),
            partner_cas_from: None,
        }
    }

    /// The files the server's TLS configuration is built from.
    pub fn files(&self) -> ServerTlsFiles {
        ServerTlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            partner_cas: self.partner_cas.clone(),
            partner_cas_from: self.partner_cas_from.clone(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::in_dir(Path::new("data"))
    }
}

impl StoreConfig {
    /// `tidemark.redb` inside `dir`, with the default cache.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join("tidemark.redb"),
            cache_mib: 80,
            max_batch: 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_streams: 128,
            request_timeout_secs: 30,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            handshake_timeout_secs: 10,
            first_byte_timeout_ms: 2_000,
            max_pending_handshakes: 1_024,
            max_pending_handshakes_per_address: 32,
            max_subscriptions_per_principal: 16,
            max_connections_per_principal: 64,
            max_import_items: 10_000,
            max_reads_per_principal: 16,
            reads_per_minute_per_principal: 120,
            lookups_per_minute_per_principal: 600,
            read_stall_secs: 60,
            max_read_secs: 600,
            shutdown_grace_secs: 10,
            lapsed_connection_grace_secs: 5,
        }
    }
}

impl Limits {
    /// `read_stall_secs` as a duration.
    pub fn read_stall(&self) -> Duration {
        Duration::from_secs(self.read_stall_secs)
    }

    /// `max_read_secs` as a duration.
    pub fn max_read(&self) -> Duration {
        Duration::from_secs(self.max_read_secs)
    }

    /// `request_timeout_secs` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// `keepalive_interval_secs` as a duration.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_secs(self.keepalive_interval_secs)
    }

    /// `keepalive_timeout_secs` as a duration.
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.keepalive_timeout_secs)
    }

    /// `handshake_timeout_secs` as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    /// `first_byte_timeout_ms` as a duration.
    pub fn first_byte_timeout(&self) -> Duration {
        Duration::from_millis(self.first_byte_timeout_ms)
    }

    /// `lapsed_connection_grace_secs` as a duration.
    pub fn lapsed_connection_grace(&self) -> Duration {
        Duration::from_secs(self.lapsed_connection_grace_secs)
    }

    /// `shutdown_grace_secs` as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

impl Config {
    /// Reads a TOML config file; unknown keys are errors, and so are values out of their
    /// range ([`Self::check`]).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::read(path)?;
        config.check()?;
        Ok(config)
    }

    /// The settings whose values differ between `self` and `other`, as dotted paths in
    /// the file's terms (`limits.max_reads_per_principal`, `tls.partner_cas."CN=…"`),
    /// sorted; a table's entry present in one only counts as changed.
    pub fn changed_settings(&self, other: &Self) -> Vec<String> {
        fn walk(
            path: &str,
            a: Option<&toml::Value>,
            b: Option<&toml::Value>,
            out: &mut Vec<String>,
        ) {
            if let (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) = (a, b) {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    let bare = key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    let shown = if bare {
                        key.clone()
                    } else {
                        format!("{key:?}")
                    };
                    let inner = if path.is_empty() {
                        shown
                    } else {
                        format!("{path}.{shown}")
                    };
                    walk(&inner, a.get(key.as_str()), b.get(key.as_str()), out);
                }
            } else if a != b {
                out.push(path.to_owned());
            }
        }
        let (Ok(a), Ok(b)) = (toml::Value::try_from(self), toml::Value::try_from(other)) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        walk("", Some(&a), Some(&b), &mut changed);
        changed
    }

    /// Reads a TOML config file without [`Self::check`]ing its values: for a caller that
    /// overrides some of them first (command-line flags), and then checks.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = crate::files::read_text(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // A file that sets nothing is a mistake (cut short by a failed deploy, say): it
        // would run the server on its development defaults, relative paths and all.
        if toml::from_str::<toml::Table>(&text).is_ok_and(|table| sets_nothing(&table)) {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                reason: "it sets nothing (it is empty, or holds comments or table headers \
                         only), which would \
                         run the server on its development defaults (certs/ and data/ \
                         beside the working directory): write its settings \
                         (`tidemark serve --print-config` prints them all), or run without \
                         --config for the defaults"
                    .to_owned(),
            });
        }
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Each partner CA's name is an RFC 4514 name, and its states are state codes.
    pub(crate) fn check_partner_cas(&self) -> Result<(), ConfigError> {
        for (name, states) in &self.tls.partner_cas {
            crate::dn::NameKey::parse(name).map_err(|why| {
                ConfigError::Invalid(format!(
                    "tls.partner_cas: {name:?} is not a CA name as RFC 4514 writes it ({why}); \
                     copy it from `openssl x509 -noout -subject -nameopt rfc2253 -in CA.pem`"
                ))
            })?;
            if states.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "tls.partner_cas: {name:?} lists no state: list the states whose nodes and \
                     analysts it vouches for, or take it out of the bundle"
                )));
            }
            for state in states {
                crate::country::CountryCode::parse(state)
                    .map_err(|e| ConfigError::Invalid(format!("tls.partner_cas: {name:?}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Checks values that serde cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (name, value, range) in self.bounded() {
            if !range.contains(&value) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between {} and {} (it is {value})",
                    range.start(),
                    range.end()
                )));
            }
        }
        self.check_analytics()?;
        self.check_partner_cas()?;
        self.check_relations()?;
        if !self.metrics.listen.is_empty() {
            match socket_address(&self.metrics.listen) {
                Err(e) => {
                    return Err(ConfigError::Invalid(format!(
                        "metrics.listen {:?} {e}; or \"\" for no metrics endpoint",
                        self.metrics.listen
                    )));
                }
                Ok(metrics) if overlap(metrics, self.listen) => {
                    return Err(ConfigError::Invalid(format!(
                        "metrics.listen is {metrics}, the port the exchange itself listens on \
                         (listen = {}): give the metrics endpoint a port of its own",
                        self.listen
                    )));
                }
                Ok(_) => {}
            }
        }
        if crate::identity::check_trust_domain(&self.trust_domain).is_err() {
            return Err(ConfigError::Invalid(format!(
                "trust_domain {:?} must be a SPIFFE trust domain (SPIFFE ID §2.1): lower-case \
                 letters, digits, '-', '.' and '_', such as \"tidemark.local\"",
                self.trust_domain
            )));
        }
        let origin = self.log_origin();
        // People compare the origin by eye (it names the checkpoint key): printable ASCII
        // only, so that no invisible or look-alike character can hide in it.
        if origin.is_empty() || !origin.bytes().all(|b| b.is_ascii_graphic() && b != b'+') {
            return Err(ConfigError::Invalid(format!(
                "log.origin {origin:?} must be printable ASCII with no spaces or '+' (it \
                 names the checkpoint key, C2SP signed-note), e.g. \"tidemark.example/log\""
            )));
        }
        Ok(())
    }

    /// The transparency log's origin: `log.origin`, or `<trust_domain>/log`.
    pub fn log_origin(&self) -> String {
        if self.log.origin.is_empty() {
            format!("{}/log", self.trust_domain)
        } else {
            self.log.origin.clone()
        }
    }

    /// Every setting that must be at least 1, with its value and the most it may be:
    /// far past any sensible value, and far from what would overflow a timer, a
    /// semaphore or a date computed from it.
    fn bounded(&self) -> Vec<(&'static str, u64, std::ops::RangeInclusive<u64>)> {
        let mut all = self.limits_bounded();
        all.extend(self.others_bounded());
        all
    }

    /// [`Self::bounded`] for `[limits]`.
    fn limits_bounded(&self) -> Vec<(&'static str, u64, std::ops::RangeInclusive<u64>)> {
        const SECS: u64 = MAX_SECS;
        const COUNT: u64 = MAX_COUNT;
        let l = &self.limits;
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        vec![
            (
                "limits.max_message_bytes",
                n(l.max_message_bytes),
                MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES,
            ),
            (
                "limits.max_concurrent_streams",
                u64::from(l.max_concurrent_streams),
                1..=COUNT,
            ),
            (
                "limits.request_timeout_secs",
                l.request_timeout_secs,
                1..=SECS,
            ),
            (
                "limits.keepalive_interval_secs",
                l.keepalive_interval_secs,
                1..=SECS,
            ),
            (
                "limits.keepalive_timeout_secs",
                l.keepalive_timeout_secs,
                1..=SECS,
            ),
            (
                "limits.handshake_timeout_secs",
                l.handshake_timeout_secs,
                1..=SECS,
            ),
            (
                "limits.first_byte_timeout_ms",
                l.first_byte_timeout_ms,
                1..=SECS * 1000,
            ),
            (
                "limits.max_pending_handshakes",
                n(l.max_pending_handshakes),
                1..=COUNT,
            ),
            (
                "limits.max_pending_handshakes_per_address",
                n(l.max_pending_handshakes_per_address),
                1..=COUNT,
            ),
            (
                "limits.max_subscriptions_per_principal",
                n(l.max_subscriptions_per_principal),
                1..=COUNT,
            ),
            (
                "limits.max_connections_per_principal",
                n(l.max_connections_per_principal),
                1..=COUNT,
            ),
            (
                "limits.max_reads_per_principal",
                n(l.max_reads_per_principal),
                1..=COUNT,
            ),
            (
                "limits.reads_per_minute_per_principal",
                u64::from(l.reads_per_minute_per_principal),
                1..=COUNT,
            ),
            (
                "limits.lookups_per_minute_per_principal",
                u64::from(l.lookups_per_minute_per_principal),
                1..=COUNT,
            ),
            ("limits.max_import_items", n(l.max_import_items), 1..=COUNT),
            ("limits.read_stall_secs", l.read_stall_secs, 1..=SECS),
            ("limits.max_read_secs", l.max_read_secs, 1..=SECS),
            (
                "limits.shutdown_grace_secs",
                l.shutdown_grace_secs,
                0..=SECS,
            ),
            (
                "limits.lapsed_connection_grace_secs",
                l.lapsed_connection_grace_secs,
                0..=SECS,
            ),
        ]
    }

    /// [`Self::bounded`] for the store, analytics and policy.
    fn others_bounded(&self) -> Vec<(&'static str, u64, std::ops::RangeInclusive<u64>)> {
        const COUNT: u64 = MAX_COUNT;
        let a = &self.analytics;
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        vec![
            (
                "store.cache_mib",
                n(self.store.cache_mib),
                1..=MAX_CACHE_MIB,
            ),
            ("store.max_batch", n(self.store.max_batch), 1..=COUNT),
            ("analytics.max_cells", n(a.max_cells), 1..=COUNT),
            (
                "analytics.minimum_reports",
                u64::from(a.minimum_reports),
                1..=COUNT,
            ),
            (
                "analytics.minimum_reports_for_quantiles",
                u64::from(a.minimum_reports_for_quantiles),
                1..=COUNT,
            ),
            (
                "analytics.privacy_budget.contribution_cap",
                u64::from(a.privacy_budget.contribution_cap),
                1..=COUNT,
            ),
            (
                "policy.smuggling_incident.window_days",
                u64::from(self.policy.smuggling_incident.window_days),
                1..=MAX_WINDOW_DAYS,
            ),
            (
                "policy.maritime_movement.window_days",
                u64::from(self.policy.maritime_movement.window_days),
                1..=MAX_WINDOW_DAYS,
            ),
            (
                "policy.smuggling_incident.minimum",
                u64::from(self.policy.smuggling_incident.minimum),
                1..=COUNT,
            ),
            (
                "policy.maritime_movement.minimum",
                u64::from(self.policy.maritime_movement.minimum),
                1..=COUNT,
            ),
        ]
    }

    /// Paths that must name a file, and settings bounded by one another.
    fn check_relations(&self) -> Result<(), ConfigError> {
        let paths = [
            ("store.path", &self.store.path),
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("tls.crl", &self.tls.crl),
            ("signing.receipt_key", &self.signing.receipt_key),
        ];
        // Spaces alone name no file either (a CRL file named "   " was written).
        let blank = |p: &Path| p.to_str().is_some_and(|t| t.trim().is_empty());
        if let Some((name, _)) = paths.iter().find(|(_, p)| blank(p)) {
            return Err(ConfigError::Invalid(format!(
                "{name} is empty: name a file, or leave the setting out for its default \
                 (--print-config shows it)"
            )));
        }
        if let Some(key) = &self.tls.ca_key
            && !key.as_os_str().is_empty()
            && blank(key)
        {
            return Err(ConfigError::Invalid(
                "tls.ca_key is spaces: name the CA key file, or set ca_key = \"\" to keep the \
                 CA offline"
                    .to_owned(),
            ));
        }
        let (l, a) = (&self.limits, &self.analytics);
        if l.max_pending_handshakes_per_address > l.max_pending_handshakes {
            return Err(ConfigError::Invalid(format!(
                "limits.max_pending_handshakes_per_address ({}) is more than \
                 limits.max_pending_handshakes ({}), the limit for all addresses together: \
                 lower it, or raise the other",
                l.max_pending_handshakes_per_address, l.max_pending_handshakes
            )));
        }
        if a.minimum_reports_for_quantiles < a.minimum_reports {
            return Err(ConfigError::Invalid(format!(
                "analytics.minimum_reports_for_quantiles ({}) is less than \
                 analytics.minimum_reports ({}): quartiles need at least as many reports as \
                 counts do (a quartile of fewer tells single values); raise it",
                a.minimum_reports_for_quantiles, a.minimum_reports
            )));
        }
        Ok(())
    }

    fn check_analytics(&self) -> Result<(), ConfigError> {
        /// The largest yearly privacy budget, in ρ.
        const MAX_RHO_PER_YEAR: f64 = 1e6;
        /// The least one query may cost, in ρ: the budget's unit (it is kept in micro-ρ).
        const MIN_RHO_PER_QUERY: f64 = 1e-6;
        /// Exchange rates taken: wider than any two currencies' rate, narrow enough that
        /// no converted fee overflows or loses every digit.
        const RATES: std::ops::RangeInclusive<f64> = 1e-9..=1e9;
        let a = &self.analytics;
        let b = &a.privacy_budget;
        let positive = |x: f64| x.is_finite() && x > 0.0;
        // Budgets are kept in micro-ρ (u64): a million ρ a year is far past any
        // meaningful privacy loss, and far from overflow.
        if !positive(b.rho_per_year)
            || !positive(b.rho_per_query)
            || b.rho_per_query < MIN_RHO_PER_QUERY
            || b.rho_per_query > b.rho_per_year
            || b.rho_per_year > MAX_RHO_PER_YEAR
        {
            return Err(ConfigError::Invalid(format!(
                "analytics.privacy_budget: rho_per_query ({}) and rho_per_year ({}) must be \
                 positive numbers, rho_per_query at least {MIN_RHO_PER_QUERY} (the budget is \
                 kept in millionths) and at most rho_per_year, rho_per_year at most \
                 {MAX_RHO_PER_YEAR}",
                b.rho_per_query, b.rho_per_year
            )));
        }
        if let Some(rate) = a.rates.get(&a.fee_currency)
            && (*rate - 1.0).abs() > f64::EPSILON
        {
            return Err(ConfigError::Invalid(format!(
                "analytics.rates gives {} a rate of {rate}, but it is fee_currency itself: \
                 its rate is 1 (leave it out)",
                a.fee_currency
            )));
        }
        let currency = crate::report::is_money;
        if !a.fee_currency.is_empty() && !currency(&a.fee_currency) {
            return Err(ConfigError::Invalid(format!(
                "analytics.fee_currency {:?} is not an ISO 4217 currency code",
                a.fee_currency
            )));
        }
        if !a.rates.is_empty() && a.fee_currency.is_empty() {
            return Err(ConfigError::Invalid(
                "analytics.rates needs analytics.fee_currency, the currency they convert to"
                    .to_owned(),
            ));
        }
        for (code, rate) in &a.rates {
            if !currency(code) {
                return Err(ConfigError::Invalid(format!(
                    "analytics.rates: {code:?} is not an ISO 4217 currency code"
                )));
            }
            if !(RATES.contains(rate)) {
                return Err(ConfigError::Invalid(format!(
                    "analytics.rates.{code} must be a number from {} to {} (units of \
                     fee_currency per unit of {code}), not {rate}",
                    RATES.start(),
                    RATES.end()
                )));
            }
        }
        Ok(())
    }

    /// The configuration as TOML, every default written out.
    pub fn to_toml(&self) -> String {
        // Invariant: every field is a plain TOML value.
        toml::to_string_pretty(self).expect("config serializes to TOML")
    }
}

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    /// The configuration file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    #[error("config file {} is not valid: {reason}", path.display())]
    /// The file is not valid TOML for this configuration.
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        reason: String,
    },
    #[error("invalid configuration: {0}")]
    /// A setting has a value the server cannot use.
    Invalid(String),
}

/// Whether listeners on `a` and `b` would take one port: the same port (not 0, which
/// picks a free one) on the same address — an IPv4-mapped IPv6 address is its IPv4
/// address — or on an unspecified one of the other's family (`[::]` is both families).
pub fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    // [::] takes the port on every address of both families (Linux's default, dual
    // stack); 0.0.0.0 on every IPv4 address, and on [::].
    let takes = |any: IpAddr, other: IpAddr| match any {
        IpAddr::V6(_) => true,
        IpAddr::V4(_) => other.is_ipv4() || other.is_unspecified(),
    };
    let (x, y) = (a.ip().to_canonical(), b.ip().to_canonical());
    a.port() == b.port()
        && a.port() != 0
        && (x == y || (x.is_unspecified() && takes(x, y)) || (y.is_unspecified() && takes(y, x)))
}

/// An IP address and port written one way: as Rust's `SocketAddr` writes it back
/// (`127.0.0.1:50051`, `[::1]:50051`; no leading zeros in the port or an IPv4 address,
/// IPv6 compressed and lower case, RFC 5952), so that a setting is shown as it was given.
///
/// # Errors
/// What is wrong, saying how to write it.
pub fn socket_address(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text.parse().map_err(|e| {
        format!("is not an IP address and port ({e}): give one such as \"127.0.0.1:9464\"")
    })?;
    if address.to_string() == text {
        Ok(address)
    } else {
        Err(format!(
            "is written another way than addresses are (leading zeros, or an IPv6 address \
             not in its short form, RFC 5952): write it \"{address}\""
        ))
    }
}

fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    socket_address(&text).map_err(|e| serde::de::Error::custom(format!("listen {text:?} {e}")))
}

/// Whether a configuration table sets no value (only tables that set none, if any).
fn sets_nothing(table: &toml::Table) -> bool {
    table.values().all(|value| match value {
        toml::Value::Table(inner) => sets_nothing(inner),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that sets nothing — empty, blank, comments only, a byte-order mark — is
    /// refused, not taken for the development defaults (tester X).
    #[test]
    fn a_file_that_sets_nothing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("empty", ""),
            ("blank", "\n\n  \n"),
            ("comments", "# listen = \"127.0.0.1:1\"\n"),
            ("bom", "\u{feff}"),
            ("headers", "[tls]\n[tls.partner_cas]\n[policy]\n"),
        ] {
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, text).unwrap();
            let refused = Config::read(&path).unwrap_err().to_string();
            assert!(refused.contains("sets nothing"), "{name}: {refused}");
        }
        let path = dir.path().join("one.toml");
        std::fs::write(&path, "trust_domain = \"example.org\"\n").unwrap();
        assert_eq!(Config::read(&path).unwrap().trust_domain, "example.org");
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let config = Config::default();
        let parsed: Config = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(parsed, config);
    }

    #[test]
    fn changed_settings_are_named_as_the_file_names_them() {
        let before = Config::default();
        assert_eq!(
            before.changed_settings(&before.clone()),
            Vec::<String>::new()
        );
        let mut after = before.clone();
        after.limits.max_reads_per_principal += 1;
        after.listen = "127.0.0.1:1".parse().unwrap();
        after
            .tls
            .partner_cas
            .insert("CN=Partner \"CA\",O=X".to_owned(), vec!["IDN".to_owned()]);
        assert_eq!(
            before.changed_settings(&after),
            [
                "limits.max_reads_per_principal",
                "listen",
                r#"tls.partner_cas."CN=Partner \"CA\",O=X""#,
            ]
        );
    }

    #[test]
    fn unknown_keys_and_zero_limits_are_refused() {
        assert!(toml::from_str::<Config>("listen_addr = \"127.0.0.1:1\"").is_err());
        let config: Config = toml::from_str("[limits]\nmax_message_bytes = 0").unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("limits.max_message_bytes"), "{err}");
    }

    #[test]
    fn empty_paths_and_settings_out_of_step_with_one_another_are_refused() {
        let check = |text: &str| toml::from_str::<Config>(text).unwrap().check();
        for (text, named) in [
            ("[store]\npath = \"\"", "store.path is empty"),
            ("[tls]\ncrl = \"\"", "tls.crl is empty"),
            ("[tls]\ncrl = \"   \"", "tls.crl is empty"),
            ("[tls]\nca_key = \" \"", "tls.ca_key is spaces"),
            (
                "[signing]\nreceipt_key = \"\"",
                "signing.receipt_key is empty",
            ),
            (
                "[limits]\nmax_pending_handshakes = 2\nmax_pending_handshakes_per_address = 3",
                "max_pending_handshakes_per_address (3) is more than",
            ),
            (
                "[analytics]\nminimum_reports = 3\nminimum_reports_for_quantiles = 2",
                "minimum_reports_for_quantiles (2) is less than",
            ),
            (
                "[limits]\nmax_message_bytes = 4095",
                "limits.max_message_bytes must be",
            ),
        ] {
            let said = check(text).unwrap_err().to_string();
            assert!(said.contains(named), "{text}: {said}");
        }
        // A CA kept offline is an empty ca_key, and equal bounds are fine.
        assert!(check("[tls]\nca_key = \"\"").is_ok());
        assert!(
            check("[analytics]\nminimum_reports = 3\nminimum_reports_for_quantiles = 3").is_ok()
        );
        assert!(check("[limits]\nmax_message_bytes = 4096").is_ok());
    }

    #[test]
    fn the_trust_domain_and_log_origin_are_held_to_their_rules() {
        let check = |text: &str| toml::from_str::<Config>(text).unwrap().check();
        for bad in ["Tidemark.Local", "td:443", "u@td", "td?x", "", "a/b"] {
            let text = format!("trust_domain = {bad:?}");
            assert!(check(&text).is_err(), "{bad:?}");
        }
        assert!(check("trust_domain = \"tidemark.example\"").is_ok());
        for bad in [
            "tidemark.example/log\u{202e}gol",
            "a\u{200b}b",
            "a b",
            "a+b",
            "\u{e9}t\u{e9}",
        ] {
            let text = format!("[log]\norigin = \"{bad}\"");
            assert!(check(&text).is_err(), "{bad:?}");
        }
        assert!(check("[log]\norigin = \"tidemark.example/log\"").is_ok());
    }

    /// Every bounded setting is refused, naming it, just past its maximum (as an outside
    /// pass found, a keepalive of 2^63 s started and then panicked on every connection),
    /// and taken at its maximum.
    #[test]
    fn every_setting_is_refused_past_its_maximum() {
        let names = Config::default().bounded();
        assert!(names.len() > 20);
        for (name, _, range) in names {
            let (table, key) = name.rsplit_once('.').unwrap();
            let (min, max) = (*range.start(), *range.end());
            let below = min.checked_sub(1).map(|v| (v, false));
            for (value, ok) in [(min, true), (max, true), (max + 1, false)]
                .into_iter()
                .chain(below)
            {
                // Settings bounded by one another move with it.
                let companion = match name {
                    "limits.max_pending_handshakes" => {
                        "max_pending_handshakes_per_address = 1".to_owned()
                    }
                    "limits.max_pending_handshakes_per_address" => {
                        format!("max_pending_handshakes = {}", value.clamp(1, max))
                    }
                    "analytics.minimum_reports" => {
                        format!("minimum_reports_for_quantiles = {}", value.clamp(1, max))
                    }
                    "analytics.minimum_reports_for_quantiles" => "minimum_reports = 1".to_owned(),
                    _ => String::new(),
                };
                let text = format!("[{table}]\n{key} = {value}\n{companion}");
                let config: Config = toml::from_str(&text).unwrap();
                match config.check() {
                    Ok(()) => assert!(ok, "{text}"),
                    Err(e) => {
                        assert!(!ok, "{text}: {e}");
                        assert!(e.to_string().contains(name), "{text}: {e}");
                    }
                }
            }
        }
    }

    /// A metrics address that is not one is refused at start, as `listen`'s is: it used
    /// to be a warning at bind time, and the server ran without its metrics.
    #[test]
    fn the_metrics_address_must_be_an_address() {
        let check = |text: &str| toml::from_str::<Config>(text).unwrap().check();
        for bad in [
            "127.0.0.1:9464x",
            "garbage",
            "127.0.0.1:99999",
            "localhost:9464",
        ] {
            let err = check(&format!("[metrics]\nlisten = {bad:?}")).unwrap_err();
            assert!(err.to_string().contains("metrics.listen"), "{bad:?}: {err}");
        }
        let err = check("listen = \"127.0.0.1:7443\"\n[metrics]\nlisten = \"127.0.0.1:7443\"")
            .unwrap_err();
        assert!(err.to_string().contains("a port of its own"), "{err}");
        for ok in ["127.0.0.1:9464", "[::1]:9464", ""] {
            assert!(
                check(&format!("[metrics]\nlisten = {ok:?}")).is_ok(),
                "{ok:?}"
            );
        }
    }

    /// An address is written one way, in `listen` and `metrics.listen` alike: another
    /// spelling of the same address is refused, naming the one to write.
    /// Two listeners that would take one port are told apart from two that would not
    /// (tester C: an IPv4-mapped metrics address on the exchange's port passed the check,
    /// and the server then failed after writing its files).
    #[test]
    fn listeners_on_one_port_overlap_in_any_spelling() {
        let at = |t: &str| t.parse::<SocketAddr>().unwrap();
        for (a, b) in [
            ("127.0.0.1:5", "127.0.0.1:5"),
            ("127.0.0.1:5", "[::ffff:127.0.0.1]:5"),
            ("0.0.0.0:5", "127.0.0.1:5"),
            ("[::]:5", "127.0.0.1:5"),
            ("[::1]:5", "[::]:5"),
            ("0.0.0.0:5", "[::]:5"),
        ] {
            assert!(super::overlap(at(a), at(b)), "{a} {b}");
            assert!(super::overlap(at(b), at(a)), "{b} {a}");
        }
        for (a, b) in [
            ("127.0.0.1:5", "127.0.0.1:6"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("127.0.0.1:5", "127.0.0.2:5"),
            ("127.0.0.1:5", "[::1]:5"),
            ("0.0.0.0:5", "[::1]:5"),
        ] {
            assert!(!super::overlap(at(a), at(b)), "{a} {b}");
        }
        let config = toml::from_str::<Config>(
            "listen = \"127.0.0.1:50051\"\n[metrics]\nlisten = \"[::ffff:127.0.0.1]:50051\"",
        )
        .unwrap();
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("a port of its own")
        );
    }

    #[test]
    fn an_address_is_written_one_way() {
        for (other, canonical) in [
            ("127.0.0.1:055614", "127.0.0.1:55614"),
            ("127.0.0.1:00", "127.0.0.1:0"),
            ("[0:0:0:0:0:0:0:1]:9464", "[::1]:9464"),
            ("[::FFFF:7f00:1]:1", "[::ffff:127.0.0.1]:1"),
        ] {
            let said = super::socket_address(other).unwrap_err();
            assert!(
                said.contains(&format!("write it \"{canonical}\"")),
                "{other}: {said}"
            );
            let metrics = toml::from_str::<Config>(&format!("[metrics]\nlisten = {other:?}"))
                .unwrap()
                .check()
                .unwrap_err();
            assert!(
                metrics.to_string().contains(canonical),
                "{other}: {metrics}"
            );
            let listen = toml::from_str::<Config>(&format!("listen = {other:?}")).unwrap_err();
            assert!(listen.to_string().contains(canonical), "{other}: {listen}");
            assert_eq!(
                super::socket_address(canonical).unwrap().to_string(),
                canonical
            );
        }
    }

    #[test]
    fn rates_and_budgets_are_bounded() {
        let check = |text: &str| toml::from_str::<Config>(text).unwrap().check();
        let rates = |rate: &str| {
            format!("[analytics]\nfee_currency = \"USD\"\n[analytics.rates]\nAUD = {rate}")
        };
        for bad in ["1e308", "1e-320", "0", "-1", "nan", "inf"] {
            assert!(check(&rates(bad)).is_err(), "{bad}");
        }
        assert!(check(&rates("0.000024")).is_ok());
        assert!(check("[analytics]\nfee_currency = \"XXX\"").is_err());
        let budget = |rho: &str| format!("[analytics.privacy_budget]\nrho_per_year = {rho}");
        assert!(check(&budget("1e308")).is_err());
        assert!(check(&budget("2.5")).is_ok());
        // Below the budget's unit a query would cost nothing it could count.
        let per_query = |rho: &str| format!("[analytics.privacy_budget]\nrho_per_query = {rho}");
        assert!(check(&per_query("1e-300")).is_err());
        assert!(check(&per_query("0.000001")).is_ok());
        // The fee currency's own rate is 1.
        let own =
            |rate: &str| format!("[analytics]\nfee_currency = \"USD\"\nrates = {{ USD = {rate} }}");
        assert!(check(&own("2.0")).is_err());
        assert!(check(&own("1.0")).is_ok());
    }

    #[test]
    fn analytics_settings_are_checked() {
        let check = |text: &str| {
            toml::from_str::<Config>(text)
                .unwrap()
                .check()
                .err()
                .map(|e| e.to_string())
        };
        let ok = "[analytics]\nfee_currency = \"USD\"\nrates = { AUD = 0.66, THB = 0.028 }";
        assert_eq!(check(ok), None);
        for (text, named) in [
            (
                "[analytics]\nminimum_reports = 0",
                "analytics.minimum_reports",
            ),
            ("[analytics]\nrates = { AUD = 0.66 }", "analytics.rates"),
            (
                "[analytics]\nfee_currency = \"XXY\"",
                "analytics.fee_currency",
            ),
            (
                "[analytics]\nfee_currency = \"USD\"\nrates = { AUD = -1.0 }",
                "analytics.rates.AUD",
            ),
        ] {
            let err = check(text).unwrap_or_default();
            assert!(err.contains(named), "{text}: {err}");
        }
    }
}
