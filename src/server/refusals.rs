//! A tower layer that puts every refusal of an authenticated caller on the audit record
//! (and so in the transparency log) before the caller hears of it: a call answered
//! PERMISSION_DENIED without a body — a wrong role, a suspended state, another state's
//! key or report — gets an audit record `refused <Method>` with the caller, its state
//! and the reason. A handler that audits its own refusal (give-to-get, with the query's
//! filter) says so by the record's number in the `tidemark-audit` metadata, which this
//! layer adds to the others; a refusal that cannot be recorded is answered UNAVAILABLE
//! instead, as every other read is when the audit log cannot be written.
//!
//! A caller that is not authenticated (no certificate, revoked, another CA) is not a
//! principal to record; the refusal log line (`super::instrument`) and the handshake log
//! (`crate::tls`) name what it presented.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{Code, Status};

use super::instrument::{Caller, method_of, status_in};
use crate::store::{AuditRecord, Writer};

/// The response metadata that carries the number of a refusal's audit record.
pub(super) const AUDIT_METADATA: &str = "tidemark-audit";

/// Wraps a service so that its refusals are audited by `writer`.
#[derive(Clone)]
pub(super) struct RefusalAuditLayer {
    writer: Writer,
}

impl RefusalAuditLayer {
    pub(super) fn new(writer: Writer) -> Self {
        Self { writer }
    }
}

impl<S> tower::Layer<S> for RefusalAuditLayer {
    type Service = RefusalAudit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefusalAudit {
            inner,
            writer: self.writer.clone(),
        }
    }
}

#[derive(Clone)]
pub(super) struct RefusalAudit<S> {
    inner: S,
    writer: Writer,
}

impl<S, B> tower::Service<http::Request<B>> for RefusalAudit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let caller = request.extensions().get::<Caller>().cloned();
        let path = request.uri().path().to_owned();
        let response = self.inner.call(request);
        let writer = self.writer.clone();
        Box::pin(async move {
            let mut response = response.await?;
            let refused = match status_in(response.headers()) {
                Some((Code::PermissionDenied, reason))
                    if !response.headers().contains_key(AUDIT_METADATA) =>
                {
                    reason
                }
                _ => return Ok(response),
            };
            let Some(principal) = caller.as_ref().and_then(Caller::principal) else {
                return Ok(response);
            };
            let method = method_of(&path);
            let record = AuditRecord {
                principal: principal.spiffe_id(),
                state: principal.state().map(|s| s.to_string()).unwrap_or_default(),
                action: format!("refused {}", method.grpc_method),
                detail: serde_json::json!({
                    "method": format!("{}/{}", method.grpc_service, method.grpc_method),
                    "refusal": refused,
                })
                .to_string(),
                ..AuditRecord::default()
            };
            match writer.audit(record).await {
                Ok(number) => {
                    response
                        .headers_mut()
                        .insert(AUDIT_METADATA, http::HeaderValue::from(number));
                    Ok(response)
                }
                Err(e) => Ok(Status::unavailable(format!(
                    "the refusal could not be written to the audit log, so the call is not \
                     answered; retry later ({e})"
                ))
                .into_http()),
            }
        })
    }
}
