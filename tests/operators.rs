//! Operators: CSR issuance, revocation on open connections, suspension, rotation of the
//! server certificate and the CA under load, signing-key compromise, operator-only RPCs.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{
    TRUST_DOMAIN, TestPki, TestServer, ends_unauthenticated, node, operator, sample_report, sign,
    state, submit,
};
use prost::Message;
use tidemark::{
    client::{self, ClientIdentity},
    clock::Clock,
    identity::{Principal, Role},
    pb,
    pki::{self, CertificateAuthority, IssuedCert, Validity},
};
use tonic::Code;

async fn enrol(server: &TestServer, pki: &TestPki, code: &str) {
    server
        .admin(&operator(pki))
        .await
        .enrol_state(pb::StateRequest { state: code.into() })
        .await
        .unwrap();
}

async fn who(
    server: &TestServer,
    identity: &ClientIdentity,
) -> Result<pb::WhoAmIResponse, tonic::Status> {
    let channel = client::connect(&server.endpoint(), identity).await.unwrap();
    pb::exchange_client::ExchangeClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(tonic::Response::into_inner)
}

/// Every administrative action in a state's name — its enrolment, a signing key
/// registered or revoked, a certificate issued to one of its principals and revoked — is
/// on that state's access list, saying what it did, and its log entry names the state:
/// an operator cannot give someone a key or certificate of a state's unseen. Actions of
/// no state (a regional analyst's certificate) are on no state's list.
#[tokio::test]
async fn an_administrative_action_in_a_states_name_is_on_its_access_list() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    for code in ["AUS", "IDN"] {
        enrol(&server, &pki, code).await;
    }
    let key = server.register_new_key(&pki, "AUS").await;
    let mut admin = server.admin(&operator(&pki)).await;
    let mut issue = async |principal: Principal| {
        let (_, csr_pem) = pki::make_csr(&principal).unwrap();
        admin
            .issue_certificate(pb::IssueCertificateRequest { csr_pem, days: 30 })
            .await
            .unwrap()
            .into_inner()
    };
    let rogue =
        issue(Principal::new(TRUST_DOMAIN, Role::Node(state("AUS")), "rogue-1").unwrap()).await;
    issue(Principal::new(TRUST_DOMAIN, Role::RegionalAnalyst, "ra-9").unwrap()).await;
    let mut admin = server.admin(&operator(&pki)).await;
    admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: rogue.serial.clone(),
            reason: "superseded".into(),
            issuer: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .revoke_signing_key(pb::RevokeSigningKeyRequest {
            key_id: key.key_id().to_owned(),
            reason: "superseded".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let list = |code: &'static str| {
        let identity = node(&pki, code);
        let server = &server;
        async move {
            let channel = client::connect(&server.endpoint(), &identity)
                .await
                .unwrap();
            pb::exchange_client::ExchangeClient::new(channel)
                .access_to_my_data(pb::AccessToMyDataRequest::default())
                .await
                .unwrap()
                .into_inner()
                .accesses
        }
    };
    let aus = list("AUS").await;
    let mut actions: Vec<&str> = aus.iter().map(|a| a.action.as_str()).collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            "enrol-state",
            "issue-certificate",
            "register-key",
            "revoke-certificate",
            "revoke-key"
        ]
    );
    let operator_id = Principal::new(TRUST_DOMAIN, Role::Operator, "ops-1")
        .unwrap()
        .spiffe_id();
    for access in &aus {
        assert_eq!(
            (access.count, access.reader.as_str()),
            (0, operator_id.as_str())
        );
        let entry = String::from_utf8(access.log_entry.clone()).unwrap();
        assert!(entry.contains("\nowners AUS:0\n"), "{entry}");
    }
    let said = |action: &str| &aus.iter().find(|a| a.action == action).unwrap().detail;
    assert!(said("issue-certificate").contains("/state/AUS/node/rogue-1"));
    assert!(said("revoke-certificate").contains(&rogue.serial));
    assert!(said("register-key").contains(key.key_id()));
    let idn: Vec<String> = list("IDN").await.into_iter().map(|a| a.action).collect();
    assert_eq!(idn, ["enrol-state"]);
}

