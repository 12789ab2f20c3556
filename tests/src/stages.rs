//! Pod behaviours a live-cluster test can choose (start, readiness after a delay, crash loops, failure, graceful deletion), written as our own kwok `Stage` objects and selected per pod by an annotation.
//!
//! kwok plays a Stage on a pod when the Stage's selector matches the pod as it is now, after the
//! Stage's delay; every change of the pod (a new resourceVersion) cancels a pending delay and
//! matches again. So each behaviour is a small state machine whose states are told apart by the
//! pod's phase and Ready condition, and a pod switches behaviour when its annotation changes
//! ([`crate::live::switch_behaviour`]): the new behaviour's stages take over from its current
//! state. Findings from running them against kwok v0.8.0:
//! - a status template replaces `containerStatuses` as a whole (the list has no merge key), so
//!   every stage writes complete container statuses, copying what it keeps from the current
//!   ones; conditions merge by `type`;
//! - the template language is Go's with sprig (`add1` raises the restart count) and kwok's
//!   `Now`, `Quote`, `NodeIPWith`, `PodIPWith`;
//! - `delay.durationMilliseconds` plus `jitterDurationMilliseconds` draws the delay uniformly
//!   from `[duration, jitter)` (the jitter is the upper bound, not an addition);
//! - `delay.durationFrom` on `.metadata.deletionTimestamp` waits until that time: a pod deleted
//!   with grace period `g` is removed `g` seconds after the delete call.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

/// The pod annotation that picks a behaviour by name (see [`crate::live::LiveOptions::behaviours`]).
/// Pods without it follow the default behaviour; a name no behaviour has leaves the pod alone.
pub const BEHAVIOUR_ANNOTATION: &str = "harness.wasm-replicaset.io/behaviour";

/// What kwok does with a pod from the moment it is bound to a fake node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Left `Pending` with no container statuses, as if its image never pulled.
    Pending,
    /// `Running` at once with its containers started, never `Ready` (a readiness probe that never
    /// passes).
    NeverReady,
    /// `Running` at once, `Ready` after a delay drawn uniformly from `delay..delay + jitter`.
    Ready {
        /// The shortest time from `Running` to `Ready`.
        delay: Duration,
        /// How much longer it may take, at random; zero for exactly `delay`.
        jitter: Duration,
    },
    /// `Running`, `Ready` after `crashed_for`, then forever: its containers crash after
    /// `ready_for` (restart count + 1, `CrashLoopBackOff`, not `Ready`) and are back and `Ready`
    /// `crashed_for` later. The phase stays `Running` (`restartPolicy: Always`).
    CrashLoop {
        /// How long the containers stay up and `Ready` each time.
        ready_for: Duration,
        /// How long they stay crashed (not `Ready`) each time.
        crashed_for: Duration,
    },
    /// `Running`, then phase `Failed` after `after`, as the kubelet leaves a pod it evicted
    /// (reason `Evicted`, containers terminated with exit code 137).
    Fail {
        /// Time from `Running` to `Failed`.
        after: Duration,
    },
}

/// How kwok completes a pod's graceful deletion (once `deletionTimestamp` is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// At once, as a kubelet does for containers that exit on SIGTERM.
    Prompt,
    /// When the grace period (`deletionGracePeriodSeconds`) is over, as for containers that ignore
    /// SIGTERM: the pod stays `Terminating` for its whole `terminationGracePeriodSeconds`.
    FullGracePeriod,
}

/// A pod behaviour: its lifecycle and how its deletion ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// From binding to the end (or forever).
    pub lifecycle: Lifecycle,
    /// Once deleted.
    pub termination: Termination,
}

impl Behaviour {
    /// `lifecycle`, deleted promptly.
    pub fn new(lifecycle: Lifecycle) -> Self {
        Self { lifecycle, termination: Termination::Prompt }
    }

    /// `Running` and `Ready` after `delay` (no jitter), deleted promptly.
    pub fn ready_after(delay: Duration) -> Self {
        Self::new(Lifecycle::Ready { delay, jitter: Duration::ZERO })
    }

    /// The same lifecycle, with deletion ending as `termination` says.
    pub fn terminating(self, termination: Termination) -> Self {
        Self { termination, ..self }
    }

