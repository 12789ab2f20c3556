//! The scenario language: a name, a one-line purpose and a list of steps, run in order against one
//! controller on one fresh control plane.
//!
//! Pods get a stable identity from the scenario, never from their names (the controllers generate
//! names at random): [`Step::Identify`] annotates the ReplicaSet's pods `diff.test/id: <n>` and
//! [`Step::CreateOrphan`] creates pods carrying one. Every later step addresses pods by that id.

use std::time::Duration;

/// The annotation holding a pod's stable identity.
pub const ID_ANNOTATION: &str = "diff.test/id";

/// The annotation upstream reads for rule 4 of the deletion ranking.
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// A scripted scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Short, unique, kebab-case name (also the namespace prefix).
    pub name: &'static str,
    /// What the scenario checks, one line.
    pub purpose: &'static str,
    /// Whether it runs on a live cluster (kube-scheduler places the pods on kwok's fake nodes,
    /// which run them through [`super::runner::live_options`]' behaviours) rather than on a bare
    /// control plane where the scenario plays kubelet and scheduler itself.
    pub live: bool,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// What the scenario is built to produce: `(field, value)` pairs of [`super::EndState::fields`]
    /// (e.g. `("web.pods.active", "2 [0 1]")`). Checked against upstream's end state only: if
    /// upstream does something else, the scenario is wrong (or not deterministic), whatever the
    /// host does.
    pub expect: Vec<(&'static str, &'static str)>,
}

/// A time a pod became ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before the run's anchor: a wall-clock instant taken once per run (truncated to
    /// whole seconds, as the API stores times), so equal offsets give *equal* timestamps, which
    /// rule 6 skips instead of breaking the tie by UID.
    Ago(Duration),
    /// The wall clock when the step runs (for `minReadySeconds`).
    Now,
    /// No `lastTransitionTime` at all: upstream's zero time, which rule 6 counts as the most
    /// recent (`afterOrZero`), without log2 buckets.
    Unset,
}

/// A made-up controller owner for a ReplicaSet: an `ownerReference` with `controller: true` to a
/// Deployment object that does not exist (no garbage collector runs). Upstream only counts
/// colocated pods (rule 5) when the ReplicaSet has a controller (`getReplicaSetsWithSameController`
/// returns nothing otherwise); ReplicaSets sharing the owner's UID are "related".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeOwner {
    /// The Deployment's name.
    pub name: &'static str,
    /// Its UID (any UUID-shaped string; the same in both runs).
    pub uid: &'static str,
}

