//! The correlation pipeline (client-go's `EventCorrelator`): aggregate, dedupe, then spam-filter.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::core::v1::Event,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use super::{
    CorrelatorOptions,
    make::{go_hex, str_of},
};
use crate::{time::timestamp_nanos, token_bucket::TokenBucket};

/// Prefix of an aggregated Event's message (`EventAggregatorByReasonMessageFunc`).
const AGGREGATE_MESSAGE_PREFIX: &str = "(combined from similar events): ";

// === impl EventCorrelator ===

/// What the correlator decided for one Event (`EventCorrelateResult`).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Correlation {
    /// Write the Event with a POST.
    Create(Event),
    /// PATCH the existing Event named in `event` with `patch` (`event.count > 1`).
    Patch {
        /// The Event as it now stands, with the first occurrence's name and first timestamp.
        event: Event,
        /// The strategic-merge patch of `count`, `lastTimestamp` and `message`.
        patch: serde_json::Value,
    },
    /// The spam filter dropped the Event.
    Skip,
}

/// client-go's `EventCorrelator`: aggregator, then dedupe logger, then spam filter.
#[derive(Debug)]
pub(super) struct EventCorrelator {
    aggregator: EventAggregator,
    logger: EventLogger,
    spam_filter: SpamFilter,
}

impl EventCorrelator {
    pub(super) fn new(options: &CorrelatorOptions) -> Self {
        let size = options.lru_cache_size.max(1);
        Self {
            aggregator: EventAggregator {
                cache: Lru::new(size),
                max_events: options.max_events,
                max_interval: SignedDuration::try_from(options.max_interval).unwrap_or(SignedDuration::MAX),
            },
            logger: EventLogger { cache: Lru::new(size) },
            spam_filter: SpamFilter { cache: Lru::new(size), burst: options.burst, qps: options.qps },
        }
    }

    /// `EventCorrelate`: aggregates, counts and de-duplicates `event`, then spam-filters the result.
    pub(super) fn correlate(&mut self, event: Event, now: Timestamp) -> Correlation {
        let (event, key) = self.aggregator.aggregate(event, now);
        // The logger records the observation before the filter runs, so skipped repeats still count.
        let (event, patch) = self.logger.observe(event, key);
        if self.spam_filter.filter(&event, now) {
            return Correlation::Skip;
        }
        match patch {
            Some(patch) => Correlation::Patch { event, patch },
            None => Correlation::Create(event),
        }
    }

    /// `UpdateState`: remembers the server's copy of a written Event.
    pub(super) fn update_state(&mut self, written: &Event) {
        self.logger.update_state(written);
    }
}

/// `getEventKey`: everything that makes two Events "the same", joined without a separator as in Go.
fn event_key(event: &Event) -> String {
    let source = event.source.as_ref();
    let object = &event.involved_object;
    [
        source.and_then(|s| s.component.as_ref()),
        source.and_then(|s| s.host.as_ref()),
        object.kind.as_ref(),
        object.namespace.as_ref(),
        object.name.as_ref(),
        object.field_path.as_ref(),
        object.uid.as_ref(),
        object.api_version.as_ref(),
        event.type_.as_ref(),
        event.reason.as_ref(),
        event.message.as_ref(),
    ]
    .into_iter()
    .map(str_of)
    .collect()
}

/// `getSpamKey`: source, object and type; neither reason nor message.
fn spam_key(event: &Event) -> String {
    let source = event.source.as_ref();
    let object = &event.involved_object;
    [
        source.and_then(|s| s.component.as_ref()),
        source.and_then(|s| s.host.as_ref()),
        object.kind.as_ref(),
        object.namespace.as_ref(),
        object.name.as_ref(),
        object.uid.as_ref(),
        object.api_version.as_ref(),
        event.type_.as_ref(),
    ]
    .into_iter()
    .map(str_of)
    .collect()
}

