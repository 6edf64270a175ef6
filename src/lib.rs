//! Tidemark: a secure, reciprocal exchange of signed incident reports between states.
//!
//! Module map, each layer depending only on those below it (see `docs/design.md` for what
//! must be true, `docs/architecture.md` for where to add things):
//!
//! - [`server`] — the gRPC server: TLS accept loop, per-call authentication, one shared
//!   context, the services (thin adapters: principal → domain → status), call guards.
//! - [`client`] — connecting to a server with a client certificate; turning transport
//!   failures into messages a person can act on.
//! - Domain:
//!   - [`identity`] — who a caller is: the [`Principal`] named by a certificate's SPIFFE ID.
//!   - [`report`] — the report model: validation, text policy, the summary queries use.
//!   - [`envelope`] — DSSE envelopes: PAE, signing, which key signed.
//!   - [`signing`] — Ed25519 keys and their files.
//!   - `submission` — accepting a signed envelope from a node (signature, then content).
//!   - [`receipt`] — the server's signed statement of acceptance.
//!   - `policy` — give-to-get standing; `access` — owner scopes, filters, cursors.
//!   - [`analytics`] — aggregate tables from write-time counters or scans, and disclosure
//!     control (small-cell, dominance and secondary suppression).
//!   - `administration` — operator actions and their rules (enrolment, keys, certificates).
//!   - `trust` — the swappable TLS trust state (CA bundle, CRL, revocations, suspensions);
//!     `journal` — the access journal beside the CRL (suspensions, key revocations),
//!     which with the CRL carries trust changes into a store restored from a backup;
//!     `tls` — rustls configuration: TLS 1.3, AES-GCM only, mutual TLS.
//!   - [`reciprocity`] — replaying the log to check every read against the give-to-get
//!     rules in force.
//!   - [`cosigning`] — accepting states' witnesses' cosignatures of checkpoints.
//!   - [`pki`] — the exchange CA, certificate issuance, CSRs, the development PKI.
//!   - [`tlog`] — the transparency log's formats and proofs (RFC 9162 Merkle tree, C2SP
//!     signed notes, checkpoints and tlog proofs, Tidemark's entries); the store keeps
//!     the tree.
//! - `store` — the embedded redb store: tables, indexes, counters, the one writer
//!   ([`Store`] is its handle).
//! - [`config`] — the server's TOML configuration and its defaults; [`clock`] — the
//!   server's "now"; [`country`] — ISO 3166-1 alpha-3 codes; [`calendar`] — dates and
//!   times in one spelling each; [`sample`] — made-up reports for demos and benchmarks.
//! - [`pb`] — the generated `tidemark.v1` protobuf and gRPC code.
//!
//! The public surface is the `pub` modules above and the flat list below; everything
//! else is `pub(crate)`. [`internals`] exposes what benchmarks measure directly.

#![warn(missing_docs, unreachable_pub)]

/// The allocator of every binary built on this crate (server, command line, tests,
/// benchmarks): mimalloc, which keeps freed pages for reuse, where glibc's malloc hands
/// large blocks back to the kernel and faults fresh ones in for the next aggregate.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access;
mod administration;
pub mod analytics;
mod budgets;
pub mod calendar;
pub mod client;
pub mod clock;
pub mod config;
pub mod cosigning;
pub mod country;
mod dn;
pub mod envelope;
pub mod files;
pub mod identity;
mod journal;
mod log_budget;
pub mod metrics;
pub mod pki;
mod policy;
pub mod receipt;
pub mod reciprocity;
pub mod report;
pub mod sample;
pub mod server;
pub mod signing;
mod store;
mod submission;
pub mod tlog;
mod tls;
mod trust;

pub use self::{
    access::MAX_QUERY_RESULTS,
    administration::{file_sha256, file_sha256_with},
    client::ClientIdentity,
    clock::Clock,
    config::Config,
    country::CountryCode,
    identity::{PeerIdentity, Principal, Role},
    server::{Server, ServerError},
    signing::{PublicKey, SigningKey},
    store::{
        BackupContents, DiskFailure, KeyRecord, Projection, ProjectionGuard, RestoreMark,
        StateRecord, Store, StoreError,
    },
};

/// Internals that benchmarks measure directly, bypassing the server. Not an API: it
/// changes with the code.
#[doc(hidden)]
pub mod internals {
    pub use crate::{
        access::{QueryFilter, visible_to},
        store::{Writer, WriterThread, counters::month_of_day},
        submission::verify as verify_submission,
    };
}

/// Generated code for the `tidemark.v1` protobuf package.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("tidemark.v1");
    include!(concat!(env!("OUT_DIR"), "/tidemark.v1.serde.rs"));

    /// The encoded descriptor set of every `tidemark.v1` file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/tidemark_descriptor.bin"));
}
