//! Standard Webhooks signing speed: the `webhook-signature` header of a ~1 KB body,
//! with one secret and with two (during a rotation every request is signed twice).
//! Run with `cargo bench -p renkei-hub --bench signing`.

// A bench is a test harness: a bad fixture secret should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use renkei_hub::delivery::signing::{WebhookSecret, signature_header};

/// The secrets of the Standard Webhooks reference vectors and of the hub's own tests.
const SECRETS: [&str; 2] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_dGhpcy1pcy1hLXNlY29uZC1zZWNyZXQta2V5IQ==",
];

/// A canonical-event-shaped JSON body of about 1 KB.
fn body() -> Vec<u8> {
    let mut body = String::from(
        r#"{"specversion":"1.0","id":"0196a3f2-7c41-7d7e-9a4b-3f1e2d5c6b7a","source":"urn:renkei:facility:1319999999","type":"inpatient.admitted","time":"2025-04-10T09:00:00+09:00","datacontenttype":"application/json","data":{"patient":{"identifiers":[{"system":"urn:renkei:facility:1319999999:patient-id","value":"0000482915"}],"name":{"kanji":"架空 花子","kana":"カクウ ハナコ"},"birth_date":"1938-03-15","sex":"female"},"encounter":{"class":"inpatient","admitted_at":"2025-04-10T09:00:00+09:00","location":{"ward":"05","room":"512","bed":"2"},"department":"01","attending":{"id":"D001","name":"医師 次郎"}},"origin":{"format":"hl7v2","sending_system":"HIS01","facility":"1319999999","message_id":"20250410000123","raw_sha256":"#,
    );
    body.push('"');
    body.push_str(&"0123456789abcdef".repeat(4));
    body.push_str(r#""},"note":""#);
    while body.len() < 1021 {
        body.push('x');
    }
    body.push_str(r#""}}"#);
    body.into_bytes()
}

fn signing(c: &mut Criterion) {
    let secrets: Vec<WebhookSecret> = SECRETS
        .iter()
        .map(|s| WebhookSecret::parse(s).unwrap_or_else(|e| panic!("bench secret {s}: {e}")))
        .collect();
    let body = body();
    let mut group = c.benchmark_group("signature_header_1kib");
    group.throughput(Throughput::Elements(1));
    for count in [1, 2] {
        let secrets = &secrets[..count];
        let name = format!("{count}_secret{}", if count == 1 { "" } else { "s" });
        group.bench_function(name, |b| {
            b.iter(|| {
                signature_header(
                    black_box(secrets),
                    black_box("msg_p5jXN8AQM9LWM0D4loKWxJek"),
                    black_box(1_744_245_000),
                    black_box(&body),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, signing);
criterion_main!(benches);
