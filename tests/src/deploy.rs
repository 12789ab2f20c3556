//! Testing `deploy/`: rendering the kustomization and granting its RBAC to a ServiceAccount of a
//! test namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;

use crate::{TestNamespace, eventually};

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Splits a multi-document YAML stream (as `kubectl kustomize` prints) into JSON values, skipping
/// empty documents.
pub fn parse_yaml_stream(text: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value: Value = k8s_openapi::serde::Deserialize::deserialize(document).context("parsing a YAML document")?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// `kubectl kustomize deploy/`, parsed into one JSON value per object.
pub async fn render() -> Result<Vec<Value>> {
    let kubectl = crate::Kubectl::standalone()?;
    parse_yaml_stream(&kubectl.kustomize(&deploy_dir()).await?)
}

/// Renders a kustomization written in `scratch` that takes `deploy/` and adds the named
/// components of `deploy/components/`, as a user's overlay would.
pub async fn render_with_components(scratch: &Path, components: &[&str]) -> Result<Vec<Value>> {
    // kustomize wants relative paths to other kustomization roots.
    let deploy = deploy_dir().canonicalize().context("resolving deploy/")?;
    let scratch = scratch.canonicalize().with_context(|| format!("resolving {}", scratch.display()))?;
    let up = "../".repeat(scratch.components().count() - 1);
    let deploy = format!("{up}{}", deploy.strip_prefix("/").context("deploy/ is not absolute")?.display());
    let components: Vec<String> = components.iter().map(|c| format!("{deploy}/components/{c}")).collect();
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [deploy],
        "components": components,
    });
    std::fs::write(scratch.join("kustomization.yaml"), serde_yaml::to_string(&kustomization)?)?;
    let kubectl = crate::Kubectl::standalone()?;
    parse_yaml_stream(&kubectl.kustomize(&scratch).await?)
}

/// The rendered object of `kind` named `name`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("the rendered manifests have no {kind} {name}"))
}

/// The rendered object of `kind`, which must be the only one of its kind.
pub fn only<'a>(objects: &'a [Value], kind: &str) -> Result<&'a Value> {
    let mut matching = objects.iter().filter(|o| o["kind"] == kind);
    let first = matching.next().with_context(|| format!("the rendered manifests have no {kind}"))?;
    if matching.next().is_some() {
        bail!("the rendered manifests have more than one {kind}");
    }
    Ok(first)
}

/// The deployed RBAC (ClusterRole, ClusterRoleBinding, Role, RoleBinding), rewritten to bind
/// ServiceAccount `account` of `ns` instead of the real one: the Role and RoleBinding move to `ns`
/// (the host's module namespace in tests), the cluster-scoped ones get `ns` in their names so
/// tests sharing a control plane do not overwrite each other's.
#[derive(Debug, Clone)]
pub struct TestRbac {
    /// The deployed ClusterRole's rules under a per-namespace name.
    pub cluster_role: ClusterRole,
    /// Binds `cluster_role` to the test ServiceAccount.
    pub cluster_role_binding: ClusterRoleBinding,
    /// The deployed Role, in the test namespace.
    pub role: Role,
    /// Binds `role` to the test ServiceAccount.
    pub role_binding: RoleBinding,
}

impl TestRbac {
    /// Takes the single ClusterRole/ClusterRoleBinding/Role/RoleBinding of `rendered` and points
    /// them at ServiceAccount `ns/account`.
    pub fn from_rendered(rendered: &[Value], ns: &str, account: &str) -> Result<Self> {
        let subject = Subject {
            kind: "ServiceAccount".into(),
            name: account.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        };
        let mut cluster_role: ClusterRole = serde_json::from_value(only(rendered, "ClusterRole")?.clone())?;
        let mut cluster_role_binding: ClusterRoleBinding =
            serde_json::from_value(only(rendered, "ClusterRoleBinding")?.clone())?;
        let mut role: Role = serde_json::from_value(only(rendered, "Role")?.clone())?;
        let mut role_binding: RoleBinding = serde_json::from_value(only(rendered, "RoleBinding")?.clone())?;

        let cluster_name = format!("{ns}-{}", cluster_role.metadata.name.as_deref().unwrap_or_default());
        cluster_role.metadata.name = Some(cluster_name.clone());
        cluster_role_binding.metadata.name = Some(cluster_name.clone());
        if cluster_role_binding.role_ref.kind != "ClusterRole" {
            bail!("the ClusterRoleBinding refers to a {}", cluster_role_binding.role_ref.kind);
        }
        cluster_role_binding.role_ref.name = cluster_name;
        cluster_role_binding.subjects = Some(vec![subject.clone()]);
        role.metadata.namespace = Some(ns.into());
        role_binding.metadata.namespace = Some(ns.into());
        role_binding.subjects = Some(vec![subject]);
        Ok(Self { cluster_role, cluster_role_binding, role, role_binding })
    }

