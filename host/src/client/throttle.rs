//! Client-side QPS/burst throttling for `kube::Client`, ported from client-go's token-bucket rate limiter.
//!
//! client-go gives every REST client a `flowcontrol.NewTokenBucketRateLimiter(qps, burst)`, which is
//! `golang.org/x/time/rate.Limiter.Wait` (ported once, in [`crate::token_bucket`]): a bucket that
//! starts full with `burst` tokens, refills continuously at `qps` tokens per second up to `burst`, and
//! lets each request take one token or wait exactly until its token is due. Because every waiter
//! *reserves* its token before sleeping, waiters are served in arrival order.
//!
//! [`ThrottleLayer`] is that limiter as a tower [`Layer`]. [`Throttle`] waits inside `poll_ready`
//! with a stored sleep, which is the tower-idiomatic shape and needs no `Clone` on the inner service
//! (kube's default stack is a `BoxService`, which is not `Clone`). `kube::Client` puts a `Buffer` in
//! front of the stack, whose single worker drives `poll_ready` then `call`, so requests leave in the
//! order they were issued, as with x/time/rate's reservations.
//!
//! Differences from client-go, on purpose:
//! - **A non-positive (or non-finite) `qps` means "no limit".** In client-go's `rest.Config` a `QPS` of
//!   0 means the default 5 and only a negative one disables the limiter; the kube-controller-manager
//!   default is `--kube-api-qps=20 --kube-api-burst=30`, one limiter per controller client.
//! - **A `burst` of 0 with a positive `qps` is raised to 1.** x/time/rate would fail every `Wait`
//!   with "exceeds limiter's burst", and `rest.Config` would substitute its default of 10; 1 is the
//!   strictest bucket that still lets requests through.
//! - **Watches take no token**, as in client-go's `Request.Watch` ("We specifically don't want to rate
//!   limit watches"). Because the token is taken in `poll_ready`, before the request is seen, a watch
//!   still waits for a token when the bucket is empty and then gives it back.
//! - **Retries take a token only in the HTTP/2 stack** ([`super::transport`]), where the retry layer
//!   sits outside this one, as client-go throttles each try. The clients kube's own builder makes
//!   (through a proxy, or with exec credentials) retry inside this layer, without a token.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::token_bucket::TokenBucket;

/// A throttled wait longer than this is logged at debug level, like client-go's `longThrottleLatency`.
const LONG_THROTTLE_LATENCY: Duration = Duration::from_millis(50);

/// A throttled wait longer than this is logged at info level, at most once per
/// [`EXTRA_LONG_THROTTLE_LOG_INTERVAL`], like client-go's `extraLongThrottleLatency`.
const EXTRA_LONG_THROTTLE_LATENCY: Duration = Duration::from_secs(1);

/// client-go's throttled logger prints its level-0 message at most every 10 s.
const EXTRA_LONG_THROTTLE_LOG_INTERVAL: Duration = Duration::from_secs(10);

// === impl ThrottleLayer ===

/// A tower [`Layer`] that throttles requests with client-go's token bucket.
///
/// Every [`Throttle`] made by one layer (and by its clones) shares one bucket and one
/// [`RequestStats`], as every request of one client-go REST client shares its `RateLimiter`.
#[derive(Clone, Debug)]
pub struct ThrottleLayer {
    /// `None` means unlimited.
    bucket: Option<Arc<Mutex<TokenBucket<Instant>>>>,
    stats: RequestStats,
}

impl ThrottleLayer {
    /// A layer allowing `burst` requests at once and `qps` per second on average.
    ///
    /// A non-positive or non-finite `qps` gives an unlimited layer; a `burst` of 0 is raised to 1.
    #[must_use]
    pub fn new(qps: f32, burst: u32) -> Self {
        // NaN, infinity and non-positive rates all mean "never wait": x/time/rate's `Inf` ignores burst.
        // `rate.NewLimiter(rate.Limit(qps), burst)`: Go widens the float32 qps to a float64.
        let bucket = (qps.is_finite() && qps > 0.0)
            .then(|| Arc::new(Mutex::new(TokenBucket::new(f64::from(qps), burst.max(1)))));
        Self { bucket, stats: RequestStats::default() }
    }

