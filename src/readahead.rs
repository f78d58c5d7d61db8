//! Readahead for tag links: when a repository's tags are read in order, resolve the next ones in
//! parallel before they are asked for.
//!
//! `ls -l tags/` and `cat tags/*/…` read every link in sorted order, one after another, and each
//! link costs one HEAD. Against a registry 100 ms away, 250 tags take 25 s that way. Like the
//! kernel's readahead for files, this watches for sequential access: when the tag read follows
//! the one read before it in the (fresh) tag list, the next [`WINDOW`] tags are resolved in the
//! background, [`PARALLEL`] at a time. Reading one tag, or tags out of order, prefetches nothing.
//! A plain `ls` reads no links and so costs only the tag list. Resolutions go through the store's
//! single flight, so a tag the reader asks for while its prefetch runs waits for that one HEAD.
//! The reading position is kept for the [`STREAMS`] repositories read most recently.

use std::sync::{Arc, Mutex};

use crate::store::Store;
use crate::sync;

/// How far ahead of the reader tags are resolved.
pub const WINDOW: usize = 16;
/// HEADs in flight at once for one repository.
pub const PARALLEL: usize = 8;
/// Repositories whose reading position is remembered, least recently read first out.
pub const STREAMS: usize = 4096;

#[derive(Default)]
struct Stream {
    /// Index in the tag list of the tag read last.
    last: Option<usize>,
    /// Tags before this index have been asked for already.
    issued: usize,
}

/// Where the reader of each repository's tag links is, for at most [`STREAMS`] repositories.
pub struct Readahead {
    streams: Mutex<lru::LruCache<String, Stream>>,
}

impl Default for Readahead {
    fn default() -> Self {
        let cap = std::num::NonZeroUsize::new(STREAMS).unwrap_or(std::num::NonZeroUsize::MIN);
        Readahead { streams: Mutex::new(lru::LruCache::new(cap)) }
    }
}

impl Readahead {
    /// Repositories whose reading position is remembered now.
    pub fn streams(&self) -> usize {
        sync::lock(&self.streams).len()
    }

    /// `tag` of `repo` was just read: extend the readahead if the reading is sequential.
    pub fn note_read(&self, store: &Arc<Store>, repo: &str, tag: &str) {
        let Some(tags) = store.tags_if_fresh(repo) else { return };
        let Ok(at) = tags.binary_search_by(|t| t.as_str().cmp(tag)) else { return };
        let wanted = {
            let mut streams = sync::lock(&self.streams);
            let s = streams.get_or_insert_mut(repo.to_string(), Stream::default);
            let sequential = s.last.is_some_and(|l| l + 1 == at);
            s.last = Some(at);
            if !sequential {
                s.issued = at + 1;
                return;
            }
            let from = s.issued.max(at + 1);
            let to = (at + 1 + WINDOW).min(tags.len());
            s.issued = to.max(s.issued);
            tags.get(from..to).map(<[String]>::to_vec).unwrap_or_default()
        };
        if wanted.is_empty() {
            return;
        }
        log::debug!("readahead: resolving {} tags of {repo} after {tag}", wanted.len());
        // Nearest first: the workers pop from the end.
        let mut wanted = wanted;
        wanted.reverse();
        let queue = Arc::new(Mutex::new(wanted));
        for _ in 0..PARALLEL {
            let (store, queue, repo) = (Arc::clone(store), Arc::clone(&queue), repo.to_string());
            let spawned = std::thread::Builder::new().name("regfs-readahead".into()).spawn(move || {
                loop {
                    let next = sync::lock(&queue).pop();
                    let Some(t) = next else { break };
                    // Failures are the reader's to see when it gets there; nothing is kept.
                    let _ = store.resolve_tag(&repo, &t);
                }
            });
            if spawned.is_err() {
                break;
            }
        }
    }
}
