//! Records core/v1 Events like client-go's legacy `tools/record`: build, correlate, then create or patch.
//!
//! The controller holds an [`EventRecorder`] and calls [`EventRecorder::event`], which builds the
//! Event (`recorderImpl.makeEvent`) and queues it without blocking. One [`EventWriter`] task drains the
//! queue (`StartRecordingToSink`/`recordToSink`), passing each Event through client-go's
//! `EventCorrelator`, in this order:
//!
//! 1. **Aggregate** (`EventAggregator`): once 10 distinct messages share the same source, object,
//!    type and reason, each further one is replaced by a single Event named afresh whose message is
//!    prefixed with `(combined from similar events): `. The group resets only after 600 s *without*
//!    a similar Event: it is a sliding idle timeout, not a fixed 10-minute window.
//! 2. **Dedupe** (`eventLogger.eventObserve`): a repeat of an Event already written (same key)
//!    becomes a strategic-merge PATCH of `count`, `lastTimestamp` and `message` on the first one.
//! 3. **Spam filter** (`EventSourceObjectSpamFilter`): a token bucket per source+object+type (not per
//!    reason), burst 25, refilled at one token per 300 s; Events without a token are skipped. The
//!    dedupe step runs first, so skipped repeats still raise the count the next PATCH carries.
//!
//! Writing follows `recordEvent`: a PATCH that fails with 404 is retried as a create; any other
//! answer from the apiserver (4xx or 5xx) is final; only transport failures are retried, up to 12
//! attempts with a 10 s sleep (the first one randomised). The writer works one Event at a time, so
//! retries delay later Events; the queue holds 1000 and drops (and counts) what does not fit, as
//! client-go's broadcaster does. Dropping the last [`EventRecorder`] makes the writer give each queued
//! Event a single attempt and return.

mod correlator;
#[cfg(test)]
mod testkit;

use std::{
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, warn};

use self::correlator::{Correlation, EventCorrelator};

/// The LRU size of each correlator cache (`maxLruCacheEntries`).
const MAX_LRU_CACHE_ENTRIES: usize = 4096;
/// Distinct messages in one group before aggregation starts (`defaultAggregateMaxEvents`).
const DEFAULT_AGGREGATE_MAX_EVENTS: usize = 10;
/// Idle time after which an aggregation group starts over (`defaultAggregateIntervalInSeconds`).
const DEFAULT_AGGREGATE_INTERVAL: Duration = Duration::from_mins(10);
/// Events a source may send about one object at once (`defaultSpamBurst`).
const DEFAULT_SPAM_BURST: u32 = 25;
/// Refill rate of the spam filter: one Event per 5 minutes (`defaultSpamQPS`, a Go float32).
const DEFAULT_SPAM_QPS: f32 = 1. / 300.;
/// Events queued between the recorders and the writer (`maxQueuedEvents`).
const MAX_QUEUED_EVENTS: usize = 1000;
/// Attempts to write one Event before giving up (`maxTriesPerEvent`).
const MAX_TRIES_PER_EVENT: u32 = 12;
/// Sleep between two attempts; the first is scaled by a random factor (`defaultSleepDuration`).
const DEFAULT_SLEEP_DURATION: Duration = Duration::from_secs(10);
/// The KCM source component of the ReplicaSet controller.
const DEFAULT_COMPONENT: &str = "replicaset-controller";

// === Public API ===

/// The type of an Event; the legacy recorder rejects anything else (`util.ValidateEventType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Nothing is wrong (`v1.EventTypeNormal`).
    Normal,
    /// Something may need attention (`v1.EventTypeWarning`).
    Warning,
}

impl EventType {
    /// The `type` field value: `Normal` or `Warning`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// The wall clock Events are stamped and correlated with, injectable for tests (`clock.PassiveClock`).
pub trait Clock: fmt::Debug + Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to, for tests.
#[derive(Debug)]
pub struct FakeClock(Mutex<Timestamp>);

impl FakeClock {
    /// A clock standing at `start`.
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        Self(Mutex::new(start))
    }

