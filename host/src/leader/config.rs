//! What one election is set up with, checked as client-go's `NewLeaderElector` checks it.

use std::time::Duration;

/// client-go's `JitterFactor`: acquire attempts are `retry_period` apart plus up to 120 % more, so
/// candidates that start together do not keep colliding.
pub const JITTER_FACTOR: f64 = 1.2;

/// Settings of one election; the defaults are kube-controller-manager's
/// (`--leader-elect-lease-duration=15s`, `--leader-elect-renew-deadline=10s`,
/// `--leader-elect-retry-period=2s`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This candidate's identity, unique among all candidates (e.g. the pod name).
    pub identity: String,
    /// How long a non-leader waits, from the last change of the record it saw, before taking the
    /// lease over. Written to the Lease as `leaseDurationSeconds`, so whole seconds only.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal before it gives up.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire (jittered by [`JITTER_FACTOR`]) or renew.
    pub retry_period: Duration,
    /// Release the lease (empty holder, 1 s duration) when stopped while leading, so a successor
    /// need not wait out the lease. Only safe if the caller has stopped all leader work first.
    pub release_on_cancel: bool,
}

impl LeaderElectionConfig {
    /// A config for Lease `namespace/name` and `identity` with kube-controller-manager's timings
    /// (15 s / 10 s / 2 s) and `release_on_cancel` off (client-go's default).
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            release_on_cancel: false,
        }
    }

    /// Checks what client-go's `NewLeaderElector` checks (`lease_duration > renew_deadline >
    /// retry_period * 1.2`, all positive, identity non-empty), plus what a Lease can store.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |reason: String| Err(ConfigError(reason));
        if self.lease_duration <= self.renew_deadline {
            return fail(format!(
                "lease_duration ({:?}) must be greater than renew_deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        // client-go's rule: the deadline must outlast a (jittered) retry period, so that a single
        // failed renewal is never fatal.
        if self.renew_deadline <= self.retry_period.mul_f64(JITTER_FACTOR) {
            return fail(format!(
                "renew_deadline ({:?}) must be greater than retry_period ({:?}) * {JITTER_FACTOR}",
                self.renew_deadline, self.retry_period
            ));
        }
        for (field, value) in [
            ("lease_duration", self.lease_duration),
            ("renew_deadline", self.renew_deadline),
            ("retry_period", self.retry_period),
        ] {
            if value.is_zero() {
                return fail(format!("{field} must be greater than zero"));
            }
        }
        // Not in client-go, which silently truncates: other candidates expire the lease after the
        // *stored* whole seconds, so 2.5 s would be honoured as 2 s, possibly below renew_deadline.
        if self.lease_duration.subsec_nanos() != 0 || self.lease_duration.as_secs() > i32::MAX as u64 {
            return fail(format!(
                "lease_duration ({:?}) must be a whole number of seconds (the Lease stores leaseDurationSeconds)",
                self.lease_duration
            ));
        }
        for (field, value) in [("namespace", &self.namespace), ("name", &self.name), ("identity", &self.identity)] {
            if value.is_empty() {
                return fail(format!("{field} must not be empty"));
            }
        }
        Ok(())
    }

    pub(super) fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    pub(crate) fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A [`LeaderElectionConfig`] that [`LeaderElectionConfig::validate`] rejected; the message says
/// which rule, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid leader election config: {0}")]
pub struct ConfigError(String);

// === tests ===

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";

    fn config() -> LeaderElectionConfig {
        LeaderElectionConfig::new("ns", "lease", ME)
    }

    #[test]
    fn config_defaults_are_kube_controller_managers_and_valid() {
        let c = config();
        assert_eq!(
            (c.lease_duration, c.renew_deadline, c.retry_period),
            (Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2))
        );
        assert!(!c.release_on_cancel);
        c.validate().unwrap();
        let fast = LeaderElectionConfig {
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(300),
            ..config()
        };
        fast.validate().unwrap();
    }

    #[test]
    fn config_validation_follows_client_go() {
        let ms = Duration::from_millis;
        let err = |c: LeaderElectionConfig| c.validate().unwrap_err().to_string();
        let with = |lease: u64, renew: u64, retry: u64| LeaderElectionConfig {
            lease_duration: ms(lease),
            renew_deadline: ms(renew),
            retry_period: ms(retry),
            ..config()
        };
        assert_eq!(
            err(with(10_000, 10_000, 2_000)),
            "invalid leader election config: lease_duration (10s) must be greater than renew_deadline (10s)"
        );
        assert!(
            err(with(15_000, 2_400, 2_000))
                .contains("renew_deadline (2.4s) must be greater than retry_period (2s) * 1.2")
        );
        with(15_000, 2_401, 2_000).validate().unwrap();
        assert!(err(with(15_000, 10_000, 0)).contains("retry_period must be greater than zero"));
        assert!(err(with(2_500, 2_000, 1_000)).contains("whole number of seconds"));
        assert!(
            err(LeaderElectionConfig { identity: String::new(), ..config() }).contains("identity must not be empty")
        );
        for message in [err(with(1_000, 1_000, 1)), err(with(15_000, 10_000, 0))] {
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
