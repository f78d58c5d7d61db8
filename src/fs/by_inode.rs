//! Reads with no open (`--no-open`, the default): the kernel sends no OPEN or RELEASE of files
//! and reads with handle 0, so each inode's content is opened at its first read (as an open
//! opens) and kept until the kernel forgets the inode.
//!
//! Rules:
//! - At most [`FsConfig::inode_handles`](super::FsConfig::inode_handles) contents are kept (the
//!   bound on descriptors held), and contents held in memory at most
//!   [`FsConfig::inode_memory`](super::FsConfig::inode_memory) bytes in all; the least recently
//!   read go first, and are opened again if read again.
//! - An open that failed is that reader's answer (the requester's thread id) for
//!   [`FsConfig::failed_open_hold`](super::FsConfig::failed_open_hold), so one `read(2)`'s second READ does not download and retry
//!   all over again; another process, or the same one later, tries again. Thread id 0 (a
//!   requester the daemon's pid namespace cannot see) is nobody in particular: nothing is held.
//! - A kept cache file the store evicted since (`st_nlink` 0) is let go at the next read
//!   ([`Fs::let_go_of_evicted`]): without that, inodes the kernel never forgets would hold
//!   deleted files' disk space past `--cache-size`.
//! - Nothing is kept for an inode the kernel has forgotten (`forget` frees the inode before it
//!   takes the table, so one of the two always sees the other).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Fs, read_content, read_content_now};
use crate::error::{Error, Result};
use crate::layout::{Node, Shape};
use crate::store::Content;
use crate::sync;

/// Contents kept for reads by inode (`--no-open`): at most so many (the LRU's capacity, which
/// bounds descriptors), and contents held in memory (small blobs, manifests) at most
/// `memory` bytes in all, the least recently read let go first.
pub(super) struct ByIno {
    pub(super) lru: lru::LruCache<u64, Content>,
    /// Bytes of the in-memory contents kept.
    pub(super) bytes: usize,
    /// [`FsConfig::inode_memory`](super::FsConfig::inode_memory).
    pub(super) memory: usize,
    /// Opens that failed lately, by inode and reader (the requester's thread id), and when: the
    /// answer to that reader's reads of that inode for `hold` (at most
    /// [`FsConfig::failed_opens`](super::FsConfig::failed_opens) at once).
    pub(super) failed: lru::LruCache<(u64, u32), (std::time::Instant, Node, Error)>,
    /// [`FsConfig::failed_open_hold`](super::FsConfig::failed_open_hold).
    pub(super) hold: std::time::Duration,
}

impl ByIno {
    fn weight(content: &Content) -> usize {
        match content {
            Content::Memory(bytes) => bytes.len(),
            Content::Manifest(doc) => doc.bytes().len(),
            Content::File(_) | Content::Range { .. } | Content::Parts(_) => 0,
        }
    }

    pub(super) fn pop(&mut self, ino: u64) -> Option<Content> {
        let content = self.lru.pop(&ino)?;
        self.bytes -= ByIno::weight(&content);
        Some(content)
    }

    /// Keep `content` for `ino` (not kept yet); what was let go, for the caller to drop unlocked.
    fn push(&mut self, ino: u64, content: Content) -> Vec<Content> {
        self.bytes += ByIno::weight(&content);
        let mut out = Vec::new();
        if let Some((_, old)) = self.lru.push(ino, content) {
            self.bytes -= ByIno::weight(&old);
            out.push(old);
        }
        while self.bytes > self.memory && self.lru.len() > 1 {
            let Some((_, old)) = self.lru.pop_lru() else { break };
            self.bytes -= ByIno::weight(&old);
            out.push(old);
        }
        out
    }
}

impl Fs {
    /// A read of `ino` with no handle (`--no-open`: the kernel sends no open, and reads with
    /// handle 0). Served from the inode's own content, opened at its first read (as
    /// [`Fs::open_file`] opens: it may download, decode and verify, so the adapter calls this on
    /// a thread of its own) and kept until the kernel forgets the inode. An error opening is this
    /// read's; the next read tries again, but one by the same `reader` (the requester's thread
    /// id) within [`FsConfig::failed_open_hold`](super::FsConfig::failed_open_hold) gets the same error: the kernel's second READ of
    /// one `read(2)`.
    pub fn read_ino(&self, ino: u64, reader: u32, offset: u64, size: u32) -> Result<Vec<u8>> {
        read_content(&self.kept_or_opened(ino, reader)?, offset, size)
    }

    /// [`Fs::read_ino`] if it needs no waiting: the inode's content is kept, or verified and at
    /// hand (as for [`Fs::open_now`]). `None` if opening may wait, or `ino` is not a file (then
    /// `read_ino` says what is wrong).
    pub fn read_ino_now(&self, ino: u64, reader: u32, offset: u64, size: u32) -> Option<Result<Vec<u8>>> {
        self.let_go_of_evicted();
        let content = match self.ino_content(ino, reader) {
            Some(Ok(content)) => content,
            Some(Err(e)) => return Some(Err(e)),
            None => {
                let node = self.inodes.node(ino)?;
                let Shape::File(f) = node.shape() else { return None };
                match f.open_now(&self.layout)? {
                    Ok(content) => self.keep_ino_content(ino, content),
                    Err(e) => return Some(Err(e)),
                }
            }
        };
        read_content_now(&content, offset, size)
    }

    /// Open `ino`'s content if none is kept (`--no-open`): what an open does, at the kernel's
    /// first `getattr` of an open file (its reads ask for the size first: a layer not decoded
    /// yet says 0, and the kernel reads nothing past what it was told). It may download, decode
    /// and verify.
    pub fn open_ino(&self, ino: u64, reader: u32) -> Result<()> {
        self.kept_or_opened(ino, reader).map(drop)
    }

