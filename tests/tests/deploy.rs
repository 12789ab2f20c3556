//! `deploy/` on a real API server: the kustomization renders and passes the apiserver's
//! server-side dry-run; the wasm-replicaset binary, run as a ServiceAccount holding exactly the
//! deployed RBAC, scales, adopts, reports a missing rule and recovers; two replicas elect one leader and a
//! SIGKILLed leader is replaced within the lease without a pod too many; /readyz and /metrics
//! say what the Deployment's probes and Prometheus expect; the README's hand-over Lease keeps new
//! replicas standing by; the optional finalizers component is what OwnerReferencesPermission-
//! Enforcement needs.
//!
//! Each test has its own namespace on the shared control plane (the admission-plugin test has an
//! API server of its own); the controller runs as a separate process (`host-process`, the
//! binary's exact `main`) stopped by PID when the test ends.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use host::modules::resource::{Mode, Phase};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tests::controller::replica_set;
use tests::deploy::{self, TestRbac, wait_access};
use tests::host_process::HostProcess;
use tests::modules::{install_crd, push_via_config_map, wait_phase};
use tests::pod_counter::PodCounter;
use tests::prometheus::{metric, metric_samples};
use tests::workdir::WorkDir;
use tests::{ControlPlane, ControlPlaneOptions, TestNamespace, consistently, eventually, ns, shared};

/// The host's own `main`, built as a bin of this package.
const HOST: &str = env!("CARGO_BIN_EXE_host-process");
/// The ServiceAccount name of deploy/serviceaccount.yaml, recreated in each test namespace.
const ACCOUNT: &str = "wasm-replicaset-controller";
/// Short leader election for tests (the Deployment uses the 15s/10s/2s defaults).
const LEASE_DURATION: Duration = Duration::from_secs(4);
/// Starting the process (debug build) includes compiling the embedded policy.
const START: Duration = Duration::from_secs(60);
/// Anything expected "soon": a few retries plus API latency on a loaded 2-core machine.
const SOON: Duration = Duration::from_secs(30);

/// `wasm-replicaset run` flags for a test: only namespace `ns`, with the Lease and ReconcileModules there
/// too, a short lease, JSON logs as in the Deployment.
fn host_flags(ns: &str) -> Vec<String> {
    [
        "--namespace",
        ns,
        "--module-namespace",
        ns,
        "--leader-elect=true",
        "--leader-elect-lease-duration=4s",
        "--leader-elect-renew-deadline=3s",
        "--leader-elect-retry-period=500ms",
        "--shutdown-grace-seconds=5",
        "--log-format=json",
    ]
    .map(String::from)
    .to_vec()
}

/// A test namespace whose ServiceAccount holds the deployed RBAC (possibly edited), with a
/// kubeconfig authenticating as it through a TokenRequest token.
struct Setup {
    ns: TestNamespace,
    rbac: TestRbac,
    kubeconfig: PathBuf,
    dir: WorkDir,
}

impl Setup {
    async fn new(edit: impl FnOnce(&mut TestRbac) -> Result<()>) -> Result<Self> {
        let ns = ns().await?;
        // The host watches ReconcileModules in its module namespace, as in the Deployment.
        install_crd(ns.client()).await?;
        let rendered = deploy::render().await?;
        let rbac = TestRbac::from_rendered(&rendered, ns.name(), ACCOUNT)?;
        let mut applied = rbac.clone();
        edit(&mut applied)?;
        applied.apply(ns.client()).await?;
        let token = ns.service_account_token(ACCOUNT, 3600).await?;
        let dir = WorkDir::create(&format!("deploy-{}", ns.name()))?;
        let kubeconfig = dir.path().join("kubeconfig");
        shared().await?.write_token_kubeconfig(&kubeconfig, &token, ns.name())?;
        wait_access(&ns, ACCOUNT, "update", "leases", "coordination.k8s.io", true).await?;
        wait_access(&ns, ACCOUNT, "watch", "replicasets", "apps", true).await?;
        Ok(Self { ns, rbac, kubeconfig, dir })
    }

    /// Starts the host as the ServiceAccount with [`host_flags`].
    async fn start_host(&self, name: &str) -> Result<HostProcess> {
        let flags = host_flags(self.ns.name());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let log = self.dir.path().join(format!("{name}.log"));
        let host = HostProcess::spawn(name, Path::new(HOST), &self.kubeconfig, &flags, &log)?;
        host.wait_serving(START).await?;
        Ok(host)
    }
}

