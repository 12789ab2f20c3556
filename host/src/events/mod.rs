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
//!
//! Where each part lives: this file has the settings and [`new_recorder`], which wires the rest;
//! `make` builds and names Events, `recorder` is the controller's [`EventRecorder`], `writer` the
//! [`EventWriter`] task and `correlator` the three steps above.

mod correlator;
mod make;
mod recorder;
#[cfg(test)]
mod testkit;
mod writer;

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use self::{correlator::EventCorrelator, recorder::Counters};
pub use self::{
    recorder::{EventCounts, EventRecorder},
    writer::EventWriter,
};

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

// === Configuration ===

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
