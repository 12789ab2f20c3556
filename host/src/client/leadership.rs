//! Writes only while leading: a tower layer for the client that writes pods, statuses and events.
//!
//! Aborting the workers when the lease is lost (`run::lead`) is not enough on its own: a sync's
//! status update waiting for a connection, or an event the recorder is still retrying, would
//! reach the API server after a partition heals, long after a successor started writing (the
//! split-brain scenario of issue 12 saw exactly that in the audit log). kube-controller-manager
//! exits when it loses its lease, which cancels everything in flight; a host replica stands by
//! instead, so its write client refuses every mutating request while it does not lead, and
//! cancels one in flight the moment leadership ends. A request whose bytes already left may
//! still land: the gap between the renew deadline and the lease duration is for those.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::sync::watch;
use tower::{BoxError, Layer, Service};

/// The error of a write refused or cancelled because this replica does not lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotLeading;

impl fmt::Display for NotLeading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not writing: this replica does not hold the leader lease")
    }
}

impl std::error::Error for NotLeading {}

/// Makes [`LeaderOnly`] services that write only while `leading` is true.
#[derive(Clone, Debug)]
pub struct LeaderOnlyLayer {
    leading: watch::Receiver<bool>,
}

impl LeaderOnlyLayer {
    /// Writes pass while `leading` holds true.
    #[must_use]
    pub fn new(leading: watch::Receiver<bool>) -> Self {
        Self { leading }
    }
}

impl<S> Layer<S> for LeaderOnlyLayer {
    type Service = LeaderOnly<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LeaderOnly { inner, leading: self.leading.clone() }
    }
}

/// The [`Service`] made by [`LeaderOnlyLayer`]: reads pass, writes need leadership throughout.
#[derive(Clone, Debug)]
pub struct LeaderOnly<S> {
    inner: S,
    leading: watch::Receiver<bool>,
}

/// Whether a request changes something (watches, lists and gets do not).
fn is_write(method: &http::Method) -> bool {
    !matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
}

impl<S, B> Service<http::Request<B>> for LeaderOnly<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !is_write(request.method()) {
            let response = self.inner.call(request);
            return Box::pin(async move { response.await.map_err(Into::into) });
        }
        if !*self.leading.borrow() {
            tracing::debug!(method = %request.method(), uri = %request.uri(), "write refused: not leading");
            return Box::pin(std::future::ready(Err(NotLeading.into())));
        }
        let response = self.inner.call(request);
        let mut leading = self.leading.clone();
        Box::pin(async move {
            tokio::select! {
                result = response => result.map_err(Into::into),
                // A closed channel means leadership can no longer change: wait for the answer.
                () = async {
                    if leading.wait_for(|l| !*l).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => Err(NotLeading.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::ServiceExt as _;

    use super::*;

    /// Answers every request after `delay` with its method.
    fn slow(
        delay: Duration,
    ) -> impl Service<http::Request<()>, Response = String, Error = BoxError, Future: Send> + Clone {
        tower::service_fn(move |request: http::Request<()>| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, BoxError>(request.method().to_string())
        })
    }

    fn request(method: http::Method) -> http::Request<()> {
        http::Request::builder().method(method).uri("/api/v1/pods").body(()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn writes_pass_only_while_leading_and_reads_always() {
        let (tx, rx) = watch::channel(true);
        let service = LeaderOnlyLayer::new(rx).layer(slow(Duration::ZERO));
        assert_eq!(service.clone().oneshot(request(http::Method::POST)).await.unwrap(), "POST");
        tx.send_replace(false);
        let refused = service.clone().oneshot(request(http::Method::PATCH)).await.unwrap_err();
        assert!(refused.downcast_ref::<NotLeading>().is_some(), "{refused}");
        assert_eq!(service.oneshot(request(http::Method::GET)).await.unwrap(), "GET");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_in_flight_is_cancelled_when_leadership_ends_and_a_read_is_not() {
        let (tx, rx) = watch::channel(true);
        let service = LeaderOnlyLayer::new(rx).layer(slow(Duration::from_secs(10)));
        let write = tokio::spawn(service.clone().oneshot(request(http::Method::PUT)));
        let read = tokio::spawn(service.oneshot(request(http::Method::GET)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send_replace(false);
        let cancelled = write.await.unwrap().unwrap_err();
        assert!(cancelled.downcast_ref::<NotLeading>().is_some(), "{cancelled}");
        assert_eq!(read.await.unwrap().unwrap(), "GET");
    }

    #[tokio::test(start_paused = true)]
    async fn without_leader_election_the_closed_channel_lets_writes_finish() {
        let (tx, rx) = watch::channel(true);
        drop(tx);
        let service = LeaderOnlyLayer::new(rx).layer(slow(Duration::from_secs(5)));
        assert_eq!(service.oneshot(request(http::Method::DELETE)).await.unwrap(), "DELETE");
    }
}
