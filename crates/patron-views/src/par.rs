//! A data-parallel map over a slice on scoped threads, one chunk per core, results in input order:
//! the whole-population loops of a fit (each customer as of the calibration end, predictions for
//! every customer) spread over the cores, while every sum over the results is still taken in one
//! order, so the numbers do not depend on the number of cores.

/// Below this many items the map runs on the calling thread.
const MIN_PARALLEL: usize = 4_096;

/// `items.iter().map(f).collect()`, computed on up to one thread per core.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let parts = map_chunks(items, |_, chunk| chunk.iter().map(&f).collect::<Vec<R>>());
    let mut out: Vec<R> = Vec::with_capacity(items.len());
    for part in parts {
        out.extend(part);
    }
    out
}

/// `f(offset, chunk)` for one chunk of `items` per core (`offset`: the chunk's first index), the
/// results in chunk order: for work that folds a run of items into one result.
pub fn map_chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(usize, &[T]) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads < 2 || items.len() < MIN_PARALLEL {
        return vec![f(0, items)];
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let (first, rest) = items.split_at(chunk.min(items.len()));
        let others: Vec<_> = rest
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| scope.spawn(move || f(chunk * (i + 1), c)))
            .collect();
        let mut out = Vec::with_capacity(threads);
        out.push(f(0, first));
        for handle in others {
            match handle.join() {
                Ok(part) => out.push(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_in_input_order_whatever_the_size() {
        for n in [0, 1, 4_095, 4_096, 10_001] {
            let items: Vec<u64> = (0..n).collect();
            let squares = super::map(&items, |x| x * x);
            assert_eq!(
                squares,
                items.iter().map(|x| x * x).collect::<Vec<_>>(),
                "{n}"
            );
        }
    }

    #[test]
    fn chunks_cover_every_item_once_in_order() {
        for n in [0, 1, 4_095, 4_096, 10_001] {
            let items: Vec<usize> = (0..n).collect();
            let parts = super::map_chunks(&items, |offset, chunk| {
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        assert_eq!(offset + i, *x, "offset of chunk");
                        x * 2
                    })
                    .collect::<Vec<_>>()
            });
            let joined: Vec<usize> = parts.into_iter().flatten().collect();
            assert_eq!(
                joined,
                items.iter().map(|x| x * 2).collect::<Vec<_>>(),
                "{n}"
            );
        }
    }
}
