//! The checks of a registry document that need no database: one pass over the whole
//! document collecting every problem, each named by its place (`endpoints[3].url`).
//!
//! Ids end up in keys (`participant/endpoint`), in CLI output and in the audit log, so
//! they must be what they look like: not empty or blank, no control characters (a
//! newline in an id forged a line of `renkei admin apply` output), no bidirectional
//! or invisible characters, no leading or trailing space and no `/`. Every string field
//! is refused with a NUL character (PostgreSQL cannot store one). Endpoint URLs must
//! be absolute http(s) URLs with a host, a valid port and no credentials.

use std::collections::HashMap;
use std::fmt::Write;

use url::Url;

use super::document::{Problem, RegistryDocument};

/// What a character does to text that is shown, if it is one that deceives: controls
/// end lines and move the cursor, bidirectional controls reorder what follows,
/// invisible characters make two different ids look the same.
pub(super) fn deceptive(c: char) -> Option<&'static str> {
    if c.is_control() {
        return Some("a control character");
    }
    match c {
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => Some("a bidirectional control character"),
        '\u{2028}' | '\u{2029}' => Some("a line or paragraph separator"),
        '\u{00AD}'
        | '\u{034F}'
        | '\u{115F}'
        | '\u{1160}'
        | '\u{17B4}'
        | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200D}'
        | '\u{2060}'..='\u{2064}'
        | '\u{206A}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}' => Some("an invisible (zero-width) character"),
        _ => None,
    }
}

/// A value as it may be shown in a location: deceptive characters escaped, long
/// values cut.
pub(super) fn shown(value: &str) -> String {
    const MAX: usize = 40;
    let mut out = String::new();
    for (n, c) in value.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        if c == '\0' || deceptive(c).is_some() {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

fn first_deceptive(value: &str) -> Option<String> {
    value
        .chars()
        .find_map(|c| deceptive(c).map(|what| format!("contains {what} (U+{:04X})", u32::from(c))))
}

/// The problems found so far.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    fn add(&mut self, location: impl Into<String>, problem: impl Into<String>) {
        self.0.push(Problem {
            location: location.into(),
            problem: problem.into(),
        });
    }

    /// NUL is refused in every string field; returns whether the value is free of it.
    fn no_nul(&mut self, location: &str, value: &str) -> bool {
        if value.contains('\0') {
            self.add(location, "contains a NUL character");
            return false;
        }
        true
    }

    /// A display text (names, roles): no NUL, nothing deceptive.
    fn text(&mut self, location: &str, value: &str) {
        if !self.no_nul(location, value) {
            return;
        }
        if let Some(problem) = first_deceptive(value) {
            self.add(location, problem);
        }
    }

    /// An identifier value (patient ids, identifier values): also not empty or blank
    /// and no space at either end.
    fn value(&mut self, location: &str, value: &str) -> bool {
        if !self.no_nul(location, value) {
            return false;
        }
        let problem = if value.is_empty() {
            Some("must not be empty".to_owned())
        } else if value.trim().is_empty() {
            Some("must not be only spaces".to_owned())
        } else if let Some(problem) = first_deceptive(value) {
            Some(problem)
        } else if value.trim() != value {
            Some("must not begin or end with a space".to_owned())
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.add(location, problem);
                false
            }
            None => true,
        }
    }

    /// An id that is part of a key: a value without `/`.
    fn id(&mut self, location: &str, value: &str) -> bool {
        if !self.value(location, value) {
            return false;
        }
        if value.contains('/') {
            self.add(
                location,
                "must not contain `/` (it separates the parts of a key, as in participant/endpoint)",
            );
            return false;
        }
        true
    }

    /// A 10-digit facility code.
    fn code(&mut self, location: &str, value: &str) {
        if self.no_nul(location, value) && !is_facility_code(value) {
            self.add(location, "must be 10 digits");
        }
    }

    /// An endpoint URL; the parsed URL when it is acceptable.
    fn url(&mut self, location: &str, value: &str) -> Option<Url> {
        if !self.no_nul(location, value) {
            return None;
        }
        if let Some(problem) = first_deceptive(value) {
            self.add(location, problem);
            return None;
        }
        if value.contains(char::is_whitespace) {
            self.add(
                location,
                "must not contain spaces (percent-encode them as %20)",
            );
            return None;
        }
        let problem = match Url::parse(value) {
            Err(url::ParseError::EmptyHost) => "has no host".to_owned(),
            Err(url::ParseError::InvalidPort) => {
                "has an invalid port (give 1 to 65535, or none)".to_owned()
            }
            Err(url::ParseError::RelativeUrlWithoutBase) => {
                "must be an absolute http(s):// URL".to_owned()
            }
            Err(url::ParseError::InvalidIpv4Address | url::ParseError::InvalidIpv6Address) => {
                "has an invalid IP address as its host".to_owned()
            }
            Err(url::ParseError::IdnaError | url::ParseError::InvalidDomainCharacter) => {
                "has an invalid host name".to_owned()
            }
            Err(e) => format!("is not a valid URL: {e}"),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                "must be an http(s):// URL".to_owned()
            }
            Ok(url) if url.host_str().is_none_or(str::is_empty) => "has no host".to_owned(),
            Ok(url) if url.port() == Some(0) => {
                "has an invalid port (give 1 to 65535, or none)".to_owned()
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                "credentials are not allowed in an endpoint URL (the receiver authenticates \
                 requests by their signature)"
                    .to_owned()
            }
            Ok(url) => return Some(url),
        };
        self.add(location, problem);
        None
    }

    /// Refuses a key seen before in the same document.
    fn unique<K: std::hash::Hash + Eq>(
        &mut self,
        seen: &mut HashMap<K, String>,
        key: K,
        location: &str,
        first: impl FnOnce() -> String,
    ) {
        if let Some(earlier) = seen.get(&key) {
            self.add(
                location,
                format!("is declared twice; the first is {earlier} (remove one)"),
            );
        } else {
            seen.insert(key, first());
        }
    }
}

