//! Every backend passes the conformance suite; the crash backend loses exactly what a power
//! cut could, and fails exactly the operations it is told to.

use std::sync::Arc;
use warren_store::backend::conformance;
use warren_store::{Backend, CrashBackend, Fault, FileBackend, MemoryBackend};
use warren_testkit::TempDir;

#[test]
fn the_file_backend_conforms() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance(&|| {
        let d = TempDir::new("store-test");
        let b = FileBackend::new(d.path()).expect("temp dir");
        dirs.lock().unwrap().push(d);
        Arc::new(b) as Arc<dyn Backend>
    });
}

#[test]
fn the_memory_backend_conforms() {
    conformance(&|| Arc::new(MemoryBackend::new()) as Arc<dyn Backend>);
}

#[test]
fn the_crash_backend_conforms() {
    conformance(&|| Arc::new(CrashBackend::new()) as Arc<dyn Backend>);
}

fn read_all(b: &dyn Backend, name: &str) -> Vec<u8> {
    let f = b.open(name).unwrap();
    let mut v = vec![0; f.len().unwrap() as usize];
    assert_eq!(f.read_at(&mut v, 0).unwrap(), v.len());
    v
}

#[test]
fn files_on_disk_outlive_their_backend() {
    let d = TempDir::new("store-test");
    {
        let b = FileBackend::new(d.path()).unwrap();
        let f = b.open("seg/1.log").unwrap();
        f.write_at(b"kept", 0).unwrap();
        f.sync_data().unwrap();
        b.sync_dir().unwrap();
    }
    let again = FileBackend::new(d.path()).unwrap();
    assert_eq!(again.list().unwrap(), ["seg/1.log"]);
    assert_eq!(read_all(&again, "seg/1.log"), b"kept");
}

#[test]
fn a_crash_keeps_only_what_was_synced() {
    let b = CrashBackend::new();
    let f = b.open("log").unwrap();
    f.write_at(b"synced", 0).unwrap();
    f.sync_data().unwrap();
    b.sync_dir().unwrap();
    f.write_at(b"+lost", 6).unwrap();
    // The process sees everything; a crash leaves the synced prefix.
    assert_eq!(read_all(&b, "log"), b"synced+lost");
    let after = b.crash(0);
    assert_eq!(read_all(&after, "log"), b"synced");
    // A torn write: part of the unsynced tail reached the disk.
    assert_eq!(read_all(&b.crash(3), "log"), b"synced+lo");
    assert_eq!(read_all(&b.crash(100), "log"), b"synced+lost");
}

#[test]
fn a_crash_forgets_names_that_were_not_synced() {
    let b = CrashBackend::new();
    let f = b.open("old").unwrap();
    f.write_at(b"x", 0).unwrap();
    f.sync_data().unwrap();
    b.sync_dir().unwrap();
    // A new file, written and synced, but its directory entry not: gone after a crash.
    let g = b.open("new").unwrap();
    g.write_at(b"y", 0).unwrap();
    g.sync_data().unwrap();
    assert_eq!(b.crash(0).list().unwrap(), ["old"]);
    // A rename is durable only after the directory sync.
    b.rename("old", "renamed").unwrap();
    assert_eq!(b.crash(0).list().unwrap(), ["old"]);
    b.sync_dir().unwrap();
    let after = b.crash(0);
    assert_eq!(after.list().unwrap(), ["new", "renamed"]);
    assert_eq!(read_all(&after, "renamed"), b"x");
    // A removal likewise.
    b.remove("new").unwrap();
    assert_eq!(b.crash(0).list().unwrap(), ["new", "renamed"]);
    b.sync_dir().unwrap();
    assert_eq!(b.crash(0).list().unwrap(), ["renamed"]);
}

#[test]
fn data_written_after_a_directory_sync_still_needs_its_own_sync() {
    let b = CrashBackend::new();
    let f = b.open("log").unwrap();
    b.sync_dir().unwrap();
    f.write_at(b"unsynced", 0).unwrap();
    assert_eq!(read_all(&b.crash(0), "log"), b"");
}

#[test]
fn injected_faults_fail_once_and_make_nothing_durable() {
    let b = CrashBackend::new();
    let f = b.open("log").unwrap();
    b.sync_dir().unwrap();
    b.inject(Fault::Write);
    assert!(f.write_at(b"refused", 0).is_err());
    assert_eq!(f.len().unwrap(), 0, "a failed write writes nothing");
    f.write_at(b"data", 0).unwrap();
    b.inject(Fault::Sync);
    let e = f.sync_data().unwrap_err();
    assert!(e.to_string().contains("injected fdatasync failure"), "{e}");
    assert_eq!(
        read_all(&b.crash(0), "log"),
        b"",
        "a failed sync made nothing durable"
    );
    f.sync_data().unwrap();
    assert_eq!(read_all(&b.crash(0), "log"), b"data");
    b.inject(Fault::SyncDir);
    b.open("other").unwrap();
    assert!(b.sync_dir().is_err());
    assert_eq!(b.crash(0).list().unwrap(), ["log"]);
    b.sync_dir().unwrap();
    assert_eq!(b.crash(0).list().unwrap(), ["log", "other"]);
    assert_eq!(b.counts(), (1, 1), "one write and one sync succeeded");
}
