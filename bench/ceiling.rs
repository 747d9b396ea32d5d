//! The physical references of `npm run bench`: plain rusqlite loops, no
//! durably code on the timed path (issue 19).
//!
//! A cargo example, built on demand by bench/run.js
//! (`cargo build --release --example ceiling`), so nothing of it ships in the
//! addon (issue 15). It links the same rusqlite, hence the same bundled
//! SQLite, as the engine, and creates the engine's schema by running the
//! `.sql` migration files of `src/store/migrations` as they are (setup, not
//! timed). Pragmas as the store's writer sets them: WAL, `synchronous`
//! NORMAL (or FULL), `temp_store` memory, `wal_autocheckpoint` off with a side
//! connection checkpointing every 50 ms as the store's checkpointer does
//! (passive passes; once the log is past 4,096 frames, up to four while each
//! takes over 1 ms, then a `RESTART` while the loop waits, so the log starts
//! over instead of growing for ever), `journal_size_limit` 64 MB, a 5 s busy
//! timeout.
//!
//! ```text
//! ceiling step  <db> [--sync normal|full] [--runs N] [--steps N]
//!     one transaction per step: update the run row + insert the step row
//!     (the writes of a `ctx.run` result), runs one after another.
//! ceiling group <db> [--sync …] [--runs N] [--steps N] [--group 8]
//!     the same writes, `group` steps per transaction: `group` runs advance
//!     together, one step each per transaction (what `maxConcurrentRuns: 8`
//!     could commit at best).
//! ceiling rows  <db> [--sync …] [--runs N] [--batch 500]
//!     the rows of `batchTrigger`: `runs` new pending runs (a ULID id, the
//!     job name, a small JSON input, ISO times), `batch` per transaction, by
//!     statements of 50 rows each (as the engine's batch insert): what the engine's schema costs SQLite
//!     for a trigger, without durably's parsing, validation or result.
//! ceiling cold  <db> [--samples N]
//!     one plain insert (a run row, autocommit) after a pseudo-random idle
//!     pause in [0, 1000) ms, the same pause sequence as the `latency`
//!     scenario; reports the percentiles of the insert alone.
//! ```
//!
//! Prints one JSON object on stdout.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OpenFlags};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Args {
    mode: String,
    path: String,
    full: bool,
    runs: usize,
    steps: usize,
    group: usize,
    batch: usize,
    samples: usize,
}

fn parse() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .ok_or("usage: ceiling step|group|cold <db> [flags]")?;
    let path = it.next().ok_or("missing the database path")?;
    let mut a = Args {
        mode,
        path,
        full: false,
        runs: 2000,
        steps: 10,
        group: 8,
        batch: 500,
        samples: 50,
    };
    while let Some(flag) = it.next() {
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || {
            val.parse::<usize>()
                .map_err(|e| format!("{flag} {val}: {e}"))
        };
        match flag.as_str() {
            "--sync" => {
                a.full = match val.as_str() {
                    "full" => true,
                    "normal" => false,
                    _ => return Err(format!("--sync {val}: expected normal or full").into()),
                }
            }
            "--runs" => a.runs = num()?,
            "--steps" => a.steps = num()?,
            "--group" => a.group = num()?.max(1),
            "--batch" => a.batch = num()?.max(1),
            "--samples" => a.samples = num()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    Ok(a)
}

fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn open(path: &str, full: bool) -> Res<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_millis(5000))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("journal_mode is {mode}").into());
    }
    conn.pragma_update(None, "synchronous", if full { 2 } else { 1 })?;
    conn.pragma_update(None, "temp_store", "memory")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    Ok(conn)
}

/// The engine's schema, from its migration files (read at run time, so a new
/// migration is picked up without editing this file).
fn schema(conn: &Connection) -> Res<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    if files.is_empty() {
        return Err(format!("no migrations in {}", dir.display()).into());
    }
    files.sort();
    for f in files {
        conn.execute_batch(&std::fs::read_to_string(f)?)?;
    }
    Ok(())
}

/// `n` runs in status `running`, as a worker's claim leaves them (not timed).
fn runs(conn: &Connection, n: usize) -> Res<Vec<String>> {
    let now = iso(SystemTime::now());
    let ids: Vec<String> = (0..n).map(|i| format!("01CEILING{i:017}")).collect();
    let tx = conn.unchecked_transaction()?;
    for (i, id) in ids.iter().enumerate() {
        tx.prepare_cached(
            "INSERT INTO runs (id, job_name, input, status, labels, lease_owner, \
               lease_generation, heartbeat_at, created_at, updated_at, started_at) \
             VALUES (?1, 'ceiling', ?2, 'running', '{}', 'bench', 1, ?3, ?3, ?3, ?3)",
        )?
        .execute((id, format!("{{\"n\":{i}}}"), &now))?;
    }
    tx.commit()?;
    Ok(ids)
}

