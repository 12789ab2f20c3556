//! `run --record-dir DIR --record-on ...`: listens to the engine's sync log and the shadow
//! comparison, and writes the syncs asked for as fixtures (policy-kit's format) into a bounded
//! directory. Recording never slows or stops reconciling: a slow recorder misses syncs, a failing
//! directory is logged once.

use std::{collections::HashSet, path::PathBuf, sync::Arc};

use host::{
    apply::KubeApi,
    engine::{Engine, SyncRecord},
    policy::ShadowDifference,
};
use policy_kit::record::{ModuleResult, RecordDir, Recording, Trigger};
use tokio::sync::broadcast::{self, error::RecvError};

/// `run` flags for recording syncs as fixtures.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// Write the syncs chosen by --record-on as fixtures into DIR.
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// Which syncs to record: shadow-diff (a shadow module planned differently or failed),
    /// failure (a sync failed), all (every sync that planned); comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "shadow-diff,failure", requires = "record_dir")]
    pub record_on: Vec<Trigger>,
    /// Cap on the recordings in --record-dir, in MiB; the oldest are deleted first.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..), requires = "record_dir")]
    pub record_max_mib: u64,
}

/// Starts recording into `--record-dir` (if given) what `engine` does from now on.
pub fn start(args: &RecordArgs, engine: &Engine<KubeApi>) -> Option<tokio::task::JoinHandle<()>> {
    let dir = args.record_dir.clone()?;
    let triggers: HashSet<Trigger> = args.record_on.iter().copied().collect();
    // Subscribing to the sync log makes every sync keep its snapshot and plan: only when asked.
    let syncs = (triggers.contains(&Trigger::All) || triggers.contains(&Trigger::Failure))
        .then(|| engine.shared.sync_log.subscribe());
    let shadows = triggers.contains(&Trigger::ShadowDiff).then(|| engine.shared.policy.shadow_differences());
    let writer = Writer { dir: Some(RecordDir::new(&dir, args.record_max_mib << 20)), failing: false, lost: 0 };
    tracing::info!(dir = %dir.display(), on = ?args.record_on, max_mib = args.record_max_mib, "recording syncs as fixtures");
    Some(tokio::spawn(record(syncs, shadows, triggers, writer)))
}

/// Receives until both channels close (the engine is gone).
async fn record(
    mut syncs: Option<broadcast::Receiver<SyncRecord>>,
    mut shadows: Option<broadcast::Receiver<ShadowDifference>>,
    triggers: HashSet<Trigger>,
    mut writer: Writer,
) {
    while syncs.is_some() || shadows.is_some() {
        let recording = tokio::select! {
            received = recv(&mut syncs) => received.and_then(|sync| from_sync(&sync, &triggers)),
            received = recv(&mut shadows) => received.map(from_shadow),
        };
        if let Some(recording) = recording {
            writer.write(recording).await;
        }
    }
}

/// The next message of `channel`; a closed channel becomes `None` for good, a lag is counted.
async fn recv<T: Clone>(channel: &mut Option<broadcast::Receiver<T>>) -> Option<T> {
    let Some(receiver) = channel.as_mut() else { return std::future::pending().await };
    match receiver.recv().await {
        Ok(message) => Some(message),
        Err(RecvError::Lagged(missed)) => {
            tracing::warn!(missed, "the recorder fell behind; some syncs were not recorded");
            None
        }
        Err(RecvError::Closed) => {
            *channel = None;
            None
        }
    }
}

/// The recording a sync asks for, if any: a failure (with the plan if one was made, else the
/// snapshot the module failed on) or, with `all`, any sync that planned.
fn from_sync(sync: &SyncRecord, triggers: &HashSet<Trigger>) -> Option<Recording> {
    let serving = |outcome| ModuleResult { module: sync.module.clone(), outcome };
    let recording = |trigger, note: &str, snapshot: &Arc<_>, outcome| Recording {
        trigger,
        note: note.to_string(),
        snapshot: Arc::clone(snapshot),
        serving: serving(outcome),
        shadow: None,
    };
    let all = triggers.contains(&Trigger::All);
    match (&sync.outcome, &sync.planned, &sync.failed_on) {
        (Err(error), Some((snapshot, plan)), _) if all || triggers.contains(&Trigger::Failure) => {
            Some(recording(Trigger::Failure, error, snapshot, Ok(Ok(plan.clone()))))
        }
        (Err(error), None, Some(snapshot)) if all || triggers.contains(&Trigger::Failure) => {
            Some(recording(Trigger::Failure, error, snapshot, Err(error.clone())))
        }
        (Ok(summary), Some((snapshot, plan)), _) if all => {
            Some(recording(Trigger::All, summary, snapshot, Ok(Ok(plan.clone()))))
        }
        _ => None,
    }
}

fn from_shadow(diff: ShadowDifference) -> Recording {
    Recording {
        trigger: Trigger::ShadowDiff,
        note: diff.difference,
        snapshot: diff.snapshot,
        serving: ModuleResult { module: diff.serving.to_string(), outcome: Ok(diff.serving_outcome) },
        shadow: Some(ModuleResult { module: diff.candidate.to_string(), outcome: diff.candidate_outcome }),
    }
}

