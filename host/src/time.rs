//! Instants as the contract carries them, Unix nanoseconds: now, from API times, and back.

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Now, in Unix nanoseconds.
pub fn unix_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Go's `Time.UnixNano()`: an int64, saturating outside its range.
pub fn timestamp_nanos(t: Timestamp) -> i64 {
    let nanos = t.as_nanosecond();
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

/// Unix nanoseconds of an API time.
pub fn nanos(t: &Time) -> i64 {
    timestamp_nanos(t.0)
}

/// The API time of Unix nanoseconds (whole seconds, as the API server stores them).
pub fn time(nanos: i64) -> Time {
    let seconds = nanos.div_euclid(1_000_000_000);
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_at_second_precision() {
        let t = time(1_767_225_600_123_456_789);
        assert_eq!(nanos(&t), 1_767_225_600_000_000_000);
        assert_eq!(nanos(&time(-1)), -1_000_000_000);
    }

    #[test]
    fn now_is_after_2026() {
        assert!(unix_nanos() > 1_767_225_600_000_000_000);
    }
}