async fn scale(ns: &TestNamespace, name: &str, replicas: i32) -> Result<()> {
    let patch = json!({"spec": {"replicas": replicas}});
    ns.api::<ReplicaSet>().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Waits until the watch sees exactly `count` pods and the ReplicaSet's status says so too
/// (the status is written through `replicasets/status`, so this checks that rule as well).
async fn wait_converged(
    ns: &TestNamespace,
    counter: &PodCounter,
    rs: &str,
    count: usize,
    timeout: Duration,
) -> Result<()> {
    let api = ns.api::<ReplicaSet>();
    eventually(&format!("{count} pods and status.replicas = {count}"), timeout, || async {
        let status = api.get(rs).await?.status.map(|s| s.replicas).unwrap_or_default();
        Ok((counter.current() == count && status == count as i32).then_some(()))
    })
    .await
    .with_context(|| format!("{} pods seen", counter.current()))
}

/// Fails if the watch ever saw more than `limit` pods at once.
fn ensure_never_above(counter: &PodCounter, limit: usize) -> Result<()> {
    ensure!(counter.max() <= limit, "{} pods existed at once, more than {limit}", counter.max());
    Ok(())
}

/// The two hosts' roles per /readyz once exactly one leads: (leader, standby).
async fn roles<'a>(a: &'a HostProcess, b: &'a HostProcess) -> Result<(&'a HostProcess, &'a HostProcess)> {
    eventually("exactly one host leading, the other standing by", SOON, || async {
        let (sa, ba) = a.readyz().await?;
        let (sb, bb) = b.readyz().await?;
        if sa != 200 || sb != 200 {
            return Ok(None);
        }
        Ok(match (ba.contains("; leading"), bb.contains("; leading")) {
            (true, false) if bb.contains("standing by") => Some((a, b)),
            (false, true) if ba.contains("standing by") => Some((b, a)),
            (true, true) => bail!("both lead: {ba:?} / {bb:?}"),
            _ => None,
        })
    })
    .await
}

/// `value` with every number as an f64: kustomize re-prints `minimum: 0.0` as `0`.
fn numbers_as_f64(value: &Value) -> Value {
    match value {
        Value::Number(n) => n.as_f64().map_or_else(|| value.clone(), Value::from),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), numbers_as_f64(v))).collect()),
        other => other.clone(),
    }
}

