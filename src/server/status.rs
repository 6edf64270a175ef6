//! Domain errors to gRPC status codes, in one place.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    access::FilterError,
    administration::AdminError,
    analytics::AggregateError,
    cosigning::CosignError,
    policy::Refusal,
    report::ValidationErrors,
    store::{
        AdminWriteError, AppendError, BudgetError, KeyRegistryError, ProofRequestError, StoreError,
    },
    submission::SubmitError,
};

/// `status` with `detail` added to its rich error details (`grpc-status-details-bin`, a
/// `google.rpc.Status`), keeping those it has and its metadata.
pub(super) fn with_detail(status: &Status, detail: prost_types::Any) -> Status {
    use prost::Message;
    let mut rich = tonic_types::pb::Status::decode(status.details()).unwrap_or_default();
    rich.code = status.code() as i32;
    status.message().clone_into(&mut rich.message);
    rich.details.push(detail);
    Status::with_details_and_metadata(
        status.code(),
        status.message(),
        rich.encode_to_vec().into(),
        status.metadata().clone(),
    )
}

impl From<SubmitError> for Status {
    fn from(err: SubmitError) -> Self {
        let message = err.to_string();
        match err {
            SubmitError::NotANode(_)
            | SubmitError::ForeignKey { .. }
            | SubmitError::WrongState { .. } => Status::permission_denied(message),
            SubmitError::Malformed(_) => Status::invalid_argument(message),
            // Marked apart from a refused certificate (both are UNAUTHENTICATED), so that
            // a client names the signing key, not its TLS identity.
            SubmitError::BadSignature(_) | SubmitError::KeyRevoked(_) => {
                Status::with_error_details(
                    Code::Unauthenticated,
                    message,
                    ErrorDetails::with_error_info(SIGNATURE, "tidemark", HashMap::new()),
                )
            }
            SubmitError::Invalid(errors) => invalid(&errors),
            SubmitError::Rejected(e) => e.into(),
            SubmitError::Store(e) => e.into(),
        }
    }
}

impl From<AppendError> for Status {
    fn from(err: AppendError) -> Self {
        let message = err.to_string();
        match err {
            AppendError::Conflict { version, next, .. }
            | AppendError::Untrusted { version, next, .. } => Status::with_error_details(
                Code::AlreadyExists,
                message,
                ErrorDetails::with_error_info(
                    VERSION_EXISTS,
                    "tidemark",
                    HashMap::from([
                        ("version".to_owned(), version.to_string()),
                        ("expected_version".to_owned(), next.to_string()),
                    ]),
                ),
            ),
            AppendError::NotOwner { .. } | AppendError::StateSuspended { .. } => {
                Status::permission_denied(message)
            }
            AppendError::VersionOrder {
                latest, expected, ..
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_error_info(
                    VERSION_ORDER,
                    "tidemark",
                    HashMap::from([
                        ("latest_version".to_owned(), latest.to_string()),
                        ("expected_version".to_owned(), expected.to_string()),
                    ]),
                ),
            ),
            AppendError::FirstVersion { .. }
            | AppendError::Retracted { .. }
            | AppendError::CategoryChange { .. } => Status::failed_precondition(message),
            AppendError::NothingToRetract { .. } => Status::not_found(message),
            AppendError::CertificateRevoked { .. } => Status::unauthenticated(message),
            AppendError::KeyRevoked { .. } | AppendError::KeyInactive { .. } => {
                Status::with_error_details(
                    Code::Unauthenticated,
                    message,
                    ErrorDetails::with_error_info(SIGNATURE, "tidemark", HashMap::new()),
                )
            }
            AppendError::Store(_) => Status::unavailable(message),
            AppendError::StandingUnsure => Status::aborted(message),
        }
    }
}

/// The `google.rpc.ErrorInfo` reason of a version out of order (metadata:
/// `latest_version`, `expected_version`), which `tidemark retract` reads to sign the
/// right version (`client::expected_version`).
const VERSION_ORDER: &str = "VERSION_ORDER";

/// The `google.rpc.ErrorInfo` reason of an envelope without a valid signature from an
/// active key of the caller's state (UNAUTHENTICATED, like a refused certificate).
const SIGNATURE: &str = "SIGNATURE";

/// The `google.rpc.ErrorInfo` reason of a version that exists with other content
/// (metadata: `version`, `expected_version`: the next free one).
const VERSION_EXISTS: &str = "VERSION_EXISTS";

/// INVALID_ARGUMENT with a `google.rpc.BadRequest` listing every bad field.
fn invalid(errors: &ValidationErrors) -> Status {
    let mut details = ErrorDetails::new();
    for v in &errors.0 {
        details.add_bad_request_violation(&v.field, &v.description);
    }
    Status::with_error_details(Code::InvalidArgument, errors.to_string(), details)
}

/// INVALID_ARGUMENT naming the one field at fault in a `google.rpc.BadRequest`.
fn bad_field(field: &str, reason: &str, message: String) -> Status {
    // A reason may quote what was sent; quoted whole, a long value would overflow the
    // caller's header limit and break its connection instead of telling it.
    let reason = crate::report::shorten(reason.to_owned(), MAX_ECHO);
    Status::with_error_details(
        Code::InvalidArgument,
        crate::report::shorten(message, MAX_ECHO),
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

/// INVALID_ARGUMENT naming `field` in a `google.rpc.BadRequest`, with `message` as both
/// the status message and the violation's description.
pub(super) fn invalid_field(field: &str, message: impl Into<String>) -> Status {
    let message = message.into();
    bad_field(field, &message, message.clone())
}

/// A `state` filter that is not a state code.
pub(super) fn state_filter(error: &impl std::fmt::Display) -> Status {
    invalid_field(
        "state",
        format!("state: {error}; give an ISO 3166-1 alpha-3 code, or none for every state"),
    )
}

/// Most characters of an invalid-argument message and of its field's reason.
const MAX_ECHO: usize = 1024;

/// A store failure is the server's: logged here, INTERNAL to the caller.
impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "store failure");
        if err.is_disk_failure() {
            // Not the caller's fault, and passing: the server stops for its supervisor to
            // restart it once the disk is fixed.
            Status::unavailable(format!(
                "the server's disk failed ({err}); try again later, and tell the operator if \
                 it goes on"
            ))
        } else {
            Status::internal(format!("the server's store failed: {err}"))
        }
    }
}