/// Writes recordings off the async thread, logging a failing directory once until it works again.
struct Writer {
    /// `None` only while a write is in flight on the blocking pool.
    dir: Option<RecordDir>,
    failing: bool,
    /// Recordings lost since the directory started failing.
    lost: u64,
}

impl Writer {
    async fn write(&mut self, recording: Recording) {
        let Some(mut dir) = self.dir.take() else { return };
        let subject = format!("{}-{}", recording.trigger.word(), recording.subject());
        let (dir, result) = tokio::task::spawn_blocking(move || {
            let result = recording.render().and_then(|text| dir.write(&subject, &text));
            (dir, result)
        })
        .await
        .expect("the recording task does not panic");
        match result {
            Ok(path) if std::mem::replace(&mut self.failing, false) => {
                // Taken outside the macro: tracing skips evaluating fields when the level is off.
                let lost = std::mem::take(&mut self.lost);
                tracing::info!(file = %path.display(), lost, "recording fixtures works again");
            }
            Ok(path) => tracing::info!(file = %path.display(), "recorded a fixture"),
            Err(error) if self.failing => {
                self.lost += 1;
                tracing::debug!(error = format!("{error:#}"), "recording still fails");
            }
            Err(error) => {
                (self.failing, self.lost) = (true, 1);
                tracing::error!(dir = %dir.path().display(), error = format!("{error:#}"), "recording a fixture failed; reconciling goes on, and this is logged again only after a recording succeeds");
            }
        }
        self.dir = Some(dir);
    }
}

#[cfg(test)]
mod tests {
    use host::contract::{Plan, Snapshot};
    use policy_kit::fixtures::Fixture;

    use super::*;

    fn snapshot() -> Arc<Snapshot> {
        let yaml = "description: one pod\nreplicaSet: {name: web, namespace: prod, replicas: 1}\npods: [{name: a}]\n";
        Arc::new(Fixture::parse("one", yaml).unwrap().snapshot)
    }

    fn sync(outcome: Result<String, String>, planned: bool, failed: bool) -> SyncRecord {
        let snap = snapshot();
        let plan = Plan {
            adopt: vec![],
            release: vec![],
            create: 0,
            delete: vec![],
            status: snap.replica_set.status.clone(),
            requeue_after: None,
        };
        SyncRecord {
            key: "prod/web".into(),
            module: "abc".into(),
            planned: planned.then(|| (snap.clone(), plan)),
            failed_on: failed.then_some(snap),
            outcome,
        }
    }

    fn triggers(list: &[Trigger]) -> HashSet<Trigger> {
        list.iter().copied().collect()
    }

    #[test]
    fn failures_are_recorded_with_the_plan_or_the_snapshot_the_module_failed_on() {
        let on = triggers(&[Trigger::Failure]);
        let scale = from_sync(&sync(Err("creating pods: quota".into()), true, false), &on).unwrap();
        assert_eq!((scale.trigger, scale.note.as_str()), (Trigger::Failure, "creating pods: quota"));
        assert!(matches!(scale.serving.outcome, Ok(Ok(_))));
        let guest = from_sync(&sync(Err("ran out of fuel".into()), false, true), &on).unwrap();
        assert_eq!(guest.serving.outcome.unwrap_err(), "ran out of fuel");
        assert!(from_sync(&sync(Err("stale cache".into()), false, false), &on).is_none());
        assert!(from_sync(&sync(Ok("created 1".into()), true, false), &on).is_none());
    }

    #[test]
    fn all_records_every_sync_that_planned() {
        let on = triggers(&[Trigger::All]);
        let ok = from_sync(&sync(Ok("created 1".into()), true, false), &on).unwrap();
        assert_eq!((ok.trigger, ok.subject()), (Trigger::All, "prod-web".to_string()));
        assert!(from_sync(&sync(Err("x".into()), false, true), &on).is_some(), "failures are syncs too");
    }

    #[tokio::test]
    async fn a_failing_directory_is_logged_once_and_recording_resumes_when_it_works() {
        let blocked = std::env::temp_dir().join(format!("record-blocked-{}", std::process::id()));
        std::fs::write(&blocked, "a file where the directory should be").unwrap();
        let mut writer = Writer { dir: Some(RecordDir::new(blocked.join("dir"), 1 << 20)), failing: false, lost: 0 };
        let on = triggers(&[Trigger::All]);
        for _ in 0..3 {
            writer.write(from_sync(&sync(Ok("ok".into()), true, false), &on).unwrap()).await;
        }
        assert!(writer.failing);
        assert_eq!(writer.lost, 3);
        std::fs::remove_file(&blocked).unwrap();
        writer.write(from_sync(&sync(Ok("ok".into()), true, false), &on).unwrap()).await;
        assert!(!writer.failing && writer.lost == 0);
        assert_eq!(std::fs::read_dir(blocked.join("dir")).unwrap().count(), 1);
        std::fs::remove_dir_all(&blocked).unwrap();
    }
}
