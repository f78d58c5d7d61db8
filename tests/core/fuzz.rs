//! Property tests (fuzzing, bounded so they run in CI): the parsers that read what a registry
//! sends never panic, and what they accept is safe to use as a file name or a URL part.
//! Crashes found here stay as regression cases in the unit tests (for example the non-ASCII
//! `WWW-Authenticate` case in `registry::auth::tests`).

use proptest::prelude::*;
use regfs::digest::Digest;
use regfs::manifest;
use regfs::media;
use regfs::names;
use regfs::registry::{auth, endpoint, link};
use regfs::views::index::EntryKind;
use regfs::views::index::{self, IndexLimits, LayerIndex};
use regfs::views::merge::{Found, LayerSource, Merge};
use regfs::views::tar::{Parser, TarLimits};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::Arc;

fn config() -> ProptestConfig {
    // REGFS_FUZZ_CASES=100000 for a longer run by hand.
    let cases = std::env::var("REGFS_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// JSON values shaped like manifests: the right keys, with values of any shape.
fn manifest_like() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        "[a-z0-9:/.+_-]{0,80}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(format!("sha256:{}", "a".repeat(64)))),
        Just(serde_json::Value::from(media::OCI_MANIFEST)),
        Just(serde_json::Value::from(media::OCI_INDEX)),
        Just(serde_json::Value::from(media::DOCKER_SCHEMA2)),
        Just(serde_json::Value::from(media::DOCKER_LIST)),
    ];
    let keys = prop_oneof![
        Just("schemaVersion"),
        Just("mediaType"),
        Just("config"),
        Just("layers"),
        Just("manifests"),
        Just("digest"),
        Just("size"),
        Just("platform"),
        Just("os"),
        Just("architecture"),
        Just("variant"),
        Just("fsLayers"),
        Just("blobSum"),
        Just("signatures"),
        Just("protected"),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(keys.clone().prop_map(str::to_string), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(media::OCI_MANIFEST.to_string())),
        Just(Some(media::OCI_INDEX.to_string())),
        Just(Some(media::DOCKER_SCHEMA1_SIGNED.to_string())),
        Just(Some(media::DOCKER_LIST.to_string())),
        Just(Some("application/json; charset=utf-8".to_string())),
        "[ -~]{0,40}".prop_map(Some),
    ]
}

