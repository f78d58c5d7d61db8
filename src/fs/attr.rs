//! What the kernel is told of a node: its attributes ([`Attr`], with device numbers in the
//! kernel's encoding: [`rdev`]) and its extended attributes, answered in the FUSE size protocol
//! ([`xattr_reply`]).

use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::layout::FileKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits with setuid, setgid and sticky (12 bits). Kinds without metadata of
    /// their own are read-only: 0555 directories, 0444 files, 0777 links.
    pub mode: u16,
    /// The owner; `None` is the mounting user (every kind without metadata of its own).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub nlink: u32,
    /// A device's number in the kernel's encoding ([`rdev`]); 0 for anything else.
    pub rdev: u32,
    /// How long the kernel may cache this entry and its attributes.
    pub ttl: Duration,
    pub mtime: SystemTime,
}

/// `major:minor` as the kernel reads a FUSE `rdev` (`new_decode_dev`): 12 bits of major and
/// 20 of minor, the low byte of the minor first.
pub fn rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// An answer to getxattr or listxattr: the length asked for (size 0), or the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Xattr {
    Size(u32),
    Data(Vec<u8>),
}

/// The FUSE size protocol: size 0 asks the length; a buffer smaller than the value is ERANGE.
pub fn xattr_reply(value: &[u8], size: u32) -> Result<Xattr> {
    let len = u32::try_from(value.len()).map_err(|_| Error::TooLarge(format!("{} bytes", value.len())))?;
    match size {
        0 => Ok(Xattr::Size(len)),
        s if s < len => Err(Error::BufferTooSmall(format!("{len} bytes into {s}"))),
        _ => Ok(Xattr::Data(value.to_vec())),
    }
}

/// The names of `xattrs`, each followed by a NUL, as listxattr(2) gives them.
pub fn xattr_list(xattrs: &[(String, Vec<u8>)], size: u32) -> Result<Xattr> {
    let mut names = Vec::new();
    for (name, _) in xattrs {
        names.extend_from_slice(name.as_bytes());
        names.push(0);
    }
    xattr_reply(&names, size)
}

/// The value of `name` in `xattrs`; ENODATA if it is not there.
pub fn xattr_value(xattrs: &[(String, Vec<u8>)], name: &OsStr, size: u32) -> Result<Xattr> {
    match xattrs.iter().find(|(n, _)| OsStr::new(n) == name) {
        Some((_, value)) => xattr_reply(value, size),
        None => Err(Error::NoAttribute(name.to_string_lossy().into_owned())),
    }
}
