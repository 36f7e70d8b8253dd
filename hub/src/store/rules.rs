//! The rules whose outcome the store records, as plain functions: every backend calls
//! them and keeps only the storage (reading what is stored, writing what they decide).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    DeliveryFinish, IngestClaim, IngestRecord, NextState, RouteCommit, RouteDecision, RouteOutcome,
    RouteRequest, SeenIngest, StoreError,
};
use crate::audit::AuditEntry;

/// The rule for an input whose (source, message id) was seen before, shared by every
/// backend.
///
/// - The same bytes are a resend: acknowledged again (and published again if the first
///   was never confirmed to its sender).
/// - Other bytes after the first was answered `AA` are a reused id: refused, so the
///   second content is kept as a rejected input instead of vanishing.
/// - Other bytes while the first was never answered `AA` are a resend only when they
///   say the same thing (a sender re-stamping MSH-7 on its retry after `AR`): the same
///   event apart from its id and the raw bytes' hash. Anything else is a reused id too:
///   the first may still be answered `AA` in a moment (two connections racing), and
///   taking the second for a resend would acknowledge content that is never published.
pub fn seen_claim(first: &SeenIngest, record: &IngestRecord) -> IngestClaim {
    let resend = first.raw_sha256 == record.raw_sha256
        || (!first.published && same_content(&first.event_json, &record.event_json));
    match (resend, first.published) {
        (true, true) => IngestClaim::AlreadyPublished {
            event_id: first.event_id,
        },
        (true, false) => IngestClaim::NotYetPublished {
            event_id: first.event_id,
            event_json: first.event_json.clone().into_bytes(),
            event_type: first.event_type.clone(),
        },
        (false, _) => IngestClaim::Reused {
            event_id: first.event_id,
        },
    }
}

/// Whether two serialised canonical events carry the same content, ignoring what
/// differs between two copies of one message: the event id and the raw bytes' hash.
/// Anything unreadable compares unequal (refusing is safe, accepting might lose).
fn same_content(first: &str, second: &str) -> bool {
    fn comparable(json: &str) -> Option<serde_json::Value> {
        let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
        let object = value.as_object_mut()?;
        object.remove("id");
        let origin = object.get_mut("data")?.get_mut("origin")?.as_object_mut()?;
        origin.remove("raw_sha256");
        Some(value)
    }
    match (comparable(first), comparable(second)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Which requests of a routing batch route their event: the first request for each id
/// among those whose event was not stored before (`stored_now` holds the ids the batch
/// itself inserted). A later request for the same id — in this batch or after a
/// redelivery — routes nothing. Also returns the ids routed, for [`hand_on_again`].
pub fn first_routes(
    batch: &[RouteRequest],
    stored_now: &HashSet<Uuid>,
) -> (Vec<bool>, HashSet<Uuid>) {
    let mut first = HashSet::with_capacity(batch.len());
    let new = batch
        .iter()
        .map(|r| stored_now.contains(&r.event.id) && first.insert(r.event.id))
        .collect();
    (new, first)
}

fn delivering(r: &RouteRequest) -> impl Iterator<Item = &RouteDecision> {
    r.decisions
        .iter()
        .filter(|d| d.outcome == RouteOutcome::Deliver)
}

/// How many sequence numbers each participant needs for the new events of a batch, in
/// participant id order (the order a backend locks their counters in, so concurrent
/// batches cannot deadlock).
pub fn sequences_wanted(batch: &[RouteRequest], new: &[bool]) -> BTreeMap<String, i64> {
    let mut wanted: BTreeMap<String, i64> = BTreeMap::new();
    for (r, _) in batch.iter().zip(new).filter(|(_, new)| **new) {
        for d in delivering(r) {
            *wanted.entry(d.participant_id.clone()).or_default() += 1;
        }
    }
    wanted
}

/// The first of the numbers reserved for a participant whose counter moved from `last
/// - count` to `last`.
pub fn first_reserved(last: i64, count: i64) -> i64 {
    last - count + 1
}

/// A delivery to store.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Its id.
    pub id: Uuid,
    /// The event.
    pub event_id: Uuid,
    /// The recipient.
    pub participant_id: String,
    /// The recipient's endpoint.
    pub endpoint_name: String,
    /// Its place in the recipient's sequence.
    pub sequence: i64,
}

/// What [`number_deliveries`] decided for a batch.
#[derive(Debug)]
pub struct Numbered {
    /// The deliveries to store.
    pub deliveries: Vec<NewDelivery>,
    /// One commit per request (already-routed ones still without their deliveries).
    pub commits: Vec<RouteCommit>,
    /// The audit rows to record.
    pub audit: Vec<AuditEntry>,
}

/// The deliveries of a batch's new events, numbered per participant in batch order
/// from `next` (each participant's first reserved number, see [`sequences_wanted`]);
/// one commit per request (already-routed ones still without their deliveries) and
/// the audit rows to record.
pub fn number_deliveries(
    batch: &[RouteRequest],
    new: &[bool],
    mut next: HashMap<String, i64>,
) -> Result<Numbered, StoreError> {
    let mut deliveries = Vec::new();
    let mut commits = Vec::with_capacity(batch.len());
    let mut audit = Vec::new();
    for (r, is_new) in batch.iter().zip(new) {
        let mut commit = RouteCommit {
            pending_deliveries: Vec::new(),
            already_routed: !is_new,
        };
        if *is_new {
            for d in delivering(r) {
                let sequence = next.get_mut(&d.participant_id).ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "participant {} is not registered",
                        d.participant_id
                    ))
                })?;
                let id = Uuid::now_v7();
                deliveries.push(NewDelivery {
                    id,
                    event_id: r.event.id,
                    participant_id: d.participant_id.clone(),
                    endpoint_name: d.endpoint_name.clone(),
                    sequence: *sequence,
                });
                *sequence += 1;
                commit.pending_deliveries.push(id);
            }
            audit.extend(r.audit.iter().cloned());
        }
        commits.push(commit);
    }
    Ok(Numbered {
        deliveries,
        commits,
        audit,
    })
}

