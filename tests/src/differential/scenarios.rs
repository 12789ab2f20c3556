//! The scenarios both controllers run.
//!
//! Each scale-down is built so that one ranking rule (`ActivePodsWithRanks.Less`,
//! pkg/controller/controller_utils.go) separates every victim from every survivor while every
//! earlier rule ties; most also make a later rule point the other way, so the scenario fails if
//! the rules are applied out of order. Ties *among* victims (or among survivors) do not matter:
//! the surviving set is the same whichever way they break. Before each scale-down the scenario
//! waits for the ReplicaSet to be converged for a second, so the controller's informer has seen
//! the pod changes (binding, status, annotations) it ranks on.
//!
//! What can be made deterministic on a real API server, rule by rule:
//! - 1 (unassigned first), 2 (phase), 3 (readiness), 4 (deletion cost), 7 (restarts): yes, they
//!   compare fields the scenario sets through the API (pods/binding, the status subresource, the
//!   annotation). Rule 7's sidecar part (restartable init containers) is not exercised: the
//!   template has none.
//! - 5 (colocation): yes, but upstream only ranks by colocation when the ReplicaSet has a
//!   controller owner (`getReplicaSetsWithSameController` returns nothing otherwise, so every
//!   rank is 0): the scenarios give it an owner reference to a made-up Deployment, and one gives
//!   a sibling ReplicaSet the same owner, whose pods count too.
//! - 6 (ready time): yes, as long as the UID tie-break is never reached. Ready times are ours to
//!   set, relative to one anchor per run ([`Since::Ago`]): equal times skip the rule
//!   (`readyTime1.Equal`), so where rule 6 must tie every ready pod gets the *same* time; where it
//!   decides, the times sit in log2 buckets far apart (10 h vs 10 min: 2^45 vs 2^39 ns), whatever
//!   "now" each controller reads. A missing `lastTransitionTime` (zero time) is also covered: it
//!   counts as the most recent, outside the log2 comparison.
//! - 8 (creation time): only partly. creationTimestamp is set by the API server, to the second.
//!   Pods created in the same second are equal (`sort.Sort` leaves their order unspecified, our
//!   stable sort keeps input order); pods created in different seconds but in the same log2 age
//!   bucket are ordered by UID, random per run. So rule 8 decides deterministically only when the
//!   ages at the moment of the sort differ by more than a factor of 2: `rule-8-creation-time`
//!   creates its pods 6 s apart (ages about 9 s and 2 s when it scales down) and checks the ratio
//!   ([`Step::RequireAgeRatio`]) right before, failing the run, not the comparison, if the machine
//!   was too slow. The newest-pods-go-first order within one bucket cannot be checked.
//!
//! Each scenario also states what upstream must end with ([`Scenario::expect`]), which catches a
//! scenario that is wrong or not deterministic instead of blaming the host.

use std::time::Duration;

use super::scenario::{FakeOwner, Scenario, Since, Step};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

fn create(name: &'static str, replicas: i32) -> Step {
    Step::CreateReplicaSet { name, replicas, min_ready_seconds: 0, owner: None, tier: None, behaviour: None }
}

fn converge(rs: &'static str) -> Step {
    Step::WaitConverged { rs }
}

fn scale(rs: &'static str, replicas: i32) -> Step {
    Step::Scale { rs, replicas }
}

fn identify(rs: &'static str, expect: usize) -> Step {
    Step::Identify { rs, expect }
}

fn running(id: u32, ready: bool, ago: Duration) -> Step {
    Step::SetRunning { id, ready, since: Since::Ago(ago) }
}

/// `web` with `n` identified pods (ids 0..n), converged.
fn web_with(n: i32) -> Vec<Step> {
    vec![create("web", n), converge("web"), identify("web", n as usize)]
}

/// Then waits for the controller to have seen the pods' changes, scales `web` to `to` and waits.
fn then_scale_web(mut steps: Vec<Step>, to: i32) -> Vec<Step> {
    steps.extend([converge("web"), scale("web", to), converge("web")]);
    steps
}

const DEPLOYMENT: FakeOwner = FakeOwner { name: "web-deployment", uid: "6d1f5c2e-0000-4000-8000-00000000d001" };

