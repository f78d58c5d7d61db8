use super::*;
use crate::views::index::{LinkTo, Says};

use crate::views::tar::Parser;
use crate::views::tar::testtar::{checksum, header, pax};
use std::io::Cursor;

fn eoa() -> Vec<u8> {
    vec![0u8; 1024]
}

/// The index of a tar, and what was left out.
fn from_tar(bytes: &[u8], limits: IndexLimits) -> Result<(LayerIndex, BTreeMap<&'static str, usize>)> {
    let mut p = Parser::new(Cursor::new(bytes));
    let b = build(&mut p, limits)?;
    let left = b.left_out().clone();
    Ok((b.finish(bytes.len() as u64)?, left))
}

fn kinds(layer: &LayerIndex, dir: &str) -> Vec<(String, EntryKind)> {
    layer.children(dir).map(|e| (e.name().to_string(), e.kind())).collect()
}

fn present(layer: &LayerIndex, path: &str) -> bool {
    matches!(layer.says(path), Says::Present(_))
}

#[test]
fn duplicates_the_last_wins() {
    let layer = LayerIndex::from_entries(vec![
        Entry::file("a", 1),
        Entry::file("a", 2),
        Entry::dir("d").with_mode(0o700),
        Entry::file("d/x", 1),
        Entry::dir("d").with_mode(0o750).with_owner(5, 6),
        Entry::dir("e"),
        Entry::file("e/y", 1),
        Entry::file("e", 3),
        Entry::symlink("s", "a"),
        Entry::dir("s"),
    ]);
    assert_eq!(layer.get("a").map(|a| a.size()), Some(2));
    let d = layer.get("d").expect("d");
    assert_eq!((d.mode(), d.uid(), d.gid(), d.is_implied()), (0o750, 5, 6, false));
    assert!(present(&layer, "d/x"), "a directory over a directory keeps its children");
    assert_eq!(layer.get("e").map(|e| (e.kind(), e.size())), Some((EntryKind::File, 3)));
    assert!(matches!(layer.says("e/y"), Says::Blocked), "a replaced directory's children go with it");
    assert_eq!(layer.get("s").map(|s| s.kind()), Some(EntryKind::Dir));
    assert_eq!(kinds(&layer, "").len(), 4);
}

#[test]
fn dot_slash_and_absolute_names() {
    let layer = LayerIndex::from_entries(vec![
        Entry::dir("./").with_mode(0o700).with_mtime(9),
        Entry::file("./a", 1),
        Entry::file("/b", 1),
        Entry::file("c/./d", 1),
        Entry::file("e//f/", 1),
        Entry::file("/", 1),
        Entry::file(".", 1),
    ]);
    let names: Vec<String> =
        ["a", "b", "c/d", "e/f"].iter().filter(|p| present(&layer, p)).map(|p| p.to_string()).collect();
    assert_eq!(names, ["a", "b", "c/d", "e/f"]);
    let root = layer.root();
    assert_eq!((root.kind(), root.mode(), root.mtime().0, root.is_implied()), (EntryKind::Dir, 0o700, 9, false));
    assert_eq!(kinds(&layer, "").len(), 4, "non-directories naming the root are refused");
}

#[test]
fn dotdot_is_clamped_at_the_root() {
    let layer = LayerIndex::from_entries(vec![
        Entry::file("../../etc/passwd", 1),
        Entry::file("a/../../b", 1),
        Entry::file("x/y/../z", 1),
        Entry::symlink("../up", "../../../target"),
    ]);
    for p in ["etc/passwd", "b", "x/z", "up"] {
        assert!(present(&layer, p), "{p}");
    }
    assert!(layer.get("x/y").is_none());
    assert_eq!(layer.get("up").and_then(|e| e.symlink_target()), Some("../../../target"), "targets stay as written");
    assert_eq!(kinds(&layer, "").iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["b", "etc", "up", "x"]);
}

