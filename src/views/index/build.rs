//! The index builder: a layer's entries applied in tar order to a virtual tree, then frozen
//! into a [`LayerIndex`]. The same-layer rules, as the runtimes' appliers (containerd, umoci)
//! apply one layer into its own directory:
//!
//! - The last entry of a name wins. A directory over a directory takes the new attributes and
//!   keeps its children and opacity; any other entry replaces what was there, a directory's
//!   subtree with it (a replaced hard-link source stays, hidden, for the links that name it).
//! - Parents no entry names are *implied* directories: their attributes mean nothing.
//! - `.wh.<name>` whites `<name>` out here and below. A name both whited out and present in
//!   one layer is present (the whiteout applies only below), and opaque if it is a directory.
//! - `.wh..wh..opq` makes its directory opaque; a directory under an opaque directory of its own
//!   layer is opaque too (the lower layers' directory of that name is hidden with its parent).
//! - AUFS metadata is dropped, but for the regular files of `.wh..wh.plnk/`, kept hidden as
//!   hard-link sources.
//! - An entry's parent path, and a hard link's target's, follow the symlinks the layer made
//!   before it, confined to the layer's root ([`rootpath`]); the last component never (a link to
//!   a symlink is to the symlink).
//! - A hard link is to its original (a link to a link is to the link's original), or to a path
//!   of the layers below. Refused: a target under a same-layer non-directory, missing here
//!   (whited out, or hidden by an opaque directory), a directory, or the link itself.
//! - An entry the rules refuse, or past a per-entry bound of [`IndexLimits`], is left out and
//!   counted by reason ([`Builder::left_out`]); a per-layer bound passed refuses the whole layer
//!   (`TooLarge`).
//! - A build past `alone_above` bytes holds the one large-build slot until it is frozen or
//!   dropped, so that many hostile layers decoding at once cannot each hold the most a layer
//!   may.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use super::model::{F_HIDDEN, F_IMPLIED, F_LOWER, F_OPAQUE, HeaderChecks, NONE, RECORD_BYTES, Rec};
use super::{AUFS_PLNK, AUFS_PREFIX, Entry, EntryKind, LayerIndex, OPAQUE, WHITEOUT_PREFIX, normalise};
use crate::error::{Error, Result};
use crate::limits;
use crate::sync::{Permit, Semaphore};
use crate::views::rootpath::{self, Bounds, Refused, Resolved};
use crate::views::tar::{Parser, TarLimits};

/// Bounds the builder enforces on one layer (defaults from [`crate::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLimits {
    /// Entries (tar entries kept, and records) past which the layer is refused (`TooLarge`).
    pub max_entries: usize,
    /// Bytes of records and arenas past which the layer is refused (`TooLarge`).
    pub max_bytes: usize,
    /// Bytes of a path as written; longer entries are left out and counted.
    pub max_path: usize,
    /// Bytes of a path component; entries with a longer one are left out and counted.
    pub max_component: usize,
    /// Bytes of one entry's xattrs (names and values); past it its xattrs are dropped.
    pub max_xattr_bytes: usize,
    /// Bytes of one xattr value; a longer one drops the entry's xattrs.
    pub max_xattr_value: usize,
    /// Bytes past which a build takes the one slot for large builds (one for the process),
    /// waiting for it if another build has it.
    pub alone_above: usize,
    /// Symlinks followed for one entry's parent path; past it the entry is left out.
    pub max_link_hops: usize,
    /// Path components walked through symlinks by the whole layer; past it the layer is
    /// refused (`TooLarge`).
    pub max_link_steps: usize,
}

/// The one slot for large index builds. Layers decode (and index) in parallel, each build
/// bounded by `max_bytes` alone; without a shared budget, N hostile layers of a million entries
/// each would hold N times that at once. A build that grows past `alone_above` takes this slot
/// first (waiting while another build holds it), and keeps it until it is frozen or dropped, so
/// builds together hold at most `(N - 1) × alone_above + max_bytes`. The holder never waits for
/// another build (it only reads its own stream), so waiting cannot deadlock.
static LARGE_BUILD: Semaphore = Semaphore::new(1);