impl From<KeyRegistryError> for Status {
    fn from(err: KeyRegistryError) -> Self {
        match err {
            KeyRegistryError::OtherState { .. } => Status::already_exists(err.to_string()),
            KeyRegistryError::Unknown(_) => Status::not_found(err.to_string()),
            KeyRegistryError::Revoked { .. } => Status::failed_precondition(err.to_string()),
            KeyRegistryError::Store(e) => e.into(),
        }
    }
}

/// A bad query or aggregate parameter, in one shape for every read RPC.
impl From<FilterError> for Status {
    fn from(err: FilterError) -> Self {
        bad_field(err.field, &err.reason, err.to_string())
    }
}

impl From<AggregateError> for Status {
    fn from(err: AggregateError) -> Self {
        match err {
            AggregateError::TooManyCells { .. } => Status::resource_exhausted(err.to_string()),
            AggregateError::FeesUnderBudget => bad_field(
                "metrics",
                "fee is not answered under a privacy budget",
                err.to_string(),
            ),
            AggregateError::Entropy(_) => Status::unavailable(format!("{err}; try again")),
            AggregateError::OpenDomain(_) => bad_field("filter", &err.to_string(), err.to_string()),
            AggregateError::Store(e) => e.into(),
        }
    }
}

impl From<BudgetError> for Status {
    fn from(err: BudgetError) -> Self {
        match err {
            BudgetError::Spent { .. } => Status::resource_exhausted(err.to_string()),
            BudgetError::Store(e) => e.into(),
        }
    }
}

/// PERMISSION_DENIED with the reason in words and in an ErrorInfo detail
/// (`INSUFFICIENT_CONTRIBUTION`, with the standing's figures as metadata).
impl From<Refusal> for Status {
    fn from(Refusal(standing): Refusal) -> Self {
        let metadata = HashMap::from([
            ("category".to_owned(), standing.category.label().to_owned()),
            ("state".to_owned(), standing.state.to_string()),
            ("contributed".to_owned(), standing.contributed.to_string()),
            ("required".to_owned(), standing.required.to_string()),
            ("window_days".to_owned(), standing.window_days.to_string()),
        ]);
        Status::with_error_details(
            Code::PermissionDenied,
            standing.explanation(),
            ErrorDetails::with_error_info("INSUFFICIENT_CONTRIBUTION", "tidemark", metadata),
        )
    }
}

impl From<ProofRequestError> for Status {
    fn from(err: ProofRequestError) -> Self {
        match err {
            ProofRequestError::OutOfRange(reason) => Status::out_of_range(format!(
                "{reason}; the log's size is in its newest checkpoint (`tidemark log \
                 checkpoint`, Transparency.GetCheckpoint)"
            )),
            ProofRequestError::Store(e) => e.into(),
        }
    }
}

impl From<CosignError> for Status {
    fn from(err: CosignError) -> Self {
        let message = err.to_string();
        match err {
            CosignError::Malformed(_)
            | CosignError::NotCosignatureV1(_)
            | CosignError::FutureTime { .. }
            | CosignError::BeforeCheckpoint { .. } => Status::invalid_argument(message),
            CosignError::WrongName { .. } | CosignError::OtherStatesKey { .. } => {
                Status::permission_denied(message)
            }
            CosignError::NoCheckpoint(_) => Status::not_found(message),
            CosignError::BadSignature(_) | CosignError::InactiveKey { .. } => {
                Status::with_error_details(
                    Code::Unauthenticated,
                    message,
                    ErrorDetails::with_error_info(SIGNATURE, "tidemark", HashMap::new()),
                )
            }
            CosignError::Store(e) => e.into(),
        }
    }
}

impl From<AdminError> for Status {
    fn from(err: AdminError) -> Self {
        let message = err.to_string();
        match err {
            AdminError::Invalid { field, reason, .. } => bad_field(field, &reason, message),
            AdminError::NoCaKey { .. }
            | AdminError::OwnCertificate { .. }
            | AdminError::OwnCall(_)
            | AdminError::OwnKey(_)
            | AdminError::CompromisedKey { .. }
            | AdminError::NotEnrolled(_)
            | AdminError::Suspended(_)
            | AdminError::Trust(_) => Status::failed_precondition(message),
            AdminError::OperatorFromCsr => Status::permission_denied(message),
            AdminError::Write(AdminWriteError::Refused(e)) => e.into(),
            AdminError::Store(e) => e.into(),
            AdminError::Write(AdminWriteError::NotWritten(_) | AdminWriteError::Failed(_))
            | AdminError::Busy(_) => Status::unavailable(message),
            AdminError::NoSpace(_) => Status::resource_exhausted(message),
            AdminError::Internal(_) => Status::internal(message),
            AdminError::Stopped(_) => Status::cancelled(message),
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
pub(super) fn percent_encode(text: &str) -> String {
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

/// The canonical upper-case name of a gRPC code (as import rejections and the
/// go-grpc-prometheus `grpc_code` label spell it).
pub(super) fn code_name(code: Code) -> &'static str {
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
