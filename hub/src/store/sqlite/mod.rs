//! SQLite implementation of the store traits: the embedded default, one file, no
//! server. The same tables and rules as [`super::pg`], in SQLite's types
//! (`migrations/sqlite`), one file per concern like the PostgreSQL backend.
//!
//! Every write goes through one connection (`BEGIN IMMEDIATE`, so a transaction never
//! has to upgrade its lock halfway), which serialises writers the way PostgreSQL's row
//! locks do; reads use a pool of their own and, in WAL mode, never wait for the writer.
//! `synchronous = FULL`: a commit is on disk before it returns, so what the hub
//! acknowledged survives a crash or a power cut.

mod admin;
mod audit;
mod delivery;
mod ingest;
mod route;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, SqliteConnection, Transaction};

use super::{StoreError, corrupt};
use crate::registry::Consent;

/// The migrations compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another process's write (`renkei admin apply` while
/// the hub runs) before it reports the database busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
    path: PathBuf,
}

/// Whether SQLite refused the data itself: too big (`SQLITE_TOOBIG`), of the wrong
/// type for a STRICT column (`SQLITE_MISMATCH`), or out of range (`SQLITE_RANGE`).
pub(super) fn is_data_fault(db: &dyn sqlx::error::DatabaseError) -> bool {
    // Extended result codes keep the primary code in their low byte.
    db.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 18 | 20 | 25))
}

/// The options of a database URL (`sqlite://path` or `sqlite:path`).
fn url_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("bad database URL `{url}`: {e}")))
}

/// The file a database URL names.
pub fn database_path(url: &str) -> Result<PathBuf, StoreError> {
    Ok(url_options(url)?.get_filename().to_path_buf())
}

/// The file a database URL names, with its folder created if missing.
pub fn database_file(url: &str) -> Result<PathBuf, StoreError> {
    let path = database_path(url)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create the folder of {}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(path)
}

impl SqliteStore {
    /// Opens (creating it if missing) the database file `url` names (`sqlite://path`
    /// or `sqlite:path`), applies pending migrations, and keeps at most
    /// `max_connections` readers; a statement waits at most `acquire_timeout` for a
    /// connection.
    pub async fn open(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let path = database_file(url)?;
        let options = url_options(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(acquire_timeout)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(|e| open_error(&path, e))?;
        MIGRATOR
            .run(&write)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        let read = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_with(options.read_only(true))
            .await
            .map_err(|e| open_error(&path, e))?;
        Ok(Self { write, read, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The one writing connection's pool: whoever else writes to the same file in this
    /// process (the embedded bus) should write through it too.
    pub fn writer(&self) -> &SqlitePool {
        &self.write
    }

    /// A write transaction that holds the file's write lock from its first statement.
    async fn begin(&self) -> Result<Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }
}

fn open_error(path: &Path, e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
}

/// Appends `(?, ?, …)` binding each item: a list for `IN`.
fn push_list<T>(query: &mut QueryBuilder<sqlx::Sqlite>, items: impl IntoIterator<Item = T>)
where
    T: for<'t> sqlx::Encode<'t, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    query.push("(");
    let mut list = query.separated(", ");
    for item in items {
        list.push_bind(item);
    }
    query.push(")");
}

/// A JSON array column as a list of strings.
fn string_list(row: &SqliteRow, column: &str) -> Result<Vec<String>, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(column, e))
}

/// A list of strings as a JSON array column.
fn json_list(items: &[String]) -> String {
    serde_json::Value::from(items).to_string()
}

fn consent_from_row(row: &SqliteRow) -> Result<Consent, StoreError> {
    Ok(Consent {
        id: row.try_get("id")?,
        patient: row.try_get("patient_id")?,
        scope: super::consent_scope(row.try_get("scope")?)?,
        facilities: string_list(row, "facilities")?,
        basis: super::consent_basis(row.try_get("basis")?)?,
        valid_from: row.try_get("valid_from")?,
        valid_until: row.try_get("valid_until")?,
        withdrawn_at: row.try_get("withdrawn_at")?,
    })
}

/// Every consent of the given patients, by patient.
async fn consents_of_many(
    conn: &mut SqliteConnection,
    patients: &[impl AsRef<str> + Sync],
) -> Result<HashMap<String, Vec<Consent>>, StoreError> {
    let mut consents: HashMap<String, Vec<Consent>> = HashMap::new();
    for patient in patients {
        let patient = patient.as_ref();
        if consents.contains_key(patient) {
            continue;
        }
        let rows = sqlx::query(
            "SELECT id, patient_id, scope, facilities, basis, valid_from, valid_until, withdrawn_at
             FROM consents WHERE patient_id = ? ORDER BY id",
        )
        .bind(patient)
        .fetch_all(&mut *conn)
        .await?;
        let list = rows
            .iter()
            .map(consent_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        consents.insert(patient.to_owned(), list);
    }
    Ok(consents)
}
