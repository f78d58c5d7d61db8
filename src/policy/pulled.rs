//! Which pulls a manifest is judged as besides its own digest: the tag and digest scopes of its
//! repository that name it, or name an index that lists it (as containers/image judges each
//! instance of an index under the reference pulled), searched within a bound.

use super::Gate;
use super::gather::own;
use super::reference::Reference;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::sync::lock;

/// How deep a reference scope's index is searched for the manifest judged.
const INDEX_DEPTH: usize = 4;
/// Indexes read, at most, to find whether a reference scope reaches the manifest judged.
pub const INDEX_MANIFESTS_READ: usize = 64;

/// One search of a reference scope's indexes.
struct Walk {
    seen: std::collections::HashSet<Digest>,
    budget: usize,
}

impl Gate {
    /// Whether a pull of `pulled` (a tag or digest of `repo`) reaches manifest `digest`: it names
    /// it, or an index it names lists it (nested indexes to [`INDEX_DEPTH`]). A tag names what
    /// it resolves to now (within [`Gate::kept_for`]) and what `tags/` links of this mount
    /// resolved it to. Only index children are opened, each once, at most
    /// [`INDEX_MANIFESTS_READ`] per call: past that the scope is taken to apply (fail closed).
    pub(super) fn names(
        &self,
        repo: &str,
        pulled: &Reference,
        digest: &Digest,
        notes: &mut Vec<String>,
    ) -> Result<bool> {
        let mut targets: Vec<Digest> = Vec::new();
        if let Some(d) = &pulled.digest {
            targets.push(d.clone());
        } else if let Some(tag) = &pulled.tag {
            match self.store.resolve_tag_within(repo, tag, self.kept_for()) {
                Ok(d) => targets.push(d),
                Err(Error::NotFound(_) | Error::InvalidName(_)) => {}
                Err(e) => return Err(e),
            }
            if let Some(seen) = lock(&self.tagged).get(&(repo.to_string(), tag.clone())) {
                targets.extend(seen.iter().filter(|d| !targets.contains(d)).cloned().collect::<Vec<_>>());
            }
        }
        let mut walk = Walk { seen: std::collections::HashSet::new(), budget: INDEX_MANIFESTS_READ };
        for t in targets {
            match self.reaches(repo, &t, digest, INDEX_DEPTH, &mut walk)? {
                Some(true) => return Ok(true),
                Some(false) => {}
                None => {
                    notes.push(format!(
                        "{} names more than {INDEX_MANIFESTS_READ} indexes: its scope is taken to apply",
                        pulled.full()
                    ));
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Whether `digest` is `from` or listed under it; `None` when the walk's budget ran out.
    fn reaches(
        &self,
        repo: &str,
        from: &Digest,
        digest: &Digest,
        depth: usize,
        walk: &mut Walk,
    ) -> Result<Option<bool>> {
        if from == digest {
            return Ok(Some(true));
        }
        if depth == 0 || !walk.seen.insert(from.clone()) {
            return Ok(Some(false));
        }
        if walk.budget == 0 {
            return Ok(None);
        }
        walk.budget -= 1;
        let Ok(doc) = own(self.store.manifest(repo, from))? else { return Ok(Some(false)) };
        if doc.manifest.children.iter().any(|(_, c)| c.digest == *digest) {
            return Ok(Some(true));
        }
        for (_, child) in &doc.manifest.children {
            let index = child.media_type == crate::media::OCI_INDEX || child.media_type == crate::media::DOCKER_LIST;
            if index {
                match self.reaches(repo, &child.digest, digest, depth - 1, walk)? {
                    Some(false) => {}
                    other => return Ok(other),
                }
            }
        }
        Ok(Some(false))
    }
}
