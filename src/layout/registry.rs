//! The names a registry gives: the root and namespaces (from the catalog), and in each
//! repository `tags/`, `manifests/` and `blobs/`.

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::names;

use super::{Blob, Dir, Layout, Link, ManifestDir, Node, Stability};

pub const TAGS: &str = "tags";
pub const MANIFESTS: &str = "manifests";
pub const BLOBS: &str = "blobs";
/// Names a repository directory reserves for itself; no repository component may use them.
pub const RESERVED: [&str; 3] = [TAGS, MANIFESTS, BLOBS];
/// Length of `../manifests/sha256:<64 hex>`, reported before a tag is resolved: counted from its
/// parts, so it stays the length `readlink` gives.
const SHA256_TAG_LINK_LEN: u64 = ("../".len() + MANIFESTS.len() + "/sha256:".len() + 64) as u64;

/// `/`: the catalog's top-level names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Root;

/// A repository name or a prefix of one (`library`, `library/alpine`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    pub path: String,
}

/// On Docker Hub, `<name>/tags`, `<name>/manifests` or `<name>/blobs` of a one-component name:
/// a link to the same directory of the official image, `../library/<name>/<dir>`. The name
/// stays a namespace too (`alpine/git` is another repository), so only these three link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OfficialLink {
    /// The name as typed (`alpine`).
    pub name: String,
    /// One of [`RESERVED`].
    pub dir: &'static str,
}

/// `<repo>/tags/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tags {
    pub repo: String,
}

/// `<repo>/tags/<tag>`: a symlink to `../manifests/<digest>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    pub repo: String,
    pub tag: String,
    /// What the tag pointed to when it was looked up or listed, if it was resolved then within
    /// `tag_ttl`. Part of the link's identity: a tag that moved is another node, so another
    /// inode, whose target the kernel reads afresh (it keeps a link's target for the life of
    /// the inode). A link not resolved yet is not cached by the kernel (TTL 0): the next path
    /// walk through it looks it up again and finds it resolved, a node of its own.
    pub target: Option<Digest>,
    /// For a link not resolved when looked up or listed, the fetch of the tag list that named
    /// it ([`crate::store::Store::tag_list_generation`]); 0 for one resolved. Part of the
    /// identity too: the kernel keeps the target it read of the link, so a lookup after the tag
    /// list was fetched again (the tag may have moved) must name another inode, not this one.
    pub listing: u64,
}

/// `<repo>/manifests/`: the manifests verified so far; any digest looks up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Manifests {
    pub repo: String,
}

/// `<repo>/blobs/`: lookup only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Blobs {
    pub repo: String,
}

/// A name at the root or in a namespace: a namespace, if the grammar allows it. The catalog is
/// never asked: it may add names to a listing but never deny one looked up (a pull-through
/// cache lists only what it has cached, other registries only what the caller may see).
fn namespace_child(prefix: Option<&str>, name: &str) -> Result<Node> {
    // `tags`, `manifests` and `blobs` are taken inside a repository directory (by its own
    // directories); at the root they are ordinary names.
    if !names::is_component(name) {
        return Err(Error::InvalidName(name.to_string()));
    }
    let path = prefix.map_or_else(|| name.to_string(), |p| format!("{p}/{name}"));
    names::check_repo(&path)?;
    Ok(Node::Namespace(Namespace { path }))
}

/// Whether `repo` is a repository, as far as the registry can say: a catalog listing it says
/// yes at no cost; otherwise the first page of its tag list (one request, whatever the list's
/// length), whose 404 (NAME_UNKNOWN) says no; the store remembers the answer for `tag_ttl`.
/// A refusal or any other failure of the tag list leaves the directory there, for its listing
/// to report: a refused list does not stop tags being looked up by name.
fn repository_exists(cx: &Layout, repo: &str) -> Result<()> {
    match cx.store.repository(repo) {
        Err(Error::NotFound(e)) => {
            log::debug!("{repo}: the tag list is not found ({e}): not a repository");
            Err(Error::NotFound(format!("{repo}: not a repository")))
        }
        _ => Ok(()),
    }
}

