//! Mirrors (registries.conf, containerd's hosts.toml) as configured, and a mirror that lies, over
//! the in-memory registry.

use std::sync::Arc;

use regfs::store::{Store, StoreConfig};
use regfs::testkit::fake::Fake;

/// The mirror that served bad bytes is the one distrusted, even beside another on the same host
/// (registries.conf `location = "m/a"` and `"m/b"`, both `https://m/`; or a mirror whose URL is
/// a prefix of another's): the read goes on to the registry, which holds the right bytes. A
/// mirror can make a read slow, never fail.
#[test]
fn a_lying_mirror_beside_another_on_the_same_host_cannot_fail_a_read() {
    use regfs::registry::mirrors::{Mirror, MirrorConfig, Mirrored};
    let registry = Fake::default();
    let (_, layer) = registry.image("r", "v1", b"layer bytes");
    let lacking = Fake::default(); // a pull-through cache that has not cached it yet
    let liar = Fake::default();
    liar.image("b/r", "v1", b"layer bytes");
    liar.corrupt_blob(&layer, b"other bytes".to_vec());
    let mirror = |name: &str, client: Fake, path: &str| Mirror {
        name: name.into(),
        client: Box::new(client),
        resolve: false,
        path: path.into(),
    };
    // Both on host m: the same name, as main.rs gives them (`spec.url.to_string()`).
    let mirrors = vec![mirror("fake://", lacking, "a"), mirror("fake://", liar, "b")];
    let client = Arc::new(Mirrored::new(Box::new(registry), mirrors, MirrorConfig::default()));
    let cache = tempfile::tempdir().expect("cache");
    let config = StoreConfig { cache_dir: cache.path().to_path_buf(), small_blob: 0, ..StoreConfig::default() };
    let store = Store::new(client, &config).expect("store");
    store.blob("r", &layer, Some(11)).expect("the registry has the right bytes");
}

/// hosts.toml: a relative `ca` is read beside the file that names it, as containerd does, also
/// when that file is `DIR/_default/hosts.toml` (not from `DIR/<host>/`, another config's
/// directory).
#[test]
fn a_relative_ca_in_the_default_hosts_toml_is_read_beside_it() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("_default")).expect("mkdir");
    std::fs::write(dir.path().join("_default/hosts.toml"), "[host.\"https://m.example\"]\nca = \"ca.pem\"\n")
        .expect("write");
    let (from, specs) =
        regfs::registry::mirror_config::hosts_toml(dir.path(), "r.example").expect("parses").expect("found");
    assert_eq!(from, dir.path().join("_default/hosts.toml"));
    assert_eq!(specs[0].ca, [dir.path().join("_default/ca.pem")]);
}
