//! Revocation names a certificate by issuer and serial (RFC 5280 §5.1.2.1, §5.3.3): with
//! a partner CA in the bundle whose serials are small and sequential, one CA's
//! revocation — an operator's naming its issuer, or the CA's own CRL — leaves the other
//! CA's certificate of the same serial alone; a revoked intermediate CA ends its
//! certificates' rights, on new and open connections; a certificate whose serial breaks
//! RFC 5280 §4.1.2.2 is refused at the handshake; with the CA offline no stale CRL is
//! served; and a revocation says when the CRL file could not take it.

mod common;

use common::{TRUST_DOMAIN, TestPki, TestServer, ends_unauthenticated, operator, state};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use tidemark::{
    client::{self, ClientIdentity},
    identity::{Principal, Role},
    pb,
};
use tonic::Code;

/// A CA: its certificate (PEM), its subject as RFC 4514 writes it, and what signs.
struct Ca {
    pem: String,
    name: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A CA made outside Tidemark, as a partner's would be.
fn outside_ca(common_name: &str) -> Ca {
    let mut name = rcgen::DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    outside_ca_named(name)
}

/// [`outside_ca`] with this name.
fn outside_ca_named(name: rcgen::DistinguishedName) -> Ca {
    outside_ca_with_key(name, KeyPair::generate().unwrap())
}

/// [`outside_ca`] with this name and key.
fn outside_ca_with_key(name: rcgen::DistinguishedName, key: KeyPair) -> Ca {
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        name: subject(&pem),
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// The test exchange's own CA, to issue with a chosen serial.
fn own_ca(pki: &TestPki) -> Ca {
    let key = KeyPair::from_pem(&pki.ca.key_pem()).unwrap();
    Ca {
        pem: pki.ca.cert_pem().to_owned(),
        name: subject(pki.ca.cert_pem()),
        issuer: Issuer::from_ca_cert_pem(pki.ca.cert_pem(), key).unwrap(),
    }
}

/// The subject of a PEM certificate, to make another certificate of the same name.
fn subject_dn(pem: &str) -> rcgen::DistinguishedName {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = pem.parse_x509().unwrap();
    let mut name = rcgen::DistinguishedName::new();
    for attribute in cert.subject().iter_attributes() {
        let oid: Vec<u64> = attribute.attr_type().iter().unwrap().collect();
        name.push(DnType::from_oid(&oid), attribute.as_str().unwrap());
    }
    name
}

/// The subject of a PEM certificate as RFC 4514 (and `openssl -nameopt rfc2253`)
/// writes it: most specific first (x509-parser writes DER order; the test names hold no
/// ", ").
fn subject(pem: &str) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let der_order = pem.parse_x509().unwrap().subject().to_string();
    let mut parts: Vec<&str> = der_order.split(", ").collect();
    parts.reverse();
    parts.join(",")
}

/// A node certificate of `code` issued by `ca` with this serial.
fn node_with_serial(pki: &TestPki, ca: &Ca, code: &str, serial: &[u8]) -> ClientIdentity {
    let (cert, key) = node_cert(ca, code, serial);
    ClientIdentity::from_pem(cert, key, pki.ca.cert_pem().to_owned())
}

/// A node certificate of `code` issued by `ca` with this serial, and its key (PEM).
fn node_cert(ca: &Ca, code: &str, serial: &[u8]) -> (String, String) {
    certificate_of(ca, Role::Node(state(code)), serial)
}

/// A certificate of a principal of `role` issued by `ca` with this serial, and its key.
fn certificate_of(ca: &Ca, role: Role, serial: &[u8]) -> (String, String) {
    certificate_made(ca, role, serial, |_| {})
}

/// [`certificate_of`], its parameters changed by `change` before it is signed.
fn certificate_made(
    ca: &Ca,
    role: Role,
    serial: &[u8],
    change: impl FnOnce(&mut CertificateParams),
) -> (String, String) {
    let principal = Principal::new(TRUST_DOMAIN, role, "edge").unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "edge");
    params.subject_alt_names = vec![SanType::URI(principal.spiffe_id().try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(SerialNumber::from_slice(serial));
    change(&mut params);
    let key = KeyPair::generate().unwrap();
    let pem = params.signed_by(&key, &ca.issuer).unwrap().pem();
    (pem, key.serialize_pem())
}

/// A CRL of `ca` listing `serials`, PEM.
fn crl(ca: &Issuer<'_, KeyPair>, number: u8, serials: &[&[u8]]) -> String {
    crl_of_scope(ca, number, serials, None)
}

/// [`crl`], partitioned by an issuing distribution point when one is given.
fn crl_of_scope(
    ca: &Issuer<'_, KeyPair>,
    number: u8,
    serials: &[&[u8]],
    issuing_distribution_point: Option<rcgen::CrlIssuingDistributionPoint>,
) -> String {
    let now = time::OffsetDateTime::now_utc();
    CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(5),
        next_update: now + time::Duration::days(7),
        crl_number: SerialNumber::from_slice(&[number]),
        issuing_distribution_point,
        revoked_certs: serials
            .iter()
            .map(|serial| rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: now - time::Duration::minutes(1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(ca)
    .unwrap()
    .pem()
    .unwrap()
}

/// Whether `identity` is admitted on a new connection.
async fn admitted(server: &TestServer, identity: &ClientIdentity) -> bool {
    match client::connect(&server.endpoint(), identity).await {
        Ok(channel) => pb::exchange_client::ExchangeClient::new(channel)
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .is_ok(),
        Err(_) => false,
    }
}

/// A reload that succeeds, and its answer.
async fn reload_ok(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
) -> pb::ReloadTlsResponse {
    admin
        .reload_tls(pb::ReloadTlsRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The serials a PEM CRL lists.
fn listed(crl_pem: &str) -> Vec<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(crl_pem.as_bytes()).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&pem.contents).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| tidemark::identity::serial_hex(r.raw_serial()))
        .collect()
}

/// An exchange whose bundle holds its own CA and a partner CA.
async fn with_a_partner_ca() -> (TestPki, TestServer, Ca, Ca) {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let ours = own_ca(&pki);
    let partner = outside_ca("Partner CA");
    std::fs::write(
        pki.dir.path().join("ca.pem"),
        format!("{}{}", ours.pem, partner.pem),
    )
    .unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    (pki, server, ours, partner)
}

/// An exchange whose bundle holds its own CA and a partner CA that `[tls] partner_cas`
/// lists for IDN: the exchange's CA, the partner's, and the server.
async fn with_a_partner_listed_for_idn(pki: &TestPki) -> (Ca, Ca, TestServer) {
    let (ours, partner) = (own_ca(pki), outside_ca("Partner CA"));
    std::fs::write(
        pki.dir.path().join("ca.pem"),
        format!("{}{}", ours.pem, partner.pem),
    )
    .unwrap();
    let name = partner.name.clone();
    let server = TestServer::start_with(pki, tempfile::TempDir::new().unwrap(), |config| {
        config.tls.partner_cas.insert(name, vec!["IDN".into()]);
    })
    .await;
    (ours, partner, server)
}

/// The CRL the server publishes (GetCrl), PEM.
async fn published_crl(pki: &TestPki, exchange: &TestServer) -> String {
    let channel = client::connect(&exchange.endpoint(), &common::node(pki, "AUS"))
        .await
        .unwrap();
    pb::exchange_client::ExchangeClient::new(channel)
        .get_crl(pb::GetCrlRequest {})
        .await
        .unwrap()
        .into_inner()
        .crl_pem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_revocation_naming_its_issuer_leaves_another_cas_serial_alone() {
    let (pki, server, ours, partner) = with_a_partner_ca().await;
    let [aus7, idn7] = [(&ours, "AUS"), (&partner, "IDN")]
        .map(|(ca, code)| node_with_serial(&pki, ca, code, &[7]));
    assert!(admitted(&server, &aus7).await && admitted(&server, &idn7).await);
    // Its 07 alone is revoked, on an open connection too; the issuer is named as
    // WhoAmI shows it.
    let channel = client::connect(&server.endpoint(), &idn7).await.unwrap();
    let me = pb::exchange_client::ExchangeClient::new(channel.clone())
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.certificate_issuer, partner.name);
    let mut watch = common::exchange_health_watch(channel).await;
    assert!(watch.message().await.unwrap().is_some(), "the watch runs");
    let mut admin = server.admin(&operator(&pki)).await;
    let revoked = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "07".into(),
            reason: "key-compromise".into(),
            issuer: me.certificate_issuer,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (revoked.issuer.as_str(), revoked.every_issuer),
        (partner.name.as_str(), false)
    );
    ends_unauthenticated(&mut watch).await;
    assert!(!admitted(&server, &idn7).await);
    assert!(
        admitted(&server, &aus7).await,
        "our CA's 07 is not the partner's"
    );
    assert!(
        !listed(&published_crl(&pki, &server).await).contains(&"07".to_owned()),
        "our CA's CRL speaks for our CA's certificates only"
    );
    // So after a restart too.
    let data = server.stop().await;
    let server = TestServer::start_with(&pki, data, |_| {}).await;
    assert!(!admitted(&server, &idn7).await && admitted(&server, &aus7).await);
    // Without an issuer, a serial this server did not issue is revoked for every CA of
    // the bundle, and the answer says so.
    let mut admin = server.admin(&operator(&pki)).await;
    let every = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "07".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(every.every_issuer && every.issuer.is_empty(), "{every:?}");
    assert!(!admitted(&server, &aus7).await);
    // An issuer not in the bundle is refused, naming those that are.
    let unknown = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "09".into(),
            issuer: "CN=Nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    assert!(unknown.message().contains(&partner.name), "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_own_crl_revokes_its_own_certificates_only_and_is_kept() {
    let (pki, server, ours, partner) = with_a_partner_ca().await;
    let [aus8, idn8] = [(&ours, "AUS"), (&partner, "IDN")]
        .map(|(ca, code)| node_with_serial(&pki, ca, code, &[8]));
    // The partner's CRL, put beside ours: its 08 alone is revoked, the file keeps it
    // through the server's next rewrite, and ours does not take its entries over.
    let crl_path = pki.dir.path().join("crl.pem");
    let ours_before = std::fs::read_to_string(&crl_path).unwrap();
    std::fs::write(
        &crl_path,
        format!("{ours_before}{}", crl(&partner.issuer, 1, &[&[8]])),
    )
    .unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    assert!(!admitted(&server, &idn8).await);
    assert!(
        admitted(&server, &aus8).await,
        "our CA's 08 is not the partner's"
    );
    admin
        .suspend_state(pb::StateRequest {
            state: "NZL".into(),
        })
        .await
        .unwrap();
    let file = std::fs::read_to_string(&crl_path).unwrap();
    assert_eq!(file.matches("BEGIN X509 CRL").count(), 2, "{file}");
    assert!(!listed(&published_crl(&pki, &server).await).contains(&"08".to_owned()));
    let data = server.stop().await;
    let server = TestServer::start_with(&pki, data, |_| {}).await;
    assert!(!admitted(&server, &idn8).await && admitted(&server, &aus8).await);

    // A CRL that names the partner as its issuer but is signed by another key revokes
    // nothing: the reload is refused, saying why.
    let impostor = Issuer::new(
        {
            let mut params = CertificateParams::default();
            params
                .distinguished_name
                .push(DnType::CommonName, "Partner CA");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
        },
        KeyPair::generate().unwrap(),
    );
    std::fs::write(&crl_path, crl(&impostor, 9, &[&[8]])).unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("is not signed by that CA's key"),
        "{refused:?}"
    );
    assert!(admitted(&server, &aus8).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_intermediate_ca_ends_its_certificates_rights() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.lapsed_connection_grace_secs = 1;
    })
    .await;
    // A chain through an intermediate under a CA of the bundle that allows one.
    let root = outside_ca("Regional root CA");
    std::fs::write(
        pki.dir.path().join("ca.pem"),
        format!("{}{}", pki.ca.cert_pem(), root.pem),
    )
    .unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    let edge = through_an_intermediate(&pki, &root);
    assert!(admitted(&server, &edge).await);
    let channel = client::connect(&server.endpoint(), &edge).await.unwrap();
    let mut watch = common::exchange_health_watch(channel).await;
    assert!(watch.message().await.unwrap().is_some(), "the watch runs");
    admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "64".into(),
            reason: "ca-compromise".into(),
            issuer: root.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    ends_unauthenticated(&mut watch).await;
    assert!(!admitted(&server, &edge).await);
}

/// A node certificate under an intermediate CA (serial 64) that `root` issued, with the
/// intermediate in the chain it presents.
fn through_an_intermediate(pki: &TestPki, root: &Ca) -> ClientIdentity {
    let mut name = rcgen::DistinguishedName::new();
    name.push(DnType::CommonName, "IDN intermediate CA");
    through_an_intermediate_named(pki, root, name)
}

/// [`through_an_intermediate`], the intermediate CA named `name`.
fn through_an_intermediate_named(
    pki: &TestPki,
    root: &Ca,
    name: rcgen::DistinguishedName,
) -> ClientIdentity {
    under_an_intermediate(pki, &intermediate_ca(root, name), &[1]).0
}

/// An intermediate CA (serial 64) named `name` that `root` issued.
fn intermediate_ca(root: &Ca, name: rcgen::DistinguishedName) -> Ca {
    let mut params = CertificateParams::default();
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from_slice(&[0x64]));
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let pem = params.signed_by(&key, &root.issuer).unwrap().pem();
    Ca {
        name: subject(&pem),
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// An IDN node certificate of this serial that `intermediate` issued, with the
/// intermediate in the chain it presents; and that chain (PEM).
fn under_an_intermediate(
    pki: &TestPki,
    intermediate: &Ca,
    serial: &[u8],
) -> (ClientIdentity, String) {
    let (leaf_cert, leaf_key) = node_cert(intermediate, "IDN", serial);
    let chain = format!("{leaf_cert}{}", intermediate.pem);
    (
        ClientIdentity::from_pem(chain.clone(), leaf_key, pki.ca.cert_pem().to_owned()),
        chain,
    )
}

/// A partner's intermediate CA is outside the bundle, so `--issuer` cannot name it: an
/// operator revokes one of its certificates by presenting it (an outside pass was led to
/// revoke a serial for every CA, the exchange's own operator's certificate with it). The
/// certificate alone of that serial under that intermediate is revoked — on an open
/// connection too, and after a restart —, and its holder's state sees it in its access
/// list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_under_a_partners_intermediate_is_revoked_by_presenting_it() {
    let pki = TestPki::new();
    let (ours, partner, server) = with_a_partner_listed_for_idn(&pki).await;
    let mut name = rcgen::DistinguishedName::new();
    name.push(DnType::CommonName, "Partner issuing CA");
    let intermediate = intermediate_ca(&partner, name);
    let (first, first_chain) = under_an_intermediate(&pki, &intermediate, &[1]);
    let (second, _) = under_an_intermediate(&pki, &intermediate, &[2]);
    let ours_1 = node_with_serial(&pki, &ours, "IDN", &[1]);
    for identity in [&first, &second, &ours_1] {
        assert!(admitted(&server, identity).await);
    }
    let channel = client::connect(&server.endpoint(), &first).await.unwrap();
    let mut watch = common::exchange_health_watch(channel).await;
    assert!(watch.message().await.unwrap().is_some(), "the watch runs");

    let me = operator(&pki);
    let mut admin = server.admin(&me).await;
    let by_name = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "01".into(),
            issuer: intermediate.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(by_name.code(), Code::InvalidArgument, "{by_name:?}");
    assert!(by_name.message().contains("--certificate"), "{by_name:?}");

    let revoked = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            // A file's contents passed through: its byte-order mark is skipped.
            certificate_pem: format!("\u{feff}{first_chain}"),
            reason: "key-compromise".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let holder = Principal::new(TRUST_DOMAIN, Role::Node(state("IDN")), "edge")
        .unwrap()
        .spiffe_id();
    assert_eq!(
        (
            revoked.serial.as_str(),
            revoked.issuer.as_str(),
            revoked.holder.as_str(),
            revoked.every_issuer
        ),
        ("01", intermediate.name.as_str(), holder.as_str(), false)
    );
    ends_unauthenticated(&mut watch).await;
    assert!(!admitted(&server, &first).await);
    assert!(admitted(&server, &second).await, "another serial of it");
    assert!(admitted(&server, &ours_1).await, "our CA's 01");

    // Its state sees the revocation, naming the holder.
    let idn = client::connect(&server.endpoint(), &common::node(&pki, "IDN"))
        .await
        .unwrap();
    let accesses = pb::exchange_client::ExchangeClient::new(idn)
        .access_to_my_data(pb::AccessToMyDataRequest::default())
        .await
        .unwrap()
        .into_inner()
        .accesses;
    let revocation = accesses
        .iter()
        .find(|a| a.action == "revoke-certificate")
        .expect("the revocation is in IDN's access list");
    assert!(revocation.detail.contains(&holder), "{revocation:?}");
    assert!(
        revocation.detail.contains(&intermediate.name),
        "{revocation:?}"
    );

    // So after a restart.
    let data = server.stop().await;
    let server = TestServer::start_with(&pki, data, |config| {
        config
            .tls
            .partner_cas
            .insert(partner.name.clone(), vec!["IDN".into()]);
    })
    .await;
    assert!(!admitted(&server, &first).await && admitted(&server, &second).await);
}

/// A presented certificate is revoked only once it chains to the bundle as a handshake
/// would admit it: without its intermediate, from an unknown CA, given with a serial
/// too, or no certificate at all is refused saying what to do; so is the operator's own.
/// One the partner CA does not vouch for is revoked but names no holder, so that no
/// state's access list shows a revocation a partner could have made up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presented_certificate_is_checked_before_it_is_revoked() {
    let pki = TestPki::new();
    let (_, partner, server) = with_a_partner_listed_for_idn(&pki).await;
    let mut name = rcgen::DistinguishedName::new();
    name.push(DnType::CommonName, "Partner issuing CA");
    let intermediate = intermediate_ca(&partner, name);
    let (_, first_chain) = under_an_intermediate(&pki, &intermediate, &[1]);
    let me = operator(&pki);
    let mut admin = server.admin(&me).await;
    // A certificate the partner CA does not vouch for names no holder: its state's
    // access list is not the place of a revocation the partner could have made up.
    let (for_aus, _) = certificate_of(&intermediate, Role::Node(state("AUS")), &[5]);
    let unvouched = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            certificate_pem: format!("{for_aus}{}", intermediate.pem),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unvouched.holder, "", "{unvouched:?}");
    // An expired one it vouches for names its holder all the same (its path is checked
    // as of its notAfter).
    let (expired, _) = certificate_made(&intermediate, Role::Node(state("IDN")), &[6], |p| {
        let now = time::OffsetDateTime::now_utc();
        (p.not_before, p.not_after) = (
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        );
    });
    let revoked = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            certificate_pem: format!("{expired}{}", intermediate.pem),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        revoked.holder.ends_with("/state/IDN/node/edge"),
        "{revoked:?}"
    );

    // Without its intermediate, from an unknown CA, a CA's certificate (the
    // intermediate itself, or the intermediate first), with a serial too, or no
    // certificate at all: refused, saying what to do.
    let (leaf_alone, _) = node_cert(&intermediate, "IDN", &[3]);
    let stranger = outside_ca("Stranger CA");
    let (stranger_leaf, _) = node_cert(&stranger, "IDN", &[4]);
    let backwards = format!("{}{leaf_alone}", intermediate.pem);
    let (no_eku, _) = certificate_made(&intermediate, Role::Node(state("IDN")), &[7], |p| {
        p.extended_key_usages.clear();
    });
    let no_eku = format!("{no_eku}{}", intermediate.pem);
    let mut below = rcgen::DistinguishedName::new();
    below.push(DnType::CommonName, "Partner sub CA");
    let below = intermediate_ca(&intermediate, below).pem;
    let revoke_the_intermediate = format!("admin revoke 64 --issuer '{}'", partner.name);
    for (pem, serial, needs) in [
        (
            intermediate.pem.as_str(),
            "",
            revoke_the_intermediate.as_str(),
        ),
        (backwards.as_str(), "", "put it first in the file"),
        (no_eku.as_str(), "", "no extended key usage allowing client"),
        (below.as_str(), "", "no revocation can name it"),
        (partner.pem.as_str(), "", "take it out of the bundle"),
        (
            leaf_alone.as_str(),
            "",
            "put the intermediate's certificate after it",
        ),
        (stranger_leaf.as_str(), "", "does not chain to a CA"),
        (first_chain.as_str(), "01", "not both"),
        ("not a certificate", "", "holds no certificate"),
    ] {
        let refused = admin
            .revoke_certificate(pb::RevokeCertificateRequest {
                certificate_pem: pem.to_owned(),
                serial: serial.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(needs), "{needs}: {refused:?}");
    }
    // The operator's own certificate, presented, is refused as by serial.
    let own = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            certificate_pem: me.cert_pem().to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::FailedPrecondition, "{own:?}");
}