    /// A layer that never waits but still counts requests.
    #[must_use]
    pub fn unlimited() -> Self {
        Self::new(0.0, 0)
    }

    /// A handle to the counters of every service this layer makes.
    #[must_use]
    pub fn stats(&self) -> RequestStats {
        self.stats.clone()
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle { inner, bucket: self.bucket.clone(), stats: self.stats.clone(), state: State::Idle }
    }
}

// === impl Throttle ===

/// The [`Service`] made by [`ThrottleLayer`]: waits in `poll_ready` until a token is available.
///
/// Calling [`Service::call`] without a successful `poll_ready` first panics, as tower requires.
#[derive(Debug)]
pub struct Throttle<S> {
    inner: S,
    bucket: Option<Arc<Mutex<TokenBucket<Instant>>>>,
    stats: RequestStats,
    state: State,
}

/// A clone shares the bucket and counters and holds no token: a retry (which calls a clone of the
/// service) takes its own.
impl<S: Clone> Clone for Throttle<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), bucket: self.bucket.clone(), stats: self.stats.clone(), state: State::Idle }
    }
}

/// Where one [`Throttle`] is between two calls.
#[derive(Debug)]
enum State {
    /// No token held; the next `poll_ready` reserves one.
    Idle,
    /// A token is reserved for a future instant; sleeping until then.
    Waiting(Pin<Box<Sleep>>),
    /// A token is held; only the inner service's readiness is left to wait for.
    Permitted,
}

impl<S, B> Service<http::Request<B>> for Throttle<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.state {
                State::Idle => {
                    let Some(bucket) = &self.bucket else {
                        self.state = State::Permitted;
                        continue;
                    };
                    let now = Instant::now();
                    // `Limiter.Wait` without a deadline: reserve the token, in debt if need be.
                    let delay = lock(bucket).delay(now);
                    if delay.is_zero() {
                        self.state = State::Permitted;
                    } else {
                        // The reservation is already taken, so the wait is known now and exact.
                        self.stats.record_wait(delay);
                        self.state = State::Waiting(Box::pin(tokio::time::sleep_until(now + delay)));
                    }
                }
                State::Waiting(sleep) => {
                    ready!(sleep.as_mut().poll(cx));
                    self.state = State::Permitted;
                }
                // The token stays held while the inner service is not ready, so it is not reserved twice.
                State::Permitted => return self.inner.poll_ready(cx),
            }
        }
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        assert!(matches!(self.state, State::Permitted), "Throttle::call without a successful poll_ready");
        self.state = State::Idle;
        if is_watch(&request) {
            // client-go never rate limits watches: hand the token back for the next request.
            if let Some(bucket) = &self.bucket {
                lock(bucket).refund(Instant::now());
            }
            self.stats.0.watches.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.0.requests.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.call(request)
    }
}

/// Whether `request` starts a watch (`?watch=true`, or `watch=1` which the apiserver also accepts).
fn is_watch<B>(request: &http::Request<B>) -> bool {
    request.uri().query().is_some_and(|query| query.split('&').any(|pair| pair == "watch=true" || pair == "watch=1"))
}

/// Locks `bucket`, ignoring poisoning: the bucket is a few floats that no panic can leave half-updated.
fn lock(bucket: &Mutex<TokenBucket<Instant>>) -> std::sync::MutexGuard<'_, TokenBucket<Instant>> {
    bucket.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl RequestStats ===

/// Live counters of a throttled client, for metrics and benchmark reports. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RequestStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    watches: AtomicU64,
    throttled: AtomicU64,
    wait_nanos: AtomicU64,
    /// When the last extra-long wait was logged at info level, for client-go's log throttling.
    last_info_log: Mutex<Option<Instant>>,
}

