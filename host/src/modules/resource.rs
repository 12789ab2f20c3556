//! The `ReconcileModule` custom resource: how users upload a policy module to a running host.

use std::borrow::Cow;

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of our resources.
pub const GROUP: &str = "policy.wasm-replicaset.dev";

/// A policy module for the ReplicaSet controller. The host validates it (compiles it, checks the
/// WIT world, runs the conformance fixtures) and then serves it (`mode: Active`) or runs it beside
/// the active module without applying its plans (`mode: Shadow`).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "policy.wasm-replicaset.dev",
    version = "v1alpha1",
    kind = "ReconcileModule",
    plural = "reconcilemodules",
    shortname = "rmod",
    namespaced,
    status = "ReconcileModuleStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.shortDigest"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileModuleSpec {
    /// Where the component's bytes are.
    pub module: ModuleSource,
    /// `Active` serves the module; `Shadow` runs it on the same snapshots as the active module and
    /// only reports how its plans differ.
    #[serde(default)]
    pub mode: Mode,
}

/// The component's bytes: inline, or in a ConfigMap's `binaryData` (for modules near the 1 MiB
/// object size limit). Exactly one must be set.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSource {
    /// The component, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<Base64>,
    /// A key of a ConfigMap's `binaryData` in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapKey>,
}

/// Bytes written as base64 (OpenAPI `format: byte`, which the API server validates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base64(pub Vec<u8>);

impl Serialize for Base64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text.trim()).map(Base64).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Base64 {
    fn schema_name() -> Cow<'static, str> {
        "Base64".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "byte"})
    }
}

/// A key of a ConfigMap.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKey {
    /// The ConfigMap's name.
    pub name: String,
    /// The key in its `binaryData`.
    pub key: String,
}

/// How the host uses a module.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Mode {
    /// Serve it: its plans are applied.
    #[default]
    Active,
    /// Run it beside the active module on the same snapshots; never apply its plans.
    Shadow,
}

/// Where a module stands.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted; being fetched, compiled and checked (or waiting: superseded by a newer module).
    Pending,
    /// Serving every sync.
    Active,
    /// Running beside the active module; its plans are compared, never applied.
    Shadow,
    /// Failed validation; the message says why. The previous module keeps serving.
    Rejected,
    /// Was active, then failed (or a rollback was requested); the host went back to the last
    /// good module.
    RolledBack,
}

/// What the host reports about a module.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileModuleStatus {
    /// Where the module stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `sha256:<hex>` of the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The first 12 hex digits of the digest (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_digest: Option<String>,
    /// The WIT contract version the component implements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_version: Option<String>,
    /// One line for people: why it was rejected or rolled back, what it is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When it started serving (or shadowing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_since: Option<Time>,
    /// `Validated` and `Serving`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// For `Shadow` modules: how often its plans agreed with the active module's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSummary>,
    /// For `RolledBack` modules: the ReplicaSet key whose sync failed last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_key: Option<String>,
}

/// What shadowing found.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowSummary {
    /// Syncs where both plans were the same.
    pub agreements: u64,
    /// Syncs where they differed.
    pub differences: u64,
    /// Syncs where the shadow module failed.
    pub errors: u64,
    /// A ReplicaSet key where the plans differed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example_key: Option<String>,
    /// How they differed there, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example_difference: Option<String>,
}

/// The CRD as YAML (what `wasm-replicaset crd` prints and `deploy/crd.yaml` holds).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = ReconcileModule::crd();
    format!(
        "# Generated by `wasm-replicaset crd`; do not edit (a test fails when this file is stale).\n{}",
        serde_yaml::to_string(&crd).expect("the CRD serializes")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_crd_is_what_host_crd_prints() {
        let committed = include_str!("../../../deploy/crd.yaml");
        assert!(committed == crd_yaml(), "deploy/crd.yaml is stale: run `cargo run -- crd > deploy/crd.yaml`");
    }

    #[test]
    fn module_bytes_round_trip_as_base64() {
        let spec = ReconcileModuleSpec {
            module: ModuleSource { inline: Some(Base64(vec![0, 97, 115, 109])), config_map: None },
            mode: Mode::Shadow,
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json, serde_json::json!({"module": {"inline": "AGFzbQ=="}, "mode": "Shadow"}));
        let back: ReconcileModuleSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back.module.inline, Some(Base64(vec![0, 97, 115, 109])));
    }
}
