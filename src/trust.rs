//! What the server trusts right now, changeable while it runs.
//!
//! Holds the TLS server configuration (certificate, client-CA bundle, CRL), the set of
//! revoked certificate serials and of suspended states. An operator's change rebuilds
//! the configuration and swaps it in: new handshakes use the new material, open
//! connections are not dropped — and because they would otherwise keep a revoked or
//! suspended identity alive, every call is checked against the sets too, and every
//! change is announced on a watch channel ([`Trust::changes`]) so that calls already in
//! progress (streams) re-check their caller at once.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime, pem::PemObject};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::{
    pki::{self, CertificateAuthority, PkiError, RevokedEntry},
    store::{RevokedCertificate, Store, StoreError},
    tls::{ServerTlsFiles, ServerTlsMaterial, TlsError},
};

/// How long a published CRL is valid; it is re-signed at every change and start.
const CRL_VALID_DAYS: i64 = 7;

/// Certificates whose chain check is remembered until the bundle is next loaded.
const MAX_KNOWN_CHAINS: usize = 10_000;
/// How long a chain check is remembered at most. It is also forgotten when a certificate
/// of the chain expires (an intermediate CA can expire before the leaf does), so this
/// bounds only what the chain's dates do not show.
const CHAIN_CHECK_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Checks client chains against the CA bundle as loaded ([`Trust::chains_to_a_trusted_ca`]).
struct Chains {
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// Leaf certificate (DER) → whether it chains to a CA of the bundle, and until when
    /// that answer holds.
    known: Mutex<std::collections::HashMap<Vec<u8>, (bool, Until)>>,
}

/// Until when a chain check holds: a minute after it was made, and not past the first
/// `notAfter` of the chain's certificates.
#[derive(Clone, Copy)]
struct Until {
    checked: std::time::Instant,
    /// The earliest `notAfter` of the chain (Unix seconds).
    first_expiry: i64,
}

impl Until {
    fn of(chain: &[CertificateDer<'_>]) -> Self {
        Self {
            checked: std::time::Instant::now(),
            first_expiry: crate::identity::first_expiry(chain),
        }
    }

    fn holds(self) -> bool {
        self.checked.elapsed() < CHAIN_CHECK_FOR
            && OffsetDateTime::now_utc().unix_timestamp() <= self.first_expiry
    }
}

/// The server's live trust state.
pub(crate) struct Trust {
    files: ServerTlsFiles,
    ca_key: Option<PathBuf>,
    crl_path: PathBuf,
    state: RwLock<State>,
    /// Held while a new state is built and swapped in: the last rebuild to start reads
    /// the newest store, and no older one can be swapped in after it.
    rebuilding: Mutex<()>,
    /// Bumped after every swap, so open calls can re-check their caller.
    generation: watch::Sender<u64>,
}

struct State {
    tls: Arc<rustls::ServerConfig>,
    /// Which certificates chain to a CA of the bundle as loaded.
    chains: Chains,
    server_serial: String,
    server_not_after: i64,
    ca: Option<Arc<CertificateAuthority>>,
    crl_pem: Option<String>,
    revoked: HashSet<String>,
    suspended: HashSet<String>,
}

impl Trust {
    /// Loads the TLS files, the issuing CA (when its key is present) and the revoked and
    /// suspended sets from the store, and writes the CRL.
    pub(crate) fn load(
        files: ServerTlsFiles,
        ca_key: Option<PathBuf>,
        crl_path: PathBuf,
        store: &Store,
    ) -> Result<Self, TrustError> {
        let state = build(&files, ca_key.as_ref(), &crl_path, store, Building::AtStart)?;
        Ok(Self {
            files,
            ca_key,
            crl_path,
            state: RwLock::new(state),
            rebuilding: Mutex::new(()),
            generation: watch::Sender::new(0),
        })
    }