    /// The kwok Stage objects that implement this behaviour for pods whose
    /// [`BEHAVIOUR_ANNOTATION`] is `name`, or (`None`) for pods without the annotation. Stage
    /// names start with `harness-<name or "default">-`.
    pub fn stages(&self, name: Option<&str>) -> Result<Vec<Value>> {
        if let Some(name) = name {
            validate_name(name)?;
        }
        let stage = |step: &str, when: Vec<Value>, delay: Option<Value>, next: Value| {
            let mut expressions = vec![behaviour_is(name)];
            expressions.extend(when);
            let mut spec = json!({
                "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                "selector": {"matchExpressions": expressions},
                "next": next,
            });
            if let Some(delay) = delay {
                spec["delay"] = delay;
            }
            json!({
                "apiVersion": "kwok.x-k8s.io/v1alpha1",
                "kind": "Stage",
                "metadata": {"name": format!("harness-{}-{step}", name.unwrap_or("default"))},
                "spec": spec,
            })
        };
        let status = |template: &str| json!({"statusTemplate": template});
        let start = || stage("start", vec![not_deleted(), phase_in(&["Pending"])], None, status(START));
        let ready = |delay: Option<Value>| {
            stage("ready", vec![not_deleted(), phase_in(&["Running"]), ready_is(false)], delay, status(READY))
        };

        let mut stages = match &self.lifecycle {
            Lifecycle::Pending => vec![],
            Lifecycle::NeverReady => vec![start()],
            Lifecycle::Ready { delay, jitter } => vec![start(), ready(fixed_or_jittered(*delay, *jitter))],
            Lifecycle::CrashLoop { ready_for, crashed_for } => vec![
                start(),
                // Recovering from a crash and becoming Ready the first time are the same step.
                ready(fixed_or_jittered(*crashed_for, Duration::ZERO)),
                stage(
                    "crash",
                    vec![not_deleted(), phase_in(&["Running"]), ready_is(true)],
                    fixed_or_jittered(*ready_for, Duration::ZERO),
                    status(CRASH),
                ),
            ],
            Lifecycle::Fail { after } => vec![
                start(),
                stage(
                    "fail",
                    vec![not_deleted(), phase_in(&["Running"])],
                    fixed_or_jittered(*after, Duration::ZERO),
                    status(FAIL),
                ),
            ],
        };
        let until_grace_period_ends = json!({"durationFrom": {"expressionFrom": ".metadata.deletionTimestamp"}});
        let delete_after = match self.termination {
            Termination::Prompt => None,
            Termination::FullGracePeriod => Some(until_grace_period_ends),
        };
        stages.push(stage("delete", vec![deleted()], delete_after, json!({"delete": true})));
        Ok(stages)
    }
}

/// All stages for `behaviours` (named) and `default` (pods without the annotation), as one YAML
/// stream of Stage documents for `kwok -c`.
pub fn stages_yaml<'a>(
    default: &Behaviour,
    behaviours: impl IntoIterator<Item = (&'a str, &'a Behaviour)>,
) -> Result<String> {
    let mut stages = default.stages(None)?;
    for (name, behaviour) in behaviours {
        stages.extend(behaviour.stages(Some(name))?);
    }
    let documents: Vec<String> = stages.iter().map(serde_yaml::to_string).collect::<Result<_, _>>()?;
    Ok(documents.join("---\n"))
}

/// Behaviour names become annotation values and Stage names: lowercase alphanumerics and '-'.
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name != "default";
    if !ok {
        bail!("behaviour name {name:?} must be 1-40 lowercase alphanumerics or '-', not \"default\"");
    }
    Ok(())
}

// === Selectors ===

fn behaviour_is(name: Option<&str>) -> Value {
    let key = format!(".metadata.annotations[\"{BEHAVIOUR_ANNOTATION}\"]");
    match name {
        Some(name) => json!({"key": key, "operator": "In", "values": [name]}),
        None => json!({"key": key, "operator": "DoesNotExist"}),
    }
}

fn not_deleted() -> Value {
    json!({"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"})
}

fn deleted() -> Value {
    json!({"key": ".metadata.deletionTimestamp", "operator": "Exists"})
}

fn phase_in(phases: &[&str]) -> Value {
    json!({"key": ".status.phase", "operator": "In", "values": phases})
}

