//! Delays, deduplicates and rate-limits ReplicaSet keys; one worker per key at a time.
//!
//! [`WorkQueue`] mirrors client-go's rate-limiting delaying queue
//! (`k8s.io/client-go/util/workqueue`) with the default controller rate limiter, for `"ns/name"`
//! keys:
//!
//! * a key queued many times is handed out once (the dirty set);
//! * a key is never handed to two workers at once (the processing set); an [`add`](WorkQueue::add)
//!   while it is processing marks it dirty, and [`done`](WorkQueue::done) queues it again;
//! * [`add_after`](WorkQueue::add_after) parks a key until its ready time, keeping the earlier one
//!   if it is already waiting. There is no timer task: waiting keys sit in a heap that every call
//!   moves into the queue once due, and a blocked [`get`](WorkQueue::get) sleeps until the earliest
//!   ready time;
//! * [`add_rate_limited`](WorkQueue::add_rate_limited) waits the max of a per-key exponential
//!   backoff and a global token bucket.
//!
//! Time is [`tokio::time::Instant`], so tests drive it with paused time (`tokio::time::advance`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use crate::token_bucket::TokenBucket;

/// Settings of the rate limiter behind [`WorkQueue::add_rate_limited`].
///
/// [`Default`] is client-go's `DefaultControllerRateLimiter`: the max of a per-item exponential
/// limiter (5 ms · 2^failures, capped at 1000 s) and an overall token bucket (10 qps, burst 100)
/// that only limits retries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimiterConfig {
    /// Delay after a key's first failure; doubled with each further failure.
    pub base_delay: Duration,
    /// Upper bound of the per-key backoff.
    pub max_delay: Duration,
    /// Token bucket refill rate in tokens per second. At 0 or less the bucket never refills, so
    /// once `burst` is spent every rate-limited add waits "forever", as in x/time/rate.
    pub qps: f64,
    /// Token bucket size (tokens available at once). At 0 every rate-limited add waits "forever",
    /// as x/time/rate's `Reserve().Delay()` does for a request larger than the burst.
    pub burst: u32,
}

impl Default for RateLimiterConfig {
    fn default() -> Self {
        Self { base_delay: Duration::from_millis(5), max_delay: Duration::from_secs(1000), qps: 10.0, burst: 100 }
    }
}

impl RateLimiterConfig {
    /// client-go `ItemExponentialFailureRateLimiter.When` for a key that failed `failures` times
    /// before.
    fn backoff(&self, failures: u32) -> Duration {
        let exp = i32::try_from(failures).unwrap_or(i32::MAX);
        // Computed in floating point, as upstream, so a huge exponent saturates instead of
        // overflowing.
        let backoff = self.base_delay.as_nanos() as f64 * 2f64.powi(exp);
        if backoff > self.max_delay.as_nanos() as f64 { self.max_delay } else { Duration::from_nanos(backoff as u64) }
    }
}

/// Counters and gauges for client-go's workqueue metric names (label `name="replicaset"` is the
/// host's).
///
/// Per-item latencies are not kept here: [`WorkQueue::get`] returns the queue duration and
/// [`WorkQueue::done`] the work duration, for the host to observe into its histograms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueueStats {
    /// `workqueue_depth`: keys added and not yet handed out, including keys re-added while
    /// processing.
    pub depth: usize,
    /// `workqueue_adds_total`: adds that were not deduplicated.
    pub adds_total: u64,
    /// `workqueue_retries_total`: calls of `add_after`, including those made by `add_rate_limited`.
    pub retries_total: u64,
    /// Keys handed out by `get` and not yet `done`.
    pub processing: usize,
    /// Keys parked by `add_after` and not yet due.
    pub waiting: usize,
    /// `workqueue_unfinished_work_seconds`: summed time the processing keys have been in progress.
    pub unfinished_work: Duration,
    /// `workqueue_longest_running_processor_seconds`: time the longest processing key has been in
    /// progress.
    pub longest_running_processor: Duration,
}

/// An entry of the waiting heap: ready time, insertion order (FIFO among equal times), key.
type Waiting = Reverse<(Instant, u64, String)>;

