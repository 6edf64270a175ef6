//! One spelling per value in signed content, one text policy, DSSE keyids as hints: what
//! the server accepts and refuses, and how a refusal names the field.

mod common;

use common::{World, report, sign, submit};
use proptest::prelude::*;
use tidemark::{clock::Clock, pb};
use tonic::Code;
use tonic_types::StatusExt;

/// The fields a refusal's BadRequest names.
fn bad_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn base(seed: u64) -> pb::Report {
    report("AUS", seed, false, pb::SharingScope::AllContributors, &[])
}

async fn try_submit(world: &World, r: &pb::Report) -> Result<pb::SubmitResponse, tonic::Status> {
    let mut aus = world.exchange("AUS").await;
    submit(&mut aus, sign(r, world.key("AUS"))).await
}

#[tokio::test]
async fn identifiers_dates_and_codes_have_one_spelling() {
    let world = World::new(Clock::system()).await;
    let id = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d";
    let spellings = [
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
        id.to_uppercase(),
        id.replace('-', ""),
        format!(" {id}"),
    ];
    for spelled in &spellings {
        let r = pb::Report {
            report_id: spelled.clone(),
            ..base(1)
        };
        let status = try_submit(&world, &r).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{spelled}");
        assert_eq!(bad_fields(&status), ["report_id"], "{spelled}");
        assert!(status.message().contains(id), "names the form: {status:?}");
    }
    for date in [
        "2024-+2-+9",
        "2024-2-09",
        "+2024-02-09",
        "2024-02-09T00:00Z",
        "20240209",
    ] {
        let r = pb::Report {
            incident_date: date.into(),
            ..base(2)
        };
        let status = try_submit(&world, &r).await.unwrap_err();
        assert_eq!(bad_fields(&status), ["incident_date"], "{date}");
        assert!(status.message().contains("YYYY-MM-DD"), "{status:?}");
    }
    for time in ["7:05", "07:5", "+7:05", "24:00", "07:05:00"] {
        let r = pb::Report {
            incident_time: time.into(),
            ..base(3)
        };
        let status = try_submit(&world, &r).await.unwrap_err();
        assert_eq!(bad_fields(&status), ["incident_time"], "{time}");
    }
    let mut lower = base(4);
    lower.reporting_state = "aus".into();
    let status = try_submit(&world, &lower).await.unwrap_err();
    assert!(bad_fields(&status).contains(&"reporting_state".to_owned()));
    // A fee in a lower-case currency.
    let mut seed = 5;
    let mut fee = loop {
        let r = base(seed);
        seed += 1;
        if let Some(pb::report::Details::Smuggling(s)) = &r.details
            && s.fee_per_person.is_some()
        {
            break r;
        }
    };
    if let Some(pb::report::Details::Smuggling(s)) = fee.details.as_mut() {
        s.fee_per_person.as_mut().unwrap().currency = "usd".into();
    }
    let status = try_submit(&world, &fee).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["smuggling.fee_per_person.currency"]);
    // The canonical spelling of each is accepted.
    let ok = pb::Report {
        report_id: id.into(),
        incident_time: "07:05".into(),
        ..base(1)
    };
    try_submit(&world, &ok).await.unwrap();
}

/// A signed payload is accepted only in its one encoding: bytes that decode to a report
/// but carry more than it shows (a field given twice, an unknown field, a varint spelled
/// long) are refused, signed or not, and the report as encoded is then accepted.
#[tokio::test]
async fn a_signed_payload_has_one_encoding() {
    use prost::Message as _;
    let world = World::new(Clock::system()).await;
    let report = base(11);
    let canonical = report.encode_to_vec();
    let mut twice = Vec::new();
    prost::encoding::string::encode(
        1,
        &"0000dead-0000-4000-8000-00000000beef".to_owned(),
        &mut twice,
    );
    twice.extend_from_slice(&canonical);
    let mut unknown = canonical.clone();
    prost::encoding::string::encode(99, &"hidden note".to_owned(), &mut unknown);
    let mut longer = pb::Report {
        report_id: report.report_id.clone(),
        ..Default::default()
    }
    .encode_to_vec();
    longer.extend_from_slice(&[0x10, 0x81, 0x00]); // version 1 in two bytes
    longer.extend_from_slice(
        &pb::Report {
            report_id: String::new(),
            version: 0,
            ..report.clone()
        }
        .encode_to_vec(),
    );
    let mut aus = world.exchange("AUS").await;
    for (what, payload) in [("twice", twice), ("unknown", unknown), ("longer", longer)] {
        assert_eq!(
            pb::Report::decode(payload.as_slice()).unwrap().report_id,
            report.report_id
        );
        let envelope = tidemark::envelope::sign(
            tidemark::envelope::REPORT_PAYLOAD_TYPE,
            payload,
            world.key("AUS"),
        );
        let status = submit(&mut aus, envelope).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains("one encoding"),
            "{what}: {status:?}"
        );
    }
    submit(&mut aus, sign(&report, world.key("AUS")))
        .await
        .unwrap();
}