/// The access journal carries suspensions and key revocations over a restore from an
/// older backup: when it cannot be written, a suspension, a reinstatement and a key
/// revocation are in force all the same, and their answers say what was not written
/// (they said nothing before); once it can be, they say nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_says_when_the_access_journal_could_not_be_written() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "THA").await;
    let journal = pki.dir.path().join("access-journal.json");
    std::fs::remove_file(&journal).unwrap();
    std::fs::create_dir_all(journal.join("in-the-way")).unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    let tha = || pb::StateRequest {
        state: "THA".into(),
    };
    let suspended = admin.suspend_state(tha()).await.unwrap().into_inner();
    assert!(suspended.suspended);
    assert!(
        suspended.not_written.contains("access journal"),
        "{suspended:?}"
    );
    assert!(
        !admitted(&server, &common::node(&pki, "THA")).await,
        "in force all the same"
    );
    let enrolled = admin.enrol_state(tha()).await.unwrap().into_inner();
    assert!(
        enrolled.not_written.contains("access journal"),
        "{enrolled:?}"
    );
    let revoked = admin
        .revoke_signing_key(pb::RevokeSigningKeyRequest {
            key_id: key.key_id().to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at_unix != 0);
    assert!(
        revoked.not_written.contains("access journal"),
        "{revoked:?}"
    );
    std::fs::remove_dir_all(&journal).unwrap();
    let suspended = admin.suspend_state(tha()).await.unwrap().into_inner();
    assert_eq!(suspended.not_written, "", "{suspended:?}");
    assert!(std::fs::read_to_string(&journal).unwrap().contains("THA"));
}