    /// Re-reads the files and the store, and swaps in the result. On error nothing
    /// changes.
    pub(crate) fn refresh(&self, store: &Store) -> Result<(), TrustError> {
        let _one_at_a_time = self
            .rebuilding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let served = self.crl_pem();
        let state = build(
            &self.files,
            self.ca_key.as_ref(),
            &self.crl_path,
            store,
            Building::Again {
                served_crl: served.as_deref(),
            },
        )?;
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Takes who is revoked and suspended from the store, leaving the TLS configuration
    /// as it is: a revocation or suspension need not wait for the certificate files or
    /// a writable CRL path.
    pub(crate) fn refresh_access(&self, store: &Store) -> Result<(), TrustError> {
        let _one_at_a_time = self
            .rebuilding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (mut revoked, suspended) = access(store)?;
        if let Ok(listed) = crl_file_revocations(&self.files.ca, &self.crl_path, "the CRL file") {
            revoked.extend(listed.into_iter().map(|r| r.serial));
        }
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            state.revoked = revoked;
            state.suspended = suspended;
        }
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// The revocations the CRL file lists, its signature checked as a reload checks it
    /// (an error that names the file), each as made by `revoked_by`.
    pub(crate) fn crl_file_entries(
        &self,
        revoked_by: &str,
    ) -> Result<Vec<RevokedCertificate>, TrustError> {
        crl_file_revocations(&self.files.ca, &self.crl_path, revoked_by)
    }

    /// Rewrites the access journal beside the CRL file from the store (after a change
    /// that does not rebuild the trust state: a signing key's revocation). A failure is
    /// logged: the change is in force and in the store either way.
    pub(crate) fn write_journal(&self, store: &Store) {
        if let Err(e) = crate::journal::write(store, &self.crl_path) {
            tracing::error!(error = %e, "the access journal is stale");
        }
    }

    /// A receiver that sees a new value after every change of the trust state.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serial (hex) of the server certificate new handshakes present.
    pub(crate) fn server_serial(&self) -> String {
        self.read().server_serial.clone()
    }

    /// When the server certificate new handshakes present expires (Unix seconds).
    pub(crate) fn server_not_after(&self) -> i64 {
        self.read().server_not_after
    }

    /// Whose certificate `serial` (canonical) is, if it is one the exchange itself
    /// stands on: the server's, or a CA's of the bundle.
    pub(crate) fn own_certificate(&self, serial: &str) -> Option<&'static str> {
        if self.server_serial() == serial {
            return Some("the server's own certificate (server.pem)");
        }
        let bundle = crate::tls::read_certs(&self.files.ca).ok()?;
        bundle
            .iter()
            .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
            .any(|(_, cert)| crate::identity::serial_hex(cert.raw_serial()) == serial)
            .then_some("a CA certificate of the bundle (ca.pem)")
    }

    /// The configuration for the next handshake.
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.read().tls.clone()
    }

    /// Whether the certificate with this serial is revoked. `serial` is in its canonical
    /// form, as [`crate::identity::PeerIdentity::serial`] and stored records hold it (the
    /// revoked set is canonicalised when it is loaded), so this is one set lookup: it runs
    /// before every item a stream sends.
    pub(crate) fn is_revoked(&self, serial: &str) -> bool {
        self.read().revoked.contains(serial)
    }

    pub(crate) fn is_suspended(&self, state: &str) -> bool {
        self.read().suspended.contains(state)
    }

    /// Whether `chain` (leaf first) still chains to a CA of the bundle as last loaded, at
    /// the time: a CA taken out of the bundle by a reload, or an intermediate CA that
    /// expired, ends its certificates' rights on connections already open, as a
    /// revocation does. Checked once per certificate and bundle, again each minute, and
    /// again once a certificate of the chain has expired.
    pub(crate) fn chains_to_a_trusted_ca(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        let state = self.read();
        let mut known = state
            .chains
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((trusted, until)) = known.get(leaf.as_ref())
            && until.holds()
        {
            return *trusted;
        }
        let trusted = state
            .chains
            .verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .is_ok();
        if known.len() >= MAX_KNOWN_CHAINS {
            known.clear();
        }
        known.insert(leaf.as_ref().to_vec(), (trusted, Until::of(chain)));
        trusted
    }

    /// The CA that issues certificates, if this server holds its key.
    pub(crate) fn issuing_ca(&self) -> Option<Arc<CertificateAuthority>> {
        self.read().ca.clone()
    }

    /// The current CRL (PEM), if this server holds the CA key.
    pub(crate) fn crl_pem(&self) -> Option<String> {
        self.read().crl_pem.clone()
    }

    /// When the published CRL was issued (its `thisUpdate`), Unix seconds.
    pub(crate) fn crl_issued_at(&self) -> Option<i64> {
        let pem = self.crl_pem()?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
        let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).ok()?;
        Some(crl.last_update().timestamp())
    }
}

/// The CRL entries of `revoked`.
fn crl_entries(revoked: &[RevokedCertificate]) -> Vec<RevokedEntry> {
    revoked
        .iter()
        .map(|r| RevokedEntry {
            serial: r.serial.clone(),
            // A time no server writes (at or before 1970) would make a CRL that
            // TLS cannot parse, and no server could start: now instead.
            revoked_at: OffsetDateTime::from_unix_timestamp(r.revoked_at)
                .ok()
                .filter(|_| r.revoked_at > 0)
                .unwrap_or_else(OffsetDateTime::now_utc),
            reason: pki::parse_reason(&r.reason_name).unwrap_or(pki::RevocationReason::Unspecified),
        })
        .collect()
}

/// Whether the trust state is built at start, or again while the server runs (with the
/// CRL it serves now, if it signs one).
#[derive(Clone, Copy)]
enum Building<'a> {
    AtStart,
    Again { served_crl: Option<&'a str> },
}