#[derive(Debug)]
struct State {
    /// Order in which keys are handed out. Every key here is dirty and not processing.
    queue: VecDeque<String>,
    /// Keys that need processing.
    dirty: HashSet<String>,
    /// Keys being processed, with the time `get` handed them out.
    processing: HashMap<String, Instant>,
    /// When each dirty key was first added, for the queue duration.
    add_times: HashMap<String, Instant>,
    /// Keys parked by `add_after`. An entry is stale unless `ready_at` holds its time for the key.
    waiting: BinaryHeap<Waiting>,
    /// The ready time of each waiting key (client-go's `knownEntries`).
    ready_at: HashMap<String, Instant>,
    /// Insertion counter of `waiting`, so keys due at the same time keep their order.
    next_seq: u64,
    /// Rate-limited adds per key since it was last forgotten.
    failures: HashMap<String, u32>,
    /// The rate limiter's shared token bucket (client-go's `BucketRateLimiter`).
    bucket: TokenBucket<Instant>,
    /// Set by either shutdown: adds are ignored and `get` ends once the queue is empty.
    shutting_down: bool,
    /// Set by `shut_down_with_drain`, cleared by `shut_down`: the drain waits while it holds.
    drain: bool,
    adds_total: u64,
    retries_total: u64,
}

impl State {
    fn new(bucket: TokenBucket<Instant>) -> Self {
        Self {
            queue: VecDeque::new(),
            dirty: HashSet::new(),
            processing: HashMap::new(),
            add_times: HashMap::new(),
            waiting: BinaryHeap::new(),
            ready_at: HashMap::new(),
            next_seq: 0,
            failures: HashMap::new(),
            bucket,
            shutting_down: false,
            drain: false,
            adds_total: 0,
            retries_total: 0,
        }
    }

    /// client-go `Add`; returns whether a key was queued (so a getter must be woken).
    fn add(&mut self, key: &str, now: Instant) -> bool {
        if self.shutting_down || self.dirty.contains(key) {
            return false;
        }
        self.adds_total += 1;
        self.add_times.entry(key.to_owned()).or_insert(now);
        self.dirty.insert(key.to_owned());
        if self.processing.contains_key(key) {
            // Queued again by `done`.
            return false;
        }
        self.queue.push_back(key.to_owned());
        true
    }

    /// client-go `AddAfter`; returns whether a getter must be woken (a key queued or an earlier
    /// ready time).
    fn add_after(&mut self, key: &str, delay: Duration, now: Instant) -> bool {
        if self.shutting_down {
            return false;
        }
        self.retries_total += 1;
        if delay.is_zero() {
            return self.add(key, now);
        }
        // Saturate absurd delays (an Instant can't be that far in the future) at about a century.
        let at = now.checked_add(delay).unwrap_or_else(|| now + Duration::from_secs(3_155_760_000));
        if self.ready_at.get(key).is_some_and(|&existing| existing <= at) {
            // Already waiting with an earlier (or equal) ready time: keep it.
            return false;
        }
        self.ready_at.insert(key.to_owned(), at);
        self.next_seq += 1;
        self.waiting.push(Reverse((at, self.next_seq, key.to_owned())));
        true
    }

    /// Adds every waiting key that is due, in ready-time order, as client-go's waiting loop would
    /// have.
    fn promote(&mut self, now: Instant) {
        while self.waiting.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            let Some(Reverse((at, _, key))) = self.waiting.pop() else {
                break;
            };
            if self.ready_at.get(&key) == Some(&at) {
                self.ready_at.remove(&key);
                // The key became ready at `at`, so its queue duration starts there.
                self.add(&key, at);
            }
        }
    }

    fn stop(&mut self, drain: bool) {
        (self.shutting_down, self.drain) = (true, drain);
        // client-go's waiting loop exits at shutdown, dropping parked keys.
        self.waiting.clear();
        self.ready_at.clear();
    }
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Woken on every change a blocked `get` or `shut_down_with_drain` may be waiting for.
    changed: Notify,
    config: RateLimiterConfig,
}

