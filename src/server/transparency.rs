//! The `tidemark.v1.Transparency` service: checkpoints, proofs and entries of the
//! transparency log, for every authenticated principal. Reading the log reveals no
//! report, so it is not audited (which would also append to the log it reads).

use tonic::{Request, Response, Status};

use crate::{
    cosigning,
    identity::Role,
    pb::{self, get_inclusion_proof_request::Leaf},
    server::{auth, context::Context, status::invalid_field},
    store::{Snapshot, StoredCheckpoint},
    tlog::merkle::Hash,
};

/// Most entries one GetEntries call returns.
const MAX_ENTRIES: u64 = 1000;

/// The Transparency handlers, over the shared context.
pub(super) struct TransparencyService {
    pub ctx: Context,
}

/// The newest checkpoint, or FAILED_PRECONDITION while the log is empty.
fn latest(snap: &Snapshot) -> Result<StoredCheckpoint, Status> {
    snap.latest_checkpoint()?.ok_or_else(|| {
        Status::failed_precondition(
            "the log is empty: its first checkpoint is signed with the first accepted \
             envelope or audit record",
        )
    })
}

/// `requested`, or the newest checkpoint's size for 0; with the checkpoint published for
/// exactly that size, if any.
fn tree(snap: &Snapshot, requested: u64) -> Result<(u64, Option<StoredCheckpoint>), Status> {
    if requested == 0 {
        let checkpoint = latest(snap)?;
        return Ok((checkpoint.size, Some(checkpoint)));
    }
    let size = snap.log_size()?;
    if requested > size {
        return Err(Status::out_of_range(format!(
            "the log has {size} leaves, fewer than the tree size {requested} asked for"
        )));
    }
    Ok((requested, snap.checkpoint_at(requested)?))
}

fn hashes(proof: Vec<Hash>) -> Vec<Vec<u8>> {
    proof.into_iter().map(|h| h.to_vec()).collect()
}

#[tonic::async_trait]
impl pb::transparency_server::Transparency for TransparencyService {
    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        auth::peer(&request)?;
        let checkpoint = latest(&self.ctx.snapshot()?)?;
        Ok(Response::new(pb::Checkpoint {
            note: checkpoint.note,
            tree_size: checkpoint.size,
        }))
    }

    async fn get_verifier_key(
        &self,
        request: Request<pb::GetVerifierKeyRequest>,
    ) -> Result<Response<pb::GetVerifierKeyResponse>, Status> {
        auth::peer(&request)?;
        Ok(Response::new(pb::GetVerifierKeyResponse {
            verifier_key: self.ctx.log.verifier_key(),
            origin: self.ctx.log.origin().to_owned(),
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        auth::peer(&request)?;
        let req = request.into_inner();
        let snap = self.ctx.snapshot()?;
        let (size, checkpoint) = tree(&snap, req.tree_size)?;
        let index = match req.leaf {
            Some(Leaf::Index(index)) => index,
            Some(Leaf::LeafHash(hash)) => {
                let hash: Hash = hash.as_slice().try_into().map_err(|_| {
                    invalid_field(
                        "leaf_hash",
                        format!(
                            "leaf_hash has {} bytes; a leaf hash is SHA-256(0x00 ‖ entry), \
                             32 bytes",
                            hash.len()
                        ),
                    )
                })?;
                snap.log_index_of(&hash)?.ok_or_else(|| {
                    Status::not_found(format!(
                        "no leaf of the log has hash {}: a leaf hash is SHA-256(0x00 ‖ entry), \
                         not the SHA-256 of the entry alone nor a payload's sha256 digest; a \
                         receipt names its leaf by index (its `index N` line). A leaf written \
                         after the backup a store was restored from is not in the restored log",
                        hex::encode(hash)
                    ))
                })?
            }
            None => {
                return Err(invalid_field("leaf", "name the leaf: index or leaf_hash"));
            }
        };
        let leaves = snap.log_size()?;
        if index >= leaves {
            return Err(Status::out_of_range(format!(
                "the log has {leaves} leaves, numbered from 0: leaf {index} is not one of them"
            )));
        }
        let proof = snap.inclusion_proof(index, size)?;
        let entry = snap.log_entry(index)?.unwrap_or_default();
        Ok(Response::new(pb::InclusionProof {
            index,
            tree_size: size,
            hashes: hashes(proof),
            entry,
            checkpoint: checkpoint.map(|c| c.note).unwrap_or_default(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        auth::peer(&request)?;
        let req = request.into_inner();
        let snap = self.ctx.snapshot()?;
        let (new_size, checkpoint) = tree(&snap, req.new_size)?;
        let proof = snap.consistency_proof(req.old_size, new_size)?;
        Ok(Response::new(pb::ConsistencyProof {
            old_size: req.old_size,
            new_size,
            hashes: hashes(proof),
            checkpoint: checkpoint.map(|c| c.note).unwrap_or_default(),
        }))
    }

    async fn add_cosignature(
        &self,
        request: Request<pb::AddCosignatureRequest>,
    ) -> Result<Response<pb::AddCosignatureResponse>, Status> {
        let peer = auth::peer(&request)?;
        let Role::Node(state) = peer.principal().role() else {
            return Err(Status::permission_denied(format!(
                "cosignatures come from a state's witness, which runs with a node \
                 certificate; this is {} certificate",
                peer.principal().role().with_article()
            )));
        };
        let req = request.into_inner();
        let now = self.ctx.clock.now();
        let cosigned = self
            .ctx
            .blocking(move |ctx| {
                cosigning::accept(
                    &ctx.store,
                    &ctx.log,
                    state,
                    req.tree_size,
                    &req.cosignature,
                    now,
                )
            })
            .await?;
        tracing::info!(%state, "a witness cosigned a checkpoint");
        Ok(Response::new(pb::AddCosignatureResponse {
            checkpoint: cosigned.checkpoint,
            newer_held_time: cosigned.newer_held.unwrap_or_default(),
        }))
    }

    async fn get_entries(
        &self,
        request: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesResponse>, Status> {
        let peer = auth::peer(&request)?.clone();
        let _in_progress = self.ctx.take_lookup(&peer, "GetEntries").await?;
        let req = request.into_inner();
        // 0: as far as one call goes.
        let end = if req.end == 0 { u64::MAX } else { req.end };
        if end < req.start {
            return Err(invalid_field(
                "end",
                format!("end ({}) is before start ({})", req.end, req.start),
            ));
        }
        let end = end.min(req.start.saturating_add(MAX_ENTRIES));
        let start = req.start;
        let entries = self
            .ctx
            .blocking(move |ctx| Ok::<_, Status>(ctx.snapshot()?.log_entries(start, end)?))
            .await?;
        self.ctx.charge_lookup(&peer, entries.len());
        Ok(Response::new(pb::GetEntriesResponse {
            start: req.start,
            entries,
        }))
    }
}
