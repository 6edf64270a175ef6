//! What the server trusts right now, changeable while it runs.
//!
//! Holds the TLS server configuration (certificate, client-CA bundle, CRLs), the
//! revoked certificates (by issuer and serial) and the suspended states. An operator's change rebuilds
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
    identity::{CertificateId, PeerIdentity, Role},
    pki::{self, CertificateAuthority, PkiError, RevokedEntry},
    store::{IssuedCertificate, RevokedCertificate, SeenKey, Store, StoreError},
    tls::{Inadmissible, ServerTlsFiles, ServerTlsMaterial, TlsError},
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
    /// Chain ([`crate::identity::chain_digest`]) → the index of the anchor its verified path ends at,
    /// when partner CAs are listed.
    anchors: Mutex<std::collections::HashMap<[u8; 32], Option<usize>>>,
    /// Chain → what `whoami` shows of it ([`Trust::verified_chain`]): a path verification
    /// per WhoAmI made it several times slower.
    shown: Mutex<std::collections::HashMap<[u8; 32], Option<Arc<ShownChain>>>>,
}

/// The value `map` holds for `key`, made by `make` (and kept: at most
/// [`MAX_KNOWN_CHAINS`], all forgotten when full) if it holds none.
fn remembered<K: Eq + std::hash::Hash, V: Clone>(
    map: &Mutex<std::collections::HashMap<K, V>>,
    key: K,
    make: impl FnOnce() -> V,
) -> V {
    let mut known = map.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(value) = known.get(&key) {
        return value.clone();
    }
    let value = make();
    if known.len() >= MAX_KNOWN_CHAINS {
        known.clear();
    }
    known.insert(key, value.clone());
    value
}

/// What `whoami` shows of a chain: the CA of the bundle its verified path ends at, the
/// states that CA vouches for when it is a partner CA, and the intermediate CAs on the
/// path, the leaf's issuer first.
#[derive(Debug)]
pub(crate) struct ShownChain {
    pub(crate) anchor: String,
    pub(crate) vouches_for: Vec<String>,
    pub(crate) intermediates: Vec<crate::pb::ChainCertificate>,
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
    /// The configuration file as the server read it at start (when it runs with one): a
    /// reload takes only `[tls] partner_cas` from it again, and says which other
    /// settings changed since and wait for a restart.
    config_at_start: Option<crate::config::Config>,
    /// The key (SHA-256 of its SubjectPublicKeyInfo) of each client certificate a
    /// handshake presented since the server started, by issuer and serial (at most
    /// [`MAX_KNOWN_CHAINS`], all forgotten when full; the store keeps them across
    /// restarts, `store/seen_keys.rs`): a revocation by serial of one made offline then
    /// names its key, as presenting the certificate would ([`Trust::seen_keys`]).
    seen_keys: Mutex<std::collections::HashMap<CertificateId, [u8; 32]>>,
}

struct State {
    tls: Arc<rustls::ServerConfig>,
    /// Which certificates chain to a CA of the bundle as loaded.
    chains: Chains,
    server_serial: String,
    server_not_after: i64,
    /// The TLS files and the CA this state was built from.
    loaded: Arc<Loaded>,
    crl_pem: Option<String>,
    revoked: Revocations,
    /// Keys reported compromised (SHA-256 of the SubjectPublicKeyInfo), with the serial
    /// whose revocation says so: no certificate of them is admitted.
    compromised_keys: std::collections::HashMap<Vec<u8>, String>,
    suspended: HashSet<String>,
}

/// The TLS files as last loaded — at start, or by an operator's reload — and the CA that
/// issues, when this server holds its key. A rebuild after a revocation or suspension
/// reuses them: a file changed on disk takes effect only when it is reloaded, on the
/// audit record.
struct Loaded {
    /// Where the CA bundle was read from (`[tls] ca`), for messages.
    bundle_path: PathBuf,
    material: ServerTlsMaterial,
    ca: Option<Arc<CertificateAuthority>>,
    /// The CAs of the bundle as trust anchors, and which of them are partner CAs
    /// (`[tls] partner_cas`).
    anchors: Anchors,
}

/// The CAs of the bundle as webpki's trust anchors, each with the states it vouches
/// for when it is a partner CA (`None`: the exchange's own, which vouches for anyone).
#[derive(Default)]
struct Anchors {
    trusted: Vec<rustls::pki_types::TrustAnchor<'static>>,
    partner_states: Vec<Option<Vec<String>>>,
    /// Each CA's name (RFC 4514), for messages.
    names: Vec<String>,
}

impl Anchors {
    /// Whether the CA of the bundle at `anchor` vouches for `principal`: the exchange's
    /// own CA for anyone, a partner CA for the nodes and analysts of its states only.
    fn vouches(&self, anchor: usize, principal: &crate::identity::Principal) -> bool {
        match self.partner_states.get(anchor) {
            Some(None) => true,
            Some(Some(states)) => match principal.role() {
                Role::Node(s) | Role::StateAnalyst(s) => states.iter().any(|p| p == s.as_str()),
                Role::RegionalAnalyst | Role::Operator => false,
            },
            None => false,
        }
    }

    /// Refuses a list of partner CAs that would let a partner's key vouch for anyone:
    /// a CA left unlisted that has the key of a listed partner CA (a partner's CA
    /// renamed, the old name still in the bundle), or — against `before`, the list in
    /// force — that was a partner CA until now (its listing dropped from the file, or the
    /// file emptied): a reload would otherwise turn it into the exchange's own, operators
    /// included, and report success. Taking a partner's CA out of the bundle is how its
    /// trust ends.
    fn keep_partners(&self, before: Option<&Self>) -> Result<(), String> {
        let partner_keys: Vec<&[u8]> = self
            .trusted
            .iter()
            .zip(&self.partner_states)
            .filter(|(_, states)| states.is_some())
            .map(|(anchor, _)| anchor.subject_public_key_info.as_ref())
            .collect();
        let unlisted = self
            .trusted
            .iter()
            .zip(&self.partner_states)
            .zip(&self.names)
            .filter(|((_, states), _)| states.is_none());
        for ((anchor, _), name) in unlisted {
            let key = anchor.subject_public_key_info.as_ref();
            if partner_keys.contains(&key) {
                return Err(format!(
                    "the CA {name} of the bundle has the key of a partner CA that \
                     tls.partner_cas lists, but is not listed itself, so it would vouch for \
                     every principal, operators included: list it with its states, or take it \
                     out of the bundle"
                ));
            }
            let was_partner = before.is_some_and(|before| {
                before
                    .trusted
                    .iter()
                    .zip(&before.partner_states)
                    .any(|(old, states)| {
                        states.is_some()
                            && old.subject.as_ref() == anchor.subject.as_ref()
                            && old.subject_public_key_info.as_ref() == key
                    })
            });
            if was_partner {
                return Err(format!(
                    "the CA {name} is a partner CA, and tls.partner_cas no longer lists it: \
                     it would vouch for every principal, operators included; list it again \
                     with its states, or take it out of the bundle to end its trust"
                ));
            }
        }
        Ok(())
    }
}

