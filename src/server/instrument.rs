//! A tower layer that counts every RPC for the metrics endpoint — started, handled by
//! status code, and the time from the request to its status — and logs every refusal
//! once, with its code, its reason and the caller: at INFO from a budget per caller
//! ([`LOGGED_BURST`] at once, then [`LOGGED_PER_SECOND`]), past it at DEBUG, so a caller
//! refused in a loop cannot fill the server's log (an outside pass: 18 MB a minute).
//! Every refusal is counted all the same. The status is read from the response
//! headers (a status sent without a body) or from the body's trailers; a body dropped
//! before its trailers (a client gone) counts as CANCELLED.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::Code;

use super::status::code_name;
use crate::{
    budgets::Budgets,
    identity::Principal,
    metrics::{MethodLabels, Metrics},
};

/// Who made a call: filled in by authentication (`auth::Authenticate`), read when the
/// call ends, for the refusal log and the refusal's audit record (`super::refusals`).
#[derive(Clone, Default)]
pub(super) struct Caller(Arc<std::sync::OnceLock<Principal>>);

impl Caller {
    /// Notes the authenticated caller.
    pub(super) fn set(&self, principal: Principal) {
        let _ = self.0.set(principal);
    }

    /// The caller, once authenticated.
    pub(super) fn principal(&self) -> Option<&Principal> {
        self.0.get()
    }
}

/// Refusals of one caller logged at INFO at once, then [`LOGGED_PER_SECOND`].
const LOGGED_BURST: u32 = 60;
/// Refusals of one caller logged at INFO a second, past [`LOGGED_BURST`].
const LOGGED_PER_SECOND: f64 = 1.0;

/// Wraps a service so that its calls are counted in `metrics`.
#[derive(Clone)]
pub(super) struct InstrumentLayer {
    metrics: Arc<Metrics>,
    logged: Arc<Budgets>,
}

impl InstrumentLayer {
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            logged: Arc::new(Budgets::new(LOGGED_BURST, LOGGED_PER_SECOND)),
        }
    }
}

impl<S> tower::Layer<S> for InstrumentLayer {
    type Service = Instrumented<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Instrumented {
            inner,
            metrics: self.metrics.clone(),
            logged: self.logged.clone(),
        }
    }
}

#[derive(Clone)]
pub(super) struct Instrumented<S> {
    inner: S,
    metrics: Arc<Metrics>,
    logged: Arc<Budgets>,
}

/// `/tidemark.v1.Exchange/Submit` → (`tidemark.v1.Exchange`, `Submit`); a path that names
/// no method this server serves → (`unknown`, `unknown`), so that a caller cannot make a
/// label value per made-up name.
pub(super) fn method_of(path: &str) -> MethodLabels {
    let path = path.trim_start_matches('/');
    let (service, method) = path
        .split_once('/')
        .filter(|_| known_methods().contains(path))
        .unwrap_or(("unknown", "unknown"));
    MethodLabels {
        grpc_service: service.to_owned(),
        grpc_method: method.to_owned(),
    }
}

/// Every method the server serves, as `package.Service/Method`: the API's, the health
/// service's (from their descriptor sets) and server reflection's.
fn known_methods() -> &'static std::collections::HashSet<String> {
    use prost::Message;
    static KNOWN: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known: std::collections::HashSet<String> = [
            "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        for set in [
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let files = prost_types::FileDescriptorSet::decode(set).unwrap_or_default();
            for file in files.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        known
    })
}

