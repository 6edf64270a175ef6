//! Holding up under hostile load: stalled connections cannot lock clients out, a valid
//! node cannot make a request's work or answer grow without bound, undecodable requests
//! are the client's fault, subscriptions are capped and their audit is batched.

mod common;

use std::time::Duration;

use common::{TestPki, TestServer, World, node, operator, report, sign, submit};
use prost::Message;
use tidemark::{clock::Clock, pb};
use tokio::{io::AsyncReadExt, net::TcpSocket};
use tonic::Code;
use tonic_types::StatusExt;

const PATIENCE: Duration = Duration::from_secs(20);
/// Reports pushed to one subscription in the audit test.
const PUSHES: u64 = 12;

/// A server with every limit at the most its configuration takes serves: a submission,
/// a query, a subscription and an aggregate (an outside pass set a keepalive of 2^63 s,
/// which started and then panicked on every connection, and a stall limit that panicked
/// every read; such values are now refused at start, and the largest taken work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_every_limit_at_its_maximum_serves() {
    use tidemark::config::{MAX_COUNT, MAX_SECS, MAX_WINDOW_DAYS};
    let count = usize::try_from(MAX_COUNT).unwrap();
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        let l = &mut config.limits;
        for secs in [
            &mut l.request_timeout_secs,
            &mut l.keepalive_interval_secs,
            &mut l.keepalive_timeout_secs,
            &mut l.handshake_timeout_secs,
            &mut l.read_stall_secs,
            &mut l.max_read_secs,
            &mut l.shutdown_grace_secs,
            &mut l.lapsed_connection_grace_secs,
        ] {
            *secs = MAX_SECS;
        }
        l.first_byte_timeout_ms = MAX_SECS * 1000;
        for n in [
            &mut l.max_pending_handshakes,
            &mut l.max_pending_handshakes_per_address,
            &mut l.max_subscriptions_per_principal,
            &mut l.max_connections_per_principal,
            &mut l.max_reads_per_principal,
            &mut l.max_import_items,
            &mut config.store.max_batch,
            &mut config.analytics.max_cells,
        ] {
            *n = count;
        }
        l.max_concurrent_streams = u32::try_from(MAX_COUNT).unwrap();
        l.reads_per_minute_per_principal = u32::try_from(MAX_COUNT).unwrap();
        l.lookups_per_minute_per_principal = u32::try_from(MAX_COUNT).unwrap();
        l.max_message_bytes = usize::try_from(tidemark::config::MAX_MESSAGE_BYTES).unwrap();
        let window = u32::try_from(MAX_WINDOW_DAYS).unwrap();
        config.policy.smuggling_incident.window_days = window;
        config.policy.maritime_movement.window_days = window;
        config.check().expect("every value is within its bounds");
    })
    .await;
    let world = World::on(pki, server).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 1, false, all, &[])).await;
    let mut subscription = world
        .exchange("IDN")
        .await
        .subscribe(pb::QueryRequest {
            category: pb::Category::SmugglingIncident as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    world.submit(&report("AUS", 2, false, all, &[])).await;
    world.read_all_smuggling("IDN").await;
    let pushed = tokio::time::timeout(Duration::from_secs(10), subscription.message())
        .await
        .expect("the subscription pushes")
        .unwrap();
    assert!(pushed.is_some());
    common::aggregate(
        &world.server,
        &common::regional(&world.pki),
        pb::AggregateRequest {
            metrics: vec![pb::Metric::Reports as i32],
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_neither_lock_others_out_nor_stay_open() {
    const STALLED: usize = 300;
    const ADDRESSES: usize = 30;
    let pki = TestPki::new();
    let data = tempfile::TempDir::new().unwrap();
    let server = TestServer::start_with(&pki, data, |c| {
        // A handshake may take a minute; a connection that sends nothing may not.
        c.limits.handshake_timeout_secs = 60;
        c.limits.first_byte_timeout_ms = 500;
        c.limits.max_pending_handshakes_per_address = 8;
        c.limits.max_pending_handshakes = 64;
    })
    .await;
    // An attacker on 127.0.0.2 to 127.0.0.31 opens connections and sends nothing: more
    // than each address may hold, and more than all addresses together may.
    let mut stalled = Vec::new();
    for n in 0..STALLED {
        let socket = TcpSocket::new_v4().unwrap();
        let from = format!("127.0.0.{}:0", 2 + n % ADDRESSES);
        socket.bind(from.parse().unwrap()).unwrap();
        stalled.push(socket.connect(server.addr).await.unwrap());
    }
    // A client on 127.0.0.1 connects and is answered meanwhile.
    let me = tokio::time::timeout(PATIENCE, async {
        server
            .exchange(&node(&pki, "AUS"))
            .await
            .who_am_i(pb::WhoAmIRequest {})
            .await
    })
    .await
    .expect("a new client is answered while stalled connections are open")
    .unwrap();
    assert_eq!(me.into_inner().state, "AUS");
    // Every stalled connection is closed by the server: at once past the per-address
    // limit, to make room past the total, after the first-byte deadline otherwise.
    let mut closed = 0;
    for mut tcp in stalled {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(PATIENCE, tcp.read(&mut byte))
            .await
            .expect("the server closes a connection that sends nothing");
        if matches!(read, Ok(0) | Err(_)) {
            closed += 1;
        }
    }
    assert_eq!(closed, STALLED);
}

/// A certificate holder that completes TLS handshakes and then sends nothing (no HTTP/2
/// preface) does not keep the connections: each is closed once the handshake timeout
/// has passed again. They stayed open for good, until the server ran out of file
/// descriptors and could accept no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_after_its_handshake_is_closed() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.limits.handshake_timeout_secs = 1;
    })
    .await;
    let identity = node(&pki, "AUS");
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(
            common::raw_tls(
                &server,
                (pki.ca.cert_pem(), &identity),
                (
                    rustls::crypto::ring::default_provider(),
                    &[&rustls::version::TLS13],
                ),
                &[b"h2"],
            )
            .await
            .unwrap(),
        );
    }
    for mut tls in silent {
        // The server's SETTINGS may come first; then the end.
        let mut buf = [0u8; 1024];
        loop {
            let read = tokio::time::timeout(PATIENCE, tls.read(&mut buf))
                .await
                .expect("the server closes a connection that sends nothing");
            if matches!(read, Ok(0) | Err(_)) {
                break;
            }
        }
    }
    // A client that speaks is served as before.
    let me = server
        .exchange(&identity)
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap();
    assert_eq!(me.into_inner().state, "AUS");
}

