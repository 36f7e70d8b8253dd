//! The hub side of the adapter contract: keeps rejected inputs, dedupes resends,
//! publishes accepted events with a confirm, and only then reports them accepted.

use std::sync::Arc;

use renkei_sdk::{IngestOutcome, IngestSink, NormalizeError, ReceivedInput, SourceFormat};

use crate::audit::AuditEntry;
use crate::bus::Bus;
use crate::store::batch::GroupCommit;
use crate::store::{IngestClaim, IngestRecord, IngestStore, Rejection, StoreError};
use uuid::Uuid;

/// Takes inputs from every source adapter.
#[derive(Clone)]
pub struct Ingestor {
    store: Arc<dyn IngestStore>,
    bus: Arc<dyn Bus>,
    claims: GroupCommit<IngestRecord, IngestClaim>,
    published: GroupCommit<Uuid, ()>,
}

/// Inputs claimed per transaction, at most.
const CLAIM_BATCH: usize = 128;

impl Ingestor {
    /// An ingestor over a store and a bus. Starts the tasks that commit claims and
    /// publish marks in batches (see [`GroupCommit`]); call it inside the runtime.
    pub fn new(store: Arc<dyn IngestStore>, bus: Arc<dyn Bus>) -> Self {
        let committer = store.clone();
        let claims = GroupCommit::spawn(CLAIM_BATCH, move |batch| {
            let store = committer.clone();
            Box::pin(async move { store.claim_ingests(batch).await })
        });
        let committer = store.clone();
        let published = GroupCommit::spawn(CLAIM_BATCH, move |ids: &[Uuid]| {
            let store = committer.clone();
            Box::pin(async move {
                store.mark_published(ids).await?;
                Ok(vec![(); ids.len()])
            })
        });
        Self {
            store,
            bus,
            claims,
            published,
        }
    }

    async fn publish(
        &self,
        event_type: &str,
        event_id: uuid::Uuid,
        json: &[u8],
    ) -> Result<(), String> {
        self.bus
            .publish_event(event_type, event_id, json)
            .await
            .map_err(|e| e.to_string())?;
        // The sender is answered without waiting for the mark: if it is lost, a resend
        // of this message publishes the event again, which the router ignores (it
        // routes an event id once).
        let published = self.published.clone();
        tokio::spawn(async move {
            if let Err(e) = published.submit(event_id).await {
                tracing::debug!(%event_id, error = %e, "publish not marked; a resend would publish again");
            }
        });
        Ok(())
    }
}

impl Ingestor {
    /// Keeps an input the hub will never accept, with the reason. Only once it is kept
    /// is the sender told it is refused; otherwise the sender retries later.
    async fn refuse(
        &self,
        adapter: &str,
        peer: &str,
        error: NormalizeError,
        raw: &[u8],
    ) -> IngestOutcome {
        let kept = self
            .store
            .record_rejection(Rejection {
                adapter,
                peer,
                location: error.location.as_deref(),
                reason: &error.reason,
                raw,
            })
            .await;
        match kept {
            Ok(id) => {
                tracing::info!(adapter, peer, rejected_input = %id, error = %error, "input refused and kept");
                IngestOutcome::Rejected(error)
            }
            Err(e) => IngestOutcome::Unavailable(e.to_string()),
        }
    }
}

impl IngestSink for Ingestor {
    async fn ingest(&self, input: ReceivedInput) -> IngestOutcome {
        let adapter = input.source.adapter.as_str();
        let event = match input.normalized {
            Ok(event) => event,
            Err(error) => {
                return self
                    .refuse(adapter, &input.source.peer, error, &input.raw)
                    .await;
            }
        };
        let json = match serde_json::to_string(&event) {
            Ok(json) => json,
            Err(e) => {
                return IngestOutcome::Unavailable(format!("cannot serialise the event: {e}"));
            }
        };
        let origin = &event.data.origin;
        let source_key = format!(
            "{}|{}|{}",
            origin.format.as_str(),
            origin.sending_system.as_deref().unwrap_or(""),
            origin.facility.as_deref().unwrap_or(&event.source)
        );
        let audit = AuditEntry::new(&format!("adapter:{adapter}"), "ingest", "accepted")
            .event(event.id)
            .detail(serde_json::json!({
                "type": event.event_type.as_str(),
                "source": event.source,
                "message_id": origin.message_id,
                "raw_sha256": origin.raw_sha256,
                "peer": input.source.peer,
            }));
        let claim = self
            .claims
            .submit(IngestRecord {
                source_key,
                message_id: origin.message_id.clone(),
                event_id: event.id,
                event_type: event.event_type,
                raw_sha256: origin.raw_sha256.clone(),
                event_json: json.clone(),
                // Kept here too, in case the claim refuses it.
                raw: input.raw.clone(),
                audit,
            })
            .await;
        let (event_id, duplicate) = match claim {
            Err(StoreError::Unavailable(e)) => return IngestOutcome::Unavailable(e),
            Err(e) => {
                let error = NormalizeError::whole(format!(
                    "the hub cannot store this message ({e}); it was kept for an operator to look at"
                ));
                return self
                    .refuse(adapter, &input.source.peer, error, &input.raw)
                    .await;
            }
            Ok(IngestClaim::Reused { event_id }) => {
                let reason = format!(
                    "message id `{}` was already used by this sender for a different message (accepted as event {event_id}); \
                     the hub neither overwrites nor drops it: give each message its own id",
                    origin.message_id
                );
                let error = match origin.format {
                    SourceFormat::Hl7v2 => NormalizeError::at("MSH-10", reason),
                    _ => NormalizeError::whole(reason),
                };
                return self
                    .refuse(adapter, &input.source.peer, error, &input.raw)
                    .await;
            }
            Ok(IngestClaim::AlreadyPublished { event_id }) => (event_id, true),
            Ok(IngestClaim::New) => match self
                .publish(event.event_type.as_str(), event.id, json.as_bytes())
                .await
            {
                Ok(()) => (event.id, false),
                Err(e) => return IngestOutcome::Unavailable(e),
            },
            Ok(IngestClaim::NotYetPublished {
                event_id,
                event_json,
                event_type,
            }) => match self.publish(&event_type, event_id, &event_json).await {
                Ok(()) => (event_id, true),
                Err(e) => return IngestOutcome::Unavailable(e),
            },
        };
        tracing::debug!(adapter, %event_id, duplicate, "event accepted");
        IngestOutcome::Accepted {
            event_id,
            duplicate,
        }
    }
}
