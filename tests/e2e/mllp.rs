//! A small MLLP sender (what an EHR's interface engine does): frames a message as
//! `0x0B message 0x1C 0x0D`, reads the framed ACK and picks out `MSA-1`, `MSA-2` and
//! the `ERR` segment. Also the conformance messages, and variants of them with another
//! control id (`MSH-10`).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::DEADLINE;

const START: u8 = 0x0b;
const END: [u8; 2] = [0x1c, 0x0d];

/// The shared conformance inputs (`/work/shared/conformance` next to the repository).
pub fn conformance_dir() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    anyhow::ensure!(
        dir.join("hl7").is_dir(),
        "the conformance inputs are missing: expected {}",
        dir.display()
    );
    Ok(dir)
}

/// A conformance file's bytes, e.g. `hl7/a01_admit_iso2022jp.hl7`.
pub fn conformance(file: &str) -> anyhow::Result<Vec<u8>> {
    let path = conformance_dir()?.join(file);
    std::fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// The fields of the `MSH` segment, split on `|` (bytes: the segment may follow an
/// ISO-2022-JP declaration, but `MSH` itself is ASCII). `fields[n - 1]` is `MSH-n`.
fn msh_fields(raw: &[u8]) -> anyhow::Result<(Vec<&[u8]>, usize)> {
    let end = raw
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')
        .unwrap_or(raw.len());
    let msh = &raw[..end];
    anyhow::ensure!(msh.starts_with(b"MSH|"), "not an HL7 v2 message");
    Ok((msh.split(|b| *b == b'|').collect(), end))
}

/// `MSH-10`, the message control id.
pub fn control_id(raw: &[u8]) -> anyhow::Result<String> {
    let (fields, _) = msh_fields(raw)?;
    let id = fields
        .get(9)
        .ok_or_else(|| anyhow::anyhow!("MSH has no MSH-10"))?;
    Ok(String::from_utf8(id.to_vec())?)
}

/// The same message with another `MSH-10`; every other byte is kept (only the ASCII
/// `MSH` segment is touched, so ISO-2022-JP segments after it stay intact).
pub fn with_control_id(raw: &[u8], id: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(id.is_ascii() && !id.contains(['|', '^', '~', '\\', '&']));
    let (mut fields, end) = msh_fields(raw)?;
    anyhow::ensure!(fields.len() > 9, "MSH has no MSH-10");
    fields[9] = id.as_bytes();
    let mut out = fields.join(&b'|');
    out.extend_from_slice(&raw[end..]);
    Ok(out)
}

/// An acknowledgement as the sender reads it.
#[derive(Debug, Clone)]
pub struct Ack {
    /// `MSA-1`: `AA`, `AE` or `AR`.
    pub code: String,
    /// `MSA-2`: the control id of the message acknowledged.
    pub control_id: String,
    /// The `ERR` segment, if any.
    pub err: Option<String>,
    /// The whole ACK (lossy text; MSA and ERR are ASCII).
    pub text: String,
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text.replace('\r', "\n"))
    }
}

impl Ack {
    fn parse(frame: &[u8]) -> anyhow::Result<Self> {
        let text = String::from_utf8_lossy(frame).into_owned();
        let segment = |name: &str| {
            text.split(['\r', '\n'])
                .find(|s| s.starts_with(&format!("{name}|")))
                .map(str::to_owned)
        };
        let msa = segment("MSA").ok_or_else(|| anyhow::anyhow!("ACK without MSA: {text:?}"))?;
        let fields: Vec<&str> = msa.split('|').collect();
        Ok(Self {
            code: fields.get(1).copied().unwrap_or("").to_owned(),
            control_id: fields.get(2).copied().unwrap_or("").to_owned(),
            err: segment("ERR"),
            text,
        })
    }
}