/// One principal holds at most `limits.max_connections_per_principal` connections:
/// one more has its calls refused RESOURCE_EXHAUSTED and is closed, others' are not
/// touched, and a connection let go frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_holds_a_bounded_number_of_connections() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.limits.max_connections_per_principal = 3;
    })
    .await;
    let aus = node(&pki, "AUS");
    let whoami = |channel: tonic::transport::Channel| async move {
        pb::exchange_client::ExchangeClient::new(channel)
            .who_am_i(pb::WhoAmIRequest {})
            .await
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        let channel = server.channel(&aus).await;
        whoami(channel.clone()).await.unwrap();
        held.push(channel);
    }
    // A fourth is told why (RESOURCE_EXHAUSTED naming the limit, not a bare reset that a
    // client retries), then closed.
    let over = server.channel(&aus).await;
    let refused = whoami(over.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("limits.max_connections_per_principal"),
        "{refused:?}"
    );
    // So are its streaming calls, server- and client-streaming alike, and nothing of
    // AUS's is streamed to it.
    let mut exchange = pb::exchange_client::ExchangeClient::new(over.clone());
    let subscribe = match exchange.subscribe(pb::QueryRequest::default()).await {
        Ok(response) => response.into_inner().message().await.map(|_| ()),
        Err(status) => Err(status),
    };
    let import = exchange
        .import(tokio_stream::iter(vec![pb::SubmitRequest::default()]))
        .await;
    for refused in [subscribe.unwrap_err(), import.unwrap_err()] {
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    }
    // Another principal is not affected; those held still work.
    whoami(server.channel(&node(&pki, "IDN")).await)
        .await
        .unwrap();
    whoami(held[0].clone()).await.unwrap();
    // One let go frees its place (once the server has seen it close).
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(channel) = tidemark::client::connect(&server.endpoint(), &aus).await
            && whoami(channel).await.is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_huge_list_gets_one_violation_and_many_faults_are_counted_not_listed() {
    let world = World::new(Clock::system()).await;
    let mut aus = world.exchange("AUS").await;
    // About 2 MB: a million empty transit countries.
    let mut huge = report("AUS", 1, false, pb::SharingScope::AllContributors, &[]);
    huge.route.as_mut().unwrap().transit = vec![String::new(); 1_000_000];
    let status = submit(&mut aus, sign(&huge, world.key("AUS")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, "route.transit");
    assert!(status.message().len() < 1_000, "{}", status.message().len());

    // Fifty bad nationality entries within the list bound: more bad fields than are
    // listed (20, then how many more), and a message that names only the first few.
    let mut faulty = report("AUS", 2, false, pb::SharingScope::AllContributors, &[]);
    let persons = faulty.persons.as_mut().unwrap();
    persons.by_nationality = (0..50)
        .map(|_| pb::NationalityCount {
            nationality: "XXX".into(),
            count: 0,
        })
        .collect();
    let status = submit(&mut aus, sign(&faulty, world.key("AUS")))
        .await
        .unwrap_err();
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 21, "20 listed and one count");
    assert!(
        violations[20].description.contains("more violations"),
        "{:?}",
        violations[20]
    );
    assert!(status.message().len() < 1_000, "{}", status.message());

    // A huge bad value is not echoed back whole, in the message or the details.
    let mut long = report("AUS", 3, false, pb::SharingScope::AllContributors, &[]);
    long.route.as_mut().unwrap().origin = "q".repeat(100_000);
    long.report_id = "x".repeat(100_000);
    let status = submit(&mut aus, sign(&long, world.key("AUS")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().len() < 1_000, "{}", status.message().len());
    assert!(status.details().len() < 4_000, "{}", status.details().len());

    // A keyid is a key id, not a place to store megabytes or terminal escapes.
    for keyid in ["k".repeat(3_000), "\u{202e}\u{1b}[31mEVIL\n".to_owned()] {
        let mut envelope = sign(
            &report("AUS", 4, false, pb::SharingScope::AllContributors, &[]),
            world.key("AUS"),
        );
        envelope.signatures[0].keyid = keyid;
        let status = submit(&mut aus, envelope).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }

    // A signature is 64 bytes: padded (to just under the message limit, three of them),
    // the stored envelope could not be served back, and every read of it failed for good.
    for (sigs, bytes) in [(1, 65), (1, 63), (4, 1_000_000)] {
        let mut envelope = sign(
            &report("AUS", 5, false, pb::SharingScope::AllContributors, &[]),
            world.key("AUS"),
        );
        let good = envelope.signatures[0].clone();
        for _ in 1..sigs {
            envelope.signatures.push(pb::Signature {
                keyid: String::new(),
                sig: vec![7; bytes],
            });
        }
        if sigs == 1 {
            envelope.signatures[0].sig.resize(bytes, 0);
        } else {
            envelope.signatures[0] = good;
        }
        let status = submit(&mut aus, envelope).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("64"), "{status:?}");
    }

    // Filter lists are bounded too.
    let status = aus
        .query(pb::QueryRequest {
            category: pb::Category::SmugglingIncident as i32,
            reporting_states: vec!["AUS".into(); 100_000],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("at most 300"), "{status:?}");
}

/// A message whose field 1 is bytes where SubmitRequest has a message: it cannot be
/// decoded as a SubmitRequest.
#[derive(Clone, PartialEq, Message)]
struct NotASubmitRequest {
    #[prost(bytes = "vec", tag = "1")]
    envelope: Vec<u8>,
}

#[tokio::test]
async fn an_undecodable_request_is_invalid_argument_for_unary_and_streaming_calls() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let channel = server.channel(&node(&pki, "AUS")).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    let garbage = NotASubmitRequest {
        envelope: vec![0xff; 64],
    };
    for (path, streaming) in [
        ("/tidemark.v1.Exchange/Submit", false),
        ("/tidemark.v1.Exchange/Import", true),
    ] {
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static(path);
        let codec = tonic_prost::ProstCodec::<NotASubmitRequest, pb::SubmitResponse>::default();
        let status = if streaming {
            grpc.client_streaming(
                tonic::Request::new(tokio_stream::iter([garbage.clone()])),
                path,
                codec,
            )
            .await
            .unwrap_err()
        } else {
            grpc.unary(tonic::Request::new(garbage.clone()), path, codec)
                .await
                .unwrap_err()
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains("could not be decoded"),
            "{status:?}"
        );
    }
}

