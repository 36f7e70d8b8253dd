//! PostgreSQL implementation of the store traits (sqlx, migrations embedded), one file
//! per concern: [`ingest`], [`route`], [`delivery`], [`admin`] (registry, keys, reads)
//! and [`audit`] (appending and sealing the chain). The rules they store the outcome
//! of live in the parent module; this module holds only the SQL.

mod admin;
mod audit;
mod delivery;
mod ingest;
mod route;

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool, Row};

use super::StoreError;
use crate::registry::Consent;

/// The migrations compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

/// Whether PostgreSQL refused the data itself: a data exception (class 22: a NUL in
/// text, a value out of range…) or a program limit (class 54: an index key too long).
pub(super) fn is_data_fault(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.code()
        .is_some_and(|code| code.starts_with("22") || code.starts_with("54"))
}

/// Every consent of the given patients (duplicates allowed), in one read, by patient.
async fn consents_of_many(
    conn: &mut PgConnection,
    patients: &[impl AsRef<str> + Sync],
) -> Result<HashMap<String, Vec<Consent>>, StoreError> {
    let mut consents: HashMap<String, Vec<Consent>> = HashMap::new();
    if patients.is_empty() {
        return Ok(consents);
    }
    let patients: Vec<&str> = patients.iter().map(AsRef::as_ref).collect();
    // Each patient looked up on its own (see `PgStore::connect`): a read whose cost
    // does not depend on how many consents the region has.
    let rows = sqlx::query(
        "SELECT c.id, c.patient_id, c.scope, c.facilities, c.basis, c.valid_from, c.valid_until, c.withdrawn_at
         FROM (SELECT DISTINCT p FROM UNNEST($1::text[]) AS u(p)) AS u
         CROSS JOIN LATERAL (SELECT * FROM consents c WHERE c.patient_id = u.p OFFSET 0) AS c
         ORDER BY c.patient_id, c.id",
    )
    .bind(&patients)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let consent = consent_from_row(row)?;
        consents
            .entry(consent.patient.clone())
            .or_default()
            .push(consent);
    }
    Ok(consents)
}

impl PgStore {
    /// Connects (lazily retrying inside the pool) and applies pending migrations.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("bad database URL: {e}")))?;
        // Every statement on the hub's hot paths is written to be served by an index,
        // one key at a time (lateral lookups, `= ANY` on a unique key). With sequential
        // scans priced out, PostgreSQL keeps it so whatever its statistics say — none on
        // a server without autovacuum, or a table analysed while nearly empty — and
        // whatever plan it cached while the tables were small: an event costs the same
        // after a year of history as on the first day. A statement no index can serve
        // still scans; none on the hot paths needs to.
        let options = options.options([("enable_seqscan", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))
    }

    /// The pool (for health checks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Statement parameters above this size make a connection shrink its buffers after
/// the statement.
const LARGE_STATEMENT_BYTES: usize = 1024 * 1024;

/// A connection keeps the buffers its largest statement needed; after one of large
/// messages (a batch of 1 MB inputs, say), every pooled connection would hold tens of
/// megabytes for good. This gives them back.
fn shrink_after_large(conn: &mut PgConnection, bound_bytes: usize) {
    if bound_bytes > LARGE_STATEMENT_BYTES {
        conn.shrink_buffers();
    }
}

fn consent_from_row(row: &sqlx::postgres::PgRow) -> Result<Consent, StoreError> {
    Ok(Consent {
        id: row.try_get("id")?,
        patient: row.try_get("patient_id")?,
        scope: super::consent_scope(row.try_get("scope")?)?,
        facilities: row.try_get("facilities")?,
        basis: super::consent_basis(row.try_get("basis")?)?,
        valid_from: row.try_get("valid_from")?,
        valid_until: row.try_get("valid_until")?,
        withdrawn_at: row.try_get("withdrawn_at")?,
    })
}
