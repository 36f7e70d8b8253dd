//! MLLP framing: any byte stream, cut into reads anywhere, never panics the codec, and
//! every frame it yields fits the limit.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut codec = renkei_hl7v2::MllpCodec::with_max_frame_len(4096);
    let mut buf = BytesMut::new();
    let step = usize::from(cut).max(1);
    for chunk in stream.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Ok(Some(frame)) = codec.decode(&mut buf) {
            assert!(frame.len() <= 4096);
        }
    }
    let _ = codec.decode_eof(&mut buf);
});
