//! All file access of the store goes through [`Backend`]: a flat namespace of named files with
//! positional reads and writes, `fdatasync`, and the directory operations that need their own
//! sync (create, rename, remove).
//!
//! Three implementations: [`FileBackend`] (a directory on disk), [`MemoryBackend`] (tests,
//! embedders without a disk) and [`CrashBackend`] (tests: it keeps a "durable image" that only
//! completed syncs advance, so a simulated crash loses exactly what a power cut could, and it
//! can fail chosen writes and syncs). Every backend passes [`conformance`].

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// One open file of a [`Backend`].
pub trait BackendFile: Send + Sync + std::fmt::Debug {
    /// Reads up to `buf.len()` octets at `offset`; fewer only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (with zeros) the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and length) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
}

/// A flat namespace of files. Names are relative paths of plain characters (`a-z A-Z 0-9 . _ -`
/// and `/` between parts).
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Opens a file, creating it empty if it does not exist.
    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>>;
    /// Whether a file exists.
    fn exists(&self, name: &str) -> io::Result<bool>;
    /// Every file's name, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Removes a file (no error if it does not exist).
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames a file, replacing `to` atomically if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations, renames and removals durable (syncs the directories).
    fn sync_dir(&self) -> io::Result<()>;
}

fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file name {name:?}"),
        ))
    }
}

// ---- files on disk --------------------------------------------------------------------------

/// Files in a directory on disk: positional I/O and `fdatasync`.
#[derive(Debug, Clone)]
pub struct FileBackend {
    root: PathBuf,
}

impl FileBackend {
    /// Uses (and creates) the directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.root.join(name))
    }
}

#[derive(Debug)]
struct DiskFile(std::fs::File);

impl BackendFile for DiskFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            let Some(rest) = buf.get_mut(done..) else {
                break;
            };
            match self.0.read_at(rest, offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.0.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Backend for FileBackend {
    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        let path = self.path(name)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(DiskFile(f)))
    }

    fn exists(&self, name: &str) -> io::Result<bool> {
        Ok(self.path(name)?.is_file())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    dirs.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let name = rel.to_string_lossy().replace('\\', "/");
                    if check_name(&name).is_ok() {
                        out.push(name);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(name)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let to = self.path(to)?;
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(self.path(from)?, to)
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            std::fs::File::open(&dir)?.sync_all()?;
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    dirs.push(entry.path());
                }
            }
        }
        Ok(())
    }
}

// ---- memory ---------------------------------------------------------------------------------

/// One file's octets, shared by its handles.
type Data = Arc<Mutex<Vec<u8>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Files in memory. Syncs do nothing: nothing survives the process.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    files: Arc<Mutex<BTreeMap<String, Data>>>,
}

impl MemoryBackend {
    /// An empty namespace.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_files(files: BTreeMap<String, Vec<u8>>) -> Self {
        Self {
            files: Arc::new(Mutex::new(
                files
                    .into_iter()
                    .map(|(k, v)| (k, Arc::new(Mutex::new(v))))
                    .collect(),
            )),
        }
    }
}

#[derive(Debug)]
struct MemFile(Data);

fn read_from(data: &[u8], buf: &mut [u8], offset: u64) -> usize {
    let Ok(start) = usize::try_from(offset) else {
        return 0;
    };
    let Some(src) = data.get(start..) else {
        return 0;
    };
    let n = src.len().min(buf.len());
    if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
        dst.copy_from_slice(src);
    }
    n
}

fn write_into(data: &mut Vec<u8>, buf: &[u8], offset: u64) -> io::Result<()> {
    let start = usize::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    let end = start + buf.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    if let Some(dst) = data.get_mut(start..end) {
        dst.copy_from_slice(buf);
    }
    Ok(())
}

impl BackendFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        Ok(read_from(&lock(&self.0), buf, offset))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        write_into(&mut lock(&self.0), buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.0).len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        lock(&self.0).resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}

impl Backend for MemoryBackend {
    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        check_name(name)?;
        let data = lock(&self.files)
            .entry(name.to_string())
            .or_default()
            .clone();
        Ok(Arc::new(MemFile(data)))
    }

    fn exists(&self, name: &str) -> io::Result<bool> {
        check_name(name)?;
        Ok(lock(&self.files).contains_key(name))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.files).keys().cloned().collect())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        lock(&self.files).remove(name);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        let mut files = lock(&self.files);
        let data = files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {from:?}")))?;
        files.insert(to.to_string(), data);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }
}

// ---- crash simulation -------------------------------------------------------------------------

