//! Renders plans for people: pod names instead of indices, one line per list, or JSON.

use host::contract::{Conditions, Plan, Snapshot};
use serde::Serialize;

use crate::fixtures::{StatusSpec, time};

/// A plan as indented text.
pub fn plan_text(snapshot: &Snapshot, plan: &Plan) -> String {
    let names = |indices: &[u32]| if indices.is_empty() { "-".to_string() } else { snapshot.pod_names(indices) };
    let requeue = plan.requeue_after.map_or_else(|| "-".into(), time::format_duration);
    format!(
        "  adopt:          {}\n  release:        {}\n  create:         {}\n  delete:         {}\n  status:         {}\n  conditions:     {}\n  requeue after:  {}\n",
        names(&plan.adopt),
        names(&plan.release),
        plan.create,
        names(&plan.delete),
        plan.status,
        Conditions(&plan.status.conditions),
        requeue,
    )
}

/// A plan in JSON-friendly form, with pod names; the status reads as a fixture writes it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    /// Pods adopted.
    pub adopt: Vec<String>,
    /// Pods released.
    pub release: Vec<String>,
    /// Pods created.
    pub create: u32,
    /// Pods deleted, in order.
    pub delete: Vec<String>,
    /// The status.
    pub status: StatusSpec,
    /// Requeue delay in nanoseconds.
    pub requeue_after_nanos: Option<u64>,
}

impl PlanView {
    /// Converts a plan, naming pods from `snapshot`.
    pub fn of(snapshot: &Snapshot, plan: &Plan) -> Self {
        let names = |indices: &[u32]| indices.iter().map(|&i| snapshot.pod_name(i)).collect();
        Self {
            adopt: names(&plan.adopt),
            release: names(&plan.release),
            create: plan.create,
            delete: names(&plan.delete),
            status: StatusSpec::of(&plan.status),
            requeue_after_nanos: plan.requeue_after,
        }
    }
}
