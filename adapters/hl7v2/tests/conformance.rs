//! Conformance: every HL7 v2 case of the shared conformance set (the files under `hl7/`
//! and the HL7 files under `bad/`, described in its `EXPECTED.json`) asserted fact by
//! fact, then the same messages through corruption, MLLP framing and acknowledgement.
//!
//! The set lives outside the repository: `../shared/conformance` next to the checkout,
//! or wherever `RENKEI_CONFORMANCE_DIR` points. When it cannot be read every test here
//! fails; none is skipped.

// A failed `expect` on a conformance fixture is a test failure, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::BytesMut;
use chrono::DateTime;
use jsonschema::Validator;
use renkei_hl7v2::{
    AckCode, AckError, Charset, ErrorCode, Hl7Normalizer, Message, MllpCodec, MllpError, MshHeader,
    Segment, build_ack, decode,
};
use renkei_sdk::conformance::check_case;
use renkei_sdk::{
    Address, CanonicalEvent, EVENT_SCHEMA_V1, NormalizeError, Normalizer, RelatedPerson,
};
use serde_json::{Map, Value};
use tokio_util::codec::{Decoder, Encoder};

/// The conformance set, read once per test process.
struct Conformance {
    dir: PathBuf,
    expected: Map<String, Value>,
}

fn conformance() -> &'static Conformance {
    static SET: OnceLock<Conformance> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = renkei_sdk::conformance::set_dir(env!("CARGO_MANIFEST_DIR"));
        let expected = renkei_sdk::conformance::read_object(&dir.join("EXPECTED.json"))
            .unwrap_or_else(|e| panic!("{e}"));
        Conformance { dir, expected }
    })
}

/// One HL7 v2 entry of `EXPECTED.json` with its file's bytes.
struct Case {
    /// The key in `EXPECTED.json`, e.g. `hl7/a01_admit_iso2022jp.hl7`.
    name: String,
    raw: Vec<u8>,
    facts: Map<String, Value>,
}

/// Every `hl7v2` entry whose key starts with `folder`, in key order.
fn cases(folder: &str) -> Vec<Case> {
    let set = conformance();
    let mut cases: Vec<Case> = set
        .expected
        .iter()
        .filter(|(name, _)| name.starts_with(folder))
        .filter(|(_, facts)| facts["format"] == "hl7v2")
        .map(|(name, facts)| {
            let path = set.dir.join(name);
            let raw = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("EXPECTED.json lists {name}, but {e}"));
            let facts = facts
                .as_object()
                .unwrap_or_else(|| panic!("the entry of {name} is not an object"))
                .clone();
            Case {
                name: name.clone(),
                raw,
                facts,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!cases.is_empty(), "no hl7v2 entry under {folder}");
    cases
}

/// Every HL7 file of the set: the valid ones, then the refused ones.
fn all_messages() -> Vec<Case> {
    let mut all = cases("hl7/");
    all.extend(cases("bad/"));
    all
}

fn normalize(raw: &[u8]) -> Result<CanonicalEvent, NormalizeError> {
    Hl7Normalizer::new().normalize(raw)
}

fn event_of(case: &Case) -> CanonicalEvent {
    normalize(&case.raw).unwrap_or_else(|e| panic!("{}: refused: {e}", case.name))
}

/// The schema compiled once, with `format` checked as well as the patterns.
fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(EVENT_SCHEMA_V1).expect("the schema is not JSON");
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the schema does not compile")
    })
}

