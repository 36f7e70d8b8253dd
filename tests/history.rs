//! A long history, written straight into a hub database: what a region has after a
//! year (events, their deliveries and attempts, ingests, patients with identifiers,
//! consents and care relationships), so tests and the benchmark can show that the
//! hub's work per event does not grow with it.

/// The SQL that appends `events` past events to a hub database whose registry already
/// has `participants` (each with an endpoint named `main`): every event delivered to
/// every participant with one attempt, one ingest row per event, and one patient per
/// ten events (identifier, blanket consent, a care relationship with each
/// participant). Ids never collide with the hub's (`hist-` patients, UUIDs from a
/// hash, negative delivery sequence numbers). Statements, in order.
pub fn history_sql(events: usize, participants: &[&str]) -> Vec<String> {
    let patients = events.div_ceil(10).max(1);
    let list = participants
        .iter()
        .map(|p| format!("'{}'", p.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        format!(
            "INSERT INTO patients (id) SELECT 'hist-' || g FROM generate_series(1, {patients}) g"
        ),
        format!(
            "INSERT INTO patient_identifiers (system, value, patient_id)
             SELECT 'urn:renkei:history', 'hist-' || g, 'hist-' || g FROM generate_series(1, {patients}) g"
        ),
        format!(
            "INSERT INTO consents (id, patient_id, scope, basis, valid_from)
             SELECT 'hist-' || g, 'hist-' || g, 'blanket', 'written', '2020-01-01T00:00:00Z'
             FROM generate_series(1, {patients}) g"
        ),
        format!(
            "INSERT INTO care_relationships (patient_id, participant_id, role, valid_from)
             SELECT 'hist-' || g, p, 'care_manager', '2020-01-01'
             FROM generate_series(1, {patients}) g, unnest(ARRAY[{list}]::text[]) p"
        ),
        format!(
            "INSERT INTO events (id, event_type, source, time, patient_id, body)
             SELECT md5('event-' || g)::uuid, 'inpatient.admitted', 'urn:renkei:history',
                    now() - interval '1 minute' * g, 'hist-' || (g % {patients} + 1),
                    json_build_object('id', md5('event-' || g)::uuid, 'history', true)
             FROM generate_series(1, {events}) g"
        ),
        format!(
            "INSERT INTO ingests (source_key, message_id, event_id, event_type, raw_sha256, raw, event, published_at)
             SELECT 'history', 'hist-' || g, md5('event-' || g)::uuid, 'inpatient.admitted',
                    md5('raw-' || g), convert_to('MSH|history ' || g, 'UTF8'),
                    json_build_object('history', g), now() - interval '1 minute' * g
             FROM generate_series(1, {events}) g"
        ),
        format!(
            "INSERT INTO deliveries (id, event_id, participant_id, endpoint_name, sequence, status, attempts)
             SELECT md5('delivery-' || g || '-' || p)::uuid, md5('event-' || g)::uuid, p, 'main', -g,
                    'delivered', 1
             FROM generate_series(1, {events}) g, unnest(ARRAY[{list}]::text[]) p"
        ),
        format!(
            "INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome)
             SELECT md5('delivery-' || g || '-' || p)::uuid, 1, now() - interval '1 minute' * g, 3, 204,
                    'delivered'
             FROM generate_series(1, {events}) g, unnest(ARRAY[{list}]::text[]) p"
        ),
    ]
}

/// The tables [`history_sql`] fills, whose reads must not grow with it.
pub const HISTORY_TABLES: &[&str] = &[
    "patients",
    "patient_identifiers",
    "consents",
    "care_relationships",
    "events",
    "ingests",
    "deliveries",
    "delivery_attempts",
];

/// Per table of the current database: rows read by sequential scans, rows fetched
/// through indexes and rows inserted, as PostgreSQL's statistics have them (a backend
/// reports its counts when it goes idle for a while or exits).
pub const TABLE_READS_SQL: &str = "SELECT relname::text, seq_scan, seq_tup_read, \
     COALESCE(idx_tup_fetch, 0) AS idx_tup_fetch, n_tup_ins FROM pg_stat_user_tables";