/// Every scenario, in the order they are reported.
pub fn all() -> Vec<Scenario> {
    let mut all = bare();
    all.extend(super::live_scenarios::all());
    all
}

/// The scenarios on a bare control plane, where the scenario plays kubelet and scheduler.
fn bare() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "scale-up-0-to-5",
            live: false,
            purpose: "a ReplicaSet of 0 scaled to 5 gets 5 pods (slow-start batches) and its status",
            steps: vec![create("web", 0), converge("web"), scale("web", 5), converge("web")],
            expect: vec![("web.pods.active", "5 [new new new new new]"), ("web.status.replicas", "5")],
        },
        Scenario {
            name: "scale-down-3-to-0",
            live: false,
            purpose: "scaling to 0 deletes every pod (no ranking: all go)",
            steps: then_scale_web(web_with(3), 0),
            expect: vec![("web.pods.active", "-"), ("web.status.replicas", "0")],
        },
        Scenario {
            name: "rule-1-unassigned-first",
            live: false,
            purpose: "5->2: the 3 pods on no node go before the 2 bound ones",
            steps: then_scale_web(
                [web_with(5), vec![Step::Bind { id: 0, node: "node-a" }, Step::Bind { id: 1, node: "node-b" }]]
                    .concat(),
                2,
            ),
            expect: vec![("web.pods.active", "2 [0 1]"), ("web.pods.terminating", "-")],
        },
        Scenario {
            name: "rule-1-beats-rules-2-and-3",
            live: false,
            purpose: "5->2: unassigned Running+Ready pods go before bound Pending ones",
            steps: then_scale_web(
                [
                    web_with(5),
                    vec![
                        Step::Bind { id: 0, node: "node-a" },
                        Step::Bind { id: 1, node: "node-a" },
                        running(2, true, HOUR),
                        running(3, true, HOUR),
                        running(4, true, HOUR),
                    ],
                ]
                .concat(),
                2,
            ),
            expect: vec![("web.pods.active", "2 [0 1]")],
        },
        Scenario {
            name: "rule-2-pending-before-running",
            live: false,
            purpose: "5->2: the 3 Pending pods go before the 2 Running (not ready) ones",
            steps: then_scale_web([web_with(5), vec![running(0, false, HOUR), running(1, false, HOUR)]].concat(), 2),
            expect: vec![("web.pods.active", "2 [0 1]")],
        },
        Scenario {
            name: "rule-2-phase-order",
            live: false,
            purpose: "Pending < Unknown < Running: 5->3 keeps the Unknown pod over 2 Pending; 3->2 drops it",
            steps: [
                web_with(5),
                vec![
                    running(0, false, HOUR),
                    running(1, false, HOUR),
                    Step::SetPhase { id: 2, phase: "Unknown" },
                    converge("web"),
                    scale("web", 3),
                    converge("web"),
                    Step::Snapshot { label: "after 5->3" },
                    scale("web", 2),
                    converge("web"),
                ],
            ]
            .concat(),
            expect: vec![("after 5->3: web.pods.active", "3 [0 1 2]"), ("web.pods.active", "2 [0 1]")],
        },
        Scenario {
            name: "rule-3-not-ready-before-ready",
            live: false,
            purpose: "5->2, all Running: the 3 not-ready pods go before the 2 ready ones",
            steps: then_scale_web([web_with(5), (0..5).map(|id| running(id, id < 2, HOUR)).collect()].concat(), 2),
            expect: vec![("web.pods.active", "2 [0 1]")],
        },
        Scenario {
            name: "rule-3-beats-rule-4",
            live: false,
            purpose: "5->2: not-ready pods with deletion cost 100 go before ready ones with cost -10",
            steps: then_scale_web(
                [
                    web_with(5),
                    (0..5).map(|id| running(id, id < 2, HOUR)).collect(),
                    (0..5).map(|id| Step::SetDeletionCost { id, cost: if id < 2 { -10 } else { 100 } }).collect(),
                ]
                .concat(),
                2,
            ),
            expect: vec![("web.pods.active", "2 [0 1]")],
        },
        Scenario {
            name: "rule-4-deletion-cost",
            live: false,
            purpose: "5->2: the 3 lowest pod-deletion-costs go (-5, unset = 0, 10; 50 and 100 stay)",
            steps: then_scale_web(
                [
                    web_with(5),
                    vec![
                        Step::SetDeletionCost { id: 0, cost: 100 },
                        Step::SetDeletionCost { id: 1, cost: -5 },
                        Step::SetDeletionCost { id: 3, cost: 50 },
                        Step::SetDeletionCost { id: 4, cost: 10 },
                    ],
                ]
                .concat(),
                2,
            ),
            expect: vec![("web.pods.active", "2 [0 3]")],
        },
        Scenario {
            name: "rule-5-colocation",
            live: false,
            purpose: "5->2, RS owned by a Deployment: the 3 pods sharing node-a go, though they were ready longer",
            steps: then_scale_web(
                [
                    vec![
                        Step::CreateReplicaSet {
                            name: "web",
                            replicas: 5,
                            min_ready_seconds: 0,
                            owner: Some(DEPLOYMENT),
                            tier: None,
                            behaviour: None,
                        },
                        converge("web"),
                        identify("web", 5),
                    ],
                    vec![
                        Step::Bind { id: 0, node: "node-a" },
                        Step::Bind { id: 1, node: "node-a" },
                        Step::Bind { id: 2, node: "node-a" },
                        Step::Bind { id: 3, node: "node-b" },
                        Step::Bind { id: 4, node: "node-c" },
                    ],
                    // Rule 6 alone would pick 3 and 4 (ready more recently).
                    (0..5).map(|id| running(id, true, if id < 3 { 10 * HOUR } else { 10 * MINUTE })).collect(),
                ]
                .concat(),
                2,
            ),
            expect: vec![("web.pods.active", "2 [3 4]"), ("web.pods.terminating", "3 [0 1 2]")],
        },
        Scenario {
            name: "rule-5-colocation-across-sibling-replicasets",
            live: false,
            purpose: "web 4->2: colocation counts the pods of a sibling ReplicaSet with the same Deployment owner",
            steps: [
                vec![
                    Step::CreateReplicaSet {
                        name: "web",
                        replicas: 4,
                        min_ready_seconds: 0,
                        owner: Some(DEPLOYMENT),
                        tier: None,
                        behaviour: None,
                    },
                    Step::CreateReplicaSet {
                        name: "sibling",
                        replicas: 2,
                        min_ready_seconds: 0,
                        owner: Some(DEPLOYMENT),
                        tier: None,
                        behaviour: None,
                    },
                    converge("web"),
                    converge("sibling"),
                    identify("web", 4),
                    identify("sibling", 2),
                ],
                // web: 0, 1 on node-a; 2, 3 on node-b, where the sibling's 4 and 5 also are.
                [(0, "node-a"), (1, "node-a"), (2, "node-b"), (3, "node-b"), (4, "node-b"), (5, "node-b")]
                    .into_iter()
                    .map(|(id, node)| Step::Bind { id, node })
                    .collect(),
                (0..6).map(|id| running(id, true, HOUR)).collect(),
                vec![converge("sibling"), converge("web"), scale("web", 2), converge("web"), converge("sibling")],
            ]
            .concat(),
            expect: vec![("web.pods.active", "2 [0 1]"), ("sibling.pods.active", "2 [4 5]")],
        },
        Scenario {
            name: "rule-6-ready-time",
            live: false,
            purpose: "5->2, all ready: the 3 most recently ready (10 s, 1 min, 10 min ago) go; the two ready 10 h stay",
            steps: then_scale_web(
                [
                    web_with(5),
                    vec![
                        running(0, true, 10 * HOUR),
                        running(1, true, 10 * HOUR),
                        running(2, true, 10 * MINUTE),
                        running(3, true, MINUTE),
                        running(4, true, Duration::from_secs(10)),
                    ],
                ]
                .concat(),
                2,
            ),
            expect: vec![("web.pods.active", "2 [0 1]")],
        },
        Scenario {
            name: "rule-6-ready-without-transition-time",
            live: false,
            purpose: "5->2: pods Ready with no lastTransitionTime (zero time) count as the most recently ready",
            steps: then_scale_web(
                [
                    web_with(5),
                    vec![running(0, true, 10 * HOUR), running(1, true, 10 * HOUR)],
                    (2..5).map(|id| Step::SetRunning { id, ready: true, since: Since::Unset }).collect(),
                ]
                .concat(),
                2,
            ),
            expect: vec![("web.pods.active", "2 [0 1]")],
        },
        Scenario {
            name: "rule-7-restarts",
            live: false,
            purpose: "5->2, all ready since the same instant: the 3 with most restarts (5, 3, 1) go",
            steps: then_scale_web(
                [
                    web_with(5),
                    (0..5).map(|id| running(id, true, HOUR)).collect(),
                    [(0, 0), (1, 5), (2, 1), (3, 0), (4, 3)]
                        .into_iter()
                        .map(|(id, restarts)| Step::SetRestarts { id, restarts })
                        .collect(),
                ]
                .concat(),
                2,
            ),
            expect: vec![("web.pods.active", "2 [0 3]")],
        },
        Scenario {
            name: "rule-8-creation-time",
            live: false,
            purpose: "3->1: the 2 pods created 6 s after the first go (ages > 2x apart: different log2 buckets)",
            steps: vec![
                create("web", 1),
                converge("web"),
                identify("web", 1),
                Step::Sleep(Duration::from_secs(6)),
                scale("web", 3),
                converge("web"),
                identify("web", 2),
                Step::RequireAgeRatio { older: 0, newer: 1, ratio: 2.2 },
                Step::RequireAgeRatio { older: 0, newer: 2, ratio: 2.2 },
                scale("web", 1),
                converge("web"),
            ],
            expect: vec![("web.pods.active", "1 [0]")],
        },
        Scenario {
            name: "orphans-adopted-surplus-deleted-inactive-and-foreign-left",
            live: false,
            purpose: "a new ReplicaSet of 2 adopts its 3 active orphans and deletes the Pending one; it leaves \
                      Failed, Succeeded and terminating orphans and another controller's pod alone",
            steps: vec![
                Step::CreateOrphan { id: 0, app: "web" },
                Step::CreateOrphan { id: 1, app: "web" },
                Step::CreateOrphan { id: 2, app: "web" },
                running(0, true, HOUR),
                running(1, true, HOUR),
                Step::CreateOrphan { id: 3, app: "web" },
                Step::SetPhase { id: 3, phase: "Failed" },
                Step::CreateOrphan { id: 4, app: "web" },
                Step::SetPhase { id: 4, phase: "Succeeded" },
                Step::CreateForeignPod { id: 5, app: "web" },
                Step::CreateOrphan { id: 6, app: "web" },
                Step::Bind { id: 6, node: "node-a" },
                Step::DeletePod { id: 6 },
                // Let the controller's pod informer see the orphans before the ReplicaSet appears
                // (else it may create pods first, and then pick victims among more).
                Step::Sleep(Duration::from_secs(1)),
                create("web", 2),
                converge("web"),
            ],
            expect: vec![
                ("web.pods.active", "2 [0 1]"),
                (
                    "unowned pods",
                    "3(app=web Failed) 4(app=web Succeeded) 5(app=web Pending owned-elsewhere) 6(app=web Pending terminating)",
                ),
            ],
        },
        Scenario {
            name: "relabel-in-adopted-surplus-deleted",
            live: false,
            purpose: "a ready pod relabelled into a running ReplicaSet of 3 is adopted; the Pending pod goes; \
                      the adopted pod lacks the template's tier label (fullyLabeledReplicas 2)",
            steps: vec![
                Step::CreateReplicaSet {
                    name: "web",
                    replicas: 3,
                    min_ready_seconds: 0,
                    owner: None,
                    tier: Some("front"),
                    behaviour: None,
                },
                converge("web"),
                identify("web", 3),
                running(0, true, HOUR),
                running(1, true, HOUR),
                // Made ready while nobody selects it, so it is never a Pending candidate.
                Step::CreateOrphan { id: 3, app: "elsewhere" },
                running(3, true, HOUR),
                converge("web"),
                Step::Relabel { id: 3, app: "web" },
                converge("web"),
            ],
            expect: vec![
                ("web.pods.active", "3 [0 1 3]"),
                ("web.status.fullyLabeledReplicas", "2"),
                ("unowned pods", "-"),
            ],
        },
        Scenario {
            name: "relabel-out-released-and-replaced",
            live: false,
            purpose: "a pod relabelled out of the selector is released (owner reference removed) and replaced",
            steps: [web_with(3), vec![Step::Relabel { id: 1, app: "elsewhere" }, converge("web")]].concat(),
            expect: vec![("web.pods.active", "3 [0 2 new]"), ("unowned pods", "1(app=elsewhere Pending)")],
        },
        Scenario {
            name: "failed-and-terminating-pods-replaced",
            live: false,
            purpose: "a Failed pod and a terminating one are replaced, kept (still owned) and not counted as replicas",
            steps: [
                web_with(3),
                vec![
                    Step::SetPhase { id: 1, phase: "Failed" },
                    Step::Bind { id: 2, node: "node-a" },
                    Step::DeletePod { id: 2 },
                    converge("web"),
                ],
            ]
            .concat(),
            expect: vec![
                ("web.pods.active", "3 [0 new new]"),
                ("web.pods.finished", "1 [1]"),
                ("web.pods.terminating", "1 [2]"),
                ("web.status.terminatingReplicas", "1"),
            ],
        },
        Scenario {
            name: "min-ready-seconds-availability",
            live: false,
            purpose: "availableReplicas with minReadySeconds 1 (requeued once the time passes) and 3600",
            steps: vec![
                Step::CreateReplicaSet {
                    name: "web",
                    replicas: 3,
                    min_ready_seconds: 1,
                    owner: None,
                    tier: None,
                    behaviour: None,
                },
                Step::CreateReplicaSet {
                    name: "slow",
                    replicas: 2,
                    min_ready_seconds: 3600,
                    owner: None,
                    tier: None,
                    behaviour: None,
                },
                converge("web"),
                converge("slow"),
                identify("web", 3),
                identify("slow", 2),
                running(0, true, 10 * MINUTE),
                Step::SetRunning { id: 1, ready: true, since: Since::Now },
                running(2, false, 10 * MINUTE),
                running(3, true, 10 * HOUR),
                running(4, true, 10 * MINUTE),
                converge("web"),
                converge("slow"),
                // Long enough for the 1 s of pod 1 to pass; the end state must then settle.
                Step::Sleep(Duration::from_secs(2)),
            ],
            expect: vec![("web.status.availableReplicas", "2"), ("slow.status.availableReplicas", "1")],
        },
        Scenario {
            name: "quota-exceeded-then-scaled-within",
            live: false,
            purpose: "a pod quota of 2 under a ReplicaSet of 3: FailedCreate and ReplicaFailure; scaled to 2, the \
                      condition goes",
            steps: vec![
                Step::SetPodQuota { pods: 2 },
                create("web", 3),
                Step::Snapshot { label: "over quota" },
                scale("web", 2),
                converge("web"),
            ],
            expect: vec![
                ("over quota: web.pods.active", "2 [new new]"),
                ("over quota: web.status.conditions", "ReplicaFailure=True/FailedCreate"),
                ("web.status.conditions", "-"),
                ("web.events", "Normal/SuccessfulCreate Warning/FailedCreate"),
            ],
        },
        Scenario {
            name: "replicaset-being-deleted-is-not-scaled",
            live: false,
            purpose: "a ReplicaSet with a deletionTimestamp (foreground deletion, no GC) scaled 3->5 gets no pods",
            steps: [
                web_with(3),
                vec![
                    Step::DeleteReplicaSetForeground { rs: "web" },
                    scale("web", 5),
                    // Nothing to converge to; the end state must settle after this.
                    Step::Sleep(Duration::from_secs(2)),
                ],
            ]
            .concat(),
            expect: vec![("web.pods.active", "3 [0 1 2]")],
        },
    ]
}

/// The scenario named `name`.
pub fn by_name(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn scenario_names_are_unique_kebab_case_and_every_scenario_expects_something() {
        let all = super::all();
        let names: BTreeSet<&str> = all.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), all.len(), "duplicate names");
        for s in &all {
            assert!(s.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{}", s.name);
            assert!(!s.expect.is_empty(), "{} expects nothing", s.name);
            assert!(super::by_name(s.name).is_some());
        }
    }
}