/// Every schema violation of `event`, as `<instance path>: <message>`.
fn schema_violations(event: &CanonicalEvent) -> Vec<String> {
    let instance = serde_json::to_value(event).expect("serialise");
    validator()
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_hl7_file_has_an_expected_entry_and_every_entry_a_file() {
    let set = conformance();
    let mut problems = Vec::new();
    for (folder, only_hl7) in [("hl7", false), ("bad", true)] {
        let entries = std::fs::read_dir(set.dir.join(folder))
            .unwrap_or_else(|e| panic!("cannot list {folder}/ of the conformance set: {e}"));
        let mut seen = 0;
        for entry in entries {
            let file_name = entry.expect("directory entry").file_name();
            let file_name = file_name.to_string_lossy();
            if only_hl7 && !file_name.to_ascii_lowercase().ends_with(".hl7") {
                continue;
            }
            seen += 1;
            let key = format!("{folder}/{file_name}");
            match set.expected.get(&key) {
                None => problems.push(format!("{key} has no entry in EXPECTED.json")),
                Some(facts) if facts["format"] != "hl7v2" => problems.push(format!(
                    "{key} is not declared `\"format\": \"hl7v2\"` in EXPECTED.json"
                )),
                Some(_) => {}
            }
        }
        assert!(
            seen > 0,
            "{folder}/ of the conformance set holds no HL7 file"
        );
    }
    for (key, facts) in &set.expected {
        if facts["format"] == "hl7v2" && !set.dir.join(key).is_file() {
            problems.push(format!("EXPECTED.json lists {key}, which is not a file"));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn hl7_messages_carry_every_expected_fact() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases("hl7/") {
        if case.facts.contains_key("error") {
            failures.push(format!(
                "{}: an entry under hl7/ expects an error",
                case.name
            ));
        }
        let event = match normalize(&case.raw) {
            Ok(event) => event,
            Err(e) => {
                failures.push(format!("{}: refused: {e}", case.name));
                continue;
            }
        };
        let (held, problems) = check_case(&event, &case.facts);
        checked += held;
        failures.extend(problems.into_iter().map(|p| format!("{}: {p}", case.name)));
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked > 0, "no fact was checked");
}

#[test]
fn normalised_conformance_events_match_the_json_schema_and_round_trip() {
    for case in cases("hl7/") {
        let event = event_of(&case);
        let violations = schema_violations(&event);
        assert!(
            violations.is_empty(),
            "{}: {violations:#?}\n{:#}",
            case.name,
            serde_json::to_value(&event).expect("serialise")
        );
        let text = serde_json::to_string(&event).expect("serialise");
        let back: CanonicalEvent = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(back, event, "{}", case.name);
    }
}

/// How one `bad/` message must be refused.
struct Refusal {
    file: &'static str,
    /// `NormalizeError::location`.
    location: &'static str,
    /// What the error's text must mention, following the entry's `error` description.
    mentions: &'static [&'static str],
    /// Patient data that is in the file and must never be in the error.
    patient_data: &'static [&'static str],
    /// `ERR-3` of the `AE` that answers it (HL7 table 0357).
    err_code: u16,
}

/// The patient of the conformance set, as the refused files carry them.
const PATIENT: &[&str] = &[
    "0000482915",
    "架空",
    "花子",
    "カクウ",
    "ハナコ",
    "19380315",
    "03-0000-0000",
];

const REFUSALS: &[Refusal] = &[
    Refusal {
        file: "bad/no_msh.hl7",
        location: "MSH",
        mentions: &["does not start with an MSH segment"],
        patient_data: &["0000482915"],
        err_code: 100,
    },
    Refusal {
        file: "bad/truncated_msh.hl7",
        location: "MSH-9",
        mentions: &["MSH-9", "MSH-10", "cut short"],
        patient_data: &[],
        err_code: 101,
    },
    Refusal {
        file: "bad/unknown_event.hl7",
        location: "MSH-9",
        mentions: &["MSH-9", "Z99"],
        patient_data: PATIENT,
        err_code: 201,
    },
    Refusal {
        file: "bad/no_patient_id.hl7",
        location: "PID-3",
        mentions: &["PID-3", "empty"],
        patient_data: &["架空", "花子"],
        err_code: 101,
    },
    Refusal {
        file: "bad/bad_timestamp.hl7",
        location: "EVN-2",
        mentions: &["EVN-2", "PV1-44", "not an HL7 timestamp"],
        patient_data: PATIENT,
        err_code: 102,
    },
    Refusal {
        file: "bad/sjis_declared_utf8.hl7",
        location: "MSH-18",
        mentions: &["MSH-18", "UTF-8", "Shift_JIS"],
        patient_data: PATIENT,
        err_code: 102,
    },
];

fn refusal(name: &str) -> &'static Refusal {
    REFUSALS
        .iter()
        .find(|r| r.file == name)
        .unwrap_or_else(|| panic!("{name} is listed in EXPECTED.json but not in REFUSALS"))
}

/// The text of a conformance file as a person would read it (Shift_JIS when it is not
/// UTF-8, ISO-2022-JP when it holds escape sequences).
fn readable(raw: &[u8]) -> String {
    if raw.contains(&0x1b) {
        return encoding_rs::ISO_2022_JP.decode(raw).0.into_owned();
    }
    match std::str::from_utf8(raw) {
        Ok(text) => text.to_owned(),
        Err(_) => encoding_rs::SHIFT_JIS.decode(raw).0.into_owned(),
    }
}