/// The whole audit log, as the operator reads it.
async fn audit_entries(world: &World) -> Vec<pb::AuditEntry> {
    common::audit_log(&mut world.server.admin(&operator(&world.pki)).await).await
}

#[tokio::test]
async fn subscriptions_are_capped_per_principal_and_audited_once_per_stream() {
    let pki = TestPki::new();
    let data = tempfile::TempDir::new().unwrap();
    let server = TestServer::start_with(&pki, data, |c| {
        c.limits.max_subscriptions_per_principal = 3;
    })
    .await;
    let world = World::on(pki, server).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 100, false, all, &[])).await;
    let filter = pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        ..Default::default()
    };
    let idn = node(&world.pki, "IDN");
    let mut idn_exchange = world.server.exchange(&idn).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            idn_exchange
                .subscribe(filter.clone())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let status = idn_exchange.subscribe(filter.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("max_subscriptions_per_principal = 3")
    );
    let refusals = audit_entries(&world)
        .await
        .into_iter()
        .filter(|e| e.action == "refused subscribe")
        .count();
    assert_eq!(refusals, 1, "the refusal is on the record");
    // Another principal is not affected; closing one frees a place.
    let mut tha = world.exchange("THA").await;
    world.submit(&report("THA", 101, false, all, &[])).await;
    tha.subscribe(filter.clone()).await.unwrap();
    // A cancelled stream's place is freed once the server sees the cancellation.
    let reopen = || {
        let mut exchange = idn_exchange.clone();
        let filter = filter.clone();
        async move {
            tokio::time::timeout(PATIENCE, async {
                loop {
                    match exchange.subscribe(filter.clone()).await {
                        Ok(stream) => return stream.into_inner(),
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            })
            .await
            .expect("a closed subscription frees its place")
        }
    };
    drop(open.pop());
    let opened = reopen().await;
    drop(opened);
    drop(open);

    // One subscription, many pushes: one audit record, completed with the count.
    let mut stream = reopen().await;
    for seed in 0..PUSHES {
        world
            .submit(&report("AUS", 200 + seed, false, all, &[]))
            .await;
    }
    for _ in 0..PUSHES {
        tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    drop(stream);
    let record = tokio::time::timeout(PATIENCE, async {
        loop {
            let entries = audit_entries(&world).await;
            let subscribes: Vec<_> = entries
                .into_iter()
                .filter(|e| e.action == "subscribe" && e.by_owner.contains_key("AUS"))
                .collect();
            if let [one] = subscribes.as_slice()
                && !one.in_progress
            {
                return one.clone();
            }
            assert!(subscribes.len() <= 1, "{subscribes:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the subscription's record is completed when it closes");
    assert_eq!(record.count, PUSHES);
    assert_eq!(record.by_owner.get("AUS"), Some(&PUSHES));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_turns_health_to_not_serving_and_stops_without_false_acknowledgements() {
    use tidemark::{Store, server::Server};

    let pki = TestPki::new();
    let data = tempfile::TempDir::new().unwrap();
    let mut config = pki.config(&data);
    config.limits.shutdown_grace_secs = 1;
    let (store, disk) = Store::open_on_failing_disk(&config.store).unwrap();
    let server = Server::build_on(config.clone(), store).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = tokio::spawn(server.run(listener, std::future::pending()));
    let endpoint = format!("https://{addr}");
    let identity = node(&pki, "AUS");
    let channel = tidemark::client::connect(&endpoint, &identity)
        .await
        .unwrap();
    let ops = tidemark::client::connect(&endpoint, &operator(&pki))
        .await
        .unwrap();
    let (key, _) = tidemark::signing::SigningKey::generate().unwrap();
    pb::admin_client::AdminClient::new(ops)
        .register_signing_key(pb::RegisterSigningKeyRequest {
            state: "AUS".into(),
            public_key_pem: key.public_key().to_spki_pem(),
            valid_from_unix: 0,
            valid_until_unix: 0,
        })
        .await
        .unwrap();
    let mut exchange = pb::exchange_client::ExchangeClient::new(channel.clone());
    let all = pb::SharingScope::AllContributors;
    let kept = report("AUS", 1, false, all, &[]);
    submit(&mut exchange, sign(&kept, &key)).await.unwrap();
    let mut watch = common::exchange_health_watch(channel).await;
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, 1, "SERVING");

    // The disk fills up: the next submission is refused, not acknowledged.
    disk.start();
    let lost = report("AUS", 2, false, all, &[]);
    let status = submit(&mut exchange, sign(&lost, &key)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Health says so, and the server stops for its supervisor to restart it.
    let next = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("health changes")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, 2, "NOT_SERVING");
    let stopped = tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the server stops")
        .unwrap();
    let err = stopped.unwrap_err().to_string();
    assert!(err.contains("disk failed"), "{err}");

    // Restarted on the repaired disk: what was acknowledged is there, nothing else. (The
    // file is free once the last connection of the stopped server has closed.)
    disk.stop();
    drop((exchange, watch));
    let store = tokio::time::timeout(PATIENCE, async {
        loop {
            match Store::open(&config.store) {
                Ok(store) => return store,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the store can be opened again");
    let snapshot = store.snapshot().unwrap();
    let id = |r: &pb::Report| uuid::Uuid::parse_str(&r.report_id).unwrap().as_u128();
    assert!(snapshot.head(id(&kept)).unwrap().is_some());
    assert!(snapshot.head(id(&lost)).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscriptions_each_get_every_matching_change_exactly_once() {
    const SUBSCRIPTIONS: usize = 12;
    const REPORTS: u64 = 120;
    let world = World::new(Clock::system()).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 1, false, all, &[])).await;
    let filter = pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        reporting_states: vec!["AUS".into()],
        ..Default::default()
    };
    let mut streams = Vec::new();
    for n in 0..SUBSCRIPTIONS {
        // Several principals: the per-principal cap is not what is tested here.
        let idn = world.pki.client(
            tidemark::identity::Role::Node(common::state("IDN")),
            &format!("idn-{n}"),
        );
        let mut exchange = world.server.exchange(&idn).await;
        streams.push(
            exchange
                .subscribe(filter.clone())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    // Four submitters at once, while the subscriptions are open.
    let mut expected = std::collections::BTreeSet::new();
    let mut submitters = Vec::new();
    for w in 0..4 {
        let mut aus = world.exchange("AUS").await;
        let envelopes: Vec<_> = (0..REPORTS / 4)
            .map(|i| report("AUS", 10_000 + w * 1_000 + i, false, all, &[]))
            .inspect(|r| {
                expected.insert(r.report_id.clone());
            })
            .map(|r| sign(&r, world.key("AUS")))
            .collect();
        submitters.push(tokio::spawn(async move {
            for envelope in envelopes {
                submit(&mut aus, envelope).await.unwrap();
            }
        }));
    }
    for s in submitters {
        s.await.unwrap();
    }
    for mut stream in streams {
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let item = tokio::time::timeout(PATIENCE, stream.message())
                .await
                .expect("every change arrives")
                .unwrap()
                .unwrap();
            got.push(item.meta.unwrap().report_id);
        }
        let distinct: std::collections::BTreeSet<_> = got.iter().cloned().collect();
        assert_eq!(distinct.len(), got.len(), "a change pushed twice");
        assert_eq!(distinct, expected);
    }
}

/// A refusal that cannot be put on record (the disk has failed) is not answered as a
/// refusal: the caller is told the audit log could not be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_cannot_be_recorded_is_not_answered() {
    use tidemark::{Store, server::Server};

    let pki = TestPki::new();
    let data = tempfile::TempDir::new().unwrap();
    let config = pki.config(&data);
    let (store, disk) = Store::open_on_failing_disk(&config.store).unwrap();
    let server = Server::build_on(config, store).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(server.run(listener, std::future::pending()));
    let channel = tidemark::client::connect(&endpoint, &node(&pki, "AUS"))
        .await
        .unwrap();
    let mut admin = pb::admin_client::AdminClient::new(channel);
    let suspend = || pb::StateRequest {
        state: "IDN".into(),
    };
    let refused = admin.suspend_state(suspend()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    disk.start();
    let refused = admin.suspend_state(suspend()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("audit log"), "{refused:?}");
}

/// A subscription whose caller stopped reading while more batches were committed than
/// the feed keeps is not read back without bound: past 1,000 changes behind it ends with
/// RESOURCE_EXHAUSTED, telling its caller to catch up with sync, and is on record with
/// what its caller took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_too_far_behind_is_told_to_catch_up_with_sync() {
    const SUBMITTED: u64 = 1_500;
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let world = World::on(pki, server).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 1, false, all, &[])).await;
    let mut idn = pb::exchange_client::ExchangeClient::new(
        common::small_window_channel(&world.server, &node(&world.pki, "IDN")).await,
    );
    let mut stream = idn
        .subscribe(pb::QueryRequest {
            category: pb::Category::SmugglingIncident as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // One batch per report (each submission waits for its commit) while IDN reads
    // nothing: its queue and HTTP/2 window fill, then the feed's backlog overflows.
    for seed in 0..SUBMITTED {
        world
            .submit(&report("AUS", 10 + seed, false, all, &[]))
            .await;
    }
    let mut taken = 0;
    let end = loop {
        match tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap_or_else(|_| panic!("the subscription neither ends nor pushes after {taken}"))
        {
            Ok(Some(_)) => taken += 1,
            Ok(None) => break Ok(()),
            Err(status) => break Err(status),
        }
    };
    let status = end.expect_err("the subscription ends");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("fell more than 1000 matching changes behind"),
        "{status:?}"
    );
    assert!(taken < SUBMITTED, "{taken} pushed of {SUBMITTED}");
    let record = audit_entries(&world)
        .await
        .into_iter()
        .find(|e| e.action == "subscribe" && e.state == "IDN")
        .expect("the subscription is on record");
    assert!(!record.in_progress, "{record:?}");
    assert_eq!(record.by_owner.get("AUS"), Some(&taken), "{record:?}");
}

/// Reads that each list hundreds of the owner's report ids do not make its access list
/// unreadable: a page stops at three quarters of the message limit and says `more`, and
/// paging on with `before` gets every access (past about 110 reads of 1,000 reports, a
/// page of the default 4 MiB limit could not be encoded, and `audit --verify` failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_list_of_large_reads_pages_by_size() {
    const READS: usize = 20;
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |config| {
        config.limits.max_message_bytes = 128 * 1024;
    })
    .await;
    let world = World::on(pki, server).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 9_999, false, all, &[])).await;
    let items: Vec<pb::SubmitRequest> = (0..300)
        .map(|seed| {
            common::submit_request(sign(
                &report("AUS", seed, false, all, &[]),
                world.key("AUS"),
            ))
        })
        .collect();
    let mut aus = world.exchange("AUS").await;
    aus.import(tokio_stream::iter(items)).await.unwrap();
    let mut idn = world.exchange("IDN").await;
    for _ in 0..READS {
        let mut stream = idn
            .query(pb::QueryRequest {
                category: pb::Category::SmugglingIncident as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        while stream.message().await.unwrap().is_some() {}
    }
    // Every access, page by page, until a page says there is no more. (The last
    // reads' records may still be completing: asked again until all are there.)
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (seen, pages) = loop {
        let (mut seen, mut pages, mut before) = (Vec::new(), 0, 0);
        loop {
            let page = aus
                .access_to_my_data(pb::AccessToMyDataRequest { limit: 100, before })
                .await
                .unwrap()
                .into_inner();
            pages += 1;
            // Reads only: the list also holds the registration of AUS's key.
            seen.extend(
                page.accesses
                    .iter()
                    .filter(|a| a.detail.is_empty())
                    .map(|a| (a.number, a.report_ids.len())),
            );
            match page.accesses.last() {
                Some(last) if page.more => {
                    assert!(page.accesses.len() < 100);
                    before = last.number;
                }
                _ => break,
            }
        }
        if seen.len() == READS && seen.iter().all(|(_, ids)| *ids == 300) {
            break (seen, pages);
        }
        assert!(tokio::time::Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut numbers: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    numbers.dedup();
    assert_eq!(numbers.len(), READS, "each access once: {seen:?}");
    assert!(pages > 1, "one page held them all");
}

/// Reads that go on the audit record are budgeted per principal
/// (`limits.reads_per_minute_per_principal`): a burst of that many, then one every
/// `60 / n` s. Past it a query, sync, subscription, aggregate or operator listing is
/// refused RESOURCE_EXHAUSTED, on the record, with a `grpc-retry-pushback-ms` after
/// which a read is taken again; other principals keep their own budgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_record_come_from_each_principals_budget() {
    const PER_MINUTE: u32 = 30;
    let pki = TestPki::new();
    let data = tempfile::TempDir::new().unwrap();
    let server = TestServer::start_with(&pki, data, |c| {
        c.limits.reads_per_minute_per_principal = PER_MINUTE;
    })
    .await;
    let world = World::on(pki, server).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("AUS", 1, false, all, &[])).await;
    world.submit(&report("IDN", 2, false, all, &[])).await;
    let filter = pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        ..Default::default()
    };
    let sync = pb::SyncRequest {
        category: pb::Category::SmugglingIncident as i32,
        ..Default::default()
    };
    let mut idn = world.exchange("IDN").await;
    let mut calls = 0;
    let (taken, refused) = until_refused(PER_MINUTE, || {
        calls += 1;
        let mut idn = idn.clone();
        let filter = filter.clone();
        async move {
            match calls % 3 {
                1 => idn.query(filter).await.map(drop),
                2 => idn.sync(sync).await.map(drop),
                _ => idn.subscribe(filter).await.map(drop),
            }
        }
    })
    .await;
    // The burst, and at most a read or two regained while it was taken.
    assert!((PER_MINUTE..=PER_MINUTE + 2).contains(&taken), "{taken}");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("reads_per_minute_per_principal = 30"),
        "{refused:?}"
    );
    let pushback = pushback_ms(&refused);
    assert!((1..=2_000).contains(&pushback), "{pushback} ms");
    assert!(refused.metadata().get("tidemark-audit").is_some());
    // Every kind of read draws on the one budget.
    for status in [
        idn.query(filter.clone()).await.unwrap_err(),
        idn.sync(sync).await.unwrap_err(),
        idn.subscribe(filter.clone()).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    // Another state's node, an analyst and the operator have their own budgets.
    let mut aus = world.exchange("AUS").await;
    aus.query(filter.clone()).await.unwrap();
    let regional = common::regional(&world.pki);
    let aggregate = || {
        common::aggregate(
            &world.server,
            &regional,
            pb::AggregateRequest {
                metrics: vec![pb::Metric::Reports as i32],
                ..Default::default()
            },
        )
    };
    let (analyst_reads, analyst_refused) =
        until_refused(PER_MINUTE, || async { aggregate().await.map(drop) }).await;
    assert!(analyst_reads >= PER_MINUTE, "{analyst_reads}");
    assert_eq!(analyst_refused.code(), Code::ResourceExhausted);
    let admin = world.server.admin(&operator(&world.pki)).await;
    let (operator_reads, operator_refused) = until_refused(PER_MINUTE, || {
        let mut admin = admin.clone();
        async move {
            admin
                .list_states(pb::ListStatesRequest::default())
                .await
                .map(drop)
        }
    })
    .await;
    assert!(operator_reads >= PER_MINUTE, "{operator_reads}");
    assert_eq!(operator_refused.code(), Code::ResourceExhausted);
    // Once the pushback has passed, IDN reads again — and so does the operator, whose
    // budget was spent last (its audit log below is one of its reads).
    let wait = pushback.max(pushback_ms(&operator_refused));
    tokio::time::sleep(Duration::from_millis(wait + 100)).await;
    idn.query(filter.clone()).await.unwrap();
    // Each refusal is on the record, as IDN's.
    let refusals = refusals_of(&world, "IDN").await;
    let kinds = ["refused query", "refused sync", "refused subscribe"];
    let first = kinds[usize::try_from(taken % 3).unwrap()];
    assert_eq!(
        refusals,
        [first, kinds[0], kinds[1], kinds[2]],
        "{refusals:?}"
    );
}

/// Lookups that are not on the record but read the store in proportion to what they
/// cover — MyStanding, AccessToMyData, GetEntries — come from a budget of their own per
/// principal (`limits.lookups_per_minute_per_principal`), apart from reads on record.
/// Past it they are refused RESOURCE_EXHAUSTED, on the record, with a pushback, and the
/// command line waits it out (an outside pass: a flood of MyStanding from one state held
/// every other state's calls up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_come_from_each_principals_budget_and_the_command_line_waits_it_out() {
    const PER_MINUTE: u32 = 60;
    let pki = TestPki::new();
    let data = tempfile::TempDir::new().unwrap();
    let server = TestServer::start_with(&pki, data, |c| {
        c.limits.lookups_per_minute_per_principal = PER_MINUTE;
    })
    .await;
    let world = World::on(pki, server).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 1, false, all, &[])).await;
    let mut idn = world.exchange("IDN").await;
    let log = pb::transparency_client::TransparencyClient::new(
        world.server.channel(&node(&world.pki, "IDN")).await,
    );
    let mut calls = 0;
    let lookup = |n: u32| {
        let (mut idn, mut log) = (idn.clone(), log.clone());
        async move {
            match n % 3 {
                0 => idn.my_standing(pb::MyStandingRequest {}).await.map(drop),
                1 => idn
                    .access_to_my_data(pb::AccessToMyDataRequest::default())
                    .await
                    .map(drop),
                _ => log
                    .get_entries(pb::GetEntriesRequest { start: 0, end: 1 })
                    .await
                    .map(drop),
            }
        }
    };
    let (taken, refused) = until_refused(PER_MINUTE, || {
        calls += 1;
        lookup(calls)
    })
    .await;
    assert!((PER_MINUTE..=PER_MINUTE + 2).contains(&taken), "{taken}");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("lookups_per_minute_per_principal = 60"),
        "{refused:?}"
    );
    assert!((1..=1_000).contains(&pushback_ms(&refused)));
    // Each kind draws on the one budget; reads on record have their own.
    for n in 0..3 {
        let status = lookup(n).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    idn.query(pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    // Another state has its own.
    let mut aus = world.exchange("AUS").await;
    aus.my_standing(pb::MyStandingRequest {}).await.unwrap();
    // The command line waits the pushback out and answers.
    let dir = tempfile::TempDir::new().unwrap();
    let profile = common::cli_profile(&world.pki, &world.server, dir.path(), "IDN").await;
    let endpoint = world.server.endpoint();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["standing", "--as", &profile, "--endpoint", &endpoint])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    common::cli::assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("budget of lookups for this certificate is spent for now"),
        "{stderr}"
    );
    let refusals = refusals_of(&world, "IDN").await;
    for kind in [
        "refused MyStanding",
        "refused AccessToMyData",
        "refused GetEntries",
    ] {
        assert!(refusals.iter().any(|r| r == kind), "{kind}: {refusals:?}");
    }
}

