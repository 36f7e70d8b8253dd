//! MLLP (Minimal Lower Layer Protocol) framing and original-mode acknowledgements.
//!
//! A frame is `0x0B <message> 0x1C 0x0D`. [`MllpCodec`] decodes frames from a byte
//! stream (bytes before a start block are skipped; partial frames are kept across
//! reads) and encodes messages into frames. [`build_ack`] writes the `ACK` a listener
//! sends back.
//!
//! # Oversized frames
//!
//! A frame longer than [`MllpCodec::max_frame_len`] is not buffered: its bytes are
//! discarded as they arrive, up to its end marker, and the decoder then returns
//! [`MllpError::FrameTooLarge`] carrying the first bytes of the frame (its `MSH`
//! segment, so the listener can still answer with an `AE` built from
//! [`MshHeader::parse`](crate::MshHeader::parse)). The codec is then in sync again and
//! the next frame decodes normally: **the connection can continue**.
//!
//! When the codec is driven by `tokio_util::codec::FramedRead`, note that the stream
//! yields `Some(Err(FrameTooLarge))` and then `None` once; polling it again continues
//! with the next frame. A listener that treats `None` as end-of-connection should
//! remember that the previous item was an error and keep polling (or simply close the
//! connection, which is also safe: the sender will resend). A listener should also
//! apply a read timeout, since a peer that never sends an end marker keeps the codec
//! discarding.

mod ack;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use ack::{AckCode, AckError, ErrorCode, build_ack};

/// Start block: vertical tab.
pub const START_BLOCK: u8 = 0x0B;
/// End block: file separator.
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return, after the end block.
pub const CARRIAGE_RETURN: u8 = 0x0D;
/// Default largest frame accepted: 4 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 4 * 1024 * 1024;
/// How many bytes of an oversized frame are kept for [`MllpError::FrameTooLarge`].
pub const OVERSIZED_HEADER_LEN: usize = 4096;

/// Errors of the MLLP codec.
#[derive(Debug, thiserror::Error)]
pub enum MllpError {
    /// A frame was longer than the configured limit; it was discarded up to its end.
    #[error(
        "MLLP frame of at least {size} bytes exceeds the limit of {limit} bytes and was discarded"
    )]
    FrameTooLarge {
        /// The configured limit.
        limit: usize,
        /// How many bytes the frame had (when it ended) or had so far (at end of stream).
        size: usize,
        /// The frame's first bytes, up to the first segment terminator, at most
        /// [`OVERSIZED_HEADER_LEN`]: normally its `MSH` segment.
        header: Bytes,
    },
    /// A frame the listener gave up buffering (see [`MllpCodec::abandon_frame`]); it
    /// was discarded up to its end, which is when this is returned.
    #[error("MLLP frame of {size} bytes was abandoned before its end and discarded")]
    FrameAbandoned {
        /// How many bytes the frame had.
        size: usize,
        /// The frame's first bytes, as for [`MllpError::FrameTooLarge`].
        header: Bytes,
    },
    /// The stream ended in the middle of a frame.
    #[error(
        "the connection closed in the middle of an MLLP frame ({received} bytes received, no end block)"
    )]
    IncompleteFrame {
        /// Bytes of the frame received before the end of the stream.
        received: usize,
    },
    /// A message to send contains an MLLP block character and cannot be framed.
    #[error("the message contains an MLLP block character (0x0B or 0x1C) and cannot be framed")]
    InvalidPayload,
    /// An I/O error of the underlying transport.
    #[error("MLLP transport error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, Default)]
enum State {
    /// Looking for a start block.
    #[default]
    Idle,
    /// Inside a frame; the frame's bytes are the buffer's, up to `scanned` searched.
    InFrame { scanned: usize },
    /// Inside an oversized (or abandoned) frame, discarding until its end block.
    Discarding {
        size: usize,
        header: Bytes,
        abandoned: bool,
    },
}

