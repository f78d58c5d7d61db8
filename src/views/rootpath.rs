//! Where a layer's entry lands when its parent path crosses a symlink of the same layer.
//!
//! The rules are containerd's applier's (`archive.Apply`: `fs.RootPath` on the parent path,
//! `hardlinkRootPath` on a hard link's target) and umoci's (securejoin), which agree:
//! - Only the *parent* path is resolved; the last component is never followed, so an entry
//!   named as a link replaces it, and a link stays a link.
//! - Components are walked one by one through the tree the layer has made so far (its earlier
//!   entries, in tar order). A symlink's target is walked next in its place: an absolute one
//!   from the layer's root, a relative one from the link's directory; `..` goes up from where
//!   the walk is (the directory a link led to, not the link's name), and never above the root.
//!   Nothing outside the layer is ever looked at, so nothing outside the root can be reached.
//! - A component the layer does not have is a directory to make (a dangling link's target is
//!   made). What is left of the walk after one is taken as written, `..` dropping the last
//!   name still to make.
//! - A component that is a non-directory (not a link): on a walk that followed no link, the
//!   entry replaces it with a directory (the index's same-layer rule); after a link, the entry
//!   is refused (containerd: `mkparent: not a directory`).
//! - Bounds: at most `max_hops` links per path (255, as containerd and umoci: a loop ends there),
//!   the path walked to and what is left to walk at most `max_path` bytes each, a component at
//!   most `max_component` bytes (as a name's), and a budget of components walked after a link
//!   that the whole layer shares.
//!
//! Only this layer's links count: a lower layer's are not seen, as containerd's overlayfs
//! snapshotter and docker's overlay2 apply each layer into a directory of its own (see
//! doc/SEMANTICS.md, "rootfs/").
//!
//! The walk reads the layer through [`Tree`] and knows nothing of the index that implements it;
//! its rules are tested through that builder (`index/build/through_symlinks.rs`).

use crate::views::kind::{AUFS_PREFIX, EntryKind};

/// The tree a layer has made so far, as the walk reads it. Nodes are numbers; the root is 0.
pub(crate) trait Tree {
    /// The live child `name` of the directory node `dir`.
    fn child(&self, dir: u32, name: &str) -> Option<u32>;
    /// What node `node` is.
    fn kind(&self, node: u32) -> EntryKind;
    /// A symlink node's target, as written.
    fn target(&self, node: u32) -> &str;
    /// The directory holding `node` (the root's is the root).
    fn parent(&self, node: u32) -> u32;
    /// Bytes of `node`'s name.
    fn name_len(&self, node: u32) -> usize;
}

/// Bounds of one walk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Links followed, at most.
    pub max_hops: usize,
    /// Bytes of the path walked to, and of what is still to walk, at most.
    pub max_path: usize,
    /// Bytes of one component a link's target gives, at most.
    pub max_component: usize,
}

/// Where a parent path leads.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The deepest directory node the layer has on the way (0, the root, if none).
    pub node: u32,
    /// Names below the last node to make as directories (or, on a literal walk, whose
    /// non-directory to replace with one).
    pub rest: Vec<String>,
    /// The first name of `rest` that the layer has as a whiteout or (on a literal walk) a
    /// non-directory, and what it is there: making the directory replaces it.
    pub replaces: Option<EntryKind>,
    /// Whether a link was followed (the place is not the path as written).
    pub linked: bool,
}

/// Why a walk was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// More links than `max_hops` (a loop, or a chain too long).
    TooManyLinks,
    /// A path longer than `max_path`, or a component of a link's target longer than
    /// `max_component`.
    TooLong,
    /// A link led to a non-directory.
    NotADirectory,
    /// A link led into AUFS metadata (`.wh..wh.*`), which the index drops.
    Aufs,
    /// The layer's budget of steps is spent: the whole layer is refused.
    Budget,
}

impl Refused {
    /// The reason as the index counts entries left out.
    pub fn why(self) -> &'static str {
        match self {
            Refused::TooManyLinks => "parent through too many symlinks",
            Refused::TooLong => "parent through a symlink too long",
            Refused::NotADirectory => "parent through a symlink is not a directory",
            Refused::Aufs => "parent through a symlink into AUFS metadata",
            Refused::Budget => "symlink budget of the layer spent",
        }
    }
}

/// Walk the directory path `dirs` (normalised components) from the root of `tree`, following
/// its symlinks (see the module note). `budget` is what the layer has left of steps walked
/// after a link; this walk spends from it.
pub(crate) fn resolve<T: Tree + ?Sized>(
    tree: &T,
    dirs: &[&str],
    bounds: Bounds,
    budget: &mut usize,
) -> Result<Resolved, Refused> {
    // Where the walk is: a directory node, then names to make below it.
    let mut node = 0u32;
    let mut rest: Vec<String> = Vec::new();
    let mut at_bytes = 0usize;
    // What is left to walk: a link's target components (last first), then the literal ones.
    let mut pending: Vec<&str> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut literal = dirs.iter();
    let mut hops = 0usize;
    let mut replaces = None;
    loop {
        let c = match pending.pop() {
            Some(c) => {
                pending_bytes -= c.len() + 1;
                c
            }
            None => match literal.next() {
                Some(c) => c,
                None => break,
            },
        };
        if hops > 0 {
            if *budget == 0 {
                return Err(Refused::Budget);
            }
            *budget -= 1;
        }
        match c {
            "" | "." => continue,
            ".." => {
                if let Some(name) = rest.pop() {
                    at_bytes -= name.len() + 1;
                    if replaces.is_some_and(|(at, _)| at >= rest.len()) {
                        replaces = None;
                    }
                } else if node != 0 {
                    at_bytes -= tree.name_len(node) + 1;
                    node = tree.parent(node);
                }
                continue;
            }
            _ => {}
        }
        if hops > 0 && c.starts_with(AUFS_PREFIX) {
            return Err(Refused::Aufs);
        }
        if c.len() > bounds.max_component {
            return Err(Refused::TooLong);
        }
        at_bytes += c.len() + 1;
        if at_bytes > bounds.max_path {
            return Err(Refused::TooLong);
        }
        if !rest.is_empty() {
            rest.push(c.to_string());
            continue;
        }
        match tree.child(node, c).map(|id| (id, tree.kind(id))) {
            Some((id, EntryKind::Dir)) => node = id,
            Some((id, EntryKind::Symlink)) => {
                at_bytes -= c.len() + 1;
                hops += 1;
                if hops > bounds.max_hops {
                    return Err(Refused::TooManyLinks);
                }
                let target = tree.target(id);
                if target.starts_with('/') {
                    node = 0;
                    at_bytes = 0;
                }
                let before = pending.len();
                for t in target.split('/').filter(|t| !t.is_empty() && *t != ".") {
                    pending_bytes += t.len() + 1;
                    pending.push(t);
                }
                pending[before..].reverse();
                if pending_bytes > bounds.max_path {
                    return Err(Refused::TooLong);
                }
            }
            None => rest.push(c.to_string()),
            // Whited out here, or a literal non-directory: a directory to make in its place.
            Some((_, k)) if k == EntryKind::Whiteout || hops == 0 => {
                replaces = replaces.or(Some((rest.len(), k)));
                rest.push(c.to_string());
            }
            Some(_) => return Err(Refused::NotADirectory),
        }
    }
    Ok(Resolved { node, rest, replaces: replaces.map(|(_, k)| k), linked: hops > 0 })
}