impl Loaded {
    fn from_files(files: &ServerTlsFiles, ca_key: Option<&PathBuf>) -> Result<Self, TrustError> {
        let material = ServerTlsMaterial::load(files)?;
        let ca = match configured(ca_key) {
            Some(path) => Some(Arc::new(load_ca(&files.ca, path)?)),
            None => None,
        };
        let anchors = partner_cas(files, &material, ca.as_deref())?;
        Ok(Self {
            bundle_path: files.ca.clone(),
            material,
            ca,
            anchors,
        })
    }
}

/// The bundle's CAs as trust anchors, those `[tls] partner_cas` names (each found by
/// name: RFC 4514, compared as names are) marked with their states. Refused: a listed
/// name the bundle does not hold, one CA listed twice (under two spellings), and the
/// exchange's own CA listed — the one whose key `tls.ca_key` holds, or that issued the
/// server's certificate: its operators would all be refused.
fn partner_cas(
    files: &ServerTlsFiles,
    material: &ServerTlsMaterial,
    ca: Option<&CertificateAuthority>,
) -> Result<Anchors, TrustError> {
    let mut anchors = Anchors::default();
    let mut names = Vec::new();
    // As the configuration file says now: a reload takes a new list with a new bundle.
    let listed = match &files.partner_cas_from {
        Some(path) => {
            // Only the partner CAs are taken from it, and checked: the rest of the file
            // was checked at start with the flags that override it.
            let config = crate::config::Config::read(path)
                .and_then(|config| config.check_partner_cas().map(|()| config))
                .map_err(|e| {
                    TrustError::from(TlsError::Config(format!(
                        "reading tls.partner_cas again from {}: {e}",
                        path.display()
                    )))
                })?;
            config.tls.partner_cas
        }
        None => files.partner_cas.clone(),
    };
    for der in &material.client_ca {
        let (Ok(anchor), Ok((_, cert))) = (
            webpki::anchor_from_trusted_cert(der),
            x509_parser::parse_x509_certificate(der),
        ) else {
            continue;
        };
        anchors.trusted.push(anchor.to_owned());
        anchors.partner_states.push(None);
        names.push((
            crate::dn::to_rfc4514(cert.subject()),
            crate::dn::NameKey::of(cert.subject()),
        ));
        anchors.names.push(crate::dn::to_rfc4514(cert.subject()));
    }
    let refused = |why: String| TrustError::from(TlsError::Config(why));
    let own_names: Vec<crate::dn::NameKey> = [
        ca.and_then(|ca| subject_key(ca.cert_pem().as_bytes())),
        material.cert_chain.first().and_then(|der| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .map(|(_, cert)| crate::dn::NameKey::of(cert.issuer()))
        }),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (name, states) in &listed {
        let key = crate::dn::NameKey::parse(name).map_err(|why| {
            refused(format!(
                "tls.partner_cas: {name:?} is not an RFC 4514 name ({why})"
            ))
        })?;
        let Some(index) = names.iter().position(|(_, k)| *k == key) else {
            let listed: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
            return Err(refused(format!(
                "tls.partner_cas names {name:?}, which is no CA of the bundle {}; its CAs are: \
                 {}",
                files.ca.display(),
                listed.join("; ")
            )));
        };
        if own_names.contains(&key) {
            return Err(refused(format!(
                "tls.partner_cas names {name:?}, the exchange's own CA (the one tls.ca_key \
                 holds, or that issued the server's certificate): a partner CA vouches only \
                 for its states' nodes and analysts, so every operator would be refused; \
                 list partners' CAs only"
            )));
        }
        if anchors.partner_states[index].is_some() {
            return Err(refused(format!(
                "tls.partner_cas lists the CA {} twice (as {name:?} and another spelling): \
                 list it once, with all its states",
                names[index].0
            )));
        }
        anchors.partner_states[index] =
            Some(states.iter().map(|s| s.to_ascii_uppercase()).collect());
    }
    let own = anchors
        .partner_states
        .iter()
        .filter(|p| p.is_none())
        .count();
    if own > 1 {
        tracing::warn!(
            bundle = %files.ca.display(),
            "the bundle holds {own} CAs that tls.partner_cas does not list: each vouches for \
             every principal, operators included (expected during a CA rollover; list a \
             partner's CA in tls.partner_cas with its states)"
        );
    }
    anchors.keep_partners(None).map_err(refused)?;
    Ok(anchors)
}

/// The subject of a PEM certificate, as a name to compare.
fn subject_key(pem: &[u8]) -> Option<crate::dn::NameKey> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(crate::dn::NameKey::of(cert.subject()))
}

/// A trust state built and checked — its TLS configuration made with every CRL — and
/// what is still to be written before it is swapped in.
struct Built {
    state: State,
    /// The CRL file's new text: this server's CRL, then the other CAs' (none when this
    /// server signs no CRL, or the file could not be read and is left as it is).
    crl_file: Option<String>,
    /// Why the CRL file could not be read (and so is left as it is), after a change.
    crl_file_unread: Option<String>,
    /// Revocations the CRL file holds and the store does not.
    carried: Vec<RevokedCertificate>,
}

/// A reload built and checked, not yet in force: the revocations only the CRL file
/// holds are to be recorded (so that none is in force without its record), then
/// [`Reloading::install`] writes the files and swaps it in. Dropped, nothing changes.
pub(crate) struct Reloading<'a> {
    trust: &'a Trust,
    _one_at_a_time: std::sync::MutexGuard<'a, ()>,
    built: Built,
    waiting_for_restart: Vec<String>,
    issuer_outside_bundle: Option<String>,
    bundle_changes: Vec<String>,
}

/// What a reload changes in whom the server trusts ([`Reloading::bundle_changes`]): each
/// CA certificate of the bundle added or removed (a re-issued CA is both), by name, and
/// the CA key held, if it changed.
fn bundle_changes(old: &Loaded, new: &Loaded) -> Vec<String> {
    let name = |der: &CertificateDer<'_>| {
        x509_parser::parse_x509_certificate(der.as_ref()).map_or_else(
            |_| "a certificate that does not parse".to_owned(),
            |(_, c)| crate::dn::to_rfc4514(c.subject()),
        )
    };
    let (before, after) = (&old.material.client_ca, &new.material.client_ca);
    let mut changes: Vec<String> = after
        .iter()
        .filter(|c| !before.contains(c))
        .map(|c| format!("CA added: {}", name(c)))
        .collect();
    changes.extend(
        before
            .iter()
            .filter(|c| !after.contains(c))
            .map(|c| format!("CA removed: {}", name(c))),
    );
    let key = |l: &Loaded| l.ca.as_ref().map(|ca| ca.cert_pem().to_owned());
    if key(old) != key(new) {
        // Whose key it is now, by its CA's name.
        let whose = new
            .ca
            .as_ref()
            .and_then(|ca| CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).ok())
            .map(|der| name(&der));
        let whose = whose.unwrap_or_else(|| "a CA of the bundle".to_owned());
        changes.push(match (&old.ca, &new.ca) {
            (_, None) => "CA key no longer held".to_owned(),
            (None, Some(_)) => format!("CA key now held (that of {whose})"),
            (Some(_), Some(_)) => format!("CA key replaced (that of {whose})"),
        });
    }
    changes
}

