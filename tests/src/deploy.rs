//! Testing `deploy/`: rendering the kustomization, granting its RBAC to a ServiceAccount of a test namespace, running the host binary as a separate process and reading its HTTP endpoints, and counting pods exactly from a watch.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::process::ManagedProcess;
use crate::{TestNamespace, eventually, ports};

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
        let answer = reviews.create(&Default::default(), &review).await?;
        Ok((answer.status.is_some_and(|s| s.allowed) == allowed).then_some(()))
    })
    .await
}

/// One `GET http://127.0.0.1:<port><path>`: the status code and the body.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("GET {path} on port {port} timed out"))?
        .with_context(|| format!("GET {path} on port {port}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("GET {path}: no HTTP header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path}: no status in {head:?}"))?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// The host binary (`host-process`, the host's own `main`) running `host run` as a child process.
#[derive(Debug)]
pub struct HostProcess {
    process: ManagedProcess,
    port: u16,
}

impl HostProcess {
    /// Starts `bin run --kubeconfig <kubeconfig> --http-addr 127.0.0.1:<free port> <flags...>`,
    /// logging to `log`.
    pub fn spawn(name: &str, bin: &Path, kubeconfig: &Path, flags: &[&str], log: &Path) -> Result<Self> {
        let port = ports::free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg(format!("--http-addr=127.0.0.1:{port}"))
            .args(flags)
            // Deterministic logging whatever the developer's environment says.
            .env_remove("RUST_LOG")
            .env_remove("KUBECONFIG")
            .env_remove("POD_NAMESPACE")
            .env("HOSTNAME", name);
        let process = ManagedProcess::spawn_command(name, cmd, log)?;
        Ok(Self { process, port })
    }

    /// The process.
    pub fn process(&self) -> &ManagedProcess {
        &self.process
    }

    /// The port of /healthz, /readyz and /metrics.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `GET <path>` on the host's HTTP port.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        if let Some(status) = self.process.exit_status() {
            return Err(self.process.error_with_log(&format!("exited ({status}) before GET {path}")));
        }
        http_get(self.port, path).await
    }

    /// `/readyz`: the status code and the text.
    pub async fn readyz(&self) -> Result<(u16, String)> {
        self.get("/readyz").await
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let (status, body) = self.get("/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}: {body}");
        }
        Ok(body)
    }

    /// Waits until this process (not a stranger that took the port) serves /healthz.
    pub async fn wait_serving(&self, timeout: Duration) -> Result<()> {
        let pid = self.process.pid();
        eventually(&format!("{} to serve /healthz", self.process.name()), timeout, || async {
            if let Some(status) = self.process.exit_status() {
                // Not retried: `eventually` would keep polling a dead process.
                return Ok(Some(Err(self.process.error_with_log(&format!("exited early ({status})")))));
            }
            if !ports::pid_listens_on(pid, self.port) {
                return Ok(None);
            }
            let (status, body) = http_get(self.port, "/healthz").await?;
            Ok((status == 200 && body.trim() == "ok").then_some(Ok(())))
        })
        .await
        .map_err(|e| self.process.error_with_log(&format!("{e:#}")))?
    }

    /// Waits until `/readyz` answers `status` with a body containing `text`; returns the body.
    pub async fn wait_readyz(&self, status: u16, text: &str, timeout: Duration) -> Result<String> {
        eventually(&format!("{} /readyz to be {status} with {text:?}", self.process.name()), timeout, || async {
            let (got, body) = self.readyz().await?;
            Ok((got == status && body.contains(text)).then_some(body))
        })
        .await
        .map_err(|e| self.process.error_with_log(&format!("{e:#}")))
    }

    /// SIGKILL, as a crash or an OOM kill would: no release of the lease, no flush. Only this
    /// process (our child, not reaped yet, so its PID cannot have been reused) is signalled.
    pub fn kill(&self) -> Result<()> {
        if self.process.exit_status().is_some() {
            bail!("{} already exited", self.process.name());
        }
        // SAFETY: plain syscall on our own unreaped child.
        let rc = unsafe { libc::kill(self.process.pid() as libc::pid_t, libc::SIGKILL) };
        if rc != 0 {
            bail!("kill({}) failed: {}", self.process.pid(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM, as the kubelet sends when a pod stops: the host finishes its syncs in flight,
    /// releases the lease and exits.
    pub fn terminate(&self) -> Result<()> {
        if self.process.exit_status().is_some() {
            bail!("{} already exited", self.process.name());
        }
        // SAFETY: plain syscall on our own unreaped child.
        let rc = unsafe { libc::kill(self.process.pid() as libc::pid_t, libc::SIGTERM) };
        if rc != 0 {
            bail!("kill({}, SIGTERM) failed: {}", self.process.pid(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The log's lines parsed as JSON (the host runs with `--log-format json`); a line that is
    /// not JSON is an error.
    pub fn json_log(&self) -> Result<Vec<Value>> {
        let text = std::fs::read_to_string(self.process.log_path())
            .with_context(|| format!("reading {}", self.process.log_path().display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("a log line is not JSON: {l}")))
            .collect()
    }
}

/// The value of the sample `name{labels}` in Prometheus text, where every `(key, value)` of
/// `labels` must match (other labels may be present).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric_samples(text, name).into_iter().find_map(|(sample_labels, value)| {
        labels.iter().all(|(k, v)| sample_labels.iter().any(|(sk, sv)| sk == k && sv == v)).then_some(value)
    })
}

/// The sum of every sample of metric `name` whose labels satisfy `keep`.
pub fn metric_sum(text: &str, name: &str, keep: impl Fn(&[(String, String)]) -> bool) -> f64 {
    metric_samples(text, name).iter().filter(|(labels, _)| keep(labels)).map(|(_, value)| value).sum()
}

/// Every sample of metric `name`: its labels and value.
pub fn metric_samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
            let Some((labels, value)) = rest.rsplit_once('}') else { continue };
            (parse_labels(labels), value)
        } else if rest.starts_with(' ') {
            (Vec::new(), rest)
        } else {
            continue;
        };
        if let Some(value) = value.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            samples.push((labels, value));
        }
    }
    samples
}

