//! Reading and writing the Lease: one `tryAcquireOrRenew` round, and the release on stop.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{
    elector::LeaderElector,
    record::{Decision, LeaseRecord, Observed, decide},
};

impl LeaderElector {
    /// client-go's `tryAcquireOrRenew`: one optimistic read-modify-write of the Lease.
    pub(super) async fn try_acquire_or_renew(&mut self) -> Attempt {
        // 1. Fast path: a leader whose lease is still valid skips the GET.
        if self.renew_without_reading().await {
            return Attempt::Holding;
        }
        // 2. Read the Lease, or create it holding it ourselves.
        let lease = match bounded(self.request_timeout, self.leases.get_opt(&self.config.name)).await {
            Err(error) => return Attempt::Failed(error),
            Ok(None) => return self.create().await,
            Ok(Some(lease)) => lease,
        };
        // 3. Note when the record changed, then decide on our clock.
        match self.observe(lease) {
            Decision::Wait { holder } => Attempt::HeldBy(holder),
            // 4. Write it back, conditional on the resourceVersion we read.
            Decision::Renew(record) | Decision::Take(record) => match self.update(record).await {
                Ok(()) => Attempt::Holding,
                Err(error) => Attempt::Failed(error),
            },
        }
    }

    /// Step 1: while our own lease is valid on our clock, update the object we last wrote without
    /// reading it first. Returns whether that landed; any failure (a conflict, most likely) only
    /// sends the caller down the slow path, which reads the Lease.
    async fn renew_without_reading(&mut self) -> bool {
        let Some(observed) = &self.observed else { return false };
        if observed.record.holder_identity != self.config.identity || !observed.is_valid_at(Instant::now()) {
            return false;
        }
        let record =
            observed.record.renewal(&self.config.identity, self.config.lease_duration_seconds(), Timestamp::now());
        match self.update(record).await {
            Ok(()) => true,
            Err(error) => {
                let (identity, lease) = (&self.config.identity, self.config.describe());
                debug!(%identity, %lease, %error, "failed to update the lease optimistically, using the slow path");
                false
            }
        }
    }