/// The MLLP codec: decodes frames into messages (`BytesMut`, without the block
/// characters) and encodes messages (`Bytes`, `&[u8]`, `Vec<u8>`) into frames.
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_frame_len: usize,
    state: State,
}

impl Default for MllpCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl MllpCodec {
    /// A codec accepting frames up to [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec accepting frames (message bytes, without block characters) up to
    /// `max_frame_len` bytes.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        MllpCodec {
            max_frame_len,
            state: State::Idle,
        }
    }

    /// The largest frame accepted.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The first segment of `frame`, at most [`OVERSIZED_HEADER_LEN`] bytes.
    fn header_of(frame: &[u8]) -> Bytes {
        let limit = frame.len().min(OVERSIZED_HEADER_LEN);
        let end = frame[..limit]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(limit);
        Bytes::copy_from_slice(&frame[..end])
    }

    fn discarded(&self, size: usize, header: Bytes, abandoned: bool) -> MllpError {
        if abandoned {
            MllpError::FrameAbandoned { size, header }
        } else {
            MllpError::FrameTooLarge {
                limit: self.max_frame_len,
                size,
                header,
            }
        }
    }

    /// Gives up buffering the frame in progress, if any: its bytes so far (all of
    /// `buf`, which holds nothing else while a frame is incomplete) are dropped but
    /// for its header, the rest is discarded as it arrives, and the decoder returns
    /// [`MllpError::FrameAbandoned`] at its end, in sync for the next frame. Returns
    /// whether a frame was in progress. A listener that cannot hold more bytes uses
    /// this to answer the message (`AR`) without buffering it.
    pub fn abandon_frame(&mut self, buf: &mut BytesMut) -> bool {
        match std::mem::take(&mut self.state) {
            State::InFrame { .. } => {
                self.state = State::Discarding {
                    size: buf.len(),
                    header: Self::header_of(buf),
                    abandoned: true,
                };
                buf.clear();
                true
            }
            other => {
                self.state = other;
                false
            }
        }
    }
}

/// The position of the first `0x1C 0x0D` at or after `from`; `Err(resume)` when there
/// is none yet, `resume` being where the next search should start.
fn find_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from;
    while let Some(offset) = buf
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == END_BLOCK))
    {
        let at = i + offset;
        match buf.get(at + 1) {
            Some(&CARRIAGE_RETURN) => return Ok(at),
            Some(_) => i = at + 1,
            None => return Err(at),
        }
    }
    Err(buf.len())
}

