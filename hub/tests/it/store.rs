//! The store contract: every case runs on each backend (PostgreSQL and SQLite), through
//! the hub's own factory, so both keep the same rules.

use renkei_hub::api::verify_chain;
use renkei_hub::audit::{AuditEntry, ChainBreak};
use renkei_hub::registry::document::{ChangeAction, RegistryDocument};
use renkei_hub::store::{
    DeliveryFinish, DeliveryStore, FactsQuestion, NextState, RouteDecision, RouteRequest,
};

use crate::harness::{Backend, TestDb};

const REGISTRY: &str = r#"
[[facilities]]
code = "1319999999"
name = "Example Hospital"
kind = "hospital"

[[facilities]]
code = "1379999999"
name = "Sakura care office"
kind = "care_management"

[[participants]]
id = "sakura"
facility = "1379999999"
name = "Sakura care office"

[[endpoints]]
participant = "sakura"
name = "main"
url = "http://127.0.0.1:9/hook"
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[[subscriptions]]
participant = "sakura"
name = "adt"
endpoint = "main"
event_types = ["inpatient.admitted", "inpatient.discharged"]

[[patients]]
id = "P-1"
identifiers = [{ facility = "1319999999", value = "0000482915" }]

[[patients]]
id = "P-2"
identifiers = [{ facility = "1319999999", value = "0000000002" }]

[[care_relationships]]
patient = "P-1"
participant = "sakura"
role = "care_manager"
valid_from = "2025-01-01"

[[consents]]
id = "c-1"
patient = "P-1"
scope = "blanket"
basis = "written"
valid_from = "2025-01-01T00:00:00Z"
"#;

fn registry() -> anyhow::Result<RegistryDocument> {
    let doc = RegistryDocument::from_toml(REGISTRY)?;
    doc.validate()?;
    Ok(doc)
}

async fn registry_apply_is_idempotent_and_reports_changes(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::on(backend).await?;
    let doc = registry()?;
    let first = db.store.apply_registry(&doc, "test").await?;
    assert!(
        first.iter().all(|c| c.action == ChangeAction::Created),
        "{first:?}"
    );
    assert_eq!(first.len(), 9);
    let again = db.store.apply_registry(&doc, "test").await?;
    assert!(
        again.iter().all(|c| c.action == ChangeAction::Unchanged),
        "{again:?}"
    );

    let mut changed = doc.clone();
    changed.consents[0].withdrawn_at =
        Some(chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6));
    let third = db.store.apply_registry(&changed, "test").await?;
    let updated: Vec<_> = third
        .iter()
        .filter(|c| c.action != ChangeAction::Unchanged)
        .map(|c| (c.kind, c.key.as_str(), c.action))
        .collect();
    assert_eq!(updated, vec![("consent", "c-1", ChangeAction::Updated)]);

    let exported = db.store.export_registry().await?;
    assert_eq!(exported.consents, changed.consents);
    assert_eq!(
        exported.endpoints[0].secrets,
        vec!["whsec_********".to_string()],
        "secrets are never exported"
    );
    db.drop_db().await
}

/// Endpoint URLs with credentials are refused when applied now, but one stored before
/// that rule is never exported with its password.
async fn exported_endpoint_urls_never_show_credentials(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::on(backend).await?;
    let mut doc = registry()?;
    doc.endpoints[0].url = "https://renkei:hunter2@care.example.jp/hook".into();
    assert!(
        doc.validate().is_err(),
        "refused when applied through the CLI or API"
    );
    db.store.apply_registry(&doc, "test").await?;
    let exported = db.store.export_registry().await?;
    assert_eq!(
        exported.endpoints[0].url,
        "https://********:********@care.example.jp/hook"
    );
    db.drop_db().await
}

