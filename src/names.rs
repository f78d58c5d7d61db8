//! Repository names and tags, validated against the distribution grammar before they are used
//! in a URL or shown as a file name. Anything a registry or a user hands us that does not match
//! is refused, so no name can escape its directory or smuggle a path into a request.
//!
//! Grammar (distribution `reference` package):
//! - path component: `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
//! - repository: components joined by `/`, at most 255 characters in all
//! - tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`

use crate::error::{Error, Result};
use crate::limits::{MAX_REPO_LEN, MAX_TAG_LEN};

/// Whether `s` is one valid path component of a repository name.
pub fn is_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) || b.len() > MAX_REPO_LEN {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: one '.', one '_', exactly "__", or any number of '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Validate a whole repository name such as `library/alpine`.
pub fn check_repo(name: &str) -> Result<()> {
    if name.len() <= MAX_REPO_LEN && name.split('/').all(is_component) {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// Validate a tag such as `3.19` or `latest`.
pub fn check_tag(tag: &str) -> Result<()> {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let ok =
        !b.is_empty() && b.len() <= MAX_TAG_LEN && word(b[0]) && b.iter().all(|&c| word(c) || c == b'.' || c == b'-');
    if ok { Ok(()) } else { Err(Error::InvalidName(tag.to_string())) }
}

/// Where Docker Hub keeps its official images: a one-component name as people type it
/// (`alpine`) is the repository `library/alpine`.
pub const DOCKER_HUB_OFFICIAL: &str = "library";

/// The repository Docker Hub means by `name` as typed (docker, podman, crane and skopeo all
/// read it so): a single valid component is an official image under [`DOCKER_HUB_OFFICIAL`];
/// anything with a `/` is already whole, and an invalid name means nothing.
pub fn docker_hub_repository(name: &str) -> Option<String> {
    (is_component(name) && name.len() + DOCKER_HUB_OFFICIAL.len() < MAX_REPO_LEN)
        .then(|| format!("{DOCKER_HUB_OFFICIAL}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_reads_one_component_as_an_official_image() {
        assert_eq!(docker_hub_repository("alpine").as_deref(), Some("library/alpine"));
        assert_eq!(docker_hub_repository("ubuntu22.04").as_deref(), Some("library/ubuntu22.04"));
        // As docker reads it: `library` alone is `library/library`.
        assert_eq!(docker_hub_repository("library").as_deref(), Some("library/library"));
        // Names with a namespace are whole; invalid names mean nothing.
        for other in ["alpine/git", "library/alpine", "", "Alpine", "a..b", "-a", "../etc", "a/"] {
            assert_eq!(docker_hub_repository(other), None, "{other:?}");
        }
        // The result is a valid repository name, up to the grammar's length.
        let longest = "a".repeat(MAX_REPO_LEN - DOCKER_HUB_OFFICIAL.len() - 1);
        let whole = docker_hub_repository(&longest).expect("fits");
        assert!(check_repo(&whole).is_ok() && whole.len() == MAX_REPO_LEN);
        assert_eq!(docker_hub_repository(&format!("{longest}a")), None);
    }

    #[test]
    fn components() {
        for good in ["a", "alpine", "my-app", "a--b", "a.b", "a_b", "a__b", "0", "ubuntu22.04"] {
            assert!(is_component(good), "{good}");
        }
        for bad in ["", "A", "-a", "a-", ".", "..", "a..b", "a___b", "a/b", "a\0b", "tag:x", "a._b"] {
            assert!(!is_component(bad), "{bad:?}");
        }
    }

    #[test]
    fn repositories() {
        assert!(check_repo("library/alpine").is_ok());
        assert!(check_repo("a/b/c/d").is_ok());
        assert!(check_repo("a//b").is_err());
        assert!(check_repo("/a").is_err());
        assert!(check_repo("a/../b").is_err());
        assert!(check_repo(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags() {
        for good in ["latest", "3.19", "v1.0.0-rc1", "_x", "A"] {
            assert!(check_tag(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "..", "a b", "a\0", &"t".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
    }
}
