//! The `tidemark.v1.Analytics` service: who may aggregate, then the domain's answer,
//! then the audit record.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::{
    analytics::{self, AggregateQuery, Audience, Budget, Mode},
    identity::{PeerIdentity, Role},
    pb,
    server::{auth, context::Context, reads::audit_detail},
    store::{AuditRecord, BudgetCharge, BudgetError, OwnerReads},
};

/// A charge taken from an analyst's budget, to give back if the query fails.
struct Charged {
    charge: BudgetCharge,
    /// ρ left after it.
    remaining: f64,
}

impl AnalyticsService {
    /// Charges one query to `peer`'s budget for this year (RESOURCE_EXHAUSTED when it
    /// is spent).
    /// Charges `peer`'s privacy budget for the aggregate of `detail`; a refusal (the
    /// budget spent) is on the audit record like any other refused read.
    async fn charge(
        &self,
        peer: &PeerIdentity,
        budget: Budget,
        (state, detail): (&str, &str),
    ) -> Result<Charged, Status> {
        let charge = BudgetCharge {
            principal: peer.principal().spiffe_id(),
            year: self.ctx.clock.now_utc().year(),
            amount: i64::try_from(budget.per_query).unwrap_or(i64::MAX),
            limit: budget.per_year,
        };
        let spent = match self.ctx.writer.charge_budget(charge.clone()).await {
            Ok(spent) => spent,
            Err(e @ BudgetError::Spent { .. }) => {
                let record = super::reads::refusal_record(peer, state, ("aggregate", detail));
                return Err(self.ctx.refusals.refuse(record, e.into()).await);
            }
            Err(e) => return Err(e.into()),
        };
        #[allow(clippy::cast_precision_loss)]
        let remaining = budget.per_year.saturating_sub(spent) as f64 / 1e6;
        Ok(Charged { charge, remaining })
    }

    async fn refund(&self, charged: &Charged) {
        let refund = BudgetCharge {
            amount: -charged.charge.amount,
            ..charged.charge.clone()
        };
        if let Err(e) = self.ctx.writer.charge_budget(refund).await {
            tracing::error!(error = %e, principal = %charged.charge.principal, "a privacy budget refund failed");
        }
    }
}

pub(super) struct AnalyticsService {
    pub ctx: Context,
}

#[tonic::async_trait]
impl pb::analytics_server::Analytics for AnalyticsService {
    async fn aggregate(
        &self,
        request: Request<pb::AggregateRequest>,
    ) -> Result<Response<pb::AggregateResponse>, Status> {
        let peer = auth::peer(&request)?.clone();
        let req = request.into_inner();
        let (state, audience) = match peer.principal().role() {
            Role::StateAnalyst(state) => (Some(state), Audience::StateAnalyst(state)),
            Role::RegionalAnalyst => (None, Audience::RegionalAnalyst),
            other => {
                let instead = match other {
                    Role::Operator => "operators read the audit log: `tidemark admin audit`",
                    _ => "nodes read records with Query and Sync",
                };
                return Err(Status::permission_denied(format!(
                    "aggregate queries need an analyst certificate; this is {} certificate \
                     ({instead})",
                    other.with_article()
                )));
            }
        };
        let query = AggregateQuery::from_request(&req)?;
        let detail = audit_detail(&req);
        // One of the caller's reads in progress while it is computed, and one of the
        // server's few aggregate workers: each can take a core and tens of MiB.
        let _slot = self
            .ctx
            .open_budgeted(
                &self.ctx.reads,
                &peer,
                &state.map(|s| s.to_string()).unwrap_or_default(),
                ("aggregate", &detail),
            )
            .await?;
        let _worker = self
            .ctx
            .aggregates
            .worker(&peer.principal().spiffe_id())
            .await?;
        let categories = query
            .categories()
            .map(crate::report::Category::label)
            .collect::<Vec<_>>()
            .join(" ");
        let snap = self.ctx.snapshot()?;
        if let Some(state) = state.filter(|s| !query.only_own(*s)) {
            for category in query.categories() {
                self.ctx
                    .require_standing(&peer, &snap, state, category, "aggregate", &detail)
                    .await?;
            }
        }
        let settings = self.ctx.analytics.clone();
        // Under a privacy budget the query is paid for before it is computed.
        let charged = match settings.mode(audience) {
            Mode::Budget(budget) => {
                let state = state.map(|s| s.to_string()).unwrap_or_default();
                Some(self.charge(&peer, budget, (&state, &detail)).await?)
            }
            _ => None,
        };
        let store = self.ctx.store.clone();
        let computed = tokio::task::spawn_blocking(move || {
            let projection = || store.projection();
            analytics::aggregate((&snap, projection), &query, &settings, audience)
        })
        .await
        .map_err(|e| Status::internal(format!("the aggregate failed: {e}")))
        .and_then(|answer| answer.map_err(Status::from));
        let mut answer = match (computed, &charged) {
            (Ok(answer), _) => answer,
            (Err(status), Some(charge)) => {
                // Nothing was answered: the charge is given back.
                self.refund(charge).await;
                return Err(status);
            }
            (Err(status), None) => return Err(status),
        };
        // Computing (or waiting for a worker) can take a while: a caller revoked,
        // suspended or expired meanwhile gets nothing, as a stream's caller does
        // (`guard.rs`), and its charge back.
        if let Err(status) = auth::admit(&self.ctx.trust, &peer) {
            if let Some(charge) = &charged {
                self.refund(charge).await;
            }
            return Err(status);
        }
        if let (Some(charge), Some(p)) = (&charged, answer.response.protection.as_mut()) {
            p.rho_remaining = charge.remaining;
        }
        // Nothing is answered unless the query is on the audit log.
        let record = AuditRecord {
            principal: peer.principal().spiffe_id(),
            state: state.map(|s| s.to_string()).unwrap_or_default(),
            action: "aggregate".to_owned(),
            detail,
            category: categories,
            ..audit_of(&mut answer)
        };
        self.ctx.audit(record).await?;
        Ok(Response::new(answer.response))
    }
}