#[test]
fn implied_parents_have_no_attributes() {
    let layer =
        LayerIndex::from_entries(vec![Entry::file("a/b/c", 1).with_owner(3, 3), Entry::dir("a").with_mode(0o711)]);
    let b = layer.get("a/b").expect("a/b");
    assert!(b.is_implied() && b.kind() == EntryKind::Dir);
    assert_eq!((b.uid(), b.mtime(), b.header_offset(), b.data_offset()), (0, (0, 0), 0, 0));
    let a = layer.get("a").expect("a");
    assert!(!a.is_implied() && a.mode() == 0o711, "an explicit entry later makes it explicit");
    assert!(layer.root().is_implied());
}

#[test]
fn opaque_marker_before_and_after_siblings_is_the_same() {
    let first = LayerIndex::from_entries(vec![Entry::opaque("d"), Entry::file("d/x", 1), Entry::dir("d")]);
    let last = LayerIndex::from_entries(vec![Entry::dir("d"), Entry::file("d/x", 1), Entry::opaque("d")]);
    for layer in [&first, &last] {
        assert!(layer.get("d").is_some_and(|d| d.is_opaque() && !d.is_implied()));
        assert_eq!(kinds(layer, "d"), [("x".to_string(), EntryKind::File)], "the marker is not an entry");
        assert!(matches!(layer.says("d/lower"), Says::Blocked));
    }
    let root = LayerIndex::from_entries(vec![Entry::opaque(""), Entry::file("a", 1)]);
    assert!(root.root().is_opaque());
    assert!(matches!(root.says("etc"), Says::Blocked));
}

#[test]
fn whiteout_and_recreate_in_one_layer_is_opaque() {
    for order in [
        vec![Entry::whiteout("d"), Entry::dir("d"), Entry::file("d/x", 1)],
        vec![Entry::dir("d"), Entry::file("d/x", 1), Entry::whiteout("d")],
        vec![Entry::whiteout("d"), Entry::file("d/x", 1)],
    ] {
        let layer = LayerIndex::from_entries(order);
        let d = layer.get("d").expect("d");
        assert!(d.kind() == EntryKind::Dir && d.is_opaque(), "{d:?}");
        assert!(present(&layer, "d/x"));
        assert!(matches!(layer.says("d/old"), Says::Blocked));
    }
    for order in [vec![Entry::whiteout("f"), Entry::file("f", 1)], vec![Entry::file("f", 1), Entry::whiteout("f")]] {
        let layer = LayerIndex::from_entries(order);
        assert_eq!(layer.get("f").map(|f| f.kind()), Some(EntryKind::File));
    }
}

#[test]
fn whiteouts_apply_only_below() {
    let layer = LayerIndex::from_entries(vec![
        Entry::file("a", 1),
        Entry::whiteout("a"),
        Entry::whiteout("b"),
        Entry::whiteout("c/d"),
    ]);
    assert!(present(&layer, "a"), "present in the layer that whites it out");
    assert!(matches!(layer.says("b"), Says::WhitedOut));
    assert!(matches!(layer.says("b/x"), Says::Blocked));
    assert!(matches!(layer.says("c/d"), Says::WhitedOut));
    assert!(matches!(layer.says("c/e"), Says::Silent), "c is only implied: lower c/e shows");
    assert!(layer.get("c").is_some_and(|c| c.is_implied() && !c.is_opaque()));
}

#[test]
fn wh_lookalikes_are_ordinary() {
    let names = [".wh", ".whx", ".wh_a", "a.wh.b", "d/.wh"];
    let mut entries: Vec<Entry> = names.iter().map(|n| Entry::file(n, 1)).collect();
    entries.extend([Entry::file(".wh.", 1), Entry::file("d/.wh..", 1), Entry::file("d/.wh...", 1)]);
    let layer = LayerIndex::from_entries(entries);
    for n in names {
        assert_eq!(layer.get(n).map(|e| e.kind()), Some(EntryKind::File), "{n}");
    }
    assert_eq!(kinds(&layer, "d"), [(".wh".to_string(), EntryKind::File)], "whiteouts of '', '.', '..' are ignored");
    assert!(matches!(layer.says("d"), Says::Present(d) if !d.is_opaque()));
}