/// `EventAggregatorByReasonFunc`: the group key (all but the message) and the message.
fn aggregate_key(event: &Event) -> (String, String) {
    let source = event.source.as_ref();
    let object = &event.involved_object;
    let key = [
        source.and_then(|s| s.component.as_ref()),
        source.and_then(|s| s.host.as_ref()),
        object.kind.as_ref(),
        object.namespace.as_ref(),
        object.name.as_ref(),
        object.uid.as_ref(),
        object.api_version.as_ref(),
        event.type_.as_ref(),
        event.reason.as_ref(),
        event.reporting_component.as_ref(),
        event.reporting_instance.as_ref(),
    ]
    .into_iter()
    .map(str_of)
    .collect();
    (key, str_of(event.message.as_ref()).to_owned())
}

// === impl EventAggregator ===

/// `EventAggregator`: replaces the 10th and later distinct messages of a group by one combined Event.
#[derive(Debug)]
struct EventAggregator {
    cache: Lru<AggregateRecord>,
    max_events: usize,
    max_interval: SignedDuration,
}

/// `aggregateRecord`: the distinct messages seen in a group, and when the group last saw one.
#[derive(Clone, Debug)]
struct AggregateRecord {
    local_keys: BTreeSet<String>,
    last_timestamp: Timestamp,
}

impl EventAggregator {
    /// `EventAggregate`: returns the Event to send and its dedupe key.
    fn aggregate(&mut self, event: Event, now: Timestamp) -> (Event, String) {
        let event_key = event_key(&event);
        let (aggregate_key, local_key) = aggregate_key(&event);

        // A group idle for longer than max_interval starts over (a missing one counts as idle forever).
        let mut local_keys = self
            .cache
            .get(&aggregate_key)
            .filter(|record| now.duration_since(record.last_timestamp) <= self.max_interval)
            .map(|record| record.local_keys.clone())
            .unwrap_or_default();
        local_keys.insert(local_key);
        let over = local_keys.len() >= self.max_events;
        if over {
            // Do not grow the set beyond max. Go pops an arbitrary key (random map order); popping
            // the smallest keeps us deterministic and is one of the outcomes Go can produce.
            local_keys.pop_first();
        }
        self.cache.add(aggregate_key.clone(), AggregateRecord { local_keys, last_timestamp: now });
        if !over {
            return (event, event_key);
        }

        // A fresh Event keyed by the group, so later ones patch it. Go copies only these fields: no
        // reporting component/instance, and the name skips GenerateEventName's validation.
        let message = format!("{AGGREGATE_MESSAGE_PREFIX}{}", str_of(event.message.as_ref()));
        let aggregated = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{}", str_of(event.involved_object.name.as_ref()), go_hex(timestamp_nanos(now)))),
                namespace: event.metadata.namespace,
                ..ObjectMeta::default()
            },
            count: Some(1),
            first_timestamp: Some(Time(now)),
            involved_object: event.involved_object,
            last_timestamp: Some(Time(now)),
            message: Some(message),
            type_: event.type_,
            reason: event.reason,
            source: event.source,
            reporting_component: Some(String::new()),
            reporting_instance: Some(String::new()),
            ..Event::default()
        };
        (aggregated, aggregate_key)
    }
}

// === impl EventLogger ===

/// `eventLogger`: remembers each written Event by key so that repeats become patches.
#[derive(Debug)]
struct EventLogger {
    cache: Lru<EventLog>,
}

/// `eventLog`: what a repeat needs to patch the first occurrence.
#[derive(Clone, Debug)]
struct EventLog {
    count: i32,
    first_timestamp: Option<Time>,
    name: Option<String>,
    resource_version: Option<String>,
}

impl EventLog {
    fn of(event: &Event) -> Self {
        Self {
            count: event.count.unwrap_or(0),
            first_timestamp: event.first_timestamp.clone(),
            name: event.metadata.name.clone(),
            resource_version: event.metadata.resource_version.clone(),
        }
    }
}