#[test]
fn bad_messages_are_refused_naming_the_field_at_fault_without_patient_data() {
    let bad = cases("bad/");
    let listed: BTreeSet<&str> = bad.iter().map(|c| c.name.as_str()).collect();
    let tabled: BTreeSet<&str> = REFUSALS.iter().map(|r| r.file).collect();
    assert_eq!(listed, tabled, "REFUSALS and EXPECTED.json disagree");
    for case in &bad {
        let refusal = refusal(&case.name);
        assert!(
            case.facts["error"].is_string(),
            "{}: no error description",
            case.name
        );
        // The patient data we look for really is in the file, so its absence means something.
        let text = readable(&case.raw);
        for data in refusal.patient_data {
            assert!(
                text.contains(data),
                "{}: `{data}` is not in the file",
                case.name
            );
        }
        let err = match normalize(&case.raw) {
            Ok(event) => panic!("{}: accepted as {}", case.name, event.event_type),
            Err(err) => err,
        };
        let shown = err.to_string();
        assert_eq!(
            err.location.as_deref(),
            Some(refusal.location),
            "{}: {shown}",
            case.name
        );
        assert!(
            shown.starts_with(&format!("{}: ", refusal.location)),
            "{}: {shown}",
            case.name
        );
        for mention in refusal.mentions {
            assert!(
                shown.contains(mention),
                "{}: the error does not mention `{mention}`: {shown}",
                case.name
            );
        }
        for data in refusal.patient_data {
            assert!(
                !shown.contains(data),
                "{}: the error repeats patient data `{data}`: {shown}",
                case.name
            );
        }
        assert_eq!(
            ErrorCode::for_error(&err).code(),
            refusal.err_code,
            "{}: ERR-3 of the AE",
            case.name
        );
        assert!(
            !shown.contains('\u{fffd}'),
            "{}: mojibake in the error: {shown}",
            case.name
        );
    }
}

/// Bytes that structure HL7 v2 (and ISO-2022-JP) text.
const DELIMITERS: [u8; 9] = [b'|', b'^', b'~', b'\\', b'&', b'\r', b'\n', 0x1b, b'$'];

/// What a listener does with any input: read the header, normalise, acknowledge.
fn handle(raw: &[u8]) -> Option<CanonicalEvent> {
    let result = normalize(raw);
    let header = MshHeader::parse(raw).unwrap_or_default();
    let (code, error) = match &result {
        Ok(_) => (AckCode::Accept, None),
        Err(e) => (AckCode::Error, Some(AckError::from(e))),
    };
    let now = DateTime::parse_from_rfc3339("2025-04-10T09:30:15+09:00").expect("time");
    let ack = build_ack(&header, code, "ACK1", error.as_ref(), now);
    assert!(!ack.is_empty());
    result.ok()
}

/// Every prefix of `raw`, then at each position either a byte replaced by a delimiter
/// (even positions) or a delimiter inserted (odd ones), cycling through [`DELIMITERS`].
fn corruptions(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::with_capacity(raw.len() * 2);
    for end in 0..raw.len() {
        out.push((format!("truncated at {end}"), raw[..end].to_vec()));
    }
    for i in 0..raw.len() {
        let byte = DELIMITERS[i % DELIMITERS.len()];
        let mut mutant = raw.to_vec();
        if i % 2 == 0 {
            mutant[i] = byte;
            out.push((format!("byte {i} set to {byte:#04x}"), mutant));
        } else {
            mutant.insert(i, byte);
            out.push((format!("{byte:#04x} inserted at {i}"), mutant));
        }
    }
    out
}

#[test]
fn corrupted_conformance_messages_never_panic_and_accepted_ones_stay_valid() {
    let mut panics = Vec::new();
    let mut invalid = Vec::new();
    let (mut tried, mut accepted) = (0usize, 0usize);
    for case in all_messages() {
        for (what, mutant) in corruptions(&case.raw) {
            tried += 1;
            match catch_unwind(AssertUnwindSafe(|| handle(&mutant))) {
                Err(_) => panics.push(format!("{}: {what}", case.name)),
                Ok(None) => {}
                Ok(Some(event)) => {
                    accepted += 1;
                    let violations = schema_violations(&event);
                    if !violations.is_empty() {
                        invalid.push(format!("{}: {what}: {violations:?}", case.name));
                    }
                }
            }
        }
    }
    assert!(
        panics.is_empty(),
        "panicked on {} inputs: {panics:#?}",
        panics.len()
    );
    assert!(
        invalid.is_empty(),
        "accepted but schema-invalid: {invalid:#?}"
    );
    // Both outcomes occur, so the corruptions reach past the first checks.
    assert!(
        accepted > 0 && accepted < tried,
        "{accepted} of {tried} accepted"
    );
}

