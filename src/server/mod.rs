//! The gRPC server: TLS accept loop, authentication, services and HTTP/2 limits.
//!
//! [`Server::build`] loads everything a configuration names (failing with the file or
//! setting at fault); [`Server::run`] serves on a bound listener until `shutdown`
//! resolves, then lets in-flight calls finish.

mod admin;
mod analytics;
mod auth;
mod connections;
mod context;
mod delivery;
mod exchange;
mod feed;
mod guard;
mod incoming;
mod instrument;
mod metrics_http;
mod reads;
mod refusals;
mod status;
mod timeout;
mod transparency;

use std::{future::Future, sync::Arc};

use tokio::{net::TcpListener, sync::oneshot};
use tonic::service::interceptor::InterceptedService;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    administration::Administration,
    clock::Clock,
    config::Config,
    metrics::Metrics,
    pb::{
        self, admin_server::AdminServer, analytics_server::AnalyticsServer,
        exchange_server::ExchangeServer, transparency_server::TransparencyServer,
    },
    policy::Policy,
    signing::{KeyError, SigningKey},
    store::{AdminChange, Store, StoreError},
    tlog::LogSigner,
    tls::{ServerTlsMaterial, TlsError},
    trust::{Trust, TrustError},
};

use self::{
    admin::AdminService, analytics::AnalyticsService, auth::Authenticate, connections::Connections,
    context::Context, exchange::ExchangeService, incoming::AcceptLimits,
    transparency::TransparencyService,
};

/// A server ready to run: configuration checked, TLS material and store loaded.
pub struct Server {
    config: Config,
    clock: Clock,
    trust: Arc<Trust>,
    receipt_key: Arc<SigningKey>,
    log: Arc<LogSigner>,
    store: Store,
    metrics: Arc<Metrics>,
    /// A listener for the metrics endpoint bound by the caller (tests), instead of
    /// `metrics.listen`.
    metrics_listener: Option<std::net::TcpListener>,
}

impl Server {
    /// Loads the TLS files and opens the store that `config` names.
    pub fn build(config: Config) -> Result<Self, ServerError> {
        config
            .check()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        // Check the certificate files first: they are what a new config most often gets wrong.
        if let Some(dir) = config.tls.ca.parent() {
            crate::pki::check_finished(dir).map_err(|e| ServerError::Config(e.to_string()))?;
        }
        ServerTlsMaterial::load(&config.tls.files())?;
        crate::trust::check_ca_key(&config.tls.ca, config.tls.ca_key.as_ref())?;
        // The log's signing key and the CRL file, too, before a store is made: a start
        // that cannot go on leaves nothing behind (both are read again below).
        SigningKey::from_file(&config.signing.receipt_key)?;
        crate::trust::crl_file_revocations(&config.tls.ca, &config.tls.crl, "the CRL file")?;
        let beside_crl = config
            .tls
            .crl
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !beside_crl.is_dir() {
            return Err(ServerError::Config(format!(
                "the directory of [tls] crl, {}, is not there: the server writes the CRL, the \
                 access journal and the audit trail journal in it; make it, or set tls.crl to \
                 a file in a directory that is",
                beside_crl.display()
            )));
        }
        // The CRL and the access journal are written through a link, and one to nothing
        // (a volume not mounted) is refused now rather than replaced by a file later.
        for (what, path) in [
            ("[tls] crl", config.tls.crl.clone()),
            ("the access journal", crate::journal::path(&config.tls.crl)),
        ] {
            crate::files::through_link(&path)
                .map_err(|e| ServerError::Config(format!("{what}, {}: {e}", path.display())))?;
        }
        crate::journal::check(&config.tls.crl)?;
        // `tidemark restore` stages its copy beside the store and renames it into place
        // last: a copy left there is a restore that did not finish, or one running now.
        let staged = config.store.path.with_extension("restoring");
        if staged.exists() {
            return Err(ServerError::Config(format!(
                "{} is the copy of a restore that did not finish (or is running now), so the \
                 store beside it is not the one meant to be served: run `tidemark restore` \
                 again, or remove {} to serve {} as it is",
                staged.display(),
                staged.display(),
                config.store.path.display()
            )));
        }
        let store = Store::open(&config.store)?;
        Self::build_on(config, store)
    }