fn check_manifest(m: &manifest::Manifest) {
    // Index entries' link names.
    for (name, _) in &m.children {
        assert!(!name.is_empty() && !name.contains('/') && !name.contains('\0') && !name.starts_with('.'), "{name:?}");
    }
    for (name, _) in &m.layers {
        assert!(!name.contains('/') && !name.starts_with('.'), "{name:?}");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_dispatcher_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048), ct in content_type()) {
        if let Ok(m) = manifest::parse(&bytes, ct.as_deref(), "fuzz") {
            check_manifest(&m);
        }
    }

    #[test]
    fn the_dispatcher_never_panics_on_manifest_shaped_json(doc in manifest_like(), ct in content_type()) {
        let bytes = serde_json::to_vec(&doc).expect("json");
        if let Ok(m) = manifest::parse(&bytes, ct.as_deref(), "fuzz") {
            check_manifest(&m);
        }
    }

    #[test]
    fn www_authenticate_never_panics(header in "\\PC{0,200}") {
        for c in auth::parse_challenges(&header) {
            prop_assert!(!c.scheme.is_empty());
        }
    }

    #[test]
    fn www_authenticate_reads_what_it_is_given(realm in "[ -~]{1,40}", service in "[a-z.]{1,20}", scope in "[a-z:/*]{1,30}") {
        // A quoted-string escapes `\` and `"` (RFC 7230 §3.2.6).
        let quoted = realm.replace('\\', "\\\\").replace('"', "\\\"");
        let header = format!(r#"Bearer realm="{quoted}",service="{service}",scope="{scope}""#);
        let c = auth::parse_challenges(&header);
        prop_assert_eq!(c.len(), 1);
        prop_assert_eq!(&c[0].params["realm"], &realm);
        prop_assert_eq!(&c[0].params["service"], &service);
        prop_assert_eq!(&c[0].params["scope"], &scope);
    }

    #[test]
    fn token_replies_never_panic(body in prop::collection::vec(any::<u8>(), 0..200), expires in any::<u64>(), token in "\\PC{0,40}") {
        let a = auth::Authenticator::new(None, true);
        let _ = a.store_token("s", &body, "fuzz");
        let json = format!(r#"{{"token":{},"expires_in":{expires}}}"#, serde_json::Value::from(token.clone()));
        if a.store_token("s", json.as_bytes(), "fuzz").is_ok() {
            prop_assert_eq!(a.header("s"), Some(format!("Bearer {token}")));
        }
    }

    #[test]
    fn link_headers_never_panic(header in "\\PC{0,200}") {
        let _ = link::next(&header);
    }

    #[test]
    fn link_headers_find_next(target in "/v2/[a-z/]{1,20}\\?n=[0-9]{1,3}&last=[a-z0-9]{1,10}") {
        let header = format!(r#"<{target}>; rel="next""#);
        prop_assert_eq!(link::next(&header), Some(target));
    }

    #[test]
    fn accepted_names_are_safe_path_parts(s in "\\PC{0,300}") {
        if names::check_repo(&s).is_ok() {
            prop_assert!(!s.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
            prop_assert!(!s.contains('\0') && s.len() <= 255);
        }
        if names::check_tag(&s).is_ok() {
            prop_assert!(!s.contains('/') && !s.starts_with('.') && s.len() <= 128);
        }
        if let Ok(d) = s.parse::<Digest>() {
            prop_assert_eq!(d.to_string(), s.clone());
            prop_assert!(!s.contains('/') && !s.contains(".."));
        }
        let _ = endpoint::parse(&s);
    }
}

// Decoded layers: the tar parser and the layer index meet bytes a registry chose.

/// One 512-byte ustar header (GNU magic if `gnu`), with its checksum.
fn tar_header(name: &[u8], flag: u8, size: u64, link: &[u8], gnu: bool) -> Vec<u8> {
    tar_header_at(name, flag, size, link, gnu, 1_700_000_000)
}

/// The same, with this mtime.
fn tar_header_at(name: &[u8], flag: u8, size: u64, link: &[u8], gnu: bool, mtime: u64) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    for (range, v) in [(100..108, 0o644u64), (108..116, 0), (116..124, 0), (124..136, size), (136..148, mtime)] {
        let w = range.len() - 1;
        b[range].copy_from_slice(format!("{v:0w$o}\0").as_bytes());
    }
    b[156] = flag;
    b[257..265].copy_from_slice(if gnu { b"ustar  \0" } else { b"ustar\x0000" });
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&c| u64::from(c)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

fn tar_padded(mut data: Vec<u8>) -> Vec<u8> {
    data.resize(data.len().div_ceil(512) * 512, 0);
    data
}

fn pax_records(key: &str, value: &[u8]) -> Vec<u8> {
    let body = [key.as_bytes(), b"=", value, b"\n"].concat();
    let mut len = body.len() + 2;
    while format!("{len} ").len() + body.len() != len {
        len += 1;
    }
    [format!("{len} ").as_bytes(), &body].concat()
}

/// A tar entry as the generator makes it: name, typeflag, data length, link target, and how a
/// long name is written (0: the header, 1: a GNU `L` header, 2: a PAX `path` record).
type FuzzEntry = (String, u8, usize, String, u8);

fn fuzz_entry() -> impl Strategy<Value = FuzzEntry> {
    (
        "(\\./|/)?([a-c]|\\.wh\\.[a-c]|\\.wh\\.\\.wh\\.\\.opq|\\.\\.|\\.)(/([a-c]|\\.wh\\.[a-c]|\\.\\.)){0,3}/?",
        prop::sample::select(vec![b'0', b'5', b'2', b'1', b'6', b'3', b'7', b'S', b'g', b'V', 0]),
        0usize..1100,
        "[a-c/.]{0,8}",
        0u8..3,
    )
}

/// A tar of these entries, two zero blocks and `tail` bytes after them.
fn fuzz_tar(entries: &[FuzzEntry], tail: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, flag, len, link, long) in entries {
        let name = if *long > 0 { format!("{}/{}", "l".repeat(120), name) } else { name.clone() };
        match long {
            1 => {
                out.extend(tar_header(b"././@LongLink", b'L', name.len() as u64 + 1, b"", true));
                out.extend(tar_padded([name.as_bytes(), b"\0"].concat()));
            }
            2 => {
                let rec = pax_records("path", name.as_bytes());
                out.extend(tar_header(b"PaxHeader", b'x', rec.len() as u64, b"", false));
                out.extend(tar_padded(rec));
            }
            _ => {}
        }
        let data_len = if matches!(flag, b'1' | b'2' | b'3' | b'5' | b'6') { 0 } else { *len };
        out.extend(tar_header(name.as_bytes(), *flag, data_len as u64, link.as_bytes(), *long == 1));
        out.extend(tar_padded(vec![b'd'; data_len]));
    }
    out.extend(vec![0u8; 1024]);
    out.extend(vec![0x5a; tail]);
    out
}

/// Flip bytes (position modulo the length), then maybe cut the stream.
fn mutate(mut bytes: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    if !bytes.is_empty() {
        for &(at, x) in flips {
            let at = at % bytes.len();
            bytes[at] ^= x;
        }
    }
    if let Some(c) = cut {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes
}

/// Every query of an index, over every entry: must neither panic nor loop.
fn walk(layer: &LayerIndex) {
    for id in 0..layer.len() as u32 {
        let Some(e) = layer.entry(id) else { continue };
        let path = e.path();
        let _ = (e.kind(), e.mode(), e.rdev(), e.mtime(), e.symlink_target(), e.link(), e.parent());
        let _ = e.xattrs().count() + e.children().count() + layer.children(&path).count();
        let _ = layer.says(&path);
        let _ = layer.get(&path).map(|g| g.child("a"));
        let _ = layer.links_to(id).count();
    }
    for (l, p) in layer.lower_links() {
        let _ = (l.name(), layer.lower_links_to(p).count());
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    let d = Digest::of(regfs::digest::Algorithm::Sha256, bytes);
    (0..64).step_by(2).filter_map(|i| u8::from_str_radix(&d.hex()[i..i + 2], 16).ok()).collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_tars_never_panic_and_offsets_stay_in_the_stream(
        entries in prop::collection::vec(fuzz_entry(), 0..8),
        tail in 0usize..700,
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in prop::option::weighted(0.2, any::<usize>()),
    ) {
        let bytes = mutate(fuzz_tar(&entries, tail), &flips, cut);
        let len = bytes.len() as u64;
        let mut p = Parser::with_limits(Cursor::new(&bytes), TarLimits { max_pax: 4096, max_long_name: 4096 });
        loop {
            match p.next_entry() {
                Ok(Some(e)) => {
                    prop_assert!(e.header_offset % 512 == 0 && e.header_offset < e.data_offset, "{e:?}");
                    prop_assert!(e.data_offset <= len && e.data_offset % 512 == 0, "{e:?}");
                }
                Ok(None) => {
                    let end = p.end().expect("an end once done");
                    prop_assert!(end <= len && end == p.position());
                    break;
                }
                Err(_) => break,
            }
        }
        if let Ok(layer) = index::build_all(Cursor::new(&bytes), TarLimits::default(), IndexLimits::default()) {
            prop_assert_eq!(layer.decoded_len(), len);
            for id in 0..layer.len() as u32 {
                let e = layer.entry(id).expect("entry");
                prop_assert!(e.data_offset().saturating_add(e.size()) <= len, "{e:?}");
                prop_assert!(e.header_offset() <= e.data_offset(), "{e:?}");
            }
            walk(&layer);
            let d = Digest::of(regfs::digest::Algorithm::Sha256, &bytes);
            let (back_id, back) = index::decode(&index::encode(&layer, &d)).expect("round trip");
            prop_assert_eq!(back_id, d);
            prop_assert_eq!(back, layer);
        }
    }

    #[test]
    fn mutated_index_files_with_a_valid_trailer_never_panic(
        entries in prop::collection::vec(fuzz_entry(), 0..8),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let tar = fuzz_tar(&entries, 0);
        let Ok(layer) = index::build_all(Cursor::new(&tar), TarLimits::default(), IndexLimits::default()) else {
            return Ok(());
        };
        let bytes = index::encode(&layer, &Digest::of(regfs::digest::Algorithm::Sha256, &tar));
        let mut body = mutate(bytes[..bytes.len() - 32].to_vec(), &flips, None);
        body.extend(sha256(&body));
        if let Ok((_, back)) = index::decode(&body) {
            walk(&back);
        }
    }
}

// The lazy merge against an eager apply: random stacks of small layers, built as real
// tars and indexed, must show through `views::merge` exactly what applying them one after the
// other to a tree shows, path by path, listing by listing, link count by link count.

/// What a generated layer entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    File,
    Dir,
    Symlink,
    Fifo,
    /// A hard link to this path.
    Link(String),
    /// A whiteout of the path.
    Whiteout,
    /// The opaque marker of the directory at the path (`""` is the root).
    Opaque,
}

fn pool_path() -> impl Strategy<Value = String> {
    "[ab](/[ab]){0,2}"
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::File),
        3 => Just(Op::Dir),
        1 => Just(Op::Symlink),
        1 => Just(Op::Fifo),
        // Shallow targets, so that links often name a file of some layer.
        3 => "[ab](/[ab])?".prop_map(Op::Link),
        2 => Just(Op::Whiteout),
        1 => Just(Op::Opaque),
    ]
}

fn proper_ancestors(p: &str) -> Vec<String> {
    let parts: Vec<&str> = p.split('/').collect();
    (1..parts.len()).map(|n| parts[..n].join("/")).collect()
}

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

fn under(p: &str, q: &str) -> bool {
    q.len() > p.len() && q.starts_with(p) && q.as_bytes()[p.len()] == b'/'
}

/// A layer as the test writes it: markers (whiteouts, opaque) first, then one entry per path, no
/// entry under a non-directory of the same layer (the builder's order-dependent rules for those
/// are unit-tested in `views::index`). Each entry's mtime is a unique tag.
fn well_formed(raw: Vec<(String, Op)>, opaque_root: bool) -> Vec<(String, Op)> {
    let mut markers: Vec<(String, Op)> = Vec::new();
    let mut entries: Vec<(String, Op)> = Vec::new();
    for (p, o) in raw {
        match o {
            Op::Whiteout | Op::Opaque => markers.push((p, o)),
            _ if entries.iter().any(|(q, _)| *q == p) => {}
            _ => entries.push((p, o)),
        }
    }
    let nondir: Vec<String> = entries.iter().filter(|(_, o)| *o != Op::Dir).map(|(p, _)| p.clone()).collect();
    let blocked = |p: &str, itself: bool| nondir.iter().any(|n| under(n, p) || (itself && n == p));
    markers.retain(|(p, o)| !blocked(p, *o == Op::Opaque));
    entries.retain(|(p, _)| !blocked(p, false));
    if opaque_root {
        markers.push((String::new(), Op::Opaque));
    }
    markers.extend(entries);
    markers
}

/// The tar of a layer; entry `i` of layer `l` has mtime `tag(l, i)`.
fn layer_tar(layer: usize, ops: &[(String, Op)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (p, o)) in ops.iter().enumerate() {
        let t = tag(layer, i);
        let h = |name: &str, flag: u8, link: &str| {
            tar_header_at(name.as_bytes(), flag, 0, link.as_bytes(), false, t as u64)
        };
        out.extend(match o {
            Op::File => h(p, b'0', ""),
            Op::Dir => h(&format!("{p}/"), b'5', ""),
            Op::Symlink => h(p, b'2', "somewhere"),
            Op::Fifo => h(p, b'6', ""),
            Op::Link(target) => h(p, b'1', target),
            Op::Whiteout => match p.rsplit_once('/') {
                Some((d, b)) => h(&format!("{d}/.wh.{b}"), b'0', ""),
                None => h(&format!(".wh.{p}"), b'0', ""),
            },
            Op::Opaque if p.is_empty() => h(".wh..wh..opq", b'0', ""),
            Op::Opaque => h(&format!("{p}/.wh..wh..opq"), b'0', ""),
        });
    }
    out.extend(vec![0u8; 1024]);
    out
}

fn tag(layer: usize, i: usize) -> i64 {
    1000 + 100 * layer as i64 + i as i64
}

/// What a path is in the eager tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A directory: the tag of its topmost explicit entry, or `None` if only implied since its floor.
    Dir(Option<i64>),
    /// An inode: layer, tag and kind of its original entry.
    Inode(usize, i64, EntryKind),
}