/// Take the large-build slot, waiting for it if another build holds it.
fn take_large_build() -> Permit<'static> {
    LARGE_BUILD.try_acquire().unwrap_or_else(|| {
        log::debug!("layer index: waiting for another large index build to finish");
        LARGE_BUILD.acquire()
    })
}

impl Default for IndexLimits {
    fn default() -> Self {
        IndexLimits {
            max_entries: limits::MAX_LAYER_ENTRIES,
            max_bytes: limits::MAX_INDEX_BYTES,
            max_path: limits::MAX_LAYER_PATH,
            max_component: limits::MAX_LAYER_COMPONENT,
            max_xattr_bytes: limits::MAX_ENTRY_XATTRS,
            max_xattr_value: limits::MAX_XATTR_VALUE,
            alone_above: limits::INDEX_BUILD_ALONE_ABOVE,
            max_link_hops: limits::MAX_LINK_HOPS,
            max_link_steps: limits::MAX_LINK_STEPS,
        }
    }
}

/// A builder-only flag: the name is whited out in this layer (if it is, or becomes, a
/// directory, it is opaque). Cleared when the index is frozen.
const B_WHITED: u8 = 16;
/// The flags an index keeps.
const INDEX_FLAGS: u8 = F_OPAQUE | F_IMPLIED | F_HIDDEN | F_LOWER;

/// Applies entries in tar order to a virtual tree (the same-layer rules of the module note),
/// then freezes it into a [`LayerIndex`]. One per layer; bounded by [`IndexLimits`].
///
/// # Memory
/// The builder holds what the index will, and little more: every node is already a record
/// (96 bytes; `parent` and `link` are node numbers until the freeze), its name and link target
/// are spans of one names arena, its xattrs of one xattrs arena (both become the index's as
/// they are, with what replaced entries left there, which the byte bound counted), and a
/// directory's children are found through one hash table of node numbers keyed by (parent,
/// name bytes), hashed with a random key (a hostile tar cannot aim at one bucket). The freeze
/// sorts node numbers, not nodes, numbers the tree breadth-first in a table of `u32`, and
/// moves the records into that order in place. So the peak is the records, the arenas and
/// about 16 bytes per entry: no node owns a string or a map of its children.
pub struct Builder {
    limits: IndexLimits,
    /// Every node made, live or replaced (a replaced one may stay as a hidden link source).
    recs: Vec<Rec>,
    names: Vec<u8>,
    xattrs: Vec<u8>,
    /// Live children: node numbers, found by (parent, name).
    children: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
    /// AUFS `.wh..wh.plnk/` files by path: hidden hard-link sources.
    plnk: HashMap<String, u32>,
    /// Bytes of names, targets and xattrs kept so far (with records, the `max_bytes` bound).
    bytes: usize,
    /// Entries left out, by reason (one log line per layer at the end).
    left_out: BTreeMap<&'static str, usize>,
    /// The large-build slot, once `bytes` passed `alone_above`; held until frozen or dropped.
    large: Option<Permit<'static>>,
    /// Steps the layer may still walk through symlinks (`max_link_steps` at the start).
    link_budget: usize,
}

/// What a new node's link field and target span say while building.
enum NodeLink {
    /// An earlier node of this layer.
    Node(u32),
    /// A lower path, normalised.
    Lower(String),
}

fn key_hash(hasher: &std::hash::RandomState, parent: u32, name: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    hasher.hash_one((parent, name))
}

fn span(arena: &[u8], off: u32, len: u16) -> &[u8] {
    let start = off as usize;
    arena.get(start..start + len as usize).unwrap_or(&[])
}

impl Builder {
    /// A builder for one layer with these bounds.
    pub fn new(mut limits: IndexLimits) -> Builder {
        // Spans are u16 (path bytes) and u32 (arena offsets) in a record; an arena holds at
        // most twice the bytes counted (implied directories' names come from counted paths).
        limits.max_path = limits.max_path.min(u16::MAX as usize);
        limits.max_component = limits.max_component.min(u16::MAX as usize);
        limits.max_bytes = limits.max_bytes.min(u32::MAX as usize / 4);
        let mut b = Builder {
            limits,
            recs: Vec::new(),
            names: Vec::new(),
            xattrs: Vec::new(),
            children: hashbrown::HashTable::new(),
            hasher: std::hash::RandomState::new(),
            plnk: HashMap::new(),
            bytes: 0,
            left_out: BTreeMap::new(),
            large: None,
            link_budget: limits.max_link_steps,
        };
        let root = b.new_node(0, "", &Entry::dir(""), EntryKind::Dir);
        b.recs[root as usize].flags = F_IMPLIED;
        b
    }

