//! A minimal MLLP sender: sends one message at a time on a connection and reads the
//! acknowledgement. `renkei send` uses it to let hospital IT try a feed against the
//! hub, and the benchmark uses it as the EHR.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::mllp::{MllpCodec, MllpError};
use crate::parse::Message;

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// `MSA-1`: `AA`, `AE`, `AR` (or `CA`, `CE`, `CR`).
    pub code: String,
    /// `MSA-2`: the control id of the message acknowledged.
    pub control_id: String,
    /// The explanation: `ERR-8` (user message) or `ERR-7` (diagnostic information)
    /// when present, else `MSA-3`.
    pub text: Option<String>,
    /// The acknowledgement as received.
    pub raw: Vec<u8>,
}

impl Ack {
    /// The message was accepted (`AA` or `CA`).
    pub fn accepted(&self) -> bool {
        matches!(self.code.as_str(), "AA" | "CA")
    }

    /// Reads an acknowledgement message.
    pub fn parse(raw: &[u8]) -> Result<Self, ClientError> {
        let decoded = crate::charset::decode(raw)
            .map_err(|e| ClientError::BadAck(format!("cannot decode: {e}")))?;
        let message = Message::parse(&decoded.text)
            .map_err(|e| ClientError::BadAck(format!("cannot parse: {e}")))?;
        let msa = message
            .segment("MSA")
            .ok_or_else(|| ClientError::BadAck("no MSA segment".into()))?;
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let text = message
            .segment("ERR")
            .and_then(|err| {
                nonempty(err.field(8).value().into_owned())
                    .or_else(|| nonempty(err.field(7).value().into_owned()))
            })
            .or_else(|| nonempty(msa.field(3).value().into_owned()));
        Ok(Self {
            code: msa.field(1).value().into_owned(),
            control_id: msa.field(2).value().into_owned(),
            text,
            raw: raw.to_vec(),
        })
    }
}

/// Why a send did not get an acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Cannot connect, or the connection broke.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// Framing.
    #[error("{0}")]
    Mllp(#[from] MllpError),
    /// The receiver closed the connection before answering.
    #[error("the receiver closed the connection without an acknowledgement")]
    Closed,
    /// No answer in time.
    #[error("no acknowledgement within {0:?}")]
    Timeout(Duration),
    /// The answer is not an acknowledgement.
    #[error("the answer is not an HL7 acknowledgement: {0}")]
    BadAck(String),
}

/// One MLLP connection.
pub struct MllpClient {
    framed: Framed<TcpStream, MllpCodec>,
    timeout: Duration,
}

impl MllpClient {
    /// Connects; each send waits at most `timeout` for its acknowledgement.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            framed: Framed::new(stream, MllpCodec::default()),
            timeout,
        })
    }

    /// Sends one message (without MLLP framing) and returns its acknowledgement.
    pub async fn send(&mut self, message: &[u8]) -> Result<Ack, ClientError> {
        self.framed.send(message).await?;
        match tokio::time::timeout(self.timeout, self.framed.next()).await {
            Err(_) => Err(ClientError::Timeout(self.timeout)),
            Ok(None) => Err(ClientError::Closed),
            Ok(Some(frame)) => Ack::parse(&frame?),
        }
    }
}

/// Strips MLLP framing bytes and surrounding blank lines from a message file, and
/// turns LF or CRLF segment ends into CR, so a message saved by an editor can be sent.
pub fn message_from_file(bytes: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let start = bytes
            .iter()
            .position(|&b| !matches!(b, 0x0b | b'\r' | b'\n' | b' ' | b'\t'))
            .unwrap_or(bytes.len());
        let end = bytes
            .iter()
            .rposition(|&b| !matches!(b, 0x1c | b'\r' | b'\n' | b' ' | b'\t'))
            .map_or(start, |i| i + 1);
        bytes.get(start..end.max(start)).unwrap_or_default()
    };
    let mut out = Vec::with_capacity(trimmed.len() + 1);
    let mut i = 0;
    while let Some(&b) = trimmed.get(i) {
        match b {
            b'\r' if trimmed.get(i + 1) == Some(&b'\n') => {
                out.push(b'\r');
                i += 1;
            }
            b'\n' => out.push(b'\r'),
            _ => out.push(b),
        }
        i += 1;
    }
    out.push(b'\r');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_fields_are_read() {
        let raw = b"MSH|^~\\&|RENKEI|HUB|HIS|H|20250410093015||ACK^A01^ACK|RK1|P|2.5\rMSA|AE|MSG1\rERR||PID^1^3|101^Required field missing^HL70357|E|||PID-3 is empty\r";
        let ack = Ack::parse(raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ack.code, "AE");
        assert_eq!(ack.control_id, "MSG1");
        assert_eq!(ack.text.as_deref(), Some("PID-3 is empty"));
        assert!(!ack.accepted());
        assert!(Ack::parse(b"MSH|^~\\&|A\rPID|1\r").is_err());
    }

    #[test]
    fn file_line_ends_become_cr() {
        assert_eq!(
            message_from_file(b"\x0bMSH|x\r\nPID|1\nPV1|\x1c\r"),
            b"MSH|x\rPID|1\rPV1|\r"
        );
        assert_eq!(message_from_file(b"MSH|x\r"), b"MSH|x\r");
    }
}
