//! Reading ahead across a walk: a tree read file after file in the order a walk lists it
//! (`find | xargs cat`, `tar -c`, `grep -r`, a scanner) gets its next files' bytes put in the
//! kernel's page cache before it asks, so most of its reads never reach regfs.
//!
//! Rules:
//! - Only where listings were read with attributes at hand (`rootfs/`: [`Fs::entry_plus`]):
//!   the kernel then holds an inode for every entry, so there is a page cache to fill. Each file
//!   and directory entry of such a listing is remembered with its place in it, at most
//!   [`FsConfig::ahead_entries`] of them (the oldest forgotten first, never promoted, so only
//!   the listings of the last entries remembered stay alive), and only for listings of at most
//!   [`FsConfig::ahead_listing`] entries.
//! - A read of a file's first page is a step of a walk when the file is the first of its
//!   directory, or a file the last window left for the reader to ask for (its marker, in its
//!   middle, or the file it stopped before). Any other read puts nothing: a reader of single
//!   files costs nothing more. A step's window is the files that follow in walk order (on
//!   through the directories the walk enters, and back up to their parents), up to
//!   [`FsConfig::ahead_files`] of them and [`FsConfig::ahead_bytes`] in all, each at most
//!   [`FsConfig::ahead_file`]; it stops before a file that is larger (its own reads fetch it).
//!   The window's middle file is left out, so that the reader's READ of it starts the next
//!   window while the reader is still in this one; files put in the page cache lately, or
//!   already read, are passed by.
//! - Only bytes already verified and at hand are handed back (the content a read would be
//!   served from: [`crate::layout::File::open_now`]), whole, and only for inodes the kernel
//!   holds.

use std::sync::Arc;

use super::listings::Snapshot;
use super::{Fs, FsConfig, read_content_now};
use crate::layout::{FileKind, Shape};
use crate::sync;

/// Where each remembered file is in its listing, and where each directory's walk has got to.
pub(super) struct Ahead {
    /// Inode the kernel holds -> its listing and its place there.
    placed: lru::LruCache<u64, (Snapshot, usize)>,
    /// The files where walks' last windows stopped, and each window's marker: a read of one is
    /// the walk's next step.
    expected: lru::LruCache<u64, ()>,
    /// Files put in the page cache lately: a window passes them by.
    pushed: lru::LruCache<u64, ()>,
    files: usize,
    bytes: u64,
    file: u64,
    listing: usize,
}

impl Ahead {
    pub(super) fn new(config: &FsConfig) -> Ahead {
        Ahead {
            placed: lru::LruCache::new(crate::capacity::nonzero(config.ahead_entries)),
            expected: lru::LruCache::new(crate::capacity::nonzero(64)),
            pushed: lru::LruCache::new(crate::capacity::nonzero(4096)),
            files: config.ahead_files,
            bytes: config.ahead_bytes,
            file: config.ahead_file,
            listing: config.ahead_listing,
        }
    }

    /// Remember that `ino` is entry `i` of `listing` (a file listed with attributes).
    pub(super) fn place(&mut self, ino: u64, listing: &Snapshot, i: usize) {
        if self.files > 0 && listing.len() <= self.listing {
            self.placed.push(ino, (Arc::clone(listing), i));
        }
    }
}

impl Fs {
    /// Whether this core reads ahead at all ([`FsConfig::ahead_files`](super::FsConfig::ahead_files) is not 0).
    pub fn reads_ahead(&self) -> bool {
        sync::lock(&self.ahead).files > 0
    }