/// A lookup is charged for what it reads: one more for each 1,000 records, so a
/// MyStanding of a state with 2,000 contributions costs three, and the budget bounds the
/// work a loop of them does, not only their number (an outside pass: at 40,000
/// contributions each cost 115 ms, and a loop took more than a core within the budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_is_charged_for_the_records_it_reads() {
    const PER_MINUTE: u32 = 60;
    const CONTRIBUTIONS: u64 = 2_000;
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.limits.lookups_per_minute_per_principal = PER_MINUTE;
    })
    .await;
    let world = World::on(pki, server).await;
    let envelopes = (0..CONTRIBUTIONS)
        .map(|seed| sign(&common::sample_report("AUS", seed), world.key("AUS")))
        .collect();
    common::import(&world.server, &world.pki, "AUS", envelopes).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 1, false, all, &[])).await;
    let standings = |state: &'static str| {
        let world = &world;
        async move {
            let exchange = world.exchange(state).await;
            until_refused(PER_MINUTE, || {
                let mut exchange = exchange.clone();
                async move {
                    exchange
                        .my_standing(pb::MyStandingRequest {})
                        .await
                        .map(drop)
                }
            })
            .await
        }
    };
    let (aus, refused) = standings("AUS").await;
    assert!((20..=24).contains(&aus), "AUS had {aus} standings");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("one more for each 1000 records"),
        "{refused:?}"
    );
    let (idn, _) = standings("IDN").await;
    assert!(idn >= PER_MINUTE, "IDN had {idn} standings");
    // Started all at once, lookups cannot overdraw the budget before any is charged
    // (an outside pass: 200 at once drew 9.6 times it): a principal has but two in
    // progress, and the others are refused with a pushback.
    let channel = world
        .server
        .channel(&common::analyst(&world.pki, "AUS"))
        .await;
    let calls = (0..50).map(|_| {
        let mut exchange = pb::exchange_client::ExchangeClient::new(channel.clone());
        tokio::spawn(async move { exchange.my_standing(pb::MyStandingRequest {}).await })
    });
    let mut answered = 0;
    let mut in_progress = 0;
    for call in calls.collect::<Vec<_>>() {
        match call.await.unwrap() {
            Ok(_) => answered += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                if status.message().contains("in progress") {
                    assert!(pushback_ms(&status) > 0);
                    in_progress += 1;
                }
            }
        }
    }
    assert!(
        (1..=PER_MINUTE / 3).contains(&answered),
        "{answered} of 50 answered at once"
    );
    assert!(in_progress > 0);
}

