//! The `tidemark.v1.Exchange` service: thin handlers over the domain.

use pbjson_types::Timestamp;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    client::import_trailers,
    identity::{PeerIdentity, Role},
    pb, receipt,
    server::{auth, context::Context, guard::Guarded, refusals, status},
    store::{Accepted, AppendError, AuditRecord},
    submission::{self, SubmitError},
};

/// The Exchange handlers, over the shared context.
pub(super) struct ExchangeService {
    pub ctx: Context,
}

impl ExchangeService {
    /// The answer to an import: its items refused for who sent them are refusals like
    /// Submit's, on record once per import and named in `tidemark-audit` (the answer is
    /// OK, so `super::refusals` does not see them).
    async fn answer_import(
        &self,
        peer: &PeerIdentity,
        summary: pb::ImportResponse,
        revoked_keys: &[u64],
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let Some(record) = refused_items(peer, &summary.rejections, revoked_keys) else {
            return Ok(Response::new(summary));
        };
        let named = match self.ctx.refusals.record(record).await {
            Ok(Some(number)) => number.into(),
            Ok(None) => tonic::metadata::MetadataValue::from_static(refusals::UNRECORDED),
            Err(e) => {
                return Err(Status::unavailable(format!(
                    "the import's {} accepted envelopes are stored, but its refused items \
                     could not be written to the audit log ({e}); importing the same file \
                     again stores nothing twice",
                    summary.accepted
                )));
            }
        };
        let mut response = Response::new(summary);
        response
            .metadata_mut()
            .insert(refusals::AUDIT_METADATA, named);
        Ok(response)
    }

    /// Waits for each queued item of an import, in order, and sums up the answers.
    async fn collect<F>(
        &self,
        peer: &PeerIdentity,
        pending: Vec<(u64, Result<F, SubmitError>)>,
    ) -> (pb::ImportResponse, Vec<u64>)
    where
        F: Future<Output = Result<Accepted, AppendError>>,
    {
        let mut summary = pb::ImportResponse::default();
        // Items signed with a revoked key: refusals on record, as Submit's.
        let mut revoked_keys = Vec::new();
        for (index, queued) in pending {
            let result = match queued {
                Ok(done) => done.await.map_err(SubmitError::from),
                Err(e) => Err(e),
            };
            match &result {
                Ok(accepted) => self.ctx.metrics.submission_accepted(accepted.duplicate),
                Err(err) => {
                    self.ctx.metrics.submission_refused(err.kind());
                    tracing::info!(
                        principal = %peer.principal(),
                        item = index,
                        kind = err.kind(),
                        reason = %err,
                        "import item refused"
                    );
                }
            }
            match result {
                Ok(accepted) if accepted.duplicate => summary.duplicates += 1,
                Ok(_) => summary.accepted += 1,
                Err(err) => {
                    summary.rejected += 1;
                    if err.revoked_key() {
                        revoked_keys.push(index);
                    }
                    let detailed = summary.rejections.len() < DETAILED_REJECTIONS;
                    summary.rejections.push(rejection(index, err, detailed));
                }
            }
        }
        tracing::info!(
            principal = %peer.principal(),
            accepted = summary.accepted,
            duplicates = summary.duplicates,
            rejected = summary.rejected,
            "import finished"
        );
        (summary, revoked_keys)
    }

    async fn submit_one(
        &self,
        peer: &PeerIdentity,
        envelope: Option<pb::Envelope>,
    ) -> Result<Accepted, SubmitError> {
        let result: Result<Accepted, SubmitError> = async {
            let new = submission::verify(
                envelope.as_ref(),
                peer,
                &self.ctx.store,
                self.ctx.clock.now_utc(),
            )?;
            Ok(self.ctx.writer.append(new).await?)
        }
        .await;
        match &result {
            Ok(accepted) => self.ctx.metrics.submission_accepted(accepted.duplicate),
            Err(e) => self.ctx.metrics.submission_refused(e.kind()),
        }
        result
    }
}

