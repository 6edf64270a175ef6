//! Work of one aggregate split over the machine's cores: the scan's row ranges, and the
//! fee quartiles of its cells and margins, which would otherwise run on one core after a
//! scan that used them all.

/// How many threads to give `work` items when each thread should have at least
/// `at_least` of them: between 1 and the machine's cores.
pub(super) fn threads_for(work: usize, at_least: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(work / at_least.max(1))
        .max(1)
}

/// `f` of each of `items`, in order, the items dealt round-robin to `threads` threads
/// (so that a run of large items is shared out; on this thread when `threads` is 1). A
/// panic in `f` is raised again here.
pub(super) fn each<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let total = items.len();
    let mut hands: Vec<Vec<T>> = (0..threads)
        .map(|_| Vec::with_capacity(total.div_ceil(threads)))
        .collect();
    for (i, item) in items.into_iter().enumerate() {
        hands[i % threads].push(item);
    }
    let f = &f;
    let done: Vec<Vec<R>> = std::thread::scope(|scope| {
        let handles: Vec<_> = hands
            .into_iter()
            .map(|hand| scope.spawn(move || hand.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    // Deal the results back in the items' order.
    let mut done: Vec<std::vec::IntoIter<R>> = done.into_iter().map(Vec::into_iter).collect();
    (0..total)
        .filter_map(|i| done[i % threads].next())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the split, the results come back in the items' order.
        #[test]
        fn results_keep_the_items_order(items in proptest::collection::vec(0u32..1000, 0..50), threads in 1usize..6) {
            let out = each(items.clone(), threads, |x| u64::from(x) * 3);
            let expected: Vec<u64> = items.iter().map(|x| u64::from(*x) * 3).collect();
            proptest::prop_assert_eq!(out, expected);
        }
    }
}
