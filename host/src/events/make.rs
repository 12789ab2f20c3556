//! Builds new Events and names them, as client-go's `makeEvent` and `GenerateEventName` do.

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use super::EventType;

/// `recorderImpl.makeEvent` plus what `generateEvent` sets: a new Event with count 1 stamped `now`.
pub(super) fn make_event(
    regarding: &ObjectReference,
    event_type: EventType,
    reason: &str,
    message: String,
    component: &str,
    now: Timestamp,
) -> Event {
    let namespace = regarding.namespace.clone().filter(|ns| !ns.is_empty()).unwrap_or_else(|| "default".to_owned());
    Event {
        metadata: ObjectMeta {
            name: Some(generate_event_name(str_of(regarding.name.as_ref()), now)),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        involved_object: regarding.clone(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        type_: Some(event_type.as_str().to_owned()),
        source: Some(EventSource { component: Some(component.to_owned()), host: None }),
        // `ReportingController = source.Component`, `ReportingInstance = source.Host` (empty here);
        // Go sends the empty instance because the field has no omitempty.
        reporting_component: Some(component.to_owned()),
        reporting_instance: Some(String::new()),
        ..Event::default()
    }
}

/// `util.GenerateEventName`: `<name>.<unix nanos in hex>`, or a random UUID if that is not a valid
/// DNS subdomain (an object name can be valid for its kind but not for an Event; issues.k8s.io/127594).
pub(super) fn generate_event_name(name: &str, now: Timestamp) -> String {
    let candidate = format!("{name}.{}", go_hex(crate::time::timestamp_nanos(now)));
    if is_dns1123_subdomain(&candidate) { candidate } else { crate::random::uuid_v4() }
}

/// Go's `%x` of an int64: lowercase hex with a leading `-` for negatives (not two's complement).
pub(super) fn go_hex(value: i64) -> String {
    if value < 0 { format!("-{:x}", value.unsigned_abs()) } else { format!("{value:x}") }
}

/// `validation.IsDNS1123Subdomain`: at most 253 characters of dot-separated labels, each of
/// lowercase alphanumerics and `-`, starting and ending with an alphanumeric.
fn is_dns1123_subdomain(value: &str) -> bool {
    let label_ok = |label: &str| {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        label.starts_with(alnum) && label.ends_with(alnum) && label.chars().all(|c| alnum(c) || c == '-')
    };
    value.len() <= 253 && value.split('.').all(label_ok)
}

pub(super) fn str_of(value: Option<&String>) -> &str {
    value.map_or("", String::as_str)
}

// === tests ===

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::events::testkit::{COMPONENT, event_at, rs_ref, t0};

    // --- building Events ---

    #[test]
    fn make_event_builds_what_client_go_make_event_builds() {
        let event = event_at("SuccessfulCreate", "Created pod: web-a", t0());
        let nanos = format!("{:x}", t0().as_nanosecond());
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": { "name": format!("web.{nanos}"), "namespace": "default" },
                "involvedObject": {
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "namespace": "default",
                    "name": "web", "uid": "uid-web", "resourceVersion": "7"
                },
                "reason": "SuccessfulCreate",
                "message": "Created pod: web-a",
                "source": { "component": COMPONENT },
                "firstTimestamp": "2026-01-02T03:04:05Z",
                "lastTimestamp": "2026-01-02T03:04:05Z",
                "count": 1,
                "type": "Normal",
                "reportingComponent": COMPONENT,
                "reportingInstance": ""
            })
        );
    }

    #[test]
    fn make_event_puts_events_about_namespaceless_objects_in_default() {
        let mut reference = rs_ref("web");
        reference.namespace = None;
        let event = make_event(&reference, EventType::Warning, "R", "m".into(), COMPONENT, t0());
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
    }

    #[test]
    fn event_names_fall_back_to_a_uuid_when_not_a_dns_subdomain() {
        let name = generate_event_name("Web_Upper", t0());
        assert_eq!(name.len(), 36, "{name}");
        assert_eq!(name.match_indices('-').map(|(i, _)| i).collect::<Vec<_>>(), [8, 13, 18, 23]);
        assert_eq!(&name[14..15], "4", "version 4: {name}");
        assert!("89ab".contains(&name[19..20]), "RFC 4122 variant: {name}");
        assert!(generate_event_name("web-1.example", t0()).starts_with("web-1.example."));
    }

    #[test]
    fn dns_subdomain_validation_matches_apimachinery() {
        for valid in ["a", "web", "web-1.abc", "0.1", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(valid), "{valid}");
        }
        for invalid in ["", "Web", "web_1", "-web", "web-", "a..b", ".a", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(invalid), "{invalid}");
        }
    }

    #[test]
    fn go_hex_writes_negative_numbers_with_a_sign() {
        assert_eq!(go_hex(255), "ff");
        assert_eq!(go_hex(-255), "-ff");
        assert_eq!(go_hex(i64::MIN), "-8000000000000000");
    }
}