/// One MLLP connection.
pub struct MllpClient {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl MllpClient {
    /// Connects.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow::anyhow!("MLLP connect to {addr} timed out"))??;
        Ok(Self {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Connects from the loopback address `source` (another address is another
    /// sender to the hub).
    pub async fn connect_from(source: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            stream: tcp_from(source, addr).await?,
            buffer: Vec::new(),
        })
    }

    /// Sends one message and waits for its ACK.
    pub async fn send(&mut self, message: &[u8]) -> anyhow::Result<Ack> {
        let mut frame = Vec::with_capacity(message.len() + 3);
        frame.push(START);
        frame.extend_from_slice(message);
        frame.extend_from_slice(&END);
        self.stream.write_all(&frame).await?;
        tokio::time::timeout(DEADLINE, self.read_frame())
            .await
            .map_err(|_| anyhow::anyhow!("no ACK within {DEADLINE:?}"))?
    }

    async fn read_frame(&mut self) -> anyhow::Result<Ack> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == END) {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let body = &frame[..end];
                let start = body
                    .iter()
                    .position(|b| *b == START)
                    .ok_or_else(|| anyhow::anyhow!("ACK frame without 0x0B"))?;
                return Ack::parse(&body[start + 1..]);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            anyhow::ensure!(n > 0, "the hub closed the MLLP connection before the ACK");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A TCP connection to `addr` from the loopback address `source`.
pub async fn tcp_from(source: &str, addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    tokio::time::timeout(DEADLINE, socket.connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connect to {addr} from {source} timed out"))?
        .map_err(Into::into)
}

/// Sends on one connection and requires `AA` acknowledging this message.
pub async fn send_accepted(client: &mut MllpClient, message: &[u8]) -> anyhow::Result<Ack> {
    let ack = client.send(message).await?;
    anyhow::ensure!(ack.code == "AA", "expected AA, got:\n{ack}");
    anyhow::ensure!(
        ack.control_id == control_id(message)?,
        "MSA-2 does not name the message sent:\n{ack}"
    );
    Ok(ack)
}

/// What a sender does when told `AR`: sends again (on a new connection if the old one
/// broke) until the message is accepted; fails on `AE` or after [`DEADLINE`].
pub async fn send_until_accepted(addr: SocketAddr, message: &[u8]) -> anyhow::Result<Ack> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut last;
    loop {
        match MllpClient::connect(addr).await {
            Ok(mut client) => loop {
                match client.send(message).await {
                    Ok(ack) if ack.code == "AA" => return Ok(ack),
                    Ok(ack) if ack.code == "AR" => last = ack.to_string(),
                    Ok(ack) => anyhow::bail!("the hub refused the message for good:\n{ack}"),
                    Err(e) => {
                        last = e.to_string();
                        break;
                    }
                }
                if tokio::time::Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            },
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("not accepted within {DEADLINE:?}; last answer: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_id_is_replaced_without_touching_other_bytes() -> anyhow::Result<()> {
        let raw = conformance("hl7/a01_admit_iso2022jp.hl7")?;
        assert_eq!(control_id(&raw)?, "20250410000123");
        let variant = with_control_id(&raw, "E2E0001")?;
        assert_eq!(control_id(&variant)?, "E2E0001");
        let original = raw.len() - "20250410000123".len();
        assert_eq!(variant.len() - "E2E0001".len(), original);
        assert_eq!(with_control_id(&variant, "20250410000123")?, raw);
        Ok(())
    }

    #[test]
    fn ack_fields_are_read() -> anyhow::Result<()> {
        let ack = Ack::parse(
            b"MSH|^~\\&|RENKEI|HUB|HIS01|1319999999|20250410093015+0900||ACK^Z99^ACK|RK1|P|2.5\rMSA|AE|20250410000999\rERR||MSH^1^9|201^Unsupported event code^HL70357|E|||Z99 is not handled\r",
        )?;
        assert_eq!(ack.code, "AE");
        assert_eq!(ack.control_id, "20250410000999");
        assert!(ack.err.as_deref().is_some_and(|e| e.contains("Z99")));
        Ok(())
    }
}
