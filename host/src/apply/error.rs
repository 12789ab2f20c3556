//! Why a write failed, with the tests callers branch on (not found, invalid, namespace
//! terminating, refused by RBAC) asked of the API server's typed answer.

/// A failed write.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API server refused or failed the request (or it never got there).
    #[error("{}", api_message(.0))]
    Api(#[from] kube::Error),
    /// The template has no labels, so the pod could never be matched (checked before any call).
    #[error("unable to create pods, no labels")]
    NoLabels,
}

impl WriteError {
    /// 404: the object is already gone.
    pub fn is_not_found(&self) -> bool {
        self.status().is_some_and(|s| s.code == 404)
    }

    /// 422: e.g. a release patch whose UID precondition no longer holds.
    pub fn is_invalid(&self) -> bool {
        self.status().is_some_and(|s| s.code == 422)
    }

    /// The namespace is being deleted (upstream counts such a failed create as a success).
    pub fn is_namespace_terminating(&self) -> bool {
        self.status()
            .and_then(|s| s.details.as_ref())
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
    }

    /// RBAC refused the request. The API server answers both an authorization refusal and an
    /// admission refusal (an exceeded quota) with 403 `Forbidden`; only the authorizer's message
    /// says that a user "cannot" do something, so that is what tells them apart.
    pub fn is_access_denied(&self) -> bool {
        self.status().is_some_and(|s| s.code == 403 && s.message.contains(" cannot "))
    }

    fn status(&self) -> Option<&kube::core::Status> {
        match self {
            Self::Api(kube::Error::Api(status)) => Some(status),
            Self::Api(_) | Self::NoLabels => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str, cause: Option<&str>) -> WriteError {
        let json = serde_json::json!({
            "code": code, "message": message,
            "details": {"causes": cause.map(|c| vec![serde_json::json!({"reason": c})]).unwrap_or_default()}
        });
        WriteError::Api(kube::Error::Api(Box::new(serde_json::from_value(json).unwrap())))
    }

    #[test]
    fn api_errors_are_told_apart_by_code_and_cause() {
        assert!(status(404, "nope", None).is_not_found());
        assert!(status(422, "nope", None).is_invalid());
        assert!(status(403, "nope", Some("NamespaceTerminating")).is_namespace_terminating());
        assert!(!status(403, "nope", None).is_namespace_terminating());
        assert_eq!(status(403, "nope", None).to_string(), "nope");
    }

    #[test]
    fn an_rbac_refusal_is_access_denied_and_an_exceeded_quota_is_not() {
        let rbac = r#"pods is forbidden: User "system:serviceaccount:x:y" cannot create resource "pods""#;
        assert!(status(403, rbac, None).is_access_denied());
        let quota = r#"pods "web-1" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"#;
        assert!(!status(403, quota, None).is_access_denied());
        assert!(!WriteError::NoLabels.is_access_denied());
    }
}
