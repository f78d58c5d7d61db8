//! Platforms: `--platform os/arch[/variant]`, this machine's platform, and the choice docker
//! makes among an index's entries, which the `current` link of an index directory names.
//!
//! # The matcher
//! A port of containerd's `platforms.Only` (containerd/platforms `compare.go`, `database.go`),
//! which docker and containerd use to pick what to pull. The wanted platform gives an ordered
//! vector of platforms it can run:
//! - `amd64/vN`: `vN`, `vN-1`, … `v1` (written as no variant), then `386`;
//! - `arm/vN`: `vN`, `vN-1`, … `v5`;
//! - `arm64/v8.x`: `v8.x` … `v8` (written as no variant), then `arm/v8` … `arm/v5`;
//!   `arm64/v9.x`: `v9.x` … `v9`, then `v8.(x+5)` (at most `v8.9`) … `v8`, then `arm/v8` … `v5`;
//! - anything else: itself only.
//!
//! Both sides are normalised first (`x86_64` → `amd64`, `aarch64` → `arm64`, `armhf` → `arm/v7`,
//! `armel` → `arm/v6`, `i386` → `386`; `arm` without a variant is `arm/v7`; `amd64/v1` and
//! `arm64/v8` are written without their variant; lower case). An entry matches the first vector
//! element equal to it in OS, architecture and variant; the chosen entry is the one matching the
//! earliest element, and among equals the first in index order, as containerd's stable sort keeps
//! them. Entries without a platform are never chosen (containerd would fetch them to look inside;
//! regfs does not spend a request on a name).
//!
//! # This machine
//! `std::env::consts` gives the OS and architecture; for 32-bit arm the variant comes from
//! `/proc/cpuinfo`'s `CPU architecture` line (with containerd's Raspberry Pi quirk: an
//! `ARMv6-compatible` model reporting 7 is v6), `v7` when it cannot be read.

use std::fmt;

use crate::limits::MAX_PLATFORM_ARG_PART;

/// A platform as an index entry or the command line gives it. Entries keep what the registry
/// said; comparisons go through [`Platform::normalized`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

impl Platform {
    /// `os/arch[/variant]`, each part `[A-Za-z0-9_.-]`, at most [`MAX_PLATFORM_ARG_PART`] bytes; normalised.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let bad = |why: &str| format!("{s:?}: {why}; write os/arch[/variant], e.g. linux/amd64 or linux/arm/v7");
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(bad("not a platform"));
        }
        for part in &parts {
            if part.is_empty() || part.len() > MAX_PLATFORM_ARG_PART {
                return Err(bad("an empty or overlong part"));
            }
            if !part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
                return Err(bad("parts are letters, digits, '_', '.' and '-'"));
            }
        }
        let p = Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map_or(String::new(), |v| v.to_string()),
        };
        Ok(p.normalized())
    }

    /// This machine's platform, as docker's default (`platforms.DefaultSpec`).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "loongarch64" => "loong64",
            other => other,
        };
        let variant = if architecture == "arm" {
            // Bounded: the lines wanted are among the first; a failed read is the default v7.
            let text = read_prefix("/proc/cpuinfo", 64 << 10);
            arm_variant(&text)
        } else {
            String::new()
        };
        Platform { os: std::env::consts::OS.to_string(), architecture: architecture.to_string(), variant }.normalized()
    }

    /// The canonical form both sides are compared in (containerd's `Normalize`).
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase() {
            os if os.is_empty() => std::env::consts::OS.to_string(),
            os if os == "macos" => "darwin".to_string(),
            os => os,
        };
        let (arch, variant) = (self.architecture.to_ascii_lowercase(), self.variant.to_ascii_lowercase());
        let (architecture, variant) = match arch.as_str() {
            "i386" => ("386".to_string(), String::new()),
            "x86_64" | "x86-64" | "amd64" => {
                ("amd64".to_string(), if variant == "v1" { String::new() } else { variant })
            }
            "aarch64" | "arm64" => {
                ("arm64".to_string(), if matches!(variant.as_str(), "8" | "v8") { String::new() } else { variant })
            }
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => {
                let v = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_string(), v)
            }
            _ => (arch, variant),
        };
        Platform { os, architecture, variant }
    }
}

/// The wanted platform's ordered vector (see the module's note), normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    vector: Vec<Platform>,
}

impl Matcher {
    pub fn new(wanted: &Platform) -> Matcher {
        let mut vector = Vec::new();
        push_vector(&wanted.normalized(), &mut vector);
        Matcher { vector: vector.iter().map(Platform::normalized).collect() }
    }

    /// The key of the entry to choose among `(key, platform)` pairs given in index order: the one
    /// matching the earliest element of the vector, the first such in index order; `None` when
    /// none matches.
    pub fn best<'a, K>(&self, entries: impl Iterator<Item = (K, &'a Platform)>) -> Option<K> {
        let mut best: Option<(usize, K)> = None;
        for (key, p) in entries {
            let p = p.normalized();
            let Some(rank) = self.vector.iter().position(|v| *v == p) else { continue };
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, key));
            }
        }
        best.map(|(_, k)| k)
    }
}