/// Every message framed back to back, as one sender would write them on one connection.
fn wire_of(messages: &[&[u8]]) -> Vec<u8> {
    let mut codec = MllpCodec::new();
    let mut wire = BytesMut::new();
    for message in messages {
        codec
            .encode(*message, &mut wire)
            .unwrap_or_else(|e| panic!("cannot frame a conformance message: {e}"));
    }
    wire.to_vec()
}

/// Decodes `wire` fed in chunks of the given lengths (the last one repeats).
fn decode_in_chunks(
    codec: &mut MllpCodec,
    wire: &[u8],
    mut chunk_len: impl FnMut() -> usize,
) -> Vec<Result<Vec<u8>, MllpError>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = wire;
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(chunk_len().clamp(1, rest.len()));
        rest = after;
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame.to_vec())),
                Ok(None) => break,
                Err(e) => out.push(Err(e)),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(None) => {}
        other => panic!("left over at end of stream: {other:?}"),
    }
    out
}

/// A small deterministic generator of chunk lengths (xorshift64).
fn chunk_lengths(seed: u64, max: usize) -> impl FnMut() -> usize {
    let mut state = seed.max(1);
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % u64::try_from(max).expect("max")).expect("chunk") + 1
    }
}

#[test]
fn mllp_returns_every_conformance_message_whatever_the_read_boundaries() {
    let all = all_messages();
    let messages: Vec<&[u8]> = all.iter().map(|c| c.raw.as_slice()).collect();
    let wire = wire_of(&messages);
    let expected: Vec<Vec<u8>> = messages.iter().map(|m| m.to_vec()).collect();
    let mut chunkings: Vec<(String, Box<dyn FnMut() -> usize>)> = Vec::new();
    for fixed in [1, 2, 3, 5, 13, 64, 509, 4096, wire.len()] {
        chunkings.push((format!("chunks of {fixed}"), Box::new(move || fixed)));
    }
    for seed in 1..=16 {
        let max = if seed % 2 == 0 { 40 } else { 1500 };
        chunkings.push((
            format!("random chunks up to {max} (seed {seed})"),
            Box::new(chunk_lengths(seed, max)),
        ));
    }
    for (how, chunk_len) in chunkings {
        let got = decode_in_chunks(&mut MllpCodec::new(), &wire, chunk_len);
        let got: Vec<Vec<u8>> = got
            .into_iter()
            .map(|f| f.unwrap_or_else(|e| panic!("{how}: {e}")))
            .collect();
        assert_eq!(got.len(), expected.len(), "{how}");
        for ((frame, wanted), case) in got.iter().zip(&expected).zip(&all) {
            assert!(frame == wanted, "{how}: {} came back altered", case.name);
        }
    }
}

#[test]
fn oversized_conformance_frame_is_refused_and_the_next_one_decodes() {
    let valid = cases("hl7/");
    let biggest = valid.iter().max_by_key(|c| c.raw.len()).expect("a message");
    let others: Vec<&Case> = valid
        .iter()
        .filter(|c| c.raw.len() < biggest.raw.len())
        .collect();
    assert!(
        others.len() >= 2,
        "need smaller messages around the big one"
    );
    let limit = biggest.raw.len() - 1;
    let sequence = [
        others[0].raw.as_slice(),
        biggest.raw.as_slice(),
        others[1].raw.as_slice(),
        biggest.raw.as_slice(),
        others[0].raw.as_slice(),
    ];
    let wire = wire_of(&sequence);
    // The MSH line of the big message: enough for the listener to answer with AE.
    let msh_end = biggest
        .raw
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(biggest.raw.len());
    let big_id = biggest.facts["message_id"].as_str().expect("message_id");
    for chunk in [1, 7, 100, 1000, wire.len()] {
        let mut codec = MllpCodec::with_max_frame_len(limit);
        let got = decode_in_chunks(&mut codec, &wire, || chunk);
        assert_eq!(got.len(), sequence.len(), "chunks of {chunk}");
        for (i, (frame, sent)) in got.into_iter().zip(sequence).enumerate() {
            match frame {
                Ok(frame) if sent.len() <= limit => {
                    assert!(frame == sent, "chunks of {chunk}: frame {i} altered");
                }
                Err(MllpError::FrameTooLarge {
                    limit: l,
                    size,
                    header,
                }) if sent.len() > limit => {
                    assert_eq!((l, size), (limit, sent.len()), "chunks of {chunk}");
                    assert_eq!(&header[..], &biggest.raw[..msh_end], "chunks of {chunk}");
                    let h = MshHeader::parse(&header).expect("the kept header parses");
                    assert_eq!(h.control_id, big_id, "chunks of {chunk}");
                }
                other => panic!(
                    "chunks of {chunk}: frame {i} ({} bytes, limit {limit}) gave {other:?}",
                    sent.len()
                ),
            }
        }
    }
}

