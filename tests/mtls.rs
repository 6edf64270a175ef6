//! Mutual TLS and principals: who gets in, who does not, and what they are told.

mod common;

use common::{TRUST_DOMAIN, TestPki, TestServer, state};
use rustls::crypto::{CryptoProvider, ring};
use tidemark::{
    client,
    identity::Role,
    pb,
    pki::{CertificateAuthority, Validity},
};
use time::{Duration, OffsetDateTime};
use tokio::io::AsyncReadExt;
use tonic::{
    Code,
    transport::{Certificate, ClientTlsConfig, Endpoint},
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

async fn who_am_i(
    server: &TestServer,
    identity: &client::ClientIdentity,
) -> Result<pb::WhoAmIResponse, tonic::Status> {
    let mut exchange = pb::exchange_client::ExchangeClient::new(
        client::connect(&server.endpoint(), identity)
            .await
            .expect("TLS 1.3 handshakes complete before the server checks the client"),
    );
    exchange
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn whoami_names_each_role_from_its_certificate() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let cases = [
        (
            Role::Node(state("AUS")),
            "canberra-1",
            pb::Role::Node,
            "AUS",
        ),
        (
            Role::StateAnalyst(state("IDN")),
            "jakarta-analyst",
            pb::Role::StateAnalyst,
            "IDN",
        ),
        (
            Role::RegionalAnalyst,
            "bangkok-1",
            pb::Role::RegionalAnalyst,
            "",
        ),
        (Role::Operator, "ops-1", pb::Role::Operator, ""),
    ];
    for (role, name, expected_role, expected_state) in cases {
        let me = who_am_i(&server, &pki.client(role, name)).await.unwrap();
        assert_eq!(me.role(), expected_role, "{name}");
        assert_eq!(me.state, expected_state, "{name}");
        assert_eq!(me.name, name);
        assert_eq!(me.trust_domain, TRUST_DOMAIN);
        assert!(
            me.spiffe_id.ends_with(&format!("/{name}")),
            "{}",
            me.spiffe_id
        );
        assert_eq!(me.certificate_serial.len(), 32, "16-byte serial in hex");
        let not_after = me.certificate_not_after.unwrap().seconds;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!(not_after > now + 29 * 86_400 && not_after <= now + 30 * 86_400);
    }
    server.stop().await;
}

#[tokio::test]
async fn two_states_are_told_apart() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let aus = who_am_i(&server, &pki.client(Role::Node(state("AUS")), "n1"))
        .await
        .unwrap();
    let tha = who_am_i(&server, &pki.client(Role::Node(state("THA")), "n1"))
        .await
        .unwrap();
    assert_eq!((aus.state.as_str(), tha.state.as_str()), ("AUS", "THA"));
    assert_ne!(aus.certificate_serial, tha.certificate_serial);
}

/// Asserts that the first call fails because the server refused the certificate in the
/// handshake, and that the client explains it as such.
async fn assert_refused_at_handshake(server: &TestServer, identity: &client::ClientIdentity) {
    let status = who_am_i(server, identity).await.unwrap_err();
    let explained = client::explain(&status);
    assert!(
        explained.contains("the server refused this client certificate"),
        "{explained} / {status:?}"
    );
}