/// What the root or a namespace directory lists, from the catalog: the next components, and
/// whether the directory may be a repository. Without a catalog (the registry has none, or
/// refuses it) nothing is listed but every name still looks up.
fn namespace_listing(cx: &Layout, prefix: Option<&str>) -> (Vec<String>, bool) {
    let catalog = match cx.store.catalog() {
        Ok(c) => c,
        // A registry without a catalog for us (404, 401, 403) is ordinary; anything else
        // (a catalog over its byte budget, a registry failing) is worth a warning.
        Err(e @ (Error::NotFound(_) | Error::Denied(_))) => {
            log::info!("no catalog ({e}); listing only what is looked up by name");
            return (Vec::new(), true);
        }
        Err(e) => {
            log::warn!("no catalog ({e}); listing only what is looked up by name");
            return (Vec::new(), true);
        }
    };
    let mut children: Vec<String> = Vec::new();
    let mut is_repo = false;
    for repo in catalog.iter() {
        let rest = match prefix {
            None => Some(repo.as_str()),
            Some(p) if repo == p => {
                is_repo = true;
                None
            }
            Some(p) => repo.strip_prefix(p).and_then(|r| r.strip_prefix('/')),
        };
        if let Some(first) = rest.and_then(|r| r.split('/').next()) {
            // Inside a repository directory the reserved names are taken by its own dirs.
            let hidden = prefix.is_some() && RESERVED.contains(&first);
            if !hidden && children.last().map(String::as_str) != Some(first) {
                children.push(first.to_string());
            }
        }
    }
    children.dedup();
    // A name the catalog does not know may still be a repository it does not show.
    let maybe_repo = is_repo || children.is_empty();
    (children, maybe_repo)
}

fn namespaces(prefix: Option<&str>, children: Vec<String>) -> impl Iterator<Item = (String, Node)> {
    children.into_iter().map(move |c| {
        let path = prefix.map_or_else(|| c.clone(), |p| format!("{p}/{c}"));
        (c, Node::Namespace(Namespace { path }))
    })
}

impl Dir for Root {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn parent(&self) -> Node {
        Node::Root(Root)
    }

    fn child(&self, _: &Layout, name: &str) -> Result<Node> {
        if name == super::REGFS_DIR {
            return Ok(Node::RegfsDir(super::RegfsDir));
        }
        namespace_child(None, name)
    }

    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        let (children, _) = namespace_listing(cx, None);
        Ok(namespaces(None, children).collect())
    }
}

impl Dir for Namespace {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn parent(&self) -> Node {
        match self.path.rsplit_once('/') {
            Some((up, _)) => Node::Namespace(Namespace { path: up.to_string() }),
            None => Node::Root(Root),
        }
    }

    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        if let Some(dir) = self.official_link(cx, name) {
            return Ok(Node::OfficialLink(OfficialLink { name: self.path.clone(), dir }));
        }
        let repo = self.path.clone();
        match name {
            TAGS => {
                repository_exists(cx, &repo)?;
                Ok(Node::Tags(Tags { repo }))
            }
            // These cost nothing to look up: what is looked up inside them asks the registry.
            MANIFESTS => Ok(Node::Manifests(Manifests { repo })),
            BLOBS => Ok(Node::Blobs(Blobs { repo })),
            _ => namespace_child(Some(&self.path), name),
        }
    }

    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        let (children, maybe_repo) = namespace_listing(cx, Some(&self.path));
        let mut out = Vec::new();
        // A repository the catalog leaves out is listed as one once the registry said so.
        if maybe_repo || self.official_link(cx, TAGS).is_some() || cx.store.known_repository(&self.path) {
            for r in RESERVED {
                if let Ok(n) = self.child(cx, r) {
                    out.push((r.to_string(), n));
                }
            }
        }
        out.extend(namespaces(Some(&self.path), children));
        Ok(out)
    }
}

impl Namespace {
    /// Which of [`RESERVED`] `name` is, where this namespace is a one-component name on Docker
    /// Hub (and so an official image as typed).
    /// Not for an official image named like a repository's own directories (`tags`): no path
    /// reaches `library/tags`, and a link into it would lead through `library/`'s own links
    /// into `library/library`.
    fn official_link(&self, cx: &Layout, name: &str) -> Option<&'static str> {
        let dir = RESERVED.into_iter().find(|r| *r == name)?;
        let reachable = !RESERVED.contains(&self.path.as_str());
        (cx.docker_hub && reachable && names::docker_hub_repository(&self.path).is_some()).then_some(dir)
    }
}