/// `MSH-n` of a raw message, as sent (the conformance headers are ASCII up to MSH-18).
fn sent_msh_field(raw: &[u8], n: usize) -> String {
    let line = raw
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let fields: Vec<&[u8]> = line.split(|&b| b == b'|').collect();
    let field = fields.get(n - 1).copied().unwrap_or_default();
    String::from_utf8(field.to_vec()).expect("an ASCII MSH field")
}

fn field_raw<'a>(segment: Option<Segment<'a>>, n: usize) -> &'a str {
    segment.map(|s| s.field(n).raw()).unwrap_or_default()
}

/// Checks an acknowledgement of `raw` and returns its decoded text.
fn assert_ack_answers(name: &str, raw: &[u8], ack: &[u8], code: AckCode) -> String {
    let header = MshHeader::parse(raw).expect("header");
    let mut framed = BytesMut::new();
    MllpCodec::new()
        .encode(ack, &mut framed)
        .unwrap_or_else(|e| panic!("{name}: the ACK cannot be framed: {e}"));
    let decoded = decode(ack).unwrap_or_else(|e| panic!("{name}: the ACK does not decode: {e}"));
    assert_eq!(Some(decoded.charset), header.charset, "{name}: ACK charset");
    let text = decoded.text.into_owned();
    let message = Message::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
    let msh = message.msh();
    // Sender and receiver swap places.
    for (ack_field, sent_field) in [(3, 5), (4, 6), (5, 3), (6, 4)] {
        assert_eq!(
            msh.field(ack_field).raw(),
            sent_msh_field(raw, sent_field),
            "{name}: ACK MSH-{ack_field} should be the message's MSH-{sent_field}\n{text}"
        );
    }
    let message_type = msh.field(9);
    assert_eq!(message_type.component(1).value(), "ACK", "{name}");
    assert_eq!(
        message_type.component(2).value(),
        header.trigger_event,
        "{name}"
    );
    assert_eq!(msh.field(10).raw(), "ACK1", "{name}");
    assert_eq!(
        msh.field(18).raw(),
        sent_msh_field(raw, 18),
        "{name}: MSH-18"
    );
    let msa = message.segment("MSA");
    assert!(msa.is_some(), "{name}: no MSA\n{text}");
    assert_eq!(field_raw(msa, 1), code.as_str(), "{name}\n{text}");
    assert_eq!(
        field_raw(msa, 2),
        sent_msh_field(raw, 10),
        "{name}: MSA-2 is the original control id"
    );
    text
}

#[test]
fn acks_answer_each_conformance_message() {
    let now = DateTime::parse_from_rfc3339("2025-04-10T09:30:15+09:00").expect("time");
    for case in cases("hl7/") {
        let header = MshHeader::parse(&case.raw).expect("header");
        let event = event_of(&case);
        assert_eq!(header.control_id, event.data.origin.message_id);
        let ack = build_ack(&header, AckCode::Accept, "ACK1", None, now);
        let text = assert_ack_answers(&case.name, &case.raw, &ack, AckCode::Accept);
        let msa_2 = Message::parse(&text)
            .ok()
            .and_then(|m| m.segment("MSA"))
            .map(|s| s.field(2).value().into_owned());
        assert_eq!(
            msa_2.as_deref(),
            case.facts["message_id"].as_str(),
            "{}",
            case.name
        );
        assert!(
            !text.contains("\rERR|"),
            "{}: AA with ERR\n{text}",
            case.name
        );
    }
    // The refused messages, answered as the listener does: AE naming the error.
    for case in cases("bad/") {
        let err = normalize(&case.raw).expect_err("refused");
        let Some(header) = MshHeader::parse(&case.raw) else {
            assert_eq!(err.location.as_deref(), Some("MSH"), "{}", case.name);
            continue;
        };
        let ack = build_ack(
            &header,
            AckCode::Error,
            "ACK1",
            Some(&AckError::from(&err)),
            now,
        );
        let text = assert_ack_answers(&case.name, &case.raw, &ack, AckCode::Error);
        let message = Message::parse(&text).expect("ACK parses");
        let err_segment = message
            .segment("ERR")
            .unwrap_or_else(|| panic!("{}: AE without ERR\n{text}", case.name));
        let location = err.location.as_deref().expect("location");
        let (segment, field) = location.split_once('-').expect("a field location");
        assert_eq!(
            err_segment.field(2).raw(),
            format!("{segment}^1^{field}"),
            "{}: ERR-2",
            case.name
        );
        assert_eq!(
            err_segment.field(3).component(1).value(),
            refusal(&case.name).err_code.to_string(),
            "{}: ERR-3",
            case.name
        );
        assert_eq!(err_segment.field(4).value(), "E", "{}", case.name);
        assert_eq!(
            err_segment.field(7).value(),
            err.to_string(),
            "{}: ERR-7",
            case.name
        );
        for data in refusal(&case.name).patient_data {
            assert!(
                !text.contains(data),
                "{}: the ACK repeats `{data}`",
                case.name
            );
        }
    }
}