/// One step's writes: the statements the engine runs for a `ctx.run` result.
fn step(conn: &Connection, run: &str, index: usize) -> Res<()> {
    let now = iso(SystemTime::now());
    let changed = conn
        .prepare_cached(
            "UPDATE runs SET current_step_index = MAX(current_step_index, ?3), updated_at = ?4 \
             WHERE id = ?1 AND lease_generation = ?2 AND status = 'running'",
        )?
        .execute((run, 1, index as i64 + 1, &now))?;
    if changed != 1 {
        return Err(format!("run {run} was not updated").into());
    }
    conn.prepare_cached(
        "INSERT INTO steps (run_id, name, \"index\", status, output, started_at, completed_at) \
         VALUES (?1, ?2, ?3, 'completed', ?4, ?5, ?5) \
         ON CONFLICT (run_id, name) DO UPDATE SET \"index\" = excluded.\"index\", \
           status = excluded.status, output = excluded.output, \
           started_at = excluded.started_at, completed_at = excluded.completed_at",
    )?
    .execute((
        run,
        format!("s{index}"),
        index as i64,
        format!("{{\"i\":{index}}}"),
        &now,
    ))?;
    Ok(())
}

/// Checks that the loop wrote what it claims: `count_sql` counts `want` rows.
fn expect_rows(conn: &Connection, count_sql: &str, want: usize, what: &str) -> Res<()> {
    let got: i64 = conn.query_row(count_sql, [], |r| r.get(0))?;
    if got as usize != want {
        return Err(format!("{got} {what}, expected {want}").into());
    }
    Ok(())
}

/// `PRAGMA wal_checkpoint(mode)`: frames in the log, or `None` when it could not run.
fn checkpoint(side: &Connection, mode: &str) -> Option<i64> {
    side.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })
    .ok()
    .filter(|(busy, _)| *busy == 0)
    .map(|(_, log)| log)
}

/// Runs `f(writers)` while a side connection checkpoints every 50 ms as the
/// store's checkpointer does (`SqliteStore::checkpoint`): `f` holds
/// `writers` around each transaction, as the store's writer mutex, and the
/// `RESTART` that resets a long log holds it too.
fn with_checkpointer<T>(path: &str, f: impl FnOnce(&Mutex<()>) -> Res<T>) -> Res<T> {
    let side = Connection::open(path)?;
    side.busy_timeout(Duration::from_millis(250))?;
    let stop = AtomicBool::new(false);
    let writers = Mutex::new(());
    std::thread::scope(|s| {
        let (stop, writers) = (&stop, &writers);
        s.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let mut passes = 1;
                let mut started = Instant::now();
                // A checkpoint that cannot run now only leaves the log longer.
                let mut log = checkpoint(&side, "PASSIVE");
                while let Some(frames) = log {
                    if frames <= 4096 {
                        break;
                    }
                    if started.elapsed() > Duration::from_millis(1) && passes < 4 {
                        passes += 1;
                        started = Instant::now();
                        log = checkpoint(&side, "PASSIVE");
                        continue;
                    }
                    let _held = writers.lock().unwrap_or_else(|p| p.into_inner());
                    checkpoint(&side, "RESTART");
                    break;
                }
            }
        });
        let out = f(writers);
        stop.store(true, Ordering::Relaxed);
        out
    })
}

fn steps(a: &Args, group: usize) -> Res<String> {
    let conn = open(&a.path, a.full)?;
    schema(&conn)?;
    let ids = runs(&conn, a.runs)?;
    let (commits, elapsed) = with_checkpointer(&a.path, |writers| {
        let start = Instant::now();
        let mut commits = 0u64;
        for chunk in ids.chunks(group) {
            for index in 0..a.steps {
                let _held = writers.lock().unwrap_or_else(|p| p.into_inner());
                conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
                for run in chunk {
                    step(&conn, run, index)?;
                }
                conn.prepare_cached("COMMIT")?.execute([])?;
                commits += 1;
            }
        }
        Ok((commits, start.elapsed()))
    })?;
    let writes = (a.runs * a.steps) as f64;
    let secs = elapsed.as_secs_f64().max(1e-9);
    expect_rows(
        &conn,
        "SELECT COUNT(*) FROM steps WHERE status = 'completed'",
        a.runs * a.steps,
        "completed step rows",
    )?;
    Ok(format!(
        "{{\"mode\":\"{}\",\"synchronous\":\"{}\",\"runs\":{},\"stepsPerRun\":{},\"stepsPerCommit\":{},\
         \"writes\":{},\"commits\":{},\"ms\":{:.2},\"writesPerS\":{:.0},\"commitsPerS\":{:.0}}}",
        a.mode,
        if a.full { "full" } else { "normal" },
        a.runs,
        a.steps,
        group,
        writes,
        commits,
        secs * 1000.0,
        writes / secs,
        commits as f64 / secs,
    ))
}

/// The `latency` scenario's pause generator (mulberry32), seed 7.
struct Prng(u32);

