//! `rootfs/` against an independent unpacker: every tricky case, every manifest type and a Debian
//! image are walked through a real regfs mount and compared, path by path, with what umoci 0.4.7
//! unpacks from the same registry (tests/mount/common/oracle.rs, tests/mount/common/tree.rs); the cases of
//! entries under symlinks also with what a real containerd applies (tests/mount/common/containerd.rs).
//! Where regfs
//! deliberately differs from umoci, the expected tree is umoci's changed by one row of
//! [`expectation`], each with its reason; where umoci refuses an image, the row gives the whole
//! expected tree.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::{Mount, containerd, oracle, shared, tree};
use regfs::testkit::fixtures::tricky;
use tree::{Compare, Kind, Tree, build};

/// The repository whose tags are one tree in each manifest type.
const FORMATS: &str = "rootfs-cases/formats";

/// The mtime of the fixtures' hand-made entries (`regfs::testkit::fixtures::tricky::MTIME`).
const MTIME: i64 = regfs::testkit::fixtures::tricky::MTIME as i64;

/// What regfs must show for `case`, given umoci's unpack of it: `(tree, reason)`. `None` for the
/// reason means "exactly what umoci shows".
fn expectation(case: &str, umoci: Result<Tree, String>) -> Result<(Tree, Option<&'static str>), String> {
    match case {
        "c06-aufs" => {
            let mut t = umoci?;
            t.retain(|p, _| !p.starts_with(".wh..wh.plnk") && !p.starts_with(".wh..wh.orph"));
            let linked = t.get_mut("linked").ok_or("umoci shows no `linked`")?;
            linked.nlink = 1;
            linked.inode = "linked".into();
            Ok((
                t,
                Some(
                    "AUFS metadata (.wh..wh.plnk, .wh..wh.orph) is hidden, as moby drops it; a link to a plnk file keeps \
                     its content with one visible name. umoci 0.4.7 shows both directories (and whites out only \
                     .wh..wh.aufs, a basename starting with .wh.)",
                ),
            ))
        }
        "c12-under-lower-file" => {
            refused(&umoci, "not a directory")?;
            Ok((
                build::tree(vec![("nf", build::dir(0o755, 0)), ("nf/x", build::file("under", 0o644, MTIME))]),
                Some(
                    "an entry under a lower file: the upper (implied) directory replaces the file, literal paths as \
                     docker's overlay2. umoci 0.4.7 fails: mkdir parent: not a directory",
                ),
            ))
        }
        "c12-under-same-layer-file" => {
            refused(&umoci, "not a directory")?;
            Ok((
                build::tree(vec![("sf", build::dir(0o755, 0)), ("sf/x", build::file("under", 0o644, MTIME))]),
                Some(
                    "an entry under a same-layer file: the last entry wins, the file becomes an implied directory. \
                     umoci 0.4.7 fails: mkdir parent: not a directory",
                ),
            ))
        }
        "c13-breakout" => {
            let mut t = umoci?;
            let x = t.remove("etc/x").ok_or("umoci wrote no etc/x")?;
            let y = t.remove("etc/y").ok_or("umoci wrote no etc/y")?;
            t.insert("a".into(), build::dir(0o755, 0));
            t.insert("a/x".into(), tree::Node { inode: "a/x".into(), ..x });
            t.insert("rel".into(), build::dir(0o755, 0));
            t.insert("rel/y".into(), tree::Node { inode: "rel/y".into(), ..y });
            for p in ["a", "rel"] {
                if let Some(n) = t.get_mut(p) {
                    n.inode = p.into();
                }
            }
            Ok((
                t,
                Some(
                    "entries under a lower layer's symlink: only the entry's own layer's links are followed \
                     (containerd's overlayfs snapshotter and docker's overlay2 apply each layer on its own), so a/ \
                     and rel/ become implied directories; umoci 0.4.7 writes etc/x and etc/y through the links \
                     (scoped to the root)",
                ),
            ))
        }
        "c13-link-through-symlink" => {
            let mut t = umoci?;
            t.remove("h").ok_or("umoci shows no h")?;
            let f = t.get_mut("real/f").ok_or("umoci shows no real/f")?;
            f.nlink = 1;
            f.inode = "real/f".into();
            Ok((
                t,
                Some(
                    "a hard link whose target crosses a lower layer's symlink is left out (logged); umoci 0.4.7 links \
                     the resolved file, containerd (overlayfs) fails the image: the link's target is not in its layer",
                ),
            ))
        }
        "c13-dot-root" => Ok((
            umoci?,
            Some(
                "a ./ entry does not change rootfs/ itself (0755 root:root, checked for every case); umoci 0.4.7 applies it to the root",
            ),
        )),
        "c17-loop" => {
            refused(&umoci, "too many levels of symbolic links")?;
            Ok((
                build::tree(vec![
                    ("loop1", build::symlink("loop2", MTIME)),
                    ("loop2", build::symlink("loop1", MTIME)),
                    ("after", build::file("a", 0o644, MTIME)),
                ]),
                Some(
                    "an entry whose parent loops through the layer's links is left out (logged), the rest of the \
                     layer stays; umoci 0.4.7 fails: too many levels of symbolic links (containerd: too many links)",
                ),
            ))
        }
        "c17-chain-256" => {
            refused(&umoci, "too many levels of symbolic links")?;
            let mut nodes = vec![("d".to_string(), build::dir(0o755, MTIME))];
            nodes.extend((0..255).map(|i| (format!("c{i}"), build::symlink(&format!("c{}", i + 1), MTIME))));
            nodes.push(("c255".to_string(), build::symlink("/d", MTIME)));
            Ok((
                build::tree(nodes.iter().map(|(p, n)| (p.as_str(), n.clone())).collect()),
                Some(
                    "an entry whose parent needs 256 links is left out (logged): 255 is the most containerd and \
                     umoci follow; umoci 0.4.7 fails the image there",
                ),
            ))
        }
        "c17-link-to-file" => {
            refused(&umoci, "not a directory")?;
            Ok((
                build::tree(vec![
                    ("hosts", build::file("h", 0o644, MTIME)),
                    ("tofile", build::symlink("/hosts", MTIME)),
                    ("after", build::file("a", 0o644, MTIME)),
                ]),
                Some(
                    "an entry under a link to a file is left out (logged) and the file stays; umoci 0.4.7 fails: \
                     mkdir parent: not a directory (containerd: mkparent: not a directory)",
                ),
            ))
        }
        "c14-pax-global" => {
            refused(&umoci, "unknown typeflag")?;
            Ok((
                build::tree(vec![("after-global", build::file("g", 0o644, MTIME))]),
                Some(
                    "a PAX global header is ignored, as Go's archive/tar does; umoci 0.4.7 fails: unknown typeflag 'g'",
                ),
            ))
        }
        _ => Ok((umoci?, None)),
    }
}

