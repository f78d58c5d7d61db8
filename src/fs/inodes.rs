//! Inode numbers for nodes, both ways: handed out on first lookup, freed when the kernel forgets
//! them, never reused while mounted ([`Inodes`]). What a node is lives in `layout`.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use super::Attr;
use crate::layout::{Node, Root};
use crate::sync;

pub const ROOT_INO: u64 = 1;

/// Inode numbers for nodes, both ways, for as long as the kernel holds them.
///
/// Each successful `lookup` reply hands the kernel one reference to an inode ([`Inodes::lookup`]
/// counts it); the kernel gives references back with `forget` ([`Inodes::forget`]), and an
/// inode whose count falls to zero is dropped from the table. A node is a value naming what it
/// shows, so a dropped one is re-created identically when its name is looked up again, under a
/// new number: numbers are never reused while mounted, so a number the kernel still holds (or
/// a stale one) never names another node. Directory listings report the number of a node the
/// kernel holds, and for one it does not, a fresh number that is not kept (`d_ino` is
/// informational; `stat` is what names the inode), so a plain listing of a large directory
/// allocates nothing here; a listing read with attributes (READDIRPLUS) hands out a reference
/// per entry, as lookups do. Each held inode keeps the attributes the kernel was last told of
/// it ([`Inodes::told`]): an entry without attributes of its own at hand repeats them, since
/// the kernel takes an entry's attributes for its inode. The root is held for the life of the
/// mount.
pub struct Inodes {
    inner: RwLock<Table>,
}

struct Table {
    by_node: HashMap<Node, u64>,
    by_ino: HashMap<u64, Held>,
    /// The next number to hand out; never goes back.
    next: u64,
    /// The most inodes held at once, for the log at unmount.
    peak: usize,
}

struct Held {
    node: Node,
    /// References the kernel holds (lookups answered, minus those forgotten).
    lookups: u64,
    /// The attributes the kernel was last told of this inode ([`Inodes::told`]).
    told: Mutex<Option<Attr>>,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut by_node = HashMap::new();
        by_node.insert(Node::Root(Root), ROOT_INO);
        let mut by_ino = HashMap::new();
        by_ino.insert(ROOT_INO, Held { node: Node::Root(Root), lookups: 1, told: Mutex::default() });
        Inodes { inner: RwLock::new(Table { by_node, by_ino, next: ROOT_INO + 1, peak: 1 }) }
    }
}

impl Inodes {
    /// The number of `node` for a `lookup` reply: the one it has if the kernel holds it, else a
    /// new one; either way the kernel now holds one more reference to it.
    pub fn lookup(&self, node: &Node) -> u64 {
        let mut w = sync::write(&self.inner);
        if let Some(&ino) = w.by_node.get(node) {
            if let Some(h) = w.by_ino.get_mut(&ino) {
                h.lookups += 1;
            }
            return ino;
        }
        let ino = w.next;
        w.next += 1;
        w.by_node.insert(node.clone(), ino);
        w.by_ino.insert(ino, Held { node: node.clone(), lookups: 1, told: Mutex::default() });
        w.peak = w.peak.max(w.by_ino.len());
        ino
    }

    /// The kernel dropped `n` references to `ino`; at zero the inode is freed (never the root).
    /// Whether it was freed now.
    pub fn forget(&self, ino: u64, n: u64) -> bool {
        if ino == ROOT_INO {
            return false;
        }
        let mut w = sync::write(&self.inner);
        let Some(h) = w.by_ino.get_mut(&ino) else { return false };
        h.lookups = h.lookups.saturating_sub(n);
        if h.lookups == 0 {
            if let Some(h) = w.by_ino.remove(&ino) {
                w.by_node.remove(&h.node);
                return true;
            }
        }
        false
    }

    /// A number for `node` in a directory listing, which gives the kernel no reference: the
    /// number it has if held, else a fresh one that is not kept.
    pub fn listed(&self, node: &Node) -> u64 {
        if let Some(&ino) = sync::read(&self.inner).by_node.get(node) {
            return ino;
        }
        let mut w = sync::write(&self.inner);
        if let Some(&ino) = w.by_node.get(node) {
            return ino;
        }
        let ino = w.next;
        w.next += 1;
        ino
    }

