//! End to end: mount a real registry and compare what `ls`, `readlink`, `cat`, `stat`
//! and `tar -t` show with what the registry holds, asking skopeo and sha256sum as oracles.

use std::path::Path;

use crate::common::{Mount, images, sh_in, sha256sum, shared, skopeo_raw, stdout};
use crate::common::{ls, s};

#[test]
fn the_root_lists_the_catalog_and_nested_names_are_directories() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    assert_eq!(ls(m.dir.path()), ["broken", "demo", "lazy", "nested", "rootfs-cases", "sig"]);
    assert_eq!(
        ls(&m.path("demo")),
        ["artifact", "docker", "list", "many-tags", "multi", "oci", "platforms", "schema1", "signed", "titled"]
    );
    // `nested/a` is both a repository and a namespace.
    assert_eq!(ls(&m.path("nested/a")), ["b", "blobs", "manifests", "tags"]);
    assert_eq!(ls(&m.path("nested/a/b")), ["c"]);
    assert_eq!(ls(&m.path("nested/a/b/c/tags")), ["v1"]);
    assert_eq!(ls(&m.path("nested/a/tags")), ["v1"]);
    let meta = std::fs::metadata(m.path("demo")).expect("stat");
    assert!(meta.is_dir());
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o555);
}

#[test]
fn tags_are_symlinks_to_the_digest_the_registry_serves() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    for img in sh.fixtures["images"].as_array().expect("images") {
        let (repo, tag, digest) = (s(&img["repo"]), s(&img["tag"]), s(&img["digest"]));
        let link = m.path(&format!("{repo}/tags/{tag}"));
        let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("readlink {}: {e}", link.display()));
        assert_eq!(target.to_string_lossy(), format!("../manifests/{digest}"), "{repo}:{tag}");
        // manifest.json is the bytes exactly as an independent client gets them.
        let served = skopeo_raw(&sh.registry.url, repo, digest);
        let ours = std::fs::read(link.join("manifest.json")).expect("manifest.json");
        if img["kind"] == "docker-schema1" {
            // The registry signs schema1 anew on every GET: compare all but the signatures.
            let unsigned = |b: &[u8]| {
                let mut v: serde_json::Value = serde_json::from_slice(b).expect("schema1 json");
                v.as_object_mut().expect("object").remove("signatures");
                v
            };
            assert_eq!(unsigned(&ours), unsigned(&served), "{repo}:{tag} manifest.json");
        } else {
            assert_eq!(ours, served, "{repo}:{tag} manifest.json");
            assert_eq!(sha256sum(&link.join("manifest.json")), digest, "{repo}:{tag}");
        }
    }
    let listed = ls(&m.path("demo/oci/manifests"));
    assert!(listed.contains(&s(&images(&sh.fixtures, "oci-manifest")[0]["digest"]).to_string()), "{listed:?}");
}

#[test]
fn image_directories_show_config_and_layers_with_descriptor_sizes_and_verified_bytes() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    for kind in ["oci-manifest", "docker-schema2"] {
        for img in images(&sh.fixtures, kind) {
            let (repo, digest) = (s(&img["repo"]), s(&img["digest"]));
            if repo == "broken/corrupt" {
                continue;
            }
            let dir = m.path(&format!("{repo}/manifests/{digest}"));
            assert_eq!(
                ls(&dir),
                ["config.json", "layers", "manifest.json", "referrers", "rootfs", "signatures"],
                "{repo}"
            );
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("read")).expect("json");
            assert_eq!(sha256sum(&dir.join("config.json")), s(&manifest["config"]["digest"]));
            let layers = img["layers"].as_array().expect("layers");
            let names = ls(&dir.join("layers"));
            // Each gzip or zstd layer has its decoded view `<n>.tar` beside it (tests/views_mount.rs).
            let compressed = layers.iter().filter(|l| !s(&l["media_type"]).ends_with(".tar")).count();
            assert_eq!(names.len(), layers.len() + compressed, "{repo}: {names:?}");
            for (i, l) in layers.iter().enumerate() {
                let ext = match s(&l["media_type"]) {
                    mt if mt.ends_with("gzip") => ".tar.gz",
                    mt if mt.ends_with("zstd") => ".tar.zst",
                    _ => ".tar",
                };
                let file = dir.join(format!("layers/{i}{ext}"));
                let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("stat {}: {e}", file.display()));
                assert_eq!(meta.len(), l["size"].as_u64().expect("size"), "{}", file.display());
                assert_eq!(sha256sum(&file), s(&l["digest"]), "{}", file.display());
                let listing = sh_in(&dir, &format!("tar -tf layers/{i}{ext}"));
                assert!(
                    listing.status.success(),
                    "tar -tf {}: {}",
                    file.display(),
                    String::from_utf8_lossy(&listing.stderr)
                );
                let want: Vec<&str> = l["files"].as_array().expect("files").iter().map(s).collect();
                assert_eq!(stdout(&listing).lines().collect::<Vec<_>>(), want, "{}", file.display());
            }
        }
    }
    // The same blob by digest.
    let img = images(&sh.fixtures, "oci-manifest")[0];
    let layer = &img["layers"][0];
    let by_digest = m.path(&format!("{}/blobs/{}", s(&img["repo"]), s(&layer["digest"])));
    assert_eq!(std::fs::metadata(&by_digest).expect("stat").len(), layer["size"].as_u64().expect("size"));
    assert_eq!(sha256sum(&by_digest), s(&layer["digest"]));
}

