//! The read side of the Exchange service: standing, query, sync, subscribe,
//! access-to-my-data.
//!
//! Each handler resolves the caller, checks give-to-get standing from a store snapshot,
//! writes the read to the audit log *before* any data flows (a read that cannot be
//! recorded is refused), runs the domain read on a blocking thread that streams results
//! back, and completes the audit record with what was read. Every stream is guarded
//! ([`super::guard`]): it ends within a second once the caller is revoked, suspended or
//! loses its standing.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use prost::Message;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;

use crate::{
    access::{self, Allowance, Hit, QueryFilter, ReadKind, Recheck},
    country::CountryCode,
    identity::{PeerIdentity, Role},
    pb, receipt,
    report::Category,
    server::{
        auth,
        context::Context,
        delivery::{self, Delivered, Ledger, cut_short},
        feed::Batch,
        guard::Guarded,
    },
    store::{AuditRecord, Snapshot, StoreError, audit_entry},
};

/// The most changes a subscription that fell behind reads back to push; past this it is
/// ended and the caller told to catch up with Sync.
const MAX_CATCH_UP: usize = 1_000;

/// The snapshots a paged read reads from: the one its caller's standing was checked
/// on, then a fresh one for each page after it ([`Context::audited_stream`] lets each
/// go while it waits for its caller), each with the recheck of what changed since.
struct Pages {
    store: crate::store::Store,
    changes: tokio::sync::watch::Receiver<u64>,
    first: Option<Snapshot>,
}

impl Pages {
    fn new(ctx: &Context, first: Snapshot) -> Self {
        Self {
            store: ctx.store.clone(),
            changes: ctx.writer.changes(),
            first: Some(first),
        }
    }

    fn next(&mut self) -> Result<(Snapshot, Recheck), StoreError> {
        let snap = match self.first.take() {
            Some(first) => first,
            None => self.store.snapshot()?,
        };
        let recheck = Recheck::new(self.store.clone(), self.changes.clone(), &snap)?;
        Ok((snap, recheck))
    }
}

/// The audit record of a refusal of `action` (with its request `detail`) to `peer`,
/// acting for `state` (empty for none).
pub(super) fn refusal_record(
    peer: &PeerIdentity,
    state: &str,
    (action, detail): (&str, &str),
) -> AuditRecord {
    AuditRecord {
        principal: peer.principal().spiffe_id(),
        state: state.to_owned(),
        action: format!("refused {action}"),
        detail: detail.to_owned(),
        ..AuditRecord::default()
    }
}

/// Lookups one principal may have in progress at once.
pub(super) const LOOKUPS_IN_FLIGHT: usize = 2;

/// Records a lookup reads that cost one more from its caller's lookup budget.
pub(super) const ROWS_PER_LOOKUP: usize = 1_000;

/// The metadata key by which a server tells a client when to retry (gRFC A6).
pub(super) const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// Subscriptions open per principal, bounded by `limits.max_subscriptions_per_principal`.
#[derive(Clone)]
pub(super) struct OpenStreams {
    limit: usize,
    /// What is counted and the setting that bounds it, for the refusal.
    what: (&'static str, &'static str),
    open: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

/// One open stream; its count is released when this is dropped.
pub(super) struct StreamSlot {
    principal: String,
    open: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

impl OpenStreams {
    /// Subscriptions, at most `limit` per principal.
    pub(super) fn subscriptions(limit: usize) -> Self {
        Self {
            limit,
            what: ("subscriptions", "limits.max_subscriptions_per_principal"),
            open: Arc::default(),
        }
    }

    /// Queries and syncs in progress, at most `limit` per principal: each holds a
    /// server thread and a store snapshot while it runs.
    pub(super) fn reads(limit: usize) -> Self {
        Self {
            limit,
            what: (
                "queries, syncs and aggregates",
                "limits.max_reads_per_principal",
            ),
            open: Arc::default(),
        }
    }

