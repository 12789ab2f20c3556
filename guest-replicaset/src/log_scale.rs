//! Age on a log2 scale, as upstream's `logarithmicRankDiff` measures it for the ranking.
//!
//! Rules 6 and 8 of the deletion ranking compare `int64(math.Log2(float64(now - t)))` of two
//! timestamps, so pods of similar age fall in one bucket and are then spread by UID. The bucket
//! must match Go's bit for bit, float rounding included, or a guest would pick other victims
//! than kube-controller-manager for the same pods.

/// One side of `logarithmicRankDiff`: `int64(math.Log2(float64(now - t)))`, or -1 when `t` is
/// not in the past. `time.Time.Sub` saturates, hence `saturating_sub`.
pub fn logarithmic_rank(now: i64, t: i64) -> i64 {
    let d = now.saturating_sub(t);
    if d <= 0 {
        return -1;
    }
    let (frac, exp) = frexp(d as f64);
    // Log2 lies in [exp-1, exp) for frac in [0.5, 1), and Go's float rounding can only lift it
    // to exactly `exp` when frac is within a few ulps of 1. Below 0.99 the truncation is
    // `exp - 1` for certain, which spares a logarithm per pod (checked against `go_log2` in
    // the tests); above it, compute exactly what Go computes.
    if frac < 0.99 {
        return i64::from(exp - 1);
    }
    go_log2(d as f64) as i64
}

/// Go's `math.Log2`, bit for bit: `frexp`, an exact answer for powers of two, otherwise
/// `Log(frac)*(1/Ln2) + exp`. The float rounding matters: `2^53 - 1` gives 53, not 52.
fn go_log2(x: f64) -> f64 {
    let (frac, exp) = frexp(x);
    // Make sure exact powers of two give an exact answer.
    if frac == 0.5 {
        return f64::from(exp - 1);
    }
    // Go folds the constant 1/Ln2 exactly before rounding it: that is LOG2_E.
    frac.ln() * std::f64::consts::LOG2_E + f64::from(exp)
}

/// `math.Frexp` for positive normal `x` (all this module needs: `x` is a positive i64):
/// `x = frac * 2^exp` with `frac` in `[0.5, 1)`.
fn frexp(x: f64) -> (f64, i32) {
    const EXP_MASK: u64 = 0x7ff << 52;
    let bits = x.to_bits();
    let exp = ((bits & EXP_MASK) >> 52) as i32 - 1022;
    let frac = f64::from_bits((bits & !EXP_MASK) | (1022 << 52));
    (frac, exp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn go_log2_is_exact_for_powers_of_two() {
        for k in 0..63 {
            assert_eq!(go_log2((1u64 << k) as f64), f64::from(k), "2^{k}");
        }
    }

    #[test]
    fn go_log2_truncates_like_go_between_powers_of_two() {
        assert_eq!(go_log2(3.0) as i64, 1);
        assert_eq!(go_log2(1000.0) as i64, 9);
        assert_eq!(go_log2(((1u64 << 30) + 1) as f64) as i64, 30);
        assert_eq!(go_log2(((1u64 << 30) - 1) as f64) as i64, 29);
        // Go rounds log(frac)/ln2 + exp to 53.0 here, one more than the true floor.
        assert_eq!(go_log2(((1u64 << 53) - 1) as f64) as i64, 53);
        // 2^60 - 1 is not representable: float64(d) rounds up to 2^60 first.
        assert_eq!(go_log2(((1u64 << 60) - 1) as f64) as i64, 60);
    }

    #[test]
    fn logarithmic_rank_agrees_with_go_log2_everywhere() {
        let reference = |d: i64| go_log2(d as f64) as i64;
        // Small durations, every power of two and its neighbours, and a spread of large ones.
        let mut durations: Vec<i64> = (1..100_000).collect();
        for k in 0..63 {
            let p = 1i64 << k;
            durations.extend([p - 2, p - 1, p, p + 1, p + 2].into_iter().filter(|&d| d > 0));
            durations.extend((1..64).map(|s| p.saturating_sub(p >> s)).filter(|&d| d > 0));
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            durations.push((state >> (1 + state % 62)) as i64 | 1);
        }
        durations.push(i64::MAX);
        for d in durations {
            assert_eq!(logarithmic_rank(d, 0), reference(d), "d = {d}");
        }
    }

    #[test]
    fn logarithmic_rank_is_minus_one_for_times_not_in_the_past() {
        assert_eq!(logarithmic_rank(T0, T0), -1);
        assert_eq!(logarithmic_rank(T0, T0 + 5), -1);
        assert_eq!(logarithmic_rank(T0, T0 - 1), 0);
        assert_eq!(logarithmic_rank(T0, ago(10)), 33); // 1e10 ns ~ 2^33.2
        assert_eq!(logarithmic_rank(T0, ago(20)), 34); // 2e10 ns ~ 2^34.2
        // Sub saturates at MaxInt64, whose float64 is exactly 2^63.
        assert_eq!(logarithmic_rank(i64::MAX, i64::MIN), 63);
    }
}