/// The number (big-endian) of the next CRL to be written to `path`: the time in seconds,
/// or one more than the CRL there or the one served now, when that is greater. RFC 5280
/// §5.2.3 has each CRL's number greater than the last one's: two made in one second
/// used to share the time, and an older file put back could take the number down.
fn next_crl_number(path: &std::path::Path, building: Building<'_>) -> Vec<u8> {
    use x509_parser::num_bigint::BigUint;
    let now = BigUint::from(u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(1));
    let served = match building {
        Building::Again { served_crl } => served_crl.and_then(crl_number),
        Building::AtStart => None,
    };
    let file = crate::files::read_text(path).ok();
    let last = [file.as_deref().and_then(crl_number), served]
        .into_iter()
        .flatten()
        .max();
    match last {
        Some(last) => now.max(last + 1u32),
        None => now,
    }
    .to_bytes_be()
}

/// The number of a PEM CRL, if it parses.
fn crl_number(pem: &str) -> Option<x509_parser::num_bigint::BigUint> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).ok()?;
    crl.crl_number().cloned()
}

/// The trust state from the files and the store. A CRL file that cannot be written
/// fails the build at start (`at_start`); later it is logged, and the CRL is still served
/// and enforced from memory, so a revocation never waits for a writable CRL path.
fn build(
    files: &ServerTlsFiles,
    ca_key: Option<&PathBuf>,
    crl_path: &std::path::Path,
    store: &Store,
    building: Building<'_>,
) -> Result<State, TrustError> {
    let at_start = matches!(building, Building::AtStart);
    let material = ServerTlsMaterial::load(files)?;
    let ca = match ca_key {
        Some(path) if path.exists() => Some(Arc::new(load_ca(&files.ca, path)?)),
        _ => None,
    };
    let mut revoked_records = store.revoked_certificates()?;
    // What the CRL file lists and the store does not — written by another server of this
    // exchange, or published by an offline CA and re-read on reload — is enforced and
    // kept: the file never loses an entry. One that does not verify is left as it is
    // (it stopped the server at start).
    let (from_file, file_readable) = match crl_file_revocations(&files.ca, crl_path, "the CRL file")
    {
        Ok(entries) => (entries, true),
        Err(e) if at_start => return Err(e),
        Err(e) => {
            tracing::error!(error = %e, "the CRL file is left as it is; revocations are taken from the store only");
            (Vec::new(), false)
        }
    };
    let known: HashSet<String> = revoked_records.iter().map(|r| r.serial.clone()).collect();
    let file_only: Vec<RevokedCertificate> = from_file
        .into_iter()
        .filter(|r| !known.contains(&r.serial))
        .collect();
    revoked_records.extend(file_only.iter().cloned());
    let crl_pem = match &ca {
        // An offline CA's CRL, as the operator put it there.
        None => crate::files::read_text(crl_path)
            .ok()
            .filter(|_| file_readable),
        Some(ca) => {
            let entries = crl_entries(&revoked_records);
            let pem = ca.crl_numbered(
                &entries,
                &next_crl_number(crl_path, building),
                CRL_VALID_DAYS,
            )?;
            let written = if file_readable {
                crate::files::replace(crl_path, pem.as_bytes())
            } else {
                Ok(())
            }
            .map_err(|e| {
                TrustError::Write(
                    format!("writing the CRL to {} ([tls] crl)", crl_path.display()),
                    format!("{e}; the server writes it at start and on each revocation, so put it where the server may write (e.g. the data directory)"),
                )
            });
            match written {
                Err(e) if at_start => return Err(e),
                Err(e) => {
                    tracing::error!(error = %e, "the new CRL is served and enforced, but its file is stale");
                }
                Ok(()) => {}
            }
            Some(pem)
        }
    };
    // Suspensions and signing-key revocations, which a CRL cannot carry, beside it.
    match crate::journal::write(store, crl_path) {
        Err(e) if at_start => return Err(e.into()),
        Err(e) => tracing::error!(error = %e, "the access journal is stale"),
        Ok(()) => {}
    }
    let crls = match &crl_pem {
        Some(pem) => vec![
            CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| TrustError::Write("CRL".to_owned(), e.to_string()))?,
        ],
        None => Vec::new(),
    };
    let tls = Arc::new(material.server_config(crls)?);
    let (server_serial, server_not_after) = material
        .cert_chain
        .first()
        .and_then(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
        .map(|(_, c)| {
            (
                crate::identity::serial_hex(c.raw_serial()),
                c.validity().not_after.timestamp(),
            )
        })
        .unwrap_or_default();
    let (mut revoked, suspended) = access(store)?;
    revoked.extend(file_only.into_iter().map(|r| r.serial));
    Ok(State {
        tls,
        chains: Chains {
            verifier: material.chain_verifier()?,
            known: Mutex::default(),
        },
        server_serial,
        server_not_after,
        ca,
        crl_pem,
        revoked,
        suspended,
    })
}