/// One step of a scenario.
#[derive(Debug, Clone)]
pub enum Step {
    /// Creates ReplicaSet `name` selecting and labelling its pods `app: <name>` (pause container).
    CreateReplicaSet {
        /// Name.
        name: &'static str,
        /// `spec.replicas`.
        replicas: i32,
        /// `spec.minReadySeconds`.
        min_ready_seconds: i32,
        /// A controller owner reference, if any.
        owner: Option<FakeOwner>,
        /// An extra template label `tier: <tier>` the selector does not require: pods without it
        /// (adopted ones) are not counted in `fullyLabeledReplicas`.
        tier: Option<&'static str>,
        /// On a live cluster, the kwok behaviour its pods follow (the cluster's default if `None`).
        behaviour: Option<&'static str>,
    },
    /// Sets `spec.replicas` (merge patch).
    Scale {
        /// The ReplicaSet.
        rs: &'static str,
        /// New `spec.replicas`.
        replicas: i32,
    },
    /// Waits until the ReplicaSet is converged and stays so for [`super::runner::STABLE_FOR`]: no
    /// orphan or foreign pod matches its selector, every pod it owns matches it, it owns
    /// `spec.replicas` active pods, `status.replicas == spec.replicas`, `status.readyReplicas` is
    /// the number of those that are Ready, and `observedGeneration == generation`.
    WaitConverged {
        /// The ReplicaSet.
        rs: &'static str,
    },
    /// Annotates the active pods the ReplicaSet owns that have no identity yet with the next free
    /// ids, in (creationTimestamp, name) order. Such pods are interchangeable (same template, no
    /// status), so which gets which id does not matter: the steps that follow are what tell them
    /// apart, identically in both runs.
    Identify {
        /// The ReplicaSet.
        rs: &'static str,
        /// How many pods must get an id (a check on the scenario).
        expect: usize,
    },
    /// Plays kubelet: phase Running, Ready/ContainersReady = `ready` since `since`.
    SetRunning {
        /// Pod id.
        id: u32,
        /// Ready or not.
        ready: bool,
        /// Ready condition `lastTransitionTime`.
        since: Since,
    },
    /// Sets `status.phase` (e.g. `Failed`).
    SetPhase {
        /// Pod id.
        id: u32,
        /// The phase.
        phase: &'static str,
    },
    /// Sets every container's `restartCount`.
    SetRestarts {
        /// Pod id.
        id: u32,
        /// Restart count.
        restarts: i32,
    },
    /// Plays scheduler: binds the pod to `node` through `pods/binding`.
    Bind {
        /// Pod id.
        id: u32,
        /// Node name (no Node object is needed).
        node: &'static str,
    },
    /// Sets the `controller.kubernetes.io/pod-deletion-cost` annotation.
    SetDeletionCost {
        /// Pod id.
        id: u32,
        /// The cost.
        cost: i32,
    },
    /// Creates a pod with no owner labelled `app: <app>` with identity `id`, like the
    /// ReplicaSet's template.
    CreateOrphan {
        /// Pod id.
        id: u32,
        /// Its `app` label.
        app: &'static str,
    },
    /// Like [`Step::CreateOrphan`], but the pod has a controller owner reference to a made-up
    /// ReplicaSet: no other controller may adopt it.
    CreateForeignPod {
        /// Pod id.
        id: u32,
        /// Its `app` label.
        app: &'static str,
    },
    /// Deletes the pod with the default grace period: a pod bound to a node stays, terminating
    /// (no kubelet confirms), an unbound one goes at once.
    DeletePod {
        /// Pod id.
        id: u32,
    },
    /// Deletes the ReplicaSet with foreground propagation: with no garbage collector running, it
    /// stays, with a deletionTimestamp, for good.
    DeleteReplicaSetForeground {
        /// The ReplicaSet.
        rs: &'static str,
    },
    /// Sets the pod's `app` label (moving it out of, or into, a selector).
    Relabel {
        /// Pod id.
        id: u32,
        /// The new `app` label.
        app: &'static str,
    },
    /// Sleeps.
    Sleep(Duration),
    /// Live cluster: the pod follows kwok behaviour `behaviour` from now on.
    SwitchBehaviour {
        /// Pod id.
        id: u32,
        /// One of [`super::runner::live_options`]' behaviours.
        behaviour: &'static str,
    },
    /// Live cluster: `kubectl drain` of the node pod `id` runs on: cordoned, its pods evicted.
    DrainNodeOf {
        /// Pod id.
        id: u32,
    },
    /// Waits until `status.readyReplicas` is `ready`.
    WaitReady {
        /// The ReplicaSet.
        rs: &'static str,
        /// Ready replicas.
        ready: i32,
    },
    /// Sets a ResourceQuota `pods` with `hard: {pods: <pods>}`, and its status as the quota
    /// controller (which does not run) would: `hard` likewise, `used` 0 when created. The quota
    /// admission plugin then counts creates into `status.used` and rejects those over `hard`.
    SetPodQuota {
        /// The most pods the namespace may have.
        pods: u32,
    },
    /// Records the state once settled (like the end state: two captures 1 s apart agree), every
    /// field but events (their set only grows, the end state has it) and unowned pods, as part of
    /// the end state with its fields prefixed `<label>:`. Shows, e.g., which pods an intermediate
    /// scale-down kept, which the end state alone may hide.
    Snapshot {
        /// Prefix of the recorded fields.
        label: &'static str,
    },
    /// A precondition for rule 8: at this moment, the age of pod `older` (now minus its
    /// creationTimestamp, as the API stores it: whole seconds) is at least `ratio` times the age of
    /// pod `newer`. A ratio above 2 puts them in different log2 buckets, so the UID tie-break
    /// cannot decide. Failing it is an error of the run, not a difference.
    RequireAgeRatio {
        /// The older pod's id.
        older: u32,
        /// The newer pod's id.
        newer: u32,
        /// Minimum ratio of their ages.
        ratio: f64,
    },
}
