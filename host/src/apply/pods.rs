//! The pods a ReplicaSet writes: built from its template with one controller reference
//! (upstream `GetPodFromTemplate`), and the references its events and adoptions carry.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::ReplicaSet,
        core::v1::{ObjectReference, Pod},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

use super::WriteError;

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
pub fn pod_from_template(rs: &ReplicaSet) -> Result<Pod, WriteError> {
    let template = rs.spec.template.as_ref();
    let meta = template.and_then(|t| t.metadata.as_ref());
    let labels: BTreeMap<String, String> = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    if labels.is_empty() {
        return Err(WriteError::NoLabels);
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
        assert!(matches!(pod_from_template(&rs), Err(WriteError::NoLabels)));
    }

    #[test]
    fn a_name_too_long_for_a_dashed_prefix_is_used_as_is() {
        assert_eq!(pods_prefix("web"), "web-");
        let long = "a".repeat(253);
        assert_eq!(pods_prefix(&long), long);
    }
}
