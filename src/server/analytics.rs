//! The `tidemark.v1.Analytics` service: who may aggregate, then the domain's answer,
//! then the audit record.

use tonic::{Request, Response, Status};

use crate::{
    analytics::{self, AggregateQuery, Audience},
    identity::Role,
    pb,
    server::{auth, context::Context, reads::audit_detail},
    store::{AuditRecord, OwnerReads},
};

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
            Role::StateAnalyst(state) => (Some(state), Audience::StateAnalyst),
            Role::RegionalAnalyst => (None, Audience::RegionalAnalyst),
            other => {
                return Err(Status::permission_denied(format!(
                    "aggregate queries need an analyst certificate; this is {} certificate \
                     (nodes read records with Query and Sync)",
                    other.with_article()
                )));
            }
        };
        let query = AggregateQuery::from_request(&req)?;
        let detail = audit_detail(&req);
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
        let answer = tokio::task::spawn_blocking(move || {
            analytics::aggregate(&snap, &query, &settings, audience)
        })
        .await
        .map_err(|e| Status::internal(format!("the aggregate failed: {e}")))??;
        // Nothing is answered unless the query is on the audit log.
        self.ctx
            .audit(AuditRecord {
                principal: peer.principal().spiffe_id(),
                state: state.map(|s| s.to_string()).unwrap_or_default(),
                action: "aggregate".to_owned(),
                detail,
                category: categories,
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
