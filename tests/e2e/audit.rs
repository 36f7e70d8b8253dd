//! The audit log is tamper-evident: `renkei audit verify` finds an altered row and a
//! removed one, and names them.

use sqlx::Executor;

use crate::harness::Env;

#[tokio::test]
async fn audit_verify_finds_altered_and_removed_rows() -> anyhow::Result<()> {
    let env = Env::new().await?;
    // The hub's receiver and connection are kept open until the end of the test.
    let _hub = crate::spine::one_office_after_an_admission(&env).await?;
    // registry.apply, ingest, route, deliver.
    let head: i64 = env
        .eventually("the four rows of the traffic", || async {
            let head: i64 = sqlx::query_scalar("SELECT seq FROM audit_head")
                .fetch_one(&env.db)
                .await?;
            Ok((head >= 4).then_some(head))
        })
        .await?;
    env.kill_hubs();

    let intact = env.renkei(&["audit", "verify"]).await?;
    assert!(intact.status.success(), "before tampering: {intact}");

    // Someone with direct database access (who can get past the append-only trigger)
    // rewrites the routing decision and removes the record of the ingest.
    let db = &env.db;
    let seq_of = |action: &'static str| async move {
        sqlx::query_scalar::<_, i64>("SELECT seq FROM audit_log WHERE action = $1")
            .bind(action)
            .fetch_one(db)
            .await
    };
    let (altered, removed) = (seq_of("route").await?, seq_of("ingest").await?);
    assert!(
        removed < head,
        "not the last row: that would be a truncation"
    );
    let mut conn = env.db.acquire().await?;
    conn.execute("SET session_replication_role = replica")
        .await?;
    sqlx::query("UPDATE audit_log SET outcome = 'denied_by_consent' WHERE seq = $1")
        .bind(altered)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(removed)
        .execute(&mut *conn)
        .await?;
    conn.execute("RESET session_replication_role").await?;
    drop(conn);

    let broken = env.renkei(&["audit", "verify"]).await?;
    assert!(
        !broken.status.success(),
        "tampering went unnoticed: {broken}"
    );
    assert!(
        broken
            .stdout
            .contains(&format!("audit row {altered} was altered")),
        "the altered row is not named: {broken}"
    );
    assert!(
        broken.stdout.contains(&format!("expected seq {removed}")),
        "the removed row is not named: {broken}"
    );
    Ok(())
}
