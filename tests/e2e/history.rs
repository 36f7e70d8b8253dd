//! The hub's work per event does not grow with the history behind it: a hub whose
//! database connections (and the plans PostgreSQL cached on them) were made while its
//! tables were nearly empty keeps reading only the rows each event needs after a long
//! history lands under it, whatever statistics the server has (none, here: tables the
//! hub never saw analysed).

use std::collections::BTreeMap;

use renkei_e2e::history::{HISTORY_TABLES, TABLE_READS_SQL, history_sql};
use sqlx::{Connection, Executor, PgConnection, Row};

use crate::harness::{Env, Roles};
use crate::mllp::{MllpClient, conformance, send_accepted, with_control_id};
use crate::receiver::Receiver;
use crate::registry::{OFFICE, single_office};
use crate::spine::acknowledged;

const HISTORY_EVENTS: usize = 100_000;

/// One table's counters.
#[derive(Debug, Clone, Copy, Default)]
struct Reads {
    seq_scans: i64,
    seq_rows: i64,
    index_rows: i64,
    inserted: i64,
}

async fn table_reads(env: &Env) -> anyhow::Result<BTreeMap<String, Reads>> {
    let mut reads = BTreeMap::new();
    for row in sqlx::query(TABLE_READS_SQL).fetch_all(&env.db).await? {
        reads.insert(
            row.try_get::<String, _>("relname")?,
            Reads {
                seq_scans: row.try_get("seq_scan")?,
                seq_rows: row.try_get("seq_tup_read")?,
                index_rows: row.try_get("idx_tup_fetch")?,
                inserted: row.try_get("n_tup_ins")?,
            },
        );
    }
    Ok(reads)
}

/// Waits until PostgreSQL's statistics show at least `attempts` delivery attempts
/// inserted: every backend that made them has reported its counts.
async fn reported(env: &Env, attempts: usize) -> anyhow::Result<BTreeMap<String, Reads>> {
    let wanted = i64::try_from(attempts)?;
    env.eventually(
        &format!("{attempts} delivery attempts in the statistics"),
        || async {
            let reads = table_reads(env).await?;
            let inserted = reads.get("delivery_attempts").map_or(0, |r| r.inserted);
            Ok((inserted >= wanted).then_some(reads))
        },
    )
    .await
}

async fn admit_many(env: &Env, receiver: &Receiver, from: usize, n: usize) -> anyhow::Result<()> {
    let admit = conformance("hl7/a01_admit_iso2022jp.hl7")?;
    let mut mllp = MllpClient::connect(env.mllp).await?;
    for i in from..from + n {
        send_accepted(&mut mllp, &with_control_id(&admit, &format!("HIST-{i}"))?).await?;
    }
    acknowledged(env, receiver, from + n).await?;
    Ok(())
}

#[tokio::test]
async fn work_per_event_does_not_grow_with_a_long_history() -> anyhow::Result<()> {
    let env = Env::new().await?;
    let receiver = Receiver::start().await?;
    single_office(&env, &receiver).await?;
    env.start_hub(Roles::All).await?;

    // Warm: every hot statement has run many times on small tables.
    let warm = 60;
    admit_many(&env, &receiver, 0, warm).await?;

    // A long history lands under the running hub.
    let mut conn = PgConnection::connect(&env.db_url).await?;
    for statement in history_sql(HISTORY_EVENTS, &[OFFICE]) {
        conn.execute(sqlx::AssertSqlSafe(statement)).await?;
    }
    conn.close().await?;
    let before = reported(&env, HISTORY_EVENTS).await?;

    let measured = 100;
    admit_many(&env, &receiver, warm, measured).await?;
    // Every attempt recorded, then the database sessions end with the process and
    // report what they read.
    let attempts = i64::try_from(HISTORY_EVENTS + warm + measured)?;
    env.eventually("every attempt recorded", || async {
        let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_attempts")
            .fetch_one(&env.db)
            .await?;
        Ok((recorded >= attempts).then_some(()))
    })
    .await?;
    env.kill_hubs();
    let after = reported(&env, HISTORY_EVENTS + warm + measured).await?;

    let mut rows_read = 0;
    let mut whole_reads = Vec::new();
    for (table, a) in &after {
        let b = before.get(table).copied().unwrap_or_default();
        let (seq_rows, index_rows) = (a.seq_rows - b.seq_rows, a.index_rows - b.index_rows);
        rows_read += seq_rows + index_rows;
        eprintln!(
            "history: {table}: {} sequential scans reading {seq_rows} rows, {index_rows} rows by index",
            a.seq_scans - b.seq_scans
        );
        // The smallest history table has a tenth of the events' rows: reading that many
        // from any of them (in a scan, or through a whole index) is reading it whole.
        if HISTORY_TABLES.contains(&table.as_str())
            && seq_rows + index_rows >= i64::try_from(HISTORY_EVENTS / 10)?
        {
            whole_reads.push(format!(
                "{table} ({seq_rows} rows read sequentially, {index_rows} by index)"
            ));
        }
    }
    eprintln!(
        "history: {:.1} rows read per event over {measured} events after {HISTORY_EVENTS} events of history",
        rows_read as f64 / measured as f64
    );
    assert!(
        whole_reads.is_empty(),
        "events after a long history read whole tables: {}",
        whole_reads.join(", ")
    );
    Ok(())
}
