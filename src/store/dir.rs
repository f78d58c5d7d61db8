//! The cache directory, used only through directory descriptors.
//!
//! # Rules
//! - The cache root is opened once. It must be a directory owned by the user running regfs that
//!   neither group nor others can write: anyone who could write there could plant links or
//!   swap files. A link *as* the root (`--cache-dir` naming a link) is followed only if the user
//!   owns the link itself, so a link someone else planted in a shared directory such as `/tmp`
//!   is refused. The root's last component is held (`O_PATH | O_NOFOLLOW`) while it is judged
//!   and opened through that handle, so whoever can write the directory it is in cannot swap
//!   it for their link between the look and the open. Every directory and link on the way to
//!   the root must be root's or the user's, and no directory on the way writable by others
//!   unless sticky (`/tmp`): someone else who could change one could point the path at a
//!   directory regfs would take for its cache, truncating its `lock` and emptying its `tmp/`.
//! - Inside the root nothing is opened by path: every file and directory is created, opened,
//!   renamed and removed relative to its directory's descriptor (`openat`, `mkdirat`, `renameat`,
//!   `unlinkat`), with `O_NOFOLLOW`. A link is never followed, whoever made it.
//! - Where regfs keeps one of its own directories or files (`blobs/`, `tmp/`, `lock`,
//!   `regfs.log`, `blobs/<algorithm>/`) and finds a symbolic link, it removes the link (never
//!   what it points to) and creates its own, with a warning. Anything else that is not what regfs
//!   expects there (a directory for a file, a FIFO, something owned by another user) is refused.
//! - A cached blob is served only if it is a regular file; anything else under a blob's name is
//!   removed (a link or special file) or refused (a directory), never read.
//! - Directories regfs makes are 0700, files 0600.
//!
//! `rustix` (already in the dependency tree through `tar`) gives these calls safe signatures
//! and owned descriptors, where raw `libc` would need a dozen `unsafe` blocks and C strings.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use crate::error::{Error, Result};

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// A directory of the cache, open; cheap to clone (the descriptor is shared).
#[derive(Clone)]
pub struct CacheDir {
    fd: Arc<OwnedFd>,
    /// The `flock`ed `lock` file, once [`CacheDir::lock`] has taken it (roots only).
    lock: Option<Arc<File>>,
    /// For messages only: nothing is ever opened through it.
    path: PathBuf,
}

/// How [`CacheDir::own_file`] opens a file regfs keeps for itself.
#[derive(Clone, Copy)]
pub enum Access {
    ReadWrite,
    Append,
}

fn err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{}: {e}", path.display()))
}

fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// The owner and write bits of something regfs is about to trust.
fn check_owned(path: &Path, st: &Stat) -> Result<()> {
    let me = me();
    if st.st_uid != me {
        return Err(err(
            path,
            format!(
                "owned by uid {}, not by uid {me} who runs regfs; the cache directory and all in it must be the user's own",
                st.st_uid
            ),
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(err(
            path,
            format!(
                "writable by others (mode {:o}); a cache directory must be writable by its owner only: `chmod go-w` it or choose another --cache-dir",
                st.st_mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Every directory and link on the way to the cache root (`parent`, links followed as they
/// read) must be root's or the user's, and no directory on it writable by others unless it is
/// sticky: anyone else who could change one could point the path at a directory regfs would
/// then take for its cache. The walk stops at the first missing component (regfs makes the
/// rest, as the user). Group write is the user's choice of group, and allowed.
fn check_parents(root: &Path, parent: &Path) -> Result<()> {
    use std::ffi::OsString;
    use std::path::Component;
    let me = me();
    let refuse = |at: &Path, why: String| {
        err(
            root,
            format!("on the way to it, {} is {why}; choose a --cache-dir only root and you control", at.display()),
        )
    };
    let push = |todo: &mut Vec<OsString>, path: &Path| {
        for c in path.components().rev() {
            match c {
                Component::Normal(n) => todo.push(n.to_owned()),
                Component::ParentDir => todo.push("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    let mut todo = Vec::new();
    push(&mut todo, parent);
    let mut at = PathBuf::from("/");
    let mut links = 0;
    let check_dir = |at: &Path, st: &Stat| {
        if st.st_uid != 0 && st.st_uid != me {
            return Err(refuse(at, format!("owned by uid {}", st.st_uid)));
        }
        if st.st_mode & 0o002 != 0 && st.st_mode & 0o1000 == 0 {
            return Err(refuse(at, format!("writable by others and not sticky (mode {:o})", st.st_mode & 0o7777)));
        }
        Ok(())
    };
    check_dir(&at, &rustix::fs::lstat(&at).map_err(|e| err(&at, e))?)?;
    while let Some(name) = todo.pop() {
        if name == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&name);
        let st = match rustix::fs::lstat(&next) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(err(&next, e)),
        };
        match file_type(&st) {
            FileType::Symlink => {
                if st.st_uid != 0 && st.st_uid != me {
                    return Err(refuse(&next, format!("a symbolic link owned by uid {}", st.st_uid)));
                }
                links += 1;
                if links > 40 {
                    return Err(err(&next, "too many symbolic links"));
                }
                let target = std::fs::read_link(&next).map_err(|e| err(&next, e))?;
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                push(&mut todo, &target);
            }
            FileType::Directory => {
                check_dir(&next, &st)?;
                at = next;
            }
            _ => return Err(err(&next, "not a directory")),
        }
    }
    Ok(())
}

impl CacheDir {
    /// Open the cache root at `path`, creating it (0700, parents as needed) if missing, and
    /// check that it is the user's own (see the module notes).
    pub fn open_root(path: &Path) -> Result<CacheDir> {
        let absolute = std::path::absolute(path).map_err(|e| err(path, e))?;
        if let Some(parent) = absolute.parent() {
            check_parents(path, parent)?;
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
        }
        match rustix::fs::mkdir(path, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(err(path, e)),
        }
        let fd = Self::open_checked_entry(path)?;
        check_owned(path, &rustix::fs::fstat(&fd).map_err(|e| err(path, e))?)?;
        Ok(CacheDir { fd: Arc::new(fd), lock: None, path: path.to_path_buf() })
    }

    /// Open the directory at `path`, looking at its last component once: what is opened is
    /// what was looked at. Whoever can write the directory it is in could otherwise swap a
    /// directory for their own link between a look by path and an open by path. The entry is
    /// held (`O_PATH | O_NOFOLLOW`) while it is judged; a directory is then opened through that
    /// very handle, and a link is followed only if the user owns it, as it reads.
    fn open_checked_entry(path: &Path) -> Result<OwnedFd> {
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            // `/` or a path ending in `..`: no link can be its last component.
            return rustix::fs::open(path, dir_flags | OFlags::NOFOLLOW, Mode::empty()).map_err(|e| err(path, e));
        };
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        let parent = rustix::fs::open(parent, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| err(parent, e))?;
        let entry = rustix::fs::openat(&parent, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| err(path, e))?;
        let st = rustix::fs::fstat(&entry).map_err(|e| err(path, e))?;
        if file_type(&st) != FileType::Symlink {
            return rustix::fs::openat(&entry, ".", dir_flags, Mode::empty()).map_err(|e| err(path, e));
        }
        if st.st_uid != me() {
            return Err(err(
                path,
                format!(
                    "a symbolic link owned by uid {}, not by uid {} who runs regfs; refusing to follow it",
                    st.st_uid,
                    me()
                ),
            ));
        }
        // The target of this very link, read through its handle, resolved where the link is.
        let target = rustix::fs::readlinkat(&entry, "", Vec::new()).map_err(|e| err(path, e))?;
        rustix::fs::openat(&parent, target.as_c_str(), dir_flags, Mode::empty()).map_err(|e| err(path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` under this directory, for messages.
    pub fn shown(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn stat(&self, name: &str) -> rustix::io::Result<Stat> {
        rustix::fs::statat(&*self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
    }

    /// If `name` is a symbolic link, remove the link (not its target); whether it was one.
    pub fn remove_link(&self, name: &str) -> Result<bool> {
        match self.stat(name) {
            Ok(st) if file_type(&st) == FileType::Symlink => {
                rustix::fs::unlinkat(&*self.fd, name, AtFlags::empty()).map_err(|e| err(&self.shown(name), e))?;
                log::warn!(
                    "cache: {} was a symbolic link; removed the link (not what it pointed to)",
                    self.shown(name).display()
                );
                Ok(true)
            }
            Ok(_) | Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(err(&self.shown(name), e)),
        }
    }

    /// The subdirectory `name`, created (0700) if missing. A link there is replaced by a real
    /// directory; a directory that is not the user's own is refused. Made 0700 whatever it was.
    pub fn subdir(&self, name: &str) -> Result<CacheDir> {
        let path = self.shown(name);
        self.remove_link(name)?;
        match rustix::fs::mkdirat(&*self.fd, name, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(err(&path, e)),
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&*self.fd, name, flags, Mode::empty()).map_err(|e| match e {
            Errno::NOTDIR | Errno::LOOP => {
                err(&path, "not a directory, where regfs keeps one of its own; move it away")
            }
            e => err(&path, e),
        })?;
        let st = rustix::fs::fstat(&fd).map_err(|e| err(&path, e))?;
        check_owned(&path, &st)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE)).map_err(|e| err(&path, e))?;
        Ok(CacheDir { fd: Arc::new(fd), lock: None, path })
    }

    /// Take this directory for this process: an exclusive `flock` on its `lock` file, held
    /// by this `CacheDir` and its clones (and across `fork`, so that regfs takes it before
    /// detaching and a refusal reaches the terminal, once, and no other mount's log). Taking
    /// it again is a no-op; who holds it is said when it is refused.
    pub fn lock(&mut self) -> Result<()> {
        if self.lock.is_some() {
            return Ok(());
        }
        let mut file = self.own_file("lock", Access::ReadWrite)?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::Io(format!(
                "{} is in use by another regfs (pid {}); give each mount its own --cache-dir",
                self.path.display(),
                holder.trim()
            )));
        }
        self.lock = Some(Arc::new(file));
        self.note_holder()
    }

    /// Write this process's pid into the held `lock` file (again after a `fork`).
    pub fn note_holder(&self) -> Result<()> {
        let Some(lock) = &self.lock else {
            return Ok(());
        };
        let mut file: &File = lock;
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(())
    }

    /// Whether [`CacheDir::lock`] has taken the directory.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// A file regfs keeps for itself (`lock`, `regfs.log`), created 0600 if missing. A link
    /// there is replaced by a new file; anything but a regular file of the user's is refused.
    pub fn own_file(&self, name: &str, access: Access) -> Result<File> {
        let path = self.shown(name);
        self.remove_link(name)?;
        let flags = OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            // A FIFO planted there must not block us: it is refused just below.
            | OFlags::NONBLOCK
            | match access {
                Access::ReadWrite => OFlags::RDWR,
                Access::Append => OFlags::WRONLY | OFlags::APPEND,
            };
        let fd =
            rustix::fs::openat(&*self.fd, name, flags, Mode::from_raw_mode(FILE_MODE)).map_err(|e| err(&path, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| err(&path, e))?;
        if file_type(&st) != FileType::RegularFile {
            return Err(err(&path, "not a regular file, where regfs keeps one of its own; move it away"));
        }
        if st.st_uid != me() {
            return Err(err(&path, format!("owned by uid {}, not by uid {} who runs regfs", st.st_uid, me())));
        }
        Ok(File::from(fd))
    }

    /// A new file `name` (0600), open for reading and writing; it must not exist.
    pub fn create_new(&self, name: &str) -> Result<File> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&*self.fd, name, flags, Mode::from_raw_mode(FILE_MODE))
            .map_err(|e| err(&self.shown(name), e))?;
        Ok(File::from(fd))
    }

    /// The regular file `name`, open for reading; `None` if there is none. A link or a special
    /// file found there is removed (never followed, never read); a directory is an error.
    pub fn open_regular(&self, name: &str) -> Result<Option<File>> {
        let path = self.shown(name);
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&*self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => {
                self.remove_link(name)?;
                return Ok(None);
            }
            Err(e) => return Err(err(&path, e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| err(&path, e))?;
        match file_type(&st) {
            FileType::RegularFile => {}
            FileType::Directory => return Err(err(&path, "a directory where a cached blob should be")),
            other => {
                log::warn!("cache: {} is a {other:?}, not a regular file; removing it", path.display());
                self.remove(name).map_err(|e| err(&path, e))?;
                return Ok(None);
            }
        }
        // Back to blocking reads (O_NONBLOCK only guarded the open against a FIFO).
        let fl = rustix::fs::fcntl_getfl(&fd).map_err(|e| err(&path, e))?;
        rustix::fs::fcntl_setfl(&fd, fl - OFlags::NONBLOCK).map_err(|e| err(&path, e))?;
        Ok(Some(File::from(fd)))
    }

    /// Remove the entry `name` (not a directory), without following it.
    pub fn remove<P: rustix::path::Arg>(&self, name: P) -> std::io::Result<()> {
        rustix::fs::unlinkat(&*self.fd, name, AtFlags::empty()).map_err(std::io::Error::from)
    }

    /// Move `name` to `to_name` in `to` (replacing whatever entry is there, never following it).
    pub fn rename(&self, name: &str, to: &CacheDir, to_name: &str) -> Result<()> {
        rustix::fs::renameat(&*self.fd, name, &*to.fd, to_name).map_err(|e| err(&to.shown(to_name), e))
    }

    /// Every entry but `.` and `..`, with what `lstat` says of it (links not followed). An
    /// entry that vanishes while listed is left out.
    pub fn entries(&self) -> Result<Vec<(CString, Stat)>> {
        let dir = rustix::fs::Dir::read_from(&*self.fd).map_err(|e| err(&self.path, e))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| err(&self.path, e))?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            match rustix::fs::statat(&*self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => out.push((name.to_owned(), st)),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(err(&self.path.join(name.to_string_lossy().as_ref()), e)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn links_are_replaced_never_followed() {
        let base = tempfile::tempdir().expect("tempdir");
        let victim = base.path().join("victim");
        std::fs::create_dir(&victim).expect("victim");
        std::fs::write(victim.join("keep"), b"x").expect("victim file");
        let root = CacheDir::open_root(&base.path().join("cache")).expect("root");
        std::os::unix::fs::symlink(&victim, root.shown("sub")).expect("link");
        let sub = root.subdir("sub").expect("subdir");
        assert!(std::fs::symlink_metadata(sub.path()).expect("sub").is_dir());
        std::os::unix::fs::symlink(victim.join("keep"), sub.shown("f")).expect("link");
        assert!(sub.open_regular("f").expect("open").is_none(), "a link is not served");
        assert!(std::fs::symlink_metadata(sub.shown("f")).is_err(), "the link is gone");
        std::os::unix::fs::symlink(victim.join("keep"), root.shown("lock")).expect("link");
        let mut f = root.own_file("lock", Access::ReadWrite).expect("own file");
        std::io::Write::write_all(&mut f, b"mine").expect("write");
        assert_eq!(std::fs::read(victim.join("keep")).expect("victim"), b"x");
        let mode = std::fs::metadata(&victim).expect("victim").permissions().mode();
        assert_ne!(mode & 0o777, 0o700, "the victim was not chmod-ed");
    }

    /// Someone who can write the directory the cache root is in (a careless `--cache-dir` under
    /// another user's home) swaps the root for their own link to a directory of the user's
    /// between regfs's look at it and its open: the root opened must never be that directory.
    #[test]
    fn a_root_swapped_for_a_link_after_its_check_is_not_followed() {
        use std::os::unix::fs::MetadataExt;
        let base = tempfile::tempdir().expect("tempdir");
        let victim = base.path().join("victim");
        std::fs::create_dir(&victim).expect("victim");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let victim_ino = std::fs::metadata(&victim).expect("victim").ino();
        let (root, swap) = (base.path().join("cache"), base.path().join("swap"));
        std::fs::create_dir(&root).expect("root");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::symlink(&victim, &swap).expect("link");
        // The link is another user's (as root, the test can make it so; otherwise the race
        // below is the user against themselves, and there is nothing to test).
        if me() != 0 {
            eprintln!("needs root to give the link another owner; skipped");
            return;
        }
        std::os::unix::fs::lchown(&swap, Some(65534), None).expect("lchown");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (stop, root, swap) = (Arc::clone(&stop), root.clone(), swap.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let cwd = rustix::fs::CWD;
                    rustix::fs::renameat_with(cwd, &root, cwd, &swap, rustix::fs::RenameFlags::EXCHANGE)
                        .expect("exchange");
                }
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut opened = 0;
        let mut followed = 0;
        while std::time::Instant::now() < deadline {
            if let Ok(dir) = CacheDir::open_root(&root) {
                opened += 1;
                if rustix::fs::fstat(&*dir.fd).expect("fstat").st_ino == victim_ino {
                    followed += 1;
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().expect("flipper");
        assert!(opened > 0, "the root was never opened");
        assert_eq!(followed, 0, "{followed} of {opened} opens followed another user's link to {}", victim.display());
    }

    /// A link the user made as the root is followed as it reads: relative to where it is, or
    /// absolute; a root given with a trailing slash or as a bare name is found too.
    #[test]
    fn a_root_the_user_links_to_is_followed() {
        use std::os::unix::fs::MetadataExt;
        let base = tempfile::tempdir().expect("tempdir");
        let real = base.path().join("real");
        std::fs::create_dir(&real).expect("real");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let ino = std::fs::metadata(&real).expect("real").ino();
        std::os::unix::fs::symlink("real", base.path().join("relative")).expect("link");
        std::os::unix::fs::symlink(&real, base.path().join("absolute")).expect("link");
        let mut with_slash = real.clone().into_os_string();
        with_slash.push("/");
        for path in [base.path().join("relative"), base.path().join("absolute"), real.clone(), with_slash.into()] {
            let dir = CacheDir::open_root(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(rustix::fs::fstat(&*dir.fd).expect("fstat").st_ino, ino, "{}", path.display());
        }
    }

    /// `--cache-dir` through a directory or link another user owns: that user can point the
    /// path anywhere, such as a directory of root's that holds a `lock` and a `tmp/` of its
    /// own, which regfs would then truncate and empty. So is a directory on the way that
    /// anyone can write without the sticky bit. A sticky one (`/tmp`) is fine.
    #[test]
    fn a_root_reached_through_another_user_s_directory_or_link_is_refused() {
        let base = tempfile::tempdir().expect("tempdir");
        let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
        mode(base.path(), 0o755);
        let lib = base.path().join("lib");
        std::fs::create_dir_all(lib.join("dpkg")).expect("lib/dpkg");
        mode(&lib, 0o755);
        mode(&lib.join("dpkg"), 0o755);
        let mallory = base.path().join("mallory");
        std::fs::create_dir(&mallory).expect("mallory");
        mode(&mallory, 0o755);
        if me() != 0 {
            eprintln!("needs root to make another user's directory; skipped");
            return;
        }
        std::os::unix::fs::symlink(&lib, mallory.join("x")).expect("link");
        std::os::unix::fs::lchown(mallory.join("x"), Some(65534), None).expect("lchown");
        std::os::unix::fs::chown(&mallory, Some(65534), None).expect("chown");
        let e = CacheDir::open_root(&mallory.join("x/dpkg")).err().expect("a root through another user's link");
        assert!(e.to_string().contains("uid 65534"), "{e}");
        let e = CacheDir::open_root(&mallory.join("cache")).err().expect("a root in another user's directory");
        assert!(e.to_string().contains("uid 65534"), "{e}");
        assert!(!mallory.join("cache").exists(), "regfs made a directory in another user's");
        let open = base.path().join("open");
        std::fs::create_dir(&open).expect("open");
        mode(&open, 0o777);
        let e = CacheDir::open_root(&open.join("cache")).err().expect("a root in a directory anyone can write");
        assert!(e.to_string().contains("writable by others"), "{e}");
        let sticky = base.path().join("sticky");
        std::fs::create_dir(&sticky).expect("sticky");
        mode(&sticky, 0o1777);
        CacheDir::open_root(&sticky.join("a/cache")).expect("a root under a sticky directory");
        // A link of root's own on the way is the system's (think /var/run -> /run).
        std::os::unix::fs::symlink(&sticky, base.path().join("rootlink")).expect("link");
        CacheDir::open_root(&base.path().join("rootlink/a/cache")).expect("a root through root's link");
    }

    #[test]
    fn a_root_others_can_write_is_refused() {
        let base = tempfile::tempdir().expect("tempdir");
        let open = base.path().join("open");
        std::fs::create_dir(&open).expect("dir");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o757)).expect("chmod");
        let e = CacheDir::open_root(&open).err().expect("refused");
        assert!(e.to_string().contains("writable by others"), "{e}");
    }
}
