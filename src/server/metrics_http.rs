//! The metrics endpoint: plain HTTP/1.1 on its own listener (`[metrics] listen`), with
//! hyper, answering `GET /metrics` with the Prometheus text format (OpenMetrics 1.0) and
//! anything else with 404. It carries no exchange data, so it needs no client
//! certificate; bind it to loopback or a monitoring network.

use std::{convert::Infallible, path::PathBuf, sync::Arc};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{
    clock::Clock,
    identity::Principal,
    metrics::{Metrics, Readings},
    report::Category,
    store::{
        Store, StoreError,
        counters::{Cuboid, Grain},
    },
    trust::Trust,
};

/// What a scrape reads besides the counters.
pub(super) struct Sources {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub store_path: PathBuf,
    pub trust: Arc<Trust>,
    pub clock: Clock,
    pub trust_domain: String,
}

impl Sources {
    /// The store's and the trust state's figures now.
    fn read(&self) -> Result<Readings, StoreError> {
        let now = self.clock.now();
        let snapshot = self.store.snapshot()?;
        let mut reports = Vec::new();
        for category in Category::ALL {
            let mut by_state = std::collections::BTreeMap::<u32, u64>::new();
            snapshot.counter_rows(
                (Cuboid::Base, category.to_pb() as i32),
                (0, u32::MAX),
                Grain::Quarters,
                |row| {
                    for (state, sums) in row.states()? {
                        let n = by_state.entry(state).or_default();
                        *n = n.saturating_add(sums[0]);
                    }
                    Ok(())
                },
            )?;
            reports.extend(by_state.into_iter().map(|(state, n)| {
                (
                    crate::store::counters::unpack_country(u64::from(state)),
                    category.label(),
                    n,
                )
            }));
        }
        let mut certificates = std::collections::BTreeMap::<String, i64>::new();
        for cert in self.store.issued_certificates()? {
            if !self.trust.is_issued_live(&cert) {
                continue;
            }
            let state = Principal::from_spiffe_id(&cert.spiffe_id, &self.trust_domain)
                .ok()
                .and_then(|p| p.state());
            if let Some(state) = state {
                let earliest = certificates
                    .entry(state.to_string())
                    .or_insert(cert.not_after);
                *earliest = (*earliest).min(cert.not_after);
            }
        }
        Ok(Readings {
            store_bytes: std::fs::metadata(&self.store_path).map_or(0, |m| m.len()),
            server_not_after: self.trust.server_not_after(),
            reports,
            certificates: certificates.into_iter().collect(),
            crl_issued: self.trust.crl_issued_at(),
            quarters_behind: snapshot.quarters_behind()?,
            now,
        })
    }
}

/// At most this many metrics connections at once; more are closed on arrival, so that
/// idle or slow clients cannot take the process's file descriptors from the exchange.
const MAX_CONNECTIONS: usize = 32;

/// A request's headers must arrive within this long (also an idle keep-alive's limit).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection lasts at most this long, however it is used.
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(300);

/// Serves scrapes on `listener` until the task is aborted.
pub(super) async fn serve(listener: TcpListener, sources: Arc<Sources>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait before trying again rather than
                // spinning (and logging) as fast as the error comes back.
                tracing::warn!(error = %e, "accepting a metrics connection failed; retrying in 1 s");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("a metrics connection was closed: {MAX_CONNECTIONS} are open");
            continue;
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(answer(&request, &sources)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                tracing::debug!(error = %e, "a metrics connection ended with an error");
            }
            drop(slot);
        });
    }
}

fn answer(request: &Request<Incoming>, sources: &Sources) -> Response<String> {
    let plain = |status: StatusCode, body: &str| {
        let mut response = Response::new(body.to_owned());
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if request.method() != http::Method::GET {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n");
        response
            .headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        return response;
    }
    let readings = match sources.read() {
        Ok(readings) => readings,
        Err(e) => {
            tracing::warn!(error = %e, "a metrics scrape could not read the store");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the store could not be read: {e}\n"),
            );
        }
    };
    let body = sources.metrics.encode(&readings);
    let mut response = Response::new(body);
    if let Ok(value) =
        http::HeaderValue::from_str("application/openmetrics-text; version=1.0.0; charset=utf-8")
    {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}
