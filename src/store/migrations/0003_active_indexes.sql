-- Status indexes that hold only active (pending or running) runs, and a run
-- without a concurrency key in one of them (issue 19). Every index is one
-- more B-tree page written per insert and per status change: schema 2 kept
-- every run, ended or not, in two status indexes, so a trigger wrote three
-- B-trees and a claim and a completion each moved the run in both (~4 log
-- pages a trigger, ~29 µs of SQLite and kernel CPU per trigger commit;
-- ~2.6 pages and ~19 µs with these).
--
-- A query's `status = 'pending'` implies an index's `status = 'pending' OR
-- status = 'running'`, and its `concurrency_key IS NULL` (or `IS NOT NULL`,
-- or `= ?`) the index's condition on the key, so SQLite picks these without
-- hints; a query that names no key condition reads the whole table.
DROP INDEX runs_status_created;
DROP INDEX runs_status_key_created;

-- Runs without a key, in claim order: the claim's walk, the oldest keyless
-- runs, the stale check.
CREATE INDEX runs_active_free ON runs (status, created_at)
  WHERE concurrency_key IS NULL AND (status = 'pending' OR status = 'running');

-- Runs with a key, in claim order (the claim's walk, the stale check) and by
-- key (a key's head among its pending runs, a key's running run, the
-- skip-scan over the keys of the pending runs).
CREATE INDEX runs_active_keyed ON runs (status, created_at)
  WHERE concurrency_key IS NOT NULL AND (status = 'pending' OR status = 'running');
CREATE INDEX runs_active_key ON runs (status, concurrency_key, created_at)
  WHERE concurrency_key IS NOT NULL AND (status = 'pending' OR status = 'running');

-- A step is found by (run_id, name) (the unique index); the reads that want
-- a run's steps in order sort that run's entries of it. One B-tree fewer
-- per step written.
DROP INDEX steps_run_index;
