//! The hub side of the adapter contract: keeps rejected inputs, dedupes resends,
//! publishes accepted events with a confirm, and only then reports them accepted.

use std::sync::Arc;

use renkei_sdk::{IngestOutcome, IngestSink, ReceivedInput};

use crate::audit::AuditEntry;
use crate::bus::Bus;
use crate::store::{IngestClaim, IngestRecord, IngestStore, Rejection};

/// Takes inputs from every source adapter.
#[derive(Clone)]
pub struct Ingestor {
    store: Arc<dyn IngestStore>,
    bus: Arc<dyn Bus>,
}

impl Ingestor {
    /// An ingestor over a store and a bus.
    pub fn new(store: Arc<dyn IngestStore>, bus: Arc<dyn Bus>) -> Self {
        Self { store, bus }
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
        self.store
            .mark_published(event_id)
            .await
            .map_err(|e| e.to_string())
    }
}

impl IngestSink for Ingestor {
    async fn ingest(&self, input: ReceivedInput) -> IngestOutcome {
        let adapter = input.source.adapter.as_str();
        let event = match input.normalized {
            Ok(event) => event,
            Err(error) => {
                let kept = self
                    .store
                    .record_rejection(Rejection {
                        adapter,
                        peer: &input.source.peer,
                        location: error.location.as_deref(),
                        reason: &error.reason,
                        raw: &input.raw,
                    })
                    .await;
                return match kept {
                    Ok(id) => {
                        tracing::info!(adapter, peer = %input.source.peer, rejected_input = %id, error = %error, "input refused and kept");
                        IngestOutcome::Rejected(error)
                    }
                    // Not kept means not answered as final: the sender retries later.
                    Err(e) => IngestOutcome::Unavailable(e.to_string()),
                };
            }
        };
        let json = match serde_json::to_vec(&event) {
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
            .store
            .claim_ingest(IngestRecord {
                source_key: &source_key,
                message_id: &origin.message_id,
                event: &event,
                event_json: &json,
                raw: &input.raw,
                audit,
            })
            .await;
        let (event_id, duplicate) = match claim {
            Err(e) => return IngestOutcome::Unavailable(e.to_string()),
            Ok(IngestClaim::AlreadyPublished { event_id }) => (event_id, true),
            Ok(IngestClaim::New) => match self
                .publish(event.event_type.as_str(), event.id, &json)
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