/// The wait a refusal asks for (`grpc-retry-pushback-ms`).
fn pushback_ms(refused: &tonic::Status) -> u64 {
    refused
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("a retry pushback")
}

/// The actions of `state`'s refusals on the audit record, in order.
async fn refusals_of(world: &World, state: &str) -> Vec<String> {
    audit_entries(world)
        .await
        .into_iter()
        .filter(|e| e.action.starts_with("refused") && e.state == state)
        .map(|e| e.action)
        .collect()
}

/// Calls `read` until it is refused: how many were answered, and the refusal. A read
/// or two past `budget` may be regained while they are made; more fail the test.
async fn until_refused<F: std::future::Future<Output = Result<(), tonic::Status>>>(
    budget: u32,
    mut read: impl FnMut() -> F,
) -> (u32, tonic::Status) {
    let mut answered = 0;
    loop {
        match read().await {
            Ok(()) => answered += 1,
            Err(status) => return (answered, status),
        }
        assert!(answered <= budget + 2, "no read was refused");
    }
}

/// A caller that stops reading holds no store snapshot while it waits: a query or sync
/// reads a page at a time, each from a snapshot let go before it waits for room, and
/// the check of queued items as they go reads in a transaction of its own. (An open
/// read transaction keeps redb from reusing the pages later commits free: an outside
/// pass saw one paused query make the store file grow 60 times faster under others'
/// submissions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_holds_no_snapshot_while_others_write() {
    const WRITES: u64 = 300;
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let world = World::on(pki, server).await;
    let (mut idn, smuggling) = idn_reading_600_aus_reports(&world).await;
    // A query and a sync each read once, then left unread; a subscription never read.
    let mut query = idn.query(smuggling.clone()).await.unwrap().into_inner();
    query.message().await.unwrap().expect("a first result");
    let mut sync = idn
        .sync(pb::SyncRequest {
            category: pb::Category::SmugglingIncident as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    sync.message().await.unwrap().expect("a first change");
    let _subscription = idn.subscribe(smuggling).await.unwrap();
    let store = world.server.data.path().join("tidemark.redb");
    let size = || std::fs::metadata(&store).unwrap().len();
    let before = size();
    let all = pb::SharingScope::AllContributors;
    for seed in 0..WRITES {
        world
            .submit(&report("THA", 5_000 + seed, false, all, &[]))
            .await;
    }
    let grown = size().saturating_sub(before);
    eprintln!("store {before} bytes, grew {grown} bytes over {WRITES} submissions");
    assert!(
        grown < 8 << 20,
        "grew {grown} bytes over {WRITES} submissions"
    );
    // The reads were paused, not ended: they go on.
    assert!(query.message().await.unwrap().is_some());
    assert!(sync.message().await.unwrap().is_some());
}

/// A read refused a slot (`limits.max_reads_per_principal`) never started: it takes
/// nothing from the budget of reads (an outside pass saw slot refusals spend it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_refused_a_slot_takes_nothing_from_the_read_budget() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.limits.max_reads_per_principal = 1;
        c.limits.reads_per_minute_per_principal = 3;
    })
    .await;
    let world = World::on(pki, server).await;
    let (mut idn, smuggling) = idn_reading_600_aus_reports(&world).await;
    // The one slot held by a read its caller is slow to take: the budget's first read.
    let held = idn.query(smuggling.clone()).await.unwrap().into_inner();
    for _ in 0..5 {
        let refused = idn.query(smuggling.clone()).await.unwrap_err();
        assert!(
            refused.message().contains("max_reads_per_principal = 1"),
            "{refused:?}"
        );
    }
    drop(held);
    // Once the server has let the slot go, the budget's two other reads are there.
    let mut answered = 0;
    let refused = loop {
        match idn.query(smuggling.clone()).await {
            Ok(stream) => {
                answered += 1;
                drop(stream);
            }
            Err(status) if status.message().contains("max_reads_per_principal") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => break status,
        }
        assert!(answered <= 3, "no read was refused for the budget");
    };
    assert_eq!(answered, 2);
    assert!(
        refused
            .message()
            .contains("reads_per_minute_per_principal = 3"),
        "{refused:?}"
    );
}