#[test]
fn an_oci_index_shows_one_link_per_entry_and_nested_indexes_work_the_same_way() {
    let sh = shared();
    // A fixed platform: `current` is listed whatever machine runs the test.
    let m = Mount::start(&sh.registry.url, &["--platform", "linux/amd64"]);
    let img = images(&sh.fixtures, "oci-index")[0];
    let dir = m.path(&format!("{}/manifests/{}", s(&img["repo"]), s(&img["digest"])));
    let children = sh.fixtures["index_children"].as_object().expect("children");
    let mut want: Vec<String> = children.keys().cloned().collect();
    want.push("manifest.json".into());
    want.push("current".into());
    want.push("referrers".into());
    want.push("signatures".into());
    want.sort();
    assert_eq!(ls(&dir), want);
    assert_eq!(std::fs::read_link(dir.join("current")).expect("readlink").to_string_lossy(), "linux-amd64");
    for (name, target) in children {
        let link = std::fs::read_link(dir.join(name)).expect("readlink");
        assert_eq!(link.to_string_lossy(), format!("../{}", s(target)), "{name}");
    }
    // Through the tag, through the nested index, to a platform's config.
    let inner = children.iter().find(|(k, _)| k.starts_with("sha256:")).map(|(k, _)| k.clone()).expect("inner index");
    let nested = m.path(&format!("demo/multi/tags/latest/{inner}/linux-arm64-v8/config.json"));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&nested).expect("nested config")).expect("json");
    assert_eq!(config["architecture"], "arm64");
}

#[test]
fn a_docker_manifest_list_shows_platform_links() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &["--platform", "linux/arm/v7"]);
    let dir = m.path("demo/list/tags/latest");
    assert_eq!(ls(&dir), ["current", "linux-amd64", "linux-arm-v7", "manifest.json", "referrers", "signatures"]);
    assert_eq!(std::fs::read_link(dir.join("current")).expect("readlink").to_string_lossy(), "linux-arm-v7");
    for (name, target) in sh.fixtures["list_children"].as_object().expect("children") {
        assert_eq!(
            std::fs::read_link(dir.join(name)).expect("readlink").to_string_lossy(),
            format!("../{}", s(target))
        );
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(name).join("config.json")).expect("config")).expect("json");
        assert_eq!(config["architecture"], if name == "linux-amd64" { "amd64" } else { "arm" });
    }
}

#[test]
fn schema1_layers_are_bottom_first_and_its_digest_is_the_registry_s() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    let img = images(&sh.fixtures, "docker-schema1")[0];
    let dir = m.path("demo/schema1/tags/old");
    assert_eq!(
        std::fs::read_link(&dir).expect("readlink").to_string_lossy(),
        format!("../manifests/{}", s(&img["digest"]))
    );
    assert_eq!(ls(&dir), ["layers", "manifest.json", "referrers", "rootfs", "signatures"]);
    assert_eq!(ls(&dir.join("layers")), ["0.tar", "0.tar.gz", "1.tar", "1.tar.gz"]);
    for (i, l) in img["layers"].as_array().expect("layers").iter().enumerate() {
        let file = dir.join(format!("layers/{i}.tar.gz"));
        // schema1 declares no sizes: stat learns them without downloading the layer.
        assert_eq!(std::fs::metadata(&file).expect("stat").len(), l["size"].as_u64().expect("size"));
        let listing = sh_in(&dir, &format!("tar -tzf layers/{i}.tar.gz"));
        assert!(stdout(&listing).contains(&format!("schema1-{i}.txt")), "{}", stdout(&listing));
    }
}

#[test]
fn an_artifact_shows_its_config_and_layers_without_a_tar_extension() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    let dir = m.path("demo/artifact/tags/sbom");
    assert_eq!(ls(&dir), ["config.json", "layers", "manifest.json", "referrers", "signatures"]);
    assert_eq!(ls(&dir.join("layers")), ["0"]);
    let sbom = std::fs::read_to_string(dir.join("layers/0")).expect("sbom");
    assert!(sbom.contains("SPDX-2.3"), "{sbom}");
    assert_eq!(std::fs::read_to_string(dir.join("config.json")).expect("config"), "{}");
}

