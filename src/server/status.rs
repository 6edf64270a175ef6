//! Domain errors to gRPC status codes, in one place.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    report::ValidationErrors,
    store::{AppendError, KeyRegistryError, StoreError},
    submission::SubmitError,
};

impl From<SubmitError> for Status {
    fn from(err: SubmitError) -> Self {
        let message = err.to_string();
        match err {
            SubmitError::NotANode(_)
            | SubmitError::ForeignKey { .. }
            | SubmitError::WrongState { .. } => Status::permission_denied(message),
            SubmitError::Malformed(_) => Status::invalid_argument(message),
            SubmitError::BadSignature(_) => Status::unauthenticated(message),
            SubmitError::Invalid(errors) => invalid(&errors),
            SubmitError::Rejected(e) => append_status(&e),
            SubmitError::Store(e) => store_status(&e),
        }
    }
}

fn append_status(err: &AppendError) -> Status {
    let message = err.to_string();
    match err {
        AppendError::Conflict { .. } => Status::already_exists(message),
        AppendError::NotOwner { .. } => Status::permission_denied(message),
        AppendError::VersionOrder { .. }
        | AppendError::FirstVersion { .. }
        | AppendError::Retracted { .. } => Status::failed_precondition(message),
        AppendError::NothingToRetract { .. } => Status::not_found(message),
        AppendError::Store(_) => Status::unavailable(message),
    }
}

/// INVALID_ARGUMENT with a `google.rpc.BadRequest` listing every bad field.
fn invalid(errors: &ValidationErrors) -> Status {
    let mut details = ErrorDetails::new();
    for v in &errors.0 {
        details.add_bad_request_violation(&v.field, &v.description);
    }
    Status::with_error_details(Code::InvalidArgument, errors.to_string(), details)
}

pub(super) fn store_status(err: &StoreError) -> Status {
    tracing::error!(error = %err, "store failure");
    Status::internal(format!("the server's store failed: {err}"))
}

impl From<KeyRegistryError> for Status {
    fn from(err: KeyRegistryError) -> Self {
        match err {
            KeyRegistryError::OtherState { .. } => Status::already_exists(err.to_string()),
            KeyRegistryError::Unknown(_) => Status::not_found(err.to_string()),
            KeyRegistryError::Store(e) => store_status(&e),
        }
    }
}

/// Rewrites what tonic reports as a server fault but is the client's: OUT_OF_RANGE for
/// an over-limit request message becomes RESOURCE_EXHAUSTED, and INTERNAL for a request
/// that is not valid protobuf becomes INVALID_ARGUMENT, each with what to do. Used as a
/// response layer (for errors before a handler runs) and on client streams.
pub(super) fn client_faults(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| m.replace("%20", " "))
        .unwrap_or_default();
    if let Some(rewritten) = code.and_then(|c| rewrite(Code::from_i32(c), &message)) {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(rewritten.code() as i32),
        );
        if let Ok(value) = http::HeaderValue::from_str(&percent_encode(rewritten.message())) {
            headers.insert("grpc-message", value);
        }
    }
    response
}

/// The same rewrite for a status met while reading a client stream.
pub(super) fn client_fault(status: Status) -> Status {
    rewrite(status.code(), status.message()).unwrap_or(status)
}

fn rewrite(code: Code, message: &str) -> Option<Status> {
    if code == Code::OutOfRange && message.contains("message length too large") {
        return Some(Status::resource_exhausted(
            "the request message is larger than this server accepts (limits.max_message_bytes); \
             send smaller messages, e.g. split a bulk import",
        ));
    }
    // tonic reports a request it cannot frame or decode as INTERNAL; it is the client's.
    let undecodable = [
        "failed to decode Protobuf message",
        "protocol error: received message with",
        "Unexpected EOF decoding stream",
        "Missing request message",
    ];
    if code == Code::Internal && undecodable.iter().any(|m| message.starts_with(m)) {
        return Some(Status::invalid_argument(format!(
            "the request could not be decoded as this method's protobuf message ({message}); \
             send a message built from proto/tidemark/v1"
        )));
    }
    None
}

/// grpc-message is percent-encoded (gRPC over HTTP/2: Response-Headers).
fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