#[tokio::test]
async fn each_text_field_follows_its_kind_of_the_text_policy() {
    let world = World::new(Clock::system()).await;
    let with_narrative = |seed, text: &str| pb::Report {
        narrative: text.into(),
        ..base(seed)
    };
    // Free text: CRLF and LF line breaks, tabs, scripts that need ZWNJ.
    for (seed, text) in [
        (10, "first line\r\nsecond line"),
        (11, "a\nb\tc"),
        (12, "می‌خواهم"),
    ] {
        try_submit(&world, &with_narrative(seed, text))
            .await
            .unwrap();
    }
    for text in [
        "lone\rcarriage return",
        "trojan \u{202E}source",
        "isolate \u{2066}x\u{2069}",
        "zero\u{200B}width",
        "para\u{2029}sep",
        "bell\u{7}",
    ] {
        let status = try_submit(&world, &with_narrative(20, text))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["narrative"], "{text:?}");
        assert!(status.message().contains("U+"), "{status:?}");
    }
    // Short text: one line, no outer spaces, no invisible marks.
    for place in ["two\r\nlines", " padded", "tab\there", "mark\u{200E}ed"] {
        let mut r = base(30);
        r.location.as_mut().unwrap().place = place.into();
        let status = try_submit(&world, &r).await.unwrap_err();
        assert_eq!(bad_fields(&status), ["location.place"], "{place:?}");
    }
    // A retraction's reason is free text.
    let kept = base(40);
    try_submit(&world, &kept).await.unwrap();
    let retraction = |reason: &str| pb::Retraction {
        report_id: kept.report_id.clone(),
        reporting_state: "AUS".into(),
        version: 2,
        reason: reason.into(),
    };
    let mut aus = world.exchange("AUS").await;
    let sign_retraction = |r: &pb::Retraction| {
        tidemark::envelope::sign(
            tidemark::envelope::RETRACTION_PAYLOAD_TYPE,
            prost::Message::encode_to_vec(r),
            world.key("AUS"),
        )
    };
    let status = submit(&mut aus, sign_retraction(&retraction("bad \u{202D}")))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["reason"]);
    submit(
        &mut aus,
        sign_retraction(&retraction("duplicate\r\nof another")),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_signature_with_an_empty_or_wrong_keyid_is_checked_against_the_states_keys() {
    let world = World::new(Clock::system()).await;
    for (seed, keyid) in [(50, ""), (51, "not-a-key"), (52, "0".repeat(64).as_str())] {
        let mut envelope = sign(&base(seed), world.key("AUS"));
        envelope.signatures[0].keyid = keyid.to_owned();
        let mut aus = world.exchange("AUS").await;
        submit(&mut aus, envelope).await.unwrap();
    }
    // Still: altered bytes, or another state's key, are refused.
    let mut altered = sign(&base(53), world.key("AUS"));
    altered.signatures[0].keyid = String::new();
    altered.payload.push(0);
    let mut aus = world.exchange("AUS").await;
    let status = submit(&mut aus, altered).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut foreign = sign(&base(54), world.key("IDN"));
    foreign.signatures[0].keyid = String::new();
    let status = submit(&mut aus, foreign).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

/// Read requests are held to the rules reports are: a value outside its enum, or a state
/// in any other spelling, is refused naming the field, never read as "no match".
#[tokio::test]
async fn read_filters_refuse_values_outside_their_enum_and_other_spellings_of_a_state() {
    let world = World::new(Clock::system()).await;
    submit(
        &mut world.exchange("AUS").await,
        sign(&base(60), world.key("AUS")),
    )
    .await
    .unwrap();
    let query =
        |category: pb::Category, modus_operandi, vessel_type, maritime_event| pb::QueryRequest {
            category: category as i32,
            modus_operandi,
            vessel_type,
            maritime_event,
            ..pb::QueryRequest::default()
        };
    let (smuggling, maritime) = (
        pb::Category::SmugglingIncident,
        pb::Category::MaritimeMovement,
    );
    let (sea, wooden, rescue) = (
        pb::ModusOperandi::Sea as i32,
        pb::VesselType::WoodenBoat as i32,
        pb::MaritimeEvent::Rescue as i32,
    );
    for (request, field) in [
        (query(smuggling, 77, 0, 0), "modus_operandi"),
        (query(smuggling, 0, 77, 0), "vessel_type"),
        (query(smuggling, 0, 0, -1), "maritime_event"),
        // A field only the other category's reports have would match nothing.
        (query(smuggling, 0, wooden, 0), "vessel_type"),
        (query(smuggling, 0, 0, rescue), "maritime_event"),
        (query(maritime, sea, 0, 0), "modus_operandi"),
    ] {
        let mut aus = world.exchange("AUS").await;
        let status = aus.query(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(bad_fields(&status), [field], "{status:?}");
        let status = aus.subscribe(request).await.unwrap_err();
        assert_eq!(bad_fields(&status), [field], "{status:?}");
    }
    let mut aus = world.exchange("AUS").await;
    for state in ["aus", "Aus", " AUS", "AU"] {
        let status = aus
            .signing_keys(pb::SigningKeysRequest {
                state: state.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["state"], "{state}: {status:?}");
    }
    let keys = aus
        .signing_keys(pb::SigningKeysRequest {
            state: "AUS".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    let status = aus.sync(pb::SyncRequest::default()).await.unwrap_err();
    assert_eq!(bad_fields(&status), ["category"], "{status:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any string the report-id rule accepts is exactly the lower-case hyphenated form of
    /// the UUID it names.
    #[test]
    fn an_accepted_report_id_is_its_own_canonical_form(
        id in any::<u128>(),
        upper in any::<bool>(),
        form in 0usize..4,
    ) {
        let uuid = uuid::Uuid::from_u128(id);
        let text = match form {
            0 => uuid.hyphenated().to_string(),
            1 => uuid.simple().to_string(),
            2 => uuid.braced().to_string(),
            _ => uuid.urn().to_string(),
        };
        let text = if upper { text.to_uppercase() } else { text };
        match tidemark::report::parse_report_id(&text) {
            Ok(parsed) => {
                prop_assert_eq!(parsed, uuid);
                prop_assert_eq!(text, uuid.hyphenated().to_string());
            }
            Err(reason) => prop_assert!(
                id == 0 || form != 0 || (upper && text != text.to_lowercase()),
                "{} refused: {}", text, reason
            ),
        }
    }
}
