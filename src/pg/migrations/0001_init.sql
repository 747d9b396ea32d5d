-- durably schema v1 on PostgreSQL: the tables of SPEC §4, in the schema
-- the store was given (search_path). Values are `json`, not `jsonb`, so
-- the stored text is exactly what the JS layer wrote (see src/pg/mod.rs).
-- Times are `timestamptz` from the database clock.
CREATE TABLE runs (
  id                 text PRIMARY KEY,               -- ULID
  job_name           text NOT NULL,
  input              json NOT NULL,
  status             text NOT NULL
                     CHECK (status IN ('pending','running','completed','failed','cancelled')),
  idempotency_key    text,
  concurrency_key    text,
  labels             json NOT NULL DEFAULT '{}',     -- object of strings
  current_step_index bigint NOT NULL DEFAULT 0,
  progress           json,
  output             json,
  error              text,
  error_stack        text,
  heartbeat_at       timestamptz,
  lease_owner        text,
  lease_generation   bigint NOT NULL DEFAULT 0,
  created_at         timestamptz NOT NULL,
  updated_at         timestamptz NOT NULL,
  started_at         timestamptz,
  completed_at       timestamptz
);

CREATE UNIQUE INDEX runs_job_idempotency ON runs (job_name, idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_status_concurrency ON runs (status, concurrency_key)
  WHERE concurrency_key IS NOT NULL;
CREATE INDEX runs_status_created ON runs (status, created_at);
-- At most one running run per concurrency key, whatever the claims' timing
-- (a claim that would break it fails and is retried: see src/pg/claim.rs).
CREATE UNIQUE INDEX runs_one_running_per_key ON runs (concurrency_key)
  WHERE status = 'running' AND concurrency_key IS NOT NULL;

CREATE TABLE steps (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id       text NOT NULL,
  name         text NOT NULL,
  "index"      bigint NOT NULL,
  status       text NOT NULL CHECK (status IN ('completed','failed','cancelled')),
  output       json,
  error        text,
  error_stack  text,
  started_at   timestamptz NOT NULL,
  completed_at timestamptz
);
CREATE UNIQUE INDEX steps_run_name ON steps (run_id, name);
CREATE INDEX steps_run_index ON steps (run_id, "index");

CREATE TABLE logs (
  id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id    text NOT NULL,
  step_name text,
  level     text NOT NULL CHECK (level IN ('info','warn','error')),
  message   text NOT NULL,
  data      json,
  timestamp timestamptz NOT NULL
);
CREATE INDEX logs_run_timestamp ON logs (run_id, timestamp);
