//! The transparency log against a real server: receipts are C2SP tlog proofs that verify
//! offline and fail on any changed byte, every audit record is in the log, the log is
//! consistent between every pair of published sizes, and it continues across a restart.

mod common;

use common::{World, log_key, node, report, sign, submit};
use tidemark::{
    Clock, Role,
    pb::{self, get_inclusion_proof_request::Leaf, transparency_client::TransparencyClient},
    receipt,
    tlog::{
        checkpoint::Checkpoint,
        entry::{Entry, sha256},
        merkle::{self, Hash},
        note::NoteVerifier,
    },
};
use tonic::{Code, transport::Channel};

async fn transparency(world: &World, role: Role, name: &str) -> TransparencyClient<Channel> {
    let identity = world.pki.client(role, name);
    TransparencyClient::new(world.server.channel(&identity).await)
}

/// The newest checkpoint, its signature checked.
async fn checkpoint(log: &mut TransparencyClient<Channel>, key: &str) -> Checkpoint {
    let note = log
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .note;
    Checkpoint::open(&note, &NoteVerifier::parse(key).unwrap()).unwrap()
}

fn hashes(raw: &[Vec<u8>]) -> Vec<Hash> {
    raw.iter()
        .map(|h| h.as_slice().try_into().unwrap())
        .collect()
}

#[tokio::test]
async fn a_receipt_verifies_offline_and_fails_on_any_changed_byte() {
    let world = World::new(Clock::system()).await;
    let mut log = transparency(&world, Role::RegionalAnalyst, "ra-1").await;
    let key = log_key(&mut log).await;
    assert!(key.starts_with("tidemark.test/log+"), "{key}");

    let r = report("AUS", 1, false, pb::SharingScope::AllContributors, &[]);
    let envelope = sign(&r, world.key("AUS"));
    let mut ex = world.exchange("AUS").await;
    let response = submit(&mut ex, envelope.clone()).await.unwrap();
    let proof = response.log_proof;
    let verified = receipt::verify_log_proof(&proof, &key).unwrap();

    // The entry commits to what any holder of the envelope can recompute.
    let entry = String::from_utf8(verified.entry.clone()).unwrap();
    let payload = format!("sha256:{}", hex::encode(sha256(&envelope.payload)));
    assert_eq!(Entry::field(&entry, "payload"), Some(payload.as_str()));
    assert_eq!(Entry::field(&entry, "state"), Some("AUS"));
    assert_eq!(Entry::field(&entry, "kind"), Some("report"));

    // One changed byte anywhere — entry, index, proof hashes, checkpoint body or
    // signature — and the proof no longer verifies.
    let bytes = proof.as_bytes();
    for at in 0..bytes.len() {
        let mut changed = bytes.to_vec();
        changed[at] ^= 0x01;
        let Ok(changed) = String::from_utf8(changed) else {
            continue;
        };
        assert!(
            receipt::verify_log_proof(&changed, &key).is_err(),
            "a proof changed at byte {at} still verifies:\n{changed}"
        );
    }
    // Another log's key does not verify it either.
    let other = key.replacen("tidemark.test/log", "other.example/log", 1);
    assert!(receipt::verify_log_proof(&proof, &other).is_err());

    // A duplicate submission gets the original entry's receipt.
    let again = submit(&mut ex, envelope).await.unwrap();
    assert!(again.duplicate);
    let verified_again = receipt::verify_log_proof(&again.log_proof, &key).unwrap();
    assert_eq!(verified_again.index, verified.index);
    assert_eq!(verified_again.entry, verified.entry);
}

#[tokio::test]
async fn every_audit_record_of_a_read_is_in_the_log() {
    let world = World::new(Clock::system()).await;
    for (state, seed) in [("AUS", 1), ("IDN", 2)] {
        world
            .submit(&report(
                state,
                seed,
                false,
                pb::SharingScope::AllContributors,
                &[],
            ))
            .await;
    }
    world.read_all_smuggling("IDN").await;

    let mut aus = world.exchange("AUS").await;
    let accesses = aus
        .access_to_my_data(pb::AccessToMyDataRequest::default())
        .await
        .unwrap()
        .into_inner()
        .accesses;
    let access = accesses
        .iter()
        .find(|a| a.reader_state == "IDN" && a.action == "query")
        .expect("IDN's query is on AUS's access list");
    let entry = String::from_utf8(access.log_entry.clone()).unwrap();
    assert_eq!(Entry::field(&entry, "status"), Some("complete"));
    assert_eq!(Entry::field(&entry, "owners"), Some("AUS:1 IDN:1"));
    // The operator opens the entry's commitment to the request for an auditor.
    let mut admin = world.server.admin(&common::operator(&world.pki)).await;
    let record = common::audit_record(&mut admin, access.number).await;
    assert_eq!(record.detail_salt.len(), 16);
    let opened = sha256(&[&record.detail_salt[..], record.detail.as_bytes()].concat());
    assert_eq!(
        Entry::field(&entry, "detail"),
        Some(format!("sha256:{}", hex::encode(opened)).as_str())
    );

    let mut log = transparency(&world, Role::Node(common::state("AUS")), "aus-1").await;
    let key = log_key(&mut log).await;
    let leaf = merkle::leaf_hash(&access.log_entry);
    let proof = log
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(Leaf::LeafHash(leaf.to_vec())),
            tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let checkpoint = Checkpoint::open(&proof.checkpoint, &NoteVerifier::parse(&key).unwrap())
        .expect("the proof comes with the newest signed checkpoint");
    assert_eq!(checkpoint.size, proof.tree_size);
    assert_eq!(proof.entry, access.log_entry);
    merkle::verify_inclusion(
        &leaf,
        proof.index,
        checkpoint.size,
        &hashes(&proof.hashes),
        &checkpoint.root,
    )
    .expect("the access record is in the log");
}