    pub(super) fn open(
        &self,
        principal: &crate::identity::Principal,
    ) -> Result<StreamSlot, Status> {
        let id = principal.spiffe_id();
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(id.clone()).or_default();
        if *count >= self.limit {
            let (what, setting) = self.what;
            return Err(Status::resource_exhausted(format!(
                "{id} already has {count} {what} open, the most one principal may \
                 ({setting} = {}); let one finish or close it, then try again",
                self.limit
            )));
        }
        *count += 1;
        Ok(StreamSlot {
            principal: id,
            open: self.open.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.principal);
            }
        }
    }
}

/// The caller's state, if it is a node; raw records are for nodes only.
pub(super) fn node_state(peer: &PeerIdentity) -> Result<CountryCode, Status> {
    match peer.principal().role() {
        Role::Node(state) => Ok(state),
        other => Err(Status::permission_denied(format!(
            "reading records needs a node certificate; this is {} certificate ({})",
            other.with_article(),
            if matches!(other, Role::Operator) {
                "operators read the audit log: `tidemark admin audit`"
            } else {
                "analysts use aggregate queries: `tidemark aggregate`"
            }
        ))),
    }
}

impl Context {
    pub(super) fn my_standing(
        &self,
        peer: &PeerIdentity,
    ) -> Result<pb::MyStandingResponse, Status> {
        let state = peer.principal().state().ok_or_else(|| {
            Status::permission_denied("only a state's certificates have a standing")
        })?;
        let snap = self.snapshot()?;
        let categories = Category::ALL
            .into_iter()
            .map(|c| Ok(self.standing(&snap, state, c)?.to_pb()))
            .collect::<Result<_, Status>>()?;
        let privacy_budget = match (peer.principal().role(), self.analytics.budget) {
            (Role::StateAnalyst(_), Some(budget)) => {
                let year = self.clock.now_utc().year();
                let spent = snap.budget_spent(&peer.principal().spiffe_id(), year)?;
                Some(budget.standing(year, spent))
            }
            _ => None,
        };
        Ok(pb::MyStandingResponse {
            state: state.to_string(),
            categories,
            privacy_budget,
        })
    }

    pub(super) async fn query(
        &self,
        peer: &PeerIdentity,
        req: pb::QueryRequest,
    ) -> Result<Guarded<pb::QueryResult>, Status> {
        let state = node_state(peer)?;
        let filter = QueryFilter::from_request(&req)?;
        let detail = audit_detail(&req);
        self.check_read_budget(peer, ("query", &detail)).await?;
        let snap = self.snapshot()?;
        filter.authenticate(snap.cursor_key())?;
        let standing = if filter.only_own(state) {
            None
        } else {
            Some(
                self.require_standing(peer, &snap, state, filter.category, "query", &detail)
                    .await?,
            )
        };
        let guard = self.guard(peer, standing.as_ref());
        let check = standing
            .as_ref()
            .map(|standing| self.standing_check(&snap, standing))
            .transpose()?;
        let kind = ReadKind {
            action: "query",
            category: filter.category,
        };
        let with_proofs = req.include_log_proofs;
        let gate = self.gate(snap.last_sequence()?, state);
        let mut pages = Pages::new(self, snap);
        let mut filter = filter;
        let how = (kind, detail, gate, check);
        self.audited_stream(guard, peer, state, how, move |emit| {
            let (snap, mut recheck) = pages.next()?;
            let (mut failed, mut sent, mut last, mut paused) = (None, 0, None, false);
            // A report changed while the pages are read comes in the query's second part,
            // with its latest version, as on a caller's own next page (see access::Cursor).
            access::query(
                &snap,
                &filter,
                (state, &mut recheck),
                |hit| match query_result(&snap, &hit, with_proofs) {
                    Ok(item) => {
                        sent += 1;
                        last.clone_from(&hit.cursor);
                        paused = !emit(&hit.head.state, item);
                        !paused
                    }
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                },
            )?;
            if let Some(e) = failed {
                return Err(e);
            }
            // Paused for room: the next page continues after the last result sent.
            let next = last
                .filter(|_| paused)
                .and_then(|cursor| filter.continued(&cursor, sent));
            Ok(next.map(|next| filter = next).is_some())
        })
        .await
    }

