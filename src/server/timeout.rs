//! How long a call may take to be answered (`limits.request_timeout_secs`), as tonic's
//! server timeout would bound it — except an import, which bounds the time it takes
//! envelopes itself and must then answer for every one it took, however long storing
//! them takes (an outer timeout cut imports off under load before they could say what
//! they had stored). A call past its time is answered DEADLINE_EXCEEDED. Streaming
//! responses are bounded only until their first message, as with tonic's.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tonic::Status;

/// The import, which is not bounded here (`ExchangeService::import` is).
const IMPORT: &str = "/tidemark.v1.Exchange/Import";

#[derive(Clone)]
pub(super) struct CallTimeoutLayer {
    timeout: Duration,
}

impl CallTimeoutLayer {
    pub(super) fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for CallTimeoutLayer {
    type Service = CallTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
pub(super) struct CallTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> tower::Service<http::Request<B>> for CallTimeout<S>
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
        let bounded = request.uri().path() != IMPORT;
        let timeout = self.timeout;
        let response = self.inner.call(request);
        Box::pin(async move {
            if !bounded {
                return response.await;
            }
            match tokio::time::timeout(timeout, response).await {
                Ok(answered) => answered,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the call was not answered within {} s (limits.request_timeout_secs); \
                     try again, or ask for less",
                    timeout.as_secs()
                ))
                .into_http()),
            }
        })
    }
}