#[tokio::test]
async fn the_log_is_consistent_between_every_pair_of_sizes_and_continues_after_a_restart() {
    let pki = common::TestPki::new();
    let server = common::TestServer::start(&pki).await;
    let world = World::on(pki, server).await;
    let mut log = transparency(&world, Role::Operator, "ops-1").await;
    let key = log_key(&mut log).await;
    let mut seen: Vec<Checkpoint> = vec![checkpoint(&mut log, &key).await];
    let mut first = None;
    for seed in 1..5 {
        let r = report("AUS", seed, false, pb::SharingScope::AllContributors, &[]);
        let mut ex = world.exchange("AUS").await;
        let signed = sign(&r, world.key("AUS"));
        let accepted = submit(&mut ex, signed.clone()).await.unwrap();
        first.get_or_insert((signed, accepted.log_proof));
        seen.push(checkpoint(&mut log, &key).await);
    }
    let before = seen.last().unwrap().clone();

    // Restart on the same store: the same size has the same root.
    let World { pki, server, .. } = world;
    let data = server.stop().await;
    let server = common::TestServer::start_with(&pki, data, |_| {}).await;
    let identity = common::operator(&pki);
    let mut log = TransparencyClient::new(server.channel(&identity).await);
    let after = checkpoint(&mut log, &key).await;
    assert_eq!((after.size, after.root), (before.size, before.root));
    // Every leaf written before the restart is found by its hash, and a duplicate gets
    // its original leaf.
    let entries = log
        .get_entries(pb::GetEntriesRequest {
            start: 0,
            end: after.size,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len() as u64, after.size);
    for (index, entry) in entries.iter().enumerate() {
        let proof = log
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf: Some(Leaf::LeafHash(merkle::leaf_hash(entry).to_vec())),
                tree_size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(proof.index, index as u64);
    }
    let (envelope, proof) = first.unwrap();
    let original = receipt::verify_log_proof(&proof, &key).unwrap();
    let again = submit(&mut server.exchange(&node(&pki, "AUS")).await, envelope)
        .await
        .unwrap();
    assert!(again.duplicate);
    let again = receipt::verify_log_proof(&again.log_proof, &key).unwrap();
    assert_eq!((again.index, again.entry), (original.index, original.entry));
    let world = World::on(pki, server).await;
    let mut ex = world.exchange("IDN").await;
    let r = report("IDN", 9, false, pb::SharingScope::AllContributors, &[]);
    submit(&mut ex, sign(&r, world.key("IDN"))).await.unwrap();
    seen.push(checkpoint(&mut log, &key).await);

    for (i, old) in seen.iter().enumerate() {
        for new in &seen[i..] {
            let proof = log
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    old_size: old.size,
                    new_size: new.size,
                })
                .await
                .unwrap()
                .into_inner();
            merkle::verify_consistency(
                old.size,
                new.size,
                &old.root,
                &new.root,
                &hashes(&proof.hashes),
            )
            .unwrap_or_else(|e| panic!("{} → {}: {e}", old.size, new.size));
        }
    }
}

