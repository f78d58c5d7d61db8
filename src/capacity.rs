//! Capacities of the bounded tables regfs keeps (LRU caches of answers, positions, held files):
//! a size from a config may be 0, and a table holds at least one entry. A room at the bottom,
//! for every layer that sizes a table; the bounds against hostile input are `limits`'s.

use std::num::NonZeroUsize;

/// `n` as a table's capacity: `n` itself, or 1 for 0.
pub fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capacity_is_the_size_asked_and_at_least_one() {
        assert_eq!(nonzero(0).get(), 1);
        assert_eq!(nonzero(1).get(), 1);
        assert_eq!(nonzero(4096).get(), 4096);
        assert_eq!(nonzero(usize::MAX).get(), usize::MAX);
    }
}