/// The events of a batch that were routed before (redeliveries): their unfinished
/// deliveries are handed on again.
pub fn routed_before(batch: &[RouteRequest], commits: &[RouteCommit]) -> Vec<Uuid> {
    batch
        .iter()
        .zip(commits)
        .filter(|(_, c)| c.already_routed)
        .map(|(r, _)| r.event.id)
        .collect()
}

/// Gives each already-routed request its event's unfinished deliveries (`pending`,
/// by event): once per event, and not for an event this batch has just routed
/// (`routed`, from [`first_routes`]). A delivery waiting for a retry is included: when
/// its first attempt was made in this process and the retry could not be parked,
/// nothing else holds it; if a retry was parked after all, the worker re-parks the
/// early arrival.
pub fn hand_on_again(
    batch: &[RouteRequest],
    commits: &mut [RouteCommit],
    mut routed: HashSet<Uuid>,
    mut pending: HashMap<Uuid, Vec<Uuid>>,
) {
    for (commit, r) in commits.iter_mut().zip(batch) {
        if commit.already_routed && routed.insert(r.event.id) {
            commit.pending_deliveries = pending.remove(&r.event.id).unwrap_or_default();
        }
    }
}

/// The stored columns of a delivery's next state: status, when the next attempt is
/// due, and the error or reason.
pub fn next_state_columns(next: &NextState) -> (&'static str, Option<DateTime<Utc>>, Option<&str>) {
    match next {
        NextState::Delivered => ("delivered", None, None),
        NextState::Retry { at, error } => ("retrying", Some(*at), Some(error)),
        NextState::Dead { reason } => ("dead", None, Some(reason)),
        NextState::Cancelled { reason } => ("cancelled", None, Some(reason)),
    }
}

/// The attempt count a delivery must still have for `finish` to apply: the count the
/// job was loaded with (`None` when no attempt was made: any count will do).
pub fn attempts_before(finish: &DeliveryFinish) -> Option<i32> {
    finish.attempt.as_ref().map(|a| a.attempt - 1)
}

/// Whether `finish` may move a delivery in state `status` with `attempts` made: only a
/// delivery still in flight, at the attempt count its job was loaded with. A duplicate
/// copy of the job (a redelivery, a retry parked twice) that finishes second changes
/// nothing.
pub fn may_finish(status: &str, attempts: i32, finish: &DeliveryFinish) -> bool {
    matches!(status, "pending" | "retrying")
        && attempts_before(finish).is_none_or(|before| attempts == before)
}