// What a care office needs: address, phone and key person (PID-11, PID-13, NK1).

/// An A01 of the conformance patient with `segments` after MSH and EVN.
fn admission(msh18: &str, pid_tail: &str, segments: &[&str]) -> String {
    let mut text = format!(
        "MSH|^~\\&|HIS01|1319999999|RENKEI|HUB|20250410093015||ADT^A01^ADT_A01|CARE1|P|2.5||||||{msh18}\r\
         EVN||20250410093000\r\
         PID|0001||0000482915^^^^PI||架空^花子^^^^^L^I~カクウ^ハナコ^^^^^L^P||19380315|F{pid_tail}\r"
    );
    for segment in segments {
        text.push_str(segment);
        text.push('\r');
    }
    text
}

/// A home address after a business one, a phone after an e-mail address and a work
/// number, and three NK1: an employer, a son, and the daughter marked as the emergency
/// contact (kana repetition first), with escape sequences in the address and a name.
fn care_admission(msh18: &str) -> String {
    admission(
        msh18,
        "|||架空ビル別館^^^^9999999^JPN^B~架空町1-2-3^架空ハイツA\\T\\B棟101^架空市^東京都^1000001^JPN^H\
         ||^NET^Internet^hanako@example.invalid~^WPN^PH^^^^^^^^^03-1111-1111~^PRN^PH^^^^^^^^^03-0000-0000",
        &[
            "NK1|1|架空商事^^^^^^L|||^WPN^PH^^^^^^^^^03-2222-2222||E",
            "NK1|2|カクウ^ジロウ^^^^^L^P~架空^次郎^^^^^L^I|SON^^HL70063||^PRN^CP^^^^^^^^^090-1111-1111||N",
            "NK1|3|カクウ^ハナ^^^^^L^P~架空^葉菜^^^^^L^I|DAU^長女^HL70063||^PRN^CP^^^^^^^^^090-0000-0000||C^緊急連絡先",
        ],
    )
}

fn care_event(raw: &[u8]) -> CanonicalEvent {
    let event = normalize(raw).unwrap_or_else(|e| panic!("refused: {e}"));
    let violations = schema_violations(&event);
    assert!(violations.is_empty(), "{violations:#?}");
    event
}

#[test]
fn care_office_gets_home_address_phone_and_key_person_in_every_charset() {
    let expected_address = Address {
        postal_code: Some("100-0001".to_owned()),
        text: Some("東京都架空市架空町1-2-3 架空ハイツA&B棟101".to_owned()),
    };
    let expected_key_person = RelatedPerson {
        name: Some("架空 葉菜".to_owned()),
        relationship: Some("長女".to_owned()),
        phone: Some("090-0000-0000".to_owned()),
    };
    for (charset, msh18, assumed) in [
        (Charset::Utf8, "UNICODE UTF-8", None),
        (Charset::Iso2022Jp, "~ISO IR87", None),
        (Charset::ShiftJis, "SHIFT_JIS", None),
        (Charset::Iso2022Jp, "", Some("ISO-2022-JP (MSH-18 empty)")),
    ] {
        let raw = charset.encode(&care_admission(msh18));
        let event = care_event(&raw);
        let patient = &event.data.patient;
        assert_eq!(
            patient.address.as_ref(),
            Some(&expected_address),
            "{charset} {msh18}"
        );
        assert_eq!(
            patient.phone.as_deref(),
            Some("03-0000-0000"),
            "{charset} {msh18}"
        );
        assert_eq!(
            patient.key_person.as_ref(),
            Some(&expected_key_person),
            "{charset} {msh18}"
        );
        assert_eq!(
            event.data.origin.assumed_charset.as_deref(),
            assumed,
            "{charset} {msh18}"
        );
    }
}