#[tokio::test]
async fn a_connection_without_a_client_certificate_never_reaches_a_handler() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca.cert_pem()));
    let channel = Endpoint::from_shared(server.endpoint())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("under TLS 1.3 the client's side of the handshake completes");
    let status = pb::exchange_client::ExchangeClient::new(channel)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_err();
    let explained = client::explain(&status);
    assert!(
        explained.contains("refused this client certificate")
            && explained.contains("CertificateRequired"),
        "{explained}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let other = TestPki::new();
    let stranger = other.client(Role::Node(state("AUS")), "n1");
    // Trust the real server, present the other CA's certificate.
    let (cert, key) = (
        stranger.cert_pem().to_owned(),
        stranger.key_pem().to_owned(),
    );
    let identity = client::ClientIdentity::from_pem(cert, key, pki.ca.cert_pem().to_owned());
    assert_refused_at_handshake(&server, &identity).await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let uri = format!("spiffe://{TRUST_DOMAIN}/state/AUS/node/n1");
    let now = OffsetDateTime::now_utc();
    let expired = Validity {
        not_before: now - Duration::days(10),
        not_after: now - Duration::days(1),
    };
    let future = Validity {
        not_before: now + Duration::days(1),
        not_after: now + Duration::days(10),
    };
    for validity in [expired, future] {
        assert_refused_at_handshake(&server, &pki.client_with_uris(&[&uri], validity)).await;
    }
    // The same identity with a current validity gets in: the refusals above are about dates.
    let current = pki.client_with_uris(&[&uri], Validity::days_from_now(1));
    assert!(who_am_i(&server, &current).await.is_ok());
}

/// A certificate that expires while its connection is open (6 s after it was made, time
/// enough to connect on a loaded machine) is refused from then on, on
/// new calls and on calls already in progress.
#[tokio::test]
async fn a_certificate_that_expires_on_an_open_connection_is_refused_from_then_on() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let uri = format!("spiffe://{TRUST_DOMAIN}/state/AUS/node/n1");
    let now = OffsetDateTime::now_utc();
    let short = Validity {
        not_before: now - Duration::hours(1),
        not_after: now + Duration::seconds(6),
    };
    let channel = server.channel(&pki.client_with_uris(&[&uri], short)).await;
    let mut exchange = pb::exchange_client::ExchangeClient::new(channel);
    assert!(exchange.who_am_i(pb::WhoAmIRequest {}).await.is_ok());
    // An import waiting for its next envelope: open across the expiry.
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::SubmitRequest>(1);
    let mut waiting = exchange.clone();
    let import = tokio::spawn(async move {
        waiting
            .import(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), import)
        .await
        .expect("the import ends within a second of the expiry")
        .unwrap()
        .unwrap_err();
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("expired"), "{ended:?}");
    let refused = exchange.who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("expired"), "{refused:?}");
}

/// A reflection session open across its certificate's expiry answers nothing from the
/// second the certificate has expired, even asked right then: it ends with the reason.
#[tokio::test]
async fn a_reflection_session_answers_nothing_once_its_certificate_has_expired() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let uri = format!("spiffe://{TRUST_DOMAIN}/state/AUS/node/n1");
    let now = OffsetDateTime::now_utc();
    let not_after = now + Duration::seconds(3);
    let short = Validity {
        not_before: now - Duration::hours(1),
        not_after,
    };
    let channel = server.channel(&pki.client_with_uris(&[&uri], short)).await;
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let (ask, questions) = tokio::sync::mpsc::channel(4);
    ask.send(list()).await.unwrap();
    let mut session = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(questions))
        .await
        .unwrap()
        .into_inner();
    session.message().await.unwrap().unwrap();
    // A certificate has expired once a whole second past its notAfter has begun.
    let expired = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs((not_after.unix_timestamp() + 1).unsigned_abs());
    let wait = expired
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(200)).await;
    // The session may have ended already; if not, this question is not answered.
    let _ = ask.send(list()).await;
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), session.message())
        .await
        .expect("the session ends");
    let status = end.expect_err("no answer once the certificate has expired");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
}

