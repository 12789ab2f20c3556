//! Randomness for retry jitter and unique names: one `fastrand` generator per thread, seeded by the OS.
//!
//! Nothing here needs cryptographic strength: jitter only has to spread candidates out, and names
//! only have to differ. What they do need is seeds that differ between processes. fastrand's own
//! thread-local generator hashes the monotonic clock and the thread id, and two processes in one
//! container can read the same clock from threads with the same id; std's `RandomState` is keyed
//! from the OS's random source, so it seeds ours instead.

use std::{
    cell::RefCell,
    collections::hash_map::RandomState,
    hash::{BuildHasher as _, Hasher as _},
};

thread_local! {
    static RNG: RefCell<fastrand::Rng> =
        RefCell::new(fastrand::Rng::with_seed(RandomState::new().build_hasher().finish()));
}

fn with_rng<R>(f: impl FnOnce(&mut fastrand::Rng) -> R) -> R {
    RNG.with(|rng| f(&mut rng.borrow_mut()))
}

/// A number in `[0, 1)`, for jitter (the role of Go's `rand.Float64`).
#[must_use]
pub fn fraction() -> f64 {
    with_rng(fastrand::Rng::f64)
}

/// 64 random bits.
#[must_use]
pub fn u64() -> u64 {
    with_rng(|rng| rng.u64(..))
}

/// A random version-4 UUID in its 36-character text form, as Go's `uuid.New().String()` makes.
#[must_use]
pub fn uuid_v4() -> String {
    let (high, low) = (u64(), u64());
    // Version 4 in the 13th hex digit, variant 10xx in the 17th.
    let high = (high & !0xf000) | 0x4000;
    let low = (low & !(0xc000 << 48)) | (0x8000 << 48);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

// === tests ===

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_in_the_unit_interval_and_differ() {
        for _ in 0..1000 {
            let f = fraction();
            assert!((0.0..1.0).contains(&f), "{f}");
        }
        assert_ne!(fraction(), fraction());
        assert_ne!(u64(), u64());
    }

    #[test]
    fn uuids_have_the_version_4_layout() {
        for _ in 0..100 {
            let id = uuid_v4();
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(id.match_indices('-').map(|(i, _)| i).collect::<Vec<_>>(), [8, 13, 18, 23]);
            assert_eq!(&id[14..15], "4", "version 4: {id}");
            assert!("89ab".contains(&id[19..20]), "RFC 4122 variant: {id}");
            assert!(id.chars().all(|c| c == '-' || (c.is_ascii_hexdigit() && !c.is_ascii_uppercase())), "{id}");
        }
        assert_ne!(uuid_v4(), uuid_v4());
    }

    #[test]
    fn threads_get_their_own_seeds() {
        let a = std::thread::spawn(u64).join().unwrap();
        let b = std::thread::spawn(u64).join().unwrap();
        assert_ne!(a, b);
    }
}