    /// As [`Self::build`], on a store the caller opened (a test's failing disk).
    pub fn build_on(config: Config, store: Store) -> Result<Self, ServerError> {
        config
            .check()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        ServerTlsMaterial::load(&config.tls.files())?;
        let receipt_key = SigningKey::from_file(&config.signing.receipt_key)?;
        let log = LogSigner::from_key(&config.log_origin(), &receipt_key)
            .map_err(|e| ServerError::Config(format!("log.origin: {e}")))?;
        let leaves = store.prepare_log(&log)?;
        if leaves > 0 {
            tracing::info!(
                leaves,
                "built the transparency log from the stored envelopes and audit records"
            );
        }
        check_log_identity(&store, &log)?;
        if config.policy.danger_grant_reads_without_contributing {
            tracing::warn!(
                "DANGER: policy.danger_grant_reads_without_contributing grants every read; \
                 this server does not enforce give-to-get (tests only)"
            );
        }
        let leftovers = store.remove_backup_leftovers();
        if leftovers > 0 {
            tracing::info!(
                files = leftovers,
                "removed backup copies left beside the store by an interrupted backup"
            );
        }
        if !store.counters_current()? {
            let counted = store.rebuild_counters()?;
            tracing::info!(
                reports = counted,
                "rebuilt the aggregate counters from the stored reports"
            );
        }
        let (_, seconds) = store.build_projection()?;
        {
            let projection = store.projection()?;
            tracing::info!(
                reports = projection.live(),
                rows = projection.rows(),
                seconds,
                bytes = projection.bytes(),
                "built the columnar projection that aggregate scans read (rows include \
                 retracted reports)"
            );
        }
        record_start(&config, &store, &log)?;
        let trust = Trust::load(
            config.tls.files(),
            config.tls.ca_key.clone(),
            config.tls.crl.clone(),
            &store,
        )?;
        Ok(Self {
            config,
            clock: Clock::system(),
            trust: Arc::new(trust),
            receipt_key: Arc::new(receipt_key),
            log: Arc::new(log),
            store,
            metrics: Arc::new(Metrics::new()),
            metrics_listener: None,
        })
    }

    /// Uses `clock` instead of the system clock (for tests that step through time).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The transparency log's note verifier key (`<origin>+<hex id>+<base64 key>`).
    pub fn log_verifier_key(&self) -> String {
        self.log.verifier_key()
    }

