-- durably schema v1 (SPEC §4). Times are ISO-8601 UTC strings with
-- millisecond precision, so text order is time order.
CREATE TABLE runs (
  id                 TEXT PRIMARY KEY NOT NULL,      -- ULID
  job_name           TEXT NOT NULL,
  input              TEXT NOT NULL,                  -- JSON
  status             TEXT NOT NULL
                     CHECK (status IN ('pending','running','completed','failed','cancelled')),
  idempotency_key    TEXT,
  concurrency_key    TEXT,
  labels             TEXT NOT NULL DEFAULT '{}',     -- JSON object of strings
  current_step_index INTEGER NOT NULL DEFAULT 0,
  progress           TEXT,                           -- JSON
  output             TEXT,                           -- JSON
  error              TEXT,
  error_stack        TEXT,
  heartbeat_at       TEXT,
  lease_owner        TEXT,
  lease_generation   INTEGER NOT NULL DEFAULT 0,
  created_at         TEXT NOT NULL,
  updated_at         TEXT NOT NULL,
  started_at         TEXT,
  completed_at       TEXT
) WITHOUT ROWID;

CREATE UNIQUE INDEX runs_job_idempotency ON runs (job_name, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_status_concurrency ON runs (status, concurrency_key)
  WHERE concurrency_key IS NOT NULL;
CREATE INDEX runs_status_created ON runs (status, created_at);

CREATE TABLE steps (
  id           INTEGER PRIMARY KEY,
  run_id       TEXT NOT NULL,
  name         TEXT NOT NULL,
  "index"      INTEGER NOT NULL,
  status       TEXT NOT NULL CHECK (status IN ('completed','failed','cancelled')),
  output       TEXT,                                 -- JSON
  error        TEXT,
  error_stack  TEXT,
  started_at   TEXT NOT NULL,
  completed_at TEXT
);
CREATE UNIQUE INDEX steps_run_name ON steps (run_id, name);
CREATE INDEX steps_run_index ON steps (run_id, "index");

CREATE TABLE logs (
  id        INTEGER PRIMARY KEY,
  run_id    TEXT NOT NULL,
  step_name TEXT,
  level     TEXT NOT NULL CHECK (level IN ('info','warn','error')),
  message   TEXT NOT NULL,
  data      TEXT,                                    -- JSON
  timestamp TEXT NOT NULL
);
CREATE INDEX logs_run_timestamp ON logs (run_id, timestamp);
