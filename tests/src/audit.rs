//! The API server's audit log, for tests that must prove *who* sent *what* and *when*: the policy
//! and flags the harness starts kube-apiserver with ([`crate::ControlPlaneOptions::audit`]), and
//! the log's events parsed into [`AuditEvent`]s.
//!
//! The policy records every request at the `Metadata` level (user, user agent, verb, object,
//! response code, timestamps; no bodies) once its response is complete, except the API server's
//! own loopback requests and health checks. Reads are kept too: a client's request rate counts
//! them. The log is written synchronously (`--audit-log-mode=blocking`), so a request has its line
//! by the time its response reaches the client.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde_json::Value;

/// The audit policy (audit.k8s.io/v1).
const POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    users: [\"system:apiserver\"]
  - level: None
    nonResourceURLs: [\"/healthz*\", \"/readyz*\", \"/livez*\", \"/version\", \"/openapi*\"]
  - level: Metadata
";

/// Where the log goes and the flags that send it there.
pub(crate) struct AuditConfig {
    /// The log file.
    pub path: PathBuf,
    /// kube-apiserver flags.
    pub args: Vec<String>,
}

/// Writes the policy into `dir` and returns the log's path and the kube-apiserver flags.
pub(crate) fn configure(dir: &Path) -> Result<AuditConfig> {
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(&policy, POLICY).with_context(|| format!("writing {}", policy.display()))?;
    let path = dir.join("audit.log");
    let args = vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", path.display()),
        "--audit-log-format=json".to_string(),
        "--audit-log-mode=blocking".to_string(),
        // One file for the whole test: no rotation.
        "--audit-log-maxsize=0".to_string(),
    ];
    Ok(AuditConfig { path, args })
}

/// One request, as the audit log recorded it at `ResponseComplete` (or `Panic`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// `create`, `update`, `patch`, `delete`, `get`, `list`, `watch`, ...
    pub verb: String,
    /// The authenticated user name.
    pub user: String,
    /// The client's `User-Agent` header.
    pub user_agent: String,
    /// The resource (`pods`, `replicasets`, `leases`, `events`...); `None` for non-resource URLs.
    pub resource: Option<String>,
    /// `status`, `binding`, ... when the request was for a subresource.
    pub subresource: Option<String>,
    /// The object's namespace.
    pub namespace: Option<String>,
    /// The object's name (absent for creates with `generateName`, lists and collections).
    pub name: Option<String>,
    /// The HTTP status the API server answered.
    pub code: Option<u16>,
    /// When the API server received the request (microseconds).
    pub received: Timestamp,
    /// When the stage was reached (the response was complete).
    pub completed: Timestamp,
    /// The request URI.
    pub uri: String,
}

impl AuditEvent {
    /// Whether the request asked to change something (`create`, `update`, `patch`, `delete`,
    /// `deletecollection`).
    pub fn is_write(&self) -> bool {
        matches!(self.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection")
    }

    /// Whether the API server answered with a 2xx.
    pub fn succeeded(&self) -> bool {
        self.code.is_some_and(|c| (200..300).contains(&c))
    }

    /// `resource` or `resource/subresource`.
    pub fn target(&self) -> String {
        match (&self.resource, &self.subresource) {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            (Some(r), None) => r.clone(),
            (None, _) => self.uri.clone(),
        }
    }

    fn from_json(line: &Value) -> Result<Self> {
        let text = |v: &Value| v.as_str().map(String::from);
        let time = |field: &str| -> Result<Timestamp> {
            line[field].as_str().with_context(|| format!("no {field}"))?.parse().with_context(|| field.to_string())
        };
        let object = &line["objectRef"];
        Ok(Self {
            verb: text(&line["verb"]).context("no verb")?,
            user: text(&line["user"]["username"]).unwrap_or_default(),
            user_agent: text(&line["userAgent"]).unwrap_or_default(),
            resource: text(&object["resource"]),
            subresource: text(&object["subresource"]),
            namespace: text(&object["namespace"]),
            name: text(&object["name"]),
            code: line["responseStatus"]["code"].as_u64().and_then(|c| u16::try_from(c).ok()),
            received: time("requestReceivedTimestamp")?,
            completed: time("stageTimestamp")?,
            uri: text(&line["requestURI"]).unwrap_or_default(),
        })
    }
}

/// Every completed request in the audit log at `path`, in the order they were logged.
pub fn read(path: &Path) -> Result<Vec<AuditEvent>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the audit log {}", path.display()))?;
    parse(&text)
}