/// The status in `headers`, if they carry one: its code and message.
pub(super) fn status_in(headers: &http::HeaderMap) -> Option<(Code, String)> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((Code::from_i32(value), message))
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|b| char::from(*b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One call, counted (and, when refused, logged) once when its status is known or its
/// body is dropped.
struct Call {
    metrics: Arc<Metrics>,
    /// Refusals logged at INFO, per caller.
    logged: Arc<Budgets>,
    method: MethodLabels,
    caller: Caller,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: Code, message: &str) {
        if self.done {
            return;
        }
        self.done = true;
        self.metrics.rpc_handled(
            &self.method,
            code_name(code),
            self.started.elapsed().as_secs_f64(),
        );
        let caller = self
            .caller
            .principal()
            .map_or_else(|| "(not authenticated)".to_owned(), Principal::spiffe_id);
        let caller = caller.as_str();
        let method = format!("{}/{}", self.method.grpc_service, self.method.grpc_method);
        let code_label = code_name(code);
        match code {
            Code::Ok | Code::Cancelled => {}
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable => {
                tracing::warn!(principal = caller, %method, code = code_label, reason = message, "call failed");
            }
            _ if self.logged.take(caller, Instant::now()).is_ok() => {
                tracing::info!(principal = caller, %method, code = code_label, reason = message, "call refused");
            }
            _ => {
                tracing::debug!(principal = caller, %method, code = code_label, reason = message, "call refused");
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled, "");
    }
}

impl<S, B> tower::Service<http::Request<B>> for Instrumented<S>
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = method_of(request.uri().path());
        self.metrics.rpc_started(&method);
        let caller = Caller::default();
        request.extensions_mut().insert(caller.clone());
        // For authentication: some calls are open to a suspended state.
        request.extensions_mut().insert(method.clone());
        let mut call = Call {
            metrics: self.metrics.clone(),
            logged: self.logged.clone(),
            method,
            caller,
            started: Instant::now(),
            done: false,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(e) => {
                    call.finish(Code::Internal, "the service failed");
                    return Err(e);
                }
            };
            if let Some((code, message)) = status_in(response.headers()) {
                call.finish(code, &message);
                return Ok(response);
            }
            Ok(response.map(|inner| tonic::body::Body::new(CountedBody { inner, call })))
        })
    }
}

/// A response body that reports its call's status when its trailers pass.
struct CountedBody {
    inner: tonic::body::Body,
    call: Call,
}

impl http_body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(f))) => {
                if let Some((code, message)) = f.trailers_ref().and_then(status_in) {
                    this.call.finish(code, &message);
                }
            }
            Poll::Ready(Some(Err(status))) => this.call.finish(status.code(), status.message()),
            Poll::Ready(None) => this.call.finish(Code::Ok, ""),
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        let m = method_of("/tidemark.v1.Exchange/Submit");
        assert_eq!(m.grpc_service, "tidemark.v1.Exchange");
        assert_eq!(m.grpc_method, "Submit");
        let m = method_of("/grpc.health.v1.Health/Check");
        assert_eq!(
            (m.grpc_service.as_str(), m.grpc_method.as_str()),
            ("grpc.health.v1.Health", "Check")
        );
        // Made-up names share one label value.
        for path in [
            "/tidemark.v1.Exchange/Made-up",
            "/x.Y/Z",
            "/",
            "/tidemark.v1.Exchange/Submit/x",
        ] {
            let m = method_of(path);
            assert_eq!(
                (m.grpc_service.as_str(), m.grpc_method.as_str()),
                ("unknown", "unknown"),
                "{path}"
            );
        }
        assert_eq!(code_name(Code::PermissionDenied), "PERMISSION_DENIED");
    }

    /// A refusal of any call this server serves is recorded as `refused <Method>`: every
    /// such entry reads back in Tidemark's verifiers (`WhoAmI` did not).
    #[test]
    fn every_method_refused_reads_back_from_the_log() {
        use crate::tlog::entry::{AuditEntry, Entry, sha256};
        assert!(known_methods().len() > 20, "{:?}", known_methods());
        for path in known_methods() {
            let method = method_of(&format!("/{path}")).grpc_method;
            let entry = Entry::Audit(AuditEntry {
                number: 1,
                in_progress: false,
                at: 1_764_424_860,
                logged: 1_764_424_860,
                principal: "spiffe://tidemark.local/state/NZL/node/nzl-1".to_owned(),
                state: "NZL".to_owned(),
                action: format!("refused {method}"),
                category: String::new(),
                detail_sha256: sha256(b"{}"),
                count: 0,
                owners: Vec::new(),
                counts_withheld: false,
            });
            let read = Entry::decode(&entry.encode());
            assert_eq!(read.as_ref().ok(), Some(&entry), "{path}: {read:?}");
        }
        assert_eq!(
            percent_decode("IDN%20has%20contributed%200%25"),
            "IDN has contributed 0%"
        );
    }
}