    /// Serves metrics on `listener` instead of binding `metrics.listen`.
    #[must_use]
    pub fn with_metrics_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// The context every service shares.
    fn context(
        &self,
        writer: crate::store::Writer,
        feed: feed::Feed,
        refusals: refusals::RefusalRecords,
    ) -> Result<Context, ServerError> {
        let limits = &self.config.limits;
        // Reads on record up to here that are still in progress were cut short by a
        // stop of an earlier server process.
        let before_start = self.store.snapshot()?.last_audit_number()?;
        let admin = Administration::new(
            (self.store.clone(), writer.clone()),
            self.trust.clone(),
            &self.config.trust_domain,
            self.receipt_key.key_id(),
        );
        Ok(Context {
            store: self.store.clone(),
            writer,
            policy: Policy::new(self.config.policy.clone()),
            clock: self.clock.clone(),
            trust: self.trust.clone(),
            admin,
            receipt_key: self.receipt_key.clone(),
            log: self.log.clone(),
            streams: reads::OpenStreams::subscriptions(limits.max_subscriptions_per_principal),
            reads: reads::OpenStreams::reads(limits.max_reads_per_principal),
            feed,
            analytics: crate::analytics::Settings::new(&self.config.analytics),
            max_import_items: limits.max_import_items,
            import_window: limits.request_timeout(),
            read_stall: limits.read_stall(),
            max_read: limits.max_read(),
            // Three quarters of the smaller of our limit and a stock client's (4 MiB).
            page_bytes: limits.max_message_bytes.min(4 << 20) / 4 * 3,
            metrics: self.metrics.clone(),
            refusals,
            aggregates: Arc::new(analytics::Workers::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            )),
            read_budget: Arc::new(crate::budgets::Budgets::new(
                limits.reads_per_minute_per_principal,
                f64::from(limits.reads_per_minute_per_principal) / 60.0,
            )),
            reads_per_minute: limits.reads_per_minute_per_principal,
            lookup_budget: Arc::new(crate::budgets::Budgets::new(
                limits.lookups_per_minute_per_principal,
                f64::from(limits.lookups_per_minute_per_principal) / 60.0,
            )),
            lookups_per_minute: limits.lookups_per_minute_per_principal,
            lookups_in_flight: Arc::new(crate::budgets::InFlight::new(reads::LOOKUPS_IN_FLIGHT)),
            unfinished: delivery::Unfinished::default(),
            before_start,
        })
    }

    /// Starts the metrics endpoint, if it has a listener.
    fn spawn_metrics(&mut self) -> Result<Option<tokio::task::JoinHandle<()>>, ServerError> {
        let Some(listener) = self.bind_metrics()? else {
            return Ok(None);
        };
        let sources = metrics_http::Sources {
            metrics: self.metrics.clone(),
            store: self.store.clone(),
            store_path: self.config.store.path.clone(),
            trust: self.trust.clone(),
            clock: self.clock.clone(),
            trust_domain: self.config.trust_domain.clone(),
        };
        Ok(Some(tokio::spawn(metrics_http::serve(
            listener,
            Arc::new(sources),
        ))))
    }

    /// The metrics endpoint's listener: the one given, or `metrics.listen` bound now
    /// (`None` when empty). An address that cannot be bound is an error, as the
    /// exchange's own is: a server asked for metrics does not run without them.
    fn bind_metrics(&mut self) -> Result<Option<TcpListener>, ServerError> {
        let listen = &self.config.metrics.listen;
        let cannot = |e: std::io::Error| {
            ServerError::Config(format!(
                "cannot listen for metrics on {listen}: {e}; set [metrics] listen (or \
                 --metrics-listen) to a free address, or \"\" for no metrics endpoint"
            ))
        };
        let listener = match self.metrics_listener.take() {
            Some(listener) => listener,
            None if listen.is_empty() => return Ok(None),
            None => std::net::TcpListener::bind(listen).map_err(cannot)?,
        };
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
            .map_err(cannot)?;
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("metrics on http://{addr}/metrics");
        }
        Ok(Some(listener))
    }

    /// The store this server writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Starts accepting connections on `listener`, each watched for its certificate's
    /// rights: the stream of connections, the accept loop's task, and the connections over
    /// their principal's limit (whose calls authentication refuses).
    fn accept(
        &self,
        listener: TcpListener,
        writer: crate::store::Writer,
    ) -> (
        incoming::Incoming,
        tokio::task::JoinHandle<()>,
        connections::OverLimit,
    ) {
        let connections = Connections::new(
            (self.trust.clone(), writer),
            &self.config.trust_domain,
            (
                self.config.limits.lapsed_connection_grace(),
                self.config.limits.handshake_timeout(),
                self.config.limits.max_connections_per_principal,
            ),
            self.metrics.clone(),
        );
        let over_limit = connections.over_limit();
        let (incoming, task) = incoming::spawn(
            listener,
            (self.trust.clone(), self.metrics.clone()),
            connections,
            AcceptLimits::from(&self.config.limits),
        );
        (incoming, task, over_limit)
    }

    /// Serves on `listener` until `shutdown` completes; in-flight calls then finish
    /// before this returns.
    pub async fn run(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        // Logged here, not in `build`, so that the entry's time is `with_clock`'s.
        let policy = Policy::new(self.config.policy.clone()).log_entry(self.clock.now());
        if self.store.record_policy(&self.log, &policy)? {
            tracing::info!("the give-to-get rules in force are now in the transparency log");
        }
        let metrics_task = self.spawn_metrics()?;
        let limits = &self.config.limits;
        let (writer, writer_thread) = self.store.start_writer(
            self.clock.clone(),
            self.config.store.max_batch,
            self.log.clone(),
            self.metrics.clone(),
        )?;
        let (incoming, accept_task, over_limit) = self.accept(listener, writer.clone());

        let (health, health_service) = tonic_health::server::health_reporter();
        set_health(&health, ServingStatus::Serving).await;
        let (reflection, reflection_v1alpha) = reflection()?;
        let authenticate =
            Authenticate::new(&self.config.trust_domain, self.trust.clone(), over_limit);
        let (feed_handle, feed_task) = feed::Feed::start(self.store.clone(), writer.changes());
        let disk_failure = writer.disk_failure();
        let refusals = refusals::RefusalRecords::new(writer.clone(), self.metrics.clone());
        let ctx = self.context(writer, feed_handle, refusals.clone())?;
        let watch_task = tokio::spawn(watch_trust(ctx.clone()));
        let unfinished = ctx.unfinished.clone();
        let refusals = refusals::RefusalAuditLayer::new(refusals);
        let analytics = AnalyticsServer::new(AnalyticsService { ctx: ctx.clone() })
            .max_decoding_message_size(limits.max_message_bytes)
            .max_encoding_message_size(limits.max_message_bytes);
        let exchange = ExchangeServer::new(ExchangeService { ctx: ctx.clone() })
            .max_decoding_message_size(limits.max_message_bytes)
            .max_encoding_message_size(limits.max_message_bytes);
        let transparency = TransparencyServer::new(TransparencyService { ctx: ctx.clone() })
            .max_encoding_message_size(limits.max_message_bytes);
        let admin = AdminServer::new(AdminService { ctx })
            .max_decoding_message_size(limits.max_message_bytes);

        // A failed disk stops the server (see `stop_on_disk_failure`).
        let disk_failed = Arc::new(std::sync::Mutex::new(None));
        // Subscriptions never end by themselves: they end as the server begins to stop.
        let ending = unfinished.clone();
        let shutdown = async move {
            shutdown.await;
            ending.end_subscriptions();
        };
        let shutdown =
            stop_on_disk_failure(shutdown, disk_failure, health.clone(), disk_failed.clone());
        let grace = limits.shutdown_grace();
        let (shutdown, deadline) = drain(shutdown, grace);

        let serve = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            .http2_keepalive_interval(Some(limits.keepalive_interval()))
            .http2_keepalive_timeout(Some(limits.keepalive_timeout()))
            .layer(instrument::InstrumentLayer::new(self.metrics.clone()))
            .layer(tower::util::MapResponseLayer::new(status::client_faults))
            .layer(refusals)
            .layer(timeout::CallTimeoutLayer::new(limits.request_timeout()))
            // One rule for every service: a call is answered only on a connection whose
            // certificate is still admitted (not revoked, its state not suspended).
            .add_service(InterceptedService::new(
                guard::GuardStreams::new(health_service, &self.trust),
                authenticate.clone(),
            ))
            .add_service(InterceptedService::new(
                guard::GuardStreams::new(reflection, &self.trust),
                authenticate.clone(),
            ))
            .add_service(InterceptedService::new(
                guard::GuardStreams::new(reflection_v1alpha, &self.trust),
                authenticate.clone(),
            ))
            .add_service(InterceptedService::new(exchange, authenticate.clone()))
            .add_service(InterceptedService::new(analytics, authenticate.clone()))
            .add_service(InterceptedService::new(transparency, authenticate.clone()))
            .add_service(InterceptedService::new(admin, authenticate))
            .serve_with_incoming_shutdown(incoming, shutdown);
        let result = tokio::select! {
            result = serve => result.map_err(|e| ServerError::Transport(e.to_string())),
            () = deadline => {
                tracing::warn!(?grace, "calls still open after the shutdown grace period were cut");
                unfinished.cut_all();
                Ok(())
            }
        };
        let tasks = [accept_task, watch_task, feed_task]
            .into_iter()
            .chain(metrics_task);
        wind_down(tasks, &unfinished, writer_thread).await;
        let failed = disk_failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match failed {
            Some(reason) => Err(ServerError::DiskFailure(reason)),
            None => result,
        }
    }
}

