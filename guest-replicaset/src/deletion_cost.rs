//! The `controller.kubernetes.io/pod-deletion-cost` annotation: `GetDeletionCostFromPodAnnotations`.

/// Mirrors `GetDeletionCostFromPodAnnotations`, with its error folded to 0 as `Less` does:
/// a missing or invalid annotation costs 0.
///
/// Valid values are base-10 int32s written the way the API server's validation accepts them:
/// `validFirstDigit` refuses a leading `+` ("+10") and leading zeros ("008", but "0" itself is
/// fine), then `strconv.ParseInt(value, 10, 32)` must succeed (so "-008" is -8, while "-",
/// "1_0", "abc" and anything outside int32 are errors).
pub fn get_deletion_cost_from_pod_annotations(annotation: Option<&str>) -> i32 {
    annotation.and_then(parse).unwrap_or(0)
}

fn parse(value: &str) -> Option<i32> {
    if !valid_first_digit(value) {
        return None;
    }
    parse_int32(value)
}

/// Values that start with a plus sign (e.g. "+10") or leading zeros (e.g. "008") are not valid.
fn valid_first_digit(value: &str) -> bool {
    match value.as_bytes().first() {
        None => false,
        Some(b'-') => true,
        Some(b'0') => value == "0",
        Some(first) => (b'1'..=b'9').contains(first),
    }
}

/// `strconv.ParseInt(value, 10, 32)`: an optional sign, at least one ASCII digit, in range.
fn parse_int32(value: &str) -> Option<i32> {
    let (negative, digits) = match value.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        all => (false, all),
    };
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude * 10 + i64::from(digit - b'0');
        // Past int32's range already; stop before i64 could overflow on very long inputs.
        if magnitude > 1 << 31 {
            return None;
        }
    }
    i32::try_from(if negative { -magnitude } else { magnitude }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(value: &str) -> i32 {
        get_deletion_cost_from_pod_annotations(Some(value))
    }

    #[test]
    fn a_missing_annotation_costs_zero() {
        assert_eq!(get_deletion_cost_from_pod_annotations(None), 0);
    }

    #[test]
    fn plain_integers_parse() {
        assert_eq!(cost("0"), 0);
        assert_eq!(cost("7"), 7);
        assert_eq!(cost("100"), 100);
        assert_eq!(cost("-5"), -5);
        assert_eq!(cost("2147483647"), i32::MAX);
        assert_eq!(cost("-2147483648"), i32::MIN);
    }

    #[test]
    fn a_leading_plus_sign_is_invalid_and_costs_zero() {
        assert_eq!(cost("+10"), 0);
    }

    #[test]
    fn leading_zeros_are_invalid_and_cost_zero() {
        assert_eq!(cost("008"), 0);
        assert_eq!(cost("00"), 0);
    }

    #[test]
    fn a_negative_value_only_needs_to_parse() {
        // validFirstDigit accepts any '-' start; ParseInt then allows leading zeros.
        assert_eq!(cost("-008"), -8);
        assert_eq!(cost("-0"), 0);
        assert_eq!(cost("-"), 0);
        assert_eq!(cost("--5"), 0);
        assert_eq!(cost("-+5"), 0);
    }

    #[test]
    fn non_numbers_cost_zero() {
        assert_eq!(cost("abc"), 0);
        assert_eq!(cost(""), 0);
        assert_eq!(cost("1_0"), 0);
        assert_eq!(cost("1 "), 0);
        assert_eq!(cost("1.5"), 0);
        assert_eq!(cost("٣"), 0);
    }

    #[test]
    fn values_outside_int32_cost_zero() {
        assert_eq!(cost("99999999999"), 0);
        assert_eq!(cost("2147483648"), 0);
        assert_eq!(cost("-2147483649"), 0);
        assert_eq!(cost(&"9".repeat(40)), 0);
    }
}