impl EventLogger {
    /// `eventObserve`: turns a repeat into the first occurrence with count+1, plus its patch.
    fn observe(&mut self, mut event: Event, key: String) -> (Event, Option<serde_json::Value>) {
        let mut patch = None;
        if let Some(last) = self.cache.get(&key).filter(|last| last.count > 0) {
            event.metadata.name.clone_from(&last.name);
            event.metadata.resource_version.clone_from(&last.resource_version);
            event.first_timestamp.clone_from(&last.first_timestamp);
            event.count = Some(last.count.saturating_add(1));
            patch = Some(observe_patch(&event));
        }
        self.cache.add(key, EventLog::of(&event));
        (event, patch)
    }

    /// `updateState`: note that Go keys this by the written Event's own key, even for an aggregate.
    fn update_state(&mut self, written: &Event) {
        self.cache.add(event_key(written), EventLog::of(written));
    }
}

/// The patch `eventObserve` gets from `strategicpatch.CreateTwoWayMergePatch(old, new)`, where `old`
/// is `new` with count 0, lastTimestamp at the Unix epoch and no message: so exactly those three
/// fields, each only where it differs from that `old`, keys sorted as Go's JSON encoder sorts them.
fn observe_patch(event: &Event) -> serde_json::Value {
    let mut patch = serde_json::Map::new();
    let count = event.count.unwrap_or(0);
    if count != 0 {
        patch.insert("count".to_owned(), count.into());
    }
    // Compare as serialized (second precision), as the JSON documents are compared in Go.
    let last_timestamp = serde_json::to_value(&event.last_timestamp).unwrap_or_default();
    let epoch = serde_json::to_value(Time(Timestamp::UNIX_EPOCH)).unwrap_or_default();
    if last_timestamp != epoch {
        patch.insert("lastTimestamp".to_owned(), last_timestamp);
    }
    let message = str_of(event.message.as_ref());
    if !message.is_empty() {
        patch.insert("message".to_owned(), message.into());
    }
    serde_json::Value::Object(patch)
}

// === impl SpamFilter ===

/// `EventSourceObjectSpamFilter`: one token bucket per spam key.
#[derive(Debug)]
struct SpamFilter {
    cache: Lru<TokenBucket<Timestamp>>,
    burst: u32,
    /// Events per second, a float32 as in Go (so 1/300 is 0.0033333334 once widened).
    qps: f32,
}

impl SpamFilter {
    /// `Filter`: true when `event` must be skipped.
    fn filter(&mut self, event: &Event, now: Timestamp) -> bool {
        let key = spam_key(event);
        // A key evicted from the LRU comes back with a full bucket, as in Go
        // (`NewTokenBucketPassiveRateLimiterWithClock`).
        let mut bucket =
            self.cache.get(&key).cloned().unwrap_or_else(|| TokenBucket::new(f64::from(self.qps), self.burst));
        // `TryAccept` is `AllowN(now, 1)`: a token now or never, no debt.
        let skip = !bucket.allow(now);
        self.cache.add(key, bucket);
        skip
    }
}

// === impl Lru ===

/// `k8s.io/utils/lru`: a bounded map that evicts the least recently read or written key.
#[derive(Debug)]
struct Lru<V> {
    capacity: usize,
    /// A counter standing in for the recency list: higher is more recent.
    tick: u64,
    entries: HashMap<String, (u64, V)>,
    by_recency: BTreeMap<u64, String>,
}

impl<V> Lru<V> {
    fn new(capacity: usize) -> Self {
        Self { capacity, tick: 0, entries: HashMap::new(), by_recency: BTreeMap::new() }
    }

    /// The value of `key`, which becomes the most recently used.
    fn get(&mut self, key: &str) -> Option<&V> {
        let tick = self.next_tick();
        let (used, value) = self.entries.get_mut(key)?;
        let key = self.by_recency.remove(used).expect("recency index matches entries");
        self.by_recency.insert(tick, key);
        *used = tick;
        Some(value)
    }