#[tonic::async_trait]
impl pb::exchange_server::Exchange for ExchangeService {
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let peer = auth::peer(&request)?;
        let mut me = who_am_i(peer);
        if let Some(shown) = self.ctx.trust.verified_chain(peer) {
            me.trust_anchor.clone_from(&shown.anchor);
            me.trust_anchor_vouches_for.clone_from(&shown.vouches_for);
            me.intermediates.clone_from(&shown.intermediates);
        }
        Ok(Response::new(me))
    }

    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let peer = auth::peer(&request)?.clone();
        let request = request.into_inner();
        let accepted = match self.submit_one(&peer, request.envelope).await {
            Ok(accepted) => accepted,
            // Signed with a revoked key: refused as a bad signature, and on record.
            Err(e) if e.revoked_key() => {
                let state = peer.principal().state().map(|s| s.to_string());
                let record = super::reads::refusal_record(
                    &peer,
                    state.as_deref().unwrap_or_default(),
                    ("Submit", r#"{"method":"tidemark.v1.Exchange/Submit"}"#),
                );
                return Err(self.ctx.refusals.refuse(record, e.into()).await);
            }
            Err(e) => return Err(e.into()),
        };
        if !accepted.duplicate {
            tracing::info!(principal = %peer.principal(), sequence = accepted.sequence, "envelope accepted");
        }
        let log_proof = receipt::log_proof(&self.ctx.store.log()?, &accepted.leaf)?;
        // The log proof is signed once per batch; a signature per submission only when
        // asked for.
        let signed = request
            .signed_receipt
            .then(|| receipt::issue(&accepted, &self.ctx.receipt_key));
        Ok(Response::new(pb::SubmitResponse {
            receipt: signed,
            duplicate: accepted.duplicate,
            log_proof,
            accepted: Some(receipt::facts(&accepted)),
        }))
    }

    /// Refuses or ends an import; its trailers say what was done before (see
    /// `ImportResponse` in the proto).
    async fn import(
        &self,
        request: Request<Streaming<pb::SubmitRequest>>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let peer = auth::peer(&request)?.clone();
        if !matches!(peer.principal().role(), Role::Node(_)) {
            return Err(SubmitError::NotANode(peer.principal().role().with_article()).into());
        }
        let mut guard = self.ctx.guard(&peer, None);
        let mut stream = request.into_inner();
        let mut index: u64 = 0;
        // Verify each envelope as it arrives and queue it; the writer batches them, and
        // the answers are collected at the end, in order. The caller is re-checked
        // before each envelope is taken, and while the stream waits for the next one.
        let mut pending = Vec::new();
        // Past its window (`limits.request_timeout_secs`) it stops taking envelopes and
        // answers for those it took, however long storing them takes.
        let window = self.ctx.import_window;
        let closes = tokio::time::sleep(window);
        tokio::pin!(closes);
        // Why the import ended before its stream did, if it did.
        let ended = loop {
            let item = tokio::select! {
                biased;
                status = guard.lapsed() => break Some(status),
                () = &mut closes => break Some(Status::deadline_exceeded(format!(
                    "an import call takes envelopes for at most {} s \
                     (limits.request_timeout_secs); the trailers count those taken — send the \
                     rest in another call",
                    window.as_secs()
                ))),
                item = stream.message() => item.map_err(status::client_fault),
            };
            let item = match item {
                Ok(Some(item)) => item,
                Ok(None) => break None,
                Err(status) => break Some(status),
            };
            if let Err(status) = guard.check() {
                break Some(status);
            }
            if pending.len() >= self.ctx.max_import_items {
                break Some(Status::resource_exhausted(format!(
                    "an import stream may hold at most {} envelopes (limits.max_import_items); \
                     nothing past that was stored — split the import into several calls",
                    self.ctx.max_import_items
                )));
            }
            let verified = submission::verify(
                item.envelope.as_ref(),
                &peer,
                &self.ctx.store,
                self.ctx.clock.now_utc(),
            );
            // Queued in stream order, so an amendment or retraction may follow its
            // report in the same import.
            let queued = match verified {
                Ok(new) => Ok(self
                    .ctx
                    .writer
                    .enqueue(new)
                    .await
                    .map_err(SubmitError::from)?),
                Err(e) => Err(e),
            };
            pending.push((index, queued));
            index += 1;
        };
        let (summary, revoked_keys) = self.collect(&peer, pending).await;
        match ended {
            None => self.answer_import(&peer, summary, &revoked_keys).await,
            // The items refused so far are on record before the call is refused.
            Some(status) => {
                if let Some(record) = refused_items(&peer, &summary.rejections, &revoked_keys)
                    && let Err(e) = self.ctx.refusals.record(record).await
                {
                    tracing::error!(principal = %peer.principal(), error = %e, "an ended import's refused items could not be recorded");
                }
                // What was done before the end, so that the caller can count it and go on
                // from the first envelope not taken, and why the first items were refused.
                let counts = [
                    (import_trailers::TAKEN, index),
                    (import_trailers::ACCEPTED, summary.accepted),
                    (import_trailers::DUPLICATES, summary.duplicates),
                    (import_trailers::REJECTED, summary.rejected),
                ];
                let mut status = status::with_detail(&status, listed_part(summary));
                for (key, value) in counts {
                    status.metadata_mut().insert(key, value.into());
                }
                Err(status)
            }
        }
    }

    type QueryStream = Guarded<pb::QueryResult>;
    type SyncStream = Guarded<pb::SyncItem>;
    type SubscribeStream = Guarded<pb::SyncItem>;

    async fn subscribe(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let peer = auth::peer(&request)?.clone();
        Ok(Response::new(
            self.ctx.subscribe(&peer, request.into_inner()).await?,
        ))
    }

    async fn my_standing(
        &self,
        request: Request<pb::MyStandingRequest>,
    ) -> Result<Response<pb::MyStandingResponse>, Status> {
        // Store work, on a blocking thread: its cost grows with the caller's
        // contributions, and on a runtime worker it held up every other connection.
        let peer = auth::peer(&request)?.clone();
        let _in_progress = self.ctx.take_lookup(&peer, "MyStanding").await?;
        let reader = peer.clone();
        let standing = self
            .ctx
            .blocking(move |ctx| ctx.my_standing(&reader))
            .await?;
        let rows = standing
            .categories
            .iter()
            .map(|c| c.contributed)
            .sum::<u64>();
        self.ctx
            .charge_lookup(&peer, usize::try_from(rows).unwrap_or(usize::MAX));
        Ok(Response::new(standing))
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let peer = auth::peer(&request)?.clone();
        Ok(Response::new(
            self.ctx.query(&peer, request.into_inner()).await?,
        ))
    }

    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<Self::SyncStream>, Status> {
        let peer = auth::peer(&request)?.clone();
        Ok(Response::new(
            self.ctx.sync(&peer, request.into_inner()).await?,
        ))
    }

    async fn access_to_my_data(
        &self,
        request: Request<pb::AccessToMyDataRequest>,
    ) -> Result<Response<pb::AccessToMyDataResponse>, Status> {
        let peer = auth::peer(&request)?.clone();
        let _in_progress = self.ctx.take_lookup(&peer, "AccessToMyData").await?;
        let (limit, before) = (request.get_ref().limit, request.get_ref().before);
        let reader = peer.clone();
        let accesses = self
            .ctx
            .blocking(move |ctx| ctx.access_to_my_data(&reader, (limit, before)))
            .await?;
        self.ctx.charge_lookup(&peer, accesses.accesses.len());
        Ok(Response::new(accesses))
    }

    async fn signing_keys(
        &self,
        request: Request<pb::SigningKeysRequest>,
    ) -> Result<Response<pb::SigningKeysResponse>, Status> {
        auth::peer(&request)?;
        let state = &request.get_ref().state;
        if !state.is_empty() {
            crate::country::CountryCode::parse(state)
                .map_err(|e| super::status::state_filter(&e))?;
        }
        let keys = self
            .ctx
            .store
            .signing_keys((!state.is_empty()).then_some(state.as_str()))?;
        let keys = keys
            .into_iter()
            .filter_map(|k| {
                let public = crate::signing::PublicKey::from_raw(&k.public_key).ok()?;
                Some(pb::PublicSigningKey {
                    key_id: k.key_id,
                    state: k.state,
                    public_key_pem: public.to_spki_pem(),
                    valid_from_unix: k.valid_from,
                    valid_until_unix: k.valid_until,
                    revoked_at_unix: k.revoked_at,
                })
            })
            .collect();
        Ok(Response::new(pb::SigningKeysResponse { keys }))
    }

    async fn get_crl(
        &self,
        request: Request<pb::GetCrlRequest>,
    ) -> Result<Response<pb::GetCrlResponse>, Status> {
        auth::peer(&request)?;
        let crl_pem = self.ctx.trust.crl_pem().ok_or_else(|| {
            Status::failed_precondition(
                "this server does not hold the CA key (tls.ca_key), so it publishes no CRL; \
                 ask the operator of the exchange CA for it",
            )
        })?;
        Ok(Response::new(pb::GetCrlResponse { crl_pem }))
    }

    async fn server_keys(
        &self,
        request: Request<pb::ServerKeysRequest>,
    ) -> Result<Response<pb::ServerKeysResponse>, Status> {
        auth::peer(&request)?;
        let public = self.ctx.receipt_key.public_key();
        Ok(Response::new(pb::ServerKeysResponse {
            receipt_key_id: public.key_id().to_owned(),
            receipt_public_key_pem: public.to_spki_pem(),
        }))
    }
}

