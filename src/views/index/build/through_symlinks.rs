use std::collections::BTreeMap;

use crate::views::index::{Builder, Entry, EntryKind, IndexLimits, LayerIndex, LinkTo, Says};

/// The index of `entries` and what was left out, by reason.
fn built(entries: Vec<Entry>, limits: IndexLimits) -> (LayerIndex, BTreeMap<&'static str, usize>) {
    let mut b = Builder::new(limits);
    for e in entries {
        b.push(e).expect("push");
    }
    let left = b.left_out().clone();
    (b.finish(0).expect("finish"), left)
}

fn index(entries: Vec<Entry>) -> LayerIndex {
    built(entries, IndexLimits::default()).0
}

fn kind(layer: &LayerIndex, path: &str) -> Option<EntryKind> {
    layer.get(path).map(|e| e.kind())
}

fn size(layer: &LayerIndex, path: &str) -> Option<u64> {
    layer.get(path).filter(|e| e.kind() == EntryKind::File).map(|e| e.size())
}

/// A chain `c0 -> c1 -> … -> c<n-1> -> /d` of `n` links, then `c0/f`.
fn chain(n: usize) -> Vec<Entry> {
    let mut v = vec![Entry::dir("d")];
    v.extend((0..n - 1).map(|i| Entry::symlink(&format!("c{i}"), &format!("c{}", i + 1))));
    v.push(Entry::symlink(&format!("c{}", n - 1), "/d"));
    v.push(Entry::file("c0/f", 7));
    v
}

/// containerd's `archive.Apply` and umoci: the parent path is resolved through the links the
/// layer has made so far (absolute targets and `..` confined to the root), the last
/// component never; the link stays a link.
#[test]
fn an_entry_under_a_same_layer_symlink_lands_where_it_points() {
    let layer = index(vec![
        Entry::dir("etc"),
        Entry::file("etc/hosts", 1),
        Entry::symlink("ln", "/etc"),
        Entry::file("ln/passwd", 2),
        Entry::dir("a/b"),
        Entry::symlink("a/b/rel", "../../etc"),
        Entry::file("a/b/rel/x", 3),
        Entry::symlink("a/up", "../../../../etc"),
        Entry::file("a/up/y", 4),
        Entry::symlink("rl", "/"),
        Entry::file("rl/top", 5),
        Entry::symlink("m/mid", "/b"),
        Entry::file("m/mid/c/f", 6),
    ]);
    assert_eq!(kind(&layer, "ln"), Some(EntryKind::Symlink), "the link stays a link");
    assert_eq!(layer.get("ln").and_then(|e| e.symlink_target()), Some("/etc"));
    assert_eq!(size(&layer, "etc/passwd"), Some(2), "an absolute target, from the layer's root");
    assert_eq!(size(&layer, "etc/x"), Some(3), "a relative target, from the link's directory");
    assert_eq!(size(&layer, "etc/y"), Some(4), "`..` past the root stays at the root");
    assert_eq!(size(&layer, "top"), Some(5), "a link to the root");
    assert_eq!(size(&layer, "b/c/f"), Some(6), "a link in the middle of the path");
    // The name as written stays beside the path, for the check of the header at open, and
    // through the index's file format.
    assert_eq!(layer.get("etc/passwd").and_then(|e| e.tar_name()), Some("ln/passwd"));
    assert_eq!(layer.get("etc/hosts").and_then(|e| e.tar_name()), None);
    let diff_id = crate::digest::Digest::of(crate::digest::Algorithm::Sha256, b"layer");
    let (_, back) = crate::views::index::decode(&crate::views::index::encode(&layer, &diff_id)).expect("decode");
    assert_eq!(back.get("etc/passwd").and_then(|e| e.tar_name()), Some("ln/passwd"));
    assert_eq!(back, layer);
    let b = layer.get("b").expect("b");
    assert!(b.kind() == EntryKind::Dir && b.is_implied(), "missing directories are implied");
    for literal in ["ln/passwd", "a/b/rel/x", "a/up/y", "rl/top", "m/mid/c/f"] {
        assert!(layer.get(literal).is_none(), "{literal} is not a literal path of the layer");
    }
    assert_eq!(layer.children("etc").map(|e| e.name().to_string()).collect::<Vec<_>>(), ["hosts", "passwd", "x", "y"]);
}