#[tokio::test]
async fn proofs_are_refused_for_what_the_log_does_not_have() {
    let world = World::new(Clock::system()).await;
    let mut log = transparency(&world, Role::StateAnalyst(common::state("THA")), "tha-a").await;
    let key = log_key(&mut log).await;
    let size = checkpoint(&mut log, &key).await.size;

    let past = log
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(Leaf::Index(0)),
            tree_size: size + 1,
        })
        .await
        .unwrap_err();
    assert_eq!(past.code(), Code::OutOfRange, "{past:?}");
    // A leaf the log does not have yet is named as such, whatever the size asked for.
    for (leaf, tree_size) in [(size, 0), (u64::MAX, 0), (u64::MAX, size)] {
        let index = log
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf: Some(Leaf::Index(leaf)),
                tree_size,
            })
            .await
            .unwrap_err();
        assert_eq!(index.code(), Code::OutOfRange, "{index:?}");
        assert!(
            index
                .message()
                .ends_with(&format!("numbered from 0: leaf {leaf} is not one of them")),
            "{index:?}"
        );
    }
    // One it has, asked for in a tree before it was added, needs a larger tree.
    let later = log
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(Leaf::Index(size - 1)),
            tree_size: size - 1,
        })
        .await
        .unwrap_err();
    assert_eq!(later.code(), Code::OutOfRange, "{later:?}");
    assert!(
        later.message().contains("it was added after that size"),
        "{later:?}"
    );
    let unknown = log
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(Leaf::LeafHash(vec![7; 32])),
            tree_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let short = log
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(Leaf::LeafHash(vec![7; 31])),
            tree_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument, "{short:?}");
    let backwards = log
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            old_size: size,
            new_size: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(backwards.code(), Code::OutOfRange, "{backwards:?}");
    let entries = log
        .get_entries(pb::GetEntriesRequest {
            start: 0,
            end: 5000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(entries.entries.len() as u64, size.min(1000));

    // Every role reads the log; a node too.
    let mut node_log =
        TransparencyClient::new(world.server.channel(&node(&world.pki, "IDN")).await);
    assert!(
        node_log
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_aggregates_log_entry_names_the_owners_in_scope_not_the_counts_nor_the_matches() {
    let world = World::new(Clock::system()).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 9_999, false, all, &[])).await;
    world.submit(&report("THA", 9_998, false, all, &[])).await;
    for seed in 0..3 {
        world.submit(&report("AUS", seed, false, all, &[])).await;
    }
    // IDN's analyst counts AUS's reports: a table withheld or perturbed for it.
    let count_as_idn = |filter: pb::AggregateFilter| {
        let (server, idn) = (&world.server, common::analyst(&world.pki, "IDN"));
        async move {
            let request = pb::AggregateRequest {
                group_by: vec![],
                metrics: vec![pb::Metric::Reports as i32],
                filter: Some(pb::AggregateFilter {
                    category: pb::Category::SmugglingIncident as i32,
                    ..filter
                }),
            };
            common::aggregate(server, &idn, request).await.unwrap();
        }
    };
    count_as_idn(pb::AggregateFilter {
        reporting_states: vec!["AUS".into()],
        ..pb::AggregateFilter::default()
    })
    .await;
    // The owner sees the exact count in its own access list ...
    let access = world
        .exchange("AUS")
        .await
        .access_to_my_data(pb::AccessToMyDataRequest::default())
        .await
        .unwrap()
        .into_inner()
        .accesses
        .into_iter()
        .find(|a| a.action == "aggregate")
        .expect("the aggregate is in AUS's access list");
    assert_eq!(access.count, 3);
    // ... but the log, which every principal (the analyst too) reads, names AUS only.
    let entry = String::from_utf8(access.log_entry.clone()).unwrap();
    assert_eq!(Entry::field(&entry, "count"), Some("-"), "{entry}");
    assert_eq!(Entry::field(&entry, "owners"), Some("AUS"), "{entry}");
    let mut log = transparency(&world, Role::StateAnalyst(common::state("IDN")), "idn-a").await;
    // Nor does it say whose reports a filter matched: an empty month names the same owners
    // as the whole history, and without a state filter every state with reports in the
    // category is named, IDN as much as AUS.
    for (from, to) in [("1990-01-01", "1990-01-31"), ("", "")] {
        count_as_idn(pb::AggregateFilter {
            from_date: from.into(),
            to_date: to.into(),
            ..pb::AggregateFilter::default()
        })
        .await;
    }
    let owners: Vec<String> = common::log_entries(&mut log)
        .await
        .into_iter()
        .filter(|e| Entry::field(e, "action") == Some("aggregate"))
        .map(|e| Entry::field(&e, "owners").unwrap().to_owned())
        .collect();
    assert_eq!(owners, ["AUS", "AUS IDN THA", "AUS IDN THA"]);
    // And each owner the log names holds the aggregate in its access list, with its own
    // exact count (0 where the filter matched none of its reports), so that checking its
    // list against the log (`audit --verify`) finds nothing missing.
    let counts: Vec<u64> = world
        .exchange("THA")
        .await
        .access_to_my_data(pb::AccessToMyDataRequest::default())
        .await
        .unwrap()
        .into_inner()
        .accesses
        .into_iter()
        .filter(|a| a.action == "aggregate")
        .map(|a| a.count)
        .collect();
    assert_eq!(counts, [1, 0], "newest first");
    let proof = log
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            leaf: Some(Leaf::LeafHash(
                merkle::leaf_hash(&access.log_entry).to_vec(),
            )),
            tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(proof.entry, access.log_entry);
}

#[tokio::test]
async fn what_a_read_sends_is_on_record_before_it_leaves_the_server() {
    let world = World::new(Clock::system()).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 9_999, false, all, &[])).await;
    let items: Vec<pb::SubmitRequest> = (0..300)
        .map(|seed| pb::SubmitRequest {
            envelope: Some(sign(
                &report("AUS", seed, false, all, &[]),
                world.key("AUS"),
            )),
            ..Default::default()
        })
        .collect();
    world
        .exchange("AUS")
        .await
        .import(tokio_stream::iter(items))
        .await
        .unwrap();
    let mut idn = world.exchange("IDN").await;
    let mut stream = idn
        .query(pb::QueryRequest {
            category: pb::Category::SmugglingIncident as i32,
            ..pb::QueryRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut admin = world.server.admin(&common::operator(&world.pki)).await;
    let mut received = 0u64;
    // At every point of the read, the in-progress record already allows every AUS report
    // received: a crash now would leave it on record, with an upper bound.
    while let Some(item) = stream.message().await.unwrap() {
        if item.meta.is_some_and(|m| m.reporting_state == "AUS") {
            received += 1;
        }
        if received % 50 != 1 {
            continue;
        }
        let entries = common::audit_log(&mut admin).await;
        let record = entries
            .iter()
            .find(|e| e.action == "query" && e.state == "IDN")
            .unwrap();
        let allowed = record.by_owner.get("AUS").copied().unwrap_or(0);
        assert!(
            allowed >= received,
            "{received} AUS reports received, but the record allows {allowed}: {record:?}"
        );
    }
    assert_eq!(received, 300);
    // Ended: the record is exact, and it is what AUS sees.
    let mut aus = world.exchange("AUS").await;
    let access = aus
        .access_to_my_data(pb::AccessToMyDataRequest::default())
        .await
        .unwrap()
        .into_inner()
        .accesses
        .into_iter()
        .find(|a| a.action == "query")
        .unwrap();
    assert_eq!(access.count, 300);
    // The log commits to the request only through a salted hash.
    let entry = String::from_utf8(access.log_entry).unwrap();
    let detail = r#"{"category":"CATEGORY_SMUGGLING_INCIDENT"}"#;
    let unsalted = format!("sha256:{}", hex::encode(sha256(detail.as_bytes())));
    assert_ne!(Entry::field(&entry, "detail"), Some(unsalted.as_str()));
}

/// The log's first entry, which a new log's policy entry is.
async fn policy_entry(log: &mut TransparencyClient<Channel>) -> String {
    let entries = log
        .get_entries(pb::GetEntriesRequest { start: 0, end: 1 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let policy = String::from_utf8(entries[0].clone()).unwrap();
    assert!(policy.starts_with("tidemark.v1 policy\n"), "{policy}");
    policy
}

#[tokio::test]
async fn a_new_log_has_a_checkpoint_and_its_origin_and_key_cannot_change() {
    let pki = common::TestPki::new();
    let server = common::TestServer::start(&pki).await;
    let identity = common::operator(&pki);
    let mut log = TransparencyClient::new(server.channel(&identity).await);
    let key = log_key(&mut log).await;
    // A new log: a signed checkpoint at once, of the give-to-get rules in force (leaf 0).
    let first = checkpoint(&mut log, &key).await;
    assert_eq!(first.size, 1);
    let policy = policy_entry(&mut log).await;
    assert_eq!(
        Entry::field(&policy, "smuggling-incident"),
        Some("window-days 365 minimum 1")
    );

    // The same rules on a restart are not logged again; changed rules are.
    let data = server.stop().await;
    let server = common::TestServer::start_with(&pki, data, |_| {}).await;
    let mut log = TransparencyClient::new(server.channel(&identity).await);
    assert_eq!(checkpoint(&mut log, &key).await.size, 1);
    let data = server.stop().await;
    let server = common::TestServer::start_with(&pki, data, |config| {
        config.policy.smuggling_incident.minimum = 2;
    })
    .await;
    let mut log = TransparencyClient::new(server.channel(&identity).await);
    assert_eq!(checkpoint(&mut log, &key).await.size, 2);
    let data = server.stop().await;
    let mut config = pki.config(&data);
    config.log.origin = "elsewhere.example/log".to_owned();
    let refused = tidemark::Server::build(config)
        .err()
        .expect("another origin is refused");
    let message = refused.to_string();
    assert!(message.contains("cannot change"), "{message}");
    // With the origin it was made with, the log opens again.
    tidemark::Server::build(pki.config(&data)).expect("the same origin and key");
}

#[tokio::test]
async fn the_policy_entry_is_dated_by_the_servers_clock() {
    // A day in 2025, far from the system clock: the entry must carry this time, not the
    // machine's, or a checkpoint whose last leaf it is could not be cosigned on this clock.
    let start = 1_750_000_000;
    let (clock, _) = Clock::manual(start);
    let world = World::new(clock).await;
    let mut log = transparency(&world, Role::Operator, "op").await;
    let policy = policy_entry(&mut log).await;
    let decoded = Entry::decode(policy.as_bytes()).expect("a well-formed entry");
    assert_eq!(decoded.written_at(), start, "{policy}");
}

/// A cosignature under AUS's witness name made with IDN's signing key is not AUS's to
/// give: PERMISSION_DENIED, audited, naming the key's state. One no registered key made
/// does not verify: UNAUTHENTICATED.
#[tokio::test]
async fn a_cosignature_made_with_another_states_key_is_refused_as_not_its_own() {
    use tidemark::tlog::cosignature::Cosigner;
    let world = World::new(Clock::system()).await;
    let mut log = transparency(&world, Role::Node(common::state("AUS")), "aus-1").await;
    let key = log_key(&mut log).await;
    let held = checkpoint(&mut log, &key).await;
    let body = held.to_body();
    let name = format!("{}/witness/AUS", held.origin);
    let add = |line: String| pb::AddCosignatureRequest {
        tree_size: held.size,
        cosignature: line,
    };
    // AUS's name, another state's key: not AUS's to give (PERMISSION_DENIED, audited).
    let forged = Cosigner::from_key(&name, world.key("IDN")).unwrap();
    let refused = log
        .add_cosignature(add(forged.cosign(&body, 1)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("of IDN, not a key of AUS"),
        "{refused:?}"
    );
    assert!(
        refused.metadata().get("tidemark-audit").is_some(),
        "{refused:?}"
    );
    // AUS's name, a key registered to no state.
    let (unknown, _) = tidemark::signing::SigningKey::generate().unwrap();
    let unknown = Cosigner::from_key(&name, &unknown).unwrap();
    let refused = log
        .add_cosignature(add(unknown.cosign(&body, 1)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

#[tokio::test]
async fn a_cosignature_is_kept_only_from_the_state_whose_witness_name_and_key_it_carries() {
    use tidemark::tlog::cosignature::Cosigner;
    let world = World::new(Clock::system()).await;
    let mut log = transparency(&world, Role::Node(common::state("AUS")), "aus-1").await;
    let key = log_key(&mut log).await;
    let held = checkpoint(&mut log, &key).await;
    let body = held.to_body();
    let origin = held.origin.clone();
    let add = |line: String, size: u64| pb::AddCosignatureRequest {
        tree_size: size,
        cosignature: line,
    };
    let aus = Cosigner::from_key(&format!("{origin}/witness/AUS"), world.key("AUS")).unwrap();
    let now = u64::try_from(Clock::system().now()).unwrap();
    let good = aus.cosign(&body, now - 100);

    // Wrong role: an analyst's connection.
    let mut analyst = transparency(&world, Role::RegionalAnalyst, "ra-1").await;
    let refused = analyst
        .add_cosignature(add(good.clone(), held.size))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Another state's witness name, from AUS's node.
    let tha = Cosigner::from_key(&format!("{origin}/witness/THA"), world.key("THA")).unwrap();
    let refused = log
        .add_cosignature(add(tha.cosign(&body, 1), held.size))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Tampered bytes: a cosignature of another checkpoint body.
    let other = aus.cosign(&body.replace(&held.size.to_string(), "999"), 1);
    let refused = log
        .add_cosignature(add(other, held.size))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // A size with no checkpoint; garbage.
    let refused = log
        .add_cosignature(add(good.clone(), held.size + 1000))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    // Malformed: not a line, a line with its line feed, a signature of the wrong length.
    let oversized = format!(
        "{} {}",
        good.rsplit_once(' ').unwrap().0,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 4000])
    );
    for (line, says) in [
        ("not a line".to_owned(), "em dash"),
        (format!("{good}\n"), "line feed"),
        (oversized, "tlog-cosignature/v1"),
    ] {
        let refused = log.add_cosignature(add(line, held.size)).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(says), "{says}: {refused:?}");
    }
    // None of that reached the checkpoint; the good one does, and only once on replay.
    // (The refusals are audited, so the log grew: cosign its newest checkpoint.)
    assert!(!checkpoint_note(&mut log).await.contains("/witness/"));
    let held = checkpoint(&mut log, &key).await;
    let good = aus.cosign(&held.to_body(), now - 100);
    log.add_cosignature(add(good.clone(), held.size))
        .await
        .unwrap();
    log.add_cosignature(add(good.clone(), held.size))
        .await
        .unwrap();
    let note = checkpoint_note(&mut log).await;
    assert_eq!(note.matches("/witness/AUS ").count(), 1, "{note}");
    // A witness's time never goes backwards, nor past the server's clock (5 minutes of
    // skew allowed); a later one replaces the one held.
    let body = held.to_body();
    // An older one that verifies is answered as cosigned, with the later time held.
    let older = aus.cosign(&body, now - 200);
    let answer = log
        .add_cosignature(add(older.clone(), held.size))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.newer_held_time, now - 100, "{answer:?}");
    assert!(
        answer.checkpoint.contains(&good) && !answer.checkpoint.contains(&older),
        "{answer:?}"
    );
    // Nor before the checkpoint was signed (its last entry's time, 5 minutes of skew).
    for past in [0, now - 3600] {
        let refused = log
            .add_cosignature(add(aus.cosign(&body, past), held.size))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("before the checkpoint"),
            "{refused:?}"
        );
    }
    for future in [now + 3600, u64::MAX] {
        let refused = log
            .add_cosignature(add(aus.cosign(&body, future), held.size))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }
    assert!(checkpoint_note(&mut log).await.contains(&good));
    let later = aus.cosign(&body, now);
    log.add_cosignature(add(later.clone(), held.size))
        .await
        .unwrap();
    let note = checkpoint_note(&mut log).await;
    assert!(note.contains(&later) && !note.contains(&good), "{note}");
}

async fn checkpoint_note(log: &mut TransparencyClient<Channel>) -> String {
    log.get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .note
}

#[tokio::test]
async fn every_refusal_of_an_authenticated_caller_is_on_record_and_in_the_log() {
    let world = World::new(Clock::system()).await;
    // A node at the operator's desk, an analyst asking for records, a state that has
    // contributed nothing asking for others' (audited by give-to-get itself).
    let mut admin = world.server.admin(&node(&world.pki, "AUS")).await;
    let wrong_role = admin
        .suspend_state(pb::StateRequest {
            state: "IDN".to_owned(),
        })
        .await
        .unwrap_err();
    let analyst = common::analyst(&world.pki, "THA");
    let mut as_analyst =
        pb::exchange_client::ExchangeClient::new(world.server.channel(&analyst).await);
    let query = pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        ..pb::QueryRequest::default()
    };
    let analyst_query = as_analyst.query(query.clone()).await.unwrap_err();
    let no_standing = world.exchange("IDN").await.query(query).await.unwrap_err();
    let numbers = [&wrong_role, &analyst_query, &no_standing].map(common::audit_number);

    let mut operator = world.server.admin(&common::operator(&world.pki)).await;
    let records = common::audit_log(&mut operator).await;
    let record = |n: u64| records.iter().find(|r| r.number == n).unwrap();
    let expected = [
        ("AUS", "/state/AUS/node/", "refused SuspendState"),
        ("THA", "/state/THA/analyst/", "refused query"),
        ("IDN", "/state/IDN/node/", "refused query"),
    ];
    for (n, (state, who, action)) in numbers.iter().zip(expected) {
        let r = record(*n);
        assert_eq!(
            (r.state.as_str(), r.action.as_str()),
            (state, action),
            "{r:?}"
        );
        assert!(r.principal.contains(who), "{r:?}");
    }
    // Each record says why, as its caller was told.
    for (n, status) in numbers
        .iter()
        .zip([&wrong_role, &analyst_query, &no_standing])
    {
        let detail: serde_json::Value = serde_json::from_str(&record(*n).detail).unwrap();
        assert_eq!(
            detail["refusal"].as_str(),
            Some(status.message()),
            "{detail}"
        );
    }
    // Give-to-get's refusal is recorded once, not again by the layer.
    let refusals: Vec<_> = records.iter().filter(|r| r.state == "IDN").collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(record(numbers[0]).detail.contains("operator certificate"));

    // Each is an entry of the log.
    let mut log = transparency(&world, Role::RegionalAnalyst, "ra-1").await;
    let key = log_key(&mut log).await;
    let size = checkpoint(&mut log, &key).await.size;
    let entries = log
        .get_entries(pb::GetEntriesRequest {
            start: 0,
            end: size,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    for (n, (_, _, action)) in numbers.iter().zip(expected) {
        let n = n.to_string();
        let found = entries.iter().any(|e| {
            let e = String::from_utf8_lossy(e);
            Entry::field(&e, "number") == Some(n.as_str())
                && Entry::field(&e, "action") == Some(action)
        });
        assert!(found, "audit record {n} ({action}) is not in the log");
    }

    // A suspended state's call, refused at authentication, is on record too.
    operator
        .suspend_state(pb::StateRequest {
            state: "IDN".to_owned(),
        })
        .await
        .unwrap();
    let suspended = world
        .exchange("IDN")
        .await
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap_err();
    let record = common::audit_record(&mut operator, common::audit_number(&suspended)).await;
    assert_eq!(
        (record.state.as_str(), record.action.as_str()),
        ("IDN", "refused WhoAmI"),
        "{record:?}"
    );
}

/// One Import call of `envelopes` by `state`'s node.
async fn import<const N: usize>(
    world: &World,
    state: &str,
    envelopes: [pb::Envelope; N],
) -> Result<tonic::Response<pb::ImportResponse>, tonic::Status> {
    let requests = envelopes.map(|e| pb::SubmitRequest {
        envelope: Some(e),
        ..Default::default()
    });
    world
        .exchange(state)
        .await
        .import(tokio_stream::iter(requests))
        .await
}

/// Import items signed with a revoked key are refusals on record, with those sent under
/// another state's key: the uses an operator looks for after a compromise.
#[tokio::test]
async fn import_items_signed_with_a_revoked_key_are_on_record() {
    let world = World::new(Clock::system()).await;
    let mut operator = world.server.admin(&common::operator(&world.pki)).await;
    operator
        .revoke_signing_key(pb::RevokeSigningKeyRequest {
            key_id: world.key("AUS").key_id().to_owned(),
            reason: "key-compromise".into(),
            compromised_at_unix: 0,
        })
        .await
        .unwrap();
    let signed = |seed| {
        sign(
            &report("AUS", seed, false, pb::SharingScope::AllContributors, &[]),
            world.key("AUS"),
        )
    };
    let answer = import(&world, "AUS", [signed(1), signed(2)]).await.unwrap();
    assert_eq!(answer.get_ref().rejected, 2, "{answer:?}");
    let number = answer
        .metadata()
        .get("tidemark-audit")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .expect("the refused items' record is named");
    let record = common::audit_record(&mut operator, number).await;
    assert_eq!(
        (record.state.as_str(), record.action.as_str()),
        ("AUS", "refused Import"),
        "{record:?}"
    );
    assert!(
        record.detail.contains("\"refused_items\":2")
            && record.detail.contains("was revoked as of"),
        "{record:?}"
    );
}

#[tokio::test]
async fn an_import_ended_early_still_records_the_items_it_refused() {
    let pki = common::TestPki::new();
    let server = common::TestServer::start_with(&pki, tempfile::TempDir::new().unwrap(), |c| {
        c.limits.max_import_items = 2;
    })
    .await;
    let world = World::on(pki, server).await;
    let foreign = sign(
        &report("AUS", 2, false, pb::SharingScope::AllContributors, &[]),
        world.key("IDN"),
    );
    let own = |seed| {
        sign(
            &report("AUS", seed, false, pb::SharingScope::AllContributors, &[]),
            world.key("AUS"),
        )
    };
    // One item over the limit ends the import with RESOURCE_EXHAUSTED.
    let ended = import(&world, "AUS", [foreign, own(3), own(4)])
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Code::ResourceExhausted, "{ended:?}");
    let mut operator = world.server.admin(&common::operator(&world.pki)).await;
    let refused: Vec<pb::AuditEntry> = common::audit_log(&mut operator)
        .await
        .into_iter()
        .filter(|e| e.action == "refused Import")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].detail.contains("\"index\":0"), "{refused:?}");
}

