//! Counts the pods of a namespace exactly from a watch, so the highest count ever reached is known.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

use crate::{TestNamespace, eventually};

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
                let mut s = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
            Ok(counter.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).synced.then_some(()))
        })
        .await?;
        Ok(counter)
    }

    /// Pods that exist now (as far as the watch has seen).
    pub fn current(&self) -> usize {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).live.len()
    }

    /// The most pods that ever existed at once since the counter started.
    pub fn max(&self) -> usize {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).max
    }
}

impl Drop for PodCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