/// A client-go rate-limiting delaying work queue of `"ns/name"` keys.
///
/// Cheap to clone (an [`Arc`] inside); every clone is the same queue, usable from many tokio tasks.
/// Workers loop on [`get`](Self::get), sync the key, call [`forget`](Self::forget) on success or
/// [`add_rate_limited`](Self::add_rate_limited) on error, then always [`done`](Self::done).
#[derive(Clone, Debug)]
pub struct WorkQueue {
    inner: Arc<Inner>,
}

impl Default for WorkQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkQueue {
    /// A queue with client-go's default controller rate limiter.
    pub fn new() -> Self {
        Self::with_rate_limiter(RateLimiterConfig::default())
    }

    /// A queue whose [`add_rate_limited`](Self::add_rate_limited) uses `config`.
    pub fn with_rate_limiter(config: RateLimiterConfig) -> Self {
        // client-go's `BucketRateLimiter{Limiter: rate.NewLimiter(qps, burst)}`: starts full.
        let state = State::new(TokenBucket::new(config.qps, config.burst));
        Self { inner: Arc::new(Inner { state: Mutex::new(state), changed: Notify::new(), config }) }
    }

    /// Locks the state with due waiting keys already queued, and returns the current time.
    fn state(&self) -> (MutexGuard<'_, State>, Instant) {
        // No code path panics with the state half-updated, so a poisoned lock still guards
        // consistent state.
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        state.promote(now);
        (state, now)
    }

    fn wake_if(&self, changed: bool) {
        if changed {
            self.inner.changed.notify_waiters();
        }
    }

    /// Marks `key` as needing processing. Ignored after shutdown, and if the key is already queued;
    /// if it is being processed, it is queued again when its worker calls [`done`](Self::done).
    pub fn add(&self, key: &str) {
        let (mut state, now) = self.state();
        let queued = state.add(key, now);
        drop(state);
        self.wake_if(queued);
    }

    /// Adds `key` once `delay` has passed; a zero delay adds it now. If the key is already waiting,
    /// the earlier ready time wins. A key that is waiting stays waiting when added directly, so it
    /// is added again when due (as in client-go). Ignored after shutdown.
    pub fn add_after(&self, key: &str, delay: Duration) {
        let (mut state, now) = self.state();
        let changed = state.add_after(key, delay, now);
        drop(state);
        self.wake_if(changed);
    }

    /// Adds `key` after the rate limiter says it's ok, counts a failure for it, and returns the
    /// delay used.
    ///
    /// The delay is the max of the key's exponential backoff (`base_delay · 2^num_requeues`, capped
    /// at `max_delay`) and a reservation in the shared token bucket: every call takes a token, as
    /// in client-go.
    pub fn add_rate_limited(&self, key: &str) -> Duration {
        let config = self.inner.config;
        let (mut state, now) = self.state();
        let failures = state.failures.entry(key.to_owned()).or_insert(0);
        let backoff = config.backoff(*failures);
        *failures = failures.saturating_add(1);
        // `BucketRateLimiter.When` is `Reserve().Delay()`: every call takes a token, in debt if need be.
        let delay = backoff.max(state.bucket.delay(now));
        let changed = state.add_after(key, delay, now);
        drop(state);
        self.wake_if(changed);
        delay
    }

    /// Clears the failure count of `key`, so its next rate-limited add starts from `base_delay`
    /// again. Does not remove the key from the queue.
    pub fn forget(&self, key: &str) {
        self.state().0.failures.remove(key);
    }

    /// How many times `key` was rate-limited since it was last forgotten.
    pub fn num_requeues(&self, key: &str) -> u32 {
        self.state().0.failures.get(key).copied().unwrap_or(0)
    }

    /// Number of keys ready to be handed out (not counting processing or waiting keys), as
    /// client-go's `Len`.
    pub fn len(&self) -> usize {
        self.state().0.queue.len()
    }

