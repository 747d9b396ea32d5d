-- durably schema v5 on PostgreSQL: which processes want wake-ups.
--
-- The end of a run with a concurrency key used to NOTIFY the wake channel
-- every time (its successor may be claimable now), even when every worker
-- had all its slots taken and could only ignore it: every listening backend
-- is signalled and reads the queue at each such commit. A worker registers
-- here while it runs and has a free slot (src/pg/listen.rs), and a keyed
-- run's end notifies only while a registration is alive (src/pg/flush.rs).
-- As for `listeners`, a registration takes this table's ACCESS EXCLUSIVE
-- lock, so it waits for every end that read the table without it: a wake-up
-- not sent to a new registrant is for a commit made before it registered,
-- and the claim it makes next sees it. Rows expire unless refreshed: a
-- process that died stops counting after at most a minute, and each
-- registration deletes the expired rows.
CREATE TABLE wakers (
  owner      text PRIMARY KEY,              -- the registering process's lease owner id
  expires_at timestamptz NOT NULL
);