/// A caller past its read budget is refused for the budget before its standing is
/// worked out — the cheap refusal first (tester C of 2026-12-07: each refusal cost a full
/// standing, and a loop of them took both cores) — for a query and a sync alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_past_the_budget_is_refused_before_its_standing_is_worked_out() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.limits.reads_per_minute_per_principal = 2;
    })
    .await;
    // THA has contributed nothing: a read of others' reports is refused for its standing
    // while its budget lasts, and reads of its own reports spend the budget.
    let mut tha = server.exchange(&node(&pki, "THA")).await;
    let category = pb::Category::SmugglingIncident as i32;
    let all = pb::QueryRequest {
        category,
        ..Default::default()
    };
    let refused = tha.query(all.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let own = pb::QueryRequest {
        category,
        reporting_states: vec!["THA".to_owned()],
        ..Default::default()
    };
    for _ in 0..2 {
        let mut read = tha.query(own.clone()).await.unwrap().into_inner();
        while read.message().await.unwrap().is_some() {}
    }
    let refused = tha.query(all).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("reads_per_minute_per_principal = 2"),
        "{refused:?}"
    );
    let refused = tha
        .sync(pb::SyncRequest {
            category,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
}

/// IDN standing and AUS with 600 reports it may read: IDN's client, on a connection with
/// a small HTTP/2 window (so that a read's queue fills at once), and its query.
async fn idn_reading_600_aus_reports(
    world: &World,
) -> (
    pb::exchange_client::ExchangeClient<tonic::transport::Channel>,
    pb::QueryRequest,
) {
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 1, false, all, &[])).await;
    let envelopes = (0..600)
        .map(|seed| {
            sign(
                &report("AUS", 1_000 + seed, false, all, &[]),
                world.key("AUS"),
            )
        })
        .collect();
    common::import(&world.server, &world.pki, "AUS", envelopes).await;
    let smuggling = pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        ..Default::default()
    };
    let channel = common::small_window_channel(&world.server, &node(&world.pki, "IDN")).await;
    (pb::exchange_client::ExchangeClient::new(channel), smuggling)
}