    /// Entries left out so far, by reason (each reason is a short phrase).
    pub fn left_out(&self) -> &BTreeMap<&'static str, usize> {
        &self.left_out
    }

    fn skip(&mut self, why: &'static str, name: &str) {
        let n = self.left_out.entry(why).or_insert(0);
        if *n == 0 {
            log::debug!("layer index: {name:?} left out: {why}");
        }
        *n += 1;
    }

    /// Apply one entry. Entries the rules refuse are left out and counted; an `Err` is a bound
    /// passed (`TooLarge`): the whole layer is refused.
    pub fn push(&mut self, e: Entry) -> Result<()> {
        self.apply(e)?;
        // Records made so far, implied directories and replaced ones included.
        if self.recs.len() > self.limits.max_entries.saturating_add(1) {
            return Err(Error::TooLarge(format!("layer index: more than {} entries", self.limits.max_entries)));
        }
        if self.large.is_none() && self.bytes > self.limits.alone_above {
            self.large = Some(take_large_build());
        }
        Ok(())
    }

    fn kind_of(&self, id: u32) -> EntryKind {
        EntryKind::from_code(self.recs[id as usize].kind).unwrap_or(EntryKind::File)
    }

    fn flags(&mut self, id: u32) -> &mut u8 {
        &mut self.recs[id as usize].flags
    }

    /// The live child `name` of node `dir`.
    fn child(&self, dir: u32, name: &str) -> Option<u32> {
        let h = key_hash(&self.hasher, dir, name.as_bytes());
        let (recs, names) = (&self.recs, &self.names);
        self.children
            .find(h, |&id| {
                let r = &recs[id as usize];
                r.parent == dir && span(names, r.name_off, r.name_len) == name.as_bytes()
            })
            .copied()
    }

    /// Make `id` the live child of its parent under its name: the previous one, if any, is
    /// returned (it stays as a node, out of the tree).
    fn set_child(&mut self, id: u32) -> Option<u32> {
        let Builder { recs, names, children, hasher, .. } = self;
        let r = &recs[id as usize];
        let (dir, name) = (r.parent, span(names, r.name_off, r.name_len));
        let h = key_hash(hasher, dir, name);
        let eq = |&c: &u32| {
            let c = &recs[c as usize];
            c.parent == dir && span(names, c.name_off, c.name_len) == name
        };
        if let Some(slot) = children.find_mut(h, eq) {
            return Some(std::mem::replace(slot, id));
        }
        let rehash = |&c: &u32| {
            let c = &recs[c as usize];
            key_hash(hasher, c.parent, span(names, c.name_off, c.name_len))
        };
        children.insert_unique(h, id, rehash);
        None
    }

    /// `bytes` appended to the names arena: its span.
    fn intern(&mut self, bytes: &[u8]) -> (u32, u16) {
        let off = self.names.len() as u32;
        self.names.extend_from_slice(bytes);
        (off, bytes.len().min(u16::MAX as usize) as u16)
    }

    /// `e`'s attributes (not its name, kind or links) into record `id`, its xattrs appended.
    fn set_attrs(&mut self, id: u32, e: &Entry) {
        let xattr_off = self.xattrs.len() as u32;
        for (k, v) in &e.xattrs {
            self.xattrs.extend_from_slice(&(k.len() as u16).to_le_bytes());
            self.xattrs.extend_from_slice(k.as_bytes());
            self.xattrs.extend_from_slice(&(v.len() as u32).to_le_bytes());
            self.xattrs.extend_from_slice(v);
        }
        let xattr_len = self.xattrs.len() as u32 - xattr_off;
        let id32 = |v: u64| u32::try_from(v).unwrap_or(65534);
        let r = &mut self.recs[id as usize];
        r.size = if EntryKind::from_code(r.kind) == Some(EntryKind::File) { e.size } else { 0 };
        r.header_offset = e.header_offset;
        r.data_offset = e.data_offset;
        r.mtime = e.mtime;
        r.mtime_ns = e.mtime_ns;
        r.uid = id32(e.uid);
        r.gid = id32(e.gid);
        r.dev_major = e.dev_major;
        r.dev_minor = e.dev_minor;
        r.mode = (e.mode & 0o7777) as u16;
        r.xattr_off = xattr_off;
        r.xattr_len = xattr_len;
    }

    /// A new node of `kind` named `name` under `parent` (not yet its child), with `e`'s
    /// attributes; a symlink's target is `e`'s.
    fn new_node(&mut self, parent: u32, name: &str, e: &Entry, kind: EntryKind) -> u32 {
        let (name_off, name_len) = self.intern(name.as_bytes());
        let (target_off, target_len) =
            if kind == EntryKind::Symlink { self.intern(e.link_target.as_bytes()) } else { (name_off, 0) };
        let id = self.recs.len() as u32;
        self.recs.push(Rec {
            size: 0,
            header_offset: 0,
            data_offset: 0,
            mtime: 0,
            parent,
            first_child: 0,
            nchildren: 0,
            name_off,
            target_off,
            xattr_off: 0,
            xattr_len: 0,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            dev_major: 0,
            dev_minor: 0,
            link: NONE,
            name_len,
            target_len,
            mode: 0,
            kind: kind.code(),
            flags: 0,
        });
        self.set_attrs(id, e);
        id
    }

    fn apply(&mut self, mut e: Entry) -> Result<()> {
        if e.name.len() > self.limits.max_path || e.link_target.len() > self.limits.max_path {
            self.skip("path too long", &e.name);
            return Ok(());
        }
        let name = std::mem::take(&mut e.name);
        let parts = normalise(&name);
        if parts.iter().any(|c| c.len() > self.limits.max_component) {
            self.skip("path component too long", &name);
            return Ok(());
        }
        self.bound_xattrs(&mut e, &name);
        self.bytes = self.bytes.saturating_add(name.len() + e.link_target.len() + RECORD_BYTES);
        self.bytes = self.bytes.saturating_add(e.xattrs.iter().map(|(n, v)| n.len() + v.len() + 6).sum::<usize>());
        if self.bytes > self.limits.max_bytes {
            return Err(Error::TooLarge(format!("layer index: more than {} bytes", self.limits.max_bytes)));
        }
        if e.kind == EntryKind::Whiteout {
            e.kind = EntryKind::File;
        }
        let Some((base, dirs)) = parts.split_last() else {
            // The root itself: a directory sets its attributes, anything else is refused.
            if e.kind == EntryKind::Dir {
                self.set_attrs(0, &e);
                *self.flags(0) &= !F_IMPLIED;
            } else {
                self.skip("a non-directory named as the root", &name);
            }
            return Ok(());
        };
        // AUFS metadata: `.wh..wh.plnk/<file>` kept hidden for links; the rest dropped.
        if let Some(i) = dirs.iter().position(|c| c.starts_with(AUFS_PREFIX)) {
            if i == 0 && dirs.len() == 1 && dirs[0] == AUFS_PLNK && e.kind == EntryKind::File {
                let id = self.new_node(0, base, &e, EntryKind::File);
                self.plnk.insert(format!("{AUFS_PLNK}/{base}"), id);
            } else {
                self.skip("AUFS metadata", &name);
            }
            return Ok(());
        }
        // The parent as a runtime's applier finds it: through this layer's symlinks.
        let Some(at) = self.locate(dirs, &name)? else {
            return Ok(());
        };
        if *base == OPAQUE {
            let dir = self.make_dirs(&at);
            *self.flags(dir) |= F_OPAQUE;
            return Ok(());
        }
        if base.starts_with(AUFS_PREFIX) {
            self.skip("AUFS metadata", &name);
            return Ok(());
        }
        if let Some(victim) = base.strip_prefix(WHITEOUT_PREFIX) {
            if victim.is_empty() || victim == "." || victim == ".." {
                self.skip("whiteout of an invalid name", &name);
                return Ok(());
            }
            let dir = self.make_dirs(&at);
            match self.child(dir, victim) {
                Some(id) => {
                    let dir_kind = self.kind_of(id) == EntryKind::Dir;
                    *self.flags(id) |= B_WHITED | if dir_kind { F_OPAQUE } else { 0 };
                }
                None => {
                    let id = self.new_node(dir, victim, &e, EntryKind::Whiteout);
                    *self.flags(id) |= B_WHITED;
                    self.set_child(id);
                }
            }
            return Ok(());
        }
        let link = if e.kind == EntryKind::Hardlink {
            match self.resolve_link(&at, base, &e.link_target)? {
                Ok(l) => Some(l),
                Err(why) => {
                    log::debug!("layer index: hard link {:?} -> {:?} left out: {why}", name, e.link_target);
                    *self.left_out.entry("hard link refused").or_insert(0) += 1;
                    return Ok(());
                }
            }
        } else {
            None
        };
        let dir = self.make_dirs(&at);
        if let (Some(old), EntryKind::Dir) = (self.child(dir, base), e.kind) {
            if self.kind_of(old) == EntryKind::Dir {
                // A directory over a directory: new attributes, same children and opacity.
                self.set_attrs(old, &e);
                *self.flags(old) &= !F_IMPLIED;
                return Ok(());
            }
        }
        let id = self.new_node(dir, base, &e, e.kind);
        if e.kind == EntryKind::File && at.linked {
            // Placed through a symlink: the name as written, for the check of its header.
            let (off, len) = self.intern(parts.join("/").as_bytes());
            let r = &mut self.recs[id as usize];
            (r.target_off, r.target_len) = (off, len);
        }
        match link {
            Some(NodeLink::Node(t)) => self.recs[id as usize].link = t,
            Some(NodeLink::Lower(p)) => {
                let (off, len) = self.intern(p.as_bytes());
                let r = &mut self.recs[id as usize];
                (r.target_off, r.target_len) = (off, len);
                r.flags |= F_LOWER;
            }
            None => {}
        }
        self.replace(id);
        if self.names.len() > u32::MAX as usize / 2 || self.xattrs.len() > u32::MAX as usize / 2 {
            return Err(Error::TooLarge("layer index: arenas past 2 GiB".into()));
        }
        Ok(())
    }

    fn bound_xattrs(&mut self, e: &mut Entry, name: &str) {
        let total: usize = e.xattrs.iter().map(|(n, v)| n.len() + v.len()).sum();
        let too_big = e.xattrs.iter().any(|(_, v)| v.len() > self.limits.max_xattr_value);
        if total > self.limits.max_xattr_bytes || too_big {
            log::debug!("layer index: xattrs of {name:?} dropped: {total} bytes");
            *self.left_out.entry("xattrs over the bound (dropped, entry kept)").or_insert(0) += 1;
            e.xattrs.clear();
        }
    }

    /// Put node `id` in the tree under its parent and name, replacing what is there (a
    /// replaced directory's subtree goes with it; a replaced link source stays, hidden). The
    /// name's whiteout carries over.
    fn replace(&mut self, id: u32) {
        if let Some(old) = self.set_child(id) {
            if self.recs[old as usize].flags & B_WHITED != 0 {
                *self.flags(id) |= B_WHITED;
            }
        }
        if self.recs[id as usize].flags & B_WHITED != 0 && self.kind_of(id) == EntryKind::Dir {
            *self.flags(id) |= F_OPAQUE;
        }
    }

    /// Where the directory path `dirs` leads through this layer's symlinks
    /// ([`rootpath::resolve`]); `None` if the entry `name` is refused there (left out and
    /// counted). The layer's link budget spent is `TooLarge`. A place reached through a link
    /// charges the layer's byte bound for what it adds that the name did not bring: the
    /// directories to make (their names come from link targets, which a link can give many
    /// entries) and the name as written, kept beside a file's path.
    fn locate(&mut self, dirs: &[&str], name: &str) -> Result<Option<Resolved>> {
        match self.walk(dirs)? {
            Ok(at) if at.linked => {
                let made: usize = at.rest.iter().map(|c| c.len() + RECORD_BYTES).sum();
                self.bytes = self.bytes.saturating_add(made + name.len());
                if self.bytes > self.limits.max_bytes {
                    return Err(Error::TooLarge(format!("layer index: more than {} bytes", self.limits.max_bytes)));
                }
                Ok(Some(at))
            }
            Ok(at) => Ok(Some(at)),
            Err(why) => {
                self.skip(why.why(), name);
                Ok(None)
            }
        }
    }

    /// [`rootpath::resolve`] of `dirs` with this layer's bounds and budget; the budget spent is
    /// the layer's error.
    fn walk(&mut self, dirs: &[&str]) -> Result<std::result::Result<Resolved, Refused>> {
        let bounds = Bounds {
            max_hops: self.limits.max_link_hops,
            max_path: self.limits.max_path,
            max_component: self.limits.max_component,
        };
        let mut budget = self.link_budget;
        let r = rootpath::resolve(&*self, dirs, bounds, &mut budget);
        self.link_budget = budget;
        match r {
            Err(Refused::Budget) => Err(Error::TooLarge(format!(
                "layer index: more than {} path components walked through symlinks",
                self.limits.max_link_steps
            ))),
            r => Ok(r),
        }
    }

    /// The directory `at` leads to, its missing directories made (implied), replacing what the
    /// walk found in their place (a whiteout, or a same-layer non-directory: the last entry
    /// wins).
    fn make_dirs(&mut self, at: &Resolved) -> u32 {
        let mut cur = at.node;
        for c in &at.rest {
            cur = match self.child(cur, c) {
                Some(id) if self.kind_of(id) == EntryKind::Dir => id,
                _ => {
                    let id = self.new_node(cur, c, &Entry::dir(c), EntryKind::Dir);
                    *self.flags(id) |= F_IMPLIED;
                    self.replace(id);
                    id
                }
            };
        }
        cur
    }

    /// A hard link's target: an earlier non-directory of this layer (links to links resolved),
    /// or a lower path. Its parent path is resolved through this layer's symlinks, as the link's
    /// own (`at`, with its name `base`); its last component is not followed (a link to a
    /// symlink is to the symlink). Refused: a parent the walk refuses, under a same-layer
    /// non-directory, missing (hidden by a whiteout or an opaque directory here), a directory,
    /// or the link itself. `Err` is the layer's link budget spent.
    fn resolve_link(
        &mut self,
        at: &Resolved,
        base: &str,
        target: &str,
    ) -> Result<std::result::Result<NodeLink, &'static str>> {
        if let Some(&id) = self.plnk.get(target.trim_start_matches('/')) {
            return Ok(Ok(NodeLink::Node(id)));
        }
        let parts = normalise(target);
        let Some((tbase, tdirs)) = parts.split_last() else {
            return Ok(Err("target is the root"));
        };
        let to = match self.walk(tdirs)? {
            Ok(to) => to,
            Err(why) => return Ok(Err(why.why())),
        };
        if to.node == at.node && to.rest == at.rest && *tbase == base {
            return Ok(Err("a link to itself"));
        }
        match to.replaces {
            Some(EntryKind::Whiteout) => return Ok(Err("target whited out")),
            Some(_) => return Ok(Err("target under a non-directory")),
            None => {}
        }
        // An opaque directory hides the lower layers below it, its subdirectories included.
        let hidden = self.up_from(to.node).any(|n| self.recs[n as usize].flags & F_OPAQUE != 0);
        let child = if to.rest.is_empty() { self.child(to.node, tbase) } else { None };
        Ok(match child {
            None if hidden => Err("target hidden by an opaque directory"),
            None => Ok(NodeLink::Lower(self.path_of(&to, tbase))),
            Some(id) => match self.kind_of(id) {
                EntryKind::Whiteout => Err("target whited out"),
                EntryKind::Dir => Err("target is a directory"),
                EntryKind::Hardlink => {
                    let r = &self.recs[id as usize];
                    if r.flags & F_LOWER != 0 {
                        Ok(NodeLink::Lower(
                            String::from_utf8_lossy(span(&self.names, r.target_off, r.target_len)).into_owned(),
                        ))
                    } else if r.link != NONE {
                        Ok(NodeLink::Node(r.link))
                    } else {
                        Err("target is a broken link")
                    }
                }
                _ => Ok(NodeLink::Node(id)),
            },
        })
    }

    /// Node `node` and the directories above it, up to the root included.
    fn up_from(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        let mut next = Some(node);
        std::iter::from_fn(move || {
            let n = next?;
            next = (n != 0).then(|| self.recs[n as usize].parent);
            Some(n)
        })
    }

    /// The path `at` and then `base` name: its node's, the names still to make, `base`.
    fn path_of(&self, at: &Resolved, base: &str) -> String {
        let mut parts: Vec<&str> = self
            .up_from(at.node)
            .filter(|&n| n != 0)
            .map(|n| {
                let r = &self.recs[n as usize];
                std::str::from_utf8(span(&self.names, r.name_off, r.name_len)).unwrap_or("")
            })
            .collect();
        parts.reverse();
        parts.extend(at.rest.iter().map(String::as_str));
        parts.push(base);
        parts.join("/")
    }

    /// Freeze the tree into an index of a decoded tar of `decoded_len` bytes.
    pub fn finish(self, decoded_len: u64) -> Result<LayerIndex> {
        if !self.left_out.is_empty() {
            log::info!("layer index: entries left out: {:?}", self.left_out);
        }
        // `large` (the large-build slot, if taken) is held until the index is frozen.
        let Builder { limits, mut recs, names, xattrs, children, large, .. } = self;
        // Every live child, sorted by (parent, name bytes): each directory's run, in order.
        let mut kids: Vec<u32> = children.into_iter().collect();
        kids.sort_unstable_by(|&a, &b| {
            let (ra, rb) = (&recs[a as usize], &recs[b as usize]);
            ra.parent
                .cmp(&rb.parent)
                .then_with(|| span(&names, ra.name_off, ra.name_len).cmp(span(&names, rb.name_off, rb.name_len)))
        });
        // Breadth-first numbers: `order[pos]` is the node at `pos`, `ids[node]` its position.
        let mut order: Vec<u32> = vec![0];
        let mut ids: Vec<u32> = vec![NONE; recs.len()];
        ids[0] = 0;
        let mut i = 0;
        while i < order.len() {
            let node = order[i];
            let start = kids.partition_point(|&k| recs[k as usize].parent < node);
            let first = order.len() as u32;
            for &child in kids[start..].iter().take_while(|&&k| recs[k as usize].parent == node) {
                ids[child as usize] = order.len() as u32;
                order.push(child);
            }
            let r = &mut recs[node as usize];
            (r.first_child, r.nchildren) = (first, order.len() as u32 - first);
            i += 1;
        }
        drop(kids);
        let visible = order.len() as u32;
        // Hidden sources that a surviving link names.
        let mut wanted: Vec<u32> = order
            .iter()
            .map(|&n| &recs[n as usize])
            .filter(|r| r.kind == EntryKind::Hardlink.code() && r.flags & F_LOWER == 0 && r.link != NONE)
            .map(|r| r.link)
            .filter(|&t| ids[t as usize] == NONE)
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        for t in wanted {
            ids[t as usize] = order.len() as u32;
            order.push(t);
        }
        if order.len() > limits.max_entries.saturating_add(1) {
            return Err(Error::TooLarge(format!("layer index: more than {} entries", limits.max_entries)));
        }
        // Numbers and flags as the index has them, before the records move.
        let (mut lower, mut same) = (Vec::new(), Vec::new());
        for (pos, &node) in order.iter().enumerate() {
            let pos = pos as u32;
            let hidden = pos >= visible;
            let parent = recs[node as usize].parent;
            // Under an opaque directory of this layer, the lower layers' same directory is
            // hidden too: this layer's own subdirectories are opaque (the parent is done first).
            let inherit = !hidden
                && pos > 0
                && recs[node as usize].kind == EntryKind::Dir.code()
                && recs[parent as usize].flags & F_OPAQUE != 0;
            let r = &mut recs[node as usize];
            r.flags &= INDEX_FLAGS;
            if hidden {
                r.flags |= F_HIDDEN;
                (r.parent, r.first_child, r.nchildren) = (0, 0, 0);
            } else {
                r.parent = if pos == 0 { 0 } else { ids[parent as usize] };
                if inherit {
                    r.flags |= F_OPAQUE;
                }
            }
            if r.kind == EntryKind::Hardlink.code() {
                if r.flags & F_LOWER != 0 {
                    lower.push(pos);
                } else if r.link != NONE {
                    r.link = ids[r.link as usize];
                    same.push((r.link, pos));
                }
            } else {
                r.link = NONE;
            }
        }
        // Replaced nodes go after the kept ones; then every record moves to its place.
        let kept = order.len();
        drop(order);
        for (next, id) in (kept as u32..).zip(ids.iter_mut().filter(|id| **id == NONE)) {
            *id = next;
        }
        for i in 0..recs.len() {
            while ids[i] as usize != i {
                let j = ids[i] as usize;
                recs.swap(i, j);
                ids.swap(i, j);
            }
        }
        drop(ids);
        recs.truncate(kept);
        recs.shrink_to_fit();
        let mut index = LayerIndex {
            recs,
            names,
            xattrs,
            lower: Vec::new(),
            same,
            decoded_len,
            visible,
            checked: HeaderChecks::default(),
        };
        index.names.shrink_to_fit();
        index.xattrs.shrink_to_fit();
        lower.sort_by(|&a, &b| index.lower_target(a).cmp(index.lower_target(b)));
        index.lower = lower;
        index.same.sort_unstable();
        drop(large);
        if index.weight() > limits.max_bytes {
            return Err(Error::TooLarge(format!("layer index: more than {} bytes", limits.max_bytes)));
        }
        Ok(index)
    }
}