#[test]
fn key_person_falls_back_to_the_first_person_with_table_0063_in_japanese() {
    // No NK1 is marked: the first one that is not an employer, its code in words.
    let text = admission(
        "UNICODE UTF-8",
        "|||^^架空市^東京都^1000001||^WPN^PH^^^^^^^^^03-1111-1111",
        &[
            "NK1|1|架空商事|||^WPN^PH^^^^^^^^^03-2222-2222||E",
            "NK1|2|架空^次郎^^^^^L|DAU||^^^^^03^00000000^12",
            "NK1|3|架空^三郎^^^^^L|SON^息子||||C",
        ],
    );
    let patient = care_event(text.as_bytes()).data.patient;
    assert_eq!(
        patient.address,
        Some(Address {
            postal_code: Some("100-0001".to_owned()),
            text: Some("東京都架空市".to_owned()),
        })
    );
    // Only a work number: it is still the number to call.
    assert_eq!(patient.phone.as_deref(), Some("03-1111-1111"));
    // NK1-3 has nothing to mark, but NK1-7 `C` does.
    assert_eq!(
        patient.key_person.and_then(|p| p.name).as_deref(),
        Some("架空 三郎")
    );

    let text = admission(
        "UNICODE UTF-8",
        "|||^^東京都架空市^東京都",
        &[
            "NK1|1|架空商事|||^WPN^PH^^^^^^^^^03-2222-2222||E",
            "NK1|2|カクウ^ジロウ^^^^^L^P|DAU||^^^^^03^00000000^12",
            "NK1|3|架空^三郎^^^^^L|OTH",
        ],
    );
    let patient = care_event(text.as_bytes()).data.patient;
    assert_eq!(
        patient.address.and_then(|a| a.text).as_deref(),
        Some("東京都架空市"),
        "a city given with its prefecture is not doubled"
    );
    assert_eq!(
        patient.key_person,
        Some(RelatedPerson {
            name: Some("カクウ ジロウ".to_owned()),
            relationship: Some("娘".to_owned()),
            phone: Some("03-00000000 内線 12".to_owned()),
        })
    );

    // An employer alone is no key person.
    let text = admission(
        "UNICODE UTF-8",
        "",
        &["NK1|1|架空商事|||^WPN^PH^^^^^^^^^03-2222-2222||E"],
    );
    assert_eq!(care_event(text.as_bytes()).data.patient.key_person, None);
}

#[test]
fn a_message_without_address_phone_or_next_of_kin_leaves_them_empty() {
    for pid_tail in ["", "|||||", "|||\"\"||\"\"", "|||^^^^^JPN^H||^PRN^PH"] {
        for segments in [&[][..], &["NK1|1"][..], &["NK1|1|\"\"|\"\"||\"\""][..]] {
            let text = admission("UNICODE UTF-8", pid_tail, segments);
            let patient = care_event(text.as_bytes()).data.patient;
            assert_eq!(
                (patient.address, patient.phone, patient.key_person),
                (None, None, None),
                "{pid_tail:?} {segments:?}"
            );
            assert!(patient.name.is_some(), "the rest is still read");
        }
    }
}

#[test]
fn conformance_admission_carries_the_key_person_and_home() {
    let case = cases("hl7/")
        .into_iter()
        .find(|c| c.name == "hl7/a01_admit_iso2022jp.hl7")
        .expect("the A01 admission");
    let patient = event_of(&case).data.patient;
    assert_eq!(
        patient.address,
        Some(Address {
            postal_code: Some("100-0001".to_owned()),
            text: Some("東京都架空市架空町1-2-3".to_owned()),
        })
    );
    assert_eq!(patient.phone.as_deref(), Some("03-0000-0000"));
    assert_eq!(
        patient.key_person,
        Some(RelatedPerson {
            name: Some("架空 一郎".to_owned()),
            relationship: Some("息子".to_owned()),
            phone: Some("090-0000-0000".to_owned()),
        })
    );
}

// MSH-18 missing or wrong: what the bytes decide is decoded and said so.

/// `raw` with `MSH-18` set to `value` (the conformance headers are ASCII).
fn with_msh18(raw: &[u8], value: &str) -> Vec<u8> {
    let end = raw
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(raw.len());
    let mut fields: Vec<&[u8]> = raw[..end].split(|&b| b == b'|').collect();
    while fields.len() < 18 {
        fields.push(b"");
    }
    fields[17] = value.as_bytes();
    let mut out = fields.join(&b'|');
    out.extend_from_slice(&raw[end..]);
    out
}