async fn identifier_owned_by_another_patient_is_refused_and_nothing_is_applied(
    backend: Backend,
) -> anyhow::Result<()> {
    let db = TestDb::on(backend).await?;
    db.store.apply_registry(&registry()?, "test").await?;
    let mut doc = RegistryDocument::from_toml(
        r#"
[[facilities]]
code = "1310000001"
name = "Another hospital"
kind = "hospital"

[[patients]]
id = "P-3"
identifiers = [{ facility = "1319999999", value = "0000482915" }]
"#,
    )?;
    doc.validate()?;
    let err = db
        .store
        .apply_registry(&doc, "test")
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            "patient P-3: one of its identifiers already belongs to another patient; nothing was applied"
        )
    );
    let exported = db.store.export_registry().await?;
    assert!(
        exported.facilities.iter().all(|f| f.code != "1310000001"),
        "the whole document is rolled back"
    );
    doc.patients.clear();
    db.drop_db().await
}

async fn reference_to_an_undeclared_facility_names_the_resource(
    backend: Backend,
) -> anyhow::Result<()> {
    let db = TestDb::on(backend).await?;
    let doc = RegistryDocument::from_toml(
        r#"
[[participants]]
id = "orphan"
facility = "1370000000"
name = "No such facility"
"#,
    )?;
    let err = db
        .store
        .apply_registry(&doc, "test")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.starts_with("participant orphan: "), "{err}");
    assert!(err.contains("declare what it refers to first"), "{err}");
    db.drop_db().await
}

async fn patient_is_resolved_by_any_facility_local_identifier(
    backend: Backend,
) -> anyhow::Result<()> {
    let db = TestDb::on(backend).await?;
    db.store.apply_registry(&registry()?, "test").await?;
    let known = renkei_sdk::Identifier {
        system: renkei_sdk::local_patient_id_system("1319999999"),
        value: "0000482915".into(),
    };
    let same_value_elsewhere = renkei_sdk::Identifier {
        system: renkei_sdk::local_patient_id_system("1310000009"),
        value: "0000482915".into(),
    };
    let ask = |identifier: &renkei_sdk::Identifier, event_type| FactsQuestion {
        identifiers: vec![identifier.clone()],
        event_type,
        source_facility: Some("1319999999".into()),
    };
    let facts = db
        .store
        .routing_facts_many(&[
            ask(&known, renkei_sdk::EventType::InpatientAdmitted),
            ask(
                &same_value_elsewhere,
                renkei_sdk::EventType::InpatientAdmitted,
            ),
            ask(&known, renkei_sdk::EventType::InpatientTransferred),
        ])
        .await?;
    let [admitted, elsewhere, transferred] = &facts[..] else {
        anyhow::bail!("one answer per question: {facts:?}");
    };
    assert_eq!(admitted.patient.as_deref(), Some("P-1"));
    assert_eq!(
        elsewhere.patient, None,
        "a local id is only unique within its facility"
    );
    assert_eq!(admitted.candidates.len(), 1);
    assert!(admitted.candidates[0].care_relationship.is_some());
    assert_eq!(admitted.consents.len(), 1);
    let none = &transferred.candidates;
    assert!(none.is_empty(), "not subscribed to transfers");
    db.drop_db().await
}

async fn audit_chain_verifies_and_finds_altered_and_removed_rows(
    backend: Backend,
) -> anyhow::Result<()> {
    let db = TestDb::on(backend).await?;
    for n in 0..5 {
        db.store
            .audit(vec![
                AuditEntry::new("test", "probe", "ok")
                    .detail(serde_json::json!({ "n": n, "日本語": "可" })),
            ])
            .await?;
    }
    let (rows, breaks) = verify_chain(db.store.as_ref()).await?;
    assert_eq!((rows, breaks), (5, vec![]));

    let refused = db
        .execute("UPDATE audit_log SET outcome = 'tampered' WHERE seq = 2")
        .await;
    assert!(refused.is_err(), "the log refuses updates");
    if backend == Backend::Postgres {
        let refused = db.execute("TRUNCATE audit_log").await;
        assert!(refused.is_err(), "the log refuses TRUNCATE");
    }
    let refused = db.execute("DELETE FROM audit_log WHERE seq = 3").await;
    assert!(refused.is_err(), "the log refuses deletes");
    let refused = db.execute("DELETE FROM audit_log").await;
    assert!(refused.is_err(), "the log refuses being emptied");
    // Someone with the database's owner rights removes the guards.
    match backend {
        Backend::Postgres => {
            db.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
                .await?
        }
        Backend::Sqlite => {
            db.execute("DROP TRIGGER audit_log_no_update").await?;
            db.execute("DROP TRIGGER audit_log_no_delete").await?;
        }
    }
    db.execute("UPDATE audit_log SET outcome = 'tampered' WHERE seq = 2")
        .await?;
    let (_, breaks) = verify_chain(db.store.as_ref()).await?;
    assert_eq!(breaks, vec![ChainBreak::Altered { seq: 2 }]);

    db.execute("DELETE FROM audit_log WHERE seq = 4").await?;
    let (_, breaks) = verify_chain(db.store.as_ref()).await?;
    assert_eq!(
        breaks,
        vec![
            ChainBreak::Altered { seq: 2 },
            ChainBreak::Missing {
                seq: 5,
                expected: 4
            }
        ]
    );
    db.drop_db().await
}