/// The revocations the CRL file at `crl_path` lists (none if there is no file), once its
/// signature is checked against the CAs of the bundle `ca`: what a store restored from a
/// backup must not forget ([`Store::record_start`] carries over those it lacks). A file
/// that cannot be read, parsed or verified is refused rather than overwritten, so that
/// no revocation is lost without the operator seeing it.
pub(crate) fn crl_file_revocations(
    ca: &std::path::Path,
    crl_path: &std::path::Path,
    revoked_by: &str,
) -> Result<Vec<RevokedCertificate>, TrustError> {
    let refused = |why: String| {
        TrustError::Write(
            format!("the CRL file {} ([tls] crl)", crl_path.display()),
            format!(
                "{why}; the server enforces and keeps the revocations it lists, so it neither \
                 starts nor reloads over a CRL it cannot verify: put back the file it last \
                 wrote, or one the CA signed (moved aside, the revocations only it lists are \
                 lost)"
            ),
        )
    };
    // Past a byte-order mark, as every file Tidemark reads.
    let bytes = match crate::files::read_bytes(crl_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(refused(format!("cannot be read ({e})"))),
    };
    let der = CertificateRevocationListDer::from_pem_slice(&bytes)
        .map_err(|e| refused(format!("holds no PEM X509 CRL ({e})")))?;
    let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
        .map_err(|e| refused(format!("is not an X.509 CRL ({e})")))?;
    let signed = crate::tls::read_certs(ca)?.iter().any(|cert| {
        x509_parser::parse_x509_certificate(cert.as_ref())
            .is_ok_and(|(_, cert)| crl.verify_signature(cert.public_key()).is_ok())
    });
    if !signed {
        return Err(refused(format!(
            "is not signed by a CA of {} ([tls] ca)",
            ca.display()
        )));
    }
    Ok(crl
        .iter_revoked_certificates()
        .map(|entry| {
            let name = pki::reason_name(entry.reason_code().map_or(0, |(_, code)| code.0));
            RevokedCertificate {
                serial: crate::identity::serial_hex(entry.raw_serial()),
                reason: pki::parse_reason(name).map_or(0, |r| r as u32),
                reason_name: name.to_owned(),
                revoked_at: entry.revocation_date.timestamp(),
                revoked_by: revoked_by.to_owned(),
            }
        })
        .collect())
}

/// The revoked serials and the suspended states, as the store holds them.
fn access(store: &Store) -> Result<(HashSet<String>, HashSet<String>), TrustError> {
    // Stores written before serials had one form may hold `00`-prefixed ones.
    let revoked = store
        .revoked_certificates()?
        .into_iter()
        .map(|r| crate::identity::canonical_serial(&r.serial).unwrap_or(r.serial))
        .collect();
    let suspended = store
        .states()?
        .into_iter()
        .filter(|s| s.suspended)
        .map(|s| s.state)
        .collect();
    Ok((revoked, suspended))
}

/// Checks that the CA key file, if there is one, is readable and matches a CA of the
/// bundle: at start, before the store is opened (or made).
pub(crate) fn check_ca_key(
    bundle: &std::path::Path,
    key_path: Option<&PathBuf>,
) -> Result<(), TrustError> {
    match key_path {
        Some(path) if path.exists() => load_ca(bundle, path).map(drop),
        _ => Ok(()),
    }
}

/// The CA certificate in the bundle whose public key matches the key file.
fn load_ca(
    bundle: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<CertificateAuthority, TrustError> {
    let key_pem = crate::files::read_text(key_path)
        .map_err(|e| TrustError::Write(key_path.display().to_string(), e.to_string()))?;
    let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| {
        TrustError::Write(
            format!("the CA key {} ([tls] ca_key)", key_path.display()),
            format!(
                "cannot be read ({e}): it must be a PKCS#8 PEM key (\"BEGIN PRIVATE KEY\"); \
                 convert an \"EC PRIVATE KEY\" with `openssl pkcs8 -topk8 -nocrypt -in {0} \
                 -out {0}.pk8` and point ca_key at the result",
                key_path.display()
            ),
        )
    })?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    for cert in crate::tls::read_certs(bundle)? {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            continue;
        };
        if parsed.public_key().raw == spki.as_slice() {
            let pem = crate::signing::pem_encode("CERTIFICATE", cert.as_ref());
            return Ok(CertificateAuthority::from_pem(&pem, &key_pem)?);
        }
    }
    Err(TrustError::Write(
        key_path.display().to_string(),
        format!("no certificate in {} matches this CA key", bundle.display()),
    ))
}

/// Why the trust state could not be (re)built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: {1}")]
    Write(String, String),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}
