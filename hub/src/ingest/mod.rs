//! The hub side of the adapter contract: keeps rejected inputs, dedupes resends,
//! publishes accepted events with a confirm, and only then reports them accepted.

pub mod formats;
pub mod replay;
pub mod sources;

use std::sync::Arc;

use renkei_sdk::{IngestOutcome, IngestSink, NormalizeError, ReceivedInput};

use crate::audit::AuditEntry;
use crate::bus::Bus;
use crate::store::batch::GroupCommit;
use crate::store::{IngestClaim, IngestRecord, IngestStore, PublishMark, Rejection, StoreError};
use std::time::Duration;
use uuid::Uuid;

/// Takes inputs from every source adapter.
#[derive(Clone)]
pub struct Ingestor {
    store: Arc<dyn IngestStore>,
    bus: Arc<dyn Bus>,
    claims: GroupCommit<IngestRecord, IngestClaim>,
    published: GroupCommit<PublishMark, ()>,
    store_timeout: Duration,
}

/// Inputs claimed per transaction, at most.
const CLAIM_BATCH: usize = 128;

impl Ingestor {
    /// An ingestor over a store and a bus. Starts the tasks that commit claims and
    /// publish marks in batches (see [`GroupCommit`]); call it inside the runtime.
    ///
    /// `store_timeout` bounds each wait for the store (normally the pool's
    /// `database.acquire_timeout`): past it the sender is told to try again later, even
    /// when the store hangs rather than fails, or queued batches are ahead.
    pub fn new(store: Arc<dyn IngestStore>, bus: Arc<dyn Bus>, store_timeout: Duration) -> Self {
        let committer = store.clone();
        let claims = GroupCommit::spawn(CLAIM_BATCH, move |batch| {
            let store = committer.clone();
            Box::pin(async move { store.claim_ingests(batch).await })
        });
        let committer = store.clone();
        let published = GroupCommit::spawn(CLAIM_BATCH, move |marks: &[PublishMark]| {
            let store = committer.clone();
            Box::pin(async move {
                store.mark_published(marks).await?;
                Ok(vec![(); marks.len()])
            })
        });
        Self {
            store,
            bus,
            claims,
            published,
            store_timeout,
        }
    }

    /// Waits for the store at most `store_timeout`.
    async fn store_call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.store_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "the database did not answer within {:?} ({what})",
                self.store_timeout
            ))),
        }
    }

    /// Publishes an event with a confirm, then marks its claim published (and audits the
    /// acceptance) before the sender is answered: a claim answered `AA` is always marked,
    /// so a later message reusing its id is refused, never taken for a resend.
    async fn publish(
        &self,
        event_type: &str,
        mark: PublishMark,
        json: &[u8],
    ) -> Result<(), String> {
        let event_id = mark.event_id;
        self.bus
            .publish_event(event_type, event_id, json)
            .await
            .map_err(|e| e.to_string())?;
        // If the mark fails the sender is told AR and resends; the claim is still
        // unmarked, so the resend publishes the same event again (the router routes an
        // event id once) and is marked then.
        self.store_call("marking the event published", self.published.submit(mark))
            .await
            .map_err(|e| {
                tracing::info!(%event_id, error = %e, "published but not marked; the sender is told to resend");
                e.to_string()
            })
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
        let rejection = Rejection {
            adapter,
            peer,
            location: error.location.as_deref(),
            reason: &error.reason,
            raw,
        };
        let kept = self
            .store_call(
                "keeping a refused input",
                self.store.record_rejection(rejection),
            )
            .await;
        match kept {
            Ok(id) => {
                // The peer stays out of the log: some sources' peers (a storage path) name the patient.
                tracing::info!(adapter, rejected_input = %id, error = %error, "input refused and kept");
                IngestOutcome::Rejected(error)
            }
            Err(e) => IngestOutcome::Unavailable(e.to_string()),
        }
    }
}

#[async_trait::async_trait]
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
        let accepted = |event_id: Uuid| PublishMark {
            event_id,
            audit: AuditEntry::new(&format!("adapter:{adapter}"), "ingest", "accepted")
                .event(event_id)
                .detail(serde_json::json!({
                    "type": event.event_type.as_str(),
                    "source": event.source,
                    "message_id": origin.message_id,
                    "raw_sha256": origin.raw_sha256,
                    "peer": input.source.peer,
                })),
        };
        let record = IngestRecord {
            source_key,
            message_id: origin.message_id.clone(),
            event_id: event.id,
            event_type: event.event_type,
            raw_sha256: origin.raw_sha256.clone(),
            event_json: json.clone(),
            // Kept here too, in case the claim refuses it.
            raw: input.raw.clone(),
        };
        let claim = self
            .store_call("claiming the message id", self.claims.submit(record))
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
                let error = match origin.format.message_id_location() {
                    Some(location) => NormalizeError::at(location, reason),
                    None => NormalizeError::whole(reason),
                };
                return self
                    .refuse(adapter, &input.source.peer, error, &input.raw)
                    .await;
            }
            Ok(IngestClaim::AlreadyPublished { event_id }) => (event_id, true),
            Ok(IngestClaim::New) => match self
                .publish(
                    event.event_type.as_str(),
                    accepted(event.id),
                    json.as_bytes(),
                )
                .await
            {
                Ok(()) => (event.id, false),
                Err(e) => return IngestOutcome::Unavailable(e),
            },
            Ok(IngestClaim::NotYetPublished {
                event_id,
                event_json,
                event_type,
            }) => match self
                .publish(&event_type, accepted(event_id), &event_json)
                .await
            {
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
