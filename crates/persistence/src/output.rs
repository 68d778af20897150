//! Files the command writes: the one rule every output path follows (decision 14); and the
//! rule of the files it reads by name ([`open_input`]).
//!
//! An output path is one of two kinds:
//!
//! * **A new or regular file.** [`Output`] writes a temporary file created exclusively
//!   (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600, a unique unpredictable name that carries the
//!   writer's pid) in the same folder as the final file; [`Output::commit`] fsyncs it, renames it
//!   into place and fsyncs the folder. Until then the final file is untouched, and a reader sees
//!   either the old file or the complete new one. A file that replaces an existing one keeps that
//!   file's permission bits (and owner, where allowed); a new file gets 0600, because exports and
//!   backups hold audit data.
//! * **A non-regular file**: a pipe or FIFO, a terminal, a character or block device, `-` (this
//!   process's stdout), `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`. These are
//!   written straight through: never replaced by a regular file, never given a sibling
//!   temporary file.
//!
//! No link is followed to a file: a symlink at the final path that leads to a regular file or
//! to nothing (it dangles) is refused, since whoever can plant a link in a shared folder could
//! otherwise aim a run's output at any file that run may write (or create one anywhere). A
//! link that leads to a pipe, terminal or device is written straight through, as that is. A
//! name at a temporary path is never followed:
//! creating the temporary file fails on any existing name, a symlink included, and another
//! unique name is tried.
//!
//! With a database to protect, its own files (the database, `-wal`, `-shm`, `-journal`) are
//! refused by identity (device and inode), so no name, symlink, hard link or `..` path reaches
//! them, and by name for the side files that do not exist yet (`DB-wal` beside the database).
//!
//! Two writers to one path: the commit renames without replacing ([`RenameFlags::NOREPLACE`])
//! when the path did not exist at the start, and checks the existing file is still the one it
//! found (under a lock on the folder) when it did. The loser fails with
//! [`Error::OutputChanged`] and leaves the winner's file as it is: no file holds a mix of two
//! outputs, and no writer reports a success it did not deliver.
//!
//! A program that ends on a signal can remove its uncommitted temporary files first
//! ([`remove_unfinished`]; the command does on Ctrl-C and SIGTERM). A writer killed outright
//! before its commit leaves its temporary file. The next output opened in that
//! folder removes every such file (and SQLite's `-journal`, `-wal` and `-shm` beside it) whose
//! process is gone, and lists them in [`Output::leftovers`]. A name is not enough to remove a
//! file: a file that is one of the protected database's own files, that a process has open
//! (every process `/proc` shows this one), or that a process holds a lock on (SQLite's locks,
//! `flock`) is in use, and it and the other files of its name stay as they are.
//!
//! Nothing this module removes outlives the process that made it on any path it can see: a
//! temporary file dropped without a commit is removed, with the `-journal`, `-wal` and `-shm`
//! SQLite may have left beside it.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, RenameFlags, CWD};
use rustix::io::Errno;

use crate::db::Database;
use crate::error::{Error, Result};

/// How many symlinks are followed from an output path before giving up (Linux's limit).
const MAX_LINKS: usize = 40;
/// How many unique temporary names are tried before giving up.
const TEMP_ATTEMPTS: usize = 16;
/// How much of the final name a temporary name repeats (names stay under 255 bytes).
const TEMP_PREFIX_BYTES: usize = 150;
/// What every temporary name of this module ends with.
const TEMP_SUFFIX: &str = ".partial";
/// What precedes the pid in a temporary name.
const TEMP_MARK: &str = ".aigentflow-";
/// A database's own files: its path with each of these appended.
const SIDE_SUFFIXES: [&str; 4] = ["", "-wal", "-shm", "-journal"];
/// The side files SQLite may leave beside a temporary file it wrote (a backup).
const SQLITE_SIDE_FILES: [&str; 3] = ["-journal", "-wal", "-shm"];

/// A temporary file left by an output whose process is gone, removed when another output was
/// opened in the same folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// Where the file was.
    pub path: PathBuf,
    /// The process that created it and no longer runs.
    pub pid: u32,
}

/// Whether an output may replace an existing regular file, and whether it may be anything but
/// a new regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    Replace,
    Refuse,
    /// Only a new regular file: an existing file and anything written straight through (a
    /// device, FIFO, socket, descriptor or stdout) are refused before they are opened.
    FileOnly,
}

/// One output being written: see the [module documentation](self) for the rule it follows.
///
/// Write to it, then [`commit`](Output::commit). Dropping it without a commit discards a
/// temporary file (the final path keeps what it held); what went straight through to a pipe or
/// device stays written.
#[derive(Debug)]
pub struct Output {
    /// The path as the caller gave it.
    path: PathBuf,
    writer: BufWriter<File>,
    target: Target,
    stdout: bool,
    leftovers: Vec<Leftover>,
    written: u64,
}

#[derive(Debug)]
enum Target {
    /// Written straight through; `regular` when a descriptor name leads to a regular file.
    Direct { regular: bool },
    /// Written into a temporary file, renamed over `name` in the temporary file's folder;
    /// `database` when it is a SQLite database, which no journal at `name` may wait for
    /// ([`Output::hold_database`]).
    Staged { temp: TempFile, name: OsString, replaces: Option<FileId>, database: bool },
}

impl Output {
    /// The path that means this process's standard output.
    pub const STDOUT: &'static str = "-";

    /// Opens `path` for writing by the rule: a new or regular file through a temporary file
    /// renamed into place (replacing an existing regular file), anything else straight through.
    /// With `protect`, that database's own files are refused ([`Error::OwnFile`]).
    pub fn open(path: &Path, protect: Option<&Database>) -> Result<Self> {
        Self::open_with(path, protect, Existing::Replace)
    }

    /// Like [`open`](Output::open), but an existing regular file is refused
    /// ([`Error::OutputExists`]) rather than replaced: what a backup does.
    pub fn open_new(path: &Path, protect: Option<&Database>) -> Result<Self> {
        Self::open_with(path, protect, Existing::Refuse)
    }

    /// Like [`open_new`](Output::open_new), but only a new regular file: a device, FIFO,
    /// socket, descriptor or `-` is refused ([`Error::NotAFile`]) before it is opened, so a
    /// FIFO nobody reads never holds the command, for what must be a file of its own (a key).
    pub fn open_new_file(path: &Path, protect: Option<&Database>) -> Result<Self> {
        Self::open_with(path, protect, Existing::FileOnly)
    }