    /// Moves the clock to `now`, even backwards.
    pub fn set(&self, now: Timestamp) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = now;
    }

    /// Moves the clock forward by `by`.
    ///
    /// # Panics
    ///
    /// If the result is past jiff's maximum timestamp (the year 9999).
    pub fn step(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(by).expect("FakeClock stepped past the year 9999");
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Tuning of the correlator (`record.CorrelatorOptions`); [`Default`] is client-go's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct CorrelatorOptions {
    /// Entries in each of the aggregator, dedupe and spam-filter LRU caches (at least 1).
    pub lru_cache_size: usize,
    /// Spam-filter bucket size per source+object+type.
    pub burst: u32,
    /// Spam-filter refill rate in Events per second (a float32, as in Go).
    pub qps: f32,
    /// Distinct messages per group before aggregation starts.
    pub max_events: usize,
    /// Idle time after which an aggregation group starts over.
    pub max_interval: Duration,
}

impl Default for CorrelatorOptions {
    fn default() -> Self {
        Self {
            lru_cache_size: MAX_LRU_CACHE_ENTRIES,
            burst: DEFAULT_SPAM_BURST,
            qps: DEFAULT_SPAM_QPS,
            max_events: DEFAULT_AGGREGATE_MAX_EVENTS,
            max_interval: DEFAULT_AGGREGATE_INTERVAL,
        }
    }
}

/// Settings of [`new_recorder`]; [`Default`] matches the KCM ReplicaSet controller.
#[derive(Clone, Debug)]
pub struct RecorderConfig {
    /// `source.component` and `reportingComponent` of every Event.
    pub component: String,
    /// Events the queue holds before new ones are dropped.
    pub queue_length: usize,
    /// Sleep between write attempts (the first one is randomised down).
    pub sleep_duration: Duration,
    /// Write attempts per Event.
    pub max_tries: u32,
    /// Aggregation, dedupe and spam-filter tuning.
    pub correlator: CorrelatorOptions,
    /// Time source for timestamps, names and correlation.
    pub clock: Arc<dyn Clock>,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            component: DEFAULT_COMPONENT.to_owned(),
            queue_length: MAX_QUEUED_EVENTS,
            sleep_duration: DEFAULT_SLEEP_DURATION,
            max_tries: MAX_TRIES_PER_EVENT,
            correlator: CorrelatorOptions::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Creates a recorder and the writer that sends its Events to the apiserver through `client`.
///
/// Run the writer as a task (`tokio::spawn(writer.run())`); it ends once every clone of the
/// recorder is dropped and the queue is drained.
#[must_use]
pub fn new_recorder(client: kube::Client, config: RecorderConfig) -> (EventRecorder, EventWriter) {
    let (sender, receiver) = mpsc::channel(config.queue_length.max(1));
    let (shutdown_tx, shutdown_rx) = watch::channel(());
    let counters = Arc::new(Counters::default());
    let recorder = EventRecorder {
        sender,
        component: config.component.into(),
        clock: config.clock.clone(),
        counters: counters.clone(),
        _shutdown: Arc::new(shutdown_tx),
    };
    let writer = EventWriter {
        receiver,
        client,
        correlator: EventCorrelator::new(&config.correlator),
        clock: config.clock,
        counters,
        sleep_duration: config.sleep_duration,
        max_tries: config.max_tries.max(1),
        shutdown: shutdown_rx,
    };
    (recorder, writer)
}

// === impl EventRecorder ===

/// The controller's handle for emitting Events (`record.EventRecorder`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventRecorder {
    sender: mpsc::Sender<Event>,
    component: Arc<str>,
    clock: Arc<dyn Clock>,
    counters: Arc<Counters>,
    /// Dropped with the last recorder, which tells the writer to stop retrying (`Shutdown`).
    _shutdown: Arc<watch::Sender<()>>,
}

