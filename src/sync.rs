//! Poison-tolerant locking. A panic while a lock is held poisons it; regfs's locks guard caches,
//! tables and single-flight slots whose every update leaves them consistent (or merely stale), so
//! the next user takes the lock anyway instead of panicking in turn. This is the one place that
//! says so: every lock in regfs (and in its test tools) goes through these.

use std::sync::{Condvar, LockResult, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

fn tolerate<G>(r: LockResult<G>) -> G {
    r.unwrap_or_else(|p| p.into_inner())
}

/// `m.lock()`, even if a holder panicked.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    tolerate(m.lock())
}

/// `l.read()`, even if a writer panicked.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    tolerate(l.read())
}

/// `l.write()`, even if a writer panicked.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    tolerate(l.write())
}

/// `c.wait(guard)`, even if a holder of the guard's mutex panicked.
pub fn wait<'a, T>(c: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    tolerate(c.wait(guard))
}

/// `c.wait_timeout(guard, d)`, even if a holder of the guard's mutex panicked; the guard only
/// (a caller looks again at what it waits for, as after any wake-up).
pub fn wait_timeout<'a, T>(c: &Condvar, guard: MutexGuard<'a, T>, d: std::time::Duration) -> MutexGuard<'a, T> {
    tolerate(c.wait_timeout(guard, d)).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_still_taken() {
        let m = Mutex::new(1);
        let l = RwLock::new(2);
        std::thread::scope(|s| {
            let _ = s
                .spawn(|| {
                    let _m = m.lock();
                    let _l = l.write();
                    panic!("poison both");
                })
                .join();
        });
        assert!(m.is_poisoned() && l.is_poisoned());
        *lock(&m) += 1;
        *write(&l) += 1;
        assert_eq!((*lock(&m), *read(&l)), (2, 3));
    }
}
