//! containers-registries.d(5): which scopes read sigstore attachments. Every `*.yaml` file of the
//! directory is read (sorted by name); a scope, or `default-docker`, defined by two files is an
//! error, as containers/image says. Of each entry only `use-sigstore-attachments` matters to
//! regfs (lookaside URLs carry GPG simple signatures, which regfs does not verify); the entry
//! that decides for an image is that of its most specific scope that sets the field, else
//! `default-docker`'s; where none sets it, attachments are not read, as in containers/image.
//!
//! regfs reads both kinds of sigstore attachment by this one switch: cosign's
//! `sha256-<hex>.sig` tag and Sigstore bundles attached as OCI 1.1 referrers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::{self, Reference};

#[derive(Debug, Default, Clone, Deserialize)]
struct Entry {
    #[serde(rename = "use-sigstore-attachments")]
    use_sigstore_attachments: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(rename = "default-docker")]
    default_docker: Option<Entry>,
    #[serde(default)]
    docker: BTreeMap<String, Entry>,
}

/// What the directory says, merged.
#[derive(Debug, Default, Clone)]
pub struct Attachments {
    default_docker: Option<Entry>,
    docker: BTreeMap<String, Entry>,
    /// The files read, for the log line.
    pub files: Vec<PathBuf>,
}

/// Files past this are not configuration.
const MAX_FILE: u64 = 1 << 20;

impl Attachments {
    /// Read `dir`; a missing directory is no configuration (attachments off everywhere).
    pub fn load(dir: &Path) -> Result<Attachments, String> {
        let mut out = Attachments::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        let mut from: BTreeMap<String, PathBuf> = BTreeMap::new();
        for f in files {
            let shown = f.display().to_string();
            let len = std::fs::metadata(&f).map_err(|e| format!("{shown}: {e}"))?.len();
            if len > MAX_FILE {
                return Err(format!("{shown}: {len} bytes is not a registries.d file"));
            }
            let text = std::fs::read_to_string(&f).map_err(|e| format!("{shown}: {e}"))?;
            out.add(&text, &f, &mut from)?;
        }
        Ok(out)
    }

    fn add(&mut self, text: &str, f: &Path, from: &mut BTreeMap<String, PathBuf>) -> Result<(), String> {
        let shown = f.display();
        // An empty file (or one of comments only) is no configuration.
        // Read as a value first: a mapping naming one key twice is refused there (as
        // containers/image's yaml.v3 refuses it), not read last-wins.
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| format!("{shown}: {e}"))?;
        if value.is_null() {
            return Ok(());
        }
        let parsed: File = serde_yaml_ng::from_value(value).map_err(|e| format!("{shown}: {e}"))?;
        let mut twice = |key: &str| match from.insert(key.to_string(), f.to_path_buf()) {
            Some(first) => Err(format!("{key} is defined both in {} and {shown}", first.display())),
            None => Ok(()),
        };
        if let Some(d) = parsed.default_docker {
            twice("default-docker")?;
            self.default_docker = Some(d);
        }
        for (scope, entry) in parsed.docker {
            reference::check_scope(&scope).map_err(|e| format!("{shown}: docker: {e}"))?;
            twice(&format!("docker namespace {scope}"))?;
            self.docker.insert(scope, entry);
        }
        self.files.push(f.to_path_buf());
        Ok(())
    }

    /// Whether sigstore attachments are read for `image`, and the entry that says so: the most
    /// specific scope that sets the field, else `default-docker`'s (containers/image's
    /// `useSigstoreAttachments`: an entry without the field, a lookaside-only one, says nothing).
    pub fn enabled(&self, image: &Reference) -> (bool, String) {
        for scope in reference::scopes(image) {
            if let Some(on) = self.docker.get(&scope).and_then(|e| e.use_sigstore_attachments) {
                return (on, format!("registries.d scope {scope}"));
            }
        }
        match self.default_docker.as_ref().and_then(|e| e.use_sigstore_attachments) {
            Some(on) => (on, "registries.d default-docker".into()),
            None => (false, "no registries.d entry sets use-sigstore-attachments".into()),
        }
    }

    /// Attachments read everywhere (the mount's own switch, for tests and `--no-registries-d`).
    pub fn everywhere() -> Attachments {
        Attachments { default_docker: Some(Entry { use_sigstore_attachments: Some(true) }), ..Attachments::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_entry_decides_and_two_files_may_not_define_one_scope() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("a.yaml"), "default-docker:\n  lookaside: file:///x\ndocker:\n  localhost:5000/sig:\n    use-sigstore-attachments: true\n  localhost:5000/sig/off:\n    lookaside: https://example.com\n").expect("write");
        std::fs::write(dir.path().join("b.yaml"), "# nothing\n").expect("write");
        std::fs::write(dir.path().join("c.txt"), "not: [yaml").expect("write");
        let a = Attachments::load(dir.path()).expect("load");
        let d = format!("sha256:{}", "a".repeat(64));
        let on = |s: &str| a.enabled(&Reference::parse_normalized(&format!("{s}@{d}")).expect("ref")).0;
        assert!(on("localhost:5000/sig/app"));
        assert!(on("localhost:5000/sig/off/app"), "its own entry says nothing: its parent's says on");
        assert!(!on("localhost:5000/other"), "default-docker without the field: off");
        std::fs::write(
            dir.path().join("d.yaml"),
            "docker:\n  localhost:5000/sig:\n    use-sigstore-attachments: false\n",
        )
        .expect("write");
        let e = Attachments::load(dir.path()).expect_err("defined twice");
        assert!(e.contains("both in"), "{e}");
        std::fs::write(dir.path().join("d.yaml"), "docker:\n  busybox: {}\n").expect("write");
        assert!(Attachments::load(dir.path()).is_err(), "a scope not fully expanded");
        assert!(Attachments::load(&dir.path().join("missing")).expect("none").files.is_empty());
    }
}
