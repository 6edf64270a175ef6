//! Tidemark: a secure, reciprocal exchange of signed incident reports between states.
//!
//! Module map, each layer depending only on those below it (see `DESIGN.md`):
//!
//! - [`server`] — the gRPC server: TLS accept loop, per-call authentication, the
//!   services (thin adapters over the domain), HTTP/2 limits.
//! - [`client`] — connecting to a server with a client certificate; turning transport
//!   failures into messages a person can act on.
//! - [`identity`] — who a caller is: the [`identity::Principal`] named by a client
//!   certificate's SPIFFE ID.
//! - [`submission`], [`report`], [`envelope`], [`signing`], [`receipt`] — accepting a
//!   signed report: DSSE envelopes, Ed25519, validation, server receipts.
//! - [`policy`] — give-to-get standing; [`access`] — owner scopes and raw reads.
//! - [`analytics`] — aggregate tables from write-time counters or scans, and disclosure
//!   control (small-cell, dominance and secondary suppression).
//! - [`trust`] — the swappable TLS trust state (CA bundle, CRL, revocations).
//! - [`pki`] — the exchange CA, certificate issuance, the development PKI.
//! - [`tls`] — rustls configuration: TLS 1.3, AES-GCM only, mutual TLS.
//! - [`store`] — the embedded redb store.
//! - [`config`] — the server's TOML configuration and its defaults.
//! - [`country`] — ISO 3166-1 alpha-3 country codes; [`calendar`] — dates and times in
//!   one spelling each.
//! - [`pb`] — the generated `tidemark.v1` protobuf and gRPC code.

pub mod access;
pub mod administration;
pub mod analytics;
pub mod calendar;
pub mod client;
pub mod clock;
pub mod config;
pub mod country;
pub mod envelope;
pub mod identity;
pub mod pki;
pub mod policy;
pub mod receipt;
pub mod report;
pub mod sample;
pub mod server;
pub mod signing;
pub mod store;
pub mod submission;
pub mod tls;
pub mod trust;

/// Generated code for the `tidemark.v1` protobuf package.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("tidemark.v1");
    include!(concat!(env!("OUT_DIR"), "/tidemark.v1.serde.rs"));

    /// The encoded descriptor set of every `tidemark.v1` file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/tidemark_descriptor.bin"));
}