#[test]
fn ls_l_stat_and_find_download_no_blob() {
    // A registry of its own, so its access log holds only this test's requests.
    let registry = crate::common::start_forever(|| {
        let r = crate::common::Registry::start(None);
        let f = r.push_fixtures(None);
        (r, f)
    });
    let (registry, fixtures) = (&registry.0, &registry.1);
    let before = registry.requests().len();
    let m = Mount::start(&registry.url, &[]);
    for img in images(fixtures, "oci-manifest").iter().chain(images(fixtures, "docker-schema2").iter()) {
        let dir = m.path(&format!("{}/tags/{}/", s(&img["repo"]), s(&img["tag"])));
        // `rootfs/` is the layers' content: listing it is reading them. Stat of it costs nothing.
        let out = sh_in(
            &dir,
            "ls -lR -I rootfs . && stat rootfs layers/* config.json >/dev/null \
             && find . -path ./rootfs -prune -o -type f -size +0 -print | wc -l",
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let after: Vec<String> = registry.requests()[before..].to_vec();
    let blob_gets: Vec<&String> = after.iter().filter(|r| r.contains("/blobs/")).collect();
    assert!(blob_gets.is_empty(), "blob requests: {blob_gets:?}");
    assert!(after.iter().any(|r| r.starts_with("GET /v2/demo/oci/manifests/sha256:")), "{after:?}");
    // Each manifest fetched once however many stats touched it.
    let mut gets: Vec<&String> = after.iter().filter(|r| r.starts_with("GET ") && r.contains("/manifests/")).collect();
    let n = gets.len();
    gets.sort();
    gets.dedup();
    assert_eq!(gets.len(), n, "a manifest was fetched twice: {after:?}");
}

#[test]
fn a_corrupt_blob_fails_with_eio_returns_no_bytes_and_is_not_cached() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    let layer = s(&sh.fixtures["corrupt"]["layer"]);
    let file = m.path("broken/corrupt/tags/v1/layers/0.tar.gz");
    // stat works (the size comes from the descriptor) ...
    assert!(std::fs::metadata(&file).is_ok());
    // ... reading does not, and gives no byte.
    let out = sh_in(m.dir.path(), &format!("cat {} | wc -c; exit ${{PIPESTATUS[0]}}", file.display()));
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "0");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = std::fs::read(&file).expect_err("reading a corrupt blob");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    // Nothing kept: not in the cache, not half-written.
    let hex = layer.trim_start_matches("sha256:");
    assert!(!m.cache.join("blobs/sha256").join(hex).exists());
    assert_eq!(std::fs::read_dir(m.cache.join("tmp")).expect("tmp").count(), 0);
    let log = m.log();
    assert!(log.lines().any(|l| l.contains("digest mismatch") && l.contains(layer)), "{log}");
}

#[test]
fn missing_things_are_enoent_and_invalid_names_never_reach_the_registry() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    let enoent = |p: &str| {
        let e = std::fs::symlink_metadata(m.path(p)).expect_err(p);
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{p}: {e}");
    };
    enoent("demo/oci/tags/nope");
    enoent("demo/oci/manifests/sha256:0000000000000000000000000000000000000000000000000000000000000000");
    enoent("demo/oci/manifests/md5:d41d8cd98f00b204e9800998ecf8427e");
    enoent("demo/oci/manifests/sha256:XYZ");
    enoent("Uppercase");
    enoent(".hidden");
    enoent("demo/oci/tags/..hidden");
    enoent("demo/oci/tags/latest/nope.json");
    // A repository that does not exist: its tags directory cannot be listed.
    let e = std::fs::read_dir(m.path("demo/nope/tags")).map(|d| d.count()).expect_err("listing a missing repo");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    let out = sh_in(m.dir.path(), "ls demo/nope/tags");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("No such file"), "{out:?}");
    // The mount is read-only.
    let e = std::fs::write(m.path("demo/oci/tags/v1/new"), b"x").expect_err("writing");
    assert!(matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES)), "{e}");
}

#[test]
fn regfs_returns_once_mounted_and_exits_on_umount() {
    let sh = shared();
    let dir = tempfile::tempdir().expect("mountpoint");
    let cache = tempfile::tempdir().expect("cache");
    let status = std::process::Command::new(crate::common::regfs_bin())
        .arg(&sh.registry.url)
        .arg(dir.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .env("HOME", cache.path())
        .status()
        .expect("regfs");
    assert!(status.success());
    let _guard = crate::common::UnmountOnDrop(dir.path().to_path_buf());
    // Live the moment the command returns.
    assert!(crate::common::is_mounted(dir.path()));
    assert_eq!(ls(&dir.path().join("demo/oci/tags")), ["v1"]);
    let pid = stdout(&crate::common::sh_in(
        dir.path(),
        &format!("pgrep -f 'regfs {} {}'", sh.registry.url, dir.path().display()),
    ));
    assert!(!pid.is_empty());
    assert!(std::process::Command::new("umount").arg(dir.path()).status().expect("umount").success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
    {
        assert!(std::time::Instant::now() < deadline, "regfs did not exit after umount");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!crate::common::is_mounted(dir.path()));
}

#[test]
fn sigterm_in_the_foreground_unmounts_cleanly() {
    let sh = shared();
    for (name, signal) in [("SIGTERM", libc::SIGTERM), ("SIGINT", libc::SIGINT), ("SIGHUP", libc::SIGHUP)] {
        let mut m = Mount::start(&sh.registry.url, &[]);
        assert_eq!(ls(&m.path("demo/oci/tags")), ["v1"]);
        let pid = m.pid().expect("pid");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, signal) };
        let status =
            m.wait_exit(std::time::Duration::from_secs(10)).unwrap_or_else(|| panic!("regfs did not exit on {name}"));
        assert!(status.success(), "{name}: {status:?}\n{}", m.log());
        assert!(!crate::common::is_mounted(m.dir.path()), "{name}");
        // What the mount did, in one line at the end.
        let log = m.log();
        let summary = log.lines().find(|l| l.contains("unmounted;")).unwrap_or_else(|| panic!("no summary:\n{log}"));
        assert!(summary.contains("tag-list") && summary.contains("MiB verified"), "{summary}");
    }
}