/// A reload takes only `[tls] partner_cas` from the configuration file: any other
/// setting changed there since the server started waits for a restart, and the answer
/// and the audit record say which (an operator would otherwise believe it applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_says_which_settings_wait_for_a_restart() {
    let pki = TestPki::new();
    let file = pki.dir.path().join("tidemark.toml");
    std::fs::write(&file, "[limits]\nmax_reads_per_principal = 16\n").unwrap();
    let from = file.clone();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.tls.partner_cas_from = Some(from);
    })
    .await;
    let mut admin = server.admin(&operator(&pki)).await;
    let reloaded = reload_ok(&mut admin).await;
    assert!(reloaded.waiting_for_restart.is_empty(), "{reloaded:?}");
    std::fs::write(&file, "[limits]\nmax_reads_per_principal = 3\n").unwrap();
    let reloaded = reload_ok(&mut admin).await;
    assert_eq!(
        reloaded.waiting_for_restart,
        ["limits.max_reads_per_principal"]
    );
    let log = common::audit_log(&mut admin).await;
    let reload = log.iter().rfind(|e| e.action == "reload-tls").unwrap();
    assert!(
        reload
            .detail
            .contains("waiting for a restart: limits.max_reads_per_principal"),
        "{reload:?}"
    );
    // Still, after another reload: what waits is measured against the start.
    let reloaded = reload_ok(&mut admin).await;
    assert_eq!(
        reloaded.waiting_for_restart,
        ["limits.max_reads_per_principal"]
    );
}

