//! `scripts/demo`, run as a newcomer runs it: from their own directory, with a relative
//! mountpoint, and stopped again whatever state the registry is in. The binaries are the ones
//! this test run built (`REGFS_DEMO_BIN`), so the demo does not build a release of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A directory holding links to the `regfs` and `regfs-fixtures` this test run built.
fn demo_bin(base: &Path) -> PathBuf {
    let bin = base.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    for (name, exe) in
        [("regfs", env!("CARGO_BIN_EXE_regfs")), ("regfs-fixtures", env!("CARGO_BIN_EXE_regfs-fixtures"))]
    {
        std::os::unix::fs::symlink(exe, bin.join(name)).expect("link");
    }
    bin
}

fn demo(cwd: &Path, base: &Path, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo");
    Command::new("bash")
        .arg(script)
        .args(args)
        .current_dir(cwd)
        .env("REGFS_DEMO_BIN", base.join("bin"))
        .env("REGFS_DEMO_STATE", base.join("state"))
        .output()
        .expect("scripts/demo")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The registry's pid as the demo recorded it (the first word of `registry.pid`).
fn registry_pid(base: &Path) -> (String, String) {
    let line = std::fs::read_to_string(base.join("state/registry/registry.pid")).expect("registry.pid");
    let mut words = line.split_whitespace().map(str::to_string);
    (words.next().expect("a pid"), words.collect::<Vec<_>>().join(" "))
}

#[test]
fn demo_takes_a_relative_mountpoint_from_the_callers_directory() {
    let base = tempfile::tempdir().expect("base");
    demo_bin(base.path());
    let caller = base.path().join("caller");
    std::fs::create_dir(&caller).expect("caller");
    let out = demo(&caller, base.path(), &["rel/mnt"]);
    let mnt = caller.join("rel/mnt");
    let _guard = crate::common::UnmountOnDrop(mnt.clone());
    assert!(out.status.success(), "{}", text(&out));
    assert!(crate::common::is_mounted(&mnt), "not mounted at {}: {}", mnt.display(), text(&out));
    assert!(text(&out).contains(&format!("mounted on {}", mnt.display())), "{}", text(&out));
    assert!(std::fs::read_dir(mnt.join("demo/oci/tags")).expect("tags").count() > 0);
    // The image it offers to run runs, by the line it prints.
    let said = text(&out);
    let run = said.lines().map(str::trim).find(|l| l.starts_with("chroot ")).expect("a chroot line");
    let ran = Command::new("bash").arg("-c").arg(run).output().expect("bash");
    assert!(String::from_utf8_lossy(&ran.stdout).starts_with("ID=regfs-busybox\n"), "{run}: {ran:?}");
    // The only stop offered is the one that also stops the registry.
    assert!(text(&out).contains("scripts/demo stop"), "{}", text(&out));
    assert!(!text(&out).contains("or: umount"), "{}", text(&out));
    let out = demo(&caller, base.path(), &["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!crate::common::is_mounted(&mnt));
    assert!(!base.path().join("state").exists(), "the state is left behind");
}

#[test]
fn demo_stop_works_when_the_registry_died_and_never_kills_a_reused_pid() {
    let base = tempfile::tempdir().expect("base");
    demo_bin(base.path());
    let out = demo(base.path(), base.path(), &["mnt"]);
    let mnt = base.path().join("mnt");
    let _guard = crate::common::UnmountOnDrop(mnt.clone());
    assert!(out.status.success(), "{}", text(&out));
    // The registry dies, and its pid goes to a process of someone else's (here: the test's).
    let (pid, rest) = registry_pid(base.path());
    assert!(Command::new("kill").args(["-9", &pid]).status().expect("kill").success());
    let mut bystander = Command::new("sleep").arg("120").spawn().expect("sleep");
    std::thread::sleep(std::time::Duration::from_millis(200));
    std::fs::write(base.path().join("state/registry/registry.pid"), format!("{} {rest}\n", bystander.id()))
        .expect("registry.pid");
    let out = demo(base.path(), base.path(), &["stop"]);
    assert!(out.status.success(), "stop failed: {}", text(&out));
    assert!(!crate::common::is_mounted(&mnt), "still mounted");
    assert!(!base.path().join("state").exists(), "the state is left behind");
    assert!(bystander.try_wait().expect("wait").is_none(), "the demo killed a process that is not its registry");
    let _ = bystander.kill();
    let _ = bystander.wait();
}
