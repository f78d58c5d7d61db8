//! `rootfs/`'s layers at hand: the indexes they keep stay within the index memory bound.

use std::sync::Arc;

use regfs::fs::Attr;
use regfs::testkit::core::{add_gzip_layer, cat_as_fuse, fs_on, put_gzip_image};
use regfs::testkit::fake::Fake;
use regfs::testkit::faulty::Faulty;
use regfs::testkit::paths::Paths;

/// Indexes held for `rootfs/`'s inline opens stay within the views' index memory bound
/// (`ViewsConfig::index_memory`, 64 MiB): the table of layers at hand (up to `READY_LAYERS`, 64, each
/// up to `MAX_INDEX_BYTES`, 128 MiB) does not pin indexes the views' LRU evicted, which a
/// hostile image of layers with big indexes (64 KiB xattrs per entry, long symlink targets)
/// could make 8 GiB. Here 5 layers of 32 MiB of index each: opening one file of each, once all
/// are indexed, keeps no evicted index (live heap counted by this binary's allocator).
#[test]
fn indexes_held_for_inline_opens_stay_within_the_index_memory_bound() {
    let _serial = crate::serial();
    const LAYERS: usize = 5;
    const PER_LAYER: usize = 500;
    let fake = Arc::new(Faulty::new(Fake::default()));
    let cache = tempfile::tempdir().expect("cache");
    let mut layers = Vec::new();
    let mut ids = Vec::new();
    for l in 0..LAYERS {
        let mut b = tar::Builder::new(Vec::new());
        let value = vec![b'a' + l as u8; 65_000];
        for i in 0..PER_LAYER {
            b.append_pax_extensions([("SCHILY.xattr.user.big", value.as_slice())]).expect("pax");
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_path(format!("l{l}/f{i}")).expect("name");
            h.set_mode(0o644);
            h.set_size(1);
            h.set_cksum();
            b.append(&h, &b"x"[..]).expect("append");
        }
        let raw = b.into_inner().expect("tar");
        let (blob, size, diff) = add_gzip_layer(&fake, &raw);
        layers.push((blob, size));
        ids.push(diff);
    }
    let d = put_gzip_image(&fake, "r", "v1", &layers, &ids);
    let fs = fs_on(&fake, cache.path());
    // Every layer indexed first (the views' LRU keeps what its bound allows, the rest on disk).
    let files: Vec<Attr> =
        (0..LAYERS).map(|l| fs.walk(&format!("r/manifests/{d}/rootfs/l{l}/f0")).expect("file")).collect();
    let before = crate::live();
    // Then one file of each opened: nothing more than a descriptor per layer need stay.
    for f in &files {
        assert_eq!(cat_as_fuse(&fs, f.ino).expect("cat"), b"x");
    }
    let held = crate::live();
    eprintln!(
        "live heap: {} MiB once all are indexed, {} MiB after one open in each of {LAYERS} layers",
        before >> 20,
        held >> 20
    );
    let bound = regfs::views::ViewsConfig::default().index_memory + (40 << 20);
    assert!(held <= bound, "{} MiB live for indexes bounded at 64 MiB: evicted ones pinned", held >> 20);
}