#[tokio::test]
async fn the_kustomization_renders_and_passes_server_side_dry_run() -> Result<()> {
    const NS: &str = "wasm-replicaset-system";
    const NAME: &str = "wasm-replicaset-controller";
    let rendered = deploy::render().await?;

    // Exactly these objects, every namespaced one in the controller's namespace.
    let objects: BTreeSet<(String, String)> = rendered
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default().to_string(),
                o["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("Namespace", NS),
        ("CustomResourceDefinition", "reconcilemodules.policy.wasm-replicaset.dev"),
        ("ServiceAccount", NAME),
        ("ClusterRole", NAME),
        ("ClusterRoleBinding", NAME),
        ("Role", NAME),
        ("RoleBinding", NAME),
        ("Deployment", NAME),
        ("PodDisruptionBudget", NAME),
        ("Service", "wasm-replicaset-controller-metrics"),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    ensure!(objects == expected, "rendered objects: {objects:?}");
    for o in &rendered {
        let cluster_scoped = ["Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"];
        let namespace = o["metadata"]["namespace"].as_str();
        if cluster_scoped.contains(&o["kind"].as_str().unwrap_or_default()) {
            ensure!(namespace.is_none(), "{} is cluster-scoped but has namespace {namespace:?}", o["kind"]);
        } else {
            ensure!(namespace == Some(NS), "{} {} is in namespace {namespace:?}", o["kind"], o["metadata"]["name"]);
        }
    }

    // The CRD is the generated one (kustomize only adds the common label).
    let generated = deploy::parse_yaml_stream(&host::modules::resource::crd_yaml())?;
    let crd = deploy::only(&rendered, "CustomResourceDefinition")?;
    ensure!(
        generated.len() == 1 && numbers_as_f64(&crd["spec"]) == numbers_as_f64(&generated[0]["spec"]),
        "the rendered CRD differs from `wasm-replicaset crd`"
    );

    // RBAC: exactly the calls the host makes, bound to the ServiceAccount.
    let rules = |kind: &str| -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for rule in deploy::only(&rendered, kind)?["rules"].as_array().context("no rules")? {
            ensure!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(), "{rule}");
            for group in rule["apiGroups"].as_array().context("no apiGroups")? {
                for resource in rule["resources"].as_array().context("no resources")? {
                    for verb in rule["verbs"].as_array().context("no verbs")? {
                        out.insert(format!(
                            "{}/{}:{}",
                            group.as_str().unwrap_or("?"),
                            resource.as_str().unwrap_or("?"),
                            verb.as_str().unwrap_or("?")
                        ));
                    }
                }
            }
        }
        Ok(out)
    };
    let set = |items: &[&str]| items.iter().map(std::string::ToString::to_string).collect::<BTreeSet<_>>();
    let cluster = rules("ClusterRole")?;
    let expected_cluster = set(&[
        "apps/replicasets:get",
        "apps/replicasets:list",
        "apps/replicasets:watch",
        "apps/replicasets/status:update",
        "/pods:list",
        "/pods:watch",
        "/pods:create",
        "/pods:delete",
        "/pods:patch",
        "/events:create",
        "/events:patch",
    ]);
    ensure!(cluster == expected_cluster, "ClusterRole grants {cluster:?}");
    let namespaced = rules("Role")?;
    let expected_namespaced = set(&[
        "coordination.k8s.io/leases:get",
        "coordination.k8s.io/leases:create",
        "coordination.k8s.io/leases:update",
        "policy.wasm-replicaset.dev/reconcilemodules:get",
        "policy.wasm-replicaset.dev/reconcilemodules:list",
        "policy.wasm-replicaset.dev/reconcilemodules:watch",
        "policy.wasm-replicaset.dev/reconcilemodules/status:patch",
        "/configmaps:get",
    ]);
    ensure!(namespaced == expected_namespaced, "Role grants {namespaced:?}");
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        let binding = deploy::only(&rendered, kind)?;
        ensure!(binding["roleRef"]["name"] == NAME, "{kind} roleRef: {}", binding["roleRef"]);
        ensure!(
            binding["subjects"] == json!([{"kind": "ServiceAccount", "name": NAME, "namespace": NS}]),
            "{kind} subjects: {}",
            binding["subjects"]
        );
    }

    // The Deployment: two replicas on different nodes if possible, the flags, the downward API,
    // probes on the served paths, a grace period above the host's own, a locked-down container.
    let deployment = deploy::find(&rendered, "Deployment", NAME)?;
    ensure!(deployment["spec"]["replicas"] == 2);
    let pod = &deployment["spec"]["template"]["spec"];
    ensure!(pod["serviceAccountName"] == NAME);
    let container = &pod["containers"][0];
    ensure!(container["image"] == "wasm-replicaset/wasm-replicaset:latest", "image: {}", container["image"]);
    let args: Vec<&str> = container["args"].as_array().context("no args")?.iter().filter_map(Value::as_str).collect();
    for arg in ["run", "--leader-elect=true", "--http-addr=0.0.0.0:8080", "--log-format=json"] {
        ensure!(args.contains(&arg), "args {args:?} lack {arg}");
    }
    // The args must parse as the host's flags.
    let run_flags: Vec<&str> = args.iter().copied().filter(|a| *a != "run").collect();
    let parsed = host::run::RunArgs::from_flags(run_flags).context("the Deployment's args")?;
    ensure!(parsed.leader_elect && parsed.http_addr == "0.0.0.0:8080");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().context("no terminationGracePeriodSeconds")?;
    ensure!(
        grace > parsed.shutdown_grace_seconds + 5,
        "grace {grace}s vs --shutdown-grace-seconds {}",
        parsed.shutdown_grace_seconds
    );
    ensure!(
        container["env"].as_array().is_some_and(|env| env.contains(
            &json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
        )),
        "POD_NAMESPACE is not from the downward API: {}",
        container["env"]
    );
    ensure!(container["livenessProbe"]["httpGet"]["path"] == "/healthz");
    ensure!(container["readinessProbe"]["httpGet"]["path"] == "/readyz");
    ensure!(container["ports"] == json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]));
    let security = &container["securityContext"];
    ensure!(security["runAsNonRoot"] == true && security["runAsUser"] == 65532 && security["runAsGroup"] == 65532);
    ensure!(security["readOnlyRootFilesystem"] == true && security["allowPrivilegeEscalation"] == false);
    ensure!(
        security["capabilities"]["drop"] == json!(["ALL"]) && security["seccompProfile"]["type"] == "RuntimeDefault"
    );
    for (kind, amount) in [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")] {
        ensure!(container["resources"][kind][amount].is_string(), "no {kind}.{amount}");
    }
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    ensure!(anti["topologyKey"] == "kubernetes.io/hostname", "anti-affinity: {anti}");
    ensure!(anti["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]);
    let service = deploy::only(&rendered, "Service")?;
    ensure!(service["spec"]["ports"][0]["name"] == "metrics" && service["spec"]["ports"][0]["port"] == 8080);
    ensure!(service["metadata"]["annotations"]["prometheus.io/scrape"] == "true");
    ensure!(service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]);

    // Server-side dry-run runs admission and validation without persisting, but namespaced
    // objects are still checked against a namespace that exists (NamespaceLifecycle admission
    // answers "namespaces ... not found" otherwise, as a dry-run does not create the Namespace it
    // also carries). So the Namespace is created for real first; it is the one object every other
    // test leaves alone (they use their own namespaces). The CRD needs no such step: nothing here
    // creates a ReconcileModule.
    let cp = shared().await?;
    let admin = cp.kubectl()?;
    let namespace = serde_json::to_string(deploy::only(&rendered, "Namespace")?)?;
    admin.run_with_stdin(&["apply", "-f", "-"], Some(&namespace)).await?;
    let yaml = tests::Kubectl::standalone()?.kustomize(&deploy::deploy_dir()).await?;
    let out = admin.run_with_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&yaml)).await?;
    // One line per object: `<kind>[.<group>]/<name> created|configured|unchanged (server dry run)`.
    let dry_run_lines: BTreeSet<(String, String)> = out
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .filter_map(|l| {
            let (kind, name) = l.split_once(' ')?.0.split_once('/')?;
            Some((kind.split('.').next()?.to_string(), name.to_string()))
        })
        .collect();
    let wanted: BTreeSet<(String, String)> =
        expected.iter().map(|(k, n)| (k.to_ascii_lowercase(), n.clone())).collect();
    ensure!(dry_run_lines == wanted, "server dry-run printed:\n{out}");

    // The pod template is admitted in that namespace, whose PodSecurity level is `restricted`
    // (enforced on pods, not on Deployments): run a pod made from it through the same dry-run.
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "template-", "namespace": NS, "labels": deployment["spec"]["template"]["metadata"]["labels"]},
        "spec": pod,
    }))?;
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let admitted = Api::<Pod>::namespaced(cp.client()?, NS)
        .create(&dry_run, &pod)
        .await
        .context("the pod template is not admitted under PodSecurity `restricted`")?;
    ensure!(admitted.spec.and_then(|s| s.priority).is_some_and(|p| p >= 2_000_000_000), "priority not resolved");
    Ok(())
}