/// The example in `config/` is a document an administrator can apply as it is.
async fn example_registry_applies(backend: Backend) -> anyhow::Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/registry.example.toml"
    );
    let mut doc = RegistryDocument::from_toml(&std::fs::read_to_string(path)?)?;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    doc.resolve_secrets(|_| Some(secret.to_owned()))?;
    doc.validate()?;
    let db = TestDb::on(backend).await?;
    let changes = db.store.apply_registry(&doc, "test").await?;
    assert!(
        changes.iter().all(|c| c.action == ChangeAction::Created),
        "{changes:?}"
    );
    let exported = db.store.export_registry().await?;
    assert_eq!(exported.consents, doc.consents);
    assert_eq!(exported.care_relationships.len(), 2);
    db.drop_db().await
}

fn ingest(message_id: &str, raw: &[u8]) -> renkei_hub::store::IngestRecord {
    ingest_about(message_id, raw, "P1")
}

/// An input about `patient`: copies of one message differ only in their bytes' hash.
fn ingest_about(message_id: &str, raw: &[u8], patient: &str) -> renkei_hub::store::IngestRecord {
    let event_id = uuid::Uuid::now_v7();
    let raw_sha256 = renkei_sdk::Origin::sha256_hex(raw);
    renkei_hub::store::IngestRecord {
        source_key: "hl7v2|HIS01|1319999999".into(),
        message_id: message_id.into(),
        event_id,
        event_type: renkei_sdk::EventType::InpatientAdmitted,
        event_json: serde_json::json!({
            "id": event_id,
            "data": { "patient": { "id": patient }, "origin": { "raw_sha256": raw_sha256 } }
        })
        .to_string(),
        raw_sha256,
        raw: bytes::Bytes::copy_from_slice(raw),
    }
}

async fn a_reused_message_id_with_other_bytes_is_told_apart_from_a_resend(
    backend: Backend,
) -> anyhow::Result<()> {
    use renkei_hub::store::IngestClaim;
    let db = TestDb::on(backend).await?;
    let first = ingest("C1", b"first message");
    let first_id = first.event_id;
    assert_eq!(
        db.store.claim_ingests(std::slice::from_ref(&first)).await?,
        vec![IngestClaim::New]
    );
    // Not yet confirmed (its sender was told AR, or not answered yet): a resend is
    // published again, even re-stamped with other bytes; other content is refused.
    let resend = ingest("C1", b"first message");
    let restamped = ingest("C1", b"first message, re-stamped");
    let other = ingest_about("C1", b"another patient under the same id", "P2");
    let claims = db.store.claim_ingests(&[resend, restamped, other]).await?;
    for claim in &claims[..2] {
        assert!(
            matches!(claim, IngestClaim::NotYetPublished { event_id, .. } if *event_id == first_id),
            "{claims:?}"
        );
    }
    assert_eq!(claims[2], IngestClaim::Reused { event_id: first_id });
    // Confirmed (answered AA): the same bytes are a resend, other bytes are refused.
    db.store
        .mark_published(&[renkei_hub::store::PublishMark {
            event_id: first_id,
            audit: AuditEntry::new("adapter:test", "ingest", "accepted").event(first_id),
        }])
        .await?;
    let resend = ingest("C1", b"first message");
    let other = ingest("C1", b"another message under the same id");
    let claims = db.store.claim_ingests(&[resend, other]).await?;
    assert_eq!(
        claims,
        vec![
            IngestClaim::AlreadyPublished { event_id: first_id },
            IngestClaim::Reused { event_id: first_id }
        ]
    );
    db.drop_db().await
}