    fn open_with(path: &Path, protect: Option<&Database>, existing: Existing) -> Result<Self> {
        let protected = Protected::of(protect);
        let not_a_file = |kind: &'static str| Error::NotAFile { path: path.to_path_buf(), kind };
        if existing == Existing::FileOnly && path.as_os_str() == Self::STDOUT {
            return Err(not_a_file("name of the standard output"));
        }
        if path.as_os_str() == Self::STDOUT {
            let file = dup(std::io::stdout().as_fd(), path)?;
            return Self::direct(path, file, &protected);
        }
        let mut current = path.to_path_buf();
        // Whether `current` was reached through a link: a file there is refused.
        let mut linked = false;
        for _ in 0..MAX_LINKS {
            if let Some(fd) = descriptor_name(&current) {
                if existing == Existing::FileOnly {
                    return Err(not_a_file("descriptor"));
                }
                return Self::open_descriptor(path, &current, fd, linked, &protected);
            }
            let (dir_path, name) = split(path, &current)?;
            let dir = open_dir(path, &dir_path)?;
            let st = match rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => {
                    protected.check_name(path, &dir, &name)?;
                    if linked {
                        return Err(through_a_link(path, &current));
                    }
                    return Self::staged(path, dir, dir_path, name, None, &protected);
                }
                Err(e) => return Err(io_error(path, "examining it", e.into())),
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(&dir, &name, Vec::new())
                        .map_err(|e| io_error(path, "reading the link", e.into()))?;
                    let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
                    current = if target.is_absolute() { target } else { dir_path.join(target) };
                    linked = true;
                }
                FileType::RegularFile => {
                    protected.check_id(path, FileId::of_stat(&st))?;
                    protected.check_name(path, &dir, &name)?;
                    if linked {
                        return Err(through_a_link(path, &current));
                    }
                    if existing != Existing::Replace {
                        return Err(Error::OutputExists { path: path.to_path_buf() });
                    }
                    return Self::staged(path, dir, dir_path, name, Some(&st), &protected);
                }
                FileType::Directory => return Err(refused(path, "it is a directory")),
                other => {
                    protected.check_id(path, FileId::of_stat(&st))?;
                    if existing == Existing::FileOnly {
                        return Err(not_a_file(match other {
                            FileType::Fifo => "FIFO (named pipe)",
                            FileType::CharacterDevice | FileType::BlockDevice => "device",
                            FileType::Socket => "socket",
                            _ => "special file",
                        }));
                    }
                    let flags =
                        OFlags::WRONLY | OFlags::NOCTTY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    let fd = rustix::fs::openat(&dir, &name, flags, Mode::empty())
                        .map_err(|e| io_error(path, "opening it", e.into()))?;
                    let file = File::from(fd);
                    if file_is_regular(&file) {
                        // Swapped for a regular file since it was examined: never write one
                        // straight through.
                        return Err(Error::OutputChanged { path: path.to_path_buf() });
                    }
                    return Self::direct(path, file, &protected);
                }
            }
        }
        Err(refused(path, "too many levels of symbolic links"))
    }

    /// `/dev/stdout`, `/dev/fd/N`, `/proc/self/fd/N`…: the descriptor itself, straight through.
    /// Reached through a link (`linked`), a descriptor that is a regular file is refused as a
    /// link to a file is: the shell's `>> file` is given as `/dev/stdout`, not by a link.
    fn open_descriptor(
        path: &Path,
        name: &Path,
        fd: u32,
        linked: bool,
        protected: &Protected,
    ) -> Result<Self> {
        let meta = std::fs::metadata(name).map_err(|e| io_error(path, "examining it", e))?;
        protected.check_id(path, FileId { dev: meta.dev(), ino: meta.ino() })?;
        if meta.is_dir() {
            return Err(refused(path, "it is a directory"));
        }
        if linked && meta.is_file() {
            return Err(through_a_link(path, name));
        }
        let file = match fd {
            // A duplicate shares the descriptor's offset and flags, as a shell means it.
            1 => dup(std::io::stdout().as_fd(), path)?,
            2 => dup(std::io::stderr().as_fd(), path)?,
            _ => {
                // Reopened through /proc: a regular file is appended to, as through the
                // descriptor the shell opened (`3>file` truncated it, `3>>file` appends).
                let mut flags = OFlags::WRONLY | OFlags::NOCTTY | OFlags::CLOEXEC;
                if meta.is_file() {
                    flags |= OFlags::APPEND;
                }
                File::from(
                    rustix::fs::open(name, flags, Mode::empty())
                        .map_err(|e| io_error(path, "opening it", e.into()))?,
                )
            }
        };
        Self::direct(path, file, protected)
    }

    fn direct(path: &Path, file: File, protected: &Protected) -> Result<Self> {
        let id = FileId::of_file(&file).map_err(|e| io_error(path, "examining it", e))?;
        protected.check_id(path, id)?;
        let stdout = path.as_os_str() == Self::STDOUT
            || FileId::of_file_fd(std::io::stdout().as_fd()).is_ok_and(|out| out == id);
        let regular = file_is_regular(&file);
        Ok(Self {
            path: path.to_path_buf(),
            writer: BufWriter::with_capacity(64 * 1024, file),
            target: Target::Direct { regular },
            stdout,
            leftovers: Vec::new(),
            written: 0,
        })
    }

    fn staged(
        path: &Path,
        dir: OwnedFd,
        dir_path: PathBuf,
        name: OsString,
        replaces: Option<&rustix::fs::Stat>,
        protected: &Protected,
    ) -> Result<Self> {
        let leftovers = remove_leftovers(&dir, &dir_path, protected);
        let (temp, file) = TempFile::create(dir, dir_path, &name, &mut random_u64)
            .map_err(|e| io_error(path, "creating a temporary file beside it", e.source))?;
        if let Some(old) = replaces {
            keep_owner_and_mode(&file, old)
                .map_err(|e| io_error(path, "giving the new file the old one's permissions", e))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            writer: BufWriter::with_capacity(64 * 1024, file),
            target: Target::Staged {
                temp,
                name,
                replaces: replaces.map(FileId::of_stat),
                database: false,
            },
            stdout: false,
            leftovers,
            written: 0,
        })
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the output goes straight through (a pipe, terminal, device or descriptor).
    pub fn is_direct(&self) -> bool {
        matches!(self.target, Target::Direct { .. })
    }

    /// Whether the output is this process's stdout (`-`, or the same file or pipe), so nothing
    /// else should be printed there.
    pub fn is_stdout(&self) -> bool {
        self.stdout
    }

    /// Temporary files of writers that are gone, removed when this output was opened.
    pub fn leftovers(&self) -> &[Leftover] {
        &self.leftovers
    }

    /// Makes a file output a SQLite database's: refused ([`Error::ForeignJournal`]) while a
    /// `-wal` or `-journal` is at its name, now and again at the commit, just before the rename.
    /// SQLite applies such a file to the database at that name when it is next opened (a `-wal`
    /// left by a deleted database replays its pages over the new file, a hot `-journal` rolls
    /// them back), so the file would not hold what was written, and one planted there could
    /// forge what it seems to hold. An output straight through (a pipe, a device) has no name.
    pub(crate) fn hold_database(&mut self) -> Result<()> {
        if let Target::Staged { temp, name, database, .. } = &mut self.target {
            temp.check_no_journal(&self.path, name)?;
            *database = true;
        }
        Ok(())
    }

    /// The temporary file's path, where a writer that works by path (SQLite) writes the output.
    pub(crate) fn staging_path(&self) -> Option<PathBuf> {
        match &self.target {
            Target::Staged { temp, .. } => Some(temp.path()),
            Target::Direct { .. } => None,
        }
    }

    /// Finishes the output: flushes, and for a file fsyncs it, renames it into place and fsyncs
    /// the folder. Returns the bytes the output holds (for a file, its size).
    pub fn commit(mut self) -> Result<u64> {
        self.writer.flush().map_err(|e| io_error(&self.path, "writing it", e))?;
        match &mut self.target {
            Target::Direct { regular } => {
                if *regular {
                    self.writer
                        .get_ref()
                        .sync_all()
                        .map_err(|e| io_error(&self.path, "syncing it", e))?;
                }
                Ok(self.written)
            }
            Target::Staged { temp, name, replaces, database } => {
                let file = self.writer.get_ref();
                file.sync_all().map_err(|e| io_error(&self.path, "syncing it", e))?;
                if *database {
                    temp.check_no_journal(&self.path, name)?;
                }
                let bytes = file.metadata().map(|m| m.len()).unwrap_or(self.written);
                temp.rename_over(&self.path, name, *replaces)?;
                Ok(bytes)
            }
        }
    }
}

/// Write errors name the output's path (and a file size limit reached), keeping their kind, so
/// a closed pipe is still told apart.
impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.writer.write(buf).map_err(|e| self.named(e))?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush().map_err(|e| self.named(e))
    }
}

impl Output {
    fn named(&self, e: std::io::Error) -> std::io::Error {
        std::io::Error::new(e.kind(), io_error(&self.path, "writing it", e))
    }
}

/// Why a temporary file could not be created, and the name that was tried.
#[derive(Debug)]
struct CreateError {
    path: PathBuf,
    source: std::io::Error,
}

/// A temporary file this process created exclusively in a folder; removed when dropped unless
/// renamed into place, and only while that name still is the file created. The `-journal`,
/// `-wal` and `-shm` SQLite may have made beside it (a backup's copy) are removed with it.
/// Until then it is also listed in [`UNFINISHED`], for [`remove_unfinished`].
#[derive(Debug)]
pub(crate) struct TempFile {
    dir: OwnedFd,
    dir_path: PathBuf,
    name: OsString,
    id: FileId,
    renamed: bool,
    /// Its entry in [`UNFINISHED`].
    serial: u64,
}

/// A temporary file not yet renamed into place nor removed: its folder (a descriptor of its
/// own), name and identity. Or, while [`hold_placed`] is on, a new file renamed into place
/// (`placed`, `name` its final name) whose program has not yet finished.
#[derive(Debug)]
struct Unfinished {
    serial: u64,
    dir: OwnedFd,
    name: OsString,
    id: FileId,
    placed: bool,
}

