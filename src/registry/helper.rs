//! Running a docker credential helper: `docker-credential-<name> get`, the server on stdin
//! (`host[:port]`, or `https://index.docker.io/v1/` for Docker Hub), a JSON answer
//! `{"ServerURL","Username","Secret"}` on stdout (`Username` `<token>`: `Secret` is an identity
//! token). "Not found" is an exit status other than 0 with `credentials not found in native
//! keychain` on stdout: no credentials, not an error.
//!
//! # Bounded
//! A helper may hang (a keyring waiting to be unlocked, a broken agent) or fork something that
//! keeps its pipes open. It runs in a process group of its own; its stdout and stderr are read on
//! threads, at most [`MAX_HELPER_STDOUT`] of the one and [`MAX_HELPER_STDERR`] of the other kept;
//! past `timeout` the whole group is SIGKILLed and the helper reported as hung. Errors name the
//! helper and quote its stderr; its stdout (which holds the secret) is never quoted or logged.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::secret::{Credentials, Secret};
use crate::error::{Error, Result};
use crate::limits::{MAX_HELPER_STDERR, MAX_HELPER_STDOUT};

/// What a helper prints on stdout for `get`.
#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default, rename = "Username")]
    username: String,
    #[serde(default, rename = "Secret")]
    secret: String,
}

/// The stdout of a helper that has nothing for the server (docker-credential-helpers'
/// `ErrCredentialsNotFound`).
const NOT_FOUND: &str = "credentials not found in native keychain";

/// Ask `program` (a `docker-credential-<name>` on `PATH`, or a path) for `server`'s credentials.
/// `Ok(None)`: the helper has none for it.
pub fn run(program: &str, server: &str, timeout: Duration) -> Result<Option<Secret>> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut cmd = Command::new(program);
    cmd.arg("get").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::BadArgument(format!("credential helper {program}: not found on PATH")));
        }
        Err(e) => return Err(Error::BadArgument(format!("credential helper {program}: {e}"))),
    };
    let group = child.id();
    let kill_group = || {
        // SAFETY: kill(2) on our child's own process group (the child is its leader and not
        // reaped yet when this runs, so the id cannot name anyone else's group).
        if let Ok(pgid) = libc::pid_t::try_from(group) {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    };
    // The server is a few bytes: the write fits the pipe whether or not the helper reads it.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let (tx, rx) = mpsc::channel::<(bool, Vec<u8>, bool)>();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let (kept, over) = read_bounded(out, MAX_HELPER_STDOUT, false);
            let _ = tx.send((true, kept, over));
        });
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let (kept, over) = read_bounded(err, MAX_HELPER_STDERR, true);
            let _ = tx.send((false, kept, over));
        });
    }
    drop(tx);
    let hung = || {
        Error::Denied(format!(
            "credential helper {program}: no answer for {server} within {} s; killed",
            timeout.as_secs()
        ))
    };
    let (mut stdout, mut stderr) = (None, None);
    while stdout.is_none() || stderr.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, kept, over)) => {
                if over {
                    kill_group();
                    let _ = child.wait();
                    return Err(Error::TooLarge(format!(
                        "credential helper {program}: more than {} KiB on stdout",
                        MAX_HELPER_STDOUT >> 10
                    )));
                }
                stdout = Some(kept);
            }
            Ok((false, kept, _)) => stderr = Some(kept),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_group();
                let _ = child.wait();
                return Err(hung());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // Both pipes are closed: the helper has exited or is about to.
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                kill_group();
                let _ = child.wait();
                return Err(hung());
            }
        }
    };
    let stdout = stdout.unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr.unwrap_or_default()).trim().to_string();
    log::debug!("credential helper {program} answered for {server} in {:?}: {status}", started.elapsed());
    if !status.success() {
        if String::from_utf8_lossy(&stdout).trim() == NOT_FOUND {
            return Ok(None);
        }
        let said = if stderr.is_empty() { String::new() } else { format!(": {stderr}") };
        return Err(Error::Denied(format!("credential helper {program} failed for {server} ({status}){said}")));
    }
    // serde_json's message quotes no input, only where it stopped.
    let answer: Answer = serde_json::from_slice(&stdout).map_err(|e| {
        Error::malformed(format!("credential helper {program}'s answer for {server}"), format!("not JSON ({e})"))
    })?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    if answer.username == "<token>" {
        return Ok(Some(Secret::IdentityToken(answer.secret)));
    }
    Ok(Some(Secret::Basic(Credentials { username: answer.username, password: answer.secret })))
}