/// Rejections of one import that carry their field violations; later ones carry the
/// code and a shortened message, so the answer stays bounded whatever is sent.
const DETAILED_REJECTIONS: usize = 100;
/// Characters of a rejection message past [`DETAILED_REJECTIONS`].
const SHORT_MESSAGE_CHARS: usize = 200;

/// Encoded bytes of the rejections an ended import lists in its status details: its
/// trailers must stay within what clients accept (gRPC's default metadata limit is
/// 8 KiB), and base64 makes them a third larger.
const LISTED_BYTES: usize = 3 * 1024;

/// An ended import's answer as its status details carry it: the counts, and its first
/// rejections while they fit in [`LISTED_BYTES`].
fn listed_part(mut summary: pb::ImportResponse) -> prost_types::Any {
    let mut size = 0;
    let listed = summary
        .rejections
        .iter()
        .take_while(|r| {
            size += prost::Message::encoded_len(*r);
            size <= LISTED_BYTES
        })
        .count();
    summary.rejections.truncate(listed);
    prost_types::Any {
        type_url: import_trailers::SUMMARY_TYPE_URL.to_owned(),
        value: prost::Message::encode_to_vec(&summary),
    }
}

/// The audit record of an import's items refused PERMISSION_DENIED (another state's key
/// or report) or signed with a revoked key (the items `revoked_keys` names), if there are
/// any: how many, and the first [`DETAILED_REJECTIONS`] with their reasons.
fn refused_items(
    peer: &PeerIdentity,
    rejections: &[pb::ImportRejection],
    revoked_keys: &[u64],
) -> Option<AuditRecord> {
    let denied: Vec<&pb::ImportRejection> = rejections
        .iter()
        .filter(|r| {
            r.code == status::code_name(tonic::Code::PermissionDenied)
                || revoked_keys.binary_search(&r.index).is_ok()
        })
        .collect();
    if denied.is_empty() {
        return None;
    }
    let items: Vec<serde_json::Value> = denied
        .iter()
        .take(DETAILED_REJECTIONS)
        .map(|r| serde_json::json!({ "index": r.index, "refusal": r.message }))
        .collect();
    Some(AuditRecord {
        principal: peer.principal().spiffe_id(),
        state: peer
            .principal()
            .state()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        action: "refused Import".to_owned(),
        detail: serde_json::json!({
            "method": "tidemark.v1.Exchange/Import",
            "refused_items": denied.len(),
            "items": items,
        })
        .to_string(),
        ..AuditRecord::default()
    })
}