/// A CA of the bundle whose pathLenConstraint is 0 (as `pki init` makes the exchange's)
/// issues no intermediate CA whose certificates it accepts (RFC 5280 §4.2.1.9; webpki
/// does not apply a trust anchor's constraints).
#[tokio::test]
async fn no_intermediate_stands_under_a_ca_that_allows_none() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let edge = through_an_intermediate(&pki, &own_ca(&pki));
    assert!(!admitted(&server, &edge).await);
    assert!(admitted(&server, &common::node(&pki, "IDN")).await);
}

/// RFC 5280 §4.1.2.2: a serial is a positive integer of at most 20 octets. One that is
/// zero or longer cannot be revoked by the serial a person would type, so such a
/// certificate is refused at the handshake.
#[tokio::test]
async fn certificates_whose_serial_breaks_rfc_5280_are_refused() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let ours = own_ca(&pki);
    assert!(admitted(&server, &node_with_serial(&pki, &ours, "AUS", &[0x7f; 20])).await);
    for serial in [&[0u8][..], &[0x01; 21][..]] {
        let identity = node_with_serial(&pki, &ours, "AUS", serial);
        assert!(!admitted(&server, &identity).await, "{serial:02x?}");
    }
}

/// With the CA key offline the server signs no CRL, and says so, rather than serving
/// the file it was given, which may predate a revocation.
#[tokio::test]
async fn with_the_ca_offline_no_crl_is_served() {
    let pki = TestPki::new();
    drop(TestServer::start(&pki).await.stop().await);
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.tls.ca_key = None;
    })
    .await;
    let channel = client::connect(&server.endpoint(), &common::node(&pki, "AUS"))
        .await
        .unwrap();
    let refused = pb::exchange_client::ExchangeClient::new(channel)
        .get_crl(pb::GetCrlRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}

