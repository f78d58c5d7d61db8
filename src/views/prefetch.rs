//! Getting many layers ready at once, as a listing of `rootfs/` wants them: their downloads up to
//! `downloads` at a time, their decodes (and indexing) up to `decodes` at a time, for the whole
//! mount ([`Prefetcher`]).
//!
//! - The work runs on threads of its own and goes on whoever waits for it: the listing then asks
//!   for each layer in turn through its single flight, which a killed reader can leave.
//! - The steps are the caller's ([`Step`]): this pool only orders and bounds them. A layer is
//!   downloaded, then decoded, by one thread; there are never more threads than downloads may
//!   run at once, nor more than layers.
//! - Errors are the steps' own to keep or log: the listing meets them again when it asks for the
//!   layer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::sync::Semaphore;

/// The pool that gets layers ready at once (see the module note).
pub struct Prefetcher {
    downloads: Arc<Semaphore>,
    decodes: Arc<Semaphore>,
}

/// One step of getting a layer ready (its download, or its decode and index).
pub type Step = Arc<dyn Fn(usize) + Send + Sync>;

impl Prefetcher {
    /// Up to `downloads` downloads and `decodes` decodes at once (one at least of each); a mount's
    /// are `ViewsConfig::prefetch_downloads` and `prefetch_decodes`.
    pub fn with_limits(downloads: usize, decodes: usize) -> Prefetcher {
        Prefetcher { downloads: Arc::new(Semaphore::new(downloads)), decodes: Arc::new(Semaphore::new(decodes)) }
    }

    /// Start getting `layers` ready, in that order: each is downloaded, then decoded, on one of
    /// at most as many threads as downloads may run. Returns at once, with the threads (which
    /// callers other than tests may drop).
    pub fn start(&self, layers: &[usize], download: Step, decode: Step) -> Vec<std::thread::JoinHandle<()>> {
        let queue = Arc::new(Mutex::new(layers.iter().copied().collect::<VecDeque<_>>()));
        let workers = layers.len().min(self.downloads.limit());
        (0..workers)
            .filter_map(|_| {
                let (queue, downloads, decodes) =
                    (Arc::clone(&queue), Arc::clone(&self.downloads), Arc::clone(&self.decodes));
                let (download, decode) = (Arc::clone(&download), Arc::clone(&decode));
                let work = move || loop {
                    let Some(n) = crate::sync::lock(&queue).pop_front() else { return };
                    {
                        let _held = downloads.acquire();
                        download(n);
                    }
                    let _held = decodes.acquire();
                    decode(n);
                };
                std::thread::Builder::new()
                    .name("regfs-prefetch".into())
                    .spawn(work)
                    .inspect_err(|e| log::warn!("no prefetch thread ({e}): layers are got ready one by one"))
                    .ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Layers got ready for a listing overlap: decodes run two at a time (never more), downloads
    /// four at a time, and the caller does not wait for them.
    #[test]
    fn listing_a_four_layer_rootfs_decodes_layers_concurrently() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Default)]
        struct Seen {
            now: AtomicUsize,
            most: AtomicUsize,
        }
        impl Seen {
            fn run(&self, d: Duration) {
                let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(d);
                self.now.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let (downloads, decodes) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
        let order = Arc::new(Mutex::new(Vec::new()));
        let p = Prefetcher::with_limits(4, 2);
        let started = std::time::Instant::now();
        let (dl, de, o) = (Arc::clone(&downloads), Arc::clone(&decodes), Arc::clone(&order));
        let threads = p.start(
            &[5, 4, 3, 2, 1, 0],
            Arc::new(move |_| dl.run(Duration::from_millis(100))),
            Arc::new(move |n| {
                de.run(Duration::from_millis(200));
                crate::sync::lock(&o).push(n);
            }),
        );
        assert!(started.elapsed() < Duration::from_millis(50), "the caller does not wait");
        for t in threads {
            t.join().expect("prefetch thread");
        }
        let took = started.elapsed();
        assert_eq!(decodes.most.load(Ordering::SeqCst), 2, "decodes overlap, two at most");
        assert_eq!(downloads.most.load(Ordering::SeqCst), 4, "downloads overlap, four at most");
        let mut done = crate::sync::lock(&order).clone();
        done.sort_unstable();
        assert_eq!(done, [0, 1, 2, 3, 4, 5], "every layer once");
        // One at a time: 6 × 300 ms. Two decodes at once: about 3 × 200 ms after the first download.
        assert!(took < Duration::from_millis(1200), "{took:?}");
    }
}