impl Reloading<'_> {
    /// What the reload changes in the CA bundle and the CA key ([`bundle_changes`]).
    pub(crate) fn bundle_changes(&self) -> &[String] {
        &self.bundle_changes
    }

    /// The revocations the CRL file holds and the store does not.
    pub(crate) fn carried(&self) -> &[RevokedCertificate] {
        &self.built.carried
    }

    /// The settings of the configuration file, besides `[tls] partner_cas`, changed since
    /// the server started: this reload does not apply them.
    pub(crate) fn waiting_for_restart(&self) -> &[String] {
        &self.waiting_for_restart
    }

    /// The new server certificate's issuer, when its chain leads to no CA of the bundle
    /// (`ServerTlsMaterial::issuer_outside_bundle`).
    pub(crate) fn issuer_outside_bundle(&self) -> Option<&str> {
        self.issuer_outside_bundle.as_deref()
    }

    /// Writes the CRL file and the access journal, and swaps the new state in; returns
    /// what could not be written, and why ([`commit`]).
    pub(crate) fn install(self, store: &Store) -> Result<Option<String>, TrustError> {
        let building = Building::Reload { served_crl: None };
        let (state, unwritten) = commit(self.built, &self.trust.crl_path, store, building)?;
        self.trust.swap(state);
        Ok(unwritten)
    }
}

/// A certificate presented for revocation, its path verified ([`Trust::presented`]).
pub(crate) struct Presented {
    /// Its serial and issuer, as revocations name it.
    pub(crate) id: CertificateId,
    /// Its issuer's name (RFC 4514): a CA of the bundle or an intermediate CA.
    pub(crate) issuer_name: String,
    /// Its holder's SPIFFE ID, when its CA vouches for it; else empty.
    pub(crate) holder: String,
    /// SHA-256 of its SubjectPublicKeyInfo.
    pub(crate) key_fingerprint: Vec<u8>,
    /// Its path ends at a partner CA: its key is the partner's word alone (a certificate
    /// proves nothing of who holds its key), not to bar other CAs' certificates of it.
    pub(crate) by_partner: bool,
}

/// A PEM reading error in words (its Debug form spells markers as byte lists).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a -----BEGIN line has no -----END line".to_owned(),
        Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed".to_owned(),
        Error::Base64Decode(_) => {
            "a block between its BEGIN and END lines is not base64".to_owned()
        }
        other => format!("{other:?}"),
    }
}

/// Who is revoked, by serial: each serial's issuers (empty: every issuer). A serial is
/// unique per issuer only, so a revocation that names its issuer — every one a CRL
/// carries, and an operator's that names one — leaves another issuer's certificate of
/// the same serial alone.
#[derive(Default)]
struct Revocations(std::collections::HashMap<String, Vec<String>>);

impl Revocations {
    fn add(&mut self, record: &RevokedCertificate) {
        // Stores written before serials had one form may hold `00`-prefixed ones.
        let serial = crate::identity::canonical_serial(&record.serial)
            .unwrap_or_else(|_| record.serial.clone());
        let issuers = self.0.entry(serial).or_default();
        if !issuers.contains(&record.issuer) {
            issuers.push(record.issuer.clone());
        }
    }

    fn covers(&self, certificate: &CertificateId) -> bool {
        self.0.get(&certificate.serial).is_some_and(|issuers| {
            issuers
                .iter()
                .any(|i| i.is_empty() || *i == certificate.issuer)
        })
    }

    /// Whether any certificate of `serial` is revoked (for records that do not name
    /// their issuer).
    fn any_of(&self, serial: &str) -> bool {
        self.0.contains_key(serial)
    }
}

