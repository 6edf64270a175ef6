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

/// Rewrites tonic's OUT_OF_RANGE for an over-limit request message into
/// RESOURCE_EXHAUSTED with a message that says what to do. Used as a response layer.
pub(super) fn oversized_to_resource_exhausted(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| {
            m.contains("message%20length%20too%20large") || m.contains("message length too large")
        });
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "the request message is larger than this server accepts (limits.max_message_bytes); \
                 send smaller messages, e.g. split a bulk import",
            ),
        );
    }
    response
}