impl EventRecorder {
    /// Records an Event about `regarding` (`recorder.Event`); never blocks.
    ///
    /// The Event goes to `regarding`'s namespace (`default` if it has none). If the queue is full,
    /// or the writer is gone, the Event is dropped and counted in [`EventCounts::dropped`].
    pub fn event(&self, regarding: &ObjectReference, event_type: EventType, reason: &str, message: impl Into<String>) {
        let event = make_event(regarding, event_type, reason, message.into(), &self.component, self.clock.now());
        // The KCM ReplicaSet controller also logs every Event (StartStructuredLogging(3)).
        debug!(
            object = format!(
                "{}/{}",
                str_of(event.involved_object.namespace.as_ref()),
                str_of(event.involved_object.name.as_ref())
            ),
            kind = str_of(event.involved_object.kind.as_ref()),
            r#type = event_type.as_str(),
            reason,
            message = str_of(event.message.as_ref()),
            "Event occurred"
        );
        // NOTE: as in client-go, recording must not block the controller: drop instead of waiting.
        if let Err(err) = self.sender.try_send(event) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            let reason = match err {
                mpsc::error::TrySendError::Full(_) => "too many queued events",
                mpsc::error::TrySendError::Closed(_) => "event writer stopped",
            };
            error!(reason, "Unable to record event: dropped event");
        }
    }

    /// How many Events have been created, patched, skipped, dropped and given up on so far.
    #[must_use]
    pub fn counts(&self) -> EventCounts {
        self.counters.snapshot()
    }
}

/// Counters of what happened to recorded Events, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Events written with a POST (new ones, and patches that fell back to a create).
    pub created: u64,
    /// Repeats written as a PATCH on the existing Event.
    pub patched: u64,
    /// Events the spam filter skipped.
    pub skipped: u64,
    /// Events dropped before correlation because the queue was full or the writer had stopped.
    pub dropped: u64,
    /// Events abandoned after a final apiserver error, the retry limit, or shutdown.
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    created: AtomicU64,
    patched: AtomicU64,
    skipped: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> EventCounts {
        EventCounts {
            created: self.created.load(Ordering::Relaxed),
            patched: self.patched.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

// === impl EventWriter ===

/// The background task that correlates queued Events and writes them (`recordToSink`).
pub struct EventWriter {
    receiver: mpsc::Receiver<Event>,
    client: kube::Client,
    correlator: EventCorrelator,
    clock: Arc<dyn Clock>,
    counters: Arc<Counters>,
    sleep_duration: Duration,
    max_tries: u32,
    /// Closed once the last recorder is dropped.
    shutdown: watch::Receiver<()>,
}

/// What one write attempt concluded (`recordEvent`'s bool, with the give-up case split out).
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// Written; the correlator has the server's copy.
    Written,
    /// The apiserver answered, or the request could not be built: trying again cannot help.
    GiveUp,
    /// The apiserver could not be reached: worth another try.
    Retry,
}

// `kube::Client` has no Debug impl.
impl fmt::Debug for EventWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventWriter")
            .field("queued", &self.receiver.len())
            .field("correlator", &self.correlator)
            .field("sleep_duration", &self.sleep_duration)
            .field("max_tries", &self.max_tries)
            .finish_non_exhaustive()
    }
}

impl EventWriter {
    /// Writes queued Events one at a time until every recorder is dropped and the queue is empty.
    pub async fn run(mut self) {
        while let Some(event) = self.receiver.recv().await {
            self.record_to_sink(event).await;
        }
        debug!("event writer terminated");
    }

