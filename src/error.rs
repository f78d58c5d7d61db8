//! One error type for the whole filesystem, and its one mapping to errno.
//!
//! Every failure regfs can meet — a registry fault, a hostile document, a digest that does not
//! match, a local I/O problem — becomes one of these variants where it happens, carrying the URL
//! or digest it concerns. The FUSE adapter turns it into an errno with [`Error::errno`] and logs
//! it once; nothing else in the tree decides errno values.

use std::fmt;

/// What went wrong, as a value that can be shared among every reader waiting on the same
/// download (hence `Clone`, and `String` where a source error would not be).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The registry says the thing does not exist (HTTP 404), or the name cannot exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The registry refused us after authenticating (401 / 403).
    #[error("access denied: {0}")]
    Denied(String),
    /// The mount's signature policy refuses this manifest's content (`policy`): the message
    /// names the manifest, the policy scope and why.
    #[error("refused by the signature policy: {0}")]
    Refused(String),
    /// The registry could not be reached or kept failing (429, 5xx, resets) after retries.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// Bytes that do not hash to the digest they were asked for.
    #[error("digest mismatch: {what} should be {expected} but hashes to {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    /// A document we cannot trust or understand: bad JSON, missing fields, absurd sizes.
    #[error("malformed {what}: {why}")]
    Malformed { what: String, why: String },
    /// A name (repository, tag, digest) that is not valid in the distribution grammar, and so
    /// can never exist: only that (the day-long negative entry relies on it).
    #[error("invalid name {0:?}")]
    InvalidName(String),
    /// A name was looked up, or a listing asked, in something that is not a directory.
    #[error("not a directory: {0}")]
    NotADirectory(String),
    /// A link's target was asked of something that is not a symlink (EINVAL, as readlink(2)).
    #[error("not a symlink: {0}")]
    NotASymlink(String),
    /// A directory was opened as a file.
    #[error("is a directory: {0}")]
    IsADirectory(String),
    /// A file or directory handle that is not open.
    #[error("bad handle: {0}")]
    BadHandle(String),
    /// An argument that cannot be used: a malformed option or registry URL, or a link opened as a file.
    #[error("bad argument: {0}")]
    BadArgument(String),
    /// Something larger than regfs accepts (manifests over 4 MiB, bodies longer than declared).
    #[error("too large: {0}")]
    TooLarge(String),
    /// The registry answered in a way the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Local I/O on the cache directory failed.
    #[error("local I/O: {0}")]
    Io(String),
    /// The process waiting for this answer was killed: it is answered at once (EINTR), while
    /// the work it waited for goes on for others.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// The filesystem is being unmounted: work in flight is abandoned.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// An extended attribute the file does not have (ENODATA, as getxattr(2)).
    #[error("no such attribute: {0}")]
    NoAttribute(String),
    /// A buffer the caller sized too small for the answer (ERANGE, as getxattr(2)).
    #[error("buffer too small: {0}")]
    BufferTooSmall(String),
    /// An answer given inline needed what is not in memory now (a layer's index, a manifest):
    /// the adapter asks again on a thread, where it may wait. Never a reader's answer (EAGAIN
    /// only so that every variant has an errno).
    #[error("not at hand: {0}")]
    NotAtHand(String),
    /// What an inode said of itself is no longer so (a tag link looked up before the tag was
    /// resolved, whose target's length is not the one it reported): the kernel looks the name
    /// up again and retries (ESTALE).
    #[error("stale: {0}")]
    Stale(String),
}

