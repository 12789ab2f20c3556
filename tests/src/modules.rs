//! Hot-swap helpers: install the ReconcileModule CRD, push a module, wait for the host's verdict.

use std::time::Duration;

use anyhow::{Context, Result};
use host::modules::resource::{
    Base64, ConfigMapKey, Mode, ModuleSource, Phase, ReconcileModule, ReconcileModuleSpec, ReconcileModuleStatus,
};
use k8s_openapi::{
    ByteString, api::core::v1::ConfigMap,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, CustomResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use tokio::sync::OnceCell;

use crate::{TestNamespace, eventually};

static CRD: OnceCell<()> = OnceCell::const_new();

/// Installs the ReconcileModule CRD on the shared control plane (once per test binary) and waits
/// until the API server serves it.
pub async fn install_crd(client: &kube::Client) -> Result<()> {
    CRD.get_or_try_init(|| apply_crd(client)).await.copied()
}

/// Applies the ReconcileModule CRD on the control plane `client` talks to and waits until the API
/// server serves it (every call; [`install_crd`] does it once per test binary).
pub async fn apply_crd(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ReconcileModule::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(&name, &PatchParams::apply("tests").force(), &Patch::Apply(&crd)).await.context("applying the CRD")?;
    eventually("the ReconcileModule CRD to be established", Duration::from_secs(30), || async {
        let crd = crds.get(&name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        Ok(established.then_some(()))
    })
    .await
}

/// Creates ReconcileModule `name` in `ns` holding `bytes` inline, in `mode`.
pub async fn push(ns: &TestNamespace, name: &str, bytes: &[u8], mode: Mode) -> Result<ReconcileModule> {
    let spec =
        ReconcileModuleSpec { module: ModuleSource { inline: Some(Base64(bytes.to_vec())), config_map: None }, mode };
    Ok(ns.api::<ReconcileModule>().create(&PostParams::default(), &ReconcileModule::new(name, spec)).await?)
}

/// Stores `bytes` in ConfigMap `config_map` (key `module.wasm`) and creates ReconcileModule `name`
/// referring to it, in `mode` — the path `wasm-replicaset module push` takes for large modules.
pub async fn push_via_config_map(
    ns: &TestNamespace,
    name: &str,
    config_map: &str,
    bytes: &[u8],
    mode: Mode,
) -> Result<ReconcileModule> {
    let cm = ConfigMap {
        metadata: ObjectMeta { name: Some(config_map.into()), ..Default::default() },
        binary_data: Some([("module.wasm".to_string(), ByteString(bytes.to_vec()))].into()),
        ..Default::default()
    };
    ns.api::<ConfigMap>().create(&PostParams::default(), &cm).await?;
    let source = ModuleSource {
        inline: None,
        config_map: Some(ConfigMapKey { name: config_map.into(), key: "module.wasm".into() }),
    };
    let spec = ReconcileModuleSpec { module: source, mode };
    Ok(ns.api::<ReconcileModule>().create(&PostParams::default(), &ReconcileModule::new(name, spec)).await?)
}

/// Waits until the host reports `phase` for the current generation of `name`; returns its status.
pub async fn wait_phase(
    ns: &TestNamespace,
    name: &str,
    phase: Phase,
    timeout: Duration,
) -> Result<ReconcileModuleStatus> {
    let api = ns.api::<ReconcileModule>();
    eventually(&format!("ReconcileModule {name} to be {phase:?}"), timeout, || async {
        let obj = api.get(name).await?;
        let status = obj.status.unwrap_or_default();
        let current = status.observed_generation == obj.metadata.generation;
        Ok((current && status.phase == Some(phase)).then_some(status))
    })
    .await
}