/// The TLS files change only when an operator reloads them: a CA added to the bundle on
/// disk is not trusted because a revocation rebuilt the CRL (an outside pass saw it
/// trusted, with no record of a reload).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_changed_on_disk_is_trusted_only_once_reloaded() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let ours = own_ca(&pki);
    let rogue = outside_ca("Rogue CA");
    std::fs::write(
        pki.dir.path().join("ca.pem"),
        format!("{}{}", ours.pem, rogue.pem),
    )
    .unwrap();
    let stranger = node_with_serial(&pki, &rogue, "IDN", &[3]);
    assert!(!admitted(&server, &stranger).await);
    let mut admin = server.admin(&operator(&pki)).await;
    admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "0a1b".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .suspend_state(pb::StateRequest {
            state: "NZL".into(),
        })
        .await
        .unwrap();
    assert!(
        !admitted(&server, &stranger).await,
        "trusted without a reload"
    );
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    assert!(admitted(&server, &stranger).await);
}

/// A reload that is refused changes nothing: a CRL the server cannot use (one
/// partitioned by an issuing distribution point) is named, the CRL file is left as it
/// was, and no revocation from it is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_writes_and_records_nothing() {
    let (pki, server, _, partner) = with_a_partner_ca().await;
    let crl_path = pki.dir.path().join("crl.pem");
    let partitioned = crl_of_scope(
        &partner.issuer,
        2,
        &[&[6]],
        Some(rcgen::CrlIssuingDistributionPoint {
            distribution_point: rcgen::CrlDistributionPoint {
                uris: vec!["http://crl.example/partner.crl".into()],
            },
            scope: Some(rcgen::CrlScope::UserCertsOnly),
        }),
    );
    let text = format!(
        "{}{}{partitioned}",
        std::fs::read_to_string(&crl_path).unwrap(),
        crl(&partner.issuer, 1, &[&[5]])
    );
    std::fs::write(&crl_path, &text).unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("CRL 3 of the file is a partitioned CRL"),
        "{refused:?}"
    );
    assert_eq!(std::fs::read_to_string(&crl_path).unwrap(), text);
    let log = common::audit_log(&mut admin).await;
    assert!(
        !log.iter().any(|e| e.action == "revoke-certificate"),
        "{log:#?}"
    );
    let idn5 = node_with_serial(&pki, &partner, "IDN", &[5]);
    assert!(admitted(&server, &idn5).await, "nothing is in force");
}

/// A revocation the CRL file cannot take is in force and on record all the same, and its
/// answer says that the published CRL lacks it until the file is fixed and reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_says_when_the_crl_file_could_not_be_rewritten() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let ours = own_ca(&pki);
    let [aus9, aus10] = [9, 10].map(|serial| node_with_serial(&pki, &ours, "AUS", &[serial]));
    let crl_path = pki.dir.path().join("crl.pem");
    std::fs::remove_file(&crl_path).unwrap();
    std::fs::create_dir_all(crl_path.join("in-the-way")).unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    let revoke = |serial: &str| pb::RevokeCertificateRequest {
        serial: serial.into(),
        reason: "key-compromise".into(),
        issuer: ours.name.clone(),
        ..Default::default()
    };
    let revoked = admin
        .revoke_certificate(revoke("09"))
        .await
        .unwrap()
        .into_inner();
    // Said as what it is: the CRL file, not the access journal (written all the same;
    // tester A of 2026-12-07 was told the journal lacked the change).
    assert!(
        revoked.crl_not_written.starts_with("the CRL file ")
            && !revoked.crl_not_written.contains("access journal"),
        "{revoked:?}"
    );
    assert!(!admitted(&server, &aus9).await, "in force all the same");
    let log = common::audit_log(&mut admin).await;
    assert!(
        log.iter()
            .any(|e| e.action == "revoke-certificate" && e.detail.contains("09")),
        "{log:#?}"
    );
    // Once the path is fixed, a reload writes it — and says what it could not write,
    // here the access journal beside it —, and later revocations say nothing.
    std::fs::remove_dir_all(&crl_path).unwrap();
    let journal = pki.dir.path().join("access-journal.json");
    std::fs::remove_file(&journal).unwrap();
    std::fs::create_dir_all(journal.join("in-the-way")).unwrap();
    let reloaded = reload_ok(&mut admin).await;
    assert!(
        reloaded.crl_not_written.contains("access journal"),
        "{reloaded:?}"
    );
    assert!(listed(&std::fs::read_to_string(&crl_path).unwrap()).contains(&"09".to_owned()));
    std::fs::remove_dir_all(&journal).unwrap();
    let reloaded = reload_ok(&mut admin).await;
    assert_eq!(reloaded.crl_not_written, "", "{reloaded:?}");
    let revoked = admin
        .revoke_certificate(revoke("0a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.crl_not_written, "", "{revoked:?}");
    assert!(!admitted(&server, &aus10).await);
    assert!(listed(&published_crl(&pki, &server).await).contains(&"0a".to_owned()));
}

/// An intermediate CA named like a CA of the bundle, with another key, is refused at the
/// handshake: revocations and the audit know issuers by name, so a partner's intermediate
/// named like the exchange's CA passed for it (`whoami` named the exchange's CA as the
/// issuer), and revoking one of its certificates by serial and issuer revoked the
/// exchange's certificate of that serial too (an outside pass). So is one named like the
/// partner CA itself; one with a name of its own is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intermediate_ca_named_like_a_ca_of_the_bundle_is_refused() {
    let pki = TestPki::new();
    let (ours, partner, server) = with_a_partner_listed_for_idn(&pki).await;
    let mut its_own = rcgen::DistinguishedName::new();
    its_own.push(DnType::CommonName, "Partner issuing CA");
    let under = |name| through_an_intermediate_named(&pki, &partner, name);
    let legitimate = under(its_own);
    assert!(admitted(&server, &legitimate).await, "a name of its own");
    // whoami shows the chain the certificate is trusted through: what an operator needs
    // to revoke the intermediate CA that issued it.
    let channel = client::connect(&server.endpoint(), &legitimate)
        .await
        .unwrap();
    let me = pb::exchange_client::ExchangeClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.trust_anchor, partner.name);
    assert_eq!(me.trust_anchor_vouches_for, ["IDN"]);
    let intermediates: Vec<(&str, &str, &str)> = me
        .intermediates
        .iter()
        .map(|c| (c.subject.as_str(), c.serial.as_str(), c.issuer.as_str()))
        .collect();
    assert_eq!(
        intermediates,
        [("CN=Partner issuing CA", "64", partner.name.as_str())]
    );
    for like in [&ours, &partner] {
        assert!(
            !admitted(&server, &under(subject_dn(&like.pem))).await,
            "named like {}",
            like.name
        );
    }
}

