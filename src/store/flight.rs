//! One in-flight computation per key: the first caller runs it, every caller that arrives while
//! it runs waits for and shares its result. This is what makes 64 readers of one blob cost one
//! download, and 250 lookups of one tag list cost one request.
//!
//! A caller that waits for another's run can leave: a thread working for a requester that may
//! go away ([`for_requester`], used by `fuse.rs` for every request that may wait) stops waiting
//! within [`LEAVE_CHECK`] once that requester has been answered without it (killed, or the
//! mount going), instead of holding a thread until the run ends. The run itself goes on for
//! the others.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sync;

/// How often a waiting caller that may leave looks whether it has.
pub const LEAVE_CHECK: Duration = Duration::from_millis(100);

thread_local! {
    /// Set while this thread works for a requester that may leave: true once it has.
    static LEFT: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Clears this thread's [`LEFT`] flag however `for_requester` ends.
struct Requester;

impl Drop for Requester {
    fn drop(&mut self) {
        LEFT.with(|l| *l.borrow_mut() = None);
    }
}

/// Run `work` on this thread for a requester that may leave: once `left` is set, any wait of
/// this thread for another caller's run ends at once with [`Error::Interrupted`].
pub fn for_requester<T>(left: Arc<AtomicBool>, work: impl FnOnce() -> T) -> T {
    LEFT.with(|l| *l.borrow_mut() = Some(left));
    let _clear = Requester;
    work()
}

/// This thread's flag, if it works for a requester that may leave.
fn left_flag() -> Option<Arc<AtomicBool>> {
    LEFT.with(|l| l.borrow().clone())
}

struct Slot<V> {
    result: Mutex<Option<Result<V>>>,
    ready: Condvar,
}

pub struct SingleFlight<K, V> {
    running: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight { running: Mutex::new(HashMap::new()) }
    }
}

/// Clears the key and wakes the waiters even if the leader's work panics.
struct Leader<'a, K: Eq + Hash, V> {
    flight: &'a SingleFlight<K, V>,
    key: K,
    slot: Arc<Slot<V>>,
}

impl<K: Eq + Hash, V> Drop for Leader<'_, K, V> {
    fn drop(&mut self) {
        let mut result = sync::lock(&self.slot.result);
        if result.is_none() {
            *result = Some(Err(Error::Io("the download was abandoned".into())));
        }
        drop(result);
        sync::lock(&self.flight.running).remove(&self.key);
        self.slot.ready.notify_all();
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    pub fn run(&self, key: &K, work: impl FnOnce() -> Result<V>) -> Result<V> {
        let (slot, leader) = {
            let mut running = sync::lock(&self.running);
            match running.get(key) {
                Some(slot) => (Arc::clone(slot), false),
                None => {
                    let slot = Arc::new(Slot { result: Mutex::new(None), ready: Condvar::new() });
                    running.insert(key.clone(), Arc::clone(&slot));
                    (slot, true)
                }
            }
        };
        if leader {
            let guard = Leader { flight: self, key: key.clone(), slot: Arc::clone(&slot) };
            let result = work();
            *sync::lock(&slot.result) = Some(result.clone());
            drop(guard);
            return result;
        }
        let left = left_flag();
        let mut result = sync::lock(&slot.result);
        while result.is_none() {
            result = match &left {
                None => sync::wait(&slot.ready, result),
                Some(left) if left.load(Ordering::SeqCst) => {
                    return Err(Error::Interrupted("the requester left while waiting for work in flight".into()));
                }
                Some(_) => sync::wait_timeout(&slot.ready, result, LEAVE_CHECK),
            };
        }
        result.clone().unwrap_or_else(|| Err(Error::Io("no result".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn concurrent_callers_share_one_run() {
        let flight: Arc<SingleFlight<u32, u32>> = Arc::new(SingleFlight::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (flight, runs) = (Arc::clone(&flight), Arc::clone(&runs));
                std::thread::spawn(move || {
                    flight.run(&7, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        Ok(42)
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().expect("test input is valid").expect("test input is valid"), 42);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Afterwards the key is free again: a new call runs anew.
        assert_eq!(flight.run(&7, || Ok(43)).expect("test input is valid"), 43);
    }

    #[test]
    fn a_waiter_whose_requester_left_stops_waiting_and_the_run_goes_on() {
        let flight: Arc<SingleFlight<u32, u32>> = Arc::new(SingleFlight::default());
        let leader = {
            let flight = Arc::clone(&flight);
            std::thread::spawn(move || {
                flight.run(&7, || {
                    std::thread::sleep(Duration::from_millis(1500));
                    Ok(42)
                })
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let left = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (flight, left) = (Arc::clone(&flight), Arc::clone(&left));
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let r = for_requester(left, || flight.run(&7, || Ok(0)));
                (r, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        left.store(true, Ordering::SeqCst);
        let (r, took) = waiter.join().expect("waiter");
        assert!(matches!(r, Err(Error::Interrupted(_))), "{r:?}");
        assert!(took < Duration::from_millis(200 + 3 * LEAVE_CHECK.as_millis() as u64), "left after {took:?}");
        assert_eq!(leader.join().expect("leader").expect("run"), 42);
    }

    #[test]
    fn errors_are_shared_and_not_kept() {
        let flight: SingleFlight<u32, u32> = SingleFlight::default();
        assert!(flight.run(&1, || Err(Error::NotFound("x".into()))).is_err());
        assert_eq!(flight.run(&1, || Ok(5)).expect("test input is valid"), 5);
    }
}
