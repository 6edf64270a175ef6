//! Signed reports end to end: signatures, states, roles, idempotency, versions,
//! durability, receipts, limits and group commit, against a real server and store.

mod common;

use std::collections::BTreeSet;

use common::{TestPki, TestServer, node, sample_report, sign, state, submit, submit_signed};
use prost::Message;
use tidemark::{
    Store,
    envelope::{RETRACTION_PAYLOAD_TYPE, digest},
    identity::Role,
    pb, receipt,
    signing::SigningKey,
};
use tonic::Code;
use tonic_types::StatusExt;

fn expect_code(result: Result<pb::SubmitResponse, tonic::Status>, code: Code, text: &str) {
    let status = result.expect_err("the submission must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(text),
        "{:?} lacks {text:?}",
        status.message()
    );
}

#[tokio::test]
async fn an_accepted_report_and_its_receipt_survive_a_restart() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let aus = node(&pki, "AUS");
    let key = server.register_new_key(&pki, "AUS").await;
    let report = sample_report("AUS", 1);
    let envelope = sign(&report, &key);

    let mut exchange = server.exchange(&aus).await;
    let first = submit_signed(&mut exchange, envelope.clone())
        .await
        .unwrap();
    assert!(!first.duplicate);
    let receipt_env = first.receipt.clone().unwrap();
    let server_key = server.receipt_key(&aus).await;
    let receipt = receipt::verify(&receipt_env, &server_key).unwrap();
    // The signed receipt states what the answer says was accepted.
    assert_eq!(Some(&receipt), first.accepted.as_ref());
    assert_eq!(receipt.sequence, 1);
    assert_eq!(receipt.report_id, report.report_id);
    assert_eq!(receipt.reporting_state, "AUS");
    assert_eq!(receipt.envelope_digest, digest(&envelope).to_vec());

    // The store holds exactly the bytes that were signed.
    let data = server.stop().await;
    let store = Store::open(&tidemark::config::StoreConfig::in_dir(data.path())).unwrap();
    let stored = store.envelope(1).unwrap().unwrap();
    let stored_env = pb::Envelope::decode(stored.envelope.as_slice()).unwrap();
    assert_eq!(stored_env.payload, envelope.payload);
    drop(store);

    // After a restart on the same store, the same envelope gets the original receipt.
    let server = TestServer::start_with(&pki, data, |_| {}).await;
    let mut exchange = server.exchange(&aus).await;
    let again = submit_signed(&mut exchange, envelope.clone())
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.receipt, first.receipt);
    // Unless asked for, no receipt is signed: the log proof is the receipt of record.
    let unsigned = submit(&mut exchange, envelope).await.unwrap();
    assert!(unsigned.receipt.is_none());
    assert_eq!(unsigned.accepted, first.accepted);
    assert!(!unsigned.log_proof.is_empty());
}