/// An operation the crash backend can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next `write_at` fails with an I/O error (nothing written).
    Write,
    /// The next `sync_data` fails with an I/O error (nothing made durable).
    Sync,
    /// The next `sync_dir` fails with an I/O error.
    SyncDir,
}

#[derive(Debug, Default)]
struct CrashFile {
    /// What a reader sees now.
    current: Vec<u8>,
    /// What survives a crash: advanced by `sync_data` only.
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct CrashState {
    /// Files by name as the process sees them.
    names: BTreeMap<String, Arc<Mutex<CrashFile>>>,
    /// Files by name as a crash would leave them: advanced by `sync_dir` only.
    durable_names: BTreeMap<String, Arc<Mutex<CrashFile>>>,
    faults: Vec<Fault>,
    writes: u64,
    syncs: u64,
}

/// A backend for crash tests: like [`MemoryBackend`], plus a durable image that only
/// completed syncs advance (`sync_data` for a file's data, `sync_dir` for names), and faults
/// injected on request. [`CrashBackend::crash`] gives what a power cut would leave.
#[derive(Debug, Default, Clone)]
pub struct CrashBackend {
    state: Arc<Mutex<CrashState>>,
}

#[derive(Debug)]
struct CrashHandle {
    file: Arc<Mutex<CrashFile>>,
    state: Arc<Mutex<CrashState>>,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

impl CrashBackend {
    /// An empty namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fails the next operation of this kind (faults queue up in order).
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).faults.push(fault);
    }

    /// Writes and syncs done so far (to aim faults and crashes at chosen points).
    pub fn counts(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.writes, s.syncs)
    }

    /// What a power cut now would leave: the names made durable by `sync_dir`, each with the
    /// data made durable by `sync_data`. `torn` octets of the first unsynced write past the
    /// durable end of each file survive too (a torn write), if there are that many.
    pub fn crash(&self, torn: usize) -> MemoryBackend {
        MemoryBackend::with_files(self.image(torn))
    }

    /// A crash backend whose files are those a power cut now would leave (as [`Self::crash`]),
    /// all durable: the machine restarted, and can crash again.
    pub fn restarted(&self, torn: usize) -> CrashBackend {
        let after = Self::new();
        {
            let mut s = lock(&after.state);
            for (name, data) in self.image(torn) {
                let file = Arc::new(Mutex::new(CrashFile {
                    current: data.clone(),
                    durable: data,
                }));
                s.names.insert(name.clone(), file.clone());
                s.durable_names.insert(name, file);
            }
        }
        after
    }

    fn image(&self, torn: usize) -> BTreeMap<String, Vec<u8>> {
        let s = lock(&self.state);
        s.durable_names
            .iter()
            .map(|(name, f)| {
                let f = lock(f);
                let mut data = f.durable.clone();
                if torn > 0 && f.current.len() > data.len() {
                    let start = data.len();
                    let end = (start + torn).min(f.current.len());
                    if let Some(extra) = f.current.get(start..end) {
                        data.extend_from_slice(extra);
                    }
                }
                (name.clone(), data)
            })
            .collect()
    }

    fn take_fault(&self, fault: Fault) -> bool {
        let mut s = lock(&self.state);
        if s.faults.first() == Some(&fault) {
            s.faults.remove(0);
            true
        } else {
            false
        }
    }
}

impl BackendFile for CrashHandle {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        Ok(read_from(&lock(&self.file).current, buf, offset))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        {
            let mut s = lock(&self.state);
            if s.faults.first() == Some(&Fault::Write) {
                s.faults.remove(0);
                return Err(injected("write"));
            }
            s.writes += 1;
        }
        write_into(&mut lock(&self.file).current, buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.file).current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        lock(&self.file).current.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        {
            let mut s = lock(&self.state);
            if s.faults.first() == Some(&Fault::Sync) {
                s.faults.remove(0);
                return Err(injected("fdatasync"));
            }
            s.syncs += 1;
        }
        let mut f = lock(&self.file);
        f.durable = f.current.clone();
        Ok(())
    }
}

impl Backend for CrashBackend {
    fn open(&self, name: &str) -> io::Result<Arc<dyn BackendFile>> {
        check_name(name)?;
        let file = lock(&self.state)
            .names
            .entry(name.to_string())
            .or_default()
            .clone();
        Ok(Arc::new(CrashHandle {
            file,
            state: self.state.clone(),
        }))
    }

    fn exists(&self, name: &str) -> io::Result<bool> {
        check_name(name)?;
        Ok(lock(&self.state).names.contains_key(name))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(lock(&self.state).names.keys().cloned().collect())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        lock(&self.state).names.remove(name);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        let mut s = lock(&self.state);
        let f = s
            .names
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {from:?}")))?;
        s.names.insert(to.to_string(), f);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        if self.take_fault(Fault::SyncDir) {
            return Err(injected("directory sync"));
        }
        let mut s = lock(&self.state);
        s.durable_names = s.names.clone();
        Ok(())
    }
}