#[test]
fn sigterm_while_busy_detaches_the_mount_and_exits_once_released() {
    let sh = shared();
    let mut m = Mount::start(&sh.registry.url, &[]);
    // A process with its working directory inside the mount keeps it busy.
    let mut holder =
        std::process::Command::new("sleep").arg("2").current_dir(m.path("demo/oci/tags")).spawn().expect("sleep");
    let pid = m.pid().expect("pid");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while crate::common::is_mounted(m.dir.path()) {
        assert!(std::time::Instant::now() < deadline, "still mounted after SIGTERM:\n{}", m.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = holder.wait();
    let status = m.wait_exit(std::time::Duration::from_secs(10)).expect("regfs did not exit once released");
    assert!(status.success(), "{status:?}\n{}", m.log());
    assert!(m.log().contains("detaching it lazily"), "{}", m.log());
}

#[test]
fn bad_command_lines_are_refused_before_mounting() {
    let out = std::process::Command::new(crate::common::regfs_bin())
        .args(["127.0.0.1:1", "/nonexistent/dir"])
        .output()
        .expect("regfs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir"));
    let out = std::process::Command::new(crate::common::regfs_bin()).arg("--help").output().expect("regfs");
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in
        ["--foreground", "--cache-dir", "--cache-size", "--tag-ttl", "--username", "--password-stdin", "--auth-file"]
    {
        assert!(help.contains(opt), "--help does not explain {opt}");
    }
}

/// Mistakes on the command line are told in the user's terms: what is wrong and what to write
/// instead, no `local I/O:` or `bad argument:` category in front, and never a password echoed.
#[test]
fn messages_about_the_users_own_input_say_what_to_do() {
    let work = tempfile::tempdir().expect("work");
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mnt");
    let file = work.path().join("a-file");
    std::fs::write(&file, "x").expect("file");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(crate::common::regfs_bin())
            .args(args)
            .env("HOME", work.path())
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .output()
            .expect("regfs");
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!crate::common::is_mounted(&mnt));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let (m, under_file, dir) = (mnt.as_os_str().to_owned(), file.join("cache").into_os_string(), work.path());
    let cases: Vec<(Vec<std::ffi::OsString>, &[&str])> = vec![
        (vec![os("ftp://127.0.0.1:1"), m.clone()], &["ftp://127.0.0.1:1", "http:// and https:// only"]),
        (vec![os("http://me:s3cret@127.0.0.1:1"), m.clone()], &["***@127.0.0.1:1", "--password-stdin"]),
        (vec![os("127.0.0.1:1"), m.clone(), os("--cache-size"), os("1.5G")], &["decimals are not accepted", "1536M"]),
        (vec![os("127.0.0.1:1"), m.clone(), os("--cache-dir"), under_file], &["--cache-dir", "a-file"]),
        (vec![os("127.0.0.1:1"), m.clone(), os("--auth-file"), dir.as_os_str().to_owned()], &["--auth-file"]),
        (
            vec![os("127.0.0.1:1"), m.clone(), os("--ca-cert"), dir.join("missing.pem").into_os_string()],
            &["--ca-cert", "missing.pem"],
        ),
    ];
    for (args, wanted) in cases {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let err = run(&refs);
        for w in wanted {
            assert!(err.contains(w), "{args:?}: {w:?} is not in: {err}");
        }
        for unwanted in ["local I/O", "bad argument:", "s3cret"] {
            assert!(!err.contains(unwanted), "{args:?}: {unwanted:?} in: {err}");
        }
        assert_eq!(err.matches(wanted[0]).count(), 1, "{args:?}: said more than once: {err}");
    }
}

#[test]
fn every_blob_matches_what_skopeo_copy_downloads() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    let host = sh.registry.url.trim_start_matches("http://");
    for (repo, tag) in [("demo/oci", "v1"), ("demo/docker", "v1"), ("demo/schema1", "old"), ("nested/a/b/c", "v1")] {
        let out = tempfile::tempdir().expect("dir");
        let copy = std::process::Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--preserve-digests"])
            .arg(format!("docker://{host}/{repo}:{tag}"))
            .arg(format!("dir:{}", out.path().display()))
            .output()
            .expect("skopeo");
        assert!(copy.status.success(), "skopeo copy {repo}:{tag}: {}", String::from_utf8_lossy(&copy.stderr));
        let mut compared = 0;
        for entry in std::fs::read_dir(out.path()).expect("dir") {
            let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
            if name.len() != 64 {
                continue; // manifest.json, version
            }
            let ours = std::fs::read(m.path(&format!("{repo}/blobs/sha256:{name}"))).expect("blob through regfs");
            assert_eq!(ours, std::fs::read(out.path().join(&name)).expect("skopeo's"), "{repo}: sha256:{name}");
            compared += 1;
        }
        assert!(compared >= 2, "{repo}: only {compared} blobs");
    }
}