    pub(super) async fn sync(
        &self,
        peer: &PeerIdentity,
        req: pb::SyncRequest,
    ) -> Result<Guarded<pb::SyncItem>, Status> {
        let state = node_state(peer)?;
        let category = Category::required(req.category).map_err(|reason| {
            super::status::invalid_field("category", format!("category: {reason}"))
        })?;
        let detail = audit_detail(&req);
        self.check_read_budget(peer, ("sync", &detail)).await?;
        let snap = self.snapshot()?;
        let end = snap.last_sequence()?;
        if req.after_sequence > end {
            return Err(Status::out_of_range(format!(
                "after_sequence {} is past the newest change this server holds ({end}): it \
                 was given by another server, or by this one before its store was restored \
                 from a backup. Sync from 0 into an empty mirror",
                req.after_sequence
            )));
        }
        let standing = self
            .require_standing(peer, &snap, state, category, "sync", &detail)
            .await?;
        let guard = self.guard(peer, Some(&standing));
        let check = Some(self.standing_check(&snap, &standing)?);
        let kind = ReadKind {
            action: "sync",
            category,
        };
        let gate = self.gate(end, state);
        let with_proofs = req.include_log_proofs;
        let mut pages = Pages::new(self, snap);
        let mut after = req.after_sequence;
        let how = (kind, detail, gate, check);
        self.audited_stream(guard, peer, state, how, move |emit| {
            let (snap, mut recheck) = pages.next()?;
            let (mut failed, mut paused) = (None, false);
            access::sync(&snap, category, after, state, |hit| {
                // What was committed after the read began is the next sync's.
                if hit.sequence > end {
                    return false;
                }
                let item = recheck.allows(&hit, state).and_then(|allowed| {
                    // No longer shared with this reader: left out, as a new sync would.
                    if !allowed {
                        return Ok(None);
                    }
                    let envelope = decode_envelope(&hit);
                    let log_proof = log_proof(&snap, &hit, envelope.as_ref(), with_proofs)?;
                    Ok(Some(sync_item(&hit, envelope, log_proof)))
                });
                match item {
                    Ok(None) => {
                        after = hit.sequence;
                        true
                    }
                    Ok(Some(item)) => {
                        after = hit.sequence;
                        paused = !emit(&hit.head.state, item);
                        !paused
                    }
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })?;
            failed.map_or(Ok(paused), Err)
        })
        .await
    }

    /// Pushes matching changes as they are committed. The subscription is on the audit
    /// record (in progress: who, what filter) before anything is pushed, and the record
    /// is raised ahead of any push it does not yet allow ([`Allowance`]: O(log n) writes,
    /// not one per push), so a crash leaves it on record with an upper bound of what it
    /// pushed; when it ends the record is completed with exact counts.
    pub(super) async fn subscribe(
        &self,
        peer: &PeerIdentity,
        req: pb::QueryRequest,
    ) -> Result<Guarded<pb::SyncItem>, Status> {
        let state = node_state(peer)?;
        if req.include_log_proofs {
            return Err(no_log_proofs_here());
        }
        let filter = QueryFilter::from_request(&req)?;
        let detail = audit_detail(&req);
        let slot = self
            .open_budgeted(&self.streams, peer, state.as_str(), ("subscribe", &detail))
            .await?;
        let snap = self.snapshot()?;
        let standing = self
            .require_standing(peer, &snap, state, filter.category, "subscribe", &detail)
            .await?;
        let mut check = self.standing_check(&snap, &standing)?;
        drop(snap);
        let guard = self.guard(peer, Some(&standing));
        // Join the feed before reading where the store is, so no batch falls between.
        let mut batches = self.feed.subscribe();
        let mut cursor = *self.writer.changes().borrow();
        let principal = peer.principal().spiffe_id();
        let kind = ReadKind {
            action: "subscribe",
            category: filter.category,
        };
        let number = self
            .audit_start(&kind, (&principal, state.as_str()), &detail)
            .await?
            .begin();
        let (tx, ledger, taken) = delivery::queue(self.gate(cursor, state));
        let queue = ledger.clone();
        let ctx = self.clone();
        let caller = peer.clone();
        let pushing = filter.pushing();
        let (unfinished, mut cut) = self.unfinished.start_subscription();
        tokio::spawn(async move {
            let mut allowance = Allowance::default();
            let pushing_on = async {
                loop {
                    let batch = tokio::select! {
                        () = tx.closed() => break None,
                        batch = batches.recv() => batch,
                    };
                    let found = match batch {
                        Ok(batch) => match from_batch(&batch, &pushing, state, cursor) {
                            Some(found) => Ok(found),
                            // A gap before this batch: read what was missed directly.
                            None => ctx.pending_changes(&filter, state, cursor).await,
                        },
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            ctx.pending_changes(&filter, state, cursor).await
                        }
                        Err(broadcast::error::RecvError::Closed) => break None,
                    };
                    let (items, seen) = match found {
                        Ok(found) => found,
                        Err(status) => break Some(status),
                    };
                    cursor = cursor.max(seen);
                    if items.is_empty() {
                        continue;
                    }
                    // Revocation, suspension and standing, exactly, before anything is pushed
                    // (the guard watches them too, but only this check is ordered with the push).
                    if let Err(status) = auth::admit(&ctx.trust, &caller)
                        .and_then(|()| ctx.still_stands(state, filter.category))
                    {
                        break Some(status);
                    }
                    let mut raise = false;
                    for (owner, count) in others(&items, state) {
                        raise |= allowance.take(owner, count);
                    }
                    if raise {
                        let record = allowance.to_audit(&principal, state.as_str(), &kind, &detail);
                        if let Err(status) = check.raise(&ctx.writer, number, &record).await {
                            break Some(status);
                        }
                    }
                    if let Some(end) = push(&tx, items, ctx.read_stall, &queue).await {
                        break end;
                    }
                }
            };
            let end = tokio::select! {
                end = pushing_on => end,
                () = cut.wait() => Some(cut_short()),
            };
            // Nothing this subscription holds waits for its caller: the feed, its slot.
            drop((batches, slot));
            // What is still queued is dropped unsent: the record says what was taken.
            let record = ledger
                .close()
                .to_audit(&principal, state.as_str(), &kind, &detail);
            if let Err(e) = ctx.writer.update_audit(number, record).await {
                tracing::error!(%principal, number, error = %e, "a subscription's audit record could not be completed");
            }
            drop(unfinished);
            if let Some(status) = end {
                // Not bounded: the end must not look like a clean close to a caller that
                // reads again later; waiting holds only this task.
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(guard.guard(taken))
    }

    /// The last check of a read's items as they go ([`delivery::rechecked`]): what
    /// owners changed after sequence `read_at`, while the items waited in the queue.
    fn gate<T: Delivered>(&self, read_at: u64, state: CountryCode) -> delivery::Gate<T> {
        let recheck = Recheck::after(self.store.clone(), self.writer.changes(), read_at);
        delivery::rechecked(recheck, state)
    }

    /// Refuses unless `state` stands in `category` now.
    fn still_stands(&self, state: CountryCode, category: Category) -> Result<(), Status> {
        let snap = self.snapshot()?;
        self.entitlement(&snap, state, category)?.require()?;
        Ok(())
    }

    /// A place in `streams` for one more `action` (with its request `detail`) of `peer`,
    /// or the refusal (on the audit record, like any other refusal) when it already holds
    /// as many as it may.
    pub(super) async fn open_slot(
        &self,
        streams: &OpenStreams,
        peer: &PeerIdentity,
        state: &str,
        (action, detail): (&str, &str),
    ) -> Result<StreamSlot, Status> {
        match streams.open(peer.principal()) {
            Ok(slot) => Ok(slot),
            Err(status) => {
                let record = refusal_record(peer, state, (action, detail));
                Err(self.refusals.refuse(record, status).await)
            }
        }
    }

    /// One read on record — `action` with its request `detail` — from the budget of
    /// `peer` (`limits.reads_per_minute_per_principal`), or the refusal: on the audit
    /// record like any other (from the budget of refusal records), RESOURCE_EXHAUSTED
    /// with a `grpc-retry-pushback-ms` (gRFC A6) saying when the next read is due.
    pub(super) async fn take_read(
        &self,
        peer: &PeerIdentity,
        (action, detail): (&str, &str),
    ) -> Result<(), Status> {
        let budget = self
            .read_budget
            .take(&peer.principal().spiffe_id(), std::time::Instant::now());
        self.read_budget_or_refusal(peer, budget, (action, detail))
            .await
    }

    /// Refuses, as [`Self::take_read`] would, a read that the budget of `peer` has no
    /// room for now, taking nothing from it: called before a read's standing is worked
    /// out, so that a caller past its budget costs the server little (tester C of
    /// 2026-12-07: each refusal cost a full standing, both cores at 75 refusals a second).
    pub(super) async fn check_read_budget(
        &self,
        peer: &PeerIdentity,
        (action, detail): (&str, &str),
    ) -> Result<(), Status> {
        let budget = self
            .read_budget
            .peek(&peer.principal().spiffe_id(), std::time::Instant::now());
        self.read_budget_or_refusal(peer, budget, (action, detail))
            .await
    }

    /// Nothing when the budget had room (`budget` is `Ok`); else the refusal of a read
    /// over budget, due again in the wait `budget` holds, recorded.
    async fn read_budget_or_refusal(
        &self,
        peer: &PeerIdentity,
        budget: Result<(), std::time::Duration>,
        (action, detail): (&str, &str),
    ) -> Result<(), Status> {
        let Err(wait) = budget else {
            return Ok(());
        };
        self.metrics.read_over_budget();
        let message = format!(
            "this caller has started {n} reads that go on the audit record within the last \
             minute, as many as limits.reads_per_minute_per_principal = {n} allows; try again \
             in {wait} (a read that continues from a cursor counts as a new read)",
            n = self.reads_per_minute,
            wait = crate::clock::format_wait(wait),
        );
        Err(self
            .over_budget(peer, (wait, message), (action, detail))
            .await)
    }

    /// One lookup — `action` — from the budget of `peer`
    /// (`limits.lookups_per_minute_per_principal`), held in progress until the value
    /// returned is dropped; or the refusal, as [`Self::take_read`]'s: on record,
    /// RESOURCE_EXHAUSTED with a `grpc-retry-pushback-ms`. A lookup is charged for what
    /// it read once it has run ([`Self::charge_lookup`]), so a principal may have only
    /// [`LOOKUPS_IN_FLIGHT`] in progress: calls started together would all pass the
    /// budget before any was charged (an outside pass: 200 at once drew 9.6 times the
    /// budget and both cores).
    pub(super) async fn take_lookup(
        &self,
        peer: &PeerIdentity,
        action: &str,
    ) -> Result<crate::budgets::Entered, Status> {
        let principal = peer.principal().spiffe_id();
        let Some(entered) = self.lookups_in_flight.enter(&principal) else {
            let message = format!(
                "this caller has {LOOKUPS_IN_FLIGHT} lookups (MyStanding, AccessToMyData, \
                 GetEntries) in progress, as many as one may; make the next when one has \
                 answered"
            );
            let wait = std::time::Duration::from_millis(100);
            return Err(self.over_budget(peer, (wait, message), (action, "")).await);
        };
        let Err(wait) = self
            .lookup_budget
            .take(&principal, std::time::Instant::now())
        else {
            return Ok(entered);
        };
        self.metrics.lookup_over_budget();
        let message = format!(
            "this caller's lookups within the last minute (MyStanding, AccessToMyData, \
             GetEntries: one each, and one more for each {ROWS_PER_LOOKUP} records they read) \
             reach limits.lookups_per_minute_per_principal = {n}; try again in {wait}",
            n = self.lookups_per_minute,
            wait = crate::clock::format_wait(wait),
        );
        Err(self.over_budget(peer, (wait, message), (action, "")).await)
    }

    /// Charges `peer`'s lookup budget for the `rows` a lookup read, one for each
    /// [`ROWS_PER_LOOKUP`] beyond the one [`Self::take_lookup`] took: a MyStanding of a
    /// state with 40,000 contributions costs 40 (an outside pass: counted as one, a
    /// loop of them took more than a core within the budget).
    pub(super) fn charge_lookup(&self, peer: &PeerIdentity, rows: usize) {
        #[allow(clippy::cast_precision_loss)] // A count of rows: far below 2^52.
        let cost = rows as f64 / ROWS_PER_LOOKUP as f64;
        self.lookup_budget.charge(
            &peer.principal().spiffe_id(),
            cost,
            std::time::Instant::now(),
        );
    }

    /// The refusal, on record, of `action` by `peer` over its budget: RESOURCE_EXHAUSTED
    /// saying `message`, with a `grpc-retry-pushback-ms` (gRFC A6) of `wait`.
    async fn over_budget(
        &self,
        peer: &PeerIdentity,
        (wait, message): (std::time::Duration, String),
        (action, detail): (&str, &str),
    ) -> Status {
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut status = Status::resource_exhausted(message);
        status.metadata_mut().insert(
            RETRY_PUSHBACK,
            tonic::metadata::MetadataValue::from(wait_ms),
        );
        let principal = peer.principal();
        let state = principal.state().map(|s| s.to_string()).unwrap_or_default();
        let record = refusal_record(peer, &state, (action, detail));
        self.refusals.refuse(record, status).await
    }

    /// [`Self::open_slot`], then [`Self::take_read`]: a read on record that holds a
    /// stream open. A read refused a slot never started, so it takes nothing from the
    /// read budget.
    pub(super) async fn open_budgeted(
        &self,
        streams: &OpenStreams,
        peer: &PeerIdentity,
        state: &str,
        (action, detail): (&str, &str),
    ) -> Result<StreamSlot, Status> {
        let slot = self
            .open_slot(streams, peer, state, (action, detail))
            .await?;
        self.take_read(peer, (action, detail)).await?;
        Ok(slot)
    }

    /// What a subscription pushes next: the matching changes after `cursor`, from a fresh
    /// snapshot in which `state` still stands.
    async fn pending_changes(
        &self,
        filter: &QueryFilter,
        state: CountryCode,
        cursor: u64,
    ) -> Result<(Vec<pb::SyncItem>, u64), Status> {
        let (store, policy, clock, filter) = (
            self.store.clone(),
            self.policy.clone(),
            self.clock.clone(),
            filter.clone(),
        );
        let step = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let snap = store.snapshot()?;
            let standing = policy.entitlement(&snap, state, filter.category, clock.now())?;
            if let Err(refusal) = standing.require() {
                return Ok(Err(refusal.into()));
            }
            let mut items = Vec::new();
            let seen = snap.last_sequence()?;
            access::changes(&snap, &filter, cursor, state, |hit| {
                items.push(sync_item(&hit, decode_envelope(&hit), String::new()));
                items.len() <= MAX_CATCH_UP
            })?;
            if items.len() > MAX_CATCH_UP {
                // Held in memory to push, a backlog this long is sync's work.
                return Ok(Err(Status::resource_exhausted(format!(
                    "this subscription fell more than {MAX_CATCH_UP} matching changes behind \
                     (it was not read, or the exchange took a bulk import); catch up with \
                     `tidemark sync` from sequence {cursor}, then subscribe again"
                ))));
            }
            Ok(Ok((items, seen)))
        })
        .await;
        match step {
            Ok(Ok(Ok(found))) => Ok(found),
            Ok(Ok(Err(refusal))) => Err(refusal),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(Status::internal(format!("the subscription failed: {e}"))),
        }
    }

    pub(super) fn access_to_my_data(
        &self,
        peer: &PeerIdentity,
        (limit, before): (u32, u64),
    ) -> Result<pb::AccessToMyDataResponse, Status> {
        let state = peer
            .principal()
            .state()
            .ok_or_else(|| Status::permission_denied("only a state's certificates own data"))?;
        let limit = if limit == 0 { 100 } else { limit.min(10_000) };
        let snap = self.snapshot()?;
        let records = snap.accesses_to(
            state.as_str(),
            (usize::try_from(limit).unwrap_or(100), before),
        )?;
        // Every record the log ever named this state in, as the index holds them: a read
        // raised ahead for its reports that then took none of them is listed with 0, so
        // that a page holds `limit` accesses whenever that many remain and the list is
        // the whole list (`audit --verify`).
        let accesses = records
            .into_iter()
            .map(|(number, record)| {
                let mine = record.owners.iter().find(|o| o.owner == state.as_str());
                let log_entry = audit_entry(number, &record).encode();
                pb::DataAccess {
                    log_entry,
                    at_unix: record.at,
                    reader: record.principal.clone(),
                    reader_state: record.state.clone(),
                    action: record.action.clone(),
                    count: mine.map_or(0, |m| m.count),
                    in_progress: record.in_progress,
                    cut_short: self.cut_short(number, &record),
                    number,
                    copy_bytes: record.copy_bytes,
                    copy_bytes_sent: record.copy_bytes_sent,
                    detail: if crate::store::ADMIN_ACTIONS.contains(&record.action.as_str()) {
                        record.detail.clone()
                    } else {
                        String::new()
                    },
                    report_ids: mine
                        .iter()
                        .flat_map(|m| &m.report_ids)
                        .filter_map(|id| uuid::Uuid::from_slice(id).ok())
                        .map(|id| id.to_string())
                        .collect(),
                }
            })
            .collect();
        let (accesses, more) = super::context::fitting(accesses, self.page_bytes);
        Ok(pb::AccessToMyDataResponse { accesses, more })
    }
}

/// Pushes `items` to a subscriber; `Some` ends the subscription: `None` inside when the
/// caller went away, the status to end with when it took nothing for `stall`.
async fn push(
    tx: &mpsc::Sender<Result<pb::SyncItem, Status>>,
    items: Vec<pb::SyncItem>,
    stall: std::time::Duration,
    queue: &Ledger,
) -> Option<Option<Status>> {
    for item in items {
        queue.queueing();
        let sent = tokio::time::timeout(stall, tx.send(Ok(item))).await;
        if !matches!(sent, Ok(Ok(()))) {
            queue.not_queued();
        }
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Some(None),
            Err(_) => {
                return Some(Some(Status::deadline_exceeded(format!(
                    "this subscription was not read from for {} s, so the server ended it; \
                     catch up with `tidemark sync`, then subscribe again",
                    stall.as_secs()
                ))));
            }
        }
    }
    None
}

/// What a subscription pushes from a feed batch: the envelopes after `cursor` that it
/// may push, what that reads, and the last sequence the batch covers. `None` if the batch
/// starts past `cursor + 1`: envelopes were committed that the subscription has not seen.
fn from_batch(
    batch: &Batch,
    pushing: &QueryFilter,
    state: CountryCode,
    cursor: u64,
) -> Option<(Vec<pb::SyncItem>, u64)> {
    let first = batch.first()?.sequence;
    if first > cursor.saturating_add(1) {
        return None;
    }
    let items = batch
        .iter()
        .filter(|h| h.sequence > cursor && access::pushes(pushing, state, h))
        .map(|hit| sync_item(hit, decode_envelope(hit), String::new()))
        .collect();
    let last = batch.last().map_or(cursor, |h| h.sequence);
    Some((items, last))
}

/// How many of `items` each state other than `reader` owns.
fn others(items: &[pb::SyncItem], reader: CountryCode) -> BTreeMap<&str, u64> {
    let mut counts = BTreeMap::new();
    for (owner, _) in items.iter().filter_map(Delivered::owner_and_report) {
        if owner != reader.as_str() {
            *counts.entry(owner).or_default() += 1;
        }
    }
    counts
}

/// A query result: the hit's envelope and meta, and the log proof of its acceptance
/// when asked for.
fn query_result(
    snap: &Snapshot,
    hit: &Hit,
    with_proof: bool,
) -> Result<pb::QueryResult, StoreError> {
    let envelope = decode_envelope(hit);
    let log_proof = log_proof(snap, hit, envelope.as_ref(), with_proof)?;
    Ok(pb::QueryResult {
        envelope,
        meta: Some(access::meta(hit)),
        cursor: hit.cursor.clone().unwrap_or_default(),
        log_proof,
    })
}

/// The log proof of the acceptance of `hit` (whose envelope is `envelope`) when `wanted`;
/// empty otherwise.
fn log_proof(
    snap: &Snapshot,
    hit: &Hit,
    envelope: Option<&pb::Envelope>,
    wanted: bool,
) -> Result<String, StoreError> {
    match (wanted, envelope) {
        (true, Some(envelope)) => {
            receipt::acceptance_proof(snap, hit.sequence, &hit.record, &envelope.payload)
        }
        _ => Ok(String::new()),
    }
}

/// A sync or subscription item.
fn sync_item(hit: &Hit, envelope: Option<pb::Envelope>, log_proof: String) -> pb::SyncItem {
    pb::SyncItem {
        envelope,
        meta: Some(access::meta(hit)),
        log_proof,
    }
}

/// Why a subscription cannot ask for log proofs.
fn no_log_proofs_here() -> Status {
    super::status::invalid_field(
        "include_log_proofs",
        "log proofs come with Query results, not with Subscribe's: ask for them with \
         `tidemark query --json --log-proofs` (QueryRequest.include_log_proofs)",
    )
}

fn decode_envelope(hit: &Hit) -> Option<pb::Envelope> {
    pb::Envelope::decode(hit.record.envelope.as_slice()).ok()
}

/// Most characters of a request kept in its audit record.
const MAX_AUDIT_DETAIL: usize = 4096;

/// A request as its audit record keeps it: JSON, cut to [`MAX_AUDIT_DETAIL`].
pub(super) fn audit_detail(request: &impl serde::Serialize) -> String {
    crate::report::shorten(
        serde_json::to_string(request).unwrap_or_default(),
        MAX_AUDIT_DETAIL,
    )
}
