//! Informers: kube-runtime watchers feeding kube-runtime stores, driven by our own event loop
//! so handlers see `(old, new)` on updates and a relist's vanished objects as deletes.
//!
//! A watch that fails is retried by kube-runtime with backoff (800 ms to 30 s), resuming from the
//! last resourceVersion; when the API server answers 410 Gone (that version was compacted away)
//! it lists everything again, and the relist is counted in [`WatchStats`]. Only the API server's
//! refusals (e.g. 403 when RBAC denies the list) are kept as the informer's error for `/readyz`;
//! a transport failure is the client's to report (`client::Reachability`).

pub mod cached;
pub mod index;

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{ObjectRef, Store, store, store::Writer},
        watcher,
        watcher::InitialListStrategy,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Receives an informer's events, after the store holds the new state.
pub trait Handler<K>: Send + Sync + 'static {
    /// An object appeared (also for every object of the first list).
    fn on_add(&self, obj: &Arc<K>);
    /// An object changed, or was listed again by a relist.
    fn on_update(&self, old: &Arc<K>, new: &Arc<K>);
    /// An object was deleted, or vanished while the watch was down (`obj` is its last state).
    fn on_delete(&self, obj: &Arc<K>);
}

/// A running informer's read side.
pub struct Informer<K: Resource<DynamicType = ()> + 'static> {
    /// The cache.
    pub store: Store<K>,
    synced: watch::Receiver<bool>,
    last_resource_version: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
    interrupted: Arc<AtomicBool>,
    last_failure: Arc<Mutex<Option<Instant>>>,
}

/// How long after its last failure a watch still counts as interrupted although events flow
/// again: a resumed watch first replays what it missed, and until that backlog is through, an
/// event about one object says nothing about the others. Replays take well under a second here;
/// this leaves room for a loaded API server.
pub const CATCH_UP: Duration = Duration::from_secs(30);

/// Counters of one informer's watch, read by `/metrics`.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Completed relists after the first list, because the watch expired (410 Gone).
    expired_relists: AtomicU64,
    /// Completed relists after the first list, for any other reason.
    other_relists: AtomicU64,
    /// Watch attempts that failed (any reason).
    failures: AtomicU64,
}

impl WatchStats {
    /// Relists after a 410 Gone, relists for other reasons, and failed watch attempts.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.expired_relists.load(Ordering::Relaxed),
            self.other_relists.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            synced: self.synced.clone(),
            last_resource_version: self.last_resource_version.clone(),
            last_error: self.last_error.clone(),
            interrupted: self.interrupted.clone(),
            last_failure: self.last_failure.clone(),
        }
    }
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts watching `api`, trimming each object with `trim` before it is cached, and calling
    /// `handler` for every change; counts relists and failures in `stats`. Runs until `shutdown`
    /// resolves.
    pub fn spawn<H: Handler<K>>(
        api: Api<K>,
        config: watcher::Config,
        trim: fn(&mut K),
        (handler, stats): (Arc<H>, Arc<WatchStats>),
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        let (store, writer) = store();
        let (synced_tx, synced) = watch::channel(false);
        let last_resource_version = Arc::new(AtomicU64::new(0));
        let last_error = Arc::new(Mutex::new(None));
        let interrupted = Arc::new(AtomicBool::new(false));
        let last_failure = Arc::new(Mutex::new(None));
        let loop_state = EventLoop {
            writer,
            store: store.clone(),
            handler,
            trim,
            relist: None,
            synced: synced_tx,
            last_rv: last_resource_version.clone(),
            last_error: last_error.clone(),
            interrupted: interrupted.clone(),
            last_failure: last_failure.clone(),
            stats,
            expired: false,
        };
        tokio::spawn(loop_state.run(api, config, shutdown));
        Self { store, synced, last_resource_version, last_error, interrupted, last_failure }
    }

    /// An informer with no watch behind it, synced and up to date with every write (for
    /// engine unit tests that fill the indexes by hand).
    #[cfg(test)]
    pub fn detached() -> Self {
        let (store, _writer) = store();
        let (_, synced) = watch::channel(true);
        Self {
            store,
            synced,
            last_resource_version: Arc::new(AtomicU64::new(u64::MAX)),
            last_error: Arc::default(),
            interrupted: Arc::default(),
            last_failure: Arc::default(),
        }
    }

    /// Resolves once the first full list is in the store and its handlers have run.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        // Only fails if the loop ended before syncing, e.g. at shutdown; nothing to wait for then.
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Whether the first list has been processed.
    pub fn has_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// The watch's last error, until the watch works again (e.g. a 403 when RBAC denies list).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("informer error lock").clone()
    }

    /// Whether the watch failed since the last event it delivered, or less than [`CATCH_UP`]
    /// ago: the cache may be missing changes made meanwhile (after a partition, say), and nothing
    /// says when a resumed watch has replayed them all.
    pub fn watch_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Acquire)
            || self.last_failure.lock().expect("informer failure lock").is_some_and(|t| t.elapsed() < CATCH_UP)
    }

    /// Marks the watch interrupted, as a failure would, with `resource_version` the last one
    /// processed (engine unit tests).
    #[cfg(test)]
    pub fn interrupt_at(&self, resource_version: u64) {
        self.last_resource_version.store(resource_version, Ordering::Release);
        self.interrupted.store(true, Ordering::Release);
    }

    /// The highest resourceVersion this informer has processed (0 when unknown).
    pub fn last_resource_version(&self) -> u64 {
        self.last_resource_version.load(Ordering::Acquire)
    }
}