#[test]
fn chains_links_to_links_and_dangling_links_resolve_as_containerd_does() {
    let layer = index(vec![
        Entry::dir("d"),
        Entry::symlink("l1", "l2"),
        Entry::symlink("l2", "/l3"),
        Entry::symlink("l3", "d"),
        Entry::file("l1/f", 1),
        Entry::symlink("dang", "/nowhere/deeper"),
        Entry::file("dang/f", 2),
        // `..` after a link applies to where the link led (containerd and umoci agree).
        Entry::dir("deep/dir"),
        Entry::symlink("x", "/deep/dir"),
        Entry::symlink("dd", "x/../y"),
        Entry::file("dd/f", 3),
    ]);
    assert_eq!(size(&layer, "d/f"), Some(1), "a chain of three links");
    assert_eq!(size(&layer, "nowhere/deeper/f"), Some(2), "a dangling link's target is made");
    assert!(layer.get("nowhere/deeper").is_some_and(|e| e.is_implied()));
    assert_eq!(size(&layer, "deep/y/f"), Some(3), "`..` of the directory x led to");
    assert!(layer.get("y").is_none());

    // `..` after a name still to make drops it (as containerd's lexical join does), and
    // gives its bytes back: a long detour into nothing is no longer path than its end.
    let detour = format!("{}{}", "z/".repeat(750), "../".repeat(750));
    let layer = index(vec![
        Entry::symlink("d1", &format!("/{detour}d2")),
        Entry::symlink("d2", &format!("{detour}d3")),
        Entry::symlink("d3", &format!("{detour}home")),
        Entry::file("d1/f", 4),
        Entry::whiteout("gone"),
        Entry::file("keep", 1),
        Entry::symlink("up", "gone/.."),
        Entry::hardlink("h", "up/keep"),
    ]);
    assert_eq!(size(&layer, "home/f"), Some(4), "three detours of 1,500 bytes each, into nothing and back");
    assert!(layer.get("z").is_none());
    let keep = layer.get("keep").expect("keep").id();
    assert_eq!(layer.get("h").and_then(|e| e.link()), Some(LinkTo::Entry(keep)), "a whiteout walked out of");
}

#[test]
fn only_the_links_made_so_far_count_and_an_entry_replaces_a_link_by_its_own_name() {
    let layer = index(vec![
        // Before the link: a literal directory, replaced by the link with what it held.
        Entry::file("ln/early", 1),
        Entry::symlink("ln", "/etc"),
        Entry::dir("etc"),
        // A directory entry named as a link replaces it (the last component is not followed).
        Entry::symlink("s", "/etc"),
        Entry::dir("s"),
        Entry::file("s/own", 2),
    ]);
    assert_eq!(kind(&layer, "ln"), Some(EntryKind::Symlink));
    assert!(layer.get("etc/early").is_none());
    assert_eq!(kind(&layer, "s"), Some(EntryKind::Dir));
    assert_eq!(size(&layer, "s/own"), Some(2));
    assert!(layer.get("etc/own").is_none());
}

/// A whiteout or an opaque marker under a symlinked parent applies where the link points.
#[test]
fn whiteouts_and_opaque_markers_follow_the_parent_link() {
    let layer = index(vec![
        Entry::symlink("ln", "/etc"),
        Entry::whiteout("ln/old"),
        Entry::symlink("lo", "o"),
        Entry::opaque("lo"),
        Entry::file("lo/new", 1),
    ]);
    assert!(matches!(layer.says("etc/old"), Says::WhitedOut));
    assert!(matches!(layer.says("o"), Says::Present(e) if e.is_opaque()));
    assert!(matches!(layer.says("o/lower"), Says::Blocked));
    assert_eq!(size(&layer, "o/new"), Some(1));
    assert_eq!(kind(&layer, "lo"), Some(EntryKind::Symlink));
}

/// containerd's `hardlinkRootPath`: a hard link's target has its parent resolved the same
/// way (the link to a symlink is to the symlink itself), and so has the link's own name.
#[test]
fn hard_links_resolve_their_target_and_their_own_parent() {
    let layer = index(vec![
        Entry::dir("real"),
        Entry::file("real/f", 4),
        Entry::symlink("sl", "real"),
        Entry::hardlink("h", "sl/f"),
        Entry::hardlink("sl/h2", "real/f"),
        Entry::hardlink("to-link", "sl"),
        Entry::hardlink("lower", "sl/not-here"),
        Entry::hardlink("real/self", "sl/self"),
    ]);
    let f = layer.get("real/f").expect("real/f").id();
    assert_eq!(layer.get("h").and_then(|e| e.link()), Some(LinkTo::Entry(f)));
    assert_eq!(layer.get("real/h2").and_then(|e| e.link()), Some(LinkTo::Entry(f)));
    let sl = layer.get("sl").expect("sl").id();
    assert_eq!(layer.get("to-link").and_then(|e| e.link()), Some(LinkTo::Entry(sl)));
    assert_eq!(layer.get("lower").and_then(|e| e.link()), Some(LinkTo::Lower("real/not-here")));
    assert!(layer.get("real/self").is_none(), "a link to itself, through the link");
}

