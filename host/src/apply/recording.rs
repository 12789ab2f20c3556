//! An [`ApiCalls`] that records every request instead of sending it (upstream's `FakePodControl`
//! and fake clientset in one), failing on request.

use std::sync::Mutex;

use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    core::v1::{ObjectReference, Pod},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::ApiCalls;
use crate::events::EventType;

/// Records calls. Pod creations beyond `create_limit`, and every pod call while `fail` is set,
/// fail with a 403 (create) or 500 (delete, patch); status PUTs fail with a 409 while
/// `fail_puts` is positive; a GET returns `live`.
#[derive(Default)]
pub(crate) struct RecordingApi {
    pub(crate) created: Mutex<usize>,
    pub(crate) create_calls: Mutex<usize>,
    pub(crate) deleted: Mutex<Vec<String>>,
    pub(crate) patches: Mutex<Vec<(String, serde_json::Value)>>,
    pub(crate) puts: Mutex<Vec<ReplicaSet>>,
    pub(crate) gets: Mutex<usize>,
    pub(crate) events: Mutex<Vec<(EventType, &'static str, String)>>,
    pub(crate) create_limit: Option<usize>,
    pub(crate) fail: Mutex<bool>,
    pub(crate) fail_puts: Mutex<usize>,
    pub(crate) live: Mutex<Option<ReplicaSet>>,
    /// What `pods_version` answers.
    pub(crate) pods_version: Mutex<u64>,
}

/// An API error with `code` and `message`, as the API server sends it.
pub(crate) fn api_error(code: u16, message: &str) -> kube::Error {
    let status = serde_json::json!({"code": code, "message": message});
    kube::Error::Api(Box::new(serde_json::from_value(status).expect("a Status")))
}

impl RecordingApi {
    fn failing(&self) -> bool {
        *self.fail.lock().unwrap()
    }
}

impl ApiCalls for RecordingApi {
    async fn create_pod(&self, pod: &Pod) -> Result<Pod, kube::Error> {
        let call = {
            let mut calls = self.create_calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        if self.failing() || self.create_limit.is_some_and(|limit| call > limit) {
            return Err(api_error(403, "exceeded quota"));
        }
        *self.created.lock().unwrap() += 1;
        let mut created = pod.clone();
        created.metadata.name = Some(format!("pod-{call}"));
        Ok(created)
    }

    async fn delete_pod(&self, _namespace: &str, name: &str) -> Result<(), kube::Error> {
        if self.failing() {
            return Err(api_error(500, "fake error"));
        }
        self.deleted.lock().unwrap().push(name.to_string());
        Ok(())
    }

    async fn patch_pod(&self, namespace: &str, name: &str, patch: &serde_json::Value) -> Result<Pod, kube::Error> {
        self.patches.lock().unwrap().push((name.to_string(), patch.clone()));
        if self.failing() {
            return Err(api_error(500, "fake Error"));
        }
        let mut pod = Pod::default();
        (pod.metadata.namespace, pod.metadata.name) = (Some(namespace.into()), Some(name.into()));
        Ok(pod)
    }

    async fn get_replica_set(&self, _namespace: &str, _name: &str) -> Result<ReplicaSet, kube::Error> {
        *self.gets.lock().unwrap() += 1;
        Ok(self.live.lock().unwrap().clone().expect("a live ReplicaSet to return"))
    }

    async fn pods_version(&self, _namespace: &str, _selector: &LabelSelector) -> Result<u64, kube::Error> {
        *self.gets.lock().unwrap() += 1;
        Ok(*self.pods_version.lock().unwrap())
    }

    async fn replace_status(&self, rs: &ReplicaSet) -> Result<ReplicaSet, kube::Error> {
        self.puts.lock().unwrap().push(rs.clone());
        let mut fail = self.fail_puts.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(api_error(409, "conflict"));
        }
        Ok(rs.clone())
    }

    fn event(&self, _regarding: &ObjectReference, event_type: EventType, reason: &'static str, message: String) {
        self.events.lock().unwrap().push((event_type, reason, message));
    }
}
