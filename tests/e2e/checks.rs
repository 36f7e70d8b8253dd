//! What every webhook a care office receives must be: validly signed, a canonical
//! event v1 (checked against the repository's JSON Schema) of the expected type, with
//! `webhook-id` = the event id.

use std::sync::OnceLock;

use jsonschema::Validator;

use crate::receiver::Received;

fn validator() -> anyhow::Result<&'static Validator> {
    static VALIDATOR: OnceLock<Result<Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let schema: serde_json::Value =
                serde_json::from_str(renkei_sdk::EVENT_SCHEMA_V1).map_err(|e| e.to_string())?;
            jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&schema)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("the event schema does not compile: {e}"))
}

/// Checks one received webhook; returns its event.
pub fn signed_canonical_event(
    request: &Received,
    event_type: &str,
) -> anyhow::Result<serde_json::Value> {
    if let Err(why) = &request.signature {
        anyhow::bail!("bad signature: {why}");
    }
    anyhow::ensure!(
        request
            .header("content-type")
            .starts_with("application/json"),
        "content-type is `{}`",
        request.header("content-type")
    );
    let event = request.json();
    let errors: Vec<String> = validator()?
        .iter_errors(&event)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    anyhow::ensure!(
        errors.is_empty(),
        "not a canonical event v1: {errors:#?}\n{event:#}"
    );
    anyhow::ensure!(
        event["type"] == event_type,
        "expected a {event_type} event, got {}",
        event["type"]
    );
    anyhow::ensure!(
        event["id"] == request.header("webhook-id"),
        "webhook-id {} is not the event id {}",
        request.header("webhook-id"),
        event["id"]
    );
    Ok(event)
}