/// PostgreSQL only: SQLite holds any text, NUL included.
#[tokio::test]
async fn data_postgres_cannot_hold_is_refused_alone_in_its_batch() -> anyhow::Result<()> {
    use renkei_hub::store::batch::GroupCommit;
    use renkei_hub::store::{IngestStore, StoreError};
    use std::sync::Arc;
    let db = TestDb::new().await?;
    let store: Arc<dyn IngestStore> = db.store.clone();
    let claims = GroupCommit::spawn(16, move |batch| {
        let store = store.clone();
        Box::pin(async move { store.claim_ingests(batch).await })
    });
    // PostgreSQL text cannot hold NUL (SQLSTATE 22021), whatever the adapter let by.
    let records = [
        ingest("G1", b"good 1"),
        ingest("BAD\0", b"bad"),
        ingest("G2", b"good 2"),
    ];
    let results =
        futures_util::future::join_all(records.into_iter().map(|r| claims.submit(r))).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(&results[1], Err(StoreError::Rejected(m)) if m.contains("22021")),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let stored = db.scalar("SELECT count(*) FROM ingests").await?;
    assert_eq!(stored, 2, "both good records are stored");
    db.drop_db().await
}

/// The registry applied and one event for P-1 routed to Sakura: the event, the
/// decision, and the one delivery it made.
fn route(event: &renkei_sdk::CanonicalEvent, decision: &RouteDecision) -> RouteRequest {
    RouteRequest {
        event: event.clone(),
        decisions: vec![decision.clone()],
        audit: Vec::new(),
    }
}

/// Records one delivery's outcome; `true` when it was recorded.
async fn finish(
    store: &dyn DeliveryStore,
    id: uuid::Uuid,
    attempt: Option<renkei_hub::store::AttemptRecord>,
    next: NextState,
    audit: AuditEntry,
) -> anyhow::Result<bool> {
    let finished = store
        .finish_deliveries(&[DeliveryFinish {
            id,
            attempt,
            next,
            audit,
        }])
        .await?;
    Ok(finished == [true])
}

async fn routed_to_sakura(
    db: &TestDb,
) -> anyhow::Result<(
    renkei_sdk::CanonicalEvent,
    renkei_hub::store::RouteDecision,
    uuid::Uuid,
)> {
    use renkei_hub::store::RouteOutcome;
    db.store.apply_registry(&registry()?, "test").await?;
    let mut event = renkei_sdk::samples::minimal_event();
    event.subject = Some("P-1".into());
    let decision = RouteDecision {
        participant_id: "sakura".into(),
        endpoint_name: "main".into(),
        outcome: RouteOutcome::Deliver,
    };
    let first = db
        .store
        .commit_routes(&[route(&event, &decision)])
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no commit"))?;
    anyhow::ensure!(!first.already_routed, "{first:?}");
    let [delivery] = first.pending_deliveries[..] else {
        anyhow::bail!("one delivery expected: {first:?}");
    };
    Ok((event, decision, delivery))
}

async fn a_redelivered_event_hands_on_its_unfinished_deliveries_including_waiting_retries(
    backend: Backend,
) -> anyhow::Result<()> {
    let db = TestDb::on(backend).await?;
    let (event, decision, delivery) = routed_to_sakura(&db).await?;
    // Its first attempt failed and is waiting for a retry that may never have been
    // parked on the broker (the process died, or the broker refused it).
    finish(
        db.store.as_ref(),
        delivery,
        None,
        NextState::Retry {
            at: chrono::Utc::now() + chrono::Duration::seconds(30),
            error: "503".into(),
        },
        AuditEntry::new("test", "deliver", "retry"),
    )
    .await?;
    let again = db
        .store
        .commit_routes(&[route(&event, &decision)])
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no commit"))?;
    assert!(again.already_routed);
    assert_eq!(
        again.pending_deliveries,
        vec![delivery],
        "handed on again, not lost"
    );
    // Finished deliveries are not handed on again.
    finish(
        db.store.as_ref(),
        delivery,
        None,
        NextState::Delivered,
        AuditEntry::new("test", "deliver", "delivered"),
    )
    .await?;
    let done = db
        .store
        .commit_routes(&[route(&event, &decision)])
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no commit"))?;
    assert!(done.pending_deliveries.is_empty(), "{done:?}");
    db.drop_db().await
}

