//! The Bundle as read: its kind, its entries, and references resolved between them.
//!
//! A reference resolves to an entry when it equals the entry's `fullUrl`
//! (`urn:uuid:…`, or an absolute URL), or, when it is relative (`Patient/p1`, any
//! `_history/<version>` dropped), names the resource by type and id: its own `id`, or
//! the tail of its `fullUrl`. Contained resources (`#id`) and
//! resources outside the Bundle are not resolved: a message or document must carry
//! what it refers to.

use std::collections::HashMap;

use renkei_sdk::NormalizeError;
use serde_json::{Map, Value};

use crate::outcome::{BUNDLE_ENTRY, BUNDLE_TYPE, ROOT, ROOT_TYPE};
use crate::text::shown_code;

/// A JSON object: a resource or a FHIR element.
pub(crate) type Object = Map<String, Value>;

/// The Bundle types the hub takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BundleKind {
    /// `message`: a MessageHeader first (ADT events).
    Message,
    /// `document`: a Composition first (summaries, referrals).
    Document,
}

/// One resource of the Bundle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    /// Its position in `Bundle.entry`.
    pub index: usize,
    /// `resourceType`.
    pub resource_type: &'a str,
    /// The resource.
    pub resource: &'a Object,
}

impl<'a> Entry<'a> {
    /// A member of the resource.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.resource.get(key)
    }

    /// A trimmed, non-empty string member.
    pub(crate) fn str(&self, key: &str) -> Option<&'a str> {
        string(self.resource.get(key))
    }

    /// The FHIRPath of one of its elements: `Bundle.entry[i].resource.<element>`.
    pub(crate) fn path_to(&self, element: &str) -> String {
        format!("Bundle.entry[{}].resource.{element}", self.index)
    }
}

/// A Bundle of kind message or document, with its entries indexed for references.
pub(crate) struct Bundle<'a> {
    /// The Bundle resource itself.
    pub root: &'a Object,
    /// What kind of Bundle it is.
    pub kind: BundleKind,
    /// Every entry, in order.
    pub entries: Vec<Entry<'a>>,
    by_url: HashMap<&'a str, usize>,
    by_type_id: HashMap<(&'a str, &'a str), usize>,
}

/// A trimmed, non-empty string.
pub(crate) fn string(value: Option<&Value>) -> Option<&str> {
    let text = value?.as_str()?.trim();
    (!text.is_empty()).then_some(text)
}

/// The elements of an array member (none when absent or not an array).
pub(crate) fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The last `Type/id` of a URL or relative reference, without `_history/<version>`.
fn type_and_id(reference: &str) -> Option<(&str, &str)> {
    let reference = reference
        .split_once("/_history/")
        .map_or(reference, |(before, _)| before);
    let (rest, id) = reference.rsplit_once('/')?;
    let resource_type = rest.rsplit_once('/').map_or(rest, |(_, t)| t);
    let looks_like_type = resource_type
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase())
        && resource_type.chars().all(|c| c.is_ascii_alphanumeric());
    (looks_like_type && !id.is_empty()).then_some((resource_type, id))
}