    /// Creates or updates all four objects (server-side apply, forced) as the admin.
    pub async fn apply(&self, client: &kube::Client) -> Result<()> {
        let params = PatchParams::apply("deploy-tests").force();
        let name = |m: &kube::api::ObjectMeta| m.name.clone().unwrap_or_default();
        let ns = self.role.metadata.namespace.clone().unwrap_or_default();
        Api::<ClusterRole>::all(client.clone())
            .patch(&name(&self.cluster_role.metadata), &params, &Patch::Apply(with_kind(&self.cluster_role)?))
            .await
            .context("applying the ClusterRole")?;
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch(
                &name(&self.cluster_role_binding.metadata),
                &params,
                &Patch::Apply(with_kind(&self.cluster_role_binding)?),
            )
            .await
            .context("applying the ClusterRoleBinding")?;
        Api::<Role>::namespaced(client.clone(), &ns)
            .patch(&name(&self.role.metadata), &params, &Patch::Apply(with_kind(&self.role)?))
            .await
            .context("applying the Role")?;
        Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .patch(&name(&self.role_binding.metadata), &params, &Patch::Apply(with_kind(&self.role_binding)?))
            .await
            .context("applying the RoleBinding")?;
        Ok(())
    }

    /// The ClusterRole's rule for `resource` in `group` ("" for core).
    pub fn cluster_rule_mut(&mut self, group: &str, resource: &str) -> Result<&mut PolicyRule> {
        self.cluster_role
            .rules
            .get_or_insert_default()
            .iter_mut()
            .find(|r| {
                r.api_groups.as_deref().unwrap_or_default().iter().any(|g| g == group)
                    && r.resources.as_deref().unwrap_or_default().iter().any(|x| x == resource)
            })
            .with_context(|| format!("the ClusterRole has no rule for {resource} in group {group:?}"))
    }

    /// Removes `verb` from the ClusterRole's rule for `resource` in `group`.
    pub fn remove_cluster_verb(&mut self, group: &str, resource: &str, verb: &str) -> Result<()> {
        let rule = self.cluster_rule_mut(group, resource)?;
        let before = rule.verbs.len();
        rule.verbs.retain(|v| v != verb);
        if rule.verbs.len() == before {
            bail!("the ClusterRole does not grant {verb} on {resource}");
        }
        Ok(())
    }
}

/// `obj` as JSON with the apiVersion and kind that server-side apply needs.
fn with_kind<K: k8s_openapi::Resource + k8s_openapi::serde::Serialize>(obj: &K) -> Result<Value> {
    let mut value = serde_json::to_value(obj)?;
    value["apiVersion"] = Value::String(K::API_VERSION.into());
    value["kind"] = Value::String(K::KIND.into());
    Ok(value)
}

/// Waits until a SubjectAccessReview says whether ServiceAccount `account` of `ns` may `verb`
/// `resource` (API group `group`; `resource/subresource` for a subresource) in `ns` is `allowed` (RBAC's caches take a moment to see
/// changed roles and bindings).
pub async fn wait_access(
    ns: &TestNamespace,
    account: &str,
    verb: &str,
    resource: &str,
    group: &str,
    allowed: bool,
) -> Result<()> {
    use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    let reviews: Api<SubjectAccessReview> = Api::all(ns.client().clone());
    let user = format!("system:serviceaccount:{}:{account}", ns.name());
    // `replicasets/finalizers` is resource `replicasets`, subresource `finalizers`.
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, subresource)) => (resource, Some(subresource.to_string())),
        None => (resource, None),
    };
    let what = format!("{user} to be {} {verb} {resource}", if allowed { "allowed to" } else { "denied" });
    eventually(&what, Duration::from_secs(10), || async {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(ns.name().into()),
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    subresource: subresource.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews.create(&kube::api::PostParams::default(), &review).await?;
        Ok((answer.status.is_some_and(|s| s.allowed) == allowed).then_some(()))
    })
    .await
}
