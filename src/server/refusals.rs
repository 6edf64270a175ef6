//! A tower layer that puts every refusal of an authenticated caller on the audit record
//! (and so in the transparency log) before the caller hears of it: a call answered
//! PERMISSION_DENIED — a wrong role, a suspended state, another state's key or report —,
//! or an administrative action refused for what it asked (FAILED_PRECONDITION,
//! INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, OUT_OF_RANGE from the Admin service),
//! gets an audit record `refused <Method>` with the caller, its state and the reason. A handler that audits its own refusal (give-to-get, with the query's
//! filter) says so by the record's number in the `tidemark-audit` metadata, which this
//! layer adds to the others; a refusal that cannot be recorded is answered UNAVAILABLE
//! instead, as every other read is when the audit log cannot be written.
//!
//! A caller that is not authenticated (no certificate, revoked, another CA) is not a
//! principal to record; the refusal log line (`super::instrument`) and the handshake log
//! (`crate::tls`) name what it presented.
//!
//! Each record is a durable write and a leaf of the log for good, so one principal's
//! refusals — of every kind, here or in a handler ([`RefusalRecords`]) — are recorded
//! from one budget (a token bucket: [`BURST`] at once, then [`PER_SECOND`]); a refusal
//! past it is still refused, logged and counted (`tidemark_refusals_unrecorded_total`),
//! and its `tidemark-audit` says [`UNRECORDED`], so that a caller in a loop (a suspended
//! state's node, a state without standing) cannot grow the log or hold up the writer.
//!
//! A call refused after it has sent messages (a stream ended by a suspension, or by
//! standing that lapsed) has its status in the trailers: they are held until the
//! refusal is on record ([`RecordedBody`]), and then name its record the same way.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::{Code, Status};

use super::instrument::{Caller, method_of, status_in};
use crate::{
    budgets::Budgets,
    identity::Principal,
    metrics::{MethodLabels, Metrics},
    store::{AppendError, AuditRecord, Writer},
};

/// The response metadata that carries the number of a refusal's audit record.
pub(super) const AUDIT_METADATA: &str = "tidemark-audit";

/// Refusal records one principal may cause at once.
pub(super) const BURST: u32 = 60;

/// Refusal records a principal's budget regains a second.
pub(super) const PER_SECOND: f64 = 1.0;

/// What `tidemark-audit` says of a refusal left off the record (its caller's budget of
/// refusal records was spent).
pub(super) const UNRECORDED: &str = "unrecorded";

/// Writes refusal records from each principal's budget: shared by the layer and by the
/// handlers that record their own refusals (give-to-get, Import, the subscription
/// limit), so that every kind of refusal draws on the one budget.
#[derive(Clone)]
pub(super) struct RefusalRecords {
    writer: Writer,
    metrics: Arc<Metrics>,
    budgets: Arc<Budgets>,
    /// When a caller's unrecorded refusals were last said at INFO: once a minute each.
    logged: Arc<Budgets>,
}

impl RefusalRecords {
    pub(super) fn new(writer: Writer, metrics: Arc<Metrics>) -> Self {
        Self {
            writer,
            metrics,
            budgets: Arc::new(Budgets::new(BURST, PER_SECOND)),
            logged: Arc::new(Budgets::new(1, 1.0 / 60.0)),
        }
    }

    /// Writes `record`, a refusal of its principal, if that principal's budget has one
    /// left: its number, or `None` when the budget is spent (the refusal is then logged
    /// and counted only, and `tidemark-audit` says [`UNRECORDED`]).
    pub(super) async fn record(&self, record: AuditRecord) -> Result<Option<u64>, AppendError> {
        if self
            .budgets
            .take(&record.principal, Instant::now())
            .is_err()
        {
            self.metrics.refusal_unrecorded();
            if self.logged.take(&record.principal, Instant::now()).is_ok() {
                tracing::info!(
                    principal = %record.principal,
                    action = %record.action,
                    "refusals not recorded: this caller's budget of refusal records is spent \
                     (said once a minute; each is counted in tidemark_refusals_unrecorded_total)"
                );
            } else {
                tracing::debug!(
                    principal = %record.principal,
                    action = %record.action,
                    "refusal not recorded: this caller's budget of refusal records is spent"
                );
            }
            return Ok(None);
        }
        Ok(Some(self.writer.audit(record).await?))
    }

