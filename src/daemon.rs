//! Becoming a daemon, and the process around a mount: logging, the fork that detaches from the
//! terminal, the open-file limit, signals that unmount, and the checks on the mountpoint.
//!
//! # Detaching
//! [`detach`] forks before any thread exists. The child starts a new session, leaves the caller's
//! directory, and logs to `--log-file` (else `regfs.log` in the cache directory, opened without
//! following a link); the parent waits on a pipe until the child reports the mount live, or why it
//! is not, so `regfs …` returns only once the mount can be used.
//!
//! # Signals
//! SIGINT, SIGTERM and SIGHUP cancel work in flight and unmount ([`unmount_on_signals`]); a busy
//! mount is detached lazily, as `umount -l` does.
//!
//! # The mountpoint
//! [`check_mountpoint`] refuses one that is a mount point already or lies inside a regfs mount
//! (read from `/proc/self/mountinfo`): mounting there would stack. Then [`check_empty`] refuses
//! one with entries unless `--nonempty`, as fusermount does: the mount would hide them.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;

use crate::cli::Cli;
use crate::fuse::Canceller;
use crate::store::dir::{Access, CacheDir};

pub fn init_logging(file: Option<std::fs::File>) {
    let mut b =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("regfs=info,fuser=error,warn"));
    if let Some(f) = file {
        b.target(env_logger::Target::Pipe(Box::new(f)));
    }
    let _ = b.try_init();
}

pub enum Detached {
    Parent(ExitCode),
    /// The child, with the pipe to tell the parent the mount is live.
    Child(std::fs::File),
}

/// Fork before any thread exists. The parent waits until the child reports the mount live (or
/// fails), so `regfs …` returns only once the mount can be used, like sshfs and mount-s3.
pub fn detach(cli: &Cli, cache: &CacheDir) -> Result<Detached, String> {
    let (log_path, log) = match &cli.log_file {
        // A path the user gave is opened as given, links and all, as a shell's `>>` would.
        Some(path) => {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--log-file {}: {e}", path.display()))?;
            (path.clone(), log)
        }
        // The cache directory's own log follows no link (see store/dir.rs).
        None => {
            let path = cache.shown("regfs.log");
            if cache.remove_link("regfs.log").map_err(|e| e.to_string())? {
                eprintln!(
                    "regfs: {} was a symbolic link; removed the link (not what it pointed to) and logging to a new file",
                    path.display()
                );
            }
            (path, cache.own_file("regfs.log", Access::Append).map_err(|e| e.to_string())?)
        }
    };
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two fds into the array we own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the fds are fresh and owned by nobody else.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (nothing before this point starts one).
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(read_end);
            // SAFETY: plain syscalls on our own process and fds.
            unsafe {
                libc::setsid();
                // Hold no directory of the caller's busy.
                libc::chdir(c"/".as_ptr());
                let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if devnull >= 0 {
                    libc::dup2(devnull, 0);
                    libc::dup2(devnull, 1);
                }
                libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&log), 2);
            }
            init_logging(Some(log));
            Ok(Detached::Child(std::fs::File::from(write_end)))
        }
        _child => {
            drop(write_end);
            let mut msg = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut msg);
            if msg == "ok" {
                Ok(Detached::Parent(ExitCode::SUCCESS))
            } else if msg.is_empty() {
                Err(format!("the background process exited before mounting; see {}", log_path.display()))
            } else {
                Err(msg)
            }
        }
    }
}

/// Raise the soft limit on open files to the hard limit: every open cache file and every
/// connection holds a descriptor, and the usual soft limit (1024) is low for many readers. The
/// limit now in force, or why it could not be raised.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

/// SIGINT, SIGTERM and SIGHUP unmount; the session then ends and the process exits. Work in
/// flight is cancelled first: every request still waiting is answered with an error at once, so
/// no reader blocked on a download holds a lazily detached mount (and this process) alive.
pub fn unmount_on_signals(
    mut unmounter: fuser::SessionUnmounter,
    canceller: Canceller,
    mountpoint: &Path,
) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| format!("signals: {e}"))?;
    let shown = mountpoint.display().to_string();
    let path = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("regfs-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig}: unmounting {shown}");
                canceller.cancel();
                match unmounter.unmount() {
                    Ok(()) => {}
                    // Someone unmounted it first: nothing left to do.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                    // Busy (a shell's cwd, an open file): detach now, as `umount -l` does; the
                    // session ends when the last user lets go.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        log::warn!("{shown} is busy; detaching it lazily");
                        if let Err(e) = lazy_unmount(&path) {
                            log::error!("unmounting {shown}: {e}");
                            std::process::exit(1);
                        }
                    }
                    Err(e) => {
                        log::error!("unmounting {shown}: {e}");
                        std::process::exit(1);
                    }
                }
            }
        })
        .map_err(|e| format!("signal thread: {e}"))?;
    Ok(())
}

fn lazy_unmount(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path; umount2 touches nothing else of ours.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

// The mountpoint.

/// Refuse a mountpoint that is a mount point already, or lies inside a regfs mount. Mounting
/// there would stack: the first mount hidden, still running, and one `umount` ending both; inside
/// a regfs mount, the new mount's lookups would go through the first.
pub fn check_mountpoint(mountpoint: &Path) -> Result<(), String> {
    // Without /proc there is nothing to compare with; the kernel decides.
    let Some(mounts) = crate::mountinfo::mounts() else { return Ok(()) };
    for m in mounts {
        if m.at == mountpoint {
            return Err(format!(
                "{}: already a mount point ({} {}); unmount it first or choose another directory",
                mountpoint.display(),
                m.fstype,
                m.source
            ));
        }
        let regfs = m.fstype == "fuse.regfs" || (m.fstype.starts_with("fuse") && m.source.starts_with("regfs:"));
        if regfs && mountpoint.starts_with(&m.at) {
            return Err(format!(
                "{}: inside the regfs mount at {}; choose a directory outside it",
                mountpoint.display(),
                m.at.display()
            ));
        }
    }
    Ok(())
}

/// Refuse a mountpoint that has entries, as fusermount does (libfuse 2's `nonempty`): the mount
/// would hide them until unmounted, which is seldom what was meant. `--nonempty` (`-o nonempty`)
/// mounts anyway. Called after [`check_mountpoint`], so a mount point (whose root shows entries)
/// is refused as such. A directory regfs cannot list is left to the kernel to judge.
pub fn check_empty(mountpoint: &Path) -> Result<(), String> {
    let Ok(mut entries) = std::fs::read_dir(mountpoint) else { return Ok(()) };
    match entries.next() {
        None => Ok(()),
        Some(_) => Err(format!(
            "{}: not empty; mounting would hide what it holds. Choose an empty directory, or pass \
             --nonempty (-o nonempty) to mount over it",
            mountpoint.display()
        )),
    }
}
