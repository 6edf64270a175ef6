//! The `tidemark.v1.Analytics` service: who may aggregate, then the domain's answer,
//! then the audit record.

use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    access::FilterError,
    analytics::{self, AggregateError, AggregateQuery, Settings},
    identity::Role,
    pb,
    server::{auth, reads::Reads, status::store_status},
    store::{AuditRecord, OwnerReads},
};

pub(super) struct AnalyticsService {
    pub reads: Reads,
    pub settings: Settings,
}

/// INVALID_ARGUMENT naming the field at fault.
fn bad_request(e: &FilterError) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        e.to_string(),
        ErrorDetails::with_bad_request_violation(e.field, &e.reason),
    )
}

#[tonic::async_trait]
impl pb::analytics_server::Analytics for AnalyticsService {
    async fn aggregate(
        &self,
        request: Request<pb::AggregateRequest>,
    ) -> Result<Response<pb::AggregateResponse>, Status> {
        let peer = auth::peer(&request)?.clone();
        let req = request.into_inner();
        let state = match peer.principal().role() {
            Role::StateAnalyst(state) => Some(state),
            Role::RegionalAnalyst => None,
            other => {
                return Err(Status::permission_denied(format!(
                    "aggregate queries need an analyst certificate; this is a {} certificate \
                     (nodes read records with Query and Sync)",
                    other.label()
                )));
            }
        };
        let query = AggregateQuery::from_request(&req).map_err(|e| bad_request(&e))?;
        let detail = super::reads::audit_detail(&req);
        let snap = self.reads.store.snapshot().map_err(|e| store_status(&e))?;
        if let Some(state) = state.filter(|s| !query.only_own(*s)) {
            for category in query.categories() {
                self.reads
                    .require_standing(&peer, &snap, state, category, "aggregate", &detail)
                    .await?;
            }
        }
        let settings = self.settings.clone();
        let answer =
            tokio::task::spawn_blocking(move || analytics::aggregate(&snap, &query, &settings))
                .await
                .map_err(|e| Status::internal(format!("the aggregate failed: {e}")))?
                .map_err(|e| match e {
                    AggregateError::TooManyCells { .. } => {
                        Status::resource_exhausted(e.to_string())
                    }
                    AggregateError::Store(e) => store_status(&e),
                })?;
        // Nothing is answered unless the query is on the audit log.
        self.reads
            .audit(AuditRecord {
                principal: peer.principal().spiffe_id(),
                state: state.map(|s| s.to_string()).unwrap_or_default(),
                action: "aggregate".to_owned(),
                detail,
                count: answer.counted,
                owners: answer
                    .by_state
                    .into_iter()
                    .map(|(owner, count)| OwnerReads {
                        owner,
                        count,
                        report_ids: Vec::new(),
                    })
                    .collect(),
                ..AuditRecord::default()
            })
            .await?;
        Ok(Response::new(answer.response))
    }
}