/// Stops the server's own `tasks`, lets the reads it cut complete their audit records,
/// then commits what the writer holds and stops it.
async fn wind_down(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<()>>,
    unfinished: &delivery::Unfinished,
    writer_thread: crate::store::WriterThread,
) {
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    if !unfinished.finished(READS_FINISH).await {
        tracing::warn!(
            "reads whose audit records were not completed within {READS_FINISH:?} of the \
             shutdown stay in progress (an upper bound of what they sent)"
        );
    }
    // Every accepted submission is committed before the store is let go.
    writer_thread.stop().await;
}

/// How long a stopping server waits for cut reads to complete their audit records.
const READS_FINISH: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses a configuration whose log origin or key differs from those that signed the
/// store's log: a log cannot change either, or every witness and receipt breaks.
fn check_log_identity(store: &Store, log: &LogSigner) -> Result<(), ServerError> {
    let Some(latest) = store.log()?.latest_checkpoint()? else {
        return Ok(());
    };
    if crate::tlog::note::open(&latest.note, &[log.verifier()]).is_ok() {
        return Ok(());
    }
    let signed_as = latest.note.lines().next().unwrap_or_default().to_owned();
    Err(ServerError::Config(format!(
        "the store's transparency log is {signed_as:?}, signed with another origin or key \
         than this configuration's ({}): a log's origin (log.origin) and key \
         (signing.receipt_key) cannot change, or every witness and receipt would reject it; \
         restore the log.origin and signing.receipt_key it was made with",
        log.verifier_key()
    )))
}

