//! A stable merge sort driven by a `less` function, safe with orders that are not consistent.
//!
//! Why not `slice::sort_by`: since Rust 1.81 the standard sorts may panic when the comparison
//! is not a total order, and `ActivePodsWithRanks.Less` is not one. Its log2 buckets with a UID
//! tie-break are intransitive (two pods with equal ready times fall through to restart counts,
//! while each of them against a third pod in the same bucket is decided by UID), and a panic in
//! the guest is a trap. Upstream's `sort.Sort` tolerates such orders and is unstable; this sort
//! tolerates them too and is stable, so the same snapshot always gives the same victims.

/// Elements per insertion-sorted run before merging starts.
const RUN: usize = 16;

/// Sorts `items` so that `less(a, b)` puts `a` before `b`; elements neither less than the other
/// keep their input order. Always O(n log n) comparisons, never panics whatever `less` answers.
pub fn merge_sort_by<T: Copy>(items: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    let n = items.len();
    if n < 2 {
        return;
    }
    for start in (0..n).step_by(RUN) {
        insertion_sort(&mut items[start..n.min(start + RUN)], &mut less);
    }
    if n <= RUN {
        return;
    }
    let mut buffer = items.to_vec();
    let mut sorted_in_items = true;
    let mut width = RUN;
    while width < n {
        if sorted_in_items {
            merge_pass(items, &mut buffer, width, &mut less);
        } else {
            merge_pass(&buffer, items, width, &mut less);
        }
        sorted_in_items = !sorted_in_items;
        width *= 2;
    }
    if !sorted_in_items {
        items.copy_from_slice(&buffer);
    }
}

fn insertion_sort<T: Copy>(run: &mut [T], less: &mut impl FnMut(&T, &T) -> bool) {
    for i in 1..run.len() {
        let item = run[i];
        let mut j = i;
        // Move left only past strictly greater elements: equal ones keep their order.
        while j > 0 && less(&item, &run[j - 1]) {
            run[j] = run[j - 1];
            j -= 1;
        }
        run[j] = item;
    }
}

/// Merges neighbouring sorted runs of `width` elements from `src` into `dst`.
fn merge_pass<T: Copy>(src: &[T], dst: &mut [T], width: usize, less: &mut impl FnMut(&T, &T) -> bool) {
    let n = src.len();
    let mut start = 0;
    while start < n {
        let mid = n.min(start + width);
        let end = n.min(start + 2 * width);
        let (mut i, mut j, mut k) = (start, mid, start);
        while i < mid && j < end {
            // Take from the right run only when strictly less: that is what makes it stable.
            if less(&src[j], &src[i]) {
                dst[k] = src[j];
                j += 1;
            } else {
                dst[k] = src[i];
                i += 1;
            }
            k += 1;
        }
        dst[k..k + (mid - i)].copy_from_slice(&src[i..mid]);
        k += mid - i;
        dst[k..k + (end - j)].copy_from_slice(&src[j..end]);
        start = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so the tests need no randomness crate.
    fn pseudo_random(n: usize, seed: u64) -> Vec<u32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (state >> 33) as u32
            })
            .collect()
    }

    #[test]
    fn sorts_like_the_standard_sort_for_every_length() {
        for n in [0, 1, 2, 15, 16, 17, 31, 32, 33, 100, 1000, 5000] {
            let mut items = pseudo_random(n, n as u64);
            let mut expected = items.clone();
            expected.sort_unstable();
            merge_sort_by(&mut items, |a, b| a < b);
            assert_eq!(items, expected, "n = {n}");
        }
    }

    #[test]
    fn equal_elements_keep_their_input_order() {
        // Sort (key, position) pairs by key only; positions must stay ascending within a key.
        let keys = pseudo_random(3000, 7);
        let mut items: Vec<(u32, usize)> = keys.iter().map(|k| k % 10).zip(0..).collect();
        merge_sort_by(&mut items, |a, b| a.0 < b.0);
        for pair in items.windows(2) {
            assert!(pair[0].0 < pair[1].0 || (pair[0].0 == pair[1].0 && pair[0].1 < pair[1].1));
        }
    }

    #[test]
    fn an_inconsistent_order_does_not_panic_and_keeps_every_element() {
        // A rock-paper-scissors order is intransitive; the result must still be a permutation.
        let mut items: Vec<u32> = (0..500).map(|i| i % 3).chain(0..200).collect();
        let mut expected = items.clone();
        merge_sort_by(&mut items, |a, b| (a + 1) % 3 == b % 3);
        items.sort_unstable();
        expected.sort_unstable();
        assert_eq!(items, expected);
    }
}