#[tokio::test]
async fn a_node_gets_a_certificate_from_its_own_csr_and_the_server_sets_the_identity() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    enrol(&server, &pki, "AUS").await;
    let mut admin = server.admin(&operator(&pki)).await;

    // The node makes its key and CSR locally; only the CSR travels.
    let principal = Principal::new(TRUST_DOMAIN, Role::Node(state("AUS")), "canberra-1").unwrap();
    let (key_pem, csr_pem) = pki::make_csr(&principal).unwrap();
    let issued = admin
        .issue_certificate(pb::IssueCertificateRequest {
            // A file's contents passed through: its byte-order mark is skipped.
            csr_pem: format!("\u{feff}{csr_pem}"),
            days: 90,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(issued.spiffe_id, principal.spiffe_id());
    let identity = ClientIdentity::from_pem(
        issued.certificate_pem,
        key_pem,
        pki.ca.cert_pem().to_owned(),
    );
    let me = who(&server, &identity).await.unwrap();
    assert_eq!((me.state.as_str(), me.name.as_str()), ("AUS", "canberra-1"));
    assert_eq!(me.certificate_serial, issued.serial);

    // A state that is not enrolled, an operator identity, another trust domain: refused.
    let tha = Principal::new(TRUST_DOMAIN, Role::Node(state("THA")), "bkk-1").unwrap();
    let ops = Principal::new(TRUST_DOMAIN, Role::Operator, "rogue").unwrap();
    let foreign = Principal::new("elsewhere.test", Role::Node(state("AUS")), "x").unwrap();
    for (p, code) in [
        (tha, Code::FailedPrecondition),
        (ops, Code::PermissionDenied),
        (foreign, Code::InvalidArgument),
    ] {
        let (_, csr) = pki::make_csr(&p).unwrap();
        let status = admin
            .issue_certificate(pb::IssueCertificateRequest {
                csr_pem: csr,
                days: 90,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{}: {status:?}", p.spiffe_id());
    }

    // The state's listing shows its certificate, its signing key and its standing; a
    // state with a signing key and no enrolment takes part too, and is listed as never
    // enrolled.
    server.register_new_key(&pki, "AUS").await;
    server.register_new_key(&pki, "LKA").await;
    let states = admin
        .list_states(pb::ListStatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .states;
    let aus = states.iter().find(|s| s.state == "AUS").unwrap();
    assert_eq!(aus.certificates.len(), 1);
    assert_eq!(aus.certificates[0].serial, issued.serial);
    assert_eq!(aus.signing_keys.len(), 1);
    assert_eq!(aus.standing.len(), 2);
    assert!(!aus.standing[0].entitled, "AUS has contributed nothing yet");
    let lka = states
        .iter()
        .find(|s| s.state == "LKA")
        .expect("LKA listed");
    assert_eq!(
        (lka.enrolled_at_unix, lka.suspended, lka.signing_keys.len()),
        (0, false, 1)
    );

    // Listed, and found by the expiry watch.
    let soon = admin
        .list_certificates(pb::ListCertificatesRequest {
            expiring_within_days: 91,
        })
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert_eq!(soon.len(), 1);
    let later = admin
        .list_certificates(pb::ListCertificatesRequest {
            expiring_within_days: 30,
        })
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert!(later.is_empty());
}

/// An operator cannot revoke the certificate it is calling with (that would lock it out,
/// and the last operator every operator); another operator's certificate can.
#[tokio::test]
async fn an_operator_does_not_revoke_its_own_certificate() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let first = operator(&pki);
    let second = pki.client(tidemark::identity::Role::Operator, "operator-2");
    let serial = server
        .exchange(&first)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate_serial;
    let revoke = |serial: String| pb::RevokeCertificateRequest {
        serial,
        reason: "superseded".into(),
        ..Default::default()
    };
    let mut own = server.admin(&first).await;
    // In another spelling of the same serial, too.
    let status = own
        .revoke_certificate(revoke(serial.to_uppercase()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("another operator"), "{status:?}");
    own.list_states(pb::ListStatesRequest {}).await.unwrap();
    server
        .admin(&second)
        .await
        .revoke_certificate(revoke(serial))
        .await
        .unwrap();
    let status = own.list_states(pb::ListStatesRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

/// Nor the server's own certificate or a CA's: the server would go on presenting a
/// certificate its own CRL says is revoked (an outside pass did both); the refusal says
/// to replace it instead, and nothing is revoked.
#[tokio::test]
async fn an_operator_does_not_revoke_the_servers_or_a_cas_certificate() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let serial_of = |pem: &str| {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        tidemark::identity::serial_hex(pem.parse_x509().unwrap().raw_serial())
    };
    let server_pem = std::fs::read_to_string(pki.dir.path().join("server.pem")).unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    for (serial, whose) in [
        (serial_of(&server_pem), "the server's own certificate"),
        (serial_of(pki.ca.cert_pem()), "a CA certificate"),
    ] {
        let status = admin
            .revoke_certificate(pb::RevokeCertificateRequest {
                serial: serial.to_uppercase(),
                reason: "key-compromise".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains(whose), "{status:?}");
        assert!(
            !crl_serials(&std::fs::read_to_string(pki.dir.path().join("crl.pem")).unwrap())
                .contains(&serial)
        );
    }
}

#[tokio::test]
async fn a_revoked_certificate_fails_on_its_open_connection_and_at_the_next_handshake() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let aus = node(&pki, "AUS");
    let idn = node(&pki, "IDN");
    let mut open = server.exchange(&aus).await;
    let serial = open
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate_serial;
    let mut other = server.exchange(&idn).await;
    other.who_am_i(pb::WhoAmIRequest {}).await.unwrap();

    server
        .admin(&operator(&pki))
        .await
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: serial.clone(),
            reason: "key-compromise".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // The open connection: its next call is refused.
    let status = open.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"), "{}", status.message());
    // A new handshake with the same certificate fails (the CRL is in the verifier).
    let status = who(&server, &aus).await.unwrap_err();
    let explained = client::explain(&status);
    assert!(
        explained.contains("refused this client certificate") && explained.contains("Revoked"),
        "{explained}"
    );
    // Others are unaffected, on their open connection and on new ones.
    other.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    who(&server, &idn).await.unwrap();

    // The published CRL lists the serial.
    let crl = server
        .exchange(&idn)
        .await
        .get_crl(pb::GetCrlRequest {})
        .await
        .unwrap()
        .into_inner()
        .crl_pem;
    let listed = crl_serials(&crl);
    assert!(listed.contains(&serial), "{listed:?}");
    assert!(
        std::fs::read_to_string(pki.dir.path().join("crl.pem"))
            .unwrap()
            .contains("X509 CRL")
    );

    // The revocation is on the record: who, what, when, which serial.
    let log = server
        .admin(&operator(&pki))
        .await
        .audit_log(pb::AuditLogRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let entry = log
        .iter()
        .find(|e| e.action == "revoke-certificate")
        .expect("audited");
    assert!(entry.detail.contains(&serial) && entry.detail.contains("key-compromise"));
    assert!(entry.principal.ends_with("/operator/ops-1"));
    assert!(entry.at_unix > 0);
}

/// The serials a PEM CRL lists.
fn crl_serials(pem: &str) -> Vec<String> {
    use rustls::pki_types::{CertificateRevocationListDer, pem::PemObject};
    use x509_parser::{prelude::FromDer, revocation_list::CertificateRevocationList};
    let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, crl) = CertificateRevocationList::from_der(der.as_ref()).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| tidemark::identity::serial_hex(r.raw_serial()))
        .collect()
}

/// Each CRL the server signs has a greater number than the last (RFC 5280 §5.2.3),
/// however many are made in one second, across a restart, after an older CRL file is
/// put back, and past 64 bits: a relying party that keeps
/// the CRL of the highest number keeps the newest (three revocations in a second used to
/// make two CRLs of one number).
#[tokio::test]
async fn every_crl_has_a_greater_number_than_the_last() {
    use x509_parser::{prelude::FromDer, revocation_list::CertificateRevocationList};
    let number = |pem: &str| {
        use rustls::pki_types::{CertificateRevocationListDer, pem::PemObject};
        let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (_, crl) = CertificateRevocationList::from_der(der.as_ref()).unwrap();
        crl.crl_number().unwrap().clone()
    };
    let pki = TestPki::new();
    let mut server = TestServer::start(&pki).await;
    let mut numbers = Vec::new();
    for round in 0..2 {
        let mut admin = server.admin(&operator(&pki)).await;
        let mut node = server.exchange(&node(&pki, "AUS")).await;
        for i in 0..3 {
            let victim = pki.client(Role::Node(state("IDN")), &format!("v{round}-{i}"));
            let serial = who(&server, &victim).await.unwrap().certificate_serial;
            admin
                .revoke_certificate(pb::RevokeCertificateRequest {
                    serial,
                    reason: "superseded".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            let crl = node
                .get_crl(pb::GetCrlRequest {})
                .await
                .unwrap()
                .into_inner();
            numbers.push(number(&crl.crl_pem));
        }
        let data = server.stop().await;
        server = TestServer::start_with(&pki, data, |_| {}).await;
    }
    // An older CRL file put back (certs/ restored from a backup), and one whose number
    // is past 64 bits: the next CRL is numbered above both and above the last served.
    let crl_path = pki.dir.path().join("crl.pem");
    let first = std::fs::read_to_string(&crl_path).unwrap();
    let big = pki.ca.crl_numbered(&[], &[0x7f; 12], 7).unwrap();
    for put_back in [first, big.clone()] {
        let mut admin = server.admin(&operator(&pki)).await;
        admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
        std::fs::write(&crl_path, &put_back).unwrap();
        admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
        let crl = server
            .exchange(&node(&pki, "AUS"))
            .await
            .get_crl(pb::GetCrlRequest {})
            .await
            .unwrap()
            .into_inner();
        numbers.push(number(&crl.crl_pem));
    }
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert!(numbers.last().unwrap() > &number(&big));
}

#[tokio::test]
async fn a_suspended_state_is_refused_everywhere_and_works_again_when_reinstated() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "AUS").await;
    let mut aus = server.exchange(&node(&pki, "AUS")).await;
    let report = sample_report("AUS", 1);
    submit(&mut aus, sign(&report, &key)).await.unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    admin
        .suspend_state(pb::StateRequest {
            state: "AUS".into(),
        })
        .await
        .unwrap();

    let status = aus.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("AUS is suspended"));
    let status = submit(&mut aus, sign(&sample_report("AUS", 2), &key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let analyst = pki.client(Role::StateAnalyst(state("AUS")), "a");
    assert_eq!(
        who(&server, &analyst).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    who(&server, &node(&pki, "IDN"))
        .await
        .expect("other states are unaffected");

    admin
        .enrol_state(pb::StateRequest {
            state: "AUS".into(),
        })
        .await
        .unwrap();
    let mut stream = own_reports_of_category(&mut aus, &report).await;
    let first = stream
        .message()
        .await
        .unwrap()
        .expect("AUS's report is still there");
    assert_eq!(first.meta.unwrap().report_id, report.report_id);
}

/// Reads the caller's own smuggling reports (no standing needed), to the end.
async fn own_reports(
    exchange: &mut pb::exchange_client::ExchangeClient<tonic::transport::Channel>,
) -> Result<(), tonic::Status> {
    let query = pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        reporting_states: vec!["AUS".into()],
        limit: 5,
        ..Default::default()
    };
    let mut stream = exchange.query(query).await?.into_inner();
    while stream.message().await?.is_some() {}
    Ok(())
}

/// Streams AUS's own reports of the category of `like`.
async fn own_reports_of_category(
    exchange: &mut pb::exchange_client::ExchangeClient<tonic::transport::Channel>,
    like: &pb::Report,
) -> tonic::Streaming<pb::QueryResult> {
    let category = match like.details {
        Some(pb::report::Details::Maritime(_)) => pb::Category::MaritimeMovement,
        _ => pb::Category::SmugglingIncident,
    };
    exchange
        .query(pb::QueryRequest {
            category: category as i32,
            reporting_states: vec!["AUS".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The serial of the certificate a server presents to a new connection.
async fn presented_serial(server: &TestServer, trust: &str) -> String {
    let identity = node(&TestPki::new(), "AUS"); // any client cert: we only read the server's
    let stream = common::raw_tls(
        server,
        (trust, &identity),
        (
            rustls::crypto::ring::default_provider(),
            &[&rustls::version::TLS13],
        ),
        &[],
    )
    .await
    .unwrap();
    let cert = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    tidemark::identity::serial_hex(parsed.raw_serial())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_certificate_and_the_ca_roll_over_under_load_without_a_failed_call() {
    let pki = TestPki::new();
    let dir = pki.dir.path().to_owned();
    let old_ca = pki.ca.cert_pem().to_owned();
    // Made with the old CA's common name, as `pki init` for the same trust domain does.
    let new_ca = CertificateAuthority::generate("test CA", Validity::days_from_now(30)).unwrap();
    let bundle = format!("{old_ca}{}", new_ca.cert_pem());
    let server = Arc::new(TestServer::start(&pki).await);
    let key = Arc::new(server.register_new_key(&pki, "AUS").await);

    // Clients trust both CAs (they were told before the rollover); four of them work
    // continuously, two querying and two submitting.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let identity = node(&pki, "AUS");
        let identity = ClientIdentity::from_pem(
            identity.cert_pem().into(),
            identity.key_pem().into(),
            bundle.clone(),
        );
        let (server, key, stop, ok, failed) = (
            server.clone(),
            key.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut exchange = server.exchange(&identity).await;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let result = if w % 2 == 0 {
                    own_reports(&mut exchange).await
                } else {
                    i += 1;
                    submit(
                        &mut exchange,
                        sign(&sample_report("AUS", w * 100_000 + i), &key),
                    )
                    .await
                    .map(|_| ())
                };
                match result {
                    Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("failed call: {e:?}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = presented_serial(&server, &bundle).await;

    // Roll over: trust both CAs, serve a certificate from the new CA, reload.
    let new_server = new_ca
        .issue_server(&["localhost", "127.0.0.1"], Validity::days_from_now(30))
        .unwrap();
    std::fs::write(dir.join("ca.pem"), &bundle).unwrap();
    std::fs::write(dir.join("server.pem"), &new_server.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &new_server.key_pem).unwrap();
    let reloaded = server
        .admin(&operator(&pki))
        .await
        .reload_tls(pb::ReloadTlsRequest {})
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no call failed during the rollover"
    );
    assert!(ok.load(Ordering::SeqCst) > 20, "the load really ran");

    let after = presented_serial(&server, &bundle).await;
    assert_ne!(before, after);
    assert_eq!(after, reloaded.server_certificate_serial);
    // A client holding a certificate from the new CA is accepted too.
    let newcomer = new_ca
        .issue_client(
            &Principal::new(TRUST_DOMAIN, Role::Node(state("IDN")), "new").unwrap(),
            Validity::days_from_now(1),
        )
        .unwrap();
    let identity = ClientIdentity::from_pem(newcomer.cert_pem, newcomer.key_pem, bundle.clone());
    assert_eq!(who(&server, &identity).await.unwrap().state, "IDN");
}

/// The end of a CA rollover: once the old CA is out of the bundle and the server has
/// reloaded it, the old CA's certificates lose their rights on connections already open
/// — a unary call and a stream in progress — as a revoked certificate's do (they kept
/// them, operator calls included, until the connection closed); the new CA's go on.
#[tokio::test]
async fn a_ca_taken_out_of_the_bundle_ends_its_certificates_rights_on_open_connections() {
    let pki = TestPki::new();
    let dir = pki.dir.path().to_owned();
    let old_ca = pki.ca.cert_pem().to_owned();
    // Made with the old CA's common name, as `pki init` for the same trust domain does.
    let new_ca = CertificateAuthority::generate("test CA", Validity::days_from_now(30)).unwrap();
    let bundle = format!("{old_ca}{}", new_ca.cert_pem());
    let server = TestServer::start(&pki).await;
    std::fs::write(dir.join("ca.pem"), &bundle).unwrap();
    let mut old_operator = server.admin(&operator(&pki)).await;
    old_operator
        .reload_tls(pb::ReloadTlsRequest {})
        .await
        .unwrap();
    let issue = |role: Role, name: &str| {
        let principal = Principal::new(TRUST_DOMAIN, role, name).unwrap();
        let issued = new_ca
            .issue_client(&principal, Validity::days_from_now(1))
            .unwrap();
        // The server's own certificate is still the old CA's.
        ClientIdentity::from_pem(issued.cert_pem, issued.key_pem, old_ca.clone())
    };
    let old_channel = server.channel(&node(&pki, "IDN")).await;
    let mut old_node = pb::exchange_client::ExchangeClient::new(old_channel.clone());
    let mut new_node = server
        .exchange(&issue(Role::Node(state("IDN")), "new"))
        .await;
    let mut watch = common::exchange_health_watch(old_channel).await;
    assert!(watch.message().await.unwrap().is_some(), "the watch runs");
    for client in [&mut old_node, &mut new_node] {
        client.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    }

    // The rollover ends: the old CA leaves the bundle, the new one issues (and signs the
    // CRL, which the old one signed: moved aside, as the reload's refusal says).
    std::fs::write(dir.join("ca.pem"), new_ca.cert_pem()).unwrap();
    pki::write_private(&dir.join("ca.key"), &new_ca.key_pem()).unwrap();
    std::fs::rename(dir.join("crl.pem"), dir.join("crl.pem.old-ca")).unwrap();
    let mut admin = server.admin(&issue(Role::Operator, "ops-new")).await;
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    // Its record says whom the server stopped trusting, and that the CA key changed.
    let log = common::audit_log(&mut admin).await;
    let reload = log.iter().rfind(|e| e.action == "reload-tls").unwrap();
    assert!(
        reload.detail.contains("CA removed: ")
            && !reload.detail.contains("CA added: ")
            && reload.detail.contains("CA key replaced"),
        "{reload:?}"
    );
    let refused = old_node.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("no longer chains to a CA this exchange trusts"),
        "{refused:?}"
    );
    let refused = old_operator
        .list_states(pb::ListStatesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    ends_unauthenticated(&mut watch).await;
    new_node.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
}

/// A bundle holding two CAs of one name but with different keys, or a certificate that is
/// not a CA's, is refused at a reload, naming them, and nothing changes: TLS verifiers match certificates and CRLs to their
/// CA by name, so the second CA's certificates would be refused at every handshake (an
/// outside pass saw exactly that in a rollover to a CA of the same name, as `pki init`
/// used to make).
#[tokio::test]
async fn a_bundle_with_two_cas_of_one_name_or_a_leaf_is_refused_naming_them() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    // Two CAs made elsewhere with one name, each on a key of its own.
    let twin = || {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Example national CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem()
    };
    let ca_path = pki.dir.path().join("ca.pem");
    std::fs::write(
        &ca_path,
        format!("{}{}{}", pki.ca.cert_pem(), twin(), twin()),
    )
    .unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("certificates 2 and 3 are both CAs named")
            && refused.message().contains("a name of its own"),
        "{refused:?}"
    );
    // Nor may a certificate that is not a CA's stand in the bundle.
    let leaf = node(&pki, "AUS");
    std::fs::write(
        &ca_path,
        format!("{}{}", pki.ca.cert_pem(), leaf.cert_pem()),
    )
    .unwrap();
    let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("certificate 2 (") && refused.message().contains("not a CA's"),
        "{refused:?}"
    );
    // The same CA twice (as a re-issued CA certificate with its own key would be) is fine.
    std::fs::write(
        &ca_path,
        format!("{}{}", pki.ca.cert_pem(), pki.ca.cert_pem()),
    )
    .unwrap();
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    assert_eq!(who(&server, &node(&pki, "AUS")).await.unwrap().state, "AUS");
    // A CA key the config names and the disk lacks is refused, not taken as a CA kept
    // offline (which is `ca_key = ""`): the server would stop issuing and signing CRLs.
    let (key, aside) = (
        pki.dir.path().join("ca.key"),
        pki.dir.path().join("ca.key.aside"),
    );
    std::fs::rename(&key, &aside).unwrap();
    let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("does not exist") && refused.message().contains("ca_key = \"\""),
        "{refused:?}"
    );
    // An operator's action tried and refused is on record, as one done is.
    let number = common::named_audit_number(&refused);
    let record = common::audit_log(&mut admin)
        .await
        .into_iter()
        .find(|e| e.number == number)
        .unwrap();
    assert_eq!(record.action, "refused ReloadTls", "{record:?}");
    assert!(record.detail.contains("does not exist"), "{record:?}");
    std::fs::rename(&aside, &key).unwrap();
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
}

/// A reload refuses a server certificate no client would accept — a client's, an expired
/// one, one not yet valid — and keeps the one in use: an outside pass put each in use and
/// locked every client out, the operator's too.
#[tokio::test]
async fn a_reload_refuses_a_server_certificate_no_client_would_accept() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let mut admin = server.admin(&operator(&pki)).await;
    let now = time::OffsetDateTime::now_utc();
    let names = ["localhost", "127.0.0.1"];
    let server_cert = |not_before: time::Duration, not_after: time::Duration| {
        let issued = pki
            .ca
            .issue_server(
                &names,
                tidemark::pki::Validity {
                    not_before: now + not_before,
                    not_after: now + not_after,
                },
            )
            .unwrap();
        (issued.cert_pem, issued.key_pem)
    };
    // Made with rcgen, its parameters changed by `change`.
    let made = |change: &dyn Fn(&mut rcgen::CertificateParams)| {
        let issuer = rcgen::Issuer::from_ca_cert_pem(
            pki.ca.cert_pem(),
            rcgen::KeyPair::from_pem(&pki.ca.key_pem()).unwrap(),
        )
        .unwrap();
        let mut params = rcgen::CertificateParams::new(names.map(str::to_owned).to_vec()).unwrap();
        change(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.signed_by(&key, &issuer).unwrap().pem();
        (pem, key.serialize_pem())
    };
    // A chain through an intermediate under the test CA (which allows none below it):
    // a CA's, or one that is no CA at all.
    let through_an_intermediate = |is_ca: bool| {
        let issuer = rcgen::Issuer::from_ca_cert_pem(
            pki.ca.cert_pem(),
            rcgen::KeyPair::from_pem(&pki.ca.key_pem()).unwrap(),
        )
        .unwrap();
        let mut middle = rcgen::CertificateParams::default();
        middle
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Server intermediate");
        if is_ca {
            middle.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let middle_key = rcgen::KeyPair::generate().unwrap();
        let middle_pem = middle.signed_by(&middle_key, &issuer).unwrap().pem();
        let middle = rcgen::Issuer::new(middle, middle_key);
        let params = rcgen::CertificateParams::new(names.map(str::to_owned).to_vec()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.signed_by(&key, &middle).unwrap().pem();
        (format!("{pem}{middle_pem}"), key.serialize_pem())
    };
    let client = node(&pki, "AUS");
    let hour = time::Duration::hours(1);
    for ((cert, key), said) in [
        (
            (client.cert_pem().to_owned(), client.key_pem().to_owned()),
            "serverAuth",
        ),
        (server_cert(-hour * 2, -hour), "expired at"),
        (server_cert(hour, hour * 2), "not valid until"),
        (
            made(&|p| p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::Any]),
            "serverAuth",
        ),
        (
            made(&|p| p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign]),
            "digitalSignature",
        ),
        (through_an_intermediate(true), "pathLenConstraint"),
        (
            through_an_intermediate(false),
            "does not verify for TLS server",
        ),
    ] {
        std::fs::write(pki.dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(pki.dir.path().join("server.key"), key).unwrap();
        let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains(said), "{said}: {refused:?}");
        assert_eq!(who(&server, &client).await.unwrap().state, "AUS", "{said}");
    }
}

/// A server certificate from a CA outside the bundle is put in use (it may be meant: a
/// public CA's) but the reload says so, naming the issuer, and clients that trust only the
/// bundle refuse it; one from the exchange CA again clears it.
#[tokio::test]
async fn a_reload_names_a_server_certificates_issuer_outside_the_bundle() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let mut admin = server.admin(&operator(&pki)).await;
    let names = ["localhost", "127.0.0.1"];
    let validity = || Validity::days_from_now(30);
    let put = |issued: tidemark::pki::IssuedCert| {
        std::fs::write(pki.dir.path().join("server.pem"), issued.cert_pem).unwrap();
        std::fs::write(pki.dir.path().join("server.key"), issued.key_pem).unwrap();
    };
    let elsewhere = CertificateAuthority::generate("Public CA", validity()).unwrap();
    put(elsewhere.issue_server(&names, validity()).unwrap());
    let reloaded = admin
        .reload_tls(pb::ReloadTlsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        reloaded
            .server_certificate_issuer_outside_bundle
            .contains("Public CA"),
        "{reloaded:?}"
    );
    let refused = client::connect(&server.endpoint(), &node(&pki, "AUS"))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("not trusted"), "{refused}");
    put(pki.ca.issue_server(&names, validity()).unwrap());
    let reloaded = admin
        .reload_tls(pb::ReloadTlsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.server_certificate_issuer_outside_bundle, "");
    assert_eq!(who(&server, &node(&pki, "AUS")).await.unwrap().state, "AUS");
}

/// A client chain through an intermediate CA that expires before the leaf: at the
/// intermediate's `notAfter` the leaf loses its rights on the connection it already holds
/// — a unary call is refused and a stream in progress ends — as a revoked certificate's
/// do (a chain check was remembered for up to a minute past it).
#[tokio::test]
async fn an_intermediate_ca_that_expires_ends_its_certificates_rights_on_open_connections() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let pki = TestPki::new();
    // The calls below are checked on a connection still open: with a grace of a second
    // it could be closed (UNAVAILABLE) before the unary call, under load.
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.lapsed_connection_grace_secs = 60;
    })
    .await;
    let now = time::OffsetDateTime::now_utc();
    let params = |name: &str, ca: Option<u8>, not_after| {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = now - time::Duration::hours(1);
        params.not_after = not_after;
        if let Some(path_length) = ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_length));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
        params
    };
    let root_params = params("root CA", Some(1), now + time::Duration::days(30));
    let root_key = KeyPair::generate().unwrap();
    let root_pem = root_params.self_signed(&root_key).unwrap().pem();
    let root = Issuer::new(root_params, root_key);
    let expiry = now + time::Duration::seconds(5);
    let intermediate_params = params("intermediate CA", Some(0), expiry);
    let intermediate_key = KeyPair::generate().unwrap();
    let intermediate_pem = intermediate_params
        .signed_by(&intermediate_key, &root)
        .unwrap()
        .pem();
    let intermediate = Issuer::new(intermediate_params, intermediate_key);
    let principal = Principal::new(TRUST_DOMAIN, Role::Node(state("IDN")), "edge").unwrap();
    let mut leaf_params = params("edge", None, now + time::Duration::days(1));
    leaf_params.subject_alt_names = vec![SanType::URI(principal.spiffe_id().try_into().unwrap())];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_pem = leaf_params
        .signed_by(&leaf_key, &intermediate)
        .unwrap()
        .pem();
    // The exchange trusts the new root beside its own CA.
    std::fs::write(
        pki.dir.path().join("ca.pem"),
        format!("{}{root_pem}", pki.ca.cert_pem()),
    )
    .unwrap();
    server
        .admin(&operator(&pki))
        .await
        .reload_tls(pb::ReloadTlsRequest {})
        .await
        .unwrap();
    let edge = ClientIdentity::from_pem(
        format!("{leaf_pem}{intermediate_pem}"),
        leaf_key.serialize_pem(),
        pki.ca.cert_pem().to_owned(),
    );
    let channel = server.channel(&edge).await;
    let mut exchange = pb::exchange_client::ExchangeClient::new(channel.clone());
    exchange.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let mut watch = common::exchange_health_watch(channel).await;
    assert!(watch.message().await.unwrap().is_some(), "the watch runs");

    // Past the intermediate's notAfter (whole seconds).
    let wait = expiry + time::Duration::seconds(2) - time::OffsetDateTime::now_utc();
    tokio::time::sleep(wait.try_into().unwrap_or_default()).await;
    let refused = exchange.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("no longer chains to a CA this exchange trusts"),
        "{refused:?}"
    );
    ends_unauthenticated(&mut watch).await;
}