#[test]
fn large_layers_read_the_same_with_and_without_passthrough() {
    let sh = shared();
    let img = images(&sh.fixtures, "docker-schema2")[0];
    let layer = &img["layers"][2];
    assert!(layer["size"].as_u64().expect("size") > 2 << 20, "the fixture needs a layer past the in-memory limit");
    // Passthrough needs the kernel's opens (`--open`); the default, no open, never asks for it.
    for args in [&["--open"][..], &["--open", "--no-passthrough"][..], &[][..]] {
        let m = Mount::start(&sh.registry.url, args);
        let file = m.path("demo/docker/tags/v1/layers/2.tar.gz");
        assert_eq!(sha256sum(&file), s(&layer["digest"]), "{args:?}");
        // Random access: a few ranges read with dd equal the same ranges of the whole file.
        let whole = std::fs::read(&file).expect("read");
        for (skip, count) in [(0usize, 1usize), (37, 3), (whole.len() / 4096 - 1, 2)] {
            let out = std::process::Command::new("dd")
                .arg(format!("if={}", file.display()))
                .args(["bs=4096", &format!("skip={skip}"), &format!("count={count}"), "status=none"])
                .output()
                .expect("dd");
            let end = (skip * 4096 + count * 4096).min(whole.len());
            assert_eq!(out.stdout, whole[skip * 4096..end], "{args:?} dd skip={skip}");
        }
        let on = m.log().contains("FUSE passthrough on");
        assert_eq!(on, args == ["--open"], "passthrough {} with {args:?}:\n{}", if on { "on" } else { "off" }, m.log());
    }
}

#[test]
fn the_cache_defaults_to_xdg_cache_home_and_fusermount3_unmounts() {
    let sh = shared();
    let xdg = tempfile::tempdir().expect("xdg");
    let home = xdg.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut m = Mount::start_env(
        &sh.registry.url,
        &[],
        &[("XDG_CACHE_HOME", xdg.path()), ("HOME", &home)],
        xdg.path().join("regfs"),
        xdg.path().join("fg.log"),
    );
    let img = images(&sh.fixtures, "docker-schema2")[0];
    let layer = s(&img["layers"][2]["digest"]);
    assert_eq!(sha256sum(&m.path("demo/docker/tags/v1/layers/2.tar.gz")), layer);
    assert!(xdg.path().join("regfs/blobs/sha256").join(layer.trim_start_matches("sha256:")).exists());
    let out = std::process::Command::new("fusermount3").arg("-u").arg(m.dir.path()).output().expect("fusermount3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = m.wait_exit(std::time::Duration::from_secs(10)).expect("regfs did not exit after fusermount3 -u");
    assert!(status.success(), "{status:?}\n{}", m.log());
    assert!(!crate::common::is_mounted(m.dir.path()));
}

#[test]
fn other_users_are_let_in_only_with_allow_other() {
    let sh = shared();
    let as_nobody = |m: &Mount, cmd: &str| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", cmd])
            .current_dir("/")
            .env("M", m.dir.path())
            .output()
            .expect("setpriv")
    };
    let m = Mount::start(&sh.registry.url, &[]);
    let out = as_nobody(&m, r#"ls "$M/demo""#);
    assert!(!out.status.success(), "another user got in without --allow-other");
    drop(m);
    let m = Mount::start(&sh.registry.url, &["--allow-other"]);
    let out = as_nobody(&m, r#"ls "$M/demo/oci/tags" && sha256sum "$M/demo/oci/tags/v1/config.json""#);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).starts_with("v1"), "{}", stdout(&out));
}

#[test]
fn a_second_regfs_on_the_same_cache_directory_is_refused() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    let dir = tempfile::tempdir().expect("mountpoint");
    let out = std::process::Command::new(crate::common::regfs_bin())
        .arg(&sh.registry.url)
        .arg(dir.path())
        .arg("--cache-dir")
        .arg(&m.cache)
        .env("HOME", &m.cache)
        .output()
        .expect("regfs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another regfs") && err.contains("--cache-dir"), "{err}");
    assert_eq!(err.matches("in use by another regfs").count(), 1, "said more than once: {err}");
    assert!(!crate::common::is_mounted(dir.path()));
    // Refused before detaching: nothing of the second regfs is written into the first one's log.
    // (The first mount logs to a file of the test's; the cache directory's own `regfs.log` is
    // where a detached mount on it logs.)
    let cache_log = std::fs::read_to_string(m.cache.join("regfs.log")).unwrap_or_default();
    assert!(!cache_log.contains("in use by another regfs"), "{cache_log}");
    assert!(!m.log().contains("in use by another regfs"), "{}", m.log());
    // The first mount is untouched.
    assert_eq!(ls(&m.path("demo/oci/tags")), ["v1"]);
}