/// `Ok` when umoci refused the image with an error containing `why` (the characterisation).
fn refused(umoci: &Result<Tree, String>, why: &str) -> Result<(), String> {
    match umoci {
        Err(e) if e.contains(why) => Ok(()),
        Err(e) => Err(format!("umoci refused, but not with {why:?}: {e}")),
        Ok(_) => Err(format!("umoci 0.4.7 was expected to refuse ({why}) and did not: re-characterise")),
    }
}

/// umoci's tree of `repo` at `reference`, and the compare rule for its stamped directory mtimes.
pub(crate) fn umoci_tree(url: &str, repo: &str, reference: &str) -> (Result<Tree, String>, Compare) {
    match oracle::umoci(url, repo, reference) {
        Ok(u) => {
            let how = Compare { dir_mtime_stamped_after: Some(u.started), ..Compare::default() };
            (tree::walk(&u.rootfs), how)
        }
        Err(e) => (Err(e), Compare::default()),
    }
}

/// `rootfs/` itself is 0755 root:root, whatever the image says.
fn root_is_0755_root(t: &Tree) -> Option<String> {
    let r = t.get("")?;
    (r.kind != Kind::Dir || r.mode != 0o755 || (r.uid, r.gid) != (0, 0))
        .then(|| format!("rootfs/ is {:?} {:o} {}:{}, want a directory 0755 0:0", r.kind, r.mode, r.uid, r.gid))
}

/// Compare regfs's `rootfs` at `path` with `want`; the differences, prefixed by `label`.
pub(crate) fn check(label: &str, path: &Path, want: &Tree, how: &Compare) -> Vec<String> {
    match tree::walk(path) {
        Err(e) => vec![format!("{label}: walking regfs's rootfs: {e}")],
        Ok(got) => {
            let mut d: Vec<String> =
                tree::compare(&got, want, how).into_iter().map(|l| format!("{label}: {l}")).collect();
            d.extend(root_is_0755_root(&got).map(|l| format!("{label}: {l}")));
            d
        }
    }
}