/// A point-in-time copy of [`RequestStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Non-watch requests passed to the inner service (each took one token).
    pub requests: u64,
    /// Watch requests passed to the inner service (they take no token).
    pub watches: u64,
    /// Requests (of either kind) that had to wait for a token.
    pub throttled: u64,
    /// Total time requests spent waiting for tokens.
    pub wait: Duration,
}

impl RequestStats {
    /// The counters as they are now.
    #[must_use]
    pub fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            requests: self.0.requests.load(Ordering::Relaxed),
            watches: self.0.watches.load(Ordering::Relaxed),
            throttled: self.0.throttled.load(Ordering::Relaxed),
            wait: Duration::from_nanos(self.0.wait_nanos.load(Ordering::Relaxed)),
        }
    }

    fn record_wait(&self, delay: Duration) {
        self.0.throttled.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.0.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
        if delay > EXTRA_LONG_THROTTLE_LATENCY {
            let mut last = self.0.last_info_log.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if last.is_none_or(|at| now.duration_since(at) >= EXTRA_LONG_THROTTLE_LOG_INTERVAL) {
                *last = Some(now);
                tracing::info!(?delay, "Waited before sending request: client-side throttling");
                return;
            }
        }
        if delay > LONG_THROTTLE_LATENCY {
            tracing::debug!(?delay, "Waited before sending request: client-side throttling");
        }
    }
}

