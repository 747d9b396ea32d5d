-- durably schema v3 on PostgreSQL: indexes that let a claim stop after the
-- runs it takes, whatever the backlog (src/pg/claim.rs).
--
-- The claim walks pending runs in (created_at, id) order and, for a run with
-- a concurrency key, checks that no older pending run of its key exists.
-- With v2's (status, created_at) and (status, concurrency_key) indexes the
-- walk sorted every pending run (a batch shares one created_at) and each
-- check scanned the key's pending runs: ~110 ms per claim with 20,000
-- pending runs over 32 keys. These partial indexes hold pending runs only:
-- the walk reads them in claim order, and the check is one index probe
-- (0.2 ms for the same claim).
CREATE INDEX runs_pending_order ON runs (created_at, id) WHERE status = 'pending';

CREATE INDEX runs_pending_key_order ON runs (concurrency_key, created_at, id)
  WHERE status = 'pending' AND concurrency_key IS NOT NULL;

-- Its lookups (a key's pending runs, a key's running run) are served by
-- runs_pending_key_order and runs_one_running_per_key now.
DROP INDEX runs_status_concurrency;