    /// Whether no key is ready to be handed out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for a key and hands it to the caller, who owns it until [`done`](Self::done). Returns
    /// the key and how long it was queued (from its first add, or its ready time, to now).
    ///
    /// Returns `None` once the queue is shutting down and no key is ready: as in client-go, keys
    /// queued before the shutdown are still handed out. Cancel-safe: a dropped `get` takes nothing
    /// from the queue.
    pub async fn get(&self) -> Option<(String, Duration)> {
        loop {
            let mut changed = pin!(self.inner.changed.notified());
            // Register before looking, so a change made after we look still wakes us.
            changed.as_mut().enable();
            let next_ready = {
                let (mut state, now) = self.state();
                if let Some(key) = state.queue.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone(), now);
                    let since = state.add_times.remove(&key).unwrap_or(now);
                    return Some((key, now.saturating_duration_since(since)));
                }
                if state.shutting_down {
                    return None;
                }
                state.waiting.peek().map(|Reverse((at, _, _))| *at)
            };
            match next_ready {
                Some(at) => tokio::select! {
                    () = changed => {}
                    () = sleep_until(at) => {}
                },
                None => changed.await,
            }
        }
    }

    /// Marks the end of processing `key` and returns how long it was processed. If the key was
    /// added meanwhile, it is queued again. A key that is not being processed is ignored (returns
    /// `None`).
    pub fn done(&self, key: &str) -> Option<Duration> {
        let (mut state, now) = self.state();
        let started = state.processing.remove(key)?;
        if state.dirty.contains(key) {
            state.queue.push_back(key.to_owned());
        }
        drop(state);
        // Wakes a getter for a re-queued key, or a drain waiting for the processing set to empty.
        self.wake_if(true);
        Some(now.saturating_duration_since(started))
    }

    /// Stops the queue at once: later adds are ignored, waiting keys are dropped, and blocked
    /// getters wake up. [`get`](Self::get) returns `None` once the keys already queued are handed
    /// out. Cancels a pending drain.
    pub fn shut_down(&self) {
        self.state().0.stop(false);
        self.wake_if(true);
    }

    /// Stops the queue like [`shut_down`](Self::shut_down), then waits until every key being
    /// processed is [`done`](Self::done) (including keys handed out meanwhile), or until
    /// `shut_down` is called.
    pub async fn shut_down_with_drain(&self) {
        self.state().0.stop(true);
        self.wake_if(true);
        loop {
            let mut changed = pin!(self.inner.changed.notified());
            changed.as_mut().enable();
            {
                let (state, _) = self.state();
                if state.processing.is_empty() || !state.drain {
                    return;
                }
            }
            changed.await;
        }
    }

    /// Whether [`shut_down`](Self::shut_down) or
    /// [`shut_down_with_drain`](Self::shut_down_with_drain) was called.
    pub fn shutting_down(&self) -> bool {
        self.state().0.shutting_down
    }

    /// A snapshot of the queue's metrics.
    pub fn stats(&self) -> QueueStats {
        let (state, now) = self.state();
        let running = state.processing.values().map(|&started| now.saturating_duration_since(started));
        let (unfinished_work, longest_running_processor) =
            running.fold((Duration::ZERO, Duration::ZERO), |(sum, max), d| (sum + d, max.max(d)));
        QueueStats {
            depth: state.dirty.len(),
            adds_total: state.adds_total,
            retries_total: state.retries_total,
            processing: state.processing.len(),
            waiting: state.ready_at.len(),
            unfinished_work,
            longest_running_processor,
        }
    }
}

