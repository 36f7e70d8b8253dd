//! Standard Webhooks verification as a receiver does it, written from the
//! specification independently of the hub's signing code: the end-to-end tests' and the
//! benchmark's receivers both check every request with it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a `webhook-timestamp` may be from the receiver's clock (the specification
/// suggests five minutes, against replays).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// Standard Webhooks verification: the signed content is `<webhook-id>.<webhook-timestamp>.<body>`,
/// the signature HMAC-SHA256 with the base64-decoded part of the `whsec_` secret, sent
/// base64-encoded as `v1,<signature>`; the header may hold several space-separated
/// signatures (secret rotation), and one valid `v1` signature suffices. The timestamp
/// must be within five minutes of `now` (Unix seconds). `header` looks a request header
/// up by its lower-case name.
pub fn verify_signature<'a>(
    key: &[u8],
    header: impl Fn(&str) -> Option<&'a str>,
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    let get = |name: &str| header(name).ok_or_else(|| format!("no {name} header"));
    let id = get("webhook-id")?;
    let timestamp = get("webhook-timestamp")?;
    let signatures = get("webhook-signature")?;
    let seconds: i64 = timestamp
        .parse()
        .map_err(|_| format!("webhook-timestamp `{timestamp}` is not an integer"))?;
    if (now - seconds).abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(format!(
            "webhook-timestamp {seconds} is too far from now ({now})"
        ));
    }
    for candidate in signatures.split(' ') {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(signature) = STANDARD.decode(encoded) else {
            continue;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        // Constant-time comparison, as a receiver should.
        if mac.verify_slice(&signature).is_ok() {
            return Ok(());
        }
    }
    Err(format!("no valid v1 signature in `{signatures}`"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn lookup<'a>(headers: &'a BTreeMap<String, String>) -> impl Fn(&str) -> Option<&'a str> {
        move |name| headers.get(name).map(String::as_str)
    }

    /// The example of the Standard Webhooks reference libraries.
    #[test]
    fn verifies_the_reference_example() {
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_default();
        let mut headers = BTreeMap::new();
        headers.insert("webhook-id".into(), "msg_p5jXN8AQM9LWM0D4loKWxJek".into());
        headers.insert("webhook-timestamp".into(), "1614265330".into());
        headers.insert(
            "webhook-signature".into(),
            "v1,bm9ldHUjKzFob2VudXRob2VodWUzMjRvdWVvdW9ldTM= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
                .into(),
        );
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            verify_signature(&key, lookup(&headers), body, 1614265330),
            Ok(())
        );
        assert!(verify_signature(&key, lookup(&headers), b"{}", 1614265330).is_err());
        assert!(verify_signature(&key, lookup(&headers), body, 1614265330 + 3600).is_err());
    }
}