#[tokio::test]
async fn signatures_must_verify_and_come_from_an_active_key_of_the_callers_state() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let aus_key = server.register_new_key(&pki, "AUS").await;
    let idn_key = server.register_new_key(&pki, "IDN").await;
    let mut exchange = server.exchange(&node(&pki, "AUS")).await;
    let report = sample_report("AUS", 2);

    // Control: the right key works, so each refusal below is about the one change made.
    let ok = submit(&mut exchange, sign(&sample_report("AUS", 99), &aus_key)).await;
    assert!(ok.is_ok(), "{ok:?}");

    let mut tampered = sign(&report, &aus_key);
    let last = tampered.payload.len() - 1;
    tampered.payload[last] ^= 0x01;
    expect_code(
        submit(&mut exchange, tampered).await,
        Code::Unauthenticated,
        "does not verify",
    );

    let mut bad_sig = sign(&report, &aus_key);
    bad_sig.signatures[0].sig[0] ^= 0x01;
    expect_code(
        submit(&mut exchange, bad_sig).await,
        Code::Unauthenticated,
        "does not verify",
    );

    expect_code(
        submit(&mut exchange, sign(&report, &idn_key)).await,
        Code::PermissionDenied,
        "registered to IDN",
    );

    let (unregistered, _) = SigningKey::generate().unwrap();
    expect_code(
        submit(&mut exchange, sign(&report, &unregistered)).await,
        Code::Unauthenticated,
        "no registered signing key",
    );

    let mut unsigned = sign(&report, &aus_key);
    unsigned.signatures.clear();
    expect_code(
        submit(&mut exchange, unsigned).await,
        Code::Unauthenticated,
        "no signature",
    );

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (expired, _) = SigningKey::generate().unwrap();
    server
        .register_key(&pki, "AUS", &expired, now - 1000, now - 10)
        .await;
    expect_code(
        submit(&mut exchange, sign(&report, &expired)).await,
        Code::Unauthenticated,
        "expired",
    );

    let (future, _) = SigningKey::generate().unwrap();
    server
        .register_key(&pki, "AUS", &future, now + 3600, 0)
        .await;
    expect_code(
        submit(&mut exchange, sign(&report, &future)).await,
        Code::Unauthenticated,
        "not valid until",
    );

    let revoked = server.register_new_key(&pki, "AUS").await;
    server
        .admin(&common::operator(&pki))
        .await
        .revoke_signing_key(pb::RevokeSigningKeyRequest {
            key_id: revoked.key_id().to_owned(),
            compromised_at_unix: 0,
            reason: "key-compromise".to_owned(),
        })
        .await
        .unwrap();
    let refused = submit(&mut exchange, sign(&report, &revoked)).await;
    // A revoked key's use is on record, as a refusal of the caller (an expired or
    // not-yet-valid key's is not: nobody can have stolen what was never trusted then).
    let number = refused.as_ref().err().map(common::named_audit_number);
    expect_code(refused, Code::Unauthenticated, "revoked");
    let mut admin = server.admin(&common::operator(&pki)).await;
    let record = common::audit_record(&mut admin, number.unwrap()).await;
    assert_eq!(
        (record.action.as_str(), record.state.as_str()),
        ("refused Submit", "AUS"),
        "{record:?}"
    );
    assert!(record.detail.contains("was revoked as of"), "{record:?}");

    // Nothing but the control was stored.
    let count = server.stop().await;
    let store = Store::open(&tidemark::config::StoreConfig::in_dir(count.path())).unwrap();
    assert_eq!(store.envelope_count().unwrap(), 1);
}

#[tokio::test]
async fn a_node_submits_only_its_own_states_reports_and_only_nodes_submit() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let aus_key = server.register_new_key(&pki, "AUS").await;
    let mut exchange = server.exchange(&node(&pki, "AUS")).await;

    let idn_report = sample_report("IDN", 3);
    expect_code(
        submit(&mut exchange, sign(&idn_report, &aus_key)).await,
        Code::PermissionDenied,
        "reporting_state is IDN",
    );

    let report = sample_report("AUS", 3);
    for (role, name) in [
        (Role::StateAnalyst(state("AUS")), "analyst"),
        (Role::RegionalAnalyst, "regional"),
        (Role::Operator, "ops"),
    ] {
        let mut other = server.exchange(&pki.client(role, name)).await;
        expect_code(
            submit(&mut other, sign(&report, &aus_key)).await,
            Code::PermissionDenied,
            "only node certificates submit",
        );
        // An empty request too: the role is checked first, and the refusal audited.
        let empty = other
            .submit(pb::SubmitRequest::default())
            .await
            .unwrap_err();
        assert_eq!(empty.code(), Code::PermissionDenied, "{empty:?}");
        assert!(
            empty.message().contains("only node certificates submit")
                && empty.metadata().get("tidemark-audit").is_some(),
            "{empty:?}"
        );
    }
}

#[tokio::test]
async fn resubmission_is_idempotent_and_conflicts_are_refused() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "AUS").await;
    let mut exchange = server.exchange(&node(&pki, "AUS")).await;
    let report = sample_report("AUS", 4);

    let first = submit(&mut exchange, sign(&report, &key)).await.unwrap();
    let second = submit(&mut exchange, sign(&report, &key)).await.unwrap();
    assert!(second.duplicate);
    assert_eq!(first.accepted, second.accepted);

    let mut changed = report.clone();
    changed.narrative = "A different account of the same incident.".to_owned();
    expect_code(
        submit(&mut exchange, sign(&changed, &key)).await,
        Code::AlreadyExists,
        "different content",
    );

    let data = server.stop().await;
    let store = Store::open(&tidemark::config::StoreConfig::in_dir(data.path())).unwrap();
    assert_eq!(store.envelope_count().unwrap(), 1, "one stored copy");
}