type Tree = BTreeMap<String, Node>;

fn remove_subtree(t: &mut Tree, p: &str) {
    t.retain(|q, _| q != p && !under(p, q));
}

/// How a hard link of the layer being applied resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Res {
    /// Left out of the layer (as if the entry were not there).
    Refused,
    /// A name of this inode.
    Inode(Node),
    /// A lower path that is no non-directory below: the name exists in no view.
    Nothing,
}

/// Apply one layer to the tree, the way the spec's changeset model (and docker's applier) does:
/// whiteouts and opaque markers act on the layers below; entries replace what is below them.
fn apply(tree: &mut Tree, layer: usize, ops: &[(String, Op)]) {
    let below = tree.clone();
    let whiteouts: Vec<&str> = ops.iter().filter(|(_, o)| *o == Op::Whiteout).map(|(p, _)| p.as_str()).collect();
    let opaques: Vec<&str> = ops.iter().filter(|(_, o)| *o == Op::Opaque).map(|(p, _)| p.as_str()).collect();
    for w in &whiteouts {
        remove_subtree(tree, w);
    }
    for d in &opaques {
        if d.is_empty() {
            tree.clear();
        } else {
            tree.retain(|q, _| !under(d, q));
            if let Some(Node::Dir(t)) = tree.get_mut(*d) {
                *t = None;
            }
        }
    }
    // Directories: every ancestor of what the layer names, and opaque directories, are implied
    // unless an explicit entry is there.
    let mut dirs: BTreeMap<String, Option<i64>> = BTreeMap::new();
    for (i, (p, o)) in ops.iter().enumerate() {
        let mut implied = proper_ancestors(p);
        if *o == Op::Opaque && !p.is_empty() {
            implied.push(p.clone());
        }
        if matches!(o, Op::Link(_)) && link_resolution(layer, i, ops, &below) == Res::Refused {
            implied.clear();
        }
        for a in implied {
            dirs.entry(a).or_insert(None);
        }
        if *o == Op::Dir {
            dirs.insert(p.clone(), Some(tag(layer, i)));
        }
    }
    let mut by_depth: Vec<(String, Option<i64>)> = dirs.into_iter().collect();
    by_depth.sort_by_key(|(p, _)| p.matches('/').count());
    for (p, t) in by_depth {
        match tree.get(&p) {
            Some(Node::Dir(lower)) => {
                let keep = t.or(*lower);
                tree.insert(p, Node::Dir(keep));
            }
            _ => {
                remove_subtree(tree, &p);
                tree.insert(p, Node::Dir(t));
            }
        }
    }
    for (i, (p, o)) in ops.iter().enumerate() {
        let kind = match o {
            Op::File => EntryKind::File,
            Op::Symlink => EntryKind::Symlink,
            Op::Fifo => EntryKind::Fifo,
            Op::Link(_) => {
                match link_resolution(layer, i, ops, &below) {
                    Res::Refused => {}
                    Res::Inode(n) => {
                        remove_subtree(tree, p);
                        tree.insert(p.clone(), n);
                    }
                    Res::Nothing => remove_subtree(tree, p),
                }
                continue;
            }
            _ => continue,
        };
        remove_subtree(tree, p);
        tree.insert(p.clone(), Node::Inode(layer, tag(layer, i), kind));
    }
}