    /// What to put in the kernel's page cache after a read of `ino`'s first page: inodes the
    /// kernel holds and their whole contents (see the module's rules). Never waits.
    pub fn read_ahead_of(&self, ino: u64) -> Vec<(u64, Vec<u8>)> {
        let (listing, at, window, max_bytes, max_file) = {
            let mut ahead = sync::lock(&self.ahead);
            if ahead.files == 0 {
                return Vec::new();
            }
            let Some((listing, at)) = ahead.placed.peek(&ino).cloned() else { return Vec::new() };
            let first_file = listing.iter().position(|e| e.kind == FileKind::File && e.node.is_some());
            if ahead.expected.pop(&ino).is_none() && first_file != Some(at) {
                log::trace!("read ahead: inode {ino} (place {at}) is no step of a walk");
                return Vec::new();
            }
            (listing, at, ahead.files, ahead.bytes, ahead.file)
        };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let (mut listing, mut i) = (listing, at + 1);
        // The walk's next file not put in the page cache, and how far the walk may look.
        let mut stopped_at = None;
        let mut steps = window * 8;
        let mut marker = None;
        while out.len() < window && steps > 0 {
            steps -= 1;
            let Some(e) = listing.get(i) else {
                // The end of this directory: on in its parent, after it (a walk's order).
                let up = listing.first().and_then(|dot| sync::lock(&self.ahead).placed.peek(&dot.ino).cloned());
                match up {
                    Some((parent, place)) => (listing, i) = (parent, place + 1),
                    None => break,
                }
                continue;
            };
            let Some(node) = e.node.as_ref() else {
                i += 1;
                continue;
            };
            match e.kind {
                FileKind::Directory => {
                    // Into it, if it was listed with attributes (a `find` lists each directory
                    // before it walks on), past `.` and `..`.
                    let below = sync::lock(&self.kept).lru.peek(node).cloned();
                    match below {
                        Some(child) if child.first().is_some_and(|dot| self.inodes.number(node) == Some(dot.ino)) => {
                            (listing, i) = (child, 2)
                        }
                        _ => i += 1,
                    }
                    continue;
                }
                FileKind::File => {}
                _ => {
                    i += 1;
                    continue;
                }
            }
            let Shape::File(f) = node.shape() else { break };
            let (Ok(size), Some(held)) = (f.size(&self.at_hand), self.inodes.number(node)) else {
                stopped_at = self.inodes.number(node);
                break;
            };
            if size > max_file || bytes + size > max_bytes {
                stopped_at = Some(held);
                break;
            }
            i += 1;
            if sync::lock(&self.by_ino).lru.contains(&held) || sync::lock(&self.ahead).pushed.contains(&held) {
                continue;
            }
            // The window's middle file is left for the reader to ask for: its READ starts the
            // next window while the reader is still in this one.
            if out.len() == window / 2 && marker.is_none() {
                marker = Some(held);
                continue;
            }
            let Some(Ok(content)) = f.open_now(&self.layout) else {
                stopped_at = Some(held);
                break;
            };
            // Only bytes verified and at hand: a file read by parts not read yet stops the window.
            match read_content_now(&content, 0, size as u32) {
                Some(Ok(data)) if data.len() as u64 == size => {
                    bytes += size;
                    out.push((held, data));
                }
                _ => {
                    stopped_at = Some(held);
                    break;
                }
            }
        }
        if stopped_at.is_none() && out.len() >= window {
            // The window is full: the walk's next file, wherever it is, continues it.
            stopped_at = self.next_file(&listing, i);
        }
        let mut ahead = sync::lock(&self.ahead);
        for next in stopped_at.into_iter().chain(marker) {
            ahead.expected.put(next, ());
        }
        for (held, _) in &out {
            ahead.pushed.put(*held, ());
        }
        drop(ahead);
        log::trace!("read ahead after inode {ino}: {} files, {bytes} bytes; next step {stopped_at:?}", out.len());
        out
    }

    /// The inode of the first file at or after place `i` of `listing`, in this listing only.
    fn next_file(&self, listing: &Snapshot, i: usize) -> Option<u64> {
        let e = listing.iter().skip(i).find(|e| e.kind == FileKind::File && e.node.is_some())?;
        self.inodes.number(e.node.as_ref()?)
    }
}