#[tokio::test]
async fn the_deployed_rbac_suffices_to_scale_and_adopt_and_a_missing_rule_is_reported() -> Result<()> {
    let setup = Setup::new(|_| Ok(())).await?;
    let ns = &setup.ns;
    let host = setup.start_host("host-rbac").await?;
    host.wait_readyz(200, "; leading", SOON).await?;
    let counter = PodCounter::start(ns).await?;
    let replica_sets = ns.api::<ReplicaSet>();

    // Scale up, then down: pods create and delete, replicasets/status update, events.
    let rs = replica_sets.create(&PostParams::default(), &replica_set("web", 3)).await?;
    wait_converged(ns, &counter, "web", 3, SOON).await?;
    scale(ns, "web", 1).await?;
    wait_converged(ns, &counter, "web", 1, SOON).await?;

    // Adoption (pods patch): an orphan bound to a node outranks the RS's own pending pod, so the
    // host adopts it and deletes its own pod instead.
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    }))?;
    ns.api::<Pod>().create(&PostParams::default(), &orphan).await?;
    let rs_uid = rs.metadata.uid.clone().context("no uid")?;
    eventually("the orphan to be adopted and the RS's own pod deleted", SOON, || async {
        let pod = ns.api::<Pod>().get("orphan").await?;
        let adopted = pod
            .metadata
            .owner_references
            .unwrap_or_default()
            .iter()
            .any(|o| o.uid == rs_uid && o.controller == Some(true) && o.kind == "ReplicaSet");
        Ok((adopted && pod.metadata.deletion_timestamp.is_none() && counter.current() == 1).then_some(()))
    })
    .await?;
    ensure_never_above(&counter, 3)?;

    // Take `create` on pods away: the scale-up fails with a clear "forbidden" in the log and on
    // /readyz, and nothing is created.
    let mut denied = setup.rbac.clone();
    denied.remove_cluster_verb("", "pods", "create")?;
    denied.apply(ns.client()).await?;
    wait_access(ns, ACCOUNT, "create", "pods", "", false).await?;
    scale(ns, "web", 3).await?;
    let denial = format!("cannot create resource \"pods\" in API group \"\" in the namespace \"{}\"", ns.name());
    // As it appears in a JSON log line.
    let escaped = denial.replace('"', "\\\"");
    let line = eventually("a forbidden error in the host's log", SOON, || async {
        Ok(host.json_log()?.into_iter().find(|l| l.to_string().contains(&escaped)))
    })
    .await
    .map_err(|e| host.process().error_with_log(&format!("{e:#}")))?;
    ensure!(line.to_string().contains("is forbidden: User \\\"system:serviceaccount:"), "{line}");
    let body = host.wait_readyz(503, "access denied", SOON).await?;
    ensure!(body.contains("forbidden") && body.contains("cannot create resource \"pods\""), "/readyz: {body}");
    ensure!(counter.current() == 1, "{} pods exist without the right to create them", counter.current());

    // Give it back: the host converges to exactly 3 (no pod created twice) and is ready again.
    setup.rbac.apply(ns.client()).await?;
    wait_access(ns, ACCOUNT, "create", "pods", "", true).await?;
    wait_converged(ns, &counter, "web", 3, Duration::from_secs(60)).await?;
    host.wait_readyz(200, "; leading", SOON).await?;
    consistently("3 pods", Duration::from_secs(2), || async { Ok(counter.current() == 3) }).await?;
    ensure_never_above(&counter, 3)?;

    // The Role's rules: a policy module stored in a ConfigMap (configmaps get) named by a
    // ReconcileModule (reconcilemodules list/watch/get) is validated, activated and reported
    // (reconcilemodules/status patch); syncs go on under it. The bytes are the default policy's,
    // so the behaviour stays the same.
    push_via_config_map(ns, "from-cm", "policy-bytes", host::embedded::DEFAULT_POLICY, Mode::Active).await?;
    wait_phase(ns, "from-cm", Phase::Active, SOON)
        .await
        .map_err(|e| host.process().error_with_log(&format!("{e:#}")))?;
    eventually("the ReconcileModule to serve", SOON, || async {
        let text = host.metrics().await?;
        let info = metric_samples(&text, "wasm_replicaset_active_module_info");
        Ok(info
            .iter()
            .any(|(labels, _)| labels.iter().any(|(k, v)| k == "source" && v.contains("/from-cm")))
            .then_some(()))
    })
    .await?;
    scale(ns, "web", 2).await?;
    wait_converged(ns, &counter, "web", 2, SOON).await?;

    // Events (create, and patch for repeats such as the FailedCreate retries) all went through.
    let text = host.metrics().await?;
    let events = |outcome: &str| metric(&text, "wasm_replicaset_events_total", &[("outcome", outcome)]).unwrap_or(-1.0);
    ensure!(
        events("created") >= 1.0 && events("failed") == 0.0,
        "events: created {}, failed {}",
        events("created"),
        events("failed")
    );
    let reasons: BTreeSet<String> =
        ns.api::<Event>().list(&ListParams::default()).await?.items.into_iter().filter_map(|e| e.reason).collect();
    for reason in ["SuccessfulCreate", "SuccessfulDelete", "FailedCreate"] {
        ensure!(reasons.contains(reason), "no {reason} event; reasons: {reasons:?}");
    }
    // No other request was refused, and nothing went wrong.
    for line in host.json_log()? {
        let text = line.to_string();
        ensure!(line["level"] != "ERROR", "error logged: {text}");
        ensure!(!text.contains("forbidden") || text.contains(&escaped), "another request was forbidden: {text}");
        ensure!(!text.contains("refuses streaming lists"), "kube-apiserver 1.37 streams initial lists: {text}");
    }
    eprintln!("denied: {body}");
    Ok(())
}