#[tokio::test]
async fn reports_signed_before_a_key_compromise_stay_valid_and_later_ones_are_refused() {
    let start = time::OffsetDateTime::now_utc().unix_timestamp();
    let (clock, now) = Clock::manual(start);
    let pki = TestPki::new();
    let server =
        TestServer::start_with_clock(&pki, tempfile::TempDir::new().unwrap(), |_| {}, clock).await;
    let key = server.register_new_key(&pki, "AUS").await;
    let mut aus = server.exchange(&node(&pki, "AUS")).await;
    let before = sample_report("AUS", 1);
    let receipt = submit(&mut aus, sign(&before, &key)).await.unwrap();

    now.fetch_add(100, Ordering::SeqCst);
    server
        .admin(&operator(&pki))
        .await
        .revoke_signing_key(pb::RevokeSigningKeyRequest {
            key_id: key.key_id().into(),
            compromised_at_unix: start + 50,
            reason: "key-compromise".into(),
        })
        .await
        .unwrap();
    // Revoked again as of later, for another reason: the earlier revocation stands, and
    // the record says so; an earlier time moves it.
    let mut admin = server.admin(&operator(&pki)).await;
    for (at, reason, kept, said) in [
        (
            start + 80,
            "superseded",
            start + 50,
            "changes nothing".to_owned(),
        ),
        (
            start + 40,
            "key-compromise",
            start + 40,
            format!(
                "revocation moved earlier, from {} (key-compromise) to {} (key-compromise)",
                tidemark::clock::format_time(start + 50),
                tidemark::clock::format_time(start + 40)
            ),
        ),
    ] {
        let info = admin
            .revoke_signing_key(pb::RevokeSigningKeyRequest {
                key_id: key.key_id().into(),
                compromised_at_unix: at,
                reason: reason.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (info.revoked_at_unix, info.revocation_reason.as_str()),
            (kept, "key-compromise")
        );
        let log = common::audit_log(&mut admin).await;
        let record = log.iter().rev().find(|e| e.action == "revoke-key").unwrap();
        assert!(record.detail.contains(&said), "{}", record.detail);
    }
    // A time before 1970 is no revocation time (nor a validity's bound).
    let refused = admin
        .revoke_signing_key(pb::RevokeSigningKeyRequest {
            key_id: key.key_id().into(),
            compromised_at_unix: -5,
            reason: "key-compromise".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("before 1970"), "{refused:?}");
    now.fetch_add(10, Ordering::SeqCst);
    let status = submit(&mut aus, sign(&sample_report("AUS", 2), &key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("revoked"));

    // The earlier report is still served, byte for byte, and its receipt says when.
    let accepted = receipt.accepted.unwrap();
    assert!(accepted.accepted_at_unix < start + 50);
    let mut stream = own_reports_of_category(&mut aus, &before).await;
    let result = stream.message().await.unwrap().unwrap();
    let envelope = result.envelope.unwrap();
    assert_eq!(envelope.payload, before.encode_to_vec());
    let signed = tidemark::envelope::pae(&envelope.payload_type, &envelope.payload);
    assert!(
        key.public_key()
            .verify(&signed, &envelope.signatures[0].sig)
    );
}

/// A signing key of small order is refused at registration, naming why: a signature
/// "by" it is made without any private key (an outside pass registered the identity
/// point and had reports signed with a fixed value accepted).
#[tokio::test]
async fn a_weak_ed25519_signing_key_is_refused_at_registration() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    // SubjectPublicKeyInfo for Ed25519 (RFC 8410) around the identity point.
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0x01,
    ];
    der.extend([0; 31]);
    let pem = tidemark::signing::pem_encode("PUBLIC KEY", &der);
    let refused = server
        .admin(&operator(&pki))
        .await
        .register_signing_key(pb::RegisterSigningKeyRequest {
            state: "THA".into(),
            public_key_pem: pem,
            valid_from_unix: 0,
            valid_until_unix: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("small order")
            && refused.message().contains("without any private key"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn every_admin_rpc_refuses_non_operators() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    for identity in [
        node(&pki, "AUS"),
        pki.client(Role::StateAnalyst(state("AUS")), "a"),
        pki.client(Role::RegionalAnalyst, "r"),
    ] {
        let mut admin = server.admin(&identity).await;
        let codes = [
            admin
                .register_signing_key(pb::RegisterSigningKeyRequest::default())
                .await
                .map(|_| ()),
            admin
                .revoke_signing_key(pb::RevokeSigningKeyRequest::default())
                .await
                .map(|_| ()),
            admin
                .list_signing_keys(pb::ListSigningKeysRequest::default())
                .await
                .map(|_| ()),
            admin
                .audit_log(pb::AuditLogRequest::default())
                .await
                .map(|_| ()),
            admin
                .enrol_state(pb::StateRequest {
                    state: "AUS".into(),
                })
                .await
                .map(|_| ()),
            admin
                .suspend_state(pb::StateRequest {
                    state: "AUS".into(),
                })
                .await
                .map(|_| ()),
            admin
                .list_states(pb::ListStatesRequest {})
                .await
                .map(|_| ()),
            admin
                .issue_certificate(pb::IssueCertificateRequest::default())
                .await
                .map(|_| ()),
            admin
                .revoke_certificate(pb::RevokeCertificateRequest::default())
                .await
                .map(|_| ()),
            admin.reload_tls(pb::ReloadTlsRequest {}).await.map(|_| ()),
            admin
                .list_certificates(pb::ListCertificatesRequest::default())
                .await
                .map(|_| ()),
        ];
        for (i, result) in codes.into_iter().enumerate() {
            let status = result.expect_err("refused");
            assert_eq!(status.code(), Code::PermissionDenied, "rpc {i}: {status:?}");
        }
    }
}

/// The SubjectPublicKeyInfo of a PEM certificate or CSR, DER.
fn spki_of(pem: &str) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    if block.label == "CERTIFICATE REQUEST" {
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
                .unwrap();
        csr.certification_request_info.subject_pki.raw.to_vec()
    } else {
        let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).unwrap();
        cert.public_key().raw.to_vec()
    }
}

#[tokio::test]
async fn a_csr_is_certified_with_exactly_its_key_or_refused_naming_the_accepted_types() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    enrol(&server, &pki, "AUS").await;
    let mut admin = server.admin(&operator(&pki)).await;
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/csr");
    let ops = admin.clone();
    let issue = |csr_pem: String| {
        let mut admin = ops.clone();
        async move {
            admin
                .issue_certificate(pb::IssueCertificateRequest { csr_pem, days: 30 })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    // Whatever hash signed the CSR, the certificate carries the CSR's own key.
    for file in [
        "p384-sha256.csr.pem",
        "p256-sha384.csr.pem",
        "ed25519.csr.pem",
    ] {
        let csr = std::fs::read_to_string(data.join(file)).unwrap();
        let issued = issue(csr.clone()).await.unwrap();
        assert_eq!(spki_of(&issued.certificate_pem), spki_of(&csr), "{file}");
    }
    for file in ["rsa2048.csr.pem", "p521.csr.pem"] {
        let csr = std::fs::read_to_string(data.join(file)).unwrap();
        let status = issue(csr).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{file}");
        assert!(
            status.message().contains(pki::CSR_KEY_TYPES),
            "{file}: {}",
            status.message()
        );
    }
    // A key TLS here cannot use (a compressed EC point) is refused for what it is, not
    // as a bad signature.
    let csr = std::fs::read_to_string(data.join("p256-compressed.csr.pem")).unwrap();
    let status = issue(csr).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("compressed point"),
        "{}",
        status.message()
    );
    // Nothing refused was recorded as issued.
    let listed = admin
        .list_certificates(pb::ListCertificatesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert_eq!(listed.len(), 3);

    // A P-384 key made here: its certificate works for TLS.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://{TRUST_DOMAIN}/state/AUS/node/p384-live")
            .try_into()
            .unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let issued = issue(csr).await.unwrap();
    let identity = ClientIdentity::from_pem(
        issued.certificate_pem,
        key.serialize_pem(),
        pki.ca.cert_pem().to_owned(),
    );
    assert_eq!(who(&server, &identity).await.unwrap().name, "p384-live");
}

#[tokio::test]
async fn identities_that_break_the_spiffe_rules_are_refused_at_issuance_and_authentication() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    enrol(&server, &pki, "AUS").await;
    let mut admin = server.admin(&operator(&pki)).await;
    for path in [
        "state/AUS/node/..",
        "state/AUS/node/.",
        "state/AUS/node/.hidden",
        "state/AUS//node/x",
        "operator/x/",
        "state/AUS/node/a%2fb",
    ] {
        let uri = format!("spiffe://{TRUST_DOMAIN}/{path}");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.clone().try_into().unwrap())];
        let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let status = admin
            .issue_certificate(pb::IssueCertificateRequest { csr_pem, days: 30 })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{uri}: {status:?}");
        // A certificate that names it anyway (made with the CA files) does not authenticate.
        let identity = pki.client_with_uris(&[&uri], Validity::days_from_now(1));
        let status = who(&server, &identity).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{uri}: {status:?}");
        assert!(
            status.message().contains("not a valid"),
            "{uri}: {status:?}"
        );
    }
}

