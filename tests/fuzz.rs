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
