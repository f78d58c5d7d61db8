//! A file tree as `lstat` and friends see it, and a comparison of two such trees, path by path:
//! the one walker of the mount tests (an unpacker's tree against a mount's, or two mounts').
//!
//! [`walk`] never follows a symlink: `symlink_metadata`, `read_link`, `llistxattr`/`lgetxattr`,
//! sha256 of regular files' contents (read whole: as many bytes as the size says, or an error),
//! and hard-link classes by `(dev, ino)` (each name of one inode carries the first of its names
//! in sorted order). [`compare`] reports every difference
//! in type, mode (12 bits), uid, gid, size and nlink (non-directories), mtime, content hash,
//! link target, xattrs, rdev, and which names share an inode.
//!
//! Skipped, by design, with the reason next to each skip: the root's own attributes (regfs shows
//! `rootfs/` as 0755 root:root whatever a `./` entry says; tests check it apart), directory
//! sizes and link counts (filesystem-specific; regfs reports 1 like btrfs), atime and ctime (not
//! image data), `security.selinux` (umoci's skip list; the host labels what it writes), and
//! directory mtimes umoci stamped at unpack time (implied parents, and the parent of a directory
//! created implicitly: Go's `MkdirAll` does not restore them).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::Digest as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (12 bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub mtime: i64,
    /// sha256 hex of a regular file's contents.
    pub sha256: Option<String>,
    pub target: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub rdev: (u32, u32),
    /// The first name (sorted) of this node's inode: equal for the names of one hard-linked inode.
    pub inode: String,
}

/// Relative path (`a/b`, the root is `""`) to node.
pub type Tree = BTreeMap<String, Node>;

/// xattrs no comparison looks at.
const SKIPPED_XATTRS: &[&str] = &["security.selinux"];

pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = sha2::Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{}: NUL in path", p.display()))
}

fn errno(what: &str, p: &Path) -> String {
    format!("{what} {}: {}", p.display(), std::io::Error::last_os_error())
}

/// `llistxattr` + `lgetxattr` of every name (minus [`SKIPPED_XATTRS`]).
pub fn xattrs(p: &Path) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let c = cpath(p)?;
    // SAFETY: a valid path; a null buffer of size 0 asks for the length.
    let len = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        return Err(errno("llistxattr", p));
    }
    let mut names = vec![0u8; len as usize];
    // SAFETY: the buffer has the length passed.
    let len = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Err(errno("llistxattr", p));
    }
    names.truncate(len as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let s = String::from_utf8_lossy(name).into_owned();
        if SKIPPED_XATTRS.contains(&s.as_str()) {
            continue;
        }
        let cn = CString::new(name).map_err(|_| "NUL in an xattr name".to_string())?;
        // SAFETY: valid strings; size 0 asks for the length.
        let vlen = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
        if vlen < 0 {
            return Err(errno(&format!("lgetxattr {s}"), p));
        }
        let mut v = vec![0u8; vlen as usize];
        // SAFETY: the buffer has the length passed.
        let vlen = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if vlen < 0 {
            return Err(errno(&format!("lgetxattr {s}"), p));
        }
        v.truncate(vlen as usize);
        out.insert(s, v);
    }
    Ok(out)
}