#[test]
fn aufs_metadata_is_dropped_plnk_files_stay_link_sources() {
    let layer = LayerIndex::from_entries(vec![
        Entry::dir(".wh..wh.plnk"),
        Entry::file(".wh..wh.plnk/1234.56", 7),
        Entry::dir(".wh..wh.orph"),
        Entry::file(".wh..wh.orph/x", 1),
        Entry::file(".wh..wh.aufs", 1),
        Entry::file("d/.wh..wh.other", 1),
        Entry::hardlink("bin/x", ".wh..wh.plnk/1234.56"),
        Entry::hardlink("bin/y", "/.wh..wh.plnk/1234.56"),
    ]);
    assert_eq!(kinds(&layer, ""), [("bin".to_string(), EntryKind::Dir)], "metadata implies no parent either");
    let Some(LinkTo::Entry(id)) = layer.get("bin/x").and_then(|x| x.link()) else {
        panic!("bin/x links the plnk file")
    };
    let src = layer.entry(id).expect("source");
    assert!(src.is_hidden() && src.size() == 7 && src.kind() == EntryKind::File);
    assert_eq!(layer.get("bin/y").and_then(|y| y.link()), Some(LinkTo::Entry(id)));
    assert_eq!(layer.links_to(id).count(), 2);
    assert!(layer.get(".wh..wh.plnk").is_none() && layer.get(".wh..wh.plnk/1234.56").is_none());
}

#[test]
fn a_whiteout_stored_as_a_hardlink_is_a_whiteout() {
    let mut link = header(b"dir/.wh.gone", b'1', 0, false);
    link[157..163].copy_from_slice(b"target");
    checksum(&mut link);
    let fifo = header(b".wh.fifo", b'6', 0, false);
    let bytes = [&link[..], &fifo, &eoa()].concat();
    let (layer, _) = from_tar(&bytes, IndexLimits::default()).expect("index");
    assert!(matches!(layer.says("dir/gone"), Says::WhitedOut));
    assert!(matches!(layer.says("fifo"), Says::WhitedOut));
    assert!(layer.lower_links().next().is_none());
}

#[test]
fn hardlink_to_an_earlier_entry_and_to_a_lower_path() {
    let layer = LayerIndex::from_entries(vec![
        Entry::file("a", 5),
        Entry::hardlink("b", "a"),
        Entry::hardlink("c", "./b"),
        Entry::hardlink("d", "/usr/lib/x"),
        Entry::hardlink("e", "later"),
        Entry::file("later", 1),
        Entry::file("a", 9),
    ]);
    let Some(LinkTo::Entry(orig)) = layer.get("b").and_then(|b| b.link()) else { panic!("b links a") };
    assert_eq!(layer.get("c").and_then(|c| c.link()), Some(LinkTo::Entry(orig)), "a link to a link is the original");
    let old = layer.entry(orig).expect("original");
    assert!(old.is_hidden() && old.size() == 5, "the replaced original stays as the inode");
    assert_eq!(layer.get("a").map(|a| (a.size(), a.is_hidden())), Some((9, false)));
    let mut names: Vec<_> = layer.links_to(orig).map(|l| l.name()).collect();
    names.sort();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(layer.get("d").and_then(|d| d.link()), Some(LinkTo::Lower("usr/lib/x")));
    assert_eq!(layer.get("e").and_then(|e| e.link()), Some(LinkTo::Lower("later")), "not earlier: a lower path");
    assert_eq!(
        layer.lower_links().map(|(l, p)| (l.name(), p)).collect::<Vec<_>>(),
        [("e", "later"), ("d", "usr/lib/x")]
    );
}