/// The informer's private state.
struct EventLoop<K: Resource<DynamicType = ()> + Clone + 'static, H> {
    writer: Writer<K>,
    store: Store<K>,
    handler: Arc<H>,
    trim: fn(&mut K),
    /// Objects received since `Init`, applied when `InitDone` arrives.
    relist: Option<Vec<ObjectRef<K>>>,
    synced: watch::Sender<bool>,
    last_rv: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<String>>>,
    stats: Arc<WatchStats>,
    /// The newest failure was a 410 Gone: the relist in progress is an expiry's.
    expired: bool,
    /// Set by a failure, cleared by the next event (see [`Informer::watch_interrupted`]).
    interrupted: Arc<AtomicBool>,
    /// When the watch last failed.
    last_failure: Arc<Mutex<Option<Instant>>>,
}

/// What a failed watch attempt means.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// 410 Gone: our resourceVersion was compacted away; kube-runtime relists.
    Expired,
    /// The API server refused (e.g. 403): readiness reports it until the watch works again.
    Refused,
    /// No answer (connection refused, reset, timed out): the client's reachability reports it.
    Transport,
}

fn classify(error: &watcher::Error) -> Failure {
    let status = match error {
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            match e {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            }
        }
        // A list without a resourceVersion: the API server answered, wrongly.
        watcher::Error::NoResourceVersion => Some(0),
    };
    match status {
        Some(410) => Failure::Expired,
        Some(_) => Failure::Refused,
        None => Failure::Transport,
    }
}

impl<K, H> EventLoop<K, H>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    H: Handler<K>,
{
    async fn run(mut self, api: Api<K>, mut config: watcher::Config, shutdown: impl std::future::Future<Output = ()>) {
        let kind = K::kind(&()).into_owned();
        tokio::pin!(shutdown);
        loop {
            let streaming = config.initial_list_strategy == InitialListStrategy::StreamingList;
            let events = watcher(api.clone(), config.clone()).default_backoff();
            futures::pin_mut!(events);
            let refused = loop {
                let event = tokio::select! {
                    () = &mut shutdown => break false,
                    event = events.next() => event,
                };
                match event {
                    Some(Ok(event)) => {
                        self.last_error.lock().expect("informer error lock").take();
                        self.interrupted.store(false, Ordering::Release);
                        self.handle(event);
                    }
                    Some(Err(error)) if streaming && refuses_streaming_lists(&error) => {
                        tracing::warn!(%kind, %error, "the API server refuses streaming lists; listing in pages instead");
                        break true;
                    }
                    // The watcher retries with backoff by itself; say why it is retrying.
                    Some(Err(error)) => self.failed(&kind, &error),
                    None => break false,
                }
            };
            if !refused {
                break;
            }
            // client-go's reflector falls back the same way (reflector.go, `ListAndWatch`).
            config.initial_list_strategy = InitialListStrategy::ListWatch;
        }
        tracing::debug!(%kind, "informer stopped");
    }