/// The sha256 of a regular file's contents, which must be as long as its size says (`size`).
fn hash_file(p: &Path, size: u64) -> Result<String, String> {
    let mut f = std::fs::File::open(p).map_err(|e| format!("open {}: {e}", p.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut read = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("read {}: {e}", p.display()))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        h.update(&buf[..n]);
    }
    if read != size {
        return Err(format!("{}: read {read} bytes of a file whose size is {size}", p.display()));
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// One node at `p` (not followed), its inode class still to be set; and its `(dev, ino)`.
pub fn node(p: &Path) -> Result<(Node, (u64, u64)), String> {
    let m = std::fs::symlink_metadata(p).map_err(|e| format!("lstat {}: {e}", p.display()))?;
    let ft = m.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let target = if kind == Kind::Symlink {
        let t = std::fs::read_link(p).map_err(|e| format!("readlink {}: {e}", p.display()))?;
        Some(t.to_string_lossy().into_owned())
    } else {
        None
    };
    let sha256 = if kind == Kind::File { Some(hash_file(p, m.size())?) } else { None };
    let rdev = m.rdev();
    let n = Node {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        nlink: m.nlink(),
        mtime: m.mtime(),
        sha256,
        target,
        xattrs: xattrs(p)?,
        rdev: (libc::major(rdev), libc::minor(rdev)),
        inode: String::new(),
    };
    Ok((n, (m.dev(), m.ino())))
}

/// Every path under `root` (and the root itself, as `""`), never following links.
pub fn walk(root: &Path) -> Result<Tree, String> {
    let mut tree = Tree::new();
    let mut ids: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let p = if rel.is_empty() { root.to_path_buf() } else { root.join(&rel) };
        let (n, id) = node(&p)?;
        if n.kind == Kind::Dir {
            let rd = std::fs::read_dir(&p).map_err(|e| format!("readdir {}: {e}", p.display()))?;
            for e in rd {
                let e = e.map_err(|e| format!("readdir {}: {e}", p.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                stack.push(if rel.is_empty() { name } else { format!("{rel}/{name}") });
            }
        }
        ids.insert(rel.clone(), id);
        tree.insert(rel, n);
    }
    set_inode_classes(&mut tree, &ids);
    Ok(tree)
}

/// Each non-directory's class is the first path (sorted) with its `(dev, ino)`.
fn set_inode_classes(tree: &mut Tree, ids: &BTreeMap<String, (u64, u64)>) {
    let mut first: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for (path, id) in ids {
        first.entry(*id).or_insert_with(|| path.clone());
    }
    for (path, n) in tree.iter_mut() {
        n.inode = match (n.kind, ids.get(path)) {
            (Kind::Dir, _) | (_, None) => path.clone(),
            (_, Some(id)) => first.get(id).cloned().unwrap_or_else(|| path.clone()),
        };
    }
}

/// How to compare.
#[derive(Clone, Debug, Default)]
pub struct Compare {
    /// Skip a directory's mtime when the expected tree's is at or after this (umoci stamped it
    /// at unpack time: an implied parent, or the parent of one).
    pub dir_mtime_stamped_after: Option<i64>,
    /// Skip link counts: overlayfs shows a lower layer's inode with its own count, where regfs
    /// counts the names that survive to the top.
    pub skip_nlink: bool,
}

fn show_mode(m: u32) -> String {
    format!("{m:04o}")
}

/// Every difference between `got` and `want`, one line each, sorted by path.
pub fn compare(got: &Tree, want: &Tree, how: &Compare) -> Vec<String> {
    let mut out = Vec::new();
    for (path, w) in want {
        if path.is_empty() {
            continue; // the root: checked apart (regfs shows rootfs/ as 0755 root:root)
        }
        let Some(g) = got.get(path) else {
            out.push(format!("{path}: missing (want {:?})", w.kind));
            continue;
        };
        let mut d = Vec::new();
        if g.kind != w.kind {
            out.push(format!("{path}: type {:?}, want {:?}", g.kind, w.kind));
            continue;
        }
        if g.mode != w.mode {
            d.push(format!("mode {} want {}", show_mode(g.mode), show_mode(w.mode)));
        }
        if (g.uid, g.gid) != (w.uid, w.gid) {
            d.push(format!("owner {}:{} want {}:{}", g.uid, g.gid, w.uid, w.gid));
        }
        let is_dir = w.kind == Kind::Dir;
        // directory sizes and link counts are the filesystem's, not the image's
        if !is_dir && g.size != w.size {
            d.push(format!("size {} want {}", g.size, w.size));
        }
        if !is_dir && !how.skip_nlink && g.nlink != w.nlink {
            d.push(format!("nlink {} want {}", g.nlink, w.nlink));
        }
        let stamped = is_dir && how.dir_mtime_stamped_after.is_some_and(|t| w.mtime >= t);
        if !stamped && g.mtime != w.mtime {
            d.push(format!("mtime {} want {}", g.mtime, w.mtime));
        }
        if g.sha256 != w.sha256 {
            d.push(format!("content sha256 {:?} want {:?}", g.sha256, w.sha256));
        }
        if g.target != w.target {
            d.push(format!("link target {:?} want {:?}", g.target, w.target));
        }
        if g.xattrs != w.xattrs {
            d.push(format!("xattrs {:?} want {:?}", g.xattrs, w.xattrs));
        }
        if matches!(w.kind, Kind::Char | Kind::Block) && g.rdev != w.rdev {
            d.push(format!("rdev {:?} want {:?}", g.rdev, w.rdev));
        }
        if !is_dir && g.inode != w.inode {
            d.push(format!("same inode as {:?}, want as {:?}", g.inode, w.inode));
        }
        if !d.is_empty() {
            out.push(format!("{path}: {}", d.join(", ")));
        }
    }
    for (path, g) in got {
        if !path.is_empty() && !want.contains_key(path) {
            out.push(format!("{path}: unexpected {:?}", g.kind));
        }
    }
    out
}

/// Builders for expected nodes (hand-written expectations).
pub mod build {
    use super::*;

    fn base(kind: Kind, mode: u32, mtime: i64) -> Node {
        Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            nlink: 1,
            mtime,
            sha256: None,
            target: None,
            xattrs: BTreeMap::new(),
            rdev: (0, 0),
            inode: String::new(),
        }
    }

    pub fn file(content: &str, mode: u32, mtime: i64) -> Node {
        let mut n = base(Kind::File, mode, mtime);
        n.size = content.len() as u64;
        n.sha256 = Some(sha256_hex(content.as_bytes()));
        n
    }

    pub fn dir(mode: u32, mtime: i64) -> Node {
        base(Kind::Dir, mode, mtime)
    }

    pub fn symlink(target: &str, mtime: i64) -> Node {
        let mut n = base(Kind::Symlink, 0o777, mtime);
        n.size = target.len() as u64;
        n.target = Some(target.to_string());
        n
    }

    /// A tree from `(path, node)` pairs, each inode its own unless `Node::inode` is set.
    pub fn tree(nodes: Vec<(&str, Node)>) -> Tree {
        nodes
            .into_iter()
            .map(|(p, mut n)| {
                if n.inode.is_empty() {
                    n.inode = p.to_string();
                }
                (p.to_string(), n)
            })
            .collect()
    }
}