// === tests ===

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;
    use kube::client::Body;
    use tower::ServiceExt as _;
    use tower_test::mock;

    use super::*;

    type Req = http::Request<Body>;
    type Resp = http::Response<Body>;

    /// A throttled echo service: every request is answered at once with an empty 200.
    fn throttled_echo(
        qps: f32,
        burst: u32,
    ) -> (Throttle<impl Service<Req, Response = Resp, Error = std::convert::Infallible>>, RequestStats) {
        let layer = ThrottleLayer::new(qps, burst);
        let stats = layer.stats();
        let echo = tower::service_fn(|_req: Req| async { Ok(Resp::new(Body::empty())) });
        (layer.layer(echo), stats)
    }

    fn get(path: &str) -> Req {
        http::Request::get(path).body(Body::empty()).unwrap()
    }

    /// Sends `n` GETs one after another and returns the instant each one reached the inner service.
    async fn send_times<S>(service: &mut S, n: usize) -> Vec<Duration>
    where
        S: Service<Req, Response = Resp, Error = std::convert::Infallible>,
    {
        let start = Instant::now();
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            service.ready().await.unwrap();
            times.push(start.elapsed());
            service.call(get("/api/v1/pods")).await.unwrap();
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn burst_passes_immediately_then_requests_are_spaced_one_over_qps_apart() {
        let (mut service, stats) = throttled_echo(10.0, 3);
        let times = send_times(&mut service, 6).await;
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        // Three tokens at t=0, then one every 100 ms.
        assert_eq!(ms, [0, 0, 0, 100, 200, 300]);
        let counts = stats.snapshot();
        assert_eq!(counts.requests, 6);
        assert_eq!(counts.throttled, 3);
        assert_eq!(counts.wait.as_millis(), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_the_bucket_up_to_burst_and_no_further() {
        let (mut service, _stats) = throttled_echo(10.0, 3);
        send_times(&mut service, 3).await;
        // Ten seconds would refill 100 tokens, but the bucket holds only 3.
        tokio::time::advance(Duration::from_secs(10)).await;
        let ms: Vec<u128> = send_times(&mut service, 5).await.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 0, 100, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partially_refilled_bucket_shortens_the_next_wait() {
        let (mut service, _stats) = throttled_echo(10.0, 1);
        send_times(&mut service, 1).await;
        // 40 ms refill 0.4 tokens; the next token is due 60 ms later.
        tokio::time::advance(Duration::from_millis(40)).await;
        let ms: Vec<u128> = send_times(&mut service, 1).await.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [60]);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits_but_still_counts() {
        for (qps, burst) in [(0.0, 0), (-1.0, 5), (f32::NAN, 1), (f32::INFINITY, 0)] {
            let (mut service, stats) = throttled_echo(qps, burst);
            let times = send_times(&mut service, 100).await;
            assert!(times.iter().all(Duration::is_zero), "qps {qps} waited");
            assert_eq!(stats.snapshot(), RequestCounts { requests: 100, ..RequestCounts::default() });
        }
    }

    #[tokio::test(start_paused = true)]
    async fn zero_burst_with_positive_qps_behaves_as_burst_one() {
        let (mut service, _stats) = throttled_echo(2.0, 0);
        let ms: Vec<u128> = send_times(&mut service, 3).await.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 500, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn poll_ready_is_pending_while_waiting_for_a_token() {
        let (mut service, _stats) = throttled_echo(1.0, 1);
        service.ready().await.unwrap();
        drop(service.call(get("/a")));
        // The bucket is empty: not ready now, nor after 999 ms, but ready at 1 s.
        assert!(futures::poll!(service.ready()).is_pending());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(service.ready().now_or_never().is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(service.ready().now_or_never().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn watches_take_no_token() {
        let (mut service, stats) = throttled_echo(1.0, 2);
        let start = Instant::now();
        for _ in 0..5 {
            service.ready().await.unwrap();
            service.call(get("/api/v1/pods?&watch=true&timeoutSeconds=290")).await.unwrap();
        }
        // Five watches later the bucket still holds both tokens.
        for _ in 0..2 {
            service.ready().await.unwrap();
            service.call(get("/api/v1/pods")).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(stats.snapshot(), RequestCounts { requests: 2, watches: 5, ..RequestCounts::default() });
    }

    #[test]
    fn watch_detection_matches_whole_query_pairs() {
        assert!(is_watch(&get("/api/v1/pods?&watch=true&timeoutSeconds=290")));
        assert!(is_watch(&get("/api/v1/pods?watch=1")));
        assert!(!is_watch(&get("/api/v1/pods?watch=false")));
        assert!(!is_watch(&get("/api/v1/pods?labelSelector=watch%3Dtrue")));
        assert!(!is_watch(&get("/api/v1/namespaces/watch/pods")));
    }

    #[test]
    #[should_panic(expected = "without a successful poll_ready")]
    fn call_without_poll_ready_panics() {
        let (mut service, _stats) = throttled_echo(1.0, 1);
        drop(service.call(get("/a")));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_reach_the_inner_service_in_order_through_a_kube_client() {
        let (mock_service, mut handle) = mock::pair::<Req, Resp>();
        let layer = ThrottleLayer::new(1.0, 1);
        let stats = layer.stats();
        let client = kube::Client::new(layer.layer(mock_service), "default");
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client, "default");

        let start = Instant::now();
        let requests = tokio::spawn(async move {
            // Issued concurrently, yet served one token apart and in order.
            let (a, b) = tokio::join!(api.get_opt("a"), async {
                tokio::task::yield_now().await;
                api.get_opt("b").await
            });
            (a.unwrap(), b.unwrap())
        });
        for (name, at) in [("a", 0), ("b", 1000)] {
            let (request, send) = handle.next_request().await.expect("request reaches the mock");
            assert_eq!(request.uri().path(), format!("/api/v1/namespaces/default/pods/{name}"));
            assert_eq!(start.elapsed().as_millis(), at);
            send.send_response(
                http::Response::builder()
                    .status(404)
                    .body(Body::from(
                        br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#
                            .to_vec(),
                    ))
                    .unwrap(),
            );
        }
        assert_eq!(requests.await.unwrap(), (None, None));
        assert_eq!(stats.snapshot().requests, 2);
        assert_eq!(stats.snapshot().wait, Duration::from_secs(1));
    }
}
