//! The controller's side of recording: [`EventRecorder`] builds an Event and queues it without blocking.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error};

use super::{
    Clock, EventType,
    make::{make_event, str_of},
};

// === impl EventRecorder ===

/// The controller's handle for emitting Events (`record.EventRecorder`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventRecorder {
    pub(super) sender: mpsc::Sender<Event>,
    pub(super) component: Arc<str>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) counters: Arc<Counters>,
    /// Dropped with the last recorder, which tells the writer to stop retrying (`Shutdown`).
    pub(super) _shutdown: Arc<watch::Sender<()>>,
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

/// The live counters behind [`EventCounts`], shared by the recorders and the writer.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) created: AtomicU64,
    pub(super) patched: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) failed: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> EventCounts {
        EventCounts {
            created: self.created.load(Ordering::Relaxed),
            patched: self.patched.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}