/// Server reflection over every `tidemark.v1` file and the health service, in both
/// protocol versions: `grpc.reflection.v1`, and `v1alpha` for the clients that know only
/// it (grpcurl before 1.8.8, Python's grpcio-reflection).
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ServerError,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let failed =
        |e: tonic_reflection::server::Error| ServerError::Config(format!("reflection: {e}"));
    Ok((
        builder().build_v1().map_err(failed)?,
        builder().build_v1alpha().map_err(failed)?,
    ))
}

/// Sets every service's health (and the server's, service "").
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status("grpc.health.v1.Health", status)
        .await;
    health
        .set_service_status(
            <ExchangeServer<ExchangeService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <AnalyticsServer<AnalyticsService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <AdminServer<AdminService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <TransparencyServer<TransparencyService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}

/// Resolves when `shutdown` does, or when the disk under the store fails. A failed disk
/// leaves redb refusing every write until the file is opened again — reads too, since
/// every read is audited — so the server reports NOT_SERVING at once and stops, with
/// [`ServerError::DiskFailure`], for its supervisor to restart it once the disk is fixed.
/// Nothing unacknowledged was acknowledged: a submitter is answered only after its batch
/// is durable, and a batch whose commit failed is answered with the failure.
async fn stop_on_disk_failure(
    shutdown: impl Future<Output = ()> + Send,
    mut disk: tokio::sync::watch::Receiver<Option<String>>,
    health: HealthReporter,
    failed: Arc<std::sync::Mutex<Option<String>>>,
) {
    let failure = async {
        loop {
            if let Some(reason) = disk.borrow_and_update().clone() {
                return reason;
            }
            if disk.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = shutdown => {}
        reason = failure => {
            tracing::error!(%reason, "the store's disk failed: reporting NOT_SERVING and stopping, to be restarted once the disk is fixed");
            set_health(&health, ServingStatus::NotServing).await;
            *failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
        }
    }
}

/// Shutdown: stop accepting, let in-flight calls finish, but do not wait past the grace
/// period for clients that never close their connections. Returns the signal for the
/// server to stop accepting, and a deadline that resolves `grace` after it.
fn drain(
    shutdown: impl Future<Output = ()> + Send,
    grace: std::time::Duration,
) -> (
    impl Future<Output = ()> + Send,
    impl Future<Output = ()> + Send,
) {
    let (draining_tx, draining_rx) = oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight calls");
        let _ = draining_tx.send(());
    };
    let deadline = async move {
        match draining_rx.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    (shutdown, deadline)
}

/// Certificates expiring within this many days are warned about.
const EXPIRY_WARNING_DAYS: i64 = 30;
/// How often expiry is checked.
const EXPIRY_CHECK: std::time::Duration = std::time::Duration::from_secs(3600);

/// Background duties of the trust state: re-read the certificate files on SIGHUP (as
/// `Admin.ReloadTls` does, on the record as the server's own), and warn about
/// certificates approaching expiry (at start, then hourly).
async fn watch_trust(ctx: Context) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut check = tokio::time::interval(EXPIRY_CHECK);
    loop {
        #[cfg(unix)]
        let reload = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let reload = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = check.tick() => warn_expiring(&ctx.trust, &ctx.store, ctx.clock.now()),
            _ = reload => reload_on_hangup(&ctx).await,
        }
    }
}