/// The builder's live tree, as [`rootpath::resolve`] walks it.
impl rootpath::Tree for Builder {
    fn child(&self, dir: u32, name: &str) -> Option<u32> {
        Builder::child(self, dir, name)
    }

    fn kind(&self, node: u32) -> EntryKind {
        self.kind_of(node)
    }

    fn target(&self, node: u32) -> &str {
        let r = &self.recs[node as usize];
        std::str::from_utf8(span(&self.names, r.target_off, r.target_len)).unwrap_or("")
    }

    fn parent(&self, node: u32) -> u32 {
        self.recs[node as usize].parent
    }

    fn name_len(&self, node: u32) -> usize {
        self.recs[node as usize].name_len as usize
    }
}

/// Parse every entry of a tar and apply it to a new [`Builder`], up to the end of the archive.
/// The caller then drains the stream's trailing bytes (`parser.into_inner()`, through the
/// diff_id hash) and calls [`Builder::finish`] with the decoded length. A parse error or a bound
/// passed refuses the whole layer; entries the rules refuse are only left out and counted.
pub fn build<R: Read>(parser: &mut Parser<R>, limits: IndexLimits) -> Result<Builder> {
    let mut b = Builder::new(limits);
    while let Some(raw) = parser.next_entry()? {
        match Entry::from_raw(raw) {
            Ok(e) => b.push(e)?,
            Err((why, name)) => b.skip(why, &name),
        }
    }
    Ok(b)
}

