//! Pod writes on behalf of a ReplicaSet — create from its template, delete, patch — with
//! upstream's events (`RealPodControl` in `controller_utils.go`).

use std::{collections::BTreeMap, future::Future};

use k8s_openapi::{
    api::{
        apps::v1::ReplicaSet,
        core::v1::{ObjectReference, Pod},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};

use crate::{
    consistency::{ConsistencyStore, Resource},
    events::{EventRecorder, EventType},
    informers::key_of,
};

/// Event reasons, as upstream names them (`controller_utils.go`).
pub const SUCCESSFUL_CREATE: &str = "SuccessfulCreate";
/// A pod creation failed.
pub const FAILED_CREATE: &str = "FailedCreate";
/// A pod was deleted.
pub const SUCCESSFUL_DELETE: &str = "SuccessfulDelete";
/// A pod deletion failed.
pub const FAILED_DELETE: &str = "FailedDelete";

/// Why a pod write failed.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The API server refused or failed the request.
    #[error("{}", api_message(.0))]
    Api(#[from] kube::Error),
    /// The template has no labels, so the pod could never be matched (checked before any call).
    #[error("unable to create pods, no labels")]
    NoLabels,
}

impl PodError {
    /// 404: the pod is already gone.
    pub fn is_not_found(&self) -> bool {
        self.status().is_some_and(|s| s.code == 404)
    }

    /// 422: e.g. a release patch whose UID precondition no longer holds.
    pub fn is_invalid(&self) -> bool {
        self.status().is_some_and(|s| s.code == 422)
    }

    /// The namespace is being deleted (upstream treats such a failed create as success).
    pub fn is_namespace_terminating(&self) -> bool {
        self.status()
            .and_then(|s| s.details.as_ref())
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
    }

    fn status(&self) -> Option<&kube::core::Status> {
        match self {
            Self::Api(kube::Error::Api(status)) => Some(status),
            _ => None,
        }
    }
}

/// The API server's own message for API errors (what client-go's `err.Error()` prints), the
/// error's display otherwise.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// A pod the API server created.
#[derive(Debug, Clone)]
pub struct CreatedPod {
    /// Its generated name.
    pub name: String,
}

/// The pod writes a sync performs. [`KubePodControl`] talks to the API server; tests record.
pub trait PodControl: Send + Sync + 'static {
    /// Creates one pod from `rs`'s template, controlled by `rs`.
    fn create_pod(&self, rs: &ReplicaSet) -> impl Future<Output = Result<CreatedPod, PodError>> + Send;
    /// Deletes pod `name` of `rs`'s namespace.
    fn delete_pod(&self, rs: &ReplicaSet, name: &str) -> impl Future<Output = Result<(), PodError>> + Send;
    /// Applies a strategic-merge patch to pod `namespace/name`.
    fn patch_pod(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> impl Future<Output = Result<(), PodError>> + Send;
}

/// [`PodControl`] against the API server, recording events and the consistency gate's writes.
#[derive(Clone)]
pub struct KubePodControl {
    client: Client,
    events: EventRecorder,
    consistency: ConsistencyStore,
}

impl KubePodControl {
    /// Writes through `client`, reports to `events`, records writes in `consistency`.
    pub fn new(client: Client, events: EventRecorder, consistency: ConsistencyStore) -> Self {
        Self { client, events, consistency }
    }
}

impl PodControl for KubePodControl {
    async fn create_pod(&self, rs: &ReplicaSet) -> Result<CreatedPod, PodError> {
        let pod = pod_from_template(rs)?;
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        match Api::<Pod>::namespaced(self.client.clone(), namespace).create(&PostParams::default(), &pod).await {
            Ok(created) => {
                let name = created.metadata.name.unwrap_or_default();
                if let Some(rv) = created.metadata.resource_version.as_deref() {
                    self.consistency.wrote_at(
                        &key_of(rs),
                        rs.metadata.uid.as_deref().unwrap_or_default(),
                        Resource::Pods,
                        rv,
                    );
                }
                self.events.event(&reference(rs), EventType::Normal, SUCCESSFUL_CREATE, format!("Created pod: {name}"));
                Ok(CreatedPod { name })
            }
            Err(e) => {
                let e = PodError::Api(e);
                // Only send an event if the namespace isn't terminating (upstream createPods).
                if !e.is_namespace_terminating() {
                    self.events.event(
                        &reference(rs),
                        EventType::Warning,
                        FAILED_CREATE,
                        format!("Error creating: {e}"),
                    );
                }
                Err(e)
            }
        }
    }

    async fn delete_pod(&self, rs: &ReplicaSet, name: &str) -> Result<(), PodError> {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        match Api::<Pod>::namespaced(self.client.clone(), namespace).delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                self.events.event(&reference(rs), EventType::Normal, SUCCESSFUL_DELETE, format!("Deleted pod: {name}"));
                Ok(())
            }
            Err(e) => {
                let e = PodError::Api(e);
                // A pod that is already gone is no failure worth an event.
                if !e.is_not_found() {
                    self.events.event(
                        &reference(rs),
                        EventType::Warning,
                        FAILED_DELETE,
                        format!("Error deleting: {e}"),
                    );
                }
                Err(e)
            }
        }
    }

    async fn patch_pod(&self, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<(), PodError> {
        let api = Api::<Pod>::namespaced(self.client.clone(), namespace);
        let patched = api.patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await?;
        // Upstream records the write for the pod's controller after the patch (OnWrite).
        let owner = patched.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true));
        if let (Some(owner), Some(rv)) = (owner, patched.metadata.resource_version.as_deref()) {
            self.consistency.wrote_at(&format!("{namespace}/{}", owner.name), &owner.uid, Resource::Pods, rv);
        }
        Ok(())
    }
}