/// Whether outputs renamed into place stay listed ([`hold_placed`]).
static HOLD_PLACED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, every output this process renames into place as a new file (not one that
/// replaced a file) stays listed until [`release_placed`], and [`remove_unfinished`] removes it
/// as well: a command ended by a signal after its file is in place but before it finished (a
/// copy being verified) leaves nothing, so that running it again does not stop at the file
/// the interrupted run left. For a program that runs one command; a library that writes
/// outputs for as long as it lives does not call it.
pub fn hold_placed() {
    HOLD_PLACED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The command finished: the outputs it put in place are its result, which a signal from now on
/// leaves. Outputs renamed into place later are unlisted at their rename again.
pub fn release_placed() {
    let mut list = unfinished();
    HOLD_PLACED.store(false, std::sync::atomic::Ordering::SeqCst);
    RELEASED.store(true, std::sync::atomic::Ordering::SeqCst);
    list.1.retain(|file| !file.placed);
}

/// Whether [`release_placed`] ran (set under the list's lock, which [`remove_unfinished`]
/// holds as it reads it).
static RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The temporary files of this process not yet renamed into place nor removed. A file is
/// listed when it is created and unlisted under the lock as it is renamed or removed, so
/// [`remove_unfinished`] never removes a file a commit has put in place.
static UNFINISHED: std::sync::Mutex<(u64, Vec<Unfinished>)> =
    std::sync::Mutex::new((0, Vec::new()));

fn unfinished() -> std::sync::MutexGuard<'static, (u64, Vec<Unfinished>)> {
    UNFINISHED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Removes the temporary files of every output this process has not committed (and SQLite's
/// side files beside them), as dropping them would; for a program ending on a signal, whose
/// destructors do not run (Ctrl-C during an export). The returned guard holds every output
/// still: none is created, committed or removed while it lives, so a program that exits while
/// holding it leaves no temporary file and no half-committed one.
pub fn remove_unfinished() -> OutputsHeld {
    let mut list = unfinished();
    for file in list.1.drain(..) {
        if file.placed {
            // Only while the name still is the file this process put there, and then the side
            // files SQLite made beside it (a copy opened to be verified).
            let ours = is_file(file.dir.as_fd(), &file.name, file.id);
            if ours && rustix::fs::unlinkat(&file.dir, &file.name, AtFlags::empty()).is_ok() {
                remove_temp(file.dir.as_fd(), &file.name, None);
            }
        } else {
            remove_temp(file.dir.as_fd(), &file.name, Some(file.id));
        }
    }
    let released = RELEASED.load(std::sync::atomic::Ordering::SeqCst);
    OutputsHeld { _list: list, released }
}

/// Every output of this process held still ([`remove_unfinished`]) while it lives.
#[must_use = "outputs are held only while this lives"]
pub struct OutputsHeld {
    _list: std::sync::MutexGuard<'static, (u64, Vec<Unfinished>)>,
    released: bool,
}

impl OutputsHeld {
    /// Whether the command had finished ([`release_placed`]) before the outputs were held: its
    /// files are its result, and a program that received a signal then lets it exit as it
    /// would have, rather than end by the signal with its outputs in place.
    pub fn command_finished(&self) -> bool {
        self.released
    }
}

impl std::fmt::Debug for OutputsHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputsHeld")
    }
}

/// Removes the temporary file `name` in `dir` if it still is the file `id` names (`None`: it
/// was renamed away), and the SQLite side files of its name in any case: the unique name is
/// this process's, and a connection that failed (a full disk, a file size limit) may leave
/// them, renamed or not.
fn remove_temp(dir: BorrowedFd<'_>, name: &OsStr, id: Option<FileId>) {
    if let Some(id) = id {
        if is_file(dir, name, id) {
            let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
        }
    }
    for side in SQLITE_SIDE_FILES {
        let mut side_name = name.to_os_string();
        side_name.push(side);
        let _ = rustix::fs::unlinkat(dir, &side_name, AtFlags::empty());
    }
}

/// Whether `name` in `dir` is (not a link to) the file `id`.
fn is_file(dir: BorrowedFd<'_>, name: &OsStr, id: FileId) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileId::of_stat(&st) == id)
}

impl TempFile {
    /// Creates a temporary file for `hint` in `dir`, mode 0600, never through an existing name.
    /// A failure names the last name tried.
    fn create(
        dir: OwnedFd,
        dir_path: PathBuf,
        hint: &OsStr,
        random: &mut dyn FnMut() -> u64,
    ) -> std::result::Result<(Self, File), CreateError> {
        let flags = OFlags::RDWR
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::NOCTTY
            | OFlags::CLOEXEC;
        let mut name = temp_name(hint, std::process::id(), random());
        // Listed as it is made: `remove_unfinished` holds the list while it removes, so a
        // file is made either before it (and listed) or not at all.
        let mut list = unfinished();
        for _ in 0..TEMP_ATTEMPTS {
            match rustix::fs::openat(&dir, &name, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    let file = File::from(fd);
                    let failed = |source: std::io::Error| {
                        let _ = rustix::fs::unlinkat(&dir, &name, AtFlags::empty());
                        CreateError { path: dir_path.join(&name), source }
                    };
                    let id = FileId::of_file(&file).map_err(failed)?;
                    let listed_dir =
                        rustix::io::fcntl_dupfd_cloexec(&dir, 0).map_err(|e| failed(e.into()))?;
                    list.0 += 1;
                    let serial = list.0;
                    list.1.push(Unfinished {
                        serial,
                        dir: listed_dir,
                        name: name.clone(),
                        id,
                        placed: false,
                    });
                    return Ok((Self { dir, dir_path, name, id, renamed: false, serial }, file));
                }
                // Something (perhaps a planted link) has this name: try another.
                Err(Errno::EXIST) => name = temp_name(hint, std::process::id(), random()),
                Err(e) => return Err(CreateError { path: dir_path.join(&name), source: e.into() }),
            }
        }
        Err(CreateError {
            path: dir_path.join(&name),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{TEMP_ATTEMPTS} unique names were all taken"),
            ),
        })
    }

    /// Creates the temporary file a backup to a pipe or device stages its copy in: beside
    /// `near` (the database) when that folder can be written, else in the system's temporary
    /// folder ([`std::env::temp_dir`], which honours `TMPDIR`). Leftovers of gone writers in the
    /// folder used are removed (never `protect`'s own files, nor files in use) and returned.
    /// When neither folder takes a file, the error for `dest` names both files that could not
    /// be created.
    pub(crate) fn stage(
        near: &Path,
        protect: Option<&Database>,
        dest: &Path,
    ) -> Result<(Self, File, Vec<Leftover>)> {
        let hint = near.file_name().unwrap_or(OsStr::new("aigentflow"));
        let beside = match near.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut folders = vec![beside, std::env::temp_dir()];
        folders.dedup();
        Self::stage_in(&folders, hint, &Protected::of(protect), dest)
    }

    /// [`stage`](Self::stage) in the first of `folders` that takes the file.
    fn stage_in(
        folders: &[PathBuf],
        hint: &OsStr,
        protected: &Protected,
        dest: &Path,
    ) -> Result<(Self, File, Vec<Leftover>)> {
        let mut failures = Vec::new();
        let mut removed = Vec::new();
        for dir_path in folders {
            let dir = match rustix::fs::openat(
                CWD,
                dir_path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(dir) => dir,
                Err(e) => {
                    let e = std::io::Error::from(e);
                    failures.push(format!("opening the folder {}: {e}", dir_path.display()));
                    continue;
                }
            };
            removed.extend(remove_leftovers(&dir, dir_path, protected));
            match Self::create(dir, dir_path.clone(), hint, &mut random_u64) {
                Ok((temp, file)) => return Ok((temp, file, removed)),
                Err(e) => failures.push(format!("creating {}: {}", e.path.display(), e.source)),
            }
        }
        // A server's database (or one in TMPDIR) has no other folder to stage in than TMPDIR.
        let fix = if folders.len() > 1 {
            "make the database's folder writable, or set TMPDIR to a writable folder"
        } else {
            "set TMPDIR to a writable folder"
        };
        Err(Error::Backup {
            path: dest.to_path_buf(),
            reason: format!(
                "no folder takes the copy it is staged in: {}; {fix}",
                failures.join("; ")
            )
            .into(),
        })
    }

    /// The temporary file's path.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir_path.join(&self.name)
    }

    /// Whether the temporary name still is the file this process created.
    pub(crate) fn is_ours(&self) -> bool {
        is_file(self.dir.as_fd(), &self.name, self.id)
    }

    /// Fails unless the temporary name still is the file this process created.
    pub(crate) fn check_ours(&self, path: &Path) -> Result<()> {
        if self.is_ours() {
            Ok(())
        } else {
            Err(Error::OutputChanged { path: path.to_path_buf() })
        }
    }

    /// Fails ([`Error::ForeignJournal`]) while a `-wal` or `-journal` of any kind is at `name`
    /// in the temporary file's folder (see [`Output::hold_database`]).
    fn check_no_journal(&self, path: &Path, name: &OsStr) -> Result<()> {
        for suffix in ["-wal", "-journal"] {
            let mut journal = name.to_os_string();
            journal.push(suffix);
            match rustix::fs::statat(&self.dir, &journal, AtFlags::SYMLINK_NOFOLLOW) {
                Err(Errno::NOENT) => {}
                Ok(_) => {
                    return Err(Error::ForeignJournal {
                        path: path.to_path_buf(),
                        journal: self.dir_path.join(journal),
                    })
                }
                Err(e) => {
                    return Err(io_error(path, "looking for a journal at its name", e.into()))
                }
            }
        }
        Ok(())
    }

    /// Renames the temporary file over `name` in its folder: without replacing anything when
    /// `replaces` is None, else only while `name` still is the file `replaces` names.
    fn rename_over(&mut self, path: &Path, name: &OsStr, replaces: Option<FileId>) -> Result<()> {
        self.check_ours(path)?;
        // The folder's lock first: a wait for another process's commit does not hold the list,
        // which an interrupt takes. The list is held until the file is in place and unlisted:
        // `remove_unfinished` then either ran before (the file is gone, the rename fails) or
        // finds nothing of this file.
        let _lock = FolderLock::take(&self.dir);
        let mut list = unfinished();
        let changed = || Error::OutputChanged { path: path.to_path_buf() };
        let rename_err =
            |e: Errno| io_error(path, "renaming the temporary file into place", e.into());
        match replaces {
            Some(old) => {
                let now = rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|_| changed())?;
                if FileType::from_raw_mode(now.st_mode) != FileType::RegularFile
                    || FileId::of_stat(&now) != old
                {
                    return Err(changed());
                }
                rustix::fs::renameat(&self.dir, &self.name, &self.dir, name).map_err(rename_err)?;
            }
            None => match rustix::fs::renameat_with(
                &self.dir,
                &self.name,
                &self.dir,
                name,
                RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {}
                Err(Errno::EXIST) => return Err(changed()),
                // A file system without renameat2's flags: a hard link also never replaces.
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    match rustix::fs::linkat(
                        &self.dir,
                        &self.name,
                        &self.dir,
                        name,
                        AtFlags::empty(),
                    ) {
                        Ok(()) => {
                            let _ = rustix::fs::unlinkat(&self.dir, &self.name, AtFlags::empty());
                        }
                        Err(Errno::EXIST) => return Err(changed()),
                        // Nor hard links: the folder lock is all there is.
                        Err(_) => {
                            if rustix::fs::statat(&self.dir, name, AtFlags::SYMLINK_NOFOLLOW)
                                .is_ok()
                            {
                                return Err(changed());
                            }
                            rustix::fs::renameat(&self.dir, &self.name, &self.dir, name)
                                .map_err(rename_err)?;
                        }
                    }
                }
                Err(e) => return Err(rename_err(e)),
            },
        }
        self.renamed = true;
        let hold = replaces.is_none() && HOLD_PLACED.load(std::sync::atomic::Ordering::SeqCst);
        match list.1.iter_mut().find(|file| file.serial == self.serial) {
            Some(file) if hold => {
                file.name = name.to_os_string();
                file.placed = true;
            }
            _ => list.1.retain(|file| file.serial != self.serial),
        }
        drop(list);
        match rustix::fs::fsync(&self.dir) {
            // Some file systems cannot sync a folder; the rename is then as durable as it gets.
            Ok(()) | Err(Errno::INVAL | Errno::BADF) => Ok(()),
            Err(e) => Err(io_error(path, "syncing its folder", e.into())),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let mut list = unfinished();
        list.1.retain(|file| file.serial != self.serial || file.placed);
        remove_temp(self.dir.as_fd(), &self.name, (!self.renamed).then_some(self.id));
    }
}

/// An exclusive `flock` on a folder while a commit checks and renames, so two writers of this
/// module cannot both pass the check. Best effort: a file system without flock still has the
/// identity check.
struct FolderLock<'a>(Option<std::os::fd::BorrowedFd<'a>>);

impl<'a> FolderLock<'a> {
    fn take(dir: &'a OwnedFd) -> Self {
        let fd = dir.as_fd();
        Self(rustix::fs::flock(fd, FlockOperation::LockExclusive).ok().map(|()| fd))
    }
}

impl Drop for FolderLock<'_> {
    fn drop(&mut self) {
        if let Some(fd) = self.0 {
            let _ = rustix::fs::flock(fd, FlockOperation::Unlock);
        }
    }
}

/// Device and inode: what a file is, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    fn of_stat(st: &rustix::fs::Stat) -> Self {
        Self { dev: st.st_dev as u64, ino: st.st_ino as u64 }
    }

    fn of_file(file: &File) -> std::io::Result<Self> {
        Self::of_file_fd(file.as_fd())
    }

    fn of_file_fd(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Self> {
        Ok(Self::of_stat(&rustix::fs::fstat(fd)?))
    }

    fn of_path(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self { dev: m.dev(), ino: m.ino() })
    }
}

/// The database's own files, by identity and by name.
#[derive(Debug, Default)]
struct Protected {
    /// Files that exist, by identity.
    ids: Vec<(FileId, PathBuf)>,
    /// Names in a folder (by the folder's identity), whether or not a file has them yet.
    names: Vec<(FileId, OsString, PathBuf)>,
}

impl Protected {
    fn of(db: Option<&Database>) -> Self {
        db.and_then(Database::path).map_or_else(Self::default, Self::of_path)
    }

    fn of_path(path: &Path) -> Self {
        let mut protected = Self::default();
        // As given and resolved: SQLite names the side files after the resolved database file.
        let mut bases = vec![path.to_path_buf()];
        if let Ok(real) = std::fs::canonicalize(path) {
            bases.push(real);
        }
        for base in bases {
            let Some(name) = base.file_name() else { continue };
            let dir = match base.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let dir_id = FileId::of_path(dir);
            for suffix in SIDE_SUFFIXES {
                let mut file_name = name.to_os_string();
                file_name.push(suffix);
                let mut file = base.clone().into_os_string();
                file.push(suffix);
                let file = PathBuf::from(file);
                if let Some(id) = FileId::of_path(&file) {
                    protected.ids.push((id, file.clone()));
                }
                if let Some(dir_id) = dir_id {
                    protected.names.push((dir_id, file_name, file));
                }
            }
        }
        protected
    }