/// Import items refused for who sent them are on record once per import; and one
/// principal's refusals are recorded from a budget (a burst, then one a second), past
/// which they are still refused but not recorded.
#[tokio::test]
async fn refused_import_items_are_on_record_and_refusal_records_have_a_budget() {
    let world = World::new(Clock::system()).await;
    let own = sign(
        &report("AUS", 1, false, pb::SharingScope::AllContributors, &[]),
        world.key("AUS"),
    );
    let foreign = sign(
        &report("AUS", 2, false, pb::SharingScope::AllContributors, &[]),
        world.key("IDN"),
    );
    let response = import(&world, "AUS", [own, foreign]).await.unwrap();
    let number: u64 = response
        .metadata()
        .get("tidemark-audit")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let summary = response.into_inner();
    assert_eq!((summary.accepted, summary.rejected), (1, 1), "{summary:?}");
    let operator = world.server.admin(&common::operator(&world.pki)).await;
    let records = |after: u64| {
        let mut operator = operator.clone();
        async move {
            operator
                .audit_log(pb::AuditLogRequest { after, limit: 1000 })
                .await
                .unwrap()
                .into_inner()
                .entries
        }
    };
    let record = common::audit_record(&mut operator.clone(), number).await;
    assert_eq!(
        (record.state.as_str(), record.action.as_str()),
        ("AUS", "refused Import")
    );
    assert!(record.detail.contains("\"index\":1"), "{record:?}");
    // The same refused alone, by Submit.
    let foreign = sign(
        &report("AUS", 3, false, pb::SharingScope::AllContributors, &[]),
        world.key("IDN"),
    );
    let refused = submit(&mut world.exchange("AUS").await, foreign)
        .await
        .unwrap_err();
    let record = common::audit_record(&mut operator.clone(), common::audit_number(&refused)).await;
    assert_eq!(
        (record.state.as_str(), record.action.as_str()),
        ("AUS", "refused Submit")
    );

    // A node at the operator's desk, and a state without standing asking for others'
    // reports (a refusal give-to-get records itself), over and over: each draws on its
    // principal's one budget.
    let admin = world.server.admin(&node(&world.pki, "THA")).await;
    let tha = flood(|| {
        let mut admin = admin.clone();
        async move {
            admin
                .suspend_state(pb::StateRequest {
                    state: "IDN".to_owned(),
                })
                .await
                .unwrap_err()
        }
    })
    .await;
    let idn_exchange = world.exchange("IDN").await;
    let idn = flood(|| {
        let mut exchange = idn_exchange.clone();
        async move {
            exchange
                .query(pb::QueryRequest {
                    category: pb::Category::SmugglingIncident as i32,
                    ..pb::QueryRequest::default()
                })
                .await
                .unwrap_err()
        }
    })
    .await;
    let on_record = records(number).await;
    for (state, recorded) in [("THA", tha), ("IDN", idn)] {
        let by_state = on_record.iter().filter(|r| r.state == state).count() as u64;
        assert_eq!(by_state, recorded, "{state}");
    }
}

