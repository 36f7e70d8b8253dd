//! One client cannot shut out every EHR: a flood of idle connections from one address
//! is held to that address's share of the listener, another sender that connects per
//! message gets in at its first try while the flood holds its connections, the flood's
//! silent connections are closed after the handshake window, and the refusals are
//! logged as a few counted lines, not one line each.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::harness::{DEADLINE, Env, Roles};
use crate::mllp::{MllpClient, conformance, send_accepted, tcp_from, with_control_id};

/// Connections the flood opens, as in the report that found the defect.
const FLOOD: usize = 2000;

/// Whether the hub has closed `stream` (without waiting).
fn closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[tokio::test]
async fn a_flood_of_idle_connections_from_one_address_does_not_shut_out_another_sender()
-> anyhow::Result<()> {
    // The shipped limits (1,024 connections, 64 per sender), with a handshake window
    // long enough that the flood surely holds its connections while the other
    // sender is served on a loaded machine.
    let env = Env::with_settings(&[("RENKEI__SOURCES__MLLP__HANDSHAKE_TIMEOUT", "15s")]).await?;
    env.start_hub(Roles::MllpOnly).await?;

    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        flood.push(tcp_from("127.0.0.1", env.mllp).await?);
    }
    // The hub keeps one sender's share and closes the rest as they are accepted.
    let held = env
        .eventually("the flood held to one sender's share", || async {
            let open = flood.iter().filter(|s| !closed(s)).count();
            Ok((open <= 64).then_some(open))
        })
        .await?;
    anyhow::ensure!(
        held > 0,
        "the flood should hold its share while it is silent"
    );

    // Another sender, one connection per message: in at its first try, every time.
    let admit = conformance("hl7/a01_admit_iso2022jp.hl7")?;
    for i in 0..5 {
        let mut client = MllpClient::connect_from("127.0.0.2", env.mllp).await?;
        send_accepted(
            &mut client,
            &with_control_id(&admit, &format!("FLOOD-OK{i}"))?,
        )
        .await?;
    }
    anyhow::ensure!(
        flood.iter().filter(|s| !closed(s)).count() == held,
        "the flood's connections were closed before the other sender was served; the test proves nothing"
    );

    // The silent connections go when the handshake window ends, long before the
    // 10-minute idle timeout.
    for stream in &mut flood {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await {
            Err(_) => anyhow::bail!("a silent connection is still open after {DEADLINE:?}"),
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(n)) => anyhow::bail!("the hub sent {n} bytes to a silent connection"),
        }
    }

    let logs = env.hub_logs();
    let lines = logs
        .lines()
        .filter(|l| l.contains("MLLP connections refused"))
        .count();
    anyhow::ensure!(
        (1..=6).contains(&lines),
        "{} refusals should make a few counted log lines, not {lines}:\n{logs}",
        FLOOD - held
    );
    Ok(())
}
