//! Readahead for tag links: when a repository's tags are read in order, resolve the next ones in
//! parallel before they are asked for.
//!
//! `ls -l tags/` and `cat tags/*/…` read every link in sorted order, one after another, and each
//! link costs one HEAD. Against a registry 100 ms away, 250 tags take 25 s that way. Like the
//! kernel's readahead for files, this watches for sequential access: when the tag read follows
//! the one read before it in the (fresh) tag list, the next [`ReadaheadConfig::window`] tags are
//! resolved in the background, [`ReadaheadConfig::parallel`] at a time. Reading one tag, or tags out of order, prefetches nothing.
//! A plain `ls` reads no links and so costs only the tag list. Resolutions go through the store's
//! single flight, so a tag the reader asks for while its prefetch runs waits for that one HEAD.
//! The reading position is kept for the [`ReadaheadConfig::streams`] repositories read most
//! recently.

use std::sync::{Arc, Mutex};

use crate::capacity::nonzero;
use crate::store::Store;
use crate::sync;

/// How far ahead, how wide, and for how many repositories; part of
/// the core's `FsConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadaheadConfig {
    /// How far ahead of the reader tags are resolved (16).
    pub window: usize,
    /// HEADs in flight at once for one repository (8).
    pub parallel: usize,
    /// Repositories whose reading position is remembered, least recently read first out (4096).
    pub streams: usize,
}

impl Default for ReadaheadConfig {
    fn default() -> Self {
        ReadaheadConfig { window: 16, parallel: 8, streams: 4096 }
    }
}

#[derive(Default)]
struct Stream {
    /// Index in the tag list of the tag read last.
    last: Option<usize>,
    /// Tags before this index have been asked for already.
    issued: usize,
}

/// Where the reader of each repository's tag links is, for at most
/// [`ReadaheadConfig::streams`] repositories.
pub struct Readahead {
    streams: Mutex<lru::LruCache<String, Stream>>,
    window: usize,
    parallel: usize,
}

impl Readahead {
    pub fn new(config: &ReadaheadConfig) -> Readahead {
        Readahead {
            streams: Mutex::new(lru::LruCache::new(nonzero(config.streams))),
            window: config.window,
            parallel: config.parallel,
        }
    }

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
            let to = (at + 1 + self.window).min(tags.len());
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
        for _ in 0..self.parallel {
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