/// Makes 80 calls each refused PERMISSION_DENIED; checks that between 60 (the budget's
/// burst) and 60 plus the seconds taken were recorded and the rest said they were not;
/// returns how many were recorded.
async fn flood<F, Fut>(call: F) -> u64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = tonic::Status>,
{
    let started = std::time::Instant::now();
    let mut recorded = 0u64;
    for _ in 0..80 {
        let refused = call().await;
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        let named = refused
            .metadata()
            .get("tidemark-audit")
            .unwrap()
            .to_str()
            .unwrap();
        if named != "unrecorded" {
            named.parse::<u64>().unwrap();
            recorded += 1;
        }
    }
    let regained = started.elapsed().as_secs() + 1;
    assert!(
        (60..=60 + regained).contains(&recorded),
        "{recorded} in {regained} s"
    );
    recorded
}

/// Every result of another state's query, run with `include_log_proofs`, carries the
/// log proof of the acceptance of exactly the envelope it returns — for an amended
/// report, its latest version's — and that proof is the submitter's receipt entry.
#[tokio::test]
async fn query_results_carry_the_log_proofs_of_their_envelopes() {
    let world = World::new(Clock::system()).await;
    let mut log = transparency(&world, Role::Node(common::state("IDN")), "idn-node").await;
    let key = log_key(&mut log).await;
    let mut aus = world.exchange("AUS").await;
    let mut receipts = std::collections::HashMap::new();
    let first = report("AUS", 1, false, pb::SharingScope::AllContributors, &[]);
    let mut amended = first.clone();
    amended.version = 2;
    amended.narrative = "Amended: two more persons found.".into();
    for r in [
        first,
        amended,
        report("AUS", 2, false, pb::SharingScope::AllContributors, &[]),
    ] {
        let envelope = sign(&r, world.key("AUS"));
        let response = submit(&mut aus, envelope.clone()).await.unwrap();
        let verified = receipt::verify_log_proof(&response.log_proof, &key).unwrap();
        receipts.insert(envelope.payload, (verified.index, verified.entry));
    }
    world
        .submit(&report(
            "IDN",
            3,
            false,
            pb::SharingScope::AllContributors,
            &[],
        ))
        .await;
    let mut idn = world.exchange("IDN").await;
    let query = |include_log_proofs| pb::QueryRequest {
        category: pb::Category::SmugglingIncident as i32,
        reporting_states: vec!["AUS".into()],
        include_log_proofs,
        ..pb::QueryRequest::default()
    };
    let mut results = idn.query(query(true)).await.unwrap().into_inner();
    let mut proven = 0;
    while let Some(result) = results.message().await.unwrap() {
        let envelope = result.envelope.unwrap();
        let verified = receipt::verify_log_proof(&result.log_proof, &key).unwrap();
        let (index, entry) = &receipts[&envelope.payload];
        assert_eq!((&verified.index, &verified.entry), (index, entry));
        let entry = String::from_utf8(verified.entry).unwrap();
        let meta = result.meta.unwrap();
        assert_eq!(
            Entry::field(&entry, "accepted"),
            Some(meta.accepted_at_unix.to_string().as_str())
        );
        assert_eq!(
            Entry::field(&entry, "version"),
            Some(meta.version.to_string().as_str())
        );
        proven += 1;
    }
    assert_eq!(
        proven, 2,
        "AUS's two reports, the first at its latest version"
    );

    // Without asking, no proof; a subscription cannot ask.
    let mut results = idn.query(query(false)).await.unwrap().into_inner();
    while let Some(result) = results.message().await.unwrap() {
        assert!(result.log_proof.is_empty());
    }
    // Sync gives each change its proof too: every version, each its own entry.
    let mut items = idn
        .sync(pb::SyncRequest {
            category: pb::Category::SmugglingIncident as i32,
            after_sequence: 0,
            include_log_proofs: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut aus_changes = 0;
    while let Some(item) = items.message().await.unwrap() {
        let envelope = item.envelope.unwrap();
        let verified = receipt::verify_log_proof(&item.log_proof, &key).unwrap();
        let payload = format!("sha256:{}", hex::encode(sha256(&envelope.payload)));
        let entry = String::from_utf8(verified.entry).unwrap();
        assert_eq!(Entry::field(&entry, "payload"), Some(payload.as_str()));
        if let Some((index, _)) = receipts.get(&envelope.payload) {
            assert_eq!(verified.index, *index);
            aus_changes += 1;
        }
    }
    assert_eq!(
        aus_changes, 3,
        "both versions of the first report, and the second"
    );
    let refused = idn.subscribe(query(true)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("tidemark query --json --log-proofs"),
        "{refused:?}"
    );
}

/// An owner pages back through its whole access list (`before`), newest first, each
/// access once, whatever the page size.
#[tokio::test]
async fn an_owner_pages_back_through_its_whole_access_list() {
    let world = World::new(Clock::system()).await;
    let all = pb::SharingScope::AllContributors;
    world.submit(&report("IDN", 9_999, false, all, &[])).await;
    world.submit(&report("AUS", 1, false, all, &[])).await;
    for _ in 0..5 {
        world.read_all_smuggling("IDN").await;
    }
    let aus = world.exchange("AUS").await;
    let page = |limit, before| {
        let request = pb::AccessToMyDataRequest { limit, before };
        let mut aus = aus.clone();
        async move {
            aus.access_to_my_data(request)
                .await
                .unwrap()
                .into_inner()
                .accesses
        }
    };
    let listed = page(0, 0).await;
    // IDN's five reads, and the operator's registration of AUS's key (with a detail).
    let reads = listed.iter().filter(|a| a.detail.is_empty()).count();
    assert_eq!((reads, listed.len()), (5, 6));
    let whole: Vec<u64> = listed.iter().map(|a| a.number).collect();
    assert!(
        whole.windows(2).all(|w| w[0] > w[1]),
        "newest first: {whole:?}"
    );
    for size in [1, 2, 3] {
        let (mut paged, mut before) = (Vec::new(), 0);
        loop {
            let got = page(size, before).await;
            paged.extend(got.iter().map(|a| a.number));
            match got.last() {
                Some(last) if got.len() == size as usize => before = last.number,
                _ => break,
            }
        }
        assert_eq!(paged, whole, "pages of {size}");
    }
}