    /// The own file that `id` is, if it is one.
    fn file_with_id(&self, id: FileId) -> Option<&Path> {
        self.ids.iter().find(|(own, _)| *own == id).map(|(_, file)| file.as_path())
    }

    /// The own file that has `name` in the folder `dir_id`, if one has (or will have).
    fn file_named(&self, dir_id: FileId, name: &OsStr) -> Option<&Path> {
        self.names.iter().find(|(d, n, _)| *d == dir_id && n == name).map(|(_, _, f)| f.as_path())
    }

    fn check_id(&self, path: &Path, id: FileId) -> Result<()> {
        match self.file_with_id(id) {
            Some(file) => Err(Error::OwnFile { path: path.to_path_buf(), file: file.to_owned() }),
            None => Ok(()),
        }
    }

    fn check_name(&self, path: &Path, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        if self.names.is_empty() {
            return Ok(());
        }
        let dir_id = FileId::of_file_fd(dir.as_fd())
            .map_err(|e| io_error(path, "examining its folder", e))?;
        if let Some(file) = self.file_named(dir_id, name) {
            return Err(Error::OwnFile { path: path.to_path_buf(), file: file.to_owned() });
        }
        // A side file's name of another name of the database (a hard link, a symlink): SQLite
        // opening the database by that name takes a `-journal` there for its own.
        for suffix in &SIDE_SUFFIXES[1..] {
            let Some(base) = name.as_bytes().strip_suffix(suffix.as_bytes()) else { continue };
            if base.is_empty() {
                continue;
            }
            let Ok(st) = rustix::fs::statat(dir, OsStr::from_bytes(base), AtFlags::empty()) else {
                continue;
            };
            if let Some(file) = self.file_with_id(FileId::of_stat(&st)) {
                return Err(Error::OwnFile { path: path.to_path_buf(), file: file.to_owned() });
            }
        }
        Ok(())
    }
}

/// A database's own files (the database, `-wal`, `-shm`, `-journal`) as they are now, by
/// device and inode: what the output rule refuses, for a check of descriptors a process was
/// given, such as its stdout and stderr (`aigentflow … 2<>app.db`).
#[derive(Debug)]
pub struct OwnFiles(Protected);

impl OwnFiles {
    /// The files of the database at `db` (as given and as resolved) that exist now.
    pub fn of(db: &Path) -> Self {
        Self(Protected::of_path(db))
    }

    /// The own file an open descriptor is (by device and inode), if it is one; `None` too for
    /// a descriptor that is not open.
    pub fn behind(&self, fd: BorrowedFd<'_>) -> Option<&Path> {
        FileId::of_file_fd(fd).ok().and_then(|id| self.0.file_with_id(id))
    }
}

/// The output rule for a SQLite database a command makes at `dest` (a copy's destination):
/// no link at the path (SQLite would follow it to a file anywhere), and none of the files the
/// new database has (the file, `-wal`, `-shm`, `-journal`) is one of `source`'s own, by
/// identity or by name: a copy never writes into its source's journal or WAL, by any spelling,
/// nor gives a WAL to a file that is its source (a source named `x-wal`, copied to `x`).
pub fn check_database_destination(dest: &Path, source: Option<&Path>) -> Result<()> {
    // Where a link at the path leads (also when it dangles), to name an own file it reaches.
    let mut at = dest.to_path_buf();
    let mut linked = false;
    for _ in 0..MAX_LINKS {
        let Ok(target) = std::fs::read_link(&at) else { break };
        linked = true;
        at = match at.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    if let Some(source) = source {
        let own = Protected::of_path(source);
        let folder = match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let folder = FileId::of_path(folder);
        for suffix in SIDE_SUFFIXES {
            let mut file = at.as_os_str().to_os_string();
            file.push(suffix);
            let file = PathBuf::from(file);
            if let Some(id) = FileId::of_path(&file) {
                own.check_id(dest, id)?;
            }
            let named =
                folder.zip(file.file_name()).and_then(|(dir, name)| own.file_named(dir, name));
            if let Some(named) = named {
                return Err(Error::OwnFile { path: dest.to_path_buf(), file: named.to_owned() });
            }
        }
    }
    if linked {
        return Err(through_a_link(dest, &at));
    }
    Ok(())
}

/// The descriptor a `/dev/stdout`, `/dev/fd/N` or `/proc/self/fd/N` path names.
fn descriptor_name(path: &Path) -> Option<u32> {
    let text = path.to_str()?;
    match text {
        "/dev/stdin" => return Some(0),
        "/dev/stdout" => return Some(1),
        "/dev/stderr" => return Some(2),
        _ => {}
    }
    let own = format!("/proc/{}/fd/", std::process::id());
    let number = ["/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/", own.as_str()]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// The folder and the file name of `current`, or a refusal of a path that names no file.
fn split(path: &Path, current: &Path) -> Result<(PathBuf, OsString)> {
    let bytes = current.as_os_str().as_bytes();
    let name = current.file_name().filter(|_| !bytes.ends_with(b"/") && !bytes.ends_with(b"/."));
    let Some(name) = name else {
        return Err(refused(path, "it does not name a file"));
    };
    let dir = match current.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_os_string()))
}

fn open_dir(path: &Path, dir: &Path) -> Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    rustix::fs::openat(CWD, dir, flags, Mode::empty()).map_err(|e| match e {
        Errno::NOENT => refused(path, &format!("the folder {} does not exist", dir.display())),
        Errno::NOTDIR => refused(path, &format!("{} is not a folder", dir.display())),
        e => io_error(path, &format!("opening the folder {}", dir.display()), e.into()),
    })
}

fn dup(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> Result<File> {
    fd.try_clone_to_owned()
        .map(File::from)
        .map_err(|e| io_error(path, "duplicating the descriptor", e))
}

fn file_is_regular(file: &File) -> bool {
    file.metadata().is_ok_and(|m| m.is_file())
}

/// Gives a file that replaces `old` its permission bits, and its owner where this process may.
fn keep_owner_and_mode(file: &File, old: &rustix::fs::Stat) -> std::io::Result<()> {
    if old.st_uid != rustix::process::geteuid().as_raw()
        || old.st_gid != rustix::process::getegid().as_raw()
    {
        // Only root (or the owner, for the group) may; otherwise the new file is this user's.
        let _ = rustix::fs::fchown(
            file,
            Some(rustix::fs::Uid::from_raw(old.st_uid)),
            Some(rustix::fs::Gid::from_raw(old.st_gid)),
        );
    }
    rustix::fs::fchmod(file, Mode::from_raw_mode(old.st_mode & 0o777))?;
    Ok(())
}

/// `.NAME.aigentflow-PID-RANDOM.partial`: hidden, unique, unpredictable, and telling who made it.
fn temp_name(hint: &OsStr, pid: u32, random: u64) -> OsString {
    let bytes = hint.as_bytes();
    let mut end = bytes.len().min(TEMP_PREFIX_BYTES);
    // Cut on a character boundary, so a UTF-8 name stays UTF-8.
    while end < bytes.len() && end > 0 && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    let mut name = b".".to_vec();
    name.extend_from_slice(&bytes[..end]);
    name.extend_from_slice(format!("{TEMP_MARK}{pid}-{random:016x}{TEMP_SUFFIX}").as_bytes());
    OsString::from_vec(name)
}

/// A temporary name without the SQLite side-file suffix it may carry.
fn temp_base(name: &[u8]) -> &[u8] {
    SQLITE_SIDE_FILES.iter().find_map(|side| name.strip_suffix(side.as_bytes())).unwrap_or(name)
}

/// The pid in a temporary name of this module (or a SQLite side file of one), if it is one.
fn temp_owner(name: &[u8]) -> Option<u32> {
    let rest = temp_base(name).strip_suffix(TEMP_SUFFIX.as_bytes())?;
    if !rest.starts_with(b".") {
        return None;
    }
    let mark = rest.windows(TEMP_MARK.len()).rposition(|w| w == TEMP_MARK.as_bytes())?;
    let tail = std::str::from_utf8(&rest[mark + TEMP_MARK.len()..]).ok()?;
    let (pid, random) = tail.split_once('-')?;
    let hex = random.len() == 16 && random.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    if !hex || !digits {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temporary files in `dir` whose process is gone; returns what it removed.
///
/// The files of one temporary name (the file and SQLite's `-journal`, `-wal`, `-shm` beside it)
/// go together or stay together: they all stay when any of them is in use ([`in_use`]) or is
/// one of `protected`'s own files (by identity, or by name for a side file to come), so a
/// database that only looks like a leftover is never touched.
fn remove_leftovers(dir: &OwnedFd, dir_path: &Path, protected: &Protected) -> Vec<Leftover> {
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else { return Vec::new() };
    let mine = std::process::id();
    // The names of writers that are gone, by the temporary name they belong to.
    let mut groups: BTreeMap<OsString, Vec<(OsString, u32)>> = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_bytes();
        let Some(pid) = temp_owner(name) else { continue };
        if pid == mine || !process_gone(pid) {
            continue;
        }
        let base = OsStr::from_bytes(temp_base(name)).to_owned();
        groups.entry(base).or_default().push((OsStr::from_bytes(name).to_owned(), pid));
    }
    if groups.is_empty() {
        return Vec::new();
    }
    let Ok(dir_id) = FileId::of_file_fd(dir.as_fd()) else { return Vec::new() };
    let open = open_files(dir_id.dev);
    let mut removed = Vec::new();
    'group: for (base, members) in groups {
        let names =
            std::iter::once(base.as_os_str()).chain(members.iter().map(|(n, _)| n.as_os_str()));
        for name in names {
            if protected.file_named(dir_id, name).is_some() {
                continue 'group;
            }
        }
        // Each file examined and locked (the locks held until all are removed) before any goes.
        let mut held = Vec::new();
        for (name, pid) in &members {
            match examine(dir, name, protected, &open) {
                Examined::Free(id, file) => held.push((name, *pid, id, file)),
                Examined::NotAFile => {}
                Examined::InUse => {
                    tracing::debug!(path = %dir_path.join(name).display(), "kept a temporary file that is in use");
                    continue 'group;
                }
            }
        }
        for (name, pid, id, _file) in held {
            // Still the file examined; unlinkat never follows a link and refuses a folder.
            let same = is_file(dir.as_fd(), name, id);
            if same && rustix::fs::unlinkat(dir, name, AtFlags::empty()).is_ok() {
                tracing::info!(path = %dir_path.join(name).display(), pid, "removed a temporary file its process left");
                removed.push(Leftover { path: dir_path.join(name), pid });
            }
        }
    }
    removed
}

/// What a leftover candidate turned out to be.
enum Examined {
    /// A regular file nobody uses, open here with this process's locks on it.
    Free(FileId, File),
    /// Not a regular file (this module makes none other): left alone.
    NotAFile,
    /// Protected, open in some process, locked, or not examinable: kept.
    InUse,
}

/// Whether the file `name` in `dir` is free to remove: a regular file, not one of `protected`'s,
/// open in no process of `open`, and with no lock that anyone holds on it (taken here to see;
/// the returned file keeps it until the caller is done).
fn examine(dir: &OwnedFd, name: &OsStr, protected: &Protected, open: &HashSet<FileId>) -> Examined {
    let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return Examined::InUse;
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Examined::NotAFile;
    }
    // Another user's file is not one this user's writer left, whatever its name says (root
    // removes no one else's file for its name alone).
    if st.st_uid != rustix::process::geteuid().as_raw() {
        return Examined::InUse;
    }
    let id = FileId::of_stat(&st);
    // A file this process has open is in `open` too, so the lock below (which belongs to the
    // process, and whose descriptor's close would drop the process's other locks on the file)
    // is only ever taken on a file no part of this process uses.
    if protected.file_with_id(id).is_some() || open.contains(&id) {
        return Examined::InUse;
    }
    let flags =
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::openat(dir, name, flags, Mode::empty()) else {
        // Cannot be looked at closely (another user's file): not ours to judge.
        return Examined::InUse;
    };
    let file = File::from(fd);
    if FileId::of_file(&file).ok() != Some(id) {
        return Examined::InUse;
    }
    // SQLite's locks are fcntl record locks (a live WAL database always holds one on its -shm);
    // other tools use flock. Either held anywhere means a writer is at work.
    let unlocked = rustix::fs::fcntl_lock(&file, FlockOperation::NonBlockingLockExclusive).is_ok()
        && rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok();
    if unlocked {
        Examined::Free(id, file)
    } else {
        Examined::InUse
    }
}

