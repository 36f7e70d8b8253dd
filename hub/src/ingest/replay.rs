//! Replaying a refused input through the normal path: as it was kept, or fixed by an
//! operator. It is read by the file format that recognises it, ingested like any new
//! input (dedupe, publish with a confirm, audit), and marked replayed once accepted, so
//! it goes through once. Refused again, it is kept as a new refused input with the new
//! reason; the old one stays unreplayed.

use renkei_sdk::{IngestOutcome, IngestSink, InputSource, NormalizeError, ReceivedInput};
use uuid::Uuid;

use crate::store::{AdminStore, StoreError};

/// What became of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Accepted: the events it became (the first is recorded on the refused input).
    Accepted {
        /// The event ids.
        events: Vec<Uuid>,
    },
    /// Refused again, and kept as a new refused input with this reason.
    Refused(NormalizeError),
    /// It was replayed before, as this event.
    AlreadyReplayed {
        /// The event it became then.
        event: Option<Uuid>,
    },
    /// No refused input has this id.
    NotFound,
    /// The hub cannot take it now; try again.
    Unavailable(String),
}

/// Replays the refused input `id` (or `fixed` bytes in its place) into `sink`.
pub async fn replay_rejected(
    store: &dyn AdminStore,
    sink: &dyn IngestSink,
    id: Uuid,
    fixed: Option<Vec<u8>>,
    window: &renkei_sdk::TimeWindow,
    actor: &str,
) -> Result<ReplayOutcome, StoreError> {
    let Some(kept) = store.rejected_input(id).await? else {
        return Ok(ReplayOutcome::NotFound);
    };
    if kept.summary.replayed_at.is_some() {
        return Ok(ReplayOutcome::AlreadyReplayed {
            event: kept.summary.replayed_event,
        });
    }
    let raw = bytes::Bytes::from(fixed.unwrap_or(kept.raw));
    let source = InputSource {
        adapter: kept.summary.source.clone(),
        peer: format!("replay of {id}"),
    };
    let formats = super::formats::file_formats();
    // A file keeps its name as the peer; a stream's peer is an address, and its input
    // is recognised by content alone.
    let name = kept.summary.peer.as_str();
    let events = match renkei_sdk::file::sniff(&formats, name, &raw) {
        None => Err(NormalizeError::whole(format!(
            "not a format the hub reads (known: {})",
            super::formats::names().join(", ")
        ))),
        Some(format) => format.read(name, &raw, window),
    };
    let events = match events {
        Ok(events) => events,
        Err(error) => {
            let input = ReceivedInput {
                source,
                raw,
                normalized: Err(error),
            };
            return Ok(match sink.ingest(input).await {
                IngestOutcome::Rejected(error) => ReplayOutcome::Refused(error),
                IngestOutcome::Unavailable(why) => ReplayOutcome::Unavailable(why),
                IngestOutcome::Accepted { .. } => {
                    ReplayOutcome::Unavailable("the hub accepted a refused input".to_owned())
                }
            });
        }
    };
    let mut accepted = Vec::with_capacity(events.len());
    for event in events {
        let input = ReceivedInput {
            source: source.clone(),
            raw: raw.clone(),
            normalized: Ok(event),
        };
        match sink.ingest(input).await {
            IngestOutcome::Accepted { event_id, .. } => accepted.push(event_id),
            IngestOutcome::Rejected(error) => return Ok(ReplayOutcome::Refused(error)),
            IngestOutcome::Unavailable(why) => return Ok(ReplayOutcome::Unavailable(why)),
        }
    }
    let Some(first) = accepted.first() else {
        return Ok(ReplayOutcome::Refused(NormalizeError::whole(
            "the input carries nothing to publish",
        )));
    };
    if !store.mark_rejected_replayed(id, *first, actor).await? {
        // Another replay got there first; the events are the same (deduped).
        let event = store
            .rejected_input(id)
            .await?
            .and_then(|k| k.summary.replayed_event);
        return Ok(ReplayOutcome::AlreadyReplayed { event });
    }
    Ok(ReplayOutcome::Accepted { events: accepted })
}