    fn failed(&mut self, kind: &str, error: &watcher::Error) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.interrupted.store(true, Ordering::Release);
        *self.last_failure.lock().expect("informer failure lock") = Some(Instant::now());
        match classify(error) {
            Failure::Expired => {
                self.expired = true;
                tracing::info!(%kind, %error, "watch expired: relisting");
            }
            Failure::Refused => {
                tracing::warn!(%kind, %error, "watch refused, retrying");
                *self.last_error.lock().expect("informer error lock") = Some(format!("{kind}: {error}"));
            }
            Failure::Transport => tracing::warn!(%kind, %error, "watch failed, retrying"),
        }
    }

    fn handle(&mut self, event: watcher::Event<K>) {
        match event {
            watcher::Event::Apply(mut obj) => {
                (self.trim)(&mut obj);
                self.observe_rv(&obj);
                let key = ObjectRef::from_obj(&obj);
                let old = self.store.get(&key);
                self.writer.apply_watcher_event(&watcher::Event::Apply(obj));
                let Some(new) = self.store.get(&key) else { return };
                match old {
                    Some(old) => self.handler.on_update(&old, &new),
                    None => self.handler.on_add(&new),
                }
            }
            watcher::Event::Delete(mut obj) => {
                (self.trim)(&mut obj);
                self.observe_rv(&obj);
                self.writer.apply_watcher_event(&watcher::Event::Delete(obj.clone()));
                self.handler.on_delete(&Arc::new(obj));
            }
            watcher::Event::Init => {
                self.relist = Some(Vec::new());
                self.writer.apply_watcher_event(&watcher::Event::Init);
            }
            watcher::Event::InitApply(mut obj) => {
                (self.trim)(&mut obj);
                self.observe_rv(&obj);
                self.relist.get_or_insert_with(Vec::new).push(ObjectRef::from_obj(&obj));
                self.writer.apply_watcher_event(&watcher::Event::InitApply(obj));
            }
            watcher::Event::InitDone => {
                let before: HashMap<ObjectRef<K>, Arc<K>> =
                    self.store.state().into_iter().map(|o| (ObjectRef::from_obj(&*o), o)).collect();
                self.writer.apply_watcher_event(&watcher::Event::InitDone);
                let listed = self.relist.take().unwrap_or_default();
                self.replace(before, listed);
                if self.synced.send_replace(true) {
                    let counter = if self.expired { &self.stats.expired_relists } else { &self.stats.other_relists };
                    counter.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(kind = %K::kind(&()), expired = self.expired, "relisted");
                }
                self.expired = false;
            }
        }
    }

    /// client-go's `Replace`: listed objects are adds or updates, objects that vanished while
    /// the watch was down are deletes with their last known state.
    fn replace(&self, mut before: HashMap<ObjectRef<K>, Arc<K>>, listed: Vec<ObjectRef<K>>) {
        for key in listed {
            let Some(new) = self.store.get(&key) else { continue };
            match before.remove(&key) {
                Some(old) => self.handler.on_update(&old, &new),
                None => self.handler.on_add(&new),
            }
        }
        for (_, gone) in before {
            self.handler.on_delete(&gone);
        }
    }

    fn observe_rv(&self, obj: &K) {
        if let Some(rv) = obj.meta().resource_version.as_deref().and_then(|rv| rv.parse::<u64>().ok()) {
            self.last_rv.fetch_max(rv, Ordering::AcqRel);
        }
    }
}

/// Keys are `namespace/name`, like client-go's `MetaNamespaceKeyFunc`.
pub fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        _ => meta.name.clone().unwrap_or_default(),
    }
}

/// The ObjectRef for a `namespace/name` key.
pub fn ref_of<K: Resource<DynamicType = ()>>(key: &str) -> ObjectRef<K> {
    match key.split_once('/') {
        Some((ns, name)) => ObjectRef::new(name).within(ns),
        None => ObjectRef::new(key),
    }
}