#[test]
fn conformance_messages_as_sent_assume_nothing() {
    for case in cases("hl7/") {
        assert_eq!(
            event_of(&case).data.origin.assumed_charset,
            None,
            "{}",
            case.name
        );
    }
}

#[test]
fn conformance_messages_with_msh18_missing_or_wrong_keep_every_fact() {
    let mut failures = Vec::new();
    for case in cases("hl7/") {
        let sent = sent_msh_field(&case.raw, 18);
        let iso2022jp = case.raw.contains(&0x1b);
        assert_eq!(
            iso2022jp,
            sent == "~ISO IR87",
            "{}: MSH-18 {sent}",
            case.name
        );
        let variants: Vec<(String, Vec<u8>, &str)> = if iso2022jp {
            vec![
                (
                    "MSH-18 emptied".into(),
                    with_msh18(&case.raw, ""),
                    "ISO-2022-JP (MSH-18 empty)",
                ),
                (
                    "declared UTF-8".into(),
                    with_msh18(&case.raw, "UNICODE UTF-8"),
                    "ISO-2022-JP (MSH-18 UNICODE UTF-8)",
                ),
                (
                    "declared ASCII".into(),
                    with_msh18(&case.raw, "ASCII"),
                    "ISO-2022-JP (MSH-18 ASCII)",
                ),
            ]
        } else {
            let mut bom = b"\xEF\xBB\xBF".to_vec();
            bom.extend_from_slice(&with_msh18(&case.raw, ""));
            vec![
                (
                    "MSH-18 emptied".into(),
                    with_msh18(&case.raw, ""),
                    "UTF-8 (undeclared)",
                ),
                (
                    "declared ISO-2022-JP".into(),
                    with_msh18(&case.raw, "~ISO IR87"),
                    "UTF-8 (MSH-18 ~ISO IR87)",
                ),
                ("MSH-18 emptied, with a BOM".into(), bom, "UTF-8 (BOM)"),
            ]
        };
        for (how, raw, assumed) in variants {
            let event = match normalize(&raw) {
                Ok(event) => event,
                Err(e) => {
                    failures.push(format!("{} {how}: refused: {e}", case.name));
                    continue;
                }
            };
            let (_, problems) = check_case(&event, &case.facts);
            failures.extend(
                problems
                    .into_iter()
                    .map(|p| format!("{} {how}: {p}", case.name)),
            );
            if event.data.origin.assumed_charset.as_deref() != Some(assumed) {
                failures.push(format!(
                    "{} {how}: assumed {:?}, expected {assumed:?}",
                    case.name, event.data.origin.assumed_charset
                ));
            }
            let violations = schema_violations(&event);
            failures.extend(
                violations
                    .into_iter()
                    .map(|v| format!("{} {how}: {v}", case.name)),
            );
            assert_eq!(
                event.data.origin.raw_sha256,
                renkei_sdk::Origin::sha256_hex(&raw)
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn shift_jis_bytes_stay_refused_whatever_msh18_says() {
    let case = cases("bad/")
        .into_iter()
        .find(|c| c.name == "bad/sjis_declared_utf8.hl7")
        .expect("the Shift_JIS case");
    for msh18 in ["UNICODE UTF-8", "", "ASCII", "~ISO IR87"] {
        let raw = with_msh18(&case.raw, msh18);
        let err = match normalize(&raw) {
            Ok(event) => panic!("MSH-18 {msh18:?}: accepted as {}", event.event_type),
            Err(err) => err,
        };
        let shown = err.to_string();
        assert_eq!(
            err.location.as_deref(),
            Some("MSH-18"),
            "{msh18:?}: {shown}"
        );
        assert!(shown.contains("Shift_JIS"), "{msh18:?}: {shown}");
        for data in PATIENT {
            assert!(
                !shown.contains(data),
                "{msh18:?}: repeats `{data}`: {shown}"
            );
        }
    }
    // Declared as what it is, it is read.
    let event = event_of(&Case {
        name: "sjis relabelled".into(),
        raw: with_msh18(&case.raw, "SHIFT_JIS"),
        facts: Map::new(),
    });
    assert_eq!(
        event.data.patient.name.and_then(|n| n.kanji).as_deref(),
        Some("架空 花子")
    );
    assert_eq!(event.data.origin.assumed_charset, None);
}