/// How entry `i` (a hard link) of a well-formed layer resolves: to an earlier non-directory of
/// the layer (links to links resolved), else to a lower path in the view below the layer. The
/// target's parent path follows the layer's earlier symlinks (each `-> somewhere`, relative: the
/// path goes on from `somewhere` beside the link). Refused under a same-layer non-directory that
/// is not a symlink, onto a directory, a whiteout, a path hidden by an opaque directory of the
/// layer, or itself.
fn link_resolution(layer: usize, i: usize, ops: &[(String, Op)], below: &Tree) -> Res {
    let Op::Link(t) = &ops[i].1 else { return Res::Refused };
    target_resolution(layer, i, t, ops, below)
}

/// [`link_resolution`] of entry `i` with its target path `t` (after the links followed so far).
fn target_resolution(layer: usize, i: usize, t: &str, ops: &[(String, Op)], below: &Tree) -> Res {
    let p = &ops[i].0;
    if t == p {
        return Res::Refused;
    }
    let earlier = &ops[..i];
    // Refused links are not in the layer at all.
    let kept = |j: usize| !matches!(ops[j].1, Op::Link(_)) || link_resolution(layer, j, ops, below) != Res::Refused;
    let entry_at = |q: &str| {
        earlier
            .iter()
            .enumerate()
            .rev()
            .find(|&(j, (e, o))| e == q && !matches!(o, Op::Whiteout | Op::Opaque) && kept(j))
    };
    let implied_at = |q: &str| {
        earlier.iter().enumerate().any(|(j, (e, o))| (under(q, e) || (*o == Op::Opaque && e == q)) && kept(j))
    };
    let whited = |q: &str| earlier.iter().any(|(e, o)| e == q && *o == Op::Whiteout);
    // A directory of this layer hides the lower layers below it if it, or one of its
    // ancestors, is opaque or whited out (and re-created) in this layer.
    let hides = |d: &str| {
        let mut chain = proper_ancestors(d);
        chain.push(d.to_string());
        chain.insert(0, String::new());
        chain
            .iter()
            .any(|a| earlier.iter().any(|(e, o)| e == a && (*o == Op::Opaque || (*o == Op::Whiteout && !a.is_empty()))))
    };
    let mut prefixes = proper_ancestors(t);
    prefixes.push(t.to_string());
    for q in &prefixes {
        let last = q == t;
        if let Some((j, (_, o))) = entry_at(q) {
            match o {
                Op::Dir if last => return Res::Refused,
                Op::Dir => continue,
                Op::Symlink if !last => {
                    let beside = match parent_of(q) {
                        "" => "somewhere".to_string(),
                        d => format!("{d}/somewhere"),
                    };
                    return target_resolution(layer, i, &format!("{beside}{}", &t[q.len()..]), ops, below);
                }
                _ if !last => return Res::Refused,
                Op::Link(_) => return link_resolution(layer, j, ops, below),
                Op::File => return Res::Inode(Node::Inode(layer, tag(layer, j), EntryKind::File)),
                Op::Symlink => return Res::Inode(Node::Inode(layer, tag(layer, j), EntryKind::Symlink)),
                Op::Fifo => return Res::Inode(Node::Inode(layer, tag(layer, j), EntryKind::Fifo)),
                Op::Whiteout | Op::Opaque => unreachable!(),
            }
        }
        // A directory this layer implies (an ancestor of an earlier entry or marker) replaces
        // a whiteout there.
        if implied_at(q) {
            if last {
                return Res::Refused;
            }
            continue;
        }
        if whited(q) {
            return Res::Refused;
        }
        if hides(parent_of(q)) {
            return Res::Refused;
        }
        break;
    }
    match below.get(t) {
        Some(n @ Node::Inode(..)) => Res::Inode(n.clone()),
        _ => Res::Nothing,
    }
}

