//! Mirrors and pull-through caches: a [`Client`] that asks mirrors first and the registry last.
//!
//! # Which request goes where
//! - The catalog and tag lists: the registry only. A pull-through cache lists only what it has
//!   cached, so its lists would hide repositories and tags.
//! - A manifest by tag: the mirrors that resolve tags ([`Mirror::resolve`]), in order, then the
//!   registry. `--mirror-digest-only`, registries.conf's `pull-from-mirror = "digest-only"` or
//!   `mirror-by-digest-only`, and hosts.toml capabilities without `resolve` turn it off.
//! - A manifest by digest, a blob's size and a blob's bytes: every mirror in order, then the
//!   registry. What they answer is checked by the store against the digest as anything is, so
//!   a mirror can make a read slower, never wrong.
//!
//! # One attempt per mirror
//! A mirror's own client does not retry (`retries: 0`): the registry behind it is the retry.
//! A transport fault, a timeout, 429 or a 5xx ([`Error::Unavailable`]) marks the mirror down for
//! [`MirrorConfig::cool_off`] (30 s), so a dead mirror costs one `--timeout` per cool-off, not
//! one per read. Any other answer (404, 401, 403, a protocol error) skips it for that request
//! only: a pull-through cache may not have a private repository, and is asked again next time.
//! The registry keeps its full retry policy, and its answer is final.
//!
//! A download cut off half way is resumed (`Range`) from whichever source answers first then:
//! the hash carries on, since the bytes are the same by digest.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{BlobReply, Client, Fetch, ManifestReply, Stats};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::sync::lock;

/// How mirrors are used; `Default` is what regfs runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// How long a mirror that failed (unreachable, timed out, 5xx) is not asked (30 s).
    pub cool_off: Duration,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig { cool_off: Duration::from_secs(30) }
    }
}

/// A mirror as configured (`--mirror`, registries.conf, hosts.toml), before it has a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSpec {
    /// Where it is (its path is the root of its `/v2/` API).
    pub url: reqwest::Url,
    /// Tags are resolved there too.
    pub resolve: bool,
    /// Where the repositories of its group are at the mirror ("": under the same names).
    pub path: String,
    /// CA files to trust for it (hosts.toml `ca`), besides `--ca-cert` and the system's.
    pub ca: Vec<std::path::PathBuf>,
}

impl MirrorSpec {
    /// `--mirror URL`: a URL or `host[:port]` as the registry argument is read (`endpoint.rs`).
    pub fn parse(given: &str, resolve: bool) -> Result<MirrorSpec> {
        let url = super::endpoint::parse(given).map_err(|e| Error::BadArgument(format!("--mirror {}", e.tell())))?;
        Ok(MirrorSpec { url, resolve, path: String::new(), ca: Vec::new() })
    }

    /// `host[:port]`, as credentials are looked up.
    pub fn host(&self) -> String {
        host_of(&self.url)
    }
}