    /// Step 2 when there is no Lease yet: create it with ourselves as the holder. Losing the race
    /// to another candidate's create fails with 409 AlreadyExists, and the next round reads theirs.
    async fn create(&mut self) -> Attempt {
        let record =
            LeaseRecord::initial(&self.config.identity, self.config.lease_duration_seconds(), Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..Default::default()
            },
            spec: Some(record.to_spec()),
        };
        match bounded(self.request_timeout, self.leases.create(&PostParams::default(), &lease)).await {
            Ok(created) => {
                self.remember_write(created);
                Attempt::Holding
            }
            Err(error) => Attempt::Failed(error),
        }
    }

    /// Step 3: remembers the Lease just read (its resourceVersion makes our next write
    /// conditional), restarts the observed time only if the record changed, and decides.
    fn observe(&mut self, lease: Lease) -> Decision {
        let now = Instant::now();
        let record = LeaseRecord::from_spec(lease.spec.as_ref());
        self.lease = Some(lease);
        let observed = Observed::update(self.observed.take(), record, now);
        let decision =
            decide(&observed, &self.config.identity, self.config.lease_duration_seconds(), now, Timestamp::now());
        self.set_observed(observed);
        decision
    }

    /// Replaces the spec of the Lease last read or written with `record`; the update carries that
    /// object's resourceVersion, so it fails with 409 Conflict if anyone wrote in between.
    pub(super) async fn update(&mut self, record: LeaseRecord) -> Result<(), LeaseError> {
        let mut lease = self.lease.clone().ok_or(LeaseError::NotRead)?;
        // Like client-go's LeaderElectionRecordToLeaseSpec, the whole spec is ours: the
        // coordinated-election fields (strategy, preferredHolder) are cleared.
        lease.spec = Some(record.to_spec());
        let updated =
            bounded(self.request_timeout, self.leases.replace(&self.config.name, &PostParams::default(), &lease))
                .await?;
        self.remember_write(updated);
        Ok(())
    }

    /// After our own successful write the observed time restarts unconditionally (client-go's
    /// `setObservedRecord` after `Update`).
    fn remember_write(&mut self, lease: Lease) {
        let record = LeaseRecord::from_spec(lease.spec.as_ref());
        self.lease = Some(lease);
        self.set_observed(Observed { record, at: Instant::now() });
    }

    fn set_observed(&mut self, observed: Observed) {
        let holder = Some(observed.record.holder_identity.clone()).filter(|h| !h.is_empty());
        self.observed = Some(observed);
        let previous = std::mem::replace(&mut self.handle.lock().holder, holder.clone());
        // client-go's maybeReportTransition / OnNewLeader.
        if previous != holder
            && let Some(holder) = holder
        {
            let (identity, lease) = (&self.config.identity, self.config.describe());
            info!(%identity, %lease, %holder, "new leader observed");
        }
    }

    /// client-go's `release`: within `renew_deadline`, rewrite the lease as free (empty holder,
    /// 1 s duration, times now, transitions kept), retrying on conflict. Returns whether it wrote
    /// the release.
    pub(super) async fn release(&mut self) -> bool {
        let (identity, lease) = (self.config.identity.clone(), self.config.describe());
        let deadline = self.config.renew_deadline;
        let attempt = async {
            loop {
                let current = match bounded(self.request_timeout, self.leases.get_opt(&self.config.name)).await {
                    Ok(Some(current)) => current,
                    Ok(None) => {
                        info!(%identity, %lease, "lease not found, nothing to release");
                        return false;
                    }
                    Err(error) => {
                        warn!(%identity, %lease, %error, "failed to read the lease to release it");
                        return false;
                    }
                };
                let record = LeaseRecord::from_spec(current.spec.as_ref());
                self.lease = Some(current);
                // client-go checks its cached record here; the fresh one avoids freeing a lease
                // that a successor took while we were stopping.
                if record.holder_identity != self.config.identity {
                    let holder = &record.holder_identity;
                    info!(%identity, %lease, %holder, "the lease is no longer ours, nothing to release");
                    return false;
                }
                match self.update(record.released(Timestamp::now())).await {
                    Ok(()) => return true,
                    Err(error) if error.is_conflict() => {
                        // A renewal cancelled by the stop may have landed after all: read again.
                        debug!(%identity, %lease, "conflict while releasing the lease, retrying");
                    }
                    Err(error) => {
                        warn!(%identity, %lease, %error, "failed to release the lease");
                        return false;
                    }
                }
            }
        };
        if let Ok(released) = tokio::time::timeout(deadline, attempt).await {
            released
        } else {
            warn!(%identity, %lease, "timed out releasing the lease");
            false
        }
    }
}

/// The result of one [`LeaderElector::try_acquire_or_renew`].
pub(super) enum Attempt {
    /// We hold the lease now (created, taken or renewed).
    Holding,
    /// Another candidate holds an unexpired lease.
    HeldBy(String),
    /// The request failed (conflict, API error, timeout): not acquired this round.
    Failed(LeaseError),
}

/// Why one request on the Lease failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum LeaseError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("the lease has not been read yet")]
    NotRead,
}

impl LeaseError {
    /// Someone else wrote the Lease since we read it (409 Conflict).
    pub(super) fn is_conflict(&self) -> bool {
        matches!(self, LeaseError::Api(kube::Error::Api(status)) if status.is_conflict())
    }
}

/// `fut` with a timeout, its error as a [`LeaseError`].
async fn bounded<T>(timeout: Duration, fut: impl Future<Output = Result<T, kube::Error>>) -> Result<T, LeaseError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result.map_err(LeaseError::from),
        Err(_) => Err(LeaseError::Timeout(timeout)),
    }
}
