//! A tower layer that counts every RPC for the metrics endpoint: started, handled by
//! status code, and the time from the request to its status. The code is read from the
//! response headers (a status sent without a body) or from the body's trailers; a body
//! dropped before its trailers (a client gone) counts as CANCELLED.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::Code;

use crate::metrics::{MethodLabels, Metrics};

/// Wraps a service so that its calls are counted in `metrics`.
#[derive(Clone)]
pub(super) struct InstrumentLayer {
    metrics: Arc<Metrics>,
}

impl InstrumentLayer {
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for InstrumentLayer {
    type Service = Instrumented<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Instrumented {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub(super) struct Instrumented<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// `/tidemark.v1.Exchange/Submit` → (`tidemark.v1.Exchange`, `Submit`).
fn method_of(path: &str) -> MethodLabels {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    MethodLabels {
        grpc_service: service.to_owned(),
        grpc_method: method.to_owned(),
    }
}

/// The name of a gRPC status code, as go-grpc-prometheus labels it (`OK`, `NOT_FOUND`, …).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status code in `headers`, if they carry one.
fn code_in(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(Code::from_i32(value))
}

/// One call, counted once when its status is known (or its body dropped).
struct Call {
    metrics: Arc<Metrics>,
    method: MethodLabels,
    started: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            self.metrics.rpc_handled(
                &self.method,
                code_name(code),
                self.started.elapsed().as_secs_f64(),
            );
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
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

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_of(request.uri().path());
        self.metrics.rpc_started(&method);
        let mut call = Call {
            metrics: self.metrics.clone(),
            method,
            started: Instant::now(),
            done: false,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(e) => {
                    call.finish(Code::Internal);
                    return Err(e);
                }
            };
            if let Some(code) = code_in(response.headers()) {
                call.finish(code);
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
                if let Some(code) = f.trailers_ref().and_then(code_in) {
                    this.call.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.call.finish(status.code()),
            Poll::Ready(None) => this.call.finish(Code::Ok),
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
        assert_eq!(code_name(Code::PermissionDenied), "PERMISSION_DENIED");
    }
}
