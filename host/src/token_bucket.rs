//! The one token bucket behind every rate limit here: golang.org/x/time/rate's `Limiter`, on any clock.
//!
//! Three client-go pieces build on `rate.NewLimiter(limit, burst)`, and so do their ports:
//!
//! | user | Go call | method here |
//! | --- | --- | --- |
//! | work queue retries ([`crate::queue`]) | `BucketRateLimiter.When`: `Reserve().Delay()` | [`TokenBucket::delay`] |
//! | API client QPS ([`crate::client`]) | `tokenBucketRateLimiter.Wait`: `Limiter.Wait(ctx)` | [`TokenBucket::delay`] |
//! | Event spam filter ([`crate::events`]) | `TryAccept`: `AllowN(now, 1)` | [`TokenBucket::allow`] |
//!
//! The arithmetic is x/time/rate v0.15's (the version client-go 0.37 pins), one token at a time:
//!
//! - the bucket starts full (`NewLimiter` sets `tokens = burst`);
//! - `advance` refills `limit` tokens per second of elapsed time, capped at `burst`; a clock that
//!   went backwards counts as no time passing, and a limit of 0 or less refills nothing;
//! - `reserveN` takes the token even when it is not there yet: the bucket goes into debt, and the
//!   debt is what makes the next caller wait longer, so waiters are served in arrival order. It
//!   refuses (changing nothing) when `burst` is 0 or the wait would exceed the caller's maximum;
//! - `durationFromTokens` truncates to whole nanoseconds, and answers [`INF_DURATION`] for a limit
//!   of 0 or less, or for a wait too long for an `i64` of nanoseconds;
//! - a limit of [`INF`] lets everything through at once, whatever the burst.
//!
//! The bucket takes its clock readings as arguments, so one type serves tokio's paused-time
//! [`tokio::time::Instant`] (queue and client) and jiff's wall-clock [`Timestamp`] (Events): see
//! [`Moment`].

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Go's `rate.InfDuration`: the longest `time.Duration`, standing for "never".
pub const INF_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Go's `rate.Inf` (`math.MaxFloat64`): a limit that never makes anyone wait.
pub const INF: f64 = f64::MAX;

/// A reading of the clock a [`TokenBucket`] runs on.
pub trait Moment: Copy {
    /// Time from `earlier` to `self`; zero if `earlier` is later (the clock went backwards).
    fn since(self, earlier: Self) -> Duration;
}

impl Moment for tokio::time::Instant {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Moment for Timestamp {
    fn since(self, earlier: Self) -> Duration {
        // Wall clocks do step backwards (NTP, a test's FakeClock): that is no time at all.
        Duration::try_from(self.duration_since(earlier).max(SignedDuration::ZERO)).unwrap_or(Duration::ZERO)
    }
}

/// x/time/rate's `Limiter` for one token per call: `limit` tokens per second, at most `burst` saved.
///
/// Not synchronised: each user keeps it under the lock it already holds.
#[derive(Clone, Debug)]
pub struct TokenBucket<T> {
    /// Refill rate in tokens per second (`rate.Limit`); client-go widens its float32 qps to this.
    limit: f64,
    /// Most tokens the bucket holds, and so the most callers let through at one instant.
    burst: u32,
    /// Tokens available at `last`; negative while callers hold tokens that have not refilled yet.
    tokens: f64,
    /// When `tokens` was last brought up to date; `None` before the first call.
    last: Option<T>,
}

impl<T: Moment> TokenBucket<T> {
    /// `rate.NewLimiter(limit, burst)`: a full bucket.
    #[must_use]
    pub fn new(limit: f64, burst: u32) -> Self {
        Self { limit, burst, tokens: f64::from(burst), last: None }
    }

    /// `Limiter.reserveN(now, 1, max_wait)`: takes one token and returns how long the caller must
    /// wait for it, or `None` (leaving the bucket as it was) when `burst` is 0 or that wait would be
    /// longer than `max_wait`.
    pub fn reserve(&mut self, now: T, max_wait: Duration) -> Option<Duration> {
        if self.limit == INF {
            return Some(Duration::ZERO);
        }
        let tokens = self.advance(now) - 1.0;
        let wait = if tokens < 0.0 { duration_from_tokens(self.limit, -tokens) } else { Duration::ZERO };
        if self.burst < 1 || wait > max_wait {
            return None;
        }
        (self.tokens, self.last) = (tokens, Some(now));
        Some(wait)
    }