impl<'a> FromIterator<&'a RevokedCertificate> for Revocations {
    fn from_iter<I: IntoIterator<Item = &'a RevokedCertificate>>(records: I) -> Self {
        let mut revocations = Self::default();
        for record in records {
            revocations.add(record);
        }
        revocations
    }
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
        let loaded = Arc::new(Loaded::from_files(&files, ca_key.as_ref())?);
        let built = build(loaded, &crl_path, store, Building::AtStart)?;
        // At start, what cannot be written is an error: nothing is left unwritten.
        let (state, _) = commit(built, &crl_path, store, Building::AtStart)?;
        let config_at_start = files
            .partner_cas_from
            .as_deref()
            .and_then(|path| crate::config::Config::read(path).ok());
        Ok(Self {
            files,
            ca_key,
            crl_path,
            state: RwLock::new(state),
            rebuilding: Mutex::new(()),
            generation: watch::Sender::new(0),
            config_at_start,
            seen_keys: Mutex::default(),
        })
    }

    /// Keeps the key of the client certificate `peer` presented in a handshake; returns
    /// it when it was not held already, for the store to keep too.
    pub(crate) fn saw(&self, peer: &PeerIdentity) -> Option<SeenKey> {
        let leaf = peer.certificates().first()?;
        let mut seen = self
            .seen_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_KNOWN_CHAINS && !seen.contains_key(leaf) {
            seen.clear();
        }
        let key = *peer.key_fingerprint();
        (seen.insert(leaf.clone(), key) != Some(key)).then(|| SeenKey {
            issuer: leaf.issuer.clone(),
            serial: leaf.serial.clone(),
            key,
        })
    }

    /// The keys of the client certificates of `serial` a handshake presented since the
    /// server started — of `issuer` ([`crate::identity::issuer_id`]), or of any issuer
    /// when it is empty.
    pub(crate) fn seen_keys(&self, serial: &str, issuer: &str) -> Vec<[u8; 32]> {
        let seen = self
            .seen_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        seen.iter()
            .filter(|(id, _)| id.serial == serial && (issuer.is_empty() || id.issuer == issuer))
            .map(|(_, key)| *key)
            .collect()
    }

    /// The settings of the configuration file, besides `[tls] partner_cas`, whose values
    /// differ from those it had at start: a reload does not apply them.
    fn waiting_for_restart(&self) -> Vec<String> {
        let (Some(path), Some(at_start)) = (&self.files.partner_cas_from, &self.config_at_start)
        else {
            return Vec::new();
        };
        // Read and checked already: the partner list is taken from it.
        let Ok(now) = crate::config::Config::read(path) else {
            return Vec::new();
        };
        at_start
            .changed_settings(&now)
            .into_iter()
            .filter(|setting| !setting.starts_with("tls.partner_cas"))
            .collect()
    }

    /// Rebuilds the state from the store (after a revocation or a suspension) with the
    /// TLS files as last loaded, and swaps in the result; returns what could not be
    /// written, and why ([`commit`]). On error nothing changes.
    pub(crate) fn refresh(&self, store: &Store) -> Result<Option<String>, TrustError> {
        let _one_at_a_time = self
            .rebuilding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let served = self.crl_pem();
        let building = Building::Again {
            served_crl: served.as_deref(),
        };
        let loaded = self.read().loaded.clone();
        let built = build(loaded, &self.crl_path, store, building)?;
        let (state, unwritten) = commit(built, &self.crl_path, store, building)?;
        self.swap(state);
        Ok(unwritten)
    }

    /// Re-reads the TLS files, the CA key and the CRL file and builds the state they
    /// make, checking everything — a CRL file it cannot read or verify, a CRL TLS cannot
    /// use — before anything is written or recorded ([`Reloading`]).
    pub(crate) fn reload(&self, store: &Store) -> Result<Reloading<'_>, TrustError> {
        let one_at_a_time = self
            .rebuilding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let served = self.crl_pem();
        let loaded = Arc::new(Loaded::from_files(&self.files, self.ca_key.as_ref())?);
        loaded
            .anchors
            .keep_partners(Some(&self.read().loaded.anchors))
            .map_err(|why| TrustError::from(TlsError::Config(why)))?;
        let building = Building::Reload {
            served_crl: served.as_deref(),
        };
        let issuer_outside_bundle = loaded.material.issuer_outside_bundle.clone();
        let bundle_changes = bundle_changes(&self.read().loaded, &loaded);
        let built = build(loaded, &self.crl_path, store, building)?;
        Ok(Reloading {
            trust: self,
            _one_at_a_time: one_at_a_time,
            built,
            waiting_for_restart: self.waiting_for_restart(),
            issuer_outside_bundle,
            bundle_changes,
        })
    }

    fn swap(&self, state: State) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
        self.generation.send_modify(|g| *g += 1);
    }

    /// Takes who is revoked and suspended from the store, leaving the TLS configuration
    /// as it is: a revocation or suspension need not wait for the certificate files or
    /// a writable CRL path.
    pub(crate) fn refresh_access(&self, store: &Store) -> Result<(), TrustError> {
        let _one_at_a_time = self
            .rebuilding
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Access {
            mut revoked,
            compromised_keys,
            suspended,
        } = access(store)?;
        let loaded = self.read().loaded.clone();
        let bundle = (
            loaded.bundle_path.as_path(),
            loaded.material.client_ca.as_slice(),
        );
        if let Ok(crls) = read_crl_file(bundle, &self.crl_path, "the CRL file") {
            for record in crls.iter().flat_map(|crl| &crl.entries) {
                revoked.add(record);
            }
        }
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            state.revoked = revoked;
            state.compromised_keys = compromised_keys;
            state.suspended = suspended;
        }
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Rewrites the access journal beside the CRL file from the store (after a change
    /// that does not rebuild the trust state: a signing key's revocation). A failure is
    /// logged and returned (why): the change is in force and in the store either way.
    pub(crate) fn write_journal(&self, store: &Store) -> Option<String> {
        let e = crate::journal::write(store, &self.crl_path).err()?;
        tracing::error!(error = %e, "the access journal is stale");
        Some(format!("the access journal is stale: {e}"))
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

    /// A certificate an operator presents to revoke it (`pem`: it, then the intermediate
    /// CAs it is presented with), once the path by which a handshake would admit it is
    /// verified (at its notAfter if it has expired, at its notBefore if it is not yet
    /// valid), or why it cannot be revoked this way (a sentence). Its holder is the
    /// principal its SPIFFE ID names in `trust_domain`, when its CA vouches for it.
    pub(crate) fn presented(&self, pem: &str, trust_domain: &str) -> Result<Presented, String> {
        let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the file is not readable PEM: {}", pem_error(&e)))?;
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(
                "the file holds no certificate (-----BEGIN CERTIFICATE-----): give \
                        the certificate to revoke, followed by the intermediate CAs it is \
                        presented with (PEM; `openssl x509 -inform DER -in FILE` converts \
                        DER)"
                    .to_owned(),
            );
        };
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
            format!(
                "the first certificate of the file is not a readable X.509 certificate \
                 (cut short, or another kind of block: {e})"
            )
        })?;
        if let Some(why) = crate::identity::nonconforming_serial(cert.raw_serial()) {
            return Err(format!(
                "the certificate's serial number is {why}: no revocation can name it, and \
                 this server refuses such a certificate at the handshake already"
            ));
        }
        let loaded = self.read().loaded.clone();
        if cert.is_ca() {
            return Err(self.ca_refusal(&cert, loaded.material.client_ca.contains(leaf)));
        }
        let client_auth = cert
            .extended_key_usage()
            .ok()
            .flatten()
            .is_some_and(|eku| eku.value.client_auth || eku.value.any);
        if !client_auth {
            return Err(
                "a handshake would refuse the certificate already: it has no extended key \
                 usage allowing client authentication (clientAuth); nothing to revoke"
                    .to_owned(),
            );
        }
        let validity = cert.validity();
        let at = OffsetDateTime::now_utc().unix_timestamp().clamp(
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(at).unwrap_or(0),
        ));
        let bundle = &loaded.material.client_ca;
        crate::tls::admissible(bundle, leaf, intermediates, at).map_err(|why| match why {
            Inadmissible::Refused(why) => format!(
                "a handshake would refuse the certificate already: {why}; nothing to revoke"
            ),
            Inadmissible::Unchained => format!(
                "the certificate does not chain to a CA of this server's bundle ({}) through \
                 the certificates after it: nothing to revoke, this server refuses it \
                 already. If an intermediate CA issued it, put the intermediate's \
                 certificate after it in the file",
                self.bundle_names()
                    .into_iter()
                    .map(|(_, name, _)| name)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        })?;
        // Whom it names, if its CA may speak for them (a partner CA vouches only for its
        // states' principals).
        let anchors = &loaded.anchors;
        let anchor = crate::tls::verified_path(&anchors.trusted, leaf, intermediates, at)
            .map(|(anchor, _)| anchor);
        let vouched = |principal: &crate::identity::Principal| {
            anchor.is_some_and(|anchor| anchors.vouches(anchor, principal))
        };
        let holder = PeerIdentity::from_certificate(leaf, trust_domain)
            .ok()
            .map(|peer| peer.principal().clone())
            .filter(|principal| vouched(principal))
            .map(|principal| principal.spiffe_id())
            .unwrap_or_default();
        Ok(Presented {
            id: CertificateId::of(&cert),
            issuer_name: crate::dn::to_rfc4514(cert.issuer()),
            holder,
            key_fingerprint: ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw)
                .as_ref()
                .to_vec(),
            by_partner: anchor
                .is_some_and(|anchor| matches!(anchors.partner_states.get(anchor), Some(Some(_)))),
        })
    }

    /// Why the CA certificate `cert` is not revoked by presenting it (`in_bundle`: it
    /// is a CA of the bundle), and what to do instead.
    fn ca_refusal(
        &self,
        cert: &x509_parser::certificate::X509Certificate<'_>,
        in_bundle: bool,
    ) -> String {
        let serial = crate::identity::serial_hex(cert.raw_serial());
        let issuer = crate::dn::to_rfc4514(cert.issuer());
        if in_bundle {
            "the certificate is a CA certificate of this server's bundle, which no CRL \
             of this exchange revokes: take it out of the bundle (its CA file) and run \
             `tidemark admin reload-tls`"
                .to_owned()
        } else if self.bundle_ca_named(&issuer).is_ok() {
            format!(
                "the certificate is a CA certificate (serial {serial}), not a client's: \
                 to revoke this intermediate CA, and with it every certificate it issued, \
                 run `tidemark admin revoke {serial} --issuer '{issuer}'`; to revoke a \
                 client's certificate, put it first in the file"
            )
        } else {
            format!(
                "the certificate is a CA certificate (serial {serial}), not a client's, \
                 and its issuer {issuer} is not a CA of the bundle, so no revocation can \
                 name it: revoke the intermediate CA above it (which ends the rights of \
                 every certificate under it), or the client certificates under it one by \
                 one with --certificate; to revoke a client's certificate, put it first \
                 in the file"
            )
        }
    }

    /// Whose certificate `serial` (canonical) of `issuer` (an issuer id; empty: any) is,
    /// if it is one the exchange itself stands on: the server's, or a CA's of the bundle.
    pub(crate) fn own_certificate(&self, serial: &str, issuer: &str) -> Option<&'static str> {
        let named = |cert: &CertificateDer<'_>| {
            x509_parser::parse_x509_certificate(cert).is_ok_and(|(_, cert)| {
                let id = CertificateId::of(&cert);
                id.serial == serial && (issuer.is_empty() || id.issuer == issuer)
            })
        };
        let loaded = self.read().loaded.clone();
        if loaded.material.cert_chain.first().is_some_and(named) {
            return Some("the server's own certificate (server.pem)");
        }
        loaded
            .material
            .client_ca
            .iter()
            .any(named)
            .then_some("a CA certificate of the bundle (ca.pem)")
    }

    /// The CA of the bundle named `name` (RFC 4514, as `whoami` and `openssl x509
    /// -nameopt rfc2253` write it; compared as [`crate::dn::NameKey`] compares): its
    /// issuer id and name, or why there is none.
    pub(crate) fn bundle_ca_named(&self, name: &str) -> Result<(String, String), String> {
        let names = self.bundle_names();
        // Each as it is written (a `;` in a value is escaped), to be copied as it is.
        let listed = || {
            names
                .iter()
                .map(|(_, n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        let key = crate::dn::NameKey::parse(name).map_err(|why| {
            format!(
                "{name:?} is not a name as RFC 4514 writes it ({why}); the bundle's CAs are: {}",
                listed()
            )
        })?;
        let found: Vec<&(String, String, crate::dn::NameKey)> =
            names.iter().filter(|(_, _, k)| *k == key).collect();
        match found.as_slice() {
            [(id, name, _)] => Ok((id.clone(), name.clone())),
            [] => Err(format!(
                "no CA of the bundle is named {name:?}; its CAs are: {}. A certificate issued \
                 by an intermediate CA that is not in the bundle is revoked by presenting \
                 it (`tidemark admin revoke --certificate FILE`, the file holding it and the \
                 intermediate CA), or by revoking that intermediate CA, which ends the \
                 rights of every certificate it issued (`tidemark whoami` with the \
                 certificate shows it: 'issued via', with its serial and issuer)",
                listed()
            )),
            more => Err(format!(
                "{} CAs of the bundle are named {name:?}: their names differ only in case or \
                 encoding, so no name tells them apart; take all but one out of the bundle",
                more.len()
            )),
        }
    }

    /// Each CA of the bundle: its issuer id, its name (RFC 4514) and how that compares.
    pub(crate) fn bundle_names(&self) -> Vec<(String, String, crate::dn::NameKey)> {
        self.read()
            .loaded
            .material
            .client_ca
            .iter()
            .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, cert)| {
                (
                    crate::identity::issuer_id(cert.subject().as_raw()),
                    crate::dn::to_rfc4514(cert.subject()),
                    crate::dn::NameKey::of(cert.subject()),
                )
            })
            .collect()
    }

    /// The configuration for the next handshake.
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.read().tls.clone()
    }

    /// The partner CAs in force, each as `NAME (STATE …)`: what a reload's audit record
    /// names, so that who may vouch for whom is on the record.
    pub(crate) fn partners(&self) -> Vec<String> {
        let state = self.read();
        let anchors = &state.loaded.anchors;
        anchors
            .names
            .iter()
            .zip(&anchors.partner_states)
            .filter_map(|(name, states)| {
                states
                    .as_ref()
                    .map(|states| format!("{name} ({})", states.join(" ")))
            })
            .collect()
    }

    /// What `whoami` shows of `peer`'s chain ([`ShownChain`]), so that an operator can
    /// name the CA that issued a certificate; `None` when no path verifies. Remembered
    /// per chain until the trust state changes.
    pub(crate) fn verified_chain(&self, peer: &PeerIdentity) -> Option<Arc<ShownChain>> {
        let state = self.read();
        remembered(&state.chains.shown, peer.chain_key(), || {
            Self::show(&state.loaded.anchors, peer.chain()).map(Arc::new)
        })
    }

    fn show(anchors: &Anchors, chain: &[CertificateDer<'static>]) -> Option<ShownChain> {
        let (leaf, intermediates) = chain.split_first()?;
        let (anchor, path) =
            crate::tls::verified_path(&anchors.trusted, leaf, intermediates, UnixTime::now())?;
        let intermediates = path
            .iter()
            .filter_map(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
                Some(crate::pb::ChainCertificate {
                    subject: crate::dn::to_rfc4514(cert.subject()),
                    serial: crate::identity::serial_hex(cert.raw_serial()),
                    issuer: crate::dn::to_rfc4514(cert.issuer()),
                })
            })
            .collect();
        Some(ShownChain {
            anchor: anchors.names.get(anchor)?.clone(),
            vouches_for: anchors
                .partner_states
                .get(anchor)
                .cloned()
                .flatten()
                .unwrap_or_default(),
            intermediates,
        })
    }

    /// Whether `chain` (DER, leaf first) verifies through a partner CA that does not
    /// vouch for `principal`: a partner CA speaks only for the nodes and analysts of its
    /// states (`[tls] partner_cas`). Decided on the path webpki verifies, never on the
    /// certificates presented ([`crate::tls::verified_path`]); remembered per chain until
    /// the trust state changes. A chain with no verified path is refused (it does not
    /// chain to the bundle at all, which the caller refuses first).
    pub(crate) fn partner_refuses(&self, peer: &PeerIdentity) -> bool {
        let (chain, principal) = (peer.chain(), peer.principal());
        let state = self.read();
        let anchors = &state.loaded.anchors;
        if anchors.partner_states.iter().all(Option::is_none) {
            return false;
        }
        let Some((leaf, intermediates)) = chain.split_first() else {
            return true;
        };
        let anchor = remembered(&state.chains.anchors, peer.chain_key(), || {
            crate::tls::verified_path(&anchors.trusted, leaf, intermediates, UnixTime::now())
                .map(|(anchor, _)| anchor)
        });
        anchor.is_none_or(|anchor| !anchors.vouches(anchor, principal))
    }

    /// Whether a certificate of `chain` (by issuer and serial, leaf first, as
    /// [`crate::identity::PeerIdentity::certificates`] holds it) is revoked: the leaf, or
    /// an intermediate CA whose certificates' rights end with it. A set lookup per
    /// certificate: it runs before every item a stream sends.
    pub(crate) fn revokes(&self, chain: &[CertificateId]) -> bool {
        let state = self.read();
        chain.iter().any(|c| state.revoked.covers(c))
    }

    /// Whether the issued certificate `record` is revoked (for one whose record does not
    /// name its issuer: whether any certificate of its serial is).
    pub(crate) fn is_issued_revoked(&self, record: &IssuedCertificate) -> bool {
        let state = self.read();
        record.id().map_or_else(
            || state.revoked.any_of(&record.serial),
            |id| state.revoked.covers(&id),
        )
    }

    /// Whether the issued certificate `record` is still admitted: not revoked, and its
    /// key not reported compromised.
    pub(crate) fn is_issued_live(&self, record: &IssuedCertificate) -> bool {
        !self.is_issued_revoked(record) && self.compromised_key(&record.key_fingerprint).is_none()
    }

    /// The serial whose revocation reports this key (SHA-256 of its SubjectPublicKeyInfo)
    /// compromised, if one does: no certificate of the key is admitted.
    pub(crate) fn compromised_key(&self, fingerprint: &[u8]) -> Option<String> {
        self.read().compromised_keys.get(fingerprint).cloned()
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
        self.read().loaded.ca.clone()
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

/// The CRL entries of `revoked`: one per serial (a serial revoked for this CA and for
/// every CA alike is listed once), at its first revocation, with the reason
/// keyCompromise if any of its revocations says so, else the first's.
fn crl_entries<'a>(revoked: impl Iterator<Item = &'a RevokedCertificate>) -> Vec<RevokedEntry> {
    let mut by_serial: std::collections::BTreeMap<&str, &RevokedCertificate> =
        std::collections::BTreeMap::new();
    let mut compromised = std::collections::HashSet::new();
    for r in revoked {
        if r.compromised() {
            compromised.insert(r.serial.as_str());
        }
        by_serial
            .entry(r.serial.as_str())
            .and_modify(|first| {
                if r.revoked_at < first.revoked_at {
                    *first = r;
                }
            })
            .or_insert(r);
    }
    by_serial
        .into_values()
        .map(|r| RevokedEntry {
            serial: r.serial.clone(),
            // A time no server writes (at or before 1970) would make a CRL that
            // TLS cannot parse, and no server could start: now instead.
            revoked_at: OffsetDateTime::from_unix_timestamp(r.revoked_at)
                .ok()
                .filter(|_| r.revoked_at > 0)
                .unwrap_or_else(OffsetDateTime::now_utc),
            reason: if compromised.contains(r.serial.as_str()) {
                pki::RevocationReason::KeyCompromise
            } else {
                pki::parse_reason(&r.reason_name).unwrap_or(pki::RevocationReason::Unspecified)
            },
        })
        .collect()
}