/// A chain is read only with at most 8 intermediate CAs, no two of one name with
/// different keys: path building tries every combination of look-alikes, and an outside
/// pass stalled the server with 49 of them, each handshake costing seconds of CPU before
/// it failed. Unrelated intermediates within the limit are only ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_look_alike_or_too_many_intermediates_is_refused_unread() {
    let pki = TestPki::new();
    let (_, partner, server) = with_a_partner_listed_for_idn(&pki).await;
    let named = |name: &str| {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        intermediate_ca(&partner, dn)
    };
    let issuing = named("Partner issuing CA");
    let (leaf, key) = node_cert(&issuing, "IDN", &[1]);
    let chain = |extra: &[String]| format!("{leaf}{}{}", issuing.pem, extra.concat());
    let presenting = |extra: &[String]| {
        ClientIdentity::from_pem(chain(extra), key.clone(), pki.ca.cert_pem().to_owned())
    };
    let mut unrelated: Vec<String> = (0..7).map(|i| named(&format!("CA {i}")).pem).collect();
    assert!(
        admitted(&server, &presenting(&unrelated)).await,
        "8 intermediates"
    );
    unrelated.push(named("CA 7").pem);
    assert!(
        !admitted(&server, &presenting(&unrelated)).await,
        "9 intermediates"
    );
    let look_alike = named("Partner issuing CA").pem;
    assert!(
        !admitted(&server, &presenting(std::slice::from_ref(&look_alike))).await,
        "a look-alike"
    );
    // Presented to be revoked, it is refused saying why.
    let refused = server
        .admin(&operator(&pki))
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            certificate_pem: chain(&[look_alike]),
            reason: "key-compromise".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("two intermediate CAs named"),
        "{refused:?}"
    );
}

/// Connections of a certificate that does not speak for the principal it names — a
/// partner CA's for a state it does not vouch for — are not counted among that
/// principal's: an outside pass took a node's and the operator's places that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_refused_their_principal_do_not_take_its_places() {
    let pki = TestPki::new();
    let (ours, partner) = (own_ca(&pki), outside_ca("Partner CA"));
    std::fs::write(
        pki.dir.path().join("ca.pem"),
        format!("{}{}", ours.pem, partner.pem),
    )
    .unwrap();
    let name = partner.name.clone();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.tls.partner_cas.insert(name, vec!["IDN".into()]);
        config.limits.max_connections_per_principal = 2;
    })
    .await;
    // The partner CA vouches for IDN only: its certificate for AUS's node "edge".
    let (cert, key) = certificate_of(&partner, Role::Node(state("AUS")), &[7]);
    let forged = ClientIdentity::from_pem(cert, key, pki.ca.cert_pem().to_owned());
    let whoami = |channel: tonic::transport::Channel| async move {
        pb::exchange_client::ExchangeClient::new(channel)
            .who_am_i(pb::WhoAmIRequest {})
            .await
    };
    // Two are told why they are refused; they are counted apart, under the same limit.
    let mut held = Vec::new();
    for code in [
        Code::Unauthenticated,
        Code::Unauthenticated,
        Code::ResourceExhausted,
    ] {
        let channel = server.channel(&forged).await;
        let refused = whoami(channel.clone()).await.unwrap_err();
        assert_eq!(refused.code(), code, "{refused:?}");
        held.push(channel);
    }
    let edge = pki.client(Role::Node(state("AUS")), "edge");
    let me = whoami(server.channel(&edge).await)
        .await
        .unwrap()
        .into_inner();
    assert_eq!((me.state.as_str(), me.name.as_str()), ("AUS", "edge"));
}