impl Link for OfficialLink {
    fn stability(&self) -> Stability {
        // Docker Hub's rule, fixed per mount: where the link leads never changes.
        Stability::Immutable
    }

    fn size(&self, _: &Layout) -> u64 {
        self.target_path().len() as u64
    }

    fn target(&self, _: &Layout) -> Result<String> {
        Ok(self.target_path())
    }

    fn target_now(&self, _: &Layout) -> Option<Result<String>> {
        Some(Ok(self.target_path()))
    }
}

impl OfficialLink {
    /// `../library/<name>/<dir>`, from `<name>/`.
    fn target_path(&self) -> String {
        format!("../{}/{}/{}", names::DOCKER_HUB_OFFICIAL, self.name, self.dir)
    }
}

impl Dir for Tags {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn parent(&self) -> Node {
        Node::Namespace(Namespace { path: self.repo.clone() })
    }

    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        names::check_tag(name)?;
        let target = match cx.store.tag_listed(&self.repo, name) {
            Some(true) => cx.store.resolve_tag_if_known(&self.repo, name),
            Some(false) => return Err(Error::NotFound(name.to_string())),
            None => Some(cx.store.resolve_tag(&self.repo, name)?),
        };
        let listing = match target {
            Some(_) => 0,
            None => cx.store.tag_list_generation(&self.repo).unwrap_or(0),
        };
        Ok(Node::Tag(Tag { repo: self.repo.clone(), tag: name.to_string(), target, listing }))
    }

    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        let tags = cx.store.tags(&self.repo)?;
        let generation = cx.store.tag_list_generation(&self.repo).unwrap_or(0);
        Ok(tags
            .iter()
            .map(|t| {
                let target = cx.store.resolve_tag_if_known(&self.repo, t);
                let listing = if target.is_some() { 0 } else { generation };
                (t.clone(), Node::Tag(Tag { repo: self.repo.clone(), tag: t.clone(), target, listing }))
            })
            .collect())
    }
}

fn tag_target(d: &Digest) -> String {
    format!("../{MANIFESTS}/{d}")
}

impl Link for Tag {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    /// Exact once resolved; until then the sha256 length, so `ls -l` costs no HEAD.
    fn size(&self, _: &Layout) -> u64 {
        self.target.as_ref().map_or(SHA256_TAG_LINK_LEN, |d| tag_target(d).len() as u64)
    }

    /// A size that is a guess (not resolved when looked up) is not cached by the kernel.
    fn settled(&self) -> bool {
        self.target.is_some()
    }

    /// This inode's target if it was resolved when looked up (trusted for the TTL of its entry,
    /// `tag_ttl`), else one HEAD (cached for `tag_ttl`); tags read in order start a readahead of
    /// the next ones.
    /// The digest it names is told to the signature gate (a scope of this tag applies to it).
    fn target(&self, cx: &Layout) -> Result<String> {
        let digest = match &self.target {
            Some(d) => d.clone(),
            None => cx.store.resolve_tag(&self.repo, &self.tag)?,
        };
        let target = if self.target.is_some() { tag_target(&digest) } else { self.guessed(tag_target(&digest))? };
        cx.gate.note_tag(&self.repo, &self.tag, &digest);
        cx.readahead.note_read(&cx.store, &self.repo, &self.tag);
        Ok(target)
    }

    /// Known without waiting: resolved when looked up, or since, within `tag_ttl`. Every path
    /// through `tags/<tag>/` reads this link (unless the kernel keeps it), inline.
    fn target_now(&self, cx: &Layout) -> Option<Result<String>> {
        let digest = match &self.target {
            Some(d) => d.clone(),
            None => cx.store.resolve_tag_if_known(&self.repo, &self.tag)?,
        };
        let target = if self.target.is_some() { Ok(tag_target(&digest)) } else { self.guessed(tag_target(&digest)) };
        cx.gate.note_tag(&self.repo, &self.tag, &digest);
        cx.readahead.note_read(&cx.store, &self.repo, &self.tag);
        Some(target)
    }
}