/// Whether the trust state is built at start, on an operator's reload, or again after
/// a revocation or suspension (with the CRL it serves now, if it signs one). At start
/// and on a reload a CRL file that cannot be read or verified is refused; at start, so
/// is a file that cannot be written.
#[derive(Clone, Copy)]
enum Building<'a> {
    AtStart,
    Reload { served_crl: Option<&'a str> },
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
        Building::Again { served_crl } | Building::Reload { served_crl } => {
            served_crl.and_then(crl_number)
        }
        Building::AtStart => None,
    };
    // Every CRL of the file: another CA's greater number only makes ours greater.
    let file = crate::files::read_bytes(path).unwrap_or_default();
    let in_file = CertificateRevocationListDer::pem_slice_iter(&file)
        .filter_map(|der| {
            let der = der.ok()?;
            let (_, crl) = x509_parser::parse_x509_crl(der.as_ref()).ok()?;
            crl.crl_number().cloned()
        })
        .max();
    let last = [in_file, served].into_iter().flatten().max();
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

/// The trust state from the TLS files as `loaded` and the store, built and checked —
/// its TLS configuration made with every CRL — before anything is written ([`commit`]).
/// A CRL file that cannot be read or verified fails the build at start and on a reload;
/// after a revocation it is logged and left as it is, the revocations taken from the
/// store.
fn build(
    loaded: Arc<Loaded>,
    crl_path: &std::path::Path,
    store: &Store,
    building: Building<'_>,
) -> Result<Built, TrustError> {
    let mut revoked_records = store.revoked_certificates()?;
    // What the CRL file lists and the store does not — written by another server of this
    // exchange, or published by an offline or outside CA and re-read on reload — is
    // enforced and kept: the file never loses an entry.
    let bundle = (
        loaded.bundle_path.as_path(),
        loaded.material.client_ca.as_slice(),
    );
    let mut crl_file_unread = None;
    let (file_crls, file_readable) = match read_crl_file(bundle, crl_path, "the CRL file") {
        Ok(crls) => (crls, true),
        Err(e) if !matches!(building, Building::Again { .. }) => return Err(e),
        Err(e) => {
            tracing::error!(error = %e, "the CRL file is left as it is; revocations are taken from the store only");
            crl_file_unread = Some(format!("{e}; it is left as it is"));
            (Vec::new(), false)
        }
    };
    let mut known: HashSet<String> = revoked_records
        .iter()
        .map(RevokedCertificate::key)
        .collect();
    let carried: Vec<RevokedCertificate> = file_crls
        .iter()
        .flat_map(|crl| &crl.entries)
        .filter(|r| !r.covered_by(&known) && known.insert(r.key()))
        .cloned()
        .collect();
    revoked_records.extend(carried.iter().cloned());
    let ours = loaded.ca.as_deref().map(ca_issuer).transpose()?;
    // The other CAs' CRLs (the newest of each), kept in the file and enforced at the
    // handshake as they are: this server signs only its own CA's.
    let others = newest_of_each_issuer(&file_crls, ours.as_deref());
    let crl_pem = match &loaded.ca {
        None => None,
        Some(ca) => Some(sign_crl(
            ca,
            (&revoked_records, ours.as_deref()),
            crl_path,
            building,
        )?),
    };
    let crl_file = crl_pem.as_deref().filter(|_| file_readable).map(|pem| {
        std::iter::once(pem)
            .chain(others.iter().map(|crl| crl.pem.as_str()))
            .collect()
    });
    let mut crls: Vec<CertificateRevocationListDer<'static>> =
        others.iter().map(|crl| crl.der.clone()).collect();
    if let Some(pem) = &crl_pem {
        crls.insert(
            0,
            CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| TrustError::Write("CRL".to_owned(), e.to_string()))?,
        );
    }
    let material = &loaded.material;
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
    let Access {
        mut revoked,
        compromised_keys,
        suspended,
    } = access(store)?;
    for record in &carried {
        revoked.add(record);
    }
    let state = State {
        tls,
        chains: Chains {
            verifier: material.chain_verifier()?,
            known: Mutex::default(),
            anchors: Mutex::default(),
            shown: Mutex::default(),
        },
        server_serial,
        server_not_after,
        loaded,
        crl_pem,
        revoked,
        compromised_keys,
        suspended,
    };
    Ok(Built {
        state,
        crl_file,
        crl_file_unread,
        carried,
    })
}