// ---- the conformance suite ------------------------------------------------------------------

/// The behaviour every [`Backend`] must have. `make` gives a fresh, empty backend each call.
/// Panics (with the rule broken) on the first failure: call it from a test.
pub fn conformance(make: &dyn Fn() -> Arc<dyn Backend>) {
    let io = |r: io::Result<()>, what: &str| r.unwrap_or_else(|e| panic!("{what}: {e}"));

    // Files are created empty on open, and listed, sorted.
    let b = make();
    assert!(
        b.list().map(|l| l.is_empty()).unwrap_or(false),
        "a fresh backend is empty"
    );
    let f = b
        .open("seg/00000001.log")
        .unwrap_or_else(|e| panic!("open: {e}"));
    assert_eq!(f.len().ok(), Some(0), "a new file is empty");
    let _ = b.open("a.meta").unwrap_or_else(|e| panic!("open: {e}"));
    assert_eq!(
        b.list().ok(),
        Some(vec!["a.meta".to_string(), "seg/00000001.log".to_string()]),
        "list is sorted and includes files in sub-folders"
    );
    assert_eq!(b.exists("a.meta").ok(), Some(true));
    assert_eq!(b.exists("nope").ok(), Some(false));

    // Positional writes and reads; a write past the end extends with zeros.
    io(f.write_at(b"hello", 0), "write");
    io(f.write_at(b"world", 10), "write past the end");
    assert_eq!(f.len().ok(), Some(15));
    let mut buf = [0xffu8; 15];
    assert_eq!(f.read_at(&mut buf, 0).ok(), Some(15));
    assert_eq!(&buf, b"hello\0\0\0\0\0world", "the gap reads as zeros");
    io(f.write_at(b"HE", 0), "overwrite");
    let mut two = [0u8; 5];
    assert_eq!(f.read_at(&mut two, 0).ok(), Some(5));
    assert_eq!(&two, b"HEllo");
    // Reads stop at the end; a read past the end reads nothing.
    let mut tail = [0u8; 10];
    assert_eq!(f.read_at(&mut tail, 12).ok(), Some(3));
    assert_eq!(tail.get(..3), Some(&b"rld"[..]));
    assert_eq!(f.read_at(&mut tail, 100).ok(), Some(0));

    // Another handle on the same name sees the same data.
    let g = b
        .open("seg/00000001.log")
        .unwrap_or_else(|e| panic!("reopen: {e}"));
    assert_eq!(g.len().ok(), Some(15), "handles share a file");

    // Truncation and extension.
    io(f.set_len(5), "truncate");
    assert_eq!(g.len().ok(), Some(5));
    io(f.set_len(8), "extend");
    let mut ext = [0xffu8; 8];
    assert_eq!(f.read_at(&mut ext, 0).ok(), Some(8));
    assert_eq!(&ext, b"HEllo\0\0\0");
    io(f.sync_data(), "sync");

    // Rename replaces the target; remove is idempotent; names are checked.
    io(b.rename("a.meta", "b.meta"), "rename");
    assert_eq!(b.exists("a.meta").ok(), Some(false));
    assert_eq!(b.exists("b.meta").ok(), Some(true));
    let t = b.open("c.meta").unwrap_or_else(|e| panic!("open: {e}"));
    io(t.write_at(b"old", 0), "write");
    let n = b.open("n.meta").unwrap_or_else(|e| panic!("open: {e}"));
    io(n.write_at(b"new!", 0), "write");
    io(b.rename("n.meta", "c.meta"), "rename over an existing file");
    let c = b.open("c.meta").unwrap_or_else(|e| panic!("open: {e}"));
    let mut nb = [0u8; 4];
    assert_eq!(c.read_at(&mut nb, 0).ok(), Some(4));
    assert_eq!(&nb, b"new!", "rename replaced the target");
    assert!(
        b.rename("missing", "x").is_err(),
        "renaming a missing file fails"
    );
    io(b.remove("b.meta"), "remove");
    io(b.remove("b.meta"), "remove again");
    assert_eq!(b.exists("b.meta").ok(), Some(false));
    io(b.sync_dir(), "sync_dir");
    for bad in ["", "../x", "/abs", "a//b", "a b", "a/./b"] {
        assert!(b.open(bad).is_err(), "the name {bad:?} is refused");
    }

    // A new backend from the same maker starts empty (no shared global state).
    let fresh = make();
    assert!(fresh.list().map(|l| l.is_empty()).unwrap_or(false));
}