#[test]
fn every_tricky_case_matches_umoci_or_its_explicit_expectation() {
    let s = shared();
    let cases = s.fixtures["rootfs"]["cases"].as_array().expect("rootfs cases in the fixtures");
    assert!(cases.len() >= 28, "too few rootfs cases: {}", cases.len());
    let m = Mount::start(&s.registry.url, &[]);
    let mut failures = Vec::new();
    for c in cases {
        let (name, repo, tag) =
            (c["case"].as_str().expect("case"), c["repo"].as_str().expect("repo"), c["tag"].as_str().expect("tag"));
        let (umoci, how) = umoci_tree(&s.registry.url, repo, tag);
        match expectation(name, umoci) {
            Err(e) => failures.push(format!("{name}: no expectation: {e}")),
            Ok((want, _reason)) => {
                failures.extend(check(name, &m.path(&format!("{repo}/tags/{tag}/rootfs")), &want, &how));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}\n--- regfs log:\n{}",
        failures.len(),
        failures.join("\n"),
        m.log()
    );
}

/// containerd's tree of `repo:tag` (see tests/mount/common/containerd.rs), and the compare rule for
/// the directories it makes itself (stamped with the time of the pull).
fn containerd_tree(c: &containerd::Containerd, url: &str, repo: &str, tag: &str) -> (Result<Tree, String>, Compare) {
    let started = oracle::now();
    let t = c.with_rootfs(url, repo, tag, tree::walk).and_then(|t| t);
    (t, Compare { dir_mtime_stamped_after: Some(started), ..Compare::default() })
}

/// The cases of entries under symlinks, and whether containerd fails the image (with what).
const CONTAINERD_CASES: [(&str, Option<&str>); 7] = [
    ("c13-breakout", None),
    // overlayfs applies the upper layer alone: `sl/f` is not there to link to
    ("c13-link-through-symlink", Some("no such file or directory")),
    ("c17-parent-symlinks", None),
    ("c17-chain-255", None),
    ("c17-loop", Some("too many links")),
    ("c17-chain-256", Some("too many links")),
    ("c17-link-to-file", Some("not a directory")),
];

/// Entries under symlinks against a real containerd (tests/mount/common/containerd.rs, overlayfs):
/// where containerd applies the image, regfs's `rootfs/` is its tree, path by path; where it
/// fails the image, the failure is the one characterised and regfs shows the tree
/// `expectation` gives (what umoci shows, or says where umoci fails too).
#[test]
fn entries_under_symlinks_match_what_containerd_applies() {
    let s = shared();
    let cases = s.fixtures["rootfs"]["cases"].as_array().expect("rootfs cases in the fixtures");
    let m = Mount::start(&s.registry.url, &[]);
    let c = containerd::Containerd::start().expect("containerd");
    let mut failures = Vec::new();
    for (case, fails) in CONTAINERD_CASES {
        let Some(f) = cases.iter().find(|f| f["case"] == case) else {
            failures.push(format!("{case}: not in the fixtures"));
            continue;
        };
        let (repo, tag) = (f["repo"].as_str().expect("repo"), f["tag"].as_str().expect("tag"));
        let rootfs = m.path(&format!("{repo}/tags/{tag}/rootfs"));
        match (containerd_tree(&c, &s.registry.url, repo, tag), fails) {
            ((Ok(want), how), None) => failures.extend(check(case, &rootfs, &want, &how)),
            ((Err(e), _), Some(why)) if e.contains(why) => {
                let (umoci, how) = umoci_tree(&s.registry.url, repo, tag);
                match expectation(case, umoci) {
                    Ok((want, _)) => failures.extend(check(case, &rootfs, &want, &how)),
                    Err(e) => failures.push(format!("{case}: no expectation: {e}")),
                }
            }
            ((Err(e), _), None) => failures.push(format!("{case}: containerd failed: {e}")),
            ((Ok(_), _), Some(why)) => {
                failures.push(format!("{case}: containerd was expected to fail ({why}) and did not: re-characterise"))
            }
            ((Err(e), _), Some(why)) => failures.push(format!("{case}: containerd failed, but not with {why:?}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}\n--- regfs log:\n{}\n--- containerd log:\n{}",
        failures.len(),
        failures.join("\n"),
        m.log(),
        c.log()
    );
}

/// A deterministic xorshift.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A path of one to three names from `a`, `b`, `c`.
fn random_path(r: &mut Rng) -> String {
    let n = 1 + r.below(3);
    (0..n).map(|_| ["a", "b", "c"][r.below(3)]).collect::<Vec<_>>().join("/")
}

/// A symlink target: absolute, relative, climbing with `..` (past the root too), the root.
fn random_target(r: &mut Rng) -> String {
    let p = random_path(r);
    match r.below(8) {
        0 => format!("/{p}"),
        1 => p,
        2 => format!("../{p}"),
        3 => format!("../../../{p}"),
        4 => "/".into(),
        5 => "..".into(),
        6 => format!("{p}/../{}", random_path(r)),
        _ => format!("/{p}/.."),
    }
}

/// `n` random entries: directories and symlinks named from `a`, `b`, `c` (so that many entries
/// land under a symlink of their layer: chains, loops and `..` included), files `f<i>` and hard
/// links `h<i>` to a file written before (by its name as written) in such directories.
fn random_layer(r: &mut Rng, n: usize) -> Vec<tricky::E> {
    let mut files: Vec<String> = Vec::new();
    (0..n)
        .map(|i| {
            let p = random_path(r);
            match r.below(10) {
                0 | 1 => tricky::dir(&format!("{p}/")),
                2..=4 => {
                    files.push(format!("{p}/f{i}"));
                    tricky::file(&format!("{p}/f{i}"), &format!("{p} {i}"))
                }
                5..=8 => tricky::symlink(&p, &random_target(r)),
                _ if files.is_empty() => tricky::dir(&format!("{p}/")),
                _ => tricky::hardlink(&format!("{p}/h{i}"), &files[r.below(files.len())].clone()),
            }
        })
        .collect()
}

/// Random layers full of symlinks show in regfs what umoci and containerd make of them, path by
/// path, wherever they apply the image (both fail images they cannot apply, as one whose
/// entries loop through links or go under a file): one-layer images against both, two-layer
/// images against containerd only (umoci follows a lower layer's links; containerd's overlayfs
/// does not, nor does regfs).
#[test]
fn random_layers_of_symlinks_match_umoci_and_containerd() {
    use regfs::testkit::fixtures::{push::Pusher, push_image, tricky::hand};
    let s = shared();
    let p = Pusher::new(s.registry.url.parse().expect("url"), None).expect("pusher");
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut images = Vec::new();
    for i in 0..64 {
        let layers: Vec<Vec<tricky::E>> = if i < 40 {
            vec![random_layer(&mut r, 12)]
        } else {
            vec![random_layer(&mut r, 8), random_layer(&mut r, 8)]
        };
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| hand(l, &[]).expect("tar")).collect();
        let repo = format!("rootfs-random/r{i:02}");
        push_image(&p, &repo, "v1", &tars).expect("push");
        images.push((repo, layers));
    }
    let m = Mount::start(&s.registry.url, &[]);
    let c = containerd::Containerd::start().expect("containerd");
    let (mut by_umoci, mut by_containerd, mut failures) = (0, 0, Vec::new());
    for (repo, layers) in &images {
        let rootfs = m.path(&format!("{repo}/tags/v1/rootfs"));
        let mut differ = Vec::new();
        if layers.len() == 1 {
            if let (Ok(want), how) = umoci_tree(&s.registry.url, repo, "v1") {
                by_umoci += 1;
                differ.extend(check(&format!("{repo} (umoci)"), &rootfs, &want, &how));
            }
        }
        // Directory mtimes are not compared with containerd's here: its last pass sets each
        // directory entry's mtime on what the entry's name resolves to at the end of the layer,
        // so a link made later in the layer moves that mtime to another directory (`b/a/c/`,
        // then `b -> /`, stamps `a/c`). regfs keeps the attributes where the entry put them.
        // Nor are link counts of two-layer images: overlayfs shows a lower inode's own count,
        // regfs the names that survive to the top (case c08).
        if let (Ok(want), _) = containerd_tree(&c, &s.registry.url, repo, "v1") {
            by_containerd += 1;
            let how = Compare { dir_mtime_stamped_after: Some(i64::MIN), skip_nlink: layers.len() > 1 };
            differ.extend(check(&format!("{repo} (containerd)"), &rootfs, &want, &how));
        }
        if !differ.is_empty() {
            failures.push(format!("{}\n  layers: {layers:?}", differ.join("\n")));
        }
    }
    assert!(failures.is_empty(), "{} images differ:\n{}", failures.len(), failures.join("\n"));
    assert!(
        by_umoci >= 16 && by_containerd >= 16,
        "too few images applied: umoci {by_umoci}, containerd {by_containerd}"
    );
    eprintln!("compared: {by_umoci} images with umoci, {by_containerd} with containerd, of {}", images.len());
}

#[test]
fn schema1_schema2_oci_and_index_platform_rootfs_match_umoci() {
    let s = shared();
    let r = &s.fixtures["rootfs"];
    let m = Mount::start(&s.registry.url, &[]);
    let mut failures = Vec::new();
    let mut compared = 0;
    for tag in ["oci", "docker", "schema1"] {
        let (umoci, how) = umoci_tree(&s.registry.url, FORMATS, tag);
        match umoci {
            Err(e) => failures.push(format!("{tag}: umoci: {e}")),
            Ok(want) => {
                failures.extend(check(tag, &m.path(&format!("{FORMATS}/tags/{tag}/rootfs")), &want, &how));
                compared += 1;
            }
        }
    }
    for (link, digest) in r["index_children"].as_object().expect("index children") {
        let (umoci, how) = umoci_tree(&s.registry.url, FORMATS, digest.as_str().expect("digest"));
        match umoci {
            Err(e) => failures.push(format!("index {link}: umoci: {e}")),
            Ok(want) => {
                let p = m.path(&format!("{FORMATS}/tags/index/{link}/rootfs"));
                failures.extend(check(&format!("index {link}"), &p, &want, &how));
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 5, "every format compared: {failures:?}");
    assert!(
        failures.is_empty(),
        "{} differences:\n{}\n--- regfs log:\n{}",
        failures.len(),
        failures.join("\n"),
        m.log()
    );
}

#[test]
fn a_corrupt_diff_id_is_eio_for_the_layer_and_its_files_and_caches_nothing() {
    let s = shared();
    let bad = &s.fixtures["rootfs"]["bad_diff_id"];
    let repo = bad["repo"].as_str().expect("repo");
    // the oracle agrees the image is broken
    let refusal = oracle::umoci(&s.registry.url, repo, "v1").err().unwrap_or_default();
    assert!(refusal.contains("diffid mismatch"), "umoci should refuse the wrong diff_id: {refusal:?}");

    let m = Mount::start(&s.registry.url, &[]);
    let root = m.path(&format!("{repo}/tags/v1/rootfs"));
    for (f, content) in [("top/file", "top"), ("shared/high", "high")] {
        let got = std::fs::read_to_string(root.join(f));
        assert_eq!(
            got.as_deref().ok(),
            Some(content),
            "{f}, decided by the good top layer alone: {got:?}\n{}",
            m.log()
        );
    }
    for f in ["bottom/file", "shared/low"] {
        let e = std::fs::read(root.join(f)).expect_err("a file of the bad layer must not read");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{f}: {e}");
    }
    let e = std::fs::read_dir(&root)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .expect_err("listing needs the bad layer");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "ls rootfs/: {e}");
    let e =
        std::fs::read(m.path(&format!("{repo}/tags/v1/layers/0.tar"))).expect_err("the decoded view of the bad layer");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "layers/0.tar: {e}");

    let log = m.log();
    let layer = bad["bad_layer_digest"].as_str().expect("layer digest");
    assert!(log.contains(layer.trim_start_matches("sha256:")), "the log names the layer {layer}:\n{log}");
    // nothing of the bad layer is kept, under either diff_id
    let hexes: Vec<String> = ["claimed_diff_id", "true_diff_id"]
        .iter()
        .map(|k| bad[*k].as_str().expect("diff_id").trim_start_matches("sha256:").to_string())
        .collect();
    let kept = files_under(&m.cache);
    let leaked: Vec<&String> = kept.iter().filter(|p| hexes.iter().any(|h| p.contains(h.as_str()))).collect();
    assert!(leaked.is_empty(), "cached from the bad layer: {leaked:?}");
}

#[test]
fn a_debian_rootfs_of_thousands_of_files_matches_umoci_file_by_file() {
    let s = shared();
    let distro = regfs::testkit::fixtures::push_distro(&s.registry.url).unwrap_or_else(|e| panic!("distro image: {e}"));
    let repo = distro["repo"].as_str().expect("repo");
    let top = &distro["notes"]["top"];
    let (umoci, how) = umoci_tree(&s.registry.url, repo, "v1");
    let want = umoci.unwrap_or_else(|e| panic!("umoci: {e}"));
    // the fixture is what it claims: thousands of paths, the top layer applied
    let files = want.values().filter(|n| n.kind == Kind::File).count();
    assert!(want.len() >= 6000 && files >= 4000, "{} paths, {files} files", want.len());
    assert!(want.contains_key(top["top_file"].as_str().expect("top file")));
    for v in top["whited_out"].as_array().expect("victims") {
        assert!(!want.contains_key(v.as_str().expect("victim")), "{v} whited out");
    }

    let m = Mount::start(&s.registry.url, &[]);
    let mut failures = Vec::new();
    for tag in ["v1", "zstd"] {
        failures.extend(check(tag, &m.path(&format!("{repo}/tags/{tag}/rootfs")), &want, &how));
    }
    let shown: Vec<&String> = failures.iter().take(200).collect();
    assert!(failures.is_empty(), "{} differences (first 200):\n{shown:#?}", failures.len());
}

#[test]
fn hostile_layers_are_refused_or_bounded_with_a_clear_log_line() {
    let s = shared();
    let hostile = s.fixtures["rootfs"]["hostile"].as_array().expect("hostile cases");
    assert_eq!(hostile.len(), 4);
    let m = Mount::start(&s.registry.url, &["--cache-size", "8M"]);
    let mut failures = Vec::new();
    for h in hostile {
        let field = |k: &str| h[k].as_str().unwrap_or_default().to_string();
        let (case, repo) = (field("case"), field("repo"));
        // umoci 0.4.7, characterised: no bound on decoded bytes; the others fail its unpack
        let umoci = oracle::umoci(&s.registry.url, &repo, "v1").err();
        let umoci_says = match case.as_str() {
            "hostile-bomb" => umoci.is_none(),
            "hostile-pax-huge" => umoci.as_deref().is_some_and(|e| e.contains("header field too long")),
            _ => umoci.as_deref().is_some_and(|e| e.contains("file name too long")),
        };
        if !umoci_says {
            failures.push(format!("{case}: umoci no longer behaves as characterised: {umoci:?}"));
        }
        let root = m.path(&format!("{repo}/tags/v1/rootfs"));
        match std::fs::read_to_string(root.join(field("top_file"))) {
            Ok(t) if t == "top" => {}
            other => failures.push(format!("{case}: the top layer's file: {other:?}")),
        }
        let want = match field("errno").as_str() {
            "EFBIG" => Some(libc::EFBIG),
            "EIO" => Some(libc::EIO),
            _ => None,
        };
        let bad = std::fs::read_to_string(root.join(field("bad_layer_file")));
        let listing =
            std::fs::read_dir(&root).and_then(|d| d.map(|e| e.map(|e| e.file_name())).collect::<Result<Vec<_>, _>>());
        match want {
            Some(errno) => {
                if bad.as_ref().err().and_then(std::io::Error::raw_os_error) != Some(errno) {
                    failures.push(format!("{case}: a file of the bad layer: {bad:?}, want errno {errno}"));
                }
                if listing.as_ref().err().and_then(std::io::Error::raw_os_error) != Some(errno) {
                    failures.push(format!("{case}: ls rootfs/: {listing:?}, want errno {errno}"));
                }
                let layer = field("bad_layer_digest");
                if !m.log().contains(layer.trim_start_matches("sha256:")) {
                    failures.push(format!("{case}: no log line names the layer {layer}"));
                }
            }
            None => {
                if bad.as_deref().ok() != Some("low") {
                    failures.push(format!("{case}: the ordinary file beside the left-out ones: {bad:?}"));
                }
                let low =
                    std::fs::read_dir(root.join("low")).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>());
                if low.as_ref().ok().map(Vec::len) != Some(1) {
                    failures.push(format!("{case}: low/ should hold only `file` (over-long names left out): {low:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}\n--- regfs log:\n{}", failures.join("\n"), m.log());
}

/// Every file path under `dir` (recursive).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

// ---- the oracle's own tools, tested on trees built here ----

fn sh(dir: &Path, script: &str) {
    let o = crate::common::sh_in(dir, script);
    assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A tree with one of everything the walker reads.
fn sample(dir: &Path) {
    sh(
        dir,
        "mkdir -p d/e && printf one > d/f && ln d/f d/g && ln -s /etc link && ln -s ../missing dangling && \
         mkfifo p && chmod 4750 d/f && python3 -c \"import os; os.setxattr('d/e', 'user.k', b'v')\" && \
         find . -mindepth 1 -exec touch -h -d @1500000000 {} + && touch -h -d @1600000000 link && \
         touch -d @1600000000 d/f",
    );
}

#[test]
fn the_walker_reads_links_xattrs_and_inodes_without_following() {
    let t = tempfile::tempdir().expect("tempdir");
    sample(t.path());
    let tree = tree::walk(t.path()).expect("walk");
    let names: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(names, ["", "d", "d/e", "d/f", "d/g", "dangling", "link", "p"], "no path through the /etc link");
    assert_eq!(tree["link"].kind, Kind::Symlink);
    assert_eq!(tree["link"].target.as_deref(), Some("/etc"));
    assert_eq!(tree["link"].mtime, 1_600_000_000);
    assert_eq!(tree["dangling"].target.as_deref(), Some("../missing"));
    assert_eq!(tree["d/f"].mode, 0o4750);
    assert_eq!(tree["d/f"].nlink, 2);
    assert_eq!(tree["d/f"].sha256.as_deref(), Some(tree::sha256_hex(b"one").as_str()));
    assert_eq!((tree["d/f"].inode.as_str(), tree["d/g"].inode.as_str()), ("d/f", "d/f"), "one inode, two names");
    assert_eq!(tree["d/e"].xattrs.get("user.k").map(Vec::as_slice), Some(&b"v"[..]));
    assert_eq!(tree["p"].kind, Kind::Fifo);
    let m = std::fs::symlink_metadata(t.path().join("d/f")).expect("stat");
    assert_eq!(tree["d/f"].uid, m.uid());
}

#[test]
fn the_comparison_reports_every_difference_it_is_shown() {
    let (a, b) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    sample(a.path());
    sample(b.path());
    let want = tree::walk(a.path()).expect("walk a");
    let same = tree::walk(b.path()).expect("walk b");
    assert_eq!(tree::compare(&same, &want, &Compare::default()), Vec::<String>::new(), "equal trees");

    sh(
        b.path(),
        "chmod 0755 d/f && rm d/g && printf one > d/g && touch -d @1600000000 d/g && chmod 4750 d/g && \
         rm link && ln -s /usr link && touch -h -d @1600000000 link && rm p && touch p && chown 1:2 dangling -h && \
         python3 -c \"import os; os.setxattr('d/e', 'user.k', b'w')\" && printf x > extra && touch -d @1500000000 d",
    );
    let got = tree::walk(b.path()).expect("walk b again");
    let diff = tree::compare(&got, &want, &Compare::default());
    let text = diff.join("\n");
    for expect in [
        "d/f: mode 0755 want 4750, nlink 1 want 2",
        "d/g: nlink 1 want 2, same inode as \"d/g\", want as \"d/f\"",
        "link: link target Some(\"/usr\") want Some(\"/etc\")",
        "p: type File, want Fifo",
        "dangling: owner 1:2 want 0:0",
        "d/e: xattrs",
        "extra: unexpected File",
    ] {
        assert!(text.contains(expect), "{expect:?} not reported in:\n{text}");
    }
    assert_eq!(diff.len(), 7, "one line per differing path:\n{text}");

    let gone = tree::compare(&tree::build::tree(vec![]), &want, &Compare::default());
    assert!(gone.iter().any(|l| l == "d/f: missing (want File)"), "{gone:?}");
    // content and mtime
    sh(b.path(), "printf two > d/f && touch -d @1600000001 d/f");
    let got = tree::walk(b.path()).expect("walk b, third");
    let text = tree::compare(&got, &want, &Compare::default()).join("\n");
    assert!(text.contains("mtime 1600000001 want 1600000000") && text.contains("content sha256"), "{text}");
}

#[test]
fn stamped_directory_mtimes_are_skipped_only_when_asked() {
    let want = build::tree(vec![("d", build::dir(0o755, 2_000_000_000))]);
    let got = build::tree(vec![("d", build::dir(0o755, 0))]);
    assert_eq!(tree::compare(&got, &want, &Compare::default()).len(), 1);
    let how = Compare { dir_mtime_stamped_after: Some(1_900_000_000), ..Compare::default() };
    assert!(tree::compare(&got, &want, &how).is_empty());
}