/// Writes what `built` holds to be written — the CRL file, and the access journal
/// beside it (suspensions and signing-key revocations, which a CRL cannot carry) — and
/// gives its state. At start a failure to write is fatal; later it is logged and given
/// back with the state (what was not written, and why), and the new state is served
/// and enforced from memory all the same, so a revocation never waits for a writable
/// CRL path.
fn commit(
    built: Built,
    crl_path: &std::path::Path,
    store: &Store,
    building: Building<'_>,
) -> Result<(State, Option<String>), TrustError> {
    let at_start = matches!(building, Building::AtStart);
    let mut unwritten: Vec<String> = built.crl_file_unread.into_iter().collect();
    if let Some(text) = &built.crl_file {
        let written = crate::files::replace(crl_path, text.as_bytes()).map_err(|e| {
            TrustError::Write(
                format!("writing the CRL to {} ([tls] crl)", crl_path.display()),
                format!("{e}; the server writes it at start and on each revocation, so put it where the server may write (e.g. the data directory)"),
            )
        });
        match written {
            Err(e) if at_start => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "the new CRL is served and enforced, but its file is stale");
                unwritten.push(format!(
                    "{e} (the CRL file is stale until that is fixed: the next change or start \
                     writes it again)"
                ));
            }
            Ok(()) => {}
        }
    }
    match crate::journal::write(store, crl_path) {
        Err(e) if at_start => return Err(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "the access journal is stale");
            unwritten.push(format!(
                "the access journal is stale: {e} (a store restored from an older backup would \
                 not get this change back from it until that is fixed: the next change or start \
                 writes it again)"
            ));
        }
        Ok(()) => {}
    }
    let unwritten = (!unwritten.is_empty()).then(|| unwritten.join("; "));
    Ok((built.state, unwritten))
}