#[test]
fn hard_links_no_applier_could_make_are_refused() {
    let (layer, left) = {
        let mut b = Builder::new(IndexLimits::default());
        for e in [
            Entry::dir("real"),
            Entry::file("real/f", 1),
            Entry::hardlink("to-dir", "real"),
            Entry::hardlink("self", "self"),
            Entry::whiteout("gone"),
            Entry::hardlink("to-whiteout", "gone"),
            Entry::opaque("o"),
            Entry::hardlink("under-opaque", "o/lower"),
            Entry::hardlink("under-file", "real/f/x"),
            Entry::hardlink("ok", "real/f"),
        ] {
            b.push(e).expect("push");
        }
        let left = b.left_out().clone();
        (b.finish(0).expect("finish"), left)
    };
    for refused in ["to-dir", "self", "to-whiteout", "under-opaque", "under-file"] {
        assert!(layer.get(refused).is_none(), "{refused}");
    }
    assert!(matches!(layer.get("ok").and_then(|e| e.link()), Some(LinkTo::Entry(_))));
    assert_eq!(left.get("hard link refused"), Some(&5));
}

#[test]
fn entry_under_a_same_layer_file_replaces_it() {
    let layer = LayerIndex::from_entries(vec![Entry::file("f", 1), Entry::file("f/x", 2)]);
    let e = layer.get("f").expect("f");
    assert!(e.kind() == EntryKind::Dir && e.is_implied() && !e.is_opaque());
    assert_eq!(layer.get("f/x").map(|x| x.size()), Some(2));
    assert!(present(&layer, "f/x"));
}

#[test]
fn non_utf8_and_overlong_names_are_left_out_and_counted() {
    let long_component = vec![b'c'; 256];
    let long_path = [b"p/".repeat(2048), b"x".to_vec()].concat();
    let ok_component = vec![b'c'; 255];
    let bytes = [
        header(b"bad\xff", b'0', 0, false).to_vec(),
        pax(b'x', &[("path", &long_component)]),
        header(b"ignored", b'0', 0, false).to_vec(),
        pax(b'x', &[("path", &long_path)]),
        header(b"ignored", b'0', 0, false).to_vec(),
        pax(b'x', &[("path", &ok_component)]),
        header(b"ignored", b'0', 0, false).to_vec(),
        {
            let mut h = header(b"link", b'2', 0, false);
            h[157..160].copy_from_slice(b"\xfe\xfe\xfe");
            checksum(&mut h);
            h.to_vec()
        },
        header(b"good", b'0', 0, false).to_vec(),
        eoa(),
    ]
    .concat();
    let (layer, left) = from_tar(&bytes, IndexLimits::default()).expect("index");
    assert_eq!(kinds(&layer, "").iter().map(|(n, _)| n.len()).collect::<Vec<_>>(), [255, 4]);
    assert_eq!(left.get("name not UTF-8"), Some(&2), "{left:?}");
    assert_eq!(left.get("path component too long"), Some(&1), "{left:?}");
    assert_eq!(left.get("path too long"), Some(&1), "{left:?}");
}

#[test]
fn entries_past_the_bound_refuse_the_layer() {
    let small = IndexLimits { max_entries: 3, ..IndexLimits::default() };
    let tar = |n: usize| {
        let mut v: Vec<u8> = (0..n).flat_map(|i| header(format!("f{i}").as_bytes(), b'0', 0, false)).collect();
        v.extend(eoa());
        v
    };
    assert!(from_tar(&tar(3), small).is_ok());
    assert!(matches!(from_tar(&tar(4), small), Err(Error::TooLarge(_))));
    let tiny = IndexLimits { max_bytes: 4 * RECORD_BYTES, ..IndexLimits::default() };
    assert!(matches!(from_tar(&tar(8), tiny), Err(Error::TooLarge(_))));
    // Implied directories count too: one deep entry cannot make a million records.
    let deep = IndexLimits { max_entries: 3, ..IndexLimits::default() };
    let mut b = Builder::new(deep);
    assert!(matches!(b.push(Entry::file("a/b/c/d/e", 1)), Err(Error::TooLarge(_))));
}

