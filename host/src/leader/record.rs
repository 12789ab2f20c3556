//! The pure core of an election: the Lease record, when we saw it change, and whether to wait, renew or take it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

/// The leader-election fields of a Lease's spec (client-go's `LeaderElectionRecord`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LeaseRecord {
    /// Empty when nobody holds the lease (never held, or released).
    pub(super) holder_identity: String,
    pub(super) lease_duration_seconds: i32,
    pub(super) acquire_time: Option<Timestamp>,
    pub(super) renew_time: Option<Timestamp>,
    pub(super) lease_transitions: i32,
}

impl LeaseRecord {
    /// The record a candidate creates a missing Lease with.
    pub(super) fn initial(identity: &str, lease_duration_seconds: i32, now: Timestamp) -> Self {
        Self {
            holder_identity: identity.to_string(),
            lease_duration_seconds,
            acquire_time: Some(now),
            renew_time: Some(now),
            lease_transitions: 0,
        }
    }

    /// client-go's `tryRelease` record: nobody holds it, it expires after one second for
    /// candidates that still wait on a duration, and the transition count is kept.
    pub(super) fn released(&self, now: Timestamp) -> Self {
        Self {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(now),
            renew_time: Some(now),
            lease_transitions: self.lease_transitions,
        }
    }

    /// The record with which `identity`, already the holder, renews: the acquire time and the
    /// transition count stay, the renew time moves to `now`, and the duration is ours.
    pub(super) fn renewal(&self, identity: &str, lease_duration_seconds: i32, now: Timestamp) -> Self {
        Self {
            holder_identity: identity.to_string(),
            lease_duration_seconds,
            acquire_time: self.acquire_time,
            renew_time: Some(now),
            lease_transitions: self.lease_transitions,
        }
    }

    pub(super) fn from_spec(spec: Option<&LeaseSpec>) -> Self {
        let Some(spec) = spec else { return Self::default() };
        Self {
            holder_identity: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            lease_transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    pub(super) fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder_identity.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.lease_transitions),
            ..Default::default()
        }
    }
}

/// A record together with the instant, on our monotonic clock, at which we first saw it in its
/// current form (client-go's `observedRecord` and `observedTime`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Observed {
    pub(super) record: LeaseRecord,
    pub(super) at: Instant,
}

impl Observed {
    /// The observation after reading `record` at `now`: the observed time only moves when the
    /// record differs from the previous one. A live holder changes `renewTime` at every renewal,
    /// so "unchanged for `leaseDurationSeconds` of our time" means the holder stopped renewing,
    /// whatever its clock says the time is.
    pub(super) fn update(previous: Option<Observed>, record: LeaseRecord, now: Instant) -> Observed {
        match previous {
            Some(previous) if previous.record == record => previous,
            _ => Observed { record, at: now },
        }
    }

    /// client-go's `isLeaseValid`: `observedTime + leaseDurationSeconds` (the *record's* duration,
    /// as its holder configured it) is still after `now`.
    pub(super) fn is_valid_at(&self, now: Instant) -> bool {
        let duration = Duration::from_secs(u64::try_from(self.record.lease_duration_seconds).unwrap_or(0));
        self.at + duration > now
    }
}

/// What to do after reading the record (steps 3 and 4 of client-go's `tryAcquireOrRenew`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Someone else holds an unexpired lease: try again later.
    Wait {
        /// The current holder.
        holder: String,
    },
    /// We hold it: write this record (acquire time and transitions kept, renew time now).
    Renew(LeaseRecord),
    /// It is free (empty holder) or expired: write this record (transitions + 1, acquired now).
    Take(LeaseRecord),
}

/// Decides, from the observation just made, whether `identity` waits, renews or takes the lease.
/// `now` is our monotonic clock (for expiry), `wall_now` the time written into the record.
pub(super) fn decide(
    observed: &Observed,
    identity: &str,
    lease_duration_seconds: i32,
    now: Instant,
    wall_now: Timestamp,
) -> Decision {
    let current = &observed.record;
    if current.holder_identity == identity {
        // Even past its expiry our own lease is ours to renew: nobody else wrote in between, or
        // the record would name them.
        return Decision::Renew(current.renewal(identity, lease_duration_seconds, wall_now));
    }
    // An empty holder is a released lease, free at once (client-go since Kubernetes 1.14).
    if !current.holder_identity.is_empty() && observed.is_valid_at(now) {
        return Decision::Wait { holder: current.holder_identity.clone() };
    }
    Decision::Take(LeaseRecord {
        holder_identity: identity.to_string(),
        lease_duration_seconds,
        acquire_time: Some(wall_now),
        renew_time: Some(wall_now),
        lease_transitions: current.lease_transitions.saturating_add(1),
    })
}