fn rejection(index: u64, err: SubmitError, detailed: bool) -> pb::ImportRejection {
    let violations = match &err {
        SubmitError::Invalid(errors) if detailed => errors
            .0
            .iter()
            .map(|v| pb::FieldViolation {
                field: v.field.clone(),
                description: v.description.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let status = Status::from(err);
    let message = if detailed {
        status.message().to_owned()
    } else {
        shortened(status.message(), SHORT_MESSAGE_CHARS)
    };
    pb::ImportRejection {
        index,
        code: status::code_name(status.code()).to_owned(),
        message,
        violations,
    }
}

/// `message` in at most `max` characters: its start (what went wrong) and its end (what
/// to do), the middle cut out between words where the parts kept have a space to cut at
/// (`… waited to be stored`, not `whil… waited`).
fn shortened(message: &str, max: usize) -> String {
    let chars = message.chars().count();
    if chars <= max {
        return message.to_owned();
    }
    let tail = max / 3;
    let head = max - tail - 1;
    let head: String = message.chars().take(head).collect();
    let tail: String = message.chars().skip(chars - tail).collect();
    // Up to the last space of the head's, if the head did not end a word; from the first
    // space of the tail's, if the tail did not start one.
    let next = message.chars().nth(head.chars().count());
    let head = match head.rfind(' ') {
        Some(at) if next != Some(' ') && at > 0 => &head[..at],
        _ => head.as_str(),
    };
    let before = message.chars().nth(chars - tail.chars().count() - 1);
    let tail = match tail.find(' ') {
        Some(at) if before != Some(' ') && at + 1 < tail.len() => &tail[at + 1..],
        _ => tail.as_str(),
    };
    format!("{head}…{tail}")
}

fn who_am_i(peer: &PeerIdentity) -> pb::WhoAmIResponse {
    let principal = peer.principal();
    let role = match principal.role() {
        Role::Node(_) => pb::Role::Node,
        Role::StateAnalyst(_) => pb::Role::StateAnalyst,
        Role::RegionalAnalyst => pb::Role::RegionalAnalyst,
        Role::Operator => pb::Role::Operator,
    };
    pb::WhoAmIResponse {
        spiffe_id: principal.spiffe_id(),
        trust_domain: principal.trust_domain().to_owned(),
        role: role.into(),
        state: principal
            .state()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        name: principal.name().to_owned(),
        certificate_serial: peer.serial().to_owned(),
        certificate_issuer: peer.issuer_name().to_owned(),
        certificate_not_before: Some(Timestamp {
            seconds: peer.not_before(),
            nanos: 0,
        }),
        certificate_not_after: Some(Timestamp {
            seconds: peer.not_after(),
            nanos: 0,
        }),
        ..pb::WhoAmIResponse::default()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{LISTED_BYTES, listed_part, shortened};
    use crate::pb;

    /// An ended import lists the first of its rejections that fit in its status's budget,
    /// in order, and all of its counts.
    #[test]
    fn an_ended_import_lists_its_first_rejections_within_the_budget() {
        let rejection = |index| pb::ImportRejection {
            index,
            code: "INVALID_ARGUMENT".to_owned(),
            message: "x".repeat(200),
            violations: Vec::new(),
        };
        let summary = pb::ImportResponse {
            accepted: 7,
            duplicates: 2,
            rejected: 100,
            rejections: (0..100).map(rejection).collect(),
        };
        let any = listed_part(summary);
        assert!(any.value.len() <= LISTED_BYTES + 16, "{}", any.value.len());
        let listed: pb::ImportResponse = prost::Message::decode(any.value.as_slice()).unwrap();
        assert_eq!(
            (listed.accepted, listed.duplicates, listed.rejected),
            (7, 2, 100)
        );
        let indexes: Vec<u64> = listed.rejections.iter().map(|r| r.index).collect();
        assert_eq!(indexes, (0..indexes.len() as u64).collect::<Vec<_>>());
        // As many as fit.
        let size = |n: u64| -> usize {
            (0..n)
                .map(|i| prost::Message::encoded_len(&rejection(i)))
                .sum()
        };
        let n = indexes.len() as u64;
        assert!(n > 0 && size(n) <= LISTED_BYTES && size(n + 1) > LISTED_BYTES);
    }

    proptest! {
        /// A shortened message fits, and keeps the start and the end of the original, cut
        /// between words where there is a space to cut at.
        #[test]
        fn a_shortened_message_keeps_its_start_and_end(message in "[a-z ]{0,40}\\PC{0,400}", max in 3usize..300) {
            let short = shortened(&message, max);
            prop_assert!(short.chars().count() <= max);
            if message.chars().count() <= max {
                prop_assert_eq!(&short, &message);
            } else {
                let kept = short.char_indices().filter(|(_, c)| *c == '…').any(|(at, _)| {
                    message.starts_with(&short[..at]) && message.ends_with(&short[at + '…'.len_utf8()..])
                });
                prop_assert!(kept, "{:?} from {:?}", short, message);
            }
        }

        /// Words are not cut when there are spaces to cut at.
        #[test]
        fn a_shortened_message_is_cut_between_words(words in proptest::collection::vec("[a-z]{1,8}", 30..60)) {
            let message = words.join(" ");
            let short = shortened(&message, 60);
            let (head, tail) = short.split_once('…').unwrap();
            prop_assert!(message.starts_with(&format!("{head} ")), "{}", short);
            prop_assert!(message.ends_with(&format!(" {tail}")), "{}", short);
        }
    }
}