/// The Ready condition is "True" (`ready`), or anything else: "False" or missing.
fn ready_is(ready: bool) -> Value {
    let key = r#".status.conditions.[] | select( .type == "Ready" ) | .status"#;
    json!({"key": key, "operator": if ready { "In" } else { "NotIn" }, "values": ["True"]})
}

/// A Stage `delay` of `delay` (up to `delay + jitter`), or none for zero.
fn fixed_or_jittered(delay: Duration, jitter: Duration) -> Option<Value> {
    if delay.is_zero() && jitter.is_zero() {
        return None;
    }
    let mut value = json!({"durationMilliseconds": delay.as_millis() as u64});
    if !jitter.is_zero() {
        // kwok's jitter is the upper bound of the delay (see the module doc).
        value["jitterDurationMilliseconds"] = json!((delay + jitter).as_millis() as u64);
    }
    Some(value)
}

// === Status templates ===
//
// Each renders a strategic-merge patch of the pod's status. `$s` is a container's current status
// (same index as in the spec: kwok's own templates rely on that order too).

/// Pending → Running: containers started, not Ready yet; pod and host IPs from kwok's pools.
const START: &str = r#"{{ $now := Now }}
conditions:
- type: Initialized
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: ContainersReady
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  imageID: ""
  ready: false
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
phase: Running
startTime: {{ $now | Quote }}
"#;

/// Running, not Ready → Ready: running containers keep their start time, crashed ones restart now.
const READY: &str = r#"{{ $now := Now }}
{{ $root := . }}
conditions:
- type: ContainersReady
  status: "True"
  reason: ""
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "True"
  reason: ""
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range $i, $c := .spec.containers }}
{{ $s := index $root.status.containerStatuses $i }}
- name: {{ $c.name | Quote }}
  image: {{ $c.image | Quote }}
  imageID: ""
  ready: true
  started: true
  restartCount: {{ $s.restartCount }}
  {{ if $s.state.running }}
  state: {{ toJson $s.state }}
  {{ else }}
  state:
    running:
      startedAt: {{ $now | Quote }}
  {{ end }}
  lastState: {{ toJson $s.lastState }}
{{ end }}
"#;

/// Ready → crashed: every container exited with an error and waits in CrashLoopBackOff.
const CRASH: &str = r#"{{ $now := Now }}
{{ $root := . }}
conditions:
- type: ContainersReady
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range $i, $c := .spec.containers }}
{{ $s := index $root.status.containerStatuses $i }}
- name: {{ $c.name | Quote }}
  image: {{ $c.image | Quote }}
  imageID: ""
  ready: false
  started: false
  restartCount: {{ add1 $s.restartCount }}
  state:
    waiting:
      reason: CrashLoopBackOff
      message: back-off restarting failed container
  lastState:
    terminated:
      exitCode: 1
      reason: Error
      {{ with $s.state.running }}
      startedAt: {{ .startedAt | Quote }}
      {{ end }}
      finishedAt: {{ $now | Quote }}
{{ end }}
"#;