// === tests ===

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";
    const OTHER: &str = "other";

    fn wall(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn record(holder: &str, duration: i32, renewed: i64, transitions: i32) -> LeaseRecord {
        LeaseRecord {
            holder_identity: holder.to_string(),
            lease_duration_seconds: duration,
            acquire_time: Some(wall(1_000)),
            renew_time: Some(wall(renewed)),
            lease_transitions: transitions,
        }
    }

    fn observed(record: LeaseRecord, at: Instant) -> Observed {
        Observed { record, at }
    }

    #[test]
    fn a_foreign_lease_is_valid_until_its_duration_has_passed_since_we_saw_it_change() {
        let t0 = Instant::now();
        let seen = observed(record(OTHER, 15, 2_000, 3), t0);
        let decide_at = |elapsed: u64| decide(&seen, ME, 15, t0 + Duration::from_secs(elapsed), wall(9_999));
        assert_eq!(decide_at(0), Decision::Wait { holder: OTHER.into() });
        assert_eq!(decide_at(14), Decision::Wait { holder: OTHER.into() });
        // client-go: valid while observedTime + duration is strictly After(now).
        let Decision::Take(taken) = decide_at(15) else { panic!("expired at exactly the lease duration") };
        assert_eq!(
            taken,
            LeaseRecord {
                holder_identity: ME.into(),
                lease_duration_seconds: 15,
                acquire_time: Some(wall(9_999)),
                renew_time: Some(wall(9_999)),
                lease_transitions: 4,
            }
        );
    }

    #[test]
    fn expiry_uses_the_duration_in_the_record_not_ours() {
        let t0 = Instant::now();
        let seen = observed(record(OTHER, 60, 2_000, 0), t0);
        assert_eq!(
            decide(&seen, ME, 15, t0 + Duration::from_secs(30), wall(0)),
            Decision::Wait { holder: OTHER.into() }
        );
        assert!(matches!(decide(&seen, ME, 15, t0 + Duration::from_secs(60), wall(0)), Decision::Take(_)));
    }

    #[test]
    fn wall_clock_times_in_the_record_do_not_matter_only_when_we_saw_it_change() {
        // A holder whose clock is hours behind (renewTime long past) is still alive to us as long
        // as the record keeps changing.
        let t0 = Instant::now();
        let mut seen = observed(record(OTHER, 15, 1, 0), t0);
        for step in 1..10u64 {
            let now = t0 + Duration::from_secs(10 * step);
            seen = Observed::update(Some(seen), record(OTHER, 15, 1 + step as i64, 0), now);
            assert_eq!(seen.at, now);
            assert_eq!(decide(&seen, ME, 15, now, wall(1_000_000)), Decision::Wait { holder: OTHER.into() });
        }
    }

    #[test]
    fn an_unchanged_record_keeps_its_observed_time() {
        let t0 = Instant::now();
        let first = Observed::update(None, record(OTHER, 15, 5, 0), t0);
        assert_eq!(first.at, t0);
        let later = t0 + Duration::from_secs(16);
        let again = Observed::update(Some(first), record(OTHER, 15, 5, 0), later);
        assert_eq!(again.at, t0, "re-reading the same record must not extend the lease");
        assert!(matches!(decide(&again, ME, 15, later, wall(0)), Decision::Take(_)));
        let changed = Observed::update(Some(again), record(OTHER, 15, 6, 0), later);
        assert_eq!(changed.at, later);
    }

    #[test]
    fn our_own_lease_is_renewed_keeping_acquire_time_and_transitions() {
        let t0 = Instant::now();
        let seen = observed(record(ME, 15, 2_000, 7), t0);
        let expected = LeaseRecord {
            holder_identity: ME.into(),
            lease_duration_seconds: 15,
            acquire_time: Some(wall(1_000)),
            renew_time: Some(wall(3_000)),
            lease_transitions: 7,
        };
        assert_eq!(decide(&seen, ME, 15, t0, wall(3_000)), Decision::Renew(expected.clone()));
        // Even once expired on our clock: the record still names us, so nobody took it.
        assert_eq!(decide(&seen, ME, 15, t0 + Duration::from_secs(100), wall(3_000)), Decision::Renew(expected));
    }

    #[test]
    fn a_released_lease_is_free_at_once_and_counts_a_transition() {
        let t0 = Instant::now();
        let released = record(OTHER, 15, 2_000, 2).released(wall(2_001));
        assert_eq!(released.holder_identity, "");
        assert_eq!(released.lease_duration_seconds, 1);
        assert_eq!(released.lease_transitions, 2, "release keeps the transition count");
        assert_eq!(released.acquire_time, Some(wall(2_001)));
        let seen = observed(released, t0);
        let Decision::Take(taken) = decide(&seen, ME, 15, t0, wall(2_002)) else { panic!("released lease not taken") };
        assert_eq!(taken.lease_transitions, 3);
        assert_eq!(taken.acquire_time, Some(wall(2_002)));
        // An empty Lease (no spec fields) is free too.
        let empty = observed(LeaseRecord::from_spec(None), t0);
        let Decision::Take(taken) = decide(&empty, ME, 15, t0, wall(5)) else { panic!("empty lease not taken") };
        assert_eq!(taken.lease_transitions, 1);
    }

    #[test]
    fn a_created_lease_starts_with_zero_transitions_and_round_trips_through_the_spec() {
        let initial = LeaseRecord::initial(ME, 15, wall(42));
        assert_eq!(initial, LeaseRecord { acquire_time: Some(wall(42)), ..record(ME, 15, 42, 0) });
        assert_eq!(LeaseRecord::from_spec(Some(&initial.to_spec())), initial);
        let spec = initial.to_spec();
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.strategy, None);
    }
}
