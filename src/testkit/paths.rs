//! The core driven by paths, as a shell would: `walk` (lookups from the root), `cat` (open, read
//! to the end, release) and `ls` (a listing without `.` and `..`), for tests of [`Fs`] without
//! FUSE.

use std::ffi::OsStr;

use crate::error::Result;
use crate::fs::{Attr, Fs};

pub trait Paths {
    /// The attributes of `path` (slash-separated, from the root), looked up one part at a time.
    fn walk(&self, path: &str) -> Result<Attr>;
    /// The whole content of the file at `path`, read 64 KiB at a time.
    fn cat(&self, path: &str) -> Result<Vec<u8>>;
    /// The names listed in the directory at `path`, in listing order, without `.` and `..`.
    fn ls(&self, path: &str) -> Result<Vec<String>>;
}

impl Paths for Fs {
    fn walk(&self, path: &str) -> Result<Attr> {
        let mut attr = self.getattr(self.root_ino())?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            attr = self.lookup(attr.ino, OsStr::new(part))?;
        }
        Ok(attr)
    }

    fn cat(&self, path: &str) -> Result<Vec<u8>> {
        let fh = self.open_file(self.walk(path)?.ino)?.fh;
        let mut out = Vec::new();
        let result = loop {
            match self.read(fh, out.len() as u64, 65536) {
                Ok(chunk) if chunk.is_empty() => break Ok(()),
                Ok(chunk) => out.extend(chunk),
                Err(e) => break Err(e),
            }
        };
        self.release(fh);
        result.map(|()| out)
    }

    fn ls(&self, path: &str) -> Result<Vec<String>> {
        let fh = self.opendir(self.walk(path)?.ino)?;
        let listing = self.listing(fh);
        self.releasedir(fh);
        Ok(listing?.iter().map(|e| e.name.clone()).filter(|n| n != "." && n != "..").collect())
    }
}