/// The same refusal when the first mount runs in the background and logs into the cache
/// directory's `regfs.log`: the second regfs takes the cache's lock before it detaches, so it
/// says no once, on its own terminal, and writes nothing into the first one's log.
#[test]
fn a_refusal_is_printed_once_and_never_into_another_mounts_log() {
    let sh = shared();
    let work = tempfile::tempdir().expect("work");
    let (first, second, cache) = (work.path().join("m1"), work.path().join("m2"), work.path().join("cache"));
    std::fs::create_dir(&first).expect("m1");
    std::fs::create_dir(&second).expect("m2");
    let start = |mnt: &Path| {
        std::process::Command::new(crate::common::regfs_bin())
            .arg(&sh.registry.url)
            .arg(mnt)
            .arg("--cache-dir")
            .arg(&cache)
            .env("HOME", work.path())
            .output()
            .expect("regfs")
    };
    let out = start(&first);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _guard = crate::common::UnmountOnDrop(first.clone());
    let before = std::fs::read_to_string(cache.join("regfs.log")).expect("the first mount's log");
    let out = start(&second);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("in use by another regfs").count(), 1, "{err}");
    assert!(!err.contains("local I/O"), "{err}");
    assert!(!crate::common::is_mounted(&second));
    let after = std::fs::read_to_string(cache.join("regfs.log")).expect("the first mount's log");
    assert_eq!(after, before, "the second regfs wrote into the first one's log");
    assert_eq!(ls(&first.join("demo/oci/tags")), ["v1"]);
}

#[test]
fn relative_paths_work_and_the_background_process_leaves_the_caller_s_directory() {
    let sh = shared();
    let work = tempfile::tempdir().expect("work");
    std::fs::create_dir(work.path().join("mnt")).expect("mnt");
    let status = std::process::Command::new(crate::common::regfs_bin())
        .args([&sh.registry.url, "mnt", "--cache-dir", "cache"])
        .current_dir(work.path())
        .env("HOME", work.path())
        .status()
        .expect("regfs");
    assert!(status.success());
    let mnt = work.path().join("mnt");
    let _guard = crate::common::UnmountOnDrop(mnt.clone());
    assert_eq!(ls(&mnt.join("demo/oci/tags")), ["v1"]);
    assert!(work.path().join("cache/regfs.log").exists(), "the cache went somewhere else");
    let pid =
        stdout(&sh_in(work.path(), &format!("pgrep -f '^{} {} mnt'", crate::common::regfs_bin(), sh.registry.url)));
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", pid.lines().next().unwrap_or(""))).expect("cwd");
    assert_eq!(cwd, Path::new("/"));
    assert!(std::process::Command::new("umount").arg(&mnt).status().expect("umount").success());
}

/// `(held, peak)` from the log line regfs writes at unmount about its inode table.
fn inode_table_at_unmount(log: &str) -> Option<(usize, usize)> {
    let line = log.lines().find(|l| l.contains("inode table at unmount:"))?;
    let rest = line.split("inode table at unmount:").nth(1)?;
    let numbers: Vec<usize> = rest.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    Some((*numbers.first()?, *numbers.get(1)?))
}