#[tokio::test]
async fn a_key_revoked_as_compromised_is_not_certified_again() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    enrol(&server, &pki, "AUS").await;
    let mut admin = server.admin(&operator(&pki)).await;
    let principal = Principal::new(TRUST_DOMAIN, Role::Node(state("AUS")), "reused").unwrap();
    let (key_pem, csr_pem) = pki::make_csr(&principal).unwrap();
    let issue = |admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>| {
        let mut admin = admin.clone();
        let csr_pem = csr_pem.clone();
        async move {
            admin
                .issue_certificate(pb::IssueCertificateRequest { csr_pem, days: 30 })
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let revoke = |serial: String, reason: &str| pb::RevokeCertificateRequest {
        serial,
        reason: reason.to_owned(),
        ..Default::default()
    };
    // Superseded: the same key may be certified again.
    let first = issue(&mut admin).await.unwrap();
    admin
        .revoke_certificate(revoke(first.serial, "superseded"))
        .await
        .unwrap();
    let second = issue(&mut admin).await.unwrap();
    let spare = issue(&mut admin).await.unwrap();
    let spare =
        ClientIdentity::from_pem(spare.certificate_pem, key_pem, pki.ca.cert_pem().to_owned());
    assert_eq!(who(&server, &spare).await.unwrap().name, "reused");
    // Compromised: never again, and no other certificate of the key is admitted, on a
    // connection already open either.
    let open = server.exchange(&spare).await;
    // A stream already open on it, too: a health Watch (it needs no standing).
    let check = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    let mut watch =
        tonic_health::pb::health_client::HealthClient::new(server.channel(&spare).await)
            .watch(check)
            .await
            .unwrap()
            .into_inner();
    watch.message().await.unwrap().unwrap();
    admin
        .revoke_certificate(revoke(second.serial.clone(), "key-compromise"))
        .await
        .unwrap();
    let ended = loop {
        let next = tokio::time::timeout(Duration::from_secs(3), watch.message())
            .await
            .expect("the open watch of a compromised key's certificate still runs 3 s on");
        if !matches!(next, Ok(Some(_))) {
            break next;
        }
    };
    let ended = ended.expect_err("the watch ends refused");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    let status = issue(&mut admin).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains(&second.serial), "{status:?}");
    for refused in [
        who(&server, &spare).await.unwrap_err(),
        open.clone()
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap_err(),
    ] {
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(
            refused.message().contains("reported compromised")
                && refused.message().contains(&second.serial),
            "{refused:?}"
        );
    }
}