/// What the audit record of an aggregate says of its answer: how many reports it
/// counted, and every state in scope with its count (0 where the filter matched none of
/// its reports: each owner's access list holds every aggregate its log entry names).
fn audit_of(answer: &mut analytics::Answer) -> AuditRecord {
    let by_state = &answer.by_state;
    AuditRecord {
        count: answer.counted,
        owners: std::mem::take(&mut answer.in_scope)
            .into_iter()
            .map(|owner| OwnerReads {
                count: by_state
                    .iter()
                    .find(|(state, _)| *state == owner)
                    .map_or(0, |(_, count)| *count),
                owner,
                report_ids: Vec::new(),
            })
            .collect(),
        // Exact counts, and which owners the filter matched, are for the owners' own
        // view, not for the log that every principal reads: the analyst knows its filter.
        counts_withheld: true,
        ..AuditRecord::default()
    }
}

/// The server's aggregate workers: as many aggregates are computed at once as the server
/// has cores (each can take a core and tens of MiB), and each principal has at most one
/// waiting for a worker or computing at a time, so that one analyst's burst does not
/// hold up another's question (its other aggregates wait behind its own).
pub(super) struct Workers {
    cores: Arc<tokio::sync::Semaphore>,
    /// Each principal's turn, while it has an aggregate waiting or computing.
    turns: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// A worker's time for one aggregate; dropped, the next gets it.
pub(super) struct Worker {
    _core: tokio::sync::OwnedSemaphorePermit,
    _turn: tokio::sync::OwnedSemaphorePermit,
}

impl Workers {
    pub(super) fn new(cores: usize) -> Self {
        Self {
            cores: Arc::new(tokio::sync::Semaphore::new(cores)),
            turns: std::sync::Mutex::default(),
        }
    }

    /// Waits for `principal`'s turn, then for a free worker.
    pub(super) async fn worker(&self, principal: &str) -> Result<Worker, Status> {
        let stopping = |_| Status::unavailable("the server is stopping; ask again once it is back");
        let turn = {
            let mut turns = self
                .turns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Forget the principals none of whose aggregates waits or computes.
            turns.retain(|_, turn| Arc::strong_count(turn) > 1);
            turns
                .entry(principal.to_owned())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1)))
                .clone()
        };
        let turn = turn.acquire_owned().await.map_err(stopping)?;
        let core = self.cores.clone().acquire_owned().await.map_err(stopping)?;
        Ok(Worker {
            _core: core,
            _turn: turn,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::Workers;

    /// With one worker busy with A's aggregate, B's question is computed before A's
    /// next, though A asked first: each principal has one aggregate in line at a time.
    #[tokio::test]
    async fn one_analysts_burst_does_not_hold_up_anothers_question() {
        let workers = Arc::new(Workers::new(1));
        let first = workers.worker("A").await.unwrap();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let ask = |who: &'static str| {
            let (workers, order) = (workers.clone(), order.clone());
            tokio::spawn(async move {
                let _worker = workers.worker(who).await.unwrap();
                order.lock().unwrap().push(who);
                tokio::time::sleep(Duration::from_millis(10)).await;
            })
        };
        let a_again = ask("A");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let b = ask("B");
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        a_again.await.unwrap();
        b.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["B", "A"]);
    }
}