async fn a_duplicate_copy_of_a_delivery_job_finishing_second_records_nothing(
    backend: Backend,
) -> anyhow::Result<()> {
    use renkei_hub::store::AttemptRecord;
    let db = TestDb::on(backend).await?;
    let (_, _, delivery) = routed_to_sakura(&db).await?;
    let attempt = |n: i32| AttemptRecord {
        attempt: n,
        started_at: chrono::Utc::now(),
        duration_ms: 3,
        status_code: Some(503),
        error: Some("503".into()),
        outcome: "retry".into(),
    };
    // Attempt `n` failed; a retry is due in 30 s. `true` when it was recorded.
    let finish_attempt = |n: i32| {
        finish(
            db.store.as_ref(),
            delivery,
            Some(attempt(n)),
            NextState::Retry {
                at: chrono::Utc::now() + chrono::Duration::seconds(30),
                error: "503".into(),
            },
            AuditEntry::new("t", "deliver", "retry"),
        )
    };
    // Two copies of the job both made attempt 1 (a retry parked twice, say).
    let first = finish_attempt(1).await?;
    let second = finish_attempt(1).await?;
    assert!(first, "the first copy records its attempt");
    assert!(
        !second,
        "the second copy must not record or schedule anything"
    );
    // The next attempt is recorded as usual.
    assert!(finish_attempt(2).await?);
    let attempts = db
        .column("SELECT CAST(attempt AS BIGINT) FROM delivery_attempts ORDER BY attempt")
        .await?;
    assert_eq!(attempts, vec![1, 2]);
    db.drop_db().await
}

/// A source's progress is kept per source and key, the last save wins, and it outlives
/// the store that saved it (a restart reads it back).
async fn source_progress_is_kept_per_source_and_replaced_by_the_last_save(
    backend: Backend,
) -> anyhow::Result<()> {
    let db = TestDb::on(backend).await?;
    let store = db.store.as_ref();
    assert_eq!(store.load_source_state("ss-mix2", "snapshot").await?, None);
    store
        .save_source_state("ss-mix2", "snapshot", b"first")
        .await?;
    store
        .save_source_state("ss-mix2", "snapshot", b"\x00second\xff")
        .await?;
    store
        .save_source_state("drop", "snapshot", b"other")
        .await?;
    assert_eq!(
        store.load_source_state("ss-mix2", "snapshot").await?,
        Some(b"\x00second\xff".to_vec())
    );
    assert_eq!(
        store.load_source_state("drop", "snapshot").await?,
        Some(b"other".to_vec())
    );
    assert_eq!(store.load_source_state("drop", "other-key").await?, None);
    let reopened = db.reopen().await?;
    assert_eq!(
        reopened.load_source_state("ss-mix2", "snapshot").await?,
        Some(b"\x00second\xff".to_vec())
    );
    db.drop_db().await
}

/// A source key publishes as its facility and opens nothing of the admin API; an admin
/// key is no source key.
async fn a_source_key_is_not_an_admin_key_and_an_admin_key_is_no_source_key(
    backend: Backend,
) -> anyhow::Result<()> {
    use renkei_hub::store::api_key_hash;
    let db = TestDb::on(backend).await?;
    let store = db.store.as_ref();
    let source = api_key_hash("rk_source");
    let admin = api_key_hash("rk_admin");
    store
        .create_source_key("his-a", "1319999999", &source)
        .await?;
    store.create_api_key("ops", &admin).await?;
    assert_eq!(
        store.find_source_key(&source).await?.as_deref(),
        Some("1319999999")
    );
    assert_eq!(store.find_api_key(&source).await?, None);
    assert_eq!(store.find_source_key(&admin).await?, None);
    assert!(store.find_api_key(&admin).await?.is_some());
    assert_eq!(
        store.find_source_key(&api_key_hash("rk_other")).await?,
        None
    );
    db.drop_db().await
}