#[tokio::test]
async fn readyz_waits_for_the_caches_and_metrics_show_the_work() -> Result<()> {
    // Without `watch` on pods the pod informer cannot sync: its initial list is streamed over a
    // watch (WatchList), which needs no `list`.
    let setup = Setup::new(|rbac| rbac.remove_cluster_verb("", "pods", "watch")).await?;
    let ns = &setup.ns;
    wait_access(ns, ACCOUNT, "watch", "pods", "", false).await?;
    let host = setup.start_host("host-metrics").await?;
    let body = host.wait_readyz(503, "forbidden", SOON).await?;
    ensure!(body.contains("not ready") && body.contains("pods"), "/readyz: {body}");
    let (status, healthz) = host.get("/healthz").await?;
    ensure!(status == 200 && healthz.trim() == "ok", "/healthz while not ready: {status} {healthz}");
    let early = host.metrics().await?;
    ensure!(metric(&early, "workqueue_depth", &[("name", "replicaset")]).is_some(), "no workqueue_depth:\n{early}");

    // Grant it: the caches sync and /readyz flips to 200 (the watch retries with backoff).
    let denied_at = Instant::now();
    setup.rbac.apply(ns.client()).await?;
    let body = host.wait_readyz(200, "caches synced", Duration::from_secs(60)).await?;
    ensure!(body.contains("; leading"), "/readyz: {body}");
    eprintln!("ready {:?} after watch was granted: {body}", denied_at.elapsed());

    let counter = PodCounter::start(ns).await?;
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("web", 5)).await?;
    wait_converged(ns, &counter, "web", 5, SOON).await?;

    let text = host.metrics().await?;
    let queue = [("name", "replicaset")];
    let value = |name: &str, labels: &[(&str, &str)]| {
        metric(&text, name, labels).with_context(|| format!("no {name}{labels:?} in /metrics:\n{text}"))
    };
    // Every sample of a family summed (e.g. over module and export labels).
    let total = |name: &str| metric_samples(&text, name).iter().map(|(_, v)| v).sum::<f64>();
    ensure!(value("workqueue_adds_total", &queue)? >= 1.0);
    ensure!(value("workqueue_depth", &queue)? >= 0.0);
    ensure!(value("workqueue_queue_duration_seconds_count", &queue)? >= 1.0);
    ensure!(value("workqueue_queue_duration_seconds_bucket", &[("name", "replicaset"), ("le", "+Inf")])? >= 1.0);
    ensure!(value("workqueue_work_duration_seconds_count", &queue)? >= 1.0);
    let calls = total("wasm_replicaset_guest_call_duration_seconds_count");
    let call_seconds = total("wasm_replicaset_guest_call_duration_seconds_sum");
    ensure!(calls > 0.0 && call_seconds > 0.0, "guest calls: {calls}, {call_seconds}s");
    ensure!(
        call_seconds / calls < 1.0,
        "a guest call takes {}s on average, over the 1s deadline",
        call_seconds / calls
    );
    let fuel_calls = total("wasm_replicaset_guest_fuel_per_call_count");
    let fuel = total("wasm_replicaset_guest_fuel_per_call_sum");
    ensure!(fuel_calls > 0.0 && fuel > 0.0, "fuel per call: {fuel} over {fuel_calls} calls");
    let modules = metric_samples(&text, "wasm_replicaset_active_module_info");
    ensure!(modules.len() == 1 && modules[0].1 == 1.0, "active module info: {modules:?}");
    let digest = modules[0].0.iter().find(|(k, _)| k == "digest").map(|(_, v)| v.as_str()).unwrap_or_default();
    ensure!(digest.len() >= 12, "active module digest: {digest:?}");
    ensure!(value("wasm_replicaset_leader", &[])? == 1.0);
    ensure!(value("wasm_replicaset_syncs_total", &[("result", "success")])? >= 1.0);
    eprintln!("{calls} guest calls, {:.0} fuel per call, module {digest}", fuel / fuel_calls);
    Ok(())
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_a_killed_leader_is_replaced_without_extra_pods() -> Result<()> {
    const REPLICAS: usize = 200;
    let setup = Setup::new(|_| Ok(())).await?;
    let ns = &setup.ns;
    let a = setup.start_host("host-a").await?;
    let b = setup.start_host("host-b").await?;
    let (leader, standby) = roles(&a, &b).await?;
    consistently("one leader, one standby", Duration::from_secs(2), || async {
        Ok(leader.readyz().await?.1.contains("; leading") && standby.readyz().await?.1.contains("standing by"))
    })
    .await?;
    let (_, standing_by) = standby.readyz().await?;
    let leader_name = leader.process().name();
    ensure!(standing_by.contains(&format!("standing by (leader: {leader_name}_")), "standby: {standing_by}");
    let holder = |lease: Lease| lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    ensure!(holder(ns.api::<Lease>().get("wasm-replicaset-controller").await?).starts_with(leader_name));

    let counter = PodCounter::start(ns).await?;
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("big", REPLICAS as i32)).await?;
    eventually("at least 30 pods", Duration::from_secs(60), || async { Ok((counter.current() >= 30).then_some(())) })
        .await?;
    leader.kill()?;
    let killed_at = Instant::now();
    let at_kill = counter.current();
    ensure!(at_kill < REPLICAS, "all {REPLICAS} pods existed before the leader could be killed");

    // The standby waits out the lease (counted from the last renewal it saw), then leads.
    standby.wait_readyz(200, "; leading", LEASE_DURATION + Duration::from_secs(10)).await?;
    let takeover = killed_at.elapsed();
    ensure!(
        takeover >= Duration::from_secs(2),
        "took over {takeover:?} after the kill: before the {LEASE_DURATION:?} lease could have expired"
    );
    ensure!(takeover <= LEASE_DURATION + Duration::from_secs(3), "took over only {takeover:?} after the kill");
    ensure!(holder(ns.api::<Lease>().get("wasm-replicaset-controller").await?).starts_with(standby.process().name()));

    wait_converged(ns, &counter, "big", REPLICAS, Duration::from_secs(90)).await?;
    consistently(&format!("exactly {REPLICAS} pods"), Duration::from_secs(3), || async {
        Ok(counter.current() == REPLICAS)
    })
    .await?;
    ensure_never_above(&counter, REPLICAS)?;
    let pods = ns.api::<Pod>().list(&ListParams::default()).await?.items.len();
    ensure!(pods == REPLICAS, "{pods} pods listed");
    // For sizing the Deployment's memory request and limit (a debug build: an upper bound).
    let peak = std::fs::read_to_string(format!("/proc/{}/status", standby.process().pid()))?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    // Lease renewals have a client of their own, so creating pods at the QPS limit never costs
    // the new leader its lease: one term from takeover to convergence.
    let terms = standby.json_log()?.iter().filter(|l| l["message"] == "became leader").count();
    ensure!(terms == 1, "the new leader lost its lease while creating pods: {terms} terms");
    eprintln!(
        "killed the leader at {at_kill} pods; the standby led {takeover:?} later; converged to {REPLICAS}, max {}; \
         the new leader's terms: {terms}; its peak RSS: {peak}",
        counter.max()
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_lets_syncs_finish_releases_the_lease_and_exits_zero() -> Result<()> {
    const REPLICAS: usize = 40;
    let setup = Setup::new(|_| Ok(())).await?;
    let ns = &setup.ns;
    let host = setup.start_host("host-t").await?;
    host.wait_readyz(200, "; leading", SOON).await?;
    let counter = PodCounter::start(ns).await?;
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("busy", REPLICAS as i32)).await?;
    eventually("pods being created", SOON, || async { Ok((counter.current() >= 3).then_some(())) }).await?;

    host.terminate()?;
    let exit =
        eventually("the host to exit", Duration::from_secs(30), || async { Ok(host.process().exit_status()) }).await?;
    ensure!(exit == "exit code 0", "the host ended with {exit}: {}", host.process().log_tail(30));
    let lease = ns.api::<Lease>().get("wasm-replicaset-controller").await?;
    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    ensure!(holder.is_empty(), "the lease is still held by {holder:?} after a clean shutdown");
    let messages: Vec<String> =
        host.json_log()?.iter().filter_map(|l| l["message"].as_str().map(str::to_string)).collect();
    for expected in ["shutting down: no new syncs; waiting for the syncs in flight", "released the lease", "stopped"] {
        ensure!(messages.iter().any(|m| m.starts_with(expected)), "no {expected:?} in the log: {messages:?}");
    }
    // Nothing beyond spec, and nothing more once it is gone.
    consistently("no pod created after the exit", Duration::from_secs(2), || async {
        Ok(counter.current() <= REPLICAS)
    })
    .await?;
    ensure_never_above(&counter, REPLICAS)?;
    Ok(())
}