#[test]
fn inodes_the_kernel_forgets_are_freed() {
    let sh = shared();
    // 100,000 distinct names that look up without the network: namespace directories of a
    // registry without a catalog (with one, names it does not list are ENOENT).
    let front = crate::common::front::Front::start(
        &sh.registry.url,
        crate::common::front::Behavior { no_catalog: true, ..crate::common::front::Behavior::default() },
    );
    let mut m = Mount::start(&front.url, &[]);
    let n = 100_000;
    let root = m.dir.path().to_path_buf();
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let root = root.clone();
            std::thread::spawn(move || {
                for i in (w..n).step_by(2) {
                    let meta = std::fs::metadata(root.join(format!("a{i}"))).expect("stat");
                    assert!(meta.is_dir());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("stat worker");
    }
    // Listings hand out references too (READDIRPLUS): a walk of a tree, given back alike.
    let walk = sh_in(m.dir.path(), "find demo/oci/tags/v1/rootfs demo/oci/tags demo/oci/manifests | wc -l");
    assert!(stdout(&walk).trim().parse::<usize>().is_ok_and(|n| n > 3), "{}", String::from_utf8_lossy(&walk.stderr));
    // The kernel drops the unused dentries and inodes, and FORGETs them.
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop_caches (tests run as root)");
    std::thread::sleep(std::time::Duration::from_secs(2));
    // The mount still works after its inodes went: names look up again, under new numbers.
    let tags = sh_in(m.dir.path(), "ls demo/oci/tags && stat -c %F a7");
    assert_eq!(stdout(&tags), "v1\ndirectory", "{}", String::from_utf8_lossy(&tags.stderr));
    m.unmount();
    let log = m.log();
    let (held, peak) = inode_table_at_unmount(&log).unwrap_or_else(|| panic!("no inode table line:\n{log}"));
    eprintln!("inode table: at most {peak} held, {held} at unmount");
    // The table must really have grown, or the test shows nothing. The kernel may forget some
    // while the loop runs (any process's drop_caches does that, as another run of this very test
    // does on a shared machine), so half of them at once is asked, not all.
    assert!(peak >= n / 2, "only {peak} inodes at most for {n} names");
    assert!(held < 1_000, "{held} inodes still held of {peak}: forgotten inodes were not freed");
}

#[test]
fn the_descriptor_limit_is_raised_at_start_and_running_out_is_a_clear_error() {
    let sh = shared();
    let img = images(&sh.fixtures, "docker-schema2")[0];
    // 3 MB: kept in the disk cache, so each open of it holds a descriptor in regfs.
    let (layer, digest) = ("demo/docker/tags/v1/layers/2.tar.gz", s(&img["layers"][2]["digest"]).to_string());
    let cache = tempfile::tempdir().expect("cache");
    let mnt = tempfile::tempdir().expect("mountpoint");
    let log_path = cache.path().join("regfs.stderr");
    // Started with a soft limit of 64 under a hard limit of 200.
    let mut cmd = std::process::Command::new("prlimit");
    // `--open`: opens reach regfs, which is what this test counts and starves (with no open,
    // an inode's content is opened at its first read and kept, sharing the blob's descriptor).
    cmd.arg("--nofile=64:200")
        .arg(crate::common::regfs_bin())
        .arg(&sh.registry.url)
        .arg(mnt.path())
        .args(["--open", "-f", "--cache-dir"])
        .arg(cache.path().join("c"))
        .env("RUST_LOG", "regfs=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"));
    crate::common::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("prlimit regfs");
    let _unmount = crate::common::UnmountOnDrop(mnt.path().to_path_buf());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !crate::common::is_mounted(mnt.path()) {
        assert!(std::time::Instant::now() < deadline, "not mounted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files").to_string();
    let soft_hard: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(soft_hard, ["200", "200"], "{line}");

    // Handles of one cached blob share one descriptor: 300 opens hold far fewer than 200.
    let path = mnt.path().join(layer);
    assert_eq!(sha256sum(&path), digest);
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", child.id())).map_or(0, |d| d.count());
    let before = fds();
    let held: Vec<std::fs::File> = (0..300).map(|_| std::fs::File::open(&path).expect("open")).collect();
    let during = fds();
    eprintln!("300 open handles of one layer: regfs holds {during} descriptors ({before} before)");
    assert!(during <= before + 2, "300 handles took {} descriptors", during - before);
    drop(held);

    // Running out: with no descriptor left, the open that needs one fails with EIO, regfs stays
    // up, and once descriptors are available again everything works.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let set_limit = |n: usize| {
        let ok = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", child.id()))
            .arg(format!("--nofile={n}:200"))
            .status()
            .expect("prlimit --pid");
        assert!(ok.success());
    };
    // The limit bounds descriptor numbers: set it to the lowest free one, so none is left.
    let used: std::collections::HashSet<usize> = std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .expect("fds")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    set_limit((0..).find(|n| !used.contains(n)).unwrap_or(0));
    let refused = std::fs::File::open(&path).map(|_| ()).expect_err("an open with no descriptor left");
    assert_eq!(refused.raw_os_error(), Some(libc::EIO), "{refused}");
    set_limit(200);
    assert_eq!(sha256sum(&path), digest);
    let tags = sh_in(mnt.path(), "ls demo/oci/tags");
    assert_eq!(stdout(&tags), "v1");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(log.contains("Too many open files"), "{log}");
    let _ = std::process::Command::new("umount").arg(mnt.path()).status();
    let status = child.wait().expect("regfs exit");
    assert!(status.success(), "{status:?}\n{log}");
}

#[test]
fn a_second_regfs_on_a_mounted_directory_is_refused_and_the_first_keeps_serving() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    for fg in [false, true] {
        let cache = tempfile::tempdir().expect("cache");
        let mut cmd = std::process::Command::new(crate::common::regfs_bin());
        cmd.arg(&sh.registry.url).arg(m.dir.path()).arg("--cache-dir").arg(cache.path()).env("HOME", cache.path());
        if fg {
            cmd.arg("--foreground");
        }
        let out = cmd.output().expect("regfs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a second regfs mounted on {}", m.dir.path().display());
        assert!(err.contains("already a mount point") && err.contains(&m.dir.path().display().to_string()), "{err}");
        // Nothing was stacked: one mount there, and it is the first regfs's.
        let stacked = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(&*m.dir.path().to_string_lossy()))
            .count();
        assert_eq!(stacked, 1, "mounts on {}", m.dir.path().display());
        assert_eq!(ls(&m.path("demo/oci/tags")), ["v1"]);
    }
}

