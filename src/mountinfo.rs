//! The mounts the kernel shows this process (`/proc/self/mountinfo`), read in one place: the
//! mount-time checks (`daemon`), the watch for a lazy unmount (`fuse`) and the tests all ask here.
//!
//! Each line is `id parent major:minor root mountpoint options [optional fields] - fstype source
//! super`, and paths escape space, tab, newline and backslash as `\ooo` (octal).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// One mount: where, of what type, from what source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub at: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Every mount this process sees, or `None` where `/proc/self/mountinfo` cannot be read.
pub fn mounts() -> Option<Vec<Mount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(info.lines().filter_map(parse).collect())
}

/// Whether `path` is a mount point now (`None` where `/proc/self/mountinfo` cannot be read).
pub fn is_mount_point(path: &Path) -> Option<bool> {
    Some(mounts()?.iter().any(|m| m.at == path))
}

fn parse(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let at = PathBuf::from(unescape(left.split(' ').nth(4)?));
    let mut rest = right.split(' ');
    let (fstype, source) = (rest.next().unwrap_or(""), rest.next().unwrap_or(""));
    Some(Mount { at, fstype: fstype.to_string(), source: source.to_string() })
}

/// Undo mountinfo's `\ooo` escapes.
fn unescape(field: &str) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(o) if b[i] == b'\\' => {
                out.push(o.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/tmp/a\040b\134c\011d"), "/tmp/a b\\c\td");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn a_line_gives_its_mount_point_type_and_source() {
        let line = r"36 35 0:31 / /mnt/a\040b rw,nosuid shared:1 - fuse regfs:localhost rw,user_id=0";
        assert_eq!(
            parse(line),
            Some(Mount { at: PathBuf::from("/mnt/a b"), fstype: "fuse".into(), source: "regfs:localhost".into() })
        );
        assert_eq!(parse("garbage"), None);
    }
}