#[tokio::test]
async fn owners_amend_and_retract_and_nobody_else_can() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let aus_key = server.register_new_key(&pki, "AUS").await;
    let idn_key = server.register_new_key(&pki, "IDN").await;
    let mut aus = server.exchange(&node(&pki, "AUS")).await;
    let mut idn = server.exchange(&node(&pki, "IDN")).await;
    let v1 = sample_report("AUS", 5);
    let v1_env = sign(&v1, &aus_key);
    submit(&mut aus, v1_env.clone()).await.unwrap();

    let v2 = pb::Report {
        version: 2,
        narrative: "Amended: two more persons found.".into(),
        ..v1.clone()
    };
    let amended = submit(&mut aus, sign(&v2, &aus_key)).await.unwrap();
    let receipt = amended.accepted.unwrap();
    assert_eq!((receipt.version, receipt.kind.as_str()), (2, "report"));

    // A replayed old version is not a rollback: it gets its original receipt.
    let replay = submit(&mut aus, v1_env).await.unwrap();
    assert!(replay.duplicate);

    let skip = pb::Report {
        version: 5,
        ..v1.clone()
    };
    expect_code(
        submit(&mut aus, sign(&skip, &aus_key)).await,
        Code::FailedPrecondition,
        "next version must be 3",
    );
    // A version of the other category: each category's readers and mirrors follow its
    // versions, so a report keeps its first version's category.
    let other_category = (0..64)
        .map(|seed| sample_report("AUS", seed))
        .find(|r| {
            r.details.as_ref().map(std::mem::discriminant)
                != v1.details.as_ref().map(std::mem::discriminant)
        })
        .expect("a sample of the other category");
    let moved = pb::Report {
        report_id: v1.report_id.clone(),
        version: 3,
        ..other_category
    };
    expect_code(
        submit(&mut aus, sign(&moved, &aus_key)).await,
        Code::FailedPrecondition,
        "retract it and submit a new report",
    );

    // IDN cannot amend AUS's report, whatever it claims, and is not told whose it is.
    let hijack = pb::Report {
        version: 3,
        reporting_state: "IDN".into(),
        ..v1.clone()
    };
    let refused = submit(&mut idn, sign(&hijack, &idn_key)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("another state's") && !refused.message().contains("AUS"),
        "{refused:?}"
    );

    let retraction = pb::Retraction {
        report_id: v1.report_id.clone(),
        reporting_state: "AUS".into(),
        version: 3,
        reason: "entered twice".into(),
    };
    let retract_env = tidemark::envelope::sign(
        RETRACTION_PAYLOAD_TYPE,
        retraction.encode_to_vec(),
        &aus_key,
    );
    let retracted = submit(&mut aus, retract_env).await.unwrap();
    let receipt = retracted.accepted.unwrap();
    assert_eq!(receipt.kind, "retraction");

    let v4 = pb::Report {
        version: 4,
        ..v1.clone()
    };
    expect_code(
        submit(&mut aus, sign(&v4, &aus_key)).await,
        Code::FailedPrecondition,
        "retracted",
    );

    let unknown = pb::Retraction {
        report_id: uuid::Uuid::new_v4().to_string(),
        ..retraction
    };
    let env = tidemark::envelope::sign(RETRACTION_PAYLOAD_TYPE, unknown.encode_to_vec(), &aus_key);
    expect_code(
        submit(&mut aus, env).await,
        Code::NotFound,
        "nothing to retract",
    );

    let data = server.stop().await;
    let store = Store::open(&tidemark::config::StoreConfig::in_dir(data.path())).unwrap();
    let id: uuid::Uuid = v1.report_id.parse().unwrap();
    let head = store.report_head(id).unwrap().unwrap();
    assert!(head.retracted, "the report is kept, marked retracted");
    assert_eq!(
        head.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[tokio::test]
async fn an_invalid_report_names_every_bad_field_and_stores_nothing() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "AUS").await;
    let mut exchange = server.exchange(&node(&pki, "AUS")).await;
    let mut report = sample_report("AUS", 6);
    report.incident_date = "2999-01-01".into();
    report.persons.as_mut().unwrap().minors = 100_000;
    let status = submit(&mut exchange, sign(&report, &key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad = status
        .get_details_bad_request()
        .expect("a BadRequest detail");
    let fields: BTreeSet<String> = bad.field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(
        fields,
        BTreeSet::from(["incident_date".into(), "persons.minors".into()])
    );

    let mut garbage = sign(&report, &key);
    garbage.payload = vec![0xff; 10];
    garbage = tidemark::envelope::sign(&garbage.payload_type.clone(), garbage.payload, &key);
    expect_code(
        submit(&mut exchange, garbage).await,
        Code::InvalidArgument,
        "not a tidemark.v1.Report",
    );

    let data = server.stop().await;
    let store = Store::open(&tidemark::config::StoreConfig::in_dir(data.path())).unwrap();
    assert_eq!(store.envelope_count().unwrap(), 0);
}

#[tokio::test]
async fn oversized_messages_and_imports_are_resource_exhausted() {
    let pki = TestPki::new();
    let server = TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.limits.max_message_bytes = 16 * 1024;
        c.limits.max_import_items = 3;
    })
    .await;
    let key = server.register_new_key(&pki, "AUS").await;
    let mut exchange = server.exchange(&node(&pki, "AUS")).await;

    let mut big = sign(&sample_report("AUS", 7), &key);
    big.payload = vec![b'x'; 20 * 1024];
    expect_code(
        submit(&mut exchange, big).await,
        Code::ResourceExhausted,
        "larger than this server accepts",
    );

    let requests: Vec<pb::SubmitRequest> = (0..4)
        .map(|i| pb::SubmitRequest {
            envelope: Some(sign(&sample_report("AUS", 100 + i), &key)),
            ..Default::default()
        })
        .collect();
    let status = exchange
        .import(tokio_stream::iter(requests))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("at most 3"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_from_four_states_get_unique_gap_free_sequences() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let states = ["AUS", "IDN", "THA", "NZL"];
    let mut tasks = Vec::new();
    for code in states {
        let key = std::sync::Arc::new(server.register_new_key(&pki, code).await);
        let exchange = server.exchange(&node(&pki, code)).await;
        for i in 0..50 {
            let (key, mut exchange) = (key.clone(), exchange.clone());
            tasks.push(tokio::spawn(async move {
                let report = sample_report(code, 1000 + i);
                let response = submit(&mut exchange, sign(&report, &key)).await.unwrap();
                response.accepted.unwrap()
            }));
        }
    }
    let mut sequences = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for task in tasks {
        let receipt = task.await.unwrap();
        assert!(
            sequences.insert(receipt.sequence),
            "duplicate sequence {}",
            receipt.sequence
        );
        ids.insert(receipt.report_id);
    }
    assert_eq!(
        sequences,
        (1..=200).collect::<BTreeSet<u64>>(),
        "unique and gap-free"
    );

    let data = server.stop().await;
    let store = Store::open(&tidemark::config::StoreConfig::in_dir(data.path())).unwrap();
    assert_eq!(store.envelope_count().unwrap(), 200);
    for id in ids {
        assert!(
            store.report_head(id.parse().unwrap()).unwrap().is_some(),
            "{id} present"
        );
    }
}

/// A payload type that is not accepted is named in the refusal, quoted and cut short:
/// the caller's bytes go into the answer (and the log), which a 20,000-character one
/// pushed past gRPC's metadata limit (an outside pass).
#[tokio::test]
async fn an_unknown_payload_type_is_refused_quoted_and_cut_short() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let key = server.register_new_key(&pki, "AUS").await;
    let mut exchange = server.exchange(&node(&pki, "AUS")).await;
    let mut envelope = sign(&sample_report("AUS", 5), &key);
    envelope.payload_type = "x".repeat(20_000);
    let refused = submit(&mut exchange, envelope).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("payload type \"xxx") && refused.message().len() < 400,
        "{} characters",
        refused.message().len()
    );
}
