//! Fewer system calls per commit: a VFS that writes a transaction's WAL
//! frames with one `pwrite` instead of two per frame (issue 19).
//!
//! SQLite appends each frame of a commit to the `-wal` file as two writes:
//! its 24-byte header, then the page. A step's commit is two or three frames,
//! a completion that claims the next run five or six; each `pwrite` costs
//! ~1.1 µs here beyond the bytes it copies (a C loop on this machine: two
//! frames 5.9 µs as four writes, 2.8 µs as one; six frames 19 µs against
//! 7.5). The frames of one transaction are contiguous in the file, so this
//! VFS gathers consecutive writes of the `-wal` file in a buffer and hands
//! them to the real file as one write.
//!
//! It is the platform's default VFS (`unix`) with only `xOpen` replaced:
//! every file but a `-wal` is the real VFS's own file, untouched. A `-wal`
//! file is wrapped; each of its methods delegates to the real one after
//! writing what the buffer holds, and a write is held back only while
//! nothing can depend on it:
//!
//! - a commit frame's header (bytes 4–8 non-zero: the database size after
//!   the commit) is written at once with everything before it, and the write
//!   after it (the commit frame's page) goes through at once: when SQLite
//!   goes on to publish the commit in the shared WAL index (memory, which
//!   this VFS never sees), every byte of the transaction is in the file;
//! - frames before the commit frame are invisible to every other connection
//!   (they are past the published end of the log) until that commit;
//! - a write that does not continue the buffer, any other method (a read of
//!   the log, a sync, a truncate, the size, close) and a full buffer write
//!   it out first.
//!
//! So what SQLite reads back, syncs or publishes is always in the file, and
//! a crash loses nothing SQLite considered written and published: held
//! frames belong to a transaction that has not committed yet.
//!
//! Native builds only: the browser build's SQLite has its own VFS and no WAL.

use std::ffi::{c_int, c_void, CStr};
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The VFS's registered name.
const NAME: &CStr = c"durably-wal";

/// A frame header's size (`WAL_FRAME_HDRSIZE`).
const FRAME_HEADER: usize = 24;

/// The most bytes held before they are written anyway (a big transaction
/// is written in pieces of about this size, never held whole).
const HOLD_MAX: usize = 64 * 1024;

/// The longest write the unix VFS takes: it cuts the length of every write
/// to its low 17 bits (`nBuf &= 0x1ffff` in `seekAndWriteFd`, SQLite's own
/// writes never being longer), so a longer one would be cut short and
/// reported as a full disk. Held bytes (fewer than [`HOLD_MAX`]) and the
/// longest write SQLite makes to a log (a 64 KB page) stay within it.
const WRITE_MAX: usize = 0x1ffff;
const _: () = assert!(HOLD_MAX - 1 + 65536 <= WRITE_MAX);

/// The name to open connections with, after registering the VFS once
/// (`None` when SQLite has no default VFS to wrap, which a native build
/// always has: connections then open with the default).
pub(crate) fn name() -> Option<&'static CStr> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    REGISTERED.get_or_init(register).then_some(NAME)
}

/// The real VFS every call goes to.
struct Real(*mut ffi::sqlite3_vfs);
// SAFETY: a registered sqlite3_vfs is immutable and lives for the whole process.
unsafe impl Send for Real {}
unsafe impl Sync for Real {}
static REAL: OnceLock<Real> = OnceLock::new();

fn register() -> bool {
    // SAFETY: sqlite3_vfs_find(NULL) initializes SQLite and returns the
    // default VFS (or NULL); the struct it points to is never freed.
    unsafe {
        let real = ffi::sqlite3_vfs_find(ptr::null());
        if real.is_null() || REAL.set(Real(real)).is_err() {
            return false;
        }
        // The real VFS's methods and limits, with our xOpen and a file big
        // enough for a wrapped file followed by the real one.
        let mut vfs: ffi::sqlite3_vfs = *real;
        vfs.pNext = ptr::null_mut();
        vfs.zName = NAME.as_ptr();
        vfs.szOsFile = (real_offset() + (*real).szOsFile as usize) as c_int;
        vfs.xOpen = Some(x_open);
        let vfs = Box::leak(Box::new(vfs));
        ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
    }
}

/// A `-wal` file: our header, then (at [`real_offset`]) the real VFS's file.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Bytes not yet written, to go at `start`.
    held: Vec<u8>,
    start: i64,
    /// The last write was a commit frame's header: the next one goes through.
    after_commit_header: bool,
}

/// Where the real file starts in the memory SQLite gives `xOpen`.
const fn real_offset() -> usize {
    let size = std::mem::size_of::<WalFile>();
    let align = 16;
    size.div_ceil(align) * align
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real_vfs = REAL.get().expect("registered").0;
    let open = (*real_vfs).xOpen.expect("a VFS has xOpen");
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Not a log: the real VFS's own file, in the same memory.
        return open(real_vfs, name, file, flags, out_flags);
    }
    let real = (file as *mut u8).add(real_offset()) as *mut ffi::sqlite3_file;
    let rc = open(real_vfs, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        // A failed xOpen leaves the real file without methods (SQLite
        // asserts it), and SQLite calls none on a file whose pMethods is NULL.
        (*file).pMethods = ptr::null();
        return rc;
    }
    ptr::write(
        file as *mut WalFile,
        WalFile {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            real,
            held: Vec::new(),
            start: 0,
            after_commit_header: false,
        },
    );
    ffi::SQLITE_OK
}