/// Certificates made offline with the CA files: the server knows their keys only when
/// the operator presents the certificate, before or after it reports a compromise, in
/// whichever form; the CRL lists each serial once, as a compromise.
#[tokio::test]
async fn a_key_reported_compromised_is_barred_however_the_certificate_was_named() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    enrol(&server, &pki, "AUS").await;
    let mut admin = server.admin(&operator(&pki)).await;
    // Each certificate revoked twice — by serial (for every issuer) or presented, for a
    // reason — and whether the second says nothing new.
    let orders = [
        (
            "stolen",
            [(false, "key-compromise"), (false, "key-compromise")],
            true,
        ),
        (
            "retired",
            [(true, "superseded"), (false, "key-compromise")],
            false,
        ),
        (
            "presented",
            [(false, "superseded"), (true, "key-compromise")],
            false,
        ),
        (
            "unknown",
            [(true, "key-compromise"), (false, "superseded")],
            false,
        ),
    ];
    let mut serials = Vec::new();
    for (name, revocations, second_changes_nothing) in orders {
        let principal = Principal::new(TRUST_DOMAIN, Role::Node(state("AUS")), name).unwrap();
        let issued = pki
            .ca
            .issue_client(&principal, Validity::days_from_now(1))
            .unwrap();
        let serial = who_serial(&issued.cert_pem);
        let mut answers = Vec::new();
        for (by_serial, reason) in revocations {
            let request = revoking(if by_serial { &serial } else { &issued.cert_pem }, reason);
            let answer = admin.revoke_certificate(request).await.unwrap();
            answers.push(answer.into_inner());
        }
        assert_eq!(
            answers[1].already_revoked, second_changes_nothing,
            "{name}: {answers:?}"
        );
        // Presented again for another reason: the revocation that stands says compromise.
        let again = admin
            .revoke_certificate(revoking(&issued.cert_pem, "superseded"))
            .await
            .unwrap()
            .into_inner();
        assert!(
            again.already_revoked && again.reason == "key-compromise",
            "{name}: {again:?}"
        );
        // Its key is not certified again, under another name.
        let csr_pem = csr_of_key(&issued.key_pem, &format!("{name}-2"));
        let status = admin
            .issue_certificate(pb::IssueCertificateRequest { csr_pem, days: 1 })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{name}: {status:?}"
        );
        assert!(status.message().contains(&serial), "{name}: {status:?}");
        serials.push(serial);
    }
    let crl = server
        .exchange(&operator(&pki))
        .await
        .get_crl(pb::GetCrlRequest {})
        .await
        .unwrap()
        .into_inner()
        .crl_pem;
    let entries = crl_entries(&crl);
    for serial in serials {
        let listed: Vec<_> = entries.iter().filter(|(s, _)| *s == serial).collect();
        assert_eq!(listed.len(), 1, "{serial}: {entries:?}");
        assert_eq!(listed[0].1, Some(1), "{serial}: keyCompromise is reason 1");
    }
}