impl Prng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x6d2b_79f5);
        let mut t = self.0;
        t = (t ^ (t >> 15)).wrapping_mul(t | 1);
        t ^= t.wrapping_add((t ^ (t >> 7)).wrapping_mul(t | 61));
        f64::from(t ^ (t >> 14)) / 4_294_967_296.0
    }
}

fn rows(a: &Args) -> Res<String> {
    let conn = open(&a.path, a.full)?;
    schema(&conn)?;
    // Rows per statement: one statement inserts this many (as the engine's
    // batch insert does: fewer statement executions per run).
    const PER: usize = 50;
    let values = |n: usize| {
        (0..n)
            .map(|r| {
                format!(
                    "(?{}, 'rows', ?{}, 'pending', NULL, NULL, '{{}}', ?{}, ?{})",
                    3 * r + 1,
                    3 * r + 2,
                    3 * r + 3,
                    3 * r + 3
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sql = |n: usize| {
        format!(
            "INSERT INTO runs (id, job_name, input, status, idempotency_key, concurrency_key, \
               labels, created_at, updated_at) VALUES {}",
            values(n)
        )
    };
    let (full_sql, one_sql) = (sql(PER), sql(1));
    let mut ids = ulid::Generator::new();
    let (inserted, elapsed) = with_checkpointer(&a.path, |writers| {
        let start = Instant::now();
        let mut inserted = 0usize;
        let mut params: Vec<String> = Vec::with_capacity(3 * PER);
        while inserted < a.runs {
            let n = a.batch.min(a.runs - inserted);
            let now = iso(SystemTime::now());
            let _held = writers.lock().unwrap_or_else(|p| p.into_inner());
            conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
            let mut i = inserted;
            while i < inserted + n {
                let k = if inserted + n - i >= PER { PER } else { 1 };
                params.clear();
                for j in i..i + k {
                    params.push(ids.generate().map_err(|e| e.to_string())?.to_string());
                    params.push(format!("{{\"i\":{j}}}"));
                    params.push(now.clone());
                }
                conn.prepare_cached(if k == PER { &full_sql } else { &one_sql })?
                    .execute(rusqlite::params_from_iter(params.iter()))?;
                i += k;
            }
            conn.prepare_cached("COMMIT")?.execute([])?;
            inserted += n;
        }
        Ok((inserted, start.elapsed()))
    })?;
    let secs = elapsed.as_secs_f64().max(1e-9);
    expect_rows(
        &conn,
        "SELECT COUNT(*) FROM runs WHERE status = 'pending'",
        inserted,
        "pending runs",
    )?;
    Ok(format!(
        "{{\"mode\":\"rows\",\"synchronous\":\"{}\",\"runs\":{},\"batch\":{},\"rowsPerStatement\":{},\"ms\":{:.2},\"runsPerS\":{:.0}}}",
        if a.full { "full" } else { "normal" },
        inserted,
        a.batch,
        PER,
        secs * 1000.0,
        inserted as f64 / secs,
    ))
}

fn cold(a: &Args) -> Res<String> {
    let conn = open(&a.path, a.full)?;
    schema(&conn)?;
    let mut rand = Prng(7);
    let mut ms = Vec::with_capacity(a.samples);
    std::thread::sleep(Duration::from_millis(1000));
    // One warm-up sample (not counted), then the samples.
    for k in 0..=a.samples {
        std::thread::sleep(Duration::from_secs_f64(rand.next()));
        let now = iso(SystemTime::now());
        let t0 = Instant::now();
        conn.prepare_cached(
            "INSERT INTO runs (id, job_name, input, status, labels, created_at, updated_at) \
             VALUES (?1, 'cold', '{}', 'pending', '{}', ?2, ?2)",
        )?
        .execute((format!("01COLD{k:020}"), &now))?;
        let took = t0.elapsed().as_secs_f64() * 1000.0;
        if k > 0 {
            ms.push(took);
        }
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((p / 100.0) * ms.len() as f64).ceil() as usize;
        ms[i.clamp(1, ms.len()) - 1]
    };
    Ok(format!(
        "{{\"mode\":\"cold\",\"synchronous\":\"{}\",\"samples\":{},\"p50Ms\":{:.3},\"p99Ms\":{:.3},\"minMs\":{:.3},\"maxMs\":{:.3}}}",
        if a.full { "full" } else { "normal" },
        ms.len(),
        pct(50.0),
        pct(99.0),
        ms[0],
        ms[ms.len() - 1],
    ))
}

fn main() {
    let out = parse().and_then(|a| match a.mode.as_str() {
        "step" => steps(&a, 1),
        "group" => steps(&a, a.group),
        "rows" => rows(&a),
        "cold" if a.samples > 0 => cold(&a),
        "cold" => Err("--samples must be at least 1".into()),
        m => Err(format!("unknown mode {m} (step, group, rows or cold)").into()),
    });
    match out {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("ceiling: {e}");
            std::process::exit(1);
        }
    }
}