    /// `status` once `record` is written, with the refusal's message added to its
    /// detail ([`with_refusal`]): naming its record, or UNAVAILABLE if it could not be
    /// written (nothing is answered that is not on record).
    pub(super) async fn refuse(&self, mut record: AuditRecord, mut status: Status) -> Status {
        record.detail = with_refusal(&record.detail, status.message());
        match self.record(record).await {
            Ok(number) => {
                let named = number.map_or_else(
                    || tonic::metadata::MetadataValue::from_static(UNRECORDED),
                    tonic::metadata::MetadataValue::from,
                );
                status.metadata_mut().insert(AUDIT_METADATA, named);
                status
            }
            Err(e) => unrecordable(&e),
        }
    }
}

/// A refused request's `detail` with the refusal's `reason` under `"refusal"`, as the
/// layer's own records have it: added to the request's JSON object, or beside the
/// request (`"request"`) when that is not an object.
fn with_refusal(detail: &str, reason: &str) -> String {
    let mut object = match serde_json::from_str::<serde_json::Value>(detail) {
        _ if detail.is_empty() => serde_json::Map::new(),
        Ok(serde_json::Value::Object(object)) => object,
        Ok(other) => serde_json::Map::from_iter([("request".to_owned(), other)]),
        Err(_) => {
            serde_json::Map::from_iter([("request".to_owned(), serde_json::Value::from(detail))])
        }
    };
    object.insert("refusal".to_owned(), serde_json::Value::from(reason));
    serde_json::Value::Object(object).to_string()
}

/// The answer to a refusal that could not be written to the audit log.
pub(super) fn unrecordable(e: &AppendError) -> Status {
    Status::unavailable(format!(
        "the refusal could not be written to the audit log, so the call is not answered; \
         retry later ({e})"
    ))
}

/// Wraps a service so that its refusals are on record.
#[derive(Clone)]
pub(super) struct RefusalAuditLayer {
    records: RefusalRecords,
}

impl RefusalAuditLayer {
    pub(super) fn new(records: RefusalRecords) -> Self {
        Self { records }
    }
}

