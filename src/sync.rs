//! Poison-tolerant locking, and the one counting semaphore.
//!
//! - A panic while a lock is held poisons it; regfs's locks guard caches, tables and
//!   single-flight slots whose every update leaves them consistent (or merely stale), so the next
//!   user takes the lock anyway instead of panicking in turn. This is the one place that says
//!   so: every lock in regfs (and in its test tools) goes through these.
//! - [`Semaphore`] bounds how many may do one thing at once (downloads, decodes, listings, large
//!   index builds). A [`Permit`] is given back when it is dropped, unwinding included, and each
//!   one given back wakes one waiter: a waiter looks at the count under the same lock the giver
//!   changes it under, so no wake-up is lost between its look and its wait.

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

/// A counting semaphore: at most `limit` permits out at once; [`Semaphore::acquire`] waits for
/// one. A `static` can hold one ([`Semaphore::new`] is `const`).
#[derive(Debug)]
pub struct Semaphore {
    /// Permits out now.
    held: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

/// One permit of a [`Semaphore`], given back when dropped.
#[derive(Debug)]
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    /// A semaphore of `limit` permits (at least one: a limit of 0 would wait forever).
    pub const fn new(limit: usize) -> Semaphore {
        Semaphore { held: Mutex::new(0), freed: Condvar::new(), limit: if limit == 0 { 1 } else { limit } }
    }

    /// The number of permits.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A permit, waiting while all are out.
    pub fn acquire(&self) -> Permit<'_> {
        let mut held = lock(&self.held);
        while *held >= self.limit {
            held = wait(&self.freed, held);
        }
        *held += 1;
        Permit(self)
    }

    /// A permit if one is free now; `None` (at once) if all are out.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut held = lock(&self.held);
        (*held < self.limit).then(|| {
            *held += 1;
            Permit(self)
        })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.0.held);
        *held -= 1;
        drop(held);
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Holders at once never pass the limit, and reach it when there are enough of them.
    #[test]
    fn a_semaphore_bounds_its_holders() {
        let s = Semaphore::new(3);
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        let _p = s.acquire();
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 3, "three at once, never more");
        assert_eq!(Semaphore::new(0).limit(), 1, "a limit of 0 is one");
    }

    /// A permit is given back when dropped, and when its holder panics.
    #[test]
    fn a_permit_is_given_back_when_dropped_or_unwound() {
        let s = Semaphore::new(2);
        let (a, b) = (s.acquire(), s.acquire());
        assert!(s.try_acquire().is_none(), "both permits are out");
        drop(a);
        let c = s.try_acquire().expect("a dropped permit is free again");
        drop((b, c));
        std::thread::scope(|scope| {
            let r = scope
                .spawn(|| {
                    let _p = s.acquire();
                    let _q = s.acquire();
                    panic!("holding both");
                })
                .join();
            assert!(r.is_err());
        });
        let both = (s.try_acquire(), s.try_acquire());
        assert!(both.0.is_some() && both.1.is_some(), "a panicking holder's permits were given back");
    }

    /// A waiter is woken by the permit given back, however the giving and the waiting
    /// interleave: many threads taking and giving one permit many times all finish.
    #[test]
    fn no_wake_up_is_lost() {
        let s = std::sync::Arc::new(Semaphore::new(1));
        let p = s.acquire();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let (s, tx) = (std::sync::Arc::clone(&s), tx.clone());
            std::thread::spawn(move || {
                let _p = s.acquire();
                tx.send(()).expect("send");
            })
        };
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "the waiter waits while the permit is out");
        drop(p);
        rx.recv_timeout(Duration::from_secs(10)).expect("the waiter was woken by the permit given back");
        waiter.join().expect("waiter");
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (s, tx) = (std::sync::Arc::clone(&s), tx.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        drop(s.acquire());
                    }
                    tx.send(()).expect("send");
                })
            })
            .collect();
        for _ in 0..6 {
            rx.recv_timeout(Duration::from_secs(30)).expect("every thread finished: no waiter was left asleep");
        }
        for t in threads {
            t.join().expect("thread");
        }
        assert!(s.try_acquire().is_some(), "every permit was given back");
    }

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