fn variant_number(variant: &str) -> Option<u32> {
    variant.strip_prefix('v').unwrap_or(variant).parse().ok()
}

fn with_variant(p: &Platform, architecture: &str, variant: String) -> Platform {
    Platform { os: p.os.clone(), architecture: architecture.to_string(), variant }
}

/// containerd's `platformVector`, for a normalised platform.
fn push_vector(p: &Platform, out: &mut Vec<Platform>) {
    out.push(p.clone());
    match p.architecture.as_str() {
        "amd64" => {
            if let Some(v) = variant_number(&p.variant).filter(|v| *v > 1) {
                for lower in (1..v).rev() {
                    out.push(with_variant(p, "amd64", format!("v{lower}")));
                }
            }
            out.push(with_variant(p, "386", String::new()));
        }
        "arm" => {
            if let Some(v) = variant_number(&p.variant).filter(|v| *v > 5) {
                for lower in (5..v).rev() {
                    out.push(with_variant(p, "arm", format!("v{lower}")));
                }
            }
        }
        "arm64" => {
            let variant = if p.variant.is_empty() { "v8".to_string() } else { p.variant.clone() };
            let (major, minor) = match variant.split_once('.') {
                Some((major, minor)) => (major, Some(minor)),
                None => (variant.as_str(), None),
            };
            if let Some(mut major) = variant_number(major).filter(|m| *m >= 8) {
                // containerd reads a minor only from a four-byte variant (`v8.2`).
                let mut minor = minor.filter(|_| variant.len() == 4).and_then(|m| m.parse::<u32>().ok()).unwrap_or(0);
                let name = |major: u32, minor: u32| {
                    if minor == 0 { format!("v{major}") } else { format!("v{major}.{minor}") }
                };
                if major == 9 {
                    for lower in (0..minor).rev() {
                        out.push(with_variant(p, "arm64", name(9, lower)));
                    }
                    // v9.0 diverged from v8.5: v9.x runs v8.(x+5), up to v8.9.
                    minor = (minor + 5).min(9);
                    major = 8;
                    out.push(with_variant(p, "arm64", format!("v8.{minor}")));
                }
                for lower in (0..minor).rev() {
                    out.push(with_variant(p, "arm64", name(major, lower)));
                }
            }
            // Every arm64 runs 32-bit arm v8 and below.
            let arm = if variant.starts_with("v8.") || variant.starts_with("v9.") { "v8".to_string() } else { variant };
            push_vector(&with_variant(p, "arm", arm), out);
        }
        _ => {}
    }
}

/// The variant of a 32-bit arm machine from the text of `/proc/cpuinfo` (containerd's
/// `getCPUVariant`); `v7` when the line is missing or says something else.
pub fn arm_variant(cpuinfo: &str) -> String {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_ascii_lowercase())
        })
    };
    let mut arch = field("CPU architecture").unwrap_or_default();
    if arch == "7" && field("model name").is_some_and(|m| m.starts_with("armv6-compatible")) {
        arch = "6".to_string();
    }
    match arch.as_str() {
        "8" | "aarch64" => "v8",
        "6" | "6tej" => "v6",
        "5" | "5t" | "5te" | "5tej" => "v5",
        _ => "v7",
    }
    .to_string()
}