impl Error {
    /// The error as told to the person at the terminal about their own input (a path, a URL,
    /// an option): the detail alone, without the category a log line starts with ("local
    /// I/O:", "bad argument:"), which says nothing to them. Registry errors keep theirs.
    pub fn tell(&self) -> String {
        match self {
            Error::Io(detail) | Error::BadArgument(detail) => detail.clone(),
            Error::Malformed { what, why } => format!("{what}: {why}"),
            other => other.to_string(),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

impl Error {
    /// The errno a filesystem caller sees. This is the only place errno values are chosen.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound(_) | Error::InvalidName(_) => libc::ENOENT,
            Error::Denied(_) | Error::Refused(_) => libc::EACCES,
            Error::TooLarge(_) => libc::EFBIG,
            Error::Unavailable(_)
            | Error::DigestMismatch { .. }
            | Error::Malformed { .. }
            | Error::Protocol(_)
            | Error::Io(_)
            | Error::Cancelled(_) => libc::EIO,
            Error::Interrupted(_) => libc::EINTR,
            Error::NotADirectory(_) => libc::ENOTDIR,
            Error::NotASymlink(_) | Error::BadArgument(_) => libc::EINVAL,
            Error::IsADirectory(_) => libc::EISDIR,
            Error::BadHandle(_) => libc::EBADF,
            Error::NoAttribute(_) => libc::ENODATA,
            Error::BufferTooSmall(_) => libc::ERANGE,
            Error::NotAtHand(_) => libc::EAGAIN,
            Error::Stale(_) => libc::ESTALE,
        }
    }

    /// The kind of error, in a few words (as its message starts), for counting (`.regfs/status`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not found",
            Error::Denied(_) => "access denied",
            Error::Refused(_) => "refused by the signature policy",
            Error::Unavailable(_) => "registry unavailable",
            Error::DigestMismatch { .. } => "digest mismatch",
            Error::Malformed { .. } => "malformed",
            Error::InvalidName(_) => "invalid name",
            Error::NotADirectory(_) => "not a directory",
            Error::NotASymlink(_) => "not a symlink",
            Error::IsADirectory(_) => "is a directory",
            Error::BadHandle(_) => "bad handle",
            Error::BadArgument(_) => "bad argument",
            Error::TooLarge(_) => "too large",
            Error::Protocol(_) => "protocol error",
            Error::Io(_) => "local I/O",
            Error::Interrupted(_) => "interrupted",
            Error::Cancelled(_) => "cancelled",
            Error::NoAttribute(_) => "no such attribute",
            Error::BufferTooSmall(_) => "buffer too small",
            Error::NotAtHand(_) => "not at hand",
            Error::Stale(_) => "stale",
        }
    }

    /// Whether this is the ordinary "no such thing" answer, which is not worth a warning.
    pub fn is_not_found(&self) -> bool {
        self.errno() == libc::ENOENT
    }

    pub fn malformed(what: impl fmt::Display, why: impl fmt::Display) -> Self {
        Error::Malformed { what: what.to_string(), why: why.to_string() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_maps_to_its_errno() {
        assert_eq!(Error::NotFound("x".into()).errno(), libc::ENOENT);
        assert_eq!(Error::InvalidName("..".into()).errno(), libc::ENOENT);
        assert_eq!(Error::Denied("x".into()).errno(), libc::EACCES);
        assert_eq!(Error::Unavailable("x".into()).errno(), libc::EIO);
        assert_eq!(Error::malformed("m", "w").errno(), libc::EIO);
        assert_eq!(Error::TooLarge("x".into()).errno(), libc::EFBIG);
        assert_eq!(Error::Interrupted("x".into()).errno(), libc::EINTR);
        assert_eq!(Error::Cancelled("x".into()).errno(), libc::EIO);
        assert_eq!(Error::NotADirectory("x".into()).errno(), libc::ENOTDIR);
        assert_eq!(Error::NotASymlink("x".into()).errno(), libc::EINVAL);
        assert_eq!(Error::IsADirectory("x".into()).errno(), libc::EISDIR);
        assert_eq!(Error::BadHandle("x".into()).errno(), libc::EBADF);
        assert_eq!(Error::BadArgument("x".into()).errno(), libc::EINVAL);
        assert_eq!(Error::NoAttribute("x".into()).errno(), libc::ENODATA);
        assert_eq!(Error::BufferTooSmall("x".into()).errno(), libc::ERANGE);
        assert_eq!(Error::NotAtHand("x".into()).errno(), libc::EAGAIN);
        assert_eq!(Error::Stale("x".into()).errno(), libc::ESTALE);
        let mismatch =
            Error::DigestMismatch { what: "blob".into(), expected: "sha256:aa".into(), actual: "sha256:bb".into() };
        assert_eq!(mismatch.errno(), libc::EIO);
        assert!(mismatch.to_string().contains("sha256:aa"));
    }

    /// The kind `.regfs/status` counts an error under is how its message starts.
    #[test]
    fn each_kind_is_how_its_message_starts() {
        let x = || "x".to_string();
        let all = [
            Error::NotFound(x()),
            Error::Denied(x()),
            Error::Unavailable(x()),
            Error::DigestMismatch { what: x(), expected: x(), actual: x() },
            Error::malformed("m", "w"),
            Error::InvalidName(x()),
            Error::NotADirectory(x()),
            Error::NotASymlink(x()),
            Error::IsADirectory(x()),
            Error::BadHandle(x()),
            Error::BadArgument(x()),
            Error::TooLarge(x()),
            Error::Protocol(x()),
            Error::Io(x()),
            Error::Interrupted(x()),
            Error::Cancelled(x()),
            Error::NoAttribute(x()),
            Error::BufferTooSmall(x()),
            Error::NotAtHand(x()),
            Error::Stale(x()),
        ];
        for e in all {
            assert!(e.to_string().starts_with(e.kind()), "{e}: {}", e.kind());
        }
    }
}