/// Refused inputs are listed newest first by source and replay state, read back with
/// their exact bytes, and marked replayed once (audited); a second mark records nothing.
async fn a_refused_input_is_listed_read_back_and_marked_replayed_once(
    backend: Backend,
) -> anyhow::Result<()> {
    use renkei_hub::store::{RejectedFilter, Rejection};
    let db = TestDb::on(backend).await?;
    let store = db.store.as_ref();
    let bytes: &[u8] = b"MSH|^~\\&|\x00\xff";
    let kept = |adapter, raw| Rejection {
        adapter,
        peer: "127.0.0.1:5000",
        location: Some("MSH-9"),
        reason: "unknown trigger",
        raw,
    };
    let first = store.record_rejection(kept("mllp", bytes)).await?;
    let second = store.record_rejection(kept("fhir", b"{}")).await?;
    let all = store.list_rejected(&RejectedFilter::default()).await?;
    let ids: Vec<_> = all.iter().map(|r| r.id).collect();
    assert_eq!(ids, [second, first], "newest first");
    let mllp = store
        .list_rejected(&RejectedFilter {
            source: Some("mllp".into()),
            ..RejectedFilter::default()
        })
        .await?;
    assert_eq!(mllp.len(), 1);
    assert_eq!(mllp[0].raw_bytes, i64::try_from(bytes.len())?);
    assert_eq!(mllp[0].location.as_deref(), Some("MSH-9"));
    let read = store.rejected_input(first).await?;
    assert_eq!(read.map(|r| r.raw), Some(bytes.to_vec()));
    assert_eq!(store.rejected_input(uuid::Uuid::now_v7()).await?, None);

    let event = uuid::Uuid::now_v7();
    assert!(store.mark_rejected_replayed(first, event, "cli").await?);
    assert!(
        !store
            .mark_rejected_replayed(first, uuid::Uuid::now_v7(), "cli")
            .await?
    );
    let replayed = store
        .list_rejected(&RejectedFilter {
            replayed: Some(true),
            ..RejectedFilter::default()
        })
        .await?;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].replayed_event, Some(event));
    let open = store
        .list_rejected(&RejectedFilter {
            replayed: Some(false),
            ..RejectedFilter::default()
        })
        .await?;
    assert_eq!(open.iter().map(|r| r.id).collect::<Vec<_>>(), [second]);
    renkei_hub::store::seal_all(store).await?;
    let audited = db
        .scalar("SELECT count(*) FROM audit_log WHERE action = 'rejected.replay'")
        .await?;
    assert_eq!(audited, 1, "the replay is audited once");
    db.drop_db().await
}

/// One test per case and backend: `postgres::<case>` and `sqlite::<case>`.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test]
            async fn $case() -> anyhow::Result<()> {
                super::$case(super::Backend::Postgres).await
            })*
        }
        mod sqlite {
            $(#[tokio::test]
            async fn $case() -> anyhow::Result<()> {
                super::$case(super::Backend::Sqlite).await
            })*
        }
    };
}

contract!(
    registry_apply_is_idempotent_and_reports_changes,
    exported_endpoint_urls_never_show_credentials,
    identifier_owned_by_another_patient_is_refused_and_nothing_is_applied,
    reference_to_an_undeclared_facility_names_the_resource,
    patient_is_resolved_by_any_facility_local_identifier,
    audit_chain_verifies_and_finds_altered_and_removed_rows,
    example_registry_applies,
    a_reused_message_id_with_other_bytes_is_told_apart_from_a_resend,
    a_redelivered_event_hands_on_its_unfinished_deliveries_including_waiting_retries,
    a_duplicate_copy_of_a_delivery_job_finishing_second_records_nothing,
    source_progress_is_kept_per_source_and_replaced_by_the_last_save,
    a_source_key_is_not_an_admin_key_and_an_admin_key_is_no_source_key,
    a_refused_input_is_listed_read_back_and_marked_replayed_once,
);
