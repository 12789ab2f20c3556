//! What the rollout asks to tell an object — an event, then a status — and how such a report
//! becomes the API's `ObjectReference` and `ReconcileModuleStatus`.

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{Resource, ResourceExt};

use super::resource::{Phase, ReconcileModule, ReconcileModuleStatus};
use crate::{events::EventType, sandbox::Digest};

/// An event (optional) and then a status for one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Which object.
    pub to: Target,
    /// The event to emit before the status is written.
    pub event: Option<Note>,
    /// The status to write.
    pub status: StatusReport,
}

/// The object a [`Report`] is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The object as the watch delivered it: the status describes that generation.
    Seen(ObjectRef),
    /// The object of this name as it is now: the shell fetches it first and writes nothing if
    /// that fails (it is the previous serving or shadow object, which may be long gone).
    Named(String),
}

/// What an event or a status needs to know about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
    /// `metadata.generation`: what the status's `observedGeneration` says.
    pub generation: Option<i64>,
}

impl ObjectRef {
    /// The reference to `obj`.
    pub fn of(obj: &ReconcileModule) -> Self {
        Self {
            name: obj.name_any(),
            namespace: obj.namespace(),
            uid: obj.uid(),
            resource_version: obj.resource_version(),
            generation: obj.metadata.generation,
        }
    }
}

/// An event to emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub kind: EventType,
    /// The event's reason.
    pub reason: &'static str,
    /// The event's message.
    pub message: String,
}

/// The status to write: the shell adds the conditions and the observed generation.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// The phase.
    pub phase: Phase,
    /// The module the status describes: its digest and contract version.
    pub module: Option<(Digest, String)>,
    /// One line for people.
    pub message: String,
    /// When it started serving or shadowing.
    pub since: Option<Timestamp>,
    /// For rollbacks after a failure streak: the key whose sync failed last.
    pub failing_key: Option<String>,
}

// === into API objects ===

/// What an event about `target` refers to.
pub fn reference_to(target: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(ReconcileModule::api_version(&()).into_owned()),
        kind: Some("ReconcileModule".into()),
        namespace: target.namespace.clone(),
        name: Some(target.name.clone()),
        uid: target.uid.clone(),
        resource_version: target.resource_version.clone(),
        field_path: None,
    }
}

/// The full status for `report` on `target`, with the `Validated` and `Serving` conditions.
pub fn status_of(target: &ObjectRef, report: StatusReport, now: &Time) -> ReconcileModuleStatus {
    let StatusReport { phase, module, message, since, failing_key } = report;
    let condition = |type_: &str, ok: bool, reason: &str| Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.clone(),
        last_transition_time: now.clone(),
        observed_generation: target.generation,
    };
    let validated = !matches!(phase, Phase::Rejected);
    let serving = matches!(phase, Phase::Active);
    let conditions = vec![
        condition("Validated", validated, if validated { "Passed" } else { "Failed" }),
        condition("Serving", serving, &format!("{phase:?}")),
    ];
    ReconcileModuleStatus {
        phase: Some(phase),
        digest: module.as_ref().map(|(digest, _)| digest.to_string()),
        short_digest: module.as_ref().map(|(digest, _)| digest.short()),
        world_version: module.map(|(_, version)| version),
        message: Some(message),
        observed_generation: target.generation,
        active_since: since.map(Time),
        conditions,
        shadow: None,
        failing_key,
    }
}