/// At most `limit` bytes of the file at `path`, as text; empty when it cannot be read.
fn read_prefix(path: &str, limit: u64) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(path) {
        let mut bytes = Vec::new();
        if f.take(limit).read_to_end(&mut bytes).is_ok() {
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Entries given as `os/arch[/variant]` in index order; what the matcher for `wanted` picks.
    fn pick(wanted: &str, entries: &[&str]) -> Option<usize> {
        let raw: Vec<Platform> = entries
            .iter()
            .map(|e| {
                let mut parts = e.split('/');
                Platform {
                    os: parts.next().unwrap_or_default().to_string(),
                    architecture: parts.next().unwrap_or_default().to_string(),
                    variant: parts.next().unwrap_or_default().to_string(),
                }
            })
            .collect();
        Matcher::new(&p(wanted)).best(raw.iter().enumerate())
    }

    #[test]
    fn the_matcher_falls_back_as_containerds_only_does() {
        // (wanted, entries in index order, the entry chosen)
        let table: &[(&str, &[&str], Option<usize>)] = &[
            // amd64 takes amd64, else 386.
            ("linux/amd64", &["linux/386", "linux/amd64"], Some(1)),
            ("linux/amd64", &["linux/arm/v7", "linux/386"], Some(1)),
            ("linux/amd64", &["linux/arm64", "windows/amd64"], None),
            // amd64/v3 takes v3, v2, v1 (written as nothing or v1), then 386.
            ("linux/amd64/v3", &["linux/amd64", "linux/amd64/v2"], Some(1)),
            ("linux/amd64/v3", &["linux/386", "linux/amd64/v1"], Some(1)),
            ("linux/amd64/v2", &["linux/amd64/v3", "linux/386"], Some(1)),
            // A plain amd64 host does not take a v2 image.
            ("linux/amd64", &["linux/amd64/v2"], None),
            // arm/v7 takes v7, v6, v5; never v8 or arm64.
            ("linux/arm/v7", &["linux/arm/v5", "linux/arm/v6", "linux/386", "linux/amd64"], Some(1)),
            ("linux/arm/v7", &["linux/arm/v5", "linux/arm64"], Some(0)),
            ("linux/arm/v7", &["linux/arm/v8"], None),
            ("linux/arm/v6", &["linux/arm/v7", "linux/arm/v5"], Some(1)),
            ("linux/arm/v5", &["linux/arm/v6"], None),
            // arm without a variant is arm/v7, on both sides.
            ("linux/arm", &["linux/arm/v6", "linux/arm"], Some(1)),
            ("linux/arm/v7", &["linux/arm"], Some(0)),
            ("linux/armhf", &["linux/arm/v7"], Some(0)),
            // arm64 is arm64/v8, written either way.
            ("linux/arm64", &["linux/amd64", "linux/arm64/v8"], Some(1)),
            ("linux/arm64/v8", &["linux/arm64"], Some(0)),
            ("linux/aarch64", &["linux/arm64/v8"], Some(0)),
            // arm64/v8.2 takes v8.2, v8.1, v8, then 32-bit arm v8 down to v5.
            ("linux/arm64/v8.2", &["linux/arm64/v8", "linux/arm64/v8.1"], Some(1)),
            ("linux/arm64/v8.2", &["linux/arm/v7", "linux/arm64"], Some(1)),
            ("linux/arm64/v8.1", &["linux/arm64/v8.2"], None),
            ("linux/arm64", &["linux/arm/v5", "linux/arm/v6", "linux/386", "linux/amd64"], Some(1)),
            ("linux/arm64", &["linux/arm/v7", "linux/arm/v8"], Some(1)),
            // arm64/v9.1 takes v9.1, v9, then v8.6 down to v8.
            ("linux/arm64/v9.1", &["linux/arm64/v8.7", "linux/arm64/v8.6"], Some(1)),
            ("linux/arm64/v9.1", &["linux/arm64", "linux/arm64/v9"], Some(1)),
            // x86_64 is amd64; the OS and architecture are case-insensitive.
            ("linux/x86_64", &["Linux/AMD64"], Some(0)),
            ("linux/amd64", &["linux/x86_64"], Some(0)),
            // Ties keep index order: the first of equally good entries.
            ("linux/amd64", &["linux/amd64", "linux/amd64"], Some(0)),
            ("linux/arm/v7", &["linux/arm/v6", "linux/arm/v5", "linux/arm/v6"], Some(0)),
            // Another OS never matches.
            ("linux/amd64", &["windows/amd64", "darwin/amd64"], None),
            ("linux/s390x", &["linux/amd64", "linux/arm64"], None),
        ];
        for (wanted, entries, chosen) in table {
            assert_eq!(pick(wanted, entries), *chosen, "{wanted} among {entries:?}");
        }
    }

    #[test]
    fn platforms_are_parsed_and_normalised() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/amd64/v1").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm/6").to_string(), "linux/arm/v6");
        assert_eq!(p("Linux/ARM64/V8.2").to_string(), "linux/arm64/v8.2");
        for bad in ["", "linux", "linux/", "/amd64", "linux/amd64/v2/x", "linux/am d64", "linux/amd64/", "linux/*"] {
            let err = Platform::parse(bad).expect_err(bad);
            assert!(err.contains("os/arch"), "{bad}: {err}");
        }
        let long = format!("linux/{}", "a".repeat(MAX_PLATFORM_ARG_PART + 1));
        assert!(Platform::parse(&long).is_err());
    }

    #[test]
    fn this_machines_platform_is_the_default() {
        let host = Platform::host();
        assert_eq!(host.os, std::env::consts::OS);
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        if !matches!(std::env::consts::ARCH, "powerpc64" | "loongarch64" | "arm") {
            assert_eq!(host.architecture, arch);
        }
        // The host's own platform matches an entry written as docker writes it for this machine.
        let entry = Platform { os: "linux".into(), architecture: arch.into(), variant: String::new() };
        if std::env::consts::ARCH != "arm" {
            assert_eq!(Matcher::new(&host).best([(0, &entry)].into_iter()), Some(0));
        }
        // The arm variant comes from /proc/cpuinfo's `CPU architecture`, as containerd reads it.
        assert_eq!(arm_variant("processor\t: 0\nCPU architecture: 7\n"), "v7");
        assert_eq!(arm_variant("CPU architecture: 8\n"), "v8");
        assert_eq!(arm_variant("model name\t: ARMv6-compatible processor\nCPU architecture: 7\n"), "v6");
        assert_eq!(arm_variant("CPU architecture: 5TEJ\n"), "v5");
        assert_eq!(arm_variant("nothing here\n"), "v7");
    }
}