/// The parameters of a certificate of IDN's node `name` with this serial.
fn idn_node_params(name: &str, serial: &[u8]) -> CertificateParams {
    let principal = Principal::new(TRUST_DOMAIN, Role::Node(state("IDN")), name).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(principal.spiffe_id().try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params
}

/// Reports the key of the certificate `pem` compromised, presenting it.
async fn compromise_of(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    pem: String,
) -> pb::RevokeCertificateResponse {
    admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            certificate_pem: pem,
            reason: "key-compromise".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// A partner CA can certify anyone's public key: reported compromised through such a
/// certificate, the key bars nothing beyond it — not the exchange CA's certificates of
/// that key, an operator's included — unless a handshake made with the key showed who
/// holds it (tester W).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partners_certificate_of_another_key_does_not_get_that_key_barred() {
    let pki = TestPki::new();
    let (ours, partner, server) = with_a_partner_listed_for_idn(&pki).await;
    let (victim_cert, victim_key) = certificate_of(&ours, Role::Node(state("AUS")), &[0x51]);
    let victim = ClientIdentity::from_pem(
        victim_cert.clone(),
        victim_key.clone(),
        pki.ca.cert_pem().to_owned(),
    );
    assert!(admitted(&server, &victim).await);
    // The partner's IDN certificate of the victim's public key (no private key needed).
    let public = {
        let (_, pem) = x509_parser::pem::parse_x509_pem(victim_cert.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).unwrap();
        rcgen::SubjectPublicKeyInfo::from_der(cert.public_key().raw).unwrap()
    };
    let forged = idn_node_params("evil", &[0x70, 0x01])
        .signed_by(&public, &partner.issuer)
        .unwrap()
        .pem();
    let mut admin = server.admin(&operator(&pki)).await;
    let revoked = compromise_of(&mut admin, forged).await;
    assert!(
        revoked.key_sha256.is_empty() && revoked.key_not_barred.contains("partner CA"),
        "{revoked:?}"
    );
    assert!(
        admitted(&server, &victim).await,
        "the exchange CA's certificate of the key"
    );
    // A partner certificate whose key a handshake showed: barred, as it is proven held.
    let (shown_cert, shown_key) = certificate_of(&partner, Role::Node(state("IDN")), &[0x72]);
    let shown = ClientIdentity::from_pem(
        shown_cert.clone(),
        shown_key.clone(),
        pki.ca.cert_pem().to_owned(),
    );
    assert!(admitted(&server, &shown).await);
    // The exchange CA's certificate of the same key.
    let twin = ClientIdentity::from_pem(
        idn_node_params("twin", &[0x73])
            .signed_by(&KeyPair::from_pem(&shown_key).unwrap(), &ours.issuer)
            .unwrap()
            .pem(),
        shown_key,
        pki.ca.cert_pem().to_owned(),
    );
    assert!(admitted(&server, &twin).await);
    let revoked = compromise_of(&mut admin, shown_cert).await;
    assert!(
        !revoked.key_sha256.is_empty() && revoked.key_not_barred.is_empty(),
        "{revoked:?}"
    );
    assert!(
        !admitted(&server, &twin).await,
        "a key a handshake showed is barred"
    );
}

/// A partner CA that `[tls] partner_cas` lists vouches only for the nodes and analysts
/// of its states: its certificate for another state's node, a regional analyst or an
/// operator is refused, saying why — an outside pass had a partner CA's operator
/// certificate list the states and read the audit log. A CA of the bundle it does not list
/// is the exchange's own; a listed name the bundle lacks is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_ca_vouches_only_for_the_states_listed_for_it() {
    let pki = TestPki::new();
    let (ours, partner, server) = with_a_partner_listed_for_idn(&pki).await;
    let of = |ca: &Ca, role: Role, serial: u8| {
        let (cert, key) = certificate_of(ca, role, &[serial]);
        ClientIdentity::from_pem(cert, key, pki.ca.cert_pem().to_owned())
    };
    let vouched = [Role::Node(state("IDN")), Role::StateAnalyst(state("IDN"))];
    for (serial, role) in (1..).zip(vouched) {
        assert!(
            admitted(&server, &of(&partner, role, serial)).await,
            "{role:?}"
        );
    }
    let refused = [
        Role::Node(state("AUS")),
        Role::StateAnalyst(state("AUS")),
        Role::RegionalAnalyst,
        Role::Operator,
    ];
    for (serial, role) in (10..).zip(refused) {
        assert!(
            !admitted(&server, &of(&partner, role, serial)).await,
            "{role:?}"
        );
        assert!(
            admitted(&server, &of(&ours, role, serial)).await,
            "{role:?} of ours"
        );
    }
    // Certificates added to the chain change nothing: what it is trusted as is decided
    // on the path that verifies (an outside pass appended the exchange CA's certificate,
    // or one made in its name, and became an operator).
    let (leaf, key) = certificate_of(&partner, Role::Operator, &[30]);
    let in_our_name = outside_ca_named(subject_dn(&ours.pem));
    for added in [&ours.pem, &in_our_name.pem] {
        let stuffed = ClientIdentity::from_pem(
            format!("{leaf}{added}"),
            key.clone(),
            pki.ca.cert_pem().to_owned(),
        );
        assert!(!admitted(&server, &stuffed).await, "{added}");
    }
    let channel = client::connect(&server.endpoint(), &of(&partner, Role::Operator, 20))
        .await
        .unwrap();
    let said = pb::admin_client::AdminClient::new(channel)
        .list_states(pb::ListStatesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(said.code(), Code::Unauthenticated, "{said:?}");
    assert!(
        said.message()
            .contains(&format!("chains to the partner CA {}", partner.name)),
        "{said:?}"
    );
    // A partner CA the bundle does not hold is named at start.
    let data = tempfile::TempDir::new().unwrap();
    let mut config = pki.config(&data);
    config
        .tls
        .partner_cas
        .insert("CN=Nobody".into(), vec!["IDN".into()]);
    let Err(e) = tidemark::server::Server::build(config) else {
        panic!("a partner CA outside the bundle was accepted");
    };
    assert!(
        e.to_string()
            .contains("\"CN=Nobody\", which is no CA of the bundle"),
        "{e}"
    );
    // So are the exchange's own CA listed as a partner (every operator would be refused),
    // and one CA listed twice under two spellings.
    let listings = [
        (vec![(ours.name.clone(), "AUS")], "the exchange's own CA"),
        (
            vec![
                (partner.name.clone(), "IDN"),
                (partner.name.to_lowercase(), "THA"),
            ],
            "twice",
        ),
    ];
    for (listing, said) in listings {
        let data = tempfile::TempDir::new().unwrap();
        let mut config = pki.config(&data);
        for (name, state) in listing {
            config.tls.partner_cas.insert(name, vec![state.into()]);
        }
        let Err(e) = tidemark::server::Server::build(config) else {
            panic!("accepted: {said}");
        };
        assert!(e.to_string().contains(said), "{e}");
    }
}

/// The partner list is read again from the configuration file at each reload: a partner
/// CA added to the bundle with its listing is restricted from that reload on (an outside
/// pass added one and reloaded: it vouched for operators until a restart), and a state
/// taken off a listing is refused from then on; a reload that would leave a partner's CA
/// (or its key under another name) unlisted in the bundle is refused (the next pass
/// emptied the file and its partners became operators).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_the_partner_list_again() {
    let pki = TestPki::new();
    let (ours, tha, mys) = (own_ca(&pki), outside_ca("THA CA"), outside_ca("MYS CA"));
    let bundle = |cas: &[&Ca]| {
        let pems: String = cas.iter().map(|ca| ca.pem.as_str()).collect();
        std::fs::write(pki.dir.path().join("ca.pem"), pems).unwrap();
    };
    let file = pki.dir.path().join("partners.toml");
    let listing = |entries: &[(&Ca, &str)]| {
        let lines: Vec<String> = entries
            .iter()
            .map(|(ca, state)| format!("{:?} = [{state:?}]", ca.name))
            .collect();
        std::fs::write(&file, format!("[tls.partner_cas]\n{}\n", lines.join("\n"))).unwrap();
    };
    bundle(&[&ours, &tha]);
    listing(&[(&tha, "THA")]);
    let from = file.clone();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.tls.partner_cas_from = Some(from);
    })
    .await;
    let of = |ca: &Ca, role: Role, serial: u8| {
        let (cert, key) = certificate_of(ca, role, &[serial]);
        ClientIdentity::from_pem(cert, key, pki.ca.cert_pem().to_owned())
    };
    assert!(admitted(&server, &of(&tha, Role::Node(state("THA")), 1)).await);
    assert!(!admitted(&server, &of(&tha, Role::Operator, 2)).await);
    // A new partner: its CA into the bundle and its listing into the file, then a reload.
    bundle(&[&ours, &tha, &mys]);
    listing(&[(&tha, "THA"), (&mys, "MYS")]);
    let mut admin = server.admin(&operator(&pki)).await;
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    assert!(!admitted(&server, &of(&mys, Role::Operator, 3)).await);
    assert!(admitted(&server, &of(&mys, Role::Node(state("MYS")), 4)).await);
    // The reload's audit record names the partners in force.
    let log = common::audit_log(&mut admin).await;
    let reload = log.iter().rfind(|e| e.action == "reload-tls").unwrap();
    assert!(
        reload.detail.contains(&format!("{} (MYS)", mys.name))
            && reload.detail.contains(&format!("{} (THA)", tha.name)),
        "{reload:?}"
    );
    // A state taken off a listing is refused from the next reload on, on a call already
    // open too.
    let tha_node = of(&tha, Role::Node(state("THA")), 5);
    assert!(admitted(&server, &tha_node).await);
    let channel = client::connect(&server.endpoint(), &tha_node)
        .await
        .unwrap();
    let mut watch = common::exchange_health_watch(channel).await;
    assert!(watch.message().await.unwrap().is_some(), "the watch runs");
    listing(&[(&tha, "IDN"), (&mys, "MYS")]);
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    ends_unauthenticated(&mut watch).await;
    assert!(!admitted(&server, &tha_node).await);
    // A file that no longer reads is a refused reload, and the list stays as it was.
    std::fs::write(&file, "[tls.partner_cas]\n\"CN=MYS CA\" = [\"mys\"]\n").unwrap();
    let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
    assert!(refused.message().contains("partners.toml"), "{refused:?}");
    assert!(admitted(&server, &of(&mys, Role::Node(state("MYS")), 6)).await);
    // A partner's listing dropped (an emptied file, say) while its CA stays in the
    // bundle would make it the exchange's own: refused, and it stays a partner.
    listing(&[(&tha, "IDN")]);
    let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
    assert!(
        refused.message().contains("no longer lists it"),
        "{refused:?}"
    );
    assert!(!admitted(&server, &of(&mys, Role::Operator, 7)).await);
    // So is a partner's CA renamed with its key while the old name stays unlisted.
    let key = KeyPair::from_pem(&tha.issuer.key().serialize_pem()).unwrap();
    let mut renamed = rcgen::DistinguishedName::new();
    renamed.push(DnType::CommonName, "THA CA G2");
    let g2 = outside_ca_with_key(renamed, key);
    bundle(&[&ours, &tha, &mys, &g2]);
    listing(&[(&g2, "THA"), (&mys, "MYS")]);
    let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
    assert!(
        refused.message().contains("has the key of a partner CA"),
        "{refused:?}"
    );
    assert!(!admitted(&server, &of(&tha, Role::Operator, 8)).await);
}