/// Whether `error` is the API server turning down a streaming list (`sendInitialEvents`): a
/// server without the WatchList feature rejects the request as bad or invalid, while every
/// other failure (unreachable, forbidden, expired) is retried as it is for a paged list.
fn refuses_streaming_lists(error: &watcher::Error) -> bool {
    let (watcher::Error::WatchStartFailed(kube::Error::Api(status)) | watcher::Error::WatchError(status)) = error
    else {
        return false;
    };
    matches!(status.code, 400 | 422)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    /// Records handler calls as `add a`, `update a`, `delete a`.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Handler<ConfigMap> for Recorder {
        fn on_add(&self, obj: &Arc<ConfigMap>) {
            self.0.lock().unwrap().push(format!("add {}", key_of(obj.as_ref())));
        }
        fn on_update(&self, _: &Arc<ConfigMap>, new: &Arc<ConfigMap>) {
            self.0.lock().unwrap().push(format!("update {}", key_of(new.as_ref())));
        }
        fn on_delete(&self, obj: &Arc<ConfigMap>) {
            self.0.lock().unwrap().push(format!("delete {}", key_of(obj.as_ref())));
        }
    }

    fn cm(name: &str, rv: &str) -> ConfigMap {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}),
        )
        .unwrap()
    }

    fn event_loop(recorder: Arc<Recorder>) -> EventLoop<ConfigMap, Recorder> {
        let (store, writer) = store();
        EventLoop {
            writer,
            store,
            handler: recorder,
            trim: |_| {},
            relist: None,
            synced: watch::channel(false).0,
            last_rv: Arc::default(),
            last_error: Arc::default(),
            stats: Arc::default(),
            expired: false,
            interrupted: Arc::default(),
            last_failure: Arc::default(),
        }
    }

    fn relist(l: &mut EventLoop<ConfigMap, Recorder>, objects: &[ConfigMap]) {
        l.handle(watcher::Event::Init);
        for o in objects {
            l.handle(watcher::Event::InitApply(o.clone()));
        }
        l.handle(watcher::Event::InitDone);
    }

    #[test]
    fn handlers_fire_only_once_a_list_is_complete_and_see_old_and_new() {
        let recorder = Arc::new(Recorder::default());
        let mut l = event_loop(recorder.clone());
        l.handle(watcher::Event::Init);
        l.handle(watcher::Event::InitApply(cm("a", "1")));
        assert!(recorder.0.lock().unwrap().is_empty(), "no handler before InitDone: the store is not swapped yet");
        l.handle(watcher::Event::InitDone);
        l.handle(watcher::Event::Apply(cm("a", "2")));
        l.handle(watcher::Event::Apply(cm("b", "3")));
        l.handle(watcher::Event::Delete(cm("b", "4")));
        assert_eq!(*recorder.0.lock().unwrap(), ["add ns/a", "update ns/a", "add ns/b", "delete ns/b"]);
        assert!(*l.synced.borrow());
        assert_eq!(l.last_rv.load(Ordering::Acquire), 4);
    }

    #[test]
    fn an_object_that_vanished_while_the_watch_was_down_becomes_a_delete() {
        // client-go's DeletedFinalStateUnknown (upstream TestDeleteFinalStateUnknown).
        let recorder = Arc::new(Recorder::default());
        let mut l = event_loop(recorder.clone());
        relist(&mut l, &[cm("a", "1"), cm("b", "2")]);
        recorder.0.lock().unwrap().clear();
        relist(&mut l, &[cm("b", "5"), cm("c", "6")]);
        assert_eq!(*recorder.0.lock().unwrap(), ["update ns/b", "add ns/c", "delete ns/a"]);
        assert!(l.store.get(&ObjectRef::new("a").within("ns")).is_none());
    }

    fn status(code: u16) -> Box<kube::core::Status> {
        Box::new(serde_json::from_value(serde_json::json!({"code": code, "message": "m"})).unwrap())
    }

    #[test]
    fn a_relist_after_410_gone_is_counted_as_an_expiry_and_others_apart() {
        let recorder = Arc::new(Recorder::default());
        let mut l = event_loop(recorder.clone());
        relist(&mut l, &[cm("a", "1")]);
        assert_eq!(l.stats.counts(), (0, 0, 0), "the first list is no relist");
        l.failed("ConfigMap", &watcher::Error::WatchError(status(410)));
        relist(&mut l, &[cm("a", "9")]);
        assert_eq!(l.stats.counts(), (1, 0, 1));
        relist(&mut l, &[cm("a", "10")]);
        assert_eq!(l.stats.counts(), (1, 1, 1));
        assert_eq!(*l.last_error.lock().unwrap(), None, "an expiry is routine, not a readiness problem");
    }

    #[test]
    fn refusals_are_kept_for_readiness_and_transport_failures_are_not() {
        let recorder = Arc::new(Recorder::default());
        let mut l = event_loop(recorder);
        let refused = watcher::Error::InitialListFailed(kube::Error::Api(status(403)));
        assert_eq!(classify(&refused), Failure::Refused);
        l.failed("ConfigMap", &refused);
        assert!(l.last_error.lock().unwrap().as_deref().is_some_and(|e| e.starts_with("ConfigMap: ")));
        l.handle(watcher::Event::Init);
        // The caller clears it on the next event; a transport failure does not set it again.
        l.last_error.lock().unwrap().take();
        let reset = watcher::Error::WatchFailed(kube::Error::Service("connection reset".into()));
        assert_eq!(classify(&reset), Failure::Transport);
        l.failed("ConfigMap", &reset);
        assert_eq!(*l.last_error.lock().unwrap(), None);
        assert_eq!(l.stats.counts().2, 2);
    }

    #[test]
    fn a_watch_counts_as_interrupted_until_its_next_event_and_for_the_catch_up_window_after_a_failure() {
        let informer = Informer::<ConfigMap>::detached();
        assert!(!informer.watch_interrupted());
        let failed = |ago: Duration| {
            informer.interrupted.store(true, Ordering::Release);
            *informer.last_failure.lock().unwrap() = Some(Instant::now().checked_sub(ago).unwrap());
        };
        failed(Duration::ZERO);
        assert!(informer.watch_interrupted(), "failed, no event since");
        // The next event clears the flag (the event loop does), the window stays.
        informer.interrupted.store(false, Ordering::Release);
        assert!(informer.watch_interrupted(), "a resumed watch may still be replaying");
        failed(CATCH_UP + Duration::from_secs(1));
        informer.interrupted.store(false, Ordering::Release);
        assert!(!informer.watch_interrupted(), "events again and the last failure past the window");
    }
}

