//! Per-test namespaces: uniquely named, created through the admin client, with typed `Api` shortcuts.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::controlplane::ControlPlane;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A namespace created for one test, with an admin client made in the test's runtime.
///
/// It is not deleted on drop: no namespace controller runs, so a deleted namespace would stay
/// `Terminating` anyway; the control plane's data is thrown away when it stops.
#[derive(Clone)]
pub struct TestNamespace {
    name: String,
    client: kube::Client,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace").field("name", &self.name).finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin client the namespace was created with.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// An `Api` for namespaced resources of kind `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates ServiceAccount `name` in this namespace if it does not exist and returns a token for
    /// it from a TokenRequest (valid for `expiration_seconds`, audience = the apiserver's issuer).
    /// Use it with [`ControlPlane::write_token_kubeconfig`]; grant permissions with RBAC.
    pub async fn service_account_token(&self, name: &str, expiration_seconds: i64) -> Result<String> {
        let accounts: Api<ServiceAccount> = self.api();
        if accounts
            .get_opt(name)
            .await
            .with_context(|| format!("reading service account {}/{name}", self.name))?
            .is_none()
        {
            let account = ServiceAccount {
                metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() },
                ..Default::default()
            };
            accounts
                .create(&PostParams::default(), &account)
                .await
                .with_context(|| format!("creating service account {}/{name}", self.name))?;
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec { expiration_seconds: Some(expiration_seconds), ..Default::default() }),
            ..Default::default()
        };
        let response = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for service account {}/{name}", self.name))?;
        response
            .status
            .and_then(|s| s.token)
            .with_context(|| format!("the token request for {}/{name} returned no token", self.name))
    }
}

/// A DNS-1123 label made from `prefix` plus a process-unique suffix: lowercase alphanumerics and
/// '-', at most 63 characters, starting and ending with an alphanumeric.
pub fn unique_name(prefix: &str) -> String {
    let mut base = String::new();
    for c in prefix.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            base.push(c);
        } else if !base.is_empty() && !base.ends_with('-') {
            base.push('-');
        }
    }
    base.truncate(40);
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "t" } else { base };
    format!("{base}-{}-{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::Relaxed))
}

impl ControlPlane {
    /// Creates a namespace named [`unique_name`]`(prefix)` and returns it with a new admin client.
    /// Call inside a tokio runtime.
    pub async fn create_namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let client = self.client()?;
        let name = unique_name(prefix);
        let namespace =
            Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace { name, client })
    }
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn unique_names_are_dns_labels_derived_from_the_test_name() {
        let long = "tests::a_pod_and_a_replicaset_are_listed_watched_and_patched_through_the_status";
        for prefix in [long, "Kcm", "--", "", "a__b"] {
            let name = unique_name(prefix);
            assert!(name.len() <= 63, "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{name}");
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert!(unique_name("Kcm").starts_with("kcm-"));
        assert!(unique_name("a__b").starts_with("a-b-"));
        assert_ne!(unique_name("x"), unique_name("x"));
    }
}