    /// `Limiter.Reserve().Delay()`: takes one token, in debt if need be, and returns the wait for
    /// it; [`INF_DURATION`] when the bucket can never hold a token (`burst` 0).
    ///
    /// This is also `Limiter.Wait` without a deadline (client-go's REST client), less Wait's error
    /// for a request larger than `burst`, which a bucket of at least one token never returns.
    pub fn delay(&mut self, now: T) -> Duration {
        self.reserve(now, INF_DURATION).unwrap_or(INF_DURATION)
    }

    /// `Limiter.AllowN(now, 1)`: takes a token only if one is there now; never goes into debt.
    pub fn allow(&mut self, now: T) -> bool {
        self.reserve(now, Duration::ZERO).is_some()
    }

    /// Gives back one token, up to `burst`, for a call that turned out to be exempt after it took one.
    ///
    /// Not in x/time/rate, whose `Reservation.CancelAt` only restores tokens of reservations not yet
    /// due: the API client has to take a token before it can see that a request is a watch, which
    /// client-go would never have throttled at all (`Request.Watch`).
    pub fn refund(&mut self, now: T) {
        if self.limit == INF {
            return;
        }
        let tokens = self.advance(now) + 1.0;
        self.tokens = self.cap(tokens);
        self.last = Some(now);
    }

    /// `Limiter.advance`: the tokens at `now`, refilled since `last` and capped at `burst`.
    fn advance(&self, now: T) -> f64 {
        // Go's first `last` is the zero time, so its elapsed time saturates at the longest Duration.
        let elapsed = self.last.map_or(INF_DURATION, |last| now.since(last)).min(INF_DURATION);
        self.cap(self.tokens + tokens_from_duration(self.limit, elapsed))
    }

