//! The background task that correlates queued Events and writes them to the apiserver (`recordToSink`).

use std::{fmt, sync::Arc, sync::atomic::Ordering, time::Duration};

use k8s_openapi::api::core::v1::Event;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, warn};

use super::{
    Clock,
    correlator::{Correlation, EventCorrelator},
    make::str_of,
    recorder::Counters,
};

// === impl EventWriter ===

/// The background task that correlates queued Events and writes them (`recordToSink`).
pub struct EventWriter {
    pub(super) receiver: mpsc::Receiver<Event>,
    pub(super) client: kube::Client,
    pub(super) correlator: EventCorrelator,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) counters: Arc<Counters>,
    pub(super) sleep_duration: Duration,
    pub(super) max_tries: u32,
    /// Closed once the last recorder is dropped.
    pub(super) shutdown: watch::Receiver<()>,
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

// === tests ===

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::Method;
    use kube::client::Body;
    use serde_json::json;
    use tokio::{task::JoinHandle, time::Instant};
    use tower_test::mock;

    use super::*;
    use crate::events::{
        EventCounts, EventRecorder, EventType, FakeClock, RecorderConfig, new_recorder,
        testkit::{event_at, rs_ref, t0},
    };

    type Req = http::Request<Body>;
    type Resp = http::Response<Body>;

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