/// Running → Failed, as after a kubelet eviction.
const FAIL: &str = r#"{{ $now := Now }}
{{ $root := . }}
conditions:
- type: ContainersReady
  status: "False"
  reason: PodFailed
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "False"
  reason: PodFailed
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range $i, $c := .spec.containers }}
{{ $s := index $root.status.containerStatuses $i }}
- name: {{ $c.name | Quote }}
  image: {{ $c.image | Quote }}
  imageID: ""
  ready: false
  started: false
  restartCount: {{ $s.restartCount }}
  state:
    terminated:
      exitCode: 137
      reason: Error
      {{ with $s.state.running }}
      startedAt: {{ .startedAt | Quote }}
      {{ end }}
      finishedAt: {{ $now | Quote }}
{{ end }}
phase: Failed
reason: Evicted
message: "The node was low on resource: memory."
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn names(stages: &[Value]) -> Vec<&str> {
        stages.iter().map(|s| s["metadata"]["name"].as_str().unwrap()).collect()
    }

    #[test]
    fn each_lifecycle_has_its_steps_and_every_behaviour_ends_with_a_delete_stage() {
        let ms = Duration::from_millis;
        let cases = [
            (Lifecycle::Pending, vec!["harness-x-delete"]),
            (Lifecycle::NeverReady, vec!["harness-x-start", "harness-x-delete"]),
            (
                Lifecycle::Ready { delay: ms(500), jitter: ms(250) },
                vec!["harness-x-start", "harness-x-ready", "harness-x-delete"],
            ),
            (
                Lifecycle::CrashLoop { ready_for: ms(1000), crashed_for: ms(700) },
                vec!["harness-x-start", "harness-x-ready", "harness-x-crash", "harness-x-delete"],
            ),
            (Lifecycle::Fail { after: ms(300) }, vec!["harness-x-start", "harness-x-fail", "harness-x-delete"]),
        ];
        for (lifecycle, want) in cases {
            let stages = Behaviour::new(lifecycle.clone()).stages(Some("x")).unwrap();
            assert_eq!(names(&stages), want, "{lifecycle:?}");
        }
    }

    #[test]
    fn delays_are_milliseconds_and_jitter_is_the_upper_bound() {
        let ready = Lifecycle::Ready { delay: Duration::from_millis(500), jitter: Duration::from_millis(250) };
        let stages = Behaviour::new(ready).stages(Some("x")).unwrap();
        assert_eq!(stages[0]["spec"].get("delay"), None, "starting is immediate");
        assert_eq!(stages[1]["spec"]["delay"], json!({"durationMilliseconds": 500, "jitterDurationMilliseconds": 750}));

        let crash = Lifecycle::CrashLoop { ready_for: Duration::from_secs(1), crashed_for: Duration::from_millis(700) };
        let stages = Behaviour::new(crash).stages(Some("x")).unwrap();
        assert_eq!(stages[1]["spec"]["delay"], json!({"durationMilliseconds": 700}), "down before Ready");
        assert_eq!(stages[2]["spec"]["delay"], json!({"durationMilliseconds": 1000}), "up before crashing");
    }

    #[test]
    fn deletion_is_prompt_or_waits_for_the_deletion_timestamp() {
        let prompt = Behaviour::ready_after(Duration::ZERO).stages(None).unwrap();
        let delete = prompt.last().unwrap();
        assert_eq!(delete["spec"]["next"], json!({"delete": true}));
        assert_eq!(delete["spec"].get("delay"), None);

        let slow = Behaviour::ready_after(Duration::ZERO).terminating(Termination::FullGracePeriod);
        let delete = slow.stages(None).unwrap().pop().unwrap();
        assert_eq!(delete["spec"]["delay"]["durationFrom"]["expressionFrom"], ".metadata.deletionTimestamp");
    }

    #[test]
    fn named_behaviours_select_their_annotation_and_the_default_selects_its_absence() {
        let behaviour = Behaviour::new(Lifecycle::NeverReady);
        let named = behaviour.stages(Some("slow")).unwrap();
        let default = behaviour.stages(None).unwrap();
        for (stages, want) in [
            (
                &named,
                json!({"key": ".metadata.annotations[\"harness.wasm-replicaset.io/behaviour\"]", "operator": "In", "values": ["slow"]}),
            ),
            (
                &default,
                json!({"key": ".metadata.annotations[\"harness.wasm-replicaset.io/behaviour\"]", "operator": "DoesNotExist"}),
            ),
        ] {
            for stage in stages {
                assert_eq!(stage["spec"]["selector"]["matchExpressions"][0], want);
            }
        }
        assert_eq!(names(&default), ["harness-default-start", "harness-default-delete"]);
    }

    #[test]
    fn bad_behaviour_names_are_refused() {
        let behaviour = Behaviour::new(Lifecycle::Pending);
        for bad in ["", "Slow", "a_b", "-a", "default", &"x".repeat(41)] {
            assert!(behaviour.stages(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(behaviour.stages(Some("crash-loop-2")).is_ok());
    }

    #[test]
    fn the_yaml_stream_holds_one_document_per_stage_with_the_templates_intact() {
        let yaml = stages_yaml(
            &Behaviour::ready_after(Duration::ZERO),
            [("fail", &Behaviour::new(Lifecycle::Fail { after: Duration::from_millis(100) }))],
        )
        .unwrap();
        let documents: Vec<Value> = yaml.split("---\n").map(|doc| serde_yaml::from_str(doc).unwrap()).collect();
        assert_eq!(documents.len(), 6);
        assert_eq!(documents[4]["spec"]["next"]["statusTemplate"], FAIL);
    }
}