// === tests ===

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures::FutureExt;
    use tokio::task::yield_now;
    use tokio::time::advance;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The key `get` hands out right now, if any (never blocks).
    fn ready(q: &WorkQueue) -> Option<String> {
        q.get().now_or_never().flatten().map(|(key, _)| key)
    }

    #[tokio::test(start_paused = true)]
    async fn add_should_deduplicate_a_key_queued_many_times() {
        let q = WorkQueue::new();
        for key in ["a", "b", "a", "a", "b"] {
            q.add(key);
        }
        assert_eq!(q.len(), 2);
        assert_eq!(ready(&q).as_deref(), Some("a"));
        assert_eq!(ready(&q).as_deref(), Some("b"));
        assert_eq!(ready(&q), None);
        assert_eq!(q.stats().adds_total, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_being_processed_should_not_be_handed_out_again_until_done() {
        let q = WorkQueue::new();
        q.add("a");
        assert_eq!(ready(&q).as_deref(), Some("a"));
        q.add("a");
        q.add("a");
        assert_eq!(q.len(), 0, "dirty while processing, not queued");
        assert_eq!(ready(&q), None);
        assert_eq!(q.stats().depth, 1);
        q.done("a");
        assert_eq!(ready(&q).as_deref(), Some("a"), "re-queued by done");
        q.done("a");
        assert_eq!(ready(&q), None, "only once");
        assert_eq!(q.done("a"), None, "done of a key not processing is ignored");
        assert_eq!(ready(&q), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_get_should_wake_on_add_and_on_done_requeue() {
        let q = WorkQueue::new();
        let worker = tokio::spawn({
            let q = q.clone();
            async move { (q.get().await, q.get().await) }
        });
        yield_now().await;
        q.add("a");
        yield_now().await;
        q.add("a");
        advance(Duration::from_secs(2)).await;
        q.done("a");
        let (first, second) = worker.await.unwrap();
        assert_eq!(first, Some(("a".to_owned(), Duration::ZERO)));
        assert_eq!(second, Some(("a".to_owned(), Duration::from_secs(2))), "queued since the second add");
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_should_hold_the_key_until_exactly_its_ready_time() {
        let q = WorkQueue::new();
        q.add_after("now", Duration::ZERO);
        assert_eq!(ready(&q).as_deref(), Some("now"));
        q.add_after("a", 100 * MS);
        advance(100 * MS - Duration::from_nanos(1)).await;
        assert_eq!((q.len(), ready(&q)), (0, None));
        advance(Duration::from_nanos(1)).await;
        assert_eq!(q.get().await, Some(("a".to_owned(), Duration::ZERO)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_get_should_wake_when_a_delayed_key_becomes_ready() {
        let q = WorkQueue::new();
        let start = Instant::now();
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.get().await.map(|(key, _)| (key, start.elapsed())) }
        });
        yield_now().await;
        q.add_after("late", Duration::from_secs(5));
        q.add_after("early", Duration::from_secs(3)); // must shorten the worker's sleep
        assert_eq!(worker.await.unwrap(), Some(("early".to_owned(), Duration::from_secs(3))));
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_should_keep_the_earlier_ready_time() {
        let q = WorkQueue::new();
        q.add_after("a", 50 * MS);
        q.add_after("a", 200 * MS); // a later add_after doesn't delay the earlier one
        advance(50 * MS).await;
        assert_eq!(ready(&q).as_deref(), Some("a"));
        q.done("a");
        advance(200 * MS).await;
        assert_eq!(ready(&q), None, "the later time was discarded");

        q.add_after("b", 200 * MS);
        q.add_after("b", 50 * MS); // an earlier add_after moves it forward
        advance(50 * MS).await;
        assert_eq!(ready(&q).as_deref(), Some("b"));
        q.done("b");
        advance(200 * MS).await;
        assert_eq!(ready(&q), None);
        assert_eq!(q.stats().retries_total, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_immediate_add_of_a_waiting_key_should_make_it_ready_now() {
        let q = WorkQueue::new();
        q.add_after("a", Duration::from_secs(1));
        q.add("a");
        assert_eq!(ready(&q).as_deref(), Some("a"));
        q.done("a");
        advance(Duration::from_secs(1)).await;
        assert_eq!(ready(&q).as_deref(), Some("a"), "client-go still adds it when its timer fires");
    }

    #[tokio::test(start_paused = true)]
    async fn due_keys_should_be_queued_in_ready_time_order_before_later_adds() {
        let q = WorkQueue::new();
        q.add_after("c", 30 * MS);
        q.add_after("b", 20 * MS);
        q.add_after("a", 10 * MS);
        advance(Duration::from_secs(1)).await;
        q.add("d");
        let order: Vec<_> = std::iter::from_fn(|| ready(&q)).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_delays_should_double_from_5ms_and_cap_at_1000s() {
        let q = WorkQueue::new();
        for failures in 0..18 {
            assert_eq!(q.num_requeues("a"), failures);
            assert_eq!(q.add_rate_limited("a"), 5 * MS * 2u32.pow(failures));
        }
        // 5ms · 2^18 = 1310.72s > 1000s.
        assert_eq!(q.add_rate_limited("a"), Duration::from_secs(1000));
        assert_eq!(q.add_rate_limited("a"), Duration::from_secs(1000));
        assert_eq!(q.num_requeues("a"), 20);
        assert_eq!(q.add_rate_limited("b"), 5 * MS, "per-key counts");
        q.forget("a");
        assert_eq!(q.num_requeues("a"), 0);
        assert_eq!(q.add_rate_limited("a"), 5 * MS, "forget resets the backoff");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_key_should_become_ready_after_its_backoff() {
        let q = WorkQueue::new();
        q.add_rate_limited("a");
        q.add_rate_limited("a"); // 10ms, but the 5ms entry is earlier and wins
        advance(5 * MS - Duration::from_nanos(1)).await;
        assert_eq!(ready(&q), None);
        advance(Duration::from_nanos(1)).await;
        assert_eq!(ready(&q).as_deref(), Some("a"));
        assert_eq!(q.stats().retries_total, 2);
    }

    // client-go BucketRateLimiter = rate.NewLimiter(10, 100).Reserve().Delay(): 100 tokens at once,
    // then debt repaid at 10 per second.
    #[tokio::test(start_paused = true)]
    async fn the_token_bucket_should_delay_the_101st_rate_limited_add_in_one_instant_by_100ms() {
        let q = WorkQueue::new();
        for i in 0..100 {
            assert_eq!(q.add_rate_limited(&format!("k{i}")), 5 * MS, "k{i}: backoff only");
        }
        assert_eq!(q.add_rate_limited("k100"), 100 * MS);
        assert_eq!(q.add_rate_limited("k101"), 200 * MS);
        // One second refills 10 tokens, which pay the debt of 2 and leave 8.
        advance(Duration::from_secs(1)).await;
        for i in 0..8 {
            assert_eq!(q.add_rate_limited(&format!("later{i}")), 5 * MS);
        }
        assert_eq!(q.add_rate_limited("later8"), 100 * MS);
        // The bucket is shared with the backoff: the max of both wins.
        q.forget("k0");
        assert_eq!(q.add_rate_limited("k0"), 200 * MS);
        advance(Duration::from_secs(60)).await;
        assert_eq!(q.add_rate_limited("k1"), 10 * MS, "second failure of k1, bucket full again");
    }

    #[tokio::test(start_paused = true)]
    async fn shut_down_should_ignore_adds_drop_waiting_keys_and_end_get() {
        let q = WorkQueue::new();
        let blocked = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        yield_now().await;
        q.add_after("waiting", Duration::from_secs(1));
        q.shut_down();
        assert_eq!(blocked.await.unwrap(), None);
        q.add("a");
        q.add_after("b", Duration::ZERO);
        q.add_rate_limited("c");
        advance(Duration::from_secs(2)).await;
        assert!(q.shutting_down());
        assert_eq!((q.len(), q.stats().waiting), (0, 0));
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn get_should_still_hand_out_keys_queued_before_the_shutdown() {
        let q = WorkQueue::new();
        q.add("a");
        q.shut_down();
        assert_eq!(ready(&q).as_deref(), Some("a"));
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn shut_down_with_drain_should_wait_until_every_processing_key_is_done() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        assert_eq!(ready(&q).as_deref(), Some("a"));
        let drained = Arc::new(AtomicBool::new(false));
        let drain = tokio::spawn({
            let (q, drained) = (q.clone(), drained.clone());
            async move {
                q.shut_down_with_drain().await;
                drained.store(true, Ordering::SeqCst);
            }
        });
        yield_now().await;
        q.add("c");
        assert_eq!(ready(&q).as_deref(), Some("b"), "queued keys are still handed out");
        assert_eq!(ready(&q), None, "c was ignored");
        q.done("a");
        yield_now().await;
        assert!(!drained.load(Ordering::SeqCst), "b is still processing");
        q.done("b");
        drain.await.unwrap();
        assert!(drained.load(Ordering::SeqCst));
        assert_eq!(q.get().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn shut_down_should_release_a_pending_drain() {
        let q = WorkQueue::new();
        q.add("a");
        assert_eq!(ready(&q).as_deref(), Some("a"));
        let drain = tokio::spawn({
            let q = q.clone();
            async move { q.shut_down_with_drain().await }
        });
        yield_now().await;
        assert!(!drain.is_finished());
        q.shut_down();
        drain.await.unwrap();
        q.done("a");
        q.shut_down_with_drain().now_or_never().expect("nothing to drain returns at once");
    }

    #[tokio::test(start_paused = true)]
    async fn stats_should_report_depth_adds_retries_and_processing_times() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        q.add_after("c", Duration::from_secs(10));
        assert_eq!(q.get().await, Some(("a".to_owned(), Duration::ZERO)));
        advance(Duration::from_secs(3)).await;
        assert_eq!(q.get().await, Some(("b".to_owned(), Duration::from_secs(3))));
        advance(Duration::from_secs(1)).await;
        let stats = q.stats();
        let want = QueueStats {
            depth: 0,
            adds_total: 2,
            retries_total: 1,
            processing: 2,
            waiting: 1,
            unfinished_work: Duration::from_secs(4 + 1),
            longest_running_processor: Duration::from_secs(4),
        };
        assert_eq!(stats, want);
        assert_eq!(q.done("a"), Some(Duration::from_secs(4)));
        advance(Duration::from_secs(8)).await;
        let stats = q.stats();
        assert_eq!((stats.depth, stats.adds_total, stats.waiting, stats.processing), (1, 3, 0, 1));
        assert_eq!(q.get().await, Some(("c".to_owned(), Duration::from_secs(2))), "queued since ready");
    }

    #[test]
    fn the_queue_should_be_cheap_to_share_between_tasks() {
        fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        fn assert_send<T: Send>(_: &T) {}
        assert_send_sync_clone::<WorkQueue>();
        assert_send(&WorkQueue::new().get());
        assert_send(&WorkQueue::new().shut_down_with_drain());
    }

    // Stress: many workers on a multi-threaded runtime never hold one key at once, and no add is
    // lost: every key is processed after its last add.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_workers_should_never_process_one_key_at_once() {
        const KEYS: usize = 8;
        const ADDS_PER_PRODUCER: usize = 2_000;
        let q = WorkQueue::new();
        let in_flight = Arc::new(Mutex::new(HashSet::new()));
        let versions: Arc<Vec<Mutex<(u64, u64)>>> = Arc::new((0..KEYS).map(|_| Mutex::new((0, 0))).collect());
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (q, in_flight, versions) = (q.clone(), in_flight.clone(), versions.clone());
                tokio::spawn(async move {
                    let mut processed = 0;
                    while let Some((key, _)) = q.get().await {
                        assert!(in_flight.lock().unwrap().insert(key.clone()), "{key} handed out twice");
                        let i: usize = key.parse().unwrap();
                        {
                            let mut v = versions[i].lock().unwrap();
                            v.1 = v.0; // processing starts after every add so far
                        }
                        yield_now().await;
                        assert!(in_flight.lock().unwrap().remove(&key));
                        q.done(&key);
                        processed += 1;
                    }
                    processed
                })
            })
            .collect();
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let (q, versions) = (q.clone(), versions.clone());
                tokio::spawn(async move {
                    for n in 0..ADDS_PER_PRODUCER {
                        let i = (n * 7 + p) % KEYS;
                        versions[i].lock().unwrap().0 += 1;
                        q.add(&i.to_string());
                        if n % 3 == 0 {
                            yield_now().await;
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.await.unwrap();
        }
        q.shut_down_with_drain().await;
        let mut processed = 0;
        for w in workers {
            processed += w.await.unwrap();
        }
        assert!((KEYS..=2 * ADDS_PER_PRODUCER).contains(&processed));
        for (i, v) in versions.iter().enumerate() {
            let (added, seen) = *v.lock().unwrap();
            assert_eq!(seen, added, "key {i} was not processed after its last add");
        }
        assert_eq!(q.stats(), QueueStats { adds_total: q.stats().adds_total, ..QueueStats::default() });
    }
}