impl WalFile {
    unsafe fn methods(&self) -> &ffi::sqlite3_io_methods {
        &*(*self.real).pMethods
    }

    /// Writes what is held (if anything).
    unsafe fn write_held(&mut self) -> c_int {
        if self.held.is_empty() {
            return ffi::SQLITE_OK;
        }
        let write = self.methods().xWrite.expect("a file has xWrite");
        #[cfg(test)]
        REAL_WRITES.with(|n| n.set(n.get() + 1));
        let rc = write(
            self.real,
            self.held.as_ptr() as *const c_void,
            self.held.len() as c_int,
            self.start,
        );
        self.held.clear();
        rc
    }

    unsafe fn write(&mut self, data: &[u8], offset: i64) -> c_int {
        if !self.held.is_empty() && offset != self.start + self.held.len() as i64 {
            let rc = self.write_held();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if self.held.is_empty() {
            self.start = offset;
        }
        self.held.extend_from_slice(data);
        // The size of the database after the commit, big-endian at bytes 4–8
        // of a frame header: non-zero in a commit frame only.
        let commit_header = data.len() == FRAME_HEADER && data[4..8] != [0, 0, 0, 0];
        let through = std::mem::replace(&mut self.after_commit_header, commit_header);
        if commit_header || through || self.held.len() >= HOLD_MAX {
            return self.write_held();
        }
        ffi::SQLITE_OK
    }
}

#[cfg(test)]
thread_local! {
    /// The writes of held bytes that reached a real file on this thread (tests).
    static REAL_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

unsafe fn wal<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
    &mut *(file as *mut WalFile)
}

/// Writes what `file` holds, then calls the real method with its file.
macro_rules! after_held {
    ($file:expr, $method:ident $(, $arg:expr)*) => {{
        let f = wal($file);
        let rc = f.write_held();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        match f.methods().$method {
            Some(m) => m(f.real $(, $arg)*),
            None => ffi::SQLITE_IOERR,
        }
    }};
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let f = wal(file);
    let held = f.write_held();
    let rc = match f.methods().xClose {
        Some(close) => close(f.real),
        None => ffi::SQLITE_OK,
    };
    ptr::drop_in_place(&mut f.held);
    (*file).pMethods = ptr::null();
    if held != ffi::SQLITE_OK {
        held
    } else {
        rc
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    after_held!(file, xRead, buf, amount, offset)
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    if amount <= 0 {
        return after_held!(file, xWrite, buf, amount, offset);
    }
    let data = std::slice::from_raw_parts(buf as *const u8, amount as usize);
    wal(file).write(data, offset)
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    after_held!(file, xTruncate, size)
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    after_held!(file, xSync, flags)
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    after_held!(file, xFileSize, size)
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    after_held!(file, xLock, level)
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    after_held!(file, xUnlock, level)
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    after_held!(file, xCheckReservedLock, out)
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    after_held!(file, xFileControl, op, arg)
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let f = wal(file);
    f.methods().xSectorSize.map_or(4096, |m| m(f.real))
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let f = wal(file);
    f.methods().xDeviceCharacteristics.map_or(0, |m| m(f.real))
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let f = wal(file);
    if f.methods().iVersion >= 2 {
        after_held!(file, xShmMap, page, size, extend, out)
    } else {
        ffi::SQLITE_IOERR
    }
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let f = wal(file);
    if f.methods().iVersion >= 2 {
        after_held!(file, xShmLock, offset, n, flags)
    } else {
        ffi::SQLITE_IOERR
    }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    let f = wal(file);
    if f.write_held() != ffi::SQLITE_OK {
        return;
    }
    if f.methods().iVersion >= 2 {
        if let Some(m) = f.methods().xShmBarrier {
            m(f.real)
        }
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let f = wal(file);
    if f.methods().iVersion >= 2 {
        after_held!(file, xShmUnmap, delete)
    } else {
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let f = wal(file);
    if f.methods().iVersion >= 3 {
        return after_held!(file, xFetch, offset, amount, out);
    }
    // No memory map: SQLite reads instead.
    *out = ptr::null_mut();
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_unfetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    page: *mut c_void,
) -> c_int {
    let f = wal(file);
    if f.methods().iVersion >= 3 {
        after_held!(file, xUnfetch, offset, page)
    } else {
        ffi::SQLITE_OK
    }
}

/// The methods of a wrapped `-wal` file.
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};
    use std::path::Path;

    const TABLE: &str = "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)";

    fn flags() -> OpenFlags {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    }

    /// A connection through this VFS, as the store opens them.
    fn ours(path: &Path) -> Connection {
        let c = Connection::open_with_flags_and_vfs(path, flags(), name().unwrap()).unwrap();
        c.pragma_update(None, "journal_mode", "wal").unwrap();
        c.pragma_update(None, "synchronous", 1).unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        c
    }

    /// A connection through SQLite's own default VFS.
    fn plain(path: &Path) -> Connection {
        Connection::open_with_flags(path, flags()).unwrap()
    }

    fn rows(c: &Connection) -> (i64, i64, i64) {
        c.query_row(
            "SELECT count(*), coalesce(sum(k), 0), coalesce(sum(length(v)), 0) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    }

    fn integrity(c: &Connection) -> String {
        c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap()
    }

    /// Transactions of every shape: one small row; ~600 KB of rows (more
    /// than one write's worth, so held bytes go out mid-transaction);
    /// updates of rows spread over many pages; with a page cache of a few
    /// pages, a transaction that spills frames before its commit and then
    /// changes spilled pages again (SQLite rewrites those frames in place
    /// and their checksums at the commit); then a plain commit of a few
    /// frames.
    fn shapes(c: &Connection, round: i64) {
        let base = round * 1_000_000;
        c.execute("INSERT INTO t (k, v) VALUES (?1, 'one')", [base])
            .unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        for i in 1..300 {
            c.execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                (base + i, "x".repeat(2000)),
            )
            .unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
        c.execute("UPDATE t SET v = v || 'u' WHERE k % 7 = 0", [])
            .unwrap();
        c.pragma_update(None, "cache_size", 2).unwrap();
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        for pass in 0..3 {
            c.execute(
                "UPDATE t SET v = substr(v, 1, 1900) || ?1 WHERE k >= ?2",
                (pass, base),
            )
            .unwrap();
        }
        c.execute_batch("COMMIT").unwrap();
        c.pragma_update(None, "cache_size", -2000).unwrap();
        // Last, a plain commit of a few frames: what the others read next.
        c.execute("UPDATE t SET v = v || 'e' WHERE k % 50 = 1", [])
            .unwrap();
    }

    /// `rounds` of [`shapes`] on `a`, each read by `b` right after.
    fn read_alongside(a: &Connection, b: &Connection, rounds: i64) {
        for round in 0..rounds {
            shapes(a, round);
            assert_eq!(rows(b), rows(a), "round {round}");
            assert_eq!(integrity(b), "ok", "round {round}");
        }
    }

    #[test]
    fn every_commit_is_in_the_file_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let a = ours(&path);
        a.execute_batch(TABLE).unwrap();
        // Another connection, without this VFS, reads each commit through
        // the shared WAL index: it reads every frame from the file.
        let b = plain(&path);
        read_alongside(&a, &b, 4);
        assert_eq!(rows(&b).0, 4 * 300);
    }

    /// With the largest pages, a frame is 64 KB: held bytes must go out
    /// before they and the next write would be more than one write takes.
    #[test]
    fn the_largest_pages_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let setup = plain(&path);
        setup.pragma_update(None, "page_size", 65536).unwrap();
        setup.execute_batch(TABLE).unwrap();
        drop(setup);
        read_alongside(&ours(&path), &plain(&path), 2);
    }

    #[test]
    fn a_crash_after_a_commit_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let a = ours(&path);
        a.execute_batch(TABLE).unwrap();
        for round in 0..3 {
            shapes(&a, round);
        }
        let expected = rows(&a);
        // What a process killed now leaves behind: the database and its log
        // as they are in the file (not the shared index, which a crash makes
        // SQLite rebuild from the log, checking each frame's checksum). The
        // connection is never closed: nothing it holds is written later.
        let copy = dir.path().join("b.db");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(dir.path().join("a.db-wal"), dir.path().join("b.db-wal")).unwrap();
        std::mem::forget(a);
        let b = plain(&copy);
        assert_eq!(rows(&b), expected);
        assert_eq!(integrity(&b), "ok");
    }

    #[test]
    fn a_commit_is_at_most_two_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let a = ours(&path);
        a.execute_batch(
            "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL); CREATE INDEX t_v ON t (v)",
        )
        .unwrap();
        for i in 0..2000 {
            a.execute(
                "INSERT INTO t (k, v) VALUES (?1, ?2)",
                (i, format!("{i:08}")),
            )
            .unwrap();
        }
        let wal = dir.path().join("a.db-wal");
        let frames = |p: &Path| std::fs::metadata(p).unwrap().len();
        let mut many = 0;
        for i in 0..20 {
            let before = (REAL_WRITES.with(|n| n.get()), frames(&wal));
            // A table page and index pages far apart: two to four frames.
            a.execute(
                "UPDATE t SET v = ?2 WHERE k = ?1",
                (i * 97, format!("z{i}")),
            )
            .unwrap();
            let written = REAL_WRITES.with(|n| n.get()) - before.0;
            let grown = (frames(&wal) - before.1) / (4096 + 24);
            assert!(grown >= 2, "commit {i}: {grown} frames");
            assert_eq!(written, 2, "commit {i}: {grown} frames in {written} writes");
            many += usize::from(grown >= 3);
        }
        assert!(many >= 10, "{many} commits of 3 frames or more");
    }
}