    fn cap(&self, tokens: f64) -> f64 {
        // A comparison rather than `f64::min`, so that a NaN (an infinite limit times zero elapsed
        // time) stays NaN, as it does in Go.
        let burst = f64::from(self.burst);
        if tokens > burst { burst } else { tokens }
    }
}

/// `Limit.durationFromTokens`: how long `limit` tokens per second take to refill `tokens`,
/// truncated to whole nanoseconds as Go's float-to-`Duration` conversion is.
#[must_use]
pub fn duration_from_tokens(limit: f64, tokens: f64) -> Duration {
    if limit <= 0.0 {
        return INF_DURATION;
    }
    let nanos = tokens / limit * 1e9;
    if nanos > INF_DURATION.as_nanos() as f64 {
        return INF_DURATION;
    }
    // `as` truncates toward zero (and maps NaN to 0): Go's `time.Duration(float64)`.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Duration::from_nanos(nanos as u64)
}

/// `Limit.tokensFromDuration`: the tokens `limit` per second add in `elapsed`; none for a limit of 0
/// or less.
#[must_use]
pub fn tokens_from_duration(limit: f64, elapsed: Duration) -> f64 {
    if limit <= 0.0 { 0.0 } else { elapsed.as_secs_f64() * limit }
}

// === tests ===

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_new_bucket_is_full_and_then_runs_into_debt_one_token_per_call() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3);
        let waits: Vec<_> = (0..6).map(|_| bucket.delay(t0)).collect();
        assert_eq!(waits, [Duration::ZERO, Duration::ZERO, Duration::ZERO, 100 * MS, 200 * MS, 300 * MS]);
        // Half a second refills five tokens: the debt of three is repaid and two are left over.
        let later = t0 + 500 * MS;
        let waits: Vec<_> = (0..3).map(|_| bucket.delay(later)).collect();
        assert_eq!(waits, [Duration::ZERO, Duration::ZERO, 100 * MS]);
    }

    #[test]
    fn idle_time_refills_up_to_burst_and_no_further() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 2);
        assert!(bucket.allow(t0) && bucket.allow(t0) && !bucket.allow(t0));
        let later = t0 + Duration::from_secs(3600);
        assert!(bucket.allow(later) && bucket.allow(later));
        assert!(!bucket.allow(later), "an hour is worth 36000 tokens, but only 2 fit");
    }

    #[test]
    fn allow_refuses_without_changing_the_bucket() {
        let mut bucket = TokenBucket::new(1.0, 1);
        assert!(bucket.allow(at(0)));
        for _ in 0..5 {
            assert!(!bucket.allow(at(0)));
        }
        // Refusals took nothing: exactly one second later the next token is there.
        assert!(bucket.allow(at(1)));
    }

    #[test]
    fn reserve_honours_the_maximum_wait() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 1);
        assert_eq!(bucket.reserve(t0, Duration::ZERO), Some(Duration::ZERO));
        assert_eq!(bucket.reserve(t0, 499 * MS), None);
        assert_eq!(bucket.reserve(t0, 500 * MS), Some(500 * MS));
        assert_eq!(bucket.reserve(t0, INF_DURATION), Some(Duration::from_secs(1)));
    }

    #[test]
    fn waits_are_truncated_to_whole_nanoseconds() {
        // 1/3 s is 333_333_333.33 ns: Go's conversion drops the fraction.
        assert_eq!(duration_from_tokens(3.0, 1.0), Duration::from_nanos(333_333_333));
        // A debt worth less than a nanosecond is no wait at all, so AllowN lets it through.
        let mut bucket = TokenBucket::new(1.0, 1);
        assert!(bucket.allow(at(0)));
        bucket.tokens = 1.0 - 0.5e-9;
        assert!(bucket.allow(at(0)));
    }

    #[test]
    fn float32_rates_are_widened_as_go_widens_them() {
        // client-go's spam filter: float32(1/300) is a hair above 1/300, so 300 s refill a token.
        let limit = f64::from(1f32 / 300.);
        let mut bucket = TokenBucket::new(limit, 1);
        assert!(bucket.allow(at(0)));
        assert!(!bucket.allow(at(299)));
        assert!(bucket.allow(at(300)));
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let mut bucket = TokenBucket::new(1.0, 1);
        assert!(bucket.allow(at(100)));
        assert!(!bucket.allow(at(50)), "stepping back is no time passing");
        assert!(bucket.allow(at(101)));
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 1);
        assert_eq!(bucket.delay(t0 + Duration::from_secs(10)), Duration::ZERO);
        assert_eq!(bucket.delay(t0), Duration::from_secs(1));
    }

    #[test]
    fn a_zero_or_negative_limit_spends_the_burst_then_never_refills() {
        for limit in [0.0, -1.0] {
            let mut bucket = TokenBucket::new(limit, 2);
            assert!(bucket.allow(at(0)) && bucket.allow(at(0)), "limit {limit}");
            assert!(!bucket.allow(at(1_000_000)), "limit {limit}");
            assert_eq!(bucket.delay(at(2_000_000)), INF_DURATION, "limit {limit}");
        }
    }

    #[test]
    fn a_zero_burst_lets_nothing_through_unless_the_limit_is_inf() {
        let mut bucket = TokenBucket::new(10.0, 0);
        assert!(!bucket.allow(at(0)));
        assert_eq!(bucket.delay(at(1)), INF_DURATION);
        let mut unlimited = TokenBucket::new(INF, 0);
        assert!((0..1000).all(|_| unlimited.allow(at(0))));
        assert_eq!(unlimited.delay(at(0)), Duration::ZERO);
    }

    #[test]
    fn waits_too_long_for_a_go_duration_are_inf_duration() {
        assert_eq!(duration_from_tokens(1e-12, 1.0), INF_DURATION);
        assert_eq!(duration_from_tokens(0.0, 1.0), INF_DURATION);
        assert_eq!(tokens_from_duration(-5.0, Duration::from_secs(10)), 0.0);
        assert_eq!(tokens_from_duration(2.0, Duration::from_millis(1500)), 3.0);
    }

    #[test]
    fn a_refund_returns_one_token_up_to_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1.0, 2);
        assert_eq!(bucket.delay(t0), Duration::ZERO);
        bucket.refund(t0);
        bucket.refund(t0);
        assert_eq!([bucket.delay(t0), bucket.delay(t0), bucket.delay(t0)], [Duration::ZERO, Duration::ZERO, 1000 * MS]);
        // A refund pays back debt too: the next caller waits one token less.
        bucket.refund(t0);
        assert_eq!(bucket.delay(t0), 1000 * MS);
    }
}