/// Builds past `alone_above` take turns: while one holds the slot, another that grows past
/// it waits, and goes on once the first is frozen (or dropped).
#[test]
fn large_builds_take_turns() {
    let limits = IndexLimits { alone_above: 4 * RECORD_BYTES, ..IndexLimits::default() };
    let grow = |b: &mut Builder, prefix: &str| {
        for i in 0..16 {
            b.push(Entry::file(&format!("{prefix}{i}"), 1)).expect("push");
        }
    };
    let mut first = Builder::new(limits);
    grow(&mut first, "a");
    assert!(first.large.is_some(), "the first build took the slot");
    let (tx, rx) = std::sync::mpsc::channel();
    let second = std::thread::spawn(move || {
        let mut b = Builder::new(limits);
        grow(&mut b, "b");
        tx.send(()).expect("send");
        b.finish(0).map(|i| i.len())
    });
    assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "the second build waited");
    assert_eq!(first.finish(0).map(|i| i.len()).ok(), Some(17));
    rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the second build went on once the first was frozen");
    assert_eq!(second.join().expect("second").ok(), Some(17));
    // A small build never waits, whoever holds the slot.
    let mut held = Builder::new(limits);
    grow(&mut held, "c");
    let mut small = Builder::new(limits);
    small.push(Entry::file("d", 1)).expect("a small build goes on");
    drop(held);
}

/// overlayfs reads `trusted.overlay.*` (and, mounted `userxattr`, `user.overlay.*`) of its
/// lower layers as its own metadata: a layer's are never kept, so `rootfs/` as a `lowerdir`
/// shows what the image holds (a `metacopy` made reads EPERM, an `opaque` hid other lowers).
#[test]
fn overlayfs_metadata_xattrs_are_never_kept() {
    let bytes = [
        pax(
            b'x',
            &[
                ("SCHILY.xattr.trusted.overlay.metacopy", b"\0\x04\0\0"),
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                ("SCHILY.xattr.user.overlay.redirect", b"/elsewhere"),
                ("SCHILY.xattr.trusted.overlayish", b"kept: another name"),
                ("SCHILY.xattr.user.k", b"v"),
            ],
        ),
        header(b"f", b'0', 0, false).to_vec(),
        eoa(),
    ]
    .concat();
    let (layer, _) = from_tar(&bytes, IndexLimits::default()).expect("index");
    let names: Vec<String> = layer.get("f").expect("f").xattrs().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, ["trusted.overlayish", "user.k"]);
}

#[test]
fn xattrs_past_the_bound_are_dropped() {
    let limits = IndexLimits { max_xattr_bytes: 31, max_xattr_value: 16, ..IndexLimits::default() };
    let bytes = [
        pax(b'x', &[("SCHILY.xattr.user.a", b"0123456789"), ("SCHILY.xattr.security.selinux", b"ctx")]),
        header(b"kept", b'0', 0, false).to_vec(),
        pax(b'x', &[("SCHILY.xattr.user.a", b"0123456789"), ("SCHILY.xattr.user.b", b"0123456789")]),
        header(b"total", b'0', 0, false).to_vec(),
        pax(b'x', &[("SCHILY.xattr.user.big", &[7u8; 17]), ("SCHILY.xattr.system.nfs4_acl", b"x")]),
        header(b"value", b'0', 0, false).to_vec(),
        eoa(),
    ]
    .concat();
    let (layer, left) = from_tar(&bytes, limits).expect("index");
    let xattrs =
        |p: &str| layer.get(p).map(|e| e.xattrs().map(|(n, v)| (n.to_string(), v.to_vec())).collect::<Vec<_>>());
    assert_eq!(
        xattrs("kept"),
        Some(vec![("user.a".to_string(), b"0123456789".to_vec())]),
        "security.selinux is never kept"
    );
    assert_eq!(xattrs("total"), Some(vec![]));
    assert_eq!(xattrs("value"), Some(vec![]));
    assert_eq!(left.get("xattrs over the bound (dropped, entry kept)"), Some(&2));
}