#[tokio::test]
async fn the_handover_lease_keeps_the_replicas_standing_by_until_it_is_deleted() -> Result<()> {
    let setup = Setup::new(|_| Ok(())).await?;
    let ns = &setup.ns;
    // deploy/handover/lease.yaml as the README has it applied, moved to the test namespace.
    let text = std::fs::read_to_string(deploy::deploy_dir().join("handover/lease.yaml"))?;
    let mut lease: Lease = serde_json::from_value(deploy::parse_yaml_stream(&text)?.remove(0))?;
    lease.metadata.namespace = Some(ns.name().into());
    let leases = ns.api::<Lease>();
    leases.create(&PostParams::default(), &lease).await?;

    let host = setup.start_host("host-handover").await?;
    host.wait_readyz(200, "standing by (leader: kube-controller-manager-handover)", SOON).await?;
    let counter = PodCounter::start(ns).await?;
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("web", 2)).await?;
    consistently("no pods while the placeholder holds the lease", Duration::from_secs(3), || async {
        Ok(counter.current() == 0)
    })
    .await?;

    let released_at = Instant::now();
    leases.delete("wasm-replicaset-controller", &DeleteParams::default()).await?;
    host.wait_readyz(200, "; leading", Duration::from_secs(10)).await?;
    let took = released_at.elapsed();
    wait_converged(ns, &counter, "web", 2, SOON).await?;
    ensure_never_above(&counter, 2)?;
    eprintln!("led {took:?} after the hand-over lease was deleted");
    Ok(())
}