#[test]
fn a_mountpoint_inside_a_regfs_mount_is_refused() {
    let sh = shared();
    let m = Mount::start(&sh.registry.url, &[]);
    let inner = m.path("demo/oci");
    assert!(inner.is_dir());
    let cache = tempfile::tempdir().expect("cache");
    let out = std::process::Command::new(crate::common::regfs_bin())
        .arg(&sh.registry.url)
        .arg(&inner)
        .arg("--cache-dir")
        .arg(cache.path())
        .env("HOME", cache.path())
        .output()
        .expect("regfs");
    let err = String::from_utf8_lossy(&out.stderr);
    let _guard = crate::common::UnmountOnDrop(inner.clone());
    assert!(!out.status.success(), "regfs mounted inside a regfs mount");
    assert!(err.contains("inside the regfs mount") && err.contains(&m.dir.path().display().to_string()), "{err}");
    assert!(!crate::common::is_mounted(&inner));
    assert_eq!(ls(&m.path("demo/oci/tags")), ["v1"]);
}

/// Two regfs started at once on one fresh directory: each checks that it is not a mount point
/// before either has mounted. One must be refused; never two mounts stacked there.
#[test]
fn two_regfs_racing_for_one_fresh_mountpoint_do_not_stack() {
    let sh = shared();
    for round in 0..5 {
        let mnt = tempfile::tempdir().expect("mountpoint");
        let _guard = crate::common::UnmountOnDrop(mnt.path().to_path_buf());
        let caches: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("cache")).collect();
        let runs: Vec<_> = caches
            .iter()
            .map(|cache| {
                let mut cmd = std::process::Command::new(crate::common::regfs_bin());
                cmd.arg(&sh.registry.url)
                    .arg(mnt.path())
                    .arg("--cache-dir")
                    .arg(cache.path())
                    .env("HOME", cache.path());
                std::thread::spawn(move || cmd.output().expect("regfs"))
            })
            .collect();
        let outs: Vec<_> = runs.into_iter().map(|r| r.join().expect("regfs")).collect();
        let stacked = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(&*mnt.path().to_string_lossy()))
            .count();
        // Take every mount down before judging, so a failure leaves none behind.
        for _ in 0..stacked {
            let _ = std::process::Command::new("umount").arg("-l").arg(mnt.path()).status();
        }
        let ok = outs.iter().filter(|o| o.status.success()).count();
        let errs: Vec<_> = outs.iter().map(|o| String::from_utf8_lossy(&o.stderr).to_string()).collect();
        assert_eq!(stacked, 1, "round {round}: {stacked} mounts on {}: {errs:?}", mnt.path().display());
        assert_eq!(ok, 1, "round {round}: {ok} regfs succeeded: {errs:?}");
        assert!(errs.iter().any(|e| e.contains("already a mount point")), "round {round}: {errs:?}");
    }
}

/// A mountpoint with entries is refused, as fusermount does (libfuse 2's `nonempty`), unless
/// `--nonempty` / `-o nonempty`; "already a mount point" still comes first.
#[test]
fn a_mountpoint_that_is_not_empty_is_refused_unless_nonempty() {
    let sh = shared();
    let dir = tempfile::tempdir().expect("mountpoint");
    std::fs::write(dir.path().join("keep.txt"), "mine").expect("a file in the mountpoint");
    let regfs = |extra: &[&str]| {
        // A cache of its own each time: the last regfs may still be exiting after its umount.
        let cache = tempfile::tempdir().expect("cache");
        let _guard = crate::common::UnmountOnDrop(dir.path().to_path_buf());
        let out = std::process::Command::new(crate::common::regfs_bin())
            .arg(&sh.registry.url)
            .arg(dir.path())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(extra)
            .env("HOME", cache.path())
            .output()
            .expect("regfs");
        let mounted = crate::common::is_mounted(dir.path());
        let listed = if mounted { ls(dir.path()) } else { Vec::new() };
        if mounted {
            assert!(std::process::Command::new("umount").arg(dir.path()).status().expect("umount").success());
        }
        (out, mounted, listed)
    };
    let (out, mounted, listed) = regfs(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!mounted, "regfs mounted over the files of {}: {listed:?}", dir.path().display());
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not empty") && err.contains("-o nonempty") && err.contains(&*dir.path().to_string_lossy()),
        "{err}"
    );
    for extra in [&["--nonempty"][..], &["-o", "ro,nonempty"][..]] {
        let (out, mounted, listed) = regfs(extra);
        assert!(out.status.success() && mounted, "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        // The mount hides the files while it lasts, and leaves them as they were.
        assert_eq!(listed, ["broken", "demo", "lazy", "nested", "rootfs-cases", "sig"], "{extra:?}");
    }
    // Unmounted: regfs's process has let go, and the file is there.
    assert_eq!(std::fs::read_to_string(dir.path().join("keep.txt")).expect("keep.txt"), "mine");
    // A mount point (which shows entries) is refused as such, not as non-empty.
    let m = Mount::start(&sh.registry.url, &[]);
    let cache = tempfile::tempdir().expect("cache");
    let out = std::process::Command::new(crate::common::regfs_bin())
        .arg(&sh.registry.url)
        .arg(m.dir.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .env("HOME", cache.path())
        .output()
        .expect("regfs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("already a mount point") && !err.contains("nonempty"), "{err}");
}