impl Tag {
    /// The target of a link not resolved when looked up, if it is as long as the size that link
    /// reported: a kernel keeping links (`FUSE_CACHE_SYMLINKS`) ends one at its inode's size.
    /// A longer or shorter one (a digest other than sha256) is ESTALE, and the kernel looks the
    /// name up again, now resolved, and retries.
    fn guessed(&self, target: String) -> Result<String> {
        if target.len() as u64 == SHA256_TAG_LINK_LEN {
            return Ok(target);
        }
        Err(Error::Stale(format!("tags/{} of {}: resolved since it was looked up", self.tag, self.repo)))
    }
}

impl Dir for Manifests {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn parent(&self) -> Node {
        Node::Namespace(Namespace { path: self.repo.clone() })
    }

    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        let digest: Digest = name.parse()?;
        cx.store.manifest(&self.repo, &digest)?;
        Ok(Node::ManifestDir(ManifestDir { repo: self.repo.clone(), digest }))
    }

    fn children(&self, cx: &Layout) -> Result<Vec<(String, Node)>> {
        Ok(cx
            .store
            .seen_manifests(&self.repo)
            .into_iter()
            .map(|d| (d.to_string(), Node::ManifestDir(ManifestDir { repo: self.repo.clone(), digest: d })))
            .collect())
    }
}

impl Dir for Blobs {
    fn stability(&self) -> Stability {
        Stability::Named
    }

    fn parent(&self) -> Node {
        Node::Namespace(Namespace { path: self.repo.clone() })
    }

    /// Under a signature policy, a blob is read through a manifest the policy accepts, never by
    /// digest alone: nothing here says which manifest it belongs to.
    fn child(&self, cx: &Layout, name: &str) -> Result<Node> {
        let digest: Digest = name.parse()?;
        if cx.gate.enforcing() {
            return Err(Error::Refused(format!(
                "{}/blobs/{digest}: blobs/ is closed under a signature policy (read blobs through manifests/<digest>/)",
                self.repo
            )));
        }
        Ok(Node::Blob(Blob { repo: self.repo.clone(), digest, size: None }))
    }

    fn children(&self, _: &Layout) -> Result<Vec<(String, Node)>> {
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        let ns = |p: &str| Namespace { path: p.into() };
        assert_eq!(ns("a/b").parent(), Node::Namespace(ns("a")));
        assert_eq!(ns("a").parent(), Node::Root(Root));
        assert_eq!(Tags { repo: "a/b".into() }.parent(), Node::Namespace(ns("a/b")));
    }

    /// A tag link's identity carries what it pointed to when looked up: a tag that moved is
    /// another node (another inode, whose target the kernel reads afresh). One not resolved
    /// then reports the sha256 length, unsettled, and a target of another length is ESTALE.
    #[test]
    fn a_tag_link_is_its_target_and_a_guessed_size_is_never_served_wrong() {
        use crate::digest::{Algorithm, Digest};
        let tag = |target: Option<Digest>| Tag { repo: "a".into(), tag: "v1".into(), target, listing: 0 };
        let (d1, d2) = (Digest::of(Algorithm::Sha256, b"one"), Digest::of(Algorithm::Sha256, b"two"));
        assert_ne!(Node::Tag(tag(Some(d1.clone()))), Node::Tag(tag(Some(d2.clone()))));
        assert_ne!(Node::Tag(tag(None)), Node::Tag(tag(Some(d1.clone()))));
        assert!(tag(Some(d1.clone())).settled() && !tag(None).settled());
        let named_by = |listing| Node::Tag(Tag { listing, ..tag(None) });
        assert_ne!(named_by(1), named_by(2), "named by another fetch of the tag list: another inode");
        assert_eq!(tag_target(&d2).len() as u64, SHA256_TAG_LINK_LEN);
        assert_eq!(tag(None).guessed(tag_target(&d2)).ok(), Some(tag_target(&d2)));
        let long = tag_target(&Digest::of(Algorithm::Sha512, b"two"));
        let stale = tag(None).guessed(long).expect_err("a sha512 target is longer than the size reported");
        assert_eq!(stale.errno(), libc::ESTALE);
    }
}