#[tokio::test]
async fn owner_references_permission_enforcement_needs_the_finalizers_component() -> Result<()> {
    // That admission plugin is off by default, so this test has an API server of its own.
    let cp = ControlPlane::start_with(ControlPlaneOptions {
        extra_apiserver_args: vec!["--enable-admission-plugins=OwnerReferencesPermissionEnforcement".into()],
        ..Default::default()
    })
    .await?;
    let ns = cp.create_namespace("owner-references").await?;
    let dir = WorkDir::create(&format!("deploy-{}", ns.name()))?;
    TestRbac::from_rendered(&deploy::render().await?, ns.name(), ACCOUNT)?.apply(ns.client()).await?;
    let token = ns.service_account_token(ACCOUNT, 3600).await?;
    let kubeconfig = dir.path().join("kubeconfig");
    cp.write_token_kubeconfig(&kubeconfig, &token, ns.name())?;
    wait_access(&ns, ACCOUNT, "update", "leases", "coordination.k8s.io", true).await?;
    // No ReconcileModule CRD on this API server: the module watch is off.
    let mut flags = host_flags(ns.name());
    flags.push("--watch-modules=false".into());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let host =
        HostProcess::spawn("host-owner-refs", Path::new(HOST), &kubeconfig, &flags, &dir.path().join("host.log"))?;
    host.wait_serving(START).await?;
    host.wait_readyz(200, "; leading", SOON).await?;
    let counter = PodCounter::start(&ns).await?;

    // The deployed rules alone: every pod carries blockOwnerDeletion, which the plugin refuses.
    ns.api::<ReplicaSet>().create(&PostParams::default(), &replica_set("web", 2)).await?;
    eventually("the plugin's refusal in the host's log", SOON, || async {
        Ok(host.json_log()?.iter().any(|l| l.to_string().contains("cannot set blockOwnerDeletion")).then_some(()))
    })
    .await
    .map_err(|e| host.process().error_with_log(&format!("{e:#}")))?;
    ensure!(counter.current() == 0, "{} pods created", counter.current());

    // With the component's extra rule, the same host creates them.
    let overlay = dir.path().join("overlay");
    std::fs::create_dir_all(&overlay)?;
    let rendered = deploy::render_with_components(&overlay, &["owner-references-permission-enforcement"]).await?;
    TestRbac::from_rendered(&rendered, ns.name(), ACCOUNT)?.apply(ns.client()).await?;
    wait_access(&ns, ACCOUNT, "update", "replicasets/finalizers", "apps", true).await?;
    wait_converged(&ns, &counter, "web", 2, Duration::from_secs(60)).await?;
    ensure_never_above(&counter, 2)?;
    Ok(())
}