impl<'a> Bundle<'a> {
    /// Reads the root of the body as a message or document Bundle.
    pub(crate) fn read(root: &'a Value) -> Result<Self, NormalizeError> {
        let Some(root) = root.as_object() else {
            return Err(NormalizeError::at(
                ROOT,
                "the body is JSON but not a FHIR resource (a JSON object with a resourceType); send a message or document Bundle",
            ));
        };
        let Some(resource_type) = root.get("resourceType").and_then(Value::as_str) else {
            return Err(NormalizeError::at(
                ROOT_TYPE,
                "the JSON object has no resourceType: it is not a FHIR resource; send a message or document Bundle",
            ));
        };
        if resource_type != "Bundle" {
            let shown = shown_code(resource_type);
            let location = if shown.starts_with('`') && !resource_type.contains(['.', '/']) {
                resource_type.to_owned()
            } else {
                ROOT_TYPE.to_owned()
            };
            return Err(NormalizeError::at(
                location,
                format!(
                    "a {shown} resource is not a Bundle: the hub takes a message Bundle (MessageHeader first) or a document Bundle (Composition first)"
                ),
            ));
        }
        let kind = match root.get("type").map(|t| (t, t.as_str())) {
            None => {
                return Err(NormalizeError::at(
                    BUNDLE_TYPE,
                    "Bundle.type is missing: the hub takes type `message` or `document`",
                ));
            }
            Some((_, Some("message"))) => BundleKind::Message,
            Some((_, Some("document"))) => BundleKind::Document,
            Some((_, Some(other))) => {
                return Err(NormalizeError::at(
                    BUNDLE_TYPE,
                    format!(
                        "a {} Bundle is neither a message nor a document: there is no event to normalise; send type `message` (MessageHeader first) or `document` (Composition first)",
                        shown_code(other)
                    ),
                ));
            }
            Some((_, None)) => {
                return Err(NormalizeError::at(
                    BUNDLE_TYPE,
                    "Bundle.type is not a code: the hub takes type `message` or `document`",
                ));
            }
        };
        let items = match root.get("entry") {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) | None => {
                return Err(NormalizeError::at(
                    BUNDLE_ENTRY,
                    match kind {
                        BundleKind::Message => {
                            "the message Bundle has no entries: it must start with its MessageHeader"
                        }
                        BundleKind::Document => {
                            "the document Bundle has no entries: it must start with its Composition (bdl-11)"
                        }
                    },
                ));
            }
            Some(_) => {
                return Err(NormalizeError::at(
                    BUNDLE_ENTRY,
                    "Bundle.entry is not an array of entries",
                ));
            }
        };
        let mut bundle = Bundle {
            root,
            kind,
            entries: Vec::with_capacity(items.len()),
            by_url: HashMap::with_capacity(items.len()),
            by_type_id: HashMap::with_capacity(items.len() * 2),
        };
        for (index, item) in items.iter().enumerate() {
            let resource = item.get("resource").and_then(Value::as_object);
            let resource_type = resource
                .and_then(|r| r.get("resourceType"))
                .and_then(Value::as_str);
            let (Some(resource), Some(resource_type)) = (resource, resource_type) else {
                return Err(NormalizeError::at(
                    format!("Bundle.entry[{index}].resource"),
                    format!(
                        "entry {index} has no resource with a resourceType: every entry of a message or document Bundle carries one"
                    ),
                ));
            };
            let entry = Entry {
                index,
                resource_type,
                resource,
            };
            if let Some(url) = string(item.get("fullUrl")) {
                bundle.by_url.entry(url).or_insert(index);
                if let Some(key) = type_and_id(url) {
                    bundle.by_type_id.entry(key).or_insert(index);
                }
            }
            if let Some(id) = entry.str("id") {
                bundle
                    .by_type_id
                    .entry((resource_type, id))
                    .or_insert(index);
            }
            bundle.entries.push(entry);
        }
        Ok(bundle)
    }

    /// The first entry (there is always one).
    pub(crate) fn first(&self) -> Option<Entry<'a>> {
        self.entries.first().copied()
    }

    /// The entry a FHIR Reference (an object with `reference`) points at.
    pub(crate) fn resolve(&self, reference: Option<&Value>) -> Option<Entry<'a>> {
        let target = string(reference?.get("reference"))?;
        if target.starts_with('#') {
            return None;
        }
        let index = match self.by_url.get(target) {
            Some(&index) => index,
            // An absolute reference names exactly one fullUrl; a relative one
            // (`Patient/p1`) names the resource by type and id.
            None if target.contains(':') => return None,
            None => *self.by_type_id.get(&type_and_id(target)?)?,
        };
        self.entries.get(index).copied()
    }

    /// [`Bundle::resolve`], keeping only a resource of type `wanted`.
    pub(crate) fn resolve_as(&self, reference: Option<&Value>, wanted: &str) -> Option<Entry<'a>> {
        self.resolve(reference)
            .filter(|entry| entry.resource_type == wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle(value: &Value) -> Bundle<'_> {
        match Bundle::read(value) {
            Ok(bundle) => bundle,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn references_resolve_by_full_url_and_by_type_and_id() {
        let value = json!({
            "resourceType": "Bundle",
            "type": "message",
            "entry": [
                {"fullUrl": "urn:uuid:0a", "resource": {"resourceType": "MessageHeader"}},
                {"fullUrl": "http://ehr.example.jp/fhir/Patient/p1", "resource": {"resourceType": "Patient"}},
                {"resource": {"resourceType": "Encounter", "id": "e1"}},
                {"fullUrl": "urn:uuid:0d", "resource": {"resourceType": "Organization", "id": "o1"}},
            ]
        });
        let bundle = bundle(&value);
        let index = |reference: &str| {
            bundle
                .resolve(Some(&json!({ "reference": reference })))
                .map(|e| e.index)
        };
        assert_eq!(index("urn:uuid:0a"), Some(0));
        assert_eq!(index("http://ehr.example.jp/fhir/Patient/p1"), Some(1));
        assert_eq!(index("Patient/p1"), Some(1));
        assert_eq!(index("Encounter/e1"), Some(2));
        assert_eq!(index("Encounter/e1/_history/3"), Some(2));
        assert_eq!(index("http://other.example.jp/fhir/Encounter/e1"), None);
        assert_eq!(index("Organization/o1"), Some(3));
        assert_eq!(index("Encounter/e2"), None);
        assert_eq!(index("urn:uuid:0b"), None);
        assert_eq!(index("#contained"), None);
        assert_eq!(index(""), None);
        assert!(bundle.resolve(Some(&json!({"display": "x"}))).is_none());
        assert!(
            bundle
                .resolve_as(Some(&json!({"reference": "Patient/p1"})), "Encounter")
                .is_none()
        );
    }

    #[test]
    fn only_message_and_document_bundles_are_read() {
        let refused = |value: Value| match Bundle::read(&value) {
            Ok(_) => panic!("accepted {value}"),
            Err(e) => (e.location.unwrap_or_default(), e.reason),
        };
        let (location, reason) =
            refused(json!({"resourceType": "Bundle", "type": "searchset", "entry": []}));
        assert_eq!(location, "Bundle.type");
        assert!(reason.contains("`searchset` Bundle is neither a message nor a document"));
        let (location, _) = refused(json!({"resourceType": "Patient"}));
        assert_eq!(location, "Patient");
        let (location, reason) = refused(json!({"resourceType": "架空 花子"}));
        assert_eq!(location, "Resource.resourceType");
        assert!(!reason.contains("架空"), "{reason}");
        let (location, _) = refused(json!([1, 2]));
        assert_eq!(location, "Resource");
        let (location, _) = refused(json!({"resourceType": "Bundle", "type": "document"}));
        assert_eq!(location, "Bundle.entry");
        let (location, _) = refused(
            json!({"resourceType": "Bundle", "type": "document", "entry": [{"fullUrl": "x"}]}),
        );
        assert_eq!(location, "Bundle.entry[0].resource");
    }
}