/// An operator cannot report its own key compromised through another certificate of it
/// (that would end its own access, as revoking its own certificate would); another
/// operator can, and the first is then shut out.
#[tokio::test]
async fn an_operator_cannot_report_its_own_key_compromised() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let principal = |role, name| Principal::new(TRUST_DOMAIN, role, name).unwrap();
    let own = pki
        .ca
        .issue_client(
            &principal(Role::Operator, "ops-own"),
            Validity::days_from_now(1),
        )
        .unwrap();
    let operator_identity = pki.identity(&own);
    // A node certificate of the same key, made with the CA files.
    let csr = pki::read_csr(&csr_of_key(&own.key_pem, "twin")).unwrap();
    let twin = pki
        .ca
        .issue_from_csr(
            &csr,
            &principal(Role::Node(state("AUS")), "twin"),
            Validity::days_from_now(1),
        )
        .unwrap();
    let report = |reason: &str| revoking(&twin, reason);
    let mut admin = server.admin(&operator_identity).await;
    let refused = admin
        .revoke_certificate(report("key-compromise"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("has the key of the certificate making this call"),
        "{refused:?}"
    );
    who(&server, &operator_identity).await.unwrap();
    // Another operator reports it: the first is shut out.
    server
        .admin(&operator(&pki))
        .await
        .revoke_certificate(report("key-compromise"))
        .await
        .unwrap();
    let out = who(&server, &operator_identity).await.unwrap_err();
    assert_eq!(out.code(), Code::Unauthenticated, "{out:?}");
}