/// `host[:port]` of `url`, as credentials are looked up.
pub fn host_of(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// One mirror: how to reach it, and what it may be asked.
pub struct Mirror {
    /// Its URL, for the log.
    pub name: String,
    /// Its own client: its own credentials (looked up for its host), no retries.
    pub client: Box<dyn Client>,
    /// Tags are resolved here too (else only content by digest is asked).
    pub resolve: bool,
    /// Where its group's repositories are at the mirror ("": under the same names).
    pub path: String,
}

/// Mirrors for the repositories under `repos` ("": all), as registries.conf gives them per
/// prefix; `blocked` refuses those repositories.
pub struct MirrorGroup {
    pub repos: String,
    pub blocked: bool,
    pub mirrors: Vec<Mirror>,
}

struct Group {
    repos: String,
    blocked: bool,
    sources: Vec<Source>,
}

impl Group {
    fn holds(&self, repo: &str) -> bool {
        self.repos.is_empty()
            || repo.strip_prefix(self.repos.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

struct Source {
    mirror: Mirror,
    /// Not asked until then.
    down_until: Mutex<Option<Instant>>,
    /// It served bytes that did not hash right: never asked again by this mount.
    distrusted: std::sync::atomic::AtomicBool,
}

impl Source {
    fn new(mirror: Mirror) -> Source {
        Source { mirror, down_until: Mutex::new(None), distrusted: Default::default() }
    }

    fn is_down(&self) -> bool {
        self.distrusted.load(std::sync::atomic::Ordering::Relaxed)
            || lock(&self.down_until).is_some_and(|t| Instant::now() < t)
    }
}

/// The registry behind its mirrors.
pub struct Mirrored {
    /// Longest `repos` first: a repository follows the first group that holds it.
    groups: Vec<Group>,
    registry: Box<dyn Client>,
    config: MirrorConfig,
}

impl Mirrored {
    /// `registry`, asked after `mirrors` (in this order).
    pub fn new(registry: Box<dyn Client>, mirrors: Vec<Mirror>, config: MirrorConfig) -> Mirrored {
        Mirrored::grouped(registry, vec![MirrorGroup { repos: String::new(), blocked: false, mirrors }], config)
    }

    /// `registry`, each repository asked first at the mirrors of the longest group holding it.
    pub fn grouped(registry: Box<dyn Client>, groups: Vec<MirrorGroup>, config: MirrorConfig) -> Mirrored {
        let mut groups: Vec<Group> = groups
            .into_iter()
            .map(|g| Group {
                repos: g.repos,
                blocked: g.blocked,
                sources: g.mirrors.into_iter().map(Source::new).collect(),
            })
            .collect();
        groups.sort_by_key(|g| std::cmp::Reverse(g.repos.len()));
        Mirrored { groups, registry, config }
    }

    /// Refuse a repository registries.conf blocks.
    fn allowed(&self, repo: &str) -> Result<()> {
        match self.groups.iter().find(|g| g.holds(repo)) {
            Some(g) if g.blocked => Err(Error::Denied(format!("{repo}: blocked in registries.conf"))),
            _ => Ok(()),
        }
    }

    /// `ask` each mirror of `repo`'s group that may answer (all of them, or those that resolve
    /// tags when `tag`) and is not cooling off, once, in order, with the name `repo` has there;
    /// the first answer wins; else the registry's.
    fn first<T>(
        &self,
        repo: &str,
        what: &dyn Fn() -> String,
        tag: bool,
        ask: &dyn Fn(&dyn Client, &str) -> Result<T>,
    ) -> Result<T> {
        self.allowed(repo)?;
        let group = self.groups.iter().find(|g| g.holds(repo));
        for source in group.map_or(&[][..], |g| &g.sources[..]) {
            let m = &source.mirror;
            if (tag && !m.resolve) || source.is_down() {
                continue;
            }
            let there = match group {
                Some(g) if !(g.repos.is_empty() && m.path.is_empty()) => {
                    let rest = repo[g.repos.len()..].trim_start_matches('/');
                    [m.path.as_str(), rest].iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join("/")
                }
                _ => repo.to_string(),
            };
            match ask(&*m.client, &there) {
                Ok(v) => {
                    log::debug!("{} served by mirror {}", what(), m.name);
                    return Ok(v);
                }
                Err(e @ Error::Unavailable(_)) => {
                    *lock(&source.down_until) = Some(Instant::now() + self.config.cool_off);
                    log::warn!(
                        "mirror {}: {e}; not asked again for {} s, reads go to the next source",
                        m.name,
                        self.config.cool_off.as_secs()
                    );
                }
                Err(e) => log::debug!("mirror {} did not serve {}: {e}; asking the next source", m.name, what()),
            }
        }
        ask(&*self.registry, repo)
    }
}

fn is_digest(reference: &str) -> bool {
    reference.contains(':')
}

impl Client for Mirrored {
    fn ping(&self) -> Result<()> {
        self.registry.ping()
    }

    fn catalog(&self) -> Result<Vec<String>> {
        self.registry.catalog()
    }

    fn tags(&self, repo: &str) -> Result<Vec<String>> {
        self.allowed(repo)?;
        self.registry.tags(repo)
    }

    fn has_tag_list(&self, repo: &str) -> Result<Option<Vec<String>>> {
        self.allowed(repo)?;
        self.registry.has_tag_list(repo)
    }

    fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply> {
        let what = || format!("manifest {repo}:{reference}");
        self.first(repo, &what, !is_digest(reference), &|c, r| c.manifest(r, reference, fetch))
    }

    /// The registry's: a referrers list changes as artifacts are pushed, as a tag list does, and
    /// a pull-through cache holds only what it was asked for.
    fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<crate::manifest::referrers::Referrer>>> {
        self.allowed(repo)?;
        self.registry.referrers(repo, digest)
    }

    fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
        let what = || format!("size of {digest} of {repo}");
        self.first(repo, &what, false, &|c, r| c.blob_size(r, digest))
    }

    fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply> {
        let what = || format!("blob {digest} of {repo} from {offset}");
        self.first(repo, &what, false, &|c, r| c.blob(r, digest, offset))
    }

    fn blob_range(&self, repo: &str, digest: &Digest, start: u64, end: u64) -> Result<BlobReply> {
        let what = || format!("bytes {start}..{end} of blob {digest} of {repo}");
        self.first(repo, &what, false, &|c, r| c.blob_range(r, digest, start, end))
    }

    /// A mirror whose reply at `url` did not hash right is not asked again by this mount.
    fn distrust(&self, url: &str) -> bool {
        // The source that served `url`: its origin, and its repositories' path there when it has
        // one (two mirrors on one host, `m/a` and `m/b`, differ only by it): the longest match.
        let served = |s: &&Source| -> Option<usize> {
            let rest = url.strip_prefix(s.mirror.name.trim_end_matches('/'))?;
            let path = s.mirror.path.trim_matches('/');
            if path.is_empty() {
                return Some(0);
            }
            let rest = rest.trim_start_matches('/');
            let under = rest.strip_prefix("v2/").unwrap_or(rest).strip_prefix(path)?;
            under.starts_with('/').then_some(path.len())
        };
        let candidates = self.groups.iter().flat_map(|g| &g.sources);
        let Some(source) =
            candidates.filter_map(|s| served(&s).map(|n| (n, s))).max_by_key(|(n, _)| *n).map(|(_, s)| s)
        else {
            return false;
        };
        if !source.distrusted.swap(true, std::sync::atomic::Ordering::Relaxed) {
            log::warn!(
                "mirror {} served {url} with bytes that do not match its digest; not asked again by this mount",
                source.mirror.name
            );
        }
        true
    }

    /// The registry's and every mirror's requests, added up.
    fn stats(&self) -> Stats {
        let mut all = self.registry.stats();
        for s in self.groups.iter().flat_map(|g| &g.sources) {
            all.add(&s.mirror.client.stats());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::registry::http::{HttpClient, Options, RetryPolicy};
    use crate::testkit::fake::Fake;
    use crate::testkit::faulty::Faulty;

    /// A client for tests that shares its `Faulty<Fake>` with the test.
    struct Shared(Arc<Faulty<Fake>>);

    impl Client for Shared {
        fn catalog(&self) -> Result<Vec<String>> {
            self.0.catalog()
        }
        fn tags(&self, repo: &str) -> Result<Vec<String>> {
            self.0.tags(repo)
        }
        fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply> {
            self.0.manifest(repo, reference, fetch)
        }
        fn referrers(&self, repo: &str, digest: &Digest) -> Result<Option<Vec<crate::manifest::referrers::Referrer>>> {
            self.0.referrers(repo, digest)
        }
        fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
            self.0.blob_size(repo, digest)
        }
        fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply> {
            self.0.blob(repo, digest, offset)
        }
    }

    /// A mirror under the registry's own repository names.
    fn mirror(name: &str, client: Box<dyn Client>, resolve: bool) -> Mirror {
        Mirror { name: name.into(), client, resolve, path: String::new() }
    }

    /// A registry holding image `r:v1` (one layer), and a mirror holding the same.
    fn twins() -> (Arc<Faulty<Fake>>, Arc<Faulty<Fake>>, Digest, Digest) {
        let (registry, mirror) = (Arc::new(Faulty::new(Fake::default())), Arc::new(Faulty::new(Fake::default())));
        let (m, l) = registry.image("r", "v1", b"layer bytes");
        assert_eq!(mirror.image("r", "v1", b"layer bytes"), (m.clone(), l.clone()));
        (registry, mirror, m, l)
    }

    fn read(c: &dyn Client, d: &Digest) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut c.blob("r", d, 0).expect("blob").reader, &mut out).expect("body");
        out
    }

    /// A mirror nothing listens on: every connection is refused, at once.
    fn dead_mirror() -> HttpClient {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port").port();
        let options = Options { retry: RetryPolicy { retries: 0, ..RetryPolicy::default() }, ..Options::default() };
        let url = format!("http://127.0.0.1:{port}/").parse().expect("url");
        HttpClient::new(url, options).expect("client")
    }

    #[test]
    fn a_dead_mirror_costs_one_attempt_then_is_skipped_for_a_while() {
        let (registry, live, _, layer) = twins();
        let dead = Arc::new(dead_mirror());
        struct Dead(Arc<HttpClient>);
        impl Client for Dead {
            fn catalog(&self) -> Result<Vec<String>> {
                self.0.catalog()
            }
            fn tags(&self, repo: &str) -> Result<Vec<String>> {
                self.0.tags(repo)
            }
            fn manifest(&self, repo: &str, reference: &str, fetch: Fetch) -> Result<ManifestReply> {
                self.0.manifest(repo, reference, fetch)
            }
            fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64> {
                self.0.blob_size(repo, digest)
            }
            fn blob(&self, repo: &str, digest: &Digest, offset: u64) -> Result<BlobReply> {
                self.0.blob(repo, digest, offset)
            }
            fn stats(&self) -> Stats {
                self.0.stats()
            }
        }
        let mirrors = vec![
            mirror("dead", Box::new(Dead(Arc::clone(&dead))), true),
            mirror("live", Box::new(Shared(Arc::clone(&live))), true),
        ];
        let cool_off = Duration::from_millis(300);
        let c = Mirrored::new(Box::new(Shared(Arc::clone(&registry))), mirrors, MirrorConfig { cool_off });
        for _ in 0..3 {
            assert_eq!(read(&c, &layer), b"layer bytes");
        }
        assert_eq!(dead.stats().requests, 1, "the dead mirror is asked once per cool-off");
        assert_eq!(live.blob_gets(), 3, "the live mirror serves every read");
        assert_eq!(registry.blob_gets(), 0, "the registry is not asked while a mirror answers");
        std::thread::sleep(cool_off + Duration::from_millis(50));
        assert_eq!(read(&c, &layer), b"layer bytes");
        assert_eq!(dead.stats().requests, 2, "after the cool-off the dead mirror is tried again, once");
        // A mirror that does not have a blob (404) is skipped for that request only.
        let only_upstream = registry.add_blob(b"only at the registry");
        assert_eq!(read(&c, &only_upstream), b"only at the registry");
        assert_eq!(read(&c, &layer), b"layer bytes");
        assert_eq!(live.blob_gets(), 6, "asked for the missing blob, and again for the next read");
        assert_eq!(registry.blob_gets(), 1);
        // The mirrors' requests count in the mount's summary.
        assert_eq!(c.stats().requests, 2);
    }

    #[test]
    fn tags_and_digests_go_where_their_rule_says() {
        let (registry, tags_too, m, layer) = twins();
        let digests_only = Arc::new(Faulty::new(Fake::default()));
        digests_only.image("r", "v1", b"layer bytes");
        // Asked first, but for digests only.
        let mirrors = vec![
            mirror("digests", Box::new(Shared(Arc::clone(&digests_only))), false),
            mirror("all", Box::new(Shared(Arc::clone(&tags_too))), true),
        ];
        let c = Mirrored::new(Box::new(Shared(Arc::clone(&registry))), mirrors, MirrorConfig::default());
        assert_eq!(c.tags("r").expect("tags"), ["v1"]);
        assert_eq!(c.catalog().expect("catalog"), ["r"]);
        let head = c.manifest("r", "v1", Fetch::Head).expect("by tag");
        assert_eq!(head.digest_header, Some(m.to_string()));
        c.manifest("r", &m.to_string(), Fetch::Get).expect("by digest");
        assert_eq!(read(&c, &layer), b"layer bytes");
        // Referrers are a listing too (it changes as artifacts are pushed): the registry's.
        c.referrers("r", &m).expect("referrers");
        let listed = ["tags r".to_string(), "catalog".to_string(), format!("referrers r {m}")];
        assert_eq!(registry.calls(), listed, "the registry lists, and serves nothing else");
        assert_eq!(tags_too.calls(), ["Head manifest r v1"], "the tag went to the first mirror that resolves");
        let by_digest = [format!("Get manifest r {m}"), format!("GET blob r {layer} from 0")];
        assert_eq!(digests_only.calls(), by_digest, "a digest-only mirror is asked for digests first, tags never");
    }

    #[test]
    fn a_repository_follows_the_longest_group_with_its_name_at_the_mirror() {
        let (registry, _, _, layer) = twins();
        // The mirror holds `team/app` as `cache/app` (registries.conf: prefix host/team, location mirror/cache).
        let at_mirror = Arc::new(Faulty::new(Fake::default()));
        at_mirror.image("cache/app", "v1", b"layer bytes");
        registry.image("team/app", "v1", b"layer bytes");
        let group =
            |repos: &str, blocked: bool, mirrors: Vec<Mirror>| MirrorGroup { repos: repos.into(), blocked, mirrors };
        let mirror = Mirror {
            name: "m".into(),
            client: Box::new(Shared(Arc::clone(&at_mirror))),
            resolve: true,
            path: "cache".into(),
        };
        let groups =
            vec![group("", false, vec![]), group("team", false, vec![mirror]), group("team/secret", true, vec![])];
        let c = Mirrored::grouped(Box::new(Shared(Arc::clone(&registry))), groups, MirrorConfig::default());
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut c.blob("team/app", &layer, 0).expect("blob").reader, &mut out).expect("body");
        assert_eq!(out, b"layer bytes");
        assert_eq!(at_mirror.calls(), [format!("GET blob cache/app {layer} from 0")]);
        assert_eq!(read(&c, &layer), b"layer bytes", "`r` is in no group with mirrors: the registry serves it");
        assert_eq!(registry.calls(), [format!("GET blob r {layer} from 0")]);
        // `teamwork` is not under `team`; `team/secret` is blocked, tags and all.
        c.blob("teamwork", &layer, 0).expect("the registry has every blob");
        assert_eq!(at_mirror.calls().len(), 1);
        for e in
            [c.tags("team/secret/x").expect_err("blocked"), c.blob("team/secret", &layer, 0).err().expect("blocked")]
        {
            assert!(matches!(e, Error::Denied(_)), "{e}");
        }
    }
}
