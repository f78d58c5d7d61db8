//! Reads by inode (no open): the contents kept for them stay within a memory bound.

use std::sync::Arc;

use regfs::digest::Digest;
use regfs::testkit::core::{self as kit, add_gzip_layer, fs_on, put_gzip_image};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::paths::Paths;

/// Contents kept for reads by inode (`--no-open`, until the kernel forgets the inode) are
/// bounded by bytes (`FsConfig::inode_memory`), not by count alone (`FsConfig::inode_handles`, 4,096):
/// blobs up to 1 MiB are served from memory (within `small_cache_bytes`, 32 MiB), and were each
/// inode to pin its own copy, one `cat` of 4,096 small blobs (no descriptor held by the reader,
/// the kernel keeps the inodes in its dentry cache) would hold 4 GiB. Here 64 blobs of 1 MiB
/// read once each by inode: the live heap stays within the small-blob budget and a margin.
#[test]
fn contents_kept_for_reads_by_inode_stay_within_a_memory_bound() {
    let _serial = crate::serial();
    const BLOBS: usize = 64;
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let digests: Vec<Digest> = (0..BLOBS)
        .map(|i| {
            let mut bytes = vec![0u8; 1 << 20];
            bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
            fake.add_blob(&bytes)
        })
        .collect();
    let (blob, size, diff) = add_gzip_layer(&fake, &kit::tar_of(&[("a", b"a")]));
    put_gzip_image(&fake, "r", "v1", &[(blob, size)], &[diff]);
    let fs = fs_on(&fake, cache.path());
    let inos: Vec<u64> = digests.iter().map(|d| fs.walk(&format!("r/blobs/{d}")).expect("blob").ino).collect();
    let before = crate::live();
    for &ino in &inos {
        let mut off = 0u64;
        loop {
            let chunk = fs.read_ino(ino, 1, off, 128 << 10).expect("read by inode");
            if chunk.is_empty() {
                break;
            }
            off += chunk.len() as u64;
        }
        assert_eq!(off, 1 << 20);
    }
    let grown = crate::live().saturating_sub(before);
    eprintln!("live heap grew by {} MiB reading {BLOBS} blobs of 1 MiB by inode", grown >> 20);
    let bound = (32 << 20) + (8 << 20);
    assert!(
        grown <= bound,
        "{} MiB live after reading {BLOBS} MiB once: kept by inode past the small-blob budget",
        grown >> 20
    );
}