pub(super) fn is_facility_code(code: &str) -> bool {
    code.len() == 10 && code.bytes().all(|b| b.is_ascii_digit())
}

const FACILITY_KINDS: [&str; 7] = [
    "hospital",
    "clinic",
    "visiting_nursing",
    "care_management",
    "care_facility",
    "pharmacy",
    "other",
];

/// Every problem of the document, in document order per section; the parsed endpoint
/// URLs that are acceptable (index, URL) for the destination check.
pub(super) fn check(doc: &RegistryDocument) -> (Problems, Vec<(usize, Url)>) {
    let mut p = Problems::default();
    let mut urls = Vec::new();

    let mut seen = HashMap::new();
    for (i, f) in doc.facilities.iter().enumerate() {
        let at = format!("facilities[{i}]");
        p.code(&format!("{at}.code"), &f.code);
        p.unique(&mut seen, f.code.as_str(), &format!("{at}.code"), || {
            at.clone()
        });
        p.text(&format!("{at}.name"), &f.name);
        if p.no_nul(&format!("{at}.kind"), &f.kind) && !FACILITY_KINDS.contains(&f.kind.as_str()) {
            p.add(
                format!("{at}.kind"),
                format!(
                    "`{}` is not one of {}",
                    shown(&f.kind),
                    FACILITY_KINDS.join(", ")
                ),
            );
        }
    }

    let mut seen = HashMap::new();
    for (i, x) in doc.participants.iter().enumerate() {
        let at = format!("participants[{i}]");
        if p.id(&format!("{at}.id"), &x.id) {
            p.unique(&mut seen, x.id.as_str(), &format!("{at}.id"), || at.clone());
        }
        p.code(&format!("{at}.facility"), &x.facility);
        p.text(&format!("{at}.name"), &x.name);
    }

    let mut seen = HashMap::new();
    for (i, e) in doc.endpoints.iter().enumerate() {
        let at = format!(
            "endpoints[{i}] ({}/{})",
            shown(&e.participant),
            shown(&e.name)
        );
        let owner = p.id(&format!("{at}.participant"), &e.participant);
        if p.id(&format!("{at}.name"), &e.name) && owner {
            p.unique(
                &mut seen,
                (e.participant.as_str(), e.name.as_str()),
                &format!("{at}.name"),
                || format!("endpoints[{i}]"),
            );
        }
        if let Some(url) = p.url(&format!("{at}.url"), &e.url) {
            urls.push((i, url));
        }
        if e.secrets.is_empty() {
            p.add(format!("{at}.secrets"), "needs at least one whsec_ secret");
        }
        for (j, s) in e.secrets.iter().enumerate() {
            let loc = format!("{at}.secrets[{j}]");
            if p.no_nul(&loc, s)
                && let Err(problem) = crate::delivery::signing::WebhookSecret::parse(s)
            {
                p.add(loc, problem.to_string());
            }
        }
    }

    let mut seen = HashMap::new();
    for (i, s) in doc.subscriptions.iter().enumerate() {
        let at = format!(
            "subscriptions[{i}] ({}/{})",
            shown(&s.participant),
            shown(&s.name)
        );
        let owner = p.id(&format!("{at}.participant"), &s.participant);
        if p.id(&format!("{at}.name"), &s.name) && owner {
            p.unique(
                &mut seen,
                (s.participant.as_str(), s.name.as_str()),
                &format!("{at}.name"),
                || format!("subscriptions[{i}]"),
            );
        }
        let endpoint_ok = p.id(&format!("{at}.endpoint"), &s.endpoint);
        if s.event_types.is_empty() {
            p.add(
                format!("{at}.event_types"),
                "must name at least one event type",
            );
        }
        for (j, t) in s.event_types.iter().enumerate() {
            let loc = format!("{at}.event_types[{j}]");
            if p.no_nul(&loc, t)
                && let Err(e) = t.parse::<renkei_sdk::EventType>()
            {
                p.add(loc, e.to_string());
            }
        }
        for (j, f) in s.source_facilities.iter().enumerate() {
            p.code(&format!("{at}.source_facilities[{j}]"), f);
        }
        // An endpoint of a participant whose endpoints this document declares must be
        // one of them; others are checked against the database when applying.
        let declares_endpoints = doc.endpoints.iter().any(|e| e.participant == s.participant);
        if endpoint_ok
            && declares_endpoints
            && !doc
                .endpoints
                .iter()
                .any(|e| e.participant == s.participant && e.name == s.endpoint)
        {
            p.add(
                format!("{at}.endpoint"),
                format!(
                    "participant {} declares no endpoint `{}`",
                    shown(&s.participant),
                    shown(&s.endpoint)
                ),
            );
        }
    }

    let mut seen = HashMap::new();
    let mut identifiers = HashMap::new();
    for (i, x) in doc.patients.iter().enumerate() {
        let at = format!("patients[{i}]");
        if p.id(&format!("{at}.id"), &x.id) {
            p.unique(&mut seen, x.id.as_str(), &format!("{at}.id"), || at.clone());
        }
        if x.identifiers.is_empty() {
            p.add(format!("{at}.identifiers"), "needs at least one identifier");
        }
        for (j, id) in x.identifiers.iter().enumerate() {
            let loc = format!("{at}.identifiers[{j}]");
            let mut fine = true;
            if let Some(system) = &id.system {
                let sloc = format!("{loc}.system");
                if !p.value(&sloc, system) {
                    fine = false;
                }
            }
            if let Some(facility) = &id.facility {
                let before = p.0.len();
                p.code(&format!("{loc}.facility"), facility);
                fine &= p.0.len() == before;
            }
            if id.resolved_system().is_none() {
                p.add(&loc, "give exactly one of `system` or `facility`");
                fine = false;
            }
            fine &= p.value(&format!("{loc}.value"), &id.value);
            if fine && let Some(system) = id.resolved_system() {
                // The value is patient data: the message names places, not the value.
                p.unique(&mut identifiers, (system, id.value.as_str()), &loc, || {
                    loc.clone()
                });
            }
        }
    }

    let mut seen = HashMap::new();
    for (i, r) in doc.care_relationships.iter().enumerate() {
        let at = format!("care_relationships[{i}]");
        let patient = p.id(&format!("{at}.patient"), &r.patient);
        let participant = p.id(&format!("{at}.participant"), &r.participant);
        if patient && participant {
            p.unique(
                &mut seen,
                (r.patient.as_str(), r.participant.as_str()),
                &at,
                || at.clone(),
            );
        }
        p.text(&format!("{at}.role"), &r.role);
        if r.valid_until.is_some_and(|until| until < r.valid_from) {
            p.add(format!("{at}.valid_until"), "is before valid_from");
        }
    }

    let mut seen = HashMap::new();
    for (i, c) in doc.consents.iter().enumerate() {
        let at = format!("consents[{i}] ({})", shown(&c.id));
        if p.id(&format!("{at}.id"), &c.id) {
            p.unique(&mut seen, c.id.as_str(), &format!("{at}.id"), || {
                format!("consents[{i}]")
            });
        }
        p.id(&format!("{at}.patient"), &c.patient);
        if c.valid_until.is_some_and(|until| until <= c.valid_from) {
            p.add(format!("{at}.valid_until"), "is not after valid_from");
        }
        if c.scope == super::ConsentScope::Facilities && c.facilities.is_empty() {
            p.add(
                format!("{at}.facilities"),
                "a per-facility consent must list the facilities it covers",
            );
        }
        for (j, f) in c.facilities.iter().enumerate() {
            p.code(&format!("{at}.facilities[{j}]"), f);
        }
    }
    (p, urls)
}

/// A URL as shown to operators (`GET /v1/registry`): a user name or password in it is
/// replaced by `********`. Endpoint URLs with credentials are refused when applied, but
/// ones stored before that rule are never shown with them.
pub fn masked_url(url: &str) -> String {
    const MASK: &str = "********";
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.username().is_empty() && parsed.password().is_none() {
                return url.to_owned();
            }
            let masked = (parsed.password().is_none() || parsed.set_password(Some(MASK)).is_ok())
                && (parsed.username().is_empty() || parsed.set_username(MASK).is_ok());
            if masked {
                parsed.to_string()
            } else {
                mask_userinfo_text(url, MASK)
            }
        }
        Err(_) => mask_userinfo_text(url, MASK),
    }
}

/// Masks what sits between `://` and the last `@` of the authority, without parsing.
fn mask_userinfo_text(url: &str, mask: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{mask}{}", &url[..start], &rest[at..]),
        None => url.to_owned(),
    }
}