/// Index a whole decoded tar read from `r`, trailing bytes included in the decoded length.
pub fn build_all<R: Read>(r: R, tar_limits: TarLimits, limits: IndexLimits) -> Result<LayerIndex> {
    let mut parser = Parser::with_limits(r, tar_limits);
    let b = build(&mut parser, limits)?;
    let end = parser.position();
    let rest = std::io::copy(&mut parser.into_inner(), &mut std::io::sink())?;
    b.finish(end + rest)
}

impl LayerIndex {
    /// An index of `entries` as if they were a tar in this order: the same-layer rules apply
    /// (see the module note of `build`). Entries with `data_offset` 0 get invented positions (entry `i`:
    /// header at `1024 i`, data at `1024 i + 512`), and the decoded length is past the last.
    /// For tests (the merge's included); a layer's real index comes from [`build`]. Entries the
    /// rules refuse are left out, as from a tar; a bound passed panics (a test's own input).
    pub fn from_entries(entries: Vec<Entry>) -> LayerIndex {
        let mut b = Builder::new(IndexLimits::default());
        let n = entries.len() as u64;
        for (i, mut e) in entries.into_iter().enumerate() {
            if e.data_offset == 0 {
                e.header_offset = 1024 * i as u64;
                e.data_offset = 1024 * i as u64 + 512;
            }
            if let Err(err) = b.push(e) {
                panic!("LayerIndex::from_entries: {err}");
            }
        }
        match b.finish(1024 * n + 1024) {
            Ok(index) => index,
            Err(err) => panic!("LayerIndex::from_entries: {err}"),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod through_symlinks;