/// `a="x",b="y"` (values may hold escaped quotes and commas).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').trim().to_string(), value));
        rest = &after[end..];
    }
    labels
}

/// Counts the pods of a namespace exactly, from a watch: every add and delete is seen, so the
/// highest count ever reached is known, not just the count at polling times.
pub struct PodCounter {
    state: Arc<Mutex<CounterState>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct CounterState {
    live: HashSet<String>,
    relist: Option<HashSet<String>>,
    max: usize,
    synced: bool,
}

impl PodCounter {
    /// Starts watching the pods of `ns` and waits for the first list.
    pub async fn start(ns: &TestNamespace) -> Result<Self> {
        let state = Arc::new(Mutex::new(CounterState::default()));
        let api: Api<Pod> = ns.api();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let events = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                let Ok(event) = event else { continue };
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
                match event {
                    watcher::Event::Init => s.relist = Some(HashSet::new()),
                    watcher::Event::InitApply(p) => {
                        s.relist.get_or_insert_default().insert(name(&p));
                    }
                    watcher::Event::InitDone => {
                        s.live = s.relist.take().unwrap_or_default();
                        s.synced = true;
                    }
                    watcher::Event::Apply(p) => {
                        s.live.insert(name(&p));
                    }
                    watcher::Event::Delete(p) => {
                        s.live.remove(&name(&p));
                    }
                }
                s.max = s.max.max(s.live.len());
            }
        });
        let counter = Self { state, task };
        eventually("the pod watch to list", Duration::from_secs(10), || async {
            Ok(counter.state.lock().unwrap_or_else(|p| p.into_inner()).synced.then_some(()))
        })
        .await?;
        Ok(counter)
    }

    /// Pods that exist now (as far as the watch has seen).
    pub fn current(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).live.len()
    }

    /// The most pods that ever existed at once since the counter started.
    pub fn max(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).max
    }
}

impl Drop for PodCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let text = "# HELP workqueue_adds Total\n# TYPE workqueue_adds counter\nworkqueue_adds_total{name=\"replicaset\"} 7\n\
                    workqueue_depth{name=\"replicaset\"} 0\nx_count 3\nx_count_other 4\n\
                    info{digest=\"a,b\",source=\"embedded \\\"default\\\"\"} 1\n";
        assert_eq!(metric(text, "workqueue_adds_total", &[("name", "replicaset")]), Some(7.0));
        assert_eq!(metric(text, "workqueue_adds_total", &[("name", "other")]), None);
        assert_eq!(metric(text, "workqueue_depth", &[]), Some(0.0));
        assert_eq!(metric(text, "x_count", &[]), Some(3.0));
        assert_eq!(metric(text, "info", &[("digest", "a,b"), ("source", "embedded \"default\"")]), Some(1.0));
    }

    #[test]
    fn samples_are_summed_by_name_and_labels() {
        let text = "# HELP x y\n\
            apiserver_request_total{code=\"201\",resource=\"pods\",verb=\"POST\"} 12\n\
            apiserver_request_total{code=\"200\",resource=\"pods\",verb=\"WATCH\"} 3\n\
            apiserver_request_total_other 9\n\
            up 1\n\
            odd{a=\"x,\\\"y}\"} 2.5 1700000000\n";
        let not_watch = |labels: &[(String, String)]| !labels.iter().any(|(k, v)| k == "verb" && v == "WATCH");
        assert_eq!(metric_sum(text, "apiserver_request_total", |_| true), 15.0);
        assert_eq!(metric_sum(text, "apiserver_request_total", not_watch), 12.0);
        assert_eq!(metric_sum(text, "up", |_| true), 1.0);
        assert_eq!(metric(text, "odd", &[("a", "x,\"y}")]), Some(2.5));
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