#[test]
fn sparse_unknown_and_over_32_bit_owners() {
    let mut big = header(b"big", b'0', 0, false);
    big[108..116].fill(0);
    big[108] = 0x80;
    big[111] = 1; // uid 2^32
    checksum(&mut big);
    let bytes = [
        header(b"sparse", b'S', 0, true).to_vec(),
        header(b"volume", b'V', 0, false).to_vec(),
        header(b"contig", b'7', 0, false).to_vec(),
        header(b"dumpdir", b'D', 0, true).to_vec(),
        big.to_vec(),
        eoa(),
    ]
    .concat();
    let (layer, left) = from_tar(&bytes, IndexLimits::default()).expect("index");
    assert_eq!(
        kinds(&layer, ""),
        [
            ("big".to_string(), EntryKind::File),
            ("contig".to_string(), EntryKind::File),
            ("dumpdir".to_string(), EntryKind::Dir)
        ]
    );
    assert_eq!(layer.get("big").map(|b| b.uid()), Some(65534));
    assert_eq!((left.get("sparse"), left.get("unknown typeflag")), (Some(&1), Some(&1)));
}

#[test]
fn a_gnu_tar_indexes_with_positions_that_point_at_the_data() {
    for format in ["gnu", "pax", "ustar"] {
        let (_dir, bytes) = crate::views::tar::testtar::gnu_tar(format, format != "ustar");
        let layer = build_all(Cursor::new(&bytes), TarLimits::default(), IndexLimits::default()).expect("index");
        assert_eq!(layer.decoded_len(), bytes.len() as u64, "{format}");
        let f = layer.get("d/f").expect("d/f");
        assert_eq!((f.size(), f.mode()), (1500, 0o4750), "{format}");
        assert_eq!(&bytes[f.data_offset() as usize..][..1500], &[7u8; 1500][..], "{format}");
        // hello and d/h: one file, one link to it, whichever comes first.
        let (h, hello) = (layer.get("d/h").expect("d/h"), layer.get("hello").expect("hello"));
        let (file, link) = if h.kind() == EntryKind::File { (h, hello) } else { (hello, h) };
        assert_eq!(link.link(), Some(LinkTo::Entry(file.id())), "{format}");
        assert_eq!(&bytes[file.data_offset() as usize..][..12], b"hello world\n", "{format}");
        assert_eq!(layer.get("d/s").and_then(|s| s.symlink_target()), Some("../hello"), "{format}");
        assert!(!layer.root().is_implied(), "{format}: GNU tar writes ./");
        if format != "ustar" {
            assert_eq!(layer.get("fifo").map(|f| f.kind()), Some(EntryKind::Fifo), "{format}");
            assert_eq!(layer.get("longlink").and_then(|l| l.symlink_target()).map(str::len), Some(200));
        }
    }
}

#[test]
fn a_directory_under_an_opaque_one_hides_lower_layers_too() {
    // Found by lazy_merge_equals_an_eager_apply: the root made opaque and `a` re-created
    // must hide a lower `a/a`, since the lower `a` is hidden.
    let layer =
        LayerIndex::from_entries(vec![Entry::opaque(""), Entry::dir("a"), Entry::opaque("d"), Entry::file("d/e/f", 1)]);
    assert!(matches!(layer.says("a/a"), Says::Blocked));
    assert!(matches!(layer.says("d/e/lower"), Says::Blocked));
    assert!(layer.get("a").is_some_and(|a| a.is_opaque()), "the merge stops at a's floor here");
    assert!(layer.get("d/e").is_some_and(|e| e.is_opaque()));
}

#[test]
fn a_hardlink_to_a_lower_path_under_an_opaque_ancestor_is_refused() {
    let mut b = Builder::new(IndexLimits::default());
    for e in [Entry::opaque("d"), Entry::dir("d/e"), Entry::hardlink("l", "d/e/lower"), Entry::hardlink("m", "x/lower")]
    {
        b.push(e).expect("push");
    }
    let layer = b.finish(0).expect("finish");
    assert!(layer.get("l").is_none(), "d/e/lower is hidden in this layer by d");
    assert_eq!(layer.get("m").and_then(|m| m.link()), Some(LinkTo::Lower("x/lower")));
}