#[cfg(test)]
mod streaming_fallback_tests {
    use http::{Request, Response};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::client::Body;
    use tower_test::mock;

    use super::*;

    struct Ignore;

    impl Handler<ConfigMap> for Ignore {
        fn on_add(&self, _: &Arc<ConfigMap>) {}
        fn on_update(&self, _: &Arc<ConfigMap>, _: &Arc<ConfigMap>) {}
        fn on_delete(&self, _: &Arc<ConfigMap>) {}
    }

    fn json(status: u16, body: &serde_json::Value) -> Response<Body> {
        Response::builder().status(status).body(Body::from(serde_json::to_vec(body).unwrap())).unwrap()
    }

    #[tokio::test]
    async fn a_server_that_refuses_streaming_lists_is_listed_in_pages() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let api: Api<ConfigMap> = Api::namespaced(kube::Client::new(service, "ns"), "ns");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stats = Arc::new(WatchStats::default());
        let config = watcher::Config::default().streaming_lists();
        let informer = Informer::spawn(api, config, |_| {}, (Arc::new(Ignore), stats.clone()), async {
            let _ = stopped.await;
        });

        let (request, respond) = handle.next_request().await.expect("a first request");
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(query.contains("watch=true") && query.contains("sendInitialEvents=true"), "{query}");
        respond.send_response(json(
            422,
            &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid",
                "code": 422, "message": "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"}),
        ));

        let (request, respond) = handle.next_request().await.expect("a list after the refusal");
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(!query.contains("watch") && query.contains("limit="), "a paged list, not a watch: {query}");
        respond.send_response(json(
            200,
            &serde_json::json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
                "items": [{"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "5"}}]}),
        ));
        tokio::time::timeout(std::time::Duration::from_secs(5), informer.wait_synced()).await.expect("synced");
        assert_eq!(informer.store.state().len(), 1);
        assert_eq!(informer.last_error(), None, "a refusal is not a watch failure");
        assert_eq!(stats.counts(), (0, 0, 0), "nor is it counted as one");
        stop.send(()).unwrap();
    }

    #[test]
    fn only_bad_or_invalid_requests_count_as_a_refusal() {
        let status = |code| Box::new(kube::core::Status { code, ..kube::core::Status::default() });
        assert!(refuses_streaming_lists(&watcher::Error::WatchError(status(422))));
        assert!(refuses_streaming_lists(&watcher::Error::WatchStartFailed(kube::Error::Api(status(400)))));
        assert!(!refuses_streaming_lists(&watcher::Error::WatchError(status(410))), "an expired watch relists");
        assert!(!refuses_streaming_lists(&watcher::Error::WatchStartFailed(kube::Error::Api(status(403)))));
        assert!(!refuses_streaming_lists(&watcher::Error::WatchStartFailed(kube::Error::Api(status(503)))));
    }
}