/// What containerd and umoci refuse (the whole image fails there) is left out, entry by
/// entry, and counted: a loop, more than 255 links on one path, a link to a file.
#[test]
fn a_loop_a_chain_past_255_links_and_a_link_to_a_file_refuse_the_entry() {
    let (layer, left) = built(
        vec![
            Entry::symlink("loop1", "loop2"),
            Entry::symlink("loop2", "loop1"),
            Entry::file("loop1/f", 1),
            Entry::file("hosts", 1),
            Entry::symlink("tofile", "/hosts"),
            Entry::file("tofile/x", 1),
            Entry::symlink("thru", "/hosts/deeper"),
            Entry::file("thru/y", 1),
            Entry::hardlink("hl", "loop1/f"),
            Entry::symlink("aufs", "/.wh..wh.plnk"),
            Entry::file("aufs/x", 1),
            Entry::file("after", 1),
        ],
        IndexLimits::default(),
    );
    assert!(layer.get("loop1").is_some_and(|e| e.kind() == EntryKind::Symlink));
    assert_eq!(kind(&layer, "hosts"), Some(EntryKind::File), "a link's target is never replaced");
    assert!(layer.get("hl").is_none());
    assert_eq!(size(&layer, "after"), Some(1), "the rest of the layer stays");
    assert_eq!(left.get("parent through too many symlinks"), Some(&1), "{left:?}");
    assert_eq!(left.get("parent through a symlink is not a directory"), Some(&2), "{left:?}");
    assert_eq!(left.get("hard link refused"), Some(&1), "{left:?}");
    assert_eq!(left.get("parent through a symlink into AUFS metadata"), Some(&1), "{left:?}");
    assert!(layer.get(".wh..wh.plnk").is_none(), "no AUFS directory is made");

    let (ok, left) = built(chain(255), IndexLimits::default());
    assert_eq!(size(&ok, "d/f"), Some(7), "255 links, as containerd and umoci allow: {left:?}");
    let (deep, left) = built(chain(256), IndexLimits::default());
    assert!(deep.get("d/f").is_none());
    assert_eq!(left.get("parent through too many symlinks"), Some(&1), "{left:?}");
}

/// Resolution is bounded: a path a link makes longer than a path may be is refused; the
/// work one layer may spend following links has a bound, past which the layer is refused.
#[test]
fn resolution_is_bounded_per_path_and_per_layer() {
    let long = format!("/{}", "d/".repeat(1500));
    let (layer, left) = built(
        vec![
            Entry::symlink("a", &long),
            Entry::file("a/g", 1),
            // 3,000 bytes through `a`, then 1,200 more: past 4,096.
            Entry::symlink("b", &format!("a/{}", "e/".repeat(600))),
            Entry::file("b/f", 1),
        ],
        IndexLimits::default(),
    );
    assert_eq!(left.get("parent through a symlink too long"), Some(&1), "{left:?}");
    assert!(layer.get(&format!("{}g", &long[1..])).is_some(), "a 3000-byte path is fine");

    // A component of a link's target is bounded as a name's is.
    let (layer, left) = built(
        vec![Entry::symlink("wide", &format!("/{}", "w".repeat(256))), Entry::file("wide/f", 1)],
        IndexLimits::default(),
    );
    assert_eq!(left.get("parent through a symlink too long"), Some(&1), "{left:?}");
    assert!(layer.get("wide").is_some_and(|e| e.kind() == EntryKind::Symlink));

    // One link target made into directories again and again (its first component a link
    // to a new place each time) is charged to the layer's byte bound, though the entries
    // are short.
    let n = "n".repeat(200);
    let mut again = vec![Entry::symlink("a", &format!("/{}", vec![n.as_str(); 16].join("/")))];
    for i in 0..1000 {
        again.push(Entry::symlink(&n, &format!("/m{i}")));
        again.push(Entry::file(&format!("a/f{i}"), 1));
    }
    let small = IndexLimits { max_bytes: 1 << 20, ..IndexLimits::default() };
    let mut b = Builder::new(small);
    let refused = again.into_iter().map(|e| b.push(e)).find_map(|r| r.err());
    let err = refused.expect("names made through a link count against the byte bound");
    assert_eq!(err.errno(), libc::EFBIG, "{err}");

    let tight = IndexLimits { max_link_steps: 1000, ..IndexLimits::default() };
    let mut b = Builder::new(tight);
    let mut err = None;
    for e in chain(200).into_iter().chain((0..10).map(|i| Entry::file(&format!("c0/g{i}"), 1))) {
        if let Err(e) = b.push(e) {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the layer is refused past its link budget");
    assert_eq!(err.errno(), libc::EFBIG, "{err}");
}
