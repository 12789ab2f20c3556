//! Slow-start batching of pod creations (`slowStartBatch`): 1, 2, 4, … calls, stopping on failure.
//!
//! Upstream's rationale, from `manageReplicas`: batch sizes start at `SlowStartInitialBatchSize`
//! and double with each successful iteration in a kind of "slow start". This handles attempts to
//! start large numbers of pods that would likely all fail with the same error. For example a
//! project with a low quota that attempts to create a large number of pods will be prevented from
//! spamming the API service with the pod create requests after one of its pods fails. Conveniently,
//! this also prevents the event spam that those failures would generate.

use std::future::Future;

use futures::future::join_all;

/// Initial batch size used by the ReplicaSet controller (`controller.SlowStartInitialBatchSize`).
pub const SLOW_START_INITIAL_BATCH_SIZE: usize = 1;

/// Tries to call `f` a total of `count` times, starting slow to check for errors, then speeding up
/// if calls succeed. Mirrors upstream `slowStartBatch(count, initialBatchSize, fn)`.
///
/// It groups the calls into batches, starting with a group of `initial_batch_size`. Within each
/// batch, all the futures returned by `f` run concurrently (`join_all`). If a whole batch succeeds,
/// the next batch may get exponentially larger: each batch is `min(2 * previous, remaining)`. If
/// there are any failures in a batch, all remaining batches are skipped after waiting for the
/// current batch to complete.
///
/// It returns the number of successful calls and the first error of the failed batch (in call
/// order; upstream returns whichever failed call finished first, which is indistinguishable for the
/// identical errors quota exhaustion produces). `f` is never called more than `count` times; with
/// `initial_batch_size == 0` it is never called at all, as upstream. Any calls never attempted are
/// the caller's to un-expect (see `ControllerExpectations::creation_observed`).
pub async fn slow_start_batch<F, Fut, E>(count: usize, initial_batch_size: usize, mut f: F) -> (usize, Option<E>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch_size = remaining.min(initial_batch_size);
    while batch_size > 0 {
        let results = join_all((0..batch_size).map(|_| f())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => successes += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
        remaining -= batch_size;
        batch_size = (2 * batch_size).min(remaining);
    }
    (successes, None)
}

// === tests ===

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    };
    use std::time::Duration;

    use tokio::sync::Barrier;
    use tokio::time::{Instant, sleep, timeout};

    use super::*;

    /// A fake create that succeeds `limit` times and then fails, counting every call, like
    /// upstream's `TestSlowStartBatch` closure and `FakePodControl.CreateLimit`.
    struct Limited {
        calls: AtomicUsize,
        limit: usize,
    }

    impl Limited {
        fn new(limit: usize) -> Arc<Self> {
            Arc::new(Self { calls: AtomicUsize::new(0), limit })
        }

        fn call(self: &Arc<Self>) -> impl Future<Output = Result<(), String>> + use<> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let limit = self.limit;
            async move { if n < limit { Ok(()) } else { Err("fake error".to_owned()) } }
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    // Mirrors upstream TestSlowStartBatch: count 10, initial batch 1, three limits.
    #[tokio::test]
    async fn slow_start_should_match_upstream_test_slow_start_batch() {
        for (limit, want_ok, want_err, want_calls) in [(0, 0, true, 1), (10, 10, false, 10), (5, 5, true, 7)] {
            let fake = Limited::new(limit);
            let (ok, err) = slow_start_batch(10, 1, || fake.call()).await;
            assert_eq!(ok, want_ok, "limit {limit}: successes");
            assert_eq!(err.is_some(), want_err, "limit {limit}: error");
            assert_eq!(fake.calls(), want_calls, "limit {limit}: calls");
        }
    }

    // Mirrors the arithmetic of upstream TestSyncReplicaSetCreateFailures: "Tell the rs to create
    // 100 replicas, but simulate a limit (like a quota limit) and ensure that only the limited
    // number of pods are created."
    #[tokio::test]
    async fn slow_start_should_create_the_limit_in_at_most_fifteen_calls_for_100_pods() {
        let fake = Limited::new(10);
        let (ok, err) = slow_start_batch(100, SLOW_START_INITIAL_BATCH_SIZE, || fake.call()).await;
        assert_eq!(ok, 10);
        assert_eq!(err.as_deref(), Some("fake error"));
        // Batches 1, 2, 4 succeed (7 creates); the batch of 8 has 3 successes and 5 failures, then
        // it stops.
        assert_eq!(fake.calls(), 15);
        assert!(fake.calls() <= 1 + 2 + 4 + 8);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_should_double_batches_and_cap_the_last_one_at_the_remainder() {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let (ok, err) = slow_start_batch(10, 1, || {
            let starts = starts.clone();
            async move {
                starts.lock().unwrap().push(t0.elapsed());
                sleep(Duration::from_secs(1)).await;
                Ok::<(), ()>(())
            }
        })
        .await;
        assert_eq!((ok, err), (10, None));
        // Each batch starts when the previous one has finished, one (paused) second later.
        let secs: Vec<u64> = starts.lock().unwrap().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 1, 1, 2, 2, 2, 2, 3, 3, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_should_run_the_calls_of_one_batch_concurrently() {
        // Every call of the batch of 4 waits for all 4 to arrive: sequential calls would never
        // finish, and the paused clock would then fire the timeout at once instead of hanging.
        let barrier = Arc::new(Barrier::new(4));
        let run = slow_start_batch(4, 4, || {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                Ok::<(), ()>(())
            }
        });
        let (ok, err) = timeout(Duration::from_secs(10), run).await.expect("batch calls ran one at a time");
        assert_eq!((ok, err), (4, None));
    }

    #[tokio::test]
    async fn slow_start_should_wait_for_the_whole_failing_batch_and_return_its_first_error() {
        let n = AtomicUsize::new(0);
        // Batch 1 ok; batch 2 = calls 1 and 2, both fail with their own message.
        let (ok, err) = slow_start_batch(10, 1, || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            async move { if i == 0 { Ok(()) } else { Err(format!("call {i}")) } }
        })
        .await;
        assert_eq!(ok, 1);
        assert_eq!(err.as_deref(), Some("call 1"));
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn slow_start_should_never_call_with_a_zero_count_or_a_zero_initial_batch() {
        let fake = Limited::new(10);
        assert_eq!(slow_start_batch(0, 1, || fake.call()).await, (0, None));
        assert_eq!(slow_start_batch(5, 0, || fake.call()).await, (0, None));
        assert_eq!(fake.calls(), 0);
    }
}