impl Decoder for MllpCodec {
    type Item = BytesMut;
    type Error = MllpError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, MllpError> {
        loop {
            match std::mem::take(&mut self.state) {
                State::Idle => match buf.iter().position(|&b| b == START_BLOCK) {
                    Some(start) => {
                        buf.advance(start + 1);
                        self.state = State::InFrame { scanned: 0 };
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
                State::InFrame { scanned } => match find_end(buf, scanned) {
                    Ok(end) => {
                        let frame = buf.split_to(end);
                        buf.advance(2);
                        if frame.len() > self.max_frame_len {
                            let header = Self::header_of(&frame);
                            return Err(self.discarded(frame.len(), header, false));
                        }
                        return Ok(Some(frame));
                    }
                    Err(resume) => {
                        if resume > self.max_frame_len {
                            let header = Self::header_of(buf);
                            buf.advance(resume);
                            self.state = State::Discarding {
                                size: resume,
                                header,
                                abandoned: false,
                            };
                        } else {
                            self.state = State::InFrame { scanned: resume };
                            return Ok(None);
                        }
                    }
                },
                State::Discarding {
                    size,
                    header,
                    abandoned,
                } => match find_end(buf, 0) {
                    Ok(end) => {
                        buf.advance(end + 2);
                        return Err(self.discarded(size + end, header, abandoned));
                    }
                    Err(resume) => {
                        buf.advance(resume);
                        self.state = State::Discarding {
                            size: size + resume,
                            header,
                            abandoned,
                        };
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, MllpError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        let received = buf.len();
        buf.clear();
        match std::mem::take(&mut self.state) {
            State::Idle => Ok(None),
            State::InFrame { .. } => Err(MllpError::IncompleteFrame { received }),
            State::Discarding {
                size,
                header,
                abandoned,
            } => Err(self.discarded(size + received, header, abandoned)),
        }
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, message: &[u8], dst: &mut BytesMut) -> Result<(), MllpError> {
        if message.iter().any(|&b| b == START_BLOCK || b == END_BLOCK) {
            return Err(MllpError::InvalidPayload);
        }
        dst.reserve(message.len() + 3);
        dst.put_u8(START_BLOCK);
        dst.put_slice(message);
        dst.put_slice(&[END_BLOCK, CARRIAGE_RETURN]);
        Ok(())
    }
}

impl Encoder<Bytes> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, message: Bytes, dst: &mut BytesMut) -> Result<(), MllpError> {
        Encoder::<&[u8]>::encode(self, &message, dst)
    }
}

impl Encoder<Vec<u8>> for MllpCodec {
    type Error = MllpError;

    fn encode(&mut self, message: Vec<u8>, dst: &mut BytesMut) -> Result<(), MllpError> {
        Encoder::<&[u8]>::encode(self, &message, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(codec: &mut MllpCodec, buf: &mut BytesMut) -> Vec<Result<Vec<u8>, String>> {
        let mut out = Vec::new();
        loop {
            match codec.decode(buf) {
                Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
                Ok(None) => return out,
                Err(e) => out.push(Err(e.to_string())),
            }
        }
    }

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut dst = BytesMut::new();
        let mut codec = MllpCodec::new();
        if let Err(e) = codec.encode(message, &mut dst) {
            panic!("{e}");
        }
        dst.to_vec()
    }

    #[test]
    fn encodes_a_frame() {
        assert_eq!(framed(b"MSH|x\r"), b"\x0bMSH|x\r\x1c\x0d");
        let mut dst = BytesMut::new();
        let mut codec = MllpCodec::new();
        assert!(matches!(
            codec.encode(&b"a\x1cb"[..], &mut dst),
            Err(MllpError::InvalidPayload)
        ));
        assert!(codec.encode(Bytes::from_static(b"ok"), &mut dst).is_ok());
        assert!(codec.encode(b"ok".to_vec(), &mut dst).is_ok());
        assert_eq!(&dst[..], b"\x0bok\x1c\x0d\x0bok\x1c\x0d");
    }

    #[test]
    fn frame_split_across_reads_at_every_position() {
        let wire = framed(b"MSH|^~\\&|A\rPID|1\r");
        for split in 0..=wire.len() {
            for split2 in split..=wire.len() {
                let mut codec = MllpCodec::new();
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for chunk in [&wire[..split], &wire[split..split2], &wire[split2..]] {
                    buf.extend_from_slice(chunk);
                    got.extend(frames(&mut codec, &mut buf));
                }
                assert_eq!(
                    got,
                    [Ok(b"MSH|^~\\&|A\rPID|1\r".to_vec())],
                    "split {split}/{split2}"
                );
            }
        }
    }

    #[test]
    fn two_frames_in_one_read_and_junk_before_start() {
        let mut wire = b"\r\n junk".to_vec();
        wire.extend(framed(b"one"));
        wire.extend(b"\r\n");
        wire.extend(framed(b"two"));
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            frames(&mut codec, &mut buf),
            [Ok(b"one".to_vec()), Ok(b"two".to_vec())]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn end_block_without_cr_is_content() {
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::from(&b"\x0ba\x1cb\x1c\x0d"[..]);
        assert_eq!(frames(&mut codec, &mut buf), [Ok(b"a\x1cb".to_vec())]);
    }

    #[test]
    fn oversized_frame_is_discarded_and_the_next_one_decodes() {
        let big = format!("MSH|^~\\&|BIG\r{}", "X".repeat(100));
        for chunk_len in [1, 7, 64, 1000] {
            let mut wire = framed(big.as_bytes());
            wire.extend(framed(b"small"));
            let mut codec = MllpCodec::with_max_frame_len(50);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(chunk_len) {
                buf.extend_from_slice(chunk);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(frame)) => got.push(Ok(frame.to_vec())),
                        Ok(None) => break,
                        Err(MllpError::FrameTooLarge {
                            limit,
                            size,
                            header,
                        }) => {
                            got.push(Err((limit, size, header.to_vec())));
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                assert!(
                    buf.len() <= 50 + chunk_len + 2,
                    "buffer grew to {}",
                    buf.len()
                );
            }
            assert_eq!(
                got,
                [
                    Err((50, big.len(), b"MSH|^~\\&|BIG".to_vec())),
                    Ok(b"small".to_vec())
                ],
                "chunk {chunk_len}"
            );
        }
    }

    #[test]
    fn an_abandoned_frame_is_discarded_to_its_end_and_the_next_one_decodes() {
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::from(&b"\x0bMSH|^~\\&|A|B\rPID|1|"[..]);
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        assert!(codec.abandon_frame(&mut buf));
        assert!(buf.is_empty(), "the bytes so far are let go");
        buf.extend_from_slice(b"more of it");
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        assert!(buf.is_empty(), "the rest is discarded as it arrives");
        buf.extend_from_slice(b"end\x1c\x0d\x0bnext\x1c\x0d");
        match codec.decode(&mut buf) {
            Err(MllpError::FrameAbandoned { size, header }) => {
                assert_eq!(size, "MSH|^~\\&|A|B\rPID|1|more of itend".len());
                assert_eq!(&header[..], b"MSH|^~\\&|A|B");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(codec.decode(&mut buf), Ok(Some(f)) if &f[..] == b"next"));
        // Between frames there is nothing to abandon.
        assert!(!codec.abandon_frame(&mut buf));
    }

    #[test]
    fn end_of_stream() {
        let mut codec = MllpCodec::new();
        let mut buf = BytesMut::from(&b"\x0bMSH|partial"[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(MllpError::IncompleteFrame { received: 11 })
        ));
        let mut buf = BytesMut::from(&b"trailing junk"[..]);
        assert!(matches!(codec.decode_eof(&mut buf), Ok(None)));
        let mut buf = BytesMut::from(&b"\x0bdone\x1c\x0d"[..]);
        assert!(matches!(codec.decode_eof(&mut buf), Ok(Some(f)) if &f[..] == b"done"));
        let mut codec = MllpCodec::with_max_frame_len(4);
        let mut buf = BytesMut::from(&b"\x0bMSH|toolong"[..]);
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(MllpError::FrameTooLarge { size: 11, .. })
        ));
    }

    #[tokio::test]
    async fn works_over_framed_io() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_util::codec::{FramedRead, FramedWrite};

        let (client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let mut sink = FramedWrite::new(client, MllpCodec::new());
            for i in 0..20 {
                let message = format!(
                    "MSH|^~\\&|A|B|C|D|E||ADT^A01|{i}|P|2.5\r{}",
                    "Z".repeat(i * 10)
                );
                if let Err(e) = sink.send(Bytes::from(message)).await {
                    panic!("{e}");
                }
            }
        });
        let mut stream = FramedRead::new(server, MllpCodec::new());
        let mut ids = Vec::new();
        while let Some(frame) = stream.next().await {
            let frame = frame.unwrap_or_else(|e| panic!("{e}"));
            ids.push(crate::message_control_id(&frame).unwrap_or_default());
        }
        assert!(writer.await.is_ok());
        let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(ids, expected);
    }
}
