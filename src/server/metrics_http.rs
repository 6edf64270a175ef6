//! The metrics endpoint: plain HTTP/1.1 on its own listener (`[metrics] listen`), with
//! hyper, answering `GET /metrics` with the Prometheus text format (OpenMetrics 1.0) and
//! anything else with 404. It carries no exchange data, so it needs no client
//! certificate; bind it to loopback or a monitoring network.

use std::{convert::Infallible, path::PathBuf, sync::Arc};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{clock::Clock, metrics::Metrics, trust::Trust};

/// What a scrape reads besides the counters.
pub(super) struct Sources {
    pub metrics: Arc<Metrics>,
    pub store_path: PathBuf,
    pub trust: Arc<Trust>,
    pub clock: Clock,
}

/// Serves scrapes on `listener` until the task is aborted.
pub(super) async fn serve(listener: TcpListener, sources: Arc<Sources>) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection failed");
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let sources = sources.clone();
                async move { Ok::<_, Infallible>(answer(&request, &sources)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a metrics connection ended with an error");
            }
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
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET /metrics\n");
    }
    let store_bytes = std::fs::metadata(&sources.store_path).map_or(0, |m| m.len());
    let body = sources.metrics.encode(
        store_bytes,
        sources.trust.server_not_after(),
        sources.clock.now(),
    );
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