/// Re-reads the certificate files on SIGHUP and records it, by the server's own SPIFFE
/// ID, as an operator's `Admin.ReloadTls` is recorded: done as `reload-tls`, refused as
/// `refused ReloadTls` with the reason.
async fn reload_on_hangup(ctx: &Context) {
    let record = match ctx.blocking(|ctx| ctx.admin.reload_tls()).await {
        Ok(reloaded) => {
            tracing::info!(serial = %reloaded.serial, "SIGHUP: certificate files re-read");
            crate::store::AuditRecord {
                principal: ctx.admin.server_principal(),
                action: "reload-tls".to_owned(),
                detail: format!("SIGHUP: {}", admin::reloaded(&reloaded)),
                ..crate::store::AuditRecord::default()
            }
        }
        Err(e) => {
            tracing::error!(error = %e.message(), "SIGHUP: the certificate files could not be loaded; the old ones stay");
            crate::store::AuditRecord {
                principal: ctx.admin.server_principal(),
                action: "refused ReloadTls".to_owned(),
                detail: serde_json::json!({ "method": "SIGHUP", "refusal": e.message() })
                    .to_string(),
                ..crate::store::AuditRecord::default()
            }
        }
    };
    if let Err(e) = ctx.audit(record).await {
        tracing::error!(error = %e.message(), "SIGHUP: its audit record could not be written (a reload that went through is in force)");
    }
}