    /// `ino`'s kept content; else the error `reader`'s last open of it failed with, if that was
    /// within [`FsConfig::failed_open_hold`](super::FsConfig::failed_open_hold); else its content opened (it may wait) and kept.
    fn kept_or_opened(&self, ino: u64, reader: u32) -> Result<Content> {
        self.let_go_of_evicted();
        if let Some(kept) = self.ino_content(ino, reader) {
            return kept;
        }
        match self.content(ino) {
            Ok((content, _)) => Ok(self.keep_ino_content(ino, content)),
            Err(e) => {
                // Thread id 0 is every requester the daemon's pid namespace cannot see (another
                // container's): not one reader, so nothing is held for it.
                let held = reader != 0 && !matches!(e, Error::Interrupted(_));
                if let (true, Some(node)) = (held, self.inodes.node(ino)) {
                    sync::lock(&self.by_ino).failed.put((ino, reader), (std::time::Instant::now(), node, e.clone()));
                }
                Err(e)
            }
        }
    }

    /// `ino`'s kept content, or `reader`'s failed open of it while still held; `None` if
    /// neither.
    fn ino_content(&self, ino: u64, reader: u32) -> Option<Result<Content>> {
        let mut by_ino = sync::lock(&self.by_ino);
        if let Some(content) = by_ino.lru.get(&ino) {
            return Some(Ok(content.clone()));
        }
        // The node is compared, not only the number: a number the kernel forgot may name another
        // node since.
        let hold = by_ino.hold;
        match by_ino.failed.get(&(ino, reader)) {
            Some((at, node, e)) if at.elapsed() < hold && self.inodes.node(ino).as_ref() == Some(node) => {
                Some(Err(e.clone()))
            }
            Some(_) => {
                by_ino.failed.pop(&(ino, reader));
                None
            }
            None => None,
        }
    }

    /// Keep `content`, just opened, as `ino`'s; what to read from: the content another read kept
    /// first, if one did. Not kept if the kernel forgot the inode meanwhile (no `forget` would
    /// let it go): `forget` frees the inode before it takes `by_ino`, so one of the two always
    /// sees the other. Reads take a clone of what is kept, so one let go (forgotten, or past
    /// the bound) under a read in flight still serves that read.
    ///
    /// A file already unlinked once kept (evicted while it was being opened, perhaps counted by
    /// a sweep that ran before this keep) is let go again: one `fstat` per inode opened.
    fn keep_ino_content(&self, ino: u64, content: Content) -> Content {
        let mut by_ino = sync::lock(&self.by_ino);
        if let Some(kept) = by_ino.lru.get(&ino) {
            return kept.clone();
        }
        if self.inodes.node(ino).is_none() {
            return content;
        }
        let evicted = by_ino.push(ino, content.clone());
        drop(by_ino);
        drop(evicted);
        if let Some(file) = content.file().filter(|f| unlinked(f)) {
            let mut by_ino = sync::lock(&self.by_ino);
            let ours = by_ino.lru.peek(&ino).and_then(Content::file).is_some_and(|kept| Arc::ptr_eq(kept, file));
            let let_go = if ours { by_ino.pop(ino) } else { None };
            drop(by_ino);
            drop(let_go);
        }
        // The download or decode that made `content` may have evicted files others keep.
        self.let_go_of_evicted();
        content
    }

    /// Let go of kept contents whose cache file was evicted since the last look (`st_nlink` 0):
    /// a file deleted while open keeps its disk space until closed, and the kernel may never
    /// forget an inode whose dentry it caches, so without this a user reading many large blobs
    /// once each would have regfs hold up to [`FsConfig::inode_handles`](super::FsConfig::inode_handles) evicted files, past
    /// `--cache-size`. Read again, such an inode opens again (fetched or decoded anew). Costs an
    /// atomic load and swap when nothing was evicted (no lock), else an `fstat` per file kept,
    /// by the one thread that saw the count move.
    fn let_go_of_evicted(&self) {
        let evictions = self.layout.store().blob_cache().evictions();
        if self.swept_at.swap(evictions, Ordering::AcqRel) == evictions {
            return;
        }
        let files: Vec<(u64, Arc<std::fs::File>)> = {
            let by_ino = sync::lock(&self.by_ino);
            by_ino.lru.iter().filter_map(|(&ino, content)| Some((ino, Arc::clone(content.file()?)))).collect()
        };
        let gone: Vec<_> = files.into_iter().filter(|(_, file)| unlinked(file)).collect();
        if gone.is_empty() {
            return;
        }
        let mut let_go = Vec::new();
        {
            let mut by_ino = sync::lock(&self.by_ino);
            for (ino, file) in &gone {
                if by_ino.lru.peek(ino).and_then(Content::file).is_some_and(|kept| Arc::ptr_eq(kept, file)) {
                    let_go.extend(by_ino.pop(*ino));
                }
            }
        }
        log::debug!("let go of {} kept contents whose cache files were evicted", let_go.len());
        drop(let_go);
    }

    /// Contents held by inode now (`--no-open`), and handles open (tests).
    pub fn handles_held(&self) -> (usize, usize) {
        (sync::lock(&self.by_ino).lru.len(), sync::lock(&self.handles).len())
    }
}

/// `file` has no name left: the cache deleted it (it keeps its disk space while open).
fn unlinked(file: &std::fs::File) -> bool {
    file.metadata().is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) == 0)
}