/// Which requests of a finishing batch are recorded: those whose delivery moved
/// (`moved`), once per delivery even if it came twice in the batch.
pub fn first_finishes(batch: &[DeliveryFinish], moved: &HashSet<Uuid>) -> Vec<bool> {
    let mut recorded = HashSet::with_capacity(moved.len());
    batch
        .iter()
        .map(|f| moved.contains(&f.id) && recorded.insert(f.id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{IngestClaim, IngestRecord, SeenIngest};
    use renkei_sdk::EventType;
    use uuid::Uuid;

    fn event(patient: &str) -> String {
        serde_json::json!({
            "id": Uuid::now_v7(),
            "type": "inpatient.admitted",
            "data": {
                "patient": { "identifiers": [{ "system": "urn:test", "value": patient }] },
                "origin": { "message_id": "K1", "raw_sha256": format!("sha-of-{patient}-{}", Uuid::now_v7()) }
            }
        })
        .to_string()
    }

    fn record(raw_sha256: &str, event_json: String) -> IngestRecord {
        IngestRecord {
            source_key: "hl7v2|HIS|1319999999".into(),
            message_id: "K1".into(),
            event_id: Uuid::now_v7(),
            event_type: EventType::InpatientAdmitted,
            raw_sha256: raw_sha256.into(),
            event_json,
            raw: bytes::Bytes::new(),
        }
    }

    fn first(published: bool, event_json: String) -> SeenIngest {
        SeenIngest {
            event_id: Uuid::now_v7(),
            raw_sha256: "aaa".into(),
            published,
            event_json,
            event_type: "inpatient.admitted".into(),
        }
    }

    #[test]
    fn other_content_under_an_id_answered_aa_is_a_reused_id() {
        let seen = first(true, event("patient-1"));
        let claim = seen_claim(&seen, &record("bbb", event("patient-2")));
        assert_eq!(
            claim,
            IngestClaim::Reused {
                event_id: seen.event_id
            }
        );
        // Even the same content with other bytes: the first was answered AA.
        let claim = seen_claim(&seen, &record("bbb", event("patient-1")));
        assert!(matches!(claim, IngestClaim::Reused { .. }), "{claim:?}");
    }

    #[test]
    fn other_content_under_an_id_not_yet_answered_is_a_reused_id_too() {
        // The first may be answered AA any moment: taking the second for its resend
        // would acknowledge content that is never published.
        let seen = first(false, event("patient-1"));
        let claim = seen_claim(&seen, &record("bbb", event("patient-2")));
        assert!(matches!(claim, IngestClaim::Reused { .. }), "{claim:?}");
    }

    #[test]
    fn a_resend_is_acknowledged_and_published_again_when_never_answered_aa() {
        let seen = first(false, event("patient-1"));
        // The same bytes, or a re-stamped copy that says the same thing.
        for (sha, json) in [("aaa", event("patient-2")), ("ccc", event("patient-1"))] {
            let claim = seen_claim(&seen, &record(sha, json));
            assert!(
                matches!(&claim, IngestClaim::NotYetPublished { event_id, .. } if *event_id == seen.event_id),
                "{claim:?}"
            );
        }
        let published = first(true, event("patient-1"));
        assert_eq!(
            seen_claim(&published, &record("aaa", event("patient-1"))),
            IngestClaim::AlreadyPublished {
                event_id: published.event_id
            }
        );
    }

    #[test]
    fn unreadable_stored_content_is_never_taken_for_a_resend() {
        let seen = first(false, "not json".into());
        let claim = seen_claim(&seen, &record("bbb", event("patient-1")));
        assert!(matches!(claim, IngestClaim::Reused { .. }), "{claim:?}");
    }

    fn request(event: Uuid, to: &[&str]) -> RouteRequest {
        let mut e = renkei_sdk::samples::minimal_event();
        e.id = event;
        RouteRequest {
            event: e,
            decisions: to
                .iter()
                .map(|p| RouteDecision {
                    participant_id: (*p).into(),
                    endpoint_name: "main".into(),
                    outcome: RouteOutcome::Deliver,
                })
                .chain(std::iter::once(RouteDecision {
                    participant_id: "refused".into(),
                    endpoint_name: "main".into(),
                    outcome: RouteOutcome::NoCareRelationship,
                }))
                .collect(),
            audit: vec![AuditEntry::new("router", "route", "deliver")],
        }
    }

    #[test]
    fn only_the_first_request_for_a_new_event_routes_it() {
        let (a, b, old) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let batch = [
            request(a, &["x"]),
            request(old, &["x"]),
            request(a, &["x"]),
            request(b, &["x"]),
        ];
        let (new, routed) = first_routes(&batch, &HashSet::from([a, b]));
        assert_eq!(new, [true, false, false, true]);
        assert_eq!(routed, HashSet::from([a, b]));
    }

    #[test]
    fn sequence_numbers_follow_the_batch_order_per_participant_without_gaps()
    -> Result<(), StoreError> {
        let batch = [
            request(Uuid::now_v7(), &["x", "y"]),
            request(Uuid::now_v7(), &["x"]),
            request(Uuid::now_v7(), &["y"]),
        ];
        let new = [true, false, true];
        let wanted = sequences_wanted(&batch, &new);
        // Not the refused candidate, not the event routed before.
        assert_eq!(wanted, BTreeMap::from([("x".into(), 1), ("y".into(), 2)]));
        // x's counter was at 6 and moved to 7; y's at 0 and moved to 2.
        let next = HashMap::from([
            ("x".to_owned(), first_reserved(7, 1)),
            ("y".to_owned(), first_reserved(2, 2)),
        ]);
        let Numbered {
            deliveries,
            commits,
            audit,
        } = number_deliveries(&batch, &new, next)?;
        let numbered: Vec<(&str, i64)> = deliveries
            .iter()
            .map(|d| (d.participant_id.as_str(), d.sequence))
            .collect();
        assert_eq!(numbered, [("x", 7), ("y", 1), ("y", 2)]);
        assert_eq!(commits[0].pending_deliveries.len(), 2);
        assert!(commits[1].already_routed && commits[1].pending_deliveries.is_empty());
        assert_eq!(audit.len(), 2, "the audit rows of the routed events only");
        assert_eq!(routed_before(&batch, &commits), [batch[1].event.id]);
        Ok(())
    }

    #[test]
    fn a_delivery_to_an_unregistered_participant_is_a_conflict() {
        let batch = [request(Uuid::now_v7(), &["ghost"])];
        let result = number_deliveries(&batch, &[true], HashMap::new());
        assert!(matches!(result, Err(StoreError::Conflict(m)) if m.contains("ghost")));
    }

    #[test]
    fn a_redelivered_event_is_handed_its_unfinished_deliveries_once() {
        let (old, fresh) = (Uuid::now_v7(), Uuid::now_v7());
        let batch = [
            request(old, &["x"]),
            request(old, &["x"]),
            request(fresh, &["x"]),
        ];
        let mut commits: Vec<RouteCommit> = [true, true, false]
            .into_iter()
            .map(|already_routed| RouteCommit {
                pending_deliveries: Vec::new(),
                already_routed,
            })
            .collect();
        let waiting = Uuid::now_v7();
        hand_on_again(
            &batch,
            &mut commits,
            HashSet::from([fresh]),
            HashMap::from([(old, vec![waiting])]),
        );
        assert_eq!(commits[0].pending_deliveries, [waiting]);
        assert!(commits[1].pending_deliveries.is_empty(), "once per event");
    }

    fn finishing(attempt: Option<i32>) -> DeliveryFinish {
        DeliveryFinish {
            id: Uuid::now_v7(),
            attempt: attempt.map(|attempt| crate::store::AttemptRecord {
                attempt,
                started_at: Utc::now(),
                duration_ms: 1,
                status_code: Some(503),
                error: None,
                outcome: "retry".into(),
            }),
            next: NextState::Delivered,
            audit: AuditEntry::new("t", "deliver", "delivered"),
        }
    }

    #[test]
    fn a_delivery_finishes_only_in_flight_and_at_the_attempt_its_job_was_loaded_with() {
        let second_attempt = finishing(Some(2));
        assert!(may_finish("retrying", 1, &second_attempt));
        assert!(
            !may_finish("retrying", 2, &second_attempt),
            "another copy made it"
        );
        for done in ["delivered", "dead", "cancelled"] {
            assert!(!may_finish(done, 1, &second_attempt), "{done} is final");
        }
        assert!(
            may_finish("pending", 5, &finishing(None)),
            "no attempt: any count"
        );
        let twice = [second_attempt.clone(), second_attempt.clone()];
        assert_eq!(
            first_finishes(&twice, &HashSet::from([second_attempt.id])),
            [true, false]
        );
    }
}