impl<S> tower::Layer<S> for RefusalAuditLayer {
    type Service = RefusalAudit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefusalAudit {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(super) struct RefusalAudit<S> {
    inner: S,
    layer: RefusalAuditLayer,
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
        // Both clones share what they hold (an `Arc`, the URI's bytes): a call that is
        // not refused costs a box around its body and nothing copied.
        let caller = request.extensions().get::<Caller>().cloned();
        let uri = request.uri().clone();
        let response = self.inner.call(request);
        let records = self.layer.records.clone();
        Box::pin(async move {
            let mut response = response.await?;
            let Some(caller) = caller.filter(|c| c.principal().is_some()) else {
                return Ok(response);
            };
            let refused = match status_in(response.headers()) {
                Some((code, reason))
                    if on_record(code, &uri)
                        && !response.headers().contains_key(AUDIT_METADATA) =>
                {
                    reason
                }
                // Answered without a body otherwise: nothing to record.
                Some(_) => return Ok(response),
                // A body follows: its trailers may still refuse the call.
                None => {
                    let refusal = Some((records, caller, uri));
                    return Ok(response.map(|inner| {
                        tonic::body::Body::new(RecordedBody {
                            inner,
                            refusal,
                            pending: None,
                        })
                    }));
                }
            };
            let Some(record) = refusal_record(&caller, &uri, &refused) else {
                return Ok(response);
            };
            match records.record(record).await {
                Ok(number) => {
                    response.headers_mut().insert(AUDIT_METADATA, named(number));
                    Ok(response)
                }
                Err(e) => Ok(unrecordable(&e).into_http()),
            }
        })
    }
}

/// Whether a call to `uri` answered `code` is a refusal to put on record: PERMISSION_DENIED
/// everywhere; and for the operator's Admin service every answer that refuses what was
/// asked (a state not enrolled, a reload's bad files, an argument out of range…), so that
/// an administrative action tried and refused leaves a trace, as one done does.
fn on_record(code: Code, uri: &http::Uri) -> bool {
    match code {
        Code::PermissionDenied => true,
        Code::FailedPrecondition
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::OutOfRange => method_of(uri.path()).grpc_service == "tidemark.v1.Admin",
        _ => false,
    }
}

/// The audit record of `caller`'s call to `uri`, refused for `reason` (none for a caller
/// not authenticated).
fn refusal_record(caller: &Caller, uri: &http::Uri, reason: &str) -> Option<AuditRecord> {
    let principal: &Principal = caller.principal()?;
    let method = method_of(uri.path());
    Some(AuditRecord {
        principal: principal.spiffe_id(),
        state: principal.state().map(|s| s.to_string()).unwrap_or_default(),
        action: format!("refused {}", refused_action(&method)),
        detail: serde_json::json!({
            "method": format!("{}/{}", method.grpc_service, method.grpc_method),
            "refusal": reason,
        })
        .to_string(),
        ..AuditRecord::default()
    })
}

/// What a refused call is recorded as: a read under its own action, as its handler
/// records a refusal of it (give-to-get, the read budget) — so a read is `refused query`
/// whether it was refused as it opened or while it ran, and for whatever reason; any
/// other call under its gRPC method's name (`refused SuspendState`).
fn refused_action(method: &MethodLabels) -> &str {
    use super::admin::{LIST_CERTIFICATES, LIST_SIGNING_KEYS, LIST_STATES, READ_AUDIT_LOG};
    const READS: [(&str, &str, &str); 9] = [
        ("tidemark.v1.Exchange", "Query", "query"),
        ("tidemark.v1.Exchange", "Sync", "sync"),
        ("tidemark.v1.Exchange", "Subscribe", "subscribe"),
        ("tidemark.v1.Analytics", "Aggregate", "aggregate"),
        ("tidemark.v1.Admin", "ListStates", LIST_STATES),
        ("tidemark.v1.Admin", "ListCertificates", LIST_CERTIFICATES),
        ("tidemark.v1.Admin", "ListSigningKeys", LIST_SIGNING_KEYS),
        ("tidemark.v1.Admin", "AuditLog", READ_AUDIT_LOG),
        ("tidemark.v1.Admin", "Backup", "backup"),
    ];
    READS
        .iter()
        .find(|(service, name, _)| *service == method.grpc_service && *name == method.grpc_method)
        .map_or(&method.grpc_method, |(_, _, action)| action)
}

/// The `tidemark-audit` value of a refusal: its record's number, or [`UNRECORDED`].
fn named(number: Option<u64>) -> http::HeaderValue {
    number.map_or_else(
        || http::HeaderValue::from_static(UNRECORDED),
        http::HeaderValue::from,
    )
}

/// A refusal's record being written.
type Writing = Pin<Box<dyn Future<Output = Result<Option<u64>, AppendError>> + Send>>;

/// A response body whose trailers, if they refuse the call (PERMISSION_DENIED after
/// some messages, e.g. a stream ended by a suspension or by standing that lapsed), are
/// held until the refusal is on record, and then name its record.
struct RecordedBody {
    inner: tonic::body::Body,
    /// What recording a refusal needs; taken when used.
    refusal: Option<(RefusalRecords, Caller, http::Uri)>,
    /// Trailers held while their refusal's record is written.
    pending: Option<(http::HeaderMap, Writing)>,
}

impl http_body::Body for RecordedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some((mut trailers, mut writing)) = this.pending.take() {
            let Poll::Ready(written) = writing.as_mut().poll(cx) else {
                this.pending = Some((trailers, writing));
                return Poll::Pending;
            };
            match written {
                Ok(number) => {
                    trailers.insert(AUDIT_METADATA, named(number));
                }
                Err(e) => {
                    let status = unrecordable(&e);
                    trailers.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
                    trailers.remove("grpc-message");
                    trailers.remove("grpc-status-details-bin");
                    let message = super::status::percent_encode(status.message());
                    if let Ok(message) = http::HeaderValue::from_str(&message) {
                        trailers.insert("grpc-message", message);
                    }
                }
            }
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let Some(Ok(frame)) = frame else {
            return Poll::Ready(frame);
        };
        let trailers = match frame.into_trailers() {
            Ok(trailers) => trailers,
            Err(data) => return Poll::Ready(Some(Ok(data))),
        };
        let refused = match (status_in(&trailers), &this.refusal) {
            (Some((code, reason)), Some((_, _, uri)))
                if on_record(code, uri) && !trailers.contains_key(AUDIT_METADATA) =>
            {
                reason
            }
            _ => return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers)))),
        };
        let taken = this.refusal.take().and_then(|(records, caller, uri)| {
            Some((records, refusal_record(&caller, &uri, &refused)?))
        });
        let Some((records, record)) = taken else {
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        };
        this.pending = Some((
            trailers,
            Box::pin(async move { records.record(record).await }),
        ));
        Pin::new(this).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_none() && self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::with_refusal;

    #[test]
    fn a_refusal_reason_joins_the_request_it_refuses() {
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(
            json(&with_refusal(r#"{"category":"smuggling"}"#, "too few")),
            json(r#"{"category":"smuggling","refusal":"too few"}"#)
        );
        assert_eq!(
            json(&with_refusal("", "over budget")),
            json(r#"{"refusal":"over budget"}"#)
        );
        assert_eq!(
            json(&with_refusal("IDN", "no")),
            json(r#"{"request":"IDN","refusal":"no"}"#)
        );
        assert_eq!(
            json(&with_refusal("[1]", "no")),
            json(r#"{"request":[1],"refusal":"no"}"#)
        );
    }
}