    /// Correlates `event` and writes the result, retrying transport failures (`recordToSink`).
    async fn record_to_sink(&mut self, event: Event) {
        let (event, patch) = match self.correlator.correlate(event, self.clock.now()) {
            Correlation::Skip => {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Correlation::Create(event) => (event, None),
            Correlation::Patch { event, patch } => (event, Some(patch)),
        };
        let mut tries = 0;
        loop {
            match self.record_event(&event, patch.as_ref()).await {
                Attempt::Written => return,
                Attempt::GiveUp => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Attempt::Retry => {}
            }
            tries += 1;
            if tries >= self.max_tries {
                error!(event = event_name(&event), "Unable to write event (retry limit exceeded!)");
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Randomize the first sleep so that various clients won't all be synced up if the
            // apiserver goes down.
            let delay =
                if tries == 1 { self.sleep_duration.mul_f64(crate::random::fraction()) } else { self.sleep_duration };
            // `changed` fails at once, and forever, when the last recorder is gone.
            let shut_down = tokio::select! {
                () = tokio::time::sleep(delay) => false,
                changed = self.shutdown.changed() => changed.is_err(),
            };
            if shut_down {
                error!(event = event_name(&event), "Unable to write event (broadcaster is shut down)");
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }

    /// One attempt to write `event`: PATCH when it repeats a written one, POST otherwise (`recordEvent`).
    async fn record_event(&mut self, event: &Event, patch: Option<&serde_json::Value>) -> Attempt {
        let namespace = str_of(event.metadata.namespace.as_ref());
        let api: Api<Event> = if namespace.is_empty() {
            Api::all(self.client.clone())
        } else {
            Api::namespaced(self.client.clone(), namespace)
        };
        // client-go decides by `Count > 1`, which holds exactly when the correlator made a patch.
        let mut patched = None;
        if let Some(patch) = patch {
            let name = event_name(event);
            match api.patch(name, &PatchParams::default(), &Patch::Strategic(patch)).await {
                // The Event may have been removed (it expired): create it again below.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    debug!(event = name, "Event to patch is gone; creating it again");
                }
                result => patched = Some(result),
            }
        }
        let (result, counter) = if let Some(result) = patched {
            (result, &self.counters.patched)
        } else {
            let mut event = event.clone();
            // A create must not carry the resourceVersion of the Event it repeats.
            event.metadata.resource_version = None;
            let result = api.create(&PostParams::default(), &event).await;
            (result, &self.counters.created)
        };
        match result {
            Ok(written) => {
                counter.fetch_add(1, Ordering::Relaxed);
                // Take the server's name and resourceVersion into account for the next repeat.
                self.correlator.update_state(&written);
                Attempt::Written
            }
            Err(err) => classify_write_error(&err, event),
        }
    }
}

/// Sorts a failed write into retry or give-up, as `recordEvent`'s type switch does.
fn classify_write_error(err: &kube::Error, event: &Event) -> Attempt {
    let name = event_name(event);
    match err {
        // `*errors.StatusError`: the apiserver answered; the Event itself is the problem.
        kube::Error::Api(status) => {
            let namespace_terminating = status
                .details
                .as_ref()
                .is_some_and(|details| details.causes.iter().any(|cause| cause.reason == "NamespaceTerminating"));
            if status.is_already_exists() || namespace_terminating {
                debug!(event = name, %err, "Server rejected event (will not retry!)");
            } else {
                error!(event = name, %err, "Server rejected event (will not retry!)");
            }
            Attempt::GiveUp
        }
        // `*restclient.RequestConstructionError`: the request would be built the same next time.
        kube::Error::BuildRequest(_) | kube::Error::HttpError(_) => {
            error!(event = name, %err, "Unable to construct event (will not retry!)");
            Attempt::GiveUp
        }
        // Transport failures and undecodable answers: hold on and try again.
        _ => {
            warn!(event = name, %err, "Unable to write event (may retry after sleeping)");
            Attempt::Retry
        }
    }
}

fn event_name(event: &Event) -> &str {
    str_of(event.metadata.name.as_ref())
}

// === Building Events ===

/// `recorderImpl.makeEvent` plus what `generateEvent` sets: a new Event with count 1 stamped `now`.
fn make_event(
    regarding: &ObjectReference,
    event_type: EventType,
    reason: &str,
    message: String,
    component: &str,
    now: Timestamp,
) -> Event {
    let namespace = regarding.namespace.clone().filter(|ns| !ns.is_empty()).unwrap_or_else(|| "default".to_owned());
    Event {
        metadata: ObjectMeta {
            name: Some(generate_event_name(str_of(regarding.name.as_ref()), now)),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        involved_object: regarding.clone(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        type_: Some(event_type.as_str().to_owned()),
        source: Some(EventSource { component: Some(component.to_owned()), host: None }),
        // `ReportingController = source.Component`, `ReportingInstance = source.Host` (empty here);
        // Go sends the empty instance because the field has no omitempty.
        reporting_component: Some(component.to_owned()),
        reporting_instance: Some(String::new()),
        ..Event::default()
    }
}

/// `util.GenerateEventName`: `<name>.<unix nanos in hex>`, or a random UUID if that is not a valid
/// DNS subdomain (an object name can be valid for its kind but not for an Event; issues.k8s.io/127594).
fn generate_event_name(name: &str, now: Timestamp) -> String {
    let candidate = format!("{name}.{}", go_hex(crate::time::timestamp_nanos(now)));
    if is_dns1123_subdomain(&candidate) { candidate } else { crate::random::uuid_v4() }
}

/// Go's `%x` of an int64: lowercase hex with a leading `-` for negatives (not two's complement).
fn go_hex(value: i64) -> String {
    if value < 0 { format!("-{:x}", value.unsigned_abs()) } else { format!("{value:x}") }
}

/// `validation.IsDNS1123Subdomain`: at most 253 characters of dot-separated labels, each of
/// lowercase alphanumerics and `-`, starting and ending with an alphanumeric.
fn is_dns1123_subdomain(value: &str) -> bool {
    let label_ok = |label: &str| {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        label.starts_with(alnum) && label.ends_with(alnum) && label.chars().all(|c| alnum(c) || c == '-')
    };
    value.len() <= 253 && value.split('.').all(label_ok)
}

fn str_of(value: Option<&String>) -> &str {
    value.map_or("", String::as_str)
}

// === tests ===

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::Method;
    use kube::client::Body;
    use serde_json::json;
    use tokio::{task::JoinHandle, time::Instant};
    use tower_test::mock;

    use super::testkit::{COMPONENT, event_at, rs_ref, t0};
    use super::*;

    type Req = http::Request<Body>;
    type Resp = http::Response<Body>;

    // --- building Events ---

    #[test]
    fn make_event_builds_what_client_go_make_event_builds() {
        let event = event_at("SuccessfulCreate", "Created pod: web-a", t0());
        let nanos = format!("{:x}", t0().as_nanosecond());
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": { "name": format!("web.{nanos}"), "namespace": "default" },
                "involvedObject": {
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "namespace": "default",
                    "name": "web", "uid": "uid-web", "resourceVersion": "7"
                },
                "reason": "SuccessfulCreate",
                "message": "Created pod: web-a",
                "source": { "component": COMPONENT },
                "firstTimestamp": "2026-01-02T03:04:05Z",
                "lastTimestamp": "2026-01-02T03:04:05Z",
                "count": 1,
                "type": "Normal",
                "reportingComponent": COMPONENT,
                "reportingInstance": ""
            })
        );
    }

    #[test]
    fn make_event_puts_events_about_namespaceless_objects_in_default() {
        let mut reference = rs_ref("web");
        reference.namespace = None;
        let event = make_event(&reference, EventType::Warning, "R", "m".into(), COMPONENT, t0());
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
    }

    #[test]
    fn event_names_fall_back_to_a_uuid_when_not_a_dns_subdomain() {
        let name = generate_event_name("Web_Upper", t0());
        assert_eq!(name.len(), 36, "{name}");
        assert_eq!(name.match_indices('-').map(|(i, _)| i).collect::<Vec<_>>(), [8, 13, 18, 23]);
        assert_eq!(&name[14..15], "4", "version 4: {name}");
        assert!("89ab".contains(&name[19..20]), "RFC 4122 variant: {name}");
        assert!(generate_event_name("web-1.example", t0()).starts_with("web-1.example."));
    }

    #[test]
    fn dns_subdomain_validation_matches_apimachinery() {
        for valid in ["a", "web", "web-1.abc", "0.1", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(valid), "{valid}");
        }
        for invalid in ["", "Web", "web_1", "-web", "web-", "a..b", ".a", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(invalid), "{invalid}");
        }
    }

    #[test]
    fn go_hex_writes_negative_numbers_with_a_sign() {
        assert_eq!(go_hex(255), "ff");
        assert_eq!(go_hex(-255), "-ff");
        assert_eq!(go_hex(i64::MIN), "-8000000000000000");
    }

    // --- the writer against a mock apiserver ---

    struct MockApi {
        recorder: EventRecorder,
        writer: JoinHandle<()>,
        handle: mock::Handle<Req, Resp>,
        clock: Arc<FakeClock>,
    }

    /// Drops the recorder, waits for the writer to drain and stop, and returns the final counts.
    async fn finish(api: MockApi) -> (EventCounts, mock::Handle<Req, Resp>) {
        let MockApi { recorder, writer, handle, .. } = api;
        let counters = recorder.counters.clone();
        drop(recorder);
        writer.await.unwrap();
        (counters.snapshot(), handle)
    }

    fn mock_api(config: RecorderConfig) -> MockApi {
        let (service, handle) = mock::pair::<Req, Resp>();
        let clock = Arc::new(FakeClock::new(t0()));
        let config = RecorderConfig { clock: clock.clone(), ..config };
        let (recorder, writer) = new_recorder(kube::Client::new(service, "default"), config);
        MockApi { recorder, writer: tokio::spawn(writer.run()), handle, clock }
    }

    /// One request as the apiserver saw it.
    struct Seen {
        method: Method,
        uri: String,
        content_type: String,
        body: String,
        respond: mock::SendResponse<Resp>,
    }

    impl Seen {
        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap()
        }

        /// Answers like the apiserver: the object written, with a resourceVersion.
        fn ok(self, resource_version: &str) {
            let mut event = self.json();
            if self.method == Method::PATCH {
                // A real apiserver would merge; tests only need a valid Event back.
                event = json!({ "metadata": { "name": self.uri.rsplit('/').next().unwrap().trim_end_matches('?') } });
            }
            event["metadata"]["resourceVersion"] = json!(resource_version);
            let status = if self.method == Method::POST { 201 } else { 200 };
            self.respond.send_response(
                http::Response::builder().status(status).body(Body::from(serde_json::to_vec(&event).unwrap())).unwrap(),
            );
        }

        fn status(self, code: u16, reason: &str) {
            let status =
                json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code });
            self.respond.send_response(
                http::Response::builder().status(code).body(Body::from(serde_json::to_vec(&status).unwrap())).unwrap(),
            );
        }
    }

    async fn next(handle: &mut mock::Handle<Req, Resp>) -> Seen {
        let (request, respond) = tokio::time::timeout(Duration::from_hours(1), handle.next_request())
            .await
            .expect("a request within an hour")
            .expect("the client is alive");
        let (parts, body) = request.into_parts();
        Seen {
            method: parts.method,
            uri: parts.uri.to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            body: String::from_utf8(body.collect_bytes().await.unwrap().to_vec()).unwrap(),
            respond,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn recorder_posts_new_events_and_patches_repeats() {
        let mut api = mock_api(RecorderConfig::default());
        let first_name = format!("web.{:x}", t0().as_nanosecond());

        api.recorder.event(&rs_ref("web"), EventType::Normal, "SuccessfulCreate", "Created pod: web-a");
        let post = next(&mut api.handle).await;
        assert_eq!((&post.method, post.uri.as_str()), (&Method::POST, "/api/v1/namespaces/default/events?"));
        assert_eq!(post.content_type, "application/json");
        assert_eq!(
            post.json(),
            serde_json::to_value(event_at("SuccessfulCreate", "Created pod: web-a", t0())).unwrap()
        );
        assert_eq!(post.json()["metadata"]["name"], json!(first_name));
        post.ok("100");

        api.clock.step(Duration::from_secs(1));
        api.recorder.event(&rs_ref("web"), EventType::Normal, "SuccessfulCreate", "Created pod: web-a");
        let patch = next(&mut api.handle).await;
        assert_eq!(patch.method, Method::PATCH);
        assert_eq!(patch.uri, format!("/api/v1/namespaces/default/events/{first_name}?"));
        assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
        assert_eq!(patch.body, r#"{"count":2,"lastTimestamp":"2026-01-02T03:04:06Z","message":"Created pod: web-a"}"#);
        patch.ok("101");

        api.recorder.event(&rs_ref("web"), EventType::Normal, "SuccessfulCreate", "Created pod: web-b");
        let post = next(&mut api.handle).await;
        assert_eq!(post.method, Method::POST);
        assert_eq!(post.json()["message"], json!("Created pod: web-b"));
        post.ok("102");

        let (counts, _) = finish(api).await;
        assert_eq!(counts, EventCounts { created: 2, patched: 1, ..EventCounts::default() });
    }

    #[tokio::test(start_paused = true)]
    async fn a_patch_that_fails_with_not_found_falls_back_to_a_create() {
        let mut api = mock_api(RecorderConfig::default());
        api.recorder.event(&rs_ref("web"), EventType::Warning, "FailedCreate", "quota");
        next(&mut api.handle).await.ok("100");
        api.clock.step(Duration::from_secs(1));
        api.recorder.event(&rs_ref("web"), EventType::Warning, "FailedCreate", "quota");

        let patch = next(&mut api.handle).await;
        assert_eq!(patch.method, Method::PATCH);
        patch.status(404, "NotFound");
        // Created again under the first name, keeping the count, without a resourceVersion.
        let post = next(&mut api.handle).await;
        assert_eq!(post.method, Method::POST);
        let body = post.json();
        assert_eq!(body["metadata"]["name"], json!(format!("web.{:x}", t0().as_nanosecond())));
        assert_eq!(body["metadata"].get("resourceVersion"), None);
        assert_eq!((&body["count"], &body["firstTimestamp"]), (&json!(2), &json!("2026-01-02T03:04:05Z")));
        post.ok("200");

        let (counts, _) = finish(api).await;
        assert_eq!(counts, EventCounts { created: 2, ..EventCounts::default() });
    }

    #[tokio::test(start_paused = true)]
    async fn apiserver_errors_are_final_but_transport_errors_are_retried_12_times() {
        let mut api = mock_api(RecorderConfig::default());

        // A 500 is an answer: client-go gives up at once.
        api.recorder.event(&rs_ref("web"), EventType::Normal, "A", "a");
        next(&mut api.handle).await.status(500, "InternalError");

        // A transport failure is retried: 12 attempts, the first sleep random in [0, 10 s), then 10 s each.
        api.recorder.event(&rs_ref("web"), EventType::Normal, "B", "b");
        let start = Instant::now();
        for _ in 0..12 {
            let seen = next(&mut api.handle).await;
            assert_eq!(seen.json()["reason"], json!("B"));
            seen.respond.send_error("connection refused");
        }
        let elapsed = start.elapsed();
        assert!((Duration::from_secs(100)..Duration::from_secs(110)).contains(&elapsed), "{elapsed:?}");

        // The writer moves on to the next Event.
        api.recorder.event(&rs_ref("web"), EventType::Normal, "C", "c");
        let seen = next(&mut api.handle).await;
        assert_eq!(seen.json()["reason"], json!("C"));
        seen.ok("1");

        let (counts, mut handle) = finish(api).await;
        assert_eq!(counts, EventCounts { created: 1, failed: 2, ..EventCounts::default() });
        // No 13th attempt was made.
        assert!(handle.next_request().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_and_counts_events_without_blocking() {
        let (service, mut handle) = mock::pair::<Req, Resp>();
        let config =
            RecorderConfig { queue_length: 2, clock: Arc::new(FakeClock::new(t0())), ..RecorderConfig::default() };
        let (recorder, writer) = new_recorder(kube::Client::new(service, "default"), config);
        // The writer is not running yet: two Events fit, three are dropped.
        for i in 0..5 {
            recorder.event(&rs_ref("web"), EventType::Normal, &format!("R{i}"), "m");
        }
        assert_eq!(recorder.counts().dropped, 3);

        let writer = tokio::spawn(writer.run());
        for reason in ["R0", "R1"] {
            let seen = next(&mut handle).await;
            assert_eq!(seen.json()["reason"], json!(reason));
            seen.ok("1");
        }
        let counters = recorder.counters.clone();
        drop(recorder);
        writer.await.unwrap();
        let counts = counters.snapshot();
        assert_eq!(counts, EventCounts { created: 2, dropped: 3, ..EventCounts::default() });
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_last_recorder_gives_each_queued_event_one_try_and_ends_the_writer() {
        let mut api = mock_api(RecorderConfig::default());
        let clone = api.recorder.clone();
        api.recorder.event(&rs_ref("web"), EventType::Normal, "A", "a");
        clone.event(&rs_ref("web"), EventType::Normal, "B", "b");
        let counters = api.recorder.counters.clone();
        drop((api.recorder, clone));
        // Each queued Event fails once and is given up at once instead of sleeping 10 s.
        let start = Instant::now();
        for reason in ["A", "B"] {
            let seen = next(&mut api.handle).await;
            assert_eq!(seen.json()["reason"], json!(reason));
            seen.respond.send_error("connection refused");
        }
        api.writer.await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(counters.snapshot(), EventCounts { failed: 2, ..EventCounts::default() });
        assert!(api.handle.next_request().await.is_none());
    }

    #[test]
    fn recorder_and_writer_are_send() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<EventRecorder>();
        assert_send::<EventWriter>();
        assert_send::<Arc<dyn Clock>>();
    }
}
