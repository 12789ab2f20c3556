//! Fixtures shared by the recorder and correlator tests: a fixed start time and ReplicaSet Events.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, ObjectReference};

use super::{EventType, make::make_event};

pub(super) const COMPONENT: &str = "replicaset-controller";

pub(super) fn t0() -> Timestamp {
    "2026-01-02T03:04:05Z".parse().unwrap()
}

/// How the ReplicaSet controller refers to its ReplicaSet (`ref.GetReference`).
pub(super) fn rs_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("ReplicaSet".into()),
        namespace: Some("default".into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        resource_version: Some("7".into()),
        field_path: None,
    }
}

pub(super) fn event_at(reason: &str, message: &str, now: Timestamp) -> Event {
    make_event(&rs_ref("web"), EventType::Normal, reason, message.into(), COMPONENT, now)
}