fn warn_expiring(trust: &Trust, store: &Store, now: i64) {
    let horizon = now + EXPIRY_WARNING_DAYS * 86_400;
    if trust.server_not_after() <= horizon {
        tracing::warn!(
            serial = %trust.server_serial(),
            expires = %crate::clock::format_time(trust.server_not_after()),
            "the server certificate expires soon: replace the files and reload (SIGHUP or Admin.ReloadTls)"
        );
    }
    match store.issued_certificates() {
        Ok(certs) => {
            for c in certs
                .iter()
                .filter(|c| c.not_after <= horizon && c.not_after > now && trust.is_issued_live(c))
            {
                tracing::warn!(
                    serial = %c.serial,
                    principal = %c.spiffe_id,
                    expires = %crate::clock::format_time(c.not_after),
                    "an issued certificate expires soon"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "expiry check could not read the store"),
    }
}

/// What a server writes first, before it trusts anyone: on a restored store, the
/// restore's record; and the certificate revocations of the CRL file, and the
/// suspensions and signing-key revocations of the access journal, that the store lacks
/// (made after the backup it was restored from), so that no restore brings back a
/// revoked certificate or key or a suspended state (see `store/restoration.rs`).
fn record_start(config: &Config, store: &Store, log: &LogSigner) -> Result<(), ServerError> {
    let principal = format!("spiffe://{}/server", config.trust_domain);
    let revocations = crate::trust::crl_file_revocations(
        &config.tls.ca,
        &config.tls.crl,
        &format!("{principal} (carried over from the CRL file)"),
    )?;
    let trail_dir = config
        .tls
        .crl
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."));
    refuse_lost_trust_files(config, store, trail_dir)?;
    let lost = config.trust_files_lost
        && (!config.tls.crl.exists() || !crate::journal::exists(&config.tls.crl));
    let (restrictions, not_taken) = crate::journal::newer_than_store(store, &config.tls.crl)?;
    // A revocation both files carry is carried once, as the journal has it: a CRL names
    // the issuer of each certificate it revokes, the journal what the operator named.
    let from_journal: std::collections::HashSet<String> = restrictions
        .iter()
        .filter_map(|c| match c {
            AdminChange::RevokeCertificate(r) => Some(r.key()),
            _ => None,
        })
        .collect();
    let mut carried: Vec<AdminChange> = store
        .revocations_missing(revocations)?
        .into_iter()
        .filter(|c| !matches!(c, AdminChange::RevokeCertificate(r) if r.covered_by(&from_journal)))
        .collect();
    carried.extend(restrictions);
    // Certificate revocations first, as the CRL file is read before the journal.
    carried.sort_by_key(|c| !matches!(c, AdminChange::RevokeCertificate(_)));
    for state in not_taken {
        tracing::warn!(
            state,
            "the access journal says this state was reinstated or enrolled after what the \
             store holds (restored from an older backup?); a reinstatement is not taken from \
             the journal: if it should be active, tidemark admin enrol it again"
        );
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let written = store.record_start(
        log,
        (&principal, now, lost, config.trust_files_lost),
        &carried,
        trail_dir,
    )?;
    if let Some(trail) = &written.trail {
        tracing::warn!("this store was rolled back to an earlier copy: {trail}");
    }
    if let (Some(mark), true) = (written.restored, lost) {
        tracing::warn!(
            backup_taken_at = %crate::clock::format_time(mark.taken_at),
            backup_log_size = mark.log_size,
            "this store was restored from a backup without its CRL file or access journal \
             (--trust-files-lost): certificate revocations, suspensions and signing-key \
             revocations made after the backup may be lost: make them again; states' \
             witnesses will see the log rolled back (tell the states)"
        );
    } else if let Some(mark) = written.restored {
        tracing::warn!(
            backup_taken_at = %crate::clock::format_time(mark.taken_at),
            backup_log_size = mark.log_size,
            "this store was restored from a backup: states' witnesses will see the log \
             rolled back (tell the states); certificate revocations, suspensions and \
             signing-key revocations made after the backup are carried over from the CRL \
             file and the access journal beside it"
        );
    }
    for record in &written.carried {
        tracing::warn!(
            action = %record.action,
            detail = %record.detail,
            "a change in the CRL file or the access journal was not in the store (restored \
             from an older backup?): it is now"
        );
    }
    Ok(())
}

/// Refuses to start a restored store whose CRL file, access journal or trail journal is
/// missing, unless the operator said they are lost (`serve --trust-files-lost`): they
/// carry what was changed and recorded after the backup.
fn refuse_lost_trust_files(
    config: &Config,
    store: &Store,
    trail_dir: &std::path::Path,
) -> Result<(), ServerError> {
    if store.restore_mark()?.is_none() || config.trust_files_lost {
        return Ok(());
    }
    let trail = store.trail_journal(trail_dir)?;
    let crl_missing =
        config.tls.ca_key.as_ref().is_some_and(|k| k.exists()) && !config.tls.crl.exists();
    let missing: Vec<(String, &str)> = [
        (
            crl_missing,
            config.tls.crl.clone(),
            "the certificate revocations made since the backup",
        ),
        (
            !crate::journal::exists(&config.tls.crl),
            crate::journal::path(&config.tls.crl),
            "the suspensions and signing-key revocations made since the backup",
        ),
        (
            trail
                .as_ref()
                .is_none_or(|t| matches!(crate::store::trail_present(t), Ok(false))),
            trail.unwrap_or_else(|| trail_dir.join("audit-trail-<fork>.journal")),
            "the audit records written since the backup; an empty file counts as missing, \
             and a backup made by an earlier release has none",
        ),
    ]
    .into_iter()
    .filter(|(missing, _, _)| *missing)
    .map(|(_, path, holds)| (path.display().to_string(), holds))
    .collect();
    if !missing.is_empty() {
        let said: Vec<String> = missing
            .iter()
            .map(|(path, holds)| format!("{path} is missing (it holds {holds})"))
            .collect();
        return Err(ServerError::Config(format!(
            "this store was restored from a backup, and {}; the server carries what it \
             holds into the store at its first start. Put back the file the last server \
             wrote; if it is lost, start with `tidemark serve --trust-files-lost` (what it \
             held is then lost: make those changes again)",
            said.join("; ")
        )));
    }
    Ok(())
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    /// The TLS files are unusable.
    Tls(#[from] TlsError),
    #[error(transparent)]
    /// The store could not be opened or failed.
    Store(#[from] StoreError),
    #[error(transparent)]
    /// The trust state (CA bundle, CRL) could not be built.
    Trust(#[from] TrustError),
    #[error(transparent)]
    /// The access journal could not be read.
    Journal(#[from] crate::journal::JournalError),
    #[error(
        "the receipt signing key ([signing] receipt_key, which signs receipts and the log's checkpoints): {0}"
    )]
    /// The receipt signing key is unusable.
    ReceiptKey(#[from] KeyError),
    #[error("{0}")]
    /// The configuration is unusable.
    Config(String),
    #[error("the server stopped: {0}")]
    /// The transport failed.
    Transport(String),
    #[error(
        "the store's disk failed ({0}); the server stopped so that it can be restarted once \
         the disk is fixed (free space, replace it): every acknowledged submission is on disk"
    )]
    /// The store's disk failed while serving.
    DiskFailure(String),
}
