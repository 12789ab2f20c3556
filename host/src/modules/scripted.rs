//! Test support for the module rollout: a [`ModuleApi`] that serves scripted objects and
//! ConfigMaps and records every status patch and event, and a builder for `ReconcileModule`s.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::ResourceExt;

use super::{
    api::ModuleApi,
    resource::{
        Base64, ConfigMapKey, Mode, ModuleSource, Phase, ReconcileModule, ReconcileModuleSpec, ReconcileModuleStatus,
    },
    rollout::ROLLBACK_ANNOTATION,
};
use crate::{apply::recording::api_error, events::EventType};

/// The namespace every test object lives in.
pub(crate) const NAMESPACE: &str = "modules";

/// Serves the objects and ConfigMaps put into it; records patches and events. Clones share
/// the script, so a test keeps one while the manager owns another.
#[derive(Clone, Default)]
pub(crate) struct ScriptedApi(Arc<Mutex<Script>>);

#[derive(Default)]
struct Script {
    objects: HashMap<String, ReconcileModule>,
    config_maps: HashMap<String, BTreeMap<String, ByteString>>,
    patches: Vec<(String, serde_json::Value)>,
    events: Vec<Recorded>,
    fail_patches: bool,
}

/// An event the manager emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// The object's name.
    pub(crate) name: String,
    pub(crate) kind: EventType,
    pub(crate) reason: String,
    pub(crate) message: String,
}

impl ScriptedApi {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().expect("script lock")
    }

    /// `get_object` finds `obj` from now on.
    pub(crate) fn put(&self, obj: &ReconcileModule) {
        self.script().objects.insert(obj.metadata.name.clone().unwrap_or_default(), obj.clone());
    }

    /// `get_object` no longer finds `name`.
    pub(crate) fn remove(&self, name: &str) {
        self.script().objects.remove(name);
    }

    /// ConfigMap `name` holds `bytes` under `key`.
    pub(crate) fn put_config_map(&self, name: &str, key: &str, bytes: &[u8]) {
        let data = BTreeMap::from([(key.to_string(), ByteString(bytes.to_vec()))]);
        self.script().config_maps.insert(name.to_string(), data);
    }

    /// Status patches fail with a 500 while `fail` is set.
    pub(crate) fn fail_patches(&self, fail: bool) {
        self.script().fail_patches = fail;
    }

    /// Every status patch so far: object name and body.
    pub(crate) fn patches(&self) -> Vec<(String, serde_json::Value)> {
        self.script().patches.clone()
    }

    /// The statuses written to `name`, oldest first (shadow-only patches left out).
    pub(crate) fn statuses(&self, name: &str) -> Vec<ReconcileModuleStatus> {
        self.patches()
            .into_iter()
            .filter(|(n, body)| n == name && body["status"].get("phase").is_some())
            .map(|(_, body)| serde_json::from_value(body["status"].clone()).expect("a status"))
            .collect()
    }

    /// The last status written to `name`, if any.
    pub(crate) fn status(&self, name: &str) -> Option<ReconcileModuleStatus> {
        self.statuses(name).pop()
    }

    /// The phase of the last status written to `name`, if any.
    pub(crate) fn phase(&self, name: &str) -> Option<Phase> {
        self.status(name).and_then(|s| s.phase)
    }

    /// The shadow counters written to `name`, oldest first.
    pub(crate) fn shadow_reports(&self, name: &str) -> Vec<serde_json::Value> {
        self.patches()
            .into_iter()
            .filter(|(n, body)| n == name && body["status"].get("shadow").is_some())
            .map(|(_, body)| body["status"]["shadow"].clone())
            .collect()
    }

    /// Every event so far.
    pub(crate) fn events(&self) -> Vec<Recorded> {
        self.script().events.clone()
    }
}

impl ModuleApi for ScriptedApi {
    async fn get_object(&self, name: &str) -> Result<ReconcileModule, kube::Error> {
        self.script().objects.get(name).cloned().ok_or_else(|| api_error(404, "not found"))
    }

    async fn config_map_binary_data(&self, name: &str) -> Result<Option<BTreeMap<String, ByteString>>, kube::Error> {
        Ok(self.script().config_maps.get(name).cloned())
    }

    async fn patch_status(&self, name: &str, patch: &serde_json::Value) -> Result<(), kube::Error> {
        let mut script = self.script();
        if script.fail_patches {
            return Err(api_error(500, "etcd is having a bad day"));
        }
        script.patches.push((name.to_string(), patch.clone()));
        Ok(())
    }

    fn event(&self, regarding: &ObjectReference, kind: EventType, reason: &str, message: String) {
        let name = regarding.name.clone().unwrap_or_default();
        self.script().events.push(Recorded { name, kind, reason: reason.to_string(), message });
    }
}

// === object builder ===

/// A `ReconcileModule` named `name` (UID `uid-<name>`, generation 1, created at second 0) with
/// `bytes` inline, in mode `Active`.
pub(crate) fn object(name: &str, bytes: &[u8]) -> ObjectBuilder {
    let mut obj = ReconcileModule::new(
        name,
        ReconcileModuleSpec {
            module: ModuleSource { inline: Some(Base64(bytes.to_vec())), config_map: None },
            mode: Mode::Active,
        },
    );
    obj.metadata = ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(NAMESPACE.to_string()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        resource_version: Some("1".to_string()),
        creation_timestamp: Some(Time(Timestamp::UNIX_EPOCH)),
        ..ObjectMeta::default()
    };
    ObjectBuilder(obj)
}

/// Changes a test object; `build` returns it.
pub(crate) struct ObjectBuilder(ReconcileModule);

impl ObjectBuilder {
    /// Runs beside the active module instead of serving.
    pub(crate) fn shadow(mut self) -> Self {
        self.0.spec.mode = Mode::Shadow;
        self
    }

    /// At `generation`.
    pub(crate) fn generation(mut self, generation: i64) -> Self {
        self.0.metadata.generation = Some(generation);
        self
    }

    /// With another UID (a re-created object).
    pub(crate) fn uid(mut self, uid: &str) -> Self {
        self.0.metadata.uid = Some(uid.to_string());
        self
    }

    /// Created `seconds` after the epoch (relists apply the oldest first).
    pub(crate) fn created_at(mut self, seconds: i64) -> Self {
        let at = Timestamp::from_second(seconds).expect("a valid timestamp");
        self.0.metadata.creation_timestamp = Some(Time(at));
        self
    }

    /// With rollback token `token` (what `module rollback` sets).
    pub(crate) fn rollback_token(mut self, token: &str) -> Self {
        self.0.annotations_mut().insert(ROLLBACK_ANNOTATION.to_string(), token.to_string());
        self
    }

    /// With a status saying it was rolled back at `generation`, because of `message`.
    pub(crate) fn rolled_back_at(mut self, generation: i64, message: &str) -> Self {
        self.0.status = Some(ReconcileModuleStatus {
            phase: Some(Phase::RolledBack),
            observed_generation: Some(generation),
            message: Some(message.to_string()),
            ..ReconcileModuleStatus::default()
        });
        self
    }

    /// Being deleted (a finalizer holds it).
    pub(crate) fn deleting(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        self
    }

    /// Its bytes are in ConfigMap `config_map` under `key`, not inline.
    pub(crate) fn in_config_map(mut self, config_map: &str, key: &str) -> Self {
        self.0.spec.module = ModuleSource {
            inline: None,
            config_map: Some(ConfigMapKey { name: config_map.to_string(), key: key.to_string() }),
        };
        self
    }

    /// The object.
    pub(crate) fn build(self) -> ReconcileModule {
        self.0
    }
}