/// The files on device `dev` that some process has open: every process whose `/proc/PID/fd`
/// this one may read (all of them for root, its own user's otherwise; this process included).
fn open_files(dev: u64) -> HashSet<FileId> {
    let mut ids = HashSet::new();
    let Ok(processes) = std::fs::read_dir("/proc") else { return ids };
    for process in processes.flatten() {
        if !process.file_name().as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(meta) = std::fs::metadata(fd.path()) {
                if meta.dev() == dev {
                    ids.insert(FileId { dev: meta.dev(), ino: meta.ino() });
                }
            }
        }
    }
    ids
}

/// Whether no live process has this pid (a zombie is gone: it will never write again).
fn process_gone(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process(p) {
        Err(Errno::SRCH) => true,
        // EPERM: it exists but is someone else's.
        Ok(()) | Err(Errno::PERM) => is_zombie(pid),
        Err(_) => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// 64 unpredictable bits from the kernel, for temporary names.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty()).is_err() {
        // No getrandom: still unique per attempt (and the exclusive create is what is safe).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        buf = nanos.to_le_bytes();
    }
    u64::from_le_bytes(buf)
}

/// The refusal of an output path that is a link to a regular file or to nothing.
fn through_a_link(path: &Path, to: &Path) -> Error {
    refused(
        path,
        &format!(
            "it is a symbolic link to {} (no link is followed to a file: give the file's own path)",
            to.display()
        ),
    )
}

fn refused(path: &Path, reason: &str) -> Error {
    Error::OutputPath { path: path.to_path_buf(), reason: reason.into() }
}

fn io_error(path: &Path, action: &str, source: std::io::Error) -> Error {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Fsize).current;
    let action = match (source.raw_os_error(), limit) {
        // What a write past `ulimit -f` fails with, once SIGXFSZ does not end the process.
        (Some(code), Some(limit)) if code == Errno::FBIG.raw_os_error() => {
            format!("{action} past this process's file size limit ({limit} bytes, `ulimit -f`)")
        }
        _ => action.to_owned(),
    };
    Error::Output { path: path.to_path_buf(), action, source }
}

/// Streams a staged file's bytes (from its start) into an output.
pub(crate) fn copy_into(path: &Path, file: &mut File, out: &mut Output) -> Result<u64> {
    file.rewind().map_err(|e| io_error(path, "reading the staged copy", e))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| io_error(path, "reading the staged copy", e))?;
        if n == 0 {
            return Ok(total);
        }
        out.writer.write_all(&buf[..n]).map_err(|e| io_error(&out.path, "writing it", e))?;
        out.written += n as u64;
        total += n as u64;
    }
}

/// The one rule every file the command reads by name follows: opened without waiting (a FIFO
/// with no writer would block the open forever), and refused unless it is a regular file (a
/// FIFO, device, socket or folder is an [`std::io::ErrorKind::InvalidInput`] error saying
/// which). Data from a pipe comes on stdin (`-`), where a command takes it.
pub fn open_input(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is a {}, not a regular file", file_kind(&meta)),
        ));
    }
    Ok(file)
}