/// A certificate made offline is known by its key once a handshake has presented it: a
/// compromise reported by its serial alone then bars every certificate of the key (and
/// is refused when that key is the caller's own); a serial the server never saw is
/// revoked without its key, and the answer says so.
#[tokio::test]
async fn a_compromise_by_serial_bars_the_key_a_handshake_showed() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    enrol(&server, &pki, "AUS").await;
    let principal = |role, name| Principal::new(TRUST_DOMAIN, role, name).unwrap();
    let node = pki
        .ca
        .issue_client(
            &principal(Role::Node(state("AUS")), "main"),
            Validity::days_from_now(1),
        )
        .unwrap();
    // A second certificate of the node's key.
    let spare = another_of(&pki, &node, "spare");
    let mut admin = server.admin(&operator(&pki)).await;
    // Never presented: revoked by serial without its key.
    let unseen = admin
        .revoke_certificate(revoking(&who_serial(&spare.cert_pem), "key-compromise"))
        .await
        .unwrap()
        .into_inner();
    assert!(unseen.key_sha256.is_empty(), "{unseen:?}");
    who(&server, &pki.identity(&node)).await.unwrap();
    // Another one of the key, presented in a handshake (refused as revoked or not).
    let third = another_of(&pki, &node, "third");
    who(&server, &pki.identity(&third)).await.unwrap();
    let mut open = server.exchange(&pki.identity(&node)).await;
    open.who_am_i(pb::WhoAmIRequest {}).await.unwrap();
    let seen = admin
        .revoke_certificate(revoking(&who_serial(&third.cert_pem), "key-compromise"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.key_sha256, key_hex(&node), "{seen:?}");
    for mut exchange in [open, server.exchange(&pki.identity(&node)).await] {
        let refused = exchange.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        assert!(
            refused.message().contains("reported compromised")
                && refused.message().contains(&format!(
                    "certificate {} was revoked",
                    who_serial(&third.cert_pem)
                ))
                && refused.message().contains(" of serialNumber="),
            "names the revocation, and the certificate's issuer: {refused:?}"
        );
    }
    // The operator's own key, seen through another certificate, by serial: refused.
    let own = pki
        .ca
        .issue_client(
            &principal(Role::Operator, "ops-own"),
            Validity::days_from_now(1),
        )
        .unwrap();
    let twin = another_of(&pki, &own, "twin");
    who(&server, &pki.identity(&twin)).await.unwrap();
    let refused = server
        .admin(&pki.identity(&own))
        .await
        .revoke_certificate(revoking(&who_serial(&twin.cert_pem), "key-compromise"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    who(&server, &pki.identity(&own)).await.unwrap();
}

/// The key a handshake showed is kept across a restart: a compromise reported by serial
/// after it still bars every certificate of the key.
#[tokio::test]
async fn a_key_a_handshake_showed_is_known_after_a_restart() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    enrol(&server, &pki, "AUS").await;
    let node = pki
        .ca
        .issue_client(
            &Principal::new(TRUST_DOMAIN, Role::Node(state("AUS")), "main").unwrap(),
            Validity::days_from_now(1),
        )
        .unwrap();
    let spare = another_of(&pki, &node, "spare");
    who(&server, &pki.identity(&spare)).await.unwrap();
    let server = TestServer::start_with(&pki, server.stop().await, |_| {}).await;
    who(&server, &pki.identity(&node)).await.unwrap();
    let barred = server
        .admin(&operator(&pki))
        .await
        .revoke_certificate(revoking(&who_serial(&spare.cert_pem), "key-compromise"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(barred.key_sha256, key_hex(&node), "{barred:?}");
    let refused = who(&server, &pki.identity(&node)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

/// The SHA-256 of `issued`'s key (its SubjectPublicKeyInfo), in hex, as a revocation
/// names it.
fn key_hex(issued: &IssuedCert) -> String {
    let csr = pki::read_csr(&csr_of_key(&issued.key_pem, "k")).unwrap();
    hex::encode(csr.key_fingerprint())
}

/// Another certificate of `of`'s key, for AUS's node `name`, made with the CA files (not
/// issued through the server).
fn another_of(pki: &TestPki, of: &IssuedCert, name: &str) -> IssuedCert {
    let principal = Principal::new(TRUST_DOMAIN, Role::Node(state("AUS")), name).unwrap();
    let csr = pki::read_csr(&csr_of_key(&of.key_pem, name)).unwrap();
    IssuedCert {
        cert_pem: pki
            .ca
            .issue_from_csr(&csr, &principal, Validity::days_from_now(1))
            .unwrap(),
        key_pem: of.key_pem.clone(),
    }
}

/// A revocation of the certificate `named`: its PEM, or its serial.
fn revoking(named: &str, reason: &str) -> pb::RevokeCertificateRequest {
    let request = if named.contains("BEGIN CERTIFICATE") {
        pb::RevokeCertificateRequest {
            certificate_pem: named.to_owned(),
            ..Default::default()
        }
    } else {
        pb::RevokeCertificateRequest {
            serial: named.to_owned(),
            ..Default::default()
        }
    };
    pb::RevokeCertificateRequest {
        reason: reason.to_owned(),
        ..request
    }
}

/// A CSR of the key `key_pem` for AUS's node `name`.
fn csr_of_key(key_pem: &str, name: &str) -> String {
    let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
    let mut params = rcgen::CertificateParams::default();
    let uri = format!("spiffe://{TRUST_DOMAIN}/state/AUS/node/{name}");
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// The CRL's entries: serial and reason code.
fn crl_entries(pem: &str) -> Vec<(String, Option<u8>)> {
    use rustls::pki_types::{CertificateRevocationListDer, pem::PemObject};
    use x509_parser::{prelude::FromDer, revocation_list::CertificateRevocationList};
    let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, crl) = CertificateRevocationList::from_der(der.as_ref()).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| {
            (
                tidemark::identity::serial_hex(r.raw_serial()),
                r.reason_code().map(|(_, code)| code.0),
            )
        })
        .collect()
}

/// The serial of a PEM certificate as revocations name it (lower-case hex).
fn who_serial(pem: &str) -> String {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    tidemark::identity::serial_hex(cert.raw_serial())
}

/// An administrative action and its audit record are one transaction: a disk that fails
/// at any sync of the commit leaves both or neither, and an action answered OK has both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_action_is_never_in_force_without_its_audit_record() {
    use tidemark::server::Server;

    let pki = TestPki::new();
    let (mut refused, mut done) = (0, 0);
    for syncs in 0..8 {
        let data = tempfile::TempDir::new().unwrap();
        let config = pki.config(&data);
        let (store, disk) = tidemark::Store::open_on_failing_disk(&config.store).unwrap();
        let server = Server::build_on(config.clone(), store).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("https://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        let channel = client::connect(&endpoint, &operator(&pki)).await.unwrap();
        let mut admin = pb::admin_client::AdminClient::new(channel);
        // The key the handshake presented is kept with the writer's next batch: a read on
        // record (a batch of its own, committed before it answers) takes it there before
        // the disk starts failing.
        admin.list_states(pb::ListStatesRequest {}).await.unwrap();
        disk.start_after_syncs(syncs);
        let answer = admin
            .suspend_state(pb::StateRequest {
                state: "IDN".into(),
            })
            .await;
        match &answer {
            Ok(_) => done += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                refused += 1;
            }
        }
        let _ = stop.send(());
        // A server whose disk failed stops by itself, with that error.
        let _ = running.await.unwrap();

        // The store as a working disk reads it.
        let store = common::open_store_after_stop(&data).await;
        let server =
            TestServer::run(Server::build_on(pki.config(&data), store).unwrap(), data).await;
        let mut admin = server.admin(&operator(&pki)).await;
        let suspended = admin
            .list_states(pb::ListStatesRequest {})
            .await
            .unwrap()
            .into_inner()
            .states
            .iter()
            .any(|s| s.state == "IDN" && s.suspended);
        let recorded = common::audit_log(&mut admin)
            .await
            .iter()
            .any(|e| e.action == "suspend-state" && e.detail == "IDN");
        assert_eq!(
            suspended, recorded,
            "disk failing after {syncs} syncs: suspended {suspended}, recorded {recorded}"
        );
        if answer.is_ok() {
            assert!(
                suspended,
                "answered OK after {syncs} syncs, but not in force"
            );
        }
        server.stop().await;
    }
    assert!(refused > 0 && done > 0, "refused {refused}, done {done}");
}

/// An operator's reads of the lists and of the audit log are on record too, each with
/// what it returned.
#[tokio::test]
async fn operator_reads_are_audited() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    enrol(&server, &pki, "IDN").await;
    let mut admin = server.admin(&operator(&pki)).await;
    admin.list_states(pb::ListStatesRequest {}).await.unwrap();
    admin
        .list_certificates(pb::ListCertificatesRequest {
            expiring_within_days: 30,
        })
        .await
        .unwrap();
    admin
        .list_signing_keys(pb::ListSigningKeysRequest {
            state: "IDN".into(),
        })
        .await
        .unwrap();
    let read = admin
        .audit_log(pb::AuditLogRequest { after: 0, limit: 2 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(read.len(), 2);
    let log = common::audit_log(&mut admin).await;
    let ops = Principal::new(TRUST_DOMAIN, Role::Operator, "ops-1")
        .unwrap()
        .spiffe_id();
    for (action, detail) in [
        ("list-states", "1 states".to_owned()),
        (
            "list-certificates",
            "0 certificates expiring within 30 days".to_owned(),
        ),
        ("list-signing-keys", "0 keys of IDN".to_owned()),
        (
            "read-audit-log",
            format!(
                "2 records ({} to {}) after 0, limit 2",
                read[0].number, read[1].number
            ),
        ),
    ] {
        assert!(
            log.iter()
                .any(|e| e.action == action && e.detail == detail && e.principal == ops),
            "{action} {detail:?} not on record: {log:?}"
        );
    }
    // Paging to the end ends: a page of nothing but operator reads is not recorded.
    let (mut after, mut pages) = (0, 0);
    loop {
        let page = admin
            .audit_log(pb::AuditLogRequest { after, limit: 3 })
            .await
            .unwrap()
            .into_inner()
            .entries;
        let Some(last) = page.last() else { break };
        after = last.number;
        pages += 1;
        assert!(pages < 20, "paging the audit log does not end");
    }
    // A bad state filter is refused, not put on record as given.
    let refused = admin
        .list_signing_keys(pb::ListSigningKeysRequest {
            state: "not a state".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
}

/// A certificate revoked again keeps its first revocation, and the record says so;
/// reported compromised, that revocation takes the reason.
#[tokio::test]
async fn a_certificate_revoked_again_keeps_its_first_revocation() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let mut admin = server.admin(&operator(&pki)).await;
    for reason in ["superseded", "key-compromise", "superseded"] {
        admin
            .revoke_certificate(pb::RevokeCertificateRequest {
                serial: "0a1b2c".into(),
                reason: reason.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let revocations: Vec<_> = common::audit_log(&mut admin)
        .await
        .into_iter()
        .filter(|e| e.action == "revoke-certificate")
        .map(|e| e.detail)
        .collect();
    assert_eq!(revocations.len(), 3, "{revocations:?}");
    assert_eq!(revocations[0], "serial 0a1b2c (superseded)");
    // Within the second of the first, the revocation stands as if made compromised.
    assert!(
        revocations[1] == "serial 0a1b2c (key-compromise)"
            || (revocations[1].starts_with("serial 0a1b2c (revoked at ")
                && revocations[1].ends_with(
                    "its key is now reported compromised (key-compromise) and is not \
                     certified again"
                )),
        "{revocations:?}"
    );
    assert!(
        revocations[2].starts_with("serial 0a1b2c already revoked at ")
            && revocations[2]
                .ends_with("(key-compromise); revoking it again (superseded) changes nothing"),
        "{revocations:?}"
    );
}

/// An administrative record says what the action changed — nothing, when it is taken
/// again — and takes names, not free text, so no record can pass for another.
#[tokio::test]
async fn admin_records_say_what_changed_and_take_no_free_text() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let mut admin = server.admin(&operator(&pki)).await;
    let state = || pb::StateRequest {
        state: "NZL".into(),
    };
    // Each answer says whether it changed anything: only the second enrolment did not.
    let mut unchanged = Vec::new();
    for enrol in [true, true, false, true] {
        let info = if enrol {
            admin.enrol_state(state()).await
        } else {
            admin.suspend_state(state()).await
        };
        unchanged.push(info.unwrap().into_inner().unchanged);
    }
    assert_eq!(unchanged, [false, true, false, false]);
    let (key, _) = tidemark::signing::SigningKey::generate().unwrap();
    let register = || pb::RegisterSigningKeyRequest {
        state: "NZL".into(),
        // A file's contents passed through: its byte-order mark is skipped.
        public_key_pem: format!("\u{feff}{}", key.public_key().to_spki_pem()),
        ..Default::default()
    };
    let registered = admin
        .register_signing_key(register())
        .await
        .unwrap()
        .into_inner();
    admin.register_signing_key(register()).await.unwrap();
    // The server's own receipt and log key is no state's.
    let server_key = server.receipt_key(&node(&pki, "AUS")).await;
    let refused = admin
        .register_signing_key(pb::RegisterSigningKeyRequest {
            public_key_pem: server_key.to_spki_pem(),
            ..register()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("server's own"), "{refused:?}");
    let details: Vec<_> = common::audit_log(&mut admin)
        .await
        .into_iter()
        .filter(|e| e.action.ends_with("-state") || e.action == "register-key")
        .map(|e| (e.action, e.detail))
        .collect();
    let id = key.key_id();
    let expected = [
        ("enrol-state", "NZL".to_owned()),
        (
            "enrol-state",
            "NZL (already enrolled; changes nothing)".to_owned(),
        ),
        ("suspend-state", "NZL".to_owned()),
        ("enrol-state", "NZL (reinstated)".to_owned()),
        (
            "register-key",
            format!(
                "key {id} for NZL, valid from {} with no end",
                tidemark::clock::format_time(registered.valid_from_unix)
            ),
        ),
        (
            "register-key",
            format!("key {id} for NZL (already registered; changes nothing)"),
        ),
    ];
    assert_eq!(
        details,
        expected.map(|(a, d)| (a.to_owned(), d)),
        "{details:#?}"
    );

    a_key_revocation_takes_a_reason_name_and_one_spelling_of_its_id(&mut admin, id).await;
    a_revoked_key_is_not_registered_again(&mut admin, register()).await;
}

/// A key revocation's reason is a name, and its key id the one lower-case spelling
/// `admin keys` lists: anything else is refused as such; then `id` is revoked.
async fn a_key_revocation_takes_a_reason_name_and_one_spelling_of_its_id(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    id: &str,
) {
    let revoke = |key_id: String, reason: &str| pb::RevokeSigningKeyRequest {
        key_id,
        reason: reason.into(),
        compromised_at_unix: 0,
    };
    let long = "a".repeat(8_000);
    for reason in ["superseded)\n#999 fake record", "because", &long] {
        let refused = admin
            .revoke_signing_key(revoke(id.to_owned(), reason))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains("key-compromise"), "{refused:?}");
        // Quoted short: a long value does not overflow the caller's header limit.
        assert!(
            refused.message().len() < 1_024,
            "{}",
            refused.message().len()
        );
    }
    // One spelling: the lower-case id `admin keys` lists.
    for bad in ["", "not-a-key-id", &id[..63], &id.to_uppercase()] {
        let refused = admin
            .revoke_signing_key(revoke(bad.to_owned(), "superseded"))
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{bad:?}: {refused:?}"
        );
    }
    let revoked = admin
        .revoke_signing_key(revoke(id.to_owned(), "superseded"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (revoked.key_id.as_str(), revoked.revocation_reason.as_str()),
        (id, "superseded")
    );
}

/// Registering a revoked key again is refused, saying what to do, and on record.
async fn a_revoked_key_is_not_registered_again(
    admin: &mut pb::admin_client::AdminClient<tonic::transport::Channel>,
    register: pb::RegisterSigningKeyRequest,
) {
    let refused = admin.register_signing_key(register).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("was revoked as of")
            && refused.message().contains("(superseded)")
            && refused.message().contains("tidemark keygen"),
        "{refused:?}"
    );
    let last = common::audit_log(admin).await.pop().unwrap();
    assert_eq!(last.action, "refused RegisterSigningKey", "{last:?}");
}

/// A revocation the CRL file lists and the store does not — written by another server
/// of the exchange, or published by an offline CA — is enforced once the server re-reads
/// its files (ReloadTls, SIGHUP), recorded then (by the server, with its log leaf), and
/// kept when the server next rewrites the CRL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_added_to_the_crl_file_is_enforced_on_reload_and_never_dropped() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let outsider = pki.client(Role::Node(state("THA")), "listed-elsewhere");
    let serial = server
        .exchange(&outsider)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificate_serial;
    let crl = pki
        .ca
        .crl(
            &[pki::RevokedEntry {
                serial: serial.clone(),
                revoked_at: time::OffsetDateTime::now_utc(),
                reason: pki::RevocationReason::KeyCompromise,
            }],
            1,
            7,
        )
        .unwrap();
    // Saved by an editor that puts a byte-order mark first: read all the same.
    std::fs::write(pki.dir.path().join("crl.pem"), format!("\u{feff}{crl}")).unwrap();
    let mut admin = server.admin(&operator(&pki)).await;
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    let refused = server
        .exchange(&outsider)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // Not in force without its record: the server records it, and the reload names it.
    let log = common::audit_log(&mut admin).await;
    let revocation = log
        .iter()
        .find(|e| e.action == "revoke-certificate" && e.detail.contains(&serial))
        .expect("the revocation found in the CRL file is on record");
    assert_eq!(
        revocation.principal,
        format!("spiffe://{TRUST_DOMAIN}/server")
    );
    let reload = log.iter().rfind(|e| e.action == "reload-tls").unwrap();
    assert!(reload.detail.contains(&serial), "{reload:?}");
    assert!(revocation.number < reload.number);
    // Recorded once: a second reload finds it in the store.
    admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap();
    let log = common::audit_log(&mut admin).await;
    let again = log.iter().rfind(|e| e.action == "reload-tls").unwrap();
    assert!(!again.detail.contains(&serial), "{again:?}");
    let records = log
        .iter()
        .filter(|e| e.action == "revoke-certificate" && e.detail.contains(&serial))
        .count();
    assert_eq!(records, 1);
    // Another change rewrites the CRL from the store: the entry stays in it.
    enrol(&server, &pki, "FRA").await;
    admin
        .suspend_state(pb::StateRequest {
            state: "FRA".into(),
        })
        .await
        .unwrap();
    let text = std::fs::read_to_string(pki.dir.path().join("crl.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes()).unwrap();
    let (_, parsed) = x509_parser::parse_x509_crl(&pem.contents).unwrap();
    let listed: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| tidemark::identity::serial_hex(r.raw_serial()))
        .collect();
    assert!(listed.contains(&serial), "{listed:?}");
    // A CRL the CA did not sign is refused by the reload, saying so, and changes nothing.
    let other = CertificateAuthority::generate("another CA", Validity::days_from_now(30)).unwrap();
    std::fs::write(
        pki.dir.path().join("crl.pem"),
        other.crl(&[], 2, 7).unwrap(),
    )
    .unwrap();
    let refused = admin.reload_tls(pb::ReloadTlsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("which is no CA of"),
        "{refused:?}"
    );
    assert!(
        server
            .exchange(&outsider)
            .await
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .is_err()
    );
}
