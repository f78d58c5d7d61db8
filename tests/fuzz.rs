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
use regfs::views::index::{self, IndexLimits, LayerIndex};
use regfs::views::tar::{Parser, TarLimits};
use std::io::Cursor;

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

// Decoded layers (PLAN-9 B1/B4): the tar parser and the layer index meet bytes a registry chose.

/// One 512-byte ustar header (GNU magic if `gnu`), with its checksum.
fn tar_header(name: &[u8], flag: u8, size: u64, link: &[u8], gnu: bool) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    for (range, v) in [(100..108, 0o644u64), (108..116, 0), (116..124, 0), (124..136, size), (136..148, 1_700_000_000)]
    {
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