/// What a file that is not a regular one is, in words (callers have ruled a regular file out).
pub(crate) fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "folder"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    use proptest::prelude::*;

    use super::*;
    use crate::error::SqliteResult;

    /// A file database open read-only, so nothing (no background checkpoint) changes its bytes
    /// while a test compares them; the database, -wal and -shm exist, and its journal mode
    /// (WAL) never makes a -journal.
    fn database() -> (tempfile::TempDir, Database, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let db = Database::open(&path).unwrap();
        db.write(|tx| {
            tx.connection_for("a test")
                .unwrap()
                .execute_batch("CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (1)")
                .or_error()?;
            Ok::<_, Error>(())
        })
        .unwrap();
        db.close().unwrap();
        let db = Database::open_read_only(&path).unwrap();
        assert!(db.integrity_check().unwrap().is_empty());
        for suffix in ["-wal", "-shm"] {
            assert!(side(&path, suffix).exists(), "{suffix}");
        }
        (dir, db, path)
    }

    fn side(db: &Path, suffix: &str) -> PathBuf {
        let mut p = db.as_os_str().to_os_string();
        p.push(suffix);
        PathBuf::from(p)
    }

    /// Bytes of every file of the database that exists.
    fn db_bytes(db: &Path) -> Vec<Option<Vec<u8>>> {
        ["", "-wal", "-shm", "-journal"].iter().map(|s| std::fs::read(side(db, s)).ok()).collect()
    }

    fn write(path: &Path, protect: Option<&Database>, bytes: &[u8]) -> Result<u64> {
        let mut out = Output::open(path, protect)?;
        out.write_all(bytes).unwrap();
        out.commit()
    }

    /// Names in `dir` that are temporary files of this module.
    fn temps(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| temp_owner(n.as_bytes()).is_some())
            .map(|n| n.to_string_lossy().into_owned())
            .collect()
    }

    fn is_own_file(r: &Result<impl std::fmt::Debug>) -> bool {
        matches!(r, Err(Error::OwnFile { .. }))
    }

    #[test]
    fn a_new_file_is_written_whole_with_mode_0600_and_no_temp_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        assert_eq!(write(&path, None, b"a,b\n1,2\n").unwrap(), 8);
        assert_eq!(std::fs::read(&path).unwrap(), b"a,b\n1,2\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(temps(dir.path()).is_empty());
    }

    #[test]
    fn an_existing_regular_file_is_replaced_whole_and_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, b"old contents that are longer than the new").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut out = Output::open(&path, None).unwrap();
        out.write_all(b"new").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"old contents that are longer than the new",
            "untouched until the commit"
        );
        out.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(temps(dir.path()).is_empty());
    }

    /// A link planted at an output path (in a shared folder, say) would aim the output at any
    /// file the run may write: every link that leads to a file or to nothing is refused, for a
    /// new file and a replacing one alike, and nothing is written anywhere.
    #[test]
    fn a_symlink_to_a_file_or_to_nothing_is_refused_and_nothing_is_written() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let victim = b.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        let links: Vec<(&str, PathBuf)> = vec![
            ("absolute", victim.clone()),
            (
                "relative",
                PathBuf::from("../").join(b.path().file_name().unwrap()).join("victim.txt"),
            ),
            ("dangling", b.path().join("fresh.csv")),
            ("dangling into a missing folder", b.path().join("no/such/folder.csv")),
            ("hop", a.path().join("absolute")),
            ("hop to dangling", a.path().join("dangling")),
            ("to itself by another spelling", a.path().join(".").join("absolute")),
        ];
        for (name, to) in &links {
            std::os::unix::fs::symlink(to, a.path().join(name)).unwrap();
        }
        for (name, _) in &links {
            let link = a.path().join(name);
            for new in [false, true] {
                let opened =
                    if new { Output::open_new(&link, None) } else { Output::open(&link, None) };
                let e = opened.unwrap_err();
                // A link into a folder that does not exist fails on the folder first.
                let why = if name.contains("missing") { "does not exist" } else { "symbolic link" };
                assert!(
                    matches!(e, Error::OutputPath { .. }) && e.to_string().contains(why),
                    "{name}: {e}"
                );
            }
            assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "{name}");
        }
        // A link to a descriptor name that is a regular file (`/proc/self/fd/N`) is a link to
        // that file, and is refused too.
        let open = std::fs::OpenOptions::new().append(true).open(&victim).unwrap();
        let to_fd = a.path().join("to-fd");
        std::os::unix::fs::symlink(format!("/proc/self/fd/{}", open.as_raw_fd()), &to_fd).unwrap();
        let e = Output::open(&to_fd, None).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!b.path().join("fresh.csv").exists() && !b.path().join("no").exists());
        assert!(temps(a.path()).is_empty() && temps(b.path()).is_empty());
        // The file's own path is written as usual.
        write(&victim, None, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"new");
    }

    #[test]
    fn a_symlink_loop_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (x, y) = (dir.path().join("x"), dir.path().join("y"));
        std::os::unix::fs::symlink(&y, &x).unwrap();
        std::os::unix::fs::symlink(&x, &y).unwrap();
        let e = write(&x, None, b"data").unwrap_err();
        assert!(e.to_string().contains("too many levels of symbolic links"), "{e}");
    }

    #[test]
    fn the_database_and_its_side_files_are_refused_by_every_name_and_stay_unchanged() {
        let (dir, db, path) = database();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let before = db_bytes(&path);
        let mut tried = 0;
        let mut held = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = side(&path, suffix);
            let name = file.file_name().unwrap().to_owned();
            let mut names = vec![file.clone(), sub.join("..").join(&name)];
            let link = sub.join(format!("link{suffix}"));
            std::os::unix::fs::symlink(&file, &link).unwrap();
            names.push(link);
            let relative_link = sub.join(format!("rel{suffix}"));
            std::os::unix::fs::symlink(Path::new("..").join(&name), &relative_link).unwrap();
            names.push(relative_link);
            if file.exists() {
                let hard = sub.join(format!("hard{suffix}"));
                std::fs::hard_link(&file, &hard).unwrap();
                names.push(hard);
                // A descriptor name for the file.
                let open = File::open(&file).unwrap();
                names.push(PathBuf::from(format!("/proc/self/fd/{}", open.as_raw_fd())));
                names.push(PathBuf::from(format!("/dev/fd/{}", open.as_raw_fd())));
                held.push(open);
            }
            for name in names {
                for r in
                    [write(&name, Some(&db), b"CSV"), Output::open_new(&name, Some(&db)).map(|_| 0)]
                {
                    assert!(is_own_file(&r), "{} was not refused: {r:?}", name.display());
                    let message = r.unwrap_err().to_string();
                    assert!(message.contains("the database's own file"), "{message}");
                    tried += 1;
                }
            }
        }
        assert!(tried >= 40, "{tried}");
        assert_eq!(db_bytes(&path), before);
        assert!(temps(dir.path()).is_empty() && temps(&sub).is_empty());
        assert!(db.integrity_check().unwrap().is_empty());
        // In another folder the same name is an ordinary file.
        let elsewhere = tempfile::tempdir().unwrap();
        write(&elsewhere.path().join("app.db-journal"), Some(&db), b"x").unwrap();
    }

    #[test]
    fn a_descriptor_name_of_the_database_opened_for_appending_is_refused() {
        // What `aigentflow … >> app.db` gives `-`; the CLI tests run that through a shell.
        let (_dir, db, path) = database();
        let open = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let name = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), open.as_raw_fd()));
        assert!(is_own_file(&Output::open(&name, Some(&db))));
    }

    #[test]
    fn a_fifo_is_written_straight_through_and_stays_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        rustix::fs::mkfifoat(CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut out = Output::open(&fifo, None).unwrap();
        assert!(out.is_direct() && !out.is_stdout());
        out.write_all(&data).unwrap();
        assert_eq!(out.commit().unwrap(), data.len() as u64);
        assert_eq!(reader.join().unwrap(), data);
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no sibling file");
    }

    #[test]
    fn dev_null_is_written_straight_through_and_stays_a_character_device() {
        for name in ["/dev/null", "/dev/../dev/null"] {
            let mut out = Output::open(Path::new(name), None).unwrap();
            assert!(out.is_direct());
            out.write_all(b"discarded").unwrap();
            out.commit().unwrap();
            assert!(std::fs::metadata(name).unwrap().file_type().is_char_device());
        }
        // Through a link too.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("null");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        write(&link, None, b"x").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    }

    #[test]
    fn dash_and_descriptor_names_are_written_straight_through() {
        let out = Output::open(Path::new("-"), None).unwrap();
        assert!(out.is_direct() && out.is_stdout());
        out.commit().unwrap();
        for name in ["/dev/stdout", "/dev/stderr", "/proc/self/fd/2", "/dev/fd/1"] {
            let out = Output::open(Path::new(name), None).unwrap();
            assert!(out.is_direct(), "{name}");
            out.commit().unwrap();
        }
    }

    #[test]
    fn a_descriptor_name_for_a_regular_file_appends_through_it_without_a_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.txt");
        std::fs::write(&path, b"head\n").unwrap();
        let held = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let name = PathBuf::from(format!("/dev/fd/{}", held.as_raw_fd()));
        let mut out = Output::open(&name, None).unwrap();
        assert!(out.is_direct());
        out.write_all(b"tail\n").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"head\ntail\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn descriptor_names_are_recognised_exactly() {
        let pid = std::process::id();
        let own = format!("/proc/{pid}/fd/7");
        let other = format!("/proc/{}/fd/7", pid + 1);
        for (name, fd) in [
            ("/dev/stdout", Some(1)),
            ("/dev/stderr", Some(2)),
            ("/dev/fd/63", Some(63)),
            ("/proc/self/fd/4", Some(4)),
            ("/proc/thread-self/fd/5", Some(5)),
            (own.as_str(), Some(7)),
            (other.as_str(), None),
            ("/dev/fd/", None),
            ("/dev/fd/x", None),
            ("/dev/fd/1/../2", None),
            ("/dev/fd/+1", None),
            ("dev/fd/1", None),
            ("/dev/null", None),
        ] {
            assert_eq!(descriptor_name(Path::new(name)), fd, "{name}");
        }
    }

    #[test]
    fn planted_symlinks_at_temp_names_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let hint = OsStr::new("x.csv");
        // The names the first attempts will use, each planted as a link to the victim.
        for n in 1..=3u64 {
            let planted = dir.path().join(temp_name(hint, std::process::id(), n));
            std::os::unix::fs::symlink(&victim, planted).unwrap();
        }
        // The old fixed name, too.
        std::os::unix::fs::symlink(&victim, dir.path().join("x.csv.partial")).unwrap();
        let dir_fd = open_dir(dir.path(), dir.path()).unwrap();
        let mut n = 0;
        let (temp, mut file) =
            TempFile::create(dir_fd, dir.path().to_path_buf(), hint, &mut || {
                n += 1;
                n
            })
            .unwrap();
        assert_eq!(n, 4, "three taken names skipped");
        file.write_all(b"export").unwrap();
        assert!(temp.is_ours());
        drop(temp);
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // Every name taken: an error, the victim still untouched.
        let dir_fd = open_dir(dir.path(), dir.path()).unwrap();
        let e = TempFile::create(dir_fd, dir.path().to_path_buf(), hint, &mut || 1).unwrap_err();
        assert!(e.source.to_string().contains("unique names were all taken"), "{e:?}");
        assert_eq!(e.path, dir.path().join(temp_name(hint, std::process::id(), 1)), "named");
        // Through the whole rule.
        write(&dir.path().join("x.csv"), None, b"rows").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(dir.path().join("x.csv")).unwrap(), b"rows");
    }

    #[test]
    fn missing_folders_directories_and_names_of_no_file_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing").join("out.csv");
        let e = write(&missing, None, b"x").unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!dir.path().join("missing").exists());
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = write(&file.join("out.csv"), None, b"x").unwrap_err();
        assert!(e.to_string().contains("is not a folder"), "{e}");
        for name in [dir.path().to_path_buf(), dir.path().join("."), dir.path().join("new/")] {
            let e = write(&name, None, b"x").unwrap_err();
            assert!(matches!(e, Error::OutputPath { .. }), "{}: {e}", name.display());
        }
        let e = write(dir.path(), None, b"x").unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_output_dropped_without_commit_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, b"old").unwrap();
        let mut out = Output::open(&path, None).unwrap();
        out.write_all(&[b'x'; 100_000]).unwrap();
        assert_eq!(temps(dir.path()).len(), 1);
        drop(out);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(temps(dir.path()).is_empty());
        let fresh = dir.path().join("fresh.csv");
        drop(Output::open(&fresh, None).unwrap());
        assert!(!fresh.exists());
    }

    #[test]
    fn of_two_writers_to_one_path_one_wins_whole_and_the_other_fails() {
        let dir = tempfile::tempdir().unwrap();
        for existed in [false, true] {
            let path = dir.path().join(format!("out-{existed}.csv"));
            if existed {
                std::fs::write(&path, b"old").unwrap();
            }
            let mut a = Output::open(&path, None).unwrap();
            let mut b = Output::open(&path, None).unwrap();
            a.write_all(b"AAAA").unwrap();
            b.write_all(b"BBBBBBBB").unwrap();
            a.commit().unwrap();
            let e = b.commit().unwrap_err();
            assert!(matches!(e, Error::OutputChanged { .. }), "{e}");
            assert!(e.to_string().contains("changed by another writer"), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), b"AAAA");
            assert!(temps(dir.path()).is_empty());
        }
        // Backups never replace: the second of two to one new path fails.
        let (_d, db, _) = database();
        let dest = dir.path().join("copy.db");
        let first = Output::open_new(&dest, Some(&db)).unwrap();
        let second = Output::open_new(&dest, Some(&db)).unwrap();
        db.backup_into(first).unwrap();
        assert!(matches!(db.backup_into(second), Err(Error::OutputChanged { .. })));
        assert!(Database::open_read_only(&dest).unwrap().integrity_check().unwrap().is_empty());
    }

    #[test]
    fn a_temp_file_swapped_under_the_writer_is_not_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let mut out = Output::open(&path, None).unwrap();
        out.write_all(b"mine").unwrap();
        let temp = out.staging_path().unwrap();
        std::fs::remove_file(&temp).unwrap();
        std::fs::write(&temp, b"someone else's").unwrap();
        assert!(matches!(out.commit(), Err(Error::OutputChanged { .. })));
        assert!(!path.exists());
        assert_eq!(std::fs::read(&temp).unwrap(), b"someone else's", "not ours to remove");
    }

    /// A pid no process has: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn temp_files_of_dead_processes_are_removed_and_reported_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dead_pid();
        let stale = temp_name(OsStr::new("x.csv"), dead, 0xabc);
        let mut journal = stale.clone();
        journal.push("-journal");
        let other = temp_name(OsStr::new("other.db"), dead, 7);
        let live_mine = temp_name(OsStr::new("x.csv"), std::process::id(), 1);
        let live_init = temp_name(OsStr::new("x.csv"), 1, 2);
        for name in [&stale, &journal, &other, &live_mine, &live_init] {
            std::fs::write(dir.path().join(name), b"partial").unwrap();
        }
        // Look-alikes that are not this module's names are never touched.
        for name in [format!(".x.csv.aigentflow-{dead}-zz.partial"), "x.csv.partial".into()] {
            std::fs::write(dir.path().join(name), b"keep").unwrap();
        }
        let out = Output::open(&dir.path().join("x.csv"), None).unwrap();
        let mut removed: Vec<_> = out.leftovers().iter().map(|l| (l.path.clone(), l.pid)).collect();
        removed.sort();
        let mut expected: Vec<_> =
            [&stale, &journal, &other].iter().map(|n| (dir.path().join(n), dead)).collect();
        expected.sort();
        assert_eq!(removed, expected);
        out.commit().unwrap();
        for name in [&stale, &journal, &other] {
            assert!(!dir.path().join(name).exists());
        }
        for name in [&live_mine, &live_init] {
            assert!(dir.path().join(name).exists());
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
    }

    /// A file named like a leftover of a gone writer but owned by another user is not this
    /// user's writer's: it is kept and not reported, the same name of this user's is removed.
    /// (As root, the file is given to `nobody`; another user cannot make one here otherwise.)
    #[test]
    fn another_users_file_named_like_a_leftover_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dead_pid();
        let theirs = dir.path().join(temp_name(OsStr::new("x.csv"), dead, 0xdef));
        let mine = dir.path().join(temp_name(OsStr::new("x.csv"), dead, 0xabc));
        std::fs::write(&theirs, b"theirs").unwrap();
        std::fs::write(&mine, b"mine").unwrap();
        let root = rustix::process::geteuid().is_root();
        if root {
            let nobody = rustix::process::Uid::from_raw(65534);
            rustix::fs::chown(&theirs, Some(nobody), None).unwrap();
        }
        let out = Output::open(&dir.path().join("x.csv"), None).unwrap();
        let removed: Vec<_> = out.leftovers().iter().map(|l| l.path.clone()).collect();
        assert!(removed.contains(&mine) && !mine.exists(), "{removed:?}");
        assert_eq!(theirs.exists(), root, "{removed:?}");
        assert_eq!(removed.contains(&theirs), !root);
        out.commit().unwrap();
    }

    /// A database left as a crash leaves it (the file, -wal and -shm, no process holding them),
    /// at `dir/name`.
    fn crashed_database(dir: &Path, name: &OsStr) -> PathBuf {
        let path = dir.join(name);
        let db = Database::open(&path).unwrap();
        db.write(|tx| {
            tx.connection_for("a test")
                .unwrap()
                .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
                .or_error()?;
            Ok::<_, Error>(())
        })
        .unwrap();
        let sides: Vec<(PathBuf, Vec<u8>)> = ["-wal", "-shm"]
            .iter()
            .map(|s| (side(&path, s), std::fs::read(side(&path, s)).unwrap()))
            .collect();
        db.close().unwrap();
        for (file, bytes) in sides {
            std::fs::write(file, bytes).unwrap();
        }
        path
    }

    /// Every file in `dir`, by name.
    fn names_in(dir: &Path) -> Vec<OsString> {
        let mut names: Vec<_> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    }

    fn cleanup(dir: &Path, protected: &Protected) -> Vec<Leftover> {
        let fd = open_dir(dir, dir).unwrap();
        remove_leftovers(&fd, dir, protected)
    }

    /// A database whose name looks like a leftover of a gone writer, with its side files (as a
    /// crash leaves them, and one made after the protection was taken, known by name only),
    /// is never removed while it is the database in use, nor while any process has one of its
    /// files open or locked; only once nothing uses it is it a leftover like any other.
    #[test]
    fn a_database_named_like_a_leftover_is_removed_only_when_nothing_uses_it() {
        let dead = dead_pid();
        for hint in ["orders", "x.csv", "app.db"] {
            let dir = tempfile::tempdir().unwrap();
            let name = temp_name(OsStr::new(hint), dead, 0x0123_4567_89ab_cdef);
            let path = crashed_database(dir.path(), &name);
            let protected = Protected::of_path(&path);
            // A side file that appears after the protection was taken: protected by its name.
            std::fs::write(side(&path, "-journal"), b"").unwrap();
            let all = names_in(dir.path());
            assert_eq!(all.len(), 4, "{all:?}");
            assert_eq!(cleanup(dir.path(), &protected), [], "{hint}: protected");
            assert_eq!(names_in(dir.path()), all);
            std::fs::remove_file(side(&path, "-journal")).unwrap();
            let all = names_in(dir.path());
            // The database open in this process, through every way an output is opened.
            {
                let db = Database::open_read_only(&path).unwrap();
                let out = Output::open(&dir.path().join("out.csv"), Some(&db)).unwrap();
                assert_eq!(out.leftovers(), [], "{hint}: export");
                let out = Output::open_new(&dir.path().join("copy.db"), Some(&db)).unwrap();
                assert_eq!(out.leftovers(), [], "{hint}: backup");
                let staged = TempFile::stage(&path, Some(&db), Path::new("-")).unwrap();
                assert_eq!(staged.2, [], "{hint}: staged backup");
                drop(staged);
                // Not protected, but open here: in use all the same.
                assert_eq!(Output::open(&dir.path().join("o.csv"), None).unwrap().leftovers(), []);
                assert!(db.integrity_check().unwrap().is_empty());
            }
            assert_eq!(names_in(dir.path()), all);
            // Open in another process (any one of its files).
            for held in [path.clone(), side(&path, "-wal"), side(&path, "-shm")] {
                let mut child = std::process::Command::new("sleep")
                    .arg("600")
                    .stdin(File::open(&held).unwrap())
                    .spawn()
                    .unwrap();
                let kept = cleanup(dir.path(), &Protected::default());
                child.kill().unwrap();
                child.wait().unwrap();
                assert_eq!(kept, [], "{hint}: {} is open in a process", held.display());
                assert_eq!(names_in(dir.path()), all);
            }
            // Nothing uses it any more: a leftover, removed whole and reported.
            let mut removed: Vec<_> =
                cleanup(dir.path(), &Protected::default()).into_iter().map(|l| l.path).collect();
            removed.sort();
            let expected: Vec<_> = all.iter().map(|n| dir.path().join(n)).collect();
            assert_eq!(removed, expected, "{hint}");
            assert_eq!(names_in(dir.path()), Vec::<OsString>::new());
        }
    }

    /// A lock held by another process (here `flock`, as other tools take one) makes a file in
    /// use even where that process's open files cannot be seen.
    #[test]
    fn a_locked_leftover_is_in_use_even_where_its_holder_cannot_be_seen() {
        let dir = tempfile::tempdir().unwrap();
        let name = temp_name(OsStr::new("x.csv"), dead_pid(), 5);
        let path = dir.path().join(&name);
        std::fs::write(&path, b"partial").unwrap();
        let fd = open_dir(dir.path(), dir.path()).unwrap();
        let nobody_seen = HashSet::new();
        assert!(matches!(
            examine(&fd, &name, &Protected::default(), &nobody_seen),
            Examined::Free(..)
        ));
        let mut child = std::process::Command::new("flock")
            .args(["--exclusive", "--nonblock", "--no-fork"])
            .arg(&path)
            .args(["sleep", "600"])
            .spawn()
            .unwrap();
        // Wait until the lock is held (flock takes it before it runs sleep).
        let held = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            let probe = File::open(&path).unwrap();
            rustix::fs::flock(&probe, FlockOperation::NonBlockingLockShared).is_err()
        });
        assert!(held, "flock never took the lock");
        let seen =
            matches!(examine(&fd, &name, &Protected::default(), &nobody_seen), Examined::InUse);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(seen, "a locked file was taken for a free one");
        assert!(matches!(
            examine(&fd, &name, &Protected::default(), &nobody_seen),
            Examined::Free(..)
        ));
    }

    /// A copy is staged in the first folder that takes a file; leftovers of every folder tried
    /// are reported; when none takes one, the error names the destination and each file that
    /// could not be created.
    #[test]
    fn a_staged_copy_goes_to_the_first_folder_that_takes_it_and_failures_name_each_file() {
        let root = tempfile::tempdir().unwrap();
        let (good, other) = (root.path().join("good"), root.path().join("other"));
        std::fs::create_dir(&good).unwrap();
        std::fs::create_dir(&other).unwrap();
        let not_a_folder = root.path().join("plain");
        std::fs::write(&not_a_folder, b"x").unwrap();
        let missing = root.path().join("missing");
        let dead = dead_pid();
        let hint = OsStr::new("app.db");
        let dest = Path::new("-");
        let unusable = [not_a_folder.clone(), missing.clone()];
        for first in &unusable {
            let stale = good.join(temp_name(hint, dead, 9));
            std::fs::write(&stale, b"a killed backup's copy").unwrap();
            let folders = [first.clone(), good.clone(), other.clone()];
            let (temp, _file, removed) =
                TempFile::stage_in(&folders, hint, &Protected::default(), dest).unwrap();
            assert_eq!(temp.dir_path, good);
            assert_eq!(removed, [Leftover { path: stale.clone(), pid: dead }]);
            assert_eq!(temps(&good).len(), 1);
            drop(temp);
            assert!(temps(&good).is_empty() && temps(&other).is_empty());
        }
        let e = TempFile::stage_in(&unusable, hint, &Protected::default(), dest).unwrap_err();
        assert!(matches!(&e, Error::Backup { path, .. } if path == dest), "{e:?}");
        let text = e.to_string();
        for folder in &unusable {
            assert!(text.contains(&folder.display().to_string()), "{text}");
        }
        assert!(text.contains("set TMPDIR to a writable folder"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }

    /// Dropping a temporary file SQLite wrote (a failed backup's copy) also removes the
    /// `-journal`, `-wal` and `-shm` SQLite left beside it, committed or not.
    #[test]
    fn a_dropped_or_committed_temp_file_takes_sqlite_side_files_with_it() {
        for commit in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let out = Output::open_new(&dir.path().join("copy.db"), None).unwrap();
            let temp = out.staging_path().unwrap();
            for suffix in SQLITE_SIDE_FILES {
                std::fs::write(side(&temp, suffix), b"sqlite's").unwrap();
            }
            assert_eq!(temps(dir.path()).len(), 4);
            if commit {
                out.commit().unwrap();
                assert_eq!(names_in(dir.path()), ["copy.db"]);
            } else {
                drop(out);
                assert_eq!(names_in(dir.path()), Vec::<OsString>::new());
            }
        }
    }

    /// A descriptor of any of the database's files, by any name (a hard link, appending), is
    /// told as that file; a descriptor of any other file is not.
    #[test]
    fn own_files_tell_a_descriptor_of_the_database_by_identity() {
        let (dir, _db, path) = database();
        let own = OwnFiles::of(&path);
        let hard = dir.path().join("hard");
        std::fs::hard_link(&path, &hard).unwrap();
        let cases = [
            (File::open(&path).unwrap(), Some(path.clone())),
            (File::open(&hard).unwrap(), Some(path.clone())),
            (
                std::fs::OpenOptions::new().append(true).open(side(&path, "-wal")).unwrap(),
                Some(side(&path, "-wal")),
            ),
            (File::open(side(&path, "-shm")).unwrap(), Some(side(&path, "-shm"))),
            (File::create(dir.path().join("other")).unwrap(), None),
            (File::open("/dev/null").unwrap(), None),
        ];
        for (file, expected) in cases {
            assert_eq!(own.behind(file.as_fd()).map(Path::to_path_buf), expected);
        }
        // Through a link to the folder the database is in, and a relative path.
        let elsewhere = tempfile::tempdir().unwrap();
        let link = elsewhere.path().join("to-db");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let file = File::open(&path).unwrap();
        assert!(OwnFiles::of(&link).behind(file.as_fd()).is_some());
        assert!(OwnFiles::of(&elsewhere.path().join("none.db")).behind(file.as_fd()).is_none());
    }

    #[test]
    fn a_backup_follows_the_rule_for_files_pipes_and_the_database_own_files() {
        let (dir, db, path) = database();
        let before = db_bytes(&path);
        // The database's own files, by name and by link.
        for name in [path.clone(), side(&path, "-wal"), side(&path, "-journal")] {
            assert!(is_own_file(&db.backup_to(&name)), "{}", name.display());
            let link = dir.path().join("to-own");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&name, &link).unwrap();
            assert!(is_own_file(&db.backup_to(&link)), "link to {}", name.display());
        }
        assert_eq!(db_bytes(&path), before);
        // A new file: complete, checked, 0600; an existing one is refused.
        let copy = dir.path().join("copy.db");
        assert!(db.backup_to(&copy).unwrap() > 0);
        assert_eq!(std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(Database::open_read_only(&copy).unwrap().integrity_check().unwrap().is_empty());
        let e = db.backup_to(&copy).unwrap_err();
        assert!(matches!(e, Error::OutputExists { .. }), "{e}");
        // A FIFO: the checked copy's bytes straight through, no file left beside the database.
        let fifo = dir.path().join("pipe");
        rustix::fs::mkfifoat(CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        let report = db.backup_into(Output::open_new(&fifo, Some(&db)).unwrap()).unwrap();
        let bytes = reader.join().unwrap();
        assert_eq!(report.bytes, bytes.len() as u64);
        let piped = dir.path().join("piped.db");
        std::fs::write(&piped, &bytes).unwrap();
        assert!(Database::open_read_only(&piped).unwrap().integrity_check().unwrap().is_empty());
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert!(temps(dir.path()).is_empty());
    }

    /// How a generated target reaches its file.
    #[derive(Debug, Clone, Copy)]
    enum Via {
        Name,
        DotDot,
        Link,
        RelativeLink,
        HardLink,
    }

    /// A generated output target.
    #[derive(Debug, Clone)]
    enum Target {
        New(String),
        Regular(String),
        LinkToRegular(String, u8),
        DanglingLink(String),
        Directory(String),
        DevNull,
        Own(&'static str, Via),
    }

    fn target() -> impl Strategy<Value = Target> {
        // Names from one byte to near the 255-byte limit, some not UTF-8-ish in spirit (spaces,
        // dots, dashes), never colliding with the database's names.
        let name = prop_oneof![
            "[a-zA-Z0-9 ._-]{1,30}".prop_map(|s| format!("o{s}")),
            "[a-z]{200,250}".prop_map(|s| format!("o{s}")),
            "[é日本 a-z]{1,40}".prop_map(|s| format!("o{s}")),
        ];
        let via = prop_oneof![
            Just(Via::Name),
            Just(Via::DotDot),
            Just(Via::Link),
            Just(Via::RelativeLink),
            Just(Via::HardLink),
        ];
        prop_oneof![
            name.clone().prop_map(Target::New),
            name.clone().prop_map(Target::Regular),
            (name.clone(), 1..4u8).prop_map(|(n, hops)| Target::LinkToRegular(n, hops)),
            name.clone().prop_map(Target::DanglingLink),
            name.prop_map(Target::Directory),
            Just(Target::DevNull),
            (prop::sample::select(vec!["", "-wal", "-shm", "-journal"]), via)
                .prop_map(|(s, v)| Target::Own(s, v)),
        ]
    }

    /// Every generated target, written or abandoned, with replacing allowed or not: the database
    /// is never touched, no temporary file stays, links stay links (and a link to a file or to
    /// nothing is refused), devices stay devices, and a file holds exactly its old bytes or
    /// exactly the new ones.
    #[test]
    fn every_target_kind_follows_the_one_output_rule() {
        let (root, db, db_path) = database();
        let before = db_bytes(&db_path);
        let case = std::sync::atomic::AtomicU32::new(0);
        let config = proptest::test_runner::Config { cases: 192, ..Default::default() };
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let strategy =
            (target(), any::<bool>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..2048));
        runner
            .run(&strategy, |(target, commit, replace, data)| {
                let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir = root.path().join(format!("case{case}"));
                let other = root.path().join(format!("case{case}-target"));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::create_dir_all(&other).unwrap();
                // (path to open, the file that should change, its old bytes)
                let (path, file, old): (PathBuf, Option<PathBuf>, Option<Vec<u8>>) = match &target {
                    Target::New(n) => (dir.join(n), Some(dir.join(n)), None),
                    Target::Regular(n) => {
                        std::fs::write(dir.join(n), b"old").unwrap();
                        (dir.join(n), Some(dir.join(n)), Some(b"old".to_vec()))
                    }
                    Target::LinkToRegular(n, hops) => {
                        let real = other.join(n);
                        std::fs::write(&real, b"old").unwrap();
                        let mut to = real.clone();
                        for hop in 0..*hops {
                            let link = dir.join(format!("l{hop}"));
                            std::os::unix::fs::symlink(&to, &link).unwrap();
                            to = link;
                        }
                        (to, Some(real), Some(b"old".to_vec()))
                    }
                    Target::DanglingLink(n) => {
                        let link = dir.join("link");
                        std::os::unix::fs::symlink(other.join(n), &link).unwrap();
                        (link, Some(other.join(n)), None)
                    }
                    Target::Directory(n) => {
                        std::fs::create_dir(dir.join(n)).unwrap();
                        (dir.join(n), None, None)
                    }
                    Target::DevNull => (PathBuf::from("/dev/null"), None, None),
                    Target::Own(suffix, via) => {
                        let own = side(&db_path, suffix);
                        let name = own.file_name().unwrap().to_owned();
                        let path = match via {
                            Via::Name => own.clone(),
                            Via::DotDot => dir.join("..").join(&name),
                            Via::Link => {
                                std::os::unix::fs::symlink(&own, dir.join("own")).unwrap();
                                dir.join("own")
                            }
                            Via::RelativeLink => {
                                std::os::unix::fs::symlink(
                                    Path::new("..").join(&name),
                                    dir.join("own"),
                                )
                                .unwrap();
                                dir.join("own")
                            }
                            Via::HardLink if own.exists() => {
                                std::fs::hard_link(&own, dir.join("own")).unwrap();
                                dir.join("own")
                            }
                            Via::HardLink => own.clone(),
                        };
                        (path, None, None)
                    }
                };
                let opened = if replace {
                    Output::open(&path, Some(&db))
                } else {
                    Output::open_new(&path, Some(&db))
                };
                let result = opened.and_then(|mut out| {
                    out.write_all(&data).unwrap();
                    if commit {
                        out.commit().map(Some)
                    } else {
                        Ok(None)
                    }
                });
                match &target {
                    Target::Own(..) => {
                        prop_assert!(matches!(result, Err(Error::OwnFile { .. })), "{result:?}")
                    }
                    Target::Directory(_) => {
                        prop_assert!(matches!(result, Err(Error::OutputPath { .. })), "{result:?}")
                    }
                    Target::DevNull => {
                        prop_assert!(result.is_ok(), "{result:?}");
                        prop_assert!(std::fs::metadata("/dev/null")
                            .unwrap()
                            .file_type()
                            .is_char_device());
                    }
                    Target::LinkToRegular(..) | Target::DanglingLink(_) => {
                        prop_assert!(matches!(result, Err(Error::OutputPath { .. })), "{result:?}")
                    }
                    Target::Regular(_) if !replace => {
                        prop_assert!(
                            matches!(result, Err(Error::OutputExists { .. })),
                            "{result:?}"
                        );
                    }
                    _ => prop_assert!(result.is_ok(), "{result:?}"),
                }
                if let Some(file) = file {
                    let now = std::fs::read(&file).ok();
                    let expected = match (&result, commit) {
                        (Ok(_), true) => Some(data.clone()),
                        _ => old,
                    };
                    prop_assert_eq!(now, expected, "{}", file.display());
                }
                if matches!(target, Target::LinkToRegular(..) | Target::DanglingLink(_)) {
                    prop_assert!(std::fs::symlink_metadata(&path)
                        .unwrap()
                        .file_type()
                        .is_symlink());
                }
                prop_assert!(
                    temps(&dir).is_empty()
                        && temps(&other).is_empty()
                        && temps(root.path()).is_empty()
                );
                prop_assert_eq!(db_bytes(&db_path), before.clone());
                Ok(())
            })
            .unwrap();
        assert!(db.integrity_check().unwrap().is_empty());
    }

    proptest! {
        /// Temporary names carry their pid back, stay within the 255-byte name limit, start with a
        /// dot, and nothing else is taken for one.
        #[test]
        fn temp_names_round_trip_and_stay_short(
            hint in prop::collection::vec(any::<u8>().prop_filter("no slash or nul", |b| *b != b'/' && *b != 0), 1..255),
            pid in 1u32..=4_194_304,
            random in any::<u64>(),
            other in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            let name = temp_name(OsStr::from_bytes(&hint), pid, random);
            prop_assert!(name.len() <= 255, "{}", name.len());
            prop_assert!(name.as_bytes().starts_with(b"."));
            prop_assert_eq!(temp_owner(name.as_bytes()), Some(pid));
            let mut journal = name.clone();
            journal.push("-journal");
            prop_assert_eq!(temp_owner(journal.as_bytes()), Some(pid));
            if !other.ends_with(TEMP_SUFFIX.as_bytes()) {
                prop_assert_eq!(temp_owner(&other), None);
            }
        }
    }
}