/// Signs this server's CRL: the revocations of `revoked` of the CA `ours` and those
/// naming no issuer, numbered above every CRL before it.
fn sign_crl(
    ca: &CertificateAuthority,
    (revoked, ours): (&[RevokedCertificate], Option<&str>),
    crl_path: &std::path::Path,
    building: Building<'_>,
) -> Result<String, TrustError> {
    let entries = crl_entries(
        revoked
            .iter()
            .filter(|r| r.issuer.is_empty() || ours == Some(r.issuer.as_str())),
    );
    Ok(ca.crl_numbered(
        &entries,
        &next_crl_number(crl_path, building),
        CRL_VALID_DAYS,
    )?)
}

/// One CRL of the CRL file, checked against the CA bundle.
struct FileCrl {
    /// PEM, as this server writes it back.
    pem: String,
    der: CertificateRevocationListDer<'static>,
    /// Its issuer ([`crate::identity::issuer_id`]).
    issuer: String,
    number: Option<x509_parser::num_bigint::BigUint>,
    /// What it revokes: certificates of its issuer only.
    entries: Vec<RevokedCertificate>,
}

/// The revocations the CRL file at `crl_path` lists (none if there is no file), once
/// each CRL in it is checked against the CAs of the bundle `ca`: what a store restored
/// from a backup must not forget ([`Store::record_start`] carries over those it lacks).
/// Each revokes the certificates of its CRL's issuer only.
pub(crate) fn crl_file_revocations(
    ca: &std::path::Path,
    crl_path: &std::path::Path,
    revoked_by: &str,
) -> Result<Vec<RevokedCertificate>, TrustError> {
    let bundle = crate::tls::read_certs(ca)?;
    Ok(read_crl_file((ca, &bundle), crl_path, revoked_by)?
        .into_iter()
        .flat_map(|crl| crl.entries)
        .collect())
}

