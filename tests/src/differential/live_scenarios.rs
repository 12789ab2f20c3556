//! The scenarios that need a live cluster: kube-scheduler places the pods on kwok's fake nodes,
//! and kwok (not the scenario) starts them, turns them Ready, crash-loops them and completes
//! their evictions. Each is built so that what both controllers decide is deterministic despite
//! real timing: who survives a scale-down is settled by readiness (rule 3) or restarts and a
//! recent readiness (rules 3, 6, 7), never by ties; a drain is addressed by pod, not by node.

use std::time::Duration;

use super::runner::{CRASH_LOOP, NEVER_READY, READY};
use super::scenario::{Scenario, Step};

fn create(replicas: i32, min_ready_seconds: i32, behaviour: Option<&'static str>) -> Step {
    Step::CreateReplicaSet { name: "web", replicas, min_ready_seconds, owner: None, tier: None, behaviour }
}

/// The live scenarios, in the order they are reported.
pub fn all() -> Vec<Scenario> {
    let converge = Step::WaitConverged { rs: "web" };
    vec![
        Scenario {
            name: "live-ready-at-different-times",
            live: true,
            purpose: "pods turn Ready one after the other, two never do; the scale-down keeps the Ready ones",
            steps: vec![
                create(4, 0, Some(NEVER_READY)),
                converge.clone(),
                Step::Identify { rs: "web", expect: 4 },
                Step::SwitchBehaviour { id: 2, behaviour: READY },
                Step::WaitReady { rs: "web", ready: 1 },
                Step::SwitchBehaviour { id: 0, behaviour: READY },
                Step::WaitReady { rs: "web", ready: 2 },
                converge.clone(),
                Step::Scale { rs: "web", replicas: 2 },
                converge.clone(),
            ],
            expect: vec![("web.pods.active", "2 [0 2]"), ("web.status.readyReplicas", "2")],
        },
        Scenario {
            name: "live-crash-loop",
            live: true,
            purpose: "a crash-looping pod (restarts rising, Ready flapping) is the first to go",
            steps: vec![
                create(3, 0, None),
                converge.clone(),
                Step::Identify { rs: "web", expect: 3 },
                Step::SwitchBehaviour { id: 1, behaviour: CRASH_LOOP },
                // Two or three crash cycles; the others have been Ready for longer than any of
                // the crasher's Ready spells by then.
                Step::Sleep(Duration::from_secs(6)),
                Step::Scale { rs: "web", replicas: 2 },
                converge.clone(),
            ],
            expect: vec![("web.pods.active", "2 [0 2]")],
        },
        Scenario {
            name: "live-node-drain",
            live: true,
            purpose: "the node of pod 0 is cordoned and drained: its pod is replaced on another node",
            steps: vec![
                create(3, 0, None),
                converge.clone(),
                Step::Identify { rs: "web", expect: 3 },
                Step::DrainNodeOf { id: 0 },
                Step::WaitReady { rs: "web", ready: 3 },
                converge.clone(),
            ],
            expect: vec![("web.pods.active", "3 [1 2 new]"), ("web.status.readyReplicas", "3")],
        },
        Scenario {
            name: "live-min-ready-seconds",
            live: true,
            purpose: "Ready pods count as available only after minReadySeconds, with no pod event left to say so",
            steps: vec![
                create(3, 5, None),
                Step::WaitReady { rs: "web", ready: 3 },
                Step::Snapshot { label: "just-ready" },
                converge.clone(),
                Step::Sleep(Duration::from_secs(6)),
            ],
            expect: vec![("just-ready: web.status.availableReplicas", "0"), ("web.status.availableReplicas", "3")],
        },
    ]
}