struct Stack(Vec<Arc<LayerIndex>>);

impl LayerSource for Stack {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn index(&self, i: usize) -> regfs::error::Result<Arc<LayerIndex>> {
        Ok(self.0[i].clone())
    }
}

/// What the merge says a path is, in the eager tree's terms.
fn merged(m: &Merge<'_, Stack>, f: Option<Found>) -> Option<Node> {
    match f? {
        Found::Dir => Some(Node::Dir(None)),
        Found::Inode(i) => {
            let meta = m.inode(i).expect("inode");
            Some(Node::Inode(i.layer, meta.mtime.0, meta.kind))
        }
    }
}

/// A directory compares as a directory; its attributes are compared apart.
fn shape(n: Option<Node>) -> Option<Node> {
    n.map(|n| if let Node::Dir(_) = n { Node::Dir(None) } else { n })
}

fn stack() -> impl Strategy<Value = Vec<Vec<(String, Op)>>> {
    prop::collection::vec(
        (prop::collection::vec((pool_path(), op()), 0..8), prop::bool::weighted(0.05))
            .prop_map(|(l, o)| well_formed(l, o)),
        1..5,
    )
    .prop_map(aim_links)
}

/// Point the links whose target starts with `a` at a file written before them (in a lower
/// layer or earlier in theirs), so that many links name a real inode.
fn aim_links(mut layers: Vec<Vec<(String, Op)>>) -> Vec<Vec<(String, Op)>> {
    let mut files: Vec<String> = Vec::new();
    for layer in &mut layers {
        for (p, o) in layer.iter_mut() {
            match o {
                Op::File => files.push(p.clone()),
                Op::Link(t) if t.starts_with('a') && !files.is_empty() => {
                    *t = files[(t.len() + p.len()) % files.len()].clone();
                }
                _ => {}
            }
        }
    }
    layers
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn lazy_merge_equals_an_eager_apply(layers in stack()) {
        let mut tree = Tree::new();
        let mut indexes = Vec::new();
        for (l, ops) in layers.iter().enumerate() {
            apply(&mut tree, l, ops);
            let tar = layer_tar(l, ops);
            indexes.push(Arc::new(index::build_all(Cursor::new(&tar), TarLimits::default(), IndexLimits::default()).expect("index")));
        }
        let src = Stack(indexes);
        let m = Merge::new(&src);
        let mut paths: BTreeSet<String> = tree.keys().cloned().collect();
        for a in ["a", "b"] {
            paths.insert(a.to_string());
            for b in ["a", "b"] {
                paths.insert(format!("{a}/{b}"));
                for c in ["a", "b"] {
                    paths.insert(format!("{a}/{b}/{c}"));
                }
            }
        }
        for p in &paths {
            let lazy = merged(&m, m.lookup(p).expect("lookup"));
            prop_assert_eq!(shape(lazy), shape(tree.get(p).cloned()), "lookup {:?} in {:#?}", p, layers);
        }
        let mut dirs: Vec<&str> = vec![""];
        dirs.extend(tree.iter().filter(|(_, n)| matches!(n, Node::Dir(_))).map(|(p, _)| p.as_str()));
        for d in dirs {
            let listed: Vec<(String, Option<Node>)> =
                m.list(d).expect("list").into_iter().map(|(n, f)| (n, shape(merged(&m, Some(f))))).collect();
            let eager: Vec<(String, Option<Node>)> = tree
                .iter()
                .filter(|(q, _)| parent_of(q) == d && (d.is_empty() || under(d, q)))
                .map(|(q, n)| (q.rsplit('/').next().unwrap_or("").to_string(), shape(Some(n.clone()))))
                .collect();
            prop_assert_eq!(&listed, &eager, "list {:?} in {:#?}", d, layers);
            if !d.is_empty() {
                let Some(Node::Dir(t)) = tree.get(d) else { unreachable!() };
                let meta = m.dir(d).expect("dir").expect("a directory");
                prop_assert_eq!(meta.mtime.0, t.unwrap_or(0), "attributes of {:?} in {:#?}", d, layers);
            }
        }
        for (p, n) in &tree {
            if let (Node::Inode(..), Some(Found::Inode(i))) = (n, m.lookup(p).expect("lookup")) {
                let names = tree.values().filter(|o| *o == n).count() as u32;
                prop_assert_eq!(m.nlink(i).expect("nlink"), names, "nlink of {:?} in {:#?}", p, layers);
            }
        }
    }
}