/// Every CRL of the file at `crl_path` (none if there is no file), each signed by the
/// CA of the bundle `ca` that it names as its issuer — a CA's key cannot speak for
/// another CA's certificates, which share serials with its own —, its entries as made by
/// `revoked_by`. A file that cannot be read, parsed or verified is refused rather than
/// overwritten, so that no revocation is lost without the operator seeing it.
fn read_crl_file(
    (ca, bundle): (&std::path::Path, &[CertificateDer<'static>]),
    crl_path: &std::path::Path,
    revoked_by: &str,
) -> Result<Vec<FileCrl>, TrustError> {
    let refused = |why: String| {
        TrustError::Write(
            format!("the CRL file {} ([tls] crl)", crl_path.display()),
            format!(
                "{why}; the server enforces and keeps the revocations it lists, so it neither \
                 starts nor reloads over a CRL it cannot verify or use (nothing was changed): \
                 put back the file it last wrote, or take out or replace the CRL at fault \
                 (revocations a start or reload has read from it are in the store already; \
                 those only it lists are lost with it)"
            ),
        )
    };
    // Past a byte-order mark, as every file Tidemark reads.
    let bytes = match crate::files::read_bytes(crl_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(refused(format!("cannot be read ({e})"))),
    };
    let mut crls = Vec::new();
    for (place, der) in CertificateRevocationListDer::pem_slice_iter(&bytes).enumerate() {
        let which = format!("CRL {} of the file", place + 1);
        let der = der.map_err(|e| refused(format!("{which} is not PEM ({e})")))?;
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
            .map_err(|e| refused(format!("{which} is not an X.509 CRL ({e})")))?;
        // What webpki cannot use would stop every handshake's configuration: named here.
        for extension in crl.extensions() {
            let unusable = match extension.oid.to_id_string().as_str() {
                "2.5.29.27" => Some("a delta CRL (deltaCRLIndicator)"),
                "2.5.29.28" => Some("a partitioned CRL (issuingDistributionPoint)"),
                _ => None,
            };
            if let Some(what) = unusable {
                return Err(refused(format!(
                    "{which} is {what}, which this server does not read: remove it, and put \
                     that CA's full CRL there instead"
                )));
            }
        }
        let issuer_name = crate::dn::to_rfc4514(crl.issuer());
        let named: Vec<_> = bundle
            .iter()
            .filter_map(|cert| x509_parser::parse_x509_certificate(cert.as_ref()).ok())
            .filter(|(_, cert)| cert.subject().as_raw() == crl.issuer().as_raw())
            .collect();
        if named.is_empty() {
            // Names are compared as DER, as TLS verifiers match a CRL to its CA.
            let reads_alike = bundle
                .iter()
                .filter_map(|cert| x509_parser::parse_x509_certificate(cert.as_ref()).ok())
                .any(|(_, cert)| {
                    crate::dn::NameKey::of(cert.subject()) == crate::dn::NameKey::of(crl.issuer())
                });
            let encoding = if reads_alike {
                " (a CA of the bundle reads the same, but its name is encoded otherwise: the \
                 CRL must name its issuer exactly as the CA's certificate does)"
            } else {
                " (if that CA was taken out of the bundle, take its CRL out of the file too)"
            };
            return Err(refused(format!(
                "{which} is issued by {issuer_name}, which is no CA of {} ([tls] \
                 ca){encoding}",
                ca.display()
            )));
        }
        if !named
            .iter()
            .any(|(_, cert)| crl.verify_signature(cert.public_key()).is_ok())
        {
            return Err(refused(format!(
                "{which} names {issuer_name} as its issuer but is not signed by that CA's key \
                 in {} ([tls] ca)",
                ca.display()
            )));
        }
        let issuer = crate::identity::issuer_id(crl.issuer().as_raw());
        let entries = crl
            .iter_revoked_certificates()
            .map(|entry| {
                let name = pki::reason_name(entry.reason_code().map_or(0, |(_, code)| code.0));
                RevokedCertificate {
                    serial: crate::identity::serial_hex(entry.raw_serial()),
                    reason: pki::parse_reason(name).map_or(0, |r| r as u32),
                    reason_name: name.to_owned(),
                    revoked_at: entry.revocation_date.timestamp(),
                    revoked_by: revoked_by.to_owned(),
                    issuer: issuer.clone(),
                    issuer_name: issuer_name.clone(),
                    // Neither holder nor key: a CRL names neither.
                    ..RevokedCertificate::default()
                }
            })
            .collect();
        crls.push(FileCrl {
            pem: crate::signing::pem_encode("X509 CRL", der.as_ref()),
            number: crl.crl_number().cloned(),
            issuer,
            entries,
            der,
        });
    }
    if crls.is_empty() {
        return Err(refused("holds no PEM X509 CRL".to_owned()));
    }
    Ok(crls)
}

/// Of `crls`, the one with the greatest number of each issuer but `ours`, in the order
/// the file has them.
fn newest_of_each_issuer<'a>(crls: &'a [FileCrl], ours: Option<&str>) -> Vec<&'a FileCrl> {
    let mut newest: std::collections::HashMap<&str, &FileCrl> = std::collections::HashMap::new();
    for crl in crls.iter().filter(|crl| Some(crl.issuer.as_str()) != ours) {
        let slot = newest.entry(crl.issuer.as_str()).or_insert(crl);
        if crl.number > slot.number {
            *slot = crl;
        }
    }
    crls.iter()
        .filter(|crl| {
            newest
                .get(crl.issuer.as_str())
                .is_some_and(|kept| std::ptr::eq(*kept, *crl))
        })
        .collect()
}

/// The issuer id of the certificates `ca` issues.
fn ca_issuer(ca: &CertificateAuthority) -> Result<String, TrustError> {
    let der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
        .map_err(|e| TrustError::Write("the CA certificate".to_owned(), e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| TrustError::Write("the CA certificate".to_owned(), e.to_string()))?;
    Ok(crate::identity::issuer_id(cert.subject().as_raw()))
}

/// The revocations and the suspended states, as the store holds them.
fn access(store: &Store) -> Result<Access, TrustError> {
    let revoked = store.revoked_certificates()?.iter().collect();
    let suspended = store
        .states()?
        .into_iter()
        .filter(|s| s.suspended)
        .map(|s| s.state)
        .collect();
    Ok(Access {
        revoked,
        compromised_keys: store.compromised_keys()?,
        suspended,
    })
}

/// What the store says of who may call: revoked certificates, keys reported
/// compromised, suspended states.
struct Access {
    revoked: Revocations,
    compromised_keys: std::collections::HashMap<Vec<u8>, String>,
    suspended: HashSet<String>,
}

/// Checks that the CA key file, if there is one, is readable and matches a CA of the
/// bundle: at start, before the store is opened (or made).
pub(crate) fn check_ca_key(
    bundle: &std::path::Path,
    key_path: Option<&PathBuf>,
) -> Result<(), TrustError> {
    match configured(key_path) {
        Some(path) => load_ca(bundle, path).map(drop),
        None => Ok(()),
    }
}

/// The CA key file `[tls] ca_key` names; none for `ca_key = ""` (a CA kept offline).
fn configured(key_path: Option<&PathBuf>) -> Option<&PathBuf> {
    key_path.filter(|p| !p.as_os_str().is_empty())
}

/// The CA certificate in the bundle whose public key matches the key file.
fn load_ca(
    bundle: &std::path::Path,
    key_path: &std::path::Path,
) -> Result<CertificateAuthority, TrustError> {
    let key_pem = crate::files::read_text(key_path).map_err(|e| {
        let said = if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist: put the exchange CA's key there, or set ca_key = \"\" to keep \
             the CA offline (the server then issues no certificates and signs no CRL)"
                .to_owned()
        } else {
            e.to_string()
        };
        TrustError::Write(
            format!("the CA key {} ([tls] ca_key)", key_path.display()),
            said,
        )
    })?;
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