/// An import takes envelopes for `limits.request_timeout_secs`: one fed slowly stops
/// taking them then and ends DEADLINE_EXCEEDED with the counts of what it took, which is
/// stored — not cut off without a word (an outside pass fed one envelope every 1.5 s:
/// CANCELLED at 30 s, no counts, 20 of 21 stored).
#[tokio::test]
async fn a_slow_import_ends_in_its_window_counting_what_it_took() {
    let pki = TestPki::new();
    let data = tempfile::TempDir::new().unwrap();
    let server = TestServer::start_with(&pki, data, |c| {
        c.limits.request_timeout_secs = 2;
    })
    .await;
    let world = World::on(pki, server).await;
    let mut idn = world.exchange("IDN").await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let import = tokio::spawn(async move {
        idn.import(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let envelope = sign(
        &report("IDN", 1, false, pb::SharingScope::AllContributors, &[]),
        world.key("IDN"),
    );
    let submitted = pb::SubmitRequest {
        envelope: Some(envelope),
        ..Default::default()
    };
    tx.send(submitted.clone()).await.unwrap();
    // The stream stays open, sending nothing more, past the window.
    let status = tokio::time::timeout(Duration::from_secs(10), import)
        .await
        .expect("the import ends by itself")
        .unwrap()
        .expect_err("ended part-way");
    drop(tx);
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("limits.request_timeout_secs"),
        "{status:?}"
    );
    assert_eq!(
        tidemark::client::import_trailers::read(&status),
        Some([1, 1, 0, 0]),
        "{status:?}"
    );
    // It was stored: the same envelope again is a duplicate.
    let again = world
        .exchange("IDN")
        .await
        .submit(submitted)
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate, "{again:?}");
}

/// An import of more than its window takes is answered for whatever storing what it took
/// costs: the trailers count exactly what was taken, and every envelope taken is stored
/// (under load, an outer timeout cut such imports off with CANCELLED and no counts while
/// thousands of their envelopes were still being stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_past_its_window_answers_for_all_it_took() {
    let pki = TestPki::new();
    let data = tempfile::TempDir::new().unwrap();
    let server = TestServer::start_with(&pki, data, |c| {
        c.limits.request_timeout_secs = 1;
    })
    .await;
    let world = World::on(pki, server).await;
    let all = pb::SharingScope::AllContributors;
    let items: Vec<pb::SubmitRequest> = (0..3_000)
        .map(|i| pb::SubmitRequest {
            envelope: Some(sign(
                &report("IDN", 10_000 + i, false, all, &[]),
                world.key("IDN"),
            )),
            ..Default::default()
        })
        .collect();
    let mut idn = world.exchange("IDN").await;
    let (taken, accepted) = match idn.import(tokio_stream::iter(items.clone())).await {
        Ok(summary) => {
            let summary = summary.into_inner();
            (3_000, summary.accepted + summary.duplicates)
        }
        Err(status) => {
            assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
            let [taken, accepted, duplicates, rejected] =
                tidemark::client::import_trailers::read(&status).expect("counted");
            assert_eq!(rejected, 0, "{status:?}");
            (taken, accepted + duplicates)
        }
    };
    assert_eq!(taken, accepted);
    // Exactly the envelopes taken were stored: each again is a duplicate, the next is new.
    let taken = usize::try_from(taken).unwrap();
    for (i, item) in items
        .iter()
        .enumerate()
        .take(taken + 1)
        .skip(taken.saturating_sub(1))
    {
        let again = idn.submit(item.clone()).await.unwrap().into_inner();
        assert_eq!(again.duplicate, i < taken, "envelope {i} of {taken} taken");
    }
}