    /// One more reference to `ino` if the kernel holds it (a listing read with attributes
    /// handed it out again); whether it did.
    pub fn hold(&self, ino: u64) -> bool {
        let mut w = sync::write(&self.inner);
        match w.by_ino.get_mut(&ino) {
            Some(h) if ino != ROOT_INO => {
                h.lookups += 1;
                true
            }
            _ => false,
        }
    }

    /// The number of `node` if the kernel holds it; no reference is counted.
    pub fn number(&self, node: &Node) -> Option<u64> {
        sync::read(&self.inner).by_node.get(node).copied()
    }

    /// The kernel was told `attr` of inode `attr.ino` (a lookup's, a getattr's or a listing's
    /// answer): its inode has those attributes now.
    pub fn told(&self, attr: &Attr) {
        if let Some(h) = sync::read(&self.inner).by_ino.get(&attr.ino) {
            *sync::lock(&h.told) = Some(attr.clone());
        }
    }

    /// The attributes the kernel was last told of inode `ino`, if it holds it.
    pub fn last_told_ino(&self, ino: u64) -> Option<Attr> {
        let r = sync::read(&self.inner);
        sync::lock(&r.by_ino.get(&ino)?.told).clone()
    }

    /// The attributes the kernel was last told of `node`'s inode, if it holds one.
    pub fn last_told(&self, node: &Node) -> Option<Attr> {
        let r = sync::read(&self.inner);
        let h = r.by_ino.get(r.by_node.get(node)?)?;
        sync::lock(&h.told).clone()
    }

    pub fn node(&self, ino: u64) -> Option<Node> {
        sync::read(&self.inner).by_ino.get(&ino).map(|h| h.node.clone())
    }

    /// Inodes held now (the root included), and the most held at once.
    pub fn held(&self) -> (usize, usize) {
        let r = sync::read(&self.inner);
        (r.by_ino.len(), r.peak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Namespace;

    fn ns(path: impl Into<String>) -> Node {
        Node::Namespace(Namespace { path: path.into() })
    }

    #[test]
    fn inode_numbers_are_stable_while_held_and_freed_when_forgotten() {
        let inodes = Inodes::default();
        assert_eq!(inodes.lookup(&Node::Root(Root)), ROOT_INO);
        let a = inodes.lookup(&ns("a"));
        let b = inodes.lookup(&Node::Tags(crate::layout::Tags { repo: "a".into() }));
        assert_ne!(a, b);
        assert_eq!(inodes.lookup(&ns("a")), a, "same node, same number while held");
        assert_eq!(inodes.node(a), Some(ns("a")));
        assert_eq!(inodes.node(0), None);
        assert_eq!(inodes.node(9999), None);
        assert_eq!(inodes.held(), (3, 3));
        // Two lookups of `a`: one forget leaves it held, the second frees it.
        inodes.forget(a, 1);
        assert_eq!(inodes.node(a), Some(ns("a")));
        inodes.forget(a, 1);
        assert_eq!(inodes.node(a), None);
        assert_eq!(inodes.held(), (2, 3));
        // Looked up again, the same node comes back under a new number: a stale `a` names nothing.
        let a2 = inodes.lookup(&ns("a"));
        assert_ne!(a2, a);
        assert_eq!(inodes.node(a2), Some(ns("a")));
        assert_eq!(inodes.node(a), None);
        // Forgetting more than was looked up, or an unknown or the root inode, is harmless.
        inodes.forget(b, 5);
        inodes.forget(b, 1);
        inodes.forget(12345, 1);
        inodes.forget(ROOT_INO, 10);
        assert_eq!(inodes.node(ROOT_INO), Some(Node::Root(Root)));
        assert_eq!(inodes.held(), (2, 3));
        // Listing numbers: the held one for a held node, a fresh unkept one otherwise.
        assert_eq!(inodes.listed(&ns("a")), a2);
        let listed = inodes.listed(&ns("zzz"));
        assert!(listed > a2 && inodes.node(listed).is_none());
        assert_eq!(inodes.held(), (2, 3));
    }

    #[test]
    fn a_hundred_thousand_lookups_forgotten_leave_the_table_as_it_was() {
        let inodes = Inodes::default();
        let inos: Vec<u64> = (0..100_000).map(|i| inodes.lookup(&ns(format!("a{i}")))).collect();
        assert_eq!(inodes.held(), (100_001, 100_001));
        for ino in inos {
            inodes.forget(ino, 1);
        }
        assert_eq!(inodes.held(), (1, 100_001));
    }
}
