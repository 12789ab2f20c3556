//! Whether the API server is reachable, judged from the outcome of every request: any answer
//! (whatever its status) says it is, a transport failure (no connection, a timeout, a connection
//! dropped mid-response because its keep-alive ping went unanswered) says it is not, until the
//! next answer.
//!
//! `/readyz` reports not-ready while the newest outcome is a failure. The watchers keep retrying
//! with backoff (at most 30 s apart), so on an idle cluster too the first answer after a
//! partition heals turns readiness back.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;
use tower::BoxError;

/// The shared record; cheap to clone. Every client of one controller reports to the same one.
#[derive(Clone, Debug, Default)]
pub struct Reachability(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    /// Set by the first failure after an answer; cleared by the next answer.
    failing: Option<Failing>,
    /// Failures ever recorded (a counter for /metrics).
    failures: u64,
}

#[derive(Debug, Clone)]
struct Failing {
    since: Instant,
    last_error: String,
}

/// The API server did not answer the newest request (and has not answered since `since`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// How long the failures have lasted.
    pub for_: Duration,
    /// The newest failure.
    pub last_error: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "API server unreachable for {:.1?}: {}", self.for_, self.last_error)
    }
}

impl Reachability {
    /// The API server answered.
    pub fn answered(&self) {
        self.lock().failing = None;
    }

    /// A request or a response stream failed without an answer.
    pub fn failed(&self, error: &dyn fmt::Display) {
        let mut state = self.lock();
        state.failures += 1;
        let last_error = error.to_string();
        match &mut state.failing {
            Some(failing) => failing.last_error = last_error,
            None => state.failing = Some(Failing { since: Instant::now(), last_error }),
        }
    }

    /// `Ok` unless the newest outcome was a failure.
    pub fn check(&self) -> Result<(), Unreachable> {
        match &self.lock().failing {
            None => Ok(()),
            Some(f) => Err(Unreachable { for_: f.since.elapsed(), last_error: f.last_error.clone() }),
        }
    }

    /// Failures recorded since start.
    pub fn failures(&self) -> u64 {
        self.lock().failures
    }

    /// A `map_result` function for a connection stack: records the outcome of each request,
    /// and of each response body's frames, and boxes the body as kube's stack does.
    pub fn recorder<B>(
        &self,
    ) -> impl Fn(Result<http::Response<B>, BoxError>) -> Result<http::Response<Box<kube::client::DynBody>>, BoxError>
    + Clone
    + Send
    + 'static
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let reachability = self.clone();
        move |result| match result {
            Ok(response) => {
                reachability.answered();
                let reachability = reachability.clone();
                Ok(response.map(move |body| {
                    Box::new(http_body_util::BodyExt::map_err(body, move |e| {
                        let e: BoxError = e.into();
                        reachability.failed(&e);
                        e
                    })) as Box<kube::client::DynBody>
                }))
            }
            Err(e) => {
                reachability.failed(&e);
                Err(e)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Two plain fields, always consistent: a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_newest_outcome_decides_and_a_failure_streak_keeps_its_start() {
        let reach = Reachability::default();
        assert_eq!(reach.check(), Ok(()));
        reach.failed(&"connection refused");
        tokio::time::advance(Duration::from_secs(3)).await;
        reach.failed(&"keep-alive timed out");
        let down = reach.check().unwrap_err();
        assert_eq!(down.for_, Duration::from_secs(3));
        assert_eq!(down.last_error, "keep-alive timed out");
        assert_eq!(down.to_string(), "API server unreachable for 3.0s: keep-alive timed out");
        reach.answered();
        assert_eq!(reach.check(), Ok(()));
        assert_eq!(reach.failures(), 2);
    }

    #[tokio::test]
    async fn an_answer_of_any_status_counts_and_a_broken_body_does_not() {
        let reach = Reachability::default();
        let record = reach.recorder();
        reach.failed(&"earlier failure");
        // A 503 is an answer: the server is there.
        // Its stream then breaks, as when a dead connection is dropped.
        let frames = [Err::<http_body::Frame<Bytes>, BoxError>(BoxError::from("connection reset"))];
        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
        let response = record(Ok(http::Response::builder().status(503).body(body).unwrap())).unwrap();
        assert_eq!(reach.check(), Ok(()));
        let mut body = response.into_body();
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(reach.check().unwrap_err().last_error, "connection reset");
        // A request that never got an answer.
        assert!(record(Err(BoxError::from("refused"))).is_err());
        assert_eq!(reach.check().unwrap_err().last_error, "refused");
    }
}
