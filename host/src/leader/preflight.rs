//! Before electing: one dry-run create of the Lease, so that a Lease that can never be written
//! (its namespace does not exist, RBAC forbids it) stops the controller at once with the reason,
//! instead of a controller that silently never leads.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ObjectMeta, PostParams};

use super::elector::LeaderElector;

/// Why leader election cannot work with this configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    /// The Lease's namespace does not exist.
    #[error("the namespace `{0}` of the leader-election Lease does not exist")]
    NamespaceMissing(String),
    /// The API server refuses to let this identity write Leases there.
    #[error("may not create Leases in namespace `{namespace}`: {message}")]
    Forbidden {
        /// The Lease's namespace.
        namespace: String,
        /// The API server's message.
        message: String,
    },
}

impl LeaderElector {
    /// Asks the API server to validate creating the Lease without storing anything
    /// (`dryRun=All`: admission and authorization run, so a missing namespace or permission
    /// shows). A Lease that exists already is fine; other failures (a timeout, a restarting API
    /// server) are left to the election loop, which retries them.
    pub async fn preflight(&self) -> Result<(), PreflightError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..Default::default()
            },
            spec: None,
        };
        let params = PostParams { dry_run: true, field_manager: None };
        match tokio::time::timeout(self.request_timeout, self.leases.create(&params, &lease)).await {
            Ok(Err(kube::Error::Api(status))) => classify(&self.config.namespace, status.code, &status.message),
            _ => Ok(()),
        }
    }
}

/// The verdict on a failed dry-run create answered with `code` and `message`.
fn classify(namespace: &str, code: u16, message: &str) -> Result<(), PreflightError> {
    match code {
        // NamespaceLifecycle admission: `namespaces "x" not found`.
        404 if message.contains("namespaces") => Err(PreflightError::NamespaceMissing(namespace.to_string())),
        403 => Err(PreflightError::Forbidden { namespace: namespace.to_string(), message: message.to_string() }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_and_a_refusal_are_fatal_the_rest_is_retried() {
        let missing = classify("wasm-replicaset-system", 404, "namespaces \"wasm-replicaset-system\" not found");
        assert_eq!(missing, Err(PreflightError::NamespaceMissing("wasm-replicaset-system".into())));
        let forbidden = classify("ns", 403, "leases.coordination.k8s.io is forbidden");
        assert!(matches!(forbidden, Err(PreflightError::Forbidden { .. })));
        assert_eq!(classify("ns", 409, "leases \"x\" already exists"), Ok(()));
        assert_eq!(classify("ns", 500, "etcd is down"), Ok(()));
    }
}