#[tokio::test]
async fn certificates_that_name_no_valid_principal_are_unauthenticated() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let td = TRUST_DOMAIN;
    let aus = format!("spiffe://{td}/state/AUS/node/n1");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "no URI subject alternative name"),
        (
            vec![aus.clone(), format!("spiffe://{td}/operator/x")],
            "2 URI subject alternative names",
        ),
        (
            vec![format!("spiffe://{td}/state/XXX/node/n1")],
            "\"XXX\" is not an ISO 3166-1 alpha-3",
        ),
        (
            vec![format!("spiffe://{td}/state/aus/node/n1")],
            "three upper-case letters",
        ),
        (
            vec!["spiffe://elsewhere.test/state/AUS/node/n1".to_owned()],
            "trust domain",
        ),
        (
            vec![format!("spiffe://{td}/state/AUS/admin/n1")],
            "not a Tidemark identity",
        ),
        (vec![format!("https://{td}/operator/x")], "not a SPIFFE ID"),
    ];
    for (uris, reason) in cases {
        let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
        let identity = pki.client_with_uris(&uris, Validity::days_from_now(1));
        let status = who_am_i(&server, &identity).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{uris:?}: {status:?}");
        assert!(
            status.message().contains(reason),
            "{uris:?}: {}",
            status.message()
        );
    }
}

/// A raw rustls client presenting a valid certificate, with the given provider and versions.
async fn raw_handshake(
    pki: &TestPki,
    server: &TestServer,
    provider: CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(), std::io::Error> {
    let identity = pki.client(Role::Node(state("AUS")), "n1");
    let mut stream = common::raw_tls(
        server,
        (pki.ca.cert_pem(), &identity),
        (provider, versions),
        &[b"h2"],
    )
    .await?;
    // Under TLS 1.3 the server's verdict on the client arrives after the handshake:
    // read until it speaks (an HTTP/2 SETTINGS frame) or closes.
    let mut buf = [0u8; 9];
    stream.read_exact(&mut buf).await?;
    Ok(())
}

#[tokio::test]
async fn only_tls13_with_aes_gcm_is_accepted() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;

    // Control: TLS 1.3 with the server's suites works, so the refusals below are about
    // protocol version and cipher suite, not the certificate.
    raw_handshake(
        &pki,
        &server,
        ring::default_provider(),
        &[&rustls::version::TLS13],
    )
    .await
    .expect("TLS 1.3 AES-GCM client is accepted");

    let tls12 = raw_handshake(
        &pki,
        &server,
        ring::default_provider(),
        &[&rustls::version::TLS12],
    )
    .await;
    let err = tls12.expect_err("a TLS 1.2 client must be refused");
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");

    let chacha_only = CryptoProvider {
        cipher_suites: vec![ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256],
        ..ring::default_provider()
    };
    let chacha = raw_handshake(&pki, &server, chacha_only, &[&rustls::version::TLS13]).await;
    let err = chacha.expect_err("a ChaCha20-only client must be refused");
    assert!(err.to_string().contains("HandshakeFailure"), "{err}");
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let identity = pki.client(Role::Node(state("AUS")), "n1");
    let channel = server.channel(&identity).await;

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tidemark.v1.Exchange".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response: {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"tidemark.v1.Exchange"), "{names:?}");
}

#[test]
fn a_ca_can_be_loaded_back_from_its_pem_files() {
    let ca = CertificateAuthority::generate("reload", Validity::days_from_now(1)).unwrap();
    let again = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    let leaf = again
        .issue_server(&["localhost"], Validity::days_from_now(1))
        .unwrap();
    assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
}

/// A listener that closes each connection as it arrives (as a server at its limit of
/// pending handshakes does) is told apart from no listener at all.
#[tokio::test]
async fn a_connection_closed_in_the_handshake_is_not_called_a_missing_server() {
    let pki = TestPki::new();
    let identity = pki.client(Role::Node(state("AUS")), "aus-1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    let endpoint = format!("https://{address}");
    let closed = client::probe(&endpoint, &identity)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        closed.contains("closed the connection during the TLS handshake"),
        "{closed}"
    );
    let closed = client::connect(&endpoint, &identity)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        closed.contains("closed the connection during the TLS handshake"),
        "{closed}"
    );
    // Nothing listening there any more.
    let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", free.local_addr().unwrap());
    drop(free);
    let missing = client::probe(&endpoint, &identity)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        missing.contains("is `tidemark serve` running there?"),
        "{missing}"
    );
}