/// The ReplicaSet as an event's `involvedObject` (client-go's `reference.GetReference`).
pub fn reference(rs: &ReplicaSet) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("ReplicaSet".into()),
        namespace: rs.metadata.namespace.clone(),
        name: rs.metadata.name.clone(),
        uid: rs.metadata.uid.clone(),
        resource_version: rs.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// The controller reference a ReplicaSet puts on its pods (`metav1.NewControllerRef`).
pub fn controller_ref(rs: &ReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.metadata.name.clone().unwrap_or_default(),
        uid: rs.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Upstream `GetPodFromTemplate`: the template's labels, annotations, finalizers and spec,
/// `generateName` from the ReplicaSet's name, and one controller reference.
pub fn pod_from_template(rs: &ReplicaSet) -> Result<Pod, PodError> {
    let template = rs.spec.template.as_ref();
    let meta = template.and_then(|t| t.metadata.as_ref());
    let labels: BTreeMap<String, String> = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    if labels.is_empty() {
        return Err(PodError::NoLabels);
    }
    let name = rs.metadata.name.as_deref().unwrap_or_default();
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(pods_prefix(name)),
            namespace: rs.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(meta.and_then(|m| m.annotations.clone()).unwrap_or_default()),
            finalizers: Some(meta.and_then(|m| m.finalizers.clone()).unwrap_or_default()),
            owner_references: Some(vec![controller_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.and_then(|t| t.spec.clone()),
        status: None,
    })
}

/// Upstream `getPodsPrefix`: `name-` unless that is no longer a valid name prefix (too long).
fn pods_prefix(name: &str) -> String {
    // ValidatePodName(prefix, true) masks the trailing dash and checks a DNS subdomain of at
    // most 253 characters; the name itself already is one, so only the length can fail.
    if name.len() < 253 { format!("{name}-") } else { name.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs() -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "rs-uid", "resourceVersion": "7"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {
                        "labels": {"app": "web", "tier": "front"},
                        "annotations": {"note": "x"},
                        "finalizers": ["example.com/keep"]
                    },
                    "spec": {"containers": [{"name": "app", "image": "nginx"}]}
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_copies_the_template_and_carries_one_controller_reference() {
        let pod = pod_from_template(&rs()).unwrap();
        let meta = &pod.metadata;
        assert_eq!(meta.generate_name.as_deref(), Some("web-"));
        assert_eq!(meta.name, None);
        assert_eq!(meta.namespace.as_deref(), Some("prod"));
        assert_eq!(meta.labels.as_ref().unwrap().len(), 2);
        assert_eq!(meta.annotations.as_ref().unwrap()["note"], "x");
        assert_eq!(meta.finalizers.as_deref(), Some(&["example.com/keep".to_string()][..]));
        let refs = meta.owner_references.as_ref().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!((refs[0].kind.as_str(), refs[0].uid.as_str()), ("ReplicaSet", "rs-uid"));
        assert_eq!((refs[0].controller, refs[0].block_owner_deletion), (Some(true), Some(true)));
        assert_eq!(pod.spec.unwrap().containers[0].image.as_deref(), Some("nginx"));
    }

    #[test]
    fn a_template_without_labels_is_refused_before_any_call() {
        let mut rs = rs();
        rs.spec.template.as_mut().unwrap().metadata.as_mut().unwrap().labels = None;
        assert!(matches!(pod_from_template(&rs), Err(PodError::NoLabels)));
    }

    #[test]
    fn a_name_too_long_for_a_dashed_prefix_is_used_as_is() {
        assert_eq!(pods_prefix("web"), "web-");
        let long = "a".repeat(253);
        assert_eq!(pods_prefix(&long), long);
    }

    #[test]
    fn api_errors_are_told_apart_by_code_and_cause() {
        let status = |code: u16, cause: Option<&str>| {
            let json = serde_json::json!({
                "code": code, "message": "nope",
                "details": {"causes": cause.map(|c| vec![serde_json::json!({"reason": c})]).unwrap_or_default()}
            });
            PodError::Api(kube::Error::Api(Box::new(serde_json::from_value(json).unwrap())))
        };
        assert!(status(404, None).is_not_found());
        assert!(status(422, None).is_invalid());
        assert!(status(403, Some("NamespaceTerminating")).is_namespace_terminating());
        assert!(!status(403, None).is_namespace_terminating());
        assert_eq!(status(403, None).to_string(), "nope");
    }
}

/// A [`PodControl`] that records calls instead of making them (upstream's `FakePodControl`).
#[cfg(test)]
pub(crate) mod recording {
    use std::sync::Mutex;

    use super::*;

    /// Records every call; creations beyond `create_limit` and every call while `fail` is set
    /// fail with a 403 / 500.
    #[derive(Default)]
    pub(crate) struct RecordingPodControl {
        pub(crate) created: Mutex<usize>,
        pub(crate) create_calls: Mutex<usize>,
        pub(crate) deleted: Mutex<Vec<String>>,
        pub(crate) patches: Mutex<Vec<(String, serde_json::Value)>>,
        pub(crate) create_limit: Option<usize>,
        pub(crate) fail: Mutex<bool>,
    }

    pub(crate) fn api_error(code: u16, message: &str) -> PodError {
        let status = serde_json::json!({"code": code, "message": message});
        PodError::Api(kube::Error::Api(Box::new(serde_json::from_value(status).expect("a Status"))))
    }

    impl PodControl for RecordingPodControl {
        async fn create_pod(&self, rs: &ReplicaSet) -> Result<CreatedPod, PodError> {
            pod_from_template(rs)?;
            let call = {
                let mut calls = self.create_calls.lock().unwrap();
                *calls += 1;
                *calls
            };
            if *self.fail.lock().unwrap() || self.create_limit.is_some_and(|limit| call > limit) {
                return Err(api_error(403, "exceeded quota"));
            }
            *self.created.lock().unwrap() += 1;
            Ok(CreatedPod { name: format!("pod-{call}") })
        }

        async fn delete_pod(&self, _rs: &ReplicaSet, name: &str) -> Result<(), PodError> {
            if *self.fail.lock().unwrap() {
                return Err(api_error(500, "fake error"));
            }
            self.deleted.lock().unwrap().push(name.to_string());
            Ok(())
        }

        async fn patch_pod(&self, _namespace: &str, name: &str, patch: &serde_json::Value) -> Result<(), PodError> {
            self.patches.lock().unwrap().push((name.to_string(), patch.clone()));
            if *self.fail.lock().unwrap() {
                return Err(api_error(500, "fake Error"));
            }
            Ok(())
        }
    }
}