/// The completed requests in audit log text (one JSON event per line).
pub fn parse(text: &str) -> Result<Vec<AuditEvent>> {
    let mut events = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).with_context(|| format!("an audit line is not JSON: {line}"))?;
        // Long-running requests (watches) also log `ResponseStarted`; count each request once.
        if matches!(value["stage"].as_str(), Some("ResponseComplete" | "Panic")) {
            events.push(AuditEvent::from_json(&value).with_context(|| format!("an unexpected audit line: {line}"))?);
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns/pods","verb":"create","user":{"username":"system:serviceaccount:ns:c","groups":["system:serviceaccounts"]},"sourceIPs":["127.0.0.1"],"userAgent":"wasm-replicaset/0.1.0 (linux/x86_64) host-a_1/writes","objectRef":{"resource":"pods","namespace":"ns","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestReceivedTimestamp":"2026-12-03T12:00:00.123456Z","stageTimestamp":"2026-12-03T12:00:00.130000Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"b","stage":"ResponseStarted","requestURI":"/api/v1/pods?watch=true","verb":"watch","user":{"username":"admin"},"userAgent":"x","objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-12-03T12:00:01.000000Z","stageTimestamp":"2026-12-03T12:00:01.000100Z"}
{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"c","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/ns/replicasets/web/status","verb":"update","user":{"username":"u"},"userAgent":"y","objectRef":{"resource":"replicasets","namespace":"ns","name":"web","apiGroup":"apps","apiVersion":"v1","subresource":"status"},"responseStatus":{"metadata":{},"status":"Failure","reason":"TooManyRequests","code":429},"requestReceivedTimestamp":"2026-12-03T12:00:02.000000Z","stageTimestamp":"2026-12-03T12:00:02.000500Z"}
"#;

    #[test]
    fn completed_requests_are_parsed_with_who_what_and_when() {
        let events = parse(LINES).unwrap();
        assert_eq!(events.len(), 2, "the ResponseStarted line of a watch is not a second request");
        let create = &events[0];
        assert_eq!((create.verb.as_str(), create.target().as_str()), ("create", "pods"));
        assert_eq!(create.user_agent, "wasm-replicaset/0.1.0 (linux/x86_64) host-a_1/writes");
        assert_eq!(create.code, Some(201));
        assert!(create.is_write() && create.succeeded());
        assert_eq!(create.received, "2026-12-03T12:00:00.123456Z".parse::<Timestamp>().unwrap());
        let status = &events[1];
        assert_eq!(status.target(), "replicasets/status");
        assert_eq!((status.name.as_deref(), status.code), (Some("web"), Some(429)));
        assert!(status.is_write() && !status.succeeded());
    }

    #[test]
    fn the_policy_and_flags_are_written_into_the_directory() {
        let dir = std::env::temp_dir().join(format!("audit-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = configure(&dir).unwrap();
        assert!(config.args.contains(&format!("--audit-log-path={}", dir.join("audit.log").display())));
        let policy = std::fs::read_to_string(dir.join("audit-policy.yaml")).unwrap();
        let value: serde_yaml::Value = serde_yaml::from_str(&policy).unwrap();
        assert_eq!(value["rules"][2]["level"], serde_yaml::Value::from("Metadata"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