/// Read `r` to its end, keeping at most `limit` bytes. `drain`: read and drop the rest (stderr:
/// a helper blocked on a full pipe would never exit); else stop at the limit (stdout: more is
/// refused). The flag: more than `limit` came.
fn read_bounded(r: impl Read, limit: usize, drain: bool) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut r = r;
    let _ = (&mut r).take(limit as u64 + 1).read_to_end(&mut kept);
    let over = kept.len() > limit;
    kept.truncate(limit);
    if over && drain {
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    }
    (kept, over)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::secret::Credentials;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn script(dir: &Path, name: &str, body: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("test input is valid");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("test input is valid");
        path.to_string_lossy().into_owned()
    }

    /// Gone, or a zombie nobody reaped yet (as in a container whose init does not reap).
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    #[test]
    fn a_helper_is_asked_with_the_host_on_stdin_and_bounded() {
        let dir = tempfile::tempdir().expect("test input is valid");
        let d = dir.path();
        let t = Duration::from_secs(5);

        // A good helper: asked with `get`, the server on stdin (no newline), answers JSON.
        let stdin = d.join("stdin");
        let good = script(
            d,
            "good",
            &format!(
                r#"[ "$1" = get ] || exit 9; cat > {}; printf '{{"ServerURL":"x","Username":"alice","Secret":"s3cret"}}'"#,
                stdin.display()
            ),
        );
        let got = run(&good, "127.0.0.1:5000", t).expect("good helper");
        assert_eq!(got, Some(Secret::Basic(Credentials { username: "alice".into(), password: "s3cret".into() })));
        assert_eq!(std::fs::read(&stdin).expect("stdin recorded"), b"127.0.0.1:5000");

        // `<token>` as the user: the secret is an identity token.
        let token = script(d, "token", r#"cat >/dev/null; echo '{"Username":"<token>","Secret":"refresh-me"}'"#);
        assert_eq!(run(&token, "h", t).expect("token helper"), Some(Secret::IdentityToken("refresh-me".into())));

        // Not found: no credentials, not an error.
        let none = script(d, "none", "echo 'credentials not found in native keychain'; exit 1");
        assert_eq!(run(&none, "h", t).expect("not found"), None);

        // Any other failure names the helper and quotes its stderr, never its stdout.
        let fails = script(d, "fails", "echo 'stdout-secret'; echo 'keyring is locked' >&2; exit 2");
        let e = run(&fails, "h", t).expect_err("failing helper").to_string();
        assert!(e.contains("fails") && e.contains("keyring is locked"), "{e}");
        assert!(!e.contains("stdout-secret"), "{e}");

        // Malformed JSON: an error that does not quote the output.
        let junk = script(d, "junk", "echo '{\"Username\":\"alice\",\"Secret\":\"hidden-pw\"'");
        let e = run(&junk, "h", t).expect_err("junk").to_string();
        assert!(e.contains("junk") && !e.contains("hidden-pw"), "{e}");

        // A flood of output is cut at the bound, not read whole.
        let flood = script(d, "flood", "head -c 1048576 /dev/zero | tr '\\0' a");
        let e = run(&flood, "h", t).expect_err("flood").to_string();
        assert!(e.contains("flood") && e.contains("KiB"), "{e}");

        // A hung helper (and the child it forked, holding the pipes) is killed at the deadline.
        let pids = d.join("pids");
        let hung = script(d, "hung", &format!("echo $$ > {0}; sleep 600 & echo $! >> {0}; wait", pids.display()));
        let started = Instant::now();
        let e = run(&hung, "h", Duration::from_secs(1)).expect_err("hung helper").to_string();
        assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
        assert!(e.contains("hung") && e.contains("1 s"), "{e}");
        let pids = std::fs::read_to_string(&pids).expect("pids written");
        let pids: Vec<&str> = pids.lines().collect();
        assert_eq!(pids.len(), 2, "{pids:?}");
        std::thread::sleep(Duration::from_millis(100));
        for pid in pids {
            assert!(gone(pid), "process {pid} of the hung helper's group survived");
        }

        // A helper that is not there is named.
        let e = run("docker-credential-regfs-nosuch", "h", t).expect_err("missing").to_string();
        assert!(e.contains("docker-credential-regfs-nosuch") && e.contains("PATH"), "{e}");
    }
}