    /// Sets `key` to `value` as the most recently used, evicting the least recent key if full.
    fn add(&mut self, key: String, value: V) {
        let tick = self.next_tick();
        if let Some((old, _)) = self.entries.insert(key.clone(), (tick, value)) {
            self.by_recency.remove(&old);
        }
        self.by_recency.insert(tick, key);
        if self.entries.len() > self.capacity
            && let Some((_, oldest)) = self.by_recency.pop_first()
        {
            self.entries.remove(&oldest);
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

// === tests ===

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::events::{
        EventType,
        make::make_event,
        testkit::{COMPONENT, event_at, rs_ref, t0},
    };

    fn at(seconds: u64) -> Timestamp {
        t0() + Duration::from_secs(seconds)
    }

    /// Correlates like the writer does, with every write succeeding and echoed back with a resourceVersion.
    fn play(correlator: &mut EventCorrelator, event: Event, now: Timestamp) -> Correlation {
        let correlation = correlator.correlate(event, now);
        if let Correlation::Create(event) | Correlation::Patch { event, .. } = &correlation {
            let mut written = event.clone();
            written.metadata.resource_version = Some("100".into());
            correlator.update_state(&written);
        }
        correlation
    }

    fn default_correlator() -> EventCorrelator {
        EventCorrelator::new(&CorrelatorOptions::default())
    }

    fn time_json(now: Timestamp) -> serde_json::Value {
        serde_json::to_value(Time(now)).unwrap()
    }

    // --- correlation ---

    #[test]
    fn identical_events_dedupe_into_one_event_with_count_2_then_3() {
        let mut correlator = default_correlator();
        let Correlation::Create(first) =
            play(&mut correlator, event_at("SuccessfulCreate", "Created pod: web-a", t0()), t0())
        else {
            panic!("the first occurrence is created");
        };
        for (seconds, count) in [(1, 2), (2, 3)] {
            let now = at(seconds);
            let correlation = play(&mut correlator, event_at("SuccessfulCreate", "Created pod: web-a", now), now);
            let Correlation::Patch { event, patch } = correlation else {
                panic!("a repeat is patched: {correlation:?}");
            };
            // The repeat becomes the first occurrence, counted up and re-stamped.
            assert_eq!(event.metadata.name, first.metadata.name);
            assert_eq!(event.metadata.resource_version.as_deref(), Some("100"));
            assert_eq!(event.first_timestamp, Some(Time(t0())));
            assert_eq!(event.last_timestamp, Some(Time(now)));
            assert_eq!(event.count, Some(count));
            assert_eq!(
                patch,
                json!({ "count": count, "lastTimestamp": time_json(now), "message": "Created pod: web-a" })
            );
        }
    }

    #[test]
    fn patch_json_is_what_the_two_way_merge_patch_gives_byte_for_byte() {
        let mut event = event_at("R", "Created pod: web-a", at(1));
        event.count = Some(2);
        assert_eq!(
            serde_json::to_string(&observe_patch(&event)).unwrap(),
            r#"{"count":2,"lastTimestamp":"2026-01-02T03:04:06Z","message":"Created pod: web-a"}"#
        );
        // Fields equal to the "old" side (no message; epoch lastTimestamp) are left out.
        event.message = None;
        event.last_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        assert_eq!(serde_json::to_string(&observe_patch(&event)).unwrap(), r#"{"count":2}"#);
    }

    #[test]
    fn spam_filter_lets_25_through_then_skips_until_a_token_refills_300s_later() {
        let mut correlator = default_correlator();
        // Different reasons: no dedupe, no aggregation, but one spam key (source+object+type).
        for i in 0..25 {
            let correlation = play(&mut correlator, event_at(&format!("Reason{i}"), "m", t0()), t0());
            assert!(matches!(correlation, Correlation::Create(_)), "event {i}: {correlation:?}");
        }
        assert_eq!(play(&mut correlator, event_at("Reason25", "m", t0()), t0()), Correlation::Skip);
        assert_eq!(play(&mut correlator, event_at("Reason26", "m", at(299)), at(299)), Correlation::Skip);
        // One token per 300 s (float32 1/300 is a hair above, so exactly 300 s suffices).
        assert!(matches!(play(&mut correlator, event_at("Reason27", "m", at(300)), at(300)), Correlation::Create(_)));
        assert_eq!(play(&mut correlator, event_at("Reason28", "m", at(300)), at(300)), Correlation::Skip);
        // Another object has its own bucket.
        let other = make_event(&rs_ref("api"), EventType::Normal, "Reason29", "m".into(), COMPONENT, at(300));
        assert!(matches!(play(&mut correlator, other, at(300)), Correlation::Create(_)));
        // And so has another type on the same object.
        let warning = make_event(&rs_ref("web"), EventType::Warning, "Reason30", "m".into(), COMPONENT, at(300));
        assert!(matches!(play(&mut correlator, warning, at(300)), Correlation::Create(_)));
    }

    #[test]
    fn skipped_repeats_still_raise_the_count_of_the_next_patch() {
        let mut correlator = default_correlator();
        for i in 0..25 {
            let correlation = play(&mut correlator, event_at("FailedCreate", "quota exceeded", t0()), t0());
            assert_ne!(correlation, Correlation::Skip, "event {i}");
        }
        // The 26th is skipped, but the logger counted it before the filter ran.
        assert_eq!(play(&mut correlator, event_at("FailedCreate", "quota exceeded", t0()), t0()), Correlation::Skip);
        let Correlation::Patch { event, .. } =
            play(&mut correlator, event_at("FailedCreate", "quota exceeded", at(300)), at(300))
        else {
            panic!("the refilled repeat is patched");
        };
        assert_eq!(event.count, Some(27));
    }

    #[test]
    fn aggregation_after_10_distinct_messages_combines_them_and_later_ones_patch_with_increasing_count() {
        let mut correlator = default_correlator();
        for i in 0..9 {
            let message = format!("Created pod: web-{i}");
            let Correlation::Create(event) =
                play(&mut correlator, event_at("SuccessfulCreate", &message, at(i)), at(i))
            else {
                panic!("event {i} is created as is");
            };
            assert_eq!(event.message, Some(message));
        }
        // The 10th distinct message turns into a fresh aggregate Event.
        let Correlation::Create(aggregate) =
            play(&mut correlator, event_at("SuccessfulCreate", "Created pod: web-9", at(9)), at(9))
        else {
            panic!("the aggregate is created");
        };
        assert_eq!(aggregate.message.as_deref(), Some("(combined from similar events): Created pod: web-9"));
        assert_eq!(aggregate.metadata.name, Some(format!("web.{:x}", at(9).as_nanosecond())));
        assert_eq!(aggregate.count, Some(1));
        assert_eq!(
            (aggregate.first_timestamp.clone(), aggregate.last_timestamp.clone()),
            (Some(Time(at(9))), Some(Time(at(9))))
        );
        // Go builds the aggregate from scratch and leaves these empty.
        assert_eq!(aggregate.reporting_component.as_deref(), Some(""));
        assert_eq!(aggregate.reporting_instance.as_deref(), Some(""));

        // Each later message patches the aggregate, counting up.
        for (i, count) in (10..14).zip(2..) {
            let message = format!("Created pod: web-{i}");
            let Correlation::Patch { event, patch } =
                play(&mut correlator, event_at("SuccessfulCreate", &message, at(i)), at(i))
            else {
                panic!("event {i} patches the aggregate");
            };
            assert_eq!(event.metadata.name, aggregate.metadata.name);
            assert_eq!(event.count, Some(count));
            assert_eq!(event.first_timestamp, Some(Time(at(9))));
            assert_eq!(
                patch,
                json!({
                    "count": count,
                    "lastTimestamp": time_json(at(i)),
                    "message": format!("(combined from similar events): {message}"),
                })
            );
        }
    }

    #[test]
    fn similar_events_aggregate_while_each_comes_within_600s_of_the_previous_one() {
        // Ten messages 600 s apart span 90 minutes, yet aggregate: the window slides.
        let mut correlator = default_correlator();
        for i in 0..10 {
            play(
                &mut correlator,
                event_at("SuccessfulCreate", &format!("Created pod: web-{i}"), at(600 * i)),
                at(600 * i),
            );
        }
        let Correlation::Patch { event, .. } =
            play(&mut correlator, event_at("SuccessfulCreate", "Created pod: web-10", at(6000)), at(6000))
        else {
            panic!("the 11th patches the aggregate");
        };
        assert_eq!(event.count, Some(2));

        // A gap of 601 s starts the group over.
        let mut correlator = default_correlator();
        for i in 0..9 {
            play(&mut correlator, event_at("SuccessfulCreate", &format!("Created pod: web-{i}"), at(i)), at(i));
        }
        let Correlation::Create(event) =
            play(&mut correlator, event_at("SuccessfulCreate", "Created pod: web-9", at(8 + 601)), at(8 + 601))
        else {
            panic!("the 10th is created as is");
        };
        assert_eq!(event.message.as_deref(), Some("Created pod: web-9"));
    }

    #[test]
    fn events_with_different_reasons_aggregate_separately() {
        let mut correlator = default_correlator();
        for i in 0..9 {
            play(&mut correlator, event_at("SuccessfulCreate", &format!("Created pod: web-{i}"), t0()), t0());
        }
        let Correlation::Create(event) =
            play(&mut correlator, event_at("SuccessfulDelete", "Deleted pod: web-0", t0()), t0())
        else {
            panic!("a new reason starts its own group");
        };
        assert_eq!(event.message.as_deref(), Some("Deleted pod: web-0"));
    }

    #[test]
    fn lru_evicts_the_least_recently_used_key() {
        let mut lru = Lru::new(2);
        lru.add("a".to_owned(), 1);
        lru.add("b".to_owned(), 2);
        // Reading "a" makes "b" the oldest.
        assert_eq!(lru.get("a"), Some(&1));
        lru.add("c".to_owned(), 3);
        assert_eq!(lru.get("b"), None);
        assert_eq!([lru.get("a").copied(), lru.get("c").copied()], [Some(1), Some(3)]);
        // Overwriting refreshes too.
        lru.add("a".to_owned(), 10);
        lru.add("d".to_owned(), 4);
        assert_eq!([lru.get("a").copied(), lru.get("c").copied(), lru.get("d").copied()], [Some(10), None, Some(4)]);
    }

    #[test]
    fn an_evicted_spam_key_comes_back_with_a_full_bucket() {
        let options = CorrelatorOptions { lru_cache_size: 1, burst: 1, ..CorrelatorOptions::default() };
        let mut correlator = EventCorrelator::new(&options);
        let web = || make_event(&rs_ref("web"), EventType::Normal, "A", "m".into(), COMPONENT, t0());
        let api = || make_event(&rs_ref("api"), EventType::Normal, "A", "m".into(), COMPONENT, t0());
        assert!(matches!(play(&mut correlator, web(), t0()), Correlation::Create(_)));
        assert_eq!(play(&mut correlator, web(), t0()), Correlation::Skip);
        assert!(matches!(play(&mut correlator, api(), t0()), Correlation::Create(_)));
        // "web" was evicted by "api": forgotten, so neither deduped nor filtered.
        assert!(matches!(play(&mut correlator, web(), t0()), Correlation::Create(_)));
    }
}