/// Names that print alike are told apart: a name whose common name holds a comma is
/// written escaped (RFC 4514), so each of two such CAs is named exactly, by `whoami`'s
/// spelling or OpenSSL's; two CAs whose names differ only in string encoding, with
/// different keys, are refused in one bundle, since no name could tell them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_names_that_read_alike_are_told_apart_or_refused() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let mut one_rdn = rcgen::DistinguishedName::new();
    one_rdn.push(DnType::CommonName, "Ops, O=Exchange");
    let mut two_rdns = rcgen::DistinguishedName::new();
    two_rdns.push(DnType::OrganizationName, "Exchange");
    two_rdns.push(DnType::CommonName, "Ops");
    let (comma, pair) = (outside_ca_named(one_rdn), outside_ca_named(two_rdns));
    std::fs::write(
        pki.dir.path().join("ca.pem"),
        format!("{}{}{}", pki.ca.cert_pem(), pair.pem, comma.pem),
    )
    .unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    let [under_comma, under_pair] =
        [&comma, &pair].map(|ca| node_with_serial(&pki, ca, "IDN", &[0x90]));
    let issuer = |identity: &ClientIdentity| {
        let endpoint = server.endpoint();
        let identity = identity.clone();
        async move {
            let channel = client::connect(&endpoint, &identity).await.unwrap();
            pb::exchange_client::ExchangeClient::new(channel)
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .unwrap()
                .into_inner()
                .certificate_issuer
        }
    };
    assert_eq!(issuer(&under_comma).await, "CN=Ops\\, O=Exchange");
    assert_eq!(issuer(&under_pair).await, "CN=Ops,O=Exchange");
    admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "90".into(),
            issuer: "CN=Ops\\, O=Exchange".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!admitted(&server, &under_comma).await);
    assert!(admitted(&server, &under_pair).await, "the other CA's 90");
    // OpenSSL's spelling of the other, in another case, names it.
    admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "90".into(),
            issuer: "cn=ops,o=exchange".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!admitted(&server, &under_pair).await);

    // One name in two encodings, on two keys: refused at the reload, naming them.
    let encoded = |value: rcgen::DnValue| {
        let mut name = rcgen::DistinguishedName::new();
        name.push(DnType::CommonName, value);
        outside_ca_named(name)
    };
    let utf8 = encoded(rcgen::DnValue::Utf8String("Partner CA".into()));
    let printable = encoded(rcgen::DnValue::PrintableString(
        "Partner CA".try_into().unwrap(),
    ));
    std::fs::write(
        pki.dir.path().join("ca.pem"),
        format!("{}{}{}", pki.ca.cert_pem(), utf8.pem, printable.pem),
    )
    .unwrap();
    let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("certificates 2 and 3 are both CAs named \"CN=Partner CA\""),
        "{refused:?}"
    );
}

/// A compromise reported by a serial that certificates of two CAs carry, each presented
/// with its own key, bars neither key — which was compromised is not known — and the
/// answer says so and how to bar one (not that no handshake presented them).
#[tokio::test]
async fn a_compromise_by_a_serial_seen_with_two_keys_says_which_to_name() {
    let (pki, server, ours, partner) = with_a_partner_ca().await;
    let [aus8, idn8] = [(&ours, "AUS"), (&partner, "IDN")]
        .map(|(ca, code)| node_with_serial(&pki, ca, code, &[8]));
    assert!(admitted(&server, &aus8).await && admitted(&server, &idn8).await);
    let answer = server
        .admin(&operator(&pki))
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: "08".into(),
            reason: "key-compromise".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.key_sha256.is_empty(), "{answer:?}");
    assert!(
        answer.key_not_barred.contains("2 different keys")
            && answer.key_not_barred.contains("--issuer"),
        "{answer:?}"
    );
    assert!(!admitted(&server, &aus8).await && !admitted(&server, &idn8).await);
}
